"""
Tests for L{tunnelkit.agent.inspection} and L{tunnelkit.agent.replay}:
which connections are captured, capture on a real loopback connection
(the bytes pass unchanged, the exchanges reach the store and the tunnel's
metrics), and replaying captured requests to the upstream.

As in L{tests.test_upstream}, a loopback TCP connection stands in for the
stream from the edge.
"""

from types import SimpleNamespace
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tunnelkit.agent.captures import (
    Capture,
    CapturedRequest,
    CaptureStore,
)
from tunnelkit.agent.inspection import (
    CapturingStream,
    Inspection,
    client_host,
    request_tunnel_name,
)
from tunnelkit.agent.replay import (
    Changes,
    ReplayRefused,
    changed_request,
    replay,
    replayed_request,
)
from tunnelkit.agent.session import AgentSession
from tunnelkit.agent.tunnel import Tunnel
from tunnelkit.agent.upstream import ProxiedStream
from tunnelkit.config import AgentConfig, TunnelDefinition, UpstreamAddress
from tunnelkit.control.messages import ProxyHeader
from tunnelkit.mux import MuxConfig
from tests.e2e import WAIT, Steps, bounded, free_port
from tests.rawhttp import RawClients, read_responses, serve
from tests.test_upstream import self_signed
from tests.webservers import listen_recording

HEADER = ProxyHeader(binding_id="web", client_addr="192.0.2.7:50000", proto="http")

FIRST = b"GET /one HTTP/1.1\r\nHost: app.example\r\nX-Forwarded-Proto: http\r\n\r\n"
LAST = (
    b"POST /two HTTP/1.1\r\nHost: app.example\r\nContent-Length: 5\r\n"
    b"Connection: close\r\n\r\nhello"
)


def tunnel_to(
    addr: UpstreamAddress, inspect: bool = True, proto: str = "http"
) -> Tunnel:
    """
    @return: a tunnel named C{web} to C{addr}.
    """
    return Tunnel(TunnelDefinition(name="web", proto=proto, addr=addr, inspect=inspect))


def captured_request(raw: bytes, body: bytes = b"", truncated: bool = False) -> Capture:
    """
    @return: a capture of a request whose head is C{raw}'s, with C{body}.
    """
    head = raw.partition(b"\r\n\r\n")[0] + b"\r\n\r\n"
    method, target, proto = head.split(b"\r\n")[0].decode().split(" ")
    request = CapturedRequest(
        proto=proto,
        head=head,
        method=method,
        uri=target,
        body_size=len(body) + (10 if truncated else 0),
    )
    request.wire_body += body
    capture = Capture("web", "192.0.2.7", 0.0, request)
    capture.id = "c0ffee0000000001"
    return capture


