"""
Connecting to a tunnel's local service: a TCP connection, or for an
C{https://} upstream a TLS connection that does not verify the service's
certificate. A dial succeeds once the connection can carry the public
client's bytes: when TCP connects, or when the TLS handshake is done.

An upstream named by IP address is dialled directly. One named by a host
name (C{localhost}, the default) is resolved and its addresses tried as
Twisted's L{HostnameEndpoint} does (IPv6 and IPv4 raced); the address that
answered is then dialled directly for L{ANSWERED_FOR} seconds, so that a
busy tunnel neither hands every connection to the resolver's thread nor
knocks first at an address the service does not listen on (C{::1} for a
service bound to C{127.0.0.1}, say). When that address refuses, the name
is resolved again at once; when it fails otherwise (a timeout), the
connection fails and the next one resolves the name.
"""

import functools
import ipaddress
import weakref
from typing import Any, Callable

from OpenSSL import SSL
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
)
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import (
    IHandshakeListener,
    IOpenSSLClientConnectionCreator,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, connectionDone
from twisted.internet.ssl import CertificateOptions
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from tunnelkit.addresses import format_address
from tunnelkit.config import UpstreamAddress
from tunnelkit.splice import SpliceEnd
from tunnelkit.tlstransport import wrap_client_tls

_log = Logger()

UPSTREAM_CONNECT_TIMEOUT = 10.0
"""Seconds to wait for the local service to accept a connection, and as
long again for its TLS handshake."""

ANSWERED_FOR = 5.0
"""Seconds after a connection to an upstream name during which the address
that accepted it is dialled without resolving the name again."""


class UpstreamHandshakeFailed(Exception):
    """
    The local service accepted the connection but the TLS handshake with it
    did not complete.
    """


@implementer(IOpenSSLClientConnectionCreator)
class UnverifiedClientTLS:
    """
    TLS client options for an C{https://} upstream: send its name as SNI
    (an IP address is not sent, as RFC 6066 asks), offer HTTP/1.1 by ALPN,
    and accept any certificate. The upstream is a service the agent's user
    runs, often with a self-signed certificate; the public side of the
    tunnel is protected by the edge's own TLS.
    """

    def __init__(self, hostname: str) -> None:
        """
        @param hostname: the upstream's host name or IP address.
        """
        self._server_name = _server_name(hostname)
        options = CertificateOptions(verify=False, acceptableProtocols=[b"http/1.1"])
        self._context = options.getContext()

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        """
        @return: a client connection for one upstream.
        """
        connection = SSL.Connection(self._context, None)
        if self._server_name is not None:
            connection.set_tlsext_host_name(self._server_name)
        connection.set_app_data(tlsProtocol)
        connection.set_connect_state()
        return connection


@functools.lru_cache(maxsize=64)
def client_tls(hostname: str) -> UnverifiedClientTLS:
    """
    @return: the TLS client options for the C{https} upstreams named
        C{hostname}, made once and shared, so that their connections share
        one SSL context (and its session cache) instead of one each.
    """
    return UnverifiedClientTLS(hostname)


def _server_name(hostname: str) -> bytes | None:
    """
    @return: the SNI name for C{hostname}, or C{None} for an IP address.
    """
    try:
        ipaddress.ip_address(hostname)
    except ValueError:
        return hostname.encode("idna")
    return None


@implementer(IHandshakeListener)
class UpstreamEnd(SpliceEnd):
    """
    The local service's end of a splice.

    @ivar secured: for a TLS connection, fires with this end when the
        handshake completes, or fails with L{UpstreamHandshakeFailed} when
        the connection ends first; cancelling it aborts the connection.
        C{None} for a plain TCP connection.
    """

    def __init__(self, tls: bool) -> None:
        """
        @param tls: whether the connection will carry TLS.
        """
        super().__init__()
        self.secured: Deferred[UpstreamEnd] | None = (
            Deferred(self._abort) if tls else None
        )

    def _abort(self, secured: Deferred["UpstreamEnd"]) -> None:
        if self.transport is not None:
            self.transport.abortConnection()

    def handshakeCompleted(self) -> None:
        if self.secured is not None and not self.secured.called:
            self.secured.callback(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.secured is not None and not self.secured.called:
            self.secured.errback(
                UpstreamHandshakeFailed(
                    f"the TLS handshake failed: {reason.getErrorMessage()}"
                )
            )
        super().connectionLost(reason)


def dial_upstream(
    reactor: Any,
    addr: UpstreamAddress,
    timeout: float = UPSTREAM_CONNECT_TIMEOUT,
    build_end: Callable[[bool], UpstreamEnd] = UpstreamEnd,
) -> "Deferred[UpstreamEnd]":
    """
    Connect to a tunnel's local service.

    @param reactor: the reactor to connect with.
    @param addr: a C{tcp}, C{http} or C{https} upstream.
    @param timeout: seconds allowed for the connection, and again for the
        TLS handshake of an C{https} upstream.
    @param build_end: makes the connection's end, given whether it will
        carry TLS: L{UpstreamEnd} or a subclass.
    @return: a Deferred that fires with the connected L{UpstreamEnd}, or
        fails with the reason it could not connect; cancelling it stops
        the attempt.
    """
    assert addr.port is not None, "only the file server has no port"
    tls = addr.scheme == "https"
    end = build_end(tls)
    factory = Factory.forProtocol(lambda: end)
    factory.noisy = False
    endpoint: IStreamClientEndpoint = UpstreamEndpoint(
        reactor, addr.host, addr.port, timeout
    )
    if not tls:
        connected = endpoint.connect(factory)
        return connected.addCallback(lambda protocol: end)

    def handshake(connected: object) -> "Deferred[UpstreamEnd]":
        assert end.secured is not None
        return end.secured.addTimeout(timeout, reactor, _handshake_too_slow)

    endpoint = wrap_client_tls(client_tls(addr.host), endpoint)
    connecting = endpoint.connect(factory)
    return connecting.addCallback(handshake)


def _handshake_too_slow(result: object, timeout: float) -> Failure:
    return Failure(
        UpstreamHandshakeFailed(f"no TLS handshake within {timeout:g} seconds")
    )


class AnsweredAddresses:
    """
    The address each upstream C{(name, port)} last connected to, and until
    when it is dialled without resolving the name. The time is given by
    the caller, so that this holds no reactor.
    """

    def __init__(self, remember_for: float = ANSWERED_FOR) -> None:
        """
        @param remember_for: seconds an address is kept after it answered.
        """
        self._remember_for = remember_for
        self._addresses: dict[
            tuple[str, int], tuple[IPv4Address | IPv6Address, float]
        ] = {}

    def get(self, host: str, port: int, now: float) -> IPv4Address | IPv6Address | None:
        """
        @param now: the time, in the clock's seconds.
        @return: the address that answered for C{host} and C{port} lately,
            or C{None}.
        """
        found = self._addresses.get((host, port))
        if found is None:
            return None
        address, until = found
        if now >= until:
            del self._addresses[(host, port)]
            return None
        return address

    def remember(self, host: str, port: int, address: object, now: float) -> None:
        """
        Note that C{address} (a connection's peer) answered for C{host} and
        C{port} at C{now}; anything else than a TCP address is not kept.
        """
        if isinstance(address, (IPv4Address, IPv6Address)):
            self._addresses[(host, port)] = (address, now + self._remember_for)

    def forget(self, host: str, port: int) -> None:
        """
        Resolve C{host} again for the next connection to C{port}.
        """
        self._addresses.pop((host, port), None)


_answered_by_reactor: "weakref.WeakKeyDictionary[IReactorTime, AnsweredAddresses]" = (
    weakref.WeakKeyDictionary()
)
"""The memory of each reactor, dropped with it: one per process in use,
shared by every tunnel and the edge's static addresses."""


def answered_addresses(reactor: IReactorTime) -> AnsweredAddresses:
    """
    @return: the addresses that answered lately for connections made with
        C{reactor}.
    """
    answered = _answered_by_reactor.get(reactor)
    if answered is None:
        answered = _answered_by_reactor[reactor] = AnsweredAddresses()
    return answered


@implementer(IStreamClientEndpoint)
class UpstreamEndpoint:
    """
    A TCP connection to an upstream's host and port; see the module's
    docstring for how a host name is resolved.

    @ivar host: the upstream's IP address or host name.
    @ivar port: its port.
    """

    def __init__(self, reactor: Any, host: str, port: int, timeout: float) -> None:
        """
        @param reactor: connects, resolves and tells the time.
        @param host: an IP address or a host name.
        @param port: the upstream's port.
        @param timeout: seconds each attempt to connect may take.
        """
        self._reactor = reactor
        self.host = host
        self.port = port
        self._timeout = timeout
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            self._literal: IStreamClientEndpoint | None = None
        else:
            self._literal = self._direct(literal.version, host)

    def _direct(self, version: int, address: str) -> IStreamClientEndpoint:
        """
        @return: an endpoint to the port at an IP address of that version.
        """
        if version == 6:
            return TCP6ClientEndpoint(self._reactor, address, self.port, self._timeout)
        return TCP4ClientEndpoint(self._reactor, address, self.port, self._timeout)

    def connect(self, protocolFactory: IProtocolFactory) -> "Deferred[IProtocol]":
        """
        Connect, as L{IStreamClientEndpoint.connect}; cancelling the result
        stops the attempt under way.
        """
        if self._literal is not None:
            return self._literal.connect(protocolFactory)
        answered = answered_addresses(self._reactor)
        address = answered.get(self.host, self.port, self._reactor.seconds())
        if address is None:
            return self.resolve_and_connect(protocolFactory, answered)
        version = 6 if isinstance(address, IPv6Address) else 4
        direct = self._direct(version, address.host)
        return _AnsweredFirst(self, address, direct, protocolFactory, answered).result

    def resolve_and_connect(
        self, protocolFactory: IProtocolFactory, answered: AnsweredAddresses
    ) -> "Deferred[IProtocol]":
        """
        Forget the address that answered lately, resolve the name, try its
        addresses, and remember the one that answers.
        """
        answered.forget(self.host, self.port)
        endpoint = HostnameEndpoint(
            self._reactor, self.host, self.port, timeout=self._timeout
        )

        def connected(protocol: IProtocol) -> IProtocol:
            transport = getattr(protocol, "transport", None)
            if transport is not None:
                answered.remember(
                    self.host, self.port, transport.getPeer(), self._reactor.seconds()
                )
            return protocol

        return endpoint.connect(protocolFactory).addCallback(connected)

    def describe(self) -> str:
        """
        @return: the upstream as C{host:port}, for the logs.
        """
        return f"{self.host}:{self.port}"


class _AnsweredFirst:
    """
    One connection through L{UpstreamEndpoint} to the address that answered
    lately. When that address refuses, the name is resolved and its
    addresses tried at once; any other failure (a timeout, an unreachable
    network) is the connection's, and only makes the next one resolve the
    name, so that a dial never waits for two timeouts.

    @ivar result: fires with the connected protocol, or fails with the last
        attempt's reason; cancelling it stops the attempt under way.
    """

    def __init__(
        self,
        upstream: UpstreamEndpoint,
        address: IPv4Address | IPv6Address,
        direct: IStreamClientEndpoint,
        protocolFactory: IProtocolFactory,
        answered: AnsweredAddresses,
    ) -> None:
        self._upstream = upstream
        self._address = address
        self._factory = protocolFactory
        self._answered = answered
        self._cancelled = False
        self.result: Deferred[IProtocol] = Deferred(self._cancel)
        self._attempt = direct.connect(protocolFactory)
        self._attempt.addCallbacks(self._settle, self._failed)

    def _cancel(self, result: "Deferred[IProtocol]") -> None:
        self._cancelled = True
        self._attempt.cancel()

    def _failed(self, reason: Failure) -> None:
        upstream = self._upstream
        if self._cancelled or not reason.check(ConnectionRefusedError):
            self._answered.forget(upstream.host, upstream.port)
            self._settle(reason)
            return
        _log.debug(
            "upstream {upstream} refused at {address}; resolving it again",
            upstream=upstream.describe(),
            address=format_address(self._address),
        )
        try:
            self._attempt = upstream.resolve_and_connect(self._factory, self._answered)
        except Exception:
            self._settle(Failure())
            return
        self._attempt.addBoth(self._settle)

    def _settle(self, outcome: "IProtocol | Failure") -> None:
        if not self.result.called:
            if isinstance(outcome, Failure):
                self.result.errback(outcome)
            else:
                self.result.callback(outcome)
        elif not isinstance(outcome, Failure):
            # Connected after all, for nobody.
            transport = getattr(outcome, "transport", None)
            if transport is not None:
                transport.abortConnection()
