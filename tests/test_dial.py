"""
How the agent reaches a tunnel's local service by address: an IP address
directly, a host name resolved and then dialled at the address that
answered, for a while, and resolved again when that address fails.
"""

from typing import Any

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.error import ConnectingCancelledError
from twisted.internet.interfaces import IHostnameResolver, IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from tests.e2e import Steps
from tunnelkit.agent.dial import (
    ANSWERED_FOR,
    AnsweredAddresses,
    UpstreamEndpoint,
    answered_addresses,
)

ATTEMPT_TIMEOUT = 10.0
"""Seconds a test's connection attempt may take."""


@implementer(IHostnameResolver)
class CountingResolver:
    """
    The reactor's resolver, noting each name it is asked for.
    """

    def __init__(self, wrapped: IHostnameResolver) -> None:
        self.wrapped = wrapped
        self.names: list[str] = []

    def resolveHostName(
        self, receiver: Any, hostName: str, *args: Any, **kwargs: Any
    ) -> Any:
        self.names.append(hostName)
        return self.wrapped.resolveHostName(receiver, hostName, *args, **kwargs)


class RealDialTests(TestCase):
    """
    L{UpstreamEndpoint} against a real loopback listener, with the
    reactor's resolver counted.
    """

    timeout = 30

    def setUp(self) -> Steps[None]:
        return self._listen()

    @inlineCallbacks
    def _listen(self) -> Steps[None]:
        self.resolver = CountingResolver(reactor.nameResolver)
        self.patch(reactor, "_nameResolver", self.resolver)
        answered = answered_addresses(reactor)
        self.addCleanup(answered._addresses.clear)
        server = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        self.port: IListeningPort = yield server.listen(Factory.forProtocol(Protocol))
        self.addCleanup(self.port.stopListening)
        self.port_number = self.port.getHost().port

    @inlineCallbacks
    def _connect(self, host: str) -> Steps[Protocol]:
        endpoint = UpstreamEndpoint(reactor, host, self.port_number, ATTEMPT_TIMEOUT)
        protocol: Protocol = yield endpoint.connect(Factory.forProtocol(Protocol))
        assert protocol.transport is not None
        self.addCleanup(protocol.transport.abortConnection)
        return protocol

    @inlineCallbacks
    def test_ip_address_not_resolved(self) -> Steps[None]:
        """
        An upstream named by IP address is dialled without the resolver.
        """
        first = yield self._connect("127.0.0.1")
        second = yield self._connect("127.0.0.1")

        self.assertEqual(self.resolver.names, [])
        assert first.transport is not None and second.transport is not None
        self.assertEqual(first.transport.getPeer().port, self.port_number)
        self.assertEqual(second.transport.getPeer().port, self.port_number)

    @inlineCallbacks
    def test_name_resolved_once(self) -> Steps[None]:
        """
        A host name is resolved for the first connection; the next ones go
        to the address that answered.
        """
        for _ in range(3):
            protocol = yield self._connect("localhost")
            assert protocol.transport is not None
            self.assertEqual(
                protocol.transport.getPeer(),
                IPv4Address("TCP", "127.0.0.1", self.port_number),
            )

        self.assertEqual(self.resolver.names, ["localhost"])

    @inlineCallbacks
    def test_failed_address_resolved_again(self) -> Steps[None]:
        """
        When the address that answered before refuses, the name is resolved
        again and the connection made to the address that answers now.
        """
        answered = answered_addresses(reactor)
        # Nothing listens on this other loopback address.
        answered.remember(
            "localhost",
            self.port_number,
            IPv4Address("TCP", "127.0.0.2", self.port_number),
        )

        protocol = yield self._connect("localhost")

        assert protocol.transport is not None
        self.assertEqual(protocol.transport.getPeer().host, "127.0.0.1")
        self.assertEqual(self.resolver.names, ["localhost"])
        self.assertEqual(
            answered.get("localhost", self.port_number),
            IPv4Address("TCP", "127.0.0.1", self.port_number),
        )


class AnsweredAddressesTests(SynchronousTestCase):
    """
    L{AnsweredAddresses} keeps an address for L{ANSWERED_FOR} seconds.
    """

    def test_expires(self) -> None:
        """
        An address is given back until its time is up, then forgotten.
        """
        clock = Clock()
        answered = AnsweredAddresses(clock)
        address = IPv4Address("TCP", "127.0.0.1", 8080)
        answered.remember("localhost", 8080, address)

        clock.advance(ANSWERED_FOR - 0.5)
        kept = answered.get("localhost", 8080)
        other_port = answered.get("localhost", 8081)
        clock.advance(0.5)
        expired = answered.get("localhost", 8080)

        self.assertEqual(kept, address)
        self.assertIsNone(other_port)
        self.assertIsNone(expired)

    def test_only_tcp_addresses(self) -> None:
        """
        A peer that is not a TCP address (a test's fake transport, say) is
        not remembered.
        """
        answered = AnsweredAddresses(Clock())
        answered.remember("localhost", 8080, object())

        self.assertIsNone(answered.get("localhost", 8080))


class CancelTests(SynchronousTestCase):
    """
    Cancelling a connection to a remembered address stops it, and does not
    resolve the name.
    """

    def test_cancel_direct_attempt(self) -> None:
        """
        The attempt under way is stopped and the result fails with the
        cancellation; the resolver is not asked.
        """
        memory = MemoryReactorClock()
        resolver = CountingResolver(memory.nameResolver)
        memory.installNameResolver(resolver)
        answered_addresses(memory).remember(
            "localhost", 8080, IPv4Address("TCP", "127.0.0.1", 8080)
        )
        endpoint = UpstreamEndpoint(memory, "localhost", 8080, ATTEMPT_TIMEOUT)

        result = endpoint.connect(Factory.forProtocol(Protocol))
        result.cancel()

        failure = self.failureResultOf(result)
        self.assertTrue(failure.check(ConnectingCancelledError, CancelledError))
        self.assertEqual([c[0] for c in memory.tcpClients], ["127.0.0.1"])
        self.assertTrue(memory.connectors[0].stoppedConnecting)
        self.assertEqual(resolver.names, [])
