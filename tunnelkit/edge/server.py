"""
The edge server: the TLS listener agents dial, their sessions and grace
periods, and the public HTTP and HTTPS listeners whose host names route to
HTTP bindings (the HTTPS port also passing the connections of TLS bindings
through by their SNI names). The public ports of TCP tunnels are bound in
L{tunnelkit.edge.tcpbinds}, the host names in L{tunnelkit.edge.names}, and
the edges of C{edge.yml} served from L{tunnelkit.edge.labeled}.
"""

import os
import secrets
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import (
    Deferred,
    DeferredList,
    TimeoutError,
    ensureDeferred,
    maybeDeferred,
)
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IAddress, IDelayedCall, IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from zope.interface import implementer

from tunnelkit.config import AuthtokenGrant, EdgeConfig
from tunnelkit.control.messages import Bind, BindLabels
from tunnelkit.edge.http import HttpIngressFactory
from tunnelkit.edge.names import HttpBinding, HttpNames
from tunnelkit.edge.sni import SniDispatchFactory, TlsBinding
from tunnelkit.edge.ports import AffinityTokens, PortBook
from tunnelkit.edge.labeled import EdgeDefinitions
from tunnelkit.edge.routes import EdgeRoutes, tcp_ports
from tunnelkit.edge.routing import LabeledBinding, TunnelGroups
from tunnelkit.edge.session import EdgeSession
from tunnelkit.edge.tcpedges import TcpEdgeListeners
from tunnelkit.addresses import format_address
from tunnelkit.edge.tcp import TcpBinding
from tunnelkit.edge.startup import (
    STATE_DIR_UNWRITABLE,
    listen,
    state_dir_unwritable,
    warn_if_no_agent_admitted,
)
from tunnelkit.edge.tcpbinds import TcpBindings
from tunnelkit.errors import TunnelkitError
from tunnelkit.interfaces import IHttpRouter, ISniRouter
from tunnelkit.mux import MuxConfig
from tunnelkit.pki import ensure_edge_certificate, server_tls_options
from tunnelkit.runtime import stop_reactor
from tunnelkit.tlsoptions import offer_http1
from tunnelkit.tlstransport import LinkTLSFactory

_log = Logger()

STOP_TIMEOUT = 5.0
"""Seconds a stopping edge waits for each agent to close its session."""


class _AgentListenerFactory(Factory):
    """
    Builds the multiplexer of each agent connection, with its session.
    """

    noisy = False

    def __init__(self, server: "EdgeServer") -> None:
        self.server = server

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        session = EdgeSession(self.server, self.server.reactor)
        self.server.connections.add(session)
        session.mux.when_closed().addCallback(
            lambda _: self.server.connections.discard(session)
        )
        return session.mux


