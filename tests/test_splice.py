"""
Tests for L{tunnelkit.splice} over real loopback TCP connections.
"""

import hashlib
import os

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from tunnelkit.splice import SpliceEnd, splice


@implementer(IHalfCloseableProtocol)
class HalfCloseEcho(Protocol):
    """
    Echo everything; after the peer's FIN, send FIN back.
    """

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)

    def readConnectionLost(self) -> None:
        self.transport.loseWriteConnection()

    def writeConnectionLost(self) -> None:
        self.transport.loseConnection()


@implementer(IHalfCloseableProtocol)
class Client(Protocol):
    """
    Send a payload, half-close, and collect the answer until the close.
    """

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.received = hashlib.sha256()
        self.count = 0
        self.done: Deferred = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.payload)
        self.transport.loseWriteConnection()

    def dataReceived(self, data: bytes) -> None:
        self.received.update(data)
        self.count += len(data)

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        self.reason = reason
        self.done.callback(None)


class SpliceTests(TestCase):
    """
    A splice between a public connection and an upstream connection.
    """

    @inlineCallbacks
    def setUp(self):
        self.upstream = yield TCP4ServerEndpoint(
            reactor, 0, interface="127.0.0.1"
        ).listen(Factory.forProtocol(HalfCloseEcho))
        self.addCleanup(self.upstream.stopListening)
        upstream_port = self.upstream.getHost().port
        self.joined: Deferred = Deferred()
        self.upstream_lost: Deferred = Deferred()

        def build(address):
            public = SpliceEnd()
            near = SpliceEnd()
            lost = near.connectionLost

            def near_lost(reason):
                lost(reason)
                self.upstream_lost.callback(reason.value)

            near.connectionLost = near_lost

            def joined(_):
                splice(public, near)
                self.joined.callback(None)

            def failed(reason):
                public.transport.abortConnection()

            TCP4ClientEndpoint(reactor, "127.0.0.1", upstream_port).connect(
                Factory.forProtocol(lambda: near)
            ).addCallbacks(joined, failed)
            return public

        factory = Factory()
        factory.buildProtocol = build
        self.front = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            factory
        )
        self.addCleanup(self.front.stopListening)

    @inlineCallbacks
    def test_bytes_and_half_close_pass_through(self):
        """
        A payload sent through the splice comes back whole after a
        half-close, and both sides then close cleanly.
        """
        payload = os.urandom(3 * 1024 * 1024)
        client = Client(payload)

        yield TCP4ClientEndpoint(
            reactor, "127.0.0.1", self.front.getHost().port
        ).connect(Factory.forProtocol(lambda: client))
        yield client.done.addTimeout(30, reactor)

        self.assertEqual(client.count, len(payload))
        self.assertEqual(client.received.digest(), hashlib.sha256(payload).digest())
        self.assertTrue(client.reason.check(ConnectionDone))

    @inlineCallbacks
    def test_abort_propagates(self):
        """
        Aborting the public connection aborts the upstream connection.
        """
        client = Client(b"")
        client.connectionMade = lambda: None
        yield TCP4ClientEndpoint(
            reactor, "127.0.0.1", self.front.getHost().port
        ).connect(Factory.forProtocol(lambda: client))
        yield self.joined.addTimeout(30, reactor)

        client.transport.abortConnection()
        yield client.done
        reason = yield self.upstream_lost.addTimeout(30, reactor)

        self.assertNotIsInstance(reason, ConnectionDone)
