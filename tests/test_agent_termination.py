"""
Tests for L{tunnelkit.agent.termination}: the agent's TLS server end of a
tunnel with C{crt} and C{key}, against an in-memory OpenSSL client; the
files it accepts and refuses; client certificates; and the connection to
the local service made only after the handshake.
"""

import os
from typing import Any

from OpenSSL import SSL
from OpenSSL.crypto import X509, PKey
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.tlscerts import Issued, issue, make_ca
from tunnelkit.agent.termination import (
    HANDSHAKE_TIMEOUT,
    Termination,
    prepare_termination,
    termination_options,
)
from tunnelkit.agent.tunnel import Tunnel
from tunnelkit.config import TunnelDefinition, UpstreamAddress
from tunnelkit.errors import TunnelkitError

NAME = "secure.tunnels.test"


class Inner(Protocol):
    """
    The plaintext side: what the splice to the local service would be.
    """

    def __init__(self) -> None:
        self.connected = False
        self.received = bytearray()
        self.lost: list[Failure] = []

    def connectionMade(self) -> None:
        self.connected = True

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        self.lost.append(reason)


class Client:
    """
    An OpenSSL client in memory, talking to the agent's end on a string
    transport.
    """

    def __init__(
        self,
        server: Any,
        transport: StringTransport,
        alpn: list[bytes] | None = None,
        certificate: Issued | None = None,
    ) -> None:
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        if alpn:
            context.set_alpn_protos(alpn)
        if certificate is not None:
            context.use_certificate(X509.from_cryptography(certificate.certificate))
            context.use_privatekey(PKey.from_cryptography_key(certificate.key))
        self.connection = SSL.Connection(context, None)
        self.connection.set_tlsext_host_name(NAME.encode("ascii"))
        self.connection.set_connect_state()
        self.server = server
        self.transport = transport
        self.failure: SSL.Error | None = None

    def pump(self, rounds: int = 6) -> None:
        """
        Move bytes both ways until neither side has any to send.
        """
        for _ in range(rounds):
            try:
                self.connection.do_handshake()
            except SSL.WantReadError:
                pass
            except SSL.Error as error:
                self.failure = error
            self.flush()
            answer = self.transport.value()
            self.transport.clear()
            if answer:
                self.connection.bio_write(answer)

    def flush(self) -> None:
        """
        Send what the client has written.
        """
        try:
            data = self.connection.bio_read(65536)
        except SSL.WantReadError:
            return
        if not self.transport.disconnecting:
            self.server.dataReceived(data)

    def send(self, data: bytes) -> None:
        """
        Write application data.
        """
        self.connection.send(data)
        self.flush()

    def read(self) -> bytes:
        """
        @return: the application data the agent sent.
        """
        self.pump(1)
        try:
            return self.connection.recv(65536)
        except (SSL.WantReadError, SSL.ZeroReturnError):
            return b""


class TerminationTestCase(SynchronousTestCase):
    """
    A server certificate for L{NAME}, and CAs for client certificates.
    """

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.server_ca = make_ca(self.directory, "server-ca")
        self.site = issue(self.server_ca, self.directory, "site", (NAME,))
        self.client_ca = make_ca(self.directory, "client-ca")
        self.clock = Clock()

    def connect(
        self, mutual: bool = False, **client: Any
    ) -> tuple[Inner, Client, Any, StringTransport]:
        """
        Start one stream's TLS end and a client for it.
        """
        options = termination_options(
            self.site.cert_path,
            self.site.key_path,
            self.client_ca.cert_path if mutual else None,
        )
        inner = Inner()
        server = Termination(options, self.clock).protocol(inner, "198.51.100.4:999")
        transport = StringTransport()
        server.makeConnection(transport)
        return inner, Client(server, transport, **client), server, transport


class HandshakeTests(TerminationTestCase):
    """
    The client's TLS ends at the agent; the plaintext side is connected
    once the handshake is done.
    """

    def test_plaintext_after_handshake(self) -> None:
        """
        The plaintext side is not connected before the handshake, is after
        it, and gets what the client sends; what it writes reaches the
        client encrypted.
        """
        inner, client, _, _ = self.connect()
        before = inner.connected

        client.pump()
        client.send(b"GET / HTTP/1.1\r\n\r\n")
        inner.transport.write(b"HTTP/1.1 200 OK\r\n\r\n")  # type: ignore[union-attr]
        self.clock.advance(0)

        self.assertEqual((before, inner.connected), (False, True))
        self.assertEqual(bytes(inner.received), b"GET / HTTP/1.1\r\n\r\n")
        self.assertEqual(client.read(), b"HTTP/1.1 200 OK\r\n\r\n")

    def test_certificate_presented(self) -> None:
        """
        The client sees the tunnel's own certificate.
        """
        _, client, _, _ = self.connect()

        client.pump()

        peer = client.connection.get_peer_certificate()
        assert peer is not None
        self.assertEqual(peer.to_cryptography(), self.site.certificate)

    def test_alpn_offered(self) -> None:
        """
        A client offering protocols by ALPN (as curl and browsers do) gets
        none chosen, and the handshake completes.
        """
        inner, client, _, _ = self.connect(alpn=[b"h2", b"http/1.1"])

        client.pump()

        self.assertIsNone(client.failure)
        self.assertTrue(inner.connected)
        self.assertIn(client.connection.get_alpn_proto_negotiated(), (b"", None))

    def test_handshake_timeout(self) -> None:
        """
        A client that never completes its handshake is dropped after the
        timeout, with a warning, and the plaintext side is never connected.
        """
        inner, _, _, transport = self.connect()

        with capturedLogs() as events:
            self.clock.advance(HANDSHAKE_TIMEOUT)

        self.assertTrue(transport.disconnecting)
        self.assertFalse(inner.connected)
        self.assertEqual([e["log_level"] for e in events], [LogLevel.warn])

    def test_no_timeout_after_handshake(self) -> None:
        """
        Once the handshake is done no timer is left.
        """
        _, client, _, _ = self.connect()

        client.pump()

        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_half_close_sends_close_notify(self) -> None:
        """
        When the local service is done sending, the client gets
        C{close_notify}, and what it still sends reaches the service.
        """
        inner, client, server, _ = self.connect()
        client.pump()
        server.registerProducer(StringTransport(), True)

        server.loseWriteConnection()
        client.pump(1)
        client.send(b"late words")

        self.assertRaises(SSL.ZeroReturnError, client.connection.recv, 100)
        self.assertEqual(bytes(inner.received), b"late words")
        self.assertEqual(inner.lost, [])

    def test_close_with_producer(self) -> None:
        """
        Closing while the local service's connection is registered as the
        producer still sends C{close_notify} at once.
        """
        _, client, server, _ = self.connect()
        client.pump()
        server.registerProducer(StringTransport(), True)

        server.loseConnection()
        client.pump(1)

        self.assertRaises(SSL.ZeroReturnError, client.connection.recv, 100)


