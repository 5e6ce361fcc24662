"""
The TLS passthrough benchmark: one long TLS stream and TLS handshakes per
second, through a tunnelkit TLS tunnel and directly, to the same nginx TLS
server, side by side in one run on loopback.

Run C{python bench/tls.py [--seconds 5] [--rounds 3] [--json out.json]};
see C{bench/README.md} for what each number means.
"""

from __future__ import annotations

import sys

if __package__ in (None, ""):
    import _script  # noqa: F401  (run as a script: see bench/_script.py)

import argparse
import json
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.python.filepath import FilePath

from bench._common import (
    LOOPBACK,
    MEGABYTE,
    WAIT,
    BenchRun,
    Program,
    environment,
    median,
    process_cpu_seconds,
    program_version,
    progress,
    render_table,
    run_benchmark,
)
from bench.http import last_words, wait_for_port
from tests.e2e import TUNNELKIT, free_port, write_file
from tunnelkit.pki import ensure_edge_certificate

TOKEN = "bench-tls-0123456789"
"""The authtoken the benchmark's edge accepts and its agent presents."""

DOMAIN = "tunnels.test"
NAME = f"bench.{DOMAIN}"
"""The tunnel's name, and the name nginx's certificate carries: both paths
send it as SNI and verify the certificate for it, and it never resolves, so
every client connects by address."""

LARGE_SIZE = 1 << 36
"""The size of the file streamed: a sparse file, never read to its end."""

HANDSHAKE_CONCURRENCY = 8
"""Handshakes in flight at once, one per client thread."""

EDGE_HTTPS_LINE = r"tunnelkit edge serving https on ([0-9.]+):([0-9]+)"
AGENT_FORWARDING_LINE = r"^Forwarding\s+tls://(\S+):([0-9]+) -> (\S+)$"

NGINX = "/usr/sbin/nginx"
CURL = "curl"
INSTALL = {NGINX: "apt-get install -y nginx", CURL: "apt-get install -y curl"}

DIRECT = "direct"
TUNNELKIT_PATH = "tunnelkit"
CASES = ("stream", "handshakes")


@dataclass
class Path:
    """
    A way from the client to nginx: one row of the table.

    @ivar title: its name in the table and the JSON results.
    @ivar port: where the client connects on loopback.
    @ivar watched: the processes in the middle, by name, with their ids.
    @ivar failure: why the row could not be measured, in one line.
    """

    title: str
    port: int = 0
    watched: dict[str, int] = field(default_factory=dict)
    failure: str | None = None
    detail: str = ""


