"""
Tests for L{tunnelkit.mux.protocol}: streams as Twisted transports, flow
control through producers, keepalive and session end, over in-memory
connections.
"""

from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.internet.testing import StringTransport
from twisted.test.iosim import FakeTransport, IOPump, connect
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tunnelkit.errors import TunnelkitError
from tunnelkit.mux import (
    INITIAL_STREAM_WINDOW,
    MuxConfig,
    MuxProtocol,
    StreamRefused,
    StreamTransport,
)
from tunnelkit.mux.frames import Flag, FrameType, encode_header
from tunnelkit.interfaces import IPiecesReceiver


@implementer(IHalfCloseableProtocol)
class Recorder(Protocol):
    """
    A stream protocol that keeps what it receives and how it ended.
    """

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.read_closed = False
        self.lost: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def readConnectionLost(self) -> None:
        self.read_closed = True

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        self.lost = reason

    @property
    def data(self) -> bytes:
        return b"".join(self.received)


class PlainRecorder(Protocol):
    """
    A stream protocol that does not know about half-close.
    """

    def __init__(self) -> None:
        self.lost: Failure | None = None

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        self.lost = reason


@implementer(IPushProducer)
class CountingProducer:
    """
    A push producer that records pauses and resumes.
    """

    def __init__(self) -> None:
        self.paused = 0
        self.resumed = 0
        self.stopped = False

    def pauseProducing(self) -> None:
        self.paused += 1

    def resumeProducing(self) -> None:
        self.resumed += 1

    def stopProducing(self) -> None:
        self.stopped = True


class FillingTransport(StringTransport):
    """
    A connection whose buffer is full after every write: it pauses its
    producer each time.
    """

    def writeSequence(self, data: Any) -> None:
        super().writeSequence(data)
        if self.producer is not None:
            self.producer.pauseProducing()


@implementer(IPushProducer)
class TurnTaker:
    """
    A push producer that, each time it is resumed, notes its name and
    writes into its stream until it is paused.
    """

    def __init__(
        self, name: str, stream: Any, turns: list[str], chunk: bytes = b"chunk"
    ) -> None:
        self.name = name
        self.stream = stream
        self.turns = turns
        self.chunk = chunk
        self.paused = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self.turns.append(self.name)
        while not self.paused:
            self.stream.write(self.chunk)

    def stopProducing(self) -> None:
        self.paused = True


class Pair:
    """
    A client and a server L{MuxProtocol} joined by an in-memory pump.
    """

    def __init__(
        self,
        config: MuxConfig = MuxConfig(),
        server_config: MuxConfig | None = None,
        server_accepts: bool = True,
    ) -> None:
        self.clock = Clock()
        self.accepted: list[Recorder] = []

        def build(address: Any) -> Recorder | None:
            if not server_accepts:
                return None
            protocol = Recorder()
            self.accepted.append(protocol)
            return protocol

        factory = Factory.forProtocol(Recorder)
        factory.buildProtocol = build  # type: ignore[method-assign]
        self.client = MuxProtocol(True, self.clock, None, config)
        self.server = MuxProtocol(False, self.clock, factory, server_config or config)
        self.client_transport = FakeTransport(self.client, isServer=False)
        self.server_transport = FakeTransport(self.server, isServer=True)
        self.pump: IOPump = connect(
            self.server,
            self.server_transport,
            self.client,
            self.client_transport,
            greet=True,
        )

    def open(self) -> tuple[Recorder, Recorder, list[Any]]:
        """
        Open a stream from the client; return both ends and the open result.
        """
        local = Recorder()
        result: list[Any] = []
        self.client.open_stream(local).addBoth(result.append)
        self.pump.flush()
        return local, self.accepted[-1], result


