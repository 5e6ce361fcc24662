"""
The Twisted side of a yamux session: a protocol for the connection and a
transport for each stream.

L{MuxProtocol} feeds the connection's bytes to a L{MuxSession}, writes what
it queues, and runs the timers the sans-IO core leaves out (keepalive pings,
stream open timeouts). Each stream is a L{StreamTransport}, so any ordinary
L{IProtocol} can run on it; it is a push producer towards its protocol and a
consumer of whatever writes into it, which is how a slow reader on one end
of a tunnel pauses the writer on the other.
"""

from collections import deque
from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IDelayedCall,
    IHalfCloseableProtocol,
    IProtocol,
    IProtocolFactory,
    IPushProducer,
    IReactorTime,
    ITransport,
)
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from tunnelkit.addresses import format_address
from tunnelkit.errors import TunnelkitError
from tunnelkit.interfaces import IPiecesReceiver
from tunnelkit.sockets import set_no_delay
from tunnelkit.mux.frames import GoAwayCode
from tunnelkit.mux.session import (
    BadStreamFrame,
    GoAwayReceived,
    MuxConfig,
    MuxSession,
    PongReceived,
    SendWindowOpened,
    SessionTerminated,
    StreamAccepted,
    StreamData,
    StreamEnded,
    StreamReset,
)

_log = Logger()


@implementer(IAddress)
class StreamAddress:
    """
    The address of one end of a stream: the connection's address and the
    stream id.
    """

    __slots__ = ("connection", "stream_id")

    def __init__(self, connection: Any, stream_id: int) -> None:
        self.connection = connection
        self.stream_id = stream_id

    def __repr__(self) -> str:
        return f"StreamAddress({self.connection!r}, {self.stream_id})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, StreamAddress)
            and other.connection == self.connection
            and other.stream_id == self.stream_id
        )

    def __hash__(self) -> int:
        return hash((self.connection, self.stream_id))


class StreamRefused(TunnelkitError):
    """
    The peer reset a stream we opened before accepting it.
    """

    def __init__(self) -> None:
        super().__init__(
            "TK_MUX_STREAM_REFUSED",
            "The other side refused the stream; it may be at its stream limit.",
        )


