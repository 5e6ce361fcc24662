"""
One request and one reply over a stream, and the hand-over of proxy streams.

The opener of a stream writes one request and the other side writes one
reply, then both close. L{call} is the opener's side; L{RpcServerProtocol}
is the other side, which also recognises a proxy header and gives the rest
of the stream to the protocol that carries the public connection. Both work
over any Twisted transport, so they are tested without the multiplexer.
"""

from enum import Enum, auto
from typing import Any, Callable, Generic, TypeVar, cast

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IProtocol,
    IReactorTime,
    ITransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from tunnelkit.addresses import format_address
from tunnelkit.control.messages import (
    MAX_MESSAGE_SIZE,
    Envelope,
    ErrorReply,
    Message,
    MessageReader,
    ProxyHeader,
    Request,
    decode_message,
    encode_error,
    encode_message,
)
from tunnelkit.errors import TunnelkitError

_log = Logger()

DEFAULT_READ_TIMEOUT = 10.0
"""Seconds a server stream waits for its first message before closing."""

_R = TypeVar("_R", bound=Message)
_Q = TypeVar("_Q", bound=Request[Any])

OpenStream = Callable[[IProtocol], Deferred[Any]]
"""Connect a protocol to a new stream; the Deferred fails if that fails."""

ProxyAcceptor = Callable[[ProxyHeader, ITransport, bytes], IProtocol]
"""Given a proxy header, the stream and the bytes already read after the
header, return the protocol that carries the public connection."""


class RemoteError(TunnelkitError):
    """
    The peer answered a request with an C{error} reply, whose code and
    sentence this error carries.
    """


def _abort(transport: Any) -> None:
    """
    Close a transport at once, or as soon as it can if it cannot abort.

    @param transport: an L{ITransport} provider.
    """
    abort = getattr(transport, "abortConnection", None)
    if abort is not None:
        abort()
    else:
        transport.loseConnection()


def call(
    open_stream: OpenStream,
    request: Request[_R],
    timeout: float,
    clock: IReactorTime,
    max_size: int = MAX_MESSAGE_SIZE,
) -> Deferred[_R]:
    """
    Send one request on a new stream and wait for its reply.

    The request is written, the write side is half-closed if the transport
    has C{loseWriteConnection}, one reply is read, and the stream is closed.
    Cancelling the returned Deferred aborts the stream.

    @param open_stream: connects the given protocol to a new stream.
    @param request: the request to send.
    @param timeout: seconds from now until the call fails, stream opening
        included.
    @param clock: the clock the timeout runs on.
    @param max_size: the largest JSON payload sent or accepted, in bytes.
    @return: a Deferred that fires with the reply, an instance of the
        request's C{RESPONSE} class. It fails with L{RemoteError} for an
        C{error} reply; with L{TunnelkitError} C{TK_RPC_CLOSED} if the
        stream ends first, C{TK_BAD_MESSAGE} or C{TK_PROTOCOL_VERSION} for
        a reply that cannot be used, C{TK_RPC_TIMEOUT}, or
        C{TK_MESSAGE_TOO_LARGE} for a request too long to send; or with
        whatever failure C{open_stream} gives.
    """
    exchange = _Call(request, max_size)
    return exchange.start(open_stream, timeout, clock)


