"""
Tests for starting and stopping tunnels while the agent runs:
L{AgentService.add_tunnel} and L{AgentService.remove_tunnel}, against an
in-memory edge.
"""

from typing import Any

from twisted.internet.defer import ensureDeferred
from twisted.logger import capturedLogs

from tunnelkit.agent.service import AgentService
from tunnelkit.config import HostPort, TunnelDefinition, UpstreamAddress
from tunnelkit.edge.session import EdgeSession
from tunnelkit.errors import TunnelkitError
from tests.test_agent_service import (
    AgentTestCase,
    InMemoryEdgeEndpoint,
)
from tests.test_edge_session import ALICE_TOKEN, make_edge

DB = TunnelDefinition(
    name="db", proto="tcp", addr=UpstreamAddress("tcp", "localhost", 5432)
)


class RuntimeTunnelTests(AgentTestCase):
    """
    Tunnels added and removed after the agent's session is up.
    """

    def connect(self) -> tuple[list[EdgeSession], AgentService]:
        """
        An agent with one tunnel, bound to an in-memory edge.

        @return: the edge's sessions so far (one per connection) and the
            agent.
        """
        edge = make_edge()
        sessions: list[EdgeSession] = []

        def accept() -> Any:
            sessions.append(EdgeSession(edge, self.clock))
            return sessions[-1].mux

        self.endpoint = InMemoryEdgeEndpoint(self.clock, accept)
        agent = self.start(authtoken=ALICE_TOKEN)
        self.endpoint.flush()
        self.successResultOf(agent.ready)
        return sessions, agent

    def add(self, agent: AgentService, definition: TunnelDefinition) -> Any:
        """
        Add a tunnel and move the bytes to and from the edge.

        @return: the Deferred of the result.
        """
        adding = ensureDeferred(agent.add_tunnel(definition))
        if isinstance(self.endpoint, InMemoryEdgeEndpoint):
            self.endpoint.flush()
        return adding

    def test_add(self) -> None:
        """
        A tunnel added is bound on the edge, gets its URL, and is one of
        the agent's tunnels.
        """
        sessions, agent = self.connect()

        with capturedLogs() as events:
            tunnel = self.successResultOf(self.add(agent, DB))

        self.assertEqual(tunnel.public_url, "tcp://tunnels.example.com:20001")
        self.assertIs(agent.tunnels["db"], tunnel)
        self.assertIn("db", sessions[-1].bindings)
        started = [e for e in events if e.get("log_format") == "started tunnel"]
        self.assertEqual([e["name"] for e in started], ["db"])

    def test_added_metrics(self) -> None:
        """
        A tunnel added counts in the agent's metrics like the others.
        """
        sessions, agent = self.connect()

        tunnel = self.successResultOf(self.add(agent, DB))

        self.assertIs(tunnel.metrics.parent, agent.metrics)

    def test_add_existing(self) -> None:
        """
        A name already taken is refused with C{TK_TUNNEL_EXISTS}.
        """
        sessions, agent = self.connect()
        existing = TunnelDefinition(
            name="ssh", proto="tcp", addr=UpstreamAddress("tcp", "localhost", 2222)
        )

        failure = self.failureResultOf(self.add(agent, existing), TunnelkitError)

        self.assertEqual(failure.value.code, "TK_TUNNEL_EXISTS")
        self.assertEqual(agent.tunnels["ssh"].definition.addr.port, 22)

    def test_add_without_session(self) -> None:
        """
        Without a session a tunnel cannot be added: C{TK_SESSION_NOT_READY}.
        """
        self.fake_sessions()
        agent = self.start()

        failure = self.failureResultOf(self.add(agent, DB), TunnelkitError)

        self.assertEqual(failure.value.code, "TK_SESSION_NOT_READY")
        self.assertNotIn("db", agent.tunnels)

    def test_add_refused(self) -> None:
        """
        A tunnel the edge refuses fails with the edge's error and is not
        added.
        """
        sessions, agent = self.connect()
        unreserved = TunnelDefinition(
            name="db",
            proto="tcp",
            addr=UpstreamAddress("tcp", "localhost", 5432),
            remote_addr=HostPort("tunnels.example.com", 1),
        )

        failure = self.failureResultOf(self.add(agent, unreserved), TunnelkitError)

        self.assertTrue(failure.value.code.startswith("TK_"))
        self.assertNotIn("db", agent.tunnels)

    def test_added_bound_again(self) -> None:
        """
        After a reconnect, a tunnel added at run time is bound again with
        the others.
        """
        sessions, agent = self.connect()
        self.successResultOf(self.add(agent, DB))

        self.lose_connection_of(agent)
        self.next_call()
        self.endpoint.flush()

        self.assertEqual(len(sessions), 2)
        self.assertEqual(set(sessions[-1].bindings), {"ssh", "db"})

    def lose_connection_of(self, agent: AgentService) -> None:
        """
        Drop the agent's connection to the edge.
        """
        assert agent.session is not None
        agent.session.mux.transport.loseConnection()
        self.endpoint.flush()

    def test_remove(self) -> None:
        """
        A tunnel removed is unbound on the edge and forgotten.
        """
        sessions, agent = self.connect()
        self.successResultOf(self.add(agent, DB))

        with capturedLogs() as events:
            removing = ensureDeferred(agent.remove_tunnel("db"))
            self.endpoint.flush()
            self.successResultOf(removing)

        self.assertNotIn("db", agent.tunnels)
        self.assertNotIn("db", sessions[-1].bindings)
        stopped = [e for e in events if e.get("log_format") == "stopped tunnel"]
        self.assertEqual([e["name"] for e in stopped], ["db"])

    def test_remove_unknown(self) -> None:
        """
        Removing a tunnel the agent does not have raises L{KeyError}.
        """
        sessions, agent = self.connect()

        self.failureResultOf(ensureDeferred(agent.remove_tunnel("nope")), KeyError)

    def test_remove_without_session(self) -> None:
        """
        Without a session a tunnel is only forgotten.
        """
        self.fake_sessions()
        agent = self.start()

        self.successResultOf(ensureDeferred(agent.remove_tunnel("ssh")))

        self.assertEqual(agent.tunnels, {})
