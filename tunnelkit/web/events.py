"""
The live feed of captures: C{GET /api/events}, a server-sent event stream.

Each subscriber gets an C{event: capture} whose data is the capture's JSON
when an exchange is added to the store and again when its response is
complete (same id, so a page replaces the first with the second), and an
C{event: clear} when the store is cleared. A comment line every
L{KEEPALIVE_INTERVAL} seconds keeps proxies and browsers from closing an
idle stream. A subscriber that goes away is forgotten.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.web.iweb import IRequest

from tunnelkit.agent.captures import Capture, CaptureStore
from tunnelkit.web.shapes import capture_json

KEEPALIVE_INTERVAL = 15.0
"""Seconds between two keep-alive comments."""


def event_text(event: str, data: Any) -> bytes:
    """
    @return: one server-sent event: its name, its data as one line of JSON,
        and the blank line that ends it.
    """
    line = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"event: {event}\ndata: {line}\n\n".encode("utf-8")


class EventStream:
    """
    One subscriber's stream.

    @ivar ended: fires when the stream ends; cancelling it ends the stream.
    """

    def __init__(
        self,
        request: IRequest,
        store: CaptureStore | None,
        clock: Any,
        shape: Callable[[Capture], Any] = capture_json,
    ) -> None:
        """
        @param store: the captures followed, or C{None} when inspection is
            off (the stream then carries only keep-alives).
        @param clock: an C{IReactorTime} provider, for the keep-alives.
        """
        self.request = request
        self._shape = shape
        self._unsubscribe: Callable[[], None] | None = None
        self.ended: Deferred[None] = Deferred(lambda _: self._end())
        if store is not None:
            self._unsubscribe = store.subscribe(self._captured, self._cleared)
        self._keepalive = LoopingCall(self._comment)
        self._keepalive.clock = clock

    def start(self) -> None:
        """
        Send the headers and the first comment, and start the keep-alives.
        """
        request = self.request
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-accel-buffering", b"no")
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.write(b"retry: 2000\n\n")
        self._keepalive.start(KEEPALIVE_INTERVAL, now=False)

    def _comment(self) -> None:
        self.request.write(b": keep-alive\n\n")

    def _captured(self, capture: Capture) -> None:
        self.request.write(event_text("capture", self._shape(capture)))

    def _cleared(self) -> None:
        self.request.write(event_text("clear", {}))

    def _end(self) -> None:
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            unsubscribe()
        if self._keepalive.running:
            self._keepalive.stop()
