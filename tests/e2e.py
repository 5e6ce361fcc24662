"""
Child processes for the end-to-end tests: running tunnelkit's programs (and
others, such as C{sshd}) on loopback, with their configuration files,
reading what they print, and stopping them.

Every wait here has a deadline, every child process is stopped by the test
that started it, and every port is picked by the kernel. The servers and
clients that send traffic through a tunnel are in L{tests.loopback}.
"""

import json
import os
import re
import resource
import socket
import sys
from dataclasses import dataclass
from typing import Any, Callable, Generator, Iterable, TypeAlias, TypeVar

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
"""The working tree whose package and C{twisted/plugins} the children run."""

TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
"""C{twistd} run by this interpreter: C{python -m twisted} is C{twist}, not
C{twistd}, and takes neither C{-n} nor C{--pidfile}."""

TUNNELKIT = [sys.executable, "-m", "tunnelkit"]
"""The C{tunnelkit} command from the working tree; an installed
C{tunnelkit} script may belong to an older checkout."""

WAIT = 20.0
"""Seconds any one expected event may take."""

STOP_GRACE = 10.0
"""Seconds a child has to exit after SIGTERM before it gets SIGKILL: more than
the 5 s a stopping agent may wait for its edge."""

LOOPBACK = "127.0.0.1"

TOKEN = "e2e-alice-0123456789"
"""The authtoken of C{alice}, the agent of most tests."""

_T = TypeVar("_T")
Steps: TypeAlias = Generator[Deferred[Any], Any, _T]
"""What an C{inlineCallbacks} test or helper is: it waits on Deferreds and
returns C{_T}."""

_TAIL = 4000
_FULL = 30_000
"""Characters of output written to the test log: less than the 64 KiB a log
event may carry from a worker of C{trial -j}."""

_log = Logger()


class WaitTimedOut(AssertionError):
    """
    An expected event did not happen in time.
    """


def bounded(
    deferred: Deferred, seconds: float, what: str | Callable[[], str]
) -> Deferred:
    """
    Give a wait a deadline.

    @param deferred: what the test waits for.
    @param seconds: how long it may take.
    @param what: what was awaited, for the failure message (or a function
        returning it, called only on timeout, to show output seen so far).
    @return: C{deferred}, failing with L{WaitTimedOut} after C{seconds}.
    """

    def timed_out(result: Any, timeout: float) -> Any:
        text = what() if callable(what) else what
        raise WaitTimedOut(f"waited {timeout:g}s for {text}")

    return deferred.addTimeout(seconds, reactor, onTimeoutCancel=timed_out)


def make_directory(test: TestCase) -> str:
    """
    @return: a new empty directory for one test, as an absolute path (the
        children run elsewhere, so relative paths would not do).
    """
    directory = os.path.abspath(test.mktemp())
    os.makedirs(directory)
    return directory


def allow_open_files(test: TestCase, needed: int) -> None:
    """
    Raise this process's soft limit on open files to at least C{needed}
    (children inherit it) until the test's clean-up.

    @raise SkipTest: if the hard limit is lower.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed or soft == resource.RLIM_INFINITY:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SkipTest(f"needs {needed} open files; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    test.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))


def free_port() -> int:
    """
    @return: a loopback TCP port that was free a moment ago (bound to port 0
        and closed), for programs that must be told a port up front.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
    return port


def child_environment(home: str) -> dict[str, str]:
    """
    The environment of a child: this tree on C{PYTHONPATH}, and C{HOME} and
    the XDG directories inside the test's own directory, so nothing reads or
    writes the real home. Nothing else of this process's environment is
    passed on (no C{TUNNELKIT_AUTHTOKEN}, no C{PYTHONUNBUFFERED}).

    @param home: an existing directory to use as C{HOME}.
    """
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": REPOSITORY,
        "HOME": home,
        "XDG_STATE_HOME": os.path.join(home, ".local", "state"),
        "XDG_CONFIG_HOME": os.path.join(home, ".config"),
        "LANG": "C.UTF-8",
    }


