"""
TLS options for the agent-to-edge connection, and what its failures mean.

The edge side is built from PEM files (a generated certificate from
L{tunnelkit.pki} or one the operator configured, possibly with intermediates);
the agent side verifies the edge's name with C{service_identity} against the
host's trust store or a C{root_cas} file. L{describe_tls_failure} turns a
failed verification into an error that says how to fix it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificatePublicKeyTypes,
    PrivateKeyTypes,
    PublicKeyTypes,
)
from OpenSSL import SSL
from OpenSSL.crypto import X509, PKey
from service_identity.exceptions import CertificateError, VerificationError
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    TLSVersion,
    optionsForClientTLS,
    platformTrust,
    trustRootFromCertificates,
)
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath

from tunnelkit.errors import TunnelkitError

__all__ = [
    "server_tls_options",
    "client_tls_options",
    "describe_tls_failure",
    "HOST_TRUST",
]

HOST_TRUST = "host"
"""The C{root_cas} value that means the operating system's trust store."""

# root_cas values meaning the host trust store; "trusted" is ngrok's spelling.
_HOST_TRUST_VALUES = (None, HOST_TRUST, "trusted")

_TLS_KEY_TYPES = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)

# How many objects describe_tls_failure looks at while searching for a cause.
_MAX_STEPS = 256


def server_tls_options(
    cert_path: FilePath[str],
    key_path: FilePath[str],
    chain_path: FilePath[str] | None = None,
) -> CertificateOptions:
    """
    Build the edge's server-side TLS options from PEM files.

    @param cert_path: the server certificate, optionally followed by the
        intermediate certificates that lead to the root.
    @param key_path: the certificate's private key (RSA, EC or Ed25519 in
        PKCS#1, SEC1 or PKCS#8 PEM; not encrypted).
    @param chain_path: a separate file of intermediate certificates, sent
        after those in C{cert_path}.
    @return: options accepting TLS 1.2 and newer, for C{listenSSL},
        C{SSL4ServerEndpoint} or C{TLSMemoryBIOFactory}.
    @raise TunnelkitError: C{TK_EDGE_CERT_INVALID} if a file cannot be read,
        holds no certificate or key, or the key does not match the
        certificate.
    """
    certificates = _read_edge_certificates(cert_path)
    if chain_path is not None:
        certificates += _read_edge_certificates(chain_path)
    key = _read_edge_key(key_path)

    if _public_der(certificates[0].public_key()) != _public_der(key.public_key()):
        raise _edge_cert_invalid(
            f"the key in {key_path.path} does not belong to the certificate "
            f"in {cert_path.path}"
        )

    if not isinstance(key, _TLS_KEY_TYPES):
        raise _edge_cert_invalid(
            f"the key in {key_path.path} is a {type(key).__name__}, which the "
            "edge cannot serve; use an RSA, EC or Ed25519 key"
        )
    private_key = PKey.from_cryptography_key(key)
    return CertificateOptions(
        privateKey=private_key,
        certificate=X509.from_cryptography(certificates[0]),
        extraCertChain=[X509.from_cryptography(c) for c in certificates[1:]],
        raiseMinimumTo=TLSVersion.TLSv1_2,
    )


def offer_http1(options: CertificateOptions) -> CertificateOptions:
    """
    Make server options answer ALPN as an HTTP/1.1 server: C{http/1.1} when
    the client offers it, and no protocol otherwise, so that the handshake
    goes on and the client falls back to HTTP/1.1.

    Twisted's own ALPN callback answers an empty protocol name when nothing
    overlaps, which current OpenSSL turns into an C{internal_error} alert:
    every browser and curl, which offer C{h2} and C{http/1.1}, would fail.

    @param options: server options, not yet used for a connection.
    @return: C{options}, whose context now carries the callback.
    """

    def select(connection: SSL.Connection, offered: list[bytes]) -> Any:
        if b"http/1.1" in offered:
            return b"http/1.1"
        return SSL.NO_OVERLAPPING_PROTOCOLS

    options.getContext().set_alpn_select_callback(select)
    return options


