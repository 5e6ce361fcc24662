"""
The wire benchmark: TLS + yamux against plain TLS between two processes on
loopback, and what opening, closing and holding streams costs.

Run C{python bench/wire.py [--seconds 5] [--json out.json]}; see
C{bench/README.md} for what each number means. The same file, run with
C{--role sink}, is the child process that receives.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import math
import os
import sys
import tempfile
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    import _script  # noqa: F401  (run as a script: see bench/_script.py)

from twisted.internet import task
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    connectProtocol,
)
from twisted.internet.interfaces import IHandshakeListener, IProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from bench._common import (
    CHUNK_SIZE,
    LOOPBACK,
    MEGABYTE,
    REPO_ROOT,
    ByteCount,
    ByteCounter,
    ChunkWriter,
    ControlClient,
    ControlServer,
    SinkProcess,
    announce,
    begin_logging,
    client_options,
    describe_tls,
    environment,
    make_certificate,
    median,
    render_table,
    server_options,
    stop_when_parent_goes,
    usage,
)
from tunnelkit.mux import MuxConfig, MuxProtocol
from tunnelkit.interfaces import IPiecesReceiver
from tunnelkit.tlstransport import LinkTLSFactory, wrap_client_tls

_log = Logger()

# The targets from the issue that asked for this benchmark.
TARGET_RATIO = 0.80
TARGET_IDLE_BYTES = 10_000

# What the first line of a connection to the sink says it is for.
PLAIN = b"plain"
MUX = b"mux"
CONTROL = b"control"

THROUGHPUT_CASES = ("plain", "mux1", "mux8")
ALL_CASES = (*THROUGHPUT_CASES, "openclose", "memory")
CASE_TITLES = {
    "plain": "plain TLS, 1 connection",
    "mux1": "TLS + yamux, 1 stream",
    "mux8": "TLS + yamux, 8 streams",
}


def mux_config(args: argparse.Namespace) -> MuxConfig:
    """
    @return: the session limits both sides use, from the command line.
    """
    return MuxConfig(max_stream_window=args.window, max_frame_payload=args.frame)


# The sink process


class WireSink:
    """
    What the sink process knows: finished transfers, live streams, and the
    measurements it takes when the parent asks over the control channel.
    """

    def __init__(self, reactor: Any, config: MuxConfig) -> None:
        self.reactor = reactor
        self.config = config
        self.finished: list[ByteCount] = []
        self.live_streams = 0
        self._waiters: list[tuple[Callable[[], bool], Deferred[None]]] = []
        self._memory: dict[str, Any] = {}
        self._profiles: dict[str, cProfile.Profile] = {}

    def commands(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        """
        @return: the control operations, by name.
        """
        return {
            "usage": lambda request: usage(),
            "clear": self.clear,
            "collect": self.collect,
            "memory_begin": self.memory_begin,
            "memory_end": self.memory_end,
            "profile_start": self.profile_start,
            "profile_stop": self.profile_stop,
        }

    # Events from connections and streams

    def transfer_finished(self, count: ByteCount) -> None:
        """
        A connection or stream that the parent wrote to has ended.
        """
        self.finished.append(count)
        self._wake()

    def stream_opened(self) -> None:
        """
        The parent opened a stream.
        """
        self.live_streams += 1
        self._wake()

    def stream_closed(self) -> None:
        """
        A stream closed.
        """
        self.live_streams -= 1

    def _wait_for(
        self, condition: Callable[[], bool], timeout: float
    ) -> Deferred[None]:
        if condition():
            return succeed(None)
        waiting: Deferred[None] = Deferred()
        waiting.addTimeout(timeout, self.reactor)
        self._waiters.append((condition, waiting))
        return waiting

    def _wake(self) -> None:
        for entry in list(self._waiters):
            condition, waiting = entry
            if waiting.called or condition():
                self._waiters.remove(entry)
                if not waiting.called:
                    waiting.callback(None)

    # Control operations

    def clear(self, request: dict[str, Any]) -> dict[str, Any]:
        """
        Forget the transfers finished so far, such as streams that carried
        no data.
        """
        self.finished.clear()
        return {}

    async def collect(self, request: dict[str, Any]) -> dict[str, Any]:
        """
        Wait until C{count} transfers have finished and hand them over.
        """
        count = int(request["count"])
        await self._wait_for(lambda: len(self.finished) >= count, request["timeout"])
        taken, self.finished = self.finished[:count], self.finished[count:]
        return {"transfers": [each.to_json() for each in taken]}

    def memory_begin(self, request: dict[str, Any]) -> dict[str, Any]:
        """
        Note the live streams and memory in use; with C{trace}, start
        C{tracemalloc}, which counts every allocation from now on.
        """
        gc.collect()
        trace = bool(request.get("trace"))
        if trace:
            tracemalloc.start(1)
        self._memory = {
            "trace": trace,
            "live": self.live_streams,
            "rss": usage()["rss"],
            "traced": tracemalloc.get_traced_memory()[0] if trace else 0,
        }
        return {"rss": self._memory["rss"]}

    async def memory_end(self, request: dict[str, Any]) -> dict[str, Any]:
        """
        Once C{streams} more streams are live than at L{memory_begin}, report
        how much the resident set and the traced allocations grew.
        """
        streams = int(request["streams"])
        start = self._memory
        await self._wait_for(
            lambda: self.live_streams - start["live"] >= streams, request["timeout"]
        )
        gc.collect()
        rss = usage()["rss"]
        reply: dict[str, Any] = {
            "streams": self.live_streams - start["live"],
            "rss_before": start["rss"],
            "rss_after": rss,
        }
        if start["trace"]:
            reply["traced_growth"] = (
                tracemalloc.get_traced_memory()[0] - start["traced"]
            )
            reply["sites"] = _allocation_sites(tracemalloc.take_snapshot(), 8)
            tracemalloc.stop()
        return reply

    def profile_start(self, request: dict[str, Any]) -> dict[str, Any]:
        """
        Start (or continue) the profile called C{name}.
        """
        self._profiles.setdefault(request["name"], cProfile.Profile()).enable()
        return {}

    def profile_stop(self, request: dict[str, Any]) -> dict[str, Any]:
        """
        Pause the profile called C{name} and write it to C{path}.
        """
        profile = self._profiles[request["name"]]
        profile.disable()
        profile.dump_stats(request["path"])
        return {}


def _allocation_sites(
    snapshot: tracemalloc.Snapshot, limit: int
) -> list[dict[str, Any]]:
    """
    @return: the source lines holding the most traced memory, largest first.
    """
    snapshot = snapshot.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    sites = []
    for statistic in snapshot.statistics("lineno")[:limit]:
        frame = statistic.traceback[0]
        sites.append(
            {
                "where": f"{_short_path(frame.filename)}:{frame.lineno}",
                "bytes": statistic.size,
                "blocks": statistic.count,
            }
        )
    return sites


def _short_path(filename: str) -> str:
    """
    @return: C{filename} relative to the repository or to C{site-packages}.
    """
    path = Path(filename)
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        pass
    parts = path.parts
    for marker in ("site-packages", "lib"):
        if marker in parts:
            return "/".join(parts[len(parts) - parts[::-1].index(marker) :])
    return filename


class _SinkStream(ByteCounter):
    """
    A stream at the sink: counted, and counted as live while open.
    """

    def __init__(self, sink: WireSink) -> None:
        super().__init__(sink.transfer_finished)
        self.sink = sink

    def connectionMade(self) -> None:
        self.sink.stream_opened()

    def connectionLost(self, reason: Failure | None = None) -> None:
        super().connectionLost(reason)
        self.sink.stream_closed()


class _SinkStreams(Factory):
    """
    Builds the protocol for each stream the parent opens.
    """

    def __init__(self, sink: WireSink) -> None:
        self.sink = sink

    def buildProtocol(self, addr: Any) -> _SinkStream:
        return _SinkStream(self.sink)


@implementer(IPiecesReceiver)
class _Selector(Protocol):
    """
    Reads the first line of a connection, which names what it is for
    (C{plain}, C{mux} or C{control}), then hands the connection over. It
    passes pieces of received bytes on as they are to a protocol that takes
    them so (the yamux session), as the link's TLS layer would without a
    selector in between.
    """

    def __init__(self, sink: WireSink) -> None:
        self.sink = sink
        self.inner: IProtocol | None = None
        self._head = b""

    def dataReceived(self, data: bytes) -> None:
        inner = self.inner
        if inner is not None:
            inner.dataReceived(data)
            return
        self._head += data
        if b"\n" not in self._head:
            if len(self._head) > 64:
                self.transport.loseConnection()
            return
        mode, rest = self._head.split(b"\n", 1)
        self._head = b""
        inner = self.inner = self._build(mode)
        inner.makeConnection(self.transport)
        if rest:
            inner.dataReceived(rest)

    def piecesReceived(self, pieces: list[bytes]) -> None:
        inner = IPiecesReceiver(self.inner, None)
        if inner is not None:
            inner.piecesReceived(pieces)
        else:
            self.dataReceived(b"".join(pieces))

    def _build(self, mode: bytes) -> IProtocol:
        sink = self.sink
        if mode == PLAIN:
            return ByteCounter(sink.transfer_finished)
        if mode == MUX:
            return MuxProtocol(
                False, sink.reactor, _SinkStreams(sink), config=sink.config
            )
        if mode == CONTROL:
            return ControlServer(sink.commands())
        raise ValueError(f"unknown connection mode {mode!r}")

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self.inner is not None:
            self.inner.connectionLost(reason)


class _SinkConnections(Factory):
    """
    Builds the protocol for each connection to the sink.
    """

    def __init__(self, sink: WireSink) -> None:
        self.sink = sink

    def buildProtocol(self, addr: Any) -> _Selector:
        return _Selector(self.sink)


def run_sink(args: argparse.Namespace) -> int:
    """
    Serve plain TLS, TLS + yamux and control connections on one loopback
    port until standard input closes.

    @return: the exit status.
    """
    from twisted.internet import reactor

    begin_logging()
    sink = WireSink(reactor, mux_config(args))
    endpoint = TCP4ServerEndpoint(reactor, 0, interface=LOOPBACK)
    options = server_options(args.cert, args.key)

    def listening(port: Any) -> None:
        announce({"port": port.getHost().port, "pid": os.getpid()})
        stop_when_parent_goes(reactor)

    def failed(failure: Failure) -> None:
        _log.failure("the sink could not listen", failure)
        reactor.stop()

    factory = LinkTLSFactory(options, False, _SinkConnections(sink))
    endpoint.listen(factory).addCallbacks(listening, failed)
    reactor.run()
    return 0


# The measuring parent


@implementer(IHandshakeListener)
class _PlainConnection(Protocol):
    """
    The parent's plain TLS connection.
    """

    def __init__(self) -> None:
        self.ready: Deferred[None] = Deferred()
        self.closed: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(PLAIN + b"\n")

    def handshakeCompleted(self) -> None:
        self.ready.callback(None)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.closed.callback(None)


@implementer(IHandshakeListener)
class _MuxConnection(MuxProtocol):
    """
    The parent's TLS connection carrying a yamux session.
    """

    def __init__(self, clock: Any, config: MuxConfig) -> None:
        super().__init__(True, clock, config=config)
        self.ready: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(MUX + b"\n")
        super().connectionMade()

    def handshakeCompleted(self) -> None:
        self.ready.callback(None)


class _StreamEnd(Protocol):
    """
    The parent's end of one stream; it only notices the stream's end.
    """

    def __init__(self, on_closed: Callable[[], None] | None = None) -> None:
        self.closed: Deferred[None] = Deferred()
        self.on_closed = on_closed

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.closed.callback(None)
        if self.on_closed is not None:
            self.on_closed()


def _difference(after: dict[str, Any], before: dict[str, Any], key: str) -> Any:
    """
    @return: how much C{key} grew, or C{None} where it is not known.
    """
    if after[key] is None or before[key] is None:
        return None
    return after[key] - before[key]


async def _close_session(mux: MuxProtocol) -> None:
    """
    Close a session and wait until its connection is gone.
    """
    closed = mux.when_closed()
    mux.close()
    await closed


class WireBench:
    """
    The parent's measurements, each against the sink at C{port}.
    """

    def __init__(self, reactor: Any, port: int, ca_path: str, args: Any) -> None:
        self.reactor = reactor
        self.port = port
        self.creator = client_options(ca_path)
        self.config = mux_config(args)
        self.args = args
        self.chunk = b"\x00" * args.chunk
        self.control = ControlClient(CONTROL + b"\n")
        self.tls: dict[str, str] = {}
        self._profiles: dict[str, cProfile.Profile] = {}

    async def connect(self, protocol: Any) -> Any:
        """
        Connect C{protocol} to the sink over TLS and wait for the handshake.
        """
        endpoint = wrap_client_tls(
            self.creator, TCP4ClientEndpoint(self.reactor, LOOPBACK, self.port)
        )
        await connectProtocol(endpoint, protocol)
        ready = getattr(protocol, "ready", None)
        if ready is not None:
            await ready
        return protocol

    async def call(self, op: str, **fields: Any) -> dict[str, Any]:
        """
        Ask the sink, giving up after a while.
        """
        reply = self.control.call(op, **fields)
        reply.addTimeout(self.args.seconds * 4 + 120, self.reactor)
        result: dict[str, Any] = await reply
        return result

    # Profiling

    async def _profile(self, name: str, on: bool) -> None:
        directory = self.args.profile
        if directory is None:
            return
        profile = self._profiles.setdefault(name, cProfile.Profile())
        if on:
            await self.call("profile_start", name=name)
            profile.enable()
            return
        profile.disable()
        profile.dump_stats(os.path.join(directory, f"writer-{name}.pstats"))
        path = os.path.join(directory, f"sink-{name}.pstats")
        await self.call("profile_stop", name=name, path=path)

    # Throughput

    async def throughput(self, case: str, seconds: float) -> dict[str, Any]:
        """
        Measure one throughput sample of C{case}: C{plain}, C{mux1} or
        C{mux8}.
        """
        if case == "plain":
            plain = await self.connect(_PlainConnection())
            self.tls = self.tls or describe_tls(plain.transport)
            sample = await self._transfer(case, [plain.transport], seconds)
            await plain.closed
            return sample

        streams = 8 if case == "mux8" else 1
        mux = await self.connect(_MuxConnection(self.reactor, self.config))
        ends = [_StreamEnd() for _ in range(streams)]
        await gatherResults([mux.open_stream(end) for end in ends], consumeErrors=True)
        sample = await self._transfer(case, [end.transport for end in ends], seconds)
        await gatherResults([end.closed for end in ends])
        await _close_session(mux)
        return sample

    async def _transfer(
        self, case: str, transports: Sequence[Any], seconds: float
    ) -> dict[str, Any]:
        """
        Write into every transport at once for C{seconds}, then check what
        the sink counted against what was written.
        """
        await self.call("clear")
        sink_before = await self.call("usage")
        await self._profile(case, True)
        before = usage()

        writers = [
            ChunkWriter(each, self.chunk, seconds, self.reactor) for each in transports
        ]
        written = await gatherResults([writer.start() for writer in writers])
        reply = await self.call(
            "collect", count=len(transports), timeout=seconds * 2 + 60
        )

        after = usage()
        await self._profile(case, False)
        sink_after = await self.call("usage")
        transfers = reply["transfers"]
        received = sum(each["received"] for each in transfers)
        if received != sum(written):
            raise RuntimeError(
                f"{case}: wrote {sum(written)} bytes but the sink counted {received}"
            )
        carried = [each for each in transfers if each["received"]]
        span = max(each["last"] for each in carried) - min(
            each["first"] for each in carried
        )
        wall = after["at"] - before["at"]
        return {
            "bytes": received,
            "seconds": span,
            "mb_per_s": received / span / MEGABYTE,
            "per_stream_bytes": sorted(each["received"] for each in transfers),
            "wall": wall,
            "writer_cpu": after["cpu"] - before["cpu"],
            "sink_cpu": sink_after["cpu"] - sink_before["cpu"],
            "writer_system": after["system"] - before["system"],
            "sink_system": sink_after["system"] - sink_before["system"],
            "writer_sleeps": _difference(after, before, "sleeps"),
            "sink_sleeps": _difference(sink_after, sink_before, "sleeps"),
        }

    # Streams opened and closed

    async def open_close(self, total: int, in_flight: int) -> dict[str, Any]:
        """
        Open and close C{total} streams, C{in_flight} at a time: each is
        closed (FIN) once the sink accepts it, and the next one opens when
        both sides have closed it.
        """
        mux = await self.connect(_MuxConnection(self.reactor, self.config))
        await self._open_close_on(mux, min(total, 100), in_flight)

        sink_before = await self.call("usage")
        await self._profile("openclose", True)
        before = usage()
        await self._open_close_on(mux, total, in_flight)
        after = usage()
        await self._profile("openclose", False)
        sink_after = await self.call("usage")

        await _close_session(mux)
        writer_cpu = after["cpu"] - before["cpu"]
        sink_cpu = sink_after["cpu"] - sink_before["cpu"]
        wall = after["at"] - before["at"]
        return {
            "streams": total,
            "in_flight": in_flight,
            "wall": wall,
            "writer_cpu": writer_cpu,
            "sink_cpu": sink_cpu,
            "cpu_per_stream": (writer_cpu + sink_cpu) / total,
            "writer_cpu_per_stream": writer_cpu / total,
            "sink_cpu_per_stream": sink_cpu / total,
            "wall_per_stream": wall / total,
        }

    def _open_close_on(
        self, mux: MuxProtocol, total: int, in_flight: int
    ) -> Deferred[None]:
        """
        @return: a Deferred that fires once C{total} streams have been
            opened and closed on C{mux}, at most C{in_flight} at a time.
        """
        all_closed: Deferred[None] = Deferred()
        counts = {"opened": 0, "closed": 0}

        def failed(failure: Failure) -> None:
            if not all_closed.called:
                all_closed.errback(failure)

        def closed() -> None:
            counts["closed"] += 1
            if counts["opened"] < total:
                open_one()
            elif counts["closed"] == total and not all_closed.called:
                all_closed.callback(None)

        def open_one() -> None:
            counts["opened"] += 1
            opened = mux.open_stream(_StreamEnd(closed))
            opened.addCallback(lambda end: end.transport.loseConnection())
            opened.addErrback(failed)

        for _ in range(min(total, in_flight)):
            open_one()
        return all_closed

    # Idle streams

    async def idle_memory(self, count: int) -> dict[str, Any]:
        """
        Hold C{count} idle streams open, twice: once to read the sink's
        resident set growth, once under C{tracemalloc}.
        """
        mux = await self.connect(_MuxConnection(self.reactor, self.config))
        await self._open_close_on(mux, 200, 100)

        rss = await self._hold_idle(mux, count, trace=False)
        traced = await self._hold_idle(mux, count, trace=True)

        await _close_session(mux)
        rss_growth = rss["rss_after"] - rss["rss_before"]
        return {
            "streams": count,
            "rss_before": rss["rss_before"],
            "rss_after": rss["rss_after"],
            "rss_per_stream": rss_growth / count,
            "traced_per_stream": traced["traced_growth"] / count,
            "sites": traced["sites"],
        }

    async def _hold_idle(
        self, mux: MuxProtocol, count: int, trace: bool
    ) -> dict[str, Any]:
        """
        Open C{count} streams, have the sink measure, close them again.
        """
        await self.call("memory_begin", trace=trace)
        ends = [_StreamEnd() for _ in range(count)]
        await gatherResults([mux.open_stream(end) for end in ends], consumeErrors=True)
        reply = await self.call("memory_end", streams=count, timeout=60)
        for end in ends:
            end.transport.loseConnection()
        await gatherResults([end.closed for end in ends])
        return reply


async def measure(reactor: Any, args: Any, ca_path: str, port: int) -> dict[str, Any]:
    """
    Run every selected case against the sink at C{port}.

    @return: the results, as written by C{--json}.
    """
    bench = WireBench(reactor, port, ca_path, args)
    await bench.connect(bench.control)
    cases = args.cases
    results: dict[str, Any] = {
        "environment": environment(),
        "settings": {
            "seconds": args.seconds,
            "rounds": args.rounds,
            "chunk": args.chunk,
            "stream_window": args.window,
            "frame_payload": args.frame,
            "open_close_streams": args.open_close,
            "idle_streams": args.idle,
            "profiling": args.profile is not None,
        },
        "throughput": {case: [] for case in THROUGHPUT_CASES if case in cases},
    }

    if "memory" in cases:
        _progress(f"holding {args.idle} idle streams")
        results["idle_streams"] = await bench.idle_memory(args.idle)
    if "openclose" in cases:
        _progress(f"opening and closing {args.open_close} streams")
        results["open_close"] = await bench.open_close(args.open_close, 100)

    chosen = [case for case in THROUGHPUT_CASES if case in cases]
    if chosen and args.warmup > 0:
        _progress(f"warming up for {args.warmup:g}s per case")
        for case in chosen:
            await bench.throughput(case, args.warmup)
    for round_number in range(1, args.rounds + 1):
        for case in chosen:
            sample = await bench.throughput(case, args.seconds)
            results["throughput"][case].append(sample)
            _progress(
                f"round {round_number}/{args.rounds} {case}:"
                f" {sample['mb_per_s']:.1f} MB/s"
            )
    results["tls"] = bench.tls
    results["summary"] = summarize(results)
    results["targets"] = judge(results)
    return results


def _progress(text: str) -> None:
    sys.stderr.write(f"[wire] {text}\n")
    sys.stderr.flush()


# Judging and reporting


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """
    @return: per throughput case, the median, minimum and maximum MB/s, the
        ratio of medians to plain TLS, and CPU use as a share of wall time.
    """
    summary: dict[str, Any] = {}
    plain = [each["mb_per_s"] for each in results["throughput"].get("plain", [])]
    for case, samples in results["throughput"].items():
        rates = [each["mb_per_s"] for each in samples]
        wall = sum(each["wall"] for each in samples)
        summary[case] = {
            "median": median(rates),
            "min": min(rates, default=math.nan),
            "max": max(rates, default=math.nan),
            "ratio": median(rates) / median(plain) if plain else math.nan,
            "round_ratios": [rate / base for rate, base in zip(rates, plain)],
            "writer_cpu_share": sum(e["writer_cpu"] for e in samples) / wall,
            "sink_cpu_share": sum(e["sink_cpu"] for e in samples) / wall,
            "stream_share_min": min(
                (min(e["per_stream_bytes"]) / e["bytes"] for e in samples),
                default=math.nan,
            ),
            "stream_share_max": max(
                (max(e["per_stream_bytes"]) / e["bytes"] for e in samples),
                default=math.nan,
            ),
        }
    return summary


def judge(results: dict[str, Any]) -> list[dict[str, Any]]:
    """
    @return: each target with its measured value and whether it is met;
        a target whose case did not run is left out.
    """
    targets = []
    ratio = results["summary"].get("mux1", {}).get("ratio", math.nan)
    if not math.isnan(ratio):
        targets.append(
            {
                "name": "one stream vs plain TLS throughput",
                "value": ratio,
                "limit": f">= {TARGET_RATIO:.2f}",
                "pass": ratio >= TARGET_RATIO,
            }
        )
    idle = results.get("idle_streams")
    if idle is not None:
        for key, label in (
            ("traced_per_stream", "tracemalloc"),
            ("rss_per_stream", "RSS growth"),
        ):
            targets.append(
                {
                    "name": f"bytes per idle stream, sink ({label})",
                    "value": idle[key],
                    "limit": f"< {TARGET_IDLE_BYTES:,}",
                    "pass": idle[key] < TARGET_IDLE_BYTES,
                }
            )
    return targets


def report(results: dict[str, Any]) -> str:
    """
    @return: the results as text tables.
    """
    env = results["environment"]
    settings = results["settings"]
    tls = results.get("tls") or {}
    lines = [
        "tunnelkit wire benchmark (loopback, two processes)",
        f"Python {env['python']}, Twisted {env['twisted']}, {env['openssl']},"
        f" {env['cpus']} CPUs",
        f"{settings['rounds']} rounds x {settings['seconds']:g}s per case,"
        f" chunk {settings['chunk']} B, yamux window {settings['stream_window']} B,"
        f" frame {settings['frame_payload']} B"
        + (f", {tls['version']} {tls['cipher']}" if tls else ""),
    ]
    if settings["profiling"]:
        lines.append("PROFILING WAS ON: the numbers below are slowed down by it.")

    summary = results["summary"]
    if summary:
        rows = []
        for case, values in summary.items():
            rows.append(
                [
                    CASE_TITLES[case],
                    f"{values['median']:.1f}",
                    f"{values['min']:.1f}",
                    f"{values['max']:.1f}",
                    _number(values["ratio"], "{:.2f}"),
                    f"{values['writer_cpu_share']:.0%}",
                    f"{values['sink_cpu_share']:.0%}",
                ]
            )
        headers = ["throughput", "MB/s", "min", "max", "vs plain", "writer CPU"]
        lines += ["", render_table([*headers, "sink CPU"], rows)]
        shared = summary.get("mux8")
        if shared is not None:
            lines.append(
                f"8 streams: each carried {shared['stream_share_min']:.1%} to"
                f" {shared['stream_share_max']:.1%} of the bytes (even: 12.5%)"
            )

    rows = []
    churn = results.get("open_close")
    if churn is not None:
        title = f"open + close {churn['streams']}, {churn['in_flight']} at once"
        writer = churn["writer_cpu_per_stream"] * 1e6
        sink = churn["sink_cpu_per_stream"] * 1e6
        rows += [
            [
                f"{title}: CPU per stream",
                f"{churn['cpu_per_stream'] * 1e6:.0f} us"
                f" (writer {writer:.0f} + sink {sink:.0f})",
            ],
            [
                f"{title}: wall per stream",
                f"{churn['wall_per_stream'] * 1e6:.0f} us"
                f" ({churn['streams'] / churn['wall']:,.0f} streams/s)",
            ],
        ]
    idle = results.get("idle_streams")
    if idle is not None:
        title = f"{idle['streams']} idle streams, sink"
        rows += [
            [f"{title}: tracemalloc", f"{idle['traced_per_stream']:,.0f} B/stream"],
            [f"{title}: RSS growth", f"{idle['rss_per_stream']:,.0f} B/stream"],
        ]
    if rows:
        lines += ["", render_table(["streams", "cost"], rows)]
    if idle is not None:
        sites = [
            [
                site["where"],
                f"{site['bytes'] / idle['streams']:.0f}",
                str(site["blocks"]),
            ]
            for site in idle["sites"]
        ]
        lines += [
            "",
            render_table(["idle stream bytes by line", "B/stream", "blocks"], sites),
        ]

    targets = results["targets"]
    if targets:
        rows = [
            [
                target["name"],
                _number(
                    target["value"], "{:,.2f}" if target["value"] < 10 else "{:,.0f}"
                ),
                target["limit"],
                "PASS" if target["pass"] else "FAIL",
            ]
            for target in targets
        ]
        lines += ["", render_table(["target", "measured", "limit", "result"], rows)]
    return "\n".join(lines)


def _number(value: float, style: str) -> str:
    return "n/a" if math.isnan(value) else style.format(value)


# Command line


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """
    @param argv: the arguments, or C{None} for the command line's.
    @return: the options, checked.
    """
    defaults = MuxConfig()
    parser = argparse.ArgumentParser(
        description="Throughput of TLS + yamux against plain TLS on loopback,"
        " and the cost of opening, closing and holding streams."
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="per sample")
    parser.add_argument("--rounds", type=int, default=3, help="samples per case")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds per case")
    parser.add_argument("--json", metavar="PATH", help="also write results here")
    parser.add_argument(
        "--cases",
        default=",".join(ALL_CASES),
        type=lambda text: [case for case in text.split(",") if case],
        help=f"comma-separated subset of {','.join(ALL_CASES)}",
    )
    parser.add_argument("--chunk", type=int, default=CHUNK_SIZE, help="write size")
    parser.add_argument(
        "--window", type=int, default=defaults.max_stream_window, help="stream window"
    )
    parser.add_argument(
        "--frame", type=int, default=defaults.max_frame_payload, help="frame payload"
    )
    parser.add_argument("--open-close", type=int, default=5000, help="streams")
    parser.add_argument("--idle", type=int, default=1000, help="idle streams")
    parser.add_argument(
        "--profile", metavar="DIR", help="write cProfile stats of both processes"
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit with 1 when a target is missed"
    )
    parser.add_argument("--role", choices=["parent", "sink"], default="parent")
    parser.add_argument("--cert", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = set(args.cases) - set(ALL_CASES)
    if unknown:
        parser.error(f"unknown cases: {', '.join(sorted(unknown))}")
    return args


def run_parent(args: argparse.Namespace) -> int:
    """
    Start the sink, measure, report; the sink is stopped on every way out.

    @return: the exit status.
    """
    begin_logging()
    if args.profile is not None:
        os.makedirs(args.profile, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tunnelkit-bench-") as directory:
        certificate = make_certificate(directory)
        sink_argv = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--role=sink",
            f"--cert={certificate.cert_path.path}",
            f"--key={certificate.key_path.path}",
            f"--window={args.window}",
            f"--frame={args.frame}",
        ]
        with SinkProcess(sink_argv) as sink:
            outcome: dict[str, Any] = {}

            async def main(reactor: Any) -> None:
                outcome["results"] = await measure(
                    reactor, args, certificate.ca_path.path, sink.announcement["port"]
                )

            try:
                task.react(lambda reactor: Deferred.fromCoroutine(main(reactor)))
            except SystemExit as exit:
                if exit.code not in (0, None) or "results" not in outcome:
                    return 2

    results = outcome["results"]
    sys.stdout.write(report(results) + "\n")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as output:
            json.dump(results, output, indent=2)
    if args.strict and not all(target["pass"] for target in results["targets"]):
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run as the measuring parent or, with C{--role sink}, as its sink.

    @return: the exit status: 0 when the run completed, 1 when C{--strict}
        and a target was missed, 2 when the run failed.
    """
    args = parse_args(argv)
    if args.role == "sink":
        return run_sink(args)
    return run_parent(args)


if __name__ == "__main__":
    sys.exit(main())
