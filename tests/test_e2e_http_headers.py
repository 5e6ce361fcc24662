"""
End-to-end tests of what the edge checks and adds in each request of an
HTTP tunnel: basic authentication, the C{Host} the upstream sees, and the
C{X-Forwarded-*} headers. The programs run as child processes on loopback,
as in L{tests.test_e2e_http}, and a recording upstream shows what arrived.
"""

import json
import os

from twisted.internet.defer import inlineCallbacks

from tests.e2e import LOOPBACK, Steps
from tests.rawhttp import read_response
from tests.webclients import RawConnections
from tests.webservers import RecordingUpstream, listen_recording
from tests.webtunnels import HttpTunnelTestCase

UPLOAD_SIZE = 8 * 1024 * 1024
"""A body large enough that curl sends C{Expect: 100-continue}."""


def host_seen(body: bytes) -> str:
    """
    @return: the C{Host} the recording upstream says it received, from the
        JSON body of its answer.
    """
    host: str = json.loads(body)["host"]
    return host


class BasicAuthTests(HttpTunnelTestCase):
    """
    A tunnel with C{--basic-auth} users lets through only requests that
    carry one of them.
    """

    @inlineCallbacks
    def arrange(self) -> Steps[None]:
        self.upstream: RecordingUpstream = yield listen_recording(self)
        yield self.start_edge()
        yield self.start_tunnel(
            str(self.upstream.port),
            "--subdomain",
            "private",
            "--basic-auth",
            "ann:correct horse",
            "--basic-auth",
            "bob:battery staple",
        )
        self.url = self.edge.url("https", "private.tunnels.test")

    @inlineCallbacks
    def test_no_credentials(self) -> Steps[None]:
        """
        A request without credentials is answered C{401} with a
        C{WWW-Authenticate: Basic} challenge and never reaches the upstream.
        """
        response = yield self.curl.fetch(self.url)

        self.assertEqual(
            (response.status, response.header("tunnelkit-error-code")),
            (401, "TK_BASIC_AUTH_REQUIRED"),
            response.describe(),
        )
        challenge = response.header("www-authenticate") or ""
        self.assertTrue(challenge.startswith('Basic realm="tunnelkit"'), challenge)
        self.assertEqual(self.upstream.received, [])

    @inlineCallbacks
    def test_wrong_password(self) -> Steps[None]:
        """
        A known user with a wrong password is answered C{401}.
        """
        response = yield self.curl.fetch(self.url, "-u", "ann:wrong horse")

        self.assertEqual(response.status, 401, response.describe())
        self.assertEqual(self.upstream.received, [])

    @inlineCallbacks
    def test_right_password(self) -> Steps[None]:
        """
        The right user and password get through, and the upstream receives
        the C{Authorization} header as it was sent.
        """
        response = yield self.curl.fetch(self.url, "-u", "ann:correct horse")

        self.assertEqual(response.status, 200, response.describe())
        [received] = self.upstream.received
        self.assertEqual(
            received.header("authorization"), "Basic YW5uOmNvcnJlY3QgaG9yc2U="
        )

    @inlineCallbacks
    def test_every_user(self) -> Steps[None]:
        """
        Each of the tunnel's users gets through.
        """
        ann = yield self.curl.fetch(self.url, "-u", "ann:correct horse")
        bob = yield self.curl.fetch(self.url, "-u", "bob:battery staple")

        self.assertEqual((ann.status, bob.status), (200, 200), bob.describe())

    @inlineCallbacks
    def test_large_upload_without_credentials(self) -> Steps[None]:
        """
        A large upload without credentials (curl sends C{Expect:
        100-continue}) gets the C{401} page, not a reset, and nothing
        reaches the upstream.
        """
        body = os.path.join(self.directory, "upload")
        with open(body, "wb") as output:
            output.write(b"u" * UPLOAD_SIZE)

        response = yield self.curl.fetch(self.url, "--data-binary", f"@{body}")

        self.assertEqual(
            (response.exit_code, response.status), (0, 401), response.describe()
        )
        self.assertEqual(self.upstream.received, [])


