"""
One agent's session as the edge sees it: authentication, the agent's
requests, and the edge's own requests to the agent.
"""

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from tunnelkit import __version__
from tunnelkit.config import AuthtokenGrant
from tunnelkit.control.messages import (
    Auth,
    AuthResp,
    Bind,
    BindLabels,
    BindLabelsResp,
    BindResp,
    Restart,
    ServerInfo,
    ServerInfoResp,
    Stop,
    StopTunnel,
    Unbind,
    UnbindResp,
)
from tunnelkit.control.rpc import (
    RpcDispatch,
    RpcServerFactory,
    RpcServerProtocol,
    call,
)
from tunnelkit.errors import TunnelkitError
from tunnelkit.mux import MuxProtocol
from tunnelkit.addresses import format_address
from tunnelkit.edge.names import HttpBinding
from tunnelkit.edge.sni import TlsBinding
from tunnelkit.edge.routing import LabeledBinding, format_labels
from tunnelkit.edge.tcp import TcpBinding

if TYPE_CHECKING:
    from tunnelkit.edge.server import EdgeServer

_log = Logger()

AUTH_TIMEOUT = 10.0
"""Seconds a new connection has to authenticate before it is closed."""

RPC_TIMEOUT = 10.0
"""Seconds the edge waits for the agent to answer one of its requests."""

PRE_AUTH_STREAMS = 2
"""Streams a connection may open before it has authenticated; more are
refused, so an unauthenticated peer cannot hold the edge's memory."""

PRE_AUTH_MESSAGE_SIZE = 4096
"""The largest control message read before authentication, in bytes."""


class _StreamGate(Factory):
    """
    Builds the RPC server of each stream an agent opens; before the agent
    has authenticated, it refuses all but the first few streams and reads
    only small messages.
    """

    noisy = False

    def __init__(self, session: "EdgeSession") -> None:
        self.session = session
        self.authenticated = RpcServerFactory(session.dispatch, session.clock)
        self.unauthenticated = RpcServerFactory(
            session.dispatch, session.clock, max_size=PRE_AUTH_MESSAGE_SIZE
        )
        self.before_auth = 0

    def buildProtocol(self, addr: IAddress | None) -> RpcServerProtocol | None:
        if self.session.session_id is not None:
            return self.authenticated.buildProtocol(addr)
        self.before_auth += 1
        if self.before_auth > PRE_AUTH_STREAMS:
            return None
        return self.unauthenticated.buildProtocol(addr)


