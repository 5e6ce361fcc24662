"""
Captured HTTP exchanges and the store that keeps the recent ones, bounded
in bytes.

A L{Capture} is one request and, once it came, its response, as the agent
saw them on a tunnel: the head and body bytes as they were on the wire, and
the body decoded from its chunked framing, each body kept up to a cap. The
L{CaptureStore} holds captures newest last and evicts the oldest whenever
what it keeps would pass its capacity, so it never holds more than that,
whatever the traffic. Whoever wants to follow the store (the API's event
stream, the console) subscribes to it.
"""

from __future__ import annotations

import datetime
import random
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Iterator

import httptools

ENTRY_OVERHEAD = 1024
"""Bytes counted for each capture on top of the bytes it holds: the objects
that carry them, their ids, names and numbers."""


def canonical_header_name(name: str) -> str:
    """
    @return: a header name written as Go's HTTP library writes it, each
        dash-separated word capitalised (C{x-forwarded-for} gives
        C{X-Forwarded-For}), so that one name reads the same whichever way
        a client spelt it.
    """
    return "-".join(word[:1].upper() + word[1:].lower() for word in name.split("-"))


class _FieldCollector:
    """
    What a parser reading a head alone is given: it keeps the fields.
    """

    def __init__(self) -> None:
        self.fields: list[tuple[bytes, bytes]] = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name, value))


def head_fields(head: bytes, response: bool) -> list[tuple[bytes, bytes]]:
    """
    Read the header fields of a head again, with httptools.

    @param head: a request or response head, as captured.
    @param response: whether it is a response's.
    @return: its fields in order, as C{(name, value)} bytes.
    """
    collector = _FieldCollector()
    parser: httptools.HttpRequestParser | httptools.HttpResponseParser
    if response:
        parser = httptools.HttpResponseParser(collector)
    else:
        parser = httptools.HttpRequestParser(collector)
    try:
        parser.feed_data(head)
    except httptools.HttpParserError:
        pass
    return collector.fields


def field_value(lowered: bytes, marker: bytes, last: bool = False) -> bytes | None:
    """
    Look up one header field in a head llhttp has read and accepted, so
    whose fields are each C{name:value} on a line of their own (no folded
    lines, no space before the colon, no conflicting lengths).

    @param lowered: the head, in lower case.
    @param marker: C{\\r\\n}, the field's name in lower case, and C{:}.
    @param last: take the last field of that name rather than the first.
    @return: its value without the whitespace around it, or C{None}.
    """
    start = lowered.rfind(marker) if last else lowered.find(marker)
    if start == -1:
        return None
    start += len(marker)
    return lowered[start : lowered.find(b"\r\n", start)].strip(b" \t")


@dataclass(eq=False, slots=True)
class CapturedMessage:
    """
    One side of an exchange: a request or a response.

    The header fields are not kept apart from the head: L{header_fields}
    reads them from it again when asked, which keeps capturing cheap.

    @ivar proto: the HTTP version, such as C{HTTP/1.1}.
    @ivar head: the head (start line, fields and the blank line) as on the
        wire.
    @ivar wire_body: the body as on the wire (with its chunked framing, if
        any), up to the body cap: a C{bytearray} grown as the body comes,
        or C{bytes} for a message read whole.
    @ivar decoded_body: the body without chunked framing, up to the body
        cap; C{None} when it was not chunked, so that it is L{wire_body}.
    @ivar body_size: the size of the whole decoded body, as far as it was
        seen.
    @ivar chunked: whether the body came chunked.
    """

    proto: str = "HTTP/1.1"
    head: bytes = b""
    wire_body: bytes | bytearray = field(default_factory=bytearray)
    decoded_body: bytearray | None = None
    body_size: int = 0
    chunked: bool = False

    @property
    def header_fields(self) -> list[tuple[bytes, bytes]]:
        """
        @return: every header field in the order sent, as C{(name, value)}
            bytes, read from L{head}.
        """
        return head_fields(self.head, isinstance(self, CapturedResponse))

    @property
    def raw(self) -> bytes:
        """
        @return: the message as on the wire: its head, then its body up to
            the cap.
        """
        return self.head + self.wire_body

    @property
    def body(self) -> bytes:
        """
        @return: the decoded body, up to the cap.
        """
        if self.decoded_body is None:
            return bytes(self.wire_body)
        return bytes(self.decoded_body)

    @property
    def truncated(self) -> bool:
        """
        @return: whether the body was longer than what was kept of it.
        """
        kept = self.decoded_body if self.decoded_body is not None else self.wire_body
        return self.body_size > len(kept)

    def headers(self) -> dict[str, list[str]]:
        """
        @return: the header values by canonical name, in the order sent,
            decoded as Latin-1.
        """
        grouped: dict[str, list[str]] = {}
        for name, value in self.header_fields:
            key = canonical_header_name(name.decode("latin-1"))
            grouped.setdefault(key, []).append(value.decode("latin-1"))
        return grouped

    def header(self, name: str) -> str | None:
        """
        @return: the first value of the header C{name} (any case), if any.
        """
        wanted = name.lower().encode("latin-1")
        for key, value in self.header_fields:
            if key.lower() == wanted:
                return value.decode("latin-1")
        return None

    def stored_bytes(self) -> int:
        """
        @return: the bytes this message holds: its head and its bodies.
        """
        size = len(self.head) + len(self.wire_body)
        if self.decoded_body is not None:
            size += len(self.decoded_body)
        return size