@implementer(IHalfCloseableProtocol)
class _Call(Protocol, Generic[_R]):
    """
    The opener's side of one RPC stream.

    @ivar result: fires once, with the reply or a failure.
    """

    def __init__(self, request: Request[_R], max_size: int) -> None:
        self._request = request
        self._max_size = max_size
        self._reader = MessageReader(max_size, max_messages=1)
        self._done = False
        self._timer: IDelayedCall | None = None
        self._opening: Deferred[Any] | None = None
        self.result: Deferred[_R] = Deferred(self._cancel)

    def start(
        self, open_stream: OpenStream, timeout: float, clock: IReactorTime
    ) -> Deferred[_R]:
        """
        Open the stream and start the timeout.

        @return: L{result}.
        """
        try:
            self._payload = encode_message(self._request, self._max_size)
        except TunnelkitError as error:
            self._finish(error)
            return self.result
        self._timeout = timeout
        self._timer = clock.callLater(timeout, self._time_out)
        try:
            self._opening = open_stream(self)
        except Exception:
            self._finish(Failure())
            return self.result
        self._opening.addBoth(self._opened)
        return self.result

    def _opened(self, outcome: object) -> None:
        self._opening = None
        if isinstance(outcome, Failure):
            self._finish(outcome, abort=True)

    def connectionMade(self) -> None:
        if self._done:
            _abort(self.transport)
            return
        transport = cast(ITransport, self.transport)
        transport.write(self._payload)
        lose_write = getattr(transport, "loseWriteConnection", None)
        if lose_write is not None:
            lose_write()

    def dataReceived(self, data: bytes) -> None:
        if self._done:
            return
        try:
            envelopes = self._reader.feed(data)
        except TunnelkitError as error:
            self._finish(error, abort=True)
            return
        if envelopes:
            self._finish(self._reply(envelopes[0]))

    def _reply(self, envelope: Envelope) -> "_R | TunnelkitError":
        """
        Check and decode the reply.

        @return: the reply, or the error the call fails with.
        """
        request_type = self._request.TYPE
        expected = self._request.RESPONSE
        if envelope.type not in (expected.TYPE, ErrorReply.TYPE):
            return TunnelkitError(
                "TK_BAD_MESSAGE",
                f"The peer answered {request_type} with a message of another"
                f" type than {expected.TYPE} or error; check that agent and"
                " edge run compatible tunnelkit versions.",
            )
        try:
            reply = decode_message(envelope)
        except TunnelkitError as error:
            return error
        if isinstance(reply, ErrorReply):
            return RemoteError(reply.code, reply.message)
        return cast(_R, reply)

    def readConnectionLost(self) -> None:
        self._finish_closed()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.connected = False
        self._finish_closed()

    def _finish_closed(self) -> None:
        self._finish(
            TunnelkitError(
                "TK_RPC_CLOSED",
                f"The stream closed before the reply to {self._request.TYPE}"
                " arrived; the connection to the peer may have ended, so"
                " reconnect and try again.",
            )
        )

    def _time_out(self) -> None:
        self._timer = None
        self._finish(
            TunnelkitError(
                "TK_RPC_TIMEOUT",
                f"No reply to {self._request.TYPE} came within {self._timeout}"
                " seconds; the peer may be overloaded or the connection stalled.",
            ),
            abort=True,
        )

    def _cancel(self, result: "Deferred[_R]") -> None:
        self._stop(abort=True)

    def _stop(self, abort: bool) -> None:
        """
        Stop the timer and close the stream, once.
        """
        self._done = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self.connected:
            if abort:
                _abort(self.transport)
            else:
                cast(ITransport, self.transport).loseConnection()
        elif self._opening is not None:
            self._opening.cancel()

    def _finish(self, outcome: "_R | Exception | Failure", abort: bool = False) -> None:
        """
        Close up and fire L{result} with C{outcome}, unless already done.
        """
        if self._done:
            return
        self._stop(abort)
        if isinstance(outcome, (Exception, Failure)):
            self.result.errback(outcome)
        else:
            self.result.callback(outcome)


class RpcDispatch:
    """
    What one side of the session answers: a handler per request class, and
    what to do with proxy streams.

    A handler takes the request and returns the reply, a Deferred of it, or
    a coroutine of it. A L{TunnelkitError} it raises becomes an C{error}
    reply with that code and sentence; any other exception becomes
    C{TK_INTERNAL}, and only the log says more.

    @ivar on_proxy: called with a proxy header, the stream, and the bytes
        already read after the header (for inspection only: they are also
        delivered to the returned protocol with C{dataReceived}); returns
        the protocol the stream is handed to. C{None} refuses proxy streams.
    """

    def __init__(self, on_proxy: ProxyAcceptor | None = None) -> None:
        self.on_proxy = on_proxy
        self._handlers: dict[type[Message], Callable[[Any], Any]] = {}

    def register(self, request_class: type[_Q], handler: Callable[[_Q], Any]) -> None:
        """
        Answer requests of one class with C{handler}, in place of any earlier.

        @param request_class: a L{Request} subclass.
        @param handler: returns the reply for a request.
        """
        self._handlers[request_class] = handler

    def handler_for(self, request: Message) -> Callable[[Any], Any] | None:
        """
        @param request: a decoded message.
        @return: the handler registered for its class, or C{None}.
        """
        return self._handlers.get(type(request))


