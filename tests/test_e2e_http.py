"""
End-to-end tests of HTTP and HTTPS tunnels: the real C{tunnelkit edge},
C{tunnelkit http} and twistd plugins run as child processes on loopback,
and C{curl} and a WebSocket client reach a local service through them by
the public names the agent prints.

Basic authentication and the headers the upstream sees are in
L{tests.test_e2e_http_headers}, the edge's error pages and the names it
refuses in L{tests.test_e2e_http_errors}, the built-in file server in
L{tests.test_e2e_http_files}, gigabyte transfers in
L{tests.test_e2e_http_bulk}. The processes and clients are in
L{tests.webtunnels}, L{tests.webclients} and L{tests.webservers}.
"""

import json
import os
import sys

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import ConnectionDone
from twisted.internet.ssl import PrivateCertificate
from twisted.internet.threads import deferToThread
from twisted.python.filepath import FilePath

from tests.e2e import (
    LOOPBACK,
    TOKEN,
    TUNNELKIT,
    WAIT,
    Steps,
    bounded,
    start_agent,
    start_program,
    write_agent_config,
)
from tests.webclients import Curl
from tests.webservers import RecordingUpstream, listen_recording
from tests.webtunnels import DOMAIN, HttpTunnelTestCase, host_of, tunnel_urls
from tests.wsecho import LISTENING_LINE, round_trips
from tunnelkit.pki import ensure_edge_certificate

EMBEDDED_FORWARDING_LINE = (
    r"^Forwarding\s+http://([0-9a-z-]+\.localhost):([0-9]+) -> (\S+)$"
)


def host_seen(body: bytes) -> str:
    """
    @return: the C{Host} the recording upstream says it received, from the
        JSON body of its answer.
    """
    host: str = json.loads(body)["host"]
    return host