@implementer(ITransport, IConsumer, IPushProducer)
class StreamTransport:
    """
    One yamux stream as a Twisted transport.

    Writes beyond the stream's send window wait here, and the producer
    registered on the stream is paused until the peer's Window Update; the
    wait is bounded by that producer honouring the pause, as with a TCP
    transport. Reads are paused with L{pauseProducing}: data keeps arriving
    only up to the window already granted, and waits here.
    """

    disconnecting = False

    def __init__(self, mux: "MuxProtocol", stream_id: int) -> None:
        self._mux = mux
        self.stream_id = stream_id
        self.protocol: IProtocol | None = None
        # Created only when bytes have to wait: most streams never need them,
        # and two empty deques would be most of an idle stream's memory.
        self._pending: deque[bytes] | None = None
        self._inbound: deque[bytes] | None = None
        self._reading_paused = False
        self._producer: Any = None
        self._producer_paused = False
        self._pull = False
        self._pull_call: IDelayedCall | None = None
        self._write_closing = False
        self._fin_sent = False
        self._remote_ended = False
        self._end_delivered = False
        self._gone = False

    # ITransport

    def write(self, data: bytes) -> None:
        """
        Send bytes on the stream, or keep them until the window allows.
        """
        if self._gone or self._write_closing or not data:
            return
        mux = self._mux
        if self._pending or mux.writing_paused:
            self._hold(data)
            return
        sent = mux.session.send_data(self.stream_id, data)
        if sent < len(data):
            self._hold(data[sent:])
        elif self._pull:
            self._resume_producer()
        mux.flush()
        if mux.writing_paused:
            # This write filled the connection: the other streams go first
            # when it drains.
            mux._to_back(self.stream_id)

    def _hold(self, data: bytes) -> None:
        if self._pending is None:
            self._pending = deque()
        self._pending.append(data)
        self._pause_producer()
        # The window or the connection stopped this stream: it has had its
        # turn.
        self._mux._to_back(self.stream_id)

    def writeSequence(self, data: Any) -> None:
        """
        Send several chunks of bytes.
        """
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        """
        Close our side (FIN) once pending data is sent; the stream closes
        when the peer closes its side too.
        """
        self.disconnecting = True
        self.loseWriteConnection()

    def loseWriteConnection(self) -> None:
        """
        Half-close: send FIN after pending data; reading goes on.
        """
        if self._gone or self._write_closing:
            return
        self._write_closing = True
        if not self._pending:
            self._send_fin()

    def abortConnection(self) -> None:
        """
        Reset the stream (RST) at once, dropping pending data.
        """
        if self._gone:
            return
        self._mux.session.reset_stream(self.stream_id)
        self._mux.flush()
        self._lost(Failure(ConnectionAborted()))

    def getPeer(self) -> StreamAddress:
        """
        @return: the peer's connection address and this stream's id.
        """
        return StreamAddress(self._mux.peer, self.stream_id)

    def getHost(self) -> StreamAddress:
        """
        @return: the local connection address and this stream's id.
        """
        return StreamAddress(self._mux.host, self.stream_id)

    # IConsumer

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """
        Register what writes into this stream. A push producer is paused
        while the window is spent; a pull producer is asked for more, one
        reactor turn later, each time everything it wrote has been sent.
        """
        self._producer = producer
        self._producer_paused = False
        self._pull = not streaming
        if self._pending or self._mux.writing_paused:
            self._pause_producer()
        else:
            self._resume_producer()

    def unregisterProducer(self) -> None:
        """
        Forget the registered producer.
        """
        self._producer = None

    # IPushProducer: flow of data from the stream to its protocol

    def pauseProducing(self) -> None:
        """
        Stop delivering data to the protocol; the peer stops sending once
        the window it was granted is used.
        """
        self._reading_paused = True

    def resumeProducing(self) -> None:
        """
        Deliver data that waited and reopen the window.
        """
        self._reading_paused = False
        mux = self._mux
        inbound = self._inbound
        while inbound and not self._reading_paused and not self._gone:
            data = inbound.popleft()
            mux.session.consume(self.stream_id, len(data))
            self._deliver(data)
        if not self._inbound and self._remote_ended:
            self._deliver_end()
        mux.flush()

    def stopProducing(self) -> None:
        """
        Whatever consumed this stream's data is gone: close the stream after
        pending writes, as a TCP transport does.
        """
        self.loseConnection()

    # Driven by MuxProtocol

    def _connect(self, protocol: IProtocol) -> None:
        self.protocol = protocol
        try:
            protocol.makeConnection(self)
        except Exception:
            _log.failure(
                "stream protocol failed on connect; resetting stream {stream_id}",
                stream_id=self.stream_id,
            )
            self.abortConnection()

    def _data_received(self, data: bytes) -> None:
        if self._reading_paused or self._inbound:
            if self._inbound is None:
                self._inbound = deque()
            self._inbound.append(data)
            return
        self._mux.session.consume(self.stream_id, len(data))
        self._deliver(data)

    def _deliver(self, data: bytes) -> None:
        protocol = self.protocol
        if protocol is None:
            return
        try:
            protocol.dataReceived(data)
        except Exception:
            _log.failure(
                "stream protocol failed on data; resetting stream {stream_id}",
                stream_id=self.stream_id,
            )
            self.abortConnection()

    def _ended(self) -> None:
        self._remote_ended = True
        if not self._inbound:
            self._deliver_end()

    def _deliver_end(self) -> None:
        if self._end_delivered or self._gone:
            return
        self._end_delivered = True
        if self._fin_sent:
            self._lost(Failure(ConnectionDone()))
            return
        half = IHalfCloseableProtocol(self.protocol, None)
        if half is not None:
            try:
                half.readConnectionLost()
            except Exception:
                _log.failure("stream protocol failed on half-close")
                self.abortConnection()
        else:
            self.loseConnection()

    def _window_opened(self) -> None:
        if self._mux.writing_paused:
            return
        session = self._mux.session
        pending = self._pending
        while pending:
            head = pending[0]
            sent = session.send_data(self.stream_id, head)
            if sent < len(head):
                pending[0] = head[sent:]
                break
            pending.popleft()
        if not pending:
            if self._write_closing:
                self._send_fin()
            else:
                self._resume_producer()

    def _send_fin(self) -> None:
        if self._fin_sent or self._gone:
            return
        self._fin_sent = True
        self._mux.session.close_stream(self.stream_id)
        self._mux.flush()
        if self._end_delivered:
            self._lost(Failure(ConnectionDone()))

    def _pause_producer(self) -> None:
        if self._pull:
            return
        if self._producer is not None and not self._producer_paused:
            self._producer_paused = True
            self._producer.pauseProducing()

    def _resume_producer(self) -> None:
        if self._pull:
            if self._producer is not None and self._pull_call is None:
                self._pull_call = self._mux.clock.callLater(0, self._pull_more)
            return
        if self._producer is not None and self._producer_paused:
            self._producer_paused = False
            self._producer.resumeProducing()

    def _pull_more(self) -> None:
        self._pull_call = None
        if self._producer is not None and not self._gone:
            self._producer.resumeProducing()

    def _lost(self, reason: Failure) -> None:
        if self._gone:
            return
        self._gone = True
        self._pending = None
        self._inbound = None
        if self._pull_call is not None and self._pull_call.active():
            self._pull_call.cancel()
        self._mux._forget_stream(self.stream_id)
        protocol, self.protocol = self.protocol, None
        if self._producer is not None:
            producer, self._producer = self._producer, None
            try:
                producer.stopProducing()
            except Exception:
                _log.failure("producer failed to stop")
        if protocol is not None:
            try:
                protocol.connectionLost(reason)
            except Exception:
                _log.failure("stream protocol failed on connectionLost")


