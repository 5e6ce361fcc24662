"""
Tests for labeled tunnels in the agent: binding them with C{bind_labels},
what the startup summary says, and the streams the edges send them.
"""

import io
from types import SimpleNamespace
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred, inlineCallbacks, succeed
from twisted.trial.unittest import SynchronousTestCase

from tests.e2e import Steps, free_port
from tests.rawhttp import read_response, serve
from tests.test_upstream import UpstreamTestCase
from tunnelkit.agent.session import AgentSession
from tunnelkit.agent.tunnel import Tunnel
from tunnelkit.agent.upstream import ProxiedStream
from tunnelkit.cli import write_summary
from tunnelkit.config import TunnelDefinition, UpstreamAddress
from tunnelkit.control.messages import BindLabelsResp, ProxyHeader
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
