"""
Tests for the agent's side of HTTP tunnels up to the edge: the bind request
of L{tunnelkit.agent.tunnel.Tunnel} (host header, schemes, basic auth), the
public URLs a binding gets, how they are logged, and the startup summary of
L{tunnelkit.cli.write_summary}.
"""

from io import StringIO
from types import SimpleNamespace
from typing import Any

from twisted.internet.defer import ensureDeferred, succeed
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from tunnelkit import __version__
from tunnelkit.agent.session import AgentSession
from tunnelkit.agent.tunnel import Tunnel, rewritten_host
from tunnelkit.cli import write_summary
from tunnelkit.config import (
    AgentConfig,
    BasicAuthCredential,
    HostPort,
    TunnelDefinition,
    UpstreamAddress,
)
from tunnelkit.control.messages import BindResp, HttpOpts
from tunnelkit.mux import MuxConfig
from tests.test_agent_service import SSH, AgentTestCase, agent_events

WEB = TunnelDefinition(
    name="web",
    proto="http",
    addr=UpstreamAddress("http", "localhost", 8080),
    schemes=("http", "https"),
    host_header="preserve",
)


def http_tunnel(**changes: Any) -> Tunnel:
    """
    @return: a tunnel for L{WEB} with C{changes} made to its definition.
    """
    values = dict(WEB.__dict__)
    values.update(changes)
    return Tunnel(TunnelDefinition(**values))


def options_of(tunnel: Tunnel) -> HttpOpts:
    """
    @return: the HTTP options of the tunnel's bind request.
    """
    opts = tunnel.bind_request().opts
    assert isinstance(opts, HttpOpts)
    return opts


class HttpBindRequestTests(SynchronousTestCase):
    """
    L{Tunnel.bind_request} for an http tunnel.
    """

    def test_fields(self) -> None:
        """
        The request names the tunnel, asks for the http protocol and shows
        the upstream as a URL.
        """
        request = Tunnel(WEB).bind_request()

        self.assertEqual(
            (request.id, request.name, request.proto, request.forwards_to),
            ("web", "web", "http", "http://localhost:8080"),
        )

    def test_preserve(self) -> None:
        """
        C{host_header: preserve} sends an empty host header: the edge passes
        the public Host through.
        """
        self.assertEqual(options_of(http_tunnel()).host_header, "")

    def test_no_host_header(self) -> None:
        """
        A definition without a host header preserves the public one.
        """
        self.assertEqual(options_of(http_tunnel(host_header=None)).host_header, "")

    def test_rewrite_with_port(self) -> None:
        """
        C{rewrite} sends the upstream's host and port when the port is not
        the scheme's default.
        """
        tunnel = http_tunnel(host_header="rewrite")

        self.assertEqual(options_of(tunnel).host_header, "localhost:8080")

    def test_rewrite_http_default_port(self) -> None:
        """
        C{rewrite} leaves out port 80 of an C{http://} upstream.
        """
        tunnel = http_tunnel(
            host_header="rewrite", addr=UpstreamAddress("http", "site.dev", 80)
        )

        self.assertEqual(options_of(tunnel).host_header, "site.dev")

    def test_rewrite_https_default_port(self) -> None:
        """
        C{rewrite} leaves out port 443 of an C{https://} upstream.
        """
        tunnel = http_tunnel(
            host_header="rewrite", addr=UpstreamAddress("https", "site.dev", 443)
        )

        self.assertEqual(options_of(tunnel).host_header, "site.dev")

    def test_rewrite_https_on_port_80(self) -> None:
        """
        Port 80 is not the default of an C{https://} upstream, so it is
        kept.
        """
        tunnel = http_tunnel(
            host_header="rewrite", addr=UpstreamAddress("https", "site.dev", 80)
        )

        self.assertEqual(options_of(tunnel).host_header, "site.dev:80")

    def test_rewrite_ipv6(self) -> None:
        """
        An IPv6 upstream is written in brackets, with or without a port.
        """
        with_port = UpstreamAddress("http", "::1", 8080)
        without_port = UpstreamAddress("http", "::1", 80)

        self.assertEqual(
            (rewritten_host(with_port), rewritten_host(without_port)),
            ("[::1]:8080", "[::1]"),
        )

    def test_rewrite_file_server(self) -> None:
        """
        The file server has no host to rewrite to, so the public one is
        kept.
        """
        tunnel = http_tunnel(
            host_header="rewrite", addr=UpstreamAddress("file", "", None, "/srv")
        )

        self.assertEqual(options_of(tunnel).host_header, "")

    def test_literal(self) -> None:
        """
        Any other value is sent as it is.
        """
        tunnel = http_tunnel(host_header="app.internal:9000")

        self.assertEqual(options_of(tunnel).host_header, "app.internal:9000")

    def test_schemes(self) -> None:
        """
        The tunnel's schemes are asked for.
        """
        tunnel = http_tunnel(schemes=("https",))

        self.assertEqual(options_of(tunnel).schemes, ("https",))

    def test_basic_auth(self) -> None:
        """
        Each credential is sent as C{user:password}, in order.
        """
        tunnel = http_tunnel(
            basic_auth=(
                BasicAuthCredential("ann", "password1"),
                BasicAuthCredential("bob", "pass:word2"),
            )
        )

        self.assertEqual(
            options_of(tunnel).basic_auth, ("ann:password1", "bob:pass:word2")
        )

    def test_names(self) -> None:
        """
        The subdomain and hostname asked for are sent.
        """
        tunnel = http_tunnel(subdomain="app")
        other = http_tunnel(hostname="app.example.com")

        self.assertEqual(
            (options_of(tunnel).subdomain, options_of(other).hostname),
            ("app", "app.example.com"),
        )


