"""
The capture benchmark: what the agent spends, in one process, to capture
one small HTTP exchange, in three steps (reading it, keeping it, counting
it).

Run C{python bench/capture.py [--exchanges 100000] [--rounds 5] [--json
out.json]}; see C{bench/README.md} for what each number means. Nothing is
started and no socket is opened: the bytes a tunnel connection carries are
given to the agent's own capture code directly.
"""

from __future__ import annotations

if __package__ in (None, ""):
    import _script  # noqa: F401  (run as a script: see bench/_script.py)

import argparse
import gc
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from bench._common import environment, median, progress, render_table
from tunnelkit.agent.captures import (
    ENTRY_OVERHEAD,
    Capture,
    CapturedRequest,
    CaptureStore,
)
from tunnelkit.agent.exchanges import ExchangeTap
from tunnelkit.agent.inspection import DEFAULT_BODY_CAP, Inspection
from tunnelkit.agent.metrics import TunnelMetrics
from tunnelkit.agent.tunnel import Tunnel
from tunnelkit.config import TunnelDefinition, parse_upstream_address
from tunnelkit.config.agent import DEFAULT_INSPECT_DB_BYTES

STORE_SIZE = DEFAULT_INSPECT_DB_BYTES
"""The store's capacity: the default C{inspect_db_size}."""

CONNECTIONS = 50
"""Connections the exchanges are spread over, one tap each, as in the small
case of C{bench/http.py}."""

WARM_UP = 1000
"""Exchanges captured, untimed, before the timed ones of every row; while
the store is being filled, as many at a time."""

COPIES = 1024
"""Distinct copies of each message fed in turn, so that every exchange
reads bytes of its own as the agent does, not one object kept warm."""

REQUEST = (
    b"GET /small.txt HTTP/1.1\r\n"
    b"Host: bench.tunnels.test\r\n"
    b"X-Forwarded-For: 127.0.0.1\r\n"
    b"X-Forwarded-Proto: http\r\n"
    b"X-Forwarded-Host: bench.tunnels.test\r\n"
    b"\r\n"
)
"""What wrk sends, as the edge passes it on."""

BODY = (b"tunnelkit HTTP benchmark, small response. " * 3)[:99] + b"\n"

RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Server: nginx/1.22.1\r\n"
    b"Date: Fri, 04 Dec 2026 22:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: 100\r\n"
    b"Last-Modified: Fri, 04 Dec 2026 21:59:00 GMT\r\n"
    b"Connection: keep-alive\r\n"
    b'ETag: "6751d0c4-64"\r\n'
    b"Accept-Ranges: bytes\r\n"
    b"\r\n" + BODY
)
"""What nginx answers for the 100-byte file of C{bench/http.py}."""


class _Clock:
    """
    The time as the agent reads it: its reactor's C{seconds} is
    C{time.time} itself.
    """

    seconds = staticmethod(time.time)


class _Discard:
    """
    A recorder that keeps nothing: what is left is the reading alone.
    """

    def opened(self, capture: Capture) -> None:
        pass

    def completed(self, capture: Capture) -> None:
        pass


class _Store:
    """
    A recorder that keeps the captures in a store and counts nothing.
    """

    def __init__(self, store: CaptureStore) -> None:
        self.opened = store.add
        self.completed = store.complete


class Connections(NamedTuple):
    """
    What one row captures with.

    @ivar taps: one tap per connection.
    @ivar store: the store the captures are kept in, if any.
    @ivar metrics: the tunnel's metrics the exchanges count in, if any.
    """

    taps: list[ExchangeTap]
    store: CaptureStore | None
    metrics: TunnelMetrics | None


@dataclass
class Step:
    """
    One row: the capture code up to some step.

    @ivar title: the row's title.
    @ivar make: makes the connections the row captures with.
    """

    title: str
    make: Callable[[], Connections]


def _read_only() -> Connections:
    taps = [
        ExchangeTap(_Discard(), time.time, "127.0.0.1", _name, DEFAULT_BODY_CAP)
        for _ in range(CONNECTIONS)
    ]
    return Connections(taps, None, None)


def _read_and_store() -> Connections:
    store = CaptureStore(STORE_SIZE)
    recorder = _Store(store)
    taps = [
        ExchangeTap(recorder, time.time, "127.0.0.1", _name, DEFAULT_BODY_CAP)
        for _ in range(CONNECTIONS)
    ]
    return Connections(taps, store, None)


def _agent() -> Connections:
    # As the agent does it: the tunnel's metrics feed the agent's.
    store = CaptureStore(STORE_SIZE)
    clock = _Clock()
    metrics = TunnelMetrics(clock, parent=TunnelMetrics(clock))
    tunnel = Tunnel(
        TunnelDefinition(name="bench", proto="http", addr=parse_upstream_address("80")),
        public_urls=("http://bench.tunnels.test",),
        metrics=metrics,
    )
    inspection = Inspection(store, clock, DEFAULT_BODY_CAP)
    taps = [inspection.tap(tunnel, "127.0.0.1") for _ in range(CONNECTIONS)]
    return Connections(taps, store, metrics)


