"""
Local web services that HTTP tunnels forward to in the end-to-end tests: an
upstream that records every request it receives (so a test can see the
headers the edge added), and a bulk upstream that hashes request bodies and
streams generated responses without holding either in memory.

Each listens on a loopback port the kernel picks until the test's clean-up,
which also aborts the connections still open.
"""

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterator

import httptools
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPullProducer
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from zope.interface import implementer

from tests.e2e import WAIT, bounded
from tests.loopback import listen_loopback
from tests.pattern import pattern_blocks

# The recording upstream


@dataclass
class Received:
    """
    One request as the upstream received it.

    @ivar method: the method, such as C{GET}.
    @ivar target: the request target, such as C{/path?query}.
    @ivar headers: every header field in order, names in lower case.
    @ivar peer_port: the port of the connection it came on, which tells
        requests on one connection from requests on several.
    @ivar body: the request body.
    @ivar secure: whether it came over TLS.
    """

    method: str
    target: str
    headers: list[tuple[str, str]]
    peer_port: int
    body: bytes
    secure: bool

    def header(self, name: str) -> str | None:
        """
        @return: the value of the first field called C{name}, if any.
        """
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        """
        @return: the values of every field called C{name}.
        """
        return [value for key, value in self.headers if key == name.lower()]


class _Recorder(Resource):
    """
    Answer every request with C{200} and a JSON summary of it, after
    recording it.
    """

    isLeaf = True

    def __init__(self, received: list[Received]) -> None:
        super().__init__()
        self.received = received

    def render(self, request: Request) -> bytes:
        headers = [
            (name.decode("latin-1").lower(), value.decode("latin-1"))
            for name, values in request.requestHeaders.getAllRawHeaders()
            for value in values
        ]
        content = request.content
        body = content.read() if content is not None else b""
        peer: Any = request.getClientAddress()
        entry = Received(
            request.method.decode("ascii"),
            request.uri.decode("latin-1"),
            headers,
            peer.port,
            body,
            request.isSecure(),
        )
        self.received.append(entry)
        request.setHeader(b"content-type", b"application/json")
        summary = {
            "method": entry.method,
            "target": entry.target,
            "host": entry.header("host"),
        }
        return json.dumps(summary).encode("utf-8")


class _RecordingSite(Site):
    """
    A quiet site that remembers its connections, and how each ended, and
    writes no access log.
    """

    noisy = False

    def __init__(self, resource: Resource, upstream: "RecordingUpstream") -> None:
        super().__init__(resource)
        self.upstream = upstream
        self.connections: set[Any] = set()

    def buildProtocol(self, addr: Any) -> Any:
        channel = super().buildProtocol(addr)
        self.connections.add(channel)
        original = channel.connectionLost

        def lost(reason: Failure = connectionDone) -> None:
            self.connections.discard(channel)
            original(reason)
            self.upstream.connection_ended(reason)

        channel.connectionLost = lost
        return channel

    def log(self, request: Any) -> None:
        pass


@dataclass
class RecordingUpstream:
    """
    A local web service that answers every request with C{200} and a JSON
    summary (method, target, the C{Host} it saw), keeping every request and
    how each connection ended.

    @ivar port: its loopback port.
    @ivar received: the requests so far, in order.
    @ivar ends: why each connection that ended did, in order.
    """

    port: int = 0
    received: list[Received] = field(default_factory=list)
    ends: list[Failure] = field(default_factory=list)
    _end_waiters: list[tuple[int, Deferred]] = field(default_factory=list)

    def connection_ended(self, reason: Failure) -> None:
        """
        Record that a connection ended, and why.
        """
        self.ends.append(reason)
        for entry in list(self._end_waiters):
            count, waiter = entry
            if len(self.ends) >= count:
                self._end_waiters.remove(entry)
                waiter.callback(list(self.ends))

    def wait_for_ends(self, count: int, seconds: float = WAIT) -> Deferred:
        """
        @return: a Deferred firing with L{ends} once C{count} connections
            have ended.
        """
        waiter: Deferred = Deferred()
        if len(self.ends) >= count:
            waiter.callback(list(self.ends))
            return waiter
        self._end_waiters.append((count, waiter))
        return bounded(waiter, seconds, f"{count} upstream connections to end")


def listen_recording(test: TestCase, tls: Any = None) -> Deferred:
    """
    Start a L{RecordingUpstream} until the test's clean-up.

    @param tls: server TLS options (a C{CertificateOptions}), to
        serve HTTPS instead of HTTP.
    @return: a Deferred firing with it.
    """
    upstream = RecordingUpstream()
    site = _RecordingSite(_Recorder(upstream.received), upstream)
    listening = listen_loopback(test, site, site.connections, tls)

    def started(port: int) -> RecordingUpstream:
        upstream.port = port
        return upstream

    return listening.addCallback(started)


# The bulk upstream


@dataclass
class Transfer:
    """
    What the bulk upstream counted of one request or response body.

    @ivar direction: C{received} for a request body, C{sent} for a
        response body.
    @ivar length: the bytes counted.
    @ivar sha256: their SHA-256 in hex, once the body is complete.
    @ivar chunked: whether the request body came chunked.
    """

    direction: str
    length: int = 0
    sha256: str | None = None
    chunked: bool = False


