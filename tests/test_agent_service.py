"""
Tests for L{tunnelkit.agent.service}: reconnecting with backoff, errors that
stop the agent and errors that are retried; for the bind requests of
L{tunnelkit.agent.tunnel}; and for L{tunnelkit.cli.select_tunnels}, which
decides the tunnels a command starts.

The agent's endpoint is replaced by an in-memory one, and its session
mostly by L{FakeSession}, whose C{establish} the test answers.
"""

from typing import Any, Callable

from OpenSSL import SSL
from service_identity.exceptions import VerificationError
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IProtocol, IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tunnelkit.agent import service
from tunnelkit.agent.service import FATAL_CODES, AgentService
from tunnelkit.agent.tunnel import Tunnel
from tunnelkit.cli import CommandFailed, select_tunnels
from tunnelkit.config import (
    AgentConfig,
    HostPort,
    TunnelDefinition,
    UpstreamAddress,
)
from tunnelkit.control.messages import AuthResp, BindLabels
from tunnelkit.control.rpc import RemoteError
from tunnelkit.edge.session import EdgeSession
from tunnelkit.errors import TunnelkitError
from tunnelkit.mux import MuxProtocol
from tunnelkit.options import StartOptions, TcpOptions
from tests.test_edge_session import ALICE_TOKEN, make_edge

EDGE = HostPort("edge.example.com", 4443)
SSH = TunnelDefinition(
    name="ssh", proto="tcp", addr=UpstreamAddress("tcp", "localhost", 22)
)
DB = TunnelDefinition(
    name="db", proto="tcp", addr=UpstreamAddress("tcp", "10.0.0.5", 5432)
)


class FakeMux(Protocol):
    """
    The connection protocol of a L{FakeSession}, standing in for the
    multiplexer.

    @ivar close_reason: why the connection ended; a test may set it to a
        TLS failure before failing C{establish}.
    @ivar closes: how many times C{close} was called.
    """

    def __init__(self) -> None:
        self.close_reason: Failure | None = None
        self.closes = 0
        self._waiting: list[Deferred[Any]] = []

    def close(self) -> None:
        """
        Close the connection, as the multiplexer's C{close} does.
        """
        self.closes += 1
        self.transport.loseConnection()  # type: ignore[union-attr]

    def when_closed(self) -> "Deferred[Any]":
        """
        @return: a Deferred that fires when the connection is lost.
        """
        waiting: Deferred[Any] = Deferred()
        self._waiting.append(waiting)
        return waiting

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        self.close_reason = reason
        waiting, self._waiting = self._waiting, []
        for each in waiting:
            each.callback(reason.value)


class FakeSession:
    """
    Stands in for L{tunnelkit.agent.session.AgentSession}: C{establish}
    returns L{establishing}, which the test fires.

    @ivar established_with: the authtoken and session id C{establish} got.
    """

    def __init__(self, agent: AgentService, reactor: Any, config: Any) -> None:
        self.agent = agent
        self.mux = FakeMux()
        self.auth: AuthResp | None = None
        self.establishing: Deferred[Any] = Deferred()
        self.established_with: tuple[str, str] | None = None

    def establish(self, authtoken: str, session_id: str) -> "Deferred[Any]":
        """
        Record the arguments; return L{establishing}.
        """
        self.established_with = (authtoken, session_id)
        return self.establishing

    def succeed(self, session_id: str, results: list[Any]) -> None:
        """
        Finish authenticating as C{session_id} with these bind results.
        """
        self.auth = AuthResp(session_id=session_id)
        self.establishing.callback(results)


