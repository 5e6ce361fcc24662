"""
Inspection of HTTP tunnels: the agent's side of capturing exchanges.

An L{Inspection} holds the agent's L{CaptureStore} and the body cap, and
decides which connections are captured: those of HTTP tunnels with
C{inspect} on whose upstream is a web service (C{http://} or C{https://};
the built-in file server's exchanges are not captured). Such a connection
gets a L{CapturingStream}, which passes a copy of the bytes in each
direction to an L{ExchangeTap}; the bytes themselves go through the splice
unchanged. Every other connection gets the plain L{ProxiedStream}, with no
tap at all, so a tunnel with inspection off pays nothing for it.

With inspection on, each completed exchange also counts in its tunnel's
HTTP metrics; with it off, a tunnel's HTTP metrics stay at zero.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from tunnelkit.agent.captures import Capture, CapturedRequest, CaptureStore
from tunnelkit.agent.dial import UpstreamEnd, dial_upstream
from tunnelkit.agent.exchanges import ExchangeTap
from tunnelkit.agent.tunnel import Tunnel
from tunnelkit.agent.upstream import ProxiedStream
from tunnelkit.control.messages import ProxyHeader

DEFAULT_BODY_CAP = 1024 * 1024
"""The most bytes of each request or response body kept, unless the config
file's C{inspect_body_size} says otherwise."""


def client_host(client_addr: str) -> str:
    """
    @return: the host part of a C{host:port} or C{[v6]:port} address.
    """
    host, colon, port = client_addr.rpartition(":")
    if not colon or not port.isdigit():
        return client_addr
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def request_tunnel_name(tunnel: Tunnel, request: CapturedRequest) -> str:
    """
    @return: the name the API gives a request's tunnel: C{NAME (http)} when
        it came to the C{http} URL of a tunnel that has two URLs (the edge
        says which in C{X-Forwarded-Proto}), else C{NAME}.
    """
    if len(tunnel.public_urls) > 1 and request.forwarded_proto == "http":
        return f"{tunnel.name} (http)"
    return tunnel.name


class _TunnelRecorder:
    """
    Keeps one tunnel's captures in the store and counts its exchanges.
    """

    def __init__(self, store: CaptureStore, tunnel: Tunnel) -> None:
        self.opened = store.add
        self._complete = store.complete
        self._metrics = tunnel.metrics

    def completed(self, capture: Capture) -> None:
        self._complete(capture)
        ended = capture.ended
        if capture.response is not None and ended is not None:
            self._metrics.http_exchange(max(0.0, ended - capture.started))


class Inspection:
    """
    The agent's captures and how they are made.

    @ivar store: the captures.
    @ivar body_cap: the most bytes kept of each body.
    """

    def __init__(self, store: CaptureStore, clock: Any, body_cap: int) -> None:
        """
        @param clock: an C{IReactorTime} provider, for the time of each
            exchange.
        """
        self.store = store
        self.clock = clock
        self.body_cap = body_cap

    def covers(self, tunnel: Tunnel) -> bool:
        """
        @return: whether the tunnel's HTTP connections are captured: those
            of an http tunnel, or of a labeled tunnel, with C{inspect} on,
            to a web service.
        """
        definition = tunnel.definition
        return (
            (definition.proto == "http" or definition.labeled)
            and definition.inspect
            and definition.addr.scheme in ("http", "https")
        )

    def captures(self, tunnel: Tunnel, header: ProxyHeader) -> bool:
        """
        @return: whether one stream is captured: a stream of a tunnel
            L{covers} says yes to that carries HTTP, which a labeled
            tunnel's streams do only from HTTPS edges (not from TCP or TLS
            edges).
        """
        if not self.covers(tunnel):
            return False
        if not tunnel.definition.labeled:
            return True
        return header.proto in ("http", "https") and not header.passthrough_tls

    def tap(
        self, tunnel: Tunnel, remote_addr: str, replay_of: str | None = None
    ) -> ExchangeTap:
        """
        @return: a tap for one connection of C{tunnel}.
        """
        return ExchangeTap(
            _TunnelRecorder(self.store, tunnel),
            self.clock.seconds,
            remote_addr,
            partial(request_tunnel_name, tunnel),
            self.body_cap,
            replay_of,
        )

    def stream(
        self, reactor: Any, tunnel: Tunnel, header: ProxyHeader
    ) -> "CapturingStream":
        """
        @return: the protocol for one stream of a tunnel L{covers} says yes
            to.
        """
        tap = self.tap(tunnel, client_host(header.client_addr))
        return CapturingStream(reactor, tunnel, header, tap)


class CapturedUpstreamEnd(UpstreamEnd):
    """
    The local service's end of a captured connection: what it reads, the
    responses, is shown to the tap before it goes on.
    """

    def __init__(self, tls: bool, tap: ExchangeTap) -> None:
        super().__init__(tls)
        self.tap = tap

    def dataReceived(self, data: bytes) -> None:
        if self.other is not None:
            self.tap.response_data(data)
        super().dataReceived(data)

    def readConnectionLost(self) -> None:
        if self.other is not None:
            self.tap.connection_lost()
        super().readConnectionLost()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.tap.connection_lost()
        super().connectionLost(reason)


class CapturingStream(ProxiedStream):
    """
    A proxied stream whose requests, and the responses to them, are
    captured. What it reads before its upstream is joined waits, and is
    shown to the tap once it is passed on.
    """

    def __init__(
        self, reactor: Any, tunnel: Tunnel, header: ProxyHeader, tap: ExchangeTap
    ) -> None:
        super().__init__(reactor, tunnel, header)
        self.tap = tap

    def _dial(self) -> "Deferred[UpstreamEnd]":
        tap = self.tap
        return dial_upstream(
            self.reactor,
            self.tunnel.definition.addr,
            build_end=lambda tls: CapturedUpstreamEnd(tls, tap),
        )

    def dataReceived(self, data: bytes) -> None:
        if self.other is not None:
            self.tap.request_data(data)
        super().dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.tap.connection_lost()
        super().connectionLost(reason)
