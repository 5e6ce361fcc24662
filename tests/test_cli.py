"""
Tests for L{tunnelkit.cli.run}, the C{tunnelkit} command: its words on
standard output and standard error, and its exit status.

Commands that would run the reactor get L{IdleReactor}, whose C{run}
returns at once, and the global log is left alone by replacing
C{install_logs}.
"""

import os
import stat
import sys
from io import StringIO
from typing import Any, Callable

from twisted.trial.unittest import SynchronousTestCase

from tunnelkit import __version__, cli
from tunnelkit.cli import run
from tunnelkit.config import HostPort, load_agent_config

GOOD_AGENT = """\
version: "2"
server_addr: edge.example.com:4443
tunnels:
  ssh:
    proto: tcp
    addr: 22
  db:
    proto: tcp
    addr: 5432
"""

BAD_AGENT = """\
version: "2"
tunnels:
  web:
    proto: htp
    addr: 8080
"""

GOOD_EDGE = """\
version: 1
allow_anonymous: true
state_dir: ./state
"""


class IdleReactor:
    """
    A reactor for commands that would run one: it records what is
    scheduled, and C{run} returns at once.

    @ivar when_running: callables given to C{callWhenRunning}.
    @ivar triggers: C{(phase, event, callable)} of each system event trigger.
    @ivar runs: how many times C{run} was called.
    """

    running = False

    def __init__(self) -> None:
        self.when_running: list[Callable[..., Any]] = []
        self.triggers: list[tuple[str, str, Callable[..., Any]]] = []
        self.runs = 0

    def callWhenRunning(self, f: Callable[..., Any], *args: Any, **kw: Any) -> None:
        """
        Record C{f}.
        """
        self.when_running.append(f)

    def addSystemEventTrigger(
        self, phase: str, event: str, f: Callable[..., Any], *args: Any, **kw: Any
    ) -> None:
        """
        Record the trigger.
        """
        self.triggers.append((phase, event, f))

    def run(self) -> None:
        """
        Return at once, as a reactor that was stopped straight away.
        """
        self.runs += 1