@implementer(IStreamClientEndpoint)
class MemoryEndpoint:
    """
    A client endpoint that connects each protocol to a L{StringTransport},
    or refuses while L{refusing} is set.

    @ivar attempts: the clock time of each connection attempt.
    @ivar protocols: the protocol of each connection made.
    @ivar transports: the transport of each connection made.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.refusing = False
        self.attempts: list[float] = []
        self.protocols: list[IProtocol] = []
        self.transports: list[StringTransport] = []

    def connect(self, factory: Any) -> "Deferred[IProtocol]":
        """
        Build and connect a protocol, or fail as a refused connection.
        """
        self.attempts.append(self.clock.seconds())
        if self.refusing:
            return fail(ConnectionRefusedError())
        protocol = factory.buildProtocol(IPv4Address("TCP", "192.0.2.1", 4443))
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.protocols.append(protocol)
        self.transports.append(transport)
        return succeed(protocol)


@implementer(IStreamClientEndpoint)
class InMemoryEdgeEndpoint:
    """
    A client endpoint whose connections reach a far side built by
    C{far_side} over an L{iosim} pump.
    """

    def __init__(self, clock: Clock, far_side: Callable[[], IProtocol]) -> None:
        self.clock = clock
        self.far_side = far_side
        self.pumps: list[iosim.IOPump] = []

    def connect(self, factory: Any) -> "Deferred[IProtocol]":
        """
        Connect a new protocol to a new far side.
        """
        protocol = factory.buildProtocol(IPv4Address("TCP", "192.0.2.1", 4443))
        far = self.far_side()
        self.pumps.append(
            iosim.connect(
                far,
                iosim.makeFakeServer(far),
                protocol,
                iosim.makeFakeClient(protocol),
                greet=False,
                clock=self.clock,
            )
        )
        return succeed(protocol)

    def flush(self) -> None:
        """
        Move every waiting byte and close on every connection.
        """
        for pump in self.pumps:
            pump.flush()


class AgentTestCase(SynchronousTestCase):
    """
    An agent whose connections go to an endpoint the test provides.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.endpoint: Any = MemoryEndpoint(self.clock)
        self.sessions: list[FakeSession] = []
        self.patch(service, "client_tls_options", lambda host, root_cas: None)
        self.patch(service, "HostnameEndpoint", lambda *args, **kwargs: None)
        self.patch(service, "wrap_client_tls", lambda tls, inner: self.endpoint)

    def fake_sessions(self) -> None:
        """
        Make the agent build L{FakeSession}s, recorded in C{sessions}.
        """

        def build(agent: AgentService, reactor: Any, config: Any) -> FakeSession:
            session = FakeSession(agent, reactor, config)
            self.sessions.append(session)
            return session

        self.patch(service, "AgentSession", build)

    def start(
        self,
        tunnels: tuple[TunnelDefinition, ...] = (SSH,),
        jitter: float = 0.0,
        authtoken: str = "tok-1234",
    ) -> AgentService:
        """
        Start an agent, stopped again by the test's clean-up.

        @param jitter: what the agent's random source returns.
        """
        agent = AgentService(
            AgentConfig(),
            tunnels,
            self.clock,
            EDGE,
            None,
            authtoken,
            rng=lambda: jitter,
        )
        agent.startService()
        self.addCleanup(self.stop, agent)
        self.addCleanup(agent.ready.addErrback, lambda failure: None)
        return agent

    def stop(self, agent: AgentService) -> None:
        """
        Stop the agent if it still runs, and run what that schedules.
        """
        if agent.running:
            agent.stopService()
        self.clock.advance(0)

    def lose_connection(self, index: int = 0) -> None:
        """
        Deliver the end of a connection through the reconnecting service.
        """
        self.endpoint.protocols[index].connectionLost(Failure(ConnectionDone()))

    def next_call(self) -> None:
        """
        Advance the clock to the next scheduled call.
        """
        calls = sorted(call.getTime() for call in self.clock.getDelayedCalls())
        self.clock.advance(calls[0] - self.clock.seconds())


def agent_events(events: Any, level: LogLevel) -> list[dict[str, Any]]:
    """
    @return: the events of the agent service's log at C{level}.
    """
    return [
        event
        for event in events
        if event.get("log_namespace") == "tunnelkit.agent.service"
        and event.get("log_level") == level
    ]


class FakesTests(SynchronousTestCase):
    """
    The endpoints of this module provide the interface they stand in for.
    """

    def test_endpoints(self) -> None:
        """
        Both endpoints provide L{IStreamClientEndpoint}.
        """
        clock = Clock()

        memory = MemoryEndpoint(clock)
        edge = InMemoryEdgeEndpoint(clock, Protocol)

        self.assertTrue(verifyObject(IStreamClientEndpoint, memory))
        self.assertTrue(verifyObject(IStreamClientEndpoint, edge))