def _public_der(key: CertificatePublicKeyTypes | PublicKeyTypes) -> bytes:
    """
    @param key: a public key.
    @return: its DER SubjectPublicKeyInfo, for comparing keys.
    """
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _edge_cert_invalid(problem: str) -> TunnelkitError:
    """
    @param problem: what is wrong with the configured certificate or key.
    @return: a C{TK_EDGE_CERT_INVALID} error that says what to do.
    """
    return TunnelkitError(
        "TK_EDGE_CERT_INVALID",
        f"{problem}; configure a PEM certificate (leaf first, then any "
        "intermediates) and its unencrypted PEM key, or remove both settings "
        "to let the edge use its own CA",
    )


def _read_edge_certificates(path: FilePath[str]) -> list[x509.Certificate]:
    """
    Read every PEM certificate in a configured edge certificate file.

    @param path: the file.
    @return: its certificates, in file order; never empty.
    @raise TunnelkitError: C{TK_EDGE_CERT_INVALID} if the file cannot be
        read or holds no certificate.
    """
    try:
        data = path.getContent()
    except OSError as e:
        raise _edge_cert_invalid(
            f"cannot read the edge certificate {path.path} ({e.strerror or e})"
        ) from e
    certificates = _pem_certificates(data)
    if not certificates:
        raise _edge_cert_invalid(f"{path.path} holds no PEM certificate")
    return certificates


def _read_edge_key(path: FilePath[str]) -> PrivateKeyTypes:
    """
    Read a configured edge private key.

    @param path: the PEM key file.
    @return: the key.
    @raise TunnelkitError: C{TK_EDGE_CERT_INVALID} if it cannot be read,
        parsed, or is encrypted.
    """
    try:
        data = path.getContent()
    except OSError as e:
        raise _edge_cert_invalid(
            f"cannot read the edge key {path.path} ({e.strerror or e})"
        ) from e
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise _edge_cert_invalid(
            f"{path.path} holds no usable PEM private key ({e})"
        ) from e


def _pem_certificates(data: bytes) -> list[x509.Certificate]:
    """
    Parse the PEM certificates in C{data}, ignoring other PEM blocks.

    @param data: the contents of a PEM file.
    @return: the certificates, empty if there are none or one is corrupt.
    """
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        return []


def client_tls_options(
    hostname: str, root_cas: str | None
) -> IOpenSSLClientConnectionCreator:
    """
    Build the agent's TLS options for connecting to the edge.

    The edge's certificate must chain to a trusted CA and carry C{hostname}.
    An IP literal is checked against the certificate's IP subjectAltNames:
    Twisted's L{optionsForClientTLS} recognizes IPv4 and IPv6 literals,
    verifies them with C{service_identity}'s C{IPAddress_ID}, and sends no
    SNI for them.

    @param hostname: the edge's name or IP address, as in C{server_addr}
        (an IPv6 literal with or without brackets).
    @param root_cas: C{None} or C{"host"} (or C{"trusted"}) for the
        operating system's trust store, or the path of a PEM file whose
        certificates are all trusted; C{~} is expanded.
    @return: a client connection creator for C{wrapClientTLS},
        C{SSL4ClientEndpoint} or C{connectSSL}.
    @raise TunnelkitError: C{TK_ROOT_CAS_UNREADABLE} if the C{root_cas} file
        cannot be read or holds no PEM certificate.
    """
    if hostname.startswith("[") and hostname.endswith("]"):
        hostname = hostname[1:-1]
    if root_cas in _HOST_TRUST_VALUES:
        return optionsForClientTLS(hostname, trustRoot=platformTrust())

    try:
        with open(os.path.expanduser(root_cas), "rb") as f:
            data = f.read()
    except OSError as e:
        raise _root_cas_unreadable(root_cas, e.strerror or str(e)) from e
    certificates = _pem_certificates(data)
    if not certificates:
        raise _root_cas_unreadable(root_cas, "it holds no PEM certificate")
    trust = trustRootFromCertificates(
        [Certificate(X509.from_cryptography(c)) for c in certificates]
    )
    return optionsForClientTLS(hostname, trustRoot=trust)