@dataclass(eq=False, slots=True)
class CapturedRequest(CapturedMessage):
    """
    A captured request.

    @ivar method: its method, such as C{GET}.
    @ivar uri: its request target as sent, such as C{/path?q=1}.
    """

    method: str = ""
    uri: str = ""

    @property
    def forwarded_proto(self) -> str | None:
        """
        @return: its C{X-Forwarded-Proto} (the first), the scheme the
            client used as the edge says, in lower case; or C{None}. It is
            read from the head when asked, as few ask.
        """
        value = field_value(self.head.lower(), b"\r\nx-forwarded-proto:")
        return value.decode("latin-1") if value is not None else None

    def stored_bytes(self) -> int:
        size = len(self.head) + len(self.wire_body) + len(self.uri)
        if self.decoded_body is not None:
            size += len(self.decoded_body)
        return size


@dataclass(eq=False, slots=True)
class CapturedResponse(CapturedMessage):
    """
    A captured response.

    @ivar status_code: its status code, such as C{200}.
    @ivar reason: its reason phrase, such as C{OK}.
    """

    status_code: int = 0
    reason: str = ""

    @property
    def status(self) -> str:
        """
        @return: the status line's code and reason, such as C{200 OK}.
        """
        return f"{self.status_code} {self.reason}".rstrip()

    def stored_bytes(self) -> int:
        size = len(self.head) + len(self.wire_body) + len(self.reason)
        if self.decoded_body is not None:
            size += len(self.decoded_body)
        return size


@dataclass(eq=False, slots=True)
class Capture:
    """
    One captured exchange.

    @ivar id: its id in the store, 16 hex digits, or C{""} until stored.
    @ivar tunnel_name: the tunnel it came through, as the API names it
        (C{NAME}, or C{NAME (http)} for the C{http} URL of a tunnel that has
        two).
    @ivar remote_addr: the public client's address, without its port; empty
        for a replay.
    @ivar started: when the request began, in the clock's seconds (the
        epoch for the reactor).
    @ivar request: the request.
    @ivar response: the response once it is complete, else C{None}.
    @ivar ended: when the response was complete (or the connection ended
        without one), in the clock's seconds, else C{None}.
    @ivar replay_of: the id of the capture this one replays, else C{None}.
    @ivar counted: the bytes the store counted for it when it last did.
    """

    tunnel_name: str
    remote_addr: str
    started: float
    request: CapturedRequest
    response: CapturedResponse | None = None
    ended: float | None = None
    id: str = ""
    replay_of: str | None = None
    counted: int = 0

    @property
    def start(self) -> datetime.datetime:
        """
        @return: when the request began, in the local time zone.
        """
        return datetime.datetime.fromtimestamp(self.started).astimezone()

    @property
    def duration(self) -> float | None:
        """
        @return: seconds from the request's start to the response's end, or
            C{None} while it is pending.
        """
        if self.ended is None:
            return None
        return max(0.0, self.ended - self.started)

    @property
    def method(self) -> str:
        """
        @return: the request's method.
        """
        return self.request.method

    @property
    def uri(self) -> str:
        """
        @return: the request's target.
        """
        return self.request.uri

    @property
    def status_code(self) -> int | None:
        """
        @return: the response's status code, or C{None} without a response.
        """
        return self.response.status_code if self.response is not None else None

    @property
    def status(self) -> str | None:
        """
        @return: the response's status line text, such as C{200 OK}, or
            C{None} without a response.
        """
        return self.response.status if self.response is not None else None

    def stored_bytes(self) -> int:
        """
        @return: the bytes the store counts for this capture.
        """
        size = ENTRY_OVERHEAD + len(self.tunnel_name) + len(self.remote_addr)
        size += self.request.stored_bytes()
        if self.response is not None:
            size += self.response.stored_bytes()
        return size