class StreamTransportTests(SynchronousTestCase):
    """
    A stream behaves as a Twisted transport.
    """

    def test_interfaces(self) -> None:
        """
        L{StreamTransport} provides the transport, consumer and producer
        interfaces it declares.
        """
        pair = Pair()
        local, _, _ = pair.open()

        stream = local.transport

        from twisted.internet.interfaces import IConsumer, ITransport

        self.assertTrue(verifyObject(ITransport, stream))
        self.assertTrue(verifyObject(IConsumer, stream))
        self.assertTrue(verifyObject(IPushProducer, stream))

    def test_open_fires_on_ack(self) -> None:
        """
        Opening a stream fires with the protocol once the peer accepts, and
        data flows both ways.
        """
        pair = Pair()

        local, remote, result = pair.open()
        local.transport.write(b"ping")
        remote.transport.write(b"pong")
        pair.pump.flush()

        self.assertEqual(result, [local])
        self.assertEqual(remote.data, b"ping")
        self.assertEqual(local.data, b"pong")
        self.assertIsInstance(local.transport, StreamTransport)

    def test_refused_stream(self) -> None:
        """
        A peer without a stream factory refuses streams; the opener's
        Deferred fails with L{StreamRefused} and its protocol is lost.
        """
        pair = Pair(server_accepts=False)
        local = Recorder()
        failures: list[Failure] = []

        pair.client.open_stream(local).addErrback(failures.append)
        pair.pump.flush()

        self.assertIsInstance(failures[0].value, StreamRefused)
        self.assertIsNotNone(local.lost)

    def test_open_timeout(self) -> None:
        """
        A stream the peer never acknowledges is reset after the open timeout.
        """
        pair = Pair(MuxConfig(stream_open_timeout=5, keepalive_interval=0))
        local = Recorder()
        failures: list[Failure] = []
        pair.client.open_stream(local).addErrback(failures.append)

        pair.clock.advance(5)

        self.assertEqual(failures[0].value.code, "TK_MUX_OPEN_TIMEOUT")
        self.assertIsNotNone(local.lost)

    def test_half_close(self) -> None:
        """
        C{loseWriteConnection} sends FIN: the peer's half-closeable protocol
        sees C{readConnectionLost} and may still answer.
        """
        pair = Pair()
        local, remote, _ = pair.open()

        local.transport.loseWriteConnection()
        pair.pump.flush()
        remote.transport.write(b"still here")
        remote.transport.loseConnection()
        pair.pump.flush()

        self.assertTrue(remote.read_closed)
        self.assertEqual(local.data, b"still here")
        self.assertTrue(local.lost.check(ConnectionDone))
        self.assertTrue(remote.lost.check(ConnectionDone))
        self.assertEqual(pair.client.streams, {})
        self.assertEqual(pair.server.streams, {})

    def test_pieces_received(self) -> None:
        """
        Bytes handed to the session in pieces reach the stream as bytes
        handed over whole would.
        """
        pair = Pair()
        local, remote, _ = pair.open()
        local.transport.write(b"one two three")
        wire = pair.client_transport.getOutBuffer()

        pair.server.piecesReceived([wire[:5], wire[5:14], wire[14:]])

        self.assertTrue(verifyObject(IPiecesReceiver, pair.server))
        self.assertEqual(remote.data, b"one two three")

    def test_data_after_window_update_in_one_read(self) -> None:
        """
        After our FIN, one read carrying data, a Window Update, more data
        and the peer's FIN delivers every byte before the stream closes.
        """
        clock = Clock()
        mux = MuxProtocol(True, clock, None, MuxConfig(keepalive_interval=0))
        transport = StringTransport()
        mux.makeConnection(transport)
        local = Recorder()
        mux.open_stream(local)
        local.transport.write(b"q" * 100)
        local.transport.loseWriteConnection()

        mux.dataReceived(
            encode_header(FrameType.WINDOW_UPDATE, Flag.ACK, 1, 0)
            + encode_header(FrameType.DATA, 0, 1, 72)
            + b"a" * 72
            + encode_header(FrameType.WINDOW_UPDATE, 0, 1, 100)
            + encode_header(FrameType.DATA, 0, 1, 28)
            + b"b" * 28
            + encode_header(FrameType.WINDOW_UPDATE, Flag.FIN, 1, 0)
        )

        self.assertEqual(local.data, b"a" * 72 + b"b" * 28)
        self.assertTrue(local.lost.check(ConnectionDone))

    def test_read_end_delivered_once(self) -> None:
        """
        C{readConnectionLost} reaches the protocol once, however often
        reading is paused and resumed afterwards.
        """
        pair = Pair()
        local, remote, _ = pair.open()
        count = []
        remote.readConnectionLost = lambda: count.append(1)  # type: ignore

        local.transport.loseWriteConnection()
        pair.pump.flush()
        for _ in range(3):
            remote.transport.pauseProducing()
            remote.transport.resumeProducing()

        self.assertEqual(count, [1])

    def test_fin_closes_plain_protocol(self) -> None:
        """
        A protocol that does not handle half-close is closed when the peer
        sends FIN, as a TCP connection would be.
        """
        pair = Pair()
        pair.accepted.clear()
        plain = PlainRecorder()
        pair.client.open_stream(plain)
        pair.pump.flush()
        remote = pair.accepted[0]

        remote.transport.loseConnection()
        pair.pump.flush()

        self.assertTrue(plain.lost.check(ConnectionDone))
        self.assertTrue(remote.lost.check(ConnectionDone))

    def test_abort_resets(self) -> None:
        """
        C{abortConnection} sends RST; the peer's protocol is lost at once.
        """
        pair = Pair()
        local, remote, _ = pair.open()

        local.transport.abortConnection()
        pair.pump.flush()

        self.assertIsNotNone(local.lost)
        self.assertFalse(remote.lost.check(ConnectionDone))
        self.assertEqual(pair.server.streams, {})

    def test_connect_exception_resets_only_its_stream(self) -> None:
        """
        A stream protocol raising in C{connectionMade} resets its stream;
        the session goes on and later streams work.
        """
        pair = Pair()
        broken = Recorder()

        def explode() -> None:
            raise ValueError("broken at connect")

        broken.connectionMade = explode  # type: ignore[method-assign]
        pair.accepted.clear()
        original = pair.server.stream_factory.buildProtocol
        pair.server.stream_factory.buildProtocol = lambda address: broken
        failures: list[Failure] = []
        pair.client.open_stream(Recorder()).addErrback(failures.append)
        pair.pump.flush()
        pair.server.stream_factory.buildProtocol = original
        local, remote, _ = pair.open()
        local.transport.write(b"after")
        pair.pump.flush()

        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertEqual(remote.data, b"after")
        self.assertEqual(list(pair.server.streams), [local.transport.stream_id])

    def test_protocol_exception_resets_only_its_stream(self) -> None:
        """
        A stream protocol raising in C{dataReceived} resets its stream; the
        session and other streams go on.
        """
        pair = Pair()
        first_local, first_remote, _ = pair.open()
        second_local, second_remote, _ = pair.open()

        def explode(data: bytes) -> None:
            raise ValueError("broken protocol")

        first_remote.dataReceived = explode  # type: ignore[method-assign]
        first_local.transport.write(b"boom")
        second_local.transport.write(b"fine")
        pair.pump.flush()

        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertIsNotNone(first_local.lost)
        self.assertEqual(second_remote.data, b"fine")
        self.assertIsNone(second_local.lost)


