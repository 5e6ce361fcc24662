"""
The agent's console screen on a terminal: switch to the alternate screen,
redraw what L{tunnelkit.agent.console} lays out once a second and soon
after each HTTP request or change of the terminal's size, and give the
terminal back as it was when the agent stops.

The agent never waits for the terminal: while the screen is up, its
descriptor does not block, and a terminal that stops reading (paused with
Ctrl+S) only has screens skipped until it reads again. Giving the terminal
back does wait, so an agent stopped while its terminal is paused finishes
once the terminal is resumed.
"""

import os
import signal
import threading
from typing import IO, Any, Callable

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from tunnelkit import __version__
from tunnelkit.agent.console import ConsoleState, RequestLine, paint, render
from tunnelkit.agent.tunnel import upstream_display

_log = Logger()

REDRAW_INTERVAL = 1.0
"""Seconds between two redraws when nothing happens."""

EVENT_DELAY = 0.1
"""Seconds from an event to the redraw that shows it; the events of that
time share one redraw."""

RECENT_REQUESTS = 50
"""How many HTTP requests the console remembers, newest first."""

DEFAULT_SIZE = (80, 24)
"""Columns and rows assumed when the terminal does not tell its size."""

ENTER = "\x1b[?1049h\x1b[?25l"
"""Switch to the alternate screen and hide the cursor."""

LEAVE = "\x1b[0m\x1b[?25h\x1b[?1049l"
"""Reset colours, show the cursor and go back to the normal screen."""


def is_terminal(stream: IO[str]) -> bool:
    """
    @return: whether C{stream} writes to a terminal; a stream that cannot
        tell does not.
    """
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def terminal_size(stream: IO[str]) -> tuple[int, int]:
    """
    @return: the columns and rows of the terminal C{stream} writes to, or
        L{DEFAULT_SIZE} when it is no terminal or tells no size.
    """
    try:
        columns, rows = os.get_terminal_size(stream.fileno())
    except (AttributeError, ValueError, OSError):
        return DEFAULT_SIZE
    if columns <= 0 or rows <= 0:
        return DEFAULT_SIZE
    return columns, rows


class RecentRequests:
    """
    The most recent HTTP requests, fed by the capture store as each
    request arrives and as its response completes it.

    @ivar on_change: called after each change.
    """

    def __init__(
        self, limit: int = RECENT_REQUESTS, on_change: Callable[[], None] = lambda: None
    ) -> None:
        self._limit = limit
        self._lines: dict[str, RequestLine] = {}
        self.on_change = on_change

    def observe(self, capture: Any) -> None:
        """
        Show a new capture, or the response of one already shown.

        @param capture: a capture of the store, with C{id}, C{start},
            C{method}, C{uri} and C{status} (the status line text, C{""}
            before the response).
        """
        line = RequestLine(
            start=capture.start,
            method=capture.method,
            uri=capture.uri,
            status=capture.status or "",
        )
        known = capture.id in self._lines
        self._lines[capture.id] = line
        while not known and len(self._lines) > self._limit:
            del self._lines[next(iter(self._lines))]
        self.on_change()

    def clear(self) -> None:
        """
        Forget every request, as the store does when it is cleared.
        """
        self._lines.clear()
        self.on_change()

    def lines(self) -> list[RequestLine]:
        """
        @return: the requests, newest first.
        """
        return sorted(self._lines.values(), key=lambda line: line.start, reverse=True)


def agent_state(app: Any, requests: RecentRequests) -> ConsoleState:
    """
    @param app: the L{tunnelkit.agent.app.AgentApplication}.
    @return: what the console shows of it now.
    """
    agent = app.agent
    if agent is None:
        waiting = [
            (None, upstream_display(definition.addr, definition.proto))
            for definition in app.tunnel_definitions
        ]
        return ConsoleState(
            "connecting",
            __version__,
            web_url=app.web_url,
            forwarding=waiting,
            requests=requests.lines(),
        )
    edge = str(agent.edge) + (" (embedded)" if app.edge is not None else "")
    session = agent.session
    forwarding: list[tuple[str | None, str]] = []
    for tunnel in agent.tunnels.values():
        if tunnel.labels:
            forwarding.append((f"labels {tunnel.labels}", tunnel.forwards_to))
            continue
        forwarding += [
            (url, tunnel.forwards_to) for url in tunnel.public_urls or (None,)
        ]
    return ConsoleState(
        status=agent.status,
        version=__version__,
        edge=edge,
        latency=session.mux.latency if session is not None else None,
        web_url=app.web_url,
        forwarding=forwarding,
        connections=agent.metrics.to_json()["conns"],
        requests=requests.lines(),
    )


class FrameWriter:
    """
    Writes whole screens to a terminal without blocking. What the terminal
    does not take at once waits, and is written before anything else; a
    screen drawn while bytes still wait is skipped, which loses nothing,
    since every screen is complete in itself. A stream without a file
    descriptor is written to directly.
    """

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._fd: int | None = None
        self._was_blocking = True
        self._waiting = b""
        self._closed = False

    def open(self) -> None:
        """
        Stop blocking on the terminal's descriptor, once what the stream
        buffered is out.
        """
        self._stream.flush()
        try:
            fd = self._stream.fileno()
        except (AttributeError, ValueError, OSError):
            return
        self._was_blocking = os.get_blocking(fd)
        os.set_blocking(fd, False)
        self._fd = fd

    def write(self, text: str) -> bool:
        """
        Write one screen, or skip it while an earlier one is still on its
        way.

        @return: whether the screen was taken.
        @raise OSError: when the terminal cannot be written to.
        @raise ValueError: when the stream is closed.
        """
        if self._closed:
            return False
        if self._fd is None:
            self._stream.write(text)
            self._stream.flush()
            return True
        self._drain()
        if self._waiting:
            return False
        self._waiting = text.encode(_encoding(self._stream), "replace")
        self._drain()
        return True

    def close(self, text: str) -> None:
        """
        Make the descriptor block as it did, then write what waits and
        C{text}; only the first call does anything.
        """
        if self._closed:
            return
        self._closed = True
        fd, self._fd = self._fd, None
        if fd is None:
            if not text:
                return
            self._stream.write(text)
            self._stream.flush()
            return
        os.set_blocking(fd, self._was_blocking)
        rest = self._waiting + text.encode(_encoding(self._stream), "replace")
        self._waiting = b""
        while rest:
            rest = rest[os.write(fd, rest) :]

    def _drain(self) -> None:
        assert self._fd is not None
        while self._waiting:
            try:
                written = os.write(self._fd, self._waiting)
            except BlockingIOError:
                return
            self._waiting = self._waiting[written:]


