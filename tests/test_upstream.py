"""
Tests for L{tunnelkit.agent.upstream} and L{tunnelkit.agent.dial}: a
proxied stream joined to an HTTP or HTTPS upstream on loopback, the
C{502} page when the upstream cannot be reached, and the choice of the file
server for C{file://} tunnels.

A loopback TCP connection stands in for the stream from the edge: the test
client writes what the edge would write, and reads what the public client
would get.
"""

import datetime
import gc
import ipaddress
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.protocol import Protocol
from twisted.internet.ssl import CertificateOptions, PrivateCertificate
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from tunnelkit.agent.dial import UnverifiedClientTLS, client_tls
from tunnelkit.agent.fileserver import FileChannel
from tunnelkit.agent.tunnel import Tunnel
from tunnelkit.agent import upstream
from tunnelkit.agent.upstream import ProxiedStream, file_server, stream_protocol
from tunnelkit.config import TunnelDefinition, UpstreamAddress
from tunnelkit.control.messages import ProxyHeader
from tunnelkit.errorpage import ERROR_CODE_HEADER
from tests.e2e import Steps, free_port
from tests.rawhttp import RawClients, read_response, serve

HEADER = ProxyHeader(binding_id="web", client_addr="192.0.2.7:50000", proto="https")
REQUEST = (
    b"GET /page?x=1 HTTP/1.1\r\nHost: app.example\r\nX-Forwarded-Proto: https\r\n\r\n"
)


class _HeadEcho(Protocol):
    """
    An upstream web server that answers the first request head with itself
    as the body, then closes.
    """

    def __init__(self) -> None:
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if b"\r\n\r\n" in self.buffer and self.transport is not None:
            head = self.buffer.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                % (len(head),)
                + head
            )
            self.transport.loseConnection()
            self.buffer = b""


