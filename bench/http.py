"""
The HTTP benchmark: wrk against nginx through a tunnelkit HTTP tunnel,
through C{ssh -R} and directly, side by side in one run on loopback.

Run C{python bench/http.py [--seconds 5] [--rounds 3] [--json out.json]}; see
C{bench/README.md} for what each number means. The tunnelkit path has one
row per entry of L{VARIANTS}: the same edge, and an agent started with that
entry's extra flags.
"""

from __future__ import annotations

import sys

if __package__ in (None, ""):
    import _script  # noqa: F401  (run as a script: see bench/_script.py)

import argparse
import http.client
import json
import os
import re
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from bench._common import (
    LOOPBACK,
    SSH,
    SSH_INSTALL,
    WAIT,
    BenchRun,
    Program,
    environment,
    median,
    process_cpu_seconds,
    program_version,
    progress,
    render_table,
    render_targets,
    run_benchmark,
)
from tests.e2e import TUNNELKIT, free_port, write_file

# The targets from the issues that asked for this benchmark.
TARGET_SMALL_RATIO = 1.20
TARGET_LARGE_RATIO = 1.00
TARGET_LATENCY_RATIO = 1.00
TARGET_INSPECTED_SMALL_RATIO = 1.00
"""Small responses with inspection on: at least ssh -R's rate."""

TOKEN = "bench-http-0123456789"
"""The authtoken the benchmark's edge accepts and its agents present."""

DOMAIN = "tunnels.test"
"""The edge's domain: tunnels are named C{NAME.tunnels.test}, a name that
never resolves, so wrk connects to the edge by address and sends the name in
the C{Host} header."""

SMALL_BODY = (b"tunnelkit HTTP benchmark, small response. " * 3)[:99] + b"\n"
LARGE_SIZE = 1 << 20

EDGE_HTTP_LINE = r"tunnelkit edge serving http on ([0-9.]+):([0-9]+)"
AGENT_FORWARDING_LINE = r"^Forwarding\s+(http://\S+) -> (\S+)$"

EDGE_HTTP_GRACE = 5.0
"""Seconds the edge has, once it listens for agents, to say where it serves
HTTP."""

NGINX_ATTEMPTS = 3
"""Tries to start nginx, each on a newly picked port, when another program
took the port between picking and binding."""

WRK_TIMEOUT = "10s"
"""How long wrk waits for a response before counting a timeout."""

WRK_MARK = "WRK_RESULT "
WRK_SCRIPT = """\
-- Prints what wrk measured as one line of JSON once the run is done.
done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    "WRK_RESULT {\\"duration_us\\": %.0f, \\"requests\\": %.0f, \\"bytes\\": %.0f,"
      .. " \\"connect\\": %.0f, \\"read\\": %.0f, \\"write\\": %.0f,"
      .. " \\"status\\": %.0f, \\"timeout\\": %.0f, \\"p50_us\\": %.0f,"
      .. " \\"p99_us\\": %.0f, \\"mean_us\\": %.1f, \\"max_us\\": %.0f}\\n",
    summary.duration, summary.requests, summary.bytes,
    errors.connect, errors.read, errors.write, errors.status, errors.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean, latency.max))
end
"""

NGINX = "/usr/sbin/nginx"
WRK = "wrk"
INSTALL = {
    NGINX: "apt-get install -y nginx",
    WRK: "apt-get install -y wrk",
    **SSH_INSTALL,
}

DIRECT = "direct"
SSH_R = "ssh -R"


@dataclass(frozen=True)
class Case:
    """
    One load wrk puts on each path.

    @ivar name: its name for C{--cases} and in the JSON results.
    @ivar title: its name in the tables.
    @ivar path: the URL path of the file requested.
    @ivar connections: open connections, each with one request in flight.
    @ivar threads: wrk's threads.
    @ivar latency: whether the table shows latency percentiles.
    """

    name: str
    title: str
    path: str
    connections: int
    threads: int
    latency: bool = False


