"""
Tests for L{tunnelkit.logs}: the lines wrappers parse, level filtering,
redaction and log targets.
"""

import io
import json
import os
import shlex
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

from twisted.logger import (
    ILogObserver,
    LogBeginner,
    LogEvent,
    Logger,
    LogLevel,
    LogPublisher,
)
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tunnelkit.errors import TunnelkitError
from tunnelkit.logs import (
    LEVELS,
    format_observer,
    install,
    json_line,
    logfmt_line,
    parse_level,
    redact,
    start_logging,
    term_line,
    twistd_logger,
    twistd_observer_factory,
)

WHEN = datetime(2026, 12, 3, 19, 10, tzinfo=timezone.utc).timestamp()
STARTED_TCP = (
    't=2026-12-03T19:10:00+0000 lvl=info msg="started tunnel" obj=tunnels'
    " name=command_line addr=//localhost:22 url=tcp://127.0.0.1:20001"
)


def event(
    log_format: str = "", level: LogLevel = LogLevel.info, **fields: Any
) -> LogEvent:
    """
    An event as L{Logger} emits it, at a fixed time, with C{fields} first.
    """
    return dict(
        fields,
        log_format=log_format,
        log_level=level,
        log_time=WHEN,
        log_namespace="tunnelkit.test",
        log_source=None,
        log_logger=None,
    )


def started_tunnel() -> LogEvent:
    """
    The event the agent logs when a TCP tunnel is up, with C{obj} given last.
    """
    return event(
        "started tunnel",
        name="command_line",
        addr="//localhost:22",
        url="tcp://127.0.0.1:20001",
        obj="tunnels",
    )


def failed(message: str = "bad port") -> Failure:
    """
    A failure wrapping a raised L{ValueError}.
    """
    try:
        raise ValueError(message)
    except ValueError:
        return Failure()


@implementer(ILogObserver)
class Recorder:
    """
    An observer keeping the events it sees.
    """

    def __init__(self) -> None:
        self.events: list[LogEvent] = []

    def __call__(self, event: LogEvent) -> None:
        self.events.append(event)


class FakeTerminal(io.StringIO):
    """
    A text stream that says it is a terminal.
    """

    def isatty(self) -> bool:
        return True