class TlsRun(BenchRun):
    """
    A run of this benchmark: L{BenchRun} with nginx serving TLS, an edge
    serving TLS tunnels and one C{tunnelkit tls} agent.

    @ivar ca_file: the CA of nginx's certificate, which clients trust.
    """

    def start_nginx(self) -> tuple[Program, int]:
        """
        Start nginx on loopback with TLS, a certificate for L{NAME}, a small
        file and a large sparse one.

        @return: nginx, answering on its port.
        """
        issued = ensure_edge_certificate(
            FilePath(os.path.join(self.directory, "nginx-tls")), [NAME]
        )
        self.ca_file = issued.ca_path.path
        root = os.path.join(self.directory, "www")
        os.makedirs(root)
        os.makedirs(os.path.join(self.directory, "nginx-temp"))
        with open(os.path.join(root, "large.bin"), "wb") as large:
            large.truncate(LARGE_SIZE)
        write_file(os.path.join(root, "small.txt"), "tunnelkit TLS benchmark\n")
        port = free_port()
        config = write_file(
            os.path.join(self.directory, "nginx.conf"),
            nginx_config(
                self.directory,
                root,
                port,
                issued.cert_path.path,
                issued.key_path.path,
            ),
        )
        error_log = os.path.join(self.directory, "nginx-error.log")
        argv = [NGINX, "-p", self.directory + "/", "-c", config, "-e", error_log]
        nginx = self.start("nginx", argv)
        if not wait_for_port(nginx, port, WAIT):
            raise RuntimeError(f"nginx did not start\n{nginx.describe()}")
        return nginx, port

    def start_tunnel(self, upstream_port: int) -> Path:
        """
        Start the edge with an HTTPS port on loopback and a TLS tunnel to
        nginx.

        @return: the tunnelkit row, failed if the tunnel did not come up.
        """
        path = Path(TUNNELKIT_PATH)
        try:
            edge = self.start_edge(
                {
                    "https_listener": json.dumps(f"tcp:0:interface={LOOPBACK}"),
                    "domain": DOMAIN,
                }
            )
            edge.wait_for_line(EDGE_HTTPS_LINE, WAIT, "out")
            config = self.agent_config("agent.yml")
            argv = [*TUNNELKIT, "tls", str(upstream_port), "--subdomain", "bench"]
            agent = self.start("agent", [*argv, "--config", config])
            found = agent.wait_for_line(AGENT_FORWARDING_LINE, WAIT, "out")
        except RuntimeError as error:
            path.failure = "the TLS tunnel did not come up"
            path.detail = str(error)
            return path
        if found.group(1) != NAME:
            path.failure = f"the tunnel is {found.group(1)}, not {NAME}"
            path.detail = last_words(agent)
            return path
        path.port = int(found.group(2))
        path.watched = {"edge": edge.pid, "agent": agent.pid}
        return path


def nginx_config(directory: str, root: str, port: int, cert: str, key: str) -> str:
    """
    @return: the text of C{nginx.conf}: one process in the foreground,
        serving C{root} over TLS 1.2 and 1.3 on C{port}, with no session
        cache or tickets, so that every handshake is a full one.
    """

    def quoted(path: str) -> str:
        return json.dumps(path)

    temporary = {
        kind: quoted(os.path.join(directory, "nginx-temp", kind))
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    }
    return f"""\
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

    server {{
        listen {LOOPBACK}:{port} ssl;
        server_name {NAME};
        ssl_certificate {quoted(cert)};
        ssl_certificate_key {quoted(key)};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache off;
        ssl_session_tickets off;
        root {quoted(root)};
    }}
}}
"""


# Measuring


def check_path(run: TlsRun, path: Path) -> None:
    """
    Fetch the small file over the path, verifying nginx's certificate for
    L{NAME}, so that a path that answers with something else is not
    measured.

    @raise RuntimeError: if the fetch fails or answers something else.
    """
    argv = [CURL, "-sS", "--max-time", str(int(WAIT)), "--cacert", run.ca_file]
    argv += ["--resolve", f"{NAME}:{path.port}:{LOOPBACK}"]
    argv.append(f"https://{NAME}:{path.port}/small.txt")
    with run.program("curl-check", argv) as curl:
        status = curl.wait(WAIT + 5)
        if status != 0 or curl.text() != "tunnelkit TLS benchmark\n":
            raise RuntimeError(
                f"curl failed (exit status {status}): {last_words(curl)}"
            )


def stream_sample(run: TlsRun, path: Path, seconds: int) -> dict[str, Any]:
    """
    Stream the large file over one TLS connection with curl for
    C{seconds}.

    @return: bytes, seconds, MB/s and the CPU share of each process in the
        middle.
    """
    argv = [CURL, "-sS", "-o", "/dev/null", "--max-time", str(seconds)]
    argv += ["--cacert", run.ca_file, "--resolve", f"{NAME}:{path.port}:{LOOPBACK}"]
    argv += ["-w", "%{size_download} %{time_total}"]
    argv.append(f"https://{NAME}:{path.port}/large.bin")
    before = {name: process_cpu_seconds(pid) for name, pid in path.watched.items()}
    started = time.monotonic()
    with run.program("curl", argv) as curl:
        status = curl.wait(seconds + WAIT)
        wall = time.monotonic() - started
        found = re.fullmatch(r"(\d+) ([0-9.]+)", curl.text().strip())
        if status not in (0, 28) or found is None or not int(found.group(1)):
            raise RuntimeError(
                f"curl failed (exit status {status}): {last_words(curl)}"
            )
    received, elapsed = int(found.group(1)), float(found.group(2))
    return {
        "bytes": received,
        "seconds": elapsed,
        "mb_per_s": received / elapsed / MEGABYTE,
        "cpu": _cpu(path, before, wall),
    }


