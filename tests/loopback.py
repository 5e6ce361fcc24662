"""
Loopback servers and clients for the end-to-end tests: the local services a
tunnel forwards to (an echo server, a server that answers a half-close) and
the public clients that send traffic through it and check what comes back.

Every server listens on a port the kernel picks, every wait has a deadline,
and the test's clean-up closes every connection still open.
"""

import hashlib
import random
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import (
    SSL4ServerEndpoint,
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
)
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IListeningPort,
    IPullProducer,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from tests.e2e import LOOPBACK, WAIT, bounded


class _Echo(Protocol):
    """
    Send back every byte; stop reading while the write buffer is full.
    """

    # typing note: the TCP transport's producer and abort methods are on no
    # single Twisted interface, so every protocol here types it as Any.
    transport: Any

    def connectionMade(self) -> None:
        self.factory.connections.add(self)
        self.transport.registerProducer(self.transport, True)

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        self.factory.connections.discard(self)


class _ServerFactory(Factory):
    """
    A quiet factory that remembers its open connections.
    """

    noisy = False

    def __init__(self, protocol: type[Protocol]) -> None:
        self.protocol = protocol
        self.connections: set[Any] = set()


def listen_echo(test: TestCase) -> Deferred:
    """
    Start a TCP echo server on loopback, port 0, closed (with its
    connections) in the test's clean-up.

    @return: a Deferred firing with its port number.
    """
    return _listen(test, _ServerFactory(_Echo))


def _listen(test: TestCase, factory: _ServerFactory) -> Deferred:
    """
    Listen on a loopback port picked by the kernel until the test's
    clean-up, which also aborts the connections still open.

    @return: a Deferred firing with the port number.
    """

    def listening(port: IListeningPort) -> int:
        def close() -> Deferred[None] | None:
            for connection in list(factory.connections):
                connection.transport.abortConnection()
            return port.stopListening()

        test.addCleanup(close)
        address: Any = port.getHost()
        number: int = address.port
        return number

    endpoint = TCP4ServerEndpoint(reactor, 0, interface=LOOPBACK)
    return endpoint.listen(factory).addCallback(listening)


@implementer(IHalfCloseableProtocol)
class _Replier(Protocol):
    """
    Read until the client half-closes, then answer C{received N} (N the
    bytes read) and close.
    """

    transport: Any

    def connectionMade(self) -> None:
        self.count = 0
        self.factory.connections.add(self)

    def dataReceived(self, data: bytes) -> None:
        self.count += len(data)

    def readConnectionLost(self) -> None:
        self.transport.write(b"received %d" % (self.count,))
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        self.factory.connections.discard(self)


def listen_replier(test: TestCase) -> Deferred:
    """
    Start a loopback server that answers each client's half-close with
    C{received N} and closes, stopped in the test's clean-up.

    @return: a Deferred firing with its port number.
    """
    return _listen(test, _ServerFactory(_Replier))


class _Client(Protocol):
    """
    A client connection that records what it receives and when it ends.

    @ivar closed: fires with the bytes received once the connection is lost.
    """

    transport: Any

    def __init__(self, clients: set["_Client"]) -> None:
        self.clients = clients
        self.received = bytearray()
        self.closed: Deferred = Deferred()
        self.reason: Failure | None = None

    def connectionMade(self) -> None:
        self.clients.add(self)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        self.clients.discard(self)
        self.reason = reason
        self.closed.callback(bytes(self.received))


class _EchoClient(_Client):
    """
    Send a payload and close once as many bytes came back.

    @ivar answered: fires with the bytes that came back, or fails if the
        connection ends short.
    """

    def __init__(self, clients: set[_Client], payload: bytes) -> None:
        super().__init__(clients)
        self.payload = payload
        self.answered: Deferred = Deferred()

    def connectionMade(self) -> None:
        super().connectionMade()
        self.transport.write(self.payload)

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        if len(self.received) >= len(self.payload) and not self.answered.called:
            self.transport.loseConnection()
            self.answered.callback(bytes(self.received))

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        super().connectionLost(reason)
        if not self.answered.called:
            self.answered.errback(
                Failure(
                    AssertionError(
                        f"the connection closed after {len(self.received)} of"
                        f" {len(self.payload)} bytes came back: {reason.value}"
                    )
                )
            )


@implementer(IHalfCloseableProtocol)
class _HalfClosingClient(_Client):
    """
    Send a payload, half-close, and read until the other side closes.
    """

    def __init__(self, clients: set[_Client], payload: bytes) -> None:
        super().__init__(clients)
        self.payload = payload

    def connectionMade(self) -> None:
        super().connectionMade()
        self.transport.write(self.payload)
        self.transport.loseWriteConnection()

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