class PublicUrlTests(SynchronousTestCase):
    """
    The public URLs a tunnel records, and their names.
    """

    def test_public_url_is_first(self) -> None:
        """
        C{public_url} is the first of the public URLs.
        """
        tunnel = Tunnel(WEB, public_urls=("https://a.example", "http://a.example"))

        self.assertEqual(tunnel.public_url, "https://a.example")

    def test_set_public_url(self) -> None:
        """
        Setting C{public_url} records that one URL; setting C{None} clears
        them all.
        """
        tunnel = Tunnel(WEB, public_urls=("https://a.example", "http://a.example"))

        tunnel.public_url = "tcp://edge:1"
        one = tunnel.public_urls
        tunnel.public_url = None

        self.assertEqual((one, tunnel.public_urls), (("tcp://edge:1",), ()))

    def test_http_twin_named(self) -> None:
        """
        With both schemes, the http URL is named C{"NAME (http)"}.
        """
        tunnel = Tunnel(WEB, public_urls=("https://a.example", "http://a.example"))

        self.assertEqual(
            tunnel.named_urls(),
            [("web", "https://a.example"), ("web (http)", "http://a.example")],
        )

    def test_single_http_url_plain(self) -> None:
        """
        A tunnel served over http only keeps its plain name.
        """
        tunnel = Tunnel(WEB, public_urls=("http://a.example",))

        self.assertEqual(tunnel.named_urls(), [("web", "http://a.example")])


class BindReplyTests(SynchronousTestCase):
    """
    L{AgentSession.bind} records every URL of the edge's reply.
    """

    def bind(self, reply: BindResp) -> Tunnel:
        """
        Bind a tunnel for L{WEB} on a session whose edge answers C{reply}.

        @return: the tunnel.
        """
        agent = SimpleNamespace(config=AgentConfig(), tunnels={})
        session = AgentSession(agent, Clock(), MuxConfig())  # type: ignore
        session.request = lambda message: succeed(reply)  # type: ignore
        tunnel = Tunnel(WEB)

        error = self.successResultOf(ensureDeferred(session.bind(tunnel)))

        self.assertIsNone(error)
        return tunnel

    def test_urls(self) -> None:
        """
        All URLs are recorded, in the edge's order, with the token.
        """
        tunnel = self.bind(
            BindResp(
                url="https://a.example",
                urls=("https://a.example", "http://a.example"),
                token="t1",
            )
        )

        self.assertEqual(
            (tunnel.public_urls, tunnel.token),
            (("https://a.example", "http://a.example"), "t1"),
        )

    def test_url_only(self) -> None:
        """
        An edge that sends only C{url} gives the tunnel that one URL.
        """
        tunnel = self.bind(BindResp(url="https://a.example"))

        self.assertEqual(tunnel.public_urls, ("https://a.example",))