class Program(ProcessProtocol):
    """
    A child process: every line it printed, waits for lines to come, its
    exit, and how it is stopped.

    @ivar name: a short name for messages.
    @ivar lines: the lines printed so far, as C{(stream, text)} with stream
        C{"out"} or C{"err"}.
    @ivar exit_code: the exit status once it exited by itself or after a
        signal it handled, else C{None}.
    @ivar exit_signal: the signal that killed it, if one did.
    @ivar killed: whether it had to be killed because SIGTERM did not stop it.
    """

    transport: Any

    def __init__(self, name: str) -> None:
        self.name = name
        self.lines: list[tuple[str, str]] = []
        self.exit_code: int | None = None
        self.exit_signal: int | None = None
        self.ended = False
        self.killed = False
        self._recorded = False
        self._partial = {"out": b"", "err": b""}
        self._line_waiters: list[tuple[Callable[[str, str], Any], Deferred]] = []
        self._end_waiters: list[Deferred] = []

    # ProcessProtocol

    def connectionMade(self) -> None:
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self._received("out", data)

    def errReceived(self, data: bytes) -> None:
        self._received("err", data)

    def _received(self, stream: str, data: bytes) -> None:
        pending = self._partial[stream] + data
        *complete, self._partial[stream] = pending.split(b"\n")
        for raw in complete:
            self._line(stream, raw.decode("utf-8", "replace").rstrip("\r"))

    def _line(self, stream: str, text: str) -> None:
        self.lines.append((stream, text))
        for entry in list(self._line_waiters):
            match, waiter = entry
            found = match(stream, text)
            if found is not None and entry in self._line_waiters:
                self._line_waiters.remove(entry)
                waiter.callback(found)

    def processEnded(self, reason: Failure) -> None:
        for stream, rest in self._partial.items():
            if rest:
                self._line(stream, rest.decode("utf-8", "replace"))
        self._partial = {"out": b"", "err": b""}
        self.ended = True
        self.exit_code = getattr(reason.value, "exitCode", None)
        self.exit_signal = getattr(reason.value, "signal", None)
        waiters, self._line_waiters = self._line_waiters, []
        for _, waiter in waiters:
            waiter.errback(
                Failure(AssertionError(f"{self.name} ended: {self.describe()}"))
            )
        ended, self._end_waiters = self._end_waiters, []
        for waiter in ended:
            waiter.callback(self.exit_code)

    # Reading the output

    def text(self, stream: str | None = None) -> str:
        """
        @param stream: C{"out"}, C{"err"}, or C{None} for both interleaved.
        @return: the lines printed so far.
        """
        return "\n".join(t for s, t in self.lines if stream in (None, s))

    def log_events(self) -> list[dict[str, Any]]:
        """
        @return: the JSON log lines printed so far (C{--log-format json}),
            parsed, from both streams.
        """
        return [event for _, text in self.lines if (event := _json_event(text))]

    def describe(self, limit: int = _TAIL) -> str:
        """
        @param limit: how many characters of output to show, the last ones.
        @return: the exit status and the end of the output, for messages.
        """
        if not self.ended:
            status = "still running"
        elif self.exit_signal is not None:
            status = f"killed by signal {self.exit_signal}"
        else:
            status = f"exit status {self.exit_code}"
        return f"{self.name} ({status}); output:\n{self.text()[-limit:]}"

    def wait_for_line(
        self,
        pattern: str,
        seconds: float = WAIT,
        stream: str | None = None,
    ) -> Deferred:
        """
        Wait until a line (already printed or yet to come) matches.

        @param pattern: a regular expression searched for in each line.
        @param stream: C{"out"}, C{"err"}, or C{None} for either.
        @return: a Deferred firing with the C{re.Match}, or failing if the
            program ends or the time runs out first.
        """
        compiled = re.compile(pattern)

        def match(line_stream: str, text: str) -> Any:
            if stream not in (None, line_stream):
                return None
            return compiled.search(text)

        return self._wait(match, seconds, f"a line matching {pattern!r}")

    def wait_for_event(
        self,
        seconds: float = WAIT,
        occurrence: int = 1,
        where: Callable[[dict[str, Any]], bool] | None = None,
        **fields: Any,
    ) -> Deferred:
        """
        Wait for a JSON log line whose fields have the given values.

        @param occurrence: wait for the n-th such line, counting those
            already printed.
        @param where: a further condition on the event, if any; its
            C{__name__} describes it in failure messages.
        @param fields: the values required, e.g. C{msg="started tunnel"}.
        @return: a Deferred firing with the event as a C{dict}.
        """
        seen = [0]

        def match(line_stream: str, text: str) -> Any:
            event = _json_event(text)
            if event is None:
                return None
            if any(event.get(key) != value for key, value in fields.items()):
                return None
            if where is not None and not where(event):
                return None
            seen[0] += 1
            return event if seen[0] >= occurrence else None

        described = ", ".join(f"{k}={v!r}" for k, v in fields.items())
        if where is not None:
            described += f" and {getattr(where, '__name__', 'a condition')}"
        what = f"log event #{occurrence} with {described}"
        return self._wait(match, seconds, what)

    def _wait(
        self, match: Callable[[str, str], Any], seconds: float, what: str
    ) -> Deferred:
        waiter: Deferred = Deferred()
        for stream, text in self.lines:
            found = match(stream, text)
            if found is not None:
                waiter.callback(found)
                return waiter
        if self.ended:
            waiter.errback(Failure(AssertionError(f"{what}: {self.describe()}")))
            return waiter
        entry = (match, waiter)
        self._line_waiters.append(entry)

        def forget(result: Any) -> Any:
            if entry in self._line_waiters:
                self._line_waiters.remove(entry)
            return result

        waiter.addErrback(forget)
        return bounded(waiter, seconds, lambda: f"{what} from {self.describe()}")

    # The end

    def wait_for_exit(self, seconds: float = WAIT) -> Deferred:
        """
        @return: a Deferred firing with the exit status (C{None} when a
            signal killed it) once the program ended by itself.
        """
        waiter: Deferred = Deferred()
        if self.ended:
            waiter.callback(self.exit_code)
            return waiter
        self._end_waiters.append(waiter)
        return bounded(waiter, seconds, lambda: f"the end of {self.describe()}")

    def send_signal(self, name: str) -> None:
        """
        Send a signal (C{"INT"}, C{"TERM"}, C{"KILL"}) if it still runs.
        """
        try:
            self.transport.signalProcess(name)
        except ProcessExitedAlready:
            pass

    def stop(self, grace: float = STOP_GRACE) -> Deferred:
        """
        SIGTERM, then SIGKILL if it has not ended within C{grace} seconds;
        either way its output goes to the test log (C{_trial_temp/test.log}).

        @return: a Deferred firing once it has ended (with a deadline too).
        """
        ending: Deferred
        if self.ended:
            ending = self.wait_for_exit()
        else:
            self.send_signal("TERM")
            ending = Deferred()
            self._end_waiters.append(ending)

            def kill(result: Any, timeout: float) -> Deferred:
                self.killed = True
                _log.warn(
                    "{name} was still running {grace}s after SIGTERM; killing it",
                    name=self.name,
                    grace=timeout,
                )
                self.send_signal("KILL")
                return self.wait_for_exit()

            ending.addTimeout(grace, reactor, onTimeoutCancel=kill)

        def record(result: Any) -> Any:
            if not self._recorded:
                self._recorded = True
                _log.info("{description}", description=self.describe(_FULL))
            return result

        return ending.addBoth(record)


