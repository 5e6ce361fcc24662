"""
Tests for L{tunnelkit.sockets}.
"""

import socket

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.e2e import Steps
from tunnelkit.sockets import set_no_delay


class _Wrapper:
    """
    A transport wrapping another, as TLS does.
    """

    def __init__(self, transport: object) -> None:
        self.transport = transport


class SetNoDelayFakeTests(SynchronousTestCase):
    """
    L{set_no_delay} on transports without a TCP socket.
    """

    def test_no_socket(self) -> None:
        """
        A transport with no TCP socket below it is left alone.
        """
        self.assertFalse(set_no_delay(_Wrapper(StringTransport())))
        self.assertFalse(set_no_delay(None))


class SetNoDelayTests(TestCase):
    """
    L{set_no_delay} on a real loopback connection.
    """

    @inlineCallbacks
    def test_through_wrapper(self) -> Steps[None]:
        """
        The TCP socket under a wrapping transport gets C{TCP_NODELAY}.
        """
        accepted: Deferred[Protocol] = Deferred()

        class Accept(Protocol):
            def connectionMade(self) -> None:
                accepted.callback(self)

        port = reactor.listenTCP(  # type: ignore[attr-defined]
            0, Factory.forProtocol(Accept), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        client = yield endpoint.connect(Factory.forProtocol(Protocol))
        self.addCleanup(client.transport.loseConnection)
        server = yield accepted
        self.addCleanup(server.transport.loseConnection)

        self.assertTrue(set_no_delay(_Wrapper(server.transport)))

        option = server.transport.getHandle().getsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY
        )
        self.assertTrue(option)
