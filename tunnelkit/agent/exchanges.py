"""
Reading the HTTP exchanges of one tunnel connection from the bytes that
pass through it, to capture them: sans-IO, bytes in and captures out.

An L{ExchangeTap} is given a copy of what the edge sends the upstream (the
requests) and of what the upstream answers (the responses). Each direction
is parsed with httptools (llhttp) as it arrives, request after request on a
kept-alive or pipelined connection; each response is matched with the
oldest request still waiting for one.

The raw bytes of each message are told apart from the next one's by
feeding the parser in pieces that can only end where a message can: right
after a blank line (the end of a head, and of a chunked body), and at the
end of a body sized by C{Content-Length}. A message therefore always ends
exactly at the end of a piece, and every piece belongs to one message.
Most of what a kept-alive connection carries comes one whole message per
read (an HTTP/1.1 head and the body its C{Content-Length} gives); such a
read is checked for that shape, given whole to a second parser whose only
callback counts messages, and captured from the head once that parser
accepted it (L{_MessageReader._read_whole}). Anything else takes the
piece-by-piece path, and both capture the same. All a parser carries from
one message to the next is whether the connection closes after it; once
the general parser says so, the whole-message path is not taken again.

Every byte of the tunnel passes here, so the parser is given as few
Python callbacks as will do: not one per header field. The two fields the
capture needs as it goes, C{Content-Length} and C{Transfer-Encoding}, which
decide where a body ends, are looked up in the head once llhttp has read
and accepted it; every other field is read again from the head only when
someone looks at a capture.

What is kept of each message is bounded: its head (up to L{MAX_HEAD_SIZE};
a longer one stops the capture), its body as on the wire up to the body
cap, and, for a chunked body, the decoded body up to the cap too.

Capture stops for the rest of a connection, quietly and without touching
the bytes that pass, at an upgrade (a C{101} response, or a request that
asked for one and got its answer), at C{CONNECT}, and at anything the
parser rejects.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Protocol

import httptools
from twisted.logger import Logger

from tunnelkit.agent.captures import (
    Capture,
    CapturedMessage,
    CapturedRequest,
    CapturedResponse,
    field_value,
)

_log = Logger()

MAX_HEAD_SIZE = 64 * 1024
"""The longest head captured; a longer one stops the connection's capture."""

BLANK_LINE = b"\r\n\r\n"


class ExchangeRecorder(Protocol):
    """
    Where a tap sends what it captured.
    """

    def opened(self, capture: Capture) -> None:
        """
        A request is complete (or its response began): keep it.
        """

    def completed(self, capture: Capture) -> None:
        """
        Its response is complete, or the connection ended without one
        (C{capture.response} is then C{None}); C{capture.ended} is set.
        """


class _StopCapture(Exception):
    """
    Stop capturing this connection.
    """


class _MessageCounter:
    """
    A parser of whole messages with no callback but the one that counts
    them: the whole-message path only needs to know that the parser
    accepted one message, and where it ended.

    @ivar count: the messages completed since it was last set to zero.
    """

    __slots__ = ("count", "parser")

    def __init__(self, responses: bool) -> None:
        self.count = 0
        self.parser: httptools.HttpRequestParser | httptools.HttpResponseParser
        if responses:
            self.parser = httptools.HttpResponseParser(self)
        else:
            self.parser = httptools.HttpRequestParser(self)

    def on_message_complete(self) -> None:
        self.count += 1


