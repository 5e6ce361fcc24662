"""
Tests for the HTTPS edges of C{edge.yml} in L{tunnelkit.edge.http}: requests
for an edge's host routed by path to its backends' decisions, on string
transports with fake agent sessions.
"""

from typing import Any

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests.test_edge_http import CLIENT, FakeSession, Router
from tunnelkit.edge.backends import FailoverBackend, TunnelGroupBackend
from tunnelkit.edge.http import HttpIngress, HttpIngressFactory
from tunnelkit.edge.routes import Route, RouteTable, ServedEdge
from tunnelkit.edge.routing import (
    FixedResponse,
    LabeledBinding,
    TunnelGroups,
    label_set,
)
from tunnelkit.config import HostPort
from tunnelkit.errors import TunnelkitError
from tunnelkit.interfaces import IBackend

HOST = "app.example.com"
WEB = label_set({"app": "web"})


@implementer(IBackend)
class Raising:
    """
    A backend with a bug.
    """

    def choose(self, request: Any) -> Any:
        raise ZeroDivisionError("oops")


class EdgeRoutingTests(SynchronousTestCase):
    """
    An HTTPS edge's host is served by its routes.
    """

    def setUp(self) -> None:
        self.router = Router()
        self.groups = TunnelGroups()
        self.sessions = [FakeSession(), FakeSession()]
        self.tunnels = []
        for index, session in enumerate(self.sessions):
            tunnel = LabeledBinding(
                binding_id=f"t{index}",
                name=f"t{index}",
                labels=WEB,
                forwards_to="http://localhost:8000",
                session_id=f"s{index}",
                owner="alice",
                session=session,  # type: ignore[arg-type]
            )
            self.groups.add(tunnel)
            self.tunnels.append(tunnel)
        group = TunnelGroupBackend(self.groups, WEB)
        routes = RouteTable(Route("web", "default", group))
        hello = FailoverBackend(
            [TunnelGroupBackend(self.groups, label_set({"a": "b"}))]
        )
        routes.add("exact_path", "/hello", Route("web", "exact_path /hello", hello))
        fixed = _Fixed(FixedResponse(418, (("X-Teapot", "yes"),), b"short"))
        routes.add("path_prefix", "/tea", Route("web", "path_prefix /tea", fixed))
        routes.add("path_prefix", "/bug", Route("web", "path_prefix /bug", Raising()))
        other = TunnelGroupBackend(self.groups, label_set({"app": "other"}))
        routes.add("path_prefix", "/other", Route("web", "path_prefix /other", other))
        edge = ServedEdge("web", "https", (HostPort(HOST, 443),), routes)
        self.router.edges.https.add(HOST, edge)

    def connect(self, scheme: str = "https") -> tuple[HttpIngress, StringTransport]:
        transport = StringTransport(peerAddress=CLIENT)
        ingress = HttpIngressFactory(self.router, scheme).buildProtocol(CLIENT)
        ingress.makeConnection(transport)
        return ingress, transport

    def request(self, path: str, method: str = "GET") -> bytes:
        return f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()

    def test_fakes_provide_backend(self) -> None:
        """
        The test's own backends provide L{IBackend}.
        """
        self.assertTrue(verifyObject(IBackend, Raising()))
        self.assertTrue(verifyObject(IBackend, _Fixed(None)))

    def test_round_robin_by_connection(self) -> None:
        """
        Each connection goes to the next tunnel of the group, with a proxy
        header naming it and the scheme C{https}; the tunnel counts it.
        """
        for _ in range(2):
            ingress, _ = self.connect()
            ingress.dataReceived(self.request("/"))

        first, second = (session.mux.streams[0] for session in self.sessions)
        self.assertEqual(
            (
                first.header().binding_id,
                second.header().binding_id,
                first.header().proto,
            ),
            ("t0", "t1", "https"),
        )
        self.assertEqual([t.open_connections for t in self.tunnels], [1, 1])

    def test_keep_alive_stays(self) -> None:
        """
        The later requests of a connection on the same route go down the
        same stream.
        """
        ingress, _ = self.connect()

        ingress.dataReceived(self.request("/a"))
        ingress.dataReceived(self.request("/b"))

        self.assertEqual([len(s.mux.streams) for s in self.sessions], [1, 0])
        self.assertIn(b"GET /b HTTP/1.1", self.sessions[0].mux.streams[0].payload())

    def test_other_route_answered_after(self) -> None:
        """
        A later request on the connection for a route that answers itself
        is answered once the earlier response is done.
        """
        ingress, transport = self.connect()
        ingress.dataReceived(self.request("/a"))

        ingress.dataReceived(self.request("/tea"))
        waited = transport.value()
        stream = self.sessions[0].mux.streams[0]
        stream.protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        stream.end()

        self.assertEqual((waited, stream.write_closed), (b"", True))
        self.assertIn(b"HTTP/1.1 418 I'm a Teapot", transport.value())
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 OK"))

    def test_other_route_switches(self) -> None:
        """
        A later request on the connection for another route's tunnel waits,
        unread, until the earlier stream has ended, then goes on a stream of
        its own to that tunnel; the first tunnel no longer counts the
        connection.
        """
        other = FakeSession()
        tunnel = LabeledBinding(
            binding_id="o",
            name="o",
            labels=label_set({"app": "other"}),
            forwards_to="",
            session_id="so",
            owner="alice",
            session=other,  # type: ignore[arg-type]
        )
        self.groups.add(tunnel)
        ingress, transport = self.connect()
        ingress.dataReceived(self.request("/a"))

        ingress.dataReceived(self.request("/other/b"))
        before = len(other.mux.streams)
        first = self.sessions[0].mux.streams[0]
        ended = (first.write_closed, first.producer)
        first.end()

        [stream] = other.mux.streams
        self.assertEqual((before, ended), (0, (True, None)))
        self.assertEqual(stream.header().binding_id, "o")
        self.assertIn(b"GET /other/b HTTP/1.1", stream.payload())
        self.assertEqual(
            (self.tunnels[0].open_connections, tunnel.open_connections), (0, 1)
        )
        self.assertEqual(transport.producerState, "producing")

    def test_fixed_response(self) -> None:
        """
        An HTTP response backend's response is written and the connection
        closed; to C{HEAD}, without its body.
        """
        answers = []
        for method in ("GET", "HEAD"):
            ingress, transport = self.connect()
            ingress.dataReceived(self.request("/tea/pot", method))
            answers.append(transport.value())

        self.assertEqual(
            answers[0],
            b"HTTP/1.1 418 I'm a Teapot\r\nX-Teapot: yes\r\nContent-Length: 5\r\n"
            b"Connection: close\r\n\r\nshort",
        )
        self.assertTrue(answers[1].endswith(b"Connection: close\r\n\r\n"))

    def test_unavailable(self) -> None:
        """
        A route with no target is answered C{503} with the code
        C{TK_BACKEND_UNAVAILABLE}, naming the labels wanted.
        """
        ingress, transport = self.connect()

        ingress.dataReceived(self.request("/hello"))

        self.assertIn(b"503 Service Unavailable", transport.value())
        self.assertIn(b"TK_BACKEND_UNAVAILABLE", transport.value())
        self.assertIn(b"a=b", transport.value())

    def test_unavailable_command_as_code(self) -> None:
        """
        The page shows the command that starts a tunnel as code, without
        backticks.
        """
        ingress, transport = self.connect()

        ingress.dataReceived(self.request("/hello"))

        self.assertIn(
            b"<code>tunnelkit tunnel --label a=b ADDR</code>", transport.value()
        )
        self.assertNotIn(b"`", transport.value())

    def test_backend_raises(self) -> None:
        """
        A backend that raises is logged and answered C{502}
        C{TK_BACKEND_FAILED}; the next request is routed as usual.
        """
        ingress, transport = self.connect()

        ingress.dataReceived(self.request("/bug"))
        again, _ = self.connect()
        again.dataReceived(self.request("/"))

        self.assertIn(b"TK_BACKEND_FAILED", transport.value())
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(len(self.sessions[0].mux.streams), 1)

    def test_failed_tunnel_skipped(self) -> None:
        """
        A tunnel whose session refuses the stream is answered C{503} and
        marked failed, so the next connection goes to another tunnel.
        """
        self.sessions[0].mux.refuse = TunnelkitError("TK_MUX_GOING_AWAY", "closing")
        ingress, transport = self.connect()

        ingress.dataReceived(self.request("/"))
        again, _ = self.connect()
        again.dataReceived(self.request("/"))

        self.assertIn(b"503", transport.value().split(b"\r\n")[0])
        self.assertIsNotNone(self.tunnels[0].failed_at)
        self.assertEqual(len(self.sessions[1].mux.streams), 1)

    def test_plain_http_not_an_edge(self) -> None:
        """
        An HTTPS edge is not served on the plain HTTP listener.
        """
        ingress, transport = self.connect("http")

        ingress.dataReceived(self.request("/"))

        self.assertIn(b"TK_TUNNEL_NOT_FOUND", transport.value())


