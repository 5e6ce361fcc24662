"""
End-to-end tests of TCP tunnels: the real C{tunnelkit} command and the
twistd plugins run as child processes on loopback, with traffic from real
clients (and a real C{ssh}) through the tunnels they make.

The refusals and failure reports (authtokens, reserved addresses, an
unreachable or untrusted edge, a dead local service) are in
L{tests.test_e2e_tcp_errors}; what both share is in L{tests.e2e} (the
processes) and L{tests.loopback} (the servers and clients).
"""

import getpass
import os
import re
import shutil
import signal
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.error import ConnectionDone
from twisted.trial.unittest import SkipTest, TestCase

from tests.e2e import (
    FORWARDING_LINE,
    LOOPBACK,
    TOKEN,
    TUNNELKIT,
    Program,
    Steps,
    allow_open_files,
    free_port,
    make_directory,
    public_port,
    start_agent,
    start_edge,
    start_program,
    write_agent_config,
    write_edge_config,
    write_file,
)
from tests.loopback import Clients, gather, listen_echo, listen_replier

MIB = 1024 * 1024
BULK_SIZE = 100 * MIB
BULK_SECONDS = 100.0
CONCURRENT_CONNECTIONS = 500
CONCURRENT_PAYLOAD = 4 * 1024
CONCURRENT_SECONDS = 60.0
SSH_INSTALL = "apt-get install -y openssh-server openssh-client"
SSHD = "/usr/sbin/sshd"