class BackoffTests(AgentTestCase):
    """
    Failed connections are retried after growing, capped, jittered delays.
    """

    def gaps(self, count: int) -> list[float]:
        """
        Let C{count} connection attempts fail.

        @return: the time between consecutive attempts.
        """
        times = self.endpoint.attempts
        for _ in range(count - 1):
            self.next_call()
        return [later - earlier for earlier, later in zip(times, times[1:])]

    def test_delays_grow(self) -> None:
        """
        Each delay doubles the last.
        """
        self.endpoint.refusing = True
        self.start()

        gaps = self.gaps(7)

        self.assertEqual(gaps, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0])

    def test_delays_capped(self) -> None:
        """
        Delays stop growing at 30 seconds.
        """
        self.endpoint.refusing = True
        self.start()

        gaps = self.gaps(11)

        self.assertEqual(gaps[-4:], [30.0] * 4)

    def test_jitter(self) -> None:
        """
        Up to half a second of jitter is added to every delay, the capped
        ones included.
        """
        self.endpoint.refusing = True
        self.start(jitter=1.0)

        gaps = self.gaps(10)

        self.assertEqual(gaps[0], 1.0)
        self.assertEqual(gaps[-1], 30.5)
        self.assertTrue(all(gap <= 30.5 for gap in gaps), gaps)

    def test_retry_logged_at_warn(self) -> None:
        """
        Every retry is announced at warn with the edge, the delay and the
        number of the next attempt.
        """
        self.endpoint.refusing = True

        with capturedLogs() as events:
            self.start()
            self.gaps(3)

        warnings = agent_events(events, LogLevel.warn)
        self.assertEqual(
            [formatEvent(event) for event in warnings],
            [
                "no session with the edge at edge.example.com:4443 (Connection"
                " was refused by other side); reconnecting in 0.5s (attempt 2)",
                "no session with the edge at edge.example.com:4443 (Connection"
                " was refused by other side); reconnecting in 1.0s (attempt 3)",
                "no session with the edge at edge.example.com:4443 (Connection"
                " was refused by other side); reconnecting in 2.0s (attempt 4)",
            ],
        )
        self.assertEqual(warnings[0]["obj"], "csess")

    def test_connection_resets_backoff(self) -> None:
        """
        After a session that lasted C{STABLE_SESSION}, the first retry once
        it ends waits the first delay again.
        """
        self.fake_sessions()
        self.endpoint.refusing = True
        agent = self.start()
        self.gaps(4)
        self.endpoint.refusing = False
        self.next_call()
        self.sessions[0].succeed("s1", [(agent.tunnels["ssh"], None)])
        self.clock.advance(service.STABLE_SESSION)
        lost_at = self.clock.seconds()

        self.lose_connection()
        self.next_call()

        self.assertEqual(self.endpoint.attempts[-1] - lost_at, 0.5)

    def test_short_session_keeps_backoff(self) -> None:
        """
        A session the edge drops at once does not start the waits over: the
        next retry waits longer than the last.
        """
        self.fake_sessions()
        self.endpoint.refusing = True
        agent = self.start()
        self.gaps(4)
        self.endpoint.refusing = False
        self.next_call()
        self.sessions[0].succeed("s1", [(agent.tunnels["ssh"], None)])
        lost_at = self.clock.seconds()

        self.lose_connection()
        self.next_call()

        self.assertEqual(self.endpoint.attempts[-1] - lost_at, 8.0)