class CoverageTests(SynchronousTestCase):
    """
    Which connections L{Inspection} captures.
    """

    def setUp(self) -> None:
        self.inspection = Inspection(CaptureStore(1 << 20), Clock(), 1024)

    def test_http_inspected(self) -> None:
        """
        An http tunnel to a web service with C{inspect} on is captured.
        """
        for scheme in ("http", "https"):
            tunnel = tunnel_to(UpstreamAddress(scheme, "localhost", 8080))
            self.assertTrue(self.inspection.covers(tunnel))

    def test_not_inspected(self) -> None:
        """
        Tunnels with C{inspect} off, TCP tunnels and file servers are not.
        """
        for tunnel in (
            tunnel_to(UpstreamAddress("http", "localhost", 8080), inspect=False),
            tunnel_to(UpstreamAddress("tcp", "localhost", 22), proto="tcp"),
            tunnel_to(UpstreamAddress("file", "", None, "/srv")),
        ):
            self.assertFalse(self.inspection.covers(tunnel))

    def test_labeled_streams(self) -> None:
        """
        A labeled tunnel with C{inspect} on has the streams of HTTPS edges
        captured, and not those of TCP and TLS edges, which carry no HTTP
        it can read.
        """
        tunnel = Tunnel(
            TunnelDefinition(
                name="web",
                proto=None,
                addr=UpstreamAddress("http", "localhost", 8080),
                inspect=True,
                labels=(("app", "web"),),
            )
        )

        chosen = [
            self.inspection.captures(
                tunnel,
                ProxyHeader(
                    binding_id="web",
                    client_addr="192.0.2.7:1",
                    proto=proto,
                    passthrough_tls=proto == "tls",
                ),
            )
            for proto in ("https", "tcp", "tls")
        ]

        self.assertTrue(self.inspection.covers(tunnel))
        self.assertEqual(chosen, [True, False, False])

    def test_session_choice(self) -> None:
        """
        The session gives a captured tunnel's streams a L{CapturingStream},
        and every other stream the plain L{ProxiedStream}, with no tap.
        """
        inspected = tunnel_to(UpstreamAddress("http", "localhost", 8080))
        plain = Tunnel(
            TunnelDefinition(
                name="plain",
                proto="http",
                addr=UpstreamAddress("http", "localhost", 8080),
                inspect=False,
            )
        )
        agent = SimpleNamespace(
            config=AgentConfig(),
            tunnels={"web": inspected, "plain": plain},
            inspection=self.inspection,
        )
        session = AgentSession(agent, Clock(), MuxConfig())  # type: ignore[arg-type]

        chosen = session._on_proxy(HEADER, None, b"")
        other = session._on_proxy(
            ProxyHeader(binding_id="plain", client_addr="192.0.2.7:1"), None, b""
        )

        self.assertIsInstance(chosen, CapturingStream)
        self.assertIs(type(other), ProxiedStream)

    def test_inspection_off(self) -> None:
        """
        With inspection off for the agent, no stream is captured.
        """
        agent = SimpleNamespace(
            config=AgentConfig(),
            tunnels={"web": tunnel_to(UpstreamAddress("http", "localhost", 8080))},
            inspection=None,
        )
        session = AgentSession(agent, Clock(), MuxConfig())  # type: ignore[arg-type]

        self.assertIs(type(session._on_proxy(HEADER, None, b"")), ProxiedStream)

    def test_client_host(self) -> None:
        """
        The client's address is shown without its port.
        """
        self.assertEqual(client_host("192.0.2.7:50000"), "192.0.2.7")
        self.assertEqual(client_host("[2001:db8::1]:443"), "2001:db8::1")
        self.assertEqual(client_host("unknown"), "unknown")

    def test_tunnel_name(self) -> None:
        """
        A request to the C{http} URL of a tunnel with two URLs is named
        C{NAME (http)}; any other, C{NAME}.
        """
        tunnel = tunnel_to(UpstreamAddress("http", "localhost", 8080))
        plain = CapturedRequest(
            head=b"GET / HTTP/1.1\r\nHost: web\r\nX-Forwarded-Proto: http\r\n\r\n"
        )
        secure = CapturedRequest(
            head=b"GET / HTTP/1.1\r\nx-forwarded-proto:  HTTPS \r\n\r\n"
        )

        self.assertEqual(request_tunnel_name(tunnel, plain), "web")
        tunnel.public_urls = ("https://web.example", "http://web.example")
        self.assertEqual(request_tunnel_name(tunnel, plain), "web (http)")
        self.assertEqual(request_tunnel_name(tunnel, secure), "web")


