"""
Public clients of HTTP tunnels for the end-to-end tests: C{curl} run as a
child process, as a user would run it, and a raw TCP connection for the
requests no well-behaved client sends (a head that never ends, a second
host on one connection, bytes that are not HTTP).

Every run and every wait has a deadline, and the test's clean-up stops
every C{curl} and closes every connection still open.
"""

import ipaddress
import os
import shutil
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase

from tests.e2e import LOOPBACK, WAIT, Program, bounded, start_program

CURL_INSTALL = "apt-get install -y curl"

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _parse_head(block: str) -> tuple[int, list[tuple[str, str]]]:
    """
    @return: the status and the header fields (names in lower case) of a
        response head.
    """
    status_line, *lines = block.split("\r\n")
    headers = []
    for line in lines:
        name, _, value = line.partition(":")
        headers.append((name.strip().lower(), value.strip()))
    return int(status_line.split(" ")[1]), headers


@dataclass
class Fetched:
    """
    What one C{curl} run got for one URL.

    @ivar exit_code: curl's exit status (0 when it got a response).
    @ivar status: the HTTP status of the last response, 0 if none came.
    @ivar headers: the header fields of the last response, names in lower
        case, in order.
    @ivar body: what curl wrote as output: the body (with C{--head}, the
        head).
    @ivar downloaded: the body bytes curl counted (C{size_download}).
    @ivar errors: what curl wrote on standard error.
    """

    exit_code: int | None
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    downloaded: int
    errors: str

    def header(self, name: str) -> str | None:
        """
        @return: the value of the first field called C{name}, if any.
        """
        for key, value in self.headers:
            if key == name.lower():
                return value
        return None

    def describe(self) -> str:
        """
        @return: the response in short, for failure messages.
        """
        return (
            f"curl exit {self.exit_code}, status {self.status},"
            f" headers {self.headers}, body {self.body[:600]!r},"
            f" errors {self.errors!r}"
        )


class Curl:
    """
    C{curl} runs of one test, each a child process with C{--max-time},
    stopped in the test's clean-up if it still runs. Every host name in a
    URL argument is resolved to loopback (C{--resolve}), as the public
    names of a tunnel would be by DNS.

    @ivar directory: where response heads and bodies are written.
    @ivar ca_path: the CA file HTTPS servers are checked against, if any.
    """

    def __init__(self, test: TestCase, directory: str, ca_path: str | None) -> None:
        self.executable = shutil.which("curl")
        if self.executable is None:
            raise SkipTest(f"needs curl: {CURL_INSTALL}")
        self.test = test
        self.directory = directory
        self.ca_path = ca_path
        self.runs = 0

    def _argv(self, arguments: list[str], seconds: float) -> list[str]:
        assert self.executable is not None
        argv = [self.executable, "-q", "--silent", "--show-error"]
        argv += ["--max-time", f"{seconds:g}"]
        for argument in arguments:
            resolve = _resolve_to_loopback(argument)
            if resolve is not None:
                argv += ["--resolve", resolve]
        if self.ca_path is not None:
            argv += ["--cacert", self.ca_path]
        return argv + arguments

    def start(
        self,
        arguments: list[str],
        seconds: float = WAIT,
        stdin: int | None = None,
        stdout: int | None = None,
    ) -> Program:
        """
        Start C{curl ARGUMENTS}.

        @param seconds: its C{--max-time}.
        @param stdin: a file descriptor it reads as standard input, if any.
        @param stdout: a file descriptor it writes its output to instead of
            the L{Program}, if any.
        """
        self.runs += 1
        argv = self._argv(arguments, seconds)
        return start_program(
            self.test,
            f"curl #{self.runs}",
            argv,
            home=self.directory,
            stdin=stdin,
            stdout=stdout,
        )

    def run(self, arguments: list[str], seconds: float = WAIT) -> Deferred:
        """
        Run C{curl ARGUMENTS} to its end.

        @return: a Deferred firing with the ended L{Program}.
        """
        program = self.start(arguments, seconds)
        ended = program.wait_for_exit(seconds + WAIT)
        return ended.addCallback(lambda _: program)

    def fetch(self, url: str, *options: str, seconds: float = WAIT) -> Deferred:
        """
        Request C{url} with curl and keep the response.

        @param options: more curl options, such as C{-u USER:PASSWORD}.
        @return: a Deferred firing with a L{Fetched}.
        """
        stem = os.path.join(self.directory, f"curl-{self.runs + 1}")
        arguments = ["-D", f"{stem}.head", "-o", f"{stem}.body"]
        arguments += ["-w", "%{http_code} %{size_download}", *options, url]
        return self.run(arguments, seconds).addCallback(_fetched, stem)