class FatalTests(AgentTestCase):
    """
    Errors that retrying cannot fix stop the agent.
    """

    def setUp(self) -> None:
        super().setUp()
        self.fake_sessions()

    def test_fatal_fails_ready(self) -> None:
        """
        C{TK_AUTH_FAILED} fails C{ready} with the edge's error and closes
        the connection.
        """
        agent = self.start()
        error = RemoteError("TK_AUTH_FAILED", "The authtoken is not accepted.")

        self.sessions[0].establishing.errback(error)

        self.assertIs(self.failureResultOf(agent.ready).value, error)
        self.assertEqual(self.sessions[0].mux.closes, 1)

    def test_fatal_stops(self) -> None:
        """
        After a fatal error the agent stops, C{stopped} fires with the
        error, and no further connection is attempted.
        """
        agent = self.start()
        error = RemoteError("TK_AUTH_FAILED", "The authtoken is not accepted.")
        self.sessions[0].establishing.errback(error)

        self.clock.advance(0)
        self.clock.advance(300)

        self.assertIs(self.successResultOf(agent.stopped), error)
        self.assertFalse(agent.running)
        self.assertEqual(len(self.endpoint.attempts), 1)

    def test_every_fatal_code(self) -> None:
        """
        Each of the fatal codes stops the agent.
        """
        stopped = {}
        for code in sorted(FATAL_CODES):
            self.sessions.clear()
            agent = self.start()
            self.sessions[0].establishing.errback(RemoteError(code, "Stop."))
            self.clock.advance(0)
            stopped[code] = (agent.running, agent.stopped.called)
            self.failureResultOf(agent.ready, RemoteError)

        self.assertEqual(stopped, {code: (False, True) for code in FATAL_CODES})

    def test_fatal_logged_at_error(self) -> None:
        """
        The fatal error is logged at error level with its code.
        """
        agent = self.start()

        with capturedLogs() as events:
            self.sessions[0].establishing.errback(
                RemoteError("TK_AUTH_MISSING", "Set an authtoken.")
            )

        errors = agent_events(events, LogLevel.error)
        self.assertEqual(
            [formatEvent(event) for event in errors],
            ["TK_AUTH_MISSING: Set an authtoken."],
        )
        self.failureResultOf(agent.ready, RemoteError)

    def test_fatal_announces_no_retry(self) -> None:
        """
        After a fatal error nothing says the agent is retrying.
        """
        agent = self.start()
        agent.ready.addErrback(lambda failure: None)

        with capturedLogs() as events:
            self.sessions[0].establishing.errback(
                RemoteError("TK_AUTH_FAILED", "The authtoken is not accepted.")
            )
            self.clock.advance(0)

        texts = [formatEvent(event) for event in events]
        self.assertEqual([text for text in texts if "retrying" in text], [])

    def test_untrusted_certificate(self) -> None:
        """
        A connection that ended because the edge's certificate is not
        trusted stops the agent with C{TK_EDGE_CERT_UNTRUSTED}, whatever the
        session's own error.
        """
        agent = self.start()
        mux = self.sessions[0].mux
        mux.close_reason = Failure(
            SSL.Error([("SSL routines", "", "certificate verify failed")])
        )

        self.sessions[0].establishing.errback(ConnectionLost())

        failure = self.failureResultOf(agent.ready, TunnelkitError)
        self.assertEqual(failure.value.code, "TK_EDGE_CERT_UNTRUSTED")

    def test_name_mismatch(self) -> None:
        """
        A certificate that does not carry the edge's name stops the agent
        with C{TK_EDGE_CERT_NAME_MISMATCH}.
        """
        agent = self.start()
        self.sessions[0].mux.close_reason = Failure(VerificationError(errors=[]))

        self.sessions[0].establishing.errback(ConnectionLost())

        failure = self.failureResultOf(agent.ready, TunnelkitError)
        self.assertEqual(failure.value.code, "TK_EDGE_CERT_NAME_MISMATCH")

    def test_first_bind_failure_fatal(self) -> None:
        """
        A tunnel the edge refuses to bind on the first session fails
        C{ready} with the edge's error and stops the agent.
        """
        agent = self.start()
        error = RemoteError("TK_ADDR_NOT_RESERVED", "Not yours.")

        self.sessions[0].succeed("s1", [(agent.tunnels["ssh"], error)])
        self.clock.advance(0)
        self.lose_connection()

        self.assertIs(self.failureResultOf(agent.ready).value, error)
        self.assertIs(self.successResultOf(agent.stopped), error)

    def test_stop_requested(self) -> None:
        """
        When the edge asks the agent to stop, it stops and C{stopped} fires
        with C{None}.
        """
        agent = self.start()
        self.sessions[0].succeed("s1", [(agent.tunnels["ssh"], None)])

        agent.stop_requested()
        self.lose_connection()

        self.assertIsNone(self.successResultOf(agent.stopped))
        self.assertFalse(agent.running)


class RetryTests(AgentTestCase):
    """
    Other failures close the connection and are retried.
    """

    def setUp(self) -> None:
        super().setUp()
        self.fake_sessions()

    def test_non_fatal_closes(self) -> None:
        """
        A failure with another code aborts the connection and leaves
        C{ready} waiting.
        """
        agent = self.start()

        self.sessions[0].establishing.errback(
            RemoteError("TK_INTERNAL", "The peer failed.")
        )

        self.assertTrue(self.endpoint.transports[0].disconnected)
        self.assertNoResult(agent.ready)
        self.assertTrue(agent.running)

    def test_non_fatal_logged_at_warn(self) -> None:
        """
        The failure is logged at warn with the edge's error.
        """
        self.start()

        with capturedLogs() as events:
            self.sessions[0].establishing.errback(
                RemoteError("TK_INTERNAL", "The peer failed.")
            )

        texts = [formatEvent(event) for event in agent_events(events, LogLevel.warn)]
        self.assertEqual(
            texts[0],
            "no session with the edge at edge.example.com:4443 (TK_INTERNAL: The"
            " peer failed); reconnecting in 0.5s (attempt 2)",
        )

    def test_non_fatal_retried(self) -> None:
        """
        After the backoff delay the agent connects again, presenting the
        same authtoken, and C{ready} fires once that session is up.
        """
        agent = self.start()
        self.sessions[0].establishing.errback(
            RemoteError("TK_INTERNAL", "The peer failed.")
        )

        self.next_call()
        self.sessions[1].succeed("s1", [(agent.tunnels["ssh"], None)])

        self.assertEqual(len(self.endpoint.attempts), 2)
        self.assertEqual(self.sessions[1].established_with, ("tok-1234", ""))
        self.assertEqual(self.successResultOf(agent.ready), [agent.tunnels["ssh"]])

    def test_other_exception_retried(self) -> None:
        """
        A failure that is not a L{TunnelkitError} is retried too.
        """
        self.start()
        self.sessions[0].establishing.errback(ConnectionLost())

        self.next_call()

        self.assertEqual(len(self.sessions), 2)