class LogfmtLineTests(SynchronousTestCase):
    """
    Tests for L{logfmt_line}.
    """

    def test_started_tunnel(self) -> None:
        """
        The tunnel line is written as ngrok writes it: C{t}, C{lvl}, C{msg},
        C{obj}, then the fields in the order they were given.
        """
        line = logfmt_line(started_tunnel())

        self.assertEqual(line, STARTED_TCP)

    def test_message_formatted(self) -> None:
        """
        C{msg} is the event's format string with its fields filled in.
        """
        line = logfmt_line(event("tunnel {name} bound", name="web"))

        self.assertEqual(
            line, 't=2026-12-03T19:10:00+0000 lvl=info msg="tunnel web bound" name=web'
        )

    def test_quoting(self) -> None:
        """
        Values holding spaces, quotes, C{=}, backslashes or newlines, and
        empty values, are quoted with backslash escapes.
        """
        line = logfmt_line(event("x", a="two words", b='say "hi"', c="k=v", d="C:\\x"))
        more = logfmt_line(event("x", e="one\ntwo\tthree", f=""))

        self.assertEqual(
            line,
            't=2026-12-03T19:10:00+0000 lvl=info msg=x a="two words"'
            ' b="say \\"hi\\"" c="k=v" d="C:\\\\x"',
        )
        self.assertEqual(
            more, 't=2026-12-03T19:10:00+0000 lvl=info msg=x e="one\\ntwo\\tthree" f=""'
        )

    def test_shell_splitting_recovers_values(self) -> None:
        """
        Splitting a line as pyngrok does (C{shlex.split}) gives back the
        values that hold spaces, quotes and C{=}.
        """
        line = logfmt_line(event("a b", note='say "k=v" now'))

        words = shlex.split(line)

        self.assertEqual(words[2:], ["msg=a b", 'note=say "k=v" now'])

    def test_other_values_as_json(self) -> None:
        """
        Values that are not strings are written as their JSON text, and values
        JSON cannot hold as their C{str}.
        """
        line = logfmt_line(
            event("x", port=80, tls=True, host=None, allow_hosts=[], o=Exception("no"))
        )

        self.assertEqual(
            line,
            "t=2026-12-03T19:10:00+0000 lvl=info msg=x port=80 tls=true host=null"
            " allow_hosts=[] o=no",
        )

    def test_reserved_names_renamed(self) -> None:
        """
        A field named C{t}, C{lvl} or C{msg} is written with a trailing
        underscore, so the line keeps one of each.
        """
        line = logfmt_line(event("got {msg}", msg="ping"))

        self.assertEqual(
            line, 't=2026-12-03T19:10:00+0000 lvl=info msg="got ping" msg_=ping'
        )

    def test_odd_keys(self) -> None:
        """
        Spaces, quotes and C{=} in a field name become C{_}, so the line still
        splits into pairs.
        """
        odd = event("x")
        odd.update({"a b": 1, 'c="d': 2})

        line = logfmt_line(odd)

        self.assertEqual(line, "t=2026-12-03T19:10:00+0000 lvl=info msg=x a_b=1 c__d=2")

    def test_level_names(self) -> None:
        """
        Twisted's levels are printed with ngrok's four-letter names.
        """
        levels = [LogLevel.debug, LogLevel.info, LogLevel.warn]
        levels += [LogLevel.error, LogLevel.critical]

        printed = [logfmt_line(event("x", level)).split()[1] for level in levels]

        self.assertEqual(
            printed, ["lvl=dbug", "lvl=info", "lvl=warn", "lvl=eror", "lvl=crit"]
        )

    def test_legacy_event(self) -> None:
        """
        An event from C{twisted.python.log.msg} keeps its text as C{msg} and
        its caller's fields, without the legacy bookkeeping keys.
        """
        legacy = event("{log_text}", log_text="hello", peer="10.0.0.1")
        legacy.update(log_namespace="log_legacy", message=("hello",), time=WHEN)
        legacy.update(system="-", isError=0)

        line = logfmt_line(legacy)

        self.assertEqual(
            line, "t=2026-12-03T19:10:00+0000 lvl=info msg=hello peer=10.0.0.1"
        )