class RoutingTests(HttpTunnelTestCase):
    """
    Requests reach a tunnel by the name the edge bound for it: a random
    one, a subdomain, a host name reserved for the authtoken (exact or
    wildcard), over the schemes the tunnel asked for.
    """

    @inlineCallbacks
    def arrange(self) -> Steps[None]:
        self.upstream: RecordingUpstream = yield listen_recording(self)
        yield self.start_edge(
            hostnames={"alice": ["*.apps.test"]}, certificate_names=["*.apps.test"]
        )

    @inlineCallbacks
    def test_random_name(self) -> Steps[None]:
        """
        Without a name asked for, the agent prints an https and an http URL
        of one random name one label below the edge's domain, and both
        reach the local service.
        """
        urls = yield self.start_tunnel(str(self.upstream.port))
        name = host_of(urls[0])

        https = yield self.curl.fetch(urls[0] + "/secure")
        http = yield self.curl.fetch(urls[1] + "/plain")

        self.assertEqual(urls, [self.edge.url(s, name, "") for s in ("https", "http")])
        self.assertEqual(name.split(".", 1)[1], DOMAIN)
        self.assertEqual((https.status, http.status), (200, 200), https.describe())
        self.assertEqual(
            [(r.target, r.header("host")) for r in self.upstream.received],
            [
                ("/secure", f"{name}:{self.edge.ports['https']}"),
                ("/plain", f"{name}:{self.edge.ports['http']}"),
            ],
        )

    @inlineCallbacks
    def test_started_tunnel_events(self) -> Steps[None]:
        """
        The agent logs one C{started tunnel} event per URL, naming the
        tunnel C{command_line} for the https one and C{command_line (http)}
        for the http one, with the upstream as C{addr}.
        """
        agent = self.start_agent(str(self.upstream.port), "--subdomain", "web")

        urls = yield tunnel_urls(agent)

        events = [e for e in agent.log_events() if e.get("msg") == "started tunnel"]
        local = f"http://localhost:{self.upstream.port}"
        self.assertEqual(
            [(e["name"], e["addr"], e["url"]) for e in events],
            [
                ("command_line", local, urls[0]),
                ("command_line (http)", local, urls[1]),
            ],
        )

    @inlineCallbacks
    def test_subdomain(self) -> Steps[None]:
        """
        C{--subdomain web} binds C{web.tunnels.test}, reachable over HTTPS
        and HTTP.
        """
        urls = yield self.start_tunnel(str(self.upstream.port), "--subdomain", "web")

        https = yield self.curl.fetch(self.edge.url("https", "web.tunnels.test"))
        http = yield self.curl.fetch(self.edge.url("http", "web.tunnels.test"))

        self.assertEqual(
            urls, [self.edge.url(s, "web.tunnels.test", "") for s in ("https", "http")]
        )
        self.assertEqual((https.status, http.status), (200, 200), https.describe())

    @inlineCallbacks
    def test_hostname(self) -> Steps[None]:
        """
        C{--hostname app.apps.test}, a name the edge lists for the agent's
        authtoken (under C{*.apps.test}), binds exactly that name, reachable
        over HTTPS and HTTP.
        """
        arguments = [str(self.upstream.port), "--hostname", "app.apps.test"]
        urls = yield self.start_tunnel(*arguments)

        https = yield self.curl.fetch(self.edge.url("https", "app.apps.test"))
        http = yield self.curl.fetch(self.edge.url("http", "app.apps.test"))

        self.assertEqual(
            urls, [self.edge.url(s, "app.apps.test", "") for s in ("https", "http")]
        )
        self.assertEqual((https.status, http.status), (200, 200), https.describe())

    @inlineCallbacks
    def test_wildcard_hostname(self) -> Steps[None]:
        """
        C{--hostname *.apps.test} serves every name below C{apps.test}, and
        the upstream sees each name the clients asked for.
        """
        yield self.start_tunnel(str(self.upstream.port), "--hostname", "*.apps.test")

        one = yield self.curl.fetch(self.edge.url("https", "one.apps.test"))
        two = yield self.curl.fetch(self.edge.url("http", "two.deep.apps.test"))

        self.assertEqual((one.status, two.status), (200, 200), one.describe())
        self.assertEqual(
            [r.header("host") for r in self.upstream.received],
            [
                f"one.apps.test:{self.edge.ports['https']}",
                f"two.deep.apps.test:{self.edge.ports['http']}",
            ],
        )

    @inlineCallbacks
    def test_http_only(self) -> Steps[None]:
        """
        A tunnel started with C{--scheme http} gets only an http URL; the
        same name over HTTPS is answered C{404 TK_TUNNEL_NOT_FOUND}.
        """
        arguments = [str(self.upstream.port), "--subdomain", "plain"]
        urls = yield self.start_tunnel(*arguments, "--scheme", "http", count=1)

        http = yield self.curl.fetch(self.edge.url("http", "plain.tunnels.test"))
        https = yield self.curl.fetch(self.edge.url("https", "plain.tunnels.test"))

        self.assertEqual(urls, [self.edge.url("http", "plain.tunnels.test", "")])
        self.assertEqual(http.status, 200, http.describe())
        self.assertEqual(
            (https.status, https.header("tunnelkit-error-code")),
            (404, "TK_TUNNEL_NOT_FOUND"),
            https.describe(),
        )

    @inlineCallbacks
    def test_https_only(self) -> Steps[None]:
        """
        A tunnel started with C{--scheme https} gets only an https URL; the
        same name over HTTP is answered C{404 TK_TUNNEL_NOT_FOUND}.
        """
        arguments = [str(self.upstream.port), "--subdomain", "secure"]
        urls = yield self.start_tunnel(*arguments, "--scheme", "https", count=1)

        https = yield self.curl.fetch(self.edge.url("https", "secure.tunnels.test"))
        http = yield self.curl.fetch(self.edge.url("http", "secure.tunnels.test"))

        self.assertEqual(urls, [self.edge.url("https", "secure.tunnels.test", "")])
        self.assertEqual(https.status, 200, https.describe())
        self.assertEqual(
            (http.status, http.header("tunnelkit-error-code")),
            (404, "TK_TUNNEL_NOT_FOUND"),
            http.describe(),
        )


class UpstreamTests(HttpTunnelTestCase):
    """
    The agent reaches local services over TLS too.
    """

    @inlineCallbacks
    def test_https_upstream(self) -> Steps[None]:
        """
        C{tunnelkit http https://localhost:PORT} reaches a local HTTPS
        service with a certificate from a private CA (not checked, as
        documented), and C{--host-header rewrite} gives it
        C{localhost:PORT}.
        """
        issued = ensure_edge_certificate(
            FilePath(os.path.join(self.directory, "upstream-tls")),
            ["localhost", LOOPBACK],
        )
        pem = issued.cert_path.getContent() + issued.key_path.getContent()
        tls = PrivateCertificate.loadPEM(pem).options()
        upstream = yield listen_recording(self, tls)
        yield self.start_edge()
        address = f"https://localhost:{upstream.port}"
        yield self.start_tunnel(
            address, "--subdomain", "web", "--host-header", "rewrite"
        )

        response = yield self.curl.fetch(self.edge.url("https", "web.tunnels.test"))

        self.assertEqual(response.status, 200, response.describe())
        [request] = upstream.received
        self.assertEqual(
            (request.secure, request.header("host")),
            (True, f"localhost:{upstream.port}"),
        )