class SessionTests(AgentTestCase):
    """
    A session that comes up, and one that ends.
    """

    def setUp(self) -> None:
        super().setUp()
        self.fake_sessions()

    def test_ready(self) -> None:
        """
        C{ready} fires with the tunnels once the first session bound them,
        and the edge's session id is kept.
        """
        agent = self.start(tunnels=(SSH, DB))
        results = [(agent.tunnels["ssh"], None), (agent.tunnels["db"], None)]

        self.sessions[0].succeed("s1", results)

        self.assertEqual(
            self.successResultOf(agent.ready),
            [agent.tunnels["ssh"], agent.tunnels["db"]],
        )
        self.assertEqual(agent.session_id, "s1")

    def test_status(self) -> None:
        """
        The agent is C{connecting} until its first session is accepted,
        C{online} while it lasts, and C{reconnecting} once it ended.
        """
        agent = self.start()
        before = agent.status

        self.sessions[0].succeed("s1", [(agent.tunnels["ssh"], None)])
        during = agent.status
        self.lose_connection()

        self.assertEqual(
            (before, during, agent.status), ("connecting", "online", "reconnecting")
        )

    def test_started_tunnel_logged(self) -> None:
        """
        Each bound tunnel is announced as ngrok does, with its name, local
        address and public URL.
        """
        agent = self.start()
        agent.tunnels["ssh"].public_url = "tcp://edge.example.com:20001"

        with capturedLogs() as events:
            self.sessions[0].succeed("s1", [(agent.tunnels["ssh"], None)])

        [started] = [
            event
            for event in agent_events(events, LogLevel.info)
            if event["log_format"] == "started tunnel"
        ]
        self.assertEqual(
            (started["obj"], started["name"], started["addr"], started["url"]),
            ("tunnels", "ssh", "//localhost:22", "tcp://edge.example.com:20001"),
        )

    def test_reconnect_resumes(self) -> None:
        """
        When an established session's connection ends, the agent connects
        again and asks to resume the same session id.
        """
        agent = self.start()
        self.sessions[0].succeed("s1", [(agent.tunnels["ssh"], None)])

        self.lose_connection()
        self.next_call()

        self.assertEqual(self.sessions[1].established_with, ("tok-1234", "s1"))

    def test_reconnect_after_first_delay(self) -> None:
        """
        The first retry after a session ends waits the first backoff delay.
        """
        agent = self.start()
        self.sessions[0].succeed("s1", [(agent.tunnels["ssh"], None)])
        lost_at = self.clock.seconds()

        self.lose_connection()
        self.next_call()

        self.assertEqual(self.endpoint.attempts[-1] - lost_at, 0.5)

    def test_closed_session_clears_urls(self) -> None:
        """
        While the agent is disconnected its tunnels have no public URL.
        """
        agent = self.start()
        agent.tunnels["ssh"].public_url = "tcp://edge.example.com:20001"
        self.sessions[0].succeed("s1", [(agent.tunnels["ssh"], None)])

        self.lose_connection()

        self.assertIsNone(agent.tunnels["ssh"].public_url)

    def test_closed_session_logged(self) -> None:
        """
        The end of a running session is logged at warn as ngrok does.
        """
        agent = self.start()
        self.sessions[0].succeed("s1", [(agent.tunnels["ssh"], None)])

        with capturedLogs() as events:
            self.lose_connection()

        texts = [formatEvent(event) for event in agent_events(events, LogLevel.warn)]
        self.assertIn("session closed, starting reconnect loop", texts)

    def test_later_bind_failure_not_fatal(self) -> None:
        """
        A bind refused on a later session is logged but does not stop the
        agent.
        """
        agent = self.start()
        self.sessions[0].succeed("s1", [(agent.tunnels["ssh"], None)])
        self.lose_connection()
        self.next_call()
        error = RemoteError("TK_PORT_RANGE_EXHAUSTED", "No port.")

        with capturedLogs() as events:
            self.sessions[1].succeed("s1", [(agent.tunnels["ssh"], error)])
            self.clock.advance(0)

        self.assertTrue(agent.running)
        self.assertNoResult(agent.stopped)
        self.assertEqual(len(agent_events(events, LogLevel.error)), 1)