CaptureListener = Callable[[Capture], None]
ClearListener = Callable[[], None]


class CaptureStore:
    """
    The recent captures, oldest first, holding at most L{capacity} bytes as
    L{Capture.stored_bytes} counts them.

    A capture is counted when it is added, and again when its response is
    added by L{complete}: each time, the oldest captures are evicted until
    the new total fits. A capture larger than the whole capacity is not
    kept. The ids are those of ngrok: 8 hex digits chosen for the store,
    then a count of 8 hex digits.

    @ivar capacity: the most bytes held.
    @ivar stored_bytes: the bytes held now.
    @ivar peak_bytes: the most bytes held at any time.
    @ivar evicted: how many captures were evicted (or not kept) to stay
        within the capacity.
    @ivar added: how many captures were added.
    """

    def __init__(
        self, capacity: int, rng: Callable[[int], int] = random.getrandbits
    ) -> None:
        self.capacity = capacity
        self.stored_bytes = 0
        self.peak_bytes = 0
        self.evicted = 0
        self.added = 0
        self._prefix = f"{rng(32):08x}"
        self._entries: OrderedDict[str, Capture] = OrderedDict()
        self._listeners: list[tuple[CaptureListener, ClearListener | None]] = []

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Capture]:
        """
        @return: the captures, oldest first.
        """
        return iter(self._entries.values())

    def add(self, capture: Capture) -> None:
        """
        Give a capture its id and keep it, evicting older ones as needed;
        then tell the subscribers. A capture that alone is larger than the
        capacity gets an id but is not kept (nor announced).
        """
        self.added += 1
        capture.id = f"{self._prefix}{self.added:08x}"
        size = capture.stored_bytes()
        if size > self.capacity:
            self.evicted += 1
            return
        capture.counted = size
        self._entries[capture.id] = capture
        self.stored_bytes += size
        if self.stored_bytes > self.capacity:
            self._evict()
        if self.stored_bytes > self.peak_bytes:
            self.peak_bytes = self.stored_bytes
        if self._listeners:
            self._announce(capture)

    def complete(self, capture: Capture) -> None:
        """
        Count a capture again once its response (or its end) was recorded,
        evicting the oldest captures (possibly this one) as needed, and
        tell the subscribers if it is still held. A capture the store no
        longer holds is left out.
        """
        if self._entries.get(capture.id) is not capture:
            return
        size = capture.stored_bytes()
        self.stored_bytes += size - capture.counted
        capture.counted = size
        if size > self.capacity:
            del self._entries[capture.id]
            self.stored_bytes -= size
            self.evicted += 1
            return
        if self.stored_bytes > self.capacity:
            self._evict()
            if capture.id not in self._entries:
                return
        if self.stored_bytes > self.peak_bytes:
            self.peak_bytes = self.stored_bytes
        if self._listeners:
            self._announce(capture)

    def get(self, capture_id: str) -> Capture | None:
        """
        @return: the capture with this id, if the store holds it.
        """
        return self._entries.get(capture_id)

    def recent(
        self, limit: int | None = None, tunnel_name: str | None = None
    ) -> list[Capture]:
        """
        @param limit: the most captures returned, or C{None} for all.
        @param tunnel_name: only those of this tunnel name, if given.
        @return: the captures, newest first.
        """
        found: list[Capture] = []
        for capture in reversed(self._entries.values()):
            if limit is not None and len(found) >= limit:
                break
            if tunnel_name is None or capture.tunnel_name == tunnel_name:
                found.append(capture)
        return found

    def clear(self) -> None:
        """
        Drop every capture and tell the subscribers.
        """
        self._entries.clear()
        self.stored_bytes = 0
        for _, on_clear in list(self._listeners):
            if on_clear is not None:
                on_clear()

    def subscribe(
        self, listener: CaptureListener, on_clear: ClearListener | None = None
    ) -> Callable[[], None]:
        """
        Follow the store: C{listener(capture)} is called when a capture is
        added and again when its response is complete (the same object,
        with the same id); C{on_clear()} when the store is cleared.

        @return: a function that ends the subscription.
        """
        entry = (listener, on_clear)
        self._listeners.append(entry)

        def unsubscribe() -> None:
            if entry in self._listeners:
                self._listeners.remove(entry)

        return unsubscribe

    def _evict(self) -> None:
        """
        Evict the oldest captures until what is held fits the capacity.
        """
        while self.stored_bytes > self.capacity:
            _, evicted = self._entries.popitem(last=False)
            self.stored_bytes -= evicted.counted
            self.evicted += 1

    def _announce(self, capture: Capture) -> None:
        for listener, _ in list(self._listeners):
            listener(capture)