class EdgeRestartTests(HttpTunnelTestCase):
    """
    An HTTP tunnel outlives a restart of its edge.
    """

    timeout = 90

    @inlineCallbacks
    def test_random_name_kept(self) -> Steps[None]:
        """
        When the edge is stopped and started again with the same agent port
        and state directory, the agent reconnects by itself and gets the
        same random name back, which reaches the local service again.
        """
        upstream = yield listen_recording(self)
        yield self.start_edge()
        agent = self.start_agent(str(upstream.port))
        before = yield tunnel_urls(agent)
        yield self.edge.edge.program.stop()
        yield self.start_edge(agent_port=self.edge.edge.agent_port, name="edge-2.yml")

        yield agent.wait_for_event(30.0, 4, msg="started tunnel")
        after = [
            e["url"] for e in agent.log_events() if e.get("msg") == "started tunnel"
        ]
        response = yield self.curl.fetch(after[3])

        self.assertEqual(
            [host_of(url) for url in after[2:]], [host_of(url) for url in before]
        )
        self.assertEqual(response.status, 200, response.describe())


class KeepAliveTests(HttpTunnelTestCase):
    """
    A public keep-alive connection carries several requests through the
    tunnel.
    """

    @inlineCallbacks
    def test_requests_share_one_connection(self) -> Steps[None]:
        """
        curl fetching three URLs of a tunnel opens one connection (it
        reports one connect, then none), and the upstream receives the
        three requests on one connection of its own.
        """
        upstream = yield listen_recording(self)
        yield self.start_edge()
        yield self.start_tunnel(str(upstream.port), "--subdomain", "web")
        arguments = ["-w", "%{num_connects} "]
        for n in range(3):
            url = self.edge.url("http", "web.tunnels.test", f"/{n}")
            arguments += ["-o", "/dev/null", url]

        curl = yield self.curl.run(arguments)

        self.assertEqual(
            (curl.exit_code, curl.text("out")), (0, "1 0 0 "), curl.describe()
        )
        self.assertEqual([r.target for r in upstream.received], ["/0", "/1", "/2"])
        self.assertEqual(len({r.peer_port for r in upstream.received}), 1)


class ConnectionEndTests(HttpTunnelTestCase):
    """
    A client that closes its keep-alive connection after its exchange
    ends the upstream's connection cleanly (a FIN, not a reset), over
    either scheme.
    """

    @inlineCallbacks
    def assertUpstreamClosedCleanly(self, scheme: str) -> Steps[None]:
        """
        Fetch one URL over C{scheme} with curl (which closes the connection
        as it exits) and assert the upstream's connection then ended with a
        clean close.
        """
        upstream = yield listen_recording(self)
        yield self.start_edge()
        yield self.start_tunnel(str(upstream.port), "--subdomain", "web")

        response = yield self.curl.fetch(self.edge.url(scheme, "web.tunnels.test"))
        [end] = yield upstream.wait_for_ends(1)

        self.assertEqual(response.status, 200, response.describe())
        self.assertIs(end.type, ConnectionDone, end)

    def test_http(self) -> Deferred[None]:
        """
        Over HTTP, the upstream's connection ends with a clean close.
        """
        return self.assertUpstreamClosedCleanly("http")

    def test_https(self) -> Deferred[None]:
        """
        Over HTTPS, where the client's TLS close reaches the edge as the
        end of the connection rather than a half-close, the upstream's
        connection still ends with a clean close.
        """
        return self.assertUpstreamClosedCleanly("https")


