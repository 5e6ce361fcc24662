"""
How log events are written: ngrok's C{logfmt}, C{json} and C{term} lines.

Scripts that wrap ngrok (pyngrok, the node C{ngrok} package) read the agent's
log lines to learn the web address and the public URLs, so tunnelkit writes
its L{twisted.logger} events in the same shapes: C{t}, C{lvl} and C{msg}
first, then the optional C{obj}, then the event's own fields in the order
they were given.  This module turns events into those lines, filters them by
level and opens the target named by C{--log}; it emits no events of its own.

Times are written in UTC.  Lines are written as text; a stream whose encoding
cannot represent a character in a line (such as the C{…} of a redacted secret
on an ASCII-only terminal) makes that line fail to be written.
"""

import json
import os
import re
import sys
import time
from datetime import datetime, timezone
from typing import IO, Callable, Mapping, NamedTuple

from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogFilterPredicate,
    ILogObserver,
    LogBeginner,
    LogEvent,
    LogLevel,
    LogLevelFilterPredicate,
    PredicateResult,
    formatEvent,
    globalLogBeginner,
)
from twisted.python.failure import Failure
from zope.interface import provider

from tunnelkit.errors import TunnelkitError

FORMATS: tuple[str, ...] = ("term", "logfmt", "json")

LEVELS: Mapping[str, LogLevel] = {
    "crit": LogLevel.critical,
    "warn": LogLevel.warn,
    "error": LogLevel.error,
    "info": LogLevel.info,
    "debug": LogLevel.debug,
}

SECRET_FIELDS = frozenset({"authtoken", "token", "password", "basic_auth"})

_LEVEL_ALIASES = {**LEVELS, "dbug": LogLevel.debug, "eror": LogLevel.error}

_PRINTED_LEVELS: Mapping[LogLevel, str] = {
    LogLevel.debug: "dbug",
    LogLevel.info: "info",
    LogLevel.warn: "warn",
    LogLevel.error: "eror",
    LogLevel.critical: "crit",
}

_COLOURS = {"dbug": "36", "info": "32", "warn": "33", "eror": "31", "crit": "1;35"}

_RESERVED_KEYS = frozenset({"t", "lvl", "msg"})

# Keys that twisted.python.log puts into its events next to the caller's fields.
_LEGACY_KEYS = frozenset(
    {"message", "time", "system", "isError", "format", "logLevel"}
    | {"failure", "why", "printed"}
)

# What Twisted's listening ports log, whatever their factory's noisy says:
# "HttpIngressFactory starting on 8080" and "(TCP Port 8080 Closed)".
# tunnelkit logs its own "serving ... on" events instead.
_PORT_NOISE = re.compile(
    r"^(?:\S+(?: \(TLS\))? starting on \d+|\(\w+ Port \d+ Closed\))$"
)

_BARE = re.compile(r'[^\s="\\\x00-\x1f\x7f-\x9f]+')
_SPECIAL = re.compile(r'[\\"\x00-\x1f\x7f-\x9f\u2028\u2029]')
_KEY_UNSAFE = re.compile(r'[\s="\\\x00-\x1f]')
_TIGHT = (",", ":")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


class _Record(NamedTuple):
    """
    One event reduced to what every format writes.
    """

    t: str
    lvl: str
    msg: str
    fields: list[tuple[str, object]]
    traceback: str | None

    def pairs(self) -> list[tuple[str, object]]:
        """
        Everything as key and value pairs, as logfmt and JSON write them.
        """
        head: list[tuple[str, object]] = [("t", self.t), ("lvl", self.lvl)]
        tail = [] if self.traceback is None else [("traceback", self.traceback)]
        return head + [("msg", self.msg)] + self.fields + tail


def parse_level(name: str) -> LogLevel:
    """
    Read a C{--log-level} value.

    @param name: one of C{crit}, C{warn}, C{error}, C{info} or C{debug} (in
        any case); C{dbug} and C{eror}, as the lines print them, are accepted
        too.
    @return: the lowest L{LogLevel} that is written.
    @raise TunnelkitError: C{TK_LOG_LEVEL} for any other name.
    """
    level = _LEVEL_ALIASES.get(name.strip().lower())
    if level is None:
        allowed = ", ".join(LEVELS)
        raise TunnelkitError(
            "TK_LOG_LEVEL", f"unknown log level {name!r}; use one of {allowed}"
        )
    return level


