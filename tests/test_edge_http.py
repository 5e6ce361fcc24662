"""
Tests for L{tunnelkit.edge.http}: the edge's handling of public HTTP
connections, in memory, with a fake agent session.
"""

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tunnelkit.control.messages import MessageReader, decode_message
from tunnelkit.edge.hosts import HostTable
from tunnelkit.edge.http import HttpIngress, HttpIngressFactory
from tunnelkit.edge.names import HttpBinding
from tunnelkit.edge.routes import EdgeRoutes
from tunnelkit.errors import TunnelkitError
from tunnelkit.interfaces import IHttpRouter

CLIENT = IPv4Address("TCP", "203.0.113.9", 5555)


class FakeStream:
    """
    The transport of a stream the edge opened to the agent.
    """

    def __init__(self) -> None:
        self.written = bytearray()
        self.write_closed = False
        self.aborted = False
        self.producer: Any = None
        self.protocol: Protocol | None = None

    def write(self, data: bytes) -> None:
        self.written += data

    def writeSequence(self, data: list[bytes]) -> None:
        for piece in data:
            self.write(piece)

    def loseWriteConnection(self) -> None:
        self.write_closed = True

    def loseConnection(self) -> None:
        self.write_closed = True

    def abortConnection(self) -> None:
        self.aborted = True

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass

    def payload(self) -> bytes:
        """
        @return: what was written after the proxy header.
        """
        reader = MessageReader(max_messages=1)
        reader.feed(bytes(self.written))
        return reader.unconsumed

    def header(self) -> Any:
        """
        @return: the proxy header the stream starts with.
        """
        reader = MessageReader(max_messages=1)
        (envelope,) = reader.feed(bytes(self.written))
        return decode_message(envelope)

    def end(self, reason: Failure | None = None) -> None:
        """
        The agent closes the stream.
        """
        assert self.protocol is not None
        self.protocol.connectionLost(reason or Failure(ConnectionDone()))


class FakeMux:
    """
    The multiplexer of an agent session: opens streams in memory.
    """

    def __init__(self) -> None:
        self.streams: list[FakeStream] = []
        self.refuse: Exception | None = None
        self.opened: Deferred | None = None

    def open_stream(self, protocol: Protocol) -> Deferred:
        if isinstance(self.refuse, TunnelkitError):
            raise self.refuse
        stream = FakeStream()
        stream.protocol = protocol
        self.streams.append(stream)
        protocol.makeConnection(stream)  # type: ignore[arg-type]
        if self.refuse is not None:
            return fail(self.refuse)
        return succeed(protocol)


class FakeSession:
    """
    An agent session with a fake multiplexer.
    """

    def __init__(self) -> None:
        self.mux = FakeMux()


@implementer(IHttpRouter)
class Router:
    """
    What the ingress routes with, as the edge server provides it.
    """

    def __init__(self) -> None:
        self.hosts: HostTable[HttpBinding] = HostTable()
        self.edges = EdgeRoutes()
        self.reactor = Clock()
        self.head_timeout = 10.0
        self.max_header_size = 1024


def make_binding(
    name: str = "web.tunnels.test",
    session: FakeSession | None = None,
    credentials: tuple[str, ...] = (),
    host_header: bytes = b"",
    schemes: frozenset[str] = frozenset({"http", "https"}),
) -> HttpBinding:
    """
    @return: an HTTP binding served by C{session}.
    """
    return HttpBinding(
        binding_id="web",
        name=name,
        schemes=schemes,
        urls=(f"http://{name}",),
        forwards_to="http://localhost:8080",
        session_id="s1",
        owner="alice",
        host_header=host_header,
        auth_digests=HttpBinding.digests_of(credentials),
        session=session,  # type: ignore[arg-type]
    )