class FailureTests(SynchronousTestCase):
    """
    Tests for how events carrying a failure are written.
    """

    def test_err_field(self) -> None:
        """
        A failure adds C{err} with the exception's type and message, after the
        other fields.
        """
        line = logfmt_line(event("bind failed", port=22, log_failure=failed()))

        self.assertEqual(
            line,
            't=2026-12-03T19:10:00+0000 lvl=info msg="bind failed" port=22'
            ' err="ValueError: bad port"',
        )

    def test_no_traceback_by_default(self) -> None:
        """
        Without C{tracebacks}, no traceback is written.
        """
        line = logfmt_line(event("bind failed", log_failure=failed()))

        self.assertNotIn("Traceback", line)

    def test_traceback_on_one_line(self) -> None:
        """
        With C{tracebacks}, the traceback is a C{traceback} field, escaped so
        the event stays on one line.
        """
        line = logfmt_line(event("bind failed", log_failure=failed()), tracebacks=True)

        self.assertNotIn("\n", line)
        self.assertIn(' traceback="Traceback (most recent call last):\\n', line)
        self.assertTrue(line.endswith('ValueError: bad port"'))

    def test_explicit_err_kept(self) -> None:
        """
        An C{err} field given by the caller is written instead of the
        failure's.
        """
        line = logfmt_line(event("x", err="refused", log_failure=failed()))

        self.assertEqual(line, "t=2026-12-03T19:10:00+0000 lvl=info msg=x err=refused")

    def test_legacy_err(self) -> None:
        """
        An event from C{twisted.python.log.err} is written with its reason as
        C{msg} and its failure as C{err}, not with the traceback as C{msg}.
        """
        legacy = event("{log_text}", LogLevel.critical, log_text="Traceback...")
        legacy.update(log_namespace="log_legacy", failure=failed(), why="lost")
        legacy.update(isError=1, message=())

        line = logfmt_line(legacy)

        self.assertTrue(
            line.startswith(
                't=2026-12-03T19:10:00+0000 lvl=crit msg=lost err="ValueError: bad'
                ' port" traceback="Traceback (most recent call last):'
            ),
            line,
        )

    def test_logger_failure(self) -> None:
        """
        L{Logger.failure} inside an C{except} block produces C{lvl=crit},
        C{err} and, as for every failure at C{crit}, the traceback.
        """
        stream = io.StringIO()
        log = Logger(
            namespace="tunnelkit.test", observer=format_observer("logfmt", stream)
        )

        try:
            raise OSError("address already in use")
        except OSError:
            log.failure("listen failed", obj="web")

        self.assertRegex(
            stream.getvalue(),
            r'^t=\S+ lvl=crit msg="listen failed" obj=web'
            r' err="OSError: address already in use"'
            r' traceback="Traceback \(most recent call last\):\\n.*\n$',
        )

    def test_critical_traceback(self) -> None:
        """
        A failure logged at C{crit} carries its traceback at any level;
        one at C{error} only at C{debug}.
        """
        stream = io.StringIO()
        output = start_logging("stdout", "json", "info", stdout=stream)

        output(event("bug", LogLevel.critical, log_failure=failed()))
        output(event("refused", LogLevel.error, log_failure=failed()))

        bug, refused = (json.loads(line) for line in stream.getvalue().splitlines())
        self.assertIn("ValueError: bad port", bug["traceback"])
        self.assertNotIn("traceback", refused)


class PortNoiseTests(SynchronousTestCase):
    """
    The lines Twisted's listening ports log as they open and close are
    left out; other legacy lines are kept.
    """

    def written(self, *texts: str) -> list[str]:
        """
        @return: the messages written of legacy events with C{texts}.
        """
        stream = io.StringIO()
        output = start_logging("stdout", "json", "info", stdout=stream)
        for text in texts:
            legacy = event("{log_text}", log_text=text)
            legacy.update(log_namespace="log_legacy")
            output(legacy)
        return [json.loads(line)["msg"] for line in stream.getvalue().splitlines()]

    def test_port_lines_left_out(self) -> None:
        """
        C{X starting on N}, with or without C{(TLS)}, and C{(TCP Port N
        Closed)} are not written.
        """
        written = self.written(
            "_WebSite starting on 4042",
            "_AgentListenerFactory (TLS) starting on 33437",
            "(TCP Port 33949 Closed)",
            "Main loop terminated.",
        )

        self.assertEqual(written, ["Main loop terminated."])


class JsonLineTests(SynchronousTestCase):
    """
    Tests for L{json_line}.
    """

    def test_started_tunnel(self) -> None:
        """
        The tunnel event is one compact JSON object with C{t}, C{lvl}, C{msg},
        C{obj}, then the fields in order.
        """
        line = json_line(started_tunnel())

        self.assertEqual(
            line,
            '{"t":"2026-12-03T19:10:00+0000","lvl":"info","msg":"started tunnel",'
            '"obj":"tunnels","name":"command_line","addr":"//localhost:22",'
            '"url":"tcp://127.0.0.1:20001"}',
        )

    def test_other_values(self) -> None:
        """
        JSON values are kept; values JSON cannot hold become strings.
        """
        line = json_line(
            event("x", port=80, hosts=["a"], o=Exception("no"), n=float("nan"))
        )

        self.assertEqual(
            json.loads(line),
            {
                "t": "2026-12-03T19:10:00+0000",
                "lvl": "info",
                "msg": "x",
                "port": 80,
                "hosts": ["a"],
                "o": "no",
                "n": "nan",
            },
        )

    def test_failure(self) -> None:
        """
        A failure adds an C{err} member and, with C{tracebacks}, a
        C{traceback} member.
        """
        line = json_line(
            event("x", LogLevel.error, log_failure=failed()), tracebacks=True
        )

        parsed = json.loads(line)

        self.assertEqual(parsed["err"], "ValueError: bad port")
        self.assertTrue(parsed["traceback"].startswith("Traceback"))


