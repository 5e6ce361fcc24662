"""
Building blocks shared by the benchmarks in this folder.

A benchmark runs as processes on loopback: the measuring parent, a sink
child that it starts with L{SinkProcess}, and other programs it runs with
L{Program}. They share TLS material made by L{make_certificate}, talk over a
JSON-lines control channel (L{ControlClient}, L{ControlServer}), push bytes
with L{ChunkWriter} and count them with L{ByteCounter}. A benchmark that
compares tunnels starts a tunnelkit edge, C{sshd} and C{ssh -R} through
L{BenchRun}, inside L{run_benchmark}, which stops them on every way out. The
rest reads process usage (of this process or any other, from C{/proc}) and
formats results.
"""

from __future__ import annotations

import contextlib
import ctypes
import getpass
import itertools
import json
import os
import platform
import re
import resource
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import OpenSSL
import twisted
from OpenSSL import SSL
from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IOpenSSLClientConnectionCreator,
    IPushProducer,
    IReactorTime,
    ITransport,
)
from twisted.internet.protocol import Protocol
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from zope.interface import implementer

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tunnelkit.pki import (  # noqa: E402
    EdgeCertificate,
    client_tls_options,
    ensure_edge_certificate,
    server_tls_options,
)
from tests.e2e import (  # noqa: E402
    AGENT_LISTENER_LINE,
    TUNNELKIT,
    child_environment,
    free_port,
    write_agent_config,
    write_edge_config,
    write_file,
)

LOOPBACK = "127.0.0.1"
CHUNK_SIZE = 64 * 1024
MEGABYTE = 1_000_000
WAIT = 30.0
"""Seconds any one expected event of a run, such as a program's start, may
take."""


# The sink child process


class SinkProcess:
    """
    A sink child process, alive for the length of a C{with} block.

    The child announces itself with one JSON line on its standard output
    (see L{announce}) and stops when its standard input closes (see
    L{stop_when_parent_goes}), so it also ends if the parent dies without
    cleaning up. Leaving the block closes that input, waits, then terminates
    and finally kills the child.

    @ivar announcement: the JSON object the child printed, such as its port.
    """

    def __init__(
        self,
        argv: Sequence[str],
        start_timeout: float = 60.0,
        stop_timeout: float = 15.0,
    ) -> None:
        """
        @param argv: the child's command line, starting with the interpreter.
        @param start_timeout: seconds to wait for the announcement.
        @param stop_timeout: seconds to wait for a clean exit before
            terminating the child.
        """
        self.argv = list(argv)
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.announcement: dict[str, Any] = {}
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> SinkProcess:
        self._process = subprocess.Popen(
            self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO_ROOT
        )
        try:
            self.announcement = self._read_announcement()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _read_announcement(self) -> dict[str, Any]:
        """
        @return: the first line the child prints, parsed as JSON.
        @raise RuntimeError: if the child exits or stays silent too long.
        """
        assert self._process is not None and self._process.stdout is not None
        stdout = self._process.stdout
        ready, _, _ = select.select([stdout], [], [], self.start_timeout)
        line = stdout.readline() if ready else b""
        if not line:
            raise RuntimeError(
                f"the sink process did not announce itself within"
                f" {self.start_timeout:.0f}s (exit status {self._process.poll()})"
            )
        announcement: dict[str, Any] = json.loads(line)
        return announcement

    def stop(self) -> int | None:
        """
        Stop the child: close its input, then terminate, then kill.

        @return: its exit status, or C{None} if it was never started.
        """
        process = self._process
        if process is None:
            return None
        if process.stdin is not None and not process.stdin.closed:
            try:
                process.stdin.close()
            except OSError:
                pass
        for escalate in (None, process.terminate, process.kill):
            if escalate is not None:
                escalate()
            try:
                return process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                continue
        return process.poll()