class StartedTunnelLogTests(AgentTestCase):
    """
    The agent logs one C{started tunnel} event per public URL.
    """

    def setUp(self) -> None:
        super().setUp()
        self.fake_sessions()

    def started(self, definition: TunnelDefinition, urls: tuple[str, ...]) -> Any:
        """
        Bring a session up with one tunnel bound to C{urls}.

        @return: the C{started tunnel} events.
        """
        agent = self.start(tunnels=(definition,))
        tunnel = agent.tunnels[definition.name]
        tunnel.public_urls = urls

        with capturedLogs() as events:
            self.sessions[0].succeed("s1", [(tunnel, None)])

        return [
            event
            for event in agent_events(events, LogLevel.info)
            if event["log_format"] == "started tunnel"
        ]

    def test_both_schemes(self) -> None:
        """
        An http tunnel on both schemes logs its https URL under its name and
        its http URL under C{"NAME (http)"}, both with the upstream URL.
        """
        events = self.started(WEB, ("https://web.example", "http://web.example"))

        self.assertEqual(
            [(e["obj"], e["name"], e["addr"], e["url"]) for e in events],
            [
                ("tunnels", "web", "http://localhost:8080", "https://web.example"),
                (
                    "tunnels",
                    "web (http)",
                    "http://localhost:8080",
                    "http://web.example",
                ),
            ],
        )

    def test_tcp_unchanged(self) -> None:
        """
        A TCP tunnel logs one event, its upstream written C{//host:port}.
        """
        events = self.started(SSH, ("tcp://edge.example.com:20001",))

        self.assertEqual(
            [(e["name"], e["addr"], e["url"]) for e in events],
            [("ssh", "//localhost:22", "tcp://edge.example.com:20001")],
        )


class SummaryTests(SynchronousTestCase):
    """
    L{write_summary}: one Forwarding line per public URL.
    """

    def summary(self, *tunnels: Tunnel, web_url: str | None = None) -> list[str]:
        """
        @return: the lines of the summary of an agent running C{tunnels}
            with a remote edge, its web interface at C{web_url}.
        """
        agent = SimpleNamespace(
            edge=HostPort("edge.example.com", 4443),
            tunnels={tunnel.name: tunnel for tunnel in tunnels},
        )
        stdout = StringIO()

        write_summary(stdout, SimpleNamespace(agent=agent, edge=None, web_url=web_url))

        return stdout.getvalue().splitlines()

    def test_http_both_schemes(self) -> None:
        """
        An http tunnel with two URLs has two Forwarding lines, in the order
        of its URLs, each to the upstream URL.
        """
        tunnel = Tunnel(WEB, public_urls=("https://web.example", "http://web.example"))

        lines = self.summary(tunnel)

        self.assertEqual(
            lines[2:],
            [
                f"{'Session Status':<30}online",
                f"{'Version':<30}{__version__}",
                f"{'Edge':<30}edge.example.com:4443",
                f"{'Forwarding':<30}https://web.example -> http://localhost:8080",
                f"{'Forwarding':<30}http://web.example -> http://localhost:8080",
            ],
        )

    def test_web_interface(self) -> None:
        """
        When the web interface runs, a C{Web Interface} line after the edge
        gives its URL, as in ngrok's console; without it there is no line.
        """
        ssh = Tunnel(SSH, public_urls=("tcp://edge.example.com:20001",))

        lines = self.summary(ssh, web_url="http://127.0.0.1:4041")
        without = self.summary(ssh)

        self.assertEqual(
            lines[4:7],
            [
                f"{'Edge':<30}edge.example.com:4443",
                f"{'Web Interface':<30}http://127.0.0.1:4041",
                f"{'Forwarding':<30}tcp://edge.example.com:20001 -> localhost:22",
            ],
        )
        self.assertEqual([line for line in lines if "Web" not in line], without)

    def test_tcp_and_file(self) -> None:
        """
        A TCP tunnel shows C{host:port}; a file server tunnel its file URL.
        """
        files = http_tunnel(
            name="files", addr=UpstreamAddress("file", "", None, "/srv")
        )
        files.public_urls = ("https://files.example",)
        ssh = Tunnel(SSH, public_urls=("tcp://edge.example.com:20001",))

        lines = self.summary(ssh, files)

        self.assertEqual(
            lines[-2:],
            [
                f"{'Forwarding':<30}tcp://edge.example.com:20001 -> localhost:22",
                f"{'Forwarding':<30}https://files.example -> file:///srv",
            ],
        )
