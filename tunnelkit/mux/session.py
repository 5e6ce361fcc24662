"""
The yamux session as a sans-IO state machine: bytes in, events and bytes out.

L{MuxSession} knows nothing of sockets, reactors or clocks. Bytes received
from the peer go into L{MuxSession.receive_data}, which returns the events
they caused; everything the session wants to send accumulates until
L{MuxSession.take_output} collects it. Timers (keepalive, stream open
timeout) belong to whoever drives the session, see L{tunnelkit.mux.protocol}.

The life of one stream, as flags on L{_Stream}::

    opened by us      SYN sent ---(ACK)--> accepted
    opened by peer    SYN received ---(accept_stream: ACK sent)--> accepted
    either side       FIN sent / FIN received; both -> closed and forgotten
    any time          RST sent or received -> reset and forgotten

Data may flow before the ACK arrives, as the spec allows. Flow control is
per stream: the peer may send at most the receive window we advertised, and
we send at most the window it advertised to us. Windows start at 256 KiB and
grow only through Window Update frames.
"""

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Union

from tunnelkit.errors import TunnelkitError
from tunnelkit.mux.frames import (
    HEADER,
    HEADER_SIZE,
    INITIAL_STREAM_WINDOW,
    MAX_UINT32,
    PROTOCOL_VERSION,
    Flag,
    FrameType,
    GoAwayCode,
    encode_header,
)

# Plain ints for the per-frame paths: arithmetic on IntFlag and IntEnum
# members costs several times more than on ints.
_DATA = int(FrameType.DATA)
_WINDOW_UPDATE = int(FrameType.WINDOW_UPDATE)
_PING = int(FrameType.PING)
_GO_AWAY = int(FrameType.GO_AWAY)
_pack = HEADER.pack
_SYN = int(Flag.SYN)
_ACK = int(Flag.ACK)
_FIN = int(Flag.FIN)
_RST = int(Flag.RST)


@dataclass(frozen=True)
class MuxConfig:
    """
    The limits of one session.

    @ivar accept_backlog: streams opened by the peer and not yet accepted
        locally; a SYN beyond this is answered with RST. A session with an
        acceptor (as L{tunnelkit.mux.protocol.MuxProtocol} uses) decides on
        each stream as its SYN is read, so no stream ever waits.
    @ivar max_streams: open streams per session, both directions together;
        a SYN beyond this is answered with RST and a local open fails.
    @ivar stream_open_timeout: seconds to wait for the peer's ACK before a
        stream we opened is reset.
    @ivar max_frame_payload: the largest Data payload this side sends in
        one frame; larger writes are split, each part copied. The default
        is one socket read of a tunnelled connection
        (L{tunnelkit.tlstransport.READ_SIZE}), so such a read goes out
        whole.
    @ivar stream_window: the receive window this side grants a stream when
        it opens. At least 256 KiB, the spec's initial window; anything
        above is advertised with the SYN or ACK.
    @ivar max_stream_window: how far a stream's receive window grows while
        its reader keeps up: each Window Update sent while nothing waits
        unread doubles it, up to this. A fast stream is then not held back
        by round trips, while a stream whose reader is paused holds at most
        its current window in memory.
    @ivar keepalive_interval: seconds between keepalive pings, or 0 to
        send none.
    @ivar keepalive_timeout: seconds a ping may go unanswered before the
        session is declared dead and closed.
    """

    accept_backlog: int = 256
    max_streams: int = 8192
    stream_open_timeout: float = 30.0
    max_frame_payload: int = 256 * 1024
    stream_window: int = INITIAL_STREAM_WINDOW
    max_stream_window: int = 4 * 1024 * 1024
    keepalive_interval: float = 10.0
    keepalive_timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.stream_window < INITIAL_STREAM_WINDOW:
            raise TunnelkitError(
                "TK_MUX_CONFIG",
                f"stream_window must be at least {INITIAL_STREAM_WINDOW} bytes,"
                f" the initial window of the yamux spec; got {self.stream_window}.",
            )
        if self.max_stream_window < self.stream_window:
            raise TunnelkitError(
                "TK_MUX_CONFIG",
                "max_stream_window must be at least stream_window; got"
                f" {self.max_stream_window} < {self.stream_window}.",
            )
        if self.max_stream_window > MAX_UINT32:
            raise TunnelkitError(
                "TK_MUX_CONFIG", "max_stream_window must fit in 32 bits."
            )
        for name in ("accept_backlog", "max_streams", "max_frame_payload"):
            if getattr(self, name) < 1:
                raise TunnelkitError(
                    "TK_MUX_CONFIG", f"{name} must be a positive whole number."
                )
        for name in ("stream_open_timeout", "keepalive_interval", "keepalive_timeout"):
            if getattr(self, name) < 0:
                raise TunnelkitError("TK_MUX_CONFIG", f"{name} must not be negative.")


