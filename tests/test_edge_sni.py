"""
Tests for L{tunnelkit.edge.sni}: the HTTPS port reading each connection's
ClientHello, then passing it through to a TLS tunnel, handing it to the
edge's own TLS, or refusing it; on string transports and a fake clock.
"""

from typing import Any, Sequence

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests.test_edge_http import FakeSession
from tests.tlshello import HelloBuilder, openssl_hello, pieces
from tunnelkit.edge.sni import (
    HELLO_TIMEOUT,
    INTERNAL_ERROR,
    TERMINATE,
    UNRECOGNIZED_NAME,
    SniDispatch,
    SniDispatchFactory,
    TlsBinding,
    fatal_alert,
)
from tunnelkit.errors import TunnelkitError
from tunnelkit.interfaces import IPassthrough, ISniRouter
from tunnelkit.splice import SpliceEnd, splice

CLIENT = IPv4Address("TCP", "203.0.113.9", 5555)

ALERT_UNRECOGNIZED_NAME = b"\x15\x03\x03\x00\x02\x02\x70"
"""A fatal unrecognized_name alert record, written out by hand."""


class Recorder(Protocol):
    """
    The protocol the edge terminates TLS with, recording what it is given.
    """

    def __init__(self) -> None:
        self.received = bytearray()
        self.connected_to: Any = None
        self.lost: list[Failure] = []

    def makeConnection(self, transport: Any) -> None:
        self.connected_to = transport

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        self.lost.append(reason)


class RecordingFactory(Factory):
    """
    Builds L{Recorder}s and remembers them.
    """

    def __init__(self) -> None:
        self.built: list[Recorder] = []
        self.started = 0

    def doStart(self) -> None:
        self.started += 1

    def doStop(self) -> None:
        self.started -= 1

    def buildProtocol(self, addr: IAddress | None) -> Recorder:
        protocol = Recorder()
        self.built.append(protocol)
        return protocol


@implementer(IPassthrough)
class Destination:
    """
    A passthrough destination that splices each connection to an end on a
    string transport, or refuses while C{offline}.
    """

    name = "dest"

    def __init__(self) -> None:
        self.ends: list[SpliceEnd] = []
        self.clients: list[IAddress | None] = []
        self.offline = False

    def open_passthrough(self, end: SpliceEnd, client: IAddress | None) -> None:
        if self.offline:
            raise TunnelkitError("TK_TUNNEL_OFFLINE", "offline")
        other = SpliceEnd()
        other.makeConnection(StringTransport())
        self.ends.append(other)
        self.clients.append(client)
        splice(end, other)

    def written(self, index: int = 0) -> bytes:
        """
        @return: what reached the destination on its C{index}th connection.
        """
        transport = self.ends[index].transport
        assert isinstance(transport, StringTransport)
        return transport.value()


@implementer(ISniRouter)
class Router:
    """
    Routes by a fixed table of names.
    """

    def __init__(self, routes: dict[str, object]) -> None:
        self.routes = routes

    def route_sni(self, name: str) -> object:
        return self.routes.get(name)


