"""
End-to-end tests of what HTTP tunnels refuse: the error pages the edge (and
the agent, for an unreachable local service) answers public clients with,
and the names an agent may not bind because another holds or owns them.
The programs run as child processes on loopback, as in
L{tests.test_e2e_http}.
"""

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.e2e import (
    mentions,
    TOKEN,
    Steps,
    free_port,
    make_directory,
    start_agent,
    start_edge,
    write_agent_config,
    write_edge_config,
)
from tests.rawhttp import Response, read_response, read_responses
from tests.webclients import Fetched, RawConnections, complete_responses
from tests.webservers import RecordingUpstream, listen_recording
from tests.webtunnels import OTHER_TOKEN, HttpTunnelTestCase, tunnel_urls

HEAD_TIMEOUT = "1s"
"""The edge's C{http_head_timeout} in the slow client tests, short so that
they are quick (the others keep the default, so that no request of theirs
is cut short on a busy machine)."""

MAX_HEADER_SIZE = 32768
"""The default C{http_max_header_size}, from C{docs/edge-config.md}."""


class ErrorPageTestCase(HttpTunnelTestCase):
    """
    An edge, a recording upstream, raw connections, and a check of the
    edge's error pages.

    @cvar head_timeout: the edge's C{http_head_timeout}, if not the default.
    """

    head_timeout: str | None = None

    @inlineCallbacks
    def arrange(self) -> Steps[None]:
        self.upstream: RecordingUpstream = yield listen_recording(self)
        self.connections = RawConnections(self)
        yield self.start_edge(http_head_timeout=self.head_timeout)

    @inlineCallbacks
    def after_first_response(
        self, host: str, second: bytes
    ) -> Steps[tuple[Response, Response]]:
        """
        On one new connection, send C{GET /first} for C{host}, wait for its
        response, then send C{second} and read until the edge closes.

        @return: a Deferred firing with the two responses.
        """
        connection = yield self.connections.connect(self.edge.ports["http"])
        connection.send(b"GET /first HTTP/1.1\r\nHost: " + host.encode() + b"\r\n\r\n")
        yield connection.wait_for(
            lambda data: complete_responses(data) == 1, "the first response"
        )

        connection.send(second)
        received = yield connection.wait_closed()

        first, second_response = read_responses(received)
        return first, second_response

    def assertErrorPage(
        self, response: Fetched | Response, status: int, code: str
    ) -> None:
        """
        Assert C{response} is the error page of C{status} and C{code}, which
        closes the connection and names the code in its body too.
        """
        described = repr(response)
        self.assertEqual(
            (
                response.status,
                response.header("tunnelkit-error-code"),
                response.header("connection"),
            ),
            (status, code, "close"),
            described,
        )
        self.assertIn(code.encode("ascii"), response.body, described)