def announce(fields: Mapping[str, Any], stream: TextIO = sys.stdout) -> None:
    """
    Tell the parent, on one line of standard output, how to reach this sink.

    @param fields: JSON-serializable facts such as the port.
    @param stream: where the parent reads.
    """
    stream.write(json.dumps(dict(fields)) + "\n")
    stream.flush()


class _ParentWatch(Protocol):
    """
    Stops the reactor when standard input closes, meaning the parent is gone
    or wants the sink to stop.
    """

    def __init__(self, stop: Callable[[], None]) -> None:
        self._stop = stop

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._stop()


def stop_when_parent_goes(reactor: Any) -> None:
    """
    Stop C{reactor} once standard input reaches its end.

    @param reactor: the running reactor, which must support standard I/O.
    """
    from twisted.internet.stdio import StandardIO

    def stop() -> None:
        if reactor.running:
            reactor.stop()

    StandardIO(_ParentWatch(stop), reactor=reactor)


# Other programs


PR_SET_PDEATHSIG = 1
"""The C{prctl} option that asks Linux to signal a child when its parent dies."""

_prctl: Any = None
if sys.platform.startswith("linux"):
    _prctl = ctypes.CDLL(None, use_errno=True).prctl

_program_numbers = itertools.count(1)


def _end_with_parent() -> None:
    """
    In a child between C{fork} and C{exec}: ask for C{SIGTERM} once the
    parent dies, so that a killed benchmark leaves no program running.
    """
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


