"""
Tests for labeled tunnels in the agent: binding them with C{bind_labels},
what the startup summary says, and the streams the edges send them.
"""

import io
from types import SimpleNamespace
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred, inlineCallbacks, succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from tests.e2e import Steps, free_port
from tests.rawhttp import read_response, serve
from tests.test_upstream import UpstreamTestCase
from tunnelkit.agent.app import AgentApplication
from tunnelkit.agent.session import AgentSession
from tunnelkit.agent.tunnel import Tunnel
from tunnelkit.agent.upstream import ProxiedStream
from tunnelkit.cli import write_summary
from tunnelkit.config import AgentConfig, HostPort, TunnelDefinition, UpstreamAddress
from tunnelkit.control.messages import BindLabelsResp, ProxyHeader
from tunnelkit.errors import TunnelkitError
from tunnelkit.mux import MuxConfig


def labeled_tunnel(port: int = 8000) -> Tunnel:
    """
    @return: a labeled tunnel C{web} with the labels C{app=web env=prod}.
    """
    return Tunnel(
        TunnelDefinition(
            name="web",
            proto=None,
            addr=UpstreamAddress("http", "127.0.0.1", port),
            labels=(("app", "web"), ("env", "prod")),
        )
    )


class BindTests(SynchronousTestCase):
    """
    A labeled tunnel is bound with C{bind_labels} and has no URL.
    """

    def test_bound_without_url(self) -> None:
        """
        The edge's C{bind_labels_resp} binds the tunnel with no public URL.
        """
        agent = SimpleNamespace(config=SimpleNamespace(metadata=""), tunnels={})
        session = AgentSession(agent, reactor, MuxConfig())  # type: ignore[arg-type]
        sent: list[Any] = []

        def request(message: Any) -> Any:
            sent.append(message)
            return succeed(BindLabelsResp(id="web", labels=("app=web", "env=prod")))

        session.request = request  # type: ignore[method-assign]
        tunnel = labeled_tunnel()

        error = self.successResultOf(ensureDeferred(session.bind(tunnel)))

        self.assertEqual((error, tunnel.public_urls), (None, ()))
        self.assertEqual(sent[0].labels, ("app=web", "env=prod"))

    def test_summary(self) -> None:
        """
        The startup summary forwards the tunnel's labels to its address.
        """
        tunnel = labeled_tunnel()
        app = SimpleNamespace(
            agent=SimpleNamespace(
                edge="edge.example.com:4443", tunnels={"web": tunnel}
            ),
            edge=None,
            web_url=None,
        )
        output = io.StringIO()

        write_summary(output, app)

        self.assertIn(
            "labels app=web,env=prod -> http://127.0.0.1:8000", output.getvalue()
        )


class EmbeddedEdgeTests(SynchronousTestCase):
    """
    A labeled tunnel without C{server_addr}: the edge inside the agent has
    no edges to route to it.
    """

    def test_refused_before_starting(self) -> None:
        """
        The agent does not start: C{ready} fails with C{TK_LABELS_NEED_EDGE},
        which names the tunnel and says to set C{server_addr}, before the
        web interface or an embedded edge is started.
        """
        memory = MemoryReactorClock()
        tunnel = labeled_tunnel().definition
        app = AgentApplication(AgentConfig(), [tunnel], memory)

        app.startService()

        failure = self.failureResultOf(app.ready, TunnelkitError)
        self.assertEqual(failure.value.code, "TK_LABELS_NEED_EDGE")
        self.assertIn("'web'", failure.value.message)
        self.assertIn("server_addr", failure.value.message)
        self.assertEqual((app.edge, app.web_url, memory.tcpServers), (None, None, []))

    def test_with_server_addr(self) -> None:
        """
        With a C{server_addr} the labeled tunnel is not refused: the agent
        goes on to dial that edge.
        """
        memory = MemoryReactorClock()
        tunnel = labeled_tunnel().definition
        config = AgentConfig(web_addr=None, server_addr=HostPort("192.0.2.1", 4443))
        app = AgentApplication(config, [tunnel], memory)

        app.startService()
        self.addCleanup(app.stopService)

        self.assertNoResult(app.ready)
        self.assertIsNotNone(app.agent)


class UnreachableTests(UpstreamTestCase):
    """
    A labeled tunnel whose local service cannot be reached.
    """

    @inlineCallbacks
    def through_edge(self, tunnel: Tunnel, proto: str) -> Steps[bytes]:
        """
        Send a request on a stream an edge of type C{proto} opened.

        @return: every byte the public client gets back.
        """
        header = ProxyHeader(binding_id="web", client_addr="192.0.2.7:1", proto=proto)
        port = yield serve(self, lambda: ProxiedStream(reactor, tunnel, header))
        answer: bytes = yield self.clients.exchange(
            port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        return answer

    @inlineCallbacks
    def test_https_edge_page(self) -> Steps[None]:
        """
        Behind an HTTPS edge it answers C{502} with the agent's page, as an
        HTTP tunnel does.
        """
        answer = yield self.through_edge(labeled_tunnel(free_port()), "https")

        self.assertEqual(read_response(answer).status, 502)

    @inlineCallbacks
    def test_tcp_edge_reset(self) -> Steps[None]:
        """
        Behind a TCP edge it resets the stream, writing nothing.
        """
        answer = yield self.through_edge(labeled_tunnel(free_port()), "tcp")

        self.assertEqual(answer, b"")
