"""
The agent's numbers in Prometheus's text format (version 0.0.4), served at
C{/metrics}: per tunnel, its connections and HTTP exchanges; for the agent,
its session and its capture store.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from tunnelkit import __version__
from tunnelkit.agent.captures import CaptureStore
from tunnelkit.agent.tunnel import Tunnel

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

NANOSECONDS = 1e9
QUANTILES = (("0.5", "p50"), ("0.9", "p90"), ("0.95", "p95"), ("0.99", "p99"))


def label_value(text: str) -> str:
    """
    @return: C{text} escaped for a label value.
    """
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class Exposition:
    """
    The text of one scrape, built family by family.
    """

    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(
        self,
        name: str,
        kind: str,
        help_text: str,
        samples: Iterable[tuple[Mapping[str, str], float]],
    ) -> None:
        """
        Add one metric family: its help, its type, and its samples, each
        with its labels.
        """
        self._lines.append(f"# HELP {name} {help_text}")
        self._lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            if labels:
                shown = ",".join(
                    f'{key}="{label_value(text)}"' for key, text in labels.items()
                )
                self._lines.append(f"{name}{{{shown}}} {_number(value)}")
            else:
                self._lines.append(f"{name} {_number(value)}")

    def text(self) -> bytes:
        """
        @return: the exposition, ending in a newline.
        """
        return ("\n".join(self._lines) + "\n").encode("utf-8")


def _tunnel_samples(
    tunnels: Sequence[tuple[str, Mapping[str, Any]]], part: str, key: str
) -> list[tuple[Mapping[str, str], float]]:
    return [({"tunnel": name}, numbers[part][key]) for name, numbers in tunnels]


def _quantile_samples(
    tunnels: Sequence[tuple[str, Mapping[str, Any]]], part: str
) -> list[tuple[Mapping[str, str], float]]:
    return [
        ({"tunnel": name, "quantile": quantile}, numbers[part][key] / NANOSECONDS)
        for name, numbers in tunnels
        for quantile, key in QUANTILES
    ]


def metrics_text(
    tunnels: Iterable[Tunnel],
    status: str,
    latency: float | None,
    store: CaptureStore | None,
) -> bytes:
    """
    @param tunnels: the agent's tunnels.
    @param status: the session's state, such as C{online}.
    @param latency: the last round trip to the edge in seconds, if known.
    @param store: the capture store, or C{None} when inspection is off.
    @return: the exposition text.
    """
    numbers = [(tunnel.name, tunnel.metrics.to_json()) for tunnel in tunnels]
    out = Exposition()
    out.family(
        "tunnelkit_agent_info",
        "gauge",
        "The agent's version.",
        [({"version": __version__}, 1)],
    )
    out.family(
        "tunnelkit_session_online",
        "gauge",
        "1 while the agent has a session with its edge, else 0.",
        [({}, 1 if status == "online" else 0)],
    )
    if latency is not None:
        out.family(
            "tunnelkit_session_latency_seconds",
            "gauge",
            "The last measured round trip to the edge.",
            [({}, latency)],
        )
    out.family(
        "tunnelkit_tunnel_connections_total",
        "counter",
        "Connections the tunnel has proxied.",
        _tunnel_samples(numbers, "conns", "count"),
    )
    out.family(
        "tunnelkit_tunnel_connections_open",
        "gauge",
        "Connections of the tunnel open now.",
        _tunnel_samples(numbers, "conns", "gauge"),
    )
    out.family(
        "tunnelkit_tunnel_connection_duration_seconds",
        "gauge",
        "Quantiles of how long the tunnel's closed connections were open.",
        _quantile_samples(numbers, "conns"),
    )
    out.family(
        "tunnelkit_tunnel_http_requests_total",
        "counter",
        "HTTP exchanges of the tunnel completed (counted with inspection on).",
        _tunnel_samples(numbers, "http", "count"),
    )
    out.family(
        "tunnelkit_tunnel_http_duration_seconds",
        "gauge",
        "Quantiles of how long the tunnel's HTTP exchanges took.",
        _quantile_samples(numbers, "http"),
    )
    if store is not None:
        _store_families(out, store)
    return out.text()


def _store_families(out: Exposition, store: CaptureStore) -> None:
    out.family(
        "tunnelkit_capture_store_bytes",
        "gauge",
        "Bytes the capture store holds now.",
        [({}, store.stored_bytes)],
    )
    out.family(
        "tunnelkit_capture_store_peak_bytes",
        "gauge",
        "The most bytes the capture store has held.",
        [({}, store.peak_bytes)],
    )
    out.family(
        "tunnelkit_capture_store_capacity_bytes",
        "gauge",
        "The most bytes the capture store may hold (inspect_db_size).",
        [({}, store.capacity)],
    )
    out.family(
        "tunnelkit_capture_store_entries",
        "gauge",
        "Exchanges the capture store holds now.",
        [({}, len(store))],
    )
    out.family(
        "tunnelkit_captures_total",
        "counter",
        "Exchanges captured.",
        [({}, store.added)],
    )
    out.family(
        "tunnelkit_capture_evictions_total",
        "counter",
        "Exchanges evicted, or not kept, to stay within the capacity.",
        [({}, store.evicted)],
    )
