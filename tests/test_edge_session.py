"""
Tests for L{tunnelkit.edge.session} and L{tunnelkit.edge.server}: agents
authenticating, binding and unbinding public TCP ports, and sessions that
end, wait out their grace period, or resume.

The edge runs on a L{MemoryReactorClock} that records the public listeners
instead of opening sockets. Most tests call the session's handlers
directly; L{WireTests} sends the same requests over the multiplexer.
"""

import errno
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import CannotListenError, ConnectionDone
from twisted.internet.interfaces import IListeningPort
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tunnelkit import __version__
from tunnelkit.config import AuthtokenGrant, EdgeConfig, HostPort, PortRange
from tunnelkit.config import token_digest
from tunnelkit.control.messages import (
    Auth,
    AuthResp,
    Bind,
    BindResp,
    ServerInfo,
    TcpOpts,
    Unbind,
    UnbindResp,
)
from tunnelkit.control.rpc import RemoteError, call
from tunnelkit.edge.ports import AffinityTokens, PortHold
from tunnelkit.edge.server import EdgeServer
from tunnelkit.edge.session import AUTH_TIMEOUT, PRE_AUTH_STREAMS, EdgeSession
from tunnelkit.errors import TunnelkitError
from tunnelkit.mux import MuxConfig, MuxProtocol, StreamRefused

PUBLIC_HOST = "tunnels.example.com"
ALICE_TOKEN = "alice-0123456789"
BOB_TOKEN = "bob-9876543210"
ALICE_RESERVED = f"{PUBLIC_HOST}:5000"
BOB_RESERVED = f"{PUBLIC_HOST}:5001"
SECRET = b"k" * 32
GRACE = 60.0
LOW, HIGH = 20000, 20009

GRANTS = (
    AuthtokenGrant(
        name="alice",
        reserved_addrs=(HostPort(PUBLIC_HOST, 5000),),
        token_digest=token_digest(ALICE_TOKEN),
    ),
    AuthtokenGrant(
        name="bob",
        reserved_addrs=(HostPort(PUBLIC_HOST, 5001),),
        token_digest=token_digest(BOB_TOKEN),
    ),
)


@implementer(IListeningPort)
class RecordedListener:
    """
    A public listener the edge opened on L{EdgeReactor}.

    @ivar stopped: whether C{stopListening} was called.
    """

    def __init__(self, address: IPv4Address) -> None:
        self.address = address
        self.stopped = False

    def startListening(self) -> None:
        """
        Already listening; nothing to do.
        """

    def stopListening(self) -> "Deferred[None]":
        """
        Record that the edge stopped listening.
        """
        self.stopped = True
        return succeed(None)

    def getHost(self) -> IPv4Address:
        """
        @return: the address listened on.
        """
        return self.address


class EdgeReactor(MemoryReactorClock):
    """
    A memory reactor whose C{listenTCP} returns L{RecordedListener}s and
    refuses the ports in L{refused}, as if another program held them.

    @ivar listeners: every listener opened, in order.
    @ivar refused: ports whose C{listenTCP} raises L{CannotListenError}.
    """

    def __init__(self) -> None:
        super().__init__()
        self.listeners: list[RecordedListener] = []
        self.refused: set[int] = set()

    def listenTCP(
        self, port: int, factory: Any, backlog: int = 50, interface: str = ""
    ) -> RecordedListener:
        if port in self.refused:
            raise CannotListenError(
                interface, port, OSError(errno.EADDRINUSE, "Address in use")
            )
        super().listenTCP(port, factory, backlog, interface)
        listener = RecordedListener(IPv4Address("TCP", interface, port))
        self.listeners.append(listener)
        return listener

    def listener(self, port: int) -> RecordedListener:
        """
        @return: the last listener opened on C{port}.
        """
        return [each for each in self.listeners if each.address.port == port][-1]


class SteppingRandom:
    """
    A stand-in for the port book's random source that draws the ports of
    the range in order, lowest first (or highest first), so tests know
    which free port a bind without preference gets.
    """

    def __init__(self, descending: bool = False) -> None:
        self._descending = descending
        self._draws = 0

    def randint(self, low: int, high: int) -> int:
        """
        @return: the next port in order, wrapping around the range.
        """
        step = self._draws % (high - low + 1)
        self._draws += 1
        return high - step if self._descending else low + step


