"""
Interoperability of L{tunnelkit.mux} with HashiCorp's reference yamux: the Go
program in C{tests/interop/yamux_peer.go} is built once per test class and
plays the other end of a real loopback TCP connection, as yamux client
(L{GoClientInteropTests}) and as yamux server (L{GoServerInteropTests}).

Needs the Go toolchain and the library source from Debian; without them every
test is skipped with the command that installs them.
"""

import json
import os
import random
import shutil
from functools import partial
from hashlib import sha256
from typing import Any, Optional

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.error import (
    ConnectionDone,
    ConnectionLost,
    ProcessExitedAlready,
)
from twisted.internet.interfaces import (
    IAddress,
    IHalfCloseableProtocol,
    IProtocolFactory,
    IPushProducer,
)
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase
from zope.interface import implementer

from tunnelkit.errors import TunnelkitError
from tunnelkit.mux import INITIAL_STREAM_WINDOW, MuxConfig, MuxProtocol

INSTALL_COMMAND = "apt-get install -y golang-go golang-github-hashicorp-yamux-dev"
GOPATH_ROOT = "/usr/share/gocode"
YAMUX_SOURCE = os.path.join(GOPATH_ROOT, "src", "github.com", "hashicorp", "yamux")
PEER_SOURCE = os.path.join(os.path.dirname(__file__), "interop", "yamux_peer.go")

WAIT = 60.0
MIB = 1024 * 1024
MANY_STREAMS = 200
MANY_STREAMS_MAX_SIZE = 2 * MIB
LARGE_STREAM_SIZE = 24 * MIB
GO_BIG_WINDOW = 4 * MIB
OUR_BIG_WINDOW = 3 * MIB
CHUNK = 32 * 1024


def bounded(deferred: Deferred, seconds: float = WAIT) -> Deferred:
    """
    Give a wait a deadline.

    @param deferred: what the test waits for.
    @param seconds: how long it may take.
    @return: C{deferred}, failing with C{TimeoutError} after C{seconds}.
    """
    return deferred.addTimeout(seconds, reactor)


def closed(mux: MuxProtocol) -> Deferred:
    """
    Wait until the connection under C{mux} is lost, however it was lost:
    here only the moment matters, not the reason L{MuxProtocol.when_closed}
    reports.

    @return: a Deferred firing with C{None} once the connection is lost.
    """
    return mux.when_closed().addBoth(lambda _: None)


class PeerProcess(ProcessProtocol):
    """
    The Go peer as a child process: its output, its port and its exit.

    @ivar stdout: everything printed on stdout so far.
    @ivar stderr: everything printed on stderr so far (the library's log).
    @ivar exit_code: the exit status once it ended, C{None} before.
    """

    def __init__(self, listening: bool) -> None:
        self.listening = listening
        self.stdout = b""
        self.stderr = b""
        self.exit_code: Optional[int] = None
        self.running = True
        self.port: Deferred = Deferred()
        self._end_waiters: list[Deferred] = []

    def outReceived(self, data: bytes) -> None:
        self.stdout += data
        if self.listening and not self.port.called and b"\n" in self.stdout:
            self.port.callback(int(self.stdout.split(b"\n", 1)[0]))

    def errReceived(self, data: bytes) -> None:
        self.stderr += data

    def processEnded(self, reason: Failure) -> None:
        self.running = False
        code = getattr(reason.value, "exitCode", None)
        self.exit_code = -1 if code is None else code
        if self.listening and not self.port.called:
            self.port.errback(
                Failure(RuntimeError(f"peer ended before listening: {self.describe()}"))
            )
        waiters, self._end_waiters = self._end_waiters, []
        for waiter in waiters:
            waiter.callback(self.exit_code)

    def when_ended(self) -> Deferred:
        """
        @return: a Deferred firing with the exit status once the process ended.
        """
        waiter: Deferred = Deferred()
        if self.running:
            self._end_waiters.append(waiter)
        else:
            waiter.callback(self.exit_code)
        return waiter

    def report(self) -> dict[str, Any]:
        """
        @return: the JSON object on the last line of stdout.
        """
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        if not lines:
            raise AssertionError(f"the peer printed no report: {self.describe()}")
        result: dict[str, Any] = json.loads(lines[-1])
        return result

    def describe(self) -> str:
        """
        @return: the exit status and both outputs, for failure messages.
        """
        return (
            f"exit {self.exit_code}; stdout {self.stdout[-2000:]!r};"
            f" stderr {self.stderr[-2000:]!r}"
        )