class Program:
    """
    A program the benchmark runs, such as a server or a client, alive for the
    length of a C{with} block or until L{stop}.

    Its standard output and error go to two files in a directory the
    benchmark owns, never to pipes, so a chatty program cannot block on a
    pipe nobody reads while the benchmark waits for something else. On
    Linux the child also gets C{SIGTERM} when the benchmark process dies
    without stopping it.

    @ivar name: a short name for messages and for the output files.
    @ivar pid: the child's process id, once started.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        directory: str,
        env: Mapping[str, str],
        stop_timeout: float = 10.0,
    ) -> None:
        """
        @param name: a short name for messages.
        @param argv: the command and its arguments.
        @param directory: where the output files go; also the working
            directory of the child.
        @param env: the child's whole environment.
        @param stop_timeout: seconds a child has to exit after C{SIGTERM}
            before it gets C{SIGKILL}.
        """
        self.name = name
        self.argv = list(argv)
        self.directory = directory
        self.env = dict(env)
        self.stop_timeout = stop_timeout
        number = next(_program_numbers)
        self._paths = {
            stream: os.path.join(directory, f"{number:03d}-{name}.{stream}")
            for stream in ("out", "err")
        }
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """
        @return: the process id of the child.
        @raise RuntimeError: if it was never started.
        """
        if self._process is None:
            raise RuntimeError(f"{self.name} was not started")
        return self._process.pid

    def start(self) -> Program:
        """
        Start the child.

        @return: this program.
        """
        with open(self._paths["out"], "wb") as out, open(
            self._paths["err"], "wb"
        ) as err:
            self._process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=self.env,
                cwd=self.directory,
                preexec_fn=_end_with_parent,
            )
        return self

    def __enter__(self) -> Program:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def exit_status(self) -> int | None:
        """
        @return: the exit status once the child has ended (negative: the
            signal that ended it), else C{None}.
        """
        return None if self._process is None else self._process.poll()

    def text(self, stream: str = "out") -> str:
        """
        @param stream: C{"out"} or C{"err"}.
        @return: what the child has written to that stream so far.
        """
        try:
            with open(self._paths[stream], encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def describe(self, limit: int = 3000) -> str:
        """
        @param limit: characters of each stream to show, the last ones.
        @return: the command, its state and the end of its output, for
            error messages.
        """
        status = self.exit_status()
        state = "running" if status is None else f"exit status {status}"
        parts = [f"{self.name} ({state}): {' '.join(self.argv)}"]
        for stream in ("out", "err"):
            text = self.text(stream).rstrip()
            if text:
                parts.append(f"--- std{stream}:\n{text[-limit:]}")
        return "\n".join(parts)

    def wait_for_line(
        self, pattern: str, timeout: float = 30.0, stream: str | None = None
    ) -> re.Match[str]:
        """
        Wait until a line the child printed matches.

        @param pattern: a regular expression searched for in each line.
        @param timeout: seconds to wait.
        @param stream: C{"out"}, C{"err"}, or C{None} for either.
        @return: the first match.
        @raise RuntimeError: if the child ends or the time runs out first.
        """
        compiled = re.compile(pattern)
        streams = ("out", "err") if stream is None else (stream,)
        deadline = time.monotonic() + timeout
        while True:
            ended = self.exit_status() is not None
            for name in streams:
                for line in self.text(name).splitlines():
                    found = compiled.search(line)
                    if found is not None:
                        return found
            if ended:
                raise RuntimeError(
                    f"{self.name} ended without printing a line matching"
                    f" {pattern!r}\n{self.describe()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"waited {timeout:g}s for {self.name} to print a line"
                    f" matching {pattern!r}\n{self.describe()}"
                )
            time.sleep(0.05)

    def wait(self, timeout: float) -> int:
        """
        Wait for the child to end by itself.

        @param timeout: seconds to wait.
        @return: its exit status.
        @raise RuntimeError: if it is still running after C{timeout}; it is
            left running for L{stop}.
        """
        if self._process is None:
            raise RuntimeError(f"{self.name} was not started")
        try:
            return self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(
                f"{self.name} still runs after {timeout:g}s\n{self.describe()}"
            ) from None

    def stop(self) -> int | None:
        """
        Stop the child if it still runs: C{SIGTERM}, then C{SIGKILL} after
        C{stop_timeout} seconds. Calling it again does nothing more.

        @return: its exit status, or C{None} if it was never started.
        """
        process = self._process
        if process is None:
            return None
        for escalate in (process.terminate, process.kill):
            if process.poll() is not None:
                break
            try:
                escalate()
            except ProcessLookupError:
                break
            try:
                process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                continue
        return process.wait()


def allow_open_files(needed: int) -> None:
    """
    Raise this process's soft limit on open files to at least C{needed};
    the programs it starts afterwards inherit the limit.

    @raise RuntimeError: if the hard limit is lower, saying what to run.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise RuntimeError(
            f"needs {needed} open files but the hard limit is {hard};"
            f" raise it (ulimit -Hn {needed}) or ask for fewer connections"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


# A run's programs: the tunnelkit edge, sshd and ssh


SSH = "ssh"
SSH_KEYGEN = "ssh-keygen"
SSHD = "/usr/sbin/sshd"
SSH_INSTALL = {
    SSH: "apt-get install -y openssh-client",
    SSH_KEYGEN: "apt-get install -y openssh-client",
    SSHD: "apt-get install -y openssh-server",
}
"""The programs of the C{ssh -R} path, each with the command installing it."""


class BenchRun:
    """
    What one run of a benchmark starts: its programs, with their files in
    one temporary directory that is also their C{HOME}, C{TMPDIR} and XDG
    directories. Each program is stopped when the run's C{ExitStack}
    closes, last started first.

    @ivar server_addr: where agents reach the edge, once L{start_edge} ran.
    @ivar ca_path: the CA agents trust, once L{start_edge} ran.
    """

    def __init__(self, directory: str, stack: contextlib.ExitStack, token: str) -> None:
        """
        @param directory: an empty private directory, removed after the
            stack closes.
        @param stack: where each program registers its stop.
        @param token: the authtoken the edge accepts and agents present.
        """
        self.directory = directory
        self.stack = stack
        self.token = token
        self.env = {**child_environment(directory), "TMPDIR": directory}
        self.server_addr = ""
        self.ca_path = ""

    def program(self, name: str, argv: Sequence[str]) -> Program:
        """
        @param name: a short name for messages and output files.
        @param argv: the command and its arguments.
        @return: a program not started yet, to use in a C{with} block.
        """
        return Program(name, argv, self.directory, self.env)

    def start(self, name: str, argv: Sequence[str]) -> Program:
        """
        Start a program that runs until the end of the run.

        @return: the started program.
        """
        return self.stack.enter_context(self.program(name, argv))

    def start_edge(self, settings: Mapping[str, str] | None = None) -> Program:
        """
        Start C{tunnelkit edge} on loopback with a generated config and CA,
        and note where agents reach it.

        @param settings: top-level keys of C{edge.yml} to set or replace,
            each with its value as YAML text.
        @return: the edge, listening for agents.
        """
        config = write_edge_config(self.directory, [("bench", self.token, [])])
        if settings:
            set_yaml_keys(config, settings)
        edge = self.start("edge", [*TUNNELKIT, "edge", "--config", config])
        found = edge.wait_for_line(AGENT_LISTENER_LINE, WAIT)
        self.server_addr = f"{found.group(1)}:{found.group(2)}"
        self.ca_path = os.path.join(self.directory, "state", "ca.pem")
        return edge

    def agent_config(self, name: str) -> str:
        """
        Write an agent config naming the edge, its CA and the authtoken.

        @param name: the file's name in the run's directory.
        @return: the file's path.
        """
        return write_agent_config(
            self.directory, self.server_addr, self.ca_path, self.token, name=name
        )

    def start_sshd(self) -> tuple[Program, int, str]:
        """
        Run C{sshd} on loopback with a host key made for this run, accepting
        a user key made for this run.

        @return: the server, its port and the user's private key file.
        """
        if os.geteuid() == 0 and not os.path.isdir("/run/sshd"):
            # sshd started as root needs its privilege separation directory,
            # which the package's service unit makes at boot.
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        keys = {}
        for name in ("host_key", "user_key"):
            keys[name] = os.path.join(self.directory, name)
            argv = [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", keys[name]]
            with self.program("ssh-keygen", argv) as keygen:
                if keygen.wait(WAIT) != 0:
                    raise RuntimeError(f"ssh-keygen failed\n{keygen.describe()}")
        authorized = os.path.join(self.directory, "authorized_keys")
        shutil.copyfile(keys["user_key"] + ".pub", authorized)
        port = free_port()
        config = write_file(
            os.path.join(self.directory, "sshd_config"),
            f"Port {port}\n"
            f"ListenAddress {LOOPBACK}\n"
            f"HostKey {keys['host_key']}\n"
            f"AuthorizedKeysFile {authorized}\n"
            "AllowTcpForwarding remote\n"
            "StrictModes no\n"
            "UsePAM no\n"
            f"PidFile {os.path.join(self.directory, 'sshd.pid')}\n",
        )
        sshd = self.start("sshd", [SSHD, "-D", "-e", "-f", config])
        sshd.wait_for_line(f"Server listening on {LOOPBACK} port {port}", WAIT)
        return sshd, port, keys["user_key"]

    def start_ssh_forward(
        self, sshd_port: int, key: str, local_port: int
    ) -> tuple[Program, int, str]:
        """
        Start C{ssh -N -R 0:127.0.0.1:LOCAL_PORT} to the run's C{sshd}.

        @return: the client, the port C{sshd} allocated for the forward,
            and the cipher the two agreed on.
        """
        argv = [
            SSH,
            "-v",
            "-N",
            "-F",
            "/dev/null",
            "-p",
            str(sshd_port),
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
            "-o",
            "ExitOnForwardFailure=yes",
            "-R",
            f"0:{LOOPBACK}:{local_port}",
            f"{getpass.getuser()}@{LOOPBACK}",
        ]
        ssh = self.start("ssh", argv)
        allocated = ssh.wait_for_line(r"Allocated port (\d+) for remote forward", WAIT)
        cipher = ssh.wait_for_line(r"kex: server->client cipher: (\S+)", WAIT)
        return ssh, int(allocated.group(1)), cipher.group(1)


def set_yaml_keys(path: str, settings: Mapping[str, str]) -> None:
    """
    Set top-level keys of a YAML file written one key per line: replace the
    line of a key that is there, append the others.

    @param path: the file.
    @param settings: each key's value, as YAML text.
    """
    with open(path, encoding="utf-8") as config:
        lines = config.read().splitlines()
    for key, value in settings.items():
        line = f"{key}: {value}"
        found = [i for i, text in enumerate(lines) if text.startswith(f"{key}:")]
        if found:
            lines[found[0]] = line
        else:
            lines.append(line)
    write_file(path, "\n".join(lines) + "\n")


def missing_programs(install: Mapping[str, str]) -> list[str]:
    """
    @param install: each program a benchmark needs (a name on C{PATH} or an
        absolute path), with the command that installs it.
    @return: the install command of each program not found, once each.
    """
    missing = []
    for name, command in install.items():
        found = os.access(name, os.X_OK) if name.startswith("/") else shutil.which(name)
        if not found and command not in missing:
            missing.append(command)
    return missing


def program_version(argv: Sequence[str]) -> str:
    """
    @return: the first line a C{--version} style command prints on either
        stream, or C{"?"}.
    """
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=WAIT)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0] if lines else "?"