def handshake_sample(run: TlsRun, path: Path, seconds: int) -> dict[str, Any]:
    """
    Complete full TLS handshakes over the path, L{HANDSHAKE_CONCURRENCY}
    at once, each on a new connection, for C{seconds}; each handshake
    verifies nginx's certificate for L{NAME}, and its connection is closed
    right after.

    @return: handshakes, seconds, handshakes per second, failures and the
        CPU share of each process in the middle.
    """
    context = ssl.create_default_context(cafile=run.ca_file)
    context.options |= ssl.OP_NO_TICKET
    counts = [0] * HANDSHAKE_CONCURRENCY
    errors: list[str] = []
    deadline = time.monotonic() + seconds

    def shake(index: int) -> None:
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((LOOPBACK, path.port), WAIT) as raw:
                    with context.wrap_socket(raw, server_hostname=NAME):
                        counts[index] += 1
            except OSError as error:
                errors.append(str(error))
                return

    before = {name: process_cpu_seconds(pid) for name, pid in path.watched.items()}
    started = time.monotonic()
    threads = [
        threading.Thread(target=shake, args=(i,)) for i in range(HANDSHAKE_CONCURRENCY)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + WAIT)
    wall = time.monotonic() - started
    if errors:
        raise RuntimeError(f"{len(errors)} handshakes failed: {errors[0]}")
    total = sum(counts)
    return {
        "handshakes": total,
        "seconds": wall,
        "per_s": total / wall,
        "cpu": _cpu(path, before, wall),
    }


def _cpu(path: Path, before: dict[str, float], wall: float) -> dict[str, float]:
    return {
        name: (process_cpu_seconds(pid) - before[name]) / wall
        for name, pid in path.watched.items()
    }


def measure(run: TlsRun, args: argparse.Namespace) -> dict[str, Any]:
    """
    Start nginx, the edge and the agent, check both paths, then measure
    them round by round, interleaved.

    @return: the results, as written by C{--json}.
    """
    results: dict[str, Any] = {
        "environment": {
            **environment(),
            "nginx": program_version([NGINX, "-v"]),
            "curl": program_version([CURL, "--version"]),
        },
        "settings": {
            "seconds": args.seconds,
            "rounds": args.rounds,
            "concurrency": HANDSHAKE_CONCURRENCY,
        },
    }
    nginx, nginx_port = run.start_nginx()
    paths = [Path(DIRECT, port=nginx_port), run.start_tunnel(nginx_port)]
    for path in paths:
        if path.failure is None:
            try:
                check_path(run, path)
            except RuntimeError as error:
                path.failure, path.detail = "the check fetch failed", str(error)
    if paths[0].failure is not None:
        raise RuntimeError(f"nginx does not serve over TLS: {paths[0].detail}")

    samples: dict[str, dict[str, list[dict[str, Any]]]] = {
        case: {path.title: [] for path in paths} for case in CASES
    }
    measures = {"stream": stream_sample, "handshakes": handshake_sample}
    for number in range(1, args.rounds + 1):
        for case in CASES:
            for path in paths:
                if path.failure is not None:
                    continue
                try:
                    sample = measures[case](run, path, args.seconds)
                except RuntimeError as error:
                    path.failure = f"round {number}, {case}: {error}"
                    continue
                samples[case][path.title].append(sample)
                shown = sample.get("mb_per_s", sample.get("per_s", 0.0))
                progress("tls", f"round {number} {case}, {path.title}: {shown:,.1f}")
    results["samples"] = samples
    results["summary"] = summarize(samples)
    results["failures"] = [
        f"{path.title}: {path.failure}\n{path.detail}"
        for path in paths
        if path.failure is not None
    ]
    return results