@implementer(IPullProducer)
class _StreamingClient(_Client):
    """
    Write C{total} pseudo-random bytes a chunk at a time as the socket
    drains, and hash what was written and what comes back.

    @ivar done: fires with C{(sent_sha256, received_sha256, count)} once
        C{total} bytes came back.
    """

    chunk_size = 256 * 1024

    def __init__(self, clients: set[_Client], total: int) -> None:
        super().__init__(clients)
        self.total = total
        self.written = 0
        self.count = 0
        self.sent_hash = hashlib.sha256()
        self.received_hash = hashlib.sha256()
        self.random = random.Random(total)
        self.done: Deferred = Deferred()

    def connectionMade(self) -> None:
        super().connectionMade()
        self.transport.registerProducer(self, False)

    def resumeProducing(self) -> None:
        size = min(self.chunk_size, self.total - self.written)
        if size <= 0:
            return
        chunk = self.random.randbytes(size)
        self.sent_hash.update(chunk)
        self.written += size
        self.transport.write(chunk)
        if self.written >= self.total:
            self.transport.unregisterProducer()

    def stopProducing(self) -> None:
        pass

    def dataReceived(self, data: bytes) -> None:
        self.count += len(data)
        self.received_hash.update(data)
        if self.count >= self.total and not self.done.called:
            self.transport.loseConnection()
            self.done.callback(
                (self.sent_hash.hexdigest(), self.received_hash.hexdigest(), self.count)
            )

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        super().connectionLost(reason)
        if not self.done.called:
            self.done.errback(
                Failure(
                    AssertionError(
                        f"the stream closed after {self.count} of {self.total}"
                        f" bytes came back: {reason.value}"
                    )
                )
            )


class _OneClient(Factory):
    """
    Hands out one prepared client protocol, quietly.
    """

    noisy = False

    def __init__(self, client: _Client) -> None:
        self.client = client

    def buildProtocol(self, addr: Any) -> _Client:
        return self.client


class Clients:
    """
    Loopback client connections of one test, all aborted in its clean-up
    so none outlives it.
    """

    def __init__(self, test: TestCase) -> None:
        self.open: set[_Client] = set()
        test.addCleanup(self.abort_all)

    def abort_all(self) -> None:
        """
        Abort every connection still open.
        """
        for client in list(self.open):
            client.transport.abortConnection()

    def _connect(self, port: int, client: _Client, failed: Deferred) -> None:
        endpoint = TCP4ClientEndpoint(reactor, LOOPBACK, port, timeout=WAIT)
        connecting = endpoint.connect(_OneClient(client))
        connecting.addErrback(lambda f: None if failed.called else failed.errback(f))

    def echo(self, port: int, payload: bytes, seconds: float = WAIT) -> Deferred:
        """
        Send C{payload} and read until as many bytes came back, then close.

        @return: a Deferred firing with the bytes that came back, or failing
            if the connection ends short or the time runs out.
        """
        client = _EchoClient(self.open, payload)
        self._connect(port, client, client.answered)
        what = f"{len(payload)} bytes echoed through port {port}"
        return bounded(client.answered, seconds, what)

    def closed_by_peer(self, port: int, seconds: float = WAIT) -> Deferred:
        """
        Connect, send nothing, and wait for the other side to close.

        @return: a Deferred firing with the bytes received before the close
            and the L{Failure} the connection was lost with.
        """
        client = _Client(self.open)
        self._connect(port, client, client.closed)
        what = f"port {port} to close the connection"
        closed = bounded(client.closed, seconds, what)
        return closed.addCallback(lambda received: (received, client.reason))

    def half_close(self, port: int, payload: bytes, seconds: float = WAIT) -> Deferred:
        """
        Send C{payload}, half-close (FIN), and read until the other side
        closes.

        @return: a Deferred firing with the bytes received and the
            L{Failure} the connection was lost with.
        """
        client = _HalfClosingClient(self.open, payload)
        self._connect(port, client, client.closed)
        what = f"port {port} to answer a half-close and close"
        closed = bounded(client.closed, seconds, what)
        return closed.addCallback(lambda received: (received, client.reason))

    def stream(self, port: int, total: int, seconds: float) -> Deferred:
        """
        Send C{total} pseudo-random bytes through an echo and read them back,
        hashing both directions without holding them in memory.

        @return: a Deferred firing with C{(sent_sha256, received_sha256,
            received_count)} once C{total} bytes came back.
        """
        client = _StreamingClient(self.open, total)
        self._connect(port, client, client.done)
        what = f"{total} bytes streamed through port {port}"
        return bounded(client.done, seconds, what)


def gather(deferreds: list[Deferred]) -> Deferred:
    """
    @return: a Deferred firing with every result, or with the first failure
        once all have finished.
    """
    return gatherResults(deferreds, consumeErrors=True)


def listen_loopback(
    test: TestCase, factory: Factory[Any], open_connections: set[Any], tls: Any = None
) -> Deferred:
    """
    Listen on a loopback port picked by the kernel until the test's
    clean-up, which first aborts every connection in C{open_connections}.

    @param tls: server TLS options, to listen with TLS.

    @return: a Deferred firing with the port number.
    """

    def listening(port: IListeningPort) -> int:
        def close() -> Deferred[None] | None:
            for connection in list(open_connections):
                transport = getattr(connection, "transport", None)
                if transport is not None:
                    transport.abortConnection()
            return port.stopListening()

        test.addCleanup(close)
        address: Any = port.getHost()
        number: int = address.port
        return number

    endpoint: Any = TCP4ServerEndpoint(reactor, 0, interface=LOOPBACK)
    if tls is not None:
        endpoint = SSL4ServerEndpoint(reactor, 0, tls, interface=LOOPBACK)
    return endpoint.listen(factory).addCallback(listening)