# TLS material


def make_certificate(directory: str) -> EdgeCertificate:
    """
    Create a CA and a server certificate for C{127.0.0.1} in C{directory}.

    @param directory: an empty, private, temporary directory.
    @return: where the CA, certificate and key were written.
    """
    return ensure_edge_certificate(FilePath(directory), [LOOPBACK])


def server_options(cert_path: str, key_path: str) -> Any:
    """
    @param cert_path: the server certificate (PEM).
    @param key_path: its key (PEM).
    @return: TLS options for a loopback listener.
    """
    return server_tls_options(FilePath(cert_path), FilePath(key_path))


def client_options(ca_path: str) -> IOpenSSLClientConnectionCreator:
    """
    @param ca_path: the CA that signed the sink's certificate (PEM).
    @return: TLS options that verify the sink as C{127.0.0.1}.
    """
    return client_tls_options(LOOPBACK, ca_path)


def describe_tls(transport: Any) -> dict[str, str]:
    """
    @param transport: a connected TLS transport.
    @return: the negotiated protocol version and cipher.
    """
    connection: SSL.Connection = transport.getHandle()
    return {
        "version": connection.get_protocol_version_name(),
        "cipher": connection.get_cipher_name() or "?",
    }


# Control channel


class ControlServer(LineReceiver):
    """
    The sink's end of the control channel: one JSON object per line in, one
    per line out.

    A request is C{{"op": NAME, ...}}; the command registered under C{NAME}
    gets the whole request and returns (or resolves to) the reply's fields.
    The reply carries C{"ok": true}, or C{"ok": false} and an C{"error"}.
    """

    delimiter = b"\n"
    MAX_LENGTH = 1 << 20

    def __init__(
        self,
        commands: Mapping[
            str, Callable[[dict[str, Any]], dict[str, Any] | Awaitable[dict[str, Any]]]
        ],
    ) -> None:
        """
        @param commands: what each operation name runs.
        """
        self.commands = commands

    def lineReceived(self, line: bytes) -> None:
        request = json.loads(line)
        command = self.commands.get(request.get("op"))
        if command is None:
            self._reply({"ok": False, "error": f"unknown op {request.get('op')!r}"})
            return
        result: Deferred[Any] = maybeDeferred(command, request)
        result.addCallback(
            lambda value: (
                ensureDeferred(value) if isinstance(value, Awaitable) else value
            )
        )
        result.addCallbacks(
            lambda fields: self._reply({"ok": True, **fields}),
            lambda failure: self._reply(
                {"ok": False, "error": failure.getErrorMessage()}
            ),
        )

    def _reply(self, fields: dict[str, Any]) -> None:
        if self.transport is not None:
            self.sendLine(json.dumps(fields).encode("utf-8"))