def _json_event(text: str) -> dict[str, Any] | None:
    if not text.startswith("{"):
        return None
    try:
        event = json.loads(text)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def mentions(text: str) -> Callable[[dict[str, Any]], bool]:
    """
    @return: a condition on a log event: that one of its values contains
        C{text}.
    """

    def condition(event: dict[str, Any]) -> bool:
        return any(text in str(value) for value in event.values())

    condition.__name__ = f"a value containing {text!r}"
    return condition


def start_program(
    test: TestCase,
    name: str,
    argv: list[str],
    home: str,
    cwd: str | None = None,
    stdin: int | None = None,
    stdout: int | None = None,
) -> Program:
    """
    Start a child process that the test stops in its clean-up (SIGTERM,
    then SIGKILL after L{STOP_GRACE} seconds), whether it passed or not.

    @param name: a short name for messages.
    @param argv: the command and its arguments.
    @param home: the child's C{HOME}, see L{child_environment}.
    @param cwd: its working directory, C{home} if not given.
    @param stdin: a file descriptor of this process the child reads as its
        standard input (the read end of a pipe, say), else none.
    @param stdout: a file descriptor the child writes its standard output
        to instead of to the L{Program}; the caller closes its own copy.
    """
    program = Program(name)
    child_fds: dict[int, int | str] = {
        0: "w" if stdin is None else stdin,
        1: "r" if stdout is None else stdout,
        2: "r",
    }
    reactor.spawnProcess(
        program,
        argv[0],
        argv,
        env=child_environment(home),
        path=cwd or home,
        childFDs=child_fds,
    )
    test.addCleanup(program.stop)
    return program


