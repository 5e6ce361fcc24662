"""
Tests for L{tunnelkit.tlstransport}: the link's TLS layer over real loopback
sockets, through the paths it changes (bulk writes, draining the send BIO,
large reads) and the ones it keeps (handshake, close, abort, verification).
"""

import hashlib
import random
import socket
import struct

from OpenSSL import SSL
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.internet.tcp import Connection
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.test.iosim import FakeTransport, IOPump, connect
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from tunnelkit.interfaces import IPiecesReceiver
from tunnelkit.pki import (
    client_tls_options,
    ensure_edge_certificate,
    server_tls_options,
)
from tunnelkit.tlstransport import (
    DELIVERY_SIZE,
    LINK_BUFFER_SIZE,
    READ_SIZE,
    LinkTLSFactory,
    read_in_large_pieces,
    wrap_client_tls,
    write_many_records_at_once,
    write_through,
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
        self.sizes: list[int] = []
        self.connected_once: Deferred[None] = Deferred()
        self.reason: Failure | None = None
        self.lost: Deferred[None] = Deferred()
        self.wanted = 0
        self.enough: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.connected_once.callback(None)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        self.sizes.append(len(data))
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
    def test_deliveries_are_bounded(self):
        """
        Records decrypted together reach the protocol joined, in pieces of
        at most L{DELIVERY_SIZE} bytes, whole and in order.
        """
        self.server_protocol = Collector
        client = Collector()

        yield self.connect(client)
        self.closed_at_end(client)
        server = yield bounded(self.first_server, "the server saw no connection")
        server.wanted = len(PAYLOAD)
        client.transport.write(PAYLOAD)
        yield bounded(server.enough, "the payload did not arrive in time")

        self.assertLessEqual(max(server.sizes), DELIVERY_SIZE)
        self.assertTrue(bytes(server.received) == PAYLOAD)

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


@implementer(IPiecesReceiver)
class PiecesCollector(Collector):
    """
    A L{Collector} that takes received bytes in pieces too.
    """

    def __init__(self) -> None:
        super().__init__()
        self.pieces: list[int] = []

    def piecesReceived(self, pieces: list[bytes]) -> None:
        self.pieces += [len(piece) for piece in pieces]
        self.received += b"".join(pieces)


def record_lengths(wire: bytes) -> list[int]:
    """
    @return: the length of each TLS application data record in C{wire}.
    """
    lengths = []
    while wire:
        kind, _, length = struct.unpack_from(">BHH", wire)
        if kind == 23:
            lengths.append(length)
        wire = wire[5 + length :]
    return lengths


@implementer(IPushProducer)
class IdleProducer:
    """
    A push producer that never writes.
    """

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class RecordTests(SynchronousTestCase):
    """
    How writes become TLS records, between two L{LinkTLSProtocol}s joined
    in memory, after their handshake.
    """

    def setUp(self) -> None:
        self.certificate = ensure_edge_certificate(
            FilePath(self.mktemp()), ["127.0.0.1"]
        )
        self.start(Collector())

    def start(self, server: Collector) -> None:
        """
        Connect a client L{Collector} to C{server} and run their handshake.
        """
        certificate = self.certificate
        self.clock = Clock()
        self.client = Collector()
        self.server = server
        server_tls = LinkTLSFactory(
            server_tls_options(certificate.cert_path, certificate.key_path),
            False,
            Factory.forProtocol(lambda: server),
            self.clock,
        ).buildProtocol(None)
        client_tls = LinkTLSFactory(
            client_tls_options("127.0.0.1", certificate.ca_path.path),
            True,
            Factory.forProtocol(lambda: self.client),
            self.clock,
        ).buildProtocol(None)
        self.wire = FakeTransport(client_tls, isServer=False)
        self.server_wire = FakeTransport(server_tls, isServer=True)
        self.pump: IOPump = connect(
            server_tls, self.server_wire, client_tls, self.wire, clock=self.clock
        )
        self.pump.flush()

    def sent(self) -> list[int]:
        """
        Deliver what the client wrote since the last call to the server.

        @return: the lengths of the application data records in it.
        """
        wire = self.wire.getOutBuffer() or b""
        if wire:
            self.server_wire.bufferReceived(wire)
        return record_lengths(wire)

    def test_frames_fill_records(self) -> None:
        """
        A run of writes that are not multiples of a record, such as yamux
        frames (a 12-byte header and its payload), goes out as full
        records; the bytes after the last full one follow on the next
        reactor turn.
        """
        for _ in range(4):
            self.client.transport.writeSequence([b"h" * 12, b"p" * 65536])
        at_once = self.sent()
        self.clock.advance(0)
        after = self.sent()

        self.assertEqual(len(at_once), 16)
        self.assertEqual(len(set(at_once)), 1)
        self.assertEqual(len(after), 1)
        self.assertEqual(at_once[0] - 2**14, after[0] - 4 * 12)
        self.assertEqual(bytes(self.server.received), (b"h" * 12 + b"p" * 65536) * 4)

    def test_pieces_to_a_protocol_that_takes_them(self) -> None:
        """
        A protocol that provides L{IPiecesReceiver} gets the records one
        read decrypted as they are, in order, not joined.
        """
        server = PiecesCollector()
        self.start(server)
        payload = PAYLOAD[: 5 * 2**14 + 7]

        self.client.transport.write(payload)
        self.pump.flush()

        self.assertEqual(server.pieces, [2**14] * 5 + [7])
        self.assertTrue(bytes(server.received) == payload)

    def test_small_writes_wait_for_next_turn(self) -> None:
        """
        Writes smaller than a record are gathered into one record, written
        on the next reactor turn.
        """
        for piece in (b"one ", b"two ", b"three"):
            self.client.transport.write(piece)
        at_once = self.sent()
        self.clock.advance(0)
        after = self.sent()

        self.assertEqual(at_once, [])
        self.assertEqual(len(after), 1)
        self.assertEqual(bytes(self.server.received), b"one two three")

    def test_unregistering_producer_writes_what_waits(self) -> None:
        """
        After C{loseConnection}, a producer's last writes are sent whole
        before TLS closes, when the producer unregisters.
        """
        payload = b"y" * (2**14 + 5)
        transport = self.client.transport
        transport.registerProducer(IdleProducer(), True)

        transport.loseConnection()
        transport.write(payload)
        transport.unregisterProducer()
        self.pump.flush()

        self.assertEqual(bytes(self.server.received), payload)
        self.assertTrue(self.server.reason.check(ConnectionDone), self.server.reason)


class WriteThroughTests(SynchronousTestCase):
    """
    Tests for L{write_through}.
    """

    def connection(self) -> tuple[Connection, socket.socket]:
        """
        @return: a Twisted socket transport on one end of a socket pair,
            and the other end.
        """
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        transport = Connection(ours, Protocol(), MemoryReactor())
        transport.connected = True
        theirs.setblocking(False)
        return transport, theirs

    def test_sent_at_once(self) -> None:
        """
        Bytes written through an idle socket transport are in the socket
        before the reactor runs.
        """
        transport, peer = self.connection()

        write_through(transport, b"now")

        self.assertEqual(peer.recv(100), b"now")

    def test_after_buffered_bytes(self) -> None:
        """
        Bytes written through a transport that still buffers earlier ones
        wait behind them.
        """
        transport, peer = self.connection()

        transport.write(b"first ")
        write_through(transport, b"second")
        nothing_yet = self.assertRaises(BlockingIOError, peer.recv, 100)
        transport.doWrite()

        self.assertIsInstance(nothing_yet, BlockingIOError)
        self.assertEqual(peer.recv(100), b"first second")

    def test_rest_is_buffered(self) -> None:
        """
        What the socket does not take is buffered by the transport and
        follows in order.
        """
        transport, peer = self.connection()
        payload = PAYLOAD[: 4 * 1024 * 1024]

        write_through(transport, payload)
        received = bytearray()
        while len(received) < len(payload):
            try:
                received += peer.recv(2**20)
            except BlockingIOError:
                transport.doWrite()

        self.assertTrue(bytes(received) == payload)

    def test_other_transport(self) -> None:
        """
        A transport that is not a socket is written to as usual.
        """
        transport = StringTransport()

        write_through(transport, b"bytes")

        self.assertEqual(transport.value(), b"bytes")


class WriteManyRecordsTests(SynchronousTestCase):
    """
    Tests for L{write_many_records_at_once}.
    """

    def connected(self) -> SSL.Connection:
        """
        @return: the client end of a TLS connection in memory, after its
            handshake with a server that has the edge's options.
        """
        certificate = ensure_edge_certificate(FilePath(self.mktemp()), ["127.0.0.1"])
        options = server_tls_options(certificate.cert_path, certificate.key_path)
        server = SSL.Connection(options.getContext(), None)
        server.set_accept_state()
        client = SSL.Connection(SSL.Context(SSL.TLS_METHOD), None)
        client.set_connect_state()
        for _ in range(10):
            for end in (client, server):
                try:
                    end.do_handshake()
                except SSL.WantReadError:
                    pass
            for source, sink in ((client, server), (server, client)):
                try:
                    sink.bio_write(source.bio_read(2**20))
                except SSL.WantReadError:
                    pass
        return client

    def test_one_send_writes_every_record(self) -> None:
        """
        After it, one C{send} of more than a record writes all of it, as
        full records.
        """
        client = self.connected()

        done = write_many_records_at_once(client)
        sent = client.send(b"r" * (4 * 2**14))
        lengths = record_lengths(client.bio_read(2**20))

        self.assertTrue(done)
        self.assertEqual(sent, 4 * 2**14)
        self.assertEqual(len(lengths), 4)
