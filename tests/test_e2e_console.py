"""
The console screen of a real C{tunnelkit http} on its embedded edge: drawn
on a pseudo-terminal, with the log kept off it, the terminal given back on
SIGTERM and Ctrl+C; and not drawn on a pipe, with C{console_ui: false} or
with C{--log stdout}.
"""

import fcntl
import json
import os
import struct
import termios

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.webclients import Curl
from tests.webservers import listen_recording

from tests.e2e import (
    TOKEN,
    TUNNELKIT,
    Program,
    Steps,
    child_environment,
    make_directory,
    start_edge,
    start_program,
    write_agent_config,
    write_edge_config,
    write_file,
)

ENTER_SCREEN = "\x1b[?1049h"
LEAVE_SCREEN = "\x1b[?1049l"

SCREEN_FORWARDING = (
    r"Forwarding\s+(http://\S+\.localhost:[0-9]+) -> http://localhost:8000"
)
"""The forwarding line of the screen, once the tunnel is bound."""

SUMMARY_FORWARDING = (
    r"^Forwarding\s+http://\S+\.localhost:[0-9]+ -> http://localhost:8000$"
)
"""The forwarding line of the summary printed without the console."""


def start_on_terminal(
    test: TestCase, argv: list[str], home: str, columns: int = 120, rows: int = 40
) -> Program:
    """
    Start a program whose standard input, output and error are one
    pseudo-terminal of the given size, as in a terminal window; it is
    stopped by the test's clean-up.
    """
    master, slave = os.openpty()
    size = struct.pack("HHHH", rows, columns, 0, 0)
    fcntl.ioctl(slave, termios.TIOCSWINSZ, size)
    program = Program(argv[1] if len(argv) > 1 else argv[0])
    reactor.spawnProcess(
        program,
        argv[0],
        argv,
        env=child_environment(home),
        path=home,
        usePTY=(master, slave, os.ttyname(slave)),
    )
    test.addCleanup(program.stop)
    return program