class StreamOpened:
    """
    The peer opened a stream; accept it with L{MuxSession.accept_stream} or
    refuse it with L{MuxSession.reset_stream}.
    """

    __slots__ = ("stream_id",)

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id


class StreamAccepted:
    """
    The peer acknowledged a stream we opened.
    """

    __slots__ = ("stream_id",)

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id


class StreamData:
    """
    Payload bytes arrived on a stream: those of one Data frame, or of several
    consecutive ones read at once. Once the application has taken them,
    report it with L{MuxSession.consume} so the window reopens.
    """

    __slots__ = ("stream_id", "data")

    def __init__(self, stream_id: int, data: bytes) -> None:
        self.stream_id = stream_id
        self.data = data


class StreamEnded:
    """
    The peer half-closed a stream (FIN): it will send no more data.
    C{closed} is true when our side had already sent FIN, so the stream is
    now closed and forgotten.
    """

    __slots__ = ("stream_id", "closed")

    def __init__(self, stream_id: int, closed: bool) -> None:
        self.stream_id = stream_id
        self.closed = closed


class StreamReset:
    """
    The stream was reset (RST), by the peer or by the session, and is
    forgotten. C{refused} is true when the peer reset a stream we opened
    before accepting it.
    """

    __slots__ = ("stream_id", "refused")

    def __init__(self, stream_id: int, refused: bool) -> None:
        self.stream_id = stream_id
        self.refused = refused


class SendWindowOpened:
    """
    The peer granted more send window on a stream.
    """

    __slots__ = ("stream_id",)

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id


class PongReceived:
    """
    The peer answered one of our pings.
    """

    __slots__ = ("opaque",)

    def __init__(self, opaque: int) -> None:
        self.opaque = opaque


class GoAwayReceived:
    """
    The peer sent Go Away: no new streams may be opened towards it.
    """

    __slots__ = ("code",)

    def __init__(self, code: int) -> None:
        self.code = code


class SessionTerminated:
    """
    The session ended because the peer broke the protocol. A Go Away with
    C{code} has been queued; send it, then close the connection.
    """

    __slots__ = ("code", "reason")

    def __init__(self, code: GoAwayCode, reason: str) -> None:
        self.code = code
        self.reason = reason


class BadStreamFrame:
    """
    The peer sent a frame for a stream that never existed; it was answered
    with RST and the session goes on. Reported so it can be logged.
    """

    __slots__ = ("stream_id", "reason")

    def __init__(self, stream_id: int, reason: str) -> None:
        self.stream_id = stream_id
        self.reason = reason


MuxEvent = Union[
    StreamOpened,
    StreamAccepted,
    StreamData,
    StreamEnded,
    StreamReset,
    SendWindowOpened,
    PongReceived,
    GoAwayReceived,
    SessionTerminated,
    BadStreamFrame,
]


class _Stream:
    """
    What the session knows of one live stream.

    @ivar send_window: bytes we may still send before the peer's next
        Window Update.
    @ivar recv_window: bytes the peer may still send before our next
        Window Update.
    @ivar unconsumed: bytes received that the application has not yet
        taken (see L{MuxSession.consume}).
    @ivar window: the receive window this side currently grants the stream.
    """

    __slots__ = (
        "stream_id",
        "local",
        "acked",
        "local_fin",
        "remote_fin",
        "send_window",
        "recv_window",
        "unconsumed",
        "window",
    )

    def __init__(self, stream_id: int, local: bool, recv_window: int) -> None:
        self.stream_id = stream_id
        self.local = local
        self.acked = False
        self.local_fin = False
        self.remote_fin = False
        self.send_window = INITIAL_STREAM_WINDOW
        self.recv_window = recv_window
        self.unconsumed = 0
        self.window = recv_window