def make_edge(
    reactor: EdgeReactor | None = None,
    descending: bool = False,
    **settings: Any,
) -> EdgeServer:
    """
    An edge that is not started, with the affinity secret set by hand.

    @param descending: whether ports without preference are given highest
        first rather than lowest first.
    @param settings: L{EdgeConfig} fields to change from this module's.
    """
    values: dict[str, Any] = dict(
        domain=PUBLIC_HOST,
        public_host=PUBLIC_HOST,
        tcp_port_range=PortRange(LOW, HIGH),
        tcp_bind_host="0.0.0.0",
        authtokens=GRANTS,
        session_grace=GRACE,
        state_dir="/nonexistent/tunnelkit-edge",
    )
    values.update(settings)
    edge = EdgeServer(EdgeConfig(**values), reactor or EdgeReactor())
    edge.tokens = AffinityTokens(SECRET)
    edge.ports.rng = SteppingRandom(descending)  # type: ignore[assignment]
    return edge


def connect(edge: EdgeServer) -> tuple[EdgeSession, StringTransport]:
    """
    A new agent connection to C{edge}, on a string transport.
    """
    session = EdgeSession(edge, edge.reactor)
    transport = StringTransport(peerAddress=IPv4Address("TCP", "198.51.100.7", 40000))
    session.mux.makeConnection(transport)
    return session, transport


def disconnect(session: EdgeSession) -> None:
    """
    Deliver the end of the agent's connection.
    """
    session.mux.connectionLost(Failure(ConnectionDone()))


def tcp_bind(binding_id: str = "ssh", remote_addr: str = "", token: str = "") -> Bind:
    """
    @return: a TCP bind request.
    """
    return Bind(
        id=binding_id,
        name=binding_id,
        proto="tcp",
        forwards_to="localhost:22",
        opts=TcpOpts(remote_addr=remote_addr),
        token=token,
    )


def port_of(url: str) -> int:
    """
    @return: the port of a C{tcp://host:port} URL.
    """
    return int(url.rpartition(":")[2])


class EdgeTestCase(SynchronousTestCase):
    """
    An edge on an L{EdgeReactor}, and agents that authenticate to it.
    """

    def setUp(self) -> None:
        self.edge = make_edge()
        self.reactor: EdgeReactor = self.edge.reactor

    def authed(
        self, token: str = ALICE_TOKEN, session_id: str = "", edge: Any = None
    ) -> tuple[EdgeSession, StringTransport, AuthResp]:
        """
        Connect and authenticate an agent.
        """
        session, transport = connect(edge or self.edge)
        reply = session.auth(Auth(authtoken=token, session_id=session_id))
        return session, transport, reply

    def refused(self, request: Any, handler: Any) -> TunnelkitError:
        """
        @return: the error C{handler} raises for C{request}.
        """
        return self.assertRaises(TunnelkitError, handler, request)


class FakeReactorTests(SynchronousTestCase):
    """
    The test doubles of this module provide what they stand in for.
    """

    def test_listener_interface(self) -> None:
        """
        L{RecordedListener} provides L{IListeningPort}.
        """
        listener = RecordedListener(IPv4Address("TCP", "0.0.0.0", 20000))

        self.assertTrue(verifyObject(IListeningPort, listener))