def redact(value: object) -> object:
    """
    Hide a secret, keeping only enough of it to tell secrets apart.

    @param value: a secret, or a list of secrets (such as C{basic_auth}).
    @return: its first 4 characters followed by C{…}, or C{***} when it has 4
        characters or fewer; C{None} stays C{None}, a list is redacted item by
        item.
    """
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [redact(item) for item in value]
    text = value if isinstance(value, str) else str(value)
    return text[:4] + "…" if len(text) > 4 else "***"


def _record(event: LogEvent, tracebacks: bool) -> _Record:
    """
    Reduce an event to its time, printed level, sentence and fields.

    @param event: a L{twisted.logger} event.
    @param tracebacks: include the traceback of a failure.
    @return: the record every format writes from.
    """
    legacy = event.get("log_namespace") == "log_legacy"
    own = {
        key: value
        for key, value in event.items()
        if not key.startswith("log_") and not (legacy and key in _LEGACY_KEYS)
    }
    secrets = {key: redact(own[key]) for key in own if key.lower() in SECRET_FIELDS}
    own.update(secrets)

    failure = event.get("log_failure")
    if legacy and failure is None and isinstance(event.get("failure"), Failure):
        failure = event["failure"]
        msg = str(event.get("why") or "Unhandled Error")
    else:
        msg = formatEvent({**event, **secrets} if secrets else event)

    fields: list[tuple[str, object]] = []
    obj = own.pop("obj", None)
    if obj is not None:
        fields.append(("obj", obj))
    for key, value in own.items():
        fields.append((key + "_" if key in _RESERVED_KEYS else key, value))
    traceback = None
    if isinstance(failure, Failure):
        if "err" not in own:
            fields.append(("err", _error_text(failure)))
        if tracebacks or event.get("log_level") == LogLevel.critical:
            traceback = failure.getTraceback().rstrip("\n")

    seconds = event.get("log_time")
    stamp = datetime.fromtimestamp(
        time.time() if seconds is None else seconds, timezone.utc
    )
    lvl = _PRINTED_LEVELS.get(event.get("log_level", LogLevel.info), "info")
    return _Record(stamp.strftime("%Y-%m-%dT%H:%M:%S%z"), lvl, msg, fields, traceback)


def _error_text(failure: Failure) -> str:
    """
    Name a failure as C{<exception type>: <message>}.
    """
    kind = getattr(failure.type, "__name__", str(failure.type))
    message = failure.getErrorMessage()
    return f"{kind}: {message}" if message else kind


def _as_json(value: object) -> str | None:
    """
    A value as compact JSON text, or C{None} if JSON cannot hold it.
    """
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=_TIGHT)
    except (TypeError, ValueError):
        return None


def _json_text(value: object) -> str:
    """
    A value as JSON text; a value JSON cannot hold becomes its C{str}.
    """
    text = _as_json(value)
    return json.dumps(str(value), ensure_ascii=False) if text is None else text


def _logfmt_value(value: object) -> str:
    """
    A value as logfmt writes it: strings as they are, other values as JSON
    text (or their C{str}), quoted with backslash escapes when empty or when
    they hold spaces, quotes, C{=}, backslashes or control characters.
    """
    text = value if isinstance(value, str) else _as_json(value) or str(value)
    if _BARE.fullmatch(text):
        return text
    return '"' + _SPECIAL.sub(_escape, text) + '"'


def _logfmt_key(key: str) -> str:
    """
    A key with the characters that would split a logfmt pair replaced by C{_}.
    """
    return _KEY_UNSAFE.sub("_", key) or "_"