class SniDispatchTests(SynchronousTestCase):
    """
    Each connection goes where its hello's name leads, with every byte.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.destination = Destination()
        self.router = Router(
            {"tls.test": self.destination, "web.test": TERMINATE, "*": None}
        )
        self.terminating = RecordingFactory()
        self.factory = SniDispatchFactory(
            self.router, self.terminating, self.clock, limit=4096
        )

    def connect(self) -> tuple[SniDispatch, StringTransport]:
        """
        A new connection to the port.
        """
        protocol = self.factory.buildProtocol(CLIENT)
        transport = StringTransport(peerAddress=CLIENT)
        protocol.makeConnection(transport)
        return protocol, transport

    def test_interfaces(self) -> None:
        """
        The test doubles and L{TlsBinding} provide the interfaces they stand
        for.
        """
        binding = TlsBinding("b", "tls.test", "tls://tls.test", "l:1", "s", "o")

        self.assertTrue(verifyObject(IPassthrough, self.destination))
        self.assertTrue(verifyObject(IPassthrough, binding))
        self.assertTrue(verifyObject(ISniRouter, self.router))

    def test_passthrough(self) -> None:
        """
        A hello naming a TLS destination goes to it byte for byte, followed
        by every later byte; nothing is written to the client.
        """
        protocol, transport = self.connect()
        hello = openssl_hello(b"tls.test")

        protocol.dataReceived(hello)
        protocol.dataReceived(b"more records")

        self.assertEqual(self.destination.written(), hello + b"more records")
        self.assertEqual(self.destination.clients, [CLIENT])
        self.assertEqual(transport.value(), b"")
        self.assertFalse(transport.disconnecting)

    def test_passthrough_back(self) -> None:
        """
        What the destination sends reaches the client.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(openssl_hello(b"tls.test"))

        self.destination.ends[0].dataReceived(b"server hello")

        self.assertEqual(transport.value(), b"server hello")

    def test_fragmented_hello(self) -> None:
        """
        A hello in small records arriving in many pieces is held until it
        is complete, then passed on whole, in order.
        """
        protocol, _ = self.connect()
        hello = HelloBuilder().with_name(b"tls.test").records(7)
        chunks = pieces(hello, list(range(0, len(hello), 3)))

        for chunk in chunks[:-1]:
            protocol.dataReceived(chunk)
        before = list(self.destination.ends)
        protocol.dataReceived(chunks[-1])

        self.assertEqual(before, [])
        self.assertEqual(self.destination.written(), hello)

    def test_terminate(self) -> None:
        """
        A hello naming an HTTP tunnel goes to a new terminating protocol on
        the same transport, as if just received; later bytes and the end of
        the connection follow it there.
        """
        protocol, transport = self.connect()
        hello = openssl_hello(b"web.test")
        protocol.dataReceived(hello[:10])
        protocol.dataReceived(hello[10:])

        protocol.dataReceived(b"finished")
        protocol.connectionLost(Failure(ConnectionLost()))

        (terminated,) = self.terminating.built
        self.assertIs(terminated.connected_to, transport)
        self.assertEqual(bytes(terminated.received), hello + b"finished")
        self.assertEqual(len(terminated.lost), 1)
        self.assertTrue(terminated.lost[0].check(ConnectionLost))

    def test_terminated_half_close(self) -> None:
        """
        A client ending its side of a terminated connection ends the
        terminating protocol, which takes no half-close, and the
        connection.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(openssl_hello(b"web.test"))

        protocol.readConnectionLost()
        protocol.connectionLost(Failure(ConnectionDone()))

        (terminated,) = self.terminating.built
        self.assertEqual(len(terminated.lost), 1)
        self.assertTrue(terminated.lost[0].check(ConnectionDone))
        self.assertTrue(transport.disconnecting)

    def test_starts_terminating_factory(self) -> None:
        """
        Starting and stopping the port's factory starts and stops the
        terminating one.
        """
        self.factory.doStart()
        started = self.terminating.started
        self.factory.doStop()

        self.assertEqual((started, self.terminating.started), (1, 0))

    def assertAlert(self, transport: StringTransport, description: int) -> None:
        """
        The connection was answered with one fatal alert and closed.
        """
        self.assertEqual(transport.value(), fatal_alert(description))
        self.assertTrue(transport.disconnecting)

    def test_alert_bytes(self) -> None:
        """
        The unrecognized_name alert is a fatal alert record of description
        112.
        """
        self.assertEqual(fatal_alert(UNRECOGNIZED_NAME), ALERT_UNRECOGNIZED_NAME)

    def test_unknown_name(self) -> None:
        """
        A name nobody serves is answered with unrecognized_name and closed,
        and the refusal is logged with the name.
        """
        protocol, transport = self.connect()

        with capturedLogs() as events:
            protocol.dataReceived(openssl_hello(b"nobody.test"))

        self.assertAlert(transport, UNRECOGNIZED_NAME)
        self.assertEqual(
            [(e.get("name"), e.get("code")) for e in events if "code" in e],
            [("nobody.test", "TK_TLS_NAME_UNKNOWN")],
        )

    def test_no_sni(self) -> None:
        """
        A hello without a server name is answered with unrecognized_name.
        """
        protocol, transport = self.connect()

        protocol.dataReceived(openssl_hello(None))

        self.assertAlert(transport, UNRECOGNIZED_NAME)
        self.assertEqual(self.terminating.built, [])

    def test_offline(self) -> None:
        """
        A name whose destination cannot take the connection is answered
        with internal_error, and nothing is left buffered.
        """
        self.destination.offline = True
        protocol, transport = self.connect()

        protocol.dataReceived(openssl_hello(b"tls.test"))
        protocol.dataReceived(b"more")

        self.assertAlert(transport, INTERNAL_ERROR)
        self.assertEqual(protocol._early, [])

    def assertClosedQuietly(
        self, transport: StringTransport, events: Sequence[Any]
    ) -> str:
        """
        The connection was closed without a byte written, and one warning
        logged.

        @return: the warning's code.
        """
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)
        warnings = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 1, events)
        code: str = warnings[0]["code"]
        return code

    def test_garbage(self) -> None:
        """
        Bytes that are not TLS are closed at once and logged at warn.
        """
        protocol, transport = self.connect()

        with capturedLogs() as events:
            protocol.dataReceived(b"GET / HTTP/1.1\r\n\r\n")

        self.assertEqual(
            self.assertClosedQuietly(transport, events), "TK_TLS_HELLO_MALFORMED"
        )

    def test_too_large(self) -> None:
        """
        A hello over the limit is closed and logged at warn; bytes after
        are ignored.
        """
        protocol, transport = self.connect()
        hello = HelloBuilder(extensions=[(21, b"\x00" * 5000)]).with_name(b"tls.test")

        with capturedLogs() as events:
            protocol.dataReceived(hello.records())
            protocol.dataReceived(b"more")

        self.assertEqual(
            self.assertClosedQuietly(transport, events), "TK_TLS_HELLO_TOO_LARGE"
        )
        self.assertEqual(self.destination.ends, [])

    def test_never_finishes(self) -> None:
        """
        A hello not complete within the timeout is closed then, not before.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(openssl_hello(b"tls.test")[:50])

        self.clock.advance(HELLO_TIMEOUT - 0.1)
        before = transport.disconnecting
        self.clock.advance(0.1)

        self.assertFalse(before)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")

    def test_timer_cancelled(self) -> None:
        """
        The timer stops once the hello is read, and when the connection is
        lost before.
        """
        first, _ = self.connect()
        second, _ = self.connect()

        first.dataReceived(openssl_hello(b"tls.test"))
        second.connectionLost(Failure(ConnectionDone()))

        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_half_close_during_hello(self) -> None:
        """
        A client that ends its side before finishing its hello is closed.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"\x16\x03\x01")

        protocol.readConnectionLost()

        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_passthrough_half_close(self) -> None:
        """
        A client's half-close after its hello half-closes the destination.
        """
        protocol, _ = self.connect()
        protocol.dataReceived(openssl_hello(b"tls.test"))

        protocol.readConnectionLost()

        other = self.destination.ends[0].transport
        self.assertTrue(other.disconnecting)

    def test_bad_client_disturbs_no_other(self) -> None:
        """
        A connection sending garbage is closed while another, mid-hello on
        the same port, goes on to its destination.
        """
        good, good_transport = self.connect()
        bad, bad_transport = self.connect()
        hello = openssl_hello(b"tls.test")

        good.dataReceived(hello[:100])
        bad.dataReceived(b"\x00" * 100)
        good.dataReceived(hello[100:])

        self.assertTrue(bad_transport.disconnecting)
        self.assertFalse(good_transport.disconnecting)
        self.assertEqual(self.destination.written(), hello)


class TlsBindingTests(SynchronousTestCase):
    """
    A TLS binding opens one stream to its agent per public connection.
    """

    def setUp(self) -> None:
        self.session = FakeSession()
        self.binding = TlsBinding(
            binding_id="secure",
            name="tls.test",
            url="tls://tls.test",
            forwards_to="localhost:8443",
            session_id="s1",
            owner="alice",
            session=self.session,  # type: ignore[arg-type]
        )
        self.end = SpliceEnd()
        self.end.makeConnection(StringTransport())

    def test_stream(self) -> None:
        """
        The stream starts with a proxy header naming the binding, the client
        and passthrough TLS, then carries what the client sent.
        """
        self.end.dataReceived(b"hello bytes")

        self.binding.open_passthrough(self.end, CLIENT)

        (stream,) = self.session.mux.streams
        header = stream.header()
        self.assertEqual(
            (header.binding_id, header.client_addr, header.proto),
            ("secure", "203.0.113.9:5555", "tls"),
        )
        self.assertTrue(header.passthrough_tls)
        self.assertEqual(stream.payload(), b"hello bytes")

    def test_counts(self) -> None:
        """
        The connection counts as open until its stream ends, and in the
        total after.
        """
        self.binding.open_passthrough(self.end, CLIENT)
        opened = self.binding.open_connections

        self.session.mux.streams[0].end()

        self.assertEqual(
            (opened, self.binding.open_connections, self.binding.total_connections),
            (1, 0, 1),
        )

    def test_offline(self) -> None:
        """
        A binding whose session is gone refuses with C{TK_TUNNEL_OFFLINE}
        and counts nothing.
        """
        self.binding.session = None

        error = self.assertRaises(
            TunnelkitError, self.binding.open_passthrough, self.end, CLIENT
        )

        self.assertEqual(error.code, "TK_TUNNEL_OFFLINE")
        self.assertEqual(self.binding.total_connections, 0)

    def test_mux_closing(self) -> None:
        """
        A session that cannot open streams refuses with its error, and
        counts nothing.
        """
        self.session.mux.refuse = TunnelkitError("TK_MUX_GOING_AWAY", "closing")

        error = self.assertRaises(
            TunnelkitError, self.binding.open_passthrough, self.end, CLIENT
        )

        self.assertEqual(error.code, "TK_MUX_GOING_AWAY")
        self.assertEqual(self.binding.open_connections, 0)