class FlowControlTests(SynchronousTestCase):
    """
    Windows and producers.
    """

    def test_spent_window_pauses_producer(self) -> None:
        """
        A stream whose send window is spent pauses its producer, and the
        peer's Window Update resumes it.
        """
        pair = Pair()
        local, remote, _ = pair.open()
        producer = CountingProducer()
        local.transport.registerProducer(producer, True)
        remote.transport.pauseProducing()

        local.transport.write(b"a" * (INITIAL_STREAM_WINDOW + 100))
        pair.pump.flush()
        paused = producer.paused
        remote.transport.resumeProducing()
        pair.pump.flush()

        self.assertEqual(paused, 1)
        self.assertEqual(producer.resumed, 1)
        self.assertEqual(len(remote.data), INITIAL_STREAM_WINDOW + 100)

    def test_paused_reader_buffers_at_most_a_window(self) -> None:
        """
        While the reader is paused the peer sends no more than the window;
        the rest waits on the sending side.
        """
        pair = Pair()
        local, remote, _ = pair.open()
        remote.transport.pauseProducing()

        for _ in range(10):
            local.transport.write(b"b" * INITIAL_STREAM_WINDOW)
        pair.pump.flush()

        buffered = sum(len(chunk) for chunk in remote.transport._inbound)
        self.assertEqual(remote.data, b"")
        self.assertEqual(buffered, INITIAL_STREAM_WINDOW)

    def test_resumed_reader_gets_everything(self) -> None:
        """
        Resuming a paused reader delivers everything in order.
        """
        pair = Pair()
        local, remote, _ = pair.open()
        remote.transport.pauseProducing()
        payload = bytes(range(256)) * 4096

        local.transport.write(payload)
        pair.pump.flush()
        remote.transport.resumeProducing()
        pair.pump.flush()

        self.assertEqual(remote.data, payload)

    def test_fin_waits_for_pending_data(self) -> None:
        """
        FIN goes out only after data held back by the window.
        """
        pair = Pair()
        local, remote, _ = pair.open()
        remote.transport.pauseProducing()
        payload = b"c" * (INITIAL_STREAM_WINDOW * 2)

        local.transport.write(payload)
        local.transport.loseWriteConnection()
        pair.pump.flush()
        read_closed_early = remote.read_closed
        remote.transport.resumeProducing()
        pair.pump.flush()

        self.assertFalse(read_closed_early)
        self.assertTrue(remote.read_closed)
        self.assertEqual(remote.data, payload)

    def test_connection_pause_pauses_streams(self) -> None:
        """
        When the connection's transport pauses the session, every stream's
        producer is paused, and resumed with it.
        """
        pair = Pair()
        local, _, _ = pair.open()
        producer = CountingProducer()
        local.transport.registerProducer(producer, True)

        pair.client.pauseProducing()
        local.transport.write(b"held")
        pair.client.resumeProducing()
        pair.pump.flush()

        self.assertEqual((producer.paused, producer.resumed), (1, 1))
        self.assertEqual(pair.accepted[-1].data, b"held")

    def test_streams_take_turns_on_a_full_connection(self) -> None:
        """
        When a stream's write fills the connection, the other streams that
        wait are resumed before it once the connection drains.
        """
        transport = FillingTransport()
        mux = MuxProtocol(True, Clock())
        mux.makeConnection(transport)
        turns: list[str] = []
        for name in ("first", "second", "third"):
            stream = Recorder()
            mux.open_stream(stream)
            producer = TurnTaker(name, stream.transport, turns)
            stream.transport.registerProducer(producer, True)

        for _ in range(6):
            mux.resumeProducing()

        self.assertEqual(turns, ["first", "second", "third"] * 2)

    def test_streams_that_spent_their_window_go_last(self) -> None:
        """
        A stream stopped by its spent window has had its turn: when the
        connection drains, the streams are resumed in the order they were
        stopped, not in the order they were opened.
        """
        mux = MuxProtocol(True, Clock())
        mux.makeConnection(StringTransport())
        turns: list[str] = []
        producers = {}
        for name in ("first", "second", "third"):
            stream = Recorder()
            mux.open_stream(stream)
            producers[name] = TurnTaker(name, stream.transport, turns, b"w" * 65536)
            stream.transport.registerProducer(producers[name], True)
        for name in ("second", "third", "first"):
            producers[name].resumeProducing()
        mux.pauseProducing()
        mux.dataReceived(
            b"".join(
                encode_header(
                    FrameType.WINDOW_UPDATE, Flag.ACK, stream_id, INITIAL_STREAM_WINDOW
                )
                for stream_id in (1, 3, 5)
            )
        )
        del turns[:]

        mux.resumeProducing()

        self.assertEqual(turns, ["second", "third", "first"])

    def test_pull_producer_is_pulled(self) -> None:
        """
        A pull producer is asked for more after each write that was sent.
        """
        pair = Pair()
        local, remote, _ = pair.open()
        producer = CountingProducer()

        local.transport.registerProducer(producer, False)
        pair.clock.advance(0)
        local.transport.write(b"chunk")
        pair.clock.advance(0)

        self.assertEqual(producer.resumed, 2)


