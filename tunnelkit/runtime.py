"""
What a tunnelkit process sets up around its services: where its log goes,
and the exit status it ends with. Shared by the C{tunnelkit} command and the
twistd plugins.
"""

import atexit
import json
import os
import sys
from typing import IO, Any

from twisted.logger import (
    ILogObserver,
    LogBeginner,
    LogEvent,
    LogPublisher,
    globalLogBeginner,
    globalLogPublisher,
)
from twisted.internet.error import ReactorNotRunning
from twisted.python import usage
from twisted.python.runtime import platform
from zope.interface import implementer

from tunnelkit.logs import SECRET_FIELDS, install, redact, start_logging


@implementer(ILogObserver)
class _Fanout:
    """
    Send each event to several observers.
    """

    def __init__(self, observers: list[ILogObserver]) -> None:
        self.observers = observers

    def __call__(self, event: LogEvent) -> None:
        for observer in self.observers:
            observer(event)


def log_observer(
    options: usage.Options,
    log: str,
    fmt: str,
    level: str,
    stderr: IO[str] | None = None,
    warnings_to_stderr: bool = False,
) -> ILogObserver:
    """
    The observer for a process's log: the flags win over the config file.

    @param warnings_to_stderr: when the log goes nowhere (C{--log false}),
        still write warnings and errors to standard error in the C{term}
        format, so a person sees why the agent is retrying or stopping.
    """
    target = options["log"] or log
    observers: list[ILogObserver] = [
        start_logging(
            target, options["log-format"] or fmt, options["log-level"] or level
        )
    ]
    if target == "false" and warnings_to_stderr:
        observers.append(start_logging("stderr", "term", "warn", stderr=stderr))
    return _Fanout(observers)


def install_logs(
    options: usage.Options,
    log: str,
    fmt: str,
    level: str,
    stderr: IO[str] | None = None,
    beginner: LogBeginner = globalLogBeginner,
    warnings_to_stderr: bool = True,
) -> None:
    """
    Begin logging for the C{tunnelkit} command.

    @param warnings_to_stderr: as for L{log_observer}; off while the
        console screen is drawn, which shows the session's state instead.
    """
    observer = log_observer(options, log, fmt, level, stderr, warnings_to_stderr)
    install(observer, beginner)


def add_twistd_logs(
    options: usage.Options,
    log: str,
    fmt: str,
    level: str,
    publisher: LogPublisher = globalLogPublisher,
) -> None:
    """
    Under twistd, which has begun logging to its own log file already, add
    the C{--log} destination in the chosen format, if there is one.
    """
    if (options["log"] or log) != "false":
        publisher.addObserver(log_observer(options, log, fmt, level))


def _shown_value(key: str, value: object) -> str:
    """
    A field's value as twistd's own log shows it: bare when it is a string
    without spaces, else as JSON text; secrets shortened as in every format.
    """
    if key.lower() in SECRET_FIELDS:
        value = redact(value)
    if isinstance(value, str) and value and not any(c.isspace() for c in value):
        return value
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


def with_fields(event: LogEvent) -> LogEvent:
    """
    An event of tunnelkit's whose text, as Twisted formats it, ends with
    its fields as C{key=value} words (C{started tunnel name=web
    addr=http://localhost:80 url=http://web.example}), for logs that write
    only the text, such as twistd's own.

    @return: a copy of C{event} with a longer C{log_format}; C{event}
        itself when it is not tunnelkit's or has no fields besides C{obj}
        and those its text already shows.
    """
    if not str(event.get("log_namespace", "")).startswith("tunnelkit"):
        return event
    text = str(event.get("log_format") or "")
    fields = [
        (key, value)
        for key, value in event.items()
        if not key.startswith("log_") and key != "obj" and "{" + key not in text
    ]
    if not fields or "log_flattened" in event:
        return event
    words = " ".join(f"{key}={_shown_value(key, value)}" for key, value in fields)
    escaped = words.replace("{", "{{").replace("}", "}}")
    return {**event, "log_format": f"{text} {escaped}"}


@implementer(ILogObserver)
class _FieldsShown:
    """
    Pass each event to another observer with its fields in its text.
    """

    def __init__(self, observer: ILogObserver) -> None:
        self.observer = observer

    def __call__(self, event: LogEvent) -> None:
        self.observer(with_fields(event))


_twistd_options: list[usage.Options] = []
"""The options of the twistd run L{show_fields_in_twistd_log} took over the
log of: twistd calls its C{--logger} factory without arguments."""


def show_fields_in_twistd_log(options: usage.Options) -> None:
    """
    Under twistd without C{--logger} (nor C{--syslog}), have twistd's own log
    show the fields of tunnelkit's events (the name and URL of a started
    tunnel, say), which its text format leaves out: L{twistd_text_logger}
    becomes twistd's C{--logger}, writing where twistd would (C{--logfile},
    or standard output under C{twistd -n}) through L{with_fields}.

    Called while the plugin's options are parsed, before twistd reads its
    C{--logger} option; elsewhere (the C{tunnelkit} command) it does
    nothing.
    """
    parent = getattr(options, "parent", None)
    if parent is None or "logger" not in parent or parent["logger"] is not None:
        return
    if parent.get("syslog"):
        return
    _twistd_options[:] = [parent]
    parent["logger"] = f"{__name__}.twistd_text_logger"


def twistd_text_logger() -> ILogObserver:
    """
    The log observer twistd would make from its options, showing each
    tunnelkit event's fields; twistd calls it once it begins logging.
    """
    # The log class twistd itself uses makes the observer: the same file,
    # and on Unix the same rotation on SIGUSR1.
    if platform.isWindows():
        from twisted.application.app import AppLogger as TwistdLogger
    else:
        from twisted.scripts._twistd_unix import UnixAppLogger as TwistdLogger
    [options] = _twistd_options
    return _FieldsShown(TwistdLogger(options)._getLogObserver())


def exit_after_shutdown(code: int) -> None:
    """
    Make the process exit with C{code} once everything else has finished.
    twistd has no way to set its exit status, so this runs at interpreter
    exit, after twistd's own clean-up.
    """

    def leave() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    atexit.register(leave)


def stop_reactor(reactor: Any) -> None:
    """
    Stop the reactor if it is running and not already stopping.
    """
    try:
        reactor.stop()
    except ReactorNotRunning:
        pass