class IngressTestCase(SynchronousTestCase):
    """
    A public connection to an edge with one online binding.
    """

    def setUp(self) -> None:
        self.router = Router()
        self.session = FakeSession()
        self.binding = make_binding(session=self.session)
        self.router.hosts.add(self.binding.name, self.binding)
        self.transport = StringTransport(peerAddress=CLIENT)
        self.ingress = self.connect()

    def connect(self, scheme: str = "http") -> HttpIngress:
        ingress = HttpIngressFactory(self.router, scheme).buildProtocol(CLIENT)
        ingress.makeConnection(self.transport)
        return ingress

    @property
    def stream(self) -> FakeStream:
        (stream,) = self.session.mux.streams
        return stream

    def status(self) -> bytes:
        """
        @return: the status line the client received.
        """
        return self.transport.value().split(b"\r\n", 1)[0]

    def response_header(self, name: bytes) -> bytes | None:
        head = self.transport.value().split(b"\r\n\r\n", 1)[0]
        for line in head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b": ")
            if key.lower() == name.lower():
                return value
        return None


class ForwardingTests(IngressTestCase):
    """
    Requests go to the agent with the forwarded headers added, and responses
    come back unchanged.
    """

    def test_request_forwarded(self) -> None:
        """
        A request is written on a new stream after a proxy header naming the
        binding, the client and the scheme, with C{X-Forwarded-*} added.
        """
        self.ingress.dataReceived(
            b"GET /a?b=1 HTTP/1.1\r\nHost: web.tunnels.test\r\nAccept: */*\r\n\r\n"
        )

        header = self.stream.header()
        self.assertEqual(
            (header.binding_id, header.client_addr, header.proto),
            ("web", "203.0.113.9:5555", "http"),
        )
        self.assertEqual(
            self.stream.payload(),
            b"GET /a?b=1 HTTP/1.1\r\nHost: web.tunnels.test\r\nAccept: */*\r\n"
            b"X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: http\r\n"
            b"X-Forwarded-Host: web.tunnels.test\r\n\r\n",
        )

    def test_forwarded_headers_from_client(self) -> None:
        """
        A client's C{X-Forwarded-For} is kept and extended; its
        C{X-Forwarded-Proto} and C{X-Forwarded-Host} are replaced.
        """
        self.ingress.dataReceived(
            b"GET / HTTP/1.1\r\nHost: web.tunnels.test\r\n"
            b"X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\n"
            b"X-Forwarded-Host: evil.test\r\n\r\n"
        )

        self.assertEqual(
            self.stream.payload(),
            b"GET / HTTP/1.1\r\nHost: web.tunnels.test\r\n"
            b"X-Forwarded-For: 10.0.0.1, 203.0.113.9\r\nX-Forwarded-Proto: http\r\n"
            b"X-Forwarded-Host: web.tunnels.test\r\n\r\n",
        )

    def test_every_forwarded_for_kept(self) -> None:
        """
        When a client sends several C{X-Forwarded-For} fields, every value
        is kept, in order, before the client's own address.
        """
        self.ingress.dataReceived(
            b"GET / HTTP/1.1\r\nHost: web.tunnels.test\r\n"
            b"X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2, 10.0.0.3\r\n"
            b"\r\n"
        )

        self.assertIn(
            b"\r\nX-Forwarded-For: 10.0.0.1, 10.0.0.2, 10.0.0.3, 203.0.113.9\r\n",
            self.stream.payload(),
        )

    def test_absolute_target_names_the_host(self) -> None:
        """
        A request with an absolute target is routed by its authority, and
        that authority, not the C{Host} the client sent, is the C{Host} and
        the C{X-Forwarded-Host} the upstream sees, with the target in origin
        form.
        """
        self.ingress.dataReceived(
            b"GET http://web.tunnels.test/a HTTP/1.1\r\nHost: forged.example\r\n"
            b"\r\n"
        )

        payload = self.stream.payload()
        self.assertEqual(
            payload,
            b"GET /a HTTP/1.1\r\nHost: web.tunnels.test\r\n"
            b"X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: http\r\n"
            b"X-Forwarded-Host: web.tunnels.test\r\n\r\n",
        )

    def test_absolute_target_without_host(self) -> None:
        """
        A request with an absolute target and no C{Host} reaches the
        upstream with the authority as its C{Host}.
        """
        self.ingress.dataReceived(b"GET http://web.tunnels.test/a HTTP/1.0\r\n\r\n")

        payload = self.stream.payload()
        self.assertEqual(
            payload,
            b"GET /a HTTP/1.0\r\n"
            b"X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: http\r\n"
            b"X-Forwarded-Host: web.tunnels.test\r\nHost: web.tunnels.test\r\n\r\n",
        )

    def test_host_rewritten(self) -> None:
        """
        A binding with a host header gives the upstream that C{Host}; the
        public one goes in C{X-Forwarded-Host}.
        """
        self.binding.host_header = b"localhost:8080"

        self.ingress.dataReceived(
            b"GET / HTTP/1.1\r\nHost: WEB.tunnels.test:80\r\n\r\n"
        )

        payload = self.stream.payload()
        self.assertIn(b"\r\nHost: localhost:8080\r\n", payload)
        self.assertIn(b"\r\nX-Forwarded-Host: WEB.tunnels.test:80\r\n", payload)

    def test_https_scheme(self) -> None:
        """
        Requests on the HTTPS listener are marked C{https}.
        """
        ingress = self.connect("https")

        ingress.dataReceived(b"GET / HTTP/1.1\r\nHost: web.tunnels.test\r\n\r\n")

        self.assertEqual(self.stream.header().proto, "https")
        self.assertIn(b"X-Forwarded-Proto: https\r\n", self.stream.payload())

    def test_sized_body_in_pieces(self) -> None:
        """
        A body sized by C{Content-Length} passes through as it arrives.
        """
        self.ingress.dataReceived(
            b"POST /up HTTP/1.1\r\nHost: web.tunnels.test\r\nContent-Length: 10\r\n"
            b"\r\n0123"
        )
        self.ingress.dataReceived(b"456789")

        self.assertTrue(self.stream.payload().endswith(b"\r\n\r\n0123456789"))

    def test_chunked_body_reframed(self) -> None:
        """
        A chunked body is sent on as chunks with the same bytes, ended by
        the last chunk.
        """
        self.ingress.dataReceived(
            b"POST / HTTP/1.1\r\nHost: web.tunnels.test\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
        )
        self.ingress.dataReceived(b"6\r\n world\r\n0\r\n\r\n")

        body = self.stream.payload().split(b"\r\n\r\n", 1)[1]
        self.assertEqual(body, b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")

    def test_keep_alive_one_stream(self) -> None:
        """
        Requests on one connection, even pipelined, share one stream.
        """
        request = b"GET / HTTP/1.1\r\nHost: web.tunnels.test\r\n\r\n"

        self.ingress.dataReceived(request * 2)
        self.ingress.dataReceived(request)

        self.assertEqual(self.stream.payload().count(b"GET / HTTP/1.1"), 3)
        self.assertEqual(self.binding.total_connections, 1)

    def test_response_passes_back(self) -> None:
        """
        Bytes from the agent reach the client unchanged, and the agent's
        close closes the connection.
        """
        self.ingress.dataReceived(b"GET / HTTP/1.1\r\nHost: web.tunnels.test\r\n\r\n")
        assert self.stream.protocol is not None

        self.stream.protocol.dataReceived(b"HTTP/1.1 200 OK\r\n\r\nhi")
        self.stream.end()

        self.assertEqual(self.transport.value(), b"HTTP/1.1 200 OK\r\n\r\nhi")
        self.assertTrue(self.transport.disconnecting)

    def test_reset_stream_aborts(self) -> None:
        """
        A stream the agent resets aborts the public connection.
        """
        self.ingress.dataReceived(b"GET / HTTP/1.1\r\nHost: web.tunnels.test\r\n\r\n")

        self.stream.end(Failure(ConnectionLost()))

        self.assertTrue(self.transport.disconnected)

    def test_client_gone_between_requests(self) -> None:
        """
        When the client's connection is lost between requests, cleanly or
        not (a TLS client closing without close_notify is reported as
        lost), the stream is half-closed rather than reset, so that the
        upstream's connection ends cleanly, and the binding's open count
        goes back down.
        """
        self.ingress.dataReceived(b"GET / HTTP/1.1\r\nHost: web.tunnels.test\r\n\r\n")

        self.ingress.connectionLost(Failure(ConnectionLost()))

        self.assertEqual((self.stream.write_closed, self.stream.aborted), (True, False))
        self.assertEqual(self.binding.open_connections, 0)

    def test_answer_for_client_gone(self) -> None:
        """
        What the agent sends after the client's connection was lost resets
        the stream, so the agent stops reading the upstream.
        """
        self.ingress.dataReceived(b"GET / HTTP/1.1\r\nHost: web.tunnels.test\r\n\r\n")
        self.ingress.connectionLost(Failure(ConnectionLost()))
        written = self.transport.value()

        assert self.stream.protocol is not None
        self.stream.protocol.dataReceived(b"HTTP/1.1 200 OK\r\n")

        self.assertTrue(self.stream.aborted)
        self.assertEqual(self.transport.value(), written)

    def test_client_gone_during_body(self) -> None:
        """
        When the client's connection is lost while its request body is
        still coming, the stream is reset.
        """
        self.ingress.dataReceived(
            b"POST / HTTP/1.1\r\nHost: web.tunnels.test\r\nContent-Length: 10\r\n"
            b"\r\n0123"
        )

        self.ingress.connectionLost(Failure(ConnectionDone()))

        self.assertTrue(self.stream.aborted)

    def test_client_half_close(self) -> None:
        """
        A client that half-closes after its request half-closes the stream,
        so the upstream still answers.
        """
        self.ingress.dataReceived(b"GET / HTTP/1.1\r\nHost: web.tunnels.test\r\n\r\n")

        self.ingress.readConnectionLost()

        self.assertTrue(self.stream.write_closed)
        self.assertFalse(self.transport.disconnecting)

    def test_upgrade_becomes_raw(self) -> None:
        """
        After an upgrade request the client's bytes wait until the upstream
        answers C{101}; from then on every byte goes through as it is.
        """
        self.ingress.dataReceived(
            b"GET /ws HTTP/1.1\r\nHost: web.tunnels.test\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\n\r\n\x81\x05hello"
        )
        self.ingress.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
        assert self.stream.protocol is not None
        waiting = self.stream.payload()

        self.stream.protocol.dataReceived(b"HTTP/1.1 101 Switching")
        self.stream.protocol.dataReceived(b" Protocols\r\n\r\n")

        self.assertTrue(waiting.endswith(b"X-Forwarded-Host: web.tunnels.test\r\n\r\n"))
        self.assertTrue(
            self.stream.payload().endswith(
                b"\r\n\r\n\x81\x05helloGET / HTTP/1.1\r\n\r\n"
            )
        )
        self.assertEqual(
            self.transport.value(), b"HTTP/1.1 101 Switching Protocols\r\n\r\n"
        )

    def test_declined_upgrade_parses_again(self) -> None:
        """
        When the upstream answers an upgrade request with anything but
        C{101}, the client's next request is parsed and checked like any
        other: its forwarded headers are the edge's own.
        """
        self.ingress.dataReceived(
            b"GET /ws HTTP/1.1\r\nHost: web.tunnels.test\r\nUpgrade: h2c\r\n"
            b"Connection: Upgrade\r\n\r\n"
            b"GET /second HTTP/1.1\r\nHost: web.tunnels.test\r\n"
            b"X-Forwarded-Proto: https\r\n\r\n"
        )
        assert self.stream.protocol is not None

        self.stream.protocol.dataReceived(
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
        )
        self.router.reactor.advance(0)

        second = self.stream.payload().split(b"GET /second", 1)[1]
        self.assertIn(b"X-Forwarded-Proto: http\r\n", second)
        self.assertNotIn(b"X-Forwarded-Proto: https", second)

    def test_connect_refused(self) -> None:
        """
        C{CONNECT} is answered 405: tunnels are not forward proxies.
        """
        self.ingress.dataReceived(
            b"CONNECT web.tunnels.test:443 HTTP/1.1\r\nHost: web.tunnels.test\r\n\r\n"
        )

        self.assertEqual(self.status(), b"HTTP/1.1 405 Method Not Allowed")
        self.assertEqual(self.session.mux.streams, [])

    def test_http10_transfer_encoding_refused(self) -> None:
        """
        An HTTP/1.0 request framed by C{Transfer-Encoding}, and a request of
        another version than 1.0 or 1.1, are answered 400.
        """
        for head in (
            b"POST / HTTP/1.0\r\nHost: web.tunnels.test\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"GET / HTTP/2.0\r\nHost: web.tunnels.test\r\n\r\n",
        ):
            self.transport = StringTransport(peerAddress=CLIENT)
            self.connect().dataReceived(head)

            self.assertEqual(self.status(), b"HTTP/1.1 400 Bad Request", head)
        self.assertEqual(self.session.mux.streams, [])

    def test_late_upgrade_refused(self) -> None:
        """
        An upgrade request after another request on the same connection is
        refused, after the agent's answer to the first.
        """
        self.ingress.dataReceived(
            b"GET / HTTP/1.1\r\nHost: web.tunnels.test\r\n\r\n"
            b"GET /ws HTTP/1.1\r\nHost: web.tunnels.test\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\n\r\n"
        )

        self.stream.end()

        self.assertEqual(self.status(), b"HTTP/1.1 400 Bad Request")
        self.assertEqual(self.stream.payload().count(b"GET /"), 1)

    def test_absolute_uri_routes_by_authority(self) -> None:
        """
        A request in absolute form is routed by its URI's host.
        """
        self.ingress.dataReceived(
            b"GET http://web.tunnels.test/x HTTP/1.1\r\nHost: other.test\r\n\r\n"
        )

        self.assertIn(b"GET /x HTTP/1.1\r\n", self.stream.payload())


class RefusalTests(IngressTestCase):
    """
    Requests the edge answers itself get a page with a stable code, and the
    connection closes.
    """

    def test_unknown_host(self) -> None:
        """
        A host nobody bound is answered 404, naming the host.
        """
        self.ingress.dataReceived(b"GET / HTTP/1.1\r\nHost: nope.tunnels.test\r\n\r\n")

        self.assertEqual(self.status(), b"HTTP/1.1 404 Not Found")
        self.assertEqual(
            self.response_header(b"Tunnelkit-Error-Code"), b"TK_TUNNEL_NOT_FOUND"
        )
        self.assertIn(b"nope.tunnels.test", self.transport.value())
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.session.mux.streams, [])

    def test_scheme_not_served(self) -> None:
        """
        A binding that serves only HTTPS is not found over HTTP.
        """
        self.binding.schemes = frozenset({"https"})

        self.ingress.dataReceived(b"GET / HTTP/1.1\r\nHost: web.tunnels.test\r\n\r\n")

        self.assertEqual(self.status(), b"HTTP/1.1 404 Not Found")

    def test_offline(self) -> None:
        """
        A binding whose session is gone is answered 503.
        """
        self.binding.session = None

        self.ingress.dataReceived(b"GET / HTTP/1.1\r\nHost: web.tunnels.test\r\n\r\n")

        self.assertEqual(self.status(), b"HTTP/1.1 503 Service Unavailable")
        self.assertEqual(
            self.response_header(b"Tunnelkit-Error-Code"), b"TK_TUNNEL_OFFLINE"
        )

    def test_session_cannot_open_streams(self) -> None:
        """
        A session that refuses to open a stream at once is answered 503.
        """
        self.session.mux.refuse = TunnelkitError("TK_STREAM_LIMIT", "Too many.")

        self.ingress.dataReceived(b"GET / HTTP/1.1\r\nHost: web.tunnels.test\r\n\r\n")

        self.assertEqual(self.status(), b"HTTP/1.1 503 Service Unavailable")

    def test_agent_refuses_stream(self) -> None:
        """
        A stream the agent refuses is answered 502.
        """
        self.session.mux.refuse = ConnectionLost()

        self.ingress.dataReceived(b"GET / HTTP/1.1\r\nHost: web.tunnels.test\r\n\r\n")

        self.assertEqual(self.status(), b"HTTP/1.1 502 Bad Gateway")
        self.assertEqual(
            self.response_header(b"Tunnelkit-Error-Code"), b"TK_AGENT_REFUSED"
        )

    def test_basic_auth(self) -> None:
        """
        A binding with users answers 401 with a challenge without
        credentials or with wrong ones, and forwards a request with right
        ones.
        """
        self.binding.auth_digests = HttpBinding.digests_of(
            ("alice:secret-one", "bob:secret-two")
        )
        wrong = b"Authorization: Basic YWxpY2U6d3Jvbmc=\r\n"
        bob = b"Authorization: basic Ym9iOnNlY3JldC10d28=\r\n"
        results = []

        for header in (b"", wrong, bob):
            self.transport = StringTransport(peerAddress=CLIENT)
            ingress = self.connect()
            ingress.dataReceived(
                b"GET / HTTP/1.1\r\nHost: web.tunnels.test\r\n" + header + b"\r\n"
            )
            results.append((self.status(), self.response_header(b"WWW-Authenticate")))

        challenge = b'Basic realm="tunnelkit", charset="UTF-8"'
        self.assertEqual(
            results,
            [
                (b"HTTP/1.1 401 Unauthorized", challenge),
                (b"HTTP/1.1 401 Unauthorized", challenge),
                (b"", None),
            ],
        )
        self.assertEqual(len(self.session.mux.streams), 1)

    def test_bad_authorization_header(self) -> None:
        """
        An C{Authorization} header that is not valid base64 is refused, not
        an error.
        """
        self.binding.auth_digests = HttpBinding.digests_of(("alice:secret-one",))

        self.ingress.dataReceived(
            b"GET / HTTP/1.1\r\nHost: web.tunnels.test\r\n"
            b"Authorization: Basic !!!\r\n\r\n"
        )

        self.assertEqual(self.status(), b"HTTP/1.1 401 Unauthorized")

    def test_head_gets_no_body(self) -> None:
        """
        A refused C{HEAD} request gets the headers only.
        """
        self.ingress.dataReceived(b"HEAD / HTTP/1.1\r\nHost: nope.tunnels.test\r\n\r\n")

        self.assertTrue(self.transport.value().endswith(b"\r\n\r\n"))
        self.assertNotIn(b"<html", self.transport.value())

    def test_garbage(self) -> None:
        """
        Bytes that are not HTTP are answered 400.
        """
        self.ingress.dataReceived(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")

        self.assertEqual(self.status(), b"HTTP/1.1 400 Bad Request")

    def test_smuggling_shape_refused(self) -> None:
        """
        A request with both C{Content-Length} and C{Transfer-Encoding} is
        answered 400 and never reaches the agent.
        """
        self.ingress.dataReceived(
            b"POST / HTTP/1.1\r\nHost: web.tunnels.test\r\nContent-Length: 4\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )

        self.assertEqual(self.status(), b"HTTP/1.1 400 Bad Request")
        self.assertEqual(self.session.mux.streams, [])

    def test_missing_or_double_host(self) -> None:
        """
        A request without a C{Host}, or with two, is answered 400.
        """
        for head in (
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: web.tunnels.test\r\nHost: b.test\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: bad host\r\n\r\n",
        ):
            self.transport = StringTransport(peerAddress=CLIENT)
            self.connect().dataReceived(head)

            self.assertEqual(self.status(), b"HTTP/1.1 400 Bad Request", head)

    def test_header_too_large(self) -> None:
        """
        A head over the limit is answered 431.
        """
        big = b"X-Big: " + b"a" * 2000 + b"\r\n"

        self.ingress.dataReceived(b"GET / HTTP/1.1\r\nHost: web.tunnels.test\r\n" + big)

        self.assertEqual(self.status(), b"HTTP/1.1 431 Request Header Fields Too Large")
        self.assertEqual(self.session.mux.streams, [])

    def test_header_too_large_in_pieces(self) -> None:
        """
        A head that grows past the limit piece by piece, without ever
        completing a header line, is answered 431 once it is over the limit.
        """
        self.ingress.dataReceived(b"GET / HTTP/1.1\r\nX: ")

        for _ in range(3):
            self.ingress.dataReceived(b"b" * 500)

        self.assertEqual(self.status(), b"HTTP/1.1 431 Request Header Fields Too Large")

    def test_head_timeout(self) -> None:
        """
        A client that does not finish its head in time is answered 408.
        """
        self.ingress.dataReceived(b"GET / HTTP/1.1\r\nHo")

        self.router.reactor.advance(self.router.head_timeout)

        self.assertEqual(self.status(), b"HTTP/1.1 408 Request Timeout")
        self.assertTrue(self.transport.disconnecting)

    def test_silent_client_times_out(self) -> None:
        """
        A client that sends nothing at all is answered 408 too.
        """
        self.router.reactor.advance(self.router.head_timeout)

        self.assertEqual(self.status(), b"HTTP/1.1 408 Request Timeout")

    def test_later_head_gets_its_own_time(self) -> None:
        """
        On a keep-alive connection, a later request's head has the full
        timeout from its first byte; when it runs out, the stream is
        half-closed and the 408 follows the agent's earlier responses.
        """
        clock = self.router.reactor
        self.ingress.dataReceived(b"GET / HTTP/1.1\r\nHost: web.tunnels.test\r\n\r\n")
        clock.advance(5)
        self.ingress.dataReceived(b"GET /second HTTP/1.1\r\nHo")

        clock.advance(self.router.head_timeout - 5)
        self.assertFalse(self.stream.write_closed)
        clock.advance(5)
        self.assertTrue(self.stream.write_closed)
        self.stream.end()

        self.assertEqual(self.status(), b"HTTP/1.1 408 Request Timeout")

    def test_timer_stops_with_head(self) -> None:
        """
        Once the head is complete, a long body or response is not timed out.
        """
        self.ingress.dataReceived(
            b"POST / HTTP/1.1\r\nHost: web.tunnels.test\r\nContent-Length: 5\r\n\r\n"
        )

        self.router.reactor.advance(self.router.head_timeout * 10)

        self.assertEqual(self.transport.value(), b"")
        self.assertFalse(self.transport.disconnecting)


class OrderedRefusalTests(IngressTestCase):
    """
    A request refused after others went to the agent on the same connection
    is answered after the agent's responses to those.
    """

    def test_misdirected_after_response(self) -> None:
        """
        A second request for another host is answered 421 once the agent
        has closed the stream, after its response to the first.
        """
        other = make_binding("api.tunnels.test", session=self.session)
        self.router.hosts.add(other.name, other)
        self.ingress.dataReceived(
            b"GET / HTTP/1.1\r\nHost: web.tunnels.test\r\n\r\n"
            b"GET / HTTP/1.1\r\nHost: api.tunnels.test\r\n\r\n"
        )
        assert self.stream.protocol is not None

        self.assertTrue(self.stream.write_closed)
        self.assertEqual(self.stream.payload().count(b"GET /"), 1)
        self.stream.protocol.dataReceived(b"HTTP/1.1 200 OK\r\n\r\n")
        self.assertEqual(self.transport.value(), b"HTTP/1.1 200 OK\r\n\r\n")
        self.stream.end()

        rest = self.transport.value()[len(b"HTTP/1.1 200 OK\r\n\r\n") :]
        self.assertTrue(rest.startswith(b"HTTP/1.1 421 Misdirected Request\r\n"))
        self.assertTrue(self.transport.disconnecting)


class RouterTests(SynchronousTestCase):
    """
    The fake router these tests route with is a faithful L{IHttpRouter}.
    """

    def test_provides_router(self) -> None:
        """
        The fake provides every attribute of L{IHttpRouter}.
        """
        self.assertTrue(verifyObject(IHttpRouter, Router()))
