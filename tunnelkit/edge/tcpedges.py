"""
The TCP edges of C{edge.yml}: one listener per port, and for each public
connection the backend's decision carried out: a proxied stream to a
labeled tunnel, or a connection the edge makes to a static address, joined
byte for byte; any other decision closes the connection.

Listeners follow the definitions: L{TcpEdgeListeners.update} opens the
ports of new TCP edges and closes those of edges that are gone, and a
connection always asks the edge its port serves now.
"""

from typing import TYPE_CHECKING, Any, Callable

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IAddress, IListeningPort
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from tunnelkit.addresses import format_address
from tunnelkit.agent.dial import UpstreamEnd, dial_upstream
from tunnelkit.config import UpstreamAddress
from tunnelkit.control.messages import ProxyHeader, encode_message
from tunnelkit.edge.routes import ServedEdge
from tunnelkit.edge.routing import (
    BackendRequest,
    Decision,
    StaticAddress,
    TunnelTarget,
    Unavailable,
)
from tunnelkit.errors import TunnelkitError
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
    try:
        decision: Decision = route.backend.choose(request)
    except Exception:
        _log.failure(
            "the backend of edge {edge} raised instead of deciding",
            edge=edge.id,
        )
        return None
    return decision


class _TunnelStream(SpliceEnd):
    """
    The edge's end of a proxied stream to a labeled tunnel: the header
    first, then raw bytes.
    """

    def __init__(self, header: bytes) -> None:
        super().__init__()
        self._header = header

    def connectionMade(self) -> None:
        self.transport.write(self._header)


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
        self._release: Callable[[], None] | None = None
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
            self._to_tunnel(decision)
        elif isinstance(decision, StaticAddress):
            self._to_address(decision)
        else:
            _log.info(
                "connection from {client} to edge {edge} closed: {reason}",
                client=request.client,
                edge=edge.id,
                reason=getattr(decision, "sentence", "no target for a TCP edge"),
            )
            self.transport.abortConnection()

    def _to_tunnel(self, target: TunnelTarget) -> None:
        binding = target.binding
        session = binding.session
        assert session is not None
        header = encode_message(
            ProxyHeader(
                binding_id=binding.binding_id,
                client_addr=format_address(self.client),
                proto="tcp",
            )
        )
        stream = _TunnelStream(header)
        try:
            opened = session.mux.open_stream(stream)
        except TunnelkitError as error:
            binding.failed_at = self.server.reactor.seconds()
            _log.warn(
                "cannot proxy {client} to tunnel {name}: {error}",
                client=format_address(self.client),
                name=binding.name,
                error=error,
            )
            self.transport.abortConnection()
            return
        binding.open_connections += 1
        binding.total_connections += 1

        def release() -> None:
            binding.open_connections -= 1

        def failed(reason: Failure) -> None:
            binding.failed_at = self.server.reactor.seconds()
            _log.warn(
                "agent did not take connection from {client} to {name}: {error}",
                client=format_address(self.client),
                name=binding.name,
                error=reason.getErrorMessage(),
            )

        self._release = release
        opened.addErrback(failed)
        splice(self, stream)

    def _to_address(self, address: StaticAddress) -> None:
        self.transport.pauseProducing()
        scheme = "https" if address.tls else "tcp"
        upstream = UpstreamAddress(scheme, address.host, address.port)
        self._dialing = dial_upstream(self.server.reactor, upstream)

        def connected(end: UpstreamEnd) -> None:
            self._dialing = None
            if self.lost:
                end.transport.loseConnection()
                return
            splice(self, end)
            self.transport.resumeProducing()

        def failed(reason: Failure) -> None:
            self._dialing = None
            _log.warn(
                "cannot reach {host}:{port} for {client}: {error}",
                host=address.host,
                port=address.port,
                client=format_address(self.client),
                error=reason.getErrorMessage(),
            )
            if not self.lost:
                self.transport.abortConnection()

        self._dialing.addCallbacks(connected, failed)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()
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

    def update(self) -> list[int]:
        """
        Listen on the port of every TCP edge the server has now, and stop
        listening on the others.

        @return: the ports that could not be listened on.
        @raise CannotListenError: never; a port that cannot be bound is
            logged and returned.
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
                _log.error(
                    "cannot listen on port {port} for edge {edge}: {error}",
                    port=port,
                    edge=self.server.edges.tcp[port].id,
                    error=str(error),
                )
                failed.append(port)
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
