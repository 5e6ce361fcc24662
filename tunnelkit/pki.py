"""
The edge's own certificate authority and server certificate in a state directory.

An edge with no configured certificate needs one that agents can verify. On
its first start L{ensure_edge_certificate} creates a private CA and a server
certificate signed by it; later starts reuse the CA and reissue the server
certificate when the hostnames change or it nears expiry. Agents trust the
edge by pointing C{root_cas} at the CA file. One state directory belongs to
one edge process: two processes calling this on it at once may each write a CA.

The TLS options built from these files live in L{tunnelkit.tlsoptions} and
are re-exported here, so callers can take everything TLS from one module.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.logger import Logger
from twisted.python.filepath import FilePath

from tunnelkit.errors import TunnelkitError
from tunnelkit.tlsoptions import (
    client_tls_options,
    describe_tls_failure,
    server_tls_options,
)

__all__ = [
    "EdgeCertificate",
    "ensure_edge_certificate",
    "server_tls_options",
    "client_tls_options",
    "describe_tls_failure",
    "CA_VALIDITY",
    "SERVER_VALIDITY",
    "RENEW_BEFORE",
]

_log = Logger()

CA_VALIDITY = datetime.timedelta(days=3650)
SERVER_VALIDITY = datetime.timedelta(days=825)
RENEW_BEFORE = datetime.timedelta(days=30)

# Certificates start an hour in the past so that a peer whose clock runs a
# little behind ours still accepts them.
_BACKDATE = datetime.timedelta(hours=1)

_CA_CERT = "ca.pem"
_CA_KEY = "ca.key"
_EDGE_CERT = "edge.pem"
_EDGE_KEY = "edge.key"

_AnyName = x509.DNSName | x509.IPAddress


@dataclass(frozen=True)
class EdgeCertificate:
    """
    Where the edge's CA and server certificate are on disk.

    @ivar ca_path: the CA certificate (PEM) that agents put in C{root_cas}.
    @ivar cert_path: the server certificate (PEM) the edge presents.
    @ivar key_path: the server certificate's private key (PEM, mode 0600).
    @ivar created_ca: C{True} when this call created the CA, so the caller
        can tell the operator where it is.
    """

    ca_path: FilePath[str]
    cert_path: FilePath[str]
    key_path: FilePath[str]
    created_ca: bool


def ensure_edge_certificate(
    state_dir: FilePath[str],
    hostnames: list[str],
    *,
    now: datetime.datetime | None = None,
) -> EdgeCertificate:
    """
    Make sure C{state_dir} holds a CA and a current server certificate.

    A missing CA is generated; an existing one is reused. The server
    certificate is issued afresh when it is missing, unreadable, not from this
    CA, not matching its key, missing one of C{hostnames}, or expiring within
    L{RENEW_BEFORE}.

    @param state_dir: the edge's state directory, created with mode 0700.
    @param hostnames: the names the server certificate must carry: DNS names,
        wildcards such as C{*.tunnels.example.com}, and IP address literals
        (which become IP subjectAltNames).
    @param now: the current time (UTC); the wall clock when omitted.
    @return: the paths of the CA and server certificate.
    @raise ValueError: if C{hostnames} is empty or has an empty entry.
    @raise TunnelkitError: C{TK_STATE_DIR_UNWRITABLE} if the directory or a
        file in it cannot be written; C{TK_EDGE_CERT_INVALID} if the existing
        CA cannot be used.
    """
    names = _subject_alt_names(hostnames)
    if now is None:
        now = datetime.datetime.now(datetime.timezone.utc)
    _make_state_dir(state_dir)
    ca_cert_path = state_dir.child(_CA_CERT)
    ca_key_path = state_dir.child(_CA_KEY)
    cert_path = state_dir.child(_EDGE_CERT)
    key_path = state_dir.child(_EDGE_KEY)

    # ca.pem is written last, so a ca.key without it is a CA that no agent
    # can have trusted yet: starting over is safe.
    created_ca = not ca_cert_path.exists()
    if created_ca:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _issue_ca(ca_key, now)
        _write_atomically(ca_key_path, _key_pem(ca_key), 0o600)
        _write_atomically(ca_cert_path, _cert_pem(ca_cert), 0o644)
        _log.info("created a private edge CA at {path}", path=ca_cert_path.path)
    else:
        ca_cert, ca_key = _load_ca(ca_cert_path, ca_key_path, now)

    if created_ca or _needs_new_leaf(cert_path, key_path, ca_cert, names, now):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue_server(key, ca_cert, ca_key, names, now)
        # The key goes first: a crash in between leaves a certificate that
        # does not match its key, which the next start detects and reissues.
        _write_atomically(key_path, _key_pem(key), 0o600)
        _write_atomically(cert_path, _cert_pem(cert), 0o644)
        _log.info(
            "issued the edge certificate {path} for {hostnames}",
            path=cert_path.path,
            hostnames=", ".join(hostnames),
        )

    return EdgeCertificate(
        ca_path=ca_cert_path,
        cert_path=cert_path,
        key_path=key_path,
        created_ca=created_ca,
    )


def _subject_alt_names(hostnames: list[str]) -> list[_AnyName]:
    """
    Turn requested hostnames into subjectAltName entries, in order, once each.

    @param hostnames: DNS names, wildcards and IP literals (IPv6 with or
        without brackets).
    @return: one L{x509.IPAddress} or L{x509.DNSName} per distinct name.
    @raise ValueError: if there are no hostnames, or one is empty.
    """
    names: list[_AnyName] = []
    for raw in hostnames:
        text = raw.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        if not text:
            raise ValueError("an edge certificate hostname is empty")
        name: _AnyName
        try:
            name = x509.IPAddress(ipaddress.ip_address(text))
        except ValueError:
            name = x509.DNSName(_ascii_dns_name(text))
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError("the edge certificate needs at least one hostname")
    return names


def _ascii_dns_name(name: str) -> str:
    """
    Lower-case a DNS name and IDNA-encode its labels, keeping a leading C{*}.

    @param name: a DNS name or wildcard, possibly internationalized.
    @return: the ASCII form to put in a certificate.
    """
    name = name.rstrip(".").lower()
    prefix = ""
    if name.startswith("*."):
        prefix, name = "*.", name[2:]
    if not name.isascii():
        name = name.encode("idna").decode("ascii")
    return prefix + name


def _make_state_dir(state_dir: FilePath[str]) -> None:
    """
    Create the state directory with mode 0700 when it does not exist.

    @param state_dir: the directory.
    @raise TunnelkitError: C{TK_STATE_DIR_UNWRITABLE} if it cannot be made.
    """
    if os.path.isdir(state_dir.path):
        return
    try:
        os.makedirs(state_dir.path, mode=0o700)
        os.chmod(state_dir.path, 0o700)
    except OSError as e:
        raise _unwritable(state_dir, e) from e


def _unwritable(path: FilePath[str], error: OSError) -> TunnelkitError:
    """
    Describe a state directory the edge cannot write to.

    @param path: the directory or file that failed.
    @param error: the operating system's error.
    @return: a C{TK_STATE_DIR_UNWRITABLE} error naming the path.
    """
    return TunnelkitError(
        "TK_STATE_DIR_UNWRITABLE",
        f"cannot write the edge state at {path.path} ({error.strerror or error}); "
        "make the state directory writable by the edge's user, or point the "
        "edge at another state directory",
    )


def _write_atomically(path: FilePath[str], data: bytes, mode: int) -> None:
    """
    Replace C{path} with C{data}: write a temporary file, then rename it.

    @param path: the file to replace.
    @param data: its new contents.
    @param mode: its permission bits, set before any data is written.
    @raise TunnelkitError: C{TK_STATE_DIR_UNWRITABLE} if writing fails.
    """
    temporary = path.sibling(f".{path.basename()}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(temporary.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            os.fchmod(fd, mode)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary.path, path.path)
    except OSError as e:
        try:
            os.unlink(temporary.path)
        except OSError:
            pass
        raise _unwritable(path, e) from e


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """
    @param key: a private key.
    @return: the key as unencrypted PKCS#8 PEM.
    """
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    """
    @param cert: a certificate.
    @return: the certificate as PEM.
    """
    return cert.public_bytes(serialization.Encoding.PEM)


def _load_ca(
    cert_path: FilePath[str], key_path: FilePath[str], now: datetime.datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """
    Read an existing CA and check that it can still sign.

    @param cert_path: C{ca.pem}.
    @param key_path: C{ca.key}.
    @param now: the current time (UTC).
    @return: the CA certificate and its key.
    @raise TunnelkitError: C{TK_EDGE_CERT_INVALID} if the files cannot be
        read, do not match, or the CA has expired.
    """

    def invalid(problem: str) -> TunnelkitError:
        return TunnelkitError(
            "TK_EDGE_CERT_INVALID",
            f"the edge CA in {cert_path.dirname()} {problem}; restore {_CA_CERT} "
            f"and {_CA_KEY} from a backup, or remove both to create a new CA "
            "(agents then need the new ca.pem in root_cas)",
        )

    try:
        cert = x509.load_pem_x509_certificate(cert_path.getContent())
        key = serialization.load_pem_private_key(key_path.getContent(), None)
    except (OSError, ValueError, TypeError) as e:
        raise invalid(f"cannot be read ({e})") from e
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise invalid("has a key that is not an EC key")
    if not _same_public_key(cert, key):
        raise invalid(f"has a {_CA_KEY} that does not match {_CA_CERT}")
    if cert.not_valid_after_utc <= now + RENEW_BEFORE:
        raise invalid(f"expires on {cert.not_valid_after_utc:%Y-%m-%d}")
    return cert, key


def _same_public_key(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bool:
    """
    @param cert: a certificate.
    @param key: a private key.
    @return: whether C{key} is the private half of C{cert}'s public key.
    """
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return bool(
        cert.public_key().public_bytes(der, spki)
        == key.public_key().public_bytes(der, spki)
    )


def _needs_new_leaf(
    cert_path: FilePath[str],
    key_path: FilePath[str],
    ca_cert: x509.Certificate,
    names: list[_AnyName],
    now: datetime.datetime,
) -> bool:
    """
    Decide whether the server certificate on disk must be replaced.

    @param cert_path: C{edge.pem}.
    @param key_path: C{edge.key}.
    @param ca_cert: the CA that must have signed it.
    @param names: the subjectAltNames it must carry.
    @param now: the current time (UTC).
    @return: C{True} if it is missing, unusable, stale or incomplete.
    """
    try:
        cert = x509.load_pem_x509_certificate(cert_path.getContent())
        key = serialization.load_pem_private_key(key_path.getContent(), None)
        cert.verify_directly_issued_by(ca_cert)
        carried = cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value
    except (OSError, ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return True
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return True
    if not _same_public_key(cert, key):
        return True
    if any(name not in carried for name in names):
        return True
    return bool(cert.not_valid_after_utc <= now + RENEW_BEFORE)


def _key_usage(signs_certificates: bool) -> x509.KeyUsage:
    """
    @return: the key usage of a CA (C{signs_certificates}) or of a server
        certificate: digital signatures, plus certificate and CRL signing
        for a CA.
    """
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def _key_identifier(key: ec.EllipticCurvePrivateKey) -> x509.SubjectKeyIdentifier:
    """
    @param key: a private key.
    @return: the subject key identifier of its public half.
    """
    return x509.SubjectKeyIdentifier.from_public_key(key.public_key())


def _issue_ca(
    key: ec.EllipticCurvePrivateKey, now: datetime.datetime
) -> x509.Certificate:
    """
    Make a self-signed CA certificate valid for L{CA_VALIDITY}.

    @param key: the CA's private key.
    @param now: the current time (UTC).
    @return: the CA certificate, allowed to sign server certificates only.
    """
    # A random suffix tells apart the CAs of different edges in a trust store.
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tunnelkit"),
            x509.NameAttribute(
                NameOID.COMMON_NAME, f"tunnelkit edge CA {secrets.token_hex(4)}"
            ),
        ]
    )
    usage = _key_usage(signs_certificates=True)
    ski = _key_identifier(key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
            critical=False,
        )
    )
    return builder.sign(key, hashes.SHA256())


def _issue_server(
    key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    names: list[_AnyName],
    now: datetime.datetime,
) -> x509.Certificate:
    """
    Make a server certificate for C{names}, signed by the CA.

    @param key: the server's private key.
    @param ca_cert: the CA certificate.
    @param ca_key: the CA's private key.
    @param names: the subjectAltNames to carry.
    @param now: the current time (UTC).
    @return: a certificate valid for L{SERVER_VALIDITY}, or until the CA
        expires if that is sooner.
    """
    first = names[0]
    common_name = str(first.value)
    if len(common_name) > 64:
        common_name = "tunnelkit edge"
    usage = _key_usage(signs_certificates=False)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    not_after = min(now + SERVER_VALIDITY, ca_cert.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(_key_identifier(key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                ca_ski.value
            ),
            critical=False,
        )
    )
    return builder.sign(ca_key, hashes.SHA256())
