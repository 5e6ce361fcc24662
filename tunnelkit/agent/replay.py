"""
Replaying a captured request straight to a tunnel's local service, as it
was or with changes, and capturing the new exchange.

A replay does not go through the edge: the agent connects to the tunnel's
upstream itself (so the edge's checks, such as basic authentication, are
not applied again), sends the request, reads the response into a new
capture that names the one it replays, and closes the connection.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from tunnelkit.agent.captures import Capture
from tunnelkit.agent.dial import UpstreamEnd, dial_upstream
from tunnelkit.agent.exchanges import ExchangeTap
from tunnelkit.agent.inspection import Inspection
from tunnelkit.agent.tunnel import Tunnel

REPLAY_TIMEOUT = 60.0
"""Seconds a replay may take, from connecting to the end of the response,
before its connection is closed."""

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(r"[^\x00-\x08\x0a-\x1f\x7f]*")
_TARGET = re.compile(r"[\x21-\x7e]+")

_FRAMING = frozenset({b"content-length", b"transfer-encoding"})


class ReplayRefused(ValueError):
    """
    The request cannot be replayed as asked; the message says why.
    """


@dataclass(frozen=True)
class Changes:
    """
    What to change in a captured request before replaying it; C{None}
    keeps what was captured.

    @ivar method: the method.
    @ivar path: the request target, such as C{/path?q=1}.
    @ivar headers: every header field, replacing the captured ones: values
        by name, in order.
    @ivar body: the body.
    """

    method: str | None = None
    path: str | None = None
    headers: Mapping[str, Sequence[str]] | None = None
    body: bytes | None = None


def replayed_request(capture: Capture) -> bytes:
    """
    @return: the captured request's bytes, as they were sent.
    @raise ReplayRefused: when its body was not kept whole.
    """
    if capture.request.truncated:
        raise ReplayRefused(
            f"the body of request {capture.id} was longer than what was kept of"
            " it; replay it with a new body instead"
        )
    return capture.request.raw


def changed_request(capture: Capture, changes: Changes) -> bytes:
    """
    Build the request to replay from a captured one and some changes.

    The header fields are the captured ones, or those given; the body is
    the captured one, decoded, or the one given, and is sent with a
    C{Content-Length} counted anew (any C{Transfer-Encoding} is left out).

    @return: the request's bytes.
    @raise ReplayRefused: when a change is not valid HTTP, or the captured
        body is needed but was not kept whole.
    """
    request = capture.request
    method = request.method if changes.method is None else changes.method
    target = request.uri if changes.path is None else changes.path
    if not _TOKEN.fullmatch(method):
        raise ReplayRefused(f"{method!r} is not an HTTP method")
    if not _TARGET.fullmatch(target):
        raise ReplayRefused(
            f"{target!r} is not a request target; give a path such as /path?q=1"
        )

    fields: list[tuple[bytes, bytes]]
    if changes.headers is None:
        fields = list(request.header_fields)
    else:
        fields = []
        for name, values in changes.headers.items():
            if not _TOKEN.fullmatch(name):
                raise ReplayRefused(f"{name!r} is not a header name")
            for value in values:
                if not _FIELD_VALUE.fullmatch(value):
                    raise ReplayRefused(f"the value of {name} has a line break")
                fields.append((name.encode("ascii"), _field_bytes(value)))

    body = changes.body
    if body is None:
        if request.truncated:
            raise ReplayRefused(
                f"the body of request {capture.id} was longer than what was"
                " kept of it; give a new body"
            )
        body = request.body
    framed = any(name.lower() in _FRAMING for name, _ in fields)
    fields = [(n, v) for n, v in fields if n.lower() not in _FRAMING]
    if body or framed or changes.body is not None:
        fields.append((b"Content-Length", b"%d" % (len(body),)))

    lines = [f"{method} {target} {request.proto}".encode("latin-1")]
    lines += [name + b": " + value for name, value in fields]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _field_bytes(value: str) -> bytes:
    """
    @return: a header value as sent: in Latin-1, as captured values are
        shown, so that an unchanged value goes out as it came in; a value
        with characters beyond Latin-1 goes out in UTF-8.
    """
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


class _ReplayEnd(UpstreamEnd):
    """
    The agent's connection to the upstream for one replay: sends the
    request, shows both directions to the tap, and closes once the
    response is complete (or after L{REPLAY_TIMEOUT}).
    """

    def __init__(
        self, tls: bool, tap: ExchangeTap, request: bytes, reactor: Any
    ) -> None:
        super().__init__(tls)
        self.tap = tap
        self.request = request
        self.reactor = reactor
        self._timeout: IDelayedCall | None = None

    def send(self) -> None:
        """
        Send the request.
        """
        self._timeout = self.reactor.callLater(REPLAY_TIMEOUT, self._too_slow)
        self.tap.request_data(self.request)
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.tap.response_data(data)
        if self.tap.stopped or self.tap.idle:
            self.transport.loseConnection()

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()

    def _too_slow(self) -> None:
        self._timeout = None
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self.tap.connection_lost()
        super().connectionLost(reason)


def replay(
    reactor: Any,
    inspection: Inspection,
    tunnel: Tunnel,
    request: bytes,
    replay_of: str,
    tunnel_name: str | None = None,
) -> "Deferred[None]":
    """
    Send a request to a tunnel's upstream and capture the exchange.

    @param request: the bytes to send: one whole request.
    @param replay_of: the id of the capture replayed.
    @param tunnel_name: the name the new capture carries; the tunnel's own
        by default.
    @return: a Deferred that fires once the request is sent, or fails with
        the reason the upstream could not be reached.
    @raise ReplayRefused: when the tunnel's upstream is not a web service.
    """
    addr = tunnel.definition.addr
    if tunnel.proto != "http" or addr.scheme not in ("http", "https"):
        raise ReplayRefused(
            f"tunnel {tunnel.name!r} does not forward to a web service, so"
            " requests cannot be replayed to it"
        )
    tap = inspection.tap(tunnel, "", replay_of)
    if tunnel_name is not None:
        tap.name_tunnel(tunnel_name)

    def build(tls: bool) -> UpstreamEnd:
        return _ReplayEnd(tls, tap, request, reactor)

    connecting = dial_upstream(reactor, addr, build_end=build)

    def connected(end: UpstreamEnd) -> None:
        assert isinstance(end, _ReplayEnd)
        end.send()

    return connecting.addCallback(connected)
