"""
HTTP tunnels for the end-to-end tests: an edge serving public HTTP and
HTTPS on loopback under the domain C{tunnels.test}, agents running
C{tunnelkit http} against it, and the public URLs they print.

The processes are those of L{tests.e2e}: each is stopped by the test that
started it, and every wait has a deadline.
"""

import os
from dataclasses import dataclass
from typing import Any, Iterable
from urllib.parse import urlsplit

from twisted.internet.defer import inlineCallbacks
from twisted.python.filepath import FilePath
from twisted.trial.unittest import TestCase

from tests.e2e import (
    LOOPBACK,
    TOKEN,
    WAIT,
    Edge,
    Program,
    Steps,
    http_listener_port,
    make_directory,
    start_agent,
    start_edge,
    write_agent_config,
    write_edge_config,
)
from tests.webclients import Curl
from tunnelkit.pki import ensure_edge_certificate

DOMAIN = "tunnels.test"
"""The edge's public base domain: tunnels get names such as
C{web.tunnels.test}, which C{curl --resolve} sends to loopback."""

OTHER_TOKEN = "e2e-bob-9876543210"
"""The authtoken of C{bob}, a second account on the same edge."""


@dataclass
class HttpEdge:
    """
    A running edge with public HTTP and HTTPS listeners.

    @ivar edge: the edge, with its process and agent port.
    @ivar ports: the public port of each scheme, C{http} and C{https}.
    @ivar ca_path: the CA that signed the certificate it presents, for
        agents and for C{curl --cacert}.
    """

    edge: Edge
    ports: dict[str, int]
    ca_path: str

    def url(self, scheme: str, host: str, path: str = "/") -> str:
        """
        @return: the public URL of C{path} on C{host} over C{scheme}.
        """
        return f"{scheme}://{host}:{self.ports[scheme]}{path}"


@inlineCallbacks
def start_http_edge(
    test: TestCase,
    directory: str,
    tokens: Iterable[tuple[str, str]] = (("alice", TOKEN),),
    hostnames: dict[str, list[str]] | None = None,
    http_head_timeout: str | None = None,
    certificate_names: list[str] | None = None,
    twistd: bool = False,
    agent_port: int = 0,
    name: str = "edge.yml",
) -> Steps[HttpEdge]:
    """
    Start an edge for the domain L{DOMAIN} serving public HTTP and HTTPS
    on loopback ports the kernel picks.

    @param tokens: C{(name, token)} of each authtoken it accepts.
    @param hostnames: the C{hostnames} of each authtoken, by name.
    @param http_head_timeout: its C{http_head_timeout}, if not the default.
    @param certificate_names: names beyond the domain (such as
        C{*.apps.test}) that the HTTPS certificate must carry: the edge is
        then given, with C{tls}, a certificate from a CA of the operator's,
        as for names outside its domain it must be. Without it, the edge
        presents the certificate it issues itself for its domain.
    @param twistd: run it as C{twistd -n tunnel-edge}.
    @param agent_port: the port for agents, 0 for one the kernel picks.
    @param name: the name of its config file in C{directory}.
    @return: a Deferred firing with the L{HttpEdge}.
    """
    tls = ca_path = None
    if certificate_names is not None:
        names = [LOOPBACK, "localhost", DOMAIN, f"*.{DOMAIN}", *certificate_names]
        issued = ensure_edge_certificate(
            FilePath(os.path.join(directory, "operator-tls")), names
        )
        tls = (issued.cert_path.path, issued.key_path.path)
        ca_path = issued.ca_path.path
    config = write_edge_config(
        directory,
        [(name, token, []) for name, token in tokens],
        domain=DOMAIN,
        http=True,
        hostnames=hostnames,
        http_head_timeout=http_head_timeout,
        tls=tls,
        agent_port=agent_port,
        name=name,
    )
    edge = yield start_edge(test, directory, config, twistd)
    ports = {}
    for scheme in ("http", "https"):
        ports[scheme] = yield http_listener_port(edge, scheme)
    return HttpEdge(edge, ports, ca_path or edge.ca_path)


def start_http_agent(
    test: TestCase,
    home: str,
    edge: HttpEdge,
    arguments: list[str],
    authtoken: str = TOKEN,
) -> Program:
    """
    Start C{tunnelkit http ARGUMENTS} with a config naming C{edge}, logging
    JSON lines to stdout.

    @param home: the agent's own directory (two agents need two).
    """
    config = write_agent_config(
        home, edge.edge.server_addr, edge.ca_path, authtoken, name="agent.yml"
    )
    return start_agent(test, home, ["http", *arguments, "--config", config])


@inlineCallbacks
def tunnel_urls(agent: Program, count: int = 2, seconds: float = WAIT) -> Steps[Any]:
    """
    Wait for the agent's first C{count} C{started tunnel} log lines (two
    for a tunnel served on both schemes, C{https} first).

    @return: a Deferred firing with their URLs, in order.
    """
    yield agent.wait_for_event(seconds, count, msg="started tunnel")
    events = agent.log_events()
    urls = [event["url"] for event in events if event.get("msg") == "started tunnel"]
    return urls[:count]


def host_of(url: str) -> str:
    """
    @return: the host name of C{url}, without its port.
    """
    host = urlsplit(url).hostname
    assert host is not None, url
    return host


class HttpTunnelTestCase(TestCase):
    """
    A test with its own directory, an HTTP edge, agents of C{tunnelkit
    http} connected to it and C{curl} trusting its CA.

    @ivar directory: the test's directory, also the first agent's home.
    @ivar edge: the edge, once L{start_edge} has run.
    @ivar curl: C{curl} runs trusting the edge's CA, once L{start_edge}
        has run.
    """

    timeout = 60

    def setUp(self) -> Any:
        """
        Make the test's directory, then L{arrange} the rest.
        """
        self.directory = make_directory(self)
        return self.arrange()

    def arrange(self) -> Any:
        """
        What every test of the class starts with (an upstream, the edge, a
        tunnel), in subclasses that need it.

        @return: C{None}, or a Deferred that trial waits for before the test.
        """
        return None

    @inlineCallbacks
    def start_edge(self, **options: Any) -> Steps[HttpEdge]:
        """
        Start the test's edge: L{start_http_edge} with C{options}.
        """
        self.edge = yield start_http_edge(self, self.directory, **options)
        self.curl = Curl(self, self.directory, self.edge.ca_path)
        return self.edge

    def start_agent(
        self, *arguments: str, authtoken: str = TOKEN, home: str | None = None
    ) -> Program:
        """
        Start C{tunnelkit http ARGUMENTS} against the test's edge.

        @param home: the agent's directory; the test's own when not given.
        """
        home = home or self.directory
        return start_http_agent(self, home, self.edge, list(arguments), authtoken)

    @inlineCallbacks
    def start_tunnel(self, *arguments: str, count: int = 2) -> Steps[list[str]]:
        """
        Start an agent with C{tunnelkit http ARGUMENTS} and wait for its
        C{count} public URLs.

        @return: a Deferred firing with the URLs, C{https} first.
        """
        agent = self.start_agent(*arguments)
        urls = yield tunnel_urls(agent, count)
        return urls
