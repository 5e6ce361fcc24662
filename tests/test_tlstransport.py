"""
Tests for L{tunnelkit.tlstransport}: the link's TLS layer over real loopback
sockets, through the paths it changes (bulk writes, draining the send BIO,
large reads) and the ones it keeps (handshake, close, abort, verification).
"""

import hashlib
import random

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tunnelkit.pki import (
    client_tls_options,
    ensure_edge_certificate,
    server_tls_options,
)
from tunnelkit.tlstransport import (
    LINK_BUFFER_SIZE,
    READ_SIZE,
    LinkTLSFactory,
    read_in_large_pieces,
    wrap_client_tls,
)

PAYLOAD = random.Random(7).randbytes(4 * 1024 * 1024 + 12345)

WAIT = 20.0
"""Seconds any one awaited event may take."""


class Collector(Protocol):
    """
    Keep every byte received and how the connection ended.
    """

    def __init__(self) -> None:
        self.received = bytearray()
        self.connected_once: Deferred[None] = Deferred()
        self.reason: Failure | None = None
        self.lost: Deferred[None] = Deferred()
        self.wanted = 0
        self.enough: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.connected_once.callback(None)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.wanted and len(self.received) >= self.wanted:
            self.wanted = 0
            self.enough.callback(None)

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        self.reason = reason
        self.lost.callback(None)


class Echo(Collector):
    """
    Write back every byte received.
    """

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        self.transport.write(data)


def bounded(deferred: Deferred, what: str) -> Deferred:
    """
    @return: C{deferred}, failing with an C{AssertionError} naming C{what}
        if it has not fired within L{WAIT} seconds.
    """

    def timed_out(failure: Failure) -> Failure:
        if failure.check(TimeoutError):
            return Failure(AssertionError(f"waited {WAIT:g}s: {what}"))
        return failure

    return deferred.addTimeout(WAIT, reactor).addErrback(timed_out)