class CapturingStreamTests(TestCase):
    """
    L{CapturingStream} on loopback connections.
    """

    def setUp(self) -> None:
        self.clients = RawClients(self)
        self.store = CaptureStore(1 << 20)
        self.inspection = Inspection(self.store, reactor, 1024)

    @inlineCallbacks
    def through(self, tunnel: Tunnel, data: bytes) -> Steps[bytes]:
        """
        Send C{data} on a captured stream of C{tunnel}.

        @return: every byte the client gets back.
        """
        port = yield serve(
            self, lambda: self.inspection.stream(reactor, tunnel, HEADER)
        )
        answer: bytes = yield self.clients.exchange(port, data)
        return answer

    @inlineCallbacks
    def test_bytes_pass_unchanged(self) -> Steps[None]:
        """
        The upstream gets the requests byte for byte, and the client gets
        the upstream's answers.
        """
        upstream = yield listen_recording(self)
        tunnel = tunnel_to(UpstreamAddress("http", "127.0.0.1", upstream.port))

        answer = yield self.through(tunnel, FIRST + LAST)

        self.assertEqual([r.status for r in read_responses(answer)], [200, 200])
        self.assertEqual(
            [(r.method, r.target, r.body) for r in upstream.received],
            [("GET", "/one", b""), ("POST", "/two", b"hello")],
        )

    @inlineCallbacks
    def test_captured(self) -> Steps[None]:
        """
        Each exchange is in the store, with the client's address, its
        request as sent and the upstream's response.
        """
        upstream = yield listen_recording(self)
        tunnel = tunnel_to(UpstreamAddress("http", "127.0.0.1", upstream.port))

        answer = yield self.through(tunnel, FIRST + LAST)

        second, first = self.store.recent()
        self.assertEqual((first.request.raw, second.request.raw), (FIRST, LAST))
        self.assertEqual(first.remote_addr, "192.0.2.7")
        assert first.response is not None and second.response is not None
        self.assertEqual(first.response.raw + second.response.raw, answer)

    @inlineCallbacks
    def test_metrics(self) -> Steps[None]:
        """
        Each completed exchange counts in the tunnel's HTTP metrics.
        """
        upstream = yield listen_recording(self)
        tunnel = tunnel_to(UpstreamAddress("http", "127.0.0.1", upstream.port))

        yield self.through(tunnel, FIRST + LAST)

        self.assertEqual(tunnel.metrics.to_json()["http"]["count"], 2)

    @inlineCallbacks
    def test_https_upstream(self) -> Steps[None]:
        """
        Exchanges with an HTTPS upstream are captured as plain HTTP.
        """
        upstream = yield listen_recording(self, self_signed([]))
        tunnel = tunnel_to(UpstreamAddress("https", "localhost", upstream.port))

        yield self.through(tunnel, LAST)

        [capture] = self.store.recent()
        self.assertEqual(capture.status_code, 200)
        self.assertEqual(capture.request.body, b"hello")

    @inlineCallbacks
    def test_garbage_passes(self) -> Steps[None]:
        """
        Bytes that are not HTTP stop the capture, not the connection: they
        reach the upstream and its answer comes back.
        """
        port = yield serve(self, _LineEcho)
        tunnel = tunnel_to(UpstreamAddress("http", "127.0.0.1", port))

        answer = yield self.through(tunnel, b"\x00\x01 not http\n")

        self.assertEqual(answer, b"\x00\x01 not http\n")
        self.assertEqual(self.store.recent(), [])


class _LineEcho(Protocol):
    """
    Echo one line back, then close.
    """

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)
        if data.endswith(b"\n"):
            self.transport.loseConnection()


