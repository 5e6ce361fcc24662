"""
One connection of the agent to the edge: authenticate, bind the tunnels,
and serve what the edge sends (proxied connections, stop and restart).
"""

import platform
import sys
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IProtocol
from twisted.internet.protocol import Protocol
from twisted.logger import Logger

from tunnelkit import __version__
from tunnelkit.agent.termination import prepare_termination
from tunnelkit.agent.upstream import stream_protocol
from tunnelkit.control.messages import (
    Auth,
    AuthResp,
    BindLabelsResp,
    ProxyHeader,
    Restart,
    RestartResp,
    Stop,
    StopResp,
    StopTunnel,
    StopTunnelResp,
)
from tunnelkit.control.rpc import RemoteError, RpcDispatch, RpcServerFactory, call
from tunnelkit.errors import TunnelkitError
from tunnelkit.mux import MuxConfig, MuxProtocol

if TYPE_CHECKING:
    from tunnelkit.agent.service import AgentService

_log = Logger()

RPC_TIMEOUT = 15.0
"""Seconds the agent waits for the edge to answer one request."""


class AgentSession:
    """
    The agent's side of one connection to the edge.

    @ivar auth: the edge's answer to authentication, once authenticated.
    """

    def __init__(self, agent: "AgentService", reactor: Any, config: MuxConfig) -> None:
        self.agent = agent
        self.reactor = reactor
        self.auth: AuthResp | None = None
        self.dispatch = RpcDispatch(on_proxy=self._on_proxy)
        self.dispatch.register(StopTunnel, self._stop_tunnel)
        self.dispatch.register(Restart, self._restart)
        self.dispatch.register(Stop, self._stop)
        streams = RpcServerFactory(self.dispatch, reactor)
        self.mux = MuxProtocol(True, reactor, streams, config)

    def request(self, message: Any) -> Deferred:
        """
        Send one request to the edge.

        @return: a Deferred of the reply.
        """
        return call(self.mux.open_stream, message, RPC_TIMEOUT, self.reactor)

    def establish(self, authtoken: str, session_id: str) -> Deferred:
        """
        Authenticate, then bind every tunnel of the agent; a ping sent
        meanwhile measures the latency to the edge before the first
        keepalive does.

        @return: a Deferred that fires with the list of tunnels bound and the
            errors of those that could not be, or fails if authentication
            fails.
        """
        return ensureDeferred(self._establish(authtoken, session_id))

    async def _establish(
        self, authtoken: str, session_id: str
    ) -> list[tuple[Any, TunnelkitError | None]]:
        self.auth = await self.request(
            Auth(
                authtoken=authtoken,
                agent_version=__version__,
                os=sys.platform,
                arch=platform.machine().lower(),
                session_id=session_id,
                metadata=self.agent.config.metadata or "",
            )
        )
        self.mux.ping().addErrback(lambda _: None)
        results = []
        for tunnel in list(self.agent.tunnels.values()):
            results.append((tunnel, await self.bind(tunnel)))
        return results

    async def bind(self, tunnel: Any) -> TunnelkitError | None:
        """
        Bind one tunnel; record its URLs (an edge older than C{urls} sends
        only C{url}).

        @return: C{None} on success, else the error: the edge's refusal, or
            the agent's own for a tunnel it cannot bind (of a kind it does
            not serve, or whose certificate files for TLS termination it
            cannot use).
        @raise TunnelkitError: when the request itself fails (the session
            closed or timed out), so that the agent reconnects.
        """
        tunnel.public_url = None
        try:
            request = tunnel.bind_request()
            prepare_termination(tunnel, self.reactor)
        except TunnelkitError as unsupported:
            return unsupported
        try:
            reply = await self.request(request)
        except RemoteError as refusal:
            return refusal
        if isinstance(reply, BindLabelsResp):
            tunnel.public_urls = ()
            return None
        tunnel.public_urls = reply.urls or (reply.url,)
        tunnel.token = reply.token
        return None

    # Requests from the edge

    def _on_proxy(
        self, header: ProxyHeader, transport: Any, remainder: bytes
    ) -> IProtocol:
        tunnel = self.agent.tunnels.get(header.binding_id)
        if tunnel is None:
            _log.warn(
                "edge sent a connection for unknown tunnel {binding}; closing it",
                binding=header.binding_id,
            )
            transport.abortConnection()
            return Protocol()
        inspection = self.agent.inspection
        if inspection is not None and inspection.captures(tunnel, header):
            return inspection.stream(self.reactor, tunnel, header)
        return stream_protocol(self.reactor, tunnel, header)

    def _stop_tunnel(self, request: StopTunnel) -> StopTunnelResp:
        tunnel = self.agent.tunnels.get(request.id)
        if tunnel is not None:
            tunnel.public_url = None
        _log.error(
            "the edge stopped tunnel {name}: {reason}",
            name=request.id,
            reason=request.message,
            code=request.error_code,
            obj="tunnels",
        )
        return StopTunnelResp()

    def _restart(self, request: Restart) -> RestartResp:
        self._require_remote_management()
        _log.info("the edge asked for a restart; reconnecting", obj="csess")
        self.reactor.callLater(0, self.mux.close)
        return RestartResp()

    def _stop(self, request: Stop) -> StopResp:
        self._require_remote_management()
        _log.info("the edge asked the agent to stop", obj="csess")
        self.reactor.callLater(0, self.agent.stop_requested)
        return StopResp()

    def _require_remote_management(self) -> None:
        if not self.agent.config.remote_management:
            raise TunnelkitError(
                "TK_REMOTE_MANAGEMENT_DISABLED",
                "This agent has remote_management: false in its config.",
            )
