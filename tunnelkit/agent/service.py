"""
The agent as a service: keep a session to the edge, reconnect with capped
exponential backoff and jitter when it drops, and bind the same tunnels
again each time.
"""

import random
from typing import TYPE_CHECKING, Any, Callable, Sequence

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, TimeoutError, succeed
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from tunnelkit.agent.metrics import TunnelMetrics
from tunnelkit.agent.session import AgentSession
from tunnelkit.agent.tunnel import Tunnel
from tunnelkit.config import AgentConfig, HostPort, TunnelDefinition
from tunnelkit.control.messages import Unbind
from tunnelkit.errors import TunnelkitError
from tunnelkit.mux import MuxConfig
from tunnelkit.tlsoptions import client_tls_options, describe_tls_failure
from tunnelkit.tlstransport import wrap_client_tls

if TYPE_CHECKING:
    from tunnelkit.agent.inspection import Inspection

_log = Logger()

FATAL_CODES = frozenset(
    {
        "TK_AUTH_FAILED",
        "TK_AUTH_MISSING",
        "TK_EDGE_CERT_UNTRUSTED",
        "TK_EDGE_CERT_NAME_MISMATCH",
        "TK_PROTOCOL_VERSION",
    }
)
"""Errors that retrying cannot fix: the agent stops and says why."""

RECONNECT_INITIAL_DELAY = 0.5
"""Seconds before the first reconnect attempt; each failure doubles it."""

RECONNECT_MAX_DELAY = 30.0
"""The cap on the wait between attempts, before jitter."""

RECONNECT_JITTER = 0.5
"""Up to this many seconds are added at random to each wait."""

STABLE_SESSION = 30.0
"""Seconds a session must last for the reconnect wait to start over; an edge
that drops sessions sooner is backed off from like one that refuses them."""

STOP_TIMEOUT = 5.0
"""Seconds a stopping agent waits for the edge to close the session before
it drops the connection."""


class _SessionFactory(Factory):
    """
    Builds an L{AgentSession} for each connection and hands out its
    multiplexer as the connection's protocol.
    """

    noisy = False

    def __init__(self, agent: "AgentService") -> None:
        self.agent = agent

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        session = AgentSession(self.agent, self.agent.reactor, self.agent.mux_config())
        self.agent.session = session
        return session.mux


