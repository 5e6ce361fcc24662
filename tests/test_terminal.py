"""
Tests for L{tunnelkit.agent.terminal}: the console screen drawn on a
terminal on a timer and after events, the terminal given back as it was,
the terminal's size read at each redraw, and what the screen shows of an
agent.
"""

import fcntl
import io
import os
import signal
import struct
import termios
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any, Callable

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tunnelkit import cli
from tunnelkit.agent.app import AgentApplication
from tunnelkit.agent.captures import Capture, CapturedRequest, CapturedResponse
from tunnelkit.agent.console import ConsoleState
from tunnelkit.agent.service import AgentService
from tunnelkit.agent.terminal import (
    DEFAULT_SIZE,
    ENTER,
    EVENT_DELAY,
    LEAVE,
    REDRAW_INTERVAL,
    ConsoleScreen,
    RecentRequests,
    agent_state,
    console_screen,
    is_terminal,
    terminal_size,
)
from tunnelkit.agent.upstream import CountedConnection
from tunnelkit.config import AgentConfig, HostPort, TunnelDefinition, UpstreamAddress
from tests.test_cli import CommandTestCase, IdleReactor

WEB = TunnelDefinition(
    name="web", proto="http", addr=UpstreamAddress("http", "localhost", 8000)
)

NOON = datetime(2026, 12, 4, 12, 0, 0, tzinfo=timezone.utc)


def pty_pair(test: SynchronousTestCase, columns: int, rows: int) -> tuple[int, Any]:
    """
    A pseudo-terminal of the given size, closed by the test's clean-up.

    @return: the master's descriptor and the slave as a text stream.
    """
    master, slave = os.openpty()
    set_size(slave, columns, rows)
    stream = open(slave, "w", encoding="utf-8")
    test.addCleanup(os.close, master)
    test.addCleanup(stream.close)
    return master, stream


def set_size(fd: int, columns: int, rows: int) -> None:
    """
    Tell a terminal its size.
    """
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


def read_available(fd: int) -> str:
    """
    @return: what a pseudo-terminal's master can read now, without
        waiting.
    """
    os.set_blocking(fd, False)
    chunks = []
    for _ in range(1000):
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


class ImmediateThreadsClock(Clock):
    """
    A clock that also runs C{callFromThread} calls, at once.
    """

    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:
        f(*args)


def state() -> ConsoleState:
    return ConsoleState(status="online", version="1.2.3")


