"""
Tests for L{tunnelkit.pki} and L{tunnelkit.tlsoptions}: the edge's generated
CA and server certificate, the TLS options of both ends, and the errors a
failed verification turns into.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import stat
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL
from service_identity import VerificationError
from service_identity.cryptography import (
    verify_certificate_hostname,
    verify_certificate_ip_address,
)
from service_identity.exceptions import DNSMismatch
from service_identity.hazmat import DNS_ID
from twisted.internet import reactor as _global_reactor
from twisted.internet.defer import Deferred, FirstError, gatherResults
from twisted.internet.endpoints import (
    SSL4ServerEndpoint,
    TCP4ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.error import ConnectError, ConnectionLost
from twisted.internet.interfaces import (
    IHandshakeListener,
    IListeningPort,
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tunnelkit.errors import TunnelkitError
from tunnelkit.pki import (
    CA_VALIDITY,
    SERVER_VALIDITY,
    EdgeCertificate,
    client_tls_options,
    describe_tls_failure,
    ensure_edge_certificate,
    server_tls_options,
)

_OPENSSL = "/usr/bin/openssl"
_HOSTNAMES = ["localhost", "127.0.0.1", "::1", "*.tunnels.example.com"]
_NOW = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)


def _state_dir(case: SynchronousTestCase) -> FilePath[str]:
    """
    @param case: the running test.
    @return: a state directory path that does not exist yet.
    """
    return FilePath(case.mktemp())


def _load_cert(path: FilePath[str]) -> x509.Certificate:
    """
    @param path: a PEM certificate file.
    @return: its first certificate.
    """
    return x509.load_pem_x509_certificate(path.getContent())


def _mode(path: FilePath[str]) -> int:
    """
    @param path: a file or directory.
    @return: its permission bits.
    """
    return stat.S_IMODE(os.stat(path.path).st_mode)


def _pair_matches(cert_path: FilePath[str], key_path: FilePath[str]) -> bool:
    """
    @param cert_path: a PEM certificate file.
    @param key_path: a PEM private key file.
    @return: whether the key is the certificate's.
    """
    key = serialization.load_pem_private_key(key_path.getContent(), None)
    der, spki = (
        serialization.Encoding.DER,
        serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    return bool(
        _load_cert(cert_path).public_key().public_bytes(der, spki)
        == key.public_key().public_bytes(der, spki)
    )


def _signed_by(cert_path: FilePath[str], ca_path: FilePath[str]) -> bool:
    """
    @param cert_path: a PEM certificate file.
    @param ca_path: a PEM CA certificate file.
    @return: whether the CA issued and signed the certificate.
    """
    try:
        _load_cert(cert_path).verify_directly_issued_by(_load_cert(ca_path))
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _sans(cert: x509.Certificate) -> list[x509.GeneralName]:
    """
    @param cert: a certificate.
    @return: its subjectAltNames, in order.
    """
    extension = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return list(extension.value)


def _pem_key(key: CertificateIssuerPrivateKeyTypes, pkcs1: bool = False) -> bytes:
    """
    @param key: a private key.
    @param pkcs1: write the traditional OpenSSL form (PKCS#1 or SEC1).
    @return: the key as unencrypted PEM.
    """
    private_format = serialization.PrivateFormat.PKCS8
    if pkcs1:
        private_format = serialization.PrivateFormat.TraditionalOpenSSL
    return key.private_bytes(
        serialization.Encoding.PEM, private_format, serialization.NoEncryption()
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    """
    @param cert: a certificate.
    @return: the certificate as PEM.
    """
    return cert.public_bytes(serialization.Encoding.PEM)


def _sign(
    subject: str,
    key: CertificateIssuerPrivateKeyTypes,
    issuer: x509.Certificate | None,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    ca: bool,
    names: tuple[str, ...] = (),
) -> x509.Certificate:
    """
    Make a certificate for tests of operator-supplied chains.

    @param subject: the common name.
    @param key: the subject's private key.
    @param issuer: the issuing CA, or C{None} for a self-signed root.
    @param issuer_key: the issuer's private key.
    @param ca: whether the certificate may sign others.
    @param names: DNS and IP subjectAltNames for a leaf.
    @return: the signed certificate.
    """
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer is not None else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if names:
        sans: list[x509.GeneralName] = []
        for entry in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(entry)))
            except ValueError:
                sans.append(x509.DNSName(entry))
        builder = builder.add_extension(
            x509.SubjectAlternativeName(sans), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


class _OperatorChain:
    """
    A root CA, an intermediate CA and a leaf with an RSA key, written as an
    operator would configure them: the leaf followed by the intermediate.

    @ivar root_path: the root CA, which clients trust.
    @ivar chain_cert_path: the leaf followed by the intermediate.
    @ivar leaf_path: the leaf alone.
    @ivar intermediate_path: the intermediate alone.
    @ivar key_path: the leaf's RSA key in PKCS#1 PEM.
    """

    def __init__(self, directory: FilePath[str]) -> None:
        directory.makedirs(ignoreExistingDirectory=True)
        root_key = ec.generate_private_key(ec.SECP256R1())
        root = _sign("operator root", root_key, None, root_key, ca=True)
        middle_key = ec.generate_private_key(ec.SECP256R1())
        middle = _sign("operator intermediate", middle_key, root, root_key, ca=True)
        leaf_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        leaf = _sign(
            "edge", leaf_key, middle, middle_key, ca=False, names=tuple(_HOSTNAMES)
        )
        self.root_path = directory.child("root.pem")
        self.root_path.setContent(_pem_cert(root))
        self.chain_cert_path = directory.child("fullchain.pem")
        self.chain_cert_path.setContent(_pem_cert(leaf) + _pem_cert(middle))
        self.leaf_path = directory.child("leaf.pem")
        self.leaf_path.setContent(_pem_cert(leaf))
        self.intermediate_path = directory.child("intermediate.pem")
        self.intermediate_path.setContent(_pem_cert(middle))
        self.key_path = directory.child("leaf.key")
        self.key_path.setContent(_pem_key(leaf_key, pkcs1=True))


def _handshake_in_memory(
    server_context: SSL.Context, client_context: SSL.Context
) -> tuple[SSL.Connection, SSL.Error | None]:
    """
    Run a TLS handshake between two contexts through memory buffers.

    @param server_context: the server's context.
    @param client_context: the client's context.
    @return: the client connection and the error that stopped the handshake,
        or C{None} when both sides finished it.
    """
    server = SSL.Connection(server_context, None)
    server.set_accept_state()
    client = SSL.Connection(client_context, None)
    client.set_connect_state()
    finished: set[int] = set()
    for _ in range(20):
        for connection in (client, server):
            if id(connection) in finished:
                continue
            try:
                connection.do_handshake()
                finished.add(id(connection))
            except SSL.WantReadError:
                pass
            except SSL.Error as e:
                return client, e
        for source, sink in ((client, server), (server, client)):
            try:
                sink.bio_write(source.bio_read(65536))
            except SSL.WantReadError:
                pass
        if len(finished) == 2:
            return client, None
    raise AssertionError("the handshake did not finish in 20 rounds")


def _client_context(max_version: int) -> SSL.Context:
    """
    @param max_version: the newest TLS version the client offers.
    @return: a client context that verifies nothing and allows old versions.
    """
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_min_proto_version(SSL.TLS1_VERSION)
    context.set_max_proto_version(max_version)
    context.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
    return context


class EnsureEdgeCertificateTests(SynchronousTestCase):
    """
    Tests for L{ensure_edge_certificate}.
    """

    def test_first_start_creates_files(self) -> None:
        """
        With nothing in the state directory, the CA and the server
        certificate are written there and C{created_ca} is set.
        """
        state = _state_dir(self)

        result = ensure_edge_certificate(state, _HOSTNAMES, now=_NOW)

        self.assertEqual(
            result,
            EdgeCertificate(
                ca_path=state.child("ca.pem"),
                cert_path=state.child("edge.pem"),
                key_path=state.child("edge.key"),
                created_ca=True,
            ),
        )
        self.assertEqual(
            sorted(state.listdir()), ["ca.key", "ca.pem", "edge.key", "edge.pem"]
        )

    def test_state_dir_is_private(self) -> None:
        """
        A state directory created by the call has mode 0700.
        """
        state = _state_dir(self)

        ensure_edge_certificate(state, _HOSTNAMES, now=_NOW)

        self.assertEqual(_mode(state), 0o700)

    def test_key_files_are_private(self) -> None:
        """
        Both private keys are written with mode 0600.
        """
        state = _state_dir(self)

        ensure_edge_certificate(state, _HOSTNAMES, now=_NOW)

        self.assertEqual(
            (_mode(state.child("ca.key")), _mode(state.child("edge.key"))),
            (0o600, 0o600),
        )

    def test_keys_are_p256(self) -> None:
        """
        The CA and the server certificate use EC P-256 keys.
        """
        state = _state_dir(self)

        result = ensure_edge_certificate(state, _HOSTNAMES, now=_NOW)

        curves = [
            type(_load_cert(path).public_key().curve)  # type: ignore[union-attr]
            for path in (result.ca_path, result.cert_path)
        ]
        self.assertEqual(curves, [ec.SECP256R1, ec.SECP256R1])

    def test_ca_extensions(self) -> None:
        """
        The CA is a critical basicConstraints CA allowed to sign certificates,
        with key identifiers, valid for ten years.
        """
        state = _state_dir(self)

        ca = _load_cert(ensure_edge_certificate(state, _HOSTNAMES, now=_NOW).ca_path)

        constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
        usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
        ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = ca.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        self.assertEqual((constraints.critical, constraints.value.ca), (True, True))
        self.assertEqual((usage.key_cert_sign, usage.crl_sign), (True, True))
        self.assertEqual(aki.key_identifier, ski.digest)
        self.assertEqual(ca.not_valid_after_utc, _NOW + CA_VALIDITY)

    def test_server_certificate_extensions(self) -> None:
        """
        The server certificate is no CA, is for server authentication, names
        the CA's key as its authority, and is valid for 825 days.
        """
        state = _state_dir(self)

        result = ensure_edge_certificate(state, _HOSTNAMES, now=_NOW)

        ca, leaf = _load_cert(result.ca_path), _load_cert(result.cert_path)
        ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        extensions = leaf.extensions
        self.assertFalse(
            extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        )
        self.assertTrue(
            extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
        )
        self.assertEqual(
            list(extensions.get_extension_for_class(x509.ExtendedKeyUsage).value),
            [ExtendedKeyUsageOID.SERVER_AUTH],
        )
        self.assertEqual(
            extensions.get_extension_for_class(
                x509.AuthorityKeyIdentifier
            ).value.key_identifier,
            ca_ski.value.digest,
        )
        self.assertEqual(
            extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value,
            x509.SubjectKeyIdentifier.from_public_key(leaf.public_key()),
        )
        self.assertEqual(leaf.not_valid_after_utc, _NOW + SERVER_VALIDITY)

    def test_server_certificate_signed_by_ca(self) -> None:
        """
        The server certificate's signature verifies with the CA's key.
        """
        state = _state_dir(self)

        result = ensure_edge_certificate(state, _HOSTNAMES, now=_NOW)

        self.assertTrue(_signed_by(result.cert_path, result.ca_path))

    def test_ip_literals_become_ip_sans(self) -> None:
        """
        IPv4 and IPv6 literals, bracketed or not, are IP subjectAltNames and
        DNS names stay DNS names, wildcards included.
        """
        state = _state_dir(self)

        result = ensure_edge_certificate(
            state, ["localhost", "127.0.0.1", "[::1]", "*.tunnels.example.com"]
        )

        self.assertEqual(
            _sans(_load_cert(result.cert_path)),
            [
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(ipaddress.ip_address("::1")),
                x509.DNSName("*.tunnels.example.com"),
            ],
        )

    def test_ip_sans_verify(self) -> None:
        """
        C{service_identity} accepts the certificate for both IP literals.
        """
        state = _state_dir(self)

        cert = _load_cert(ensure_edge_certificate(state, _HOSTNAMES).cert_path)

        verify_certificate_ip_address(cert, "127.0.0.1")
        verify_certificate_ip_address(cert, "::1")

    def test_wildcard_covers_subdomains(self) -> None:
        """
        The wildcard name verifies for a name one label below it.
        """
        state = _state_dir(self)

        cert = _load_cert(ensure_edge_certificate(state, _HOSTNAMES).cert_path)

        verify_certificate_hostname(cert, "demo.tunnels.example.com")

    def test_wildcard_does_not_cover_other_names(self) -> None:
        """
        A name the certificate does not carry fails verification.
        """
        state = _state_dir(self)

        cert = _load_cert(ensure_edge_certificate(state, _HOSTNAMES).cert_path)

        self.assertRaises(
            VerificationError, verify_certificate_hostname, cert, "example.org"
        )

    def test_later_start_reuses_everything(self) -> None:
        """
        A second call with the same hostnames keeps both certificates and
        reports that it did not create the CA.
        """
        state = _state_dir(self)
        first = ensure_edge_certificate(state, _HOSTNAMES, now=_NOW)
        before = (first.ca_path.getContent(), first.cert_path.getContent())

        second = ensure_edge_certificate(
            state, _HOSTNAMES, now=_NOW + datetime.timedelta(days=1)
        )

        self.assertFalse(second.created_ca)
        self.assertEqual(
            (second.ca_path.getContent(), second.cert_path.getContent()), before
        )

    def test_subset_of_names_keeps_certificate(self) -> None:
        """
        Asking for fewer names than the certificate carries keeps it.
        """
        state = _state_dir(self)
        before = ensure_edge_certificate(state, _HOSTNAMES, now=_NOW)
        content = before.cert_path.getContent()

        after = ensure_edge_certificate(state, ["localhost"], now=_NOW)

        self.assertEqual(after.cert_path.getContent(), content)

    def test_new_hostname_reissues_under_same_ca(self) -> None:
        """
        A hostname the certificate lacks gets a new server certificate from
        the same CA, carrying the new name.
        """
        state = _state_dir(self)
        first = ensure_edge_certificate(state, _HOSTNAMES, now=_NOW)
        ca_before = first.ca_path.getContent()
        leaf_before = first.cert_path.getContent()

        second = ensure_edge_certificate(
            state, _HOSTNAMES + ["edge.example.net"], now=_NOW
        )

        self.assertFalse(second.created_ca)
        self.assertEqual(second.ca_path.getContent(), ca_before)
        self.assertNotEqual(second.cert_path.getContent(), leaf_before)
        self.assertIn(
            x509.DNSName("edge.example.net"), _sans(_load_cert(second.cert_path))
        )
        self.assertTrue(_signed_by(second.cert_path, second.ca_path))

    def test_expiring_certificate_is_reissued(self) -> None:
        """
        A server certificate that expires within 30 days is replaced.
        """
        state = _state_dir(self)
        first = ensure_edge_certificate(state, _HOSTNAMES, now=_NOW)
        serial = _load_cert(first.cert_path).serial_number

        later = _NOW + SERVER_VALIDITY - datetime.timedelta(days=29)
        second = ensure_edge_certificate(state, _HOSTNAMES, now=later)

        self.assertNotEqual(_load_cert(second.cert_path).serial_number, serial)

    def test_certificate_with_time_left_is_kept(self) -> None:
        """
        A server certificate with more than 30 days left is kept.
        """
        state = _state_dir(self)
        first = ensure_edge_certificate(state, _HOSTNAMES, now=_NOW)
        serial = _load_cert(first.cert_path).serial_number

        later = _NOW + SERVER_VALIDITY - datetime.timedelta(days=31)
        second = ensure_edge_certificate(state, _HOSTNAMES, now=later)

        self.assertEqual(_load_cert(second.cert_path).serial_number, serial)

    def test_mismatched_key_is_reissued(self) -> None:
        """
        A server key that does not match the certificate (as after a crash
        between the two writes) causes a fresh pair.
        """
        state = _state_dir(self)
        first = ensure_edge_certificate(state, _HOSTNAMES, now=_NOW)
        first.key_path.setContent(_pem_key(ec.generate_private_key(ec.SECP256R1())))

        second = ensure_edge_certificate(state, _HOSTNAMES, now=_NOW)

        self.assertTrue(_pair_matches(second.cert_path, second.key_path))

    def test_certificate_from_another_ca_is_reissued(self) -> None:
        """
        A server certificate that the state directory's CA did not sign is
        replaced by one it did.
        """
        state = _state_dir(self)
        other = ensure_edge_certificate(_state_dir(self), _HOSTNAMES, now=_NOW)
        ensure_edge_certificate(state, _HOSTNAMES, now=_NOW)
        other.cert_path.copyTo(state.child("edge.pem"))
        other.key_path.copyTo(state.child("edge.key"))

        result = ensure_edge_certificate(state, _HOSTNAMES, now=_NOW)

        self.assertTrue(_signed_by(result.cert_path, result.ca_path))

    def test_ca_key_without_ca_certificate_starts_over(self) -> None:
        """
        A C{ca.key} without C{ca.pem} (a first start cut short) is replaced
        by a new CA.
        """
        state = _state_dir(self)
        ensure_edge_certificate(state, _HOSTNAMES, now=_NOW)
        state.child("ca.pem").remove()

        result = ensure_edge_certificate(state, _HOSTNAMES, now=_NOW)

        self.assertTrue(result.created_ca)
        self.assertTrue(_signed_by(result.cert_path, result.ca_path))

    def test_no_temporary_files_left(self) -> None:
        """
        After issuing and reissuing, only the four files are in the state
        directory.
        """
        state = _state_dir(self)
        ensure_edge_certificate(state, _HOSTNAMES, now=_NOW)

        ensure_edge_certificate(state, ["other.example.net"], now=_NOW)

        self.assertEqual(
            sorted(state.listdir()), ["ca.key", "ca.pem", "edge.key", "edge.pem"]
        )

    def test_unreadable_ca_is_invalid(self) -> None:
        """
        A corrupt C{ca.pem} raises C{TK_EDGE_CERT_INVALID} naming the state
        directory, instead of silently replacing the CA agents trust.
        """
        state = _state_dir(self)
        ensure_edge_certificate(state, _HOSTNAMES, now=_NOW)
        state.child("ca.pem").setContent(b"not a certificate\n")

        error = self.assertRaises(
            TunnelkitError, ensure_edge_certificate, state, _HOSTNAMES, now=_NOW
        )

        self.assertEqual(error.code, "TK_EDGE_CERT_INVALID")
        self.assertIn(state.path, error.message)

    def test_missing_ca_key_is_invalid(self) -> None:
        """
        A C{ca.pem} whose C{ca.key} is gone raises C{TK_EDGE_CERT_INVALID}.
        """
        state = _state_dir(self)
        ensure_edge_certificate(state, _HOSTNAMES, now=_NOW)
        state.child("ca.key").remove()

        error = self.assertRaises(
            TunnelkitError, ensure_edge_certificate, state, _HOSTNAMES, now=_NOW
        )

        self.assertEqual(error.code, "TK_EDGE_CERT_INVALID")

    def test_expired_ca_is_invalid(self) -> None:
        """
        A CA that expires within 30 days raises C{TK_EDGE_CERT_INVALID}.
        """
        state = _state_dir(self)
        ensure_edge_certificate(state, _HOSTNAMES, now=_NOW)

        error = self.assertRaises(
            TunnelkitError,
            ensure_edge_certificate,
            state,
            _HOSTNAMES,
            now=_NOW + CA_VALIDITY,
        )

        self.assertEqual(error.code, "TK_EDGE_CERT_INVALID")

    def test_state_dir_below_a_file_is_unwritable(self) -> None:
        """
        A state directory that cannot be created raises
        C{TK_STATE_DIR_UNWRITABLE} naming it.
        """
        blocker = FilePath(self.mktemp())
        blocker.setContent(b"")
        state = blocker.child("state")

        error = self.assertRaises(
            TunnelkitError, ensure_edge_certificate, state, _HOSTNAMES
        )

        self.assertEqual(error.code, "TK_STATE_DIR_UNWRITABLE")
        self.assertIn(state.path, error.message)

    def test_unwritable_file_is_reported(self) -> None:
        """
        A file that cannot be replaced raises C{TK_STATE_DIR_UNWRITABLE}
        naming it.
        """
        state = _state_dir(self)
        state.makedirs()
        state.child("ca.key").makedirs()
        state.child("ca.key").child("occupied").setContent(b"")

        error = self.assertRaises(
            TunnelkitError, ensure_edge_certificate, state, _HOSTNAMES
        )

        self.assertEqual(error.code, "TK_STATE_DIR_UNWRITABLE")
        self.assertIn(state.child("ca.key").path, error.message)

    def test_no_hostnames_is_a_programming_error(self) -> None:
        """
        An empty hostname list raises L{ValueError}.
        """
        state = _state_dir(self)

        self.assertRaises(ValueError, ensure_edge_certificate, state, [])


class ServerTLSOptionsTests(SynchronousTestCase):
    """
    Tests for L{server_tls_options}.
    """

    def test_generated_certificate(self) -> None:
        """
        The generated files give server connection creator options.
        """
        result = ensure_edge_certificate(_state_dir(self), _HOSTNAMES)

        options = server_tls_options(result.cert_path, result.key_path)

        self.assertTrue(verifyObject(IOpenSSLServerConnectionCreator, options))

    def test_chain_in_certificate_file_is_sent(self) -> None:
        """
        A certificate file with the leaf followed by an intermediate and a
        PKCS#1 RSA key serves both, so a client trusting only the root
        verifies it.
        """
        chain = _OperatorChain(FilePath(self.mktemp()))
        client = SSL.Context(SSL.TLS_METHOD)
        client.load_verify_locations(chain.root_path.path)
        client.set_verify(SSL.VERIFY_PEER)

        options = server_tls_options(chain.chain_cert_path, chain.key_path)
        connection, error = _handshake_in_memory(options.getContext(), client)

        self.assertIsNone(error)
        self.assertEqual(len(connection.get_verified_chain() or []), 3)

    def test_separate_chain_file_is_sent(self) -> None:
        """
        Intermediates given in C{chain_path} are served after the leaf.
        """
        chain = _OperatorChain(FilePath(self.mktemp()))
        client = SSL.Context(SSL.TLS_METHOD)
        client.load_verify_locations(chain.root_path.path)
        client.set_verify(SSL.VERIFY_PEER)

        options = server_tls_options(
            chain.leaf_path, chain.key_path, chain.intermediate_path
        )
        connection, error = _handshake_in_memory(options.getContext(), client)

        self.assertIsNone(error)
        self.assertEqual(len(connection.get_verified_chain() or []), 3)

    def test_sec1_ec_key(self) -> None:
        """
        An EC key in SEC1 form (C{BEGIN EC PRIVATE KEY}) is accepted.
        """
        result = ensure_edge_certificate(_state_dir(self), _HOSTNAMES)
        key = serialization.load_pem_private_key(result.key_path.getContent(), None)
        sec1 = FilePath(self.mktemp())
        sec1.setContent(_pem_key(key, pkcs1=True))  # type: ignore[arg-type]

        options = server_tls_options(result.cert_path, sec1)

        self.assertTrue(verifyObject(IOpenSSLServerConnectionCreator, options))

    def test_refuses_tls_1_1(self) -> None:
        """
        A client that offers at most TLS 1.1 cannot connect.
        """
        result = ensure_edge_certificate(_state_dir(self), _HOSTNAMES)
        options = server_tls_options(result.cert_path, result.key_path)

        _, error = _handshake_in_memory(
            options.getContext(), _client_context(SSL.TLS1_1_VERSION)
        )

        self.assertIn("unsupported protocol", str(error))

    def test_accepts_tls_1_2(self) -> None:
        """
        A client that offers at most TLS 1.2 connects.
        """
        result = ensure_edge_certificate(_state_dir(self), _HOSTNAMES)
        options = server_tls_options(result.cert_path, result.key_path)

        connection, error = _handshake_in_memory(
            options.getContext(), _client_context(SSL.TLS1_2_VERSION)
        )

        self.assertEqual(
            (error, connection.get_protocol_version_name()), (None, "TLSv1.2")
        )

    def assertInvalid(
        self, cert: FilePath[str], key: FilePath[str], named: str
    ) -> None:
        """
        Assert that the pair raises C{TK_EDGE_CERT_INVALID} naming a path.

        @param cert: the certificate file.
        @param key: the key file.
        @param named: a path the message must contain.
        """
        error = self.assertRaises(TunnelkitError, server_tls_options, cert, key)
        self.assertEqual(error.code, "TK_EDGE_CERT_INVALID")
        self.assertIn(named, error.message)

    def test_missing_certificate(self) -> None:
        """
        A certificate file that does not exist is C{TK_EDGE_CERT_INVALID}.
        """
        result = ensure_edge_certificate(_state_dir(self), _HOSTNAMES)
        missing = FilePath(self.mktemp())

        self.assertInvalid(missing, result.key_path, missing.path)

    def test_certificate_file_without_certificate(self) -> None:
        """
        A certificate file with no PEM certificate is C{TK_EDGE_CERT_INVALID}.
        """
        result = ensure_edge_certificate(_state_dir(self), _HOSTNAMES)

        self.assertInvalid(result.key_path, result.key_path, result.key_path.path)

    def test_missing_key(self) -> None:
        """
        A key file that does not exist is C{TK_EDGE_CERT_INVALID}.
        """
        result = ensure_edge_certificate(_state_dir(self), _HOSTNAMES)
        missing = FilePath(self.mktemp())

        self.assertInvalid(result.cert_path, missing, missing.path)

    def test_key_file_without_key(self) -> None:
        """
        A key file holding a certificate is C{TK_EDGE_CERT_INVALID}.
        """
        result = ensure_edge_certificate(_state_dir(self), _HOSTNAMES)

        self.assertInvalid(result.cert_path, result.cert_path, result.cert_path.path)

    def test_encrypted_key(self) -> None:
        """
        A passphrase-protected key is C{TK_EDGE_CERT_INVALID}.
        """
        result = ensure_edge_certificate(_state_dir(self), _HOSTNAMES)
        key = serialization.load_pem_private_key(result.key_path.getContent(), None)
        encrypted = FilePath(self.mktemp())
        encrypted.setContent(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"secret"),
            )
        )

        self.assertInvalid(result.cert_path, encrypted, encrypted.path)

    def test_key_of_another_certificate(self) -> None:
        """
        A key that does not match the certificate is C{TK_EDGE_CERT_INVALID}.
        """
        result = ensure_edge_certificate(_state_dir(self), _HOSTNAMES)
        other = ensure_edge_certificate(_state_dir(self), _HOSTNAMES)

        self.assertInvalid(result.cert_path, other.key_path, other.key_path.path)


class ClientTLSOptionsTests(SynchronousTestCase):
    """
    Tests for L{client_tls_options} without sockets.
    """

    def test_host_trust(self) -> None:
        """
        C{None}, C{"host"} and C{"trusted"} give client connection creators.
        """
        options = [
            client_tls_options("edge.example.com", r) for r in (None, "host", "trusted")
        ]

        for each in options:
            self.assertTrue(verifyObject(IOpenSSLClientConnectionCreator, each))

    def test_missing_root_cas(self) -> None:
        """
        A C{root_cas} file that does not exist is C{TK_ROOT_CAS_UNREADABLE}
        naming the path.
        """
        missing = self.mktemp()

        error = self.assertRaises(
            TunnelkitError, client_tls_options, "127.0.0.1", missing
        )

        self.assertEqual(error.code, "TK_ROOT_CAS_UNREADABLE")
        self.assertIn(missing, error.message)

    def test_root_cas_without_certificate(self) -> None:
        """
        A C{root_cas} file with no PEM certificate (here, a key) is
        C{TK_ROOT_CAS_UNREADABLE} naming the path.
        """
        result = ensure_edge_certificate(_state_dir(self), _HOSTNAMES)

        error = self.assertRaises(
            TunnelkitError, client_tls_options, "127.0.0.1", result.key_path.path
        )

        self.assertEqual(error.code, "TK_ROOT_CAS_UNREADABLE")
        self.assertIn(result.key_path.path, error.message)


def _ssl_error(reason: str) -> SSL.Error:
    """
    @param reason: OpenSSL's reason string.
    @return: an error shaped like the ones pyOpenSSL raises.
    """
    return SSL.Error([("SSL routines", "", reason)])


def _name_error() -> VerificationError:
    """
    @return: the error C{service_identity} raises for a wrong name.
    """
    return VerificationError(errors=[DNSMismatch(mismatched_id=DNS_ID("x.example"))])


class DescribeTLSFailureTests(SynchronousTestCase):
    """
    Tests for L{describe_tls_failure}.
    """

    def test_unknown_ca_with_file(self) -> None:
        """
        An OpenSSL verify failure with a C{root_cas} file is
        C{TK_EDGE_CERT_UNTRUSTED} naming the host, the file and the fix.
        """
        error = describe_tls_failure(
            _ssl_error("certificate verify failed"), "127.0.0.1", "/x/ca.pem"
        )

        assert error is not None
        self.assertEqual(error.code, "TK_EDGE_CERT_UNTRUSTED")
        for part in ("127.0.0.1", "/x/ca.pem", "STATE_DIR/ca.pem", "root_cas"):
            self.assertIn(part, error.message)

    def test_unknown_ca_with_host_store(self) -> None:
        """
        With the host trust store the message says so.
        """
        error = describe_tls_failure(
            _ssl_error("certificate verify failed"), "edge.example.com", None
        )

        assert error is not None
        self.assertEqual(error.code, "TK_EDGE_CERT_UNTRUSTED")
        self.assertIn("trust store", error.message)

    def test_name_mismatch(self) -> None:
        """
        A C{service_identity} failure is C{TK_EDGE_CERT_NAME_MISMATCH} naming
        the host.
        """
        error = describe_tls_failure(_name_error(), "x.example", "/x/ca.pem")

        assert error is not None
        self.assertEqual(error.code, "TK_EDGE_CERT_NAME_MISMATCH")
        self.assertIn("does not cover x.example", error.message)

    def test_name_mismatch_wins(self) -> None:
        """
        When both failures are present (OpenSSL reports the name check as a
        failed verification too), the name mismatch is reported.
        """
        outer = ConnectionLost(Failure(_ssl_error("certificate verify failed")))
        outer.__context__ = _name_error()

        error = describe_tls_failure(outer, "x.example", None)

        assert error is not None
        self.assertEqual(error.code, "TK_EDGE_CERT_NAME_MISMATCH")

    def test_inside_failure(self) -> None:
        """
        An error wrapped in a L{Failure} is found.
        """
        wrapped = Failure(_name_error())

        error = describe_tls_failure(wrapped, "x.example", None)

        assert error is not None
        self.assertEqual(error.code, "TK_EDGE_CERT_NAME_MISMATCH")

    def test_inside_connection_lost(self) -> None:
        """
        An error carried as a L{Failure} in L{ConnectionLost}'s arguments,
        itself in a L{Failure}, is found.
        """
        wrapped = Failure(
            ConnectionLost(Failure(_ssl_error("certificate verify failed")))
        )

        error = describe_tls_failure(wrapped, "127.0.0.1", "/x/ca.pem")

        assert error is not None
        self.assertEqual(error.code, "TK_EDGE_CERT_UNTRUSTED")

    def test_cause_of_connect_error(self) -> None:
        """
        An error set as the C{__cause__} of a L{ConnectError} is found.
        """
        outer = ConnectError(string="handshake failed")
        outer.__cause__ = _ssl_error("certificate verify failed")

        error = describe_tls_failure(outer, "127.0.0.1", "/x/ca.pem")

        assert error is not None
        self.assertEqual(error.code, "TK_EDGE_CERT_UNTRUSTED")

    def test_sub_failure(self) -> None:
        """
        An error inside a L{FirstError}'s C{subFailure} is found.
        """
        outer = FirstError(Failure(_name_error()), 0)

        error = describe_tls_failure(outer, "x.example", None)

        assert error is not None
        self.assertEqual(error.code, "TK_EDGE_CERT_NAME_MISMATCH")

    def test_other_tls_error(self) -> None:
        """
        A TLS error that is not about the certificate gives C{None}.
        """
        result = describe_tls_failure(
            _ssl_error("wrong version number"), "127.0.0.1", None
        )

        self.assertIsNone(result)

    def test_refused(self) -> None:
        """
        A refused connection gives C{None}.
        """
        result = describe_tls_failure(
            Failure(ConnectionRefusedError()), "127.0.0.1", None
        )

        self.assertIsNone(result)

    def test_cycle_ends(self) -> None:
        """
        Exceptions that wrap each other in a cycle are walked once each.
        """
        first, second = ValueError("a"), ValueError("b", [])
        first.__context__ = second
        second.__context__ = first
        second.args[1].append(second.args)

        result = describe_tls_failure(first, "127.0.0.1", None)

        self.assertIsNone(result)


class _EchoServer(Protocol):
    """
    Echoes bytes and reports when its connection ends.
    """

    def __init__(self, closed: Deferred[None]) -> None:
        self._closed = closed

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._closed.callback(None)


class _EchoServerFactory(Factory):
    """
    Makes L{_EchoServer}s and keeps a Deferred per connection for its end.

    @ivar closings: one Deferred per accepted connection, fired when it ends.
    """

    def __init__(self) -> None:
        self.closings: list[Deferred[None]] = []

    def buildProtocol(self, addr: Any) -> Protocol:
        closed: Deferred[None] = Deferred()
        self.closings.append(closed)
        return _EchoServer(closed)


@implementer(IHandshakeListener)
class _PingClient(Protocol):
    """
    After the TLS handshake sends C{ping}, waits for the echo, and closes.

    @ivar result: fires with the echoed bytes, or fails with the reason the
        connection ended before the echo.
    @ivar closed: fires when the connection has ended.
    """

    def __init__(self) -> None:
        self.result: Deferred[bytes] = Deferred()
        self.closed: Deferred[None] = Deferred()
        self._received = b""

    def handshakeCompleted(self) -> None:
        assert self.transport is not None
        self.transport.write(b"ping")

    def dataReceived(self, data: bytes) -> None:
        self._received += data
        if self._received == b"ping" and not self.result.called:
            self.result.callback(self._received)
            assert self.transport is not None
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.result.called:
            self.result.errback(reason)
        self.closed.callback(None)


class LoopbackTLSTests(TestCase):
    """
    The generated certificate served on loopback, and the agent's options
    verifying it over real sockets.
    """

    def setUp(self) -> None:
        self.reactor = _global_reactor
        self.edge = ensure_edge_certificate(_state_dir(self), _HOSTNAMES)

    async def listen(self, cert: FilePath[str], key: FilePath[str]) -> int:
        """
        Serve echo over TLS on an ephemeral loopback port until the test ends.

        @param cert: the server certificate (and chain) file.
        @param key: its key file.
        @return: the port number.
        """
        factory = _EchoServerFactory()
        endpoint = SSL4ServerEndpoint(
            self.reactor,
            0,
            server_tls_options(cert, key),
            interface="127.0.0.1",
        )
        port: IListeningPort = await endpoint.listen(factory)
        self.addCleanup(lambda: gatherResults(factory.closings))
        self.addCleanup(port.stopListening)
        return port.getHost().port  # type: ignore[attr-defined]

    async def ping(self, port: int, hostname: str, root_cas: str | None) -> bytes:
        """
        Connect to 127.0.0.1 verifying C{hostname}, and exchange C{ping}.

        @param port: the server's port.
        @param hostname: the name the client verifies.
        @param root_cas: the client's C{root_cas}.
        @return: the echo.
        @raise Exception: whatever ended the connection first.
        """
        endpoint = wrapClientTLS(
            client_tls_options(hostname, root_cas),
            TCP4ClientEndpoint(self.reactor, "127.0.0.1", port),
        )
        client = await endpoint.connect(Factory.forProtocol(_PingClient))
        assert isinstance(client, _PingClient)
        self.addCleanup(lambda: client.closed)
        return await client.result

    async def failure_of(self, port: int, hostname: str, root_cas: str | None) -> Any:
        """
        Run L{ping} expecting it to fail.

        @return: the exception it failed with.
        """
        try:
            await self.ping(port, hostname, root_cas)
        except Exception as e:
            return e
        self.fail("the connection was expected to fail")

    async def test_ca_file_verifies_ip(self) -> None:
        """
        With the generated CA as C{root_cas}, connecting by IP address
        verifies against the IP subjectAltName.
        """
        port = await self.listen(self.edge.cert_path, self.edge.key_path)

        echoed = await self.ping(port, "127.0.0.1", self.edge.ca_path.path)

        self.assertEqual(echoed, b"ping")

    async def test_ca_file_verifies_dns_name(self) -> None:
        """
        Connecting with a DNS name the certificate carries succeeds.
        """
        port = await self.listen(self.edge.cert_path, self.edge.key_path)

        echoed = await self.ping(port, "localhost", self.edge.ca_path.path)

        self.assertEqual(echoed, b"ping")

    async def test_ca_file_verifies_wildcard(self) -> None:
        """
        Connecting with a name under the wildcard succeeds.
        """
        port = await self.listen(self.edge.cert_path, self.edge.key_path)

        echoed = await self.ping(
            port, "edge.tunnels.example.com", self.edge.ca_path.path
        )

        self.assertEqual(echoed, b"ping")

    async def test_every_ca_in_bundle_is_trusted(self) -> None:
        """
        A C{root_cas} file with another CA first and the edge's CA second
        still verifies the edge.
        """
        port = await self.listen(self.edge.cert_path, self.edge.key_path)
        other = ensure_edge_certificate(_state_dir(self), _HOSTNAMES)
        bundle = FilePath(self.mktemp())
        bundle.setContent(other.ca_path.getContent() + self.edge.ca_path.getContent())

        echoed = await self.ping(port, "127.0.0.1", bundle.path)

        self.assertEqual(echoed, b"ping")

    async def test_operator_chain_verifies_against_root(self) -> None:
        """
        An operator's leaf-plus-intermediate file with an RSA key verifies
        for a client that trusts only the root.
        """
        chain = _OperatorChain(FilePath(self.mktemp()))
        port = await self.listen(chain.chain_cert_path, chain.key_path)

        echoed = await self.ping(port, "127.0.0.1", chain.root_path.path)

        self.assertEqual(echoed, b"ping")

    async def test_other_ca_is_untrusted(self) -> None:
        """
        With another CA as C{root_cas} the connection fails, and the failure
        reads as C{TK_EDGE_CERT_UNTRUSTED} naming that file.
        """
        port = await self.listen(self.edge.cert_path, self.edge.key_path)
        other = ensure_edge_certificate(_state_dir(self), _HOSTNAMES)

        failure = await self.failure_of(port, "127.0.0.1", other.ca_path.path)

        error = describe_tls_failure(failure, "127.0.0.1", other.ca_path.path)
        assert error is not None, failure
        self.assertEqual(error.code, "TK_EDGE_CERT_UNTRUSTED")
        self.assertIn(other.ca_path.path, error.message)

    async def test_host_store_does_not_trust_private_ca(self) -> None:
        """
        With the host trust store the generated certificate is
        C{TK_EDGE_CERT_UNTRUSTED}.
        """
        port = await self.listen(self.edge.cert_path, self.edge.key_path)

        failure = await self.failure_of(port, "127.0.0.1", "host")

        error = describe_tls_failure(failure, "127.0.0.1", "host")
        assert error is not None, failure
        self.assertEqual(error.code, "TK_EDGE_CERT_UNTRUSTED")

    async def test_name_not_carried(self) -> None:
        """
        A DNS name the certificate does not carry fails as
        C{TK_EDGE_CERT_NAME_MISMATCH}.
        """
        port = await self.listen(self.edge.cert_path, self.edge.key_path)

        failure = await self.failure_of(
            port, "elsewhere.example.org", self.edge.ca_path.path
        )

        error = describe_tls_failure(
            failure, "elsewhere.example.org", self.edge.ca_path.path
        )
        assert error is not None, failure
        self.assertEqual(error.code, "TK_EDGE_CERT_NAME_MISMATCH")
        self.assertIn("elsewhere.example.org", error.message)

    async def test_ip_not_carried(self) -> None:
        """
        An IP address the certificate does not carry fails as
        C{TK_EDGE_CERT_NAME_MISMATCH}, so IP literals are really checked.
        """
        port = await self.listen(self.edge.cert_path, self.edge.key_path)

        failure = await self.failure_of(port, "127.0.0.2", self.edge.ca_path.path)

        error = describe_tls_failure(failure, "127.0.0.2", self.edge.ca_path.path)
        assert error is not None, failure
        self.assertEqual(error.code, "TK_EDGE_CERT_NAME_MISMATCH")


class OpenSSLClientTests(TestCase):
    """
    The generated certificate checked by the C{openssl s_client} binary.
    """

    if not os.path.exists(_OPENSSL):
        skip = f"{_OPENSSL} is not installed"

    def setUp(self) -> None:
        self.reactor = _global_reactor
        self.edge = ensure_edge_certificate(_state_dir(self), _HOSTNAMES)

    async def s_client(self, *verify: str) -> tuple[bytes, int]:
        """
        Serve the generated certificate and run C{openssl s_client} on it.

        @param verify: the identity options, such as C{-verify_hostname X}.
        @return: the client's standard output and exit code.
        """
        factory = _EchoServerFactory()
        endpoint = SSL4ServerEndpoint(
            self.reactor,
            0,
            server_tls_options(self.edge.cert_path, self.edge.key_path),
            interface="127.0.0.1",
        )
        port: IListeningPort = await endpoint.listen(factory)
        self.addCleanup(lambda: gatherResults(factory.closings))
        self.addCleanup(port.stopListening)
        address = f"127.0.0.1:{port.getHost().port}"  # type: ignore[attr-defined]

        out, _, code = await getProcessOutputAndValue(
            _OPENSSL,
            ["s_client", "-connect", address, "-CAfile", self.edge.ca_path.path]
            + ["-verify_return_error", *verify],
            env={},
            reactor=self.reactor,
            stdinBytes=b"",
        )
        return out, code

    async def test_verifies_hostname(self) -> None:
        """
        s_client verifies the chain and the DNS name against the generated CA.
        """
        out, code = await self.s_client(
            "-verify_hostname", "localhost", "-servername", "localhost"
        )

        self.assertEqual(code, 0, out)
        self.assertIn(b"Verify return code: 0 (ok)", out)

    async def test_verifies_ip(self) -> None:
        """
        s_client verifies the IP subjectAltName.
        """
        out, code = await self.s_client("-verify_ip", "127.0.0.1")

        self.assertEqual(code, 0, out)
        self.assertIn(b"Verify return code: 0 (ok)", out)

    async def test_rejects_name_not_carried(self) -> None:
        """
        s_client rejects a name the certificate does not carry, which shows
        the two tests above can fail.
        """
        out, code = await self.s_client("-verify_hostname", "elsewhere.example.org")

        self.assertNotEqual(code, 0, out)