class ErrorPageTests(ErrorPageTestCase):
    """
    Each error the edge answers itself is a page with its status, the code
    in C{Tunnelkit-Error-Code}, and the connection closed, as the table of
    C{docs/http-edge.md} lists them; so is the agent's page for a local
    service it cannot reach.
    """

    @inlineCallbacks
    def test_unknown_host(self) -> Steps[None]:
        """
        A plain HTTP request for a name no tunnel serves is answered C{404
        TK_TUNNEL_NOT_FOUND}, and the page names the host asked for. (Over
        HTTPS the edge refuses the name in the TLS handshake already; see
        L{tests.test_e2e_tls}.)
        """
        url = self.edge.url("http", "nobody-here.tunnels.test")

        response = yield self.curl.fetch(url)

        self.assertErrorPage(response, 404, "TK_TUNNEL_NOT_FOUND")
        self.assertIn(b"nobody-here.tunnels.test", response.body)

    @inlineCallbacks
    def test_tunnel_offline(self) -> Steps[None]:
        """
        Once the agent has stopped, its name is kept for the session's grace
        period, and a request for it is answered C{503 TK_TUNNEL_OFFLINE}.
        """
        agent = self.start_agent(str(self.upstream.port), "--subdomain", "gone")
        yield tunnel_urls(agent)

        yield agent.stop()
        yield self.edge.edge.program.wait_for_line("names .*gone.tunnels.test")
        response = yield self.curl.fetch(self.edge.url("http", "gone.tunnels.test"))

        self.assertErrorPage(response, 503, "TK_TUNNEL_OFFLINE")

    @inlineCallbacks
    def test_nothing_listening_locally(self) -> Steps[None]:
        """
        When nothing listens on the tunnel's local port, the agent answers
        C{502 TK_UPSTREAM_UNREACHABLE} with a page naming the local address,
        and logs a warning naming it too.
        """
        local = f"localhost:{free_port()}"
        agent = self.start_agent(local, "--subdomain", "dead")
        yield tunnel_urls(agent)

        response = yield self.curl.fetch(self.edge.url("http", "dead.tunnels.test"))
        warning = yield agent.wait_for_event(lvl="warn", where=mentions(local))

        self.assertErrorPage(response, 502, "TK_UPSTREAM_UNREACHABLE")
        self.assertIn(local.encode("ascii"), response.body)
        self.assertIn("failed to dial upstream", warning["msg"])

    @inlineCallbacks
    def test_header_too_large(self) -> Steps[None]:
        """
        A request head over C{http_max_header_size} is answered C{431
        TK_HEADER_TOO_LARGE} and does not reach the upstream.
        """
        yield self.start_tunnel(str(self.upstream.port), "--subdomain", "web")
        padding = "X-Padding: " + "a" * MAX_HEADER_SIZE

        response = yield self.curl.fetch(
            self.edge.url("http", "web.tunnels.test"), "-H", padding
        )

        self.assertErrorPage(response, 431, "TK_HEADER_TOO_LARGE")
        self.assertEqual(self.upstream.received, [])

    @inlineCallbacks
    def test_other_host_on_one_connection(self) -> Steps[None]:
        """
        On a keep-alive connection that served a request for one tunnel, a
        request for another host is answered C{421 TK_MISDIRECTED_REQUEST},
        after the first response, and never reaches either tunnel.
        """
        yield self.start_tunnel(str(self.upstream.port), "--subdomain", "one")
        other = self.start_agent(
            str(self.upstream.port), "--subdomain", "two", home=make_directory(self)
        )
        yield tunnel_urls(other)

        first, second = yield self.after_first_response(
            "one.tunnels.test",
            b"GET /second HTTP/1.1\r\nHost: two.tunnels.test\r\n\r\n",
        )

        self.assertEqual(first.status, 200)
        self.assertErrorPage(second, 421, "TK_MISDIRECTED_REQUEST")
        self.assertEqual([r.target for r in self.upstream.received], ["/first"])

    @inlineCallbacks
    def test_garbage(self) -> Steps[None]:
        """
        Bytes that are not HTTP are answered C{400 TK_BAD_REQUEST}.
        """
        connection = yield self.connections.connect(self.edge.ports["http"])

        connection.send(b"\x16\x03\x01 this is not HTTP at all\r\n\r\n")
        received = yield connection.wait_closed()

        self.assertErrorPage(read_response(received), 400, "TK_BAD_REQUEST")


class SlowClientTests(ErrorPageTestCase):
    """
    A request head that does not arrive complete within
    C{http_head_timeout} is answered C{408 TK_REQUEST_TIMEOUT}.
    """

    head_timeout = HEAD_TIMEOUT

    @inlineCallbacks
    def test_slow_client(self) -> Steps[None]:
        """
        A client that sends part of a request head and then nothing is
        answered C{408 TK_REQUEST_TIMEOUT} once C{http_head_timeout} has
        passed, and the connection is closed.
        """
        yield self.start_tunnel(str(self.upstream.port), "--subdomain", "web")
        connection = yield self.connections.connect(self.edge.ports["http"])

        connection.send(b"GET / HTTP/1.1\r\nHost: web.tunnels.test\r\nAccept: */")
        received = yield connection.wait_closed()

        self.assertErrorPage(read_response(received), 408, "TK_REQUEST_TIMEOUT")
        self.assertEqual(self.upstream.received, [])

    @inlineCallbacks
    def test_slow_second_request(self) -> Steps[None]:
        """
        On a keep-alive connection, a second request head that starts but
        does not end within C{http_head_timeout} is answered C{408
        TK_REQUEST_TIMEOUT} after the first response.
        """
        yield self.start_tunnel(str(self.upstream.port), "--subdomain", "web")

        first, second = yield self.after_first_response(
            "web.tunnels.test", b"GET /second HTTP/1.1\r\nHost: web.tunnels.test\r\n"
        )

        self.assertEqual(first.status, 200)
        self.assertErrorPage(second, 408, "TK_REQUEST_TIMEOUT")
        self.assertEqual([r.target for r in self.upstream.received], ["/first"])


