"""
The reactor tunnelkit's commands run on: Twisted's epoll reactor, calling
each ready connection's C{doRead} or C{doWrite} directly.

Twisted's poll loop runs every one of those calls inside the legacy logging
context of the connection (C{twisted.python.log.callWithLogger}), so that
C{log.msg} calls made during it are tagged with the connection's
C{logPrefix}. tunnelkit logs through C{twisted.logger}, whose events do not
read that context, yet on a busy tunnel the context costs about a sixth of
the edge's and the agent's CPU time: it is set up and torn down for every
read of every connection. L{TunnelReactor} leaves it out and is otherwise
Twisted's L{EPollReactor}: the same descriptors, timers, threads and
signals.

One more difference, in how it stops on a signal: Twisted's reactor asks
itself to stop once per SIGINT or SIGTERM, and when a second one arrives
before the first stop ran (a wrapper such as C{timeout} passing a SIGTERM
on while a supervisor sends its own, or Ctrl+C pressed twice), the second
stop fails and is logged as critical with a traceback. This reactor stops
once, for the first signal, and notes the others at info level. A later
signal does not hurry a stop that hangs; only SIGKILL ends that.

What changes for a reader of the logs: lines logged through Twisted's
legacy C{twisted.python.log} during a connection's read or write show the
system C{-} where Twisted would name the connection's protocol. Above all
C{Unhandled Error}: an exception a connection's handler does not catch is
still logged with its traceback, and the connection still closed.

This module needs C{select.epoll}, which only Linux has; elsewhere the
C{tunnelkit} command does not import it and runs on Twisted's default
reactor (see L{tunnelkit.cli.install_reactor}).
"""

from __future__ import annotations

import signal
from types import FrameType

from twisted.internet import epollreactor
from twisted.internet.main import installReactor
from twisted.logger import Logger

from tunnelkit.runtime import stop_reactor

__all__ = ["TunnelReactor", "install"]

_log = Logger()


class TunnelReactor(epollreactor.EPollReactor):
    """
    The epoll reactor without a logging context around each connection's
    reads and writes; see the module's docstring.
    """

    def doPoll(self, timeout: float | None) -> None:
        """
        Wait up to C{timeout} seconds (forever when C{None}) for descriptors
        to become ready, then hand each to its reader or writer.
        """
        selectables = self._selectables
        # At most one event per descriptor registered: the waker is always
        # among them, so this is at least 1, as epoll requires. A signal
        # during the wait does not raise: Python retries it (PEP 475).
        ready = self._poller.poll(-1 if timeout is None else timeout, len(selectables))
        handle = self._doReadOrWrite
        for fd, event in ready:
            selectable = selectables.get(fd)
            # A descriptor removed by the handler of an earlier event of the
            # same poll is skipped.
            if selectable is None:
                continue
            try:
                handle(selectable, fd, event)
            except Exception:
                # Twisted catches what its handlers do not (a protocol's
                # connectionLost that raises, say); what follows in this
                # poll is still handled.
                _log.failure("while handling {selectable!r}", selectable=selectable)

    doIteration = doPoll

    def sigInt(self, number: int, frame: FrameType | None = None) -> None:
        """
        Stop for the first SIGINT or SIGTERM; note any that follows, since
        a stop is on its way already.
        """
        name = signal.Signals(number).name
        if self._exitSignal is not None:
            _log.info(
                "received {signal} while stopping for {first}",
                signal=name,
                first=signal.Signals(self._exitSignal).name,
            )
            return
        _log.info("received {signal}, shutting down", signal=name)
        self._exitSignal = number
        # Something else (a tunnel that failed, say) may stop the reactor
        # first.
        self.callFromThread(stop_reactor, self)

    sigTerm = sigInt


def install() -> TunnelReactor:
    """
    Install L{TunnelReactor} as C{twisted.internet.reactor}; C{twistd
    --reactor tunnelkit} does this through the plugin named C{tunnelkit}.

    @return: the reactor installed.
    @raise twisted.internet.error.ReactorAlreadyInstalledError: when a
        reactor is installed already.
    """
    reactor = TunnelReactor()
    installReactor(reactor)
    return reactor