def _fetched(program: Program, stem: str) -> Fetched:
    written = program.text("out").split()
    status, downloaded = written if len(written) == 2 else ("0", "0")
    heads = _read(f"{stem}.head").decode("latin-1").split("\r\n\r\n")
    blocks = [block for block in heads if block.strip()]
    headers = _parse_head(blocks[-1])[1] if blocks else []
    return Fetched(
        program.exit_code,
        int(status),
        headers,
        _read(f"{stem}.body"),
        int(downloaded),
        program.text("err"),
    )


def _read(path: str) -> bytes:
    if not os.path.exists(path):
        return b""
    with open(path, "rb") as source:
        return source.read()


def _resolve_to_loopback(argument: str) -> str | None:
    """
    @return: C{HOST:PORT:127.0.0.1} for a URL whose host is a name, else
        C{None}.
    """
    parts = urlsplit(argument)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    try:
        ipaddress.ip_address(parts.hostname)
    except ValueError:
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
        return f"{parts.hostname}:{port}:{LOOPBACK}"
    return None


# Raw connections


def complete_responses(data: bytes) -> int:
    """
    @return: how many whole responses C{data} holds, each delimited by its
        C{Content-Length} (or by its head alone when it has none).
    """
    count = 0
    rest = data
    while True:
        head, separator, rest = rest.partition(b"\r\n\r\n")
        if not separator:
            return count
        _, headers = _parse_head(head.decode("latin-1"))
        length = int(dict(headers).get("content-length", "0"))
        if len(rest) < length:
            return count
        rest = rest[length:]
        count += 1


class RawConnection(Protocol):
    """
    A client connection that writes what it is given and keeps every byte
    it reads.

    @ivar received: the bytes read so far.
    @ivar closed: fires with everything read once the connection is lost.
    """

    # typing note: the TCP transport's abort method is on no single
    # Twisted interface.
    transport: Any

    def __init__(self, open_connections: set["RawConnection"]) -> None:
        self.open_connections = open_connections
        self.received = bytearray()
        self.closed: Deferred = Deferred()
        self._waiters: list[tuple[Callable[[bytes], bool], Deferred]] = []

    def connectionMade(self) -> None:
        self.open_connections.add(self)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        for entry in list(self._waiters):
            condition, waiter = entry
            if condition(bytes(self.received)):
                self._waiters.remove(entry)
                waiter.callback(bytes(self.received))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.open_connections.discard(self)
        waiters, self._waiters = self._waiters, []
        for _, waiter in waiters:
            waiter.errback(
                Failure(AssertionError(f"closed after {bytes(self.received)!r}"))
            )
        self.closed.callback(bytes(self.received))

    def send(self, data: bytes) -> None:
        """
        Write C{data} as it is.
        """
        self.transport.write(data)

    def wait_for(
        self, condition: Callable[[bytes], bool], what: str, seconds: float = WAIT
    ) -> Deferred:
        """
        @param condition: tells, from every byte read so far, whether the
            wait is over.
        @return: a Deferred firing with the bytes read once C{condition}
            holds, or failing if the connection closes or time runs out.
        """
        waiter: Deferred = Deferred()
        if condition(bytes(self.received)):
            waiter.callback(bytes(self.received))
            return waiter
        self._waiters.append((condition, waiter))
        return bounded(waiter, seconds, lambda: f"{what}; read {self.received!r}")

    def wait_closed(self, seconds: float = WAIT) -> Deferred:
        """
        @return: a Deferred firing with every byte read once the other side
            has closed the connection.
        """
        return bounded(self.closed, seconds, "the other side to close")


class _OneConnection(Factory):
    noisy = False

    def __init__(self, connection: RawConnection) -> None:
        self.connection = connection

    def buildProtocol(self, addr: Any) -> RawConnection:
        return self.connection


class RawConnections:
    """
    The raw connections of one test, aborted in its clean-up.
    """

    def __init__(self, test: TestCase) -> None:
        self.open: set[RawConnection] = set()
        test.addCleanup(self.abort_all)

    def abort_all(self) -> None:
        """
        Abort every connection still open.
        """
        for connection in list(self.open):
            connection.transport.abortConnection()

    def connect(self, port: int) -> Deferred:
        """
        Connect to a loopback port.

        @return: a Deferred firing with the L{RawConnection}.
        """
        connection = RawConnection(self.open)
        endpoint = TCP4ClientEndpoint(reactor, LOOPBACK, port, timeout=WAIT)
        return bounded(
            endpoint.connect(_OneConnection(connection)),
            WAIT,
            f"a connection to port {port}",
        )