class NameConflictTests(HttpTunnelTestCase):
    """
    A name held or owned by one agent is refused to others, which stop
    with the reason, while the first keeps serving; only a new session of
    the same authtoken takes over the names of one that dropped.

    Alice's authtoken lists C{*.apps.test} and C{docs.tunnels.test} under
    its C{hostnames}; Bob's lists none.
    """

    @inlineCallbacks
    def arrange(self) -> Steps[None]:
        self.upstream: RecordingUpstream = yield listen_recording(self)
        yield self.start_edge(
            tokens=[("alice", TOKEN), ("bob", OTHER_TOKEN)],
            hostnames={"alice": ["*.apps.test", "docs.tunnels.test"]},
        )

    @inlineCallbacks
    def assertRefused(self, code: str, *arguments: str, token: str) -> Steps[None]:
        """
        Start a second agent with C{tunnelkit http ARGUMENTS} and assert it
        exits with status 1 naming C{code}.
        """
        agent = self.start_agent(*arguments, authtoken=token, home=make_directory(self))
        exit_code = yield agent.wait_for_exit()

        self.assertEqual(exit_code, 1, agent.describe())
        self.assertIn(code, agent.text("err"), agent.describe())

    @inlineCallbacks
    def test_hostname_of_another_token(self) -> Steps[None]:
        """
        While Alice serves C{app.apps.test}, Bob asking for it is refused
        with C{TK_HOSTNAME_NOT_ALLOWED} (his token does not list it), and
        Alice's tunnel still answers.
        """
        port = str(self.upstream.port)
        yield self.start_tunnel(port, "--hostname", "app.apps.test")

        yield self.assertRefused(
            "TK_HOSTNAME_NOT_ALLOWED",
            port,
            "--hostname",
            "app.apps.test",
            token=OTHER_TOKEN,
        )
        response = yield self.curl.fetch(self.edge.url("http", "app.apps.test"))

        self.assertEqual(response.status, 200, response.describe())

    @inlineCallbacks
    def test_hostname_held_by_another_session(self) -> Steps[None]:
        """
        A second agent of the same authtoken asking for the host name the
        first one serves is refused with C{TK_HOSTNAME_TAKEN}, and the first
        tunnel still answers.
        """
        port = str(self.upstream.port)
        yield self.start_tunnel(port, "--hostname", "app.apps.test")

        yield self.assertRefused(
            "TK_HOSTNAME_TAKEN", port, "--hostname", "app.apps.test", token=TOKEN
        )
        response = yield self.curl.fetch(self.edge.url("http", "app.apps.test"))

        self.assertEqual(response.status, 200, response.describe())

    @inlineCallbacks
    def test_subdomain_taken(self) -> Steps[None]:
        """
        While Alice serves the subdomain C{web}, Bob asking for the same
        subdomain is refused with C{TK_HOSTNAME_TAKEN}, and Alice's tunnel
        still answers.
        """
        port = str(self.upstream.port)
        yield self.start_tunnel(port, "--subdomain", "web")

        yield self.assertRefused(
            "TK_HOSTNAME_TAKEN", port, "--subdomain", "web", token=OTHER_TOKEN
        )
        response = yield self.curl.fetch(self.edge.url("http", "web.tunnels.test"))

        self.assertEqual(response.status, 200, response.describe())

    @inlineCallbacks
    def test_subdomain_reserved(self) -> Steps[None]:
        """
        A subdomain that Alice's token lists under its C{hostnames} is
        refused to Bob with C{TK_HOSTNAME_RESERVED}, even while no tunnel
        serves it.
        """
        port = str(self.upstream.port)

        yield self.assertRefused(
            "TK_HOSTNAME_RESERVED", port, "--subdomain", "docs", token=OTHER_TOKEN
        )

    @inlineCallbacks
    def test_restarted_agent_takes_name_over(self) -> Steps[None]:
        """
        When an agent stops and another one with the same authtoken (a new
        session) asks for its subdomain within the grace period, it gets
        the name at once and serves it.
        """
        port = str(self.upstream.port)
        first = self.start_agent(port, "--subdomain", "web")
        yield tunnel_urls(first)
        yield first.stop()

        second = self.start_agent(port, "--subdomain", "web", home=make_directory(self))
        urls = yield tunnel_urls(second)
        response = yield self.curl.fetch(self.edge.url("http", "web.tunnels.test"))

        self.assertEqual(urls[1], self.edge.url("http", "web.tunnels.test", ""))
        self.assertEqual(response.status, 200, response.describe())


class UnservedProtocolTests(TestCase):
    """
    An edge without public HTTP listeners refuses HTTP tunnels.
    """

    timeout = 60

    @inlineCallbacks
    def test_edge_without_http_listeners(self) -> Steps[None]:
        """
        C{tunnelkit http} against an edge that sets neither
        C{http_listener} nor C{https_listener} exits with status 1 and
        says C{TK_PROTO_UNSUPPORTED}.
        """
        directory = make_directory(self)
        config = write_edge_config(directory, [("alice", TOKEN, [])])
        edge = yield start_edge(self, directory, config)
        agent_config = write_agent_config(
            directory, edge.server_addr, edge.ca_path, TOKEN
        )

        agent = start_agent(self, directory, ["http", "8080", "--config", agent_config])
        code = yield agent.wait_for_exit()

        self.assertEqual(code, 1, agent.describe())
        self.assertIn("TK_PROTO_UNSUPPORTED", agent.text("err"), agent.describe())
