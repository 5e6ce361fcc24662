"""
The TCP and TLS edges of C{edge.yml}: for each public connection the
backend's decision carried out, a proxied stream to a labeled tunnel or a
connection the edge makes to a static address, joined byte for byte; any
other decision closes the connection.

A TCP edge has a listener of its own on its port. L{TcpEdgeListeners.update}
opens the ports of new TCP edges and closes those of edges that are gone,
and a connection always asks the edge its port serves now. A TLS edge
shares the HTTPS port: the SNI dispatch of L{tunnelkit.edge.sni} reads the
ClientHello and hands connections for a TLS edge's host name to a
L{TlsEdgeDestination}, which passes them through untouched.

Known limit: a static address behind a TLS edge is reached with plain TCP,
whatever its C{tls} option says, since the bytes passed through are the
client's own TLS.
"""

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.internet.interfaces import IAddress, IListeningPort
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from tunnelkit.addresses import format_address
from tunnelkit.agent.dial import UpstreamEnd, dial_upstream
from tunnelkit.config import UpstreamAddress
from tunnelkit.control.messages import ProxyHeader, encode_message
from tunnelkit.edge.routes import ServedEdge
from tunnelkit.edge.startup import listen_failed
from tunnelkit.edge.routing import (
    BackendRequest,
    Decision,
    LabeledBinding,
    StaticAddress,
    TunnelTarget,
    Unavailable,
)
from tunnelkit.errors import TunnelkitError
from tunnelkit.interfaces import IPassthrough
from tunnelkit.splice import SpliceEnd, splice

if TYPE_CHECKING:
    from tunnelkit.edge.server import EdgeServer

_log = Logger()


def ask_backend(edge: ServedEdge, request: BackendRequest) -> Decision | None:
    """
    Ask the default route of a TCP or TLS edge where a connection goes.

    @return: the decision, or C{None} when the backend raised (logged here,
        as the L{tunnelkit.interfaces.IBackend} contract says).
    """
    route = edge.routes.default
    if route is None:
        return Unavailable("This edge has no backend.")
    return route.ask(request)


class _TunnelStream(SpliceEnd):
    """
    The edge's end of a proxied stream to a labeled tunnel: the header
    first, then raw bytes. The tunnel counts it as open until it ends.
    """

    def __init__(self, binding: LabeledBinding, header: bytes) -> None:
        super().__init__()
        self._binding: LabeledBinding | None = binding
        self._header = header
        binding.open_connections += 1
        binding.total_connections += 1

    def connectionMade(self) -> None:
        self.transport.write(self._header)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        binding, self._binding = self._binding, None
        if binding is not None:
            binding.open_connections -= 1
        super().connectionLost(reason)


def open_tunnel_stream(
    server: "EdgeServer",
    target: TunnelTarget,
    end: SpliceEnd,
    client: IAddress | None,
    proto: str,
) -> None:
    """
    Open a proxied stream to a labeled tunnel for one public connection and
    splice the connection to it. A tunnel that cannot take it is marked as
    failed, so that its group skips it for a while.

    @param end: the public connection, connected, not yet spliced.
    @param proto: C{tcp}, or C{tls} for a connection passed through.
    @raise TunnelkitError: when the tunnel's session cannot open a stream
        now; C{end} is left alone.
    """
    binding = target.binding
    session = binding.session
    assert session is not None
    header = encode_message(
        ProxyHeader(
            binding_id=binding.binding_id,
            client_addr=format_address(client),
            proto=proto,
            passthrough_tls=proto == "tls",
        )
    )
    stream = _TunnelStream(binding, header)
    try:
        opened = session.mux.open_stream(stream)
    except TunnelkitError:
        stream.connectionLost(Failure(ConnectionDone()))
        binding.failed_at = server.reactor.seconds()
        raise

    def failed(reason: Failure) -> None:
        binding.failed_at = server.reactor.seconds()
        _log.warn(
            "agent did not take connection from {client} to {name}: {error}",
            client=format_address(client),
            name=binding.name,
            error=reason.getErrorMessage(),
        )

    opened.addErrback(failed)
    splice(end, stream)


def dial_static(
    server: "EdgeServer", address: StaticAddress, end: SpliceEnd, tls: bool
) -> "Deferred[UpstreamEnd]":
    """
    Connect to a static address for one public connection and splice the
    connection to it; the connection is not read meanwhile, and is
    aborted when the address cannot be reached.

    @param tls: whether to speak TLS to the address.
    @return: the attempt, which cancelling gives up.
    """
    end.transport.pauseProducing()
    scheme = "https" if tls else "tcp"
    dialing = dial_upstream(
        server.reactor, UpstreamAddress(scheme, address.host, address.port)
    )

    def connected(upstream: UpstreamEnd) -> None:
        if end.lost:
            upstream.transport.loseConnection()
            return
        splice(end, upstream)
        end.transport.resumeProducing()

    def failed(reason: Failure) -> None:
        if reason.check(CancelledError):
            return
        _log.warn(
            "cannot reach {host}:{port}: {error}",
            host=address.host,
            port=address.port,
            error=reason.getErrorMessage(),
        )
        if not end.lost:
            end.transport.abortConnection()

    dialing.addCallbacks(connected, failed)
    return dialing