class AgentService(Service):
    """
    The agent: its tunnels and its session to the edge.

    The connection loop is explicit: connect, authenticate and bind; when
    that fails, or an established session drops, wait and connect again.
    The wait doubles from L{RECONNECT_INITIAL_DELAY} up to
    L{RECONNECT_MAX_DELAY}, plus up to half a second of jitter, and starts
    over once a session has lasted L{STABLE_SESSION}. Errors in
    L{FATAL_CODES} stop the agent instead.

    @ivar tunnels: the tunnels by name.
    @ivar inspection: how HTTP exchanges are captured, or C{None} when
        inspection is off for the whole agent.
    @ivar metrics: the connections and HTTP exchanges of all its tunnels;
        each tunnel's own metrics feed these.
    @ivar session: the current connection's session, if any.
    @ivar session_id: the edge's id for this agent, kept across reconnects.
    @ivar ready: fires with the tunnels once the first session has bound
        them, or fails with the L{TunnelkitError} that stopped the agent.
    @ivar stopped: fires with C{None} when the agent stopped itself (the
        edge asked it to), or with the fatal error that stopped it.
    """

    def __init__(
        self,
        config: AgentConfig,
        tunnels: Sequence[TunnelDefinition],
        reactor: Any,
        edge: HostPort,
        root_cas: str | None,
        authtoken: str = "",
        rng: Callable[[], float] = random.random,
        inspection: "Inspection | None" = None,
    ) -> None:
        self.config = config
        self.inspection = inspection
        self.reactor = reactor
        self.edge = edge
        self.root_cas = root_cas
        self.authtoken = authtoken
        self.metrics = TunnelMetrics(reactor)
        self.tunnels = {d.name: self.make_tunnel(d) for d in tunnels}
        self.session: AgentSession | None = None
        self.session_id = ""
        self.ready: Deferred = Deferred()
        self.stopped: Deferred = Deferred()
        self._rng = rng
        self._endpoint: Any = None
        self._attempts = 0
        self._established_at = 0.0
        self._connecting: Deferred | None = None
        self._retry_call: Any = None
        self._adding: set[str] = set()

    @property
    def status(self) -> str:
        """
        The session's state, in ngrok's words: C{online} once the edge has
        accepted a session, C{reconnecting} after a session or an attempt
        failed, else C{connecting}.
        """
        if self.session is not None and self.session.auth is not None:
            return "online"
        if self.session_id or self._attempts:
            return "reconnecting"
        return "connecting"

    def make_tunnel(self, definition: TunnelDefinition) -> Tunnel:
        """
        @return: a tunnel of this agent, its metrics timed by the agent's
            reactor and feeding L{metrics}.
        """
        return Tunnel(definition, metrics=TunnelMetrics(self.reactor, self.metrics))

    # Tunnels at run time

    async def add_tunnel(self, definition: TunnelDefinition) -> Tunnel:
        """
        Start one more tunnel in the current session; later sessions bind
        it again like the others.

        @return: the tunnel, bound.
        @raise TunnelkitError: C{TK_TUNNEL_EXISTS} when a tunnel has that
            name; C{TK_SESSION_NOT_READY} when there is no session with the
            edge now; the edge's refusal (or the agent's own error for a
            tunnel it cannot bind) when binding fails.
        """
        if definition.name in self.tunnels or definition.name in self._adding:
            raise TunnelkitError(
                "TK_TUNNEL_EXISTS",
                f'tunnel "{definition.name}" already exists; choose another'
                " name, or stop that tunnel first.",
            )
        session = self.session
        if session is None or session.auth is None:
            raise TunnelkitError(
                "TK_SESSION_NOT_READY",
                "The agent has no session with its edge yet, so it cannot"
                " start tunnels; try again once it is online.",
            )
        tunnel = self.make_tunnel(definition)
        self._adding.add(definition.name)
        try:
            error = await session.bind(tunnel)
        finally:
            self._adding.discard(definition.name)
        if error is not None:
            raise error
        if self.session is not session:
            raise TunnelkitError(
                "TK_SESSION_NOT_READY",
                "The session with the edge ended while the tunnel was being"
                " started; try again once the agent is online.",
            )
        self.tunnels[definition.name] = tunnel
        self._log_started(tunnel)
        return tunnel

    async def remove_tunnel(self, name: str) -> Tunnel:
        """
        Stop one tunnel: forget it, and remove its binding from the edge if
        there is a session.

        @return: the tunnel stopped.
        @raise KeyError: when no tunnel has that name.
        """
        tunnel = self.tunnels.pop(name)
        urls = tunnel.named_urls()
        tunnel.public_url = None
        session = self.session
        if session is not None and session.auth is not None:
            try:
                await session.request(Unbind(id=tunnel.name))
            except TunnelkitError as error:
                _log.warn(
                    "the edge did not remove tunnel {name}: {error}",
                    name=name,
                    error=str(error),
                    obj="tunnels",
                )
        for url_name, url in urls:
            _log.info("stopped tunnel", obj="tunnels", name=url_name, url=url)
        return tunnel

    def _log_started(self, tunnel: Tunnel) -> None:
        if tunnel.labels:
            _log.info(
                "started tunnel",
                obj="tunnels",
                name=tunnel.name,
                addr=self._display_addr(tunnel),
                url="",
                labels=tunnel.labels,
            )
        for name, url in tunnel.named_urls():
            _log.info(
                "started tunnel",
                obj="tunnels",
                name=name,
                addr=self._display_addr(tunnel),
                url=url,
            )

    def retry_delay(self, attempt: int) -> float:
        """
        @param attempt: how many attempts in a row have failed, from 1.
        @return: seconds to wait before the next attempt.
        """
        exponent = min(attempt - 1, 16)
        delay = min(RECONNECT_INITIAL_DELAY * 2**exponent, RECONNECT_MAX_DELAY)
        return delay + self._rng() * RECONNECT_JITTER

    def mux_config(self) -> MuxConfig:
        """
        @return: the multiplexer limits, with the configured heartbeat.
        """
        return MuxConfig(
            keepalive_interval=self.config.heartbeat_interval,
            keepalive_timeout=self.config.heartbeat_tolerance,
        )

    # Service life

    def startService(self) -> None:
        super().startService()
        tls = client_tls_options(self.edge.host, self.root_cas)
        self._endpoint = wrap_client_tls(
            tls,
            HostnameEndpoint(
                self.reactor,
                self.edge.host,
                self.edge.port,
                timeout=self.config.connect_timeout,
            ),
        )
        self._connect()

    def stopService(self) -> Deferred:
        super().stopService()
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        self._retry_call = None
        connecting, self._connecting = self._connecting, None
        if connecting is not None:
            connecting.cancel()
        session, self.session = self.session, None
        if session is None or session.mux.transport is None:
            return succeed(None)
        mux = session.mux
        closed = mux.when_closed()
        mux.close()

        def too_slow(failure: Failure) -> None:
            failure.trap(TimeoutError)
            if mux.transport is not None:
                mux.transport.abortConnection()

        closed.addTimeout(STOP_TIMEOUT, self.reactor)
        return closed.addCallbacks(lambda _: None, too_slow)

    # The connection loop

    def _connect(self) -> None:
        self._retry_call = None
        if not self.running:
            return
        _log.info("connecting to edge {edge}", edge=str(self.edge), obj="csess")
        self._connecting = self._endpoint.connect(_SessionFactory(self))
        self._connecting.addCallbacks(self._connected, self._not_connected)

    def _connected(self, protocol: Any) -> None:
        self._connecting = None
        session = self.session
        assert session is not None
        establishing = session.establish(self.authtoken, self.session_id)
        establishing.addCallbacks(
            self._established,
            self._not_established,
            callbackArgs=(session,),
            errbackArgs=(session,),
        )

    def _not_connected(self, failure: Failure) -> None:
        self._connecting = None
        if failure.check(CancelledError):
            return
        self._retry(failure.getErrorMessage())

    def _retry(self, why: str) -> None:
        if not self.running:
            return
        self._attempts += 1
        delay = self.retry_delay(self._attempts)
        _log.warn(
            "no session with the edge at {edge} ({why}); reconnecting in"
            " {delay:.1f}s (attempt {attempt})",
            edge=str(self.edge),
            why=why.rstrip("."),
            delay=delay,
            attempt=self._attempts + 1,
            obj="csess",
        )
        self._retry_call = self.reactor.callLater(delay, self._connect)

    def _established(self, results: list[Any], session: AgentSession) -> None:
        auth = session.auth
        assert auth is not None
        self._established_at = self.reactor.seconds()
        self.session_id = auth.session_id
        _log.info("client session established", obj="csess", id=auth.session_id)
        _log.info("tunnel session started", obj="tunnels.session")
        session.mux.when_closed().addCallback(self._session_closed, session)
        failures = []
        for tunnel, error in results:
            if error is None:
                self._log_started(tunnel)
            else:
                _log.error(
                    "failed to start tunnel {name}: {error}",
                    obj="tunnels",
                    name=tunnel.name,
                    error=str(error),
                )
                failures.append(error)
        if not self.ready.called:
            if failures:
                self._fatal(failures[0])
                return
            self.ready.callback(list(self.tunnels.values()))

    @staticmethod
    def _display_addr(tunnel: Tunnel) -> str:
        if tunnel.proto == "tcp":
            return "//" + tunnel.forwards_to
        return tunnel.forwards_to

    def _not_established(self, failure: Failure, session: AgentSession) -> None:
        closed = session.mux.close_reason
        error = None
        if closed is not None:
            error = describe_tls_failure(closed, self.edge.host, self.root_cas)
        if error is None and isinstance(failure.value, TunnelkitError):
            error = failure.value
        if error is not None and error.code in FATAL_CODES:
            _log.error("{error}", error=str(error), obj="csess")
            if self.session is session:
                self.session = None
            session.mux.close()
            self._fatal(error)
            return
        if self.session is session:
            self.session = None
        transport = session.mux.transport
        if transport is not None and not session.mux.close_reason:
            transport.abortConnection()
        self._retry(str(error) if error is not None else failure.getErrorMessage())

    def _session_closed(self, reason: Any, session: AgentSession) -> None:
        for tunnel in self.tunnels.values():
            tunnel.public_url = None
        if not self.running or self.session is not session:
            return
        self.session = None
        if self.reactor.seconds() - self._established_at >= STABLE_SESSION:
            self._attempts = 0
        _log.warn(
            "session closed, starting reconnect loop",
            obj="csess",
            reason=str(reason),
        )
        self._retry(str(reason))

    def _fatal(self, error: TunnelkitError) -> None:
        if not self.ready.called:
            self.ready.errback(Failure(error))
        self.reactor.callLater(0, self._stop_for, error)

    def _stop_for(self, outcome: Any) -> None:
        stopping = self.stopService()
        if not self.stopped.called:
            stopping.addBoth(lambda _: self.stopped.callback(outcome))

    def stop_requested(self) -> None:
        """
        Stop because the edge asked to.
        """
        self._stop_for(None)