class AuthTests(EdgeTestCase):
    """
    The first request of a session: C{auth}.
    """

    def test_valid_token(self) -> None:
        """
        A configured authtoken starts a new session with a fresh id, and the
        reply carries the edge's version and domain.
        """
        session, _ = connect(self.edge)

        reply = session.auth(Auth(authtoken=ALICE_TOKEN, agent_version="0.1"))

        self.assertEqual(len(reply.session_id), 32)
        self.assertEqual(
            (reply.edge_version, reply.domain, reply.resumed),
            (__version__, PUBLIC_HOST, False),
        )
        self.assertEqual(session.session_id, reply.session_id)
        self.assertEqual(session.grant.name, "alice")  # type: ignore[union-attr]
        self.assertIs(self.edge.sessions[reply.session_id], session)

    def test_sessions_get_distinct_ids(self) -> None:
        """
        Two new sessions get different ids.
        """
        _, _, first = self.authed()

        _, _, second = self.authed()

        self.assertNotEqual(first.session_id, second.session_id)

    def test_wrong_token(self) -> None:
        """
        An unknown authtoken is refused with C{TK_AUTH_FAILED}, whose
        sentence shows only the token's first four characters.
        """
        session, _ = connect(self.edge)

        error = self.refused(Auth(authtoken="wrong-secret-value"), session.auth)

        self.assertEqual(error.code, "TK_AUTH_FAILED")
        self.assertIn("'wron'", error.message)
        self.assertNotIn("wrong-", error.message)
        self.assertIsNone(session.session_id)
        self.assertEqual(self.edge.sessions, {})

    def test_wrong_token_logged_by_prefix(self) -> None:
        """
        The warning about a refused token names only its prefix.
        """
        session, _ = connect(self.edge)

        with capturedLogs() as events:
            self.refused(Auth(authtoken="wrong-secret-value"), session.auth)

        texts = [formatEvent(event) for event in events]
        self.assertTrue(any("wron" in text for text in texts), texts)
        self.assertFalse(any("wrong-" in text for text in texts), texts)

    def test_missing_token(self) -> None:
        """
        No authtoken at all is refused with C{TK_AUTH_MISSING}, which says
        how to set one.
        """
        session, _ = connect(self.edge)

        error = self.refused(Auth(authtoken=""), session.auth)

        self.assertEqual(error.code, "TK_AUTH_MISSING")
        self.assertIn("add-authtoken", error.message)

    def test_anonymous(self) -> None:
        """
        With C{allow_anonymous}, an agent without a token is served under
        the name C{anonymous}.
        """
        edge = make_edge(allow_anonymous=True)

        session, _, reply = self.authed(token="", edge=edge)

        self.assertEqual(session.grant, AuthtokenGrant(name="anonymous"))
        self.assertIs(edge.sessions[reply.session_id], session)

    def test_double_auth(self) -> None:
        """
        A second C{auth} on an authenticated session is refused and leaves
        the session as it was.
        """
        session, _, reply = self.authed()

        error = self.refused(Auth(authtoken=ALICE_TOKEN), session.auth)

        self.assertEqual(error.code, "TK_ALREADY_AUTHENTICATED")
        self.assertEqual(session.session_id, reply.session_id)
        self.assertEqual(list(self.edge.sessions), [reply.session_id])

    def test_bind_before_auth(self) -> None:
        """
        C{bind} before C{auth} is refused with C{TK_NOT_AUTHENTICATED}, and
        nothing is listened on.
        """
        session, _ = connect(self.edge)

        error = self.refused(tcp_bind(), session.bind)

        self.assertEqual(error.code, "TK_NOT_AUTHENTICATED")
        self.assertEqual(self.reactor.tcpServers, [])

    def test_unbind_before_auth(self) -> None:
        """
        C{unbind} before C{auth} is refused with C{TK_NOT_AUTHENTICATED}.
        """
        session, _ = connect(self.edge)

        error = self.refused(Unbind(id="ssh"), session.unbind)

        self.assertEqual(error.code, "TK_NOT_AUTHENTICATED")

    def test_server_info_before_auth(self) -> None:
        """
        C{server_info} before C{auth} is refused with C{TK_NOT_AUTHENTICATED}.
        """
        session, _ = connect(self.edge)

        error = self.refused(ServerInfo(), session.server_info)

        self.assertEqual(error.code, "TK_NOT_AUTHENTICATED")

    def test_server_info(self) -> None:
        """
        C{server_info} describes the edge: version, domain and region.
        """
        session, _, _ = self.authed()

        reply = session.server_info(ServerInfo())

        self.assertEqual(
            (reply.edge_version, reply.domain, reply.region),
            (__version__, PUBLIC_HOST, "self-hosted"),
        )


class AuthTimeoutTests(EdgeTestCase):
    """
    A connection that does not authenticate in time is closed.
    """

    def test_closed_after_timeout(self) -> None:
        """
        Without C{auth} within C{AUTH_TIMEOUT} seconds the connection is
        closed.
        """
        _, transport = connect(self.edge)

        self.reactor.advance(AUTH_TIMEOUT)

        self.assertTrue(transport.disconnecting)

    def test_open_before_timeout(self) -> None:
        """
        The connection stays open until the timeout.
        """
        _, transport = connect(self.edge)

        self.reactor.advance(AUTH_TIMEOUT - 0.1)

        self.assertFalse(transport.disconnecting)

    def test_failed_auth_keeps_timer(self) -> None:
        """
        A refused C{auth} does not stop the timeout.
        """
        session, transport = connect(self.edge)
        self.refused(Auth(authtoken="wrong-secret-value"), session.auth)

        self.reactor.advance(AUTH_TIMEOUT)

        self.assertTrue(transport.disconnecting)

    def test_failed_auth_closes_connection(self) -> None:
        """
        After a refused C{auth} the connection is closed, so one connection
        cannot try token after token.
        """
        session, transport = connect(self.edge)
        self.refused(Auth(authtoken="wrong-secret-value"), session.auth)

        self.reactor.advance(0)

        self.assertTrue(transport.disconnecting)

    def test_auth_cancels_timeout(self) -> None:
        """
        An authenticated connection is not closed when the timeout would
        have run out.
        """
        _, transport, _ = self.authed()

        self.reactor.advance(AUTH_TIMEOUT)

        self.assertFalse(transport.disconnecting)

    def test_end_cancels_timeout(self) -> None:
        """
        A connection that ends before authenticating leaves no timer behind.
        """
        session, _ = connect(self.edge)

        disconnect(session)

        self.assertEqual(self.reactor.getDelayedCalls(), [])