@implementer(IPassthrough)
class TlsEdgeDestination:
    """
    Where the HTTPS port passes a connection for a TLS edge's host name:
    to the target the edge's backend picks for it.

    @ivar name: the server name the connection asked for.
    """

    def __init__(self, server: "EdgeServer", edge: ServedEdge, name: str) -> None:
        self.server = server
        self.edge = edge
        self.name = name

    def open_passthrough(self, end: SpliceEnd, client: IAddress | None) -> None:
        edge = self.edge
        request = BackendRequest(
            protocol="tls",
            host=self.name,
            path="",
            client=format_address(client),
            edge=edge.id,
            labels=edge.labels,
            time=self.server.reactor.seconds(),
        )
        decision = ask_backend(edge, request)
        if isinstance(decision, TunnelTarget):
            open_tunnel_stream(self.server, decision, end, client, "tls")
        elif isinstance(decision, StaticAddress):
            dial_static(self.server, decision, end, tls=False)
        else:
            sentence = getattr(decision, "sentence", "no target for a TLS edge")
            raise TunnelkitError(
                "TK_BACKEND_UNAVAILABLE",
                f"Nothing serves {self.name} on the edge {edge.id}: {sentence}",
            )


class EdgeConnection(SpliceEnd):
    """
    A connection from the internet to a TCP edge.
    """

    def __init__(
        self, server: "EdgeServer", port: int, client: IAddress | None
    ) -> None:
        super().__init__()
        self.server = server
        self.port = port
        self.client = client
        self._dialing: Deferred[UpstreamEnd] | None = None

    def connectionMade(self) -> None:
        edge = self.server.edges.tcp.get(self.port)
        if edge is None:
            self.transport.abortConnection()
            return
        hostport = next(h for h in edge.hostports if h.port == self.port)
        request = BackendRequest(
            protocol="tcp",
            host=hostport.host,
            path="",
            client=format_address(self.client),
            edge=edge.id,
            labels=edge.labels,
            time=self.server.reactor.seconds(),
        )
        decision = ask_backend(edge, request)
        if isinstance(decision, TunnelTarget):
            try:
                open_tunnel_stream(self.server, decision, self, self.client, "tcp")
            except TunnelkitError as error:
                _log.warn(
                    "cannot proxy {client} to tunnel {name}: {error}",
                    client=request.client,
                    name=decision.binding.name,
                    error=error,
                )
                self.transport.abortConnection()
        elif isinstance(decision, StaticAddress):
            self._dialing = dial_static(self.server, decision, self, decision.tls)
            self._dialing.addBoth(self._dialed)
        else:
            _log.info(
                "connection from {client} to edge {edge} closed: {reason}",
                client=request.client,
                edge=edge.id,
                reason=getattr(decision, "sentence", "no target for a TCP edge"),
            )
            self.transport.abortConnection()

    def _dialed(self, result: object) -> None:
        self._dialing = None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        dialing, self._dialing = self._dialing, None
        if dialing is not None:
            dialing.cancel()
        super().connectionLost(reason)


class _EdgeFactory(Factory):
    noisy = False

    def __init__(self, server: "EdgeServer", port: int) -> None:
        self.server = server
        self.port = port

    def buildProtocol(self, addr: IAddress | None) -> EdgeConnection:
        return EdgeConnection(self.server, self.port, addr)


class TcpEdgeListeners:
    """
    The listening ports of the TCP edges.

    @ivar ports: the listeners by port.
    """

    def __init__(self, server: "EdgeServer") -> None:
        self.server = server
        self.ports: dict[int, IListeningPort] = {}

    def update(self) -> list[TunnelkitError]:
        """
        Listen on the port of every TCP edge the server has now, and stop
        listening on the others.

        @return: a C{TK_LISTEN_FAILED} error for each port that could not be
            listened on, naming its edge; the caller logs or raises them.
        """
        from twisted.internet.error import CannotListenError

        wanted = set(self.server.edges.tcp)
        for port in list(self.ports):
            if port not in wanted:
                self.ports.pop(port).stopListening()
        failed = []
        for port in sorted(wanted - set(self.ports)):
            try:
                listener = self.server.reactor.listenTCP(
                    port,
                    _EdgeFactory(self.server, port),
                    interface=self.server.config.tcp_bind_host,
                )
            except CannotListenError as error:
                edge = self.server.edges.tcp[port].id
                where = self.server.config.where(f"edges.{edge}.hostports")
                failed.append(
                    listen_failed(f"{where}: the tcp edge {edge!r}", "", error)
                )
                continue
            self.ports[port] = listener
            _log.info(
                "edge {edge} serving tcp on {address}",
                edge=self.server.edges.tcp[port].id,
                address=format_address(listener.getHost()),
            )
        return failed

    def stop(self) -> Deferred:
        """
        Stop every listener.
        """
        ports, self.ports = self.ports, {}
        waiting: list[Any] = [listener.stopListening() for listener in ports.values()]
        return DeferredList([d for d in waiting if d is not None])