class CommandTestCase(SynchronousTestCase):
    """
    Run the command with captured output, in a fresh directory.
    """

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.stdout = StringIO()
        self.stderr = StringIO()

    def run_command(self, *argv: str, reactor: Any = None) -> int:
        """
        @return: the exit status of C{tunnelkit ARGV...}.
        """
        return run(list(argv), stdout=self.stdout, stderr=self.stderr, reactor=reactor)

    def write(self, name: str, text: str) -> str:
        """
        Write a file in the test's directory.

        @return: its path.
        """
        path = os.path.join(self.directory, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path


class VersionTests(CommandTestCase):
    """
    C{tunnelkit version}, C{-v} and C{--version}.
    """

    def test_version(self) -> None:
        """
        C{version} prints the version and exits 0.
        """
        status = self.run_command("version")

        self.assertEqual(status, 0)
        self.assertEqual(self.stdout.getvalue(), f"tunnelkit version {__version__}\n")
        self.assertEqual(self.stderr.getvalue(), "")

    def test_short_flag(self) -> None:
        """
        C{-v} is the same as C{version}.
        """
        status = self.run_command("-v")

        self.assertEqual(status, 0)
        self.assertEqual(self.stdout.getvalue(), f"tunnelkit version {__version__}\n")

    def test_long_flag(self) -> None:
        """
        C{--version} is the same as C{version}.
        """
        status = self.run_command("--version")

        self.assertEqual(status, 0)
        self.assertEqual(self.stdout.getvalue(), f"tunnelkit version {__version__}\n")

    def test_every_command(self) -> None:
        """
        C{--version} after any command or subcommand prints tunnelkit's
        version, never Twisted's.
        """
        commands = [
            ["tcp"],
            ["start"],
            ["edge"],
            ["config"],
            ["config", "check"],
            ["config", "add-authtoken"],
            ["version"],
        ]
        for command in commands:
            self.stdout.truncate(0)
            self.stdout.seek(0)

            status = self.run_command(*command, "--version")

            self.assertEqual(
                (status, self.stdout.getvalue()),
                (0, f"tunnelkit version {__version__}\n"),
                command,
            )


class HelpTests(CommandTestCase):
    """
    The C{--help} of each command.
    """

    def help(self, *command: str) -> str:
        """
        @return: what C{tunnelkit COMMAND --help} prints.
        """
        self.assertEqual(self.run_command(*command, "--help"), 0)
        return self.stdout.getvalue()

    def test_no_module_docstring(self) -> None:
        """
        No help ends with the docstring of the C{__main__} module, epytext
        markup and all, whichever way the command was started.
        """
        self.patch(sys.modules["__main__"], "__doc__", "C{python -m tunnelkit}")
        commands = [
            ("tcp",),
            ("start",),
            ("edge",),
            ("version",),
            ("config",),
            ("config", "check"),
            ("config", "add-authtoken"),
            ("config", "add-server-addr"),
        ]

        helps = [self.help(*command) for command in commands]

        self.assertEqual([text for text in helps if "C{" in text], [])

    def test_config_flags(self) -> None:
        """
        The C{config} subcommands offer C{--config} but none of the agent's
        C{--authtoken} and log flags, which mean nothing there.
        """
        text = self.help("config", "add-authtoken")

        self.assertIn("--config", text)
        for flag in ("--authtoken", "--log", "--log-format", "--log-level"):
            self.assertNotIn(flag + "=", text)

    def test_config_log_flag_refused(self) -> None:
        """
        C{config check --log stdout} is a usage error.
        """
        status = self.run_command("config", "check", "--log", "stdout")

        self.assertEqual(status, 2)
        self.assertIn("--log", self.stderr.getvalue())


class UsageTests(CommandTestCase):
    """
    Usage errors exit 2 with an C{ERROR:} line and a hint.
    """

    def assertUsageError(self, status: int, error: str, hint: str) -> None:
        """
        Assert the exit status 2, the error line and the hint, and nothing
        on standard output.
        """
        self.assertEqual(status, 2)
        self.assertEqual(
            self.stderr.getvalue(), f"ERROR: {error}\nRun '{hint} --help' for usage.\n"
        )
        self.assertEqual(self.stdout.getvalue(), "")

    def test_no_command(self) -> None:
        """
        No command at all is a usage error.
        """
        status = self.run_command()

        self.assertUsageError(status, "name a command", "tunnelkit")

    def test_unknown_command(self) -> None:
        """
        An unknown command is a usage error naming it.
        """
        status = self.run_command("teleport")

        self.assertUsageError(status, "Unknown command: teleport", "tunnelkit")

    def test_missing_argument(self) -> None:
        """
        C{tcp} without a port is a usage error, with the hint for C{tcp}.
        """
        status = self.run_command("tcp")

        self.assertUsageError(status, "Wrong number of arguments.", "tunnelkit tcp")

    def test_bad_log_level(self) -> None:
        """
        A C{--log-level} that is not one of ngrok's lists the allowed ones.
        """
        status = self.run_command("tcp", "--log-level", "loud", "22")

        self.assertUsageError(
            status,
            "TK_LOG_LEVEL: --log-level must be one of crit, warn, error, info, debug,"
            " not 'loud'",
            "tunnelkit tcp",
        )

    def test_bad_log_format(self) -> None:
        """
        A C{--log-format} that is not one of ngrok's is C{TK_LOG_FORMAT} and
        lists the allowed ones.
        """
        status = self.run_command("edge", "--config", "e.yml", "--log-format", "xml")

        self.assertUsageError(
            status,
            "TK_LOG_FORMAT: --log-format must be one of term, logfmt, json,"
            " not 'xml'",
            "tunnelkit edge",
        )

    def test_all_and_none(self) -> None:
        """
        C{start --all --none} is a usage error.
        """
        status = self.run_command("start", "--all", "--none")

        self.assertUsageError(
            status, "--all and --none cannot be used together", "tunnelkit start"
        )

    def test_start_nothing(self) -> None:
        """
        C{start} without names or flags is a usage error.
        """
        status = self.run_command("start")

        self.assertUsageError(
            status,
            "name the tunnels to start, or use --all or --none",
            "tunnelkit start",
        )

    def test_edge_without_config(self) -> None:
        """
        C{edge} without C{--config} is a usage error.
        """
        status = self.run_command("edge")

        self.assertUsageError(status, "--config edge.yml is required", "tunnelkit edge")

    def test_config_without_subcommand(self) -> None:
        """
        C{config} alone is a usage error.
        """
        status = self.run_command("config")

        self.assertUsageError(status, "name a config subcommand", "tunnelkit config")

    def test_help(self) -> None:
        """
        C{--help} writes the usage to the given standard output and returns
        0, like every other command of L{run}.
        """
        self.patch(sys, "stdout", StringIO())

        try:
            status: object = self.run_command("--help")
        except SystemExit:
            status = "SystemExit"

        self.assertEqual(status, 0)
        self.assertIn("tunnelkit COMMAND", self.stdout.getvalue())


class AddAuthtokenTests(CommandTestCase):
    """
    C{tunnelkit config add-authtoken TOKEN}.
    """

    def test_saved(self) -> None:
        """
        The token is written to the file, with ngrok's sentence.
        """
        path = os.path.join(self.directory, "tunnelkit.yml")

        status = self.run_command(
            "config", "add-authtoken", "--config", path, "tok-123"
        )

        self.assertEqual(status, 0)
        self.assertEqual(
            self.stdout.getvalue(), f"Authtoken saved to configuration file: {path}\n"
        )
        self.assertEqual(load_agent_config([path]).authtoken, "tok-123")

    def test_private(self) -> None:
        """
        A new file holding a token is readable by its owner only.
        """
        path = os.path.join(self.directory, "tunnelkit.yml")

        self.run_command("config", "add-authtoken", "--config", path, "tok-123")

        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)

    def test_last_config_written(self) -> None:
        """
        With several C{--config} files, the last one is written.
        """
        first = self.write("a.yml", 'version: "2"\n')
        second = os.path.join(self.directory, "b.yml")

        self.run_command(
            "config", "add-authtoken", "--config", f"{first},{second}", "t"
        )

        self.assertIsNone(load_agent_config([first]).authtoken)
        self.assertEqual(load_agent_config([second]).authtoken, "t")

    def test_flag_after_token(self) -> None:
        """
        C{--config} may follow the token, as in ngrok's
        C{config add-authtoken TOKEN --config PATH}.
        """
        path = os.path.join(self.directory, "tunnelkit.yml")

        status = self.run_command(
            "config", "add-authtoken", "tok-123", "--config", path
        )

        self.assertEqual(status, 0)
        self.assertEqual(
            self.stdout.getvalue(), f"Authtoken saved to configuration file: {path}\n"
        )


