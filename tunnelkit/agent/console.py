"""
What the agent's console screen shows, as text: session status, version,
edge, latency, web interface, forwarding lines, connection figures and the most
recent HTTP requests, laid out as ngrok lays them out, cut to the
terminal's size. Nothing here touches a terminal or a clock; the screen
that draws this on one is L{tunnelkit.agent.terminal}.

Widths are counted in characters, so a line holding characters a terminal
draws two columns wide may run past the right edge and be cut by the
terminal instead.
"""

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Mapping, Sequence

LABEL_WIDTH = 30
"""Columns of the labels on the left."""

HEADER_WIDTH = 62
"""Columns from the left edge to C{(Ctrl+C to quit)}."""

FIGURE_WIDTH = 8
"""Columns of each figure of the connections line."""

METHOD_WIDTH = 7
"""Columns of the method of an HTTP request line."""

PATH_WIDTH = 31
"""Columns of the path of an HTTP request line, at least."""

NANOSECONDS = 1e9

_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
"""Control characters, which must never reach a terminal from a request."""

_ESC = "\x1b["
_RESET = _ESC + "0m"
_STATUS_COLOURS = {"online": "32", "reconnecting": "33", "connecting": "33"}
_HEADING = "36"

_BLACK_SCREEN = _ESC + "40;97m"
"""White on black, for C{console_ui_color: black}."""


@dataclass(frozen=True)
class RequestLine:
    """
    One HTTP request as the console lists it.

    @ivar start: when the request arrived, with its time zone.
    @ivar method: the request's method.
    @ivar uri: the request target as sent.
    @ivar status: the response's status line text, such as C{200 OK}, or
        C{""} while it has none.
    """

    start: datetime
    method: str
    uri: str
    status: str = ""


@dataclass(frozen=True)
class ConsoleState:
    """
    Everything the console shows at one moment.

    @ivar status: C{online}, C{reconnecting} or C{connecting}.
    @ivar version: the agent's version.
    @ivar edge: the edge's address, shown where ngrok shows its region;
        C{""} while not known.
    @ivar latency: the last round trip to the edge in seconds, or C{None}
        before one was measured.
    @ivar web_url: the web interface's address, or C{None} when it is off.
    @ivar forwarding: C{(public URL, local address)} per public URL; a
        tunnel not bound yet has C{None} for its URL.
    @ivar connections: the C{conns} figures of the agent's metrics.
    @ivar requests: the most recent HTTP requests, newest first.
    """

    status: str
    version: str
    edge: str = ""
    latency: float | None = None
    web_url: str | None = None
    forwarding: Sequence[tuple[str | None, str]] = ()
    connections: Mapping[str, float] = field(default_factory=dict)
    requests: Sequence[RequestLine] = ()


def console_wanted(
    setting: str, log_target: str, stdout_is_tty: bool, stderr_is_tty: bool
) -> bool:
    """
    Decide whether the agent draws its console screen.

    @param setting: C{console_ui}: C{true}, C{false} or C{iftty}.
    @param log_target: where the log goes: C{stdout}, C{stderr}, C{false}
        or a file path.
    @return: C{False} for C{false}, or when the log goes to standard output
        (as in ngrok), or to standard error on a terminal, where it would
        be written over the screen; else C{True} for C{true}, and for
        C{iftty} when standard output is a terminal.
    """
    if setting == "false" or log_target == "stdout":
        return False
    if log_target == "stderr" and stderr_is_tty:
        return False
    return setting == "true" or stdout_is_tty


def printable(text: str) -> str:
    """
    @return: C{text} with each control character replaced by C{?}, so that
        a request cannot send escape sequences to the terminal.
    """
    return _UNPRINTABLE.sub("?", text)


def cut(text: str, width: int) -> str:
    """
    @return: C{text} cut to C{width} characters, the last one C{…} when
        something was cut.
    """
    if len(text) <= width:
        return text
    if width <= 0:
        return ""
    return text[: width - 1] + "…"


def format_latency(seconds: float | None) -> str:
    """
    @return: a round trip in milliseconds, with one decimal under 10 ms;
        C{-} when not measured yet.
    """
    if seconds is None:
        return "-"
    milliseconds = seconds * 1000
    if milliseconds < 10:
        return f"{milliseconds:.1f}ms"
    return f"{milliseconds:.0f}ms"