class ControlError(Exception):
    """
    The sink answered a control request with an error.
    """


class ControlClient(LineReceiver):
    """
    The parent's end of the control channel; see L{ControlServer}.

    Requests are answered in order, so several may be outstanding.

    @ivar preamble: bytes sent first on connecting, before any request.
    """

    delimiter = b"\n"
    MAX_LENGTH = 1 << 20

    def __init__(self, preamble: bytes = b"") -> None:
        self.preamble = preamble
        self._waiting: deque[Deferred[dict[str, Any]]] = deque()

    def connectionMade(self) -> None:
        if self.preamble:
            self.transport.write(self.preamble)

    def call(self, op: str, **fields: Any) -> Deferred[dict[str, Any]]:
        """
        Send one request.

        @param op: the operation name.
        @param fields: the request's other fields.
        @return: a Deferred that fires with the reply, or fails with
            L{ControlError}.
        """
        waiting: Deferred[dict[str, Any]] = Deferred()
        self._waiting.append(waiting)
        self.sendLine(json.dumps({"op": op, **fields}).encode("utf-8"))
        return waiting

    def lineReceived(self, line: bytes) -> None:
        reply = json.loads(line)
        waiting = self._waiting.popleft()
        if reply.pop("ok", False):
            waiting.callback(reply)
        else:
            waiting.errback(ControlError(reply.get("error", "unknown error")))

    def connectionLost(self, reason: Failure | None = None) -> None:
        while self._waiting:
            self._waiting.popleft().errback(
                ControlError(f"control channel lost: {reason}")
            )