class _PendingOpen:
    """
    A stream we opened and the peer has not yet acknowledged.
    """

    __slots__ = ("deferred", "timeout")

    def __init__(self, deferred: Deferred, timeout: Optional[IDelayedCall]) -> None:
        self.deferred = deferred
        self.timeout = timeout


@implementer(IPushProducer, IPiecesReceiver)
class MuxProtocol(Protocol):
    """
    A yamux session on one connection.

    @ivar session: the sans-IO core.
    @ivar latency: the round trip of the last answered ping in seconds,
        or C{None} before the first one.
    @ivar close_reason: why the connection was lost, once it was.
    """

    # typing note: the session needs producers and abort from the
    # connection's transport, which no single Twisted interface declares.
    transport: Any

    def __init__(
        self,
        is_client: bool,
        clock: IReactorTime,
        stream_factory: IProtocolFactory | None = None,
        config: MuxConfig = MuxConfig(),
    ) -> None:
        """
        @param is_client: whether this side opens odd stream ids.
        @param clock: the reactor's time interface, for timers.
        @param stream_factory: builds a protocol for each stream the peer
            opens (C{buildProtocol} gets a L{StreamAddress}); without one,
            every stream the peer opens is refused.
        @param config: the session's limits.
        """
        self.session = MuxSession(is_client, config, self._accept)
        self.config = config
        self.clock = clock
        self.stream_factory = stream_factory
        self.streams: dict[int, StreamTransport] = {}
        self.writing_paused = False
        self.latency: float | None = None
        self.close_reason: Failure | None = None
        self._producer_unregistered = False
        self.peer: Any = None
        self.host: Any = None
        self._pending_opens: dict[int, _PendingOpen] = {}
        self._pings: dict[int, tuple[float, Deferred]] = {}
        self._keepalive_call: IDelayedCall | None = None
        self._keepalive_timeout_call: IDelayedCall | None = None
        self._keepalive_opaque: int | None = None
        self._closed = False
        self._when_closed: list[Deferred] = []
        self._dispatch: dict[type, Callable[[Any], None]] = {
            StreamAccepted: self._on_accepted,
            StreamEnded: self._on_ended,
            StreamReset: self._on_reset,
            SendWindowOpened: self._on_window,
            PongReceived: self._on_pong,
            GoAwayReceived: self._on_go_away,
            SessionTerminated: self._on_terminated,
            BadStreamFrame: self._on_bad_stream_frame,
        }

    # Connection life

    def connectionMade(self) -> None:
        self.peer = self.transport.getPeer()
        self.host = self.transport.getHost()
        set_no_delay(self.transport)
        self.transport.registerProducer(self, True)
        self._schedule_keepalive()

    def dataReceived(self, data: bytes) -> None:
        self._handle(self.session.receive_data(data))

    def piecesReceived(self, pieces: list[bytes]) -> None:
        """
        Take the bytes the link's TLS layer decrypted at once, as they are
        (see L{IPiecesReceiver}).
        """
        self._handle(self.session.receive_pieces(pieces))

    def _handle(self, events: list[Any]) -> None:
        dispatch = self._dispatch
        streams = self.streams
        for event in events:
            # Stream data is nearly every event: handled here, without the
            # dispatch table's extra call.
            if type(event) is StreamData:
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream._data_received(event.data)
            else:
                dispatch[type(event)](event)
        self.flush()

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        self._closed = True
        self.close_reason = reason
        if self.session.has_partial_frame() and not self.session.terminated:
            _log.warn(
                "connection from {peer} closed in the middle of a frame",
                peer=format_address(self.peer),
            )
        self._cancel_keepalive()
        lost = Failure(ConnectionLost(f"tunnel session closed: {reason.value}"))
        for stream in list(self.streams.values()):
            stream._lost(lost)
        for stream_id, pending in list(self._pending_opens.items()):
            self._fail_open(stream_id, lost)
        for _, (_, deferred) in list(self._pings.items()):
            deferred.errback(lost)
        self._pings.clear()
        waiting, self._when_closed = self._when_closed, []
        for deferred in waiting:
            deferred.callback(reason.value)

    def flush(self) -> None:
        """
        Write whatever the session has queued.
        """
        output = self.session.take_output()
        if output and self.transport is not None and not self._closed:
            self.transport.writeSequence(output)

    def when_closed(self) -> Deferred:
        """
        @return: a Deferred that fires with the exception that ended the
            connection (such as L{ConnectionDone}) when it is lost.
        """
        deferred: Deferred = Deferred()
        if self._closed:
            deferred.callback(self.close_reason and self.close_reason.value)
        else:
            self._when_closed.append(deferred)
        return deferred

    def go_away(self, code: GoAwayCode = GoAwayCode.NORMAL) -> None:
        """
        Accept no new streams from the peer and tell it so; streams already
        open go on.
        """
        self.session.go_away(code)
        self.flush()

    def close(self) -> None:
        """
        Send Go Away and close the connection after pending writes.
        """
        self.go_away()
        self._lose_connection()

    def _lose_connection(self) -> None:
        # A transport with a producer registered (TLS, for one) waits for it
        # to unregister before it closes, so the session stops being one.
        if self.transport is None or self._closed:
            return
        if not self._producer_unregistered:
            self._producer_unregistered = True
            self.transport.unregisterProducer()
        self.transport.loseConnection()

    # Streams

    def open_stream(self, protocol: IProtocol) -> Deferred:
        """
        Open a stream and connect C{protocol} to it at once; data it writes
        may reach the peer before the peer accepts, as yamux allows.

        @return: a Deferred that fires with C{protocol} when the peer
            accepts the stream, or fails with L{StreamRefused}, a
            C{TK_MUX_OPEN_TIMEOUT} L{TunnelkitError}, or the session's end.
            On failure the protocol also sees C{connectionLost}.
        """
        if self._closed:
            raise TunnelkitError(
                "TK_MUX_GOING_AWAY", "The tunnel session is closed; reconnect first."
            )
        stream_id = self.session.open_stream()
        deferred: Deferred = Deferred()
        timeout = None
        if self.config.stream_open_timeout:
            timeout = self.clock.callLater(
                self.config.stream_open_timeout, self._open_timed_out, stream_id
            )
        self._pending_opens[stream_id] = _PendingOpen(deferred, timeout)
        stream = self.streams[stream_id] = StreamTransport(self, stream_id)
        deferred.addCallback(lambda _: protocol)
        stream._connect(protocol)
        self.flush()
        return deferred

    def _open_timed_out(self, stream_id: int) -> None:
        pending = self._pending_opens.get(stream_id)
        if pending is None:
            return
        pending.timeout = None
        _log.warn(
            "stream {stream_id} to {peer} not accepted within {timeout}s; resetting",
            stream_id=stream_id,
            peer=format_address(self.peer),
            timeout=self.config.stream_open_timeout,
        )
        self._fail_open(
            stream_id,
            Failure(
                TunnelkitError(
                    "TK_MUX_OPEN_TIMEOUT",
                    "The other side did not accept the stream in time; it may be"
                    " overloaded or the connection may be dead.",
                )
            ),
        )
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.abortConnection()

    def _fail_open(self, stream_id: int, reason: Failure) -> None:
        pending = self._pending_opens.pop(stream_id, None)
        if pending is None:
            return
        if pending.timeout is not None and pending.timeout.active():
            pending.timeout.cancel()
        pending.deferred.errback(reason)

    def _to_back(self, stream_id: int) -> None:
        # Streams are resumed in the order of self.streams: moving each one
        # that has had its turn (it filled the connection or spent its
        # window) to the end shares the connection among the streams that
        # have something to send, round by round.
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            self.streams[stream_id] = stream

    def _forget_stream(self, stream_id: int) -> None:
        self.streams.pop(stream_id, None)
        self._fail_open(stream_id, Failure(ConnectionLost("stream closed")))

    # Events from the session

    def _accept(self, stream_id: int) -> Callable[[], None] | None:
        # Called by the session as each SYN is read: build the stream's
        # protocol now, so the frames after the SYN find it.
        protocol = None
        if self.stream_factory is not None:
            address = StreamAddress(self.peer, stream_id)
            try:
                protocol = self.stream_factory.buildProtocol(address)
            except Exception:
                _log.failure("stream factory failed; refusing stream")
        if protocol is None:
            return None
        stream = self.streams[stream_id] = StreamTransport(self, stream_id)
        return lambda: stream._connect(protocol)

    def _on_accepted(self, event: StreamAccepted) -> None:
        pending = self._pending_opens.pop(event.stream_id, None)
        if pending is None:
            return
        if pending.timeout is not None and pending.timeout.active():
            pending.timeout.cancel()
        pending.deferred.callback(None)

    def _on_ended(self, event: StreamEnded) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is not None:
            stream._ended()

    def _on_reset(self, event: StreamReset) -> None:
        stream_id = event.stream_id
        if event.refused:
            self._fail_open(stream_id, Failure(StreamRefused()))
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream._lost(Failure(ConnectionLost("stream reset by the other side")))

    def _on_window(self, event: SendWindowOpened) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is not None:
            stream._window_opened()

    def _on_go_away(self, event: GoAwayReceived) -> None:
        if event.code == GoAwayCode.NORMAL:
            _log.info("{peer} is going away; no new streams", peer=self.peer)
            return
        _log.warn(
            "{peer} ended the session with Go Away code {code}",
            peer=format_address(self.peer),
            code=event.code,
        )
        self._lose_connection()

    def _on_terminated(self, event: SessionTerminated) -> None:
        _log.warn(
            "protocol error from {peer}: {reason}; sending Go Away {code}",
            peer=format_address(self.peer),
            reason=event.reason,
            code=int(event.code),
        )
        self.flush()
        self._lose_connection()

    def _on_bad_stream_frame(self, event: BadStreamFrame) -> None:
        _log.warn(
            "{reason} from {peer} (stream {stream_id}); answered with RST",
            reason=event.reason,
            peer=format_address(self.peer),
            stream_id=event.stream_id,
        )

    # Keepalive

    def ping(self) -> Deferred:
        """
        Send a ping.

        @return: a Deferred that fires with the round trip in seconds.
        """
        opaque = self.session.ping()
        deferred: Deferred = Deferred()
        self._pings[opaque] = (self.clock.seconds(), deferred)
        self.flush()
        return deferred

    def _on_pong(self, event: PongReceived) -> None:
        entry = self._pings.pop(event.opaque, None)
        if entry is None:
            return
        started, deferred = entry
        self.latency = self.clock.seconds() - started
        deferred.callback(self.latency)

    def _schedule_keepalive(self) -> None:
        if self.config.keepalive_interval and not self._closed:
            self._keepalive_call = self.clock.callLater(
                self.config.keepalive_interval, self._send_keepalive
            )

    def _send_keepalive(self) -> None:
        self._keepalive_call = None
        if self._closed:
            return
        deferred = self.ping()
        self._keepalive_timeout_call = self.clock.callLater(
            self.config.keepalive_timeout, self._keepalive_missed
        )
        deferred.addCallbacks(self._keepalive_answered, lambda _: None)

    def _keepalive_answered(self, latency: float) -> None:
        call, self._keepalive_timeout_call = self._keepalive_timeout_call, None
        if call is not None and call.active():
            call.cancel()
        self._schedule_keepalive()

    def _keepalive_missed(self) -> None:
        self._keepalive_timeout_call = None
        _log.warn(
            "no keepalive answer from {peer} within {timeout}s; closing the session",
            peer=format_address(self.peer),
            timeout=self.config.keepalive_timeout,
        )
        if self.transport is not None:
            self.transport.abortConnection()

    def _cancel_keepalive(self) -> None:
        for call in (self._keepalive_call, self._keepalive_timeout_call):
            if call is not None and call.active():
                call.cancel()
        self._keepalive_call = self._keepalive_timeout_call = None

    # IPushProducer: the connection's write buffer pauses every stream

    def pauseProducing(self) -> None:
        self.writing_paused = True
        for stream in list(self.streams.values()):
            stream._pause_producer()

    def resumeProducing(self) -> None:
        self.writing_paused = False
        for stream in list(self.streams.values()):
            stream._window_opened()
        self.flush()

    def stopProducing(self) -> None:
        self.writing_paused = True