class AddServerAddrTests(CommandTestCase):
    """
    C{tunnelkit config add-server-addr HOST:PORT}.
    """

    def test_saved(self) -> None:
        """
        A valid address is written to the file.
        """
        path = os.path.join(self.directory, "tunnelkit.yml")

        status = self.run_command(
            "config", "add-server-addr", "--config", path, "edge.example.com:4443"
        )

        self.assertEqual(status, 0)
        self.assertEqual(
            self.stdout.getvalue(),
            f"Server address saved to configuration file: {path}\n",
        )
        self.assertEqual(
            load_agent_config([path]).server_addr, HostPort("edge.example.com", 4443)
        )

    def test_bad_address(self) -> None:
        """
        An address that is not C{HOST:PORT} fails with
        C{TK_CONFIG_INVALID_VALUE} and an example of one, and no file is
        written.
        """
        path = os.path.join(self.directory, "tunnelkit.yml")

        status = self.run_command(
            "config", "add-server-addr", "--config", path, "edge.example.com:http"
        )

        self.assertEqual(status, 1)
        error = self.stderr.getvalue()
        self.assertTrue(
            error.startswith("ERROR: server_addr: 'edge.example.com:http' given"),
            error,
        )
        self.assertIn("tunnels.example.com:4443", error)
        self.assertIn("(TK_CONFIG_INVALID_VALUE)", error)
        self.assertFalse(os.path.exists(path))