_BYTES_TARGET = re.compile(rb"/bytes/([0-9]+)")
_RATE_TARGET = re.compile(rb"[^?]*\?rate=([0-9]+)")


@implementer(IPullProducer)
class _BulkExchange(Protocol):
    """
    One connection to the bulk upstream, one request on it: C{GET
    /bytes/N} is answered with the first N bytes of L{tests.pattern}'s
    stream as the connection takes them; any other request has its body
    hashed as it arrives (no faster than C{rate} bytes a second when the
    target ends with C{?rate=N}) and is answered with a JSON C{{"length":
    N, "sha256": HEX}}. The connection is closed after the response.
    """

    # typing note: the TCP transport's producer and abort methods are on no
    # single Twisted interface.
    transport: Any

    def __init__(self, upstream: "BulkUpstream") -> None:
        self.upstream = upstream
        self.parser = httptools.HttpRequestParser(self)
        self.target = b""
        self.digest = hashlib.sha256()
        self.chunked = False
        self.transfer: Transfer | None = None
        self.blocks: Iterator[bytes] = iter(())
        self.total = 0
        self.rate = 0
        self.started = 0.0
        self.resume: IDelayedCall | None = None

    def connectionMade(self) -> None:
        self.upstream.connections.add(self)

    def dataReceived(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.abortConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.upstream.connections.discard(self)
        if self.resume is not None and self.resume.active():
            self.resume.cancel()

    # Parser callbacks

    def on_url(self, url: bytes) -> None:
        self.target += url

    def on_headers_complete(self) -> None:
        self.transfer = Transfer("received", chunked=self.chunked)
        limited = _RATE_TARGET.fullmatch(self.target)
        if limited is not None:
            self.rate = int(limited.group(1))
            self.started = reactor.seconds()

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"transfer-encoding" and b"chunked" in value.lower():
            self.chunked = True

    def on_body(self, body: bytes) -> None:
        assert self.transfer is not None
        self.transfer.length += len(body)
        self.digest.update(body)
        if self.rate and self.resume is None:
            due = self.started + self.transfer.length / self.rate
            late = due - reactor.seconds()
            if late > 0:
                self.transport.pauseProducing()
                self.resume = reactor.callLater(late, self._read_again)

    def _read_again(self) -> None:
        self.resume = None
        self.transport.resumeProducing()

    def on_message_complete(self) -> None:
        transfer = self.transfer
        assert transfer is not None
        requested = _BYTES_TARGET.fullmatch(self.target)
        if self.parser.get_method() == b"GET" and requested is not None:
            self._send(int(requested.group(1)))
            return
        transfer.sha256 = self.digest.hexdigest()
        self.upstream.transfers.append(transfer)
        body = json.dumps({"length": transfer.length, "sha256": transfer.sha256})
        self._respond(body.encode("ascii"))
        self.transport.loseConnection()

    # The response

    def _respond(self, body: bytes) -> None:
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
        )

    def _send(self, total: int) -> None:
        transfer = Transfer("sent")
        self.upstream.transfers.append(transfer)
        self.transfer = transfer
        self.total = total
        self.blocks = pattern_blocks(total)
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (total,)
        )
        self.transport.registerProducer(self, False)

    def resumeProducing(self) -> None:
        transfer = self.transfer
        assert transfer is not None
        block = next(self.blocks, None)
        if block is not None:
            transfer.length += len(block)
            self.digest.update(block)
            self.transport.write(block)
        if transfer.length >= self.total:
            transfer.sha256 = self.digest.hexdigest()
            self.transport.unregisterProducer()
            self.transport.loseConnection()

    def stopProducing(self) -> None:
        self.blocks = iter(())


class _BulkFactory(Factory):
    noisy = False

    def __init__(self, upstream: "BulkUpstream") -> None:
        self.upstream = upstream

    def buildProtocol(self, addr: Any) -> _BulkExchange:
        return _BulkExchange(self.upstream)


@dataclass
class BulkUpstream:
    """
    A local web service for bulk transfers: C{GET /bytes/N} sends N bytes
    of L{tests.pattern}'s stream in 1 MiB writes paced by the
    connection, and a request with a body gets the body's length and
    SHA-256 back as JSON (C{POST /PATH?rate=N} reads the body at N bytes a
    second at most). Nothing is kept but counts and digests.

    @ivar port: its loopback port.
    @ivar transfers: every body counted so far.
    """

    port: int = 0
    transfers: list[Transfer] = field(default_factory=list)
    connections: set[_BulkExchange] = field(default_factory=set)


def listen_bulk(test: TestCase) -> Deferred:
    """
    Start a L{BulkUpstream} until the test's clean-up.

    @return: a Deferred firing with it.
    """
    upstream = BulkUpstream()
    listening = listen_loopback(test, _BulkFactory(upstream), upstream.connections)

    def started(port: int) -> BulkUpstream:
        upstream.port = port
        return upstream

    return listening.addCallback(started)