class MuxFactory(Factory):
    """
    A plain factory of L{MuxProtocol}s that also tells the test when the
    connection is made.

    @ivar connected: fires with the L{MuxProtocol} once it is connected.
    """

    def __init__(self, **mux_arguments: Any) -> None:
        self.protocol = partial(MuxProtocol, clock=reactor, **mux_arguments)
        self.connected: Deferred = Deferred()

    def buildProtocol(self, addr: IAddress) -> Optional[Protocol]:
        mux = super().buildProtocol(addr)
        if not self.connected.called:
            reactor.callLater(0, self.connected.callback, mux)
        return mux


@implementer(IHalfCloseableProtocol)
class EchoStream(Protocol):
    """
    Echo every byte back and half-close after the peer's FIN. The stream
    transport is its own producer, so a spent send window stops reading,
    which in turn stops the peer once our receive window is spent.

    @ivar lost: fires once C{connectionLost} was called.
    @ivar reason: the reason given to C{connectionLost}.
    """

    def __init__(self) -> None:
        self.received = 0
        self.read_closed = False
        self.lost: Deferred = Deferred()
        self.reason: Optional[Failure] = None

    def connectionMade(self) -> None:
        self.transport.registerProducer(self.transport, True)

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        self.transport.write(data)

    def readConnectionLost(self) -> None:
        self.read_closed = True
        self.transport.loseWriteConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        self.reason = reason
        self.lost.callback(None)


class EchoStreamFactory(Factory):
    """
    Builds an L{EchoStream} for each stream the peer opens and keeps them.
    """

    protocol = EchoStream

    def __init__(self) -> None:
        self.streams: list[EchoStream] = []

    def buildProtocol(self, addr: IAddress) -> Optional[Protocol]:
        stream = super().buildProtocol(addr)
        self.streams.append(stream)
        return stream


@implementer(IHalfCloseableProtocol, IPushProducer)
class DriverStream(Protocol):
    """
    Send a pseudo-random payload, half-close, and hash what comes back.

    With C{chunk} the payload is written by this object as a push producer,
    C{chunk} bytes at a time while not paused; without it, in one write.
    With C{hold}, nothing is sent until L{send} or L{finish}.

    @ivar done: fires once C{connectionLost} was called.
    @ivar reason: the reason given to C{connectionLost}.
    @ivar first_data: fires once the first echoed bytes arrived.
    """

    def __init__(
        self, size: int, seed: int, chunk: Optional[int] = None, hold: bool = False
    ) -> None:
        self.size = size
        self.chunk = chunk
        self.hold = hold
        self.sent_digest = sha256()
        self.received_digest = sha256()
        self.received = 0
        self.done: Deferred = Deferred()
        self.reason: Optional[Failure] = None
        self.first_data: Deferred = Deferred()
        self._source = random.Random(seed)
        self._remaining = size
        self._paused = False
        self._pumping = False
        self._finishing = False

    def connectionMade(self) -> None:
        if not self.hold:
            self.finish()

    def send(self, count: int) -> None:
        """
        Write the next C{count} bytes of the payload.
        """
        self.transport.write(self._take(count))

    def finish(self) -> None:
        """
        Write the rest of the payload, then half-close.
        """
        self._finishing = True
        if self.chunk is None:
            self.transport.write(self._take(self._remaining))
            self.transport.loseWriteConnection()
            return
        self.transport.registerProducer(self, True)
        self._pump()

    def _take(self, count: int) -> bytes:
        count = min(count, self._remaining)
        self._remaining -= count
        data = self._source.randbytes(count)
        self.sent_digest.update(data)
        return data

    def _pump(self) -> None:
        if self._pumping:
            return
        self._pumping = True
        try:
            assert self.chunk is not None
            while self._remaining and not self._paused:
                self.transport.write(self._take(self.chunk))
        finally:
            self._pumping = False
        if not self._remaining and self._finishing:
            self._finishing = False
            self.transport.unregisterProducer()
            self.transport.loseWriteConnection()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._pump()

    def stopProducing(self) -> None:
        self._remaining = 0
        self._finishing = False

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        self.received_digest.update(data)
        if not self.first_data.called:
            self.first_data.callback(None)

    def readConnectionLost(self) -> None:
        pass

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        self.reason = reason
        self.done.callback(None)

    def outcome(self) -> tuple[str, int, bool]:
        """
        @return: how the stream ended, the bytes received and whether they
            hash like the bytes sent.
        """
        ending = "open" if self.reason is None else self.reason.type.__name__
        matches = self.received_digest.digest() == self.sent_digest.digest()
        return ending, self.received, matches