class _MessageReader:
    """
    The parser of one direction of a connection, and the message it is
    reading. Every byte passes here, so the work per piece and per
    callback is kept small: the header fields are looked at only for the
    two that decide the framing, and are read again from the head only
    when someone asks for them.

    @ivar current: the message being read, once it began.
    @ivar over: whether the direction stopped being HTTP (an upgrade).
    """

    def __init__(self, tap: "ExchangeTap", responses: bool, body_cap: int) -> None:
        self._tap = tap
        self._responses = responses
        self._body_cap = body_cap
        self._parser = self._new_parser()
        self.current: CapturedMessage | None = None
        self._head: list[bytes] = []
        self._head_size = 0
        self._tail = b""
        self._target = b""
        self._in_body = False
        self._chunked = False
        self._remaining: int | None = None
        self._skip_body = False
        self._done: list[CapturedMessage] = []
        self.over = False
        self._clock = tap.clock
        self._started = 0.0
        self._counter: _MessageCounter | None = None
        self._closing = False
        if responses:
            self._complete = tap.response_complete
        else:
            self._complete = tap.request_complete

    def _new_parser(self) -> httptools.HttpRequestParser | httptools.HttpResponseParser:
        if self._responses:
            return httptools.HttpResponseParser(self)
        return httptools.HttpRequestParser(self)

    # Feeding

    def feed(self, data: bytes) -> None:
        """
        Parse the next bytes of this direction.

        @raise _StopCapture: when capture must stop.
        """
        if not self._in_body and not self._head and self._read_whole(data):
            return
        size = len(data)
        if self._in_body and not self._chunked:
            remaining = self._remaining
            if remaining is None or remaining >= size:
                self._feed_piece(data)
                self._tail = data[-3:] if size >= 3 else (self._tail + data)[-3:]
                return
        position = 0
        while position < size and not self.over:
            end = self._piece_end(data, position)
            self._feed_piece(data if end - position == size else data[position:end])
            position = end
        self._tail = data[-3:] if size >= 3 else (self._tail + data)[-3:]

    def _read_whole(self, data: bytes) -> bool:
        """
        Read C{data} in one go if it is exactly one whole message of the
        usual kind: an HTTP/1.1 head followed by the whole body its
        C{Content-Length} gives (or by none, for a request without one),
        no chunked coding, no upgrade, no C{Connection: close}, and, for a
        response, a final status answering a request that is neither
        C{HEAD} nor C{CONNECT} (a C{204} or C{304} has no body, whatever
        its length says). That is what a kept-alive connection mostly
        carries. Such a message is checked by a parser of its own that
        only counts the messages it reads, and is taken from the head: its
        start line is simple enough to read once the parser accepted it.

        @return: whether C{data} was read; if not, nothing was done and the
            general path reads it.
        @raise _StopCapture: when the parser rejects C{data}.
        """
        if self._closing:
            return False
        end = data.find(BLANK_LINE)
        if end == -1 or end >= MAX_HEAD_SIZE:
            return False
        head_end = end + 4
        size = len(data)
        head = data if head_end == size else data[:head_end]
        lowered = head.lower()
        if (
            b"\r\ntransfer-encoding:" in lowered
            or b"\r\nupgrade:" in lowered
            or b"close" in lowered
        ):
            return False
        line_end = head.find(b"\n") - 1
        if line_end < 0 or head[line_end] != 13:
            return False
        responses = self._responses
        no_body = False
        if responses:
            # "HTTP/1.1 200 OK": the reason is what follows the code's space.
            code = head[9:12]
            if not head.startswith(b"HTTP/1.1 ") or not code.isdigit() or code[0] == 49:
                return False
            no_body = code == b"204" or code == b"304"
        found = lowered.find(b"\r\ncontent-length:")
        if found == -1 or no_body:
            # A response without a length runs until the connection ends.
            if responses and not no_body:
                return False
            body_size = 0
        else:
            found += 17
            length = lowered[found : lowered.find(b"\r\n", found)].strip(b" \t")
            if not length.isdigit():
                return False
            body_size = int(length)
        if head_end + body_size != size:
            return False
        if responses:
            if line_end == 12:
                reason = b""
            elif head[12] == 32:
                reason = head[13:line_end]
            else:
                return False
            waiting = self._tap.waiting_method()
            if waiting is None or waiting in ("HEAD", "CONNECT"):
                return False
        else:
            # "GET /path HTTP/1.1", with one space on each side of the target.
            space = head.find(b" ")
            target = head[space + 1 : line_end - 9]
            if (
                not head.endswith(b" HTTP/1.1", 0, line_end)
                or not target
                or b" " in target
                or head.startswith(b"CONNECT ")
            ):
                return False
            started = self._clock()

        counter = self._counter
        if counter is None:
            counter = self._counter = _MessageCounter(responses)
        counter.count = 0
        try:
            counter.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as error:
            raise _StopCapture(str(error))
        if counter.count != 1:
            raise _StopCapture("framing not as the head said")
        wire = data[head_end : head_end + self._body_cap]
        if responses:
            response = CapturedResponse(
                "HTTP/1.1",
                head,
                wire_body=wire,
                body_size=body_size,
                status_code=int(code),
                reason=reason.decode("latin-1"),
            )
            self._tap.response_whole(response)
            return True
        request = CapturedRequest(
            "HTTP/1.1",
            head,
            wire_body=wire,
            body_size=body_size,
            method=_method_name(head[:space]),
            uri=target.decode("latin-1"),
        )
        self._tap.request_whole(request, started)
        return True

    def _piece_end(self, data: bytes, position: int) -> int:
        """
        @return: where the piece starting at C{position} ends: the end of a
            sized body, or just after the next blank line.
        """
        size = len(data)
        if self._in_body and not self._chunked:
            if self._remaining is None:
                return size
            return min(size, position + self._remaining)
        if position == 0 and (self._head or self._in_body) and self._tail:
            found = (self._tail + data[:3]).find(BLANK_LINE)
            if found != -1:
                return found + 4 - len(self._tail)
        found = data.find(BLANK_LINE, max(position - 3, 0))
        while found != -1 and found + 4 <= position:
            found = data.find(BLANK_LINE, found + 1)
        return size if found == -1 else found + 4

    def _feed_piece(self, piece: bytes) -> None:
        if not self._in_body:
            if not self._head:
                self._started = self._clock()
            self._head.append(piece)
            self._head_size += len(piece)
            if self._head_size > MAX_HEAD_SIZE:
                raise _StopCapture("head too long")
        else:
            message = self.current
            if message is not None:
                wire = message.wire_body
                # Grown in place; only a message read whole holds bytes.
                assert isinstance(wire, bytearray)
                room = self._body_cap - len(wire)
                if room > 0:
                    wire += piece if room >= len(piece) else piece[:room]
                if not self._chunked:
                    message.body_size += len(piece)
                    if self._remaining is not None:
                        self._remaining -= len(piece)
        try:
            self._parser.feed_data(piece)
        except httptools.HttpParserUpgrade:
            self._upgraded()
            return
        except httptools.HttpParserError as error:
            raise _StopCapture(str(error))
        if self._skip_body:
            self._skip_body = False
            self._parser = self._new_parser()
            self._message_done()
        done = self._done
        if done:
            self._done = []
            for finished in done:
                self._complete(finished)

    def _upgraded(self) -> None:
        """
        The parser stopped at an upgrade (or C{CONNECT}), once the message
        asking for it was read: that message is the direction's last.
        """
        self.over = True
        done, self._done = self._done, []
        message, self.current = self.current, None
        if message is not None and message.head:
            done.append(message)
        if not done:
            raise _StopCapture("upgrade")
        for finished in done[:-1]:
            self._complete(finished)
        self._complete(done[-1], True)

    def finish(self) -> None:
        """
        The direction ended: a message whose body runs until the end is
        complete.
        """
        message = self.current
        if message is not None and self._in_body and self._remaining is None:
            if not self._chunked:
                self.current = None
                self._complete(message)

    def detach(self) -> None:
        """
        Keep reading, but into a message nobody holds: the one being read
        was taken as it is.
        """
        if self.current is not None:
            self.current = CapturedRequest()

    # httptools callbacks

    def on_url(self, url: bytes) -> None:
        self._target = self._target + url if self._target else url

    def on_status(self, status: bytes) -> None:
        self._target = self._target + status if self._target else status

    def on_headers_complete(self) -> None:
        pieces = self._head
        head = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        self._head = []
        self._head_size = 0
        target, self._target = self._target.decode("latin-1"), b""
        version = self._parser.get_http_version()
        proto = _PROTOS.get(version) or "HTTP/" + version
        lowered = head.lower()
        coding = field_value(lowered, b"\r\ntransfer-encoding:", last=True)
        chunked = (
            coding is not None and coding.rpartition(b",")[2].strip() == b"chunked"
        )
        message: CapturedMessage
        if self._responses:
            assert isinstance(self._parser, httptools.HttpResponseParser)
            message = CapturedResponse(
                proto, head, status_code=self._parser.get_status_code(), reason=target
            )
            self._skip_body = self._tap.response_head(message)
        else:
            assert isinstance(self._parser, httptools.HttpRequestParser)
            message = CapturedRequest(
                proto,
                head,
                method=_method_name(self._parser.get_method()),
                uri=target,
            )
            self._tap.request_head(message, self._started)
        self.current = message
        self._in_body = True
        self._chunked = chunked
        self._remaining = None
        if chunked:
            message.chunked = True
            message.decoded_body = bytearray()
        elif not self._skip_body:
            length = field_value(lowered, b"\r\ncontent-length:")
            if length is not None and length.isdigit():
                self._remaining = int(length)

    def on_body(self, body: bytes) -> None:
        message = self.current
        if message is None or message.decoded_body is None:
            return
        message.body_size += len(body)
        room = self._body_cap - len(message.decoded_body)
        if room > 0:
            message.decoded_body += body[:room]

    def on_message_complete(self) -> None:
        if not self._parser.should_keep_alive():
            # The parser takes nothing after this message; nor may the
            # whole-message path, whose own parser never saw it.
            self._closing = True
        self._message_done()

    def _message_done(self) -> None:
        message = self.current
        self.current = None
        self._in_body = False
        self._chunked = False
        self._remaining = None
        if message is not None:
            self._done.append(message)