class RedactionTests(SynchronousTestCase):
    """
    Tests for the redaction of secret fields.
    """

    def test_redact(self) -> None:
        """
        A secret is cut to its first 4 characters and C{…}; 4 characters or
        fewer become C{***}; lists are redacted item by item.
        """
        values = ["2abcdefgh", "abcd", "", None, ["user:pass", "ab"]]

        redacted = [redact(value) for value in values]

        self.assertEqual(redacted, ["2abc…", "***", "***", None, ["user…", "***"]])

    def test_every_format(self) -> None:
        """
        C{authtoken}, C{token}, C{password} and C{basic_auth} are redacted in
        logfmt, JSON and term lines alike.
        """
        secret = event(authtoken="2abcdefgh", token="xyz", password="hunter22")
        secret["basic_auth"] = ["user:pass"]

        lines = [logfmt_line(secret), json_line(secret), term_line(secret, True)]

        for line in lines:
            for revealing in ["defgh", "xyz", "nter22", "user:pass"]:
                self.assertNotIn(revealing, line)
        self.assertIn("authtoken=2abc… token=*** password=hunt… basic_auth=", lines[0])

    def test_message_redacted(self) -> None:
        """
        A secret used in the format string is redacted in C{msg} too.
        """
        line = logfmt_line(event("using {authtoken}", authtoken="2abcdefgh"))

        self.assertEqual(
            line,
            't=2026-12-03T19:10:00+0000 lvl=info msg="using 2abc…" authtoken=2abc…',
        )


class TermLineTests(SynchronousTestCase):
    """
    Tests for C{term}: a line for a person, or logfmt when not at a terminal.
    """

    def test_plain(self) -> None:
        """
        Without colour, the line has the time, the level, the message padded
        to 40 columns and the fields.
        """
        line = term_line(started_tunnel(), colour=False)

        self.assertEqual(
            line,
            "2026-12-03 19:10:00 INFO started tunnel" + " " * 27 + "obj=tunnels"
            " name=command_line addr=//localhost:22 url=tcp://127.0.0.1:20001",
        )

    def test_coloured(self) -> None:
        """
        With colour, the level is coloured by its severity and the field names
        are dimmed.
        """
        line = term_line(event("bad frame", LogLevel.warn, peer="x"), colour=True)

        self.assertEqual(
            line,
            "2026-12-03 19:10:00 \x1b[33mWARN\x1b[0m bad frame"
            + " " * 32
            + "\x1b[2mpeer=\x1b[0mx",
        )

    def test_not_a_tty_is_logfmt(self) -> None:
        """
        The C{term} observer writes logfmt lines to a stream that is not a
        terminal.
        """
        stream = io.StringIO()
        observer = format_observer("term", stream)

        observer(started_tunnel())

        self.assertEqual(stream.getvalue(), STARTED_TCP + "\n")

    def test_tty_is_coloured(self) -> None:
        """
        The C{term} observer writes coloured lines to a terminal.
        """
        stream = FakeTerminal()
        observer = format_observer("term", stream)

        observer(started_tunnel())

        self.assertEqual(stream.getvalue(), term_line(started_tunnel(), True) + "\n")
        self.assertIn("\x1b[32mINFO\x1b[0m", stream.getvalue())

    def test_traceback_below(self) -> None:
        """
        On a terminal a traceback follows the line, indented.
        """
        line = term_line(event("x", log_failure=failed()), True, tracebacks=True)

        rows = line.split("\n")

        self.assertIn("err=", rows[0])
        self.assertEqual(rows[1], "  Traceback (most recent call last):")
        self.assertEqual(rows[-1], "  builtins.ValueError: bad port")