def connection_figures(conns: Mapping[str, float]) -> list[str]:
    """
    @param conns: the C{conns} object of the metrics' JSON.
    @return: C{ttl}, C{opn}, C{rt1}, C{rt5}, C{p50} and C{p90} as ngrok
        prints them: counts whole, rates per second and percentiles in
        seconds, to two decimals.
    """
    return [
        str(int(conns.get("count", 0))),
        str(int(conns.get("gauge", 0))),
        f"{conns.get('rate1', 0.0):.2f}",
        f"{conns.get('rate5', 0.0):.2f}",
        f"{conns.get('p50', 0.0) / NANOSECONDS:.2f}",
        f"{conns.get('p90', 0.0) / NANOSECONDS:.2f}",
    ]


def request_line(request: RequestLine, width: int) -> str:
    """
    @param width: the columns the line may take; a long path is cut so
        that the status still shows.
    @return: a request as the list shows it: local time to the
        millisecond with the zone's abbreviation, method, path, status.
    """
    start = request.start.astimezone()
    when = start.strftime("%H:%M:%S.") + f"{start.microsecond // 1000:03d}"
    zone = start.strftime("%Z")
    method = printable(request.method)
    status = printable(request.status)
    prefix = f"{when} {zone} {method:<{METHOD_WIDTH}} "
    room = max(1, width - len(prefix) - len(status) - 1)
    path = cut(printable(request.uri), room)
    line = f"{prefix}{path:<{min(PATH_WIDTH, room)}} {status}"
    return line.rstrip()


def _labelled(label: str, value: str) -> str:
    return f"{label:<{LABEL_WIDTH}}{value}"


def render(state: ConsoleState, width: int, height: int) -> list[str]:
    """
    Lay out the screen.

    @param width: the terminal's columns; every line is cut to fit.
    @param height: the terminal's rows; the request list is cut short to
        fit, and so is the whole screen when even the rest does not.
    @return: the screen's lines, without colour.
    """
    right = "(Ctrl+C to quit)"
    header = "tunnelkit".ljust(max(10, min(HEADER_WIDTH, width - len(right))))
    lines = [
        header + right,
        "",
        _labelled("Session Status", state.status),
        _labelled("Version", state.version),
    ]
    if state.edge:
        lines.append(_labelled("Edge", state.edge))
    lines.append(_labelled("Latency", format_latency(state.latency)))
    if state.web_url is not None:
        lines.append(_labelled("Web Interface", state.web_url))
    for url, local in state.forwarding:
        lines.append(_labelled("Forwarding", f"{url or '(not bound)'} -> {local}"))
    if not state.forwarding:
        lines.append(_labelled("Forwarding", "(no tunnels started)"))

    names = ["ttl", "opn", "rt1", "rt5", "p50", "p90"]
    figures = connection_figures(state.connections)
    lines += [
        "",
        "Connections".ljust(LABEL_WIDTH)
        + "".join(name.ljust(FIGURE_WIDTH) for name in names).rstrip(),
        " " * LABEL_WIDTH
        + "".join(figure.ljust(FIGURE_WIDTH) for figure in figures).rstrip(),
    ]

    if state.requests:
        lines += ["", "", "HTTP Requests", "-------------", ""]
        room = max(0, height - len(lines))
        lines += [request_line(request, width) for request in state.requests[:room]]
    return [cut(line, width) for line in lines[:height]]


def paint(lines: Sequence[str], status: str, colour: str) -> str:
    """
    Turn the screen's lines into what a terminal is sent to show them: the
    cursor home, each line cleared to its end, and the rest of the screen
    cleared below.

    @param lines: the result of L{render}.
    @param status: the session status, coloured where it is shown.
    @param colour: C{console_ui_color}: C{black} paints white on black,
        C{transparent} keeps the terminal's own colours.
    @return: the text to write, escape sequences included.
    """
    base = _BLACK_SCREEN if colour == "black" else _RESET
    painted = []
    for index, line in enumerate(lines):
        if index == 0:
            line = _ESC + _HEADING + "m" + line + _RESET + base
        elif line.startswith("Session Status") and status in _STATUS_COLOURS:
            value = line[LABEL_WIDTH:]
            styled = _ESC + _STATUS_COLOURS[status] + "m" + value + _RESET + base
            line = line[:LABEL_WIDTH] + styled
        painted.append(line + _ESC + "K")
    return base + _ESC + "H" + "\r\n".join(painted) + _ESC + "J"