class CheckTests(CommandTestCase):
    """
    C{tunnelkit config check}.
    """

    def test_valid(self) -> None:
        """
        A valid file is reported by path.
        """
        path = self.write("tunnelkit.yml", GOOD_AGENT)

        status = self.run_command("config", "check", "--config", path)

        self.assertEqual(status, 0)
        self.assertEqual(
            self.stdout.getvalue(), f"Valid configuration file at {path}\n"
        )

    def test_valid_several(self) -> None:
        """
        Each valid file is reported, in order.
        """
        first = self.write("a.yml", GOOD_AGENT)
        second = self.write("b.yml", "log_level: debug\n")

        status = self.run_command("config", "check", "--config", f"{first},{second}")

        self.assertEqual(status, 0)
        self.assertEqual(
            self.stdout.getvalue(),
            f"Valid configuration file at {first}\n"
            f"Valid configuration file at {second}\n",
        )

    def test_invalid(self) -> None:
        """
        A bad value is reported with the file, line and key, and exit 1.
        """
        path = self.write("tunnelkit.yml", BAD_AGENT)

        status = self.run_command("config", "check", "--config", path)

        self.assertEqual(status, 1)
        error = self.stderr.getvalue()
        self.assertTrue(
            error.startswith(f"ERROR: {path}:4: tunnels.web.proto: "), error
        )
        self.assertIn("(TK_CONFIG_INVALID_VALUE)", error)
        self.assertEqual(self.stdout.getvalue(), "")

    def test_missing(self) -> None:
        """
        A named file that does not exist is an error.
        """
        path = os.path.join(self.directory, "missing.yml")

        status = self.run_command("config", "check", "--config", path)

        self.assertEqual(status, 1)
        self.assertIn("TK_CONFIG_UNREADABLE", self.stderr.getvalue())


