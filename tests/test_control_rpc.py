"""
Tests for L{tunnelkit.control.rpc}: calls, answers and proxy hand-over,
over in-memory connections driven by a L{Clock}, plus one call over
loopback TCP for the half-close.
"""

from typing import Any

from twisted.internet.defer import (
    CancelledError,
    Deferred,
    fail,
    gatherResults,
    succeed,
)
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IProtocol, ITransport
from twisted.internet.protocol import ClientCreator, Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tunnelkit.control.messages import (
    Auth,
    AuthResp,
    Bind,
    BindResp,
    Message,
    MessageReader,
    ProxyHeader,
    ServerInfo,
    ServerInfoResp,
    Unbind,
    UnbindResp,
    decode_message,
    encode_message,
)
from tunnelkit.control.rpc import (
    RemoteError,
    RpcDispatch,
    RpcServerFactory,
    RpcServerProtocol,
    call,
)
from tunnelkit.errors import TunnelkitError

TIMEOUT = 5.0


class Streams:
    """
    Open in-memory streams, each to a new protocol on the far side.

    @ivar pumps: one pump per stream opened, in order.
    @ivar far: the far-side protocol of each stream, in order.
    """

    def __init__(self, far_side: Any, clock: Clock) -> None:
        """
        @param far_side: a factory, or a callable making a protocol.
        @param clock: the clock the pumps advance.
        """
        self._far_side = far_side
        self._clock = clock
        self.pumps: list[iosim.IOPump] = []
        self.far: list[IProtocol] = []

    def open(self, protocol: IProtocol) -> "Deferred[IProtocol]":
        """
        Connect C{protocol} to a new far-side protocol.
        """
        builder = getattr(self._far_side, "buildProtocol", None)
        far = builder(None) if builder else self._far_side()
        pump = iosim.connect(
            far,
            iosim.makeFakeServer(far),
            protocol,
            iosim.makeFakeClient(protocol),
            greet=False,
            clock=self._clock,
        )
        self.pumps.append(pump)
        self.far.append(far)
        return succeed(protocol)

    def flush(self) -> None:
        """
        Move every byte and close that is waiting, on every stream.
        """
        for pump in self.pumps:
            pump.flush()


class Answering(Protocol):
    """
    A far side that answers any data with fixed bytes, then closes.
    """

    def __init__(self, answer: bytes) -> None:
        self.answer = answer

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(self.answer)  # type: ignore[union-attr]
        self.transport.loseConnection()  # type: ignore[union-attr]


class Recorder(Protocol):
    """
    The protocol a proxy stream is handed to; records what reaches it.
    """

    def __init__(self) -> None:
        self.events: list[Any] = []

    def connectionMade(self) -> None:
        self.events.append(("made", self.transport))

    def dataReceived(self, data: bytes) -> None:
        self.events.append(("data", data))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.events.append(("lost", reason.type))


def failure_of(deferred: "Deferred[Any]", test: SynchronousTestCase) -> Any:
    """
    @return: the exception a fired Deferred failed with.
    """
    return test.failureResultOf(deferred).value