class ConsoleScreenTests(SynchronousTestCase):
    """
    L{ConsoleScreen} draws the console while it runs.
    """

    def start(self, **kwargs: Any) -> tuple[Clock, io.StringIO, ConsoleScreen]:
        clock = kwargs.pop("clock", None) or Clock()
        stream = io.StringIO()
        screen = ConsoleScreen(clock, stream, state, watch_resize=False, **kwargs)
        screen.startService()
        self.addCleanup(screen.restore)
        return clock, stream, screen

    def test_enters_and_draws(self) -> None:
        """
        Starting switches to the alternate screen and draws at once.
        """
        clock, stream, screen = self.start()

        text = stream.getvalue()
        self.assertTrue(text.startswith(ENTER))
        self.assertIn("Session Status", text)
        self.assertEqual(screen.frames, 1)

    def test_redraws_every_second(self) -> None:
        """
        The screen is drawn again once a second.
        """
        clock, stream, screen = self.start()

        clock.advance(REDRAW_INTERVAL)
        clock.advance(REDRAW_INTERVAL)

        self.assertEqual(screen.frames, 3)

    def test_events_share_a_redraw(self) -> None:
        """
        Events close together cause one redraw, shortly after the first.
        """
        clock, stream, screen = self.start()

        screen.redraw_soon()
        screen.redraw_soon()
        clock.advance(EVENT_DELAY)

        self.assertEqual(screen.frames, 2)

    def test_restore(self) -> None:
        """
        Stopping gives the terminal back once, leaves no timer behind, and
        draws no more.
        """
        clock, stream, screen = self.start()

        screen.stopService()
        screen.restore()
        screen.redraw_soon()
        screen.redraw()

        self.assertTrue(stream.getvalue().endswith(LEAVE))
        self.assertEqual(stream.getvalue().count(LEAVE), 1)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(screen.frames, 1)

    def test_restore_cancels_pending(self) -> None:
        """
        A redraw asked for before stopping is cancelled.
        """
        clock, stream, screen = self.start()
        screen.redraw_soon()

        screen.restore()

        self.assertEqual(clock.getDelayedCalls(), [])

    def test_unwritable(self) -> None:
        """
        A terminal that cannot be written to stops the drawing instead of
        failing the timer.
        """
        clock, stream, screen = self.start()
        stream.close()

        clock.advance(REDRAW_INTERVAL)

        self.assertEqual(screen.frames, 1)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_resize_redraws(self) -> None:
        """
        A C{SIGWINCH} redraws the screen shortly; once stopped, the
        previous handler is back.
        """
        previous = signal.getsignal(signal.SIGWINCH)
        clock = ImmediateThreadsClock()
        screen = ConsoleScreen(clock, io.StringIO(), state)
        screen.startService()
        self.addCleanup(screen.restore)

        os.kill(os.getpid(), signal.SIGWINCH)
        clock.advance(EVENT_DELAY)
        screen.restore()

        self.assertEqual(screen.frames, 2)
        self.assertEqual(signal.getsignal(signal.SIGWINCH), previous)

    def test_size_read_each_redraw(self) -> None:
        """
        Each frame is cut to the terminal's size at the time it is drawn.
        """
        master, stream = pty_pair(self, 100, 30)
        clock = Clock()
        wide = ConsoleState(status="online", version="v" * 200)
        screen = ConsoleScreen(clock, stream, lambda: wide, watch_resize=False)
        screen.startService()
        self.addCleanup(screen.restore)
        first = read_available(master)

        set_size(stream.fileno(), 50, 30)
        clock.advance(REDRAW_INTERVAL)
        second = read_available(master)

        self.assertIn("v" * 69 + "…", first)
        self.assertIn("v" * 19 + "…", second)
        self.assertNotIn("v" * 20, second)

    def test_paused_terminal(self) -> None:
        """
        A terminal that stops reading has screens skipped instead of
        blocking the agent; once it reads again, drawing goes on; stopping
        makes its descriptor block again, as it did.
        """
        master, stream = pty_pair(self, 80, 24)
        clock = Clock()
        screen = ConsoleScreen(clock, stream, state, watch_resize=False)
        screen.startService()
        self.addCleanup(screen.restore)

        for _ in range(2000):
            screen.redraw()
        paused = screen.frames
        read_available(master)
        screen.redraw()
        screen.redraw()
        read_available(master)
        screen.restore()

        self.assertGreater(screen.skipped, 0)
        self.assertLess(paused, 2000)
        self.assertGreater(screen.frames, paused)
        self.assertTrue(os.get_blocking(stream.fileno()))
        self.assertTrue(read_available(master).endswith(LEAVE))


class TerminalTests(SynchronousTestCase):
    """
    Telling a terminal, and its size.
    """

    def test_pty(self) -> None:
        """
        A pseudo-terminal is a terminal, of the size it was given.
        """
        master, stream = pty_pair(self, 123, 45)

        self.assertEqual(
            (is_terminal(stream), terminal_size(stream)), (True, (123, 45))
        )

    def test_sizeless_pty(self) -> None:
        """
        A terminal that reports no size gets the default one.
        """
        master, stream = pty_pair(self, 0, 0)

        self.assertEqual(terminal_size(stream), DEFAULT_SIZE)

    def test_not_a_terminal(self) -> None:
        """
        A stream without a file descriptor is no terminal and has the
        default size.
        """
        stream = io.StringIO()

        self.assertEqual(
            (is_terminal(stream), terminal_size(stream)), (False, DEFAULT_SIZE)
        )


def capture(
    id: str, seconds: int, uri: str = "/", status: str | None = None
) -> SimpleNamespace:
    """
    A stand-in for a capture of the store, with what the console reads.
    """
    return SimpleNamespace(
        id=id,
        start=NOON + timedelta(seconds=seconds),
        method="GET",
        uri=uri,
        status=status,
    )