class _ProtocolViolation(Exception):
    """
    Raised inside the parser to stop at the first protocol error.
    """


class MuxSession:
    """
    One side of a yamux session, without I/O.

    @ivar is_client: the client opens odd stream ids, the server even ones.
    """

    def __init__(
        self,
        is_client: bool,
        config: MuxConfig = MuxConfig(),
        acceptor: Callable[[int], Callable[[], None] | None] | None = None,
    ) -> None:
        """
        @param is_client: whether this side opens odd stream ids.
        @param config: the session's limits.
        @param acceptor: called with the id of each stream the peer opens,
            as its SYN is read; it returns C{None} to refuse the stream
            (RST), or a callable to accept it, which is called once the ACK
            is queued. Without one, streams are reported as
            L{StreamOpened} events and wait, within C{accept_backlog}, for
            L{accept_stream} or L{reset_stream}.
        """
        self.is_client = is_client
        self.config = config
        self._acceptor = acceptor
        self._streams: dict[int, _Stream] = {}
        self._next_local_id = 1 if is_client else 2
        self._highest_remote_id = 0
        self._unaccepted = 0
        self._output: list[bytes] = []
        self._header = bytearray()
        self._payload_remaining = 0
        self._payload_stream: _Stream | None = None
        self._payload_flags = 0
        self._run: StreamData | None = None
        self._run_parts: list[Any] = []
        self._events: list[MuxEvent] = []
        self._next_ping = 1
        self.local_go_away = False
        self.remote_go_away = False
        self.terminated = False

    # Inbound

    def receive_data(self, data: bytes) -> list[MuxEvent]:
        """
        Feed bytes received from the peer.

        @param data: any number of bytes, cut anywhere.
        @return: the events they caused, in order.
        """
        return self.receive_pieces((data,))

    def receive_pieces(self, pieces: Iterable[bytes]) -> list[MuxEvent]:
        """
        Feed bytes received from the peer in several pieces, as
        L{receive_data} of them joined would, without joining them: a
        frame's payload that fills a piece is passed on as it is, and one
        spread over several pieces is copied once.

        @param pieces: consecutive bytes, each cut anywhere.
        @return: the events they caused, in order.
        """
        if not self.terminated:
            try:
                for piece in pieces:
                    stream = self._payload_stream
                    size = len(piece)
                    if stream is None or size >= self._payload_remaining:
                        self._parse_frames(piece)
                        continue
                    # The piece is all payload of a frame that goes on
                    # after it, as most pieces of a bulk transfer are.
                    self._payload_remaining -= size
                    run = self._run
                    if (
                        run is not None
                        and run.stream_id == stream.stream_id
                        and self._events[-1] is run
                    ):
                        self._run_parts.append(piece)
                    else:
                        self._payload(stream.stream_id, piece, 0, size)
            except _ProtocolViolation:
                pass
            finally:
                self._end_run()
        return self.take_events()

    def take_events(self) -> list[MuxEvent]:
        """
        @return: the events caused since the last call; L{receive_data}
            returns them itself, L{terminate} leaves them here.
        """
        events = self._events
        self._events = []
        return events

    def has_partial_frame(self) -> bool:
        """
        @return: whether input stopped in the middle of a frame, which
            matters when the connection closes.
        """
        return bool(self._header) or self._payload_remaining > 0

    def _parse_frames(self, data: bytes) -> None:
        position = 0
        size = len(data)
        while position < size:
            if self._payload_remaining:
                take = min(self._payload_remaining, size - position)
                if self._payload_stream is not None:
                    self._payload(self._payload_stream.stream_id, data, position, take)
                position += take
                self._payload_remaining -= take
                if not self._payload_remaining:
                    self._end_of_data_frame()
                continue
            if self._header or size - position < HEADER_SIZE:
                need = HEADER_SIZE - len(self._header)
                self._header += data[position : position + need]
                position += need
                if len(self._header) < HEADER_SIZE:
                    return
                fields = HEADER.unpack(self._header)
                self._header.clear()
            else:
                fields = HEADER.unpack_from(data, position)
                position += HEADER_SIZE
            self._handle_header(*fields)

    def _payload(self, stream_id: int, data: bytes, position: int, take: int) -> None:
        # The payloads of consecutive Data frames of one stream, with no
        # other event between them, become one StreamData (a run): one copy
        # and one delivery for a read of many frames, however many headers
        # and pieces cut it. The run's bytes are joined when it ends.
        if take == len(data):
            part: Any = data
        else:
            part = memoryview(data)[position : position + take]
        run = self._run
        if run is not None and run.stream_id == stream_id and self._events[-1] is run:
            self._run_parts.append(part)
            return
        self._end_run()
        self._run = StreamData(stream_id, b"")
        self._run_parts = [part]
        self._events.append(self._run)

    def _end_run(self) -> None:
        run = self._run
        if run is not None:
            parts = self._run_parts
            if len(parts) == 1 and type(parts[0]) is bytes:
                run.data = parts[0]
            else:
                run.data = b"".join(parts)
            self._run = None
            self._run_parts = []

    def _handle_header(
        self, version: int, frame_type: int, flags: int, stream_id: int, length: int
    ) -> None:
        if version != PROTOCOL_VERSION:
            self._violation(f"unknown protocol version {version}")
        if frame_type == _DATA or frame_type == _WINDOW_UPDATE:
            self._handle_stream_frame(frame_type, flags, stream_id, length)
        elif frame_type == _PING:
            if flags & _SYN:
                self._output.append(encode_header(_PING, _ACK, 0, length))
            elif flags & _ACK:
                self._events.append(PongReceived(length))
        elif frame_type == _GO_AWAY:
            self.remote_go_away = True
            self._events.append(GoAwayReceived(length))
        else:
            self._violation(f"unknown frame type {frame_type}")

    def _handle_stream_frame(
        self, frame_type: int, flags: int, stream_id: int, length: int
    ) -> None:
        if stream_id == 0:
            self._violation("a Data or Window Update frame for stream 0")
        stream = self._streams.get(stream_id)
        if flags & _SYN:
            if stream is not None or not self._is_new_remote_id(stream_id):
                self._violation(f"SYN reuses stream id {stream_id}")
            stream = self._open_remote(stream_id)
        elif stream is None:
            self._frame_for_missing_stream(frame_type, flags, stream_id, length)
            return

        if stream is not None and stream.local and not stream.acked:
            if not flags & _RST:
                # Any answer but RST accepts the stream: some implementations
                # skip the ACK when our FIN arrived before they accepted.
                stream.acked = True
                self._events.append(StreamAccepted(stream_id))

        if frame_type == _WINDOW_UPDATE:
            if stream is not None and length:
                window = stream.send_window + length
                if window > MAX_UINT32:
                    self._violation(f"Window Update overflows stream {stream_id}")
                stream.send_window = window
                self._events.append(SendWindowOpened(stream_id))
            self._apply_close_flags(stream, flags)
            return

        if stream is not None:
            if length > stream.recv_window:
                self._violation(
                    f"{length} bytes on stream {stream_id} overrun its window"
                    f" of {stream.recv_window}"
                )
            if stream.remote_fin and length:
                self._reset(stream, refused=False, notify=True)
                stream = None
            else:
                stream.recv_window -= length
                stream.unconsumed += length
        self._payload_stream = stream
        self._payload_flags = flags
        self._payload_remaining = length
        if not length:
            self._end_of_data_frame()

    def _end_of_data_frame(self) -> None:
        stream = self._payload_stream
        self._payload_stream = None
        if self._payload_flags and stream is not None:
            if stream.stream_id in self._streams:
                self._apply_close_flags(stream, self._payload_flags)

    def _apply_close_flags(self, stream: _Stream | None, flags: int) -> None:
        if stream is None:
            return
        if flags & _RST:
            self._forget(stream)
            self._events.append(
                StreamReset(stream.stream_id, refused=stream.local and not stream.acked)
            )
        elif flags & _FIN and not stream.remote_fin:
            stream.remote_fin = True
            closed = stream.local_fin
            if closed:
                self._forget(stream)
            self._events.append(StreamEnded(stream.stream_id, closed))

    def _is_new_remote_id(self, stream_id: int) -> bool:
        # Ids of the peer's parity that are not live are new: peers allocate
        # ids in order but may send the SYNs out of order.
        remote_parity = 0 if self.is_client else 1
        return stream_id % 2 == remote_parity

    def _open_remote(self, stream_id: int) -> _Stream | None:
        self._highest_remote_id = max(self._highest_remote_id, stream_id)
        if (
            self.local_go_away
            or self._unaccepted >= self.config.accept_backlog
            or len(self._streams) >= self.config.max_streams
        ):
            self._output.append(encode_header(_WINDOW_UPDATE, _RST, stream_id, 0))
            return None
        stream = _Stream(stream_id, local=False, recv_window=INITIAL_STREAM_WINDOW)
        self._streams[stream_id] = stream
        self._unaccepted += 1
        if self._acceptor is None:
            self._events.append(StreamOpened(stream_id))
            return stream
        connect = self._acceptor(stream_id)
        if connect is None:
            self._reset(stream, refused=False, notify=False)
            return None
        self.accept_stream(stream_id)
        connect()
        return self._streams.get(stream_id)

    def _frame_for_missing_stream(
        self, frame_type: int, flags: int, stream_id: int, length: int
    ) -> None:
        if frame_type == _DATA:
            self._payload_stream = None
            self._payload_flags = 0
            self._payload_remaining = length
        if self._was_ever_used(stream_id) or flags & _RST:
            return
        self._output.append(encode_header(_WINDOW_UPDATE, _RST, stream_id, 0))
        self._events.append(
            BadStreamFrame(stream_id, "frame for a stream never opened")
        )

    def _was_ever_used(self, stream_id: int) -> bool:
        local_parity = 1 if self.is_client else 0
        if stream_id % 2 == local_parity:
            return stream_id < self._next_local_id
        return stream_id <= self._highest_remote_id

    def _violation(self, reason: str) -> None:
        self.terminate(GoAwayCode.PROTOCOL_ERROR, reason)
        raise _ProtocolViolation(reason)

    # Outbound

    def open_stream(self) -> int:
        """
        Open a stream towards the peer (a Window Update with SYN).

        @return: the new stream's id.
        @raise TunnelkitError: the session is closing, the peer sent Go
            Away, the stream limit is reached or the ids are exhausted.
        """
        if self.terminated or self.local_go_away or self.remote_go_away:
            raise TunnelkitError(
                "TK_MUX_GOING_AWAY",
                "The tunnel session is closing; open the stream on a new session.",
            )
        if len(self._streams) >= self.config.max_streams:
            raise TunnelkitError(
                "TK_MUX_TOO_MANY_STREAMS",
                f"The session already has {len(self._streams)} open streams, its"
                " limit; close some or raise max_streams.",
            )
        stream_id = self._next_local_id
        if stream_id > MAX_UINT32:
            raise TunnelkitError(
                "TK_MUX_STREAMS_EXHAUSTED",
                "This session has used every stream id; reconnect for a new one.",
            )
        self._next_local_id += 2
        stream = _Stream(stream_id, local=True, recv_window=INITIAL_STREAM_WINDOW)
        self._streams[stream_id] = stream
        self._grant(stream, _SYN)
        return stream_id

    def accept_stream(self, stream_id: int) -> None:
        """
        Accept a stream the peer opened (a Window Update with ACK).

        @param stream_id: the id from a L{StreamOpened} event.
        """
        stream = self._streams.get(stream_id)
        if stream is None or stream.local or stream.acked:
            return
        stream.acked = True
        self._unaccepted -= 1
        self._grant(stream, _ACK)

    def _grant(self, stream: _Stream, flags: int) -> None:
        extra = self.config.stream_window - INITIAL_STREAM_WINDOW
        stream.recv_window += extra
        stream.window += extra
        self._output.append(
            encode_header(_WINDOW_UPDATE, flags, stream.stream_id, extra)
        )

    def send_window(self, stream_id: int) -> int:
        """
        @return: how many bytes L{send_data} would accept now on the stream,
            0 for a stream that is gone or half-closed by us.
        """
        stream = self._streams.get(stream_id)
        if stream is None or stream.local_fin:
            return 0
        return stream.send_window

    def send_data(self, stream_id: int, data: bytes) -> int:
        """
        Send as much of C{data} as the stream's send window allows.

        @return: the number of bytes taken; the caller keeps the rest until
            a L{SendWindowOpened} event.
        """
        stream = self._streams.get(stream_id)
        if stream is None or stream.local_fin or self.terminated:
            return 0
        total = min(len(data), stream.send_window)
        if not total:
            return 0
        limit = self.config.max_frame_payload
        output = self._output
        if total <= limit:
            output.append(_pack(PROTOCOL_VERSION, _DATA, 0, stream_id, total))
            output.append(data if total == len(data) else data[:total])
        else:
            for offset in range(0, total, limit):
                chunk = data[offset : min(offset + limit, total)]
                output.append(_pack(PROTOCOL_VERSION, _DATA, 0, stream_id, len(chunk)))
                output.append(chunk)
        stream.send_window -= total
        return total

    def consume(self, stream_id: int, count: int) -> None:
        """
        Report that the application took C{count} bytes of a stream's data;
        once half the window is free again, a Window Update returns it.
        """
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        stream.unconsumed -= count
        window = stream.window
        delta = window - stream.unconsumed - stream.recv_window
        if delta < window // 2 or stream.remote_fin:
            return
        # The reader keeps up when all it was given is taken: the rest of
        # a frame whose header was read but whose payload is still on its
        # way counts as unconsumed, yet nobody waits to read it.
        unread = stream.unconsumed
        if self._payload_stream is stream:
            unread -= self._payload_remaining
        if not unread and window < self.config.max_stream_window:
            window = stream.window = min(window * 2, self.config.max_stream_window)
            delta = window - stream.unconsumed - stream.recv_window
        stream.recv_window += delta
        self._output.append(encode_header(_WINDOW_UPDATE, 0, stream_id, delta))

    def close_stream(self, stream_id: int) -> bool:
        """
        Half-close a stream from our side (FIN).

        @return: whether the stream is now closed in both directions and
            forgotten.
        """
        stream = self._streams.get(stream_id)
        if stream is None or stream.local_fin:
            return stream is None
        stream.local_fin = True
        if not stream.local and not stream.acked:
            self.accept_stream(stream_id)
        self._output.append(encode_header(_WINDOW_UPDATE, _FIN, stream_id, 0))
        if stream.remote_fin:
            self._forget(stream)
            return True
        return False

    def reset_stream(self, stream_id: int) -> None:
        """
        Reset a stream (RST); it is forgotten at once.
        """
        stream = self._streams.get(stream_id)
        if stream is not None:
            self._reset(stream, refused=False, notify=False)

    def _reset(self, stream: _Stream, refused: bool, notify: bool) -> None:
        self._forget(stream)
        self._output.append(encode_header(_WINDOW_UPDATE, _RST, stream.stream_id, 0))
        if notify:
            self._events.append(StreamReset(stream.stream_id, refused))

    def _forget(self, stream: _Stream) -> None:
        del self._streams[stream.stream_id]
        if self._payload_stream is stream:
            self._payload_stream = None
        if not stream.local and not stream.acked:
            self._unaccepted -= 1

    def ping(self) -> int:
        """
        Send a ping; the peer's answer arrives as L{PongReceived}.

        @return: the opaque value that the answer will carry.
        """
        opaque = self._next_ping
        self._next_ping = opaque % MAX_UINT32 + 1
        self._output.append(encode_header(_PING, _SYN, 0, opaque))
        return opaque

    def go_away(self, code: GoAwayCode = GoAwayCode.NORMAL) -> None:
        """
        Tell the peer that we accept no new streams; existing ones go on.
        """
        if not self.local_go_away:
            self.local_go_away = True
            self._output.append(encode_header(_GO_AWAY, 0, 0, code))

    def terminate(self, code: GoAwayCode, reason: str) -> None:
        """
        End the session: queue a Go Away with C{code}, report every stream
        as reset and stop reading input. The events wait in L{take_events}.
        """
        if self.terminated:
            return
        self.local_go_away = True
        self._output.append(encode_header(_GO_AWAY, 0, 0, code))
        self.terminated = True
        for stream in list(self._streams.values()):
            self._forget(stream)
            self._events.append(StreamReset(stream.stream_id, refused=False))
        self._events.append(SessionTerminated(code, reason))

    def take_output(self) -> list[bytes]:
        """
        @return: the bytes queued for the peer since the last call, as a list
            of chunks to write in order.
        """
        output = self._output
        if output:
            self._output = []
        return output

    def stream_ids(self) -> Iterable[int]:
        """
        @return: the ids of every live stream.
        """
        return list(self._streams)

    def is_open(self, stream_id: int) -> bool:
        """
        @return: whether the session still knows the stream.
        """
        return stream_id in self._streams