class LevelTests(SynchronousTestCase):
    """
    Tests for C{--log-level} names and filtering.
    """

    def test_names(self) -> None:
        """
        ngrok's level names map to Twisted's levels, in any case.
        """
        names = ["crit", "warn", "error", "INFO", "debug", "eror", "dbug"]

        levels = [parse_level(name) for name in names]

        self.assertEqual(
            levels,
            [LogLevel.critical, LogLevel.warn, LogLevel.error, LogLevel.info]
            + [LogLevel.debug, LogLevel.error, LogLevel.debug],
        )

    def test_unknown_level(self) -> None:
        """
        An unknown level raises C{TK_LOG_LEVEL} naming the allowed ones.
        """
        error = self.assertRaises(TunnelkitError, parse_level, "verbose")

        self.assertEqual(error.code, "TK_LOG_LEVEL")
        self.assertIn("crit, warn, error, info, debug", error.message)

    def test_unknown_format(self) -> None:
        """
        An unknown format raises C{TK_LOG_FORMAT} naming the allowed ones.
        """
        error = self.assertRaises(
            TunnelkitError, start_logging, "stdout", "xml", "info", io.StringIO()
        )

        self.assertEqual(error.code, "TK_LOG_FORMAT")
        self.assertIn("term, logfmt, json", error.message)

    def test_below_level_dropped(self) -> None:
        """
        Events below the chosen level are dropped; those at or above it are
        written.
        """
        stream = io.StringIO()
        output = start_logging("stdout", "logfmt", "warn", stdout=stream)

        for level in LEVELS.values():
            output(event("x", level))

        printed = [line.split()[1] for line in stream.getvalue().splitlines()]
        self.assertEqual(printed, ["lvl=crit", "lvl=warn", "lvl=eror"])

    def test_tracebacks_at_debug(self) -> None:
        """
        At level C{debug} the traceback of a failure is written; at C{info} it
        is not.
        """
        debug, info = io.StringIO(), io.StringIO()
        with_traceback = start_logging("stdout", "json", "debug", stdout=debug)
        without = start_logging("stdout", "json", "info", stdout=info)

        with_traceback(event("x", LogLevel.error, log_failure=failed()))
        without(event("x", LogLevel.error, log_failure=failed()))

        self.assertIn("traceback", json.loads(debug.getvalue()))
        self.assertNotIn("traceback", json.loads(info.getvalue()))


class TargetTests(SynchronousTestCase):
    """
    Tests for the C{--log} targets of L{start_logging}.
    """

    def test_provides_observer(self) -> None:
        """
        The result provides L{ILogObserver}.
        """
        output = start_logging("stdout", "term", "info", stdout=io.StringIO())

        self.assertTrue(verifyObject(ILogObserver, output))

    def test_stdout_and_stderr(self) -> None:
        """
        C{stdout} and C{stderr} write to the streams given for them.
        """
        out, err = io.StringIO(), io.StringIO()
        to_out = start_logging("stdout", "logfmt", "info", stdout=out, stderr=err)
        to_err = start_logging("stderr", "json", "info", stdout=out, stderr=err)

        to_out(started_tunnel())
        to_err(started_tunnel())

        self.assertEqual(out.getvalue(), STARTED_TCP + "\n")
        self.assertEqual(json.loads(err.getvalue())["url"], "tcp://127.0.0.1:20001")

    def test_false_discards(self) -> None:
        """
        C{false} writes nothing anywhere.
        """
        out, err = io.StringIO(), io.StringIO()
        output = start_logging("false", "logfmt", "debug", stdout=out, stderr=err)

        output(started_tunnel())

        self.assertEqual((out.getvalue(), err.getvalue()), ("", ""))

    def test_file_appends(self) -> None:
        """
        A path is opened for appending, and each line is on disk as soon as it
        is logged.
        """
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as existing:
            existing.write("earlier\n")
        output = start_logging(path, "logfmt", "info")
        self.addCleanup(output.close)

        output(started_tunnel())

        with open(path, encoding="utf-8") as written:
            self.assertEqual(written.read(), "earlier\n" + STARTED_TCP + "\n")

    def test_unwritable_path(self) -> None:
        """
        A path that cannot be opened raises C{TK_LOG_UNWRITABLE} naming it.
        """
        path = os.path.join(self.mktemp(), "missing", "agent.log")

        error = self.assertRaises(TunnelkitError, start_logging, path, "logfmt", "info")

        self.assertEqual(error.code, "TK_LOG_UNWRITABLE")
        self.assertIn(repr(path), error.message)

    def test_logger_field_order(self) -> None:
        """
        Events from a real L{Logger} keep their keyword fields in order.
        """
        stream = io.StringIO()
        log = Logger(
            namespace="tunnelkit.web", observer=format_observer("logfmt", stream)
        )

        log.info(
            "starting web service", obj="web", addr="127.0.0.1:4040", allow_hosts=[]
        )

        self.assertRegex(
            stream.getvalue(),
            r'^t=\S+ lvl=info msg="starting web service" obj=web'
            r" addr=127\.0\.0\.1:4040 allow_hosts=\[\]\n$",
        )