# Writing the configuration files


def write_file(path: str, text: str) -> str:
    """
    Write a text file.

    @return: C{path}.
    """
    with open(path, "w", encoding="utf-8") as output:
        output.write(text)
    return path


def write_edge_config(
    directory: str,
    tokens: Iterable[tuple[str, str, list[str]]] = (),
    agent_port: int = 0,
    name: str = "edge.yml",
    domain: str = "localhost",
    http: bool = False,
    hostnames: dict[str, list[str]] | None = None,
    http_head_timeout: str | None = None,
    tls: tuple[str, str] | None = None,
) -> str:
    """
    Write an C{edge.yml} for an edge on loopback with its state in
    C{directory/state}, logging JSON lines to stdout.

    @param tokens: C{(name, token, reserved_addrs)} for each authtoken.
    @param agent_port: the agent listener's port; 0 lets the kernel pick.
    @param domain: the public base domain.
    @param http: whether to serve public HTTP and HTTPS, each on a loopback
        port the kernel picks (see L{http_listener_port}).
    @param hostnames: the C{hostnames} of each authtoken, by token name.
    @param http_head_timeout: the C{http_head_timeout}, such as C{1s}.
    @param tls: the C{(cert, key)} files the edge presents, instead of a
        certificate from the CA it generates.
    @return: the file's path.
    """
    listener = f'"tcp:0:interface={LOOPBACK}"'
    lines = [
        "version: 1",
        f'agent_listener: "tcp:{agent_port}:interface={LOOPBACK}"',
        f"domain: {domain}",
        f"public_host: {LOOPBACK}",
        f"tcp_bind_host: {LOOPBACK}",
        'tcp_port_range: "20000-60999"',
        f"state_dir: {json.dumps(os.path.join(directory, 'state'))}",
        "log: stdout",
        "log_format: json",
    ]
    if http:
        lines += [f"http_listener: {listener}", f"https_listener: {listener}"]
    if http_head_timeout is not None:
        lines.append(f"http_head_timeout: {http_head_timeout}")
    if tls is not None:
        cert, key = (json.dumps(path) for path in tls)
        lines.append(f"tls: {{cert: {cert}, key: {key}}}")
    lines.append("authtokens:")
    for token_name, token, reserved in tokens:
        lines += [f"  - name: {token_name}", f"    token: {json.dumps(token)}"]
        if reserved:
            lines.append(f"    reserved_addrs: {json.dumps(reserved)}")
        names = (hostnames or {}).get(token_name)
        if names:
            lines.append(f"    hostnames: {json.dumps(names)}")
    if lines[-1] == "authtokens:":
        lines[-1] = "authtokens: []"
    return write_file(os.path.join(directory, name), "\n".join(lines) + "\n")


def write_agent_config(
    directory: str,
    server_addr: str,
    root_cas: str | None = None,
    authtoken: str | None = None,
    tunnels: dict[str, int] | None = None,
    name: str = "ngrok.yml",
    http_tunnels: dict[str, str] | None = None,
    web_addr: str | None = f"{LOOPBACK}:0",
) -> str:
    """
    Write an agent C{ngrok.yml} naming an edge.

    @param root_cas: the CA file to trust; C{None} leaves the default
        (the system trust store).
    @param web_addr: where its web interface listens: by default a loopback
        port the kernel picks (the agent logs it in C{starting web
        service}), so that agents of tests running at once never clash;
        C{None} for none (C{web_addr: false}).
    @param tunnels: TCP tunnels, name to local port.
    @param http_tunnels: HTTP tunnels, name to C{addr}.
    @return: the file's path.
    """
    lines = ['version: "2"', f"server_addr: {json.dumps(server_addr)}"]
    shown = "false" if web_addr is None else json.dumps(web_addr)
    lines.append(f"web_addr: {shown}")
    if root_cas is not None:
        lines.append(f"root_cas: {json.dumps(root_cas)}")
    if authtoken is not None:
        lines.append(f"authtoken: {json.dumps(authtoken)}")
    if tunnels or http_tunnels:
        lines.append("tunnels:")
    for tunnel_name, port in (tunnels or {}).items():
        lines += [f"  {tunnel_name}:", "    proto: tcp", f"    addr: {port}"]
    for tunnel_name, addr in (http_tunnels or {}).items():
        lines += [
            f"  {tunnel_name}:",
            "    proto: http",
            f"    addr: {json.dumps(addr)}",
        ]
    return write_file(os.path.join(directory, name), "\n".join(lines) + "\n")


