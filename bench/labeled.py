"""
The labeled-tunnel benchmark: wrk against nginx through one HTTPS edge of
C{edge.yml} whose two routes end in tunnel groups, one of a single labeled
tunnel and one of three (three agents), side by side in one run on
loopback.

Run C{python bench/labeled.py [--seconds 5] [--rounds 3] [--json out.json]}.
Both rows go through the same edge, TLS, route matching and balancing code;
they differ only in how many tunnels (and agent processes) the group
spreads connections over. The target: the three-tunnel rate is at least
the one-tunnel rate, so load balancing adds no visible cost.
"""

from __future__ import annotations

if __package__ in (None, ""):
    import _script  # noqa: F401  (run as a script: see bench/_script.py)

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import IO, Any

from bench.http import NGINX, SMALL_BODY, WRK, nginx_config
from tests.e2e import LOOPBACK, TUNNELKIT, free_port

TOKEN = "bench-labeled-0123456789"
"""The authtoken of the benchmark's agents."""

HOST = "localhost"
"""The HTTPS edge's host name: one wrk resolves and sends as SNI, and one
the certificate the edge generates covers."""

ROWS = {"one": (1, 1), "shared": (1, 3), "three": (3, 1)}
"""Each row's route (and label), and how many agents serve it with how many
tunnels each: one tunnel; three tunnels of one agent, over one session;
three agents of one tunnel each."""

WAIT = 30.0
"""Seconds any program has to start."""


