"""
Tests for what the edge checks and opens as it starts
(L{tunnelkit.edge.startup}): a state directory it cannot write, listeners
it cannot open, TCP edges whose ports are taken at start and on reload,
and the warning for a file that admits no agent.
"""

import os

from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from tests.test_edge_session import EdgeReactor
from tunnelkit.config import EdgeConfig, load_edge_config
from tunnelkit.edge.server import EdgeServer
from tunnelkit.errors import TunnelkitError

TOKEN = "authtokens:\n" "  - name: alice\n" "    token: alice-0123456789\n"


class StartupTestCase(SynchronousTestCase):
    """
    Edges loaded from a file in a temporary directory, on an
    L{EdgeReactor}.
    """

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.reactor = EdgeReactor()

    def load(self, text: str) -> EdgeConfig:
        """
        @return: the configuration of an C{edge.yml} holding C{text}.
        """
        path = os.path.join(self.directory, "edge.yml")
        with open(path, "w", encoding="utf-8") as output:
            output.write(text)
        return load_edge_config(path)

    def refused(self, config: EdgeConfig) -> TunnelkitError:
        """
        @return: the error the edge's start fails with.
        """
        edge = EdgeServer(config, self.reactor)
        self.addCleanup(edge.stopService)
        failure = self.failureResultOf(edge.start(), TunnelkitError)
        return failure.value


class StateDirTests(StartupTestCase):
    """
    A state directory that cannot be created or written stops the edge with
    C{TK_STATE_DIR_UNWRITABLE}, naming the key, its line and the reason.
    """

    def test_regular_file(self) -> None:
        """
        A C{state_dir} that is a regular file is refused at its line, with
        the system's reason.
        """
        state = os.path.join(self.directory, "state")
        open(state, "w").close()
        config = self.load(f"{TOKEN}state_dir: {state}\n")

        error = self.refused(config)

        self.assertEqual(error.code, "TK_STATE_DIR_UNWRITABLE")
        self.assertIn(f"{config.path}:4: state_dir:", error.message)
        self.assertIn("Not a directory", error.message)
        self.assertIn("set state_dir to another directory", error.message)

    def test_cannot_create(self) -> None:
        """
        A C{state_dir} below a regular file cannot be created.
        """
        blocker = os.path.join(self.directory, "blocker")
        open(blocker, "w").close()
        config = self.load(f"{TOKEN}state_dir: {blocker}/state\n")

        error = self.refused(config)

        self.assertEqual(error.code, "TK_STATE_DIR_UNWRITABLE")
        self.assertIn("state_dir:", error.message)
        self.assertIn(f"{blocker}/state", error.message)

    def test_certificate_not_written(self) -> None:
        """
        A CA key the edge cannot write, after the affinity secret was
        written, is refused with the same code and the key's line.
        """
        state = os.path.join(self.directory, "state")
        os.makedirs(os.path.join(state, "ca.key"))
        config = self.load(f"state_dir: {state}\n{TOKEN}")

        error = self.refused(config)

        self.assertEqual(error.code, "TK_STATE_DIR_UNWRITABLE")
        self.assertIn(f"{config.path}:1: state_dir:", error.message)
        self.assertIn("ca.key", error.message)


class ListenerTests(StartupTestCase):
    """
    A listener whose port is taken stops the edge with C{TK_LISTEN_FAILED},
    naming the key, its line and the address.
    """

    def test_agent_listener_default(self) -> None:
        """
        The default agent listener, taken, is named as a default.
        """
        self.reactor.refused.add(4443)
        config = self.load(f"{TOKEN}state_dir: state\n")

        error = self.refused(config)

        self.assertEqual(error.code, "TK_LISTEN_FAILED")
        self.assertIn("agent_listener (not set in", error.message)
        self.assertIn("0.0.0.0:4443", error.message)
        self.assertIn("Address in use", error.message)

    def test_http_listener(self) -> None:
        """
        A taken C{http_listener} is named at its line, with its endpoint.
        """
        self.reactor.refused.add(8080)
        config = self.load(
            f"{TOKEN}state_dir: state\nagent_listener: 4000\n"
            "http_listener: tcp:8080:interface=127.0.0.1\n"
        )

        error = self.refused(config)

        self.assertEqual(error.code, "TK_LISTEN_FAILED")
        self.assertIn(f"{config.path}:6: http_listener:", error.message)
        self.assertIn("127.0.0.1:8080 (tcp:8080:interface=127.0.0.1)", error.message)

    def test_tcp_edge(self) -> None:
        """
        A TCP edge whose port is taken stops the edge at start, naming the
        edge and its hostports' line.
        """
        self.reactor.refused.add(25000)
        config = self.load(
            f"{TOKEN}state_dir: state\nagent_listener: 4000\nedges:\n"
            "  db:\n    type: tcp\n    hostports: ['db.example.com:25000']\n"
        )

        error = self.refused(config)

        self.assertEqual(error.code, "TK_LISTEN_FAILED")
        self.assertIn(f"{config.path}:9: edges.db.hostports:", error.message)
        self.assertIn("the tcp edge 'db'", error.message)

    def test_tcp_edge_on_reload(self) -> None:
        """
        On reload, a TCP edge whose port is taken is logged with the code
        as not served, and not counted among the edges loaded.
        """
        config = self.load(f"{TOKEN}state_dir: state\nagent_listener: 4000\n")
        edge = EdgeServer(config, self.reactor)
        self.addCleanup(edge.stopService)
        self.successResultOf(edge.start())
        self.reactor.refused.add(25000)
        changed = self.load(
            f"{TOKEN}state_dir: state\nagent_listener: 4000\nedges:\n"
            "  db: {type: tcp, hostports: ['db.example.com:25000']}\n"
            "  web: {type: tcp, hostports: ['db.example.com:25001']}\n"
        )

        with capturedLogs() as events:
            edge.reload_edges(changed)

        errors = [formatEvent(e) for e in events if e["log_level"] == LogLevel.error]
        loaded = [e for e in events if "edge definitions" in e["log_format"]]
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("TK_LISTEN_FAILED", errors[0])
        self.assertIn("'db'", errors[0])
        self.assertIn("not served", errors[0])
        self.assertEqual(loaded[0]["count"], 1)
        self.assertEqual(list(edge.tcp_edges.ports), [25001])


class AdmissionTests(StartupTestCase):
    """
    The edge warns when its file admits no agent.
    """

    def warnings(self, config: EdgeConfig) -> list[str]:
        """
        @return: the warnings logged as the edge starts.
        """
        edge = EdgeServer(config, self.reactor)
        self.addCleanup(edge.stopService)
        with capturedLogs() as events:
            self.successResultOf(edge.start())
        return [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]

    def test_no_authtokens(self) -> None:
        """
        Without authtokens and C{allow_anonymous}, a warning says no agent
        can connect and what to add.
        """
        config = self.load("state_dir: state\nagent_listener: 4000\n")

        warnings = self.warnings(config)

        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn("no agent can connect", warnings[0])
        self.assertIn("allow_anonymous: true", warnings[0])

    def test_anonymous(self) -> None:
        """
        With C{allow_anonymous}, there is no such warning.
        """
        config = self.load(
            "state_dir: state\nagent_listener: 4000\nallow_anonymous: true\n"
        )

        self.assertEqual(self.warnings(config), [])