def _root_cas_unreadable(path: str, problem: str) -> TunnelkitError:
    """
    @param path: the configured C{root_cas} path.
    @param problem: why it cannot be used.
    @return: a C{TK_ROOT_CAS_UNREADABLE} error naming the path.
    """
    return TunnelkitError(
        "TK_ROOT_CAS_UNREADABLE",
        f"cannot use root_cas {path}: {problem}; set root_cas to a PEM file of "
        "CA certificates (the edge's STATE_DIR/ca.pem), or to 'host' for the "
        "system trust store",
    )


def describe_tls_failure(
    failure_or_exception: Failure | BaseException,
    hostname: str,
    root_cas: str | None,
) -> TunnelkitError | None:
    """
    Explain why the agent did not trust the edge, if that is what happened.

    The cause is looked for in the exception itself and in what it wraps:
    L{Failure}s, C{__cause__} and C{__context__}, exceptions in C{args}, and
    Twisted's C{reasons}, C{subFailure} and C{osError} attributes.

    @param failure_or_exception: how the connection or handshake failed.
    @param hostname: the name the agent connected with.
    @param root_cas: the agent's C{root_cas} setting.
    @return: a C{TK_EDGE_CERT_NAME_MISMATCH} error if the certificate does not
        carry C{hostname}, a C{TK_EDGE_CERT_UNTRUSTED} error if it does not
        chain to a trusted CA, or C{None} if the failure is not about the
        certificate.
    """
    causes = list(_linked_exceptions(failure_or_exception))
    if any(isinstance(c, (VerificationError, CertificateError)) for c in causes):
        return TunnelkitError(
            "TK_EDGE_CERT_NAME_MISMATCH",
            f"the edge certificate does not cover {hostname}; connect with a "
            "name the certificate carries, or reissue it with "
            f"{hostname} among its names",
        )
    if any(_is_verify_failure(c) for c in causes):
        if root_cas in _HOST_TRUST_VALUES:
            where = "this host's trust store"
            alternative = ", or give the edge a certificate from a public CA"
        else:
            where = root_cas
            alternative = ""
        return TunnelkitError(
            "TK_EDGE_CERT_UNTRUSTED",
            f"the edge certificate for {hostname} is not signed by a CA in "
            f"{where} (or has expired); set root_cas to the CA file the edge "
            "printed at its first start (STATE_DIR/ca.pem)" + alternative,
        )
    return None


def _is_verify_failure(error: BaseException) -> bool:
    """
    @param error: an exception.
    @return: whether it is OpenSSL rejecting the peer's certificate chain.
    """
    return isinstance(error, SSL.Error) and (
        "certificate verify failed" in str(error).lower()
    )


def _linked_exceptions(start: object) -> Iterator[BaseException]:
    """
    Walk an exception and the exceptions it wraps, each once.

    @param start: an exception, a L{Failure}, or anything else (ignored).
    @return: the exceptions found, breadth first, within C{_MAX_STEPS} looks.
    """
    pending: list[object] = [start]
    seen: set[int] = set()
    for _ in range(_MAX_STEPS):
        if not pending:
            return
        item = pending.pop(0)
        if isinstance(item, Failure):
            item = item.value
        if isinstance(item, (list, tuple)):
            pending.extend(item)
            continue
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        yield item

        pending.extend([item.__cause__, item.__context__])
        pending.extend(a for a in item.args if isinstance(a, (list, tuple)))
        pending.extend(a for a in item.args if isinstance(a, (BaseException, Failure)))
        for attribute in ("reasons", "subFailure", "osError"):
            pending.append(getattr(item, attribute, None))
