"""
Tests for L{tunnelkit.agent.console}: the console screen laid out as text,
cut to the terminal's size, and painted with escape sequences.
"""

from datetime import datetime, timedelta, timezone

from twisted.trial.unittest import SynchronousTestCase

from tunnelkit.agent.console import (
    ConsoleState,
    RequestLine,
    console_wanted,
    format_latency,
    paint,
    render,
    request_line,
)

ONLINE = ConsoleState(
    status="online",
    version="9.8.7",
    edge="127.0.0.1:4443",
    latency=0.0123,
    web_url="http://127.0.0.1:4040",
    forwarding=[("http://web.localhost:8080", "http://localhost:8000")],
    connections={
        "count": 12,
        "gauge": 2,
        "rate1": 0.0456,
        "rate5": 0.01,
        "p50": 1.5e9,
        "p90": 12.346e9,
    },
)

NOON = datetime(2026, 12, 4, 12, 0, 1, 234567, tzinfo=timezone.utc)


class RenderTests(SynchronousTestCase):
    """
    L{render} lays out the screen as ngrok does.
    """

    def test_layout(self) -> None:
        """
        The header, the labelled lines in ngrok's order and the connections
        line with its figures, each value at column 30.
        """
        lines = render(ONLINE, 100, 40)

        self.assertEqual(
            lines,
            [
                "tunnelkit" + " " * 53 + "(Ctrl+C to quit)",
                "",
                "Session Status                online",
                "Version                       9.8.7",
                "Edge                          127.0.0.1:4443",
                "Latency                       12ms",
                "Web Interface                 http://127.0.0.1:4040",
                "Forwarding                    http://web.localhost:8080"
                " -> http://localhost:8000",
                "",
                "Connections                   ttl     opn     rt1     rt5     p50"
                "     p90",
                "                              12      2       0.05    0.01    1.50"
                "    12.35",
            ],
        )

    def test_connecting(self) -> None:
        """
        Before anything is known the screen says so: no latency, no web
        interface line when it is off, and an unbound tunnel.
        """
        state = ConsoleState(
            status="connecting",
            version="1",
            forwarding=[(None, "http://localhost:8000")],
        )

        lines = render(state, 80, 24)

        self.assertIn("Session Status                connecting", lines)
        self.assertIn("Latency                       -", lines)
        self.assertIn(
            "Forwarding                    (not bound) -> http://localhost:8000", lines
        )
        self.assertFalse([line for line in lines if line.startswith("Web Interface")])
        self.assertFalse([line for line in lines if line.startswith("Edge")])

    def test_no_tunnels(self) -> None:
        """
        An agent with no tunnels says it started none.
        """
        state = ConsoleState(status="online", version="1")

        lines = render(state, 80, 24)

        self.assertIn("Forwarding                    (no tunnels started)", lines)

    def test_narrow(self) -> None:
        """
        On a narrow terminal every line is cut to its width, with C{…}
        where something was cut; the header still ends with its hint.
        """
        lines = render(ONLINE, 40, 40)

        self.assertTrue(all(len(line) <= 40 for line in lines))
        self.assertEqual(lines[7], "Forwarding                    http://we…")
        self.assertTrue(lines[0].startswith("tunnelkit"))

    def test_short(self) -> None:
        """
        On a short terminal only the lines that fit are drawn.
        """
        lines = render(ONLINE, 100, 3)

        self.assertEqual(len(lines), 3)
        self.assertEqual(lines[2], "Session Status                online")

    def test_requests(self) -> None:
        """
        The recent requests follow under C{HTTP Requests}, newest first as
        given, as many as fit.
        """
        requests = [
            RequestLine(NOON + timedelta(seconds=n), "GET", f"/page/{n}", "200 OK")
            for n in range(30)
        ]
        state = ConsoleState(status="online", version="1", requests=requests)

        lines = render(state, 80, 20)

        heading = lines.index("HTTP Requests")
        self.assertEqual(lines[heading + 1], "-------------")
        shown = lines[heading + 3 :]
        self.assertEqual(len(lines), 20)
        self.assertEqual(shown, [request_line(r, 80) for r in requests[: len(shown)]])
        self.assertTrue(shown)

    def test_no_requests(self) -> None:
        """
        Without requests, there is no request list.
        """
        self.assertNotIn("HTTP Requests", render(ONLINE, 100, 40))