class CallTests(SynchronousTestCase):
    """
    Tests for L{call} against a server built by L{RpcServerFactory}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.dispatch = RpcDispatch()
        self.streams = Streams(RpcServerFactory(self.dispatch, self.clock), self.clock)

    def call(self, request: Any) -> "Deferred[Any]":
        return call(self.streams.open, request, TIMEOUT, self.clock)

    def test_success(self) -> None:
        """
        The handler's reply is the call's result.
        """
        self.dispatch.register(Auth, lambda r: AuthResp(session_id="s-" + r.os))

        result = self.call(Auth(authtoken="tk", os="linux"))
        self.streams.flush()

        self.assertEqual(self.successResultOf(result), AuthResp(session_id="s-linux"))

    def test_handler_gets_request(self) -> None:
        """
        The handler receives a request equal to the one sent.
        """
        seen: list[Message] = []

        def unbind(request: Unbind) -> UnbindResp:
            seen.append(request)
            return UnbindResp()

        self.dispatch.register(Unbind, unbind)

        self.call(Unbind(id="b7"))
        self.streams.flush()

        self.assertEqual(seen, [Unbind(id="b7")])

    def test_streams_closed_after_reply(self) -> None:
        """
        Both ends of the stream are closed once the reply is read.
        """
        self.dispatch.register(ServerInfo, lambda r: ServerInfoResp())

        self.call(ServerInfo())
        self.streams.flush()

        pump = self.streams.pumps[0]
        self.assertTrue(pump.clientIO.disconnected and pump.serverIO.disconnected)

    def test_deferred_handler(self) -> None:
        """
        A handler may reply later through a Deferred.
        """
        later: Deferred[BindResp] = Deferred()
        self.dispatch.register(Bind, lambda r: later)
        result = self.call(Bind(id="b1"))
        self.streams.flush()

        later.callback(BindResp(id="b1", url="http://a.localhost"))
        self.streams.flush()

        self.assertEqual(self.successResultOf(result).url, "http://a.localhost")

    def test_coroutine_handler(self) -> None:
        """
        A handler may be an C{async def} function.
        """

        async def bind(request: Bind) -> BindResp:
            return BindResp(id=request.id)

        self.dispatch.register(Bind, bind)

        result = self.call(Bind(id="b2"))
        self.streams.flush()

        self.assertEqual(self.successResultOf(result), BindResp(id="b2"))

    def test_error_reply(self) -> None:
        """
        A handler's L{TunnelkitError} reaches the caller as L{RemoteError}
        with the same code and sentence.
        """

        def refuse(request: Auth) -> AuthResp:
            raise TunnelkitError("TK_AUTH_FAILED", "The authtoken is not valid.")

        self.dispatch.register(Auth, refuse)

        result = self.call(Auth())
        self.streams.flush()

        error = failure_of(result, self)
        self.assertIsInstance(error, RemoteError)
        self.assertEqual(
            (error.code, error.message),
            ("TK_AUTH_FAILED", "The authtoken is not valid."),
        )

    def test_handler_exception(self) -> None:
        """
        Any other exception in a handler is logged and reaches the caller as
        C{TK_INTERNAL}, without its details.
        """

        def crash(request: Auth) -> AuthResp:
            raise ZeroDivisionError("secret detail")

        self.dispatch.register(Auth, crash)

        result = self.call(Auth())
        self.streams.flush()

        error = failure_of(result, self)
        self.assertEqual(error.code, "TK_INTERNAL")
        self.assertNotIn("secret detail", error.message)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_handler_wrong_reply_type(self) -> None:
        """
        A handler replying with the wrong class is answered as C{TK_INTERNAL}.
        """
        self.dispatch.register(Auth, lambda r: BindResp())

        result = self.call(Auth())
        self.streams.flush()

        self.assertEqual(failure_of(result, self).code, "TK_INTERNAL")
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)

    def test_unregistered_request(self) -> None:
        """
        A request with no handler here is answered with C{TK_UNKNOWN_MESSAGE}.
        """
        result = self.call(ServerInfo())
        self.streams.flush()

        error = failure_of(result, self)
        self.assertIsInstance(error, RemoteError)
        self.assertEqual(error.code, "TK_UNKNOWN_MESSAGE")

    def test_timeout(self) -> None:
        """
        With no reply within the timeout the call fails with
        C{TK_RPC_TIMEOUT} and aborts the stream.
        """
        self.dispatch.register(Auth, lambda r: Deferred())
        result = self.call(Auth())
        self.streams.flush()

        self.clock.advance(TIMEOUT)

        self.assertEqual(failure_of(result, self).code, "TK_RPC_TIMEOUT")
        self.assertTrue(self.streams.pumps[0].clientIO.disconnecting)

    def test_no_timeout_before_due(self) -> None:
        """
        The call is still waiting just before the timeout.
        """
        self.dispatch.register(Auth, lambda r: Deferred())
        result = self.call(Auth())
        self.streams.flush()

        self.clock.advance(TIMEOUT - 0.01)

        self.assertNoResult(result)

    def test_reply_stops_timer(self) -> None:
        """
        Once the reply arrives no timer is left on the clock.
        """
        self.dispatch.register(Unbind, lambda r: UnbindResp())

        self.call(Unbind())
        self.streams.flush()

        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancel(self) -> None:
        """
        Cancelling the call aborts the stream.
        """
        self.dispatch.register(Auth, lambda r: Deferred())
        result = self.call(Auth())
        self.streams.flush()

        result.cancel()

        self.assertIsInstance(failure_of(result, self), CancelledError)
        self.assertTrue(self.streams.pumps[0].clientIO.disconnecting)


class CallFailureTests(SynchronousTestCase):
    """
    Tests for L{call} against peers and streams that misbehave.
    """

    def setUp(self) -> None:
        self.clock = Clock()

    def call_answered(self, answer: bytes, request: Any = None) -> Any:
        """
        Call a far side that answers C{answer}.

        @return: the exception the call failed with.
        """
        streams = Streams(lambda: Answering(answer), self.clock)

        result = call(streams.open, request or Auth(), TIMEOUT, self.clock)
        streams.flush()

        return failure_of(result, self)

    def test_early_close(self) -> None:
        """
        A stream that closes before a reply fails with C{TK_RPC_CLOSED}.
        """
        error = self.call_answered(b"")

        self.assertEqual(error.code, "TK_RPC_CLOSED")

    def test_truncated_reply(self) -> None:
        """
        A stream that closes inside the reply fails with C{TK_RPC_CLOSED}.
        """
        error = self.call_answered(encode_message(AuthResp())[:-3])

        self.assertEqual(error.code, "TK_RPC_CLOSED")

    def test_malformed_reply(self) -> None:
        """
        A reply that is not a message fails with C{TK_BAD_MESSAGE}.
        """
        error = self.call_answered(b"\x00\x00\x00\x02{]")

        self.assertEqual(error.code, "TK_BAD_MESSAGE")

    def test_reply_of_wrong_type(self) -> None:
        """
        A reply of another request's type fails with C{TK_BAD_MESSAGE}.
        """
        error = self.call_answered(encode_message(BindResp()))

        self.assertEqual(error.code, "TK_BAD_MESSAGE")

    def test_reply_from_newer_version(self) -> None:
        """
        A reply in a newer protocol version fails with C{TK_PROTOCOL_VERSION}.
        """
        payload = b'{"v":2,"type":"auth_resp","body":{}}'

        error = self.call_answered(len(payload).to_bytes(4, "big") + payload)

        self.assertEqual(error.code, "TK_PROTOCOL_VERSION")

    def test_reply_with_bad_field(self) -> None:
        """
        A reply with a field of the wrong type fails with C{TK_BAD_MESSAGE}.
        """
        payload = b'{"v":1,"type":"auth_resp","body":{"resumed":"no"}}'

        error = self.call_answered(len(payload).to_bytes(4, "big") + payload)

        self.assertEqual(error.code, "TK_BAD_MESSAGE")

    def test_request_too_large(self) -> None:
        """
        A request too long to send fails without opening a stream.
        """
        opened: list[IProtocol] = []

        def open_stream(protocol: IProtocol) -> "Deferred[Any]":
            opened.append(protocol)
            return succeed(protocol)

        result = call(
            open_stream,
            Auth(metadata="m" * 200),
            TIMEOUT,
            self.clock,
            max_size=100,
        )

        self.assertEqual(failure_of(result, self).code, "TK_MESSAGE_TOO_LARGE")
        self.assertEqual(opened, [])

    def test_open_fails(self) -> None:
        """
        A stream that cannot be opened fails the call with that failure.
        """
        refused = TunnelkitError("TK_MUX_GOING_AWAY", "The session is closed.")

        result = call(lambda p: fail(refused), Auth(), TIMEOUT, self.clock)

        self.assertIs(failure_of(result, self), refused)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_open_raises(self) -> None:
        """
        An exception raised while opening fails the call with it.
        """
        refused = TunnelkitError("TK_MUX_GOING_AWAY", "The session is closed.")

        def open_stream(protocol: IProtocol) -> "Deferred[Any]":
            raise refused

        result = call(open_stream, Auth(), TIMEOUT, self.clock)

        self.assertIs(failure_of(result, self), refused)

    def test_timeout_while_opening(self) -> None:
        """
        A stream that is never opened times out and the opening is cancelled.
        """
        cancelled: list[Deferred[Any]] = []
        opening: Deferred[Any] = Deferred(cancelled.append)
        result = call(lambda p: opening, Auth(), TIMEOUT, self.clock)

        self.clock.advance(TIMEOUT)

        self.assertEqual(failure_of(result, self).code, "TK_RPC_TIMEOUT")
        self.assertEqual(cancelled, [opening])

    def test_no_half_close_without_support(self) -> None:
        """
        On a transport without C{loseWriteConnection} the request is written
        and the stream left open for the reply.
        """
        transport = StringTransport()

        def open_stream(protocol: IProtocol) -> "Deferred[Any]":
            protocol.makeConnection(transport)
            return succeed(protocol)

        result = call(open_stream, Unbind(id="b"), TIMEOUT, self.clock)

        self.assertEqual(transport.value(), encode_message(Unbind(id="b")))
        self.assertFalse(transport.disconnecting)
        self.assertNoResult(result)


class ServerTests(SynchronousTestCase):
    """
    Tests for L{RpcServerProtocol} facing bad or silent peers.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.dispatch = RpcDispatch()
        self.factory = RpcServerFactory(self.dispatch, self.clock, read_timeout=3.0)
        self.protocol = self.factory.buildProtocol(None)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def reply(self) -> Message:
        """
        @return: the one message the server wrote.
        """
        [envelope] = MessageReader().feed(self.transport.value())
        return decode_message(envelope)

    def test_factory_settings(self) -> None:
        """
        The factory builds server protocols bound to it.
        """
        protocol = self.factory.buildProtocol(None)

        self.assertIsInstance(protocol, RpcServerProtocol)
        self.assertIs(protocol.factory, self.factory)

    def test_malformed_request(self) -> None:
        """
        Bytes that are not a message get a C{TK_BAD_MESSAGE} reply, the
        stream is closed, and a warning names the peer.
        """
        with capturedLogs() as events:
            self.protocol.dataReceived(b"\x00\x00\x00\x03abc")

        self.assertEqual(self.reply().code, "TK_BAD_MESSAGE")  # type: ignore
        self.assertTrue(self.transport.disconnecting)
        [event] = events
        self.assertEqual(event["log_level"].name, "warn")
        self.assertEqual(event["peer"], "192.168.1.1:54321")

    def test_oversize_request(self) -> None:
        """
        A length over the limit gets a C{TK_BAD_MESSAGE} reply at once.
        """
        self.protocol.dataReceived(b"\xff\xff\xff\xff")

        self.assertEqual(self.reply().code, "TK_BAD_MESSAGE")  # type: ignore

    def test_unknown_type(self) -> None:
        """
        A request of an unknown type gets a C{TK_UNKNOWN_MESSAGE} reply.
        """
        payload = b'{"v":1,"type":"teleport","body":{}}'

        self.protocol.dataReceived(len(payload).to_bytes(4, "big") + payload)

        self.assertEqual(self.reply().code, "TK_UNKNOWN_MESSAGE")  # type: ignore

    def test_newer_version(self) -> None:
        """
        A request in a newer version gets a C{TK_PROTOCOL_VERSION} reply.
        """
        payload = b'{"v":2,"type":"auth","body":{}}'

        self.protocol.dataReceived(len(payload).to_bytes(4, "big") + payload)

        self.assertEqual(self.reply().code, "TK_PROTOCOL_VERSION")  # type: ignore

    def test_reply_type_as_request(self) -> None:
        """
        A reply type sent as a request gets a C{TK_UNKNOWN_MESSAGE} reply.
        """
        self.protocol.dataReceived(encode_message(AuthResp()))

        self.assertEqual(self.reply().code, "TK_UNKNOWN_MESSAGE")  # type: ignore

    def test_silent_stream_closed(self) -> None:
        """
        A stream with no complete message within the read timeout is closed
        with nothing written.
        """
        self.protocol.dataReceived(encode_message(Auth())[:5])

        self.clock.advance(3.0)

        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.transport.value(), b"")

    def test_stream_open_before_timeout(self) -> None:
        """
        A stream is left open until the read timeout is reached.
        """
        self.clock.advance(2.9)

        self.assertFalse(self.transport.disconnecting)

    def test_request_stops_timer(self) -> None:
        """
        Once the first message arrives the read timeout no longer applies.
        """
        self.dispatch.register(Auth, lambda r: Deferred())

        self.protocol.dataReceived(encode_message(Auth()))

        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_end_before_message(self) -> None:
        """
        A stream whose peer stops sending before a message is closed.
        """
        self.protocol.readConnectionLost()

        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_half_close_after_request(self) -> None:
        """
        The peer ending its side after the request leaves the stream open
        for the reply.
        """
        later: Deferred[AuthResp] = Deferred()
        self.dispatch.register(Auth, lambda r: later)
        self.protocol.dataReceived(encode_message(Auth()))

        self.protocol.readConnectionLost()
        later.callback(AuthResp(session_id="s"))

        self.assertEqual(self.reply(), AuthResp(session_id="s"))

    def test_reply_after_loss_dropped(self) -> None:
        """
        A reply ready after the stream is gone is dropped quietly.
        """
        later: Deferred[AuthResp] = Deferred()
        self.dispatch.register(Auth, lambda r: later)
        self.protocol.dataReceived(encode_message(Auth()))
        self.protocol.connectionLost(Failure(ConnectionDone()))

        later.callback(AuthResp())

        self.assertEqual(self.transport.value(), b"")
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_bytes_after_request_ignored(self) -> None:
        """
        Bytes after the request do not disturb the reply.
        """
        self.dispatch.register(Unbind, lambda r: UnbindResp())

        self.protocol.dataReceived(encode_message(Unbind()) + b"\x00\x00")

        self.assertEqual(self.reply(), UnbindResp())