CASES = (
    Case(
        "small",
        f"small responses ({len(SMALL_BODY)} B body), 50 connections",
        "/small.txt",
        50,
        2,
    ),
    Case("large", "1 MiB responses, 10 connections", "/large.bin", 10, 2),
    Case(
        "latency", "one connection, small responses", "/small.txt", 1, 1, latency=True
    ),
)


@dataclass(frozen=True)
class Variant:
    """
    A row of the tunnelkit path: its own agent, against the one edge.

    @ivar title: the row's name in the tables.
    @ivar flags: added to C{tunnelkit http PORT --scheme http --config FILE}.
    @ivar fallback: the flags to use instead when the agent rejects one of
        C{flags} (an option it does not have yet), noted in the table; or
        C{None} to fail the row then.
    @ivar judged: whether the targets apply to the row.
    @ivar small_ratio: the small responses' target, as a multiple of ssh
        -R's rate.
    @ivar judged_cases: the cases whose targets apply to the row.
    """

    title: str
    flags: tuple[str, ...] = ()
    fallback: tuple[str, ...] | None = None
    judged: bool = True
    small_ratio: float = TARGET_SMALL_RATIO
    judged_cases: tuple[str, ...] = ("small", "large", "latency")


VARIANTS = (
    Variant("tunnelkit (inspection off)", ("--inspect", "false"), fallback=()),
    Variant(
        "tunnelkit (inspection on)",
        ("--inspect", "true"),
        small_ratio=TARGET_INSPECTED_SMALL_RATIO,
        judged_cases=("small",),
    ),
)


class RowFailed(RuntimeError):
    """
    A row of the tables could not be set up or measured.

    @ivar line: why, in one line.
    @ivar detail: everything known about it, with the programs' output.
    """

    def __init__(self, line: str, detail: str) -> None:
        super().__init__(line)
        self.line = line
        self.detail = detail


@dataclass
class Route:
    """
    A way from wrk to nginx: one row of each table.

    @ivar title: its name in the tables and the JSON results.
    @ivar kind: C{"direct"}, C{"ssh"} or C{"tunnelkit"}.
    @ivar port: where wrk connects on loopback.
    @ivar host: the C{Host} header wrk sends, or C{None} for wrk's own.
    @ivar watched: the processes in the middle, by name: the process id and
        whether to count its descendants too.
    @ivar flags: the agent's extra flags, for tunnelkit rows.
    @ivar notes: how the row differs from what its title says.
    @ivar failure: why the row could not be measured, in one line.
    @ivar detail: the whole story of the failure, with the programs' output.
    @ivar judged: whether the targets apply to the row.
    @ivar small_ratio: its small responses' target, as for L{Variant}.
    @ivar judged_cases: the cases whose targets apply to it.
    """

    title: str
    kind: str
    port: int = 0
    host: str | None = None
    watched: dict[str, tuple[int, bool]] = field(default_factory=dict)
    flags: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)
    failure: str | None = None
    detail: str = ""
    judged: bool = False
    small_ratio: float = TARGET_SMALL_RATIO
    judged_cases: tuple[str, ...] = ()

    def fail(self, error: RowFailed) -> None:
        """
        Take the row out of the run.
        """
        self.failure = error.line
        self.detail = error.detail

    def to_json(self) -> dict[str, Any]:
        """
        @return: what the JSON results say about the row.
        """
        return {
            "kind": self.kind,
            "port": self.port,
            "host": self.host,
            "watched": sorted(self.watched),
            "flags": list(self.flags),
            "notes": self.notes,
            "failure": self.failure,
            "detail": self.detail,
        }


# Starting the programs