class RecentRequestsTests(SynchronousTestCase):
    """
    L{RecentRequests} follows the capture store.
    """

    def test_newest_first(self) -> None:
        """
        Requests are listed newest first, each with its status once its
        response came, in the place it had.
        """
        changes: list[None] = []
        recent = RecentRequests(on_change=lambda: changes.append(None))

        recent.observe(capture("a", 1, "/one"))
        recent.observe(capture("b", 2, "/two"))
        recent.observe(capture("a", 1, "/one", "200 OK"))

        lines = recent.lines()
        self.assertEqual([line.uri for line in lines], ["/two", "/one"])
        self.assertEqual([line.status for line in lines], ["", "200 OK"])
        self.assertEqual(len(changes), 3)

    def test_bounded(self) -> None:
        """
        Only the most recent requests are kept.
        """
        recent = RecentRequests(limit=3)

        for n in range(10):
            recent.observe(capture(str(n), n, f"/{n}"))

        self.assertEqual([line.uri for line in recent.lines()], ["/9", "/8", "/7"])

    def test_completion_keeps_place(self) -> None:
        """
        A request completed late is still the oldest one: the next new
        request pushes it out.
        """
        recent = RecentRequests(limit=2)
        recent.observe(capture("a", 1, "/a"))
        recent.observe(capture("b", 2, "/b"))
        recent.observe(capture("a", 1, "/a", "200 OK"))

        recent.observe(capture("c", 3, "/c"))

        self.assertEqual([line.uri for line in recent.lines()], ["/c", "/b"])

    def test_clear(self) -> None:
        """
        Clearing forgets every request.
        """
        recent = RecentRequests()
        recent.observe(capture("a", 1))

        recent.clear()

        self.assertEqual(recent.lines(), [])


class AgentStateTests(SynchronousTestCase):
    """
    L{agent_state} reads what the console shows from the agent.
    """

    def app(self, config: AgentConfig = AgentConfig()) -> AgentApplication:
        clock = Clock()
        app = AgentApplication(config, [WEB], clock)
        app.agent = AgentService(
            config, [WEB], clock, HostPort("127.0.0.1", 4443), None
        )
        return app

    def test_before_the_agent(self) -> None:
        """
        Before the agent service exists, the console shows it connecting,
        with its tunnels not bound yet.
        """
        app = AgentApplication(AgentConfig(), [WEB], Clock())

        shown = agent_state(app, RecentRequests())

        self.assertEqual(shown.status, "connecting")
        self.assertEqual(list(shown.forwarding), [(None, "http://localhost:8000")])

    def test_agent(self) -> None:
        """
        The status, edge, tunnels and connection figures come from the
        agent service; the requests from the list given.
        """
        app = self.app()
        agent = app.agent
        assert agent is not None
        agent.tunnels["web"].public_urls = ("https://web.example", "http://web.example")
        CountedConnection(agent.tunnels["web"])
        recent = RecentRequests()
        recent.observe(capture("a", 1, "/x", "200 OK"))

        shown = agent_state(app, recent)

        self.assertEqual(shown.status, "connecting")
        self.assertEqual(shown.edge, "127.0.0.1:4443")
        self.assertIsNone(shown.latency)
        self.assertEqual(
            list(shown.forwarding),
            [
                ("https://web.example", "http://localhost:8000"),
                ("http://web.example", "http://localhost:8000"),
            ],
        )
        self.assertEqual(
            (shown.connections["count"], shown.connections["gauge"]), (1, 1)
        )
        self.assertEqual([line.uri for line in shown.requests], ["/x"])

    def test_labeled(self) -> None:
        """
        A labeled tunnel, which has no URL, is shown with its labels.
        """
        labeled = TunnelDefinition(
            name="api",
            proto=None,
            labels=(("app", "web"),),
            addr=UpstreamAddress("http", "localhost", 8000),
        )
        clock = Clock()
        app = AgentApplication(AgentConfig(), [labeled], clock)
        app.agent = AgentService(
            AgentConfig(), [labeled], clock, HostPort("127.0.0.1", 4443), None
        )

        shown = agent_state(app, RecentRequests())

        self.assertEqual(
            list(shown.forwarding), [("labels app=web", "http://localhost:8000")]
        )

    def test_web_interface(self) -> None:
        """
        The web interface's address is the one the application listens on,
        and none before it listens or when it is off.
        """
        app = self.app()
        before = agent_state(app, RecentRequests())

        app.web_url = "http://127.0.0.1:4041"
        after = agent_state(app, RecentRequests())

        self.assertEqual((before.web_url, after.web_url), (None, app.web_url))