# Reading addresses from what the programs print

AGENT_LISTENER_LINE = r"edge listening for agents on ([0-9.]+):([0-9]+)"
FORWARDING_LINE = r"^Forwarding\s+tcp://([0-9.]+):([0-9]+) -> (\S+)$"
HTTP_LISTENER_LINE = r"edge serving {scheme} on ([0-9.]+):([0-9]+)"
"""Printed by C{tunnelkit edge}, and logged by both it and C{twistd -n
tunnel-edge}, for each public HTTP listener; format it with the scheme."""


def tcp_url_port(url: str) -> int:
    """
    @return: the port of a C{tcp://host:port} URL.
    @raise AssertionError: for anything else.
    """
    found = re.fullmatch(r"tcp://[^:/]+:([0-9]+)", url)
    if found is None:
        raise AssertionError(f"not a tcp:// URL: {url!r}")
    return int(found.group(1))


# Running tunnelkit


@dataclass
class Edge:
    """
    A running edge.

    @ivar program: its process.
    @ivar agent_port: the port it accepts agents on.
    @ivar state_dir: its state directory.
    """

    program: Program
    agent_port: int
    state_dir: str

    @property
    def server_addr(self) -> str:
        """
        @return: the agent's C{server_addr} for this edge.
        """
        return f"{LOOPBACK}:{self.agent_port}"

    @property
    def ca_path(self) -> str:
        """
        @return: the generated CA agents trust, C{STATE_DIR/ca.pem} as
            C{docs/tls.md} says.
        """
        return os.path.join(self.state_dir, "ca.pem")


def twistd_argv(directory: str, plugin: str, *arguments: str) -> list[str]:
    """
    @return: C{twistd -n PLUGIN ARGUMENTS} without a pid file, with twistd's
        own log in C{directory/twistd-PLUGIN.log}.
    """
    log = os.path.join(directory, f"twistd-{plugin}.log")
    return TWISTD + ["--pidfile=", "-n", f"--logfile={log}", plugin, *arguments]


def start_edge(
    test: TestCase, directory: str, config: str, twistd: bool = False
) -> Deferred:
    """
    Start an edge (C{tunnelkit edge}, or C{twistd -n tunnel-edge}) whose
    config L{write_edge_config} wrote into C{directory}, and read the port it
    listens on for agents from what it prints.

    @return: a Deferred firing with an L{Edge}.
    """
    if twistd:
        argv = twistd_argv(directory, "tunnel-edge", "--config", config)
    else:
        argv = TUNNELKIT + ["edge", "--config", config]
    program = start_program(test, "edge", argv, home=directory)
    state_dir = os.path.join(directory, "state")
    listening = program.wait_for_line(AGENT_LISTENER_LINE)
    return listening.addCallback(
        lambda found: Edge(program, int(found.group(2)), state_dir)
    )


def start_agent(
    test: TestCase, home: str, arguments: list[str], twistd: bool = False
) -> Program:
    """
    Start an agent logging JSON lines to stdout: C{tunnelkit ARGUMENTS}, or
    C{twistd -n tunnel ARGUMENTS}.
    """
    log_flags = ["--log", "stdout", "--log-format", "json"]
    if twistd:
        argv = twistd_argv(home, "tunnel", *arguments, *log_flags)
    else:
        argv = TUNNELKIT + arguments + log_flags
    return start_program(test, "agent", argv, home=home)


def http_listener_port(edge: Edge, scheme: str) -> Deferred:
    """
    Wait for the edge to say where it serves public C{scheme} (C{http} or
    C{https}).

    @return: a Deferred firing with the port.
    """
    serving = edge.program.wait_for_line(HTTP_LISTENER_LINE.format(scheme=scheme))
    return serving.addCallback(lambda found: int(found.group(2)))


def public_port(agent: Program, occurrence: int = 1, seconds: float = WAIT) -> Deferred:
    """
    Wait for the agent's C{started tunnel} log line.

    @param occurrence: which one (the second is the first after a
        reconnect, for an agent with one tunnel).
    @return: a Deferred firing with the public port of its C{url}.
    """
    started = agent.wait_for_event(seconds, occurrence, msg="started tunnel")
    return started.addCallback(lambda event: tcp_url_port(event["url"]))