class HttpRun(BenchRun):
    """
    A run of this benchmark: L{BenchRun} with nginx, an edge serving HTTP
    and C{tunnelkit http} agents.

    @ivar files: what nginx serves, by URL path.
    @ivar wrk_script: the Lua script that makes wrk print its results as
        JSON.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.files: dict[str, bytes] = {}
        self.wrk_script = write_file(
            os.path.join(self.directory, "report.lua"), WRK_SCRIPT
        )

    def start_nginx(self) -> tuple[Program, int]:
        """
        Start nginx on loopback with a config of its own in the run's
        directory: one process in the foreground, no access log, serving a
        small file and a 1 MiB one.

        @return: nginx, answering on its port.
        """
        root = os.path.join(self.directory, "www")
        os.makedirs(root)
        os.makedirs(os.path.join(self.directory, "nginx-temp"))
        self.files = {"/small.txt": SMALL_BODY, "/large.bin": os.urandom(LARGE_SIZE)}
        for name, body in self.files.items():
            with open(os.path.join(root, name.lstrip("/")), "wb") as output:
                output.write(body)
        for attempt in range(1, NGINX_ATTEMPTS + 1):
            port = free_port()
            config = write_file(
                os.path.join(self.directory, "nginx.conf"),
                nginx_config(self.directory, root, port),
            )
            error_log = os.path.join(self.directory, "nginx-error.log")
            argv = [NGINX, "-p", self.directory + "/", "-c", config, "-e", error_log]
            nginx = self.start("nginx", argv)
            if wait_for_port(nginx, port, WAIT):
                return nginx, port
            if "Address already in use" not in nginx.text("err"):
                break
        raise RuntimeError(f"nginx did not start\n{nginx.describe()}")

    def start_http_edge(self) -> tuple[Program, int]:
        """
        Start the edge with an HTTP listener on loopback and L{DOMAIN}.

        @return: the edge and the port it serves HTTP on.
        @raise RuntimeError: if it does not start or does not serve HTTP.
        """
        edge = self.start_edge(
            {
                "http_listener": json.dumps(f"tcp:0:interface={LOOPBACK}"),
                "domain": DOMAIN,
            }
        )
        found = edge.wait_for_line(EDGE_HTTP_LINE, EDGE_HTTP_GRACE, "out")
        return edge, int(found.group(2))

    def start_http_agent(
        self, variant: Variant, upstream_port: int, number: int
    ) -> tuple[Program, str, tuple[str, ...], list[str]]:
        """
        Start C{tunnelkit http UPSTREAM_PORT --scheme http} with the
        variant's flags, or its fallback flags if it rejects them.

        @param number: numbers the program and its config file.
        @return: the agent, the host (and port) of its public URL, the
            flags it runs with, and notes on how that differs from the
            variant.
        @raise RowFailed: if no tunnel started.
        """
        name = f"agent-{number}"
        config = self.agent_config(f"{name}.yml")
        command = [*TUNNELKIT, "http", str(upstream_port), "--scheme", "http"]
        command += ["--config", config]
        flags, notes = variant.flags, []
        agent = self.start(name, [*command, *flags])
        try:
            try:
                found = agent.wait_for_line(AGENT_FORWARDING_LINE, WAIT, "out")
            except RuntimeError:
                if variant.fallback is None or not rejected(agent, variant.flags):
                    raise
                flags = variant.fallback
                notes.append(
                    f"the agent rejected {' '.join(variant.flags)}; this row ran"
                    f" with {' '.join(flags) or 'no extra flags'}"
                )
                agent = self.start(name, [*command, *flags])
                found = agent.wait_for_line(AGENT_FORWARDING_LINE, WAIT, "out")
        except RuntimeError as error:
            raise RowFailed(
                f"no tunnel from `tunnelkit http`: {last_words(agent)}", str(error)
            ) from None
        return agent, urlsplit(found.group(1)).netloc, flags, notes


def nginx_config(directory: str, root: str, port: int) -> str:
    """
    @param directory: where nginx keeps its pid file, error log and
        temporary files.
    @param root: the folder it serves.
    @param port: its loopback port.
    @return: the text of C{nginx.conf}.
    """

    def quoted(path: str) -> str:
        return json.dumps(path)

    temporary = {
        kind: quoted(os.path.join(directory, "nginx-temp", kind))
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    }
    return f"""\
# One process in the foreground that the benchmark starts and stops; nothing
# written outside the run's directory.
daemon off;
master_process off;
pid {quoted(os.path.join(directory, "nginx.pid"))};
error_log {quoted(os.path.join(directory, "nginx-error.log"))} warn;