def _escape(match: "re.Match[str]") -> str:
    """
    The backslash escape of one special character.
    """
    char = match.group()
    if char in _ESCAPES:
        return _ESCAPES[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def logfmt_line(event: LogEvent, tracebacks: bool = False) -> str:
    """
    Write an event as one logfmt line, as ngrok's C{--log-format logfmt}.

    @param event: a L{twisted.logger} event.
    @param tracebacks: add a failure's traceback as a C{traceback} field.
    @return: the line, without its newline.
    """
    pairs = _record(event, tracebacks).pairs()
    return " ".join(f"{_logfmt_key(k)}={_logfmt_value(v)}" for k, v in pairs)


def json_line(event: LogEvent, tracebacks: bool = False) -> str:
    """
    Write an event as one JSON object, as ngrok's C{--log-format json}.

    @param event: a L{twisted.logger} event.
    @param tracebacks: add a failure's traceback as a C{traceback} member.
    @return: the object's text, without a newline.
    """
    pairs = _record(event, tracebacks).pairs()
    return "{" + ",".join(f"{json.dumps(k)}:{_json_text(v)}" for k, v in pairs) + "}"


def term_line(event: LogEvent, colour: bool, tracebacks: bool = False) -> str:
    """
    Write an event for a person at a terminal: time, level, sentence, fields.

    @param event: a L{twisted.logger} event.
    @param colour: colour the level and the field names with ANSI escapes.
    @param tracebacks: add a failure's traceback on the lines that follow.
    @return: the text, without its final newline.
    """
    record = _record(event, tracebacks)
    when = record.t[:10] + " " + record.t[11:19]
    level, key_style = record.lvl.upper(), "{}="
    if colour:
        level = f"\x1b[{_COLOURS[record.lvl]}m{level}\x1b[0m"
        key_style = "\x1b[2m{}=\x1b[0m"
    pairs = " ".join(
        key_style.format(_logfmt_key(k)) + _logfmt_value(v) for k, v in record.fields
    )
    line = f"{when} {level} {record.msg:<40} {pairs}".rstrip()
    if record.traceback is not None:
        line += "\n" + "\n".join("  " + row for row in record.traceback.split("\n"))
    return line


def _is_tty(stream: IO[str]) -> bool:
    """
    Whether a stream is a terminal; a stream that cannot tell is not.
    """
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def format_observer(
    fmt: str, stream: IO[str], tracebacks: bool = False
) -> ILogObserver:
    """
    The observer writing one C{--log-format} to a stream, a line per event.

    C{term} asks the stream once whether it is a TTY: it writes coloured
    L{term_line} lines to a terminal and, as ngrok does, L{logfmt_line} lines
    to anything else.

    @param fmt: C{term}, C{logfmt} or C{json}.
    @param stream: a text file object.
    @param tracebacks: write the tracebacks of failures.
    @return: the observer.
    @raise TunnelkitError: C{TK_LOG_FORMAT} for any other format.
    """
    fmt = _check_format(fmt)
    if fmt == "term" and _is_tty(stream):
        return FileLogObserver(stream, lambda e: term_line(e, True, tracebacks) + "\n")
    line = json_line if fmt == "json" else logfmt_line
    return FileLogObserver(stream, lambda e: line(e, tracebacks) + "\n")


def _check_format(fmt: str) -> str:
    """
    Read a C{--log-format} value, in any case, or raise C{TK_LOG_FORMAT}.
    """
    if fmt.strip().lower() not in FORMATS:
        allowed = ", ".join(FORMATS)
        raise TunnelkitError(
            "TK_LOG_FORMAT", f"unknown log format {fmt!r}; use one of {allowed}"
        )
    return fmt.strip().lower()


@provider(ILogObserver)
def _discard(event: LogEvent) -> None:
    """
    Write nothing: the observer for C{--log false}.
    """


@provider(ILogFilterPredicate)
def _quiet_ports(event: LogEvent) -> PredicateResult:
    """
    Leave out the lines Twisted's listening ports log as they open and
    close; tunnelkit logs its listeners itself.
    """
    if event.get("log_namespace") == "log_legacy" and _PORT_NOISE.match(
        str(event.get("log_text", ""))
    ):
        return PredicateResult.no
    return PredicateResult.maybe


class LogOutput(FilteringLogObserver):
    """
    The observer L{start_logging} returns: a level filter in front of one
    format's observer, holding the file it opened, if any.  As with any
    L{LogLevelFilterPredicate}, events without a C{log_namespace} are dropped;
    so are the lines Twisted's listening ports log as they open and close.

    @ivar level: the lowest level written.
    @ivar _owned: the file opened for this output, closed by L{close}.
    """

    def __init__(
        self, observer: ILogObserver, level: LogLevel, owned: IO[str] | None
    ) -> None:
        super().__init__(
            observer, [LogLevelFilterPredicate(defaultLogLevel=level), _quiet_ports]
        )
        self.level = level
        self._owned = owned

    def close(self) -> None:
        """
        Close the log file this output opened; C{stdout} and C{stderr} are left
        open.
        """
        if self._owned is not None:
            self._owned.close()


def start_logging(
    target: str,
    fmt: str,
    level: str,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
) -> LogOutput:
    """
    Build the observer for C{--log}, C{--log-format} and C{--log-level}.

    Tracebacks of failures are written only at level C{debug}.  Nothing is
    installed: pass the result to L{install}, or return it to twistd.

    @param target: C{stdout}, C{stderr}, C{false} (write nothing) or the path
        of a file, opened for appending and line-buffered.
    @param fmt: C{term}, C{logfmt} or C{json}.
    @param level: C{crit}, C{warn}, C{error}, C{info} or C{debug}.
    @param stdout: the stream for C{stdout}; L{sys.stdout} at call time if
        not given.
    @param stderr: the stream for C{stderr}; L{sys.stderr} at call time if
        not given.
    @return: the filtering observer.
    @raise TunnelkitError: C{TK_LOG_LEVEL} or C{TK_LOG_FORMAT} for an unknown
        level or format, C{TK_LOG_UNWRITABLE} for a file that cannot be opened.
    """
    threshold = parse_level(level)
    _check_format(fmt)

    owned = None
    if target == "stdout":
        stream = sys.stdout if stdout is None else stdout
    elif target == "stderr":
        stream = sys.stderr if stderr is None else stderr
    elif target == "false":
        return LogOutput(_discard, threshold, None)
    else:
        stream = owned = _open_log_file(target)
    observer = format_observer(fmt, stream, tracebacks=threshold == LogLevel.debug)
    return LogOutput(observer, threshold, owned)


def _open_log_file(path: str) -> IO[str]:
    """
    Open a log file for appending, line-buffered, in UTF-8.

    @raise TunnelkitError: C{TK_LOG_UNWRITABLE} naming the path.
    """
    try:
        return open(os.path.expanduser(path), "a", buffering=1, encoding="utf-8")
    except OSError as error:
        reason = error.strerror or str(error)
        raise TunnelkitError(
            "TK_LOG_UNWRITABLE",
            f"cannot open the log file {path!r} for appending ({reason}); "
            "choose a writable path, or log to stdout, stderr or false",
        ) from error


def install(
    observer: ILogObserver,
    beginner: LogBeginner = globalLogBeginner,
    discard_buffer: bool = False,
) -> None:
    """
    Make C{observer} the place every event goes, from now on.

    Events logged before this call were buffered by Twisted and are replayed
    to C{observer} unless C{discard_buffer} is set.  Standard output and
    error are not redirected into the log.

    @param observer: usually the result of L{start_logging}.
    @param beginner: the log beginner; Twisted's global one unless a test
        gives its own.
    @param discard_buffer: drop the buffered events instead of replaying them.
    """
    beginner.beginLoggingTo(
        [observer], discardBuffer=discard_buffer, redirectStandardIO=False
    )


def twistd_observer_factory(
    target: str, fmt: str, level: str
) -> Callable[[], LogOutput]:
    """
    A zero-argument observer factory, the kind twistd's C{--logger} calls.

    The level and format are checked now; the file is opened when twistd
    calls the factory.

    @param target: as for L{start_logging}.
    @param fmt: as for L{start_logging}.
    @param level: as for L{start_logging}.
    @return: a callable returning the result of L{start_logging}.
    @raise TunnelkitError: C{TK_LOG_LEVEL} or C{TK_LOG_FORMAT}.
    """
    parse_level(level)
    _check_format(fmt)
    return lambda: start_logging(target, fmt, level)


def twistd_logger(environ: Mapping[str, str] = os.environ) -> LogOutput:
    """
    The observer for C{twistd --logger tunnelkit.logs.twistd_logger}.

    twistd names its logger by dotted path and passes it no arguments, so the
    settings come from the environment: C{TUNNELKIT_LOG} (default C{stdout}),
    C{TUNNELKIT_LOG_FORMAT} (default C{term}) and C{TUNNELKIT_LOG_LEVEL}
    (default C{info}).

    @param environ: the environment to read.
    @return: the result of L{start_logging}.
    @raise TunnelkitError: as L{start_logging}.
    """
    return start_logging(
        environ.get("TUNNELKIT_LOG", "stdout"),
        environ.get("TUNNELKIT_LOG_FORMAT", "term"),
        environ.get("TUNNELKIT_LOG_LEVEL", "info"),
    )