class WebSocketTests(HttpTunnelTestCase):
    """
    A WebSocket connection works through an HTTP tunnel.
    """

    MESSAGES: list[str | bytes] = [
        "hello through the tunnel",
        bytes(range(256)) * 4,
        "ünïcödé " * 1000,
        b"\x00" * 200_000,
        "last",
    ]

    @inlineCallbacks
    def echo_through(self, scheme: str) -> Steps[list[str | bytes]]:
        """
        Start a local WebSocket echo server and a tunnel to it as
        C{web.tunnels.test}, then make round trips of L{MESSAGES} over
        C{scheme} (C{ws} or C{wss}) through the edge.

        @return: a Deferred firing with the answers.
        """
        echo = start_program(
            self,
            "websocket echo",
            [sys.executable, "-m", "tests.wsecho"],
            self.directory,
        )
        listening = yield echo.wait_for_line(LISTENING_LINE)
        yield self.start_edge()
        yield self.start_tunnel(listening.group(1), "--subdomain", "web")
        port = self.edge.ports["https" if scheme == "wss" else "http"]
        uri = f"{scheme}://web.tunnels.test:{port}/"
        answers = yield bounded(
            deferToThread(
                round_trips, port, uri, self.MESSAGES, WAIT, self.edge.ca_path
            ),
            2 * WAIT,
            f"the WebSocket round trips to {uri}",
        )
        return answers

    @inlineCallbacks
    def test_echo(self) -> Steps[None]:
        """
        A client of the C{websockets} package, connected to
        C{ws://web.tunnels.test:PORT/} on the edge, upgrades and makes
        several round trips of text and binary messages with a local echo
        server, each answer the message it sent.
        """
        answers = yield self.echo_through("ws")

        self.assertEqual(answers, self.MESSAGES)

    @inlineCallbacks
    def test_echo_over_tls(self) -> Steps[None]:
        """
        The same round trips work over C{wss://}, with TLS ending at the
        edge.
        """
        answers = yield self.echo_through("wss")

        self.assertEqual(answers, self.MESSAGES)


class EmbeddedEdgeTests(HttpTunnelTestCase):
    """
    C{tunnelkit http PORT} with no edge configured runs an embedded edge on
    loopback and prints a URL that works from the same machine.
    """

    @inlineCallbacks
    def test_prints_working_url(self) -> Steps[None]:
        """
        With an empty home, C{tunnelkit http PORT} prints a C{Forwarding}
        line C{http://NAME.localhost:N -> http://localhost:PORT}, and a
        request to that URL (its name resolved to loopback) reaches the
        local service.
        """
        upstream = yield listen_recording(self)
        curl = Curl(self, self.directory, None)
        argv = TUNNELKIT + ["http", str(upstream.port)]
        agent = start_program(self, "tunnelkit http", argv, home=self.directory)
        forwarding = yield agent.wait_for_line(EMBEDDED_FORWARDING_LINE, stream="out")
        name, port, target = forwarding.groups()

        response = yield curl.fetch(f"http://{name}:{port}/embedded")

        self.assertEqual(target, f"http://localhost:{upstream.port}")
        self.assertEqual(response.status, 200, response.describe())
        self.assertEqual(host_seen(response.body), f"{name}:{port}")

    @inlineCallbacks
    def test_no_https(self) -> Steps[None]:
        """
        The embedded edge serves no HTTPS: C{tunnelkit http PORT --scheme
        https} exits with status 1 and says C{TK_SCHEME_UNAVAILABLE}.
        """
        argv = TUNNELKIT + ["http", "8080", "--scheme", "https"]

        agent = start_program(self, "tunnelkit http", argv, home=self.directory)
        code = yield agent.wait_for_exit()

        self.assertEqual(code, 1, agent.describe())
        self.assertIn("TK_SCHEME_UNAVAILABLE", agent.text("err"), agent.describe())


class TwistdTests(HttpTunnelTestCase):
    """
    The twistd plugins serve HTTP tunnels defined in the agent's config.
    """

    timeout = 90

    @inlineCallbacks
    def test_tunnel_from_config(self) -> Steps[None]:
        """
        C{twistd -n tunnel-edge} with HTTP listeners and C{twistd -n tunnel}
        with a C{proto: http} tunnel in its C{ngrok.yml} bind it on both
        schemes, and both URLs reach the local service.
        """
        upstream = yield listen_recording(self)
        yield self.start_edge(twistd=True)
        config = write_agent_config(
            self.directory,
            self.edge.edge.server_addr,
            self.edge.ca_path,
            TOKEN,
            http_tunnels={"web": str(upstream.port)},
        )
        agent = start_agent(self, self.directory, ["--config", config], twistd=True)
        urls = yield tunnel_urls(agent)

        https = yield self.curl.fetch(urls[0])
        http = yield self.curl.fetch(urls[1])

        self.assertEqual([u.split("://")[0] for u in urls], ["https", "http"])
        self.assertEqual((https.status, http.status), (200, 200), https.describe())
        self.assertEqual(len(upstream.received), 2)