def summarize(
    samples: dict[str, dict[str, list[dict[str, Any]]]],
) -> dict[str, dict[str, Any]]:
    """
    @return: by case: each path's median, minimum and maximum rate, the
        median CPU shares, and the ratio of tunnelkit's median to the
        direct path's.
    """
    keys = {"stream": "mb_per_s", "handshakes": "per_s"}
    summary: dict[str, dict[str, Any]] = {}
    for case, by_path in samples.items():
        rows: dict[str, Any] = {}
        for title, taken in by_path.items():
            if not taken:
                continue
            values = [each[keys[case]] for each in taken]
            rows[title] = {
                "median": median(values),
                "min": min(values),
                "max": max(values),
                "cpu": {
                    name: median([each["cpu"][name] for each in taken])
                    for name in taken[0]["cpu"]
                },
            }
        if DIRECT in rows and TUNNELKIT_PATH in rows:
            rows["ratio"] = rows[TUNNELKIT_PATH]["median"] / rows[DIRECT]["median"]
        summary[case] = rows
    return summary


def report(results: dict[str, Any]) -> str:
    """
    @return: the results as a text table.
    """
    env = results["environment"]
    settings = results["settings"]
    lines = [
        "tunnelkit TLS passthrough benchmark (loopback)",
        f"Python {env['python']}, Twisted {env['twisted']}, {env['openssl']},"
        f" {env['cpus']} CPUs",
        f"{env['nginx']}; {env['curl'].split(' (')[0]}",
        f"{settings['rounds']} x {settings['seconds']}s per case and path,"
        " interleaved; medians over the rounds",
        "",
    ]
    titles = {
        "stream": "one TLS stream (curl), MB/s",
        "handshakes": f"full handshakes/s, {settings['concurrency']} at once",
    }
    rows = []
    for case in CASES:
        figures = results["summary"].get(case, {})
        for title in (DIRECT, TUNNELKIT_PATH):
            values = figures.get(title)
            label = f"{titles[case]}: {title}"
            if values is None:
                rows.append([label, "failed", "", "", "", ""])
                continue
            ratio = figures.get("ratio") if title == TUNNELKIT_PATH else None
            rows.append(
                [
                    label,
                    f"{values['median']:,.1f}",
                    f"{values['min']:,.1f}",
                    f"{values['max']:,.1f}",
                    "" if ratio is None else f"{ratio:.2f}",
                    ", ".join(f"{n} {s:.0%}" for n, s in values["cpu"].items()),
                ]
            )
    headers = ["path", "median", "min", "max", "vs direct", "CPU in the middle"]
    lines.append(render_table(headers, rows))
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """
    @param argv: the arguments, or C{None} for the command line's.
    @return: the options, checked.
    """
    parser = argparse.ArgumentParser(
        description="One TLS stream and TLS handshakes per second, through a"
        " tunnelkit TLS tunnel and directly, to one nginx, on loopback."
    )
    parser.add_argument("--seconds", type=int, default=5, help="per sample")
    parser.add_argument("--rounds", type=int, default=3, help="samples per case")
    parser.add_argument("--json", metavar="PATH", help="also write results here")
    args = parser.parse_args(argv)
    if args.seconds < 1 or args.rounds < 1:
        parser.error("--seconds and --rounds must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """
    Start everything, measure, report; every program is stopped on every
    way out, and the temporary directory removed.

    @return: the exit status, as L{bench._common.run_benchmark} says.
    """
    args = parse_args(argv)
    return run_benchmark(
        "tls",
        lambda directory, stack: measure(TlsRun(directory, stack, TOKEN), args),
        report,
        INSTALL,
        args.json,
    )


if __name__ == "__main__":
    sys.exit(main())
