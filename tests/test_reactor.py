"""
The reactor of the C{tunnelkit} command, run for real in a child process
(the tests' own process already has trial's reactor): connections, timers
and threads work on it, an error in a connection's handler is logged and
closes only that connection, a burst of stop signals stops it once, and
the command installs it.
"""

import json
import select
import signal
import subprocess
import sys
import textwrap

from twisted.trial.unittest import SkipTest, TestCase

CHILD_TIMEOUT = 60
"""Seconds a child has to run its script."""

ECHO_SCRIPT = textwrap.dedent("""
    import json, sys, threading
    from tunnelkit.reactor import TunnelReactor, install
    reactor = install()
    from twisted.internet import protocol
    from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
    from twisted.logger import globalLogBeginner

    errors = []
    def watch(event):
        failure = event.get("log_failure") or event.get("failure")
        if failure is not None:
            system = event.get("log_system", event.get("system"))
            errors.append([failure.getErrorMessage(), system])
    globalLogBeginner.beginLoggingTo([watch], redirectStandardIO=False)

    PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
    result = {"reactor": type(reactor).__name__}
    waiting = {"echo", "fragile"}

    def done(what):
        waiting.discard(what)
        if not waiting:
            # A call from another thread, then a timer, end the run.
            threading.Thread(
                target=lambda: reactor.callFromThread(from_thread)
            ).start()

    def from_thread():
        result["from_thread"] = True
        reactor.callLater(0.01, finish)

    def finish():
        result["errors"] = errors
        reactor.stop()

    class Echo(protocol.Protocol):
        fragile = False
        def dataReceived(self, data):
            if data.startswith(b"boom"):
                raise ValueError("handler failed")
            self.fragile = data.startswith(b"fragile")
            self.transport.write(data)
        def connectionLost(self, reason):
            if self.fragile:
                reactor.callLater(0, done, "fragile")
                raise RuntimeError("connectionLost failed")

    class Client(protocol.Protocol):
        def __init__(self, payload, done):
            self.payload, self.done, self.received = payload, done, []
        def connectionMade(self):
            self.transport.write(self.payload)
        def dataReceived(self, data):
            self.received.append(data)
            if sum(map(len, self.received)) >= len(self.payload):
                self.transport.loseConnection()
        def connectionLost(self, reason):
            self.done(b"".join(self.received))

    def start():
        server = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        server.listen(protocol.Factory.forProtocol(Echo)).addCallback(listening)

    def listening(port):
        address = port.getHost()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", address.port)
        def connect(payload, then):
            factory = protocol.Factory.forProtocol(lambda: Client(payload, then))
            endpoint.connect(factory)
        def failing_done(data):
            result["after_error"] = len(data)
            connect(b"fragile", fragile_done)
        def fragile_done(data):
            connect(PAYLOAD, echoed)
        def echoed(data):
            result["echoed"] = data == PAYLOAD
            done("echo")
        connect(b"boom", failing_done)

    reactor.callWhenRunning(start)
    reactor.callLater(30, reactor.stop)
    reactor.run()
    print(json.dumps(result))
    """)


SIGNALS_SCRIPT = textwrap.dedent("""
    import json, os, signal
    from tunnelkit.reactor import install
    reactor = install()
    from twisted.logger import LogLevel, formatEvent, globalLogBeginner

    problems, notes = [], []
    def watch(event):
        if event.get("log_level") in (LogLevel.error, LogLevel.critical):
            failure = event.get("log_failure")
            problems.append(
                failure.getErrorMessage() if failure else formatEvent(event)
            )
        elif event.get("log_namespace") == "tunnelkit.reactor":
            notes.append(formatEvent(event))
    globalLogBeginner.beginLoggingTo([watch], redirectStandardIO=False)

    def signal_twice():
        # Both arrive before the reactor turns again, as when a supervisor
        # and a wrapper such as timeout(1) both pass a SIGTERM on, or
        # Ctrl+C is pressed twice.
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)

    result = {"stopped_by_signal": True}
    def not_stopped():
        result["stopped_by_signal"] = False
        reactor.stop()

    reactor.callWhenRunning(signal_twice)
    reactor.callLater(30, not_stopped)
    reactor.run()
    result.update(problems=problems, notes=notes, exit_signal=reactor._exitSignal)
    print(json.dumps(result))
    """)


def _run_child(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
    )


class TunnelReactorTests(TestCase):
    """
    L{tunnelkit.reactor.TunnelReactor} in a child process.
    """

    def setUp(self) -> None:
        if not hasattr(select, "epoll"):
            raise SkipTest("the reactor needs epoll, which only Linux has")

    def test_connections_timers_threads_and_errors(self) -> None:
        """
        A handler that raises is logged without the connection's system
        and its connection closed; a C{connectionLost} that raises is
        logged; then a 1 MiB echo round trip, a call from a thread and a
        timer all run.
        """
        child = _run_child("-c", ECHO_SCRIPT)

        self.assertEqual(child.returncode, 0, child.stderr)
        result = json.loads(child.stdout.splitlines()[-1])
        self.assertEqual(result["reactor"], "TunnelReactor")
        self.assertEqual(result["after_error"], 0)
        self.assertTrue(result["echoed"])
        self.assertTrue(result["from_thread"])
        self.assertEqual(
            result["errors"],
            [["handler failed", "-"], ["connectionLost failed", None]],
        )

    def test_command_installs_it(self) -> None:
        """
        The C{tunnelkit} command installs the reactor before anything
        imports Twisted's, and leaves a reactor installed already alone.
        """
        fresh = _run_child(
            "-c",
            "from tunnelkit.cli import install_reactor;"
            " print(install_reactor());"
            " from twisted.internet import reactor;"
            " print(type(reactor).__name__)",
        )
        taken = _run_child(
            "-c",
            "from twisted.internet import reactor;"
            " from tunnelkit.cli import install_reactor;"
            " print(install_reactor(), type(reactor).__name__)",
        )

        self.assertEqual(fresh.stdout.split(), ["True", "TunnelReactor"], fresh.stderr)
        self.assertEqual(taken.stdout.split(), ["False", "EPollReactor"], taken.stderr)

    def test_signals_in_quick_succession(self) -> None:
        """
        Two stop signals before the reactor turns again stop it once, with
        nothing logged as an error and the second noted at info; the
        process's exit signal is the first.
        """
        child = _run_child("-c", SIGNALS_SCRIPT)

        self.assertEqual(child.returncode, 0, child.stderr)
        result = json.loads(child.stdout.splitlines()[-1])
        self.assertTrue(result["stopped_by_signal"])
        self.assertEqual(result["problems"], [])
        self.assertEqual(
            result["notes"],
            [
                "received SIGTERM, shutting down",
                "received SIGINT while stopping for SIGTERM",
            ],
        )
        self.assertEqual(result["exit_signal"], signal.SIGTERM)