class ForwardedHeaderTests(HttpTunnelTestCase):
    """
    What the upstream sees of the public request: the C{Host} that
    C{--host-header} says, and the C{X-Forwarded-*} headers the edge adds.
    """

    @inlineCallbacks
    def arrange(self) -> Steps[None]:
        self.upstream: RecordingUpstream = yield listen_recording(self)
        yield self.start_edge()

    @inlineCallbacks
    def test_host_preserved_by_default(self) -> Steps[None]:
        """
        By default the upstream sees the public C{Host}, port included, as
        the client sent it.
        """
        yield self.start_tunnel(str(self.upstream.port), "--subdomain", "web")

        response = yield self.curl.fetch(self.edge.url("http", "web.tunnels.test"))

        public = f"web.tunnels.test:{self.edge.ports['http']}"
        self.assertEqual(host_seen(response.body), public, response.describe())

    @inlineCallbacks
    def test_host_rewritten(self) -> Steps[None]:
        """
        With C{--host-header rewrite} the upstream sees C{localhost:PORT},
        its own address, and the public host in C{X-Forwarded-Host}.
        """
        port = self.upstream.port
        yield self.start_tunnel(
            str(port), "--subdomain", "web", "--host-header", "rewrite"
        )

        response = yield self.curl.fetch(self.edge.url("http", "web.tunnels.test"))

        [received] = self.upstream.received
        self.assertEqual(host_seen(response.body), f"localhost:{port}")
        self.assertEqual(
            received.all("x-forwarded-host"),
            [f"web.tunnels.test:{self.edge.ports['http']}"],
        )

    @inlineCallbacks
    def test_host_literal(self) -> Steps[None]:
        """
        With C{--host-header example.org} the upstream sees exactly
        C{example.org}.
        """
        arguments = ["--subdomain", "web", "--host-header", "example.org"]
        yield self.start_tunnel(str(self.upstream.port), *arguments)

        response = yield self.curl.fetch(self.edge.url("https", "web.tunnels.test"))

        self.assertEqual(host_seen(response.body), "example.org", response.describe())

    @inlineCallbacks
    def test_forwarded_headers(self) -> Steps[None]:
        """
        A plain HTTP request reaches the upstream with C{X-Forwarded-For}
        naming the client's address, C{X-Forwarded-Proto: http} and
        C{X-Forwarded-Host} naming the public host.
        """
        yield self.start_tunnel(str(self.upstream.port), "--subdomain", "web")

        yield self.curl.fetch(self.edge.url("http", "web.tunnels.test"))

        [received] = self.upstream.received
        self.assertEqual(
            [received.all(f"x-forwarded-{name}") for name in ("for", "proto", "host")],
            [[LOOPBACK], ["http"], [f"web.tunnels.test:{self.edge.ports['http']}"]],
        )

    @inlineCallbacks
    def test_forwarded_headers_from_client(self) -> Steps[None]:
        """
        Over HTTPS, the client's own C{X-Forwarded-For} fields are kept
        (joined into one list) with the client's address appended, while
        the C{X-Forwarded-Proto} and C{X-Forwarded-Host} it sent are
        replaced by the edge's.
        """
        yield self.start_tunnel(str(self.upstream.port), "--subdomain", "web")
        sent = [
            "X-Forwarded-For: 203.0.113.9",
            "X-Forwarded-For: 198.51.100.7",
            "X-Forwarded-Proto: ftp",
            "X-Forwarded-Host: forged.example",
        ]
        options = [f"-H{header}" for header in sent]

        response = yield self.curl.fetch(
            self.edge.url("https", "web.tunnels.test"), *options
        )

        self.assertEqual(response.status, 200, response.describe())
        [received] = self.upstream.received
        self.assertEqual(
            [received.all(f"x-forwarded-{name}") for name in ("for", "proto", "host")],
            [
                [f"203.0.113.9, 198.51.100.7, {LOOPBACK}"],
                ["https"],
                [f"web.tunnels.test:{self.edge.ports['https']}"],
            ],
        )

    @inlineCallbacks
    def test_absolute_target(self) -> Steps[None]:
        """
        A request whose target is an absolute URI is routed by the URI's
        host, and the upstream sees that host, not the C{Host} the client
        sent, in C{Host} and C{X-Forwarded-Host}.
        """
        yield self.start_tunnel(str(self.upstream.port), "--subdomain", "web")
        public = f"web.tunnels.test:{self.edge.ports['http']}"
        connection = yield RawConnections(self).connect(self.edge.ports["http"])

        connection.send(
            f"GET http://{public}/absolute HTTP/1.1\r\nHost: forged.example\r\n"
            "Connection: close\r\n\r\n".encode("ascii")
        )
        received = yield connection.wait_closed()

        self.assertEqual(read_response(received).status, 200, received)
        [request] = self.upstream.received
        self.assertEqual(
            (request.all("host"), request.all("x-forwarded-host")),
            ([public], [public]),
        )
