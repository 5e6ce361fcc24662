"""
The agent as a service: keep a session to the edge, reconnect with capped
exponential backoff and jitter when it drops, and bind the same tunnels
again each time.
"""

import random
from typing import Any, Callable, Sequence

from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from tunnelkit.agent.session import AgentSession
from tunnelkit.agent.tunnel import Tunnel
from tunnelkit.config import AgentConfig, HostPort, TunnelDefinition
from tunnelkit.errors import TunnelkitError
from tunnelkit.mux import MuxConfig
from tunnelkit.tlsoptions import client_tls_options, describe_tls_failure

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
RECONNECT_MAX_DELAY = 30.0


class _SessionFactory(Factory):
    """
    Builds an L{AgentSession} for each connection and hands out its
    multiplexer as the connection's protocol.
    """

    noisy = False

    def __init__(self, agent: "AgentService") -> None:
        self.agent = agent

    def buildProtocol(self, addr: IAddress) -> Protocol:
        session = AgentSession(self.agent, self.agent.reactor, self.agent.mux_config())
        self.agent.session = session
        return session.mux


class AgentService(Service):
    """
    The agent: its tunnels and its session to the edge.

    @ivar tunnels: the tunnels by name.
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
    ) -> None:
        self.config = config
        self.reactor = reactor
        self.edge = edge
        self.root_cas = root_cas
        self.authtoken = authtoken
        self.tunnels = {d.name: Tunnel(d) for d in tunnels}
        self.session: AgentSession | None = None
        self.session_id = ""
        self.ready: Deferred = Deferred()
        self.stopped: Deferred = Deferred()
        self._rng = rng
        self._client: ClientService | None = None
        self._backoff = backoffPolicy(
            initialDelay=RECONNECT_INITIAL_DELAY,
            maxDelay=RECONNECT_MAX_DELAY,
            factor=2.0,
            jitter=self._jitter,
        )

    def _jitter(self) -> float:
        return self._rng() * RECONNECT_INITIAL_DELAY

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
        endpoint = wrapClientTLS(
            tls,
            HostnameEndpoint(
                self.reactor,
                self.edge.host,
                self.edge.port,
                timeout=self.config.connect_timeout,
            ),
        )
        self._client = ClientService(
            endpoint,
            _SessionFactory(self),
            retryPolicy=self._retry_delay,
            clock=self.reactor,
            prepareConnection=self._prepare,
        )
        _log.info("connecting to edge {edge}", edge=str(self.edge), obj="csess")
        self._client.startService()

    def stopService(self) -> Deferred | None:
        super().stopService()
        client, self._client = self._client, None
        if client is None:
            return None
        return client.stopService()

    def _retry_delay(self, attempts: int) -> float:
        delay = self._backoff(attempts)
        _log.warn(
            "could not establish a session with the edge at {edge}; retrying in"
            " {delay:.1f}s (attempt {attempt})",
            edge=str(self.edge),
            delay=delay,
            attempt=attempts + 1,
            obj="csess",
        )
        return delay

    # Each connection

    def _prepare(self, protocol: Any) -> Deferred:
        session = self.session
        assert session is not None
        establishing = session.establish(self.authtoken, self.session_id)
        establishing.addCallbacks(
            self._established,
            self._not_established,
            callbackArgs=(session,),
            errbackArgs=(session,),
        )
        return establishing

    def _established(self, results: list[Any], session: AgentSession) -> None:
        auth = session.auth
        assert auth is not None
        self.session_id = auth.session_id
        _log.info("tunnel session started", obj="tunnels.session", id=auth.session_id)
        session.mux.when_closed().addCallback(self._session_closed, session)
        failures = []
        for tunnel, error in results:
            if error is None:
                _log.info(
                    "started tunnel",
                    obj="tunnels",
                    name=tunnel.name,
                    addr=self._display_addr(tunnel),
                    url=tunnel.public_url,
                )
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

    def _not_established(self, failure: Failure, session: AgentSession) -> Failure:
        closed = session.mux.close_reason
        error = None
        if closed is not None:
            error = describe_tls_failure(closed, self.edge.host, self.root_cas)
        if error is None and isinstance(failure.value, TunnelkitError):
            error = failure.value
        if error is not None and error.code in FATAL_CODES:
            _log.error("{error}", error=str(error), obj="csess")
            session.mux.close()
            self._fatal(error)
            return failure
        _log.warn(
            "session with the edge failed: {error}",
            error=str(error) if error is not None else failure.getErrorMessage(),
            obj="csess",
        )
        if session.mux.transport is not None:
            session.mux.transport.abortConnection()
        return failure

    def _session_closed(self, reason: Any, session: AgentSession) -> None:
        if self.running and self.session is session:
            _log.warn(
                "session closed, starting reconnect loop",
                obj="csess",
                reason=str(getattr(reason, "value", reason)),
            )
        for tunnel in self.tunnels.values():
            tunnel.public_url = None

    def _fatal(self, error: TunnelkitError) -> None:
        if not self.ready.called:
            self.ready.errback(Failure(error))
        self.reactor.callLater(0, self._stop_for, error)

    def _stop_for(self, outcome: Any) -> None:
        stopping = self.stopService()
        if stopping is None:
            stopping = Deferred()
            stopping.callback(None)
        if not self.stopped.called:
            stopping.addBoth(lambda _: self.stopped.callback(outcome))

    def stop_requested(self) -> None:
        """
        Stop because the edge asked to.
        """
        self._stop_for(None)