class ChangedRequestTests(SynchronousTestCase):
    """
    L{changed_request} and L{replayed_request}.
    """

    def test_as_captured(self) -> None:
        """
        An unchanged replay sends the bytes captured.
        """
        capture = captured_request(LAST, b"hello")

        self.assertEqual(replayed_request(capture), LAST)

    def test_truncated_refused(self) -> None:
        """
        A request whose body was not kept whole cannot be replayed as it
        was, nor with its captured body.
        """
        capture = captured_request(LAST, b"hel", truncated=True)

        self.assertRaises(ReplayRefused, replayed_request, capture)
        self.assertRaises(ReplayRefused, changed_request, capture, Changes())

    def test_truncated_with_new_body(self) -> None:
        """
        A truncated request can be replayed with a new body.
        """
        capture = captured_request(LAST, b"hel", truncated=True)

        data = changed_request(capture, Changes(body=b"new"))

        self.assertTrue(data.endswith(b"Content-Length: 3\r\n\r\nnew"))

    def test_method_and_path(self) -> None:
        """
        The method and target are replaced, the rest kept.
        """
        capture = captured_request(LAST, b"hello")

        data = changed_request(capture, Changes(method="PUT", path="/other?x=1"))

        self.assertEqual(
            data,
            b"PUT /other?x=1 HTTP/1.1\r\nHost: app.example\r\n"
            b"Connection: close\r\nContent-Length: 5\r\n\r\nhello",
        )

    def test_headers_and_body(self) -> None:
        """
        Given headers replace the captured ones, and the length is counted
        for the new body.
        """
        capture = captured_request(LAST, b"hello")

        data = changed_request(
            capture,
            Changes(
                headers={"Host": ["b.example"], "X-Two": ["1", "2"]},
                body=b"changed!",
            ),
        )

        self.assertEqual(
            data,
            b"POST /two HTTP/1.1\r\nHost: b.example\r\nX-Two: 1\r\nX-Two: 2\r\n"
            b"Content-Length: 8\r\n\r\nchanged!",
        )

    def test_header_values_beyond_latin_1(self) -> None:
        """
        A header value is sent in Latin-1, as captured values are shown, or
        in UTF-8 when it has characters Latin-1 does not have.
        """
        capture = captured_request(FIRST)

        data = changed_request(
            capture, Changes(headers={"X-Shown": ["caf\xe9"], "X-Typed": ["5 \u20ac"]})
        )

        self.assertIn(b"\r\nX-Shown: caf\xe9\r\n", data)
        self.assertIn(b"\r\nX-Typed: 5 \xe2\x82\xac", data)

    def test_chunked_made_sized(self) -> None:
        """
        A request captured chunked is replayed with its decoded body and a
        length.
        """
        chunked = b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        capture = captured_request(chunked)
        capture.request.wire_body = bytearray(b"3\r\nabc\r\n0\r\n\r\n")
        capture.request.decoded_body = bytearray(b"abc")
        capture.request.body_size = 3

        data = changed_request(capture, Changes())

        self.assertEqual(
            data, b"POST /c HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
        )

    def test_invalid(self) -> None:
        """
        A method, target or header that is not valid HTTP is refused.
        """
        capture = captured_request(FIRST)

        for changes in (
            Changes(method="GE T"),
            Changes(path="/a b"),
            Changes(path=""),
            Changes(headers={"Bad Name": ["x"]}),
            Changes(headers={"X": ["a\r\nInjected: 1"]}),
        ):
            self.assertRaises(ReplayRefused, changed_request, capture, changes)


class ReplayTests(TestCase):
    """
    L{replay} against a loopback upstream.
    """

    def setUp(self) -> None:
        self.store = CaptureStore(1 << 20)
        self.inspection = Inspection(self.store, reactor, 1024)

    @inlineCallbacks
    def test_reaches_upstream(self) -> Steps[None]:
        """
        The request reaches the upstream as given, and the exchange is
        captured anew, naming the capture it replays.
        """
        upstream = yield listen_recording(self)
        tunnel = tunnel_to(UpstreamAddress("http", "127.0.0.1", upstream.port))
        completed: list[Capture] = []
        done = bounded(_next_completed(self.store, completed), WAIT, "a replay")

        yield replay(reactor, self.inspection, tunnel, LAST, "c0ffee0000000001")
        yield done

        [received] = upstream.received
        self.assertEqual((received.method, received.body), ("POST", b"hello"))
        [capture] = completed
        self.assertEqual(capture.replay_of, "c0ffee0000000001")
        self.assertEqual((capture.status_code, capture.remote_addr), (200, ""))

    @inlineCallbacks
    def test_unreachable(self) -> Steps[None]:
        """
        A replay to an upstream that refuses fails with the reason.
        """
        tunnel = tunnel_to(UpstreamAddress("http", "127.0.0.1", free_port()))

        sending = replay(reactor, self.inspection, tunnel, FIRST, "c0ffee")

        yield self.assertFailure(sending, Exception)

    def test_not_web(self) -> None:
        """
        Requests cannot be replayed to a file server or a TCP tunnel.
        """
        for tunnel in (
            tunnel_to(UpstreamAddress("file", "", None, "/srv")),
            tunnel_to(UpstreamAddress("tcp", "localhost", 22), proto="tcp"),
        ):
            self.assertRaises(
                ReplayRefused, replay, reactor, self.inspection, tunnel, FIRST, "x"
            )


def _next_completed(store: CaptureStore, completed: list[Capture]) -> Deferred[None]:
    """
    @return: a Deferred that fires once a capture of C{store} has its
        response, appending it to C{completed}.
    """
    waiting: Deferred[None] = Deferred()

    def seen(capture: Capture) -> None:
        if capture.response is not None and not waiting.called:
            completed.append(capture)
            waiting.callback(None)

    store.subscribe(seen)
    return waiting