def _encoding(stream: IO[str]) -> str:
    return getattr(stream, "encoding", None) or "utf-8"


class ConsoleScreen(Service):
    """
    Draws the console on a terminal while running.

    @ivar frames: how many screens were drawn.
    @ivar skipped: how many screens were not drawn because the terminal
        had not taken the one before.
    """

    def __init__(
        self,
        reactor: Any,
        stream: IO[str],
        state: Callable[[], ConsoleState],
        colour: str = "black",
        watch_resize: bool = True,
    ) -> None:
        """
        @param reactor: provides C{IReactorTime}, and C{IReactorThreads}
            when C{watch_resize} is set.
        @param stream: the terminal.
        @param state: gives what to show, at each redraw.
        @param colour: C{console_ui_color}.
        @param watch_resize: redraw on C{SIGWINCH} too; the size is read at
            every redraw either way.
        """
        self._reactor = reactor
        self._stream = stream
        self._writer = FrameWriter(stream)
        self._state = state
        self._colour = colour
        self._watch_resize = watch_resize
        self._loop = LoopingCall(self.redraw)
        self._loop.clock = reactor
        self._soon: IDelayedCall | None = None
        self._previous_handler: Any = None
        self._shown = False
        self.frames = 0
        self.skipped = 0

    def startService(self) -> None:
        super().startService()
        self._shown = True
        try:
            self._writer.open()
        except (OSError, ValueError) as error:
            self._cannot_draw(error)
            return
        self._write(ENTER)
        if self._watch_resize:
            self._catch_resize()
        self._loop.start(REDRAW_INTERVAL, now=True)

    def stopService(self) -> None:
        super().stopService()
        self.restore()

    def restore(self) -> None:
        """
        Stop drawing and give the terminal back as it was; calling it again
        does nothing.
        """
        if self._loop.running:
            self._loop.stop()
        soon, self._soon = self._soon, None
        if soon is not None and soon.active():
            soon.cancel()
        if self._previous_handler is not None:
            signal.signal(signal.SIGWINCH, self._previous_handler)
            self._previous_handler = None
        shown, self._shown = self._shown, False
        try:
            self._writer.close(LEAVE if shown else "")
        except (OSError, ValueError) as error:
            _log.warn("cannot give the terminal back: {error}", error=str(error))

    def redraw_soon(self) -> None:
        """
        Redraw shortly, once for all the events until then.
        """
        if self._shown and self._soon is None:
            self._soon = self._reactor.callLater(EVENT_DELAY, self._redraw_now)

    def _redraw_now(self) -> None:
        self._soon = None
        self.redraw()

    def redraw(self) -> None:
        """
        Draw the screen as things are now, at the terminal's present size.
        """
        if not self._shown:
            return
        state = self._state()
        columns, rows = terminal_size(self._stream)
        lines = render(state, columns, rows)
        written = self._write(paint(lines, state.status, self._colour))
        if written:
            self.frames += 1
        elif written is not None:
            self.skipped += 1

    def _write(self, text: str) -> bool | None:
        """
        Write to the terminal, characters its encoding lacks replaced; a
        terminal that cannot be written to any more ends the drawing.

        @return: whether the text was taken, or C{None} when the drawing
            ended.
        """
        encoding = _encoding(self._stream)
        text = text.encode(encoding, "replace").decode(encoding)
        try:
            return self._writer.write(text)
        except (OSError, ValueError) as error:
            self._cannot_draw(error)
            return None

    def _cannot_draw(self, error: Exception) -> None:
        _log.warn("cannot draw the console: {error}", error=str(error))
        self._shown = False
        self.restore()

    def _catch_resize(self) -> None:
        """
        Redraw when the terminal's size changes. Signals can only be caught
        in the main thread; elsewhere, the next timed redraw shows the new
        size.
        """
        if threading.current_thread() is not threading.main_thread():
            return

        def resized(number: int, frame: Any) -> None:
            self._reactor.callFromThread(self.redraw_soon)

        self._previous_handler = signal.signal(signal.SIGWINCH, resized)


def console_screen(
    app: Any, reactor: Any, stream: IO[str], colour: str
) -> ConsoleScreen:
    """
    Build the console of an agent application, fed the HTTP requests of its
    capture store; with inspection off (C{inspect_db_size: -1}) nothing is
    captured, so the console lists no requests.

    @param app: the L{tunnelkit.agent.app.AgentApplication}.
    @param stream: the terminal.
    @param colour: C{console_ui_color}.
    @return: the screen, not started.
    """
    requests = RecentRequests()
    screen = ConsoleScreen(reactor, stream, lambda: agent_state(app, requests), colour)
    requests.on_change = screen.redraw_soon
    if app.inspection is not None:
        app.inspection.store.subscribe(requests.observe, requests.clear)
    return screen
