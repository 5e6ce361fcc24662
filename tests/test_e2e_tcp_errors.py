"""
End-to-end tests of what TCP tunnels refuse and how failures are reported:
authtokens, reserved addresses, a local service that is not there, an edge
that cannot be reached, and an edge certificate the agent does not trust.
The programs run as child processes on loopback, as in
L{tests.test_e2e_tcp}.
"""

import os

from twisted.internet.defer import inlineCallbacks
from twisted.internet.error import ConnectionLost
from twisted.python.filepath import FilePath
from twisted.trial.unittest import TestCase

from tests.e2e import (
    mentions,
    FORWARDING_LINE,
    LOOPBACK,
    TOKEN,
    TUNNELKIT,
    Edge,
    Steps,
    free_port,
    make_directory,
    public_port,
    start_agent,
    start_edge,
    start_program,
    twistd_argv,
    write_agent_config,
    write_edge_config,
    write_file,
)
from tests.loopback import Clients, listen_echo
from tunnelkit.pki import ensure_edge_certificate

OTHER_TOKEN = "e2e-bob-9876543210"


class RefusalTests(TestCase):
    """
    The edge refuses agents without a valid authtoken and addresses not
    reserved for theirs, and the agent stops with the reason.
    """

    timeout = 60

    def setUp(self) -> None:
        self.directory = make_directory(self)

    @inlineCallbacks
    def start_edge(self, reserved: dict[str, list[str]] | None = None) -> Steps[Edge]:
        """
        Start an edge knowing the authtokens of alice and bob.

        @param reserved: addresses reserved for each token name.
        @return: a Deferred firing with the L{tests.e2e.Edge}.
        """
        reserved = reserved or {}
        tokens = [
            ("alice", TOKEN, reserved.get("alice", [])),
            ("bob", OTHER_TOKEN, reserved.get("bob", [])),
        ]
        config = write_edge_config(self.directory, tokens)
        edge = yield start_edge(self, self.directory, config)
        return edge

    @inlineCallbacks
    def test_wrong_authtoken(self) -> Steps[None]:
        """
        C{tunnelkit tcp} with an authtoken the edge does not know exits
        with status 1 and says C{TK_AUTH_FAILED} on standard error.
        """
        edge = yield self.start_edge()
        config = write_agent_config(self.directory, edge.server_addr, edge.ca_path)
        arguments = ["tcp", "22", "--config", config, "--authtoken", "not-a-token"]

        agent = start_agent(self, self.directory, arguments)
        code = yield agent.wait_for_exit()

        self.assertEqual(code, 1, agent.describe())
        self.assertIn("TK_AUTH_FAILED", agent.text("err"), agent.describe())

    @inlineCallbacks
    def test_refusal_reported_once(self) -> Steps[None]:
        """
        With the default log settings, a refused authtoken is reported on
        standard error in one C{ERROR:} line, with no internal error after
        it.
        """
        edge = yield self.start_edge()
        config = write_agent_config(self.directory, edge.server_addr, edge.ca_path)
        arguments = ["tcp", "22", "--config", config, "--authtoken", "not-a-token"]

        agent = start_program(
            self, "tunnelkit tcp", TUNNELKIT + arguments, home=self.directory
        )
        yield agent.wait_for_exit()

        errors = agent.text("err")
        error_lines = [
            line for line in errors.splitlines() if line.startswith("ERROR:")
        ]
        self.assertEqual(len(error_lines), 1, errors)
        self.assertNotIn("Unhandled error", errors)

    @inlineCallbacks
    def test_missing_authtoken(self) -> Steps[None]:
        """
        C{twistd -n tunnel} without an authtoken exits with status 1 and its
        log says C{TK_AUTH_MISSING}.
        """
        edge = yield self.start_edge()
        config = write_agent_config(
            self.directory, edge.server_addr, edge.ca_path, tunnels={"ssh": 22}
        )

        agent = start_agent(self, self.directory, ["--config", config], twistd=True)
        code = yield agent.wait_for_exit()

        self.assertEqual(code, 1, agent.describe())
        self.assertIn("TK_AUTH_MISSING", agent.text(), agent.describe())

    @inlineCallbacks
    def test_reserved_address(self) -> Steps[None]:
        """
        C{tunnelkit tcp PORT --remote-addr HOST:PORT} with an address
        reserved for the agent's authtoken binds exactly that address, and
        connections to it reach the local service.
        """
        clients = Clients(self)
        echo_port = yield listen_echo(self)
        reserved = f"{LOOPBACK}:{free_port()}"
        edge = yield self.start_edge({"alice": [reserved]})
        config = write_agent_config(
            self.directory, edge.server_addr, edge.ca_path, TOKEN
        )
        arguments = ["tcp", str(echo_port), "--remote-addr", reserved]

        agent = start_agent(self, self.directory, arguments + ["--config", config])
        forwarding = yield agent.wait_for_line(FORWARDING_LINE, stream="out")
        host, port, _ = forwarding.groups()
        answer = yield clients.echo(int(port), b"reserved")

        self.assertEqual((f"{host}:{port}", answer), (reserved, b"reserved"))

    @inlineCallbacks
    def test_foreign_address(self) -> Steps[None]:
        """
        C{--remote-addr} with an address reserved for another authtoken is
        refused: the agent exits with status 1 and says C{TK_ADDR_NOT_RESERVED}.
        """
        foreign = f"{LOOPBACK}:{free_port()}"
        edge = yield self.start_edge({"bob": [foreign]})
        config = write_agent_config(
            self.directory, edge.server_addr, edge.ca_path, TOKEN
        )
        arguments = ["tcp", "22", "--remote-addr", foreign, "--config", config]

        agent = start_agent(self, self.directory, arguments)
        code = yield agent.wait_for_exit()

        self.assertEqual(code, 1, agent.describe())
        self.assertIn("TK_ADDR_NOT_RESERVED", agent.text("err"), agent.describe())


