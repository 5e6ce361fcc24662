"""
The TCP benchmark: iperf3 through a tunnelkit TCP tunnel, through C{ssh -R}
and directly, side by side on loopback; and the memory the edge and the agent
hold for each open connection.

Run C{python bench/tcp.py [--seconds 5] [--rounds 3] [--json out.json]}; see
C{bench/README.md} for what each number means. The same file, run with
C{--role holder}, is the child process that accepts connections and holds
them open.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from bench._common import (
    LOOPBACK,
    Program,
    SinkProcess,
    allow_open_files,
    announce,
    begin_logging,
    environment,
    median,
    open_file_count,
    process_cpu_seconds,
    render_table,
    resident_bytes,
    stop_when_parent_goes,
)
from tests.e2e import (
    AGENT_LISTENER_LINE,
    TUNNELKIT,
    child_environment,
    free_port,
    tcp_url_port,
    write_agent_config,
    write_edge_config,
    write_file,
)

_log = Logger()

# The targets from the issue that asked for this benchmark.
TARGET_RATIO = 1.00
TARGET_CONNECTION_BYTES = 35_000

TOKEN = "bench-tcp-0123456789"
"""The authtoken the benchmark's edge accepts and its agents present."""

GREETING = b"+"
"""What the holder writes on each connection it accepts."""

WAIT = 30.0
"""Seconds any one expected event may take."""

SETTLE = 1.0
"""Seconds to let the edge and the agent finish their work before reading
their memory."""

BATCH = 100
"""Connections opened at once before waiting for their answers."""

WARMUP_CONNECTIONS = 20
"""Connections opened and closed before the idle reading, so that what the
first connections cost once (a thread pool, code run the first time) is not
counted per connection."""

BUSY_ATTEMPTS = 10
"""Tries of one iperf3 run while the server still finishes the previous."""

IPERF3 = "iperf3"
SSH = "ssh"
SSH_KEYGEN = "ssh-keygen"
SSHD = "/usr/sbin/sshd"
INSTALL = {
    IPERF3: "apt-get install -y iperf3",
    SSH: "apt-get install -y openssh-client",
    SSH_KEYGEN: "apt-get install -y openssh-client",
    SSHD: "apt-get install -y openssh-server",
}

PATHS = ("direct", "tunnelkit", "ssh")
PATH_TITLES = {"direct": "direct", "tunnelkit": "tunnelkit", "ssh": "ssh -R"}
DIRECTIONS = ("forward", "reverse")
DIRECTION_TITLES = {
    "forward": "client -> server",
    "reverse": "server -> client (-R)",
}
SIDES = ("edge", "agent")


# The holder process


class HeldConnection(Protocol):
    """
    A connection the holder accepted: it answers one byte, so the client
    knows the whole path is up, then stays open, reading whatever comes.
    """

    def connectionMade(self) -> None:
        self.transport.write(GREETING)


def run_holder() -> int:
    """
    Accept connections on a loopback port, answer each with L{GREETING} and
    hold it, until standard input closes.

    @return: the exit status.
    """
    from twisted.internet import reactor

    begin_logging()
    endpoint = TCP4ServerEndpoint(reactor, 0, backlog=BATCH, interface=LOOPBACK)

    def listening(port: Any) -> None:
        announce({"port": port.getHost().port, "pid": os.getpid()})
        stop_when_parent_goes(reactor)

    def failed(failure: Failure) -> None:
        _log.failure("the holder could not listen", failure)
        reactor.stop()

    endpoint.listen(Factory.forProtocol(HeldConnection)).addCallbacks(listening, failed)
    reactor.run()
    return 0


# Starting the programs