_PROTOS = {"1.1": "HTTP/1.1", "1.0": "HTTP/1.0"}
"""The protocol names of the usual versions, made once."""

_METHODS: dict[bytes, str] = {}
"""The methods seen so far, decoded once each (llhttp knows a few dozen)."""


def _method_name(method: bytes) -> str:
    name = _METHODS.get(method)
    if name is None:
        name = _METHODS[method] = method.decode("ascii", "replace")
    return name


class ExchangeTap:
    """
    Turns the two directions of one connection into captures.

    @ivar stopped: whether capture has stopped for this connection.
    """

    def __init__(
        self,
        recorder: ExchangeRecorder,
        clock: Callable[[], float],
        remote_addr: str,
        tunnel_name: Callable[[CapturedRequest], str],
        body_cap: int,
        replay_of: str | None = None,
    ) -> None:
        """
        @param recorder: where the captures go.
        @param clock: gives the time in seconds.
        @param remote_addr: the public client's address, for the captures.
        @param tunnel_name: names the tunnel of a request, from its head.
        @param body_cap: the most bytes kept of each body.
        @param replay_of: for a replay, the id of the capture replayed.
        """
        self._opened = recorder.opened
        self._completed = recorder.completed
        self.clock = clock
        self._remote_addr = remote_addr
        self._tunnel_name = tunnel_name
        self._replay_of = replay_of
        self._requests = _MessageReader(self, False, body_cap)
        self._responses = _MessageReader(self, True, body_cap)
        self._reading: Capture | None = None
        self._waiting: deque[Capture] = deque()
        self._requests_over = False
        self.stopped = False

    @property
    def idle(self) -> bool:
        """
        Whether every request read so far has had its response.
        """
        return not self._waiting and self._reading is None

    def name_tunnel(self, name: str) -> None:
        """
        Give every capture of this tap the tunnel name C{name}, whatever
        the requests say.
        """
        self._tunnel_name = lambda request: name

    # Bytes in

    def request_data(self, data: bytes) -> None:
        """
        Read bytes the edge sent toward the upstream.
        """
        if self.stopped or self._requests_over:
            return
        try:
            self._requests.feed(data)
        except _StopCapture:
            self.stop()
        except Exception:
            _log.failure("capture failed; the connection is no longer captured")
            self.stop()

    def response_data(self, data: bytes) -> None:
        """
        Read bytes the upstream sent toward the edge.
        """
        if self.stopped:
            return
        try:
            self._responses.feed(data)
        except _StopCapture:
            self.stop()
        except Exception:
            _log.failure("capture failed; the connection is no longer captured")
            self.stop()

    def connection_lost(self) -> None:
        """
        The connection ended: a response running until the end is complete,
        and every request still waiting ends without a response.
        """
        if not self.stopped:
            try:
                self._responses.finish()
            except _StopCapture:
                pass
            except Exception:
                _log.failure("capture failed at the end of a connection")
        self.stop()

    def stop(self) -> None:
        """
        Stop capturing: requests still waiting end without a response now.
        """
        if self.stopped:
            return
        self.stopped = True
        reading, self._reading = self._reading, None
        if reading is not None and reading.request.head:
            self._open(reading)
            self._waiting.append(reading)
        while self._waiting:
            capture = self._waiting.popleft()
            capture.ended = self.clock()
            self._completed(capture)

    # From the readers

    def request_head(self, message: CapturedRequest, started: float) -> None:
        """
        The request reader read a request's head; the request began at
        C{started}.
        """
        self._reading = Capture(
            "", self._remote_addr, started, message, replay_of=self._replay_of
        )

    def request_whole(self, message: CapturedRequest, started: float) -> None:
        """
        The request reader read a whole request at once, begun at
        C{started}: it is open, waiting for its response.
        """
        capture = Capture(
            self._tunnel_name(message),
            self._remote_addr,
            started,
            message,
            replay_of=self._replay_of,
        )
        self._opened(capture)
        self._waiting.append(capture)

    def waiting_method(self) -> str | None:
        """
        @return: the method of the oldest request waiting for its response,
            or C{None} when none is waiting.
        """
        return self._waiting[0].request.method if self._waiting else None

    def response_head(self, response: CapturedResponse) -> bool:
        """
        The response reader read a response's head.

        @return: whether the response has no body whatever its headers
            say: it answers C{HEAD}, or accepts a C{CONNECT}.
        @raise _StopCapture: when no request is there to be answered.
        """
        capture = self._waiting[0] if self._waiting else self._reading
        if capture is None:
            raise _StopCapture("a response without a request")
        method = capture.request.method
        if method == "HEAD":
            return True
        return method == "CONNECT" and 200 <= response.status_code < 300

    # Matching

    def request_complete(self, message: CapturedMessage, last: bool = False) -> None:
        """
        The request reader finished a request.

        @param last: whether no more requests follow (an upgrade).
        """
        capture = self._reading
        if capture is None or capture.request is not message:
            return
        self._reading = None
        self._open(capture)
        self._waiting.append(capture)
        if last:
            self._requests_over = True

    def _open(self, capture: Capture) -> None:
        capture.tunnel_name = self._tunnel_name(capture.request)
        self._opened(capture)

    def response_whole(self, message: CapturedResponse) -> None:
        """
        The response reader read a whole final response, not C{101}, at
        once, while a request was waiting for it.
        """
        capture = self._waiting.popleft()
        capture.response = message
        capture.ended = self.clock()
        self._completed(capture)
        if self._requests_over and not self._waiting and self._reading is None:
            self.stop()

    def response_complete(self, message: CapturedMessage, last: bool = False) -> None:
        """
        The response reader finished a response.

        @param last: whether no more responses follow (an upgrade).
        """
        assert isinstance(message, CapturedResponse)
        if 100 <= message.status_code < 200 and message.status_code != 101:
            return
        if self._waiting:
            capture = self._waiting.popleft()
        else:
            reading = self._reading
            if reading is None or not reading.request.head:
                raise _StopCapture("a response without a request")
            capture, self._reading = reading, None
            self._requests.detach()
            self._open(capture)
            self._requests_over = True
        capture.response = message
        capture.ended = self.clock()
        self._completed(capture)
        over = self._requests_over and not self._waiting and self._reading is None
        if last or message.status_code == 101 or over:
            self.stop()
