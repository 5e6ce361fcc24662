"""
The edge's end of the streams that carry a public HTTP connection's
requests: a proxied stream to an agent, or a connection the edge makes
itself to a static address; what comes back goes to the client byte for
byte. Also what an HTTPS edge's backend is asked (L{http_request}) and the
response of an HTTP response backend (L{fixed_response}).

The protocol of the public connection, L{tunnelkit.edge.http.HttpIngress},
writes to a L{RequestStream}, which keeps the bytes while a static address
is being connected and passes the answer back to it.
"""

from http import HTTPStatus
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure

from tunnelkit.agent.dial import UPSTREAM_CONNECT_TIMEOUT, UpstreamEndpoint, client_tls
from tunnelkit.edge.routes import ServedEdge
from tunnelkit.edge.routing import BackendRequest, FixedResponse, StaticAddress
from tunnelkit.tlstransport import wrap_client_tls, write_through


class RequestStream(Protocol):
    """
    The edge's end of the stream that carries one public connection's
    requests to the agent or a static address; what comes back goes to the
    client.

    @ivar connecting: while a static address is being connected, the
        attempt; C{None} once connected, and for a stream to an agent.
    """

    # typing note: stream transports offer half-close, producers and abort,
    # which no single Twisted interface declares.
    transport: Any

    def __init__(self, ingress: Any, header: bytes) -> None:
        """
        @param ingress: the public connection's L{HttpIngress
            <tunnelkit.edge.http.HttpIngress>}.
        @param header: the proxy header to write first, or C{b""}.
        """
        self.ingress = ingress
        self.header = header
        self.answered = False
        self.connecting: Deferred[Any] | None = None
        self._pending: list[bytes] = []
        self._half_closed = False

    def connectionMade(self) -> None:
        if self.header:
            self.transport.write(self.header)
        if self.connecting is None:
            return
        self.connecting = None
        pending, self._pending = self._pending, []
        self.transport.writeSequence(pending)
        self.ingress.stream_connected(self, resume=True)
        if self._half_closed:
            self.transport.loseWriteConnection()

    def send(self, data: bytes) -> None:
        """
        Write to the stream, or keep the bytes until it connects.
        """
        if self.connecting is not None:
            self._pending.append(data)
        elif self.transport is not None:
            self.transport.write(data)

    def half_close(self) -> None:
        """
        End the client's side of the stream, once it connects if it has not.
        """
        if self.connecting is not None:
            self._half_closed = True
        elif self.transport is not None:
            self.transport.loseWriteConnection()

    def abort(self) -> None:
        """
        Reset the stream, or give up connecting it.
        """
        connecting, self.connecting = self.connecting, None
        if connecting is not None:
            connecting.cancel()
        elif self.transport is not None:
            self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        self.answered = True
        ingress = self.ingress
        if ingress.upgrading:
            data = ingress.upgrade_answered(data)
        if ingress.lost:
            # The client has gone: reset the stream, so the agent stops
            # reading the upstream for nobody.
            self.transport.abortConnection()
            return
        write_through(ingress.transport, data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.ingress.stream_lost(self, reason)


def connect_static(reactor: Any, address: StaticAddress, stream: RequestStream) -> None:
    """
    Connect C{stream} to a static address (with TLS, not verified, when it
    asks for it); the attempt is in C{stream.connecting} until connected.
    """
    endpoint: Any = UpstreamEndpoint(
        reactor, address.host, address.port, UPSTREAM_CONNECT_TIMEOUT
    )
    if address.tls:
        endpoint = wrap_client_tls(client_tls(address.host), endpoint)
    factory = Factory.forProtocol(lambda: stream)
    factory.noisy = False
    stream.connecting = endpoint.connect(factory)


def http_request(
    edge: ServedEdge,
    host: str,
    path: str,
    client: str,
    now: float,
    headers: list[tuple[bytes, bytes]],
) -> BackendRequest:
    """
    @return: what an HTTPS edge's backend is asked about a request.
    """
    return BackendRequest(
        protocol="https",
        host=host,
        path=path,
        client=client,
        edge=edge.id,
        labels=edge.labels,
        time=now,
        headers=tuple(
            (name.decode("latin-1").lower(), value.decode("latin-1"))
            for name, value in headers
        ),
    )


def fixed_response(decision: FixedResponse, head_only: bool = False) -> bytes:
    """
    Render the response of an HTTP response backend, which closes the
    connection.

    @param head_only: leave the body out, for an answer to C{HEAD}.
    @return: the status line, headers and body.
    """
    try:
        reason = HTTPStatus(decision.status).phrase
    except ValueError:
        reason = ""
    lines = [f"HTTP/1.1 {decision.status} {reason}".encode("ascii")]
    for name, value in decision.headers:
        lines.append(f"{name}: {value}".encode("latin-1"))
    lines.append(b"Content-Length: %d" % len(decision.body))
    lines.append(b"Connection: close")
    body = b"" if head_only else decision.body
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
