"""
What a tunnelkit process sets up around its services: where its log goes,
and the exit status it ends with. Shared by the C{tunnelkit} command and the
twistd plugins.
"""

import atexit
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
from zope.interface import implementer

from tunnelkit.logs import install, start_logging


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