class ProxyTests(SynchronousTestCase):
    """
    Tests for handing a proxy stream to the protocol C{on_proxy} returns.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.accepted: list[tuple[ProxyHeader, ITransport, bytes]] = []
        self.recorder = Recorder()
        self.dispatch = RpcDispatch(on_proxy=self.accept)
        self.factory = RpcServerFactory(self.dispatch, self.clock)
        self.header = ProxyHeader(
            binding_id="b1", client_addr="192.0.2.1:4000", proto="tcp"
        )

    def accept(
        self, header: ProxyHeader, transport: ITransport, remainder: bytes
    ) -> IProtocol:
        self.accepted.append((header, transport, remainder))
        return self.recorder

    def open_in_memory(self) -> tuple[Protocol, iosim.IOPump]:
        """
        Open a stream from an edge-like opener to a server protocol.

        @return: the opener's protocol and the pump.
        """
        opener = Protocol()
        streams = Streams(self.factory, self.clock)
        streams.open(opener)
        return opener, streams.pumps[0]

    def test_header_and_remainder(self) -> None:
        """
        C{on_proxy} gets the header, the stream, and the exact bytes after it.
        """
        raw = encode_message(Unbind()) + bytes(range(256))
        protocol = self.factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)

        protocol.dataReceived(encode_message(self.header) + raw)

        self.assertEqual(self.accepted, [(self.header, transport, raw)])

    def test_remainder_delivered_after_connect(self) -> None:
        """
        The new protocol is connected to the stream, then gets the remainder.
        """
        protocol = self.factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)

        protocol.dataReceived(encode_message(self.header) + b"GET / HTTP/1.1\r\n")

        self.assertEqual(
            self.recorder.events,
            [("made", transport), ("data", b"GET / HTTP/1.1\r\n")],
        )

    def test_no_empty_delivery(self) -> None:
        """
        With nothing after the header the new protocol gets no data yet.
        """
        protocol = self.factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)

        protocol.dataReceived(encode_message(self.header))

        self.assertEqual(self.recorder.events, [("made", transport)])

    def test_later_data_forwarded(self) -> None:
        """
        On a transport that cannot be re-pointed, later data and the loss of
        the stream are passed on to the new protocol.
        """
        protocol = self.factory.buildProtocol(None)
        protocol.makeConnection(StringTransport())
        protocol.dataReceived(encode_message(self.header)[:6])
        protocol.dataReceived(encode_message(self.header)[6:] + b"a")

        protocol.dataReceived(b"b")
        protocol.connectionLost(Failure(ConnectionDone()))

        self.assertEqual(
            self.recorder.events[1:],
            [("data", b"a"), ("data", b"b"), ("lost", ConnectionDone)],
        )

    def test_transport_repointed(self) -> None:
        """
        A transport with a C{protocol} attribute delivers later data and
        the close to the new protocol directly.
        """
        opener, pump = self.open_in_memory()
        opener.transport.write(encode_message(self.header) + b"first")  # type: ignore
        pump.flush()

        opener.transport.write(b"second")  # type: ignore
        opener.transport.loseConnection()  # type: ignore
        pump.flush()

        self.assertIs(pump.serverIO.protocol, self.recorder)
        self.assertEqual(
            [event[0:2] for event in self.recorder.events[1:]],
            [("data", b"first"), ("data", b"second"), ("lost", ConnectionDone)],
        )

    def test_reply_bytes_flow_back(self) -> None:
        """
        What the new protocol writes reaches the opener as raw bytes.
        """
        opener, pump = self.open_in_memory()
        received: list[bytes] = []
        opener.dataReceived = received.append  # type: ignore[method-assign]
        opener.transport.write(encode_message(self.header))  # type: ignore
        pump.flush()

        self.recorder.transport.write(b"SSH-2.0-x\r\n")  # type: ignore
        pump.flush()

        self.assertEqual(b"".join(received), b"SSH-2.0-x\r\n")

    def test_no_proxy_accepted(self) -> None:
        """
        Without C{on_proxy} a proxy stream is closed, nothing written.
        """
        protocol = RpcServerFactory(RpcDispatch(), self.clock).buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)

        protocol.dataReceived(encode_message(self.header))

        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")

    def test_bad_header(self) -> None:
        """
        A proxy header with a field of the wrong type closes the stream
        with nothing written, since proxy streams have no reply.
        """
        payload = b'{"v":1,"type":"proxy","body":{"binding_id":7}}'
        protocol = self.factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)

        protocol.dataReceived(len(payload).to_bytes(4, "big") + payload)

        self.assertTrue(transport.disconnecting)
        self.assertEqual((transport.value(), self.accepted), (b"", []))

    def test_on_proxy_raises(self) -> None:
        """
        An exception from C{on_proxy} is logged and the stream closed.
        """

        def broken(*args: Any) -> IProtocol:
            raise ValueError("no such binding")

        self.dispatch.on_proxy = broken
        protocol = self.factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)

        protocol.dataReceived(encode_message(self.header))

        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_half_close_passed_on(self) -> None:
        """
        The peer ending its side reaches a new protocol that cannot
        half-close as a full close of the stream.
        """
        protocol = self.factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(encode_message(self.header))

        protocol.readConnectionLost()

        self.assertTrue(transport.disconnecting)


def notify_lost(protocol: IProtocol) -> "Deferred[None]":
    """
    @return: a Deferred that fires when C{protocol} loses its connection.
    """
    lost: Deferred[None] = Deferred()
    original = protocol.connectionLost

    def connectionLost(reason: Failure = connectionDone) -> None:
        original(reason)
        lost.callback(None)

    protocol.connectionLost = connectionLost  # type: ignore[method-assign]
    return lost


class TCPCallTests(TestCase):
    """
    A call over loopback TCP, where the request's half-close is real.
    """

    def test_reply_after_half_close(self) -> None:
        """
        The server sees the caller end its write side, replies only then
        (so without the half-close the call times out), and both ends close.
        """
        from twisted.internet import reactor

        half_closed: Deferred[None] = Deferred()
        dispatch = RpcDispatch()
        dispatch.register(
            Auth, lambda r: half_closed.addCallback(lambda _: AuthResp(session_id="t"))
        )
        closed: list[Deferred[None]] = []

        class Factory(RpcServerFactory):
            def buildProtocol(self, addr: Any) -> RpcServerProtocol:
                protocol = super().buildProtocol(addr)
                original = protocol.readConnectionLost

                def readConnectionLost() -> None:
                    original()
                    half_closed.callback(None)

                protocol.readConnectionLost = readConnectionLost  # type: ignore
                closed.append(notify_lost(protocol))
                return protocol

        port = reactor.listenTCP(  # type: ignore[attr-defined]
            0, Factory(dispatch, reactor), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)

        def open_stream(protocol: IProtocol) -> "Deferred[Any]":
            closed.append(notify_lost(protocol))
            creator = ClientCreator(reactor, lambda: protocol)
            return creator.connectTCP("127.0.0.1", port.getHost().port)

        result = call(open_stream, Auth(), TIMEOUT, reactor)  # type: ignore

        def check(reply: AuthResp) -> "Deferred[Any]":
            self.assertEqual(reply, AuthResp(session_id="t"))
            return gatherResults(closed)

        return result.addCallback(check)