# Moving and counting bytes


@implementer(IPushProducer)
class ChunkWriter:
    """
    Writes one chunk of bytes into a transport again and again, as fast as
    the transport accepts, until a number of seconds has passed; then
    closes the transport's writing side.

    It registers as a push producer, so the transport's buffer (or a
    stream's window) pauses it, which keeps what is in flight bounded.

    @ivar written: bytes handed to the transport so far.
    @ivar done: fires with L{written} once writing stops.
    """

    def __init__(
        self,
        transport: ITransport,
        chunk: bytes,
        seconds: float,
        clock: IReactorTime,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        """
        @param transport: where to write; it must accept a producer.
        @param chunk: what each write carries.
        @param seconds: how long to write.
        @param clock: for the timer that ends a writer while it is paused.
        @param now: the clock that the deadline is read from.
        """
        self.transport = transport
        self.chunk = chunk
        self.seconds = seconds
        self.clock = clock
        self.now = now
        self.written = 0
        self.done: Deferred[int] = Deferred()
        self._deadline = 0.0
        self._paused = False
        self._writing = False
        self._finished = False
        self._timer: Any = None

    def start(self) -> Deferred[int]:
        """
        Start writing now.

        @return: L{done}.
        """
        self._deadline = self.now() + self.seconds
        self._timer = self.clock.callLater(self.seconds, self._finish)
        self.transport.registerProducer(self, True)  # type: ignore[attr-defined]
        if not self._paused:
            self._write_until_paused()
        return self.done

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._write_until_paused()

    def _write_until_paused(self) -> None:
        if self._writing or self._finished:
            return
        self._writing = True
        try:
            write = self.transport.write
            chunk = self.chunk
            size = len(chunk)
            while not self._paused and not self._finished:
                if self.now() >= self._deadline:
                    self._finish()
                    break
                write(chunk)
                self.written += size
        finally:
            self._writing = False

    def stopProducing(self) -> None:
        self._finish(close=False)

    def _finish(self, close: bool = True) -> None:
        if self._finished:
            return
        self._finished = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        if close:
            self.transport.unregisterProducer()  # type: ignore[attr-defined]
            self.transport.loseConnection()
        self.done.callback(self.written)


@dataclass(frozen=True)
class ByteCount:
    """
    What a sink received on one connection or stream.

    @ivar received: payload bytes.
    @ivar first: C{time.monotonic()} when the first of them arrived.
    @ivar last: C{time.monotonic()} when the last of them arrived.
    """

    received: int
    first: float
    last: float

    def to_json(self) -> dict[str, Any]:
        """
        @return: the fields as a JSON-serializable dict.
        """
        return asdict(self)


@implementer(IHalfCloseableProtocol)
class ByteCounter(Protocol):
    """
    Counts the bytes that arrive and when; reports the count once the writer
    closes its side, then closes this side.

    C{time.monotonic} is the same clock in every process of a machine, so
    counts from the sink can be set against times taken in the parent.
    """

    def __init__(self, on_finished: Callable[[ByteCount], None]) -> None:
        """
        @param on_finished: called once with the final count.
        """
        self.on_finished = on_finished
        self.received = 0
        self.first = 0.0
        self.last = 0.0
        self._reported = False

    def dataReceived(self, data: bytes) -> None:
        now = time.monotonic()
        if not self.received:
            self.first = now
        self.received += len(data)
        self.last = now

    def readConnectionLost(self) -> None:
        self._report()
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._report()

    def _report(self) -> None:
        if not self._reported:
            self._reported = True
            self.on_finished(ByteCount(self.received, self.first, self.last))


# Process usage


def cpu_seconds() -> float:
    """
    @return: the CPU time (user and system) this process has used.
    """
    return time.process_time()


def _process_status(field: str, pid: int | None = None) -> int | None:
    """
    @param field: a numeric field of C{/proc/PID/status}, such as C{VmRSS}.
    @param pid: the process, or C{None} for this one.
    @return: its value (in kB for sizes), or C{None} where there is no such
        file or field.
    """
    path = f"/proc/{'self' if pid is None else pid}/status"
    try:
        with open(path, encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def resident_bytes(pid: int | None = None) -> int | None:
    """
    @param pid: the process, or C{None} for this one.
    @return: its resident set size (C{VmRSS}), or C{None} where
        C{/proc/PID/status} does not exist.
    """
    kilobytes = _process_status("VmRSS", pid)
    return None if kilobytes is None else kilobytes * 1024


def _parent_and_cpu(pid: int) -> tuple[int, float] | None:
    """
    @return: the parent's process id and the CPU seconds (user + system)
        of process C{pid}, from C{/proc/PID/stat}, or C{None} if it is gone.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            text = stat.read()
    except OSError:
        return None
    # The command name, in parentheses, may itself hold spaces and ")".
    fields = text[text.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])
    return int(fields[1]), ticks / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int, descendants: bool = False) -> float:
    """
    @param pid: a running process.
    @param descendants: also count the processes it started that still run
        (such as the per-connection processes of C{sshd}).
    @return: the CPU time (user + system) they have used; 0.0 for a process
        that is gone.
    """
    own = _parent_and_cpu(pid)
    total = 0.0 if own is None else own[1]
    if not descendants:
        return total
    parents: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            found = _parent_and_cpu(int(entry))
            if found is not None:
                parents[int(entry)] = found
    for candidate, (parent, seconds) in parents.items():
        while parent > 1:
            if parent == pid:
                total += seconds
                break
            parent = parents.get(parent, (0, 0.0))[0]
    return total


def open_file_count(pid: int) -> int:
    """
    @param pid: a running process of the same user.
    @return: how many file descriptors (sockets included) it has open.
    """
    return len(os.listdir(f"/proc/{pid}/fd"))


def usage() -> dict[str, Any]:
    """
    @return: this process's CPU seconds (in all, in user mode and in the
        kernel), resident bytes, how often it has waited (voluntary context
        switches) and a timestamp.
    """
    times = os.times()
    return {
        "cpu": cpu_seconds(),
        "user": times.user,
        "system": times.system,
        "rss": resident_bytes(),
        "sleeps": _process_status("voluntary_ctxt_switches"),
        "at": time.monotonic(),
    }


# Reporting


def begin_logging(stream: TextIO = sys.stderr) -> None:
    """
    Send warnings and errors from Twisted and tunnelkit to C{stream}.
    """
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)
    observer = FilteringLogObserver(textFileLogObserver(stream), [predicate])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


def environment() -> dict[str, Any]:
    """
    @return: what the numbers depend on: interpreter, libraries, CPUs.
    """
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "twisted": twisted.__version__,
        "pyopenssl": OpenSSL.__version__,
        "openssl": SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode("ascii"),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }


def median(values: Sequence[float]) -> float:
    """
    @return: the median of C{values}, or NaN when there are none.
    """
    return statistics.median(values) if values else float("nan")


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """
    Lay out rows in columns: the first left-aligned, the others right-aligned.

    @param headers: one title per column.
    @param rows: cells as text.
    @return: the table, lines joined with newlines.
    """
    widths = [len(title) for title in headers]
    for row in rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row)]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:])]
        return "  ".join([first, *rest]).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def render_targets(targets: Sequence[Mapping[str, Any]]) -> str:
    """
    Lay out the targets of a run, each marked PASS or FAIL.

    @param targets: each with a C{name}, a C{limit}, whether it passed
        (C{pass}), and its C{value} (C{None} when it could not be measured)
        or the C{shown} text that stands for it.
    @return: the table.
    """
    rows = []
    for target in targets:
        value = target["value"]
        if "shown" in target:
            shown = target["shown"]
        elif value is None:
            shown = "not measured"
        else:
            shown = f"{value:.2f}" if value < 10 else f"{value:,.0f}"
        rows.append(
            [
                target["name"],
                shown,
                target["limit"],
                "PASS" if target["pass"] else "FAIL",
            ]
        )
    return render_table(["target", "measured", "limit", "result"], rows)


def progress(tag: str, text: str) -> None:
    """
    Say on standard error what a benchmark is doing.

    @param tag: the benchmark's short name.
    """
    sys.stderr.write(f"[{tag}] {text}\n")
    sys.stderr.flush()


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_benchmark(
    tag: str,
    measure: Callable[[str, contextlib.ExitStack], dict[str, Any]],
    report: Callable[[dict[str, Any]], str],
    install: Mapping[str, str],
    json_path: str | None = None,
    strict: bool = False,
) -> int:
    """
    Run a benchmark that starts programs: in a temporary directory, with
    every program it starts stopped and the directory removed on every way
    out (its end, an error, Ctrl-C, C{SIGTERM} or C{SIGHUP}); then print the
    report and write the results.

    @param tag: the benchmark's short name, for messages and the directory.
    @param measure: runs everything, given the directory and the stack that
            stops the programs; returns the results. Parts that failed
            without ending the run are listed under the results' key
            C{"failures"}, as messages.
    @param report: the results as text.
    @param install: the programs needed; see L{missing_programs}.
    @param json_path: where to write the results as JSON, if anywhere.
    @param strict: exit with 1 when a target of the results is missed.
    @return: the exit status: 0 when the run completed, 1 when C{strict}
        and a target was missed, 2 when the run or a part of it failed,
        130 when it was interrupted.
    """
    missing = missing_programs(install)
    if missing:
        progress(tag, f"missing programs; install them: {missing}")
        return 2
    for name in ("SIGTERM", "SIGHUP"):
        signal.signal(getattr(signal, name), _interrupt)
    try:
        with tempfile.TemporaryDirectory(prefix=f"tunnelkit-bench-{tag}-") as directory:
            with contextlib.ExitStack() as stack:
                results = measure(directory, stack)
    except KeyboardInterrupt:
        progress(tag, "interrupted; every program it started is stopped")
        return 130
    except (RuntimeError, OSError) as error:
        progress(tag, f"failed: {error}")
        return 2

    sys.stdout.write(report(results) + "\n")
    if json_path:
        with open(json_path, "w", encoding="utf-8") as output:
            json.dump(results, output, indent=2)
    failures = results.get("failures", [])
    for failure in failures:
        progress(tag, f"failed: {failure}")
    if failures:
        return 2
    if strict and not all(target["pass"] for target in results.get("targets", [])):
        return 1
    return 0