class AgentCommandTests(CommandTestCase):
    """
    C{tunnelkit start} and C{tunnelkit tcp} up to the reactor.
    """

    def setUp(self) -> None:
        super().setUp()
        self.config = self.write("tunnelkit.yml", GOOD_AGENT)
        self.logs: list[Any] = []
        self.patch(cli, "install_logs", lambda *args, **kw: self.logs.append(args))
        self.reactor = IdleReactor()

    def test_unknown_name(self) -> None:
        """
        An unknown tunnel name fails with ngrok's three lines, the first with
        C{TK_TUNNEL_UNDEFINED}, before the reactor or the log is touched.
        """
        status = self.run_command(
            "start", "--config", self.config, "web", reactor=self.reactor
        )

        self.assertEqual(status, 1)
        self.assertEqual(
            self.stderr.getvalue(),
            "ERROR: TK_TUNNEL_UNDEFINED: Tunnel 'web' is not defined in the config"
            " files.\n"
            "ERROR: Tunnels available: ssh, db\n"
            f"ERROR: Config files read: [{self.config}]\n",
        )
        self.assertEqual((self.reactor.runs, self.logs), (0, []))

    def test_all_without_tunnels(self) -> None:
        """
        C{start --all} with no tunnel defined fails with ngrok's sentence,
        after C{TK_NO_TUNNELS_DEFINED}.
        """
        empty = self.write("empty.yml", 'version: "2"\n')

        status = self.run_command("start", "--config", empty, "--all")

        self.assertEqual(status, 1)
        self.assertIn(
            "must define at least one tunnel when using --all", self.stderr.getvalue()
        )
        self.assertTrue(
            self.stderr.getvalue().startswith("ERROR: TK_NO_TUNNELS_DEFINED: ")
        )

    def test_bad_config(self) -> None:
        """
        A bad config file stops the command with the file's error.
        """
        bad = self.write("bad.yml", BAD_AGENT)

        status = self.run_command("tcp", "--config", bad, "22", reactor=self.reactor)

        self.assertEqual(status, 1)
        self.assertIn(f"{bad}:4: tunnels.web.proto", self.stderr.getvalue())
        self.assertEqual(self.reactor.runs, 0)

    def test_tcp_bad_address(self) -> None:
        """
        C{tcp} with an address that is neither a port nor C{HOST:PORT}
        exits 2.
        """
        status = self.run_command("tcp", "--config", self.config, "nowhere")

        self.assertEqual(status, 2)
        self.assertTrue(self.stderr.getvalue().startswith("ERROR: "))

    def test_flag_after_port(self) -> None:
        """
        C{tcp PORT --remote-addr HOST:PORT}, as the README writes it, is
        accepted.
        """
        status = self.run_command(
            "tcp",
            "--config",
            self.config,
            "22",
            "--remote-addr",
            "edge.example.com:5000",
            reactor=self.reactor,
        )

        self.assertEqual((status, self.stderr.getvalue()), (0, ""))

    def test_runs_reactor(self) -> None:
        """
        C{tcp PORT} starts the agent once the reactor runs, stops it before
        shutdown, and exits 0 when the reactor returns.
        """
        status = self.run_command(
            "tcp", "--config", self.config, "22", reactor=self.reactor
        )

        self.assertEqual(status, 0)
        self.assertEqual(self.reactor.runs, 1)
        [start] = self.reactor.when_running
        [(phase, event, stop)] = self.reactor.triggers
        self.assertEqual((phase, event), ("before", "shutdown"))
        app = start.__self__  # type: ignore[attr-defined]
        self.assertIs(stop.__self__, app)  # type: ignore[attr-defined]
        self.assertEqual(
            [definition.name for definition in app.tunnel_definitions],
            ["command_line"],
        )

    def test_log_flags(self) -> None:
        """
        The log flags and the config's log settings reach the log set-up.
        """
        self.run_command(
            "start",
            "--all",
            "--log",
            "stderr",
            "--log-level",
            "debug",
            "--config",
            self.config,
            reactor=self.reactor,
        )

        [(options, log, fmt, level, stderr)] = self.logs
        self.assertEqual((options["log"], options["log-level"]), ("stderr", "debug"))
        self.assertEqual((log, fmt, level), ("false", "term", "info"))
        self.assertIs(stderr, self.stderr)


class EdgeCommandTests(CommandTestCase):
    """
    C{tunnelkit edge} up to the reactor.
    """

    def setUp(self) -> None:
        super().setUp()
        self.patch(cli, "install_logs", lambda *args, **kw: None)
        self.reactor = IdleReactor()

    def test_bad_config(self) -> None:
        """
        A bad edge file stops the command with its error and exit 1.
        """
        path = self.write("edge.yml", "version: 1\ndomian: example.com\n")

        status = self.run_command("edge", "--config", path, reactor=self.reactor)

        self.assertEqual(status, 1)
        self.assertIn(f"{path}:2: domian", self.stderr.getvalue())
        self.assertEqual(self.reactor.runs, 0)

    def test_runs_reactor(self) -> None:
        """
        A valid edge file starts the edge once the reactor runs and stops it
        before shutdown.
        """
        path = self.write("edge.yml", GOOD_EDGE)

        status = self.run_command("edge", "--config", path, reactor=self.reactor)

        self.assertEqual((status, self.reactor.runs), (0, 1))
        self.assertEqual(len(self.reactor.when_running), 1)
        [(phase, event, _)] = self.reactor.triggers
        self.assertEqual((phase, event), ("before", "shutdown"))
