"""
End-to-end test of the wire on loopback: an agent-side and an edge-side
yamux session over real TLS (the link's own, L{tunnelkit.tlstransport})
exchange a thousand concurrent streams in both directions, every byte
checked by hash.
"""

import hashlib
import os
import random

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from tunnelkit.mux import MuxConfig, MuxProtocol
from tunnelkit.pki import (
    client_tls_options,
    ensure_edge_certificate,
    server_tls_options,
)
from tunnelkit.tlstransport import LinkTLSFactory, wrap_client_tls

STREAMS_EACH_WAY = 500
CHUNK = 64 * 1024
SOURCE = random.Random(2).randbytes(8 * 1024 * 1024 + 4096)


def stream_sizes(rng: random.Random, count: int) -> list[int]:
    """
    Sizes mostly small with a tail up to 8 MiB, and two streams of exactly
    8 MiB so the largest case is always there.
    """
    sizes = [8 * 1024 * 1024, 8 * 1024 * 1024]
    while len(sizes) < count:
        pick = rng.random()
        if pick < 0.90:
            sizes.append(rng.randint(0, 64 * 1024))
        elif pick < 0.99:
            sizes.append(rng.randint(64 * 1024, 1024 * 1024))
        else:
            sizes.append(rng.randint(1024 * 1024, 8 * 1024 * 1024))
    return sizes


@implementer(IHalfCloseableProtocol)
class Echo(Protocol):
    """
    Echo every byte; answer the peer's FIN with ours.
    """

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)

    def readConnectionLost(self) -> None:
        self.transport.loseWriteConnection()

    def writeConnectionLost(self) -> None:
        pass


@implementer(IHalfCloseableProtocol, IPushProducer)
class Exchange(Protocol):
    """
    Send a payload in chunks as the stream allows, half-close, and hash the
    echo until the stream closes.
    """

    def __init__(self, offset: int, size: int) -> None:
        self.payload = memoryview(SOURCE)[offset : offset + size]
        self.sent = 0
        self.paused = False
        self.echo = hashlib.sha256()
        self.received = 0
        self.done: Deferred = Deferred()

    def connectionMade(self) -> None:
        self.transport.registerProducer(self, True)
        self.resumeProducing()

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and self.sent < len(self.payload):
            chunk = bytes(self.payload[self.sent : self.sent + CHUNK])
            self.sent += len(chunk)
            self.transport.write(chunk)
        if self.sent == len(self.payload) and not self.paused:
            self.transport.unregisterProducer()
            self.transport.loseWriteConnection()

    def pauseProducing(self) -> None:
        self.paused = True

    def stopProducing(self) -> None:
        self.paused = True

    def dataReceived(self, data: bytes) -> None:
        self.echo.update(data)
        self.received += len(data)

    def readConnectionLost(self) -> None:
        pass

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        expected = hashlib.sha256(self.payload).hexdigest()
        self.done.callback(
            (reason.type, self.received, self.echo.hexdigest(), expected)
        )


class ThousandStreamsTests(TestCase):
    """
    The wire under load, over real TLS on loopback.
    """

    timeout = 300

    @inlineCallbacks
    def setUp(self):
        state = FilePath(self.mktemp())
        certificate = ensure_edge_certificate(state, ["127.0.0.1"])
        self.edge_sessions: list[MuxProtocol] = []
        config = MuxConfig(keepalive_interval=0)

        def edge(address):
            mux = MuxProtocol(False, reactor, Factory.forProtocol(Echo), config)
            self.edge_sessions.append(mux)
            return mux

        factory = Factory()
        factory.buildProtocol = edge
        options = server_tls_options(certificate.cert_path, certificate.key_path)
        endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        self.listener = yield endpoint.listen(LinkTLSFactory(options, False, factory))
        self.addCleanup(self.listener.stopListening)

        agent_factory = Factory()
        agent_factory.buildProtocol = lambda address: MuxProtocol(
            True, reactor, Factory.forProtocol(Echo), config
        )
        client = wrap_client_tls(
            client_tls_options("127.0.0.1", certificate.ca_path.path),
            TCP4ClientEndpoint(reactor, "127.0.0.1", self.listener.getHost().port),
        )
        self.agent = yield client.connect(agent_factory)
        self.addCleanup(self.close)

    def close(self) -> Deferred:
        closed = self.agent.when_closed()
        self.agent.close()
        return closed

    @inlineCallbacks
    def test_thousand_streams_both_ways(self):
        """
        500 streams opened by the agent and 500 by the edge, of random
        sizes up to 8 MiB, all at once: every echo matches its payload by
        length and SHA-256, every stream closes cleanly, and both sessions
        are left with no stream.
        """
        rng = random.Random(int.from_bytes(os.urandom(4), "big"))
        seed_note = f"(sizes seed {rng.random()})"
        sizes = stream_sizes(rng, STREAMS_EACH_WAY * 2)
        edge = self.edge_sessions[0]
        exchanges = []

        for index, size in enumerate(sizes):
            exchange = Exchange(rng.randint(0, 4096), size)
            opener = self.agent if index % 2 == 0 else edge
            opener.open_stream(exchange)
            exchanges.append(exchange)
        results = yield DeferredList([e.done for e in exchanges], consumeErrors=True)

        outcomes = [outcome for _, outcome in results]
        bad = [
            (index, outcome)
            for index, outcome in enumerate(outcomes)
            if outcome[0] is not ConnectionDone
            or outcome[1] != sizes[index]
            or outcome[2] != outcome[3]
        ]
        self.assertEqual(bad, [], seed_note)
        self.assertEqual(self.agent.streams, {})
        self.assertEqual(edge.streams, {})