class _Garbage(Protocol):
    """
    A server that is not TLS: it answers anything with a line and closes.
    """

    def dataReceived(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(b"220 not tls here\r\n")
            self.transport.loseConnection()


def self_signed(server_names: list[bytes]) -> CertificateOptions:
    """
    Make server TLS options with a fresh self-signed certificate for
    C{localhost} and C{127.0.0.1}, recording in C{server_names} the SNI of
    each handshake (C{None} when the client sent none).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    options: CertificateOptions = PrivateCertificate.loadPEM(pem).options()
    options.getContext().set_tlsext_servername_callback(
        lambda connection: server_names.append(connection.get_servername())
    )
    return options


def http_tunnel(addr: UpstreamAddress, proto: str = "http") -> Tunnel:
    """
    @return: a tunnel named C{web} to C{addr}.
    """
    return Tunnel(TunnelDefinition(name="web", proto=proto, addr=addr))


class UpstreamTestCase(TestCase):
    """
    Serve proxied streams of a tunnel on loopback, and collect the
    warnings the upstream module logs.
    """

    def setUp(self) -> None:
        self.clients = RawClients(self)
        self.warnings: list[dict[str, Any]] = []

        def observe(event: dict[str, Any]) -> None:
            if (
                event.get("log_namespace") == "tunnelkit.agent.upstream"
                and event.get("log_level") == LogLevel.warn
            ):
                self.warnings.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    @inlineCallbacks
    def through(self, tunnel: Tunnel, request: bytes = REQUEST) -> Steps[bytes]:
        """
        Send C{request} on a proxied stream of C{tunnel}.

        @return: every byte the public client gets back.
        """
        port = yield serve(self, lambda: ProxiedStream(reactor, tunnel, HEADER))
        answer: bytes = yield self.clients.exchange(port, request)
        return answer


class HttpUpstreamTests(UpstreamTestCase):
    """
    An http tunnel joined to a plain HTTP upstream.
    """

    @inlineCallbacks
    def test_exchange(self) -> Steps[None]:
        """
        The request reaches the upstream byte for byte and its response
        comes back as it is.
        """
        port = yield serve(self, _HeadEcho)
        tunnel = http_tunnel(UpstreamAddress("http", "127.0.0.1", port))

        answer = yield self.through(tunnel)

        response = read_response(answer)
        self.assertEqual((response.status, response.body), (200, REQUEST))

    @inlineCallbacks
    def test_connections_counted(self) -> Steps[None]:
        """
        The connection is counted in the tunnel's total, and no longer
        open once it closed.
        """
        port = yield serve(self, _HeadEcho)
        tunnel = http_tunnel(UpstreamAddress("http", "127.0.0.1", port))

        yield self.through(tunnel)

        self.assertEqual((tunnel.total_connections, tunnel.open_connections), (1, 0))

    @inlineCallbacks
    def test_quiet(self) -> Steps[None]:
        """
        Dialling the upstream logs nothing at info level or above: no
        factory starting and stopping for each connection.
        """
        port = yield serve(self, _HeadEcho)
        tunnel = http_tunnel(UpstreamAddress("http", "127.0.0.1", port))
        server = yield serve(self, lambda: ProxiedStream(reactor, tunnel, HEADER))
        events: list[dict[str, Any]] = []

        def observe(event: dict[str, Any]) -> None:
            if event.get("log_level", LogLevel.info) >= LogLevel.info:
                events.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

        yield self.clients.exchange(server, REQUEST)

        self.assertEqual([e.get("log_format") for e in events], [])


class HttpsUpstreamTests(UpstreamTestCase):
    """
    An http tunnel joined to an HTTPS upstream whose certificate is
    self-signed.
    """

    @inlineCallbacks
    def test_self_signed_accepted(self) -> Steps[None]:
        """
        The upstream's certificate is not verified, and its name is sent as
        SNI.
        """
        names: list[bytes] = []
        port = yield serve(self, _HeadEcho, self_signed(names))
        tunnel = http_tunnel(UpstreamAddress("https", "localhost", port))

        answer = yield self.through(tunnel)

        response = read_response(answer)
        self.assertEqual((response.status, response.body), (200, REQUEST))
        self.assertEqual(names, [b"localhost"])

    @inlineCallbacks
    def test_ip_address_no_sni(self) -> Steps[None]:
        """
        An upstream named by IP address gets no SNI.
        """
        names: list[bytes] = []
        port = yield serve(self, _HeadEcho, self_signed(names))
        tunnel = http_tunnel(UpstreamAddress("https", "127.0.0.1", port))

        answer = yield self.through(tunnel)

        self.assertEqual(read_response(answer).status, 200)
        self.assertEqual(names, [None])

    @inlineCallbacks
    def test_not_tls(self) -> Steps[None]:
        """
        An https upstream that does not speak TLS gives the C{502} page,
        saying that the handshake failed.
        """
        port = yield serve(self, _Garbage)
        tunnel = http_tunnel(UpstreamAddress("https", "127.0.0.1", port))

        answer = yield self.through(tunnel)

        response = read_response(answer)
        self.assertEqual(response.status, 502)
        self.assertIn(b"the TLS handshake failed", response.body)

    @inlineCallbacks
    def test_context_shared(self) -> Steps[None]:
        """
        Connections to the same https upstream share one SSL context,
        built at the first.
        """
        port = yield serve(self, _HeadEcho, self_signed([]))
        tunnel = http_tunnel(UpstreamAddress("https", "localhost", port))
        built: list[Any] = []
        original = SSL.Context.__init__

        def build(context: SSL.Context, *args: Any) -> None:
            built.append(context)
            original(context, *args)

        client_tls.cache_clear()
        self.patch(SSL.Context, "__init__", build)

        first = yield self.through(tunnel)
        second = yield self.through(tunnel)

        self.assertEqual(
            [read_response(first).status, read_response(second).status], [200, 200]
        )
        self.assertEqual(len(built), 1)
        self.assertIs(client_tls("localhost"), client_tls("localhost"))

    def test_creator_interface(self) -> None:
        """
        L{UnverifiedClientTLS} provides the interface Twisted's TLS
        endpoints take.
        """
        self.assertTrue(
            verifyObject(IOpenSSLClientConnectionCreator, UnverifiedClientTLS("a"))
        )


class UnreachableTests(UpstreamTestCase):
    """
    An upstream that refuses the connection.
    """

    @inlineCallbacks
    def test_502_page(self) -> Steps[None]:
        """
        An http tunnel answers C{502} with the code C{TK_UPSTREAM_UNREACHABLE},
        naming the local address and the reason, then closes cleanly.
        """
        closed = free_port()
        tunnel = http_tunnel(UpstreamAddress("http", "127.0.0.1", closed))

        answer = yield self.through(tunnel)

        response = read_response(answer)
        self.assertEqual(response.status, 502)
        self.assertEqual(
            response.header(ERROR_CODE_HEADER.decode()), "TK_UPSTREAM_UNREACHABLE"
        )
        self.assertEqual(response.header("connection"), "close")
        self.assertIn(f"http://127.0.0.1:{closed}".encode(), response.body)
        self.assertIn(b"refused", response.body)
        self.assertEqual(
            len(response.body), int(response.header("content-length") or 0)
        )

    @inlineCallbacks
    def test_head(self) -> Steps[None]:
        """
        The page answering a C{HEAD} has headers only.
        """
        tunnel = http_tunnel(UpstreamAddress("http", "127.0.0.1", free_port()))

        answer = yield self.through(tunnel, b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")

        head, _, body = answer.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 502 Bad Gateway\r\n"), head)
        self.assertEqual(body, b"")

    @inlineCallbacks
    def test_logged(self) -> Steps[None]:
        """
        The failure is logged at warn with the local address and the tunnel.
        """
        closed = free_port()
        tunnel = http_tunnel(UpstreamAddress("http", "127.0.0.1", closed))

        yield self.through(tunnel)

        [warning] = self.warnings
        self.assertEqual(
            (warning["addr"], warning["name"], warning["client"]),
            (f"http://127.0.0.1:{closed}", "web", "192.0.2.7:50000"),
        )

    @inlineCallbacks
    def test_tcp_reset(self) -> Steps[None]:
        """
        A TCP tunnel still resets the stream, with no bytes written.
        """
        tunnel = http_tunnel(
            UpstreamAddress("tcp", "127.0.0.1", free_port()), proto="tcp"
        )

        answer = yield self.through(tunnel, b"hello")

        self.assertEqual(answer, b"")
        self.assertEqual(tunnel.open_connections, 0)


class StreamProtocolTests(SynchronousTestCase):
    """
    L{stream_protocol} picks the protocol of a stream by the upstream's
    scheme.
    """

    def test_dialled(self) -> None:
        """
        An http upstream is dialled by a L{ProxiedStream}.
        """
        tunnel = http_tunnel(UpstreamAddress("http", "localhost", 8080))

        protocol = stream_protocol(Clock(), tunnel, HEADER)

        self.assertIsInstance(protocol, ProxiedStream)

    def test_file_server(self) -> None:
        """
        A file upstream is served by the file server, and its connection
        is counted while open.
        """
        tunnel = http_tunnel(UpstreamAddress("file", "", None, "/nonexistent"))
        clock = Clock()

        protocol = stream_protocol(clock, tunnel, HEADER)
        protocol.makeConnection(StringTransport())
        opened = (tunnel.open_connections, tunnel.total_connections)
        protocol.connectionLost(None)  # type: ignore[arg-type]

        self.assertIsInstance(protocol, FileChannel)
        self.assertEqual(opened, (1, 1))
        self.assertEqual(tunnel.open_connections, 0)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_one_file_server_per_tunnel(self) -> None:
        """
        The streams of a file upstream share one file server, made at the
        first stream; another tunnel has its own.
        """
        tunnel = http_tunnel(UpstreamAddress("file", "", None, "/nonexistent"))
        other = http_tunnel(UpstreamAddress("file", "", None, "/nonexistent"))
        clock = Clock()

        first = stream_protocol(clock, tunnel, HEADER)
        second = stream_protocol(clock, tunnel, HEADER)
        elsewhere = stream_protocol(clock, other, HEADER)

        assert isinstance(first, FileChannel)
        assert isinstance(second, FileChannel)
        assert isinstance(elsewhere, FileChannel)
        self.assertIs(first.site, second.site)
        self.assertIsNot(first.site, elsewhere.site)
        self.assertIs(file_server(clock, tunnel).site, first.site)

    def test_file_server_forgotten(self) -> None:
        """
        A tunnel's file server is forgotten when the tunnel is.
        """
        tunnel = http_tunnel(UpstreamAddress("file", "", None, "/nonexistent"))
        file_server(Clock(), tunnel)
        before = len(upstream._file_servers)

        del tunnel
        gc.collect()

        self.assertEqual(len(upstream._file_servers), before - 1)