class BindTests(EdgeTestCase):
    """
    C{bind} of TCP tunnels: a port of the range or a reserved address.
    """

    def test_random_port_in_range(self) -> None:
        """
        A bind without C{remote_addr} listens on a port of the range, on
        C{tcp_bind_host}, and answers with its C{tcp://} URL.
        """
        session, _, _ = self.authed()

        reply = session.bind(tcp_bind("ssh"))

        port = port_of(reply.url)
        self.assertTrue(LOW <= port <= HIGH, port)
        self.assertEqual(
            (reply.id, reply.proto, reply.url),
            ("ssh", "tcp", f"tcp://{PUBLIC_HOST}:{port}"),
        )
        [(listened, _, _, interface)] = self.reactor.tcpServers
        self.assertEqual((listened, interface), (port, "0.0.0.0"))

    def test_binding_recorded(self) -> None:
        """
        The bound port is held for the session's binding and served by the
        session.
        """
        session, _, auth = self.authed()

        port = port_of(session.bind(tcp_bind("ssh")).url)

        hold = self.edge.ports.holder(port)
        self.assertEqual(hold, PortHold(port, auth.session_id, "ssh"))
        self.assertIs(self.edge.tcp_bindings[port].session, session)
        self.assertIs(session.bindings["ssh"], self.edge.tcp_bindings[port])

    def test_reply_token_names_port(self) -> None:
        """
        The reply's affinity token names the bound port for this
        authtoken, session and binding.
        """
        session, _, auth = self.authed()

        reply = session.bind(tcp_bind("ssh"))

        tokens = AffinityTokens(SECRET)
        scope = f"{session.grant.name}\0{auth.session_id}"
        self.assertEqual(tokens.port_of(reply.token, scope, "ssh"), port_of(reply.url))
        self.assertIsNone(tokens.port_of(reply.token, auth.session_id, "ssh"))

    def test_two_bindings_two_ports(self) -> None:
        """
        Two bindings of one session get different ports.
        """
        session, _, _ = self.authed()

        first = session.bind(tcp_bind("ssh"))
        second = session.bind(tcp_bind("db"))

        self.assertNotEqual(port_of(first.url), port_of(second.url))

    def test_reserved_address(self) -> None:
        """
        A C{remote_addr} reserved for the session's token is bound on its
        port.
        """
        session, _, _ = self.authed()

        reply = session.bind(tcp_bind("ssh", remote_addr=ALICE_RESERVED))

        self.assertEqual(reply.url, f"tcp://{ALICE_RESERVED}")
        self.assertEqual([entry[0] for entry in self.reactor.tcpServers], [5000])

    def test_reserved_for_other_token(self) -> None:
        """
        An address reserved for another token is refused with
        C{TK_ADDR_NOT_RESERVED}, naming this token, and nothing is listened
        on.
        """
        session, _, _ = self.authed()

        error = self.refused(tcp_bind("ssh", remote_addr=BOB_RESERVED), session.bind)

        self.assertEqual(error.code, "TK_ADDR_NOT_RESERVED")
        self.assertIn("'alice'", error.message)
        self.assertEqual(self.reactor.tcpServers, [])

    def test_unreserved_address(self) -> None:
        """
        An address reserved for nobody is refused with
        C{TK_ADDR_NOT_RESERVED}.
        """
        session, _, _ = self.authed()

        error = self.refused(
            tcp_bind("ssh", remote_addr=f"{PUBLIC_HOST}:20003"), session.bind
        )

        self.assertEqual(error.code, "TK_ADDR_NOT_RESERVED")

    def test_reserved_held_by_other_session(self) -> None:
        """
        A reserved address bound by another session of the same token is
        refused with C{TK_ADDR_IN_USE}.
        """
        first, _, _ = self.authed()
        first.bind(tcp_bind("ssh", remote_addr=ALICE_RESERVED))
        second, _, _ = self.authed()

        error = self.refused(tcp_bind("ssh", remote_addr=ALICE_RESERVED), second.bind)

        self.assertEqual(error.code, "TK_ADDR_IN_USE")
        self.assertIs(self.edge.tcp_bindings[5000].session, first)

    def test_reserved_taken_over_after_restart(self) -> None:
        """
        An agent restarted with a new session takes over its authtoken's
        reserved address from the earlier session in its grace period.
        """
        first, _, _ = self.authed()
        first.bind(tcp_bind("ssh", remote_addr=ALICE_RESERVED))
        disconnect(first)
        second, _, _ = self.authed()

        reply = second.bind(tcp_bind("ssh", remote_addr=ALICE_RESERVED))

        self.assertEqual(reply.url, f"tcp://{ALICE_RESERVED}")
        self.assertIs(self.edge.tcp_bindings[5000].session, second)

    def test_reserved_cannot_listen(self) -> None:
        """
        A reserved address whose port cannot be listened on is refused with
        C{TK_ADDR_UNAVAILABLE}.
        """
        self.reactor.refused.add(5000)
        session, _, _ = self.authed()

        error = self.refused(tcp_bind("ssh", remote_addr=ALICE_RESERVED), session.bind)

        self.assertEqual(error.code, "TK_ADDR_UNAVAILABLE")
        self.assertEqual(self.edge.tcp_bindings, {})

    def test_other_proto(self) -> None:
        """
        An http bind on an edge without HTTP listeners, and a tls bind, are
        refused with C{TK_PROTO_UNSUPPORTED}.
        """
        session, _, _ = self.authed()

        for proto in ("http", "tls"):
            error = self.refused(Bind(id="web", name="web", proto=proto), session.bind)

            self.assertEqual(error.code, "TK_PROTO_UNSUPPORTED")
        self.assertIn("http", error.message)
        self.assertEqual(self.reactor.tcpServers, [])

    def test_missing_id(self) -> None:
        """
        A bind without an id is refused with C{TK_BAD_MESSAGE}.
        """
        session, _, _ = self.authed()

        error = self.refused(tcp_bind(""), session.bind)

        self.assertEqual(error.code, "TK_BAD_MESSAGE")

    def test_duplicate_id(self) -> None:
        """
        A second bind with an id the session already bound is refused with
        C{TK_BINDING_EXISTS}, and the first binding stays.
        """
        session, _, _ = self.authed()
        first = session.bind(tcp_bind("ssh"))

        error = self.refused(tcp_bind("ssh"), session.bind)

        self.assertEqual(error.code, "TK_BINDING_EXISTS")
        self.assertEqual(session.bindings["ssh"].url, first.url)
        self.assertEqual(len(self.reactor.tcpServers), 1)

    def test_port_in_use_skipped(self) -> None:
        """
        Ports that another program holds are skipped for a free one.
        """
        self.reactor.refused.update(range(LOW, HIGH))
        session, _, _ = self.authed()

        reply = session.bind(tcp_bind("ssh"))

        self.assertEqual(reply.url, f"tcp://{PUBLIC_HOST}:{HIGH}")

    def test_range_exhausted_by_other_programs(self) -> None:
        """
        When no port of the range can be listened on, the bind is refused
        with C{TK_PORT_RANGE_EXHAUSTED}, naming the range.
        """
        self.reactor.refused.update(range(LOW, HIGH + 1))
        session, _, _ = self.authed()

        error = self.refused(tcp_bind("ssh"), session.bind)

        self.assertEqual(error.code, "TK_PORT_RANGE_EXHAUSTED")
        self.assertIn(f"{LOW}-{HIGH}", error.message)
        self.assertEqual(self.edge.tcp_bindings, {})

    def test_range_exhausted_by_holds(self) -> None:
        """
        A range of one port already held by another session is exhausted.
        """
        self.edge = make_edge(self.reactor, tcp_port_range=PortRange(LOW, LOW))
        first, _, _ = self.authed()
        first.bind(tcp_bind("ssh"))
        second, _, _ = self.authed()

        error = self.refused(tcp_bind("ssh"), second.bind)

        self.assertEqual(error.code, "TK_PORT_RANGE_EXHAUSTED")

    def test_malformed_token_ignored(self) -> None:
        """
        A bind whose affinity token is malformed gets a port of the range,
        as if it had no token.
        """
        session, _, _ = self.authed()

        reply = session.bind(tcp_bind("ssh", token="\u00b2\u00b9.abcdef"))

        self.assertTrue(LOW <= port_of(reply.url) <= HIGH)

    def test_range_port_reserved_for_other_token(self) -> None:
        """
        A port of the range that is reserved for another token is not
        handed out as a random port.
        """
        grants = (
            AuthtokenGrant(
                name="alice",
                reserved_addrs=(HostPort(PUBLIC_HOST, LOW),),
                token_digest=token_digest(ALICE_TOKEN),
            ),
            AuthtokenGrant(name="bob", token_digest=token_digest(BOB_TOKEN)),
        )
        self.edge = make_edge(
            self.reactor, tcp_port_range=PortRange(LOW, LOW), authtokens=grants
        )
        bob, _, _ = self.authed(BOB_TOKEN)

        outcome: list[str] = []
        try:
            outcome.append(bob.bind(tcp_bind("ssh")).url)
        except TunnelkitError as error:
            outcome.append(error.code)

        self.assertNotIn(f"tcp://{PUBLIC_HOST}:{LOW}", outcome)


