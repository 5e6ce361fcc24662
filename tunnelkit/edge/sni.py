"""
The edge's HTTPS port, shared by HTTPS and TLS tunnels: each connection's
ClientHello is read first, and its server name (SNI) decides what happens.

  - A name a TLS tunnel serves is passed through: the hello and every byte
    after it go, untouched, over one proxied stream to the agent, which
    holds the keys.
  - A name an HTTP tunnel serves is terminated here with the edge's
    certificate and served as HTTP, as on an HTTPS-only port.
  - A hello without a name, or with a name nobody serves, is answered with
    a fatal C{unrecognized_name} alert and closed; a name whose tunnel is
    offline, with an C{internal_error} alert.
  - A hello that is malformed, larger than the limit, or not complete
    within the timeout is closed without an answer.

What a name leads to is the router's answer
(L{tunnelkit.interfaces.ISniRouter.route_sni}), so
other kinds of destination (labeled tunnels behind an edge's backend) plug
in there. L{SniDispatch} is a thin adapter around the sans-IO
L{tunnelkit.edge.clienthello.ClientHelloReader}: it holds the bytes read
until the hello is complete, at most the reader's limit, and then splices
them and the rest of the connection to the destination, or feeds them to
the terminating TLS protocol as if they had just arrived.
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IProtocolFactory,
    IReactorTime,
)
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from tunnelkit.addresses import format_address
from tunnelkit.control.messages import ProxyHeader, encode_message
from tunnelkit.edge.clienthello import MAX_HELLO_SIZE, ClientHelloReader, HelloOutcome
from tunnelkit.errors import TunnelkitError
from tunnelkit.interfaces import IPassthrough, ISniRouter
from tunnelkit.sockets import set_no_delay
from tunnelkit.splice import SpliceEnd, splice

if TYPE_CHECKING:
    from tunnelkit.edge.session import EdgeSession

_log = Logger()

HELLO_TIMEOUT = 10.0
"""Seconds a client has, from connecting, to send its whole ClientHello."""

UNRECOGNIZED_NAME = 112
"""The TLS alert for a server name nobody serves (RFC 6066 section 3)."""

INTERNAL_ERROR = 80
"""The TLS alert for a name whose tunnel cannot take the connection now."""


def fatal_alert(description: int) -> bytes:
    """
    @param description: the alert's description, such as
        L{UNRECOGNIZED_NAME}.
    @return: a TLS record holding one fatal alert, as a server that has
        not chosen a version yet may send it (record version TLS 1.2).
    """
    return bytes([21, 3, 3, 0, 2, 2, description])


class Terminate:
    """
    The destination of a name the edge terminates TLS for and serves as
    HTTP.
    """

    def __repr__(self) -> str:
        return "TERMINATE"


TERMINATE = Terminate()
"""The one L{Terminate}."""


@implementer(IPassthrough)
@dataclass(eq=False)
class TlsBinding:
    """
    A public host name bound for one TLS tunnel, whose connections pass
    through to the agent untouched.

    @ivar binding_id: the id the agent gave the binding.
    @ivar name: the host, or a wildcard such as C{*.example.com}.
    @ivar url: the public URL, C{tls://NAME} (with the port when not 443).
    @ivar forwards_to: the agent's local address, for display.
    @ivar session_id: the id of the session that holds the name.
    @ivar owner: the name of the authtoken that holds it.
    @ivar session: the agent session serving it, or C{None} while that
        session is gone and the name is in its grace period.
    @ivar expires: when the grace period ends, or C{None} while connected.
    @ivar open_connections: public connections open now.
    @ivar total_connections: public connections since the binding was made.
    """

    binding_id: str
    name: str
    url: str
    forwards_to: str
    session_id: str
    owner: str
    session: "EdgeSession | None" = None
    expires: float | None = None
    open_connections: int = 0
    total_connections: int = 0

    def open_passthrough(self, end: SpliceEnd, client: IAddress | None) -> None:
        session = self.session
        if session is None:
            raise TunnelkitError(
                "TK_TUNNEL_OFFLINE",
                f"The tunnel {self.name} is offline: its agent is not connected"
                " right now.",
            )
        header = encode_message(
            ProxyHeader(
                binding_id=self.binding_id,
                client_addr=format_address(client),
                proto="tls",
                passthrough_tls=True,
            )
        )
        stream = _PassthroughStream(self, header)
        opened = session.mux.open_stream(stream)
        self.open_connections += 1
        self.total_connections += 1
        stream.counted = True
        opened.addErrback(self._not_opened, client)
        splice(end, stream)

    def _not_opened(self, reason: Failure, client: IAddress | None) -> None:
        _log.warn(
            "agent did not take connection from {client} to {url}: {error}",
            client=format_address(client),
            url=self.url,
            error=reason.getErrorMessage(),
        )


class _PassthroughStream(SpliceEnd):
    """
    The edge's end of a passed-through connection's stream: the header,
    then the client's bytes from its ClientHello on.
    """

    def __init__(self, binding: TlsBinding, header: bytes) -> None:
        super().__init__()
        self.binding = binding
        self.header = header
        self.counted = False

    def connectionMade(self) -> None:
        self.transport.write(self.header)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.counted:
            self.counted = False
            self.binding.open_connections -= 1
        super().connectionLost(reason)


class SniDispatch(SpliceEnd):
    """
    One connection to the HTTPS port: reads its ClientHello, then becomes
    one end of a passthrough splice, or hands the connection to the
    terminating TLS protocol and forwards to it whatever arrives.
    """

    def __init__(self, factory: "SniDispatchFactory", client: IAddress | None) -> None:
        super().__init__()
        self.factory = factory
        self.client = client
        self._reader = ClientHelloReader(factory.limit)
        self._read: list[bytes] = []
        self._state = "hello"
        self._terminated: Any = None
        self._timer: IDelayedCall | None = None

    def connectionMade(self) -> None:
        set_no_delay(self.transport)
        self._timer = self.factory.clock.callLater(
            self.factory.timeout, self._timed_out
        )

    def dataReceived(self, data: bytes) -> None:
        state = self._state
        if state == "passthrough":
            SpliceEnd.dataReceived(self, data)
        elif state == "terminated":
            self._terminated.dataReceived(data)
        elif state == "hello":
            self._read.append(data)
            reading = self._reader.feed(data)
            outcome = reading.outcome
            if outcome is HelloOutcome.NEED_MORE:
                return
            self._cancel_timer()
            hello, self._read = b"".join(self._read), []
            if outcome is HelloOutcome.NAME:
                self._dispatch(reading.name, hello)
            elif outcome is HelloOutcome.NO_SNI:
                self._refuse(UNRECOGNIZED_NAME, "TK_TLS_NO_SNI", None)
            else:
                self._state = "closed"
                _log.warn(
                    "closing connection from {client}: {problem}",
                    client=format_address(self.client),
                    problem=reading.problem,
                    code=(
                        "TK_TLS_HELLO_TOO_LARGE"
                        if outcome is HelloOutcome.TOO_LARGE
                        else "TK_TLS_HELLO_MALFORMED"
                    ),
                )
                self.transport.loseConnection()

    def _dispatch(self, name: str, hello: bytes) -> None:
        destination = self.factory.router.route_sni(name)
        if destination is None:
            self._refuse(UNRECOGNIZED_NAME, "TK_TLS_NAME_UNKNOWN", name)
        elif destination is TERMINATE:
            self._terminate(hello)
        else:
            self._state = "passthrough"
            self._early.append(hello)
            try:
                IPassthrough(destination).open_passthrough(self, self.client)
            except TunnelkitError as error:
                self._state = "closed"
                self._early.clear()
                self._refuse(INTERNAL_ERROR, error.code, name)

    def _terminate(self, hello: bytes) -> None:
        """
        Terminate TLS at the edge: the terminating protocol takes the
        connection over as if it had been connected from the start.
        """
        self._state = "terminated"
        protocol = self.factory.terminating.buildProtocol(self.client)
        self._terminated = protocol
        protocol.makeConnection(self.transport)
        protocol.dataReceived(hello)

    def _refuse(self, alert: int, code: str, name: str | None) -> None:
        self._state = "closed"
        _log.info(
            "refused TLS connection from {client} for {name}: {code}",
            client=format_address(self.client),
            name=name if name is not None else "(no server name)",
            code=code,
        )
        self.transport.write(fatal_alert(alert))
        self.transport.loseConnection()

    def _timed_out(self) -> None:
        self._timer = None
        if self._state != "hello":
            return
        self._state = "closed"
        _log.info(
            "closing connection from {client}: no complete ClientHello in"
            " {timeout}s",
            client=format_address(self.client),
            timeout=self.factory.timeout,
            code="TK_TLS_HELLO_TIMEOUT",
        )
        self.transport.loseConnection()

    def _cancel_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def readConnectionLost(self) -> None:
        state = self._state
        if state == "passthrough":
            SpliceEnd.readConnectionLost(self)
            return
        self._state = "closed"
        self._cancel_timer()
        if state == "terminated":
            # The terminating protocol does not take half-closes: it ends,
            # as it would on a transport that does not offer them.
            self._terminated.connectionLost(Failure(ConnectionDone()))
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        if self._state == "passthrough":
            SpliceEnd.writeConnectionLost(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        state, self._state = self._state, "closed"
        self._cancel_timer()
        self._read = []
        if state == "terminated":
            self._terminated.connectionLost(reason)
        elif state == "passthrough":
            SpliceEnd.connectionLost(self, reason)
        else:
            self.lost = True


class SniDispatchFactory(Factory):
    """
    Builds an L{SniDispatch} for each connection to the HTTPS port.

    @ivar router: the L{ISniRouter} that says where each name goes.
    @ivar terminating: the factory of the TLS protocol that terminates
        connections at the edge (wrapping the HTTP ingress).
    @ivar clock: times each connection's hello.
    @ivar timeout: seconds a client has to send its whole hello.
    @ivar limit: the most bytes read looking for the hello.
    """

    noisy = False

    def __init__(
        self,
        router: ISniRouter,
        terminating: IProtocolFactory,
        clock: IReactorTime,
        timeout: float = HELLO_TIMEOUT,
        limit: int = MAX_HELLO_SIZE,
    ) -> None:
        self.router = router
        self.terminating = terminating
        self.clock = clock
        self.timeout = timeout
        self.limit = limit

    def doStart(self) -> None:
        super().doStart()
        self.terminating.doStart()

    def doStop(self) -> None:
        self.terminating.doStop()
        super().doStop()

    def buildProtocol(self, addr: IAddress | None) -> SniDispatch:
        return SniDispatch(self, addr)