class InteropScenarios:
    """
    Every scenario, run against the Go peer in the role C{go_role}. Mixed
    into one L{TestCase} per role.

    @cvar go_role: C{"client"}: the peer dials us and opens odd stream ids;
        C{"server"}: it listens, we dial and open the odd ids.
    @cvar peer_binary: the built peer, shared by the tests of one class.
    """

    go_role: str
    peer_binary: Optional[str] = None

    # These are provided by TestCase, next to which this class is mixed in.
    addCleanup: Any
    assertEqual: Any
    assertTrue: Any
    fail: Any
    mktemp: Any

    def setUp(self) -> Deferred:
        if shutil.which("go") is None or not os.path.isdir(YAMUX_SOURCE):
            raise SkipTest(
                f"needs the Go toolchain and hashicorp/yamux: {INSTALL_COMMAND}"
            )
        return Deferred.fromCoroutine(self._build_peer())

    async def _build_peer(self) -> None:
        cls = type(self)
        if cls.peer_binary is not None:
            return
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        binary = os.path.join(directory, "yamux-peer")
        environment = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": directory,
            "GO111MODULE": "off",
            "GOPATH": f"{GOPATH_ROOT}:{os.path.join(directory, 'gopath')}",
            "GOCACHE": os.path.join(directory, "cache"),
            "GOPROXY": "off",
            "CGO_ENABLED": "0",
        }
        go = shutil.which("go")
        assert go is not None
        out, err, code = await bounded(
            getProcessOutputAndValue(
                go,
                ["build", "-o", binary, PEER_SOURCE],
                env=environment,
                path=directory,
            ),
            WAIT * 2,
        )
        if code != 0:
            self.fail(f"building the Go peer failed ({code}): {out!r} {err!r}")
        cls.peer_binary = binary

    def _spawn(self, arguments: list[str], listening: bool) -> PeerProcess:
        assert self.peer_binary is not None
        process = PeerProcess(listening)
        reactor.spawnProcess(
            process,
            self.peer_binary,
            [self.peer_binary, *arguments],
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        )
        self.addCleanup(self._stop_peer, process)
        return process

    async def _stop_peer(self, process: PeerProcess) -> None:
        if process.running:
            try:
                process.transport.signalProcess("KILL")
            except ProcessExitedAlready:
                pass
        await bounded(process.when_ended())

    async def _start(
        self,
        mode: str,
        *arguments: str,
        config: MuxConfig = MuxConfig(),
        stream_factory: Optional[IProtocolFactory] = None,
    ) -> tuple[MuxProtocol, PeerProcess]:
        """
        Start the Go peer in C{mode} and connect our side to it.

        @return: our connected session and the peer process.
        """
        peer_arguments = ["-role", self.go_role, "-mode", mode, *arguments]
        factory = MuxFactory(
            is_client=self.go_role == "server",
            stream_factory=stream_factory,
            config=config,
        )
        if self.go_role == "client":
            endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
            port = await endpoint.listen(factory)
            self.addCleanup(port.stopListening)
            address = f"127.0.0.1:{port.getHost().port}"
            process = self._spawn(peer_arguments + ["-connect", address], False)
            mux = await bounded(factory.connected)
        else:
            process = self._spawn(peer_arguments + ["-listen", "127.0.0.1:0"], True)
            peer_port = await bounded(process.port)
            client = TCP4ClientEndpoint(reactor, "127.0.0.1", peer_port)
            mux = await bounded(client.connect(factory))
        self.addCleanup(self._abort, mux)
        return mux, process

    async def _abort(self, mux: MuxProtocol) -> None:
        lost = closed(mux)
        if mux.transport is not None and not lost.called:
            mux.transport.abortConnection()
        await bounded(lost)

    async def _end_session(
        self, mux: MuxProtocol, process: PeerProcess
    ) -> dict[str, Any]:
        """
        Close our end of the connection and wait for the peer to exit.

        @return: the peer's report.
        """
        lost = closed(mux)
        mux.transport.loseConnection()
        await bounded(lost)
        code = await bounded(process.when_ended())
        self.assertEqual(code, 0, process.describe())
        return process.report()

    async def _drive_from_us(
        self,
        peer_arguments: list[str],
        sizes: list[int],
        config: MuxConfig = MuxConfig(),
        chunk: Optional[int] = None,
    ) -> None:
        """
        Open one stream per size from our side against the echoing peer,
        all at once, and check every echo and the peer's count.
        """
        mux, process = await self._start("echo", *peer_arguments, config=config)
        drivers = [DriverStream(size, seed, chunk) for seed, size in enumerate(sizes)]

        opened = [
            mux.open_stream(driver).addCallbacks(
                lambda _: "accepted", lambda failure: failure.type.__name__
            )
            for driver in drivers
        ]
        await bounded(gatherResults([driver.done for driver in drivers]))
        acceptance = await bounded(gatherResults(opened))
        report = await self._end_session(mux, process)

        outcomes = [
            (accepted, *driver.outcome())
            for accepted, driver in zip(acceptance, drivers)
        ]
        expected = [("accepted", "ConnectionDone", size, True) for size in sizes]
        self.assertEqual(outcomes, expected, process.describe())
        self.assertEqual(
            (report["accepted"], report["echoed_bytes"], report["failed"]),
            (len(sizes), sum(sizes), 0),
        )

    async def _drive_from_go(
        self, peer_arguments: list[str], config: MuxConfig = MuxConfig()
    ) -> None:
        """
        Let the peer open, send on and check its streams while our side
        echoes, then check that every one of our echo streams ended cleanly.
        """
        echo = EchoStreamFactory()
        mux, process = await self._start(
            "drive", *peer_arguments, config=config, stream_factory=echo
        )

        code = await bounded(process.when_ended())
        await bounded(closed(mux))

        report = process.report()
        self.assertEqual(
            (code, report["ok"], report["failures"], report["closed_both_ways"]),
            (0, True, [], True),
            process.describe(),
        )
        endings = {
            (stream.read_closed, stream.reason and stream.reason.type)
            for stream in echo.streams
        }
        self.assertEqual(endings, {(True, ConnectionDone)})

    # Many streams at once

    def _many_sizes(self) -> list[int]:
        sizes = random.Random(7)
        return [sizes.randint(0, MANY_STREAMS_MAX_SIZE) for _ in range(MANY_STREAMS)]

    async def test_many_streams_from_us(self) -> None:
        """
        Two hundred streams opened at once from our side, each sending a
        pseudo-random payload of up to 2 MiB through a push producer, come
        back intact from the Go echo peer, and each ends with FIN both ways.
        """
        await self._drive_from_us([], self._many_sizes(), chunk=CHUNK)

    async def test_many_streams_from_go(self) -> None:
        """
        Two hundred streams opened at once by the Go peer, each sending a
        pseudo-random payload of up to 2 MiB, are echoed intact by our side
        and closed both ways.
        """
        await self._drive_from_go(
            [
                "-streams",
                str(MANY_STREAMS),
                "-size",
                str(MANY_STREAMS_MAX_SIZE),
                "-random-sizes",
            ]
        )

    async def test_many_streams_from_go_opened_in_order(self) -> None:
        """
        Two hundred streams opened by the Go peer one after the other (so
        their SYNs arrive in id order), then run at once with payloads of
        up to 2 MiB, are echoed intact by our side.
        """
        await self._drive_from_go(
            [
                "-streams",
                str(MANY_STREAMS),
                "-size",
                str(MANY_STREAMS_MAX_SIZE),
                "-random-sizes",
                "-open-in-order",
            ]
        )

    # One stream of many windows

    async def test_large_stream_from_us(self) -> None:
        """
        A 24 MiB stream from our side, written at once, crosses the default
        256 KiB windows in both directions and comes back intact.
        """
        await self._drive_from_us([], [LARGE_STREAM_SIZE])

    async def test_large_stream_from_go(self) -> None:
        """
        A 24 MiB stream from the Go peer crosses the default 256 KiB windows
        in both directions and comes back intact.
        """
        await self._drive_from_go(["-size", str(LARGE_STREAM_SIZE)])

    async def test_large_stream_from_us_big_go_window(self) -> None:
        """
        A 24 MiB stream from our side comes back intact when the Go peer
        grants a 4 MiB window (announced with its ACK).
        """
        await self._drive_from_us(["-window", str(GO_BIG_WINDOW)], [LARGE_STREAM_SIZE])

    async def test_large_stream_from_go_big_go_window(self) -> None:
        """
        A 24 MiB stream from the Go peer comes back intact when the peer
        grants a 4 MiB window (announced with its SYN).
        """
        await self._drive_from_go(
            ["-size", str(LARGE_STREAM_SIZE), "-window", str(GO_BIG_WINDOW)]
        )

    async def test_large_stream_from_us_big_windows(self) -> None:
        """
        A 24 MiB stream from our side, written by a push producer, comes back
        intact when both sides grant windows larger than 256 KiB (ours with
        the SYN, the peer's with the ACK).
        """
        await self._drive_from_us(
            ["-window", str(GO_BIG_WINDOW)],
            [LARGE_STREAM_SIZE],
            config=MuxConfig(
                stream_window=OUR_BIG_WINDOW, max_stream_window=OUR_BIG_WINDOW
            ),
            chunk=CHUNK,
        )

    async def test_large_stream_from_go_big_windows(self) -> None:
        """
        A 24 MiB stream from the Go peer comes back intact when both sides
        grant windows larger than 256 KiB (the peer's with the SYN, ours
        with the ACK).
        """
        await self._drive_from_go(
            ["-size", str(LARGE_STREAM_SIZE), "-window", str(GO_BIG_WINDOW)],
            config=MuxConfig(
                stream_window=OUR_BIG_WINDOW, max_stream_window=OUR_BIG_WINDOW
            ),
        )

    # Opening

    async def test_stream_closed_before_go_accepts(self) -> None:
        """
        A stream we open, send on and half-close before the Go peer accepts
        it is echoed and closed by the peer, which never sends an ACK for it
        (this library acknowledges only from its SYN-received state, which a
        FIN has already left); the open counts as accepted all the same.
        """
        mux, process = await self._start("echo", "-accept-when-streams", "2")
        early = DriverStream(1000, seed=21)
        later = DriverStream(1000, seed=22, hold=True)

        early_opened = mux.open_stream(early).addCallbacks(
            lambda _: "accepted", lambda failure: failure.type.__name__
        )
        await bounded(mux.open_stream(later))
        await bounded(early.done)
        later.finish()
        await bounded(later.done)
        acceptance = await bounded(early_opened)
        report = await self._end_session(mux, process)

        self.assertEqual(
            [(acceptance, *early.outcome()), later.outcome()],
            [
                ("accepted", "ConnectionDone", 1000, True),
                ("ConnectionDone", 1000, True),
            ],
        )
        self.assertEqual(report["accepted"], 2)

    # Ping

    async def test_ping_from_us(self) -> None:
        """
        The Go peer answers three pings from our side, each with a round
        trip time.
        """
        mux, process = await self._start("echo")

        rtts = []
        for _ in range(3):
            rtts.append(await bounded(mux.ping()))
        await self._end_session(mux, process)

        self.assertEqual(len(rtts), 3)
        self.assertTrue(all(0 <= rtt < WAIT for rtt in rtts), rtts)

    async def test_ping_from_go(self) -> None:
        """
        Our side answers three pings from the Go peer.
        """
        mux, process = await self._start("ping", "-count", "3")

        code = await bounded(process.when_ended())

        report = process.report()
        self.assertEqual(
            (code, report["ok"], len(report["rtt_ns"])),
            (0, True, 3),
            process.describe(),
        )

    # Go Away and the end of the connection

    async def test_go_away_from_go_stops_new_streams(self) -> None:
        """
        After the Go peer's Go Away our side opens no new stream, and the
        stream already open still completes, echo and FIN included.
        """
        mux, process = await self._start("goaway", "-goaway-after", "1")
        driver = DriverStream(3 * INITIAL_STREAM_WINDOW, seed=11, hold=True)
        await bounded(mux.open_stream(driver))
        driver.send(1024)
        # The peer sends Go Away before it echoes anything on this stream.
        await bounded(driver.first_data)

        try:
            refused = mux.open_stream(DriverStream(1, seed=12))
        except TunnelkitError as error:
            code = error.code
        else:
            code = (await bounded(self.assertFailure(refused, TunnelkitError))).code
        driver.finish()
        await bounded(driver.done)
        report = await self._end_session(mux, process)

        self.assertEqual(code, "TK_MUX_GOING_AWAY")
        self.assertEqual(
            driver.outcome(), ("ConnectionDone", 3 * INITIAL_STREAM_WINDOW, True)
        )
        self.assertEqual((report["goaway_sent"], report["accepted"]), (True, 1))

    async def test_go_closing_connection_loses_streams(self) -> None:
        """
        When the Go peer closes the connection under five open streams, each
        of our stream protocols sees C{connectionLost} with
        L{ConnectionLost}, without a FIN first.
        """
        echo = EchoStreamFactory()
        mux, process = await self._start("drop", "-streams", "5", stream_factory=echo)

        code = await bounded(process.when_ended())
        await bounded(gatherResults([stream.lost for stream in echo.streams]))
        await bounded(closed(mux))

        self.assertEqual(code, 0, process.describe())
        self.assertEqual(
            [(stream.read_closed, stream.reason.type) for stream in echo.streams],
            [(False, ConnectionLost)] * 5,
        )


class GoClientInteropTests(InteropScenarios, TestCase):
    """
    The Go peer is the yamux client and dials us; we are the server.
    """

    go_role = "client"


class GoServerInteropTests(InteropScenarios, TestCase):
    """
    The Go peer is the yamux server and listens; we dial it as the client.
    """

    go_role = "server"
