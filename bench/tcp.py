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
import json
import math
import os
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    import _script  # noqa: F401  (run as a script: see bench/_script.py)

from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from bench._common import (
    LOOPBACK,
    SSH,
    SSH_INSTALL,
    WAIT,
    BenchRun,
    Program,
    SinkProcess,
    allow_open_files,
    announce,
    begin_logging,
    environment,
    median,
    open_file_count,
    process_cpu_seconds,
    program_version,
    progress,
    render_table,
    render_targets,
    resident_bytes,
    run_benchmark,
    stop_when_parent_goes,
)
from tests.e2e import TUNNELKIT, free_port, tcp_url_port

_log = Logger()

# The targets from the issue that asked for this benchmark.
TARGET_RATIO = 1.00
TARGET_CONNECTION_BYTES = 35_000

TOKEN = "bench-tcp-0123456789"
"""The authtoken the benchmark's edge accepts and its agents present."""

GREETING = b"+"
"""What the holder writes on each connection it accepts."""

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
INSTALL = {IPERF3: "apt-get install -y iperf3", **SSH_INSTALL}

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


class TcpRun(BenchRun):
    """
    A run of this benchmark: L{BenchRun} with the holder, C{tunnelkit tcp}
    agents and the iperf3 server.
    """

    def start_holder(self) -> SinkProcess:
        """
        Start this file as C{--role holder}.

        @return: the holder; its C{announcement} has its C{port}.
        """
        argv = [sys.executable, str(Path(__file__).resolve()), "--role=holder"]
        return self.stack.enter_context(SinkProcess(argv, start_timeout=WAIT))

    def start_agent(self, name: str, local_port: int) -> tuple[Program, int]:
        """
        Start C{tunnelkit tcp LOCAL_PORT} against the edge, as its own
        process, logging JSON lines.

        @param name: names the program and its config file.
        @return: the agent and the public port of its tunnel.
        """
        config = self.agent_config(f"{name}.yml")
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
    run: TcpRun,
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
    run: TcpRun,
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
                progress(
                    "tcp",
                    f"round {round_number}/{args.rounds} {PATH_TITLES[path]},"
                    f" {DIRECTION_TITLES[direction]}:"
                    f" {sample['mbit_per_s']:,.0f} Mbit/s",
                )
    return samples


# The whole run


def measure(run: TcpRun, args: argparse.Namespace) -> dict[str, Any]:
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
        progress("tcp", f"holding {args.connections} connections through the tunnel")
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
        lines += ["", render_targets(targets)]
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


def run_parent(args: argparse.Namespace) -> int:
    """
    Start everything, measure, report; every program is stopped on every
    way out, and the temporary directory removed.

    @return: the exit status, as L{run_benchmark} says.
    """
    allow_open_files(2 * args.connections + 512)
    return run_benchmark(
        "tcp",
        lambda directory, stack: measure(TcpRun(directory, stack, TOKEN), args),
        report,
        INSTALL,
        args.json,
        args.strict,
    )


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