class Programs:
    """
    The run's child processes, stopped (SIGTERM, then SIGKILL) on the way
    out, their output in files of the run's directory.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.running: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]] = []

    def start(self, name: str, argv: list[str]) -> str:
        """
        Start a program in the run's directory, which is also its C{HOME}.

        @return: the file its standard output and error go to.
        """
        path = os.path.join(self.directory, f"{name}.log")
        output = open(path, "wb")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
            "HOME": self.directory,
            "LANG": "C.UTF-8",
        }
        child = subprocess.Popen(
            argv, stdout=output, stderr=subprocess.STDOUT, env=env, cwd=self.directory
        )
        self.running.append((name, child, output))
        return path

    def stop(self) -> None:
        """
        Stop every program, the last started first.
        """
        for _, child, output in reversed(self.running):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
                try:
                    child.wait(10)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
            output.close()
        self.running.clear()


def wait_for(path: str, pattern: str, seconds: float = WAIT) -> re.Match[str]:
    """
    Wait until a program's output has a line matching C{pattern}.

    @raise RuntimeError: when the time runs out, with the output so far.
    """
    deadline = time.monotonic() + seconds
    compiled = re.compile(pattern, re.MULTILINE)
    while True:
        with open(path, encoding="utf-8", errors="replace") as output:
            text = output.read()
        found = compiled.search(text)
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"no line matching {pattern!r} in {path}:\n{text[-2000:]}"
            )
        time.sleep(0.05)


def edge_config(directory: str) -> str:
    """
    @return: the text of the edge's C{edge.yml}: an HTTPS edge for
        L{HOST} whose route C{/NAME/} ends in the tunnel group
        C{bench=NAME}, for each row.
    """
    routes = "".join(
        f"      - match: /{name}/\n"
        f"        backend: {{type: tunnel_group, labels: {{bench: {name}}}}}\n"
        for name in ROWS
    )
    return (
        "version: 1\n"
        f'agent_listener: "tcp:0:interface={LOOPBACK}"\n'
        f'https_listener: "tcp:0:interface={LOOPBACK}"\n'
        "domain: tunnels.test\n"
        f"state_dir: {json.dumps(os.path.join(directory, 'state'))}\n"
        "authtokens:\n"
        f"  - {{name: bench, token: {TOKEN}, labels: ['bench=*']}}\n"
        "edges:\n"
        "  bench:\n"
        "    type: https\n"
        f"    hostports: [{HOST}]\n"
        "    routes:\n" + routes
    )


def start(programs: Programs, directory: str) -> int:
    """
    Start nginx, the edge and the agents of every row.

    @return: the edge's HTTPS port.
    """
    root = os.path.join(directory, "root")
    for name in ROWS:
        os.makedirs(os.path.join(root, name))
        with open(os.path.join(root, name, "small.txt"), "wb") as small:
            small.write(SMALL_BODY)
    nginx_port = free_port()
    conf = os.path.join(directory, "nginx.conf")
    os.makedirs(os.path.join(directory, "nginx-temp"))
    with open(conf, "w", encoding="utf-8") as output:
        output.write(nginx_config(directory, root, nginx_port))
    programs.start("nginx", [NGINX, "-c", conf, "-p", directory])

    config = os.path.join(directory, "edge.yml")
    with open(config, "w", encoding="utf-8") as output:
        output.write(edge_config(directory))
    edge_log = programs.start("edge", TUNNELKIT + ["edge", "--config", config])
    agents = wait_for(edge_log, r"listening for agents on [0-9.]+:([0-9]+)")
    https = wait_for(edge_log, r"serving https on [0-9.]+:([0-9]+)")
    ca = os.path.join(directory, "state", "ca.pem")
    agent_config = os.path.join(directory, "agent.yml")
    with open(agent_config, "w", encoding="utf-8") as output:
        output.write(
            'version: "2"\n'
            f'server_addr: "{LOOPBACK}:{agents.group(1)}"\n'
            f"root_cas: {json.dumps(ca)}\n"
            f"authtoken: {TOKEN}\n"
        )
    for name, (agents_count, tunnels) in ROWS.items():
        for index in range(agents_count):
            config = os.path.join(directory, f"agent-{name}-{index}.yml")
            shutil.copy(agent_config, config)
            with open(config, "a", encoding="utf-8") as output:
                output.write("tunnels:\n")
                for number in range(tunnels):
                    output.write(
                        f"  t{number}: {{labels: [bench={name}], addr:"
                        f" {nginx_port}, inspect: false}}\n"
                    )
            log = programs.start(
                f"agent-{name}-{index}",
                TUNNELKIT + ["start", "--all", "--config", config],
            )
            wait_for(log, r"^Forwarding\s+labels")
    return int(https.group(1))


def wrk(port: int, name: str, seconds: int, connections: int) -> dict[str, Any]:
    """
    Run wrk once against a row's route.

    @return: its requests per second and error counts.
    @raise RuntimeError: when wrk fails or counts errors.
    """
    url = f"https://{HOST}:{port}/{name}/small.txt"
    argv = [WRK, "-t", "2", "-c", str(connections), "-d", f"{seconds}s", url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + WAIT)
    text = done.stdout
    rate = re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.MULTILINE)
    if done.returncode != 0 or rate is None:
        raise RuntimeError(f"wrk failed:\n{text}\n{done.stderr}")
    problems = re.findall(
        r"^\s*(Non-2xx or 3xx responses: \d+|Socket errors: .*)$", text, re.MULTILINE
    )
    if problems:
        raise RuntimeError(f"wrk counted errors for /{name}/: {problems}\n{text}")
    return {"requests_per_s": float(rate.group(1))}


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the benchmark and print its table.

    @return: the exit status: 0, or 1 with C{--strict} when the target is
        missed.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5, help="each wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each row")
    parser.add_argument("--connections", type=int, default=50, help="wrk's -c")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--strict", action="store_true", help="exit 1 on a miss")
    args = parser.parse_args(argv)
    for program in (NGINX, WRK):
        if shutil.which(program) is None:
            sys.stderr.write(f"needs {program}; install it first\n")
            return 2

    directory = tempfile.mkdtemp(prefix="tunnelkit-bench-labeled-")
    programs = Programs(directory)
    samples: dict[str, list[float]] = {name: [] for name in ROWS}
    try:
        port = start(programs, directory)
        for name in ROWS:
            wrk(port, name, 1, args.connections)
        for round_number in range(args.rounds):
            order = list(ROWS) if round_number % 2 == 0 else list(ROWS)[::-1]
            for name in order:
                sample = wrk(port, name, args.seconds, args.connections)
                samples[name].append(sample["requests_per_s"])
    finally:
        programs.stop()
        shutil.rmtree(directory, ignore_errors=True)

    medians = {
        name: sorted(values)[len(values) // 2] for name, values in samples.items()
    }
    ratio = medians["three"] / medians["one"]
    shared = medians["shared"] / medians["one"]
    met = ratio >= 1.0
    lines = [
        f"small responses ({len(SMALL_BODY)} B body), {args.connections}"
        f" connections, HTTPS edge, {args.rounds} x {args.seconds} s",
        "",
        f"{'tunnels':<28}{'requests/s (median)':>22}{'min':>10}{'max':>10}",
    ]
    for name, (agents_count, tunnels) in ROWS.items():
        values = samples[name]
        plural = "s" if agents_count > 1 else ""
        label = f"{agents_count * tunnels} ({agents_count} agent{plural})"
        lines.append(
            f"{label:<28}{medians[name]:>22.0f}{min(values):>10.0f}{max(values):>10.0f}"
        )
    lines += [
        "",
        f"3 agents / 1 tunnel = {ratio:.2f} (target >= 1.00:"
        f" {'met' if met else 'missed'})",
        f"3 tunnels of 1 agent / 1 tunnel = {shared:.2f}",
    ]
    print("\n".join(lines))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as output:
            results = {"samples": samples, "medians": medians, "ratio": ratio}
            json.dump(results, output)
    return 1 if args.strict and not met else 0


if __name__ == "__main__":
    sys.exit(main())
