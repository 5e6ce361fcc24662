"""
The TLS layer of the agent-to-edge connection, tuned for bulk data.

Twisted's L{TLSMemoryBIOProtocol} hands bytes from OpenSSL to the socket one
TLS record at a time: each 16 KiB record written is copied out of the send
BIO and given to the socket transport on its own, and every write, however
large, is first copied into a buffer that gathers small writes. A tunnel
moves most of its bytes in runs of many records, so L{LinkTLSProtocol}
writes such a run into OpenSSL straight away and drains the send BIO once
for all of it; small writes are still gathered. It also makes the socket
read and buffer in larger pieces (L{LINK_BUFFER_SIZE}). Reading, handshake,
shutdown, producers and errors stay Twisted's.

Known limit: the write loop overrides private methods of
L{TLSMemoryBIOProtocol} (C{_write} and C{_flushSendBIO}) and uses its
C{_aggregator}; C{tests/test_tlstransport.py} runs the handshake, bulk data
both ways, mixed small and large writes, close and abort through them
against the installed Twisted, so a change there shows up as a failing test.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from OpenSSL.SSL import Error, WantReadError
from twisted.internet.abstract import FileDescriptor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.protocols.tls import (
    BufferingTLSTransport,
    TLSMemoryBIOFactory,
    TLSMemoryBIOProtocol,
)
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = [
    "READ_SIZE",
    "LINK_BUFFER_SIZE",
    "read_in_large_pieces",
    "LinkTLSProtocol",
    "LinkTLSFactory",
    "wrap_client_tls",
]

READ_SIZE = 2**18
"""Bytes read from the socket at once (Twisted reads 64 KiB). It is also the
socket transport's write buffer size above which its producer is paused."""

LINK_BUFFER_SIZE = 2**20
"""The same for the agent-to-edge socket, larger than L{READ_SIZE} so that
one read of a public connection does not fill the link's write buffer and
pause every stream."""

_RECORD = 2**14
"""The largest TLS record payload."""

_RECORD_OVERHEAD = 256
"""More than the bytes a TLS record adds to its payload (header, padding,
tag), so that one read of the send BIO sized by it drains the BIO."""


def read_in_large_pieces(transport: Any, size: int = READ_SIZE) -> None:
    """
    Make a socket transport read up to C{size} bytes at once; other
    transports are left as they are.
    """
    if isinstance(transport, FileDescriptor):
        transport.bufferSize = size


class LinkTLSProtocol(BufferingTLSTransport):
    """
    A TLS connection that moves runs of records at once; see the module's
    docstring.
    """

    # typing note: ProtocolWrapper declares its transport optional; these
    # methods run only while connected.
    transport: Any

    def makeConnection(self, transport: Any) -> None:
        read_in_large_pieces(transport, LINK_BUFFER_SIZE)
        super().makeConnection(transport)

    def writeSequence(self, sequence: Iterable[bytes]) -> None:
        # Twisted's copies every write into the small-write aggregator; a
        # run of whole records goes to OpenSSL at once, after what the
        # aggregator holds.
        data = b"".join(sequence)
        if len(data) < _RECORD:
            self._aggregator.write(data)
            return
        self._aggregator.flush()
        TLSMemoryBIOProtocol.write(self, data)

    def _write(self, data: bytes) -> None:
        # Twisted's loop drains the send BIO after every record.
        if self._lostTLSConnection:
            return
        view = memoryview(data)
        total = len(data)
        send = self._tlsConnection.send
        sent = 0
        while sent < total:
            try:
                # With partial writes on (pyOpenSSL's default), one call
                # writes one record.
                sent += send(view[sent : sent + _RECORD])
            except WantReadError:
                self._flushSendBIO()
                self._bufferedWrite(bytes(view[sent:]))
                return
            except Error:
                self._tlsShutdownFinished(Failure())
                return
        self._flushSendBIO(total)

    def _flushSendBIO(self, hint: int = 0) -> None:
        # Twisted's reads at most 32 KiB; this drains the BIO, in one read
        # when told how many bytes of records went in.
        size = max(2**15, hint + (hint // _RECORD + 1) * _RECORD_OVERHEAD)
        read = self._tlsConnection.bio_read
        while True:
            try:
                data = read(size)
            except WantReadError:
                return
            self.transport.write(data)
            if len(data) < size:
                return


class LinkTLSFactory(TLSMemoryBIOFactory):
    """
    A L{TLSMemoryBIOFactory} whose connections are L{LinkTLSProtocol}s.
    """

    protocol = LinkTLSProtocol


def _wrapped_protocol(tls: IProtocol) -> IProtocol:
    protocol: IProtocol = getattr(tls, "wrappedProtocol")
    return protocol


@implementer(IStreamClientEndpoint)
class _LinkTLSClientEndpoint:
    def __init__(
        self, creator: IOpenSSLClientConnectionCreator, wrapped: IStreamClientEndpoint
    ) -> None:
        self._creator = creator
        self._wrapped = wrapped

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        connecting = self._wrapped.connect(LinkTLSFactory(self._creator, True, factory))
        return connecting.addCallback(_wrapped_protocol)


def wrap_client_tls(
    creator: IOpenSSLClientConnectionCreator, wrapped: IStreamClientEndpoint
) -> IStreamClientEndpoint:
    """
    Like L{twisted.internet.endpoints.wrapClientTLS}, with L{LinkTLSProtocol}
    connections.

    @param creator: the client TLS options.
    @param wrapped: the endpoint to the edge's TCP listener.
    @return: an endpoint whose C{connect} fires with the caller's protocol.
    """
    return _LinkTLSClientEndpoint(creator, wrapped)