class BenchRun:
    """
    What one run of the benchmark starts: its programs, with their files in
    one temporary directory that is also their C{HOME}, C{TMPDIR} and XDG
    directories. Each program is stopped when the run's C{ExitStack}
    closes, last started first.
    """

    def __init__(self, directory: str, stack: contextlib.ExitStack) -> None:
        """
        @param directory: an empty private directory, removed after the
            stack closes.
        @param stack: where each program registers its stop.
        """
        self.directory = directory
        self.stack = stack
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

    def start_holder(self) -> SinkProcess:
        """
        Start this file as C{--role holder}.

        @return: the holder; its C{announcement} has its C{port}.
        """
        argv = [sys.executable, str(Path(__file__).resolve()), "--role=holder"]
        return self.stack.enter_context(SinkProcess(argv, start_timeout=WAIT))

    def start_edge(self) -> Program:
        """
        Start C{tunnelkit edge} on loopback with a generated config and CA,
        and note where agents reach it.

        @return: the edge.
        """
        config = write_edge_config(self.directory, [("bench", TOKEN, [])])
        edge = self.start("edge", [*TUNNELKIT, "edge", "--config", config])
        found = edge.wait_for_line(AGENT_LISTENER_LINE, WAIT)
        self.server_addr = f"{found.group(1)}:{found.group(2)}"
        self.ca_path = os.path.join(self.directory, "state", "ca.pem")
        return edge

    def start_agent(self, name: str, local_port: int) -> tuple[Program, int]:
        """
        Start C{tunnelkit tcp LOCAL_PORT} against the edge, as its own
        process, logging JSON lines.

        @param name: names the program and its config file.
        @return: the agent and the public port of its tunnel.
        """
        config = write_agent_config(
            self.directory, self.server_addr, self.ca_path, TOKEN, name=f"{name}.yml"
        )
        argv = [*TUNNELKIT, "tcp", str(local_port), "--config", config]
        agent = self.start(name, [*argv, "--log", "stdout", "--log-format", "json"])
        found = agent.wait_for_line(r'"msg": ?"started tunnel"', WAIT, "out")
        return agent, tcp_url_port(json.loads(found.string)["url"])

    def start_iperf_server(self) -> tuple[Program, int]:
        """
        @return: a running C{iperf3 -s} on loopback and its port.
        """
        port = free_port()
        argv = [IPERF3, "-s", "-B", LOOPBACK, "-p", str(port), "--forceflush"]
        server = self.start("iperf3-server", argv)
        server.wait_for_line(f"Server listening on {port}", WAIT)
        return server, port

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


def missing_programs() -> list[str]:
    """
    @return: an install command for each program the benchmark needs and
        does not find.
    """
    missing = []
    for name, install in INSTALL.items():
        found = os.access(name, os.X_OK) if name.startswith("/") else shutil.which(name)
        if not found and install not in missing:
            missing.append(install)
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


# Memory per open connection


def open_connections(port: int, count: int) -> list[socket.socket]:
    """
    Open C{count} connections to C{port}, L{BATCH} at a time, and wait for
    the holder's L{GREETING} on each: it proves the connection reached the
    holder through the edge and the agent.

    @return: the open sockets.
    @raise RuntimeError: if a connection fails or gets no answer in time.
    """
    sockets: list[socket.socket] = []
    try:
        for first in range(0, count, BATCH):
            for number in range(first + 1, min(first + BATCH, count) + 1):
                try:
                    sockets.append(socket.create_connection((LOOPBACK, port), WAIT))
                except OSError as error:
                    raise RuntimeError(
                        f"connection {number} to the tunnel failed: {error}"
                    ) from None
            for number, each in enumerate(sockets[first:], start=first + 1):
                try:
                    answer = each.recv(len(GREETING))
                except OSError as error:
                    raise RuntimeError(
                        f"connection {number} through the tunnel got no answer:"
                        f" {error or 'timed out'}"
                    ) from None
                if answer != GREETING:
                    raise RuntimeError(
                        f"connection {number} through the tunnel was closed"
                        " before the holder answered"
                    )
    except BaseException:
        close_connections(sockets)
        raise
    return sockets


def close_connections(sockets: list[socket.socket]) -> None:
    """
    Close every socket of C{sockets}.
    """
    for each in sockets:
        each.close()


def read_memory(pids: dict[str, int]) -> dict[str, dict[str, int]]:
    """
    @param pids: process id by side.
    @return: resident bytes and open files of each side.
    """
    reading = {}
    for side, pid in pids.items():
        rss = resident_bytes(pid)
        if rss is None:
            raise RuntimeError(f"the {side} (pid {pid}) is gone")
        reading[side] = {"rss": rss, "files": open_file_count(pid)}
    return reading