class MutualTlsTests(TerminationTestCase):
    """
    With C{mutual_tls_cas}, only clients with a certificate those CAs
    signed get through.
    """

    def test_good_certificate(self) -> None:
        """
        A client certificate the configured CA signed is accepted.
        """
        good = issue(self.client_ca, self.directory, "alice", client=True)
        inner, client, _, _ = self.connect(mutual=True, certificate=good)

        client.pump()
        client.send(b"hello")

        self.assertTrue(inner.connected)
        self.assertEqual(bytes(inner.received), b"hello")

    def assertRefused(self, **client: Any) -> None:
        """
        The handshake fails, the plaintext side is never connected, and the
        failure is logged at warn.
        """
        inner, tls_client, server, transport = self.connect(mutual=True, **client)

        with capturedLogs() as events:
            tls_client.pump()
            tls_client.send(b"hello")
            tls_client.pump()
            if transport.disconnecting:
                server.connectionLost(Failure(ConnectionDone()))

        self.assertFalse(inner.connected)
        self.assertEqual(inner.received, b"")
        self.assertTrue(transport.disconnecting)
        self.assertIn(LogLevel.warn, [e["log_level"] for e in events])

    def test_other_ca(self) -> None:
        """
        A client certificate from another CA is refused.
        """
        stranger = make_ca(self.directory, "stranger-ca")
        bad = issue(stranger, self.directory, "mallory", client=True)

        self.assertRefused(certificate=bad)

    def test_no_certificate(self) -> None:
        """
        A client without a certificate is refused.
        """
        self.assertRefused()


class OptionsTests(TerminationTestCase):
    """
    Files that cannot be used stop the tunnel with an error saying which.
    """

    def assertRefused(self, code: str, text: str, *paths: str | None) -> None:
        """
        L{termination_options} refuses C{paths} with C{code}, and the message
        contains C{text}.
        """
        error = self.assertRaises(TunnelkitError, termination_options, *paths)
        self.assertEqual(error.code, code)
        self.assertIn(text, error.message)

    def test_missing_crt(self) -> None:
        """
        A certificate file that cannot be read is named.
        """
        missing = os.path.join(self.directory, "none.pem")

        self.assertRefused(
            "TK_TLS_CERT_INVALID", "none.pem", missing, self.site.key_path
        )

    def test_not_pem(self) -> None:
        """
        A certificate file without a PEM certificate is refused.
        """
        self.assertRefused(
            "TK_TLS_CERT_INVALID",
            "holds no PEM certificate",
            self.site.key_path,
            self.site.key_path,
        )

    def test_not_a_key(self) -> None:
        """
        A key file without a private key is refused.
        """
        self.assertRefused(
            "TK_TLS_CERT_INVALID",
            "no usable PEM private key",
            self.site.cert_path,
            self.site.cert_path,
        )

    def test_key_of_another_certificate(self) -> None:
        """
        A key that does not belong to the certificate is refused.
        """
        self.assertRefused(
            "TK_TLS_CERT_INVALID",
            "does not belong to the certificate",
            self.site.cert_path,
            self.client_ca.key_path,
        )

    def test_cas_without_certificates(self) -> None:
        """
        A C{mutual_tls_cas} file without certificates is refused with its
        own code.
        """
        self.assertRefused(
            "TK_MUTUAL_TLS_CAS_INVALID",
            "holds no PEM certificate",
            self.site.cert_path,
            self.site.key_path,
            self.site.key_path,
        )

    def test_prepared_once_per_tunnel(self) -> None:
        """
        A tunnel's termination is made when it is first bound and kept; a
        tunnel without C{crt} has none.
        """
        addr = UpstreamAddress("tcp", "localhost", 8080)
        tunnel = Tunnel(
            TunnelDefinition(
                "t", "tls", addr, crt=self.site.cert_path, key=self.site.key_path
            )
        )
        plain = Tunnel(TunnelDefinition("p", "tls", addr))

        first = prepare_termination(tunnel, self.clock)
        again = prepare_termination(tunnel, self.clock)

        self.assertIsNotNone(first)
        self.assertIs(first, again)
        self.assertIsNone(prepare_termination(plain, self.clock))