class LinkTLSTests(TestCase):
    """
    An edge-side L{LinkTLSFactory} listener and a client through
    L{wrap_client_tls}, on loopback.
    """

    @inlineCallbacks
    def setUp(self):
        state = FilePath(self.mktemp())
        self.certificate = ensure_edge_certificate(state, ["127.0.0.1"])
        self.servers: list[Collector] = []
        self.first_server: Deferred[Collector] = Deferred()
        self.server_protocol: type[Collector] = Echo

        def build(address):
            server = self.server_protocol()
            self.servers.append(server)
            if not self.first_server.called:
                server.connected_once.addCallback(
                    lambda _: self.first_server.callback(server)
                )
            return server

        factory = Factory()
        factory.buildProtocol = build
        options = server_tls_options(
            self.certificate.cert_path, self.certificate.key_path
        )
        endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        self.listener = yield endpoint.listen(LinkTLSFactory(options, False, factory))
        self.addCleanup(self.listener.stopListening)

    def connect(self, protocol: Protocol, ca_path: str | None = None) -> Deferred:
        """
        Connect C{protocol} to the listener, trusting the edge's CA or
        C{ca_path}.
        """
        port = self.listener.getHost().port
        endpoint = wrap_client_tls(
            client_tls_options("127.0.0.1", ca_path or self.certificate.ca_path.path),
            TCP4ClientEndpoint(reactor, "127.0.0.1", port),
        )
        return endpoint.connect(Factory.forProtocol(lambda: protocol))

    def closed_at_end(self, client: Collector) -> Deferred:
        """
        Close C{client} at the end of the test and wait until both ends
        are gone.
        """

        def close() -> Deferred:
            if client.transport is not None and not client.lost.called:
                client.transport.abortConnection()
            return client.lost

        self.addCleanup(close)

    @inlineCallbacks
    def test_socket_reads_in_large_pieces(self):
        """
        The socket under each end of the link reads up to
        L{LINK_BUFFER_SIZE} bytes at once.
        """
        client = Collector()

        yield self.connect(client)
        self.closed_at_end(client)
        server = yield bounded(self.first_server, "the server saw no connection")

        self.assertEqual(client.transport.transport.bufferSize, LINK_BUFFER_SIZE)
        self.assertEqual(server.transport.transport.bufferSize, LINK_BUFFER_SIZE)

    @inlineCallbacks
    def test_bulk_written_before_handshake(self):
        """
        Megabytes written at once as soon as the connection is made, before
        the handshake is done, come back from the echo whole and in order.
        """
        client = Collector()
        client.wanted = len(PAYLOAD)

        yield self.connect(client)
        self.closed_at_end(client)
        client.transport.write(PAYLOAD)
        yield bounded(client.enough, "the echo did not come back in time")

        self.assertEqual(
            hashlib.sha256(client.received).hexdigest(),
            hashlib.sha256(PAYLOAD).hexdigest(),
        )

    @inlineCallbacks
    def test_small_and_large_writes_keep_order(self):
        """
        Small writes (gathered until the next reactor turn) and large
        sequences (sent at once) mixed on one connection arrive in the
        order they were written.
        """
        client = Collector()
        pieces = []
        offset = 0
        for size in [1, 70_000, 5, 16_384, 300, 1_000_000, 16_383, 7, 200_000]:
            pieces.append(PAYLOAD[offset : offset + size])
            offset += size
        expected = b"".join(pieces)
        client.wanted = len(expected)

        yield self.connect(client)
        self.closed_at_end(client)
        for index, piece in enumerate(pieces):
            if index % 2:
                client.transport.writeSequence([piece[:3], piece[3:]])
            else:
                client.transport.write(piece)
        yield bounded(client.enough, "the echo did not come back in time")

        self.assertTrue(bytes(client.received) == expected)

    @inlineCallbacks
    def test_close_after_write(self):
        """
        Closing right after a large write delivers every byte before the
        peer sees a clean close.
        """
        self.server_protocol = Collector
        client = Collector()

        yield self.connect(client)
        client.transport.write(PAYLOAD)
        client.transport.loseConnection()
        server = yield bounded(self.first_server, "the server saw no connection")
        yield bounded(server.lost, "the server did not see the close")
        reason = server.reason

        self.assertTrue(bytes(server.received) == PAYLOAD)
        self.assertTrue(reason.check(ConnectionDone), reason)

    @inlineCallbacks
    def test_abort(self):
        """
        Aborting one end is seen by the other as a connection lost, not a
        clean close.
        """
        self.server_protocol = Collector
        client = Collector()

        yield self.connect(client)
        server = yield bounded(self.first_server, "the server saw no connection")
        client.transport.abortConnection()
        yield bounded(server.lost, "the server did not see the abort")
        reason = server.reason

        self.assertTrue(reason.check(ConnectionLost), reason)

    @inlineCallbacks
    def test_untrusted_edge(self):
        """
        A client that does not trust the edge's CA fails the handshake:
        nothing is delivered and the connection ends with the TLS error.
        """
        other = ensure_edge_certificate(FilePath(self.mktemp()), ["127.0.0.1"])
        client = Collector()

        yield self.connect(client, other.ca_path.path)
        client.transport.write(b"secret")
        yield bounded(client.lost, "the client did not fail")
        reason = client.reason

        self.assertFalse(reason.check(ConnectionDone), reason)
        self.assertEqual(client.received, b"")
        for server in self.servers:
            self.assertEqual(server.received, b"")


class ReadInLargePiecesTests(SynchronousTestCase):
    """
    Tests for L{read_in_large_pieces}.
    """

    def test_other_transport_untouched(self):
        """
        A transport that is not a socket file descriptor is left alone.
        """
        transport = StringTransport()

        read_in_large_pieces(transport)

        self.assertFalse(hasattr(transport, "bufferSize"))

    def test_read_size(self):
        """
        The default is L{READ_SIZE}, larger than Twisted's 64 KiB.
        """
        self.assertGreater(READ_SIZE, 2**16)