@implementer(IHttpRouter, ISniRouter)
class EdgeServer(Service):
    """
    The edge: accepts agents on its TLS listener and binds public endpoints
    for them.

    @ivar agent_port: the agent listener once listening.
    @ivar http_ports: the public HTTP and HTTPS listeners once listening, by
        scheme.
    @ivar hosts: the HTTP and TLS bindings by host name, for the ingress
        listeners.
    @ivar ca_path: the generated CA certificate agents must trust, when the
        edge made its own certificate.
    @ivar definitions: the edges of C{edge.yml} and the labeled tunnels
        they route to.
    @ivar tcp: the public ports of TCP tunnels; C{tcp_bindings} is its
        table of bindings by port.
    """

    region = "self-hosted"

    def __init__(self, config: EdgeConfig, reactor: Any) -> None:
        self.config = config
        self.reactor = reactor
        self.ports = PortBook(
            config.tcp_port_range,
            reserved=frozenset(
                addr.port
                for grant in config.authtokens
                for addr in grant.reserved_addrs
            )
            | tcp_ports(config.edges),
        )
        self.sessions: dict[str, EdgeSession] = {}
        self.session_owners: dict[str, str] = {}
        self.connections: set[EdgeSession] = set()
        self.tcp = TcpBindings(self)
        self.tcp_bindings = self.tcp.bindings
        self.names = HttpNames(config)
        self.hosts = self.names.hosts
        self.definitions = EdgeDefinitions(self)
        self.head_timeout = config.http_head_timeout
        self.max_header_size = config.http_max_header_size
        self.http_ports: dict[str, IListeningPort] = self.names.listeners
        self.agent_port: IListeningPort | None = None
        self.ca_path: FilePath | None = None
        self.tokens: AffinityTokens | None = None
        self._grace_timer: IDelayedCall | None = None
        self._stopping = False
        self.start_failed: Deferred = Deferred()

    # Service life

    def startService(self) -> None:
        """
        Start as a service: a failure to start is logged, fires
        C{start_failed} and stops the reactor, so the process ends.
        """
        super().startService()
        maybeDeferred(self.start).addErrback(self._failed_to_start)

    def _failed_to_start(self, failure: Failure) -> None:
        _log.critical(
            "the edge could not start: {error}", error=failure.getErrorMessage()
        )
        self.start_failed.callback(failure.value)
        self.reactor.callWhenRunning(stop_reactor, self.reactor)

    def start(self) -> Deferred:
        """
        Prepare the certificate, listen for agents, then on the public HTTP
        and HTTPS listeners that are configured.

        @return: a Deferred that fires with the agent listener's port.
        """
        return ensureDeferred(self._start())

    async def _start(self) -> IListeningPort:
        config = self.config
        warn_if_no_agent_admitted(config)
        state_dir = FilePath(os.path.expanduser(config.state_dir))
        try:
            self.names.secret = _load_secret(state_dir)
            cert, key = self._certificate_files(state_dir)
        except OSError as error:
            raise state_dir_unwritable(config, error) from error
        except TunnelkitError as error:
            if error.code != STATE_DIR_UNWRITABLE:
                raise
            raise state_dir_unwritable(config, error) from error
        self.tokens = AffinityTokens(self.names.secret)
        options = server_tls_options(cert, key)
        factory = LinkTLSFactory(options, False, _AgentListenerFactory(self))
        port = self._listening(
            await listen(self.reactor, config, "agent_listener", factory)
        )
        listeners = [
            ("http", config.http_listener, HttpIngressFactory(self, "http")),
            (
                "https",
                config.https_listener,
                SniDispatchFactory(
                    self,
                    LinkTLSFactory(
                        offer_http1(server_tls_options(cert, key)),
                        False,
                        HttpIngressFactory(self, "https"),
                        self.reactor,
                    ),
                    self.reactor,
                ),
            ),
        ]
        for scheme, description, public in listeners:
            if description is None:
                continue
            listener = await listen(self.reactor, config, f"{scheme}_listener", public)
            self.http_ports[scheme] = listener
            _log.info(
                "edge serving {scheme} on {address}",
                scheme=scheme,
                address=format_address(listener.getHost()),
            )
        refused = self.tcp_edges.update()
        if refused:
            raise refused[0]
        return port

    def _certificate_files(self, state_dir: FilePath) -> tuple[FilePath, FilePath]:
        tls = self.config.tls
        if tls is not None:
            return FilePath(tls.cert), FilePath(tls.key)
        certificate = ensure_edge_certificate(state_dir, certificate_names(self.config))
        self.ca_path = certificate.ca_path
        if certificate.created_ca:
            _log.info(
                "generated a private CA for this edge at {ca}; agents must trust it"
                " (root_cas: {ca})",
                ca=certificate.ca_path.path,
            )
        return certificate.cert_path, certificate.key_path

    def _listening(self, port: IListeningPort) -> IListeningPort:
        self.agent_port = port
        _log.info(
            "edge listening for agents on {address}",
            address=format_address(port.getHost()),
        )
        return port

    def stopService(self) -> Deferred:
        """
        Stop listening, close every agent session (dropping connections
        that do not close within L{STOP_TIMEOUT}) and every public port.
        """
        super().stopService()
        self._stopping = True
        waiting = []
        if self.agent_port is not None:
            waiting.append(self.agent_port.stopListening())
            self.agent_port = None
        for listener in self.http_ports.values():
            waiting.append(listener.stopListening())
        self.http_ports.clear()
        waiting.append(self.tcp_edges.stop())
        if self._grace_timer is not None and self._grace_timer.active():
            self._grace_timer.cancel()
        self._grace_timer = None
        for session in list(self.connections):
            waiting.append(self._close_session(session))
        waiting.extend(self.tcp.stop())
        return DeferredList([d for d in waiting if d is not None])

    def _close_session(self, session: EdgeSession) -> Deferred:
        mux = session.mux
        closed = mux.when_closed()
        mux.close()

        def too_slow(failure: Failure) -> None:
            failure.trap(TimeoutError)
            if mux.transport is not None:
                mux.transport.abortConnection()

        closed.addTimeout(STOP_TIMEOUT, self.reactor)
        return closed.addErrback(too_slow)

    # Sessions

    def mux_config(self) -> MuxConfig:
        """
        @return: the multiplexer limits for agent sessions.
        """
        return MuxConfig(
            keepalive_interval=self.config.heartbeat_interval,
            keepalive_timeout=self.config.heartbeat_tolerance,
        )

    def check_authtoken(self, token: str) -> AuthtokenGrant | None:
        """
        @return: the grant for C{token}, or C{None} if it is not accepted.
        """
        grant = self.config.check_token(token) if token else None
        if grant is None and self.config.allow_anonymous:
            return AuthtokenGrant(name="anonymous")
        return grant

    def session_started(self, session: EdgeSession, requested: str) -> tuple[str, bool]:
        """
        Register an authenticated session, resuming C{requested} if the
        edge knows it: a live session with that id is replaced, and ports
        held for it are handed back when the agent binds again.

        @return: the session id and whether it was resumed.
        """
        assert session.grant is not None
        owner = session.grant.name
        if len(requested) > 64 or not requested.isascii() or not requested.isalnum():
            requested = ""
        if requested and self.session_owners.get(requested, owner) != owner:
            _log.warn(
                "agent at {peer} asked to resume a session of another authtoken;"
                " starting a new session",
                peer=session.peer,
            )
            requested = ""
        if not requested:
            requested = secrets.token_hex(16)
            while requested in self.session_owners:
                requested = secrets.token_hex(16)
        previous = self.sessions.get(requested)
        if previous is not None and previous is not session:
            self._retire(previous)
        resumed = (
            previous is not None
            or self.ports.has_holds(requested)
            or any(b.session_id == requested for b in self.hosts.values())
        )
        self.sessions[requested] = session
        self.session_owners[requested] = owner
        return requested, resumed

    def _retire(self, previous: EdgeSession) -> None:
        session_id = previous.session_id
        assert session_id is not None
        _log.info(
            "session {session_id} reconnected; closing its old connection",
            session_id=session_id,
        )
        self._drop(previous, session_id)
        previous.session_id = None
        previous.mux.close()

    def session_ended(self, session: EdgeSession) -> None:
        """
        Keep the ended session's ports for the grace period; its public
        listeners refuse connections meanwhile.
        """
        session_id = session.session_id
        if session_id is None or self.sessions.get(session_id) is not session:
            return
        del self.sessions[session_id]
        self._drop(session, session_id)

    def _drop(self, session: EdgeSession, session_id: str) -> None:
        if self._stopping:
            return
        now = self.reactor.seconds()
        grace = self.config.session_grace
        names = []
        for binding in session.bindings.values():
            binding.session = None
            if isinstance(binding, LabeledBinding):
                self.groups.remove(binding)
            elif isinstance(binding, (HttpBinding, TlsBinding)):
                binding.expires = now + grace
                names.append(binding.name)
        session.bindings.clear()
        held = self.ports.session_dropped(session_id, now, grace)
        if held or names:
            _log.info(
                "keeping ports {ports} and names {names} of session {session_id}"
                " for {grace}s",
                ports=held,
                names=names,
                session_id=session_id,
                grace=grace,
            )
            self._schedule_expiry()

    def _schedule_expiry(self) -> None:
        if self._grace_timer is not None and self._grace_timer.active():
            self._grace_timer.cancel()
        expiries = [b.expires for b in self.hosts.values() if b.expires is not None]
        port_expiry = self.ports.next_expiry()
        if port_expiry is not None:
            expiries.append(port_expiry)
        next_expiry = min(expiries, default=None)
        if next_expiry is None:
            self._grace_timer = None
            return
        delay = max(next_expiry - self.reactor.seconds(), 0.0)
        self._grace_timer = self.reactor.callLater(delay, self._expire)

    def _expire(self) -> None:
        self._grace_timer = None
        for port in self.ports.expire(self.reactor.seconds()):
            if self.tcp.close(port):
                _log.info("released port {port} after the grace period", port=port)
        now = self.reactor.seconds()
        for http_binding in self.hosts.values():
            if http_binding.expires is not None and http_binding.expires <= now:
                _log.info(
                    "released {name} after the grace period", name=http_binding.name
                )
                self.hosts.remove(http_binding.name, http_binding)
        held_names = {b.session_id for b in self.hosts.values()}
        for session_id in list(self.session_owners):
            if (
                session_id not in self.sessions
                and session_id not in held_names
                and not self.ports.has_holds(session_id)
            ):
                del self.session_owners[session_id]
        self._schedule_expiry()

    # TCP bindings

    def bind_tcp(self, session: EdgeSession, request: Bind) -> tuple[TcpBinding, str]:
        """
        Bind a public TCP port for a session; see L{TcpBindings.bind}.

        @return: the binding and its affinity token.
        """
        return self.tcp.bind(session, request)

    def unbind_tcp(self, binding: TcpBinding) -> None:
        """
        Close a binding's public port and free it.
        """
        self.tcp.unbind(binding)

    # HTTP bindings

    def bind_http(self, session: EdgeSession, request: Bind) -> HttpBinding:
        """
        Bind a public host name for an HTTP tunnel; see L{HttpNames.bind}.
        """
        self.definitions.check_not_edge(request)
        return self.names.bind(session, request)

    # TLS bindings

    def bind_tls(self, session: EdgeSession, request: Bind) -> TlsBinding:
        """
        Bind a public host name for a TLS tunnel; see L{HttpNames.bind_tls}.
        """
        self.definitions.check_not_edge(request)
        return self.names.bind_tls(session, request)

    def route_sni(self, name: str) -> object:
        """
        Say where a connection to the HTTPS port goes by its server name:
        an HTTPS edge's host is terminated, as its routes are served before
        any tunnel's; a TLS edge's host is passed through to the target its
        backend picks; other names go where L{HttpNames.route_sni} says.
        """
        destination = self.definitions.route_sni(name)
        if destination is not None:
            return destination
        return self.names.route_sni(name)

    def unbind_http(self, binding: HttpBinding | TlsBinding) -> None:
        """
        Remove an HTTP or TLS binding's name at once.
        """
        self.names.unbind(binding)

    # Labeled tunnels and edges: see L{EdgeDefinitions}

    @property
    def groups(self) -> TunnelGroups:
        """
        The labeled tunnels online, by label set.
        """
        return self.definitions.groups

    @property
    def edges(self) -> EdgeRoutes:
        """
        The edges of C{edge.yml}, built with their backends.
        """
        return self.definitions.edges

    @property
    def tcp_edges(self) -> TcpEdgeListeners:
        """
        The listeners of the TCP edges.
        """
        return self.definitions.listeners

    def bind_labels(self, session: EdgeSession, request: BindLabels) -> LabeledBinding:
        """
        Add a labeled tunnel to its group; see L{EdgeDefinitions.bind}.
        """
        return self.definitions.bind(session, request)

    def unbind_labels(self, binding: LabeledBinding) -> None:
        """
        Take a labeled tunnel out of its group at once.
        """
        self.definitions.unbind(binding)

    def reload_edges(self, config: EdgeConfig) -> None:
        """
        Serve the edges of a newly loaded configuration; see
        L{EdgeDefinitions.reload}.
        """
        self.definitions.reload(config)

    def reload_config(self) -> bool:
        """
        Read C{edge.yml} again and serve its edges; see
        L{EdgeDefinitions.reload_file}.
        """
        return self.definitions.reload_file()


def certificate_names(config: EdgeConfig) -> list[str]:
    """
    The names the edge's generated certificate carries: loopback, the public
    host, the domain, and the domain's wildcard when the domain has at least
    two labels (certificate checkers refuse wildcards such as
    C{*.localhost}).
    """
    names = {"localhost", "127.0.0.1", "::1", config.public_host, config.domain}
    if "." in config.domain:
        names.add(f"*.{config.domain}")
    return sorted(names)


def _load_secret(state_dir: FilePath) -> bytes:
    """
    Read the edge's HMAC secret from its state directory, making one on
    first start.
    """
    if not state_dir.exists():
        state_dir.makedirs()
        os.chmod(state_dir.path, 0o700)
    secret_file = state_dir.child("affinity.key")
    if secret_file.exists():
        return secret_file.getContent()
    secret = secrets.token_bytes(32)
    temporary = state_dir.child("affinity.key.new")
    with open(temporary.path, "wb", opener=_private_opener) as output:
        output.write(secret)
    temporary.moveTo(secret_file)
    return secret


def _private_opener(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)