class UnbindTests(EdgeTestCase):
    """
    C{unbind}: a binding's port is closed and freed at once.
    """

    def test_unbind(self) -> None:
        """
        Unbinding stops the listener and frees the port.
        """
        session, _, _ = self.authed()
        port = port_of(session.bind(tcp_bind("ssh")).url)

        reply = session.unbind(Unbind(id="ssh"))

        self.assertEqual(reply, UnbindResp())
        self.assertTrue(self.reactor.listener(port).stopped)
        self.assertTrue(self.edge.ports.is_free(port))
        self.assertEqual((session.bindings, self.edge.tcp_bindings), ({}, {}))

    def test_unknown(self) -> None:
        """
        Unbinding an id the session never bound is refused with
        C{TK_BINDING_UNKNOWN}.
        """
        session, _, _ = self.authed()

        error = self.refused(Unbind(id="nope"), session.unbind)

        self.assertEqual(error.code, "TK_BINDING_UNKNOWN")

    def test_other_sessions_binding(self) -> None:
        """
        A session cannot unbind another session's binding.
        """
        first, _, _ = self.authed()
        port = port_of(first.bind(tcp_bind("ssh")).url)
        second, _, _ = self.authed()

        error = self.refused(Unbind(id="ssh"), second.unbind)

        self.assertEqual(error.code, "TK_BINDING_UNKNOWN")
        self.assertFalse(self.reactor.listener(port).stopped)

    def test_bind_again(self) -> None:
        """
        After unbinding, the id can be bound again.
        """
        session, _, _ = self.authed()
        session.bind(tcp_bind("ssh"))
        session.unbind(Unbind(id="ssh"))

        reply = session.bind(tcp_bind("ssh"))

        self.assertEqual(reply.id, "ssh")
        self.assertEqual(len(self.edge.tcp_bindings), 1)