def _name(request: CapturedRequest) -> str:
    return "bench"


STEPS = (
    Step("read request and response", _read_only),
    Step("  + keep in the store (50 MB)", _read_and_store),
    Step("  + count in the metrics (the agent)", _agent),
)


def copies(message: bytes) -> list[bytes]:
    """
    @return: L{COPIES} equal messages, each its own object.
    """
    return [bytes(bytearray(message)) for _ in range(COPIES)]


def run_step(step: Step, exchanges: int) -> float:
    """
    Capture C{exchanges} exchanges through one step's taps, spread over the
    connections in turn, after a warm-up that also fills the store (if
    any), so that it evicts as it does in a long run.

    @return: microseconds per exchange.
    @raise RuntimeError: when a connection stopped capturing, the store
        was given a different number of captures than there were
        exchanges or evicted none while timed, or the metrics counted a
        different number of exchanges.
    """
    taps, store, metrics = step.make()
    name = step.title.strip()
    requests = copies(REQUEST)
    responses = copies(RESPONSE)

    def exchange_many(count: int) -> float:
        started = time.perf_counter()
        for index in range(count):
            tap = taps[index % CONNECTIONS]
            tap.request_data(requests[index % COPIES])
            tap.response_data(responses[index % COPIES])
        return time.perf_counter() - started

    exchange_many(WARM_UP)
    warmed = WARM_UP
    if store is not None:
        # Each capture counts at least ENTRY_OVERHEAD bytes, so the store
        # is full, and evicting, after at most this many.
        while not store.evicted and warmed <= STORE_SIZE // ENTRY_OVERHEAD:
            exchange_many(WARM_UP)
            warmed += WARM_UP
    evicted_before = store.evicted if store is not None else 0
    # What the rows before left for the collector is collected now, not
    # while this one is timed.
    gc.collect()
    elapsed = exchange_many(exchanges)
    total = warmed + exchanges
    if any(tap.stopped or not tap.idle for tap in taps):
        raise RuntimeError(f"{name}: a connection stopped capturing")
    if store is not None:
        if store.added != total:
            raise RuntimeError(
                f"{name}: the store was given {store.added} captures"
                f" for {total} exchanges"
            )
        if store.evicted == evicted_before:
            raise RuntimeError(f"{name}: the store evicted none while timed")
    if metrics is not None:
        counted = metrics.to_json()["http"]["count"]
        if counted != total:
            raise RuntimeError(f"{name}: {counted} exchanges counted of {total}")
    return elapsed / exchanges * 1e6


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Time capturing small HTTP exchanges in one process."
    )
    parser.add_argument(
        "--exchanges", type=int, default=100_000, help="measured per round and row"
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds per row")
    parser.add_argument("--json", metavar="PATH", help="also write results here")
    options = parser.parse_args(argv)
    if options.exchanges < 1 or options.rounds < 1:
        parser.error("--exchanges and --rounds must be at least 1")

    samples: dict[str, list[float]] = {step.title: [] for step in STEPS}
    for round_number in range(1, options.rounds + 1):
        for step in STEPS:
            try:
                microseconds = run_step(step, options.exchanges)
            except RuntimeError as error:
                progress("capture", f"failed: {error}")
                return 2
            samples[step.title].append(microseconds)
            progress(
                "capture",
                f"round {round_number}/{options.rounds} {step.title.strip()}:"
                f" {microseconds:.2f} us per exchange",
            )

    medians = {title: median(values) for title, values in samples.items()}
    rows = []
    before = 0.0
    for step in STEPS:
        value = medians[step.title]
        values = samples[step.title]
        rows.append(
            [
                step.title,
                f"{value:.2f}",
                f"{min(values):.2f}",
                f"{max(values):.2f}",
                f"{value - before:+.2f}" if before else "",
            ]
        )
        before = value
    print("tunnelkit capture benchmark (one process, no sockets)")
    env = environment()
    print(f"Python {env['python']}, Twisted {env['twisted']}, {env['cpus']} CPUs")
    print(
        f"{options.exchanges:,} small exchanges per round over {CONNECTIONS}"
        f" connections, after filling the store; medians over {options.rounds}"
        " rounds"
    )
    print()
    print(render_table(["us per exchange", "median", "min", "max", "step adds"], rows))
    if options.json:
        with open(options.json, "w") as out:
            json.dump(
                {
                    "environment": env,
                    "exchanges": options.exchanges,
                    "rounds": options.rounds,
                    "samples_us": samples,
                    "medians_us": medians,
                },
                out,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
