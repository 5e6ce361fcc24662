"""
The TLS layer of the agent-to-edge connection, tuned for bulk data.

Twisted's L{TLSMemoryBIOProtocol} moves bytes one TLS record at a time: each
record written is copied out of the send BIO and given to the socket
transport on its own, each record read is handed to the protocol on its
own, and every write, however large, is first joined into one string. A
tunnel moves most of its bytes in runs of many records, so
L{LinkTLSProtocol}:

  - cuts writes into full records without joining the large ones first:
    only the bytes of a record that spans two writes (a yamux frame header
    and its payload, say) are copied, and what does not fill a record waits
    for the next write, at most until the next reactor turn;
  - hands OpenSSL a run of whole records in one call
    (L{write_many_records_at_once});
  - drains the send BIO once for a run of records and gives the result to
    the socket at once (L{write_through});
  - hands the protocol every record that one socket read completed, joined,
    up to L{DELIVERY_SIZE} bytes at a time, or as they are to a protocol
    that takes them so (L{IPiecesReceiver}, as the yamux session does);
  - makes the socket read, buffer and send in larger pieces
    (L{LINK_BUFFER_SIZE}).

Handshake, shutdown, producers and errors stay Twisted's.

Known limit: this leans on private parts of the installed libraries. The
read and write loops override private methods of L{TLSMemoryBIOProtocol}
(C{_write}, C{_flushSendBIO} and C{_flushReceiveBIO}), stand in for the
C{_aggregator} of L{BufferingTLSTransport} and take the factory's C{_clock};
L{write_through} reads the write buffer of Twisted's socket transport;
L{write_many_records_at_once} uses pyOpenSSL's private binding, and does
nothing where it is missing. C{tests/test_tlstransport.py} runs the
handshake, bulk data both ways, mixed small and large writes, record sizes,
close and abort through them against the installed libraries, so a change
there shows up as a failing test.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from OpenSSL import SSL
from OpenSSL.SSL import Error, WantReadError, ZeroReturnError
from twisted.internet.abstract import FileDescriptor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IDelayedCall,
    IOpenSSLClientConnectionCreator,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.tcp import Connection
from twisted.protocols.policies import ProtocolWrapper
from twisted.protocols.tls import (
    BufferingTLSTransport,
    TLSMemoryBIOFactory,
    TLSMemoryBIOProtocol,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from tunnelkit.interfaces import IPiecesReceiver

__all__ = [
    "READ_SIZE",
    "LINK_BUFFER_SIZE",
    "DELIVERY_SIZE",
    "read_in_large_pieces",
    "write_through",
    "write_many_records_at_once",
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

DELIVERY_SIZE = 2**18
"""The most decrypted bytes handed to the protocol in one C{dataReceived}, or
one C{piecesReceived} of L{IPiecesReceiver}."""

_RECORD = 2**14
"""The largest TLS record payload."""

_RECORD_OVERHEAD = 256
"""More than the bytes a TLS record adds to its payload (header, padding,
tag), so that one read of the send BIO sized by it drains the BIO."""

_DRAIN_EVERY = 2**19
"""Bytes of records written into the send BIO before it is drained to the
socket in the middle of one write, so that neither the BIO nor one read of
it grows with the size of a write; a write of less is drained once, at its
end."""


def read_in_large_pieces(transport: Any, size: int = READ_SIZE) -> None:
    """
    Make a socket transport read up to C{size} bytes at once; other
    transports are left as they are.
    """
    if isinstance(transport, FileDescriptor):
        transport.bufferSize = size


def write_through(transport: Any, data: bytes) -> None:
    """
    Write C{data} to a transport. A TCP transport whose write buffer is empty
    gets it straight into its socket, and buffers only what the socket does
    not take; Twisted would buffer it all, join it with what follows and
    send it on the next reactor turn. Any other transport, or one that is
    closing, is given C{data} through C{write}.
    """
    if not isinstance(transport, Connection) or (
        transport._tempDataLen
        or transport.offset < len(transport.dataBuffer)
        or transport.disconnecting
        or transport._writeDisconnecting
        or not transport.connected
        or transport.TLS
    ):
        transport.write(data)
        return
    try:
        sent = transport.socket.send(data)
    except OSError:
        # A full socket, or a broken one whose error Twisted's own write
        # path reports.
        sent = 0
    if sent < len(data):
        transport.write(data[sent:] if sent else data)


def write_many_records_at_once(connection: SSL.Connection) -> bool:
    """
    Let one C{send} on C{connection} write as many records as it is given.

    pyOpenSSL turns OpenSSL's partial writes on for every connection, so each
    C{send} writes one record of at most 16 KiB, through a Python call each,
    and it has no public way to turn them off on a connection. This reaches
    for its private C{_lib} binding and the connection's C{_ssl}; where they
    are missing, writes go on one record at a time.

    @return: whether partial writes are now off.
    """
    lib = getattr(SSL, "_lib", None)
    clear_mode = getattr(lib, "SSL_clear_mode", None)
    partial = getattr(lib, "SSL_MODE_ENABLE_PARTIAL_WRITE", None)
    ssl = getattr(connection, "_ssl", None)
    if clear_mode is None or partial is None or ssl is None:
        return False
    clear_mode(ssl, partial)
    return True


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
        if isinstance(transport, FileDescriptor):
            # What the socket did not take at once is sent in pieces this
            # large (Twisted's are 128 KiB).
            transport.SEND_LIMIT = LINK_BUFFER_SIZE
        super().makeConnection(transport)
        # Anything written so far waits for the handshake, unwritten, so
        # the mode may change now.
        write_many_records_at_once(self._tlsConnection)

    def __init__(
        self,
        factory: TLSMemoryBIOFactory,
        wrappedProtocol: IProtocol,
        _connectWrapped: bool = True,
    ) -> None:
        super().__init__(factory, wrappedProtocol, _connectWrapped)
        # In place of Twisted's small-write aggregator, which
        # BufferingTLSTransport flushes on loseConnection and closes on
        # connectionLost. typing note: it has the aggregator's methods, not
        # its type.
        self._pieces_receiver = IPiecesReceiver(wrappedProtocol, None)
        gatherer = self._gatherer = _RecordGatherer(self, factory._clock)
        self._aggregator = gatherer  # type: ignore[assignment]
        self.write = gatherer.write  # type: ignore[method-assign]
        self.writeSequence = gatherer.write_sequence  # type: ignore[method-assign]

    def writeSequence(self, sequence: Iterable[bytes]) -> None:
        # Replaced by the gatherer's on each instance, as write is.
        self._gatherer.write_sequence(sequence)

    def unregisterProducer(self) -> None:
        # Twisted's may shut TLS down at once (after loseConnection), so
        # what waits to fill a record is written first.
        self._gatherer.flush()
        super().unregisterProducer()

    def _write(self, data: bytes) -> None:
        self._write_records([data], False)

    def _write_records(self, pieces: list[Any], hold_tail: bool) -> list[Any]:
        """
        Write C{pieces}, in order, as full records where they allow, then
        drain the send BIO. Pieces smaller than a record are joined with
        their neighbours; a larger one is written from a view of it.

        @param hold_tail: keep the bytes after the last full record back,
            to be joined with the next write.
        @return: what was kept back: the last pieces or views of them, at most one
            record less a byte.
        """
        if self._lostTLSConnection:
            return []
        if self._appSendBuffer:
            # Earlier writes wait for the handshake; these go after them.
            self._bufferedWrite(_rest(pieces, 0))
            return []
        send = self._tlsConnection.send
        written = 0
        unflushed = 0
        gathered: list[Any] = []
        gathered_size = 0
        try:
            for piece in pieces:
                size = len(piece)
                if gathered_size + size < _RECORD:
                    gathered.append(piece)
                    gathered_size += size
                    continue
                view = memoryview(piece)
                offset = 0
                if gathered:
                    offset = _RECORD - gathered_size
                    gathered.append(view[:offset])
                    record = b"".join(gathered)
                    gathered = []
                    gathered_size = 0
                    while record:
                        sent = send(record)
                        written += sent
                        record = record[sent:]
                while size - offset >= _RECORD:
                    # Whole records: one call writes them all, or one of
                    # them where partial writes are on.
                    run = min((size - offset) // _RECORD * _RECORD, _DRAIN_EVERY)
                    sent = send(view[offset : offset + run])
                    written += sent
                    offset += sent
                    if written - unflushed >= _DRAIN_EVERY:
                        self._flushSendBIO(written - unflushed)
                        unflushed = written
                if offset < size:
                    gathered.append(view[offset:])
                    gathered_size = size - offset
            if gathered and not hold_tail:
                record = b"".join(gathered)
                gathered = []
                while record:
                    sent = send(record)
                    written += sent
                    record = record[sent:]
        except WantReadError:
            self._flushSendBIO()
            self._bufferedWrite(_rest(pieces, written))
            return []
        except Error:
            self._tlsShutdownFinished(Failure())
            return []
        self._flushSendBIO(written - unflushed)
        return gathered

    def _flushSendBIO(self, hint: int = 0) -> None:
        # Twisted's reads at most 32 KiB and writes it through the socket
        # transport's buffer; this drains the BIO, in one read when told
        # how many bytes of records went in, straight to the socket.
        size = max(2**15, hint + (hint // _RECORD + 1) * _RECORD_OVERHEAD)
        read = self._tlsConnection.bio_read
        while True:
            try:
                data = read(size)
            except WantReadError:
                return
            write_through(self.transport, data)
            if len(data) < size:
                return

    def _flushReceiveBIO(self) -> None:
        # Twisted's hands each record to the protocol as it is decrypted;
        # this gathers the records one read of the socket completed.
        recv = self._tlsConnection.recv
        while not self._lostTLSConnection:
            records: list[bytes] = []
            size = 0
            ended: Failure | None = None
            closed = waiting = False
            try:
                while size < DELIVERY_SIZE:
                    record = recv(_RECORD)
                    records.append(record)
                    size += len(record)
            except WantReadError:
                waiting = True
            except ZeroReturnError:
                closed = True
            except Error:
                ended = Failure()
            if records and not self._aborted:
                if len(records) == 1:
                    ProtocolWrapper.dataReceived(self, records[0])
                elif self._pieces_receiver is not None:
                    self._pieces_receiver.piecesReceived(records)
                else:
                    ProtocolWrapper.dataReceived(self, b"".join(records))
            if closed:
                # TLS has shut down: no more data will come.
                self._shutdownTLS()
                self._tlsShutdownFinished(None)
            elif ended is not None:
                self._tlsShutdownFinished(ended)
            elif waiting:
                break
        self._flushSendBIO()


class _RecordGatherer:
    """
    Gathers what a L{LinkTLSProtocol} is asked to write until it fills a
    TLS record; the rest waits for the next write, and at most until the
    next reactor turn.

    A write of at least a record is written at once, with what waited
    before it, except for the bytes after its last full record: those
    wait to be joined with the next write, so a run of writes that are not
    multiples of a record (a yamux frame is its payload and a 12-byte
    header) still makes full records.
    """

    def __init__(self, protocol: LinkTLSProtocol, clock: IReactorTime) -> None:
        self._protocol = protocol
        self._clock = clock
        self._waiting: list[Any] = []
        self._size = 0
        self._call: IDelayedCall | None = None
        self._closed = False

    def write(self, data: bytes) -> None:
        """
        Write or gather C{data}.
        """
        self.write_sequence((data,))

    def write_sequence(self, sequence: Iterable[bytes]) -> None:
        """
        Write or gather the pieces of C{sequence}, in order.
        """
        protocol = self._protocol
        if self._closed or (protocol.disconnecting and protocol._producer is None):
            # As TLSMemoryBIOProtocol.write: dropped after loseConnection.
            return
        waiting = self._waiting
        size = self._size
        for piece in sequence:
            if type(piece) is not bytes:
                # Kept as a view until written: only immutable bytes.
                piece = bytes(piece)
            waiting.append(piece)
            size += len(piece)
        if size >= _RECORD:
            self._waiting = waiting = protocol._write_records(waiting, True)
            size = sum(map(len, waiting))
        self._size = size
        if self._call is None and waiting:
            self._call = self._clock.callLater(0, self._scheduled)

    def _scheduled(self) -> None:
        self._call = None
        self.flush()

    def flush(self) -> None:
        """
        Write whatever waits.
        """
        if self._waiting:
            waiting, self._waiting, self._size = self._waiting, [], 0
            self._protocol._write_records(waiting, False)

    def close(self) -> None:
        """
        Write whatever waits, and schedule nothing more.
        """
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self.flush()
        self._closed = True


def _rest(pieces: Sequence[bytes], skip: int) -> bytes:
    """
    @return: the bytes of C{pieces}, joined, after the first C{skip}.
    """
    rest: list[Any] = []
    for piece in pieces:
        if skip >= len(piece):
            skip -= len(piece)
            continue
        rest.append(memoryview(piece)[skip:])
        skip = 0
    return b"".join(rest)


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
