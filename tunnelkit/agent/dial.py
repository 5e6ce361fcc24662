"""
Connecting to a tunnel's local service: a TCP connection, or for an
C{https://} upstream a TLS connection that does not verify the service's
certificate. A dial succeeds once the connection can carry the public
client's bytes: when TCP connects, or when the TLS handshake is done.
"""

import functools
import ipaddress
from typing import Any, Callable

from OpenSSL import SSL
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import (
    IHandshakeListener,
    IOpenSSLClientConnectionCreator,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, connectionDone
from twisted.internet.ssl import CertificateOptions
from twisted.python.failure import Failure
from zope.interface import implementer

from tunnelkit.config import UpstreamAddress
from tunnelkit.splice import SpliceEnd
from tunnelkit.tlstransport import wrap_client_tls

UPSTREAM_CONNECT_TIMEOUT = 10.0
"""Seconds to wait for the local service to accept a connection, and as
long again for its TLS handshake."""


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
    endpoint: IStreamClientEndpoint = HostnameEndpoint(
        reactor, addr.host, addr.port, timeout=timeout
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