class FailureReportTests(TestCase):
    """
    When something the tunnel depends on is missing, the agent says what,
    in its log or on standard error.
    """

    timeout = 60

    def setUp(self) -> None:
        self.directory = make_directory(self)

    @inlineCallbacks
    def test_nothing_listening_locally(self) -> Steps[None]:
        """
        A public connection to a tunnel whose local port has nothing
        listening is reset without data, and the agent logs a warning naming
        the local address.
        """
        clients = Clients(self)
        local = f"localhost:{free_port()}"
        agent = start_agent(self, self.directory, ["tcp", local])
        port = yield public_port(agent)

        received, reason = yield clients.closed_by_peer(port)
        warning = yield agent.wait_for_event(lvl="warn", where=mentions(local))

        self.assertEqual((received, reason.type), (b"", ConnectionLost))
        self.assertIn(local, warning["msg"])

    @inlineCallbacks
    def test_unreachable_edge(self) -> Steps[None]:
        """
        An agent whose edge does not answer keeps trying, with a warning
        naming the edge for each attempt that failed.
        """
        edge = f"{LOOPBACK}:{free_port()}"
        config = write_agent_config(self.directory, edge, authtoken=TOKEN)

        agent = start_agent(self, self.directory, ["tcp", "22", "--config", config])
        yield agent.wait_for_event(occurrence=2, lvl="warn", where=mentions(edge))

        warnings = [e for e in agent.log_events() if e.get("lvl") == "warn"]
        self.assertFalse(agent.ended, agent.describe())
        self.assertTrue(all(edge in e["msg"] for e in warnings), warnings)

    @inlineCallbacks
    def test_twistd_edge_cannot_listen(self) -> Steps[None]:
        """
        C{twistd -n tunnel-edge} whose agent port is taken says so and exits
        with a non-zero status instead of running without a listener.
        """
        taken = yield listen_echo(self)
        config = write_edge_config(self.directory, agent_port=taken)

        edge = start_program(
            self,
            "edge",
            twistd_argv(self.directory, "tunnel-edge", "--config", config),
            home=self.directory,
        )
        yield edge.wait_for_line("already in use")
        code = yield edge.wait_for_exit(5.0)

        self.assertNotIn(code, (0, None), edge.describe())
        self.assertIn("TK_LISTEN_FAILED", edge.describe())
        self.assertIn(f"{config}:2: agent_listener", edge.describe())

    @inlineCallbacks
    def test_twistd_edge_state_dir_unwritable(self) -> Steps[None]:
        """
        C{twistd -n tunnel-edge} whose C{state_dir} is a regular file says
        C{TK_STATE_DIR_UNWRITABLE}, naming the key and its line, and exits
        with a non-zero status.
        """
        config = write_edge_config(self.directory)
        write_file(os.path.join(self.directory, "state"), "not a directory\n")

        edge = start_program(
            self,
            "edge",
            twistd_argv(self.directory, "tunnel-edge", "--config", config),
            home=self.directory,
        )
        yield edge.wait_for_line("TK_STATE_DIR_UNWRITABLE")
        code = yield edge.wait_for_exit(5.0)

        self.assertNotIn(code, (0, None), edge.describe())
        self.assertIn(f"{config}:7: state_dir", edge.describe())

    @inlineCallbacks
    def test_untrusted_edge_certificate(self) -> Steps[None]:
        """
        An agent whose C{root_cas} holds another CA than the edge's exits
        with status 1, says C{TK_EDGE_CERT_UNTRUSTED} and tells the user to
        set C{root_cas} to the edge's CA file.
        """
        other_ca = ensure_edge_certificate(
            FilePath(os.path.join(self.directory, "other-ca")), [LOOPBACK]
        ).ca_path.path
        edge_config = write_edge_config(self.directory, [("alice", TOKEN, [])])
        edge = yield start_edge(self, self.directory, edge_config)
        config = write_agent_config(self.directory, edge.server_addr, other_ca, TOKEN)

        agent = start_agent(self, self.directory, ["tcp", "22", "--config", config])
        code = yield agent.wait_for_exit()

        errors = agent.text("err")
        self.assertEqual(code, 1, agent.describe())
        self.assertIn("TK_EDGE_CERT_UNTRUSTED", errors, agent.describe())
        self.assertIn("set root_cas to", errors, agent.describe())