class GraceTests(EdgeTestCase):
    """
    A session that ends keeps its ports for C{session_grace} seconds.
    """

    def bound_then_ended(self) -> tuple[str, int]:
        """
        Authenticate, bind C{ssh}, and end the connection.

        @return: the session id and the bound port.
        """
        session, _, auth = self.authed()
        port = port_of(session.bind(tcp_bind("ssh")).url)
        disconnect(session)
        return auth.session_id, port

    def test_ports_kept(self) -> None:
        """
        After the session ends its port stays held, its listener stays
        open, and the binding has no session (connections to it are
        refused).
        """
        session_id, port = self.bound_then_ended()

        self.assertNotIn(session_id, self.edge.sessions)
        self.assertEqual(self.edge.ports.holder(port).expires, GRACE)  # type: ignore
        self.assertFalse(self.reactor.listener(port).stopped)
        self.assertIsNone(self.edge.tcp_bindings[port].session)

    def test_resumed_same_port(self) -> None:
        """
        A session resumed with the same id within the grace period gets the
        same port back, without listening again.
        """
        session_id, port = self.bound_then_ended()
        self.reactor.advance(GRACE / 2)

        session, _, auth = self.authed(session_id=session_id)
        reply = session.bind(tcp_bind("ssh"))

        self.assertEqual((auth.session_id, auth.resumed), (session_id, True))
        self.assertEqual(port_of(reply.url), port)
        self.assertEqual(len(self.reactor.tcpServers), 1)
        self.assertIs(self.edge.tcp_bindings[port].session, session)

    def test_released_after_grace(self) -> None:
        """
        When the grace period ends the port's listener is stopped and the
        port is free.
        """
        _, port = self.bound_then_ended()

        self.reactor.advance(GRACE)

        self.assertTrue(self.reactor.listener(port).stopped)
        self.assertTrue(self.edge.ports.is_free(port))
        self.assertEqual(self.edge.tcp_bindings, {})

    def test_kept_until_grace_ends(self) -> None:
        """
        Just before the grace period ends the listener is still open.
        """
        _, port = self.bound_then_ended()

        self.reactor.advance(GRACE - 0.1)

        self.assertFalse(self.reactor.listener(port).stopped)

    def test_rebound_port_survives_grace(self) -> None:
        """
        A port bound again by the resumed session is not released when the
        old grace period would have ended.
        """
        session_id, port = self.bound_then_ended()
        session, _, _ = self.authed(session_id=session_id)
        session.bind(tcp_bind("ssh"))

        self.reactor.advance(GRACE * 2)

        self.assertFalse(self.reactor.listener(port).stopped)
        self.assertIs(self.edge.tcp_bindings[port].session, session)

    def test_not_rebound_released(self) -> None:
        """
        A binding the resumed session does not bind again is released when
        the grace period ends.
        """
        session, _, auth = self.authed()
        ssh = port_of(session.bind(tcp_bind("ssh")).url)
        db = port_of(session.bind(tcp_bind("db")).url)
        disconnect(session)
        resumed, _, _ = self.authed(session_id=auth.session_id)
        resumed.bind(tcp_bind("ssh"))

        self.reactor.advance(GRACE)

        self.assertTrue(self.reactor.listener(db).stopped)
        self.assertFalse(self.reactor.listener(ssh).stopped)

    def test_unknown_session_id(self) -> None:
        """
        Asking to resume an id the edge does not know keeps that id but is
        not reported as resumed.
        """
        _, _, auth = self.authed(session_id="f" * 32)

        self.assertEqual((auth.session_id, auth.resumed), ("f" * 32, False))