class InMemoryEdgeTests(AgentTestCase):
    """
    The real agent session against an in-memory edge: a refused session
    ends its connection without upsetting the reconnecting service.
    """

    def test_refused_authtoken(self) -> None:
        """
        An authtoken the edge refuses stops the agent, and closing the
        connection raises nothing.
        """
        edge = make_edge()
        self.endpoint = InMemoryEdgeEndpoint(
            self.clock, lambda: EdgeSession(edge, self.clock).mux
        )
        agent = self.start(authtoken="wrong-token")

        self.endpoint.flush()
        self.clock.advance(0)
        self.endpoint.flush()

        self.assertEqual(
            self.failureResultOf(agent.ready, TunnelkitError).value.code,
            "TK_AUTH_FAILED",
        )
        self.assertFalse(agent.running)

    def test_refused_stream_retried(self) -> None:
        """
        A session the edge cannot serve (it refuses streams) is closed and
        retried, and closing it raises nothing.
        """
        self.endpoint = InMemoryEdgeEndpoint(
            self.clock, lambda: MuxProtocol(False, self.clock, None)
        )
        self.start()

        self.endpoint.flush()
        self.next_call()
        self.endpoint.flush()

        self.assertEqual(len(self.endpoint.pumps), 2)

    def test_bound(self) -> None:
        """
        With a valid authtoken the agent's tunnels are bound on the edge
        and C{ready} fires with their public URLs.
        """
        edge = make_edge()
        self.endpoint = InMemoryEdgeEndpoint(
            self.clock, lambda: EdgeSession(edge, self.clock).mux
        )
        agent = self.start(authtoken=ALICE_TOKEN)

        self.endpoint.flush()

        [tunnel] = self.successResultOf(agent.ready)
        self.assertEqual(tunnel.public_url, "tcp://tunnels.example.com:20000")
        self.assertEqual(agent.session_id, list(edge.sessions)[0])

    def test_latency_measured(self) -> None:
        """
        A session measures its round trip to the edge as it starts, before
        the first keepalive.
        """
        edge = make_edge()
        self.endpoint = InMemoryEdgeEndpoint(
            self.clock, lambda: EdgeSession(edge, self.clock).mux
        )
        agent = self.start(authtoken=ALICE_TOKEN)

        self.endpoint.flush()

        assert agent.session is not None
        self.assertEqual(agent.session.mux.latency, 0)


class EdgeRequestTests(AgentTestCase):
    """
    What the edge may ask of a connected agent: stop a tunnel, restart the
    session, stop the agent.
    """

    def connect(self, remote_management: bool = True) -> tuple[Any, AgentService]:
        """
        An agent bound to an in-memory edge.

        @return: the edge's session and the agent.
        """
        edge = make_edge()
        sessions: list[EdgeSession] = []

        def accept() -> MuxProtocol:
            sessions.append(EdgeSession(edge, self.clock))
            return sessions[-1].mux

        self.endpoint = InMemoryEdgeEndpoint(self.clock, accept)
        agent = self.start(authtoken=ALICE_TOKEN)
        if not remote_management:
            agent.config = AgentConfig(remote_management=False)
        self.endpoint.flush()
        self.successResultOf(agent.ready)
        return sessions[-1], agent

    def test_stop_tunnel(self) -> None:
        """
        C{stop_tunnel} frees the binding on the edge and takes the tunnel
        offline on the agent, which logs the edge's reason at error.
        """
        edge_session, agent = self.connect()

        with capturedLogs() as events:
            answered = edge_session.stop_tunnel("ssh", "Closed by the operator.", "")
            self.endpoint.flush()

        self.successResultOf(answered)
        self.assertIsNone(agent.tunnels["ssh"].public_url)
        self.assertEqual(edge_session.bindings, {})
        errors = [
            formatEvent(event)
            for event in events
            if event.get("log_namespace") == "tunnelkit.agent.session"
            and event.get("log_level") == LogLevel.error
        ]
        self.assertEqual(
            errors, ["the edge stopped tunnel ssh: Closed by the operator."]
        )

    def test_restart_reconnects(self) -> None:
        """
        C{restart} is answered, then the agent closes its session and
        connects again after the first backoff delay, binding its tunnel
        again.
        """
        edge_session, agent = self.connect()

        answered = edge_session.restart()
        self.endpoint.flush()
        self.clock.advance(0)
        self.endpoint.flush()
        self.next_call()
        self.endpoint.flush()

        self.successResultOf(answered)
        self.assertEqual(len(self.endpoint.pumps), 2)
        self.assertIsNotNone(agent.tunnels["ssh"].public_url)

    def test_stop(self) -> None:
        """
        C{stop} is answered, then the agent stops and C{stopped} fires.
        """
        edge_session, agent = self.connect()

        answered = edge_session.stop()
        self.endpoint.flush()
        self.clock.advance(0)
        self.endpoint.flush()

        self.successResultOf(answered)
        self.assertIsNone(self.successResultOf(agent.stopped))
        self.assertFalse(agent.running)

    def test_remote_management_disabled(self) -> None:
        """
        With C{remote_management: false}, C{stop} and C{restart} are
        refused with C{TK_REMOTE_MANAGEMENT_DISABLED} and the agent runs on.
        """
        edge_session, agent = self.connect(remote_management=False)

        stopping = edge_session.stop()
        restarting = edge_session.restart()
        self.endpoint.flush()

        for answer in (stopping, restarting):
            error = self.failureResultOf(answer, RemoteError).value
            self.assertEqual(error.code, "TK_REMOTE_MANAGEMENT_DISABLED")
        self.assertTrue(agent.running)


