"""
Raw HTTP over loopback for the tests of the agent's HTTP upstreams and file
server: a listener for the protocol under test (a TCP connection stands in
for the stream from the edge), a client that writes bytes exactly as given
and keeps every byte of the answer, and a reader of the answers.

Every listener is on a port the kernel picks, every wait has a deadline,
and the test's clean-up closes every listener and connection.
"""

from dataclasses import dataclass
from typing import Any, Callable

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from tests.e2e import LOOPBACK, WAIT, bounded
from tests.loopback import listen_loopback


class _Served(Factory):
    """
    Builds the protocol under test for each connection, and remembers the
    connections still open so the clean-up can abort them.
    """

    noisy = False

    def __init__(self, build: Callable[[], Protocol]) -> None:
        self.build = build
        self.open: set[Any] = set()

    def buildProtocol(self, addr: Any) -> Any:
        protocol = self.build()
        original = protocol.connectionLost
        factory = self

        def lost(reason: Failure = connectionDone) -> None:
            factory.open.discard(protocol)
            original(reason)

        protocol.connectionLost = lost  # type: ignore[method-assign]
        self.open.add(protocol)
        return protocol


def serve(test: TestCase, build: Callable[[], Any], tls: Any = None) -> Deferred:
    """
    Listen on loopback, port 0, until the test's clean-up, with a protocol
    from C{build} on each connection.

    @param tls: server TLS options, to listen with TLS.
    @return: a Deferred firing with the port number.
    """
    factory = _Served(build)
    return listen_loopback(test, factory, factory.open, tls)


@implementer(IHalfCloseableProtocol)
class _RawClient(Protocol):
    """
    Write the request bytes, optionally half-close, and keep everything
    read until the other side closes.
    """

    def __init__(self, request: bytes, half_close: bool, clients: set[Any]) -> None:
        self.request = request
        self.half_close = half_close
        self.clients = clients
        self.received = bytearray()
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        self.clients.add(self)
        self.transport.write(self.request)  # type: ignore[union-attr]
        if self.half_close:
            self.transport.loseWriteConnection()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.clients.discard(self)
        if not self.done.called:
            self.done.callback(bytes(self.received))


class _OneProtocol(Factory):
    noisy = False

    def __init__(self, protocol: Protocol) -> None:
        self.protocol_instance = protocol

    def buildProtocol(self, addr: Any) -> Protocol:
        return self.protocol_instance


class RawClients:
    """
    The raw client connections of one test, aborted in its clean-up.
    """

    def __init__(self, test: TestCase) -> None:
        self.open: set[Any] = set()
        test.addCleanup(self.abort_all)

    def abort_all(self) -> None:
        """
        Abort every connection still open.
        """
        for client in list(self.open):
            client.transport.abortConnection()

    def exchange(
        self, port: int, request: bytes, half_close: bool = False
    ) -> "Deferred[bytes]":
        """
        Send C{request} as it is and read until the server closes.

        @param half_close: whether to send FIN after the request.
        @return: a Deferred firing with every byte received.
        """
        client = _RawClient(request, half_close, self.open)
        endpoint = TCP4ClientEndpoint(reactor, LOOPBACK, port, timeout=WAIT)
        connecting = endpoint.connect(_OneProtocol(client))
        connecting.addErrback(client.done.errback)
        return bounded(client.done, WAIT, f"an answer and a close on port {port}")


@dataclass
class Response:
    """
    One HTTP response as read from the wire.

    @ivar status: the status code.
    @ivar headers: the header fields, names in lower case, in order.
    @ivar body: the body.
    """

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        """
        @return: the value of the first header called C{name}, if any.
        """
        for key, value in self.headers:
            if key == name.lower():
                return value
        return None


def read_responses(data: bytes, bodiless: tuple[bool, ...] = ()) -> list[Response]:
    """
    Split the bytes of one connection into responses. Bodies are delimited
    by C{Content-Length}, or run to the end; chunked bodies are not
    expected from the servers under test.

    @param bodiless: for each response in order, whether it answers a
        C{HEAD}, so has no body whatever its headers say.
    @return: the responses.
    """
    responses = []
    rest = data
    while rest:
        head, separator, rest = rest.partition(b"\r\n\r\n")
        assert separator, f"incomplete response head: {head!r}"
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = []
        for line in lines:
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
        response = Response(int(status_line.split(" ")[1]), headers, b"")
        index = len(responses)
        head_only = index < len(bodiless) and bodiless[index]
        length = response.header("content-length")
        if head_only or response.status == 304:
            pass
        elif length is not None:
            response.body, rest = rest[: int(length)], rest[int(length) :]
        else:
            response.body, rest = rest, b""
        responses.append(response)
    return responses


def read_response(data: bytes, head_only: bool = False) -> Response:
    """
    @return: the one response in C{data}.
    """
    [response] = read_responses(data, (head_only,))
    return response