events {{
    worker_connections 1024;
}}

http {{
    access_log off;
    client_body_temp_path {temporary["client_body"]};
    proxy_temp_path {temporary["proxy"]};
    fastcgi_temp_path {temporary["fastcgi"]};
    uwsgi_temp_path {temporary["uwsgi"]};
    scgi_temp_path {temporary["scgi"]};
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    # wrk keeps its connections for the whole run; nginx closes one after
    # 1,000 requests by default.
    keepalive_requests 100000000;
    keepalive_timeout 300s;

    server {{
        listen {LOOPBACK}:{port};
        root {quoted(root)};
    }}
}}
"""


def wait_for_port(program: Program, port: int, timeout: float) -> bool:
    """
    Wait until C{port} on loopback accepts a connection.

    @return: C{True} once it does; C{False} if C{program} ended first.
    @raise RuntimeError: if the time runs out.
    """
    deadline = time.monotonic() + timeout
    while program.exit_status() is None:
        try:
            socket.create_connection((LOOPBACK, port), 1.0).close()
            return True
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{program.name} did not listen on port {port} within"
                    f" {timeout:g}s\n{program.describe()}"
                ) from None
            time.sleep(0.05)
    return False


def rejected(agent: Program, flags: Sequence[str]) -> bool:
    """
    @return: whether the agent ended with an error naming one of the
        options among C{flags}.
    """
    status = agent.exit_status()
    if status is None or status == 0:
        return False
    said = agent.text("err") + agent.text("out")
    return any(flag.startswith("-") and flag in said for flag in flags)


def last_words(program: Program) -> str:
    """
    @return: the last line C{program} wrote that starts with C{ERROR}, else
        its last line, preferring its standard error: why it failed, in
        one line.
    """
    for stream in ("err", "out"):
        lines = [line for line in program.text(stream).splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("ERROR")]
        if errors or lines:
            return (errors or lines)[-1].strip()
    status = program.exit_status()
    return "still running" if status is None else f"exit status {status}"


# Setting up the paths


def start_ssh_route(run: HttpRun, upstream_port: int, env: dict[str, Any]) -> Route:
    """
    Start a private C{sshd} and C{ssh -R} to nginx.

    @param env: the run's environment, where the cipher is noted.
    @return: the row, failed if the forward did not come up.
    """
    route = Route(SSH_R, "ssh")
    try:
        sshd, sshd_port, key = run.start_sshd()
        ssh, port, cipher = run.start_ssh_forward(sshd_port, key, upstream_port)
    except RuntimeError as error:
        route.fail(RowFailed("ssh -R did not come up", str(error)))
        return route
    env["ssh_cipher"] = cipher
    route.port = port
    route.watched = {"sshd": (sshd.pid, True), "ssh": (ssh.pid, False)}
    return route


def start_tunnelkit_routes(run: HttpRun, upstream_port: int) -> list[Route]:
    """
    Start the edge and one agent per entry of L{VARIANTS}.

    @return: a row per variant, failed where its tunnel did not come up.
    """
    routes = [
        Route(
            variant.title,
            "tunnelkit",
            flags=variant.flags,
            judged=variant.judged,
            small_ratio=variant.small_ratio,
            judged_cases=variant.judged_cases,
        )
        for variant in VARIANTS
    ]
    try:
        edge, http_port = run.start_http_edge()
    except RuntimeError as error:
        failed = RowFailed(
            "the edge did not say 'tunnelkit edge serving http on HOST:PORT'",
            str(error),
        )
        for route in routes:
            route.fail(failed)
        return routes
    for number, (variant, route) in enumerate(zip(VARIANTS, routes), start=1):
        try:
            agent, host, flags, notes = run.start_http_agent(
                variant, upstream_port, number
            )
        except RowFailed as error:
            route.fail(error)
            continue
        route.port, route.host, route.flags, route.notes = http_port, host, flags, notes
        route.watched = {"edge": (edge.pid, False), "agent": (agent.pid, False)}
    return routes


def check_route(route: Route, files: dict[str, bytes]) -> None:
    """
    Fetch each file once through the row's path and compare it with what
    nginx serves, so that a path answering with something else (an error
    page, for one) is not measured.

    @raise RowFailed: if an answer differs.
    """
    for path, body in files.items():
        connection = http.client.HTTPConnection(LOOPBACK, route.port, timeout=WAIT)
        try:
            connection.request("GET", path, headers=_host_header(route))
            response = connection.getresponse()
            status, answer = response.status, response.read()
        except (OSError, http.client.HTTPException) as error:
            raise RowFailed(f"GET {path} failed: {error}", repr(error)) from None
        finally:
            connection.close()
        if status != 200 or answer != body:
            text = answer[:300].decode("utf-8", "replace")
            raise RowFailed(
                f"GET {path} answered {status} with {len(answer):,} bytes, not"
                f" 200 with the file's {len(body):,}",
                f"the first bytes of the answer: {text!r}",
            )


def _host_header(route: Route) -> dict[str, str]:
    return {} if route.host is None else {"Host": route.host}


# Load


def wrk_sample(
    run: HttpRun, case: Case, route: Route, seconds: int, upstream_pid: int
) -> dict[str, Any]:
    """
    Run wrk once through the row's path and check what it saw.

    @param seconds: how long wrk runs.
    @param upstream_pid: nginx, whose CPU share is recorded too.
    @return: the sample: requests, bytes and errors wrk counted, rates,
        latency percentiles, and each watched process's CPU time as a
        share of wrk's run.
    @raise RowFailed: if wrk failed, counted a socket error or an error
        status, or the responses were shorter than the file.
    """
    argv = [WRK, "-t", str(case.threads), "-c", str(case.connections)]
    argv += ["-d", f"{seconds}s", "--timeout", WRK_TIMEOUT, "-s", run.wrk_script]
    if case.latency:
        argv.append("--latency")
    for name, value in _host_header(route).items():
        argv += ["-H", f"{name}: {value}"]
    argv.append(f"http://{LOOPBACK}:{route.port}{case.path}")
    watched = {**route.watched, "nginx": (upstream_pid, False)}

    before = {name: process_cpu_seconds(*each) for name, each in watched.items()}
    started = time.monotonic()
    with run.program("wrk", argv) as client:
        status = client.wait(seconds + WAIT)
        wall = time.monotonic() - started
        cpu = {
            name: (process_cpu_seconds(*each) - before[name]) / wall
            for name, each in watched.items()
        }
        found = re.search(f"^{WRK_MARK}(.*)$", client.text("out"), re.MULTILINE)
        if status != 0 or found is None:
            raise RowFailed(f"wrk failed (exit status {status})", client.describe())
        counted = json.loads(found.group(1))
        problem = wrk_problem(counted, len(run.files[case.path]))
        if problem is not None:
            raise RowFailed(problem, client.describe())

    duration = counted["duration_us"] / 1e6
    return {
        "requests": counted["requests"],
        "bytes": counted["bytes"],
        "seconds": duration,
        "requests_per_s": counted["requests"] / duration,
        "mb_per_s": counted["bytes"] / duration / 1e6,
        "bytes_per_response": counted["bytes"] / counted["requests"],
        "errors": {
            kind: counted[kind]
            for kind in ("connect", "read", "write", "timeout", "status")
        },
        "latency_ms": {
            kind: counted[f"{kind}_us"] / 1000 for kind in ("p50", "p99", "mean", "max")
        },
        "wall": wall,
        "cpu": {name: share for name, share in cpu.items() if name != "nginx"},
        "upstream_cpu": cpu["nginx"],
    }


def wrk_problem(counted: dict[str, Any], body_size: int) -> str | None:
    """
    @param counted: what wrk's script printed.
    @param body_size: the size of the file requested.
    @return: what makes the sample worthless, or C{None}: socket errors,
        responses with an error status (wrk counts 400 and above), none at
        all, or responses shorter than the file (not the file, then).
    """
    sockets = {kind: counted[kind] for kind in ("connect", "read", "write", "timeout")}
    if any(sockets.values()):
        listed = ", ".join(f"{kind} {count:,}" for kind, count in sockets.items())
        return f"wrk counted socket errors: {listed}"
    if counted["status"]:
        return (
            f"{counted['status']:,} of {counted['requests']:,} responses had an"
            " error status"
        )
    if not counted["requests"]:
        return "no response completed"
    average = counted["bytes"] / counted["requests"]
    if average < body_size:
        return (
            f"responses averaged {average:,.0f} bytes, less than the file's"
            f" {body_size:,}"
        )
    return None


def measure_rounds(
    run: HttpRun,
    routes: list[Route],
    cases: Sequence[Case],
    args: argparse.Namespace,
    upstream_pid: int,
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """
    Warm each path up, then run wrk for every case over every path,
    C{args.rounds} times, interleaved round by round. A row whose sample
    fails is taken out of the run.

    @return: the samples, by case and row.
    """
    if args.warmup:
        for route in _live(routes):
            try:
                wrk_sample(run, CASES[0], route, args.warmup, upstream_pid)
            except RowFailed as error:
                route.fail(RowFailed(f"warm-up: {error.line}", error.detail))
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {
        case.name: {route.title: [] for route in routes} for case in cases
    }
    for round_number in range(1, args.rounds + 1):
        for case in cases:
            for route in _live(routes):
                try:
                    sample = wrk_sample(run, case, route, args.seconds, upstream_pid)
                except RowFailed as error:
                    route.fail(
                        RowFailed(
                            f"round {round_number}, {case.name}: {error.line}",
                            error.detail,
                        )
                    )
                    progress("http", f"{route.title} failed: {route.failure}")
                    continue
                samples[case.name][route.title].append(sample)
                progress(
                    "http",
                    f"round {round_number}/{args.rounds} {case.name},"
                    f" {route.title}: {sample['requests_per_s']:,.0f} requests/s,"
                    f" p50 {sample['latency_ms']['p50']:.3f} ms",
                )
    return samples


def _live(routes: list[Route]) -> list[Route]:
    return [route for route in routes if route.failure is None]


# The whole run


def measure(run: HttpRun, args: argparse.Namespace) -> dict[str, Any]:
    """
    Start nginx and every path to it, check that each path serves the
    files, then measure.

    @return: the results, as written by C{--json}.
    """
    cases = [case for case in CASES if case.name in args.cases]
    results: dict[str, Any] = {
        "environment": {
            **environment(),
            "nginx": program_version([NGINX, "-v"]),
            "wrk": program_version([WRK, "--version"]).split(" Copyright")[0],
            "ssh": program_version([SSH, "-V"]),
        },
        "settings": {
            "seconds": args.seconds,
            "rounds": args.rounds,
            "warmup": args.warmup,
            "cases": {
                case.name: {
                    "path": case.path,
                    "connections": case.connections,
                    "threads": case.threads,
                }
                for case in cases
            },
        },
    }

    nginx, nginx_port = run.start_nginx()
    routes = [Route(DIRECT, "direct", port=nginx_port)]
    routes.append(start_ssh_route(run, nginx_port, results["environment"]))
    routes += start_tunnelkit_routes(run, nginx_port)
    for route in _live(routes):
        try:
            check_route(route, run.files)
        except RowFailed as error:
            route.fail(error)
    if routes[0].failure is not None:
        raise RuntimeError(f"nginx does not serve its files: {routes[0].failure}")

    samples = measure_rounds(run, routes, cases, args, nginx.pid)
    results["routes"] = {route.title: route.to_json() for route in routes}
    results["samples"] = samples
    results["summary"] = summarize(samples, routes)
    results["targets"] = judge(results["summary"], routes)
    results["failures"] = [
        f"{route.title}: {route.failure}\n{route.detail}"
        for route in routes
        if route.failure is not None
    ]
    return results


# Judging and reporting


def summarize(
    samples: dict[str, dict[str, list[dict[str, Any]]]], routes: list[Route]
) -> dict[str, dict[str, dict[str, Any]]]:
    """
    @return: by case and by row that completed every round: the median,
        minimum and maximum requests per second, the median MB/s, the
        ratios of medians to ssh -R and to the direct path (C{None} when
        that path has no figures), the median latency percentiles and the
        median CPU share of each process in the middle.
    """
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for case, by_route in samples.items():
        rates = {
            route.title: [each["requests_per_s"] for each in by_route[route.title]]
            for route in _live(routes)
            if by_route[route.title]
        }
        summary[case] = {}
        for title, values in rates.items():
            taken = by_route[title]
            summary[case][title] = {
                "median": median(values),
                "min": min(values),
                "max": max(values),
                "mb_per_s": median([each["mb_per_s"] for each in taken]),
                "vs_ssh": _ratio(median(values), rates.get(SSH_R)),
                "vs_direct": _ratio(median(values), rates.get(DIRECT)),
                "p50_ms": median([each["latency_ms"]["p50"] for each in taken]),
                "p99_ms": median([each["latency_ms"]["p99"] for each in taken]),
                "cpu": {
                    name: median([each["cpu"][name] for each in taken])
                    for name in taken[0]["cpu"]
                },
                "upstream_cpu": median([each["upstream_cpu"] for each in taken]),
            }
    return summary


def _ratio(value: float, others: list[float] | None) -> float | None:
    return None if not others else value / median(others)


def judge(
    summary: dict[str, dict[str, dict[str, Any]]], routes: list[Route]
) -> list[dict[str, Any]]:
    """
    @return: each target, for each judged tunnelkit row and each case that
        ran, with its measured value (C{None} when the row or ssh -R has no
        figures) and whether it is met.
    """
    targets = []
    judged = [route for route in routes if route.kind == "tunnelkit" and route.judged]
    for route in judged:
        throughput = (
            ("small", "small responses", "requests/s", route.small_ratio),
            ("large", "1 MiB responses", "responses/s", TARGET_LARGE_RATIO),
        )
        for case, label, unit, limit in throughput:
            rows = summary.get(case)
            if rows is None or case not in route.judged_cases:
                continue
            value = rows.get(route.title, {}).get("vs_ssh")
            targets.append(
                _target(
                    f"{label}, {route.title} / ssh -R {unit}",
                    value,
                    f">= {limit:.2f}",
                    value is not None and value >= limit,
                )
            )
        latency = summary.get("latency")
        if latency is not None and "latency" in route.judged_cases:
            own = latency.get(route.title, {}).get("p50_ms")
            ssh = latency.get(SSH_R, {}).get("p50_ms")
            value = None if own is None or ssh is None else own / ssh
            target = _target(
                f"one connection, {route.title} / ssh -R p50 latency",
                value,
                f"<= {TARGET_LATENCY_RATIO:.2f}",
                value is not None and value <= TARGET_LATENCY_RATIO,
            )
            if value is not None:
                target["shown"] = f"{value:.2f} ({own:.3f} / {ssh:.3f} ms)"
            targets.append(target)
    return targets


def _target(name: str, value: float | None, limit: str, met: bool) -> dict[str, Any]:
    return {"name": name, "value": value, "limit": limit, "pass": met}


def report(results: dict[str, Any]) -> str:
    """
    @return: the results as text tables.
    """
    env = results["environment"]
    settings = results["settings"]
    lines = [
        "tunnelkit HTTP benchmark (loopback)",
        f"Python {env['python']}, Twisted {env['twisted']}, {env['openssl']},"
        f" {env['cpus']} CPUs",
        f"{env['nginx']}; {env['wrk']}; {env['ssh']}"
        + (f"; ssh cipher {env['ssh_cipher']}" if "ssh_cipher" in env else ""),
        f"wrk for {settings['rounds']} x {settings['seconds']}s per case and path,"
        " interleaved; medians over the rounds",
    ]

    routes = results["routes"]
    marks = {title: "*" * (i + 1) for i, title in enumerate(_noted(routes))}
    for case in CASES:
        if case.name not in results["summary"]:
            continue
        figures = results["summary"][case.name]
        rows = [_row(title, marks.get(title, ""), figures, case) for title in routes]
        headers = [case.title, "req/s", "min", "max", "MB/s"]
        if case.latency:
            headers += ["p50 ms", "p99 ms"]
        headers += ["vs ssh -R", "vs direct", "CPU in the middle"]
        lines += ["", render_table(headers, rows)]
        for title, mark in marks.items():
            lines += [f"{mark} {note}" for note in routes[title]["notes"]]

    failed = [(title, row) for title, row in routes.items() if row["failure"]]
    if failed:
        lines.append("")
        lines += [f"FAILED {title}: {row['failure']}" for title, row in failed]

    if results["targets"]:
        lines += ["", render_targets(results["targets"])]
    return "\n".join(lines)


def _noted(routes: dict[str, dict[str, Any]]) -> list[str]:
    return [title for title, row in routes.items() if row["notes"]]


def _row(
    title: str, mark: str, figures: dict[str, dict[str, Any]], case: Case
) -> list[str]:
    """
    @param mark: the row's footnote mark, if it has notes.
    @return: the cells of one row of a case's table.
    """
    label = f"{title} {mark}" if mark else title
    values = figures.get(title)
    width = 9 if case.latency else 7
    if values is None:
        return [label, "failed", *[""] * (width - 1)]
    cells = [
        label,
        f"{values['median']:,.0f}",
        f"{values['min']:,.0f}",
        f"{values['max']:,.0f}",
        f"{values['mb_per_s']:,.1f}",
    ]
    if case.latency:
        cells += [f"{values['p50_ms']:.3f}", f"{values['p99_ms']:.3f}"]
    cells += [
        "" if title == SSH_R or values["vs_ssh"] is None else f"{values['vs_ssh']:.2f}",
        (
            ""
            if title == DIRECT or values["vs_direct"] is None
            else f"{values['vs_direct']:.2f}"
        ),
        ", ".join(f"{name} {share:.0%}" for name, share in values["cpu"].items()),
    ]
    return cells


# Command line


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """
    @param argv: the arguments, or C{None} for the command line's.
    @return: the options, checked.
    """
    parser = argparse.ArgumentParser(
        description="wrk against nginx through a tunnelkit HTTP tunnel, through"
        " ssh -R and directly, on loopback."
    )
    parser.add_argument("--seconds", type=int, default=5, help="per wrk run")
    parser.add_argument(
        "--rounds", type=int, default=3, help="wrk runs per case and path"
    )
    parser.add_argument(
        "--warmup", type=int, default=1, help="seconds of wrk per path first; 0: none"
    )
    parser.add_argument(
        "--cases",
        default=",".join(case.name for case in CASES),
        help="which cases to run, comma-separated (default: all)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write results here")
    parser.add_argument(
        "--strict", action="store_true", help="exit with 1 when a target is missed"
    )
    args = parser.parse_args(argv)
    if args.seconds < 1 or args.rounds < 1 or args.warmup < 0:
        parser.error("--seconds and --rounds must be at least 1, --warmup >= 0")
    args.cases = [name.strip() for name in args.cases.split(",") if name.strip()]
    unknown = set(args.cases) - {case.name for case in CASES}
    if unknown or not args.cases:
        parser.error(
            f"--cases takes names among {', '.join(case.name for case in CASES)}"
        )
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """
    Start everything, measure, report; every program is stopped on every
    way out, and the temporary directory removed.

    @return: the exit status, as L{run_benchmark} says: 2 also when a path
        could not be measured.
    """
    args = parse_args(argv)
    return run_benchmark(
        "http",
        lambda directory, stack: measure(HttpRun(directory, stack, TOKEN), args),
        report,
        INSTALL,
        args.json,
        args.strict,
    )


if __name__ == "__main__":
    sys.exit(main())