class BindRequestTests(SynchronousTestCase):
    """
    L{Tunnel.bind_request}: what the agent asks the edge for.
    """

    def test_fields(self) -> None:
        """
        A TCP tunnel's request carries its name as id and name, the
        protocol, the local address for display, and no token or remote
        address yet.
        """
        request = Tunnel(SSH).bind_request()

        self.assertEqual(
            (request.id, request.name, request.proto, request.forwards_to),
            ("ssh", "ssh", "tcp", "localhost:22"),
        )
        self.assertEqual((request.token, request.metadata), ("", ""))
        self.assertEqual(request.opts.remote_addr, "")  # type: ignore[union-attr]

    def test_forwards_to_host(self) -> None:
        """
        An upstream on another host is shown as C{host:port}.
        """
        request = Tunnel(DB).bind_request()

        self.assertEqual(request.forwards_to, "10.0.0.5:5432")

    def test_remote_addr(self) -> None:
        """
        A reserved address is sent as C{host:port}.
        """
        definition = TunnelDefinition(
            name="ssh",
            proto="tcp",
            addr=UpstreamAddress("tcp", "localhost", 22),
            remote_addr=HostPort("tunnels.example.com", 5000),
        )

        request = Tunnel(definition).bind_request()

        self.assertEqual(
            request.opts.remote_addr, "tunnels.example.com:5000"  # type: ignore
        )

    def test_remote_addr_ipv6(self) -> None:
        """
        An IPv6 reserved address is sent in brackets.
        """
        definition = TunnelDefinition(
            name="ssh",
            proto="tcp",
            addr=UpstreamAddress("tcp", "localhost", 22),
            remote_addr=HostPort("2001:db8::7", 5000),
        )

        request = Tunnel(definition).bind_request()

        self.assertEqual(request.opts.remote_addr, "[2001:db8::7]:5000")  # type: ignore

    def test_token_and_metadata(self) -> None:
        """
        The affinity token of the last binding and the tunnel's metadata
        are sent.
        """
        definition = TunnelDefinition(
            name="ssh",
            proto="tcp",
            addr=UpstreamAddress("tcp", "localhost", 22),
            metadata="rack 4",
        )
        tunnel = Tunnel(definition, token="20001.abc")

        request = tunnel.bind_request()

        self.assertEqual((request.token, request.metadata), ("20001.abc", "rack 4"))

    def test_http_refused_as_unsupported(self) -> None:
        """
        An http tunnel is refused as C{TK_PROTO_UNSUPPORTED} (by the agent
        or, once asked, by the edge), not as a malformed message.
        """
        definition = TunnelDefinition(
            name="web", proto="http", addr=UpstreamAddress("http", "localhost", 80)
        )

        try:
            outcome = "sent " + Tunnel(definition).bind_request().proto
        except TunnelkitError as error:
            outcome = error.code

        self.assertIn(outcome, ("TK_PROTO_UNSUPPORTED", "sent http"))

    def test_labeled_bound_by_labels(self) -> None:
        """
        A labeled tunnel is offered with C{bind_labels}, its labels as
        C{name=value} strings in the order written, and its local address
        and metadata for display.
        """
        definition = TunnelDefinition(
            name="edge",
            proto=None,
            addr=UpstreamAddress("http", "localhost", 80),
            labels=(("edge", "web"), ("env", "prod")),
            metadata="rack 4",
        )

        request = Tunnel(definition).bind_request()

        self.assertEqual(
            request,
            BindLabels(
                id="edge",
                name="edge",
                labels=("edge=web", "env=prod"),
                forwards_to="http://localhost:80",
                metadata="rack 4",
            ),
        )


def parsed(options: Any, argv: list[str]) -> Any:
    """
    @return: C{options} after parsing C{argv}.
    """
    options.parseOptions(argv)
    return options