class RestartTests(EdgeTestCase):
    """
    A restarted edge (same secret, nothing remembered) honours the
    affinity tokens of bindings made before.

    The earlier edge gives the lowest port of the range, the restarted one
    would give the highest to a bind without a token.
    """

    def setUp(self) -> None:
        super().setUp()
        self.edge = make_edge(self.reactor, descending=True)

    def earlier_binding(self) -> tuple[str, BindResp]:
        """
        Bind C{ssh} on an earlier edge with the same secret.

        @return: the earlier session id and bind reply.
        """
        earlier = make_edge()
        session, _, auth = self.authed(edge=earlier)
        return auth.session_id, session.bind(tcp_bind("ssh"))

    def test_same_port_when_free(self) -> None:
        """
        The token of an earlier edge's binding gets the same port back.
        """
        session_id, earlier = self.earlier_binding()
        session, _, _ = self.authed(session_id=session_id)

        reply = session.bind(tcp_bind("ssh", token=earlier.token))

        self.assertEqual(reply.url, f"tcp://{PUBLIC_HOST}:{LOW}")
        self.assertEqual(reply.url, earlier.url)

    def test_other_port_when_taken(self) -> None:
        """
        When another session holds the token's port, another port of the
        range is given.
        """
        session_id, earlier = self.earlier_binding()
        self.edge.ports.hold(LOW, "someone-else", "web")
        session, _, _ = self.authed(session_id=session_id)

        reply = session.bind(tcp_bind("ssh", token=earlier.token))

        self.assertEqual(reply.url, f"tcp://{PUBLIC_HOST}:{HIGH}")

    def test_token_of_other_session(self) -> None:
        """
        A token presented by a session with another id names no port.
        """
        _, earlier = self.earlier_binding()
        session, _, _ = self.authed()

        reply = session.bind(tcp_bind("ssh", token=earlier.token))

        self.assertEqual(reply.url, f"tcp://{PUBLIC_HOST}:{HIGH}")

    def test_token_of_other_binding(self) -> None:
        """
        A token presented for another binding id names no port.
        """
        session_id, earlier = self.earlier_binding()
        session, _, _ = self.authed(session_id=session_id)

        reply = session.bind(tcp_bind("db", token=earlier.token))

        self.assertEqual(reply.url, f"tcp://{PUBLIC_HOST}:{HIGH}")

    def test_token_outside_range(self) -> None:
        """
        A token naming a port outside the edge's range is ignored.
        """
        session_id, earlier = self.earlier_binding()
        self.edge = make_edge(self.reactor, tcp_port_range=PortRange(30000, 30009))
        session, _, _ = self.authed(session_id=session_id)

        reply = session.bind(tcp_bind("ssh", token=earlier.token))

        self.assertEqual(reply.url, f"tcp://{PUBLIC_HOST}:30000")


class ResumeLiveTests(EdgeTestCase):
    """
    Resuming a session whose old connection is still open.
    """

    def test_old_connection_closed(self) -> None:
        """
        The new connection replaces the old one, which is closed.
        """
        old, old_transport, auth = self.authed()

        new, _, reply = self.authed(session_id=auth.session_id)

        self.assertTrue(old_transport.disconnecting)
        self.assertTrue(reply.resumed)
        self.assertIs(self.edge.sessions[auth.session_id], new)
        self.assertIsNone(old.session_id)

    def test_same_port(self) -> None:
        """
        The new connection gets the old connection's port.
        """
        old, _, auth = self.authed()
        port = port_of(old.bind(tcp_bind("ssh")).url)
        new, _, _ = self.authed(session_id=auth.session_id)

        reply = new.bind(tcp_bind("ssh"))

        self.assertEqual(port_of(reply.url), port)
        self.assertIs(self.edge.tcp_bindings[port].session, new)

    def test_old_end_ignored(self) -> None:
        """
        When the replaced connection finally ends, the new session and its
        ports are untouched.
        """
        old, _, auth = self.authed()
        port = port_of(old.bind(tcp_bind("ssh")).url)
        new, _, _ = self.authed(session_id=auth.session_id)
        new.bind(tcp_bind("ssh"))

        disconnect(old)

        self.assertIs(self.edge.sessions[auth.session_id], new)
        self.assertIsNone(self.edge.ports.holder(port).expires)  # type: ignore

    def test_other_token_cannot_take_live_session(self) -> None:
        """
        An agent with another authtoken that presents a live session's id
        does not close that session's connection.
        """
        alice, alice_transport, auth = self.authed()
        bob, _ = connect(self.edge)

        try:
            bob.auth(Auth(authtoken=BOB_TOKEN, session_id=auth.session_id))
        except TunnelkitError:
            pass

        self.assertFalse(alice_transport.disconnecting)
        self.assertIs(self.edge.sessions[auth.session_id], alice)

    def test_other_token_cannot_take_reserved_port(self) -> None:
        """
        An agent with another authtoken that resumes a dropped session's id
        does not get the address reserved for the first token.
        """
        alice, _, auth = self.authed()
        alice.bind(tcp_bind("ssh", remote_addr=ALICE_RESERVED))
        disconnect(alice)
        bob, _ = connect(self.edge)

        outcome: list[str] = []
        try:
            bob.auth(Auth(authtoken=BOB_TOKEN, session_id=auth.session_id))
            outcome.append(bob.bind(tcp_bind("ssh")).url)
        except TunnelkitError as error:
            outcome.append(error.code)

        self.assertNotIn(f"tcp://{ALICE_RESERVED}", outcome)