class InstallTests(SynchronousTestCase):
    """
    Tests for L{install}.
    """

    def beginner(self) -> tuple[LogBeginner, Logger, SimpleNamespace]:
        """
        A log beginner of its own, a logger publishing to it, and its stdio.
        """
        publisher = LogPublisher()
        stdio = SimpleNamespace(stdout=io.StringIO(), stderr=io.StringIO())
        warnings = SimpleNamespace(showwarning=None)
        beginner = LogBeginner(publisher, io.StringIO(), stdio, warnings)
        return beginner, Logger(namespace="tunnelkit.test", observer=publisher), stdio

    def test_replays_buffer(self) -> None:
        """
        Events logged before L{install} reach the observer, and standard I/O is
        not redirected.
        """
        beginner, log, stdio = self.beginner()
        out, err = stdio.stdout, stdio.stderr
        seen = Recorder()
        log.info("early")

        install(seen, beginner)
        log.info("late")

        self.assertEqual([e["log_format"] for e in seen.events], ["early", "late"])
        self.assertEqual((stdio.stdout, stdio.stderr), (out, err))

    def test_discard_buffer(self) -> None:
        """
        With C{discard_buffer}, events logged before L{install} are dropped.
        """
        beginner, log, _ = self.beginner()
        seen = Recorder()
        log.info("early")

        install(seen, beginner, discard_buffer=True)
        log.info("late")

        self.assertEqual([e["log_format"] for e in seen.events], ["late"])


class TwistdTests(SynchronousTestCase):
    """
    Tests for the factories twistd's C{--logger} can use.
    """

    def test_factory_checks_early(self) -> None:
        """
        L{twistd_observer_factory} rejects a bad level before twistd calls it.
        """
        error = self.assertRaises(
            TunnelkitError, twistd_observer_factory, "stdout", "logfmt", "loud"
        )

        self.assertEqual(error.code, "TK_LOG_LEVEL")

    def test_factory_builds_output(self) -> None:
        """
        The factory's result writes to the target it was given.
        """
        path = self.mktemp()
        output = twistd_observer_factory(path, "json", "info")()
        self.addCleanup(output.close)

        output(started_tunnel())

        with open(path, encoding="utf-8") as written:
            self.assertEqual(json.loads(written.read())["msg"], "started tunnel")

    def test_environment(self) -> None:
        """
        L{twistd_logger} reads its target, format and level from the
        environment.
        """
        path = self.mktemp()
        environ = {"TUNNELKIT_LOG": path, "TUNNELKIT_LOG_FORMAT": "logfmt"}
        environ["TUNNELKIT_LOG_LEVEL"] = "warn"
        output = twistd_logger(environ)
        self.addCleanup(output.close)

        output(started_tunnel())
        output(event("x", LogLevel.warn))

        with open(path, encoding="utf-8") as written:
            self.assertEqual(
                written.read(), "t=2026-12-03T19:10:00+0000 lvl=warn msg=x\n"
            )