class SelectTunnelsTests(SynchronousTestCase):
    """
    L{select_tunnels}: the tunnels C{tcp} and C{start} run.
    """

    config = AgentConfig(
        paths=("/etc/tunnelkit/a.yml", "/home/u/b.yml"),
        tunnels={"ssh": SSH, "db": DB},
    )

    def test_tcp(self) -> None:
        """
        C{tcp PORT} is one tunnel named C{command_line} to localhost.
        """
        options = parsed(TcpOptions(), ["22"])

        tunnels = select_tunnels("tcp", options, self.config)

        self.assertEqual(
            tunnels,
            [
                TunnelDefinition(
                    name="command_line",
                    proto="tcp",
                    addr=UpstreamAddress("tcp", "localhost", 22),
                )
            ],
        )

    def test_tcp_host_remote_addr_metadata(self) -> None:
        """
        C{tcp HOST:PORT --remote-addr --metadata} carries all three.
        """
        options = parsed(
            TcpOptions(),
            [
                "--remote-addr",
                "tunnels.example.com:5000",
                "--metadata",
                "m",
                "10.0.0.5:5432",
            ],
        )

        [tunnel] = select_tunnels("tcp", options, self.config)

        self.assertEqual(tunnel.addr, UpstreamAddress("tcp", "10.0.0.5", 5432))
        self.assertEqual(tunnel.remote_addr, HostPort("tunnels.example.com", 5000))
        self.assertEqual(tunnel.metadata, "m")

    def test_tcp_bad_address(self) -> None:
        """
        An address that is not a port or C{host:port} is a usage error
        (exit status 2).
        """
        options = parsed(TcpOptions(), ["nowhere"])

        failure = self.assertRaises(
            CommandFailed, select_tunnels, "tcp", options, self.config
        )

        self.assertEqual(failure.code, 2)
        self.assertTrue(failure.message.startswith("ERROR: "))

    def test_tcp_url(self) -> None:
        """
        An HTTP URL is not a TCP address.
        """
        options = parsed(TcpOptions(), ["http://localhost:80"])

        failure = self.assertRaises(
            CommandFailed, select_tunnels, "tcp", options, self.config
        )

        self.assertEqual(failure.code, 2)
        self.assertIn("is not a TCP address", failure.message)

    def test_bad_remote_addr(self) -> None:
        """
        A C{--remote-addr} without a port is a usage error.
        """
        options = parsed(TcpOptions(), ["--remote-addr", "tunnels.example.com", "22"])

        failure = self.assertRaises(
            CommandFailed, select_tunnels, "tcp", options, self.config
        )

        self.assertEqual(failure.code, 2)

    def test_names(self) -> None:
        """
        C{start NAME...} gives the named tunnels in the order named.
        """
        options = parsed(StartOptions(), ["db", "ssh"])

        tunnels = select_tunnels("start", options, self.config)

        self.assertEqual(tunnels, [DB, SSH])

    def test_all(self) -> None:
        """
        C{start --all} gives every tunnel of the config.
        """
        options = parsed(StartOptions(), ["--all"])

        tunnels = select_tunnels("start", options, self.config)

        self.assertEqual(tunnels, [SSH, DB])

    def test_all_without_tunnels(self) -> None:
        """
        C{start --all} with no tunnel defined fails with ngrok's sentence,
        after C{TK_NO_TUNNELS_DEFINED}.
        """
        options = parsed(StartOptions(), ["--all"])

        failure = self.assertRaises(
            CommandFailed, select_tunnels, "start", options, AgentConfig()
        )

        self.assertEqual(
            failure.message,
            "ERROR: TK_NO_TUNNELS_DEFINED: Your configuration file must define"
            " at least one tunnel when using --all. To intentionally start no"
            " tunnels, use `tunnelkit start --none.`\n",
        )
        self.assertEqual(failure.code, 1)

    def test_unknown_name(self) -> None:
        """
        An unknown name fails with three lines: the name (with
        C{TK_TUNNEL_UNDEFINED}), the tunnels available and the config files
        read.
        """
        options = parsed(StartOptions(), ["ssh", "web"])

        failure = self.assertRaises(
            CommandFailed, select_tunnels, "start", options, self.config
        )

        self.assertEqual(
            failure.message,
            "ERROR: TK_TUNNEL_UNDEFINED: Tunnel 'web' is not defined in the"
            " config files.\n"
            "ERROR: Tunnels available: ssh, db\n"
            "ERROR: Config files read: [/etc/tunnelkit/a.yml, /home/u/b.yml]\n",
        )
        self.assertEqual(failure.code, 1)

    def test_unknown_name_nothing_defined(self) -> None:
        """
        With no tunnels and no files read, both lists say C{(none)}.
        """
        options = parsed(StartOptions(), ["web"])

        failure = self.assertRaises(
            CommandFailed, select_tunnels, "start", options, AgentConfig()
        )

        self.assertIn("ERROR: Tunnels available: (none)\n", failure.message)
        self.assertIn("ERROR: Config files read: [(none)]\n", failure.message)

    def test_none(self) -> None:
        """
        C{start --none} starts no tunnel.
        """
        options = parsed(StartOptions(), ["--none"])

        tunnels = select_tunnels("start", options, self.config)

        self.assertEqual(tunnels, [])