class WireTests(SynchronousTestCase):
    """
    The session's requests over the multiplexer, from an agent-side
    L{MuxProtocol} with L{call}.
    """

    def setUp(self) -> None:
        self.edge = make_edge()
        self.reactor: EdgeReactor = self.edge.reactor
        self.session = EdgeSession(self.edge, self.reactor)
        self.agent = MuxProtocol(True, self.reactor, None, MuxConfig())
        self.pump = iosim.connect(
            self.session.mux,
            iosim.makeFakeServer(self.session.mux),
            self.agent,
            iosim.makeFakeClient(self.agent),
            greet=True,
            clock=self.reactor,
        )

    def request(self, message: Any) -> Any:
        """
        Send one request and move bytes until it is answered.

        @return: the reply, or the L{Failure} of the call.
        """
        results: list[Any] = []
        call(self.agent.open_stream, message, 10.0, self.reactor).addBoth(
            results.append
        )
        self.pump.flush()
        [result] = results
        return result

    def test_streams_before_auth_limited(self) -> None:
        """
        Before authenticating, a connection may open only a couple of
        streams; the next is refused.
        """
        outcomes: list[Any] = []

        for _ in range(PRE_AUTH_STREAMS + 1):
            self.agent.open_stream(Protocol()).addBoth(outcomes.append)
        self.pump.flush()

        self.assertIsInstance(outcomes[-1], Failure)
        self.assertIsInstance(outcomes[-1].value, StreamRefused)
        self.assertFalse(any(isinstance(o, Failure) for o in outcomes[:-1]))

    def test_auth_and_bind(self) -> None:
        """
        An agent authenticates and binds over its streams.
        """
        auth = self.request(Auth(authtoken=ALICE_TOKEN))

        reply = self.request(tcp_bind("ssh"))

        self.assertIsInstance(auth, AuthResp)
        self.assertEqual(reply.url, self.session.bindings["ssh"].url)
        self.assertIs(self.edge.sessions[auth.session_id], self.session)

    def test_error_reply(self) -> None:
        """
        A refused request reaches the agent as a L{RemoteError} with the
        edge's code.
        """
        failure = self.request(Auth(authtoken="wrong-secret-value"))

        self.assertIsInstance(failure.value, RemoteError)
        self.assertEqual(failure.value.code, "TK_AUTH_FAILED")

    def test_unbind(self) -> None:
        """
        C{unbind} over the wire answers with an empty reply and frees the
        port.
        """
        self.request(Auth(authtoken=ALICE_TOKEN))
        port = port_of(self.request(tcp_bind("ssh")).url)

        reply = self.request(Unbind(id="ssh"))

        self.assertEqual(reply, UnbindResp())
        self.assertTrue(self.edge.ports.is_free(port))

    def test_auth_timeout_closes(self) -> None:
        """
        An agent that never authenticates sees its connection closed after
        the timeout.
        """
        closed: list[Any] = []
        self.agent.when_closed().addCallback(closed.append)

        self.reactor.advance(AUTH_TIMEOUT)
        self.pump.flush()

        self.assertEqual(len(closed), 1)

    def test_connection_end_starts_grace(self) -> None:
        """
        When the agent's connection ends, its session is gone and its port
        is kept for the grace period.
        """
        auth = self.request(Auth(authtoken=ALICE_TOKEN))
        port = port_of(self.request(tcp_bind("ssh")).url)

        self.agent.transport.loseConnection()  # type: ignore[union-attr]
        self.pump.flush()

        self.assertNotIn(auth.session_id, self.edge.sessions)
        self.assertEqual(self.edge.ports.holder(port).expires, GRACE)  # type: ignore
