"""
The agent's end of a proxied connection: dial the local service and join
the stream to it, or, for an HTTP tunnel whose service cannot be reached,
answer with an error page. A C{file://} tunnel's streams go to the
built-in file server instead.
"""

import weakref
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IProtocol
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from tunnelkit.agent.dial import UpstreamEnd, dial_upstream
from tunnelkit.agent.fileserver import FileServer
from tunnelkit.agent.termination import terminate_tls
from tunnelkit.agent.metrics import TunnelMetrics
from tunnelkit.agent.tunnel import Tunnel
from tunnelkit.control.messages import ProxyHeader
from tunnelkit.errorpage import error_response
from tunnelkit.splice import SpliceEnd, splice

_log = Logger()

_file_servers: dict[int, FileServer] = {}
"""The file server of each C{file://} tunnel that has had a stream, by the
tunnel's C{id}; an entry goes when its tunnel does."""


def stream_protocol(reactor: Any, tunnel: Tunnel, header: ProxyHeader) -> IProtocol:
    """
    Choose the protocol for one stream of a tunnel, and count the
    connection on the tunnel while it is open.

    @return: a connection of the tunnel's file server for a C{file://}
        tunnel, else a L{ProxiedStream}, behind the agent's own TLS when the
        tunnel has C{crt} and C{key} and the edge passed the client's TLS
        through (a TLS tunnel, or a labeled tunnel behind a TLS edge; a
        labeled tunnel's streams from HTTPS and TCP edges are not TLS).
    """
    if tunnel.definition.crt is not None and header.passthrough_tls:
        stream = ProxiedStream(reactor, tunnel, header)
        return terminate_tls(reactor, tunnel, stream, header.client_addr)
    if tunnel.definition.addr.scheme != "file":
        return ProxiedStream(reactor, tunnel, header)
    channel = file_server(reactor, tunnel).connection()
    counted = CountedConnection(tunnel)
    channel.closed.addCallback(lambda _: counted.close())
    return channel


def file_server(reactor: Any, tunnel: Tunnel) -> FileServer:
    """
    @return: the one file server of a C{file://} tunnel, made for its first
        stream and kept for the others while the tunnel is.
    """
    key = id(tunnel)
    root = tunnel.definition.addr.path
    server = _file_servers.get(key)
    if server is None:
        weakref.finalize(tunnel, _file_servers.pop, key, None)
    if server is None or server.root != root:
        server = _file_servers[key] = FileServer(root, reactor)
    return server


class CountedConnection:
    """
    One connection of a tunnel, counted in its metrics as opened at once,
    and as closed, with how long it was open, at L{close}.
    """

    def __init__(self, tunnel: Tunnel) -> None:
        self._metrics: TunnelMetrics | None = tunnel.metrics
        self._opened_at = tunnel.metrics.clock.seconds()
        tunnel.metrics.connection_opened()

    def close(self) -> None:
        """
        Count the connection as closed; only the first call counts.
        """
        metrics, self._metrics = self._metrics, None
        if metrics is not None:
            metrics.connection_closed(metrics.clock.seconds() - self._opened_at)


def unreachable_page(local: str, reason: str, head_only: bool = False) -> bytes:
    """
    Render the response an HTTP tunnel sends when its local service cannot
    be reached.

    @param local: the local address, such as C{http://localhost:8080}.
    @param reason: why the connection failed.
    @param head_only: leave the body out, for an answer to C{HEAD}.
    @return: a complete C{502 Bad Gateway} response that closes the
        connection.
    """
    return error_response(
        502,
        "TK_UPSTREAM_UNREACHABLE",
        "The local service is unreachable",
        f"The tunnel reached its agent, but the agent could not connect to"
        f" {local}: {reason.rstrip('.')}. Start the service, or point the"
        " tunnel at the address it listens on.",
        head_only=head_only,
    )


class ProxiedStream(SpliceEnd):
    """
    A stream from the edge carrying one public connection. Reading pauses
    until the local service answers, so at most one window of the client's
    bytes waits meanwhile.

    When the service cannot be reached, a TCP tunnel's stream is reset, as
    a refused connection would be. An HTTP tunnel's stream gets a C{502}
    page with the code C{TK_UPSTREAM_UNREACHABLE} and is closed cleanly;
    the page waits for the first bytes of the request, to leave out the
    body when they start a C{HEAD}, and every byte read is dropped.
    """

    def __init__(self, reactor: Any, tunnel: Tunnel, header: ProxyHeader) -> None:
        super().__init__()
        self.reactor = reactor
        self.tunnel = tunnel
        self.header = header
        self._counted: CountedConnection | None = None
        self._connecting: Deferred[UpstreamEnd] | None = None
        self._unreachable: str | None = None
        self._answered = False

    def connectionMade(self) -> None:
        self.transport.pauseProducing()
        self._counted = CountedConnection(self.tunnel)
        self._connecting = self._dial()
        self._connecting.addCallbacks(self._connected, self._failed)

    def _dial(self) -> "Deferred[UpstreamEnd]":
        """
        @return: a connection to the tunnel's local service, being made.
        """
        return dial_upstream(self.reactor, self.tunnel.definition.addr)

    def dataReceived(self, data: bytes) -> None:
        if self._unreachable is None:
            super().dataReceived(data)
        elif not self._answered:
            self._early.append(data)
            self._answer_unreachable()

    def readConnectionLost(self) -> None:
        if self._unreachable is None:
            super().readConnectionLost()
        elif not self._answered:
            self._answer_unreachable(ended=True)

    def _connected(self, local: UpstreamEnd) -> None:
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
        if self.lost:
            return
        web = self.header.proto in ("http", "https")
        if self.tunnel.proto not in ("http", "") or not web:
            self.transport.abortConnection()
            return
        self._unreachable = reason.getErrorMessage()
        self.transport.resumeProducing()
        self._answer_unreachable(ended=self._early_eof)

    def _answer_unreachable(self, ended: bool = False) -> None:
        """
        Write the C{502} page and close, once the request's method can be
        told (or the client sent all it will).
        """
        assert self._unreachable is not None
        read = b"".join(self._early)
        if len(read) < len(b"HEAD ") and not ended:
            return
        self._answered = True
        self._early.clear()
        page = unreachable_page(
            self.tunnel.forwards_to, self._unreachable, read.startswith(b"HEAD ")
        )
        self.transport.write(page)
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._counted is not None:
            self._counted.close()
        connecting, self._connecting = self._connecting, None
        if connecting is not None:
            connecting.cancel()
        super().connectionLost(reason)