def payload_for(index: int) -> bytes:
    """
    @return: 4 KiB that differ from one connection to the next.
    """
    return (b"%08d" % index) * (CONCURRENT_PAYLOAD // 8)


class TcpTrafficTests(TestCase):
    """
    Bytes go through a TCP tunnel unchanged: in bulk, on many connections at
    once, and as a real SSH session.
    """

    timeout = 150

    def setUp(self) -> None:
        self.directory = make_directory(self)
        self.clients = Clients(self)

    @inlineCallbacks
    def start_tunnel(self, local_port: int, twistd: bool = False) -> Steps[int]:
        """
        Start an edge and an agent with one TCP tunnel to C{local_port}.

        @param twistd: run both under twistd (the agent with the tunnel in
            its config), else as C{tunnelkit edge} and C{tunnelkit tcp}.
        @return: a Deferred firing with the tunnel's public port.
        """
        config = write_edge_config(self.directory, [("alice", TOKEN, [])])
        edge = yield start_edge(self, self.directory, config, twistd)
        tunnels = {"echo": local_port} if twistd else None
        agent_config = write_agent_config(
            self.directory, edge.server_addr, edge.ca_path, TOKEN, tunnels
        )
        arguments = ["--config", agent_config]
        if not twistd:
            arguments = ["tcp", str(local_port)] + arguments
        agent = start_agent(self, self.directory, arguments, twistd)
        port = yield public_port(agent)
        return port

    @inlineCallbacks
    def test_bulk_echo(self) -> Steps[None]:
        """
        100 MiB sent through a tunnel to a local echo server come back
        intact (same SHA-256), with the edge and the agent both run by
        twistd.
        """
        echo_port = yield listen_echo(self)
        port = yield self.start_tunnel(echo_port, twistd=True)

        sent, received, count = yield self.clients.stream(port, BULK_SIZE, BULK_SECONDS)

        self.assertEqual((count, received), (BULK_SIZE, sent))

    @inlineCallbacks
    def test_concurrent_connections(self) -> Steps[None]:
        """
        500 connections open at once through one tunnel each get their own
        bytes echoed back.
        """
        allow_open_files(self, 2 * CONCURRENT_CONNECTIONS + 256)
        echo_port = yield listen_echo(self)
        port = yield self.start_tunnel(echo_port)
        payloads = [payload_for(i) for i in range(CONCURRENT_CONNECTIONS)]

        answers = yield gather(
            [self.clients.echo(port, p, CONCURRENT_SECONDS) for p in payloads]
        )

        wrong = [i for i, (a, p) in enumerate(zip(answers, payloads)) if a != p]
        self.assertEqual(wrong, [])

    @inlineCallbacks
    def test_half_close(self) -> Steps[None]:
        """
        A client's half-close (FIN) reaches the local service through the
        tunnel, the service's answer comes back, and its close arrives as a
        clean close (FIN), as C{docs/tcp-tunnels.md} says.
        """
        replier_port = yield listen_replier(self)
        port = yield self.start_tunnel(replier_port)

        received, reason = yield self.clients.half_close(port, b"request")

        self.assertEqual((received, reason.type), (b"received 7", ConnectionDone))

    @inlineCallbacks
    def test_ssh_session(self) -> Steps[None]:
        """
        A real C{ssh} reaches a local C{sshd} through a tunnel of the
        README's quick start (C{tunnelkit tcp PORT} with its embedded edge)
        and runs a command there.
        """
        sshd_port, key = yield self.start_sshd()
        agent = start_agent(self, self.directory, ["tcp", str(sshd_port)])
        port = yield public_port(agent)

        ssh = start_program(
            self,
            "ssh",
            [
                shutil.which("ssh") or "ssh",
                "-F",
                "/dev/null",
                "-p",
                str(port),
                "-i",
                key,
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                f"{getpass.getuser()}@{LOOPBACK}",
                "echo",
                "tunnel-ok",
            ],
            home=self.directory,
        )
        code = yield ssh.wait_for_exit()

        self.assertEqual((code, ssh.text("out")), (0, "tunnel-ok"), ssh.describe())

    @inlineCallbacks
    def start_sshd(self) -> Steps[tuple[int, str]]:
        """
        Run C{sshd} on a free loopback port with keys made for this test,
        accepting the current user's new key.

        @return: a Deferred firing with C{(port, private_key_path)}.
        @raise SkipTest: without OpenSSH, naming the packages to install.
        """
        keygen = shutil.which("ssh-keygen")
        if not (os.path.exists(SSHD) and keygen and shutil.which("ssh")):
            raise SkipTest(f"needs OpenSSH's sshd, ssh and ssh-keygen: {SSH_INSTALL}")
        if os.geteuid() == 0 and not os.path.isdir("/run/sshd"):
            # sshd started as root needs its privilege separation directory,
            # which the package's service unit makes at boot.
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        keys = {}
        for name in ("host_key", "user_key"):
            keys[name] = os.path.join(self.directory, name)
            keygen_run = start_program(
                self,
                "ssh-keygen",
                [keygen, "-q", "-t", "ed25519", "-N", "", "-f", keys[name]],
                home=self.directory,
            )
            code = yield keygen_run.wait_for_exit()
            self.assertEqual(code, 0, keygen_run.describe())
        authorized = os.path.join(self.directory, "authorized_keys")
        shutil.copyfile(keys["user_key"] + ".pub", authorized)
        port = free_port()
        config = write_file(
            os.path.join(self.directory, "sshd_config"),
            f"Port {port}\n"
            f"ListenAddress {LOOPBACK}\n"
            f"HostKey {keys['host_key']}\n"
            f"AuthorizedKeysFile {authorized}\n"
            "StrictModes no\n"
            "UsePAM no\n"
            f"PidFile {os.path.join(self.directory, 'sshd.pid')}\n",
        )
        sshd = start_program(
            self, "sshd", [SSHD, "-D", "-e", "-f", config], home=self.directory
        )
        yield sshd.wait_for_line(f"Server listening on {LOOPBACK} port {port}")
        return port, keys["user_key"]


class EdgeRestartTests(TestCase):
    """
    An agent outlives a restart of its edge.
    """

    timeout = 90

    @inlineCallbacks
    def test_agent_gets_its_port_back(self) -> Steps[None]:
        """
        When the edge is stopped and started again on the same agent port and
        state directory, the agent reconnects by itself, is given the same
        public port again (its affinity token), and the tunnel works.
        """
        directory = make_directory(self)
        clients = Clients(self)
        echo_port = yield listen_echo(self)
        config = write_edge_config(directory, [("alice", TOKEN, [])])
        edge = yield start_edge(self, directory, config)
        agent_config = write_agent_config(
            directory, edge.server_addr, edge.ca_path, TOKEN
        )
        agent = start_agent(
            self, directory, ["tcp", str(echo_port), "--config", agent_config]
        )
        port_before = yield public_port(agent)
        yield edge.program.stop()
        restarted_config = write_edge_config(
            directory, [("alice", TOKEN, [])], edge.agent_port, "edge-restarted.yml"
        )

        yield start_edge(self, directory, restarted_config)
        port_after = yield public_port(agent, occurrence=2, seconds=30.0)
        answer = yield clients.echo(port_after, b"after the restart")

        self.assertEqual(
            (port_after, answer), (port_before, b"after the restart"), agent.describe()
        )


class QuickStartTests(TestCase):
    """
    C{tunnelkit tcp PORT} as the README gives it, with an empty home:
    no configuration, so an embedded edge.

    It runs as C{python -m tunnelkit}: the installed C{tunnelkit} script may
    belong to an older checkout than the tree under test.
    """

    timeout = 60

    def setUp(self) -> None:
        self.home = make_directory(self)

    @inlineCallbacks
    def start_quick_start(self) -> Steps[tuple[Program, re.Match[str], int]]:
        """
        Run C{tunnelkit tcp PORT} for a local echo server, exactly as the
        README writes it (no flags).

        @return: a Deferred firing with the program, the C{re.Match} of its
            Forwarding line and the echo server's port.
        """
        echo_port = yield listen_echo(self)
        argv = TUNNELKIT + ["tcp", str(echo_port)]
        program = start_program(self, "tunnelkit tcp", argv, home=self.home)
        forwarding = yield program.wait_for_line(FORWARDING_LINE, stream="out")
        return program, forwarding, echo_port

    @inlineCallbacks
    def test_forwards_to_local_port(self) -> Steps[None]:
        """
        The summary's Forwarding line reads C{tcp://127.0.0.1:N ->
        localhost:PORT}, and a connection to N reaches the local server.
        """
        clients = Clients(self)
        program, forwarding, echo_port = yield self.start_quick_start()
        host, port, target = forwarding.groups()

        answer = yield clients.echo(int(port), b"quick start")

        self.assertEqual(
            (host, target, answer),
            (LOOPBACK, f"localhost:{echo_port}", b"quick start"),
        )

    @inlineCallbacks
    def test_ctrl_c_stops_it(self) -> Steps[None]:
        """
        Ctrl+C (SIGINT) stops C{tunnelkit tcp PORT}: it exits with status 0.
        """
        program, _, _ = yield self.start_quick_start()

        program.send_signal("INT")
        code = yield program.wait_for_exit(10.0)

        self.assertEqual(code, 0, program.describe())


class EdgeLogTests(TestCase):
    """
    What the edge's log says about the agents it serves.
    """

    timeout = 60

    @inlineCallbacks
    def test_session_names_its_authtoken(self) -> Steps[None]:
        """
        The edge logs a new agent session with the name of the authtoken it
        used, which C{docs/edge-config.md} says is what logs show instead of
        the token.
        """
        directory = make_directory(self)
        config = write_edge_config(directory, [("alice", TOKEN, [])])
        edge = yield start_edge(self, directory, config)
        agent_config = write_agent_config(
            directory, edge.server_addr, edge.ca_path, TOKEN
        )
        start_agent(self, directory, ["tcp", "22", "--config", agent_config])

        event = yield edge.program.wait_for_event(where=session_started)

        self.assertEqual(event["token_name"], "alice")
        self.assertIn("with the authtoken named alice", event["msg"])


def session_started(event: dict[str, Any]) -> bool:
    """
    @return: whether C{event} is the edge's C{agent session started} line.
    """
    message = str(event.get("msg", ""))
    return message.startswith("agent session ") and " started from " in message


class ShutdownTests(TestCase):
    """
    The agent under twistd stops when a service manager asks it to.
    """

    timeout = 60

    @inlineCallbacks
    def test_twistd_agent_stops_on_sigterm(self) -> Steps[None]:
        """
        C{twistd -n tunnel} connected to an edge ends by itself soon after
        SIGTERM: with status 0, or as twistd does by re-raising SIGTERM
        after its clean shutdown.
        """
        directory = make_directory(self)
        echo_port = yield listen_echo(self)
        config = write_edge_config(directory, [("alice", TOKEN, [])])
        edge = yield start_edge(self, directory, config, twistd=True)
        agent_config = write_agent_config(
            directory, edge.server_addr, edge.ca_path, TOKEN, {"echo": echo_port}
        )
        agent = start_agent(self, directory, ["--config", agent_config], True)
        yield public_port(agent)

        agent.send_signal("TERM")
        yield agent.wait_for_exit(10.0)

        self.assertIn(
            (agent.exit_code, agent.exit_signal),
            [(0, None), (None, signal.SIGTERM)],
            agent.describe(),
        )