class RequestLineTests(SynchronousTestCase):
    """
    L{request_line} shows one request: time, method, path, status.
    """

    def test_columns(self) -> None:
        """
        The local time to the millisecond with its zone, the method padded
        to 7 columns, the path to 31, then the status line.
        """
        request = RequestLine(NOON, "GET", "/favicon.ico", "404 Not Found")
        local = NOON.astimezone()

        line = request_line(request, 120)

        when = local.strftime("%H:%M:%S.234 %Z")
        self.assertEqual(line, f"{when} GET     {'/favicon.ico':<31} 404 Not Found")

    def test_pending(self) -> None:
        """
        A request without a response yet has no status.
        """
        line = request_line(RequestLine(NOON, "POST", "/upload"), 120)

        self.assertTrue(line.endswith("POST    /upload"))

    def test_long_path_cut(self) -> None:
        """
        A path too long for the terminal is cut so that the line fits and
        the status still shows.
        """
        request = RequestLine(NOON, "GET", "/" + "x" * 200, "200 OK")

        line = request_line(request, 80)

        self.assertEqual(len(line), 80)
        self.assertTrue(line.endswith("x… 200 OK"))

    def test_control_characters(self) -> None:
        """
        Control characters in a request never reach the terminal: an
        escape sequence in the path or method shows as C{?}.
        """
        request = RequestLine(NOON, "GE\x1bT", "/\x1b[2J\x07\x9b", "200 \x1bOK")

        line = request_line(request, 120)

        self.assertNotRegex(line, "[\x00-\x1f\x7f-\x9f]")
        self.assertIn("/?[2J??", line)


class FormatTests(SynchronousTestCase):
    """
    Figures as the console prints them.
    """

    def test_latency(self) -> None:
        """
        Latency is in milliseconds, with a decimal under 10 ms; C{-} until
        measured.
        """
        self.assertEqual(
            [format_latency(value) for value in (None, 0.0004, 0.0123, 0.25)],
            ["-", "0.4ms", "12ms", "250ms"],
        )


class PaintTests(SynchronousTestCase):
    """
    L{paint} turns lines into escape sequences for a terminal.
    """

    def test_frame(self) -> None:
        """
        A frame homes the cursor, clears each line's end, and clears below
        the last line; lines are joined without a newline after the last.
        """
        text = paint(["one", "two"], "online", "transparent")

        self.assertTrue(text.startswith("\x1b[0m\x1b[H"))
        self.assertIn("two\x1b[K\x1b[J", text)
        self.assertTrue(text.endswith("\x1b[J"))
        self.assertEqual(text.count("\r\n"), 1)

    def test_black(self) -> None:
        """
        C{console_ui_color: black} paints white on black; C{transparent}
        does not set a background.
        """
        black = paint(["one"], "online", "black")
        transparent = paint(["one"], "online", "transparent")

        self.assertIn("\x1b[40;97m", black)
        self.assertNotIn("\x1b[40", transparent)

    def test_status_coloured(self) -> None:
        """
        The session status is coloured green when online, and the text
        shown is the same as the plain line.
        """
        lines = render(ONLINE, 100, 40)

        text = paint(lines, "online", "transparent")

        self.assertIn("\x1b[32monline\x1b[0m", text)


class ConsoleWantedTests(SynchronousTestCase):
    """
    L{console_wanted} decides when the console is drawn.
    """

    def test_iftty(self) -> None:
        """
        C{iftty} draws it when standard output is a terminal only.
        """
        self.assertEqual(
            [
                console_wanted("iftty", "false", True, True),
                console_wanted("iftty", "false", False, True),
            ],
            [True, False],
        )

    def test_true_and_false(self) -> None:
        """
        C{true} draws it even on a pipe; C{false} never.
        """
        self.assertEqual(
            [
                console_wanted("true", "false", False, False),
                console_wanted("false", "false", True, True),
            ],
            [True, False],
        )

    def test_log_to_stdout(self) -> None:
        """
        A log to standard output turns the console off, as in ngrok.
        """
        self.assertFalse(console_wanted("true", "stdout", True, True))

    def test_log_to_stderr(self) -> None:
        """
        A log to standard error turns it off when standard error is a
        terminal, and not when it goes elsewhere.
        """
        self.assertEqual(
            [
                console_wanted("iftty", "stderr", True, True),
                console_wanted("iftty", "stderr", True, False),
            ],
            [False, True],
        )

    def test_log_file(self) -> None:
        """
        A log file leaves the console on.
        """
        self.assertTrue(console_wanted("iftty", "/var/log/tk.log", True, True))