def wait_for_files(
    pids: dict[str, int], baseline: dict[str, dict[str, int]], timeout: float
) -> bool:
    """
    Wait until each side holds no more open files than in C{baseline}, that
    is until closed connections are gone end to end.

    @return: whether that happened within C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        if all(
            open_file_count(pid) <= baseline[side]["files"]
            for side, pid in pids.items()
        ):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def measure_memory(pids: dict[str, int], port: int, count: int) -> dict[str, Any]:
    """
    Read the edge's and the agent's memory with the tunnel idle, then with
    C{count} connections open through it, then after they are closed.

    @param pids: the edge's and the agent's process ids.
    @param port: the tunnel's public port, which leads to the holder.
    @return: the readings and the growth per connection of each side.
    """
    time.sleep(SETTLE)
    tunnel_up = read_memory(pids)
    close_connections(open_connections(port, WARMUP_CONNECTIONS))
    if not wait_for_files(pids, tunnel_up, WAIT):
        raise RuntimeError(
            f"the {WARMUP_CONNECTIONS} warm-up connections were still open after"
            f" {WAIT:g}s: {read_memory(pids)}"
        )
    time.sleep(SETTLE)
    idle = read_memory(pids)

    sockets = open_connections(port, count)
    try:
        time.sleep(SETTLE)
        held = read_memory(pids)
    finally:
        close_connections(sockets)
    for side in SIDES:
        grown = held[side]["files"] - idle[side]["files"]
        if grown < count:
            raise RuntimeError(
                f"the {side} holds {grown} more open files than idle, not"
                f" {count}: the connections are not all open through it"
            )
    drained = wait_for_files(pids, idle, WAIT)
    time.sleep(SETTLE)
    closed = read_memory(pids)
    return {
        "connections": count,
        "warmup_connections": WARMUP_CONNECTIONS,
        "readings": {
            "tunnel_up": tunnel_up,
            "idle": idle,
            "open": held,
            "closed": closed,
        },
        "all_closed": drained,
        "per_connection": {
            side: (held[side]["rss"] - idle[side]["rss"]) / count for side in SIDES
        },
    }


# Throughput


def iperf_sample(
    run: BenchRun,
    port: int,
    seconds: float,
    reverse: bool,
    watched: dict[str, tuple[int, bool]],
) -> dict[str, Any]:
    """
    Run one C{iperf3 -c} against C{port} and read what the receiving side
    measured.

    @param reverse: send from the server to the client (C{-R}).
    @param watched: processes whose CPU use to record, by name: the process
        id and whether to count its descendants too.
    @return: the sample: Mbit/s, bytes, seconds, and each watched process's
        CPU time as a share of the client's run.
    @raise RuntimeError: if iperf3 fails.
    """
    argv = [IPERF3, "-c", LOOPBACK, "-p", str(port), "-t", f"{seconds:g}", "-J"]
    if reverse:
        argv.append("-R")
    for attempt in range(1, BUSY_ATTEMPTS + 1):
        before = {
            name: process_cpu_seconds(pid, tree)
            for name, (pid, tree) in watched.items()
        }
        started = time.monotonic()
        with run.program("iperf3-client", argv) as client:
            status = client.wait(seconds + WAIT)
            wall = time.monotonic() - started
            cpu = {
                name: (process_cpu_seconds(pid, tree) - before[name]) / wall
                for name, (pid, tree) in watched.items()
            }
            try:
                result = json.loads(client.text("out"))
            except ValueError:
                raise RuntimeError(f"iperf3 wrote no JSON\n{client.describe()}")
            error = str(result.get("error", ""))
            if "busy" in error and attempt < BUSY_ATTEMPTS:
                time.sleep(0.5)
                continue
            if error or status != 0:
                raise RuntimeError(f"iperf3 failed: {error}\n{client.describe()}")
        received = result["end"]["sum_received"]
        return {
            "mbit_per_s": received["bits_per_second"] / 1e6,
            "bytes": received["bytes"],
            "seconds": received["seconds"],
            "wall": wall,
            "cpu": cpu,
            "iperf3_cpu_percent": result["end"].get("cpu_utilization_percent", {}),
        }
    raise AssertionError("unreachable: the last attempt returns or raises")


def measure_throughput(
    run: BenchRun,
    ports: dict[str, int],
    watched: dict[str, dict[str, tuple[int, bool]]],
    args: argparse.Namespace,
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """
    Run iperf3 over each path and in each direction, C{args.rounds} times,
    interleaved round by round.

    @param ports: where the iperf3 client connects, by path.
    @param watched: the processes in the middle of each path.
    @return: the samples, by direction and path.
    """
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {
        direction: {path: [] for path in PATHS} for direction in DIRECTIONS
    }
    for round_number in range(1, args.rounds + 1):
        for direction in DIRECTIONS:
            for path in PATHS:
                sample = iperf_sample(
                    run,
                    ports[path],
                    args.seconds,
                    direction == "reverse",
                    watched[path],
                )
                samples[direction][path].append(sample)
                _progress(
                    f"round {round_number}/{args.rounds} {PATH_TITLES[path]},"
                    f" {DIRECTION_TITLES[direction]}:"
                    f" {sample['mbit_per_s']:,.0f} Mbit/s"
                )
    return samples


def _progress(text: str) -> None:
    sys.stderr.write(f"[tcp] {text}\n")
    sys.stderr.flush()


# The whole run


def measure(run: BenchRun, args: argparse.Namespace) -> dict[str, Any]:
    """
    Start everything, measure memory on a fresh edge and agent, then
    throughput.

    @return: the results, as written by C{--json}.
    """
    results: dict[str, Any] = {
        "environment": {
            **environment(),
            "iperf3": program_version([IPERF3, "--version"]),
            "ssh": program_version([SSH, "-V"]),
        },
        "settings": {
            "seconds": args.seconds,
            "rounds": args.rounds,
            "connections": args.connections,
        },
    }

    edge = run.start_edge()
    if args.connections > 0:
        holder = run.start_holder()
        agent, port = run.start_agent("agent-holder", holder.announcement["port"])
        _progress(f"holding {args.connections} connections through the tunnel")
        pids = {"edge": edge.pid, "agent": agent.pid}
        results["memory"] = measure_memory(pids, port, args.connections)
        agent.stop()
        holder.stop()

    if args.rounds > 0:
        _, iperf_port = run.start_iperf_server()
        agent, tunnel_port = run.start_agent("agent-iperf3", iperf_port)
        sshd, sshd_port, key = run.start_sshd()
        ssh, ssh_port, cipher = run.start_ssh_forward(sshd_port, key, iperf_port)
        results["environment"]["ssh_cipher"] = cipher
        ports = {"direct": iperf_port, "tunnelkit": tunnel_port, "ssh": ssh_port}
        watched = {
            "direct": {},
            "tunnelkit": {"edge": (edge.pid, False), "agent": (agent.pid, False)},
            "ssh": {"sshd": (sshd.pid, True), "ssh": (ssh.pid, False)},
        }
        results["throughput"] = measure_throughput(run, ports, watched, args)

    results["summary"] = summarize(results)
    results["targets"] = judge(results)
    return results


# Judging and reporting


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """
    @return: by direction and path, the median, minimum and maximum Mbit/s,
        the ratios of medians to ssh -R and to the direct path, and the
        median CPU share of each process in the middle.
    """
    summary: dict[str, Any] = {}
    for direction, by_path in results.get("throughput", {}).items():
        rates = {
            path: [each["mbit_per_s"] for each in samples]
            for path, samples in by_path.items()
        }
        summary[direction] = {}
        for path, samples in by_path.items():
            names = samples[0]["cpu"] if samples else {}
            summary[direction][path] = {
                "median": median(rates[path]),
                "min": min(rates[path], default=math.nan),
                "max": max(rates[path], default=math.nan),
                "vs_ssh": median(rates[path]) / median(rates["ssh"]),
                "vs_direct": median(rates[path]) / median(rates["direct"]),
                "round_vs_ssh": [
                    own / ssh for own, ssh in zip(rates[path], rates["ssh"])
                ],
                "cpu": {
                    name: median([each["cpu"][name] for each in samples])
                    for name in names
                },
            }
    return summary


def judge(results: dict[str, Any]) -> list[dict[str, Any]]:
    """
    @return: each target with its measured value and whether it is met; a
        target whose part did not run is left out.
    """
    targets = []
    for direction, by_path in results["summary"].items():
        ratio = by_path["tunnelkit"]["vs_ssh"]
        targets.append(
            {
                "name": f"tunnelkit / ssh -R, {DIRECTION_TITLES[direction]}",
                "value": ratio,
                "limit": f">= {TARGET_RATIO:.2f}",
                "pass": ratio >= TARGET_RATIO,
            }
        )
    memory = results.get("memory")
    if memory is not None:
        for side in SIDES:
            value = memory["per_connection"][side]
            targets.append(
                {
                    "name": f"{side} bytes per open connection (RSS)",
                    "value": value,
                    "limit": f"< {TARGET_CONNECTION_BYTES:,}",
                    "pass": value < TARGET_CONNECTION_BYTES,
                }
            )
    return targets


def report(results: dict[str, Any]) -> str:
    """
    @return: the results as text tables.
    """
    env = results["environment"]
    settings = results["settings"]
    lines = [
        "tunnelkit TCP benchmark (loopback)",
        f"Python {env['python']}, Twisted {env['twisted']}, {env['openssl']},"
        f" {env['cpus']} CPUs",
        f"{env['iperf3']}; {env['ssh']}"
        + (f"; ssh cipher {env['ssh_cipher']}" if "ssh_cipher" in env else ""),
    ]

    summary = results["summary"]
    if summary:
        rows = []
        for direction, by_path in summary.items():
            for path, values in by_path.items():
                rows.append(
                    [
                        f"{PATH_TITLES[path]}, {DIRECTION_TITLES[direction]}",
                        f"{values['median']:,.0f}",
                        f"{values['min']:,.0f}",
                        f"{values['max']:,.0f}",
                        "" if path == "ssh" else f"{values['vs_ssh']:.2f}",
                        "" if path == "direct" else f"{values['vs_direct']:.2f}",
                        ", ".join(
                            f"{name} {share:.0%}"
                            for name, share in values["cpu"].items()
                        ),
                    ]
                )
        title = (
            f"iperf3, {settings['rounds']} x {settings['seconds']:g}s"
            " (median Mbit/s)"
        )
        headers = [title, "Mbit/s", "min", "max", "vs ssh -R", "vs direct"]
        lines += ["", render_table([*headers, "CPU in the middle"], rows)]

    memory = results.get("memory")
    if memory is not None:
        readings = memory["readings"]
        count = memory["connections"]
        rows = [
            [
                side,
                _kib(readings["tunnel_up"][side]["rss"]),
                _kib(readings["idle"][side]["rss"]),
                _kib(readings["open"][side]["rss"]),
                _kib(readings["closed"][side]["rss"]),
                f"{memory['per_connection'][side]:,.0f}",
            ]
            for side in SIDES
        ]
        headers = [
            "VmRSS, KiB",
            "tunnel up",
            f"idle (after {memory['warmup_connections']})",
            f"{count:,} open",
            "closed again",
        ]
        lines += ["", render_table([*headers, "B/connection"], rows)]
        if not memory["all_closed"]:
            lines.append(
                f"the connections were not all gone {WAIT:g}s after closing them"
            )

    targets = results["targets"]
    if targets:
        rows = [
            [
                target["name"],
                (
                    f"{target['value']:.2f}"
                    if target["value"] < 10
                    else f"{target['value']:,.0f}"
                ),
                target["limit"],
                "PASS" if target["pass"] else "FAIL",
            ]
            for target in targets
        ]
        lines += ["", render_table(["target", "measured", "limit", "result"], rows)]
    return "\n".join(lines)


def _kib(value: int) -> str:
    return f"{value / 1024:,.0f}"


# Command line


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """
    @param argv: the arguments, or C{None} for the command line's.
    @return: the options, checked.
    """
    parser = argparse.ArgumentParser(
        description="iperf3 through a tunnelkit TCP tunnel, through ssh -R and"
        " directly on loopback, and the edge's and agent's memory per open"
        " connection."
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="per iperf3 run")
    parser.add_argument(
        "--rounds", type=int, default=3, help="iperf3 runs per path and direction"
    )
    parser.add_argument(
        "--connections", type=int, default=1000, help="held open for the memory part"
    )
    parser.add_argument("--json", metavar="PATH", help="also write results here")
    parser.add_argument(
        "--strict", action="store_true", help="exit with 1 when a target is missed"
    )
    parser.add_argument("--role", choices=["parent", "holder"], default="parent")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.rounds < 0 or args.connections < 0:
        parser.error("--seconds must be positive, --rounds and --connections >= 0")
    return args


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_parent(args: argparse.Namespace) -> int:
    """
    Start everything, measure, report; every program is stopped on every
    way out, and the temporary directory removed.

    @return: the exit status.
    """
    missing = missing_programs()
    if missing:
        sys.stderr.write(f"[tcp] missing programs; install them: {missing}\n")
        return 2
    allow_open_files(2 * args.connections + 512)
    for name in ("SIGTERM", "SIGHUP"):
        signal.signal(getattr(signal, name), _interrupt)
    try:
        with tempfile.TemporaryDirectory(prefix="tunnelkit-bench-tcp-") as directory:
            with contextlib.ExitStack() as stack:
                results = measure(BenchRun(directory, stack), args)
    except KeyboardInterrupt:
        sys.stderr.write("[tcp] interrupted; every program it started is stopped\n")
        return 130
    except (RuntimeError, OSError) as error:
        sys.stderr.write(f"[tcp] failed: {error}\n")
        return 2

    sys.stdout.write(report(results) + "\n")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as output:
            json.dump(results, output, indent=2)
    if args.strict and not all(target["pass"] for target in results["targets"]):
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run as the measuring parent or, with C{--role holder}, as its holder.

    @return: the exit status: 0 when the run completed, 1 when C{--strict}
        and a target was missed, 2 when the run failed, 130 when it was
        interrupted.
    """
    args = parse_args(argv)
    if args.role == "holder":
        return run_holder()
    return run_parent(args)


if __name__ == "__main__":
    sys.exit(main())
