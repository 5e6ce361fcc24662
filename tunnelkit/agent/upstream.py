"""
The agent's end of a proxied connection: dial the local service and join
the stream to it.
"""

from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from tunnelkit.agent.tunnel import Tunnel
from tunnelkit.control.messages import ProxyHeader
from tunnelkit.splice import SpliceEnd, splice

_log = Logger()

UPSTREAM_CONNECT_TIMEOUT = 10
"""Seconds to wait for the local service to accept a connection."""


class ProxiedStream(SpliceEnd):
    """
    A stream from the edge carrying one public connection. Reading pauses
    until the local service answers, so at most one window of the client's
    bytes waits meanwhile.
    """

    def __init__(self, reactor: Any, tunnel: Tunnel, header: ProxyHeader) -> None:
        super().__init__()
        self.reactor = reactor
        self.tunnel = tunnel
        self.header = header
        self._counted = False
        self._connecting: Deferred | None = None

    def connectionMade(self) -> None:
        self.transport.pauseProducing()
        self.tunnel.open_connections += 1
        self.tunnel.total_connections += 1
        self._counted = True
        addr = self.tunnel.definition.addr
        assert addr.port is not None, "TCP upstreams always have a port"
        endpoint = HostnameEndpoint(
            self.reactor, addr.host, addr.port, timeout=UPSTREAM_CONNECT_TIMEOUT
        )
        local = SpliceEnd()
        self._connecting = endpoint.connect(Factory.forProtocol(lambda: local))
        self._connecting.addCallbacks(self._connected, self._failed)

    def _connected(self, local: SpliceEnd) -> None:
        self._connecting = None
        if self.lost:
            local.transport.loseConnection()
            return
        splice(self, local)
        self.transport.resumeProducing()

    def _failed(self, reason: Failure) -> None:
        self._connecting = None
        if reason.check(CancelledError):
            return
        _log.warn(
            "failed to dial upstream {addr} for {client} on tunnel {name}: {error}",
            addr=self.tunnel.forwards_to,
            client=self.header.client_addr,
            name=self.tunnel.name,
            error=reason.getErrorMessage(),
            obj="tunnels",
        )
        if not self.lost:
            self.transport.abortConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._counted:
            self._counted = False
            self.tunnel.open_connections -= 1
        connecting, self._connecting = self._connecting, None
        if connecting is not None:
            connecting.cancel()
        super().connectionLost(reason)