@implementer(IBackend)
class _Fixed:
    def __init__(self, decision: Any) -> None:
        self.decision = decision

    def choose(self, request: Any) -> Any:
        return self.decision


class ReloadedRouteTests(SynchronousTestCase):
    """
    A kept-alive connection survives its edge being loaded again.
    """

    def test_same_route_after_reload(self) -> None:
        """
        After the edges are rebuilt, a later request for the same route
        goes down the connection's stream instead of being refused.
        """
        router = Router()
        session = FakeSession()
        groups = TunnelGroups()
        groups.add(
            LabeledBinding(
                binding_id="t0",
                name="t0",
                labels=WEB,
                forwards_to="",
                session_id="s0",
                owner="alice",
                session=session,  # type: ignore[arg-type]
            )
        )

        def edge() -> ServedEdge:
            routes = RouteTable(
                Route("web", "default", TunnelGroupBackend(groups, WEB))
            )
            return ServedEdge("web", "https", (HostPort(HOST, 443),), routes)

        router.edges.https.add(HOST, edge())
        transport = StringTransport(peerAddress=CLIENT)
        ingress = HttpIngressFactory(router, "https").buildProtocol(CLIENT)
        ingress.makeConnection(transport)
        ingress.dataReceived(f"GET /a HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())

        router.edges.https.add(HOST, edge())
        ingress.dataReceived(f"GET /b HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())

        self.assertEqual(transport.value(), b"")
        self.assertIn(b"GET /b HTTP/1.1", session.mux.streams[0].payload())