class _Phase(Enum):
    """
    The life of a server stream.
    """

    READING = auto()  # waiting for the first message
    ANSWERING = auto()  # a handler is working on the request
    PROXYING = auto()  # the stream belongs to the protocol from on_proxy
    FINISHED = auto()  # replied, refused, or lost


@implementer(IHalfCloseableProtocol)
class RpcServerProtocol(Protocol):
    """
    The receiving side of one stream: answer the request on it, or hand a
    proxy stream to its protocol.

    The first message must arrive within the read timeout, or the stream
    is closed. Bytes after a request are ignored.
    """

    def __init__(
        self,
        dispatch: RpcDispatch,
        clock: IReactorTime,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        max_size: int = MAX_MESSAGE_SIZE,
    ) -> None:
        """
        @param dispatch: the handlers to answer with.
        @param clock: the clock the read timeout runs on.
        @param read_timeout: seconds to wait for the first message.
        @param max_size: the largest JSON payload accepted or sent, in bytes.
        """
        self._dispatch = dispatch
        self._clock = clock
        self._read_timeout = read_timeout
        self._max_size = max_size
        self._reader = MessageReader(max_size, max_messages=1)
        self._phase = _Phase.READING
        self._timer: IDelayedCall | None = None
        self._proxied: IProtocol | None = None

    def _peer(self) -> IAddress:
        return cast(ITransport, self.transport).getPeer()

    def connectionMade(self) -> None:
        self._timer = self._clock.callLater(self._read_timeout, self._time_out)

    def dataReceived(self, data: bytes) -> None:
        if self._phase is _Phase.PROXYING:
            cast(IProtocol, self._proxied).dataReceived(data)
            return
        if self._phase is not _Phase.READING:
            return
        try:
            envelopes = self._reader.feed(data)
        except TunnelkitError as error:
            self._refuse(error)
            return
        if envelopes:
            self._stop_timer()
            self._take(envelopes[0])

    def _take(self, envelope: Envelope) -> None:
        """
        Act on the first message: answer it, or hand the stream over.
        """
        try:
            message = decode_message(envelope)
        except TunnelkitError as error:
            if envelope.type == ProxyHeader.TYPE:
                self._drop_proxy(error.message)
            else:
                self._refuse(error)
            return
        if isinstance(message, ProxyHeader):
            self._hand_over(message)
            return
        handler = self._dispatch.handler_for(message)
        if handler is None:
            self._refuse(
                TunnelkitError(
                    "TK_UNKNOWN_MESSAGE",
                    f"This side does not accept {message.TYPE} requests; check"
                    " that agent and edge run compatible tunnelkit versions.",
                )
            )
            return
        self._phase = _Phase.ANSWERING
        request = cast(Request[Any], message)
        answer = maybeDeferred(handler, request)
        answer.addCallbacks(
            self._reply_payload,
            self._error_payload,
            callbackArgs=(request,),
            errbackArgs=(request,),
        )
        answer.addErrback(self._internal_error_payload, request)
        answer.addCallback(self._send)
        answer.addErrback(
            lambda failure: _log.failure("could not send a reply", failure)
        )

    def _reply_payload(self, reply: object, request: Request[Any]) -> bytes:
        if not isinstance(reply, request.RESPONSE):
            raise TypeError(
                f"the {request.TYPE} handler returned {type(reply).__name__},"
                f" not {request.RESPONSE.__name__}"
            )
        return encode_message(reply, self._max_size)

    def _error_payload(self, failure: Failure, request: Request[Any]) -> bytes:
        if failure.check(TunnelkitError):
            error = cast(TunnelkitError, failure.value)
            return encode_error(error.code, error.message)
        return self._internal_error_payload(failure, request)

    def _internal_error_payload(self, failure: Failure, request: Request[Any]) -> bytes:
        _log.failure(
            "answering {type} from {peer} failed",
            failure,
            type=request.TYPE,
            peer=format_address(self._peer()),
        )
        return encode_error(
            "TK_INTERNAL",
            f"The peer failed while answering {request.TYPE}; its log says why.",
        )

    def _send(self, payload: bytes) -> None:
        """
        Write the reply and close, unless the stream is gone already.
        """
        if self._phase is not _Phase.ANSWERING:
            return
        self._phase = _Phase.FINISHED
        transport = cast(ITransport, self.transport)
        transport.write(payload)
        transport.loseConnection()

    def _refuse(self, error: TunnelkitError) -> None:
        """
        Answer bad input from the peer with an error reply and close.
        """
        _log.warn(
            "refused a stream from {peer}: {code}: {reason}",
            peer=format_address(self._peer()),
            code=error.code,
            reason=error.message,
        )
        self._stop_timer()
        self._phase = _Phase.FINISHED
        transport = cast(ITransport, self.transport)
        transport.write(encode_error(error.code, error.message))
        transport.loseConnection()

    def _drop_proxy(self, why: str) -> None:
        """
        Close a proxy stream this side cannot take; it has no reply.
        """
        _log.warn(
            "dropped a proxy stream from {peer}: {why}",
            peer=format_address(self._peer()),
            why=why,
        )
        self._phase = _Phase.FINISHED
        _abort(self.transport)

    def _hand_over(self, header: ProxyHeader) -> None:
        """
        Give the stream to the protocol C{on_proxy} returns, with the bytes
        read after the header.
        """
        on_proxy = self._dispatch.on_proxy
        if on_proxy is None:
            self._drop_proxy("this side accepts no proxy streams")
            return
        transport = cast(ITransport, self.transport)
        remainder = self._reader.unconsumed
        try:
            protocol = on_proxy(header, transport, remainder)
        except Exception:
            _log.failure(
                "no protocol for a proxy stream to binding {binding_id}",
                binding_id=header.binding_id,
            )
            self._phase = _Phase.FINISHED
            _abort(transport)
            return
        self._phase = _Phase.PROXYING
        self._proxied = protocol
        if getattr(transport, "protocol", None) is self:
            transport.protocol = protocol  # type: ignore[attr-defined]
        try:
            protocol.makeConnection(transport)
            if remainder:
                protocol.dataReceived(remainder)
        except Exception:
            _log.failure(
                "the protocol of a proxy stream to binding {binding_id} failed",
                binding_id=header.binding_id,
            )
            _abort(transport)

    def _time_out(self) -> None:
        self._timer = None
        _log.warn(
            "no message from {peer} within {timeout} seconds; closing the stream",
            peer=format_address(self._peer()),
            timeout=self._read_timeout,
        )
        self._phase = _Phase.FINISHED
        _abort(self.transport)

    def _stop_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def readConnectionLost(self) -> None:
        if self._phase is _Phase.PROXYING:
            half = IHalfCloseableProtocol(self._proxied, None)
            if half is not None:
                half.readConnectionLost()
            else:
                cast(ITransport, self.transport).loseConnection()
        elif self._phase is _Phase.READING:
            if self._reader.unconsumed:
                _log.warn(
                    "stream from {peer} ended inside its first message",
                    peer=format_address(self._peer()),
                )
            self._stop_timer()
            self._phase = _Phase.FINISHED
            cast(ITransport, self.transport).loseConnection()

    def writeConnectionLost(self) -> None:
        if self._phase is _Phase.PROXYING:
            half = IHalfCloseableProtocol(self._proxied, None)
            if half is not None:
                half.writeConnectionLost()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._stop_timer()
        if self._phase is _Phase.PROXYING:
            cast(IProtocol, self._proxied).connectionLost(reason)
        else:
            self._phase = _Phase.FINISHED


class RpcServerFactory(Factory):
    """
    Build an L{RpcServerProtocol} for each stream the peer opens.
    """

    def __init__(
        self,
        dispatch: RpcDispatch,
        clock: IReactorTime,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        max_size: int = MAX_MESSAGE_SIZE,
    ) -> None:
        """
        @param dispatch: the handlers every stream answers with.
        @param clock: the clock read timeouts run on.
        @param read_timeout: seconds a stream may wait for its first message.
        @param max_size: the largest JSON payload accepted or sent, in bytes.
        """
        self.dispatch = dispatch
        self.clock = clock
        self.read_timeout = read_timeout
        self.max_size = max_size

    def buildProtocol(self, addr: IAddress | None) -> RpcServerProtocol:
        protocol = RpcServerProtocol(
            self.dispatch, self.clock, self.read_timeout, self.max_size
        )
        protocol.factory = self
        return protocol