class EdgeSession:
    """
    The edge's side of one agent connection.

    @ivar session_id: the id given at authentication, or C{None} before.
    @ivar grant: the authtoken grant the agent authenticated with.
    @ivar bindings: the agent's TCP, HTTP and labeled bindings by binding
        id.
    """

    def __init__(self, server: "EdgeServer", clock: IReactorTime) -> None:
        self.server = server
        self.clock = clock
        self.session_id: str | None = None
        self.grant: AuthtokenGrant | None = None
        self.agent_version = ""
        self.bindings: dict[
            str, TcpBinding | HttpBinding | TlsBinding | LabeledBinding
        ] = {}
        self.dispatch = RpcDispatch()
        self.dispatch.register(Auth, self.auth)
        self.dispatch.register(Bind, self.bind)
        self.dispatch.register(BindLabels, self.bind_labels)
        self.dispatch.register(Unbind, self.unbind)
        self.dispatch.register(ServerInfo, self.server_info)
        config = server.mux_config()
        self.mux = MuxProtocol(False, clock, _StreamGate(self), config)
        self.mux.when_closed().addCallback(self._closed)
        self._auth_timer: IDelayedCall | None = clock.callLater(
            AUTH_TIMEOUT, self._auth_timed_out
        )

    @property
    def peer(self) -> str:
        """
        @return: the agent's address as C{host:port}.
        """
        return format_address(self.mux.peer)

    def _auth_timed_out(self) -> None:
        self._auth_timer = None
        _log.warn(
            "agent at {peer} did not authenticate within {timeout}s; closing",
            peer=self.peer,
            timeout=AUTH_TIMEOUT,
        )
        if self.mux.transport is not None:
            self.mux.transport.abortConnection()

    def _require_auth(self) -> None:
        if self.session_id is None:
            raise TunnelkitError(
                "TK_NOT_AUTHENTICATED",
                "Authenticate first: the agent's first request must be auth.",
            )

    # Requests from the agent

    def auth(self, request: Auth) -> AuthResp:
        """
        Check the authtoken and start or resume the session.
        """
        if self.session_id is not None:
            raise TunnelkitError(
                "TK_ALREADY_AUTHENTICATED", "This session is already authenticated."
            )
        grant = self.server.check_authtoken(request.authtoken)
        if grant is None:
            prefix = request.authtoken[:4]
            if request.authtoken:
                _log.warn(
                    "authentication failed for agent at {peer} (token {prefix}…)",
                    peer=self.peer,
                    prefix=prefix,
                )
            else:
                _log.warn("agent at {peer} sent no authtoken; refused", peer=self.peer)
            # The refusal is written first; then the connection closes, so
            # one connection cannot try token after token.
            self.clock.callLater(0, self.mux.close)
            if not request.authtoken:
                raise TunnelkitError(
                    "TK_AUTH_MISSING",
                    "This edge requires an authtoken; set one with"
                    " `tunnelkit config add-authtoken TOKEN` or --authtoken.",
                )
            raise TunnelkitError(
                "TK_AUTH_FAILED",
                f"The authtoken beginning {prefix!r} is not accepted by this edge;"
                " check the authtoken in your config or ask the edge's operator"
                " for a valid one.",
            )
        if self._auth_timer is not None and self._auth_timer.active():
            self._auth_timer.cancel()
        self._auth_timer = None
        self.grant = grant
        self.agent_version = request.agent_version
        session_id, resumed = self.server.session_started(self, request.session_id)
        self.session_id = session_id
        _log.info(
            "agent session {session_id} started from {peer} with the authtoken"
            " named {token_name}",
            session_id=session_id,
            peer=self.peer,
            token_name=grant.name,
            version=request.agent_version,
            os=request.os,
            resumed=resumed,
        )
        return AuthResp(
            session_id=session_id,
            edge_version=__version__,
            domain=self.server.config.domain,
            resumed=resumed,
        )

    def bind(self, request: Bind) -> BindResp:
        """
        Bind a public endpoint for one of the agent's tunnels.
        """
        self._require_auth()
        if request.proto not in ("tcp", "http", "https", "tls"):
            raise TunnelkitError(
                "TK_PROTO_UNSUPPORTED",
                f"This edge does not serve {request.proto} tunnels; use a tcp,"
                " http or tls tunnel.",
            )
        if not request.id:
            raise TunnelkitError("TK_BAD_MESSAGE", "A bind request needs an id.")
        existing = self.bindings.get(request.id)
        if existing is not None:
            raise TunnelkitError(
                "TK_BINDING_EXISTS",
                f"This session already has a binding with id {request.id!r};"
                " unbind it first or use another name.",
            )
        binding: TcpBinding | HttpBinding | TlsBinding
        if request.proto == "tcp":
            binding, token = self.server.bind_tcp(self, request)
            urls: tuple[str, ...] = (binding.url,)
        elif request.proto == "tls":
            binding = self.server.bind_tls(self, request)
            token, urls = "", (binding.url,)
        else:
            binding = self.server.bind_http(self, request)
            token, urls = "", binding.urls
        self.bindings[request.id] = binding
        _log.info(
            "bound {url} for agent {session_id} tunnel {name}",
            url=" ".join(urls),
            session_id=self.session_id,
            name=request.name,
        )
        return BindResp(
            id=request.id, url=urls[0], proto=request.proto, token=token, urls=urls
        )

    def bind_labels(self, request: BindLabels) -> BindLabelsResp:
        """
        Offer a labeled tunnel to the edge routes that ask for its labels.
        """
        self._require_auth()
        if not request.id:
            raise TunnelkitError("TK_BAD_MESSAGE", "A bind request needs an id.")
        if request.id in self.bindings:
            raise TunnelkitError(
                "TK_BINDING_EXISTS",
                f"This session already has a binding with id {request.id!r};"
                " unbind it first or use another name.",
            )
        binding = self.server.bind_labels(self, request)
        self.bindings[request.id] = binding
        labels = format_labels(binding.labels)
        _log.info(
            "bound labels {labels} for agent {session_id} tunnel {name}",
            labels=labels,
            session_id=self.session_id,
            name=request.name,
        )
        return BindLabelsResp(id=request.id, labels=tuple(labels.split(",")))

    def unbind(self, request: Unbind) -> UnbindResp:
        """
        Remove one of the agent's bindings at once.
        """
        self._require_auth()
        binding = self.bindings.pop(request.id, None)
        if binding is None:
            raise TunnelkitError(
                "TK_BINDING_UNKNOWN",
                f"This session has no binding with id {request.id!r}.",
            )
        self._unbind(binding)
        return UnbindResp()

    def _unbind(
        self, binding: TcpBinding | HttpBinding | TlsBinding | LabeledBinding
    ) -> None:
        if isinstance(binding, LabeledBinding):
            self.server.unbind_labels(binding)
        elif isinstance(binding, (HttpBinding, TlsBinding)):
            self.server.unbind_http(binding)
        else:
            self.server.unbind_tcp(binding)

    def server_info(self, request: ServerInfo) -> ServerInfoResp:
        """
        Describe this edge, for C{tunnelkit diagnose}.
        """
        self._require_auth()
        return ServerInfoResp(
            edge_version=__version__,
            domain=self.server.config.domain,
            region=self.server.region,
        )

    # Requests to the agent

    def stop_tunnel(self, binding_id: str, message: str, error_code: str) -> Deferred:
        """
        Close one binding and tell the agent why.
        """
        binding = self.bindings.pop(binding_id, None)
        if binding is not None:
            self._unbind(binding)
        request = StopTunnel(id=binding_id, message=message, error_code=error_code)
        return self._call(request)

    def restart(self) -> Deferred:
        """
        Ask the agent to reconnect.
        """
        return self._call(Restart())

    def stop(self) -> Deferred:
        """
        Ask the agent to stop.
        """
        return self._call(Stop())

    def _call(self, request: Any) -> Deferred:
        return call(self.mux.open_stream, request, RPC_TIMEOUT, self.clock)

    # The end

    def _closed(self, reason: Any) -> None:
        if self._auth_timer is not None and self._auth_timer.active():
            self._auth_timer.cancel()
        self._auth_timer = None
        if self.session_id is None:
            return
        _log.info(
            "agent session ended id={session_id} peer={peer}",
            session_id=self.session_id,
            peer=self.peer,
        )
        self.server.session_ended(self)