class SessionLifeTests(SynchronousTestCase):
    """
    Keepalive, Go Away and the end of the connection.
    """

    def test_keepalive_measures_latency(self) -> None:
        """
        Keepalive pings are answered and their round trip recorded.
        """
        pair = Pair(MuxConfig(keepalive_interval=10, keepalive_timeout=5))

        pair.clock.advance(10)
        pair.pump.flush()

        self.assertEqual(pair.client.latency, 0)

    def test_ping_measures_latency(self) -> None:
        """
        A ping sent outside the keepalive also records its round trip.
        """
        pair = Pair(MuxConfig(keepalive_interval=0))

        pinged = pair.client.ping()
        pair.clock.advance(0.25)
        pair.pump.flush()

        self.assertEqual(pair.client.latency, 0.25)
        self.assertEqual(self.successResultOf(pinged), 0.25)

    def test_dead_peer_detected(self) -> None:
        """
        A ping without an answer within the timeout aborts the connection.
        """
        pair = Pair(MuxConfig(keepalive_interval=10, keepalive_timeout=5))
        pair.clock.advance(10)

        pair.clock.advance(5)

        self.assertTrue(pair.client_transport.disconnecting)

    def test_connection_lost_ends_streams(self) -> None:
        """
        Losing the connection loses every stream.
        """
        pair = Pair()
        local, remote, _ = pair.open()

        pair.client_transport.loseConnection()
        pair.pump.flush()

        self.assertIsNotNone(local.lost)
        self.assertIsNotNone(remote.lost)
        self.assertEqual(pair.client.streams, {})

    def test_go_away_refuses_opens(self) -> None:
        """
        After the peer's Go Away, opening raises C{TK_MUX_GOING_AWAY}, while
        open streams keep working.
        """
        pair = Pair()
        local, remote, _ = pair.open()

        pair.server.go_away()
        pair.pump.flush()
        error = self.assertRaises(TunnelkitError, pair.client.open_stream, Recorder())
        local.transport.write(b"after")
        pair.pump.flush()

        self.assertEqual(error.code, "TK_MUX_GOING_AWAY")
        self.assertEqual(remote.data, b"after")

    def test_protocol_error_closes_connection(self) -> None:
        """
        Garbage from the peer ends the session with Go Away and closes the
        connection, logged with the peer address.
        """
        pair = Pair()
        local, _, _ = pair.open()

        pair.client.dataReceived(encode_header(FrameType.DATA, 0, 0, 0))

        self.assertTrue(pair.client_transport.disconnecting)
        self.assertIsNotNone(local.lost)
