"""
Joining two connections so that bytes, half-closes, resets and backpressure
pass between them: the data path of every tunnel.

One L{SpliceEnd} runs on each connection. Bytes read on one end are written
to the other; each transport is the producer of the other, so a full write
buffer on one side stops reading on the other. A half-close (FIN) on one
side half-closes the other; a clean close closes the other after its
pending writes; an abort (RST, or any error) aborts the other.
"""

from typing import Any, Optional

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from tunnelkit.tlstransport import read_in_large_pieces, write_through


@implementer(IHalfCloseableProtocol)
class SpliceEnd(Protocol):
    """
    One end of a splice. Before L{splice} joins it to its other end, bytes
    it reads wait in memory; keep that window short (pause the transport if
    the other end may take long to appear).

    @ivar other: the other end, once joined.
    """

    # typing note: a splice needs half-close, producers and abort from its
    # transport, which no single Twisted interface declares.
    transport: Any

    def __init__(self) -> None:
        self.other: Optional["SpliceEnd"] = None
        self.read_closed = False
        self.lost = False
        self._early: list[bytes] = []
        self._early_eof = False

    def dataReceived(self, data: bytes) -> None:
        other = self.other
        if other is None:
            self._early.append(data)
        elif not other.lost:
            write_through(other.transport, data)

    def readConnectionLost(self) -> None:
        self.read_closed = True
        other = self.other
        if other is None:
            self._early_eof = True
            return
        if other.lost:
            return
        if other.read_closed:
            other.transport.loseConnection()
            self.transport.loseConnection()
            return
        lose_write = getattr(other.transport, "loseWriteConnection", None)
        if lose_write is not None:
            lose_write()
        else:
            other.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        if self.read_closed:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        self.lost = True
        other = self.other
        if other is None or other.lost:
            return
        if reason.check(ConnectionDone):
            other.transport.loseConnection()
        else:
            abort = getattr(other.transport, "abortConnection", None)
            if abort is not None:
                abort()
            else:
                other.transport.loseConnection()


def splice(first: SpliceEnd, second: SpliceEnd) -> None:
    """
    Join two connected ends: each becomes the other's producer, and what
    either read before joining is passed on. A socket end reads in large
    pieces from then on.

    @param first: an end whose C{transport} is set.
    @param second: the other end, also connected.
    """
    first.other = second
    second.other = first
    read_in_large_pieces(first.transport)
    read_in_large_pieces(second.transport)
    first.transport.registerProducer(second.transport, True)
    second.transport.registerProducer(first.transport, True)
    for end in (first, second):
        early, end._early = end._early, []
        for data in early:
            end.dataReceived(data)
        if end._early_eof:
            end._early_eof = False
            end.readConnectionLost()