class ConsoleScreenOfAppTests(SynchronousTestCase):
    """
    L{console_screen} draws an application's console, with the requests of
    its capture store.
    """

    def test_requests_listed(self) -> None:
        """
        A request captured is drawn shortly after, and again with its
        status once its response came; clearing the store clears the list.
        """
        clock = Clock()
        stream = io.StringIO()
        app = AgentApplication(AgentConfig(), [WEB], clock)
        assert app.inspection is not None
        store = app.inspection.store
        screen = console_screen(app, clock, stream, "black")
        screen.startService()
        self.addCleanup(screen.restore)
        request = CapturedRequest(method="GET", uri="/listed")
        exchange = Capture("web", "127.0.0.1", NOON.timestamp(), request)

        store.add(exchange)
        clock.advance(EVENT_DELAY)
        pending = stream.getvalue()
        exchange.response = CapturedResponse(status_code=404, reason="Not Found")
        store.complete(exchange)
        clock.advance(EVENT_DELAY)
        answered = stream.getvalue()[len(pending) :]
        store.clear()
        clock.advance(EVENT_DELAY)
        cleared = stream.getvalue()[len(pending) + len(answered) :]

        self.assertRegex(pending, r"GET +/listed\x1b\[K")
        self.assertRegex(answered, r"GET +/listed +404 Not Found")
        self.assertNotIn("/listed", cleared)
        self.assertIn("Session Status", cleared)

    def test_no_inspection(self) -> None:
        """
        With inspection off there is no store to follow, and the console
        still draws.
        """
        clock = Clock()
        stream = io.StringIO()
        app = AgentApplication(AgentConfig(inspect_db_size=-1), [WEB], clock)
        screen = console_screen(app, clock, stream, "black")

        screen.startService()
        screen.restore()

        self.assertIn("Session Status", stream.getvalue())


class ConsoleCommandTests(CommandTestCase):
    """
    C{tunnelkit http} draws the console when it should, and keeps the
    warnings off standard error then.
    """

    def setUp(self) -> None:
        super().setUp()
        self.logs: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self.patch(
            cli, "install_logs", lambda *args, **kw: self.logs.append((args, kw))
        )
        self.reactor = IdleReactor()

    def run_with(self, *lines: str) -> list[Any]:
        """
        Run C{tunnelkit http 8000} with a config file of these lines.

        @return: what it scheduled to run with the reactor.
        """
        config = self.write("tunnelkit.yml", "\n".join(['version: "2"', *lines]))

        status = self.run_command(
            "http", "8000", "--config", config, reactor=self.reactor
        )

        self.assertEqual((status, self.stderr.getvalue()), (0, ""))
        return [getattr(call, "__self__", None) for call in self.reactor.when_running]

    def test_console(self) -> None:
        """
        With C{console_ui: true}, the screen starts with the agent, and
        warnings are not copied to standard error.
        """
        started = self.run_with("console_ui: true")

        self.assertIsInstance(started[0], ConsoleScreen)
        [(args, kw)] = self.logs
        self.assertEqual(kw, {"warnings_to_stderr": False})

    def test_no_console(self) -> None:
        """
        On a stream that is no terminal, C{iftty} draws nothing, and
        warnings are copied to standard error.
        """
        started = self.run_with("console_ui: iftty")

        self.assertFalse([s for s in started if isinstance(s, ConsoleScreen)])
        [(args, kw)] = self.logs
        self.assertEqual(kw, {"warnings_to_stderr": True})