class ConsoleTests(TestCase):
    """
    C{tunnelkit http 8000} with an empty home: an embedded edge, one
    tunnel, and the console when standard output is a terminal.
    """

    timeout = 60

    def setUp(self) -> None:
        self.home = make_directory(self)
        self.log = os.path.join(self.home, "agent.log")

    def config(self, *lines: str) -> str:
        """
        Write a config file with the web interface off (so that tests may
        run side by side) and the given lines.

        @return: its path.
        """
        text = "\n".join(['version: "2"', "web_addr: false", *lines]) + "\n"
        return write_file(os.path.join(self.home, "tunnelkit.yml"), text)

    def agent(self, *arguments: str) -> list[str]:
        """
        @return: the argv of C{tunnelkit http 8000} with the config file and
            C{arguments}.
        """
        return TUNNELKIT + ["http", "8000", "--config", self.config(), *arguments]

    def log_messages(self) -> list[str]:
        """
        @return: the C{msg} of each JSON line of the log file.
        """
        with open(self.log, encoding="utf-8") as lines:
            return [json.loads(line)["msg"] for line in lines if line.strip()]

    @inlineCallbacks
    def test_screen(self) -> Steps[None]:
        """
        On a terminal the agent switches to the alternate screen and draws
        the session status, version, forwarding line and connections line;
        its log goes to the log file only, not over the screen. SIGTERM
        gives the terminal back.
        """
        program = start_on_terminal(
            self, self.agent("--log", self.log, "--log-format", "json"), self.home
        )

        yield program.wait_for_line(SCREEN_FORWARDING)
        yield program.wait_for_line(r"Session Status\s+\S*online")
        screen = program.text()
        yield program.stop()

        self.assertIn(ENTER_SCREEN, screen)
        self.assertRegex(screen, r"Version\s+\d")
        self.assertRegex(screen, r"Connections\s+ttl\s+opn\s+rt1\s+rt5\s+p50\s+p90")
        self.assertNotIn("started tunnel", screen)
        self.assertNotIn("lvl=", screen)
        self.assertIn("started tunnel", self.log_messages())
        self.assertTrue(program.text().rstrip().endswith(LEAVE_SCREEN))
        self.assertEqual(program.exit_code, 0)

    @inlineCallbacks
    def test_requests(self) -> Steps[None]:
        """
        The screen shows the web interface's address, and lists each HTTP
        request through the tunnel with its status, and counts its
        connection.
        """
        upstream = yield listen_recording(self)
        config = write_file(
            os.path.join(self.home, "web.yml"),
            'version: "2"\nweb_addr: 127.0.0.1:0\n',
        )
        argv = TUNNELKIT + ["http", str(upstream.port), "--config", config]
        program = start_on_terminal(self, argv, self.home)
        forwarding = yield program.wait_for_line(
            r"Forwarding\s+(http://\S+) -> http://localhost:"
        )
        curl = Curl(self, make_directory(self), None)

        fetched = yield curl.fetch(forwarding.group(1) + "/listed?x=1")
        yield program.wait_for_line(r"GET +/listed\?x=1 +200 OK")

        self.assertEqual(fetched.status, 200)
        self.assertRegex(program.text(), r"Web Interface\s+http://127\.0\.0\.1:\d+")
        self.assertRegex(program.text(), r"\n {30}1 +[01] +\d")

    @inlineCallbacks
    def test_ctrl_c(self) -> Steps[None]:
        """
        Ctrl+C (SIGINT) stops the agent and gives the terminal back.
        """
        program = start_on_terminal(self, self.agent(), self.home)
        yield program.wait_for_line(SCREEN_FORWARDING)

        program.send_signal("INT")
        yield program.wait_for_exit()

        self.assertIn(LEAVE_SCREEN, program.text())
        self.assertEqual(program.exit_code, 0)

    @inlineCallbacks
    def test_fatal_error(self) -> Steps[None]:
        """
        An error that stops the agent (here, an authtoken its edge refuses)
        is written after the terminal was given back, so it stays in view.
        """
        edge_home = make_directory(self)
        edge = yield start_edge(
            self, edge_home, write_edge_config(edge_home, [("alice", TOKEN, [])])
        )
        config = write_agent_config(
            self.home, edge.server_addr, root_cas=edge.ca_path, authtoken="wrong"
        )
        argv = TUNNELKIT + ["tcp", "22", "--config", config]
        program = start_on_terminal(self, argv, self.home)

        yield program.wait_for_exit()

        output = program.text()
        self.assertIn(ENTER_SCREEN, output)
        self.assertRegex(
            output[output.rindex(LEAVE_SCREEN) :], r"ERROR: TK_AUTH_FAILED"
        )
        self.assertEqual(program.exit_code, 1)

    @inlineCallbacks
    def test_narrow_terminal(self) -> Steps[None]:
        """
        On a narrow terminal no line of the screen is wider than it.
        """
        program = start_on_terminal(self, self.agent(), self.home, columns=44)

        yield program.wait_for_line(r"^Forwarding\s+http://")
        yield program.stop()

        shown = [text.replace("\x1b[K", "") for text in program.text().split("\n")]
        drawn = [text for text in shown if text.startswith("Forwarding")]
        self.assertTrue(drawn)
        self.assertTrue(all(len(text) <= 44 for text in drawn), drawn)

    @inlineCallbacks
    def test_pipe(self) -> Steps[None]:
        """
        When standard output is a pipe, the agent prints its summary and
        draws no screen.
        """
        program = start_program(self, "tunnelkit http", self.agent(), self.home)

        yield program.wait_for_line(SUMMARY_FORWARDING, stream="out")
        yield program.stop()

        self.assertNotIn(ENTER_SCREEN, program.text())

    @inlineCallbacks
    def test_console_ui_false(self) -> Steps[None]:
        """
        With C{console_ui: false}, a terminal gets the summary, not the
        screen.
        """
        path = self.config("console_ui: false")
        argv = TUNNELKIT + ["http", "8000", "--config", path]
        program = start_on_terminal(self, argv, self.home)

        yield program.wait_for_line(SUMMARY_FORWARDING)
        yield program.stop()

        self.assertNotIn(ENTER_SCREEN, program.text())

    @inlineCallbacks
    def test_log_stdout(self) -> Steps[None]:
        """
        C{--log stdout} turns the console off, as in ngrok: the log lines
        are written to the terminal instead.
        """
        program = start_on_terminal(self, self.agent("--log", "stdout"), self.home)

        yield program.wait_for_line(r"started tunnel")
        yield program.stop()

        self.assertNotIn(ENTER_SCREEN, program.text())
