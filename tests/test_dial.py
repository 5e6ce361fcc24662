"""
How the agent reaches a tunnel's local service by address: an IP address
directly, a host name resolved and then dialled at the address that
answered, for a while, resolved again at once when that address refuses,
and on the next connection when it fails otherwise.
"""

from typing import Any

from twisted.internet import reactor
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    inlineCallbacks,
)
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.error import (
    ConnectingCancelledError,
    ConnectionRefusedError,
    TimeoutError,
)
from twisted.internet.interfaces import IHostnameResolver, IListeningPort
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
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
    Another resolver, noting each name it is asked for.
    """

    def __init__(self, wrapped: IHostnameResolver) -> None:
        self.wrapped = wrapped
        self.names: list[str] = []

    def resolveHostName(
        self, receiver: Any, hostName: str, *args: Any, **kwargs: Any
    ) -> Any:
        self.names.append(hostName)
        return self.wrapped.resolveHostName(receiver, hostName, *args, **kwargs)


class _Tracked(Protocol):
    """
    A connection whose end a test waits for.
    """

    def __init__(self) -> None:
        self.closed: Deferred[None] = Deferred()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed.callback(None)


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
        previous = reactor.installNameResolver(self.resolver)
        self.addCleanup(reactor.installNameResolver, previous)
        self.accepted: list[_Tracked] = []
        self.addCleanup(self._close_all)
        server = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        factory = Factory.forProtocol(self._accept)
        self.port: IListeningPort = yield server.listen(factory)
        self.addCleanup(self.port.stopListening)
        self.port_number = self.port.getHost().port
        answered = answered_addresses(reactor)
        self.addCleanup(answered.forget, "localhost", self.port_number)

    def _accept(self) -> _Tracked:
        protocol = _Tracked()
        self.accepted.append(protocol)
        return protocol

    def _close_all(self) -> "Deferred[Any]":
        """
        Abort every connection of the test and wait until both ends are
        closed.
        """
        for protocol in self.accepted:
            if protocol.transport is not None:
                protocol.transport.abortConnection()
        return DeferredList([protocol.closed for protocol in self.accepted])

    @inlineCallbacks
    def _connect(self, host: str) -> Steps[_Tracked]:
        endpoint = UpstreamEndpoint(reactor, host, self.port_number, ATTEMPT_TIMEOUT)
        protocol: _Tracked = yield endpoint.connect(Factory.forProtocol(self._accept))
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
    def test_refusing_address_resolved_again(self) -> Steps[None]:
        """
        When the address that answered before refuses, the name is resolved
        again and the connection made to the address that answers now.
        """
        answered = answered_addresses(reactor)
        # Nothing listens on this other loopback address.
        refusing = IPv4Address("TCP", "127.0.0.2", self.port_number)
        answered.remember("localhost", self.port_number, refusing, reactor.seconds())

        protocol = yield self._connect("localhost")

        assert protocol.transport is not None
        self.assertEqual(protocol.transport.getPeer().host, "127.0.0.1")
        self.assertEqual(self.resolver.names, ["localhost"])
        self.assertEqual(
            answered.get("localhost", self.port_number, reactor.seconds()),
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
        answered = AnsweredAddresses()
        address = IPv4Address("TCP", "127.0.0.1", 8080)
        answered.remember("localhost", 8080, address, 100.0)

        kept = answered.get("localhost", 8080, 100.0 + ANSWERED_FOR - 0.5)
        other_port = answered.get("localhost", 8081, 100.0)
        expired = answered.get("localhost", 8080, 100.0 + ANSWERED_FOR)

        self.assertEqual(kept, address)
        self.assertIsNone(other_port)
        self.assertIsNone(expired)

    def test_only_tcp_addresses(self) -> None:
        """
        A peer that is not a TCP address (a test's fake transport, say) is
        not remembered.
        """
        answered = AnsweredAddresses()
        answered.remember("localhost", 8080, object(), 0.0)

        self.assertIsNone(answered.get("localhost", 8080, 0.0))


class MemoryDialTests(SynchronousTestCase):
    """
    L{UpstreamEndpoint} on a memory reactor, whose resolver answers
    C{127.0.0.1} for every name.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.resolver = CountingResolver(self.reactor.nameResolver)
        self.reactor.installNameResolver(self.resolver)
        self.answered = answered_addresses(self.reactor)

    def remember(self, address: IPv4Address) -> None:
        self.answered.remember("localhost", 8080, address, self.reactor.seconds())

    def connect(self, host: str = "localhost") -> "Deferred[Any]":
        endpoint = UpstreamEndpoint(self.reactor, host, 8080, ATTEMPT_TIMEOUT)
        return endpoint.connect(Factory.forProtocol(Protocol))

    def fail_attempt(self, index: int, reason: Exception) -> None:
        """
        Make the connection attempt C{index} fail with C{reason}.
        """
        factory = self.reactor.tcpClients[index][2]
        factory.clientConnectionFailed(self.reactor.connectors[index], Failure(reason))

    def test_ipv6_literal(self) -> None:
        """
        An IPv6 address is dialled as it is, without the resolver.
        """
        self.connect("::1")

        self.assertEqual([c[0] for c in self.reactor.tcpClients], ["::1"])
        self.assertEqual(self.resolver.names, [])

    def test_remembered_ipv6(self) -> None:
        """
        A remembered IPv6 address is dialled without the resolver.
        """
        self.answered.remember(
            "localhost", 8080, IPv6Address("TCP", "::1", 8080), self.reactor.seconds()
        )

        self.connect()

        self.assertEqual([c[0] for c in self.reactor.tcpClients], ["::1"])
        self.assertEqual(self.resolver.names, [])

    def test_refused_then_resolved(self) -> None:
        """
        A refusal of the remembered address starts a resolution and an
        attempt at what it gives.
        """
        self.remember(IPv4Address("TCP", "127.0.0.2", 8080))
        result = self.connect()

        self.fail_attempt(0, ConnectionRefusedError())

        self.assertNoResult(result)
        self.assertEqual(self.resolver.names, ["localhost"])
        self.assertEqual(
            [c[0] for c in self.reactor.tcpClients], ["127.0.0.2", "127.0.0.1"]
        )

    def test_timeout_not_retried(self) -> None:
        """
        A remembered address that times out fails the connection with that
        reason, without a second attempt, and the next connection resolves
        the name.
        """
        self.remember(IPv4Address("TCP", "127.0.0.2", 8080))
        result = self.connect()

        self.fail_attempt(0, TimeoutError())
        failure = self.failureResultOf(result)
        self.connect()

        self.assertTrue(failure.check(TimeoutError))
        self.assertEqual(self.resolver.names, ["localhost"])
        self.assertEqual(
            [c[0] for c in self.reactor.tcpClients], ["127.0.0.2", "127.0.0.1"]
        )

    def test_cancel_direct_attempt(self) -> None:
        """
        Cancelling stops the attempt under way and fails the result with the
        cancellation; the resolver is not asked.
        """
        self.remember(IPv4Address("TCP", "127.0.0.1", 8080))
        result = self.connect()

        result.cancel()

        failure = self.failureResultOf(result)
        self.assertTrue(failure.check(ConnectingCancelledError, CancelledError))
        self.assertTrue(self.reactor.connectors[0].stoppedConnecting)
        self.assertEqual(self.resolver.names, [])

    def test_cancel_after_refusal(self) -> None:
        """
        Cancelling while the name is resolved again stops that attempt.
        """
        self.remember(IPv4Address("TCP", "127.0.0.2", 8080))
        result = self.connect()
        self.fail_attempt(0, ConnectionRefusedError())

        result.cancel()

        failure = self.failureResultOf(result)
        self.assertTrue(failure.check(ConnectingCancelledError, CancelledError))
        self.assertTrue(self.reactor.connectors[1].stoppedConnecting)
