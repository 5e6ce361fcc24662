"""
End-to-end tests of labeled tunnels behind the edges of C{edge.yml}: the
real C{tunnelkit edge} and C{tunnelkit tunnel --label} agents run as child
processes on loopback, and C{curl} and raw TCP clients reach local services
through an HTTPS edge's routes and a TCP edge.
"""

import json
import os
from typing import Any, Sequence

from twisted.internet.defer import inlineCallbacks
from twisted.internet.ssl import PrivateCertificate
from twisted.python.filepath import FilePath
from twisted.trial.unittest import TestCase

from tests.e2e import (
    TOKEN,
    TUNNELKIT,
    Edge,
    Program,
    Steps,
    free_port,
    http_listener_port,
    make_directory,
    mentions,
    start_agent,
    start_edge,
    start_program,
    write_agent_config,
    write_edge_config,
)
from tests.webclients import Curl, RawConnections
from tests.webservers import RecordingUpstream, listen_recording
from tests.webtunnels import DOMAIN
from tunnelkit.pki import ensure_edge_certificate

HOST = f"app.{DOMAIN}"
"""The HTTPS edge's host name, under the edge's domain so that the
certificate it issues itself covers it."""


def write_labeled_edge(directory: str, edges: str) -> str:
    """
    Write an C{edge.yml} serving HTTP and HTTPS for L{DOMAIN}, whose one
    authtoken may bind any label, with the given C{edges:} section.

    @param edges: the YAML of the section, indented as its entries.
    @return: the file's path.
    """
    path = write_edge_config(
        directory, [("alice", TOKEN, [])], domain=DOMAIN, http=True
    )
    with open(path, "a", encoding="utf-8") as output:
        output.write('    labels: ["*"]\n')
        output.write("edges:\n" + edges)
    return path


class LabeledTestCase(TestCase):
    """
    A test with an edge defined by L{edges}, and agents of labeled
    tunnels started against it.
    """

    timeout = 120
    edges = ""

    @inlineCallbacks
    def setUp(self) -> Steps[None]:
        self.directory = make_directory(self)
        config = write_labeled_edge(self.directory, self.edges)
        self.edge: Edge = yield start_edge(self, self.directory, config)
        self.https_port = yield http_listener_port(self.edge, "https")
        self.curl = Curl(self, self.directory, self.edge.ca_path)
        self.agents = 0

    def url(self, path: str = "/") -> str:
        """
        @return: the public URL of C{path} on the HTTPS edge.
        """
        return f"https://{HOST}:{self.https_port}{path}"

    @inlineCallbacks
    def start_labeled(
        self,
        port: int,
        *labels: str,
        home: str | None = None,
        flags: Sequence[str] = (),
    ) -> Steps[tuple[Program, str]]:
        """
        Start C{tunnelkit tunnel --label ... PORT} in a home of its own
        and wait until it has bound.

        @param home: the agent's directory, to start one again in it.
        @param flags: more flags of the command.
        @return: the agent and its home.
        """
        if home is None:
            self.agents += 1
            home = os.path.join(self.directory, f"agent{self.agents}")
            os.makedirs(home)
        config = write_agent_config(
            home, self.edge.server_addr, self.edge.ca_path, TOKEN, name="agent.yml"
        )
        label_flags = [flag for label in labels for flag in ("--label", label)]
        argv = ["tunnel", *label_flags, *flags, str(port), "--config", config]
        agent = start_agent(self, home, argv)
        yield agent.wait_for_event(msg="started tunnel")
        return agent, home

    @inlineCallbacks
    def statuses(self, count: int, path: str = "/") -> Steps[list[int]]:
        """
        Fetch C{path} C{count} times, each on a new connection.

        @return: the statuses.
        """
        statuses = []
        for _ in range(count):
            fetched = yield self.curl.fetch(self.url(path))
            statuses.append(fetched.status)
        return statuses


class SpreadTests(LabeledTestCase):
    """
    Three agents with the same labels behind one HTTPS edge share its
    requests, and a stopped one drops out and comes back.
    """

    edges = (
        "  web:\n"
        "    type: https\n"
        f"    hostports: ['{HOST}:443']\n"
        "    backend: {type: tunnel_group, labels: {app: web}}\n"
    )

    @inlineCallbacks
    def test_spread_stop_rejoin(self) -> Steps[None]:
        """
        Requests spread over all three tunnels; once the edge has seen the
        first agent's session end, every request still succeeds, on the
        other two; started again, the agent gets requests again.
        """
        upstreams: list[RecordingUpstream] = []
        agents: list[tuple[Program, str]] = []
        for _ in range(3):
            upstream = yield listen_recording(self)
            upstreams.append(upstream)
            agent = yield self.start_labeled(upstream.port, "app=web")
            agents.append(agent)

        spread = yield self.statuses(9)
        counts = [len(u.received) for u in upstreams]

        yield agents[0][0].stop()
        yield self.edge.program.wait_for_event(where=mentions("agent session ended"))
        after_stop = yield self.statuses(6)
        counts_after_stop = [len(u.received) for u in upstreams]

        yield self.start_labeled(upstreams[0].port, "app=web", home=agents[0][1])
        rejoined = yield self.statuses(6)

        self.assertEqual(spread + after_stop + rejoined, [200] * 21)
        self.assertTrue(all(counts), counts)
        self.assertEqual(counts_after_stop[0], counts[0])
        self.assertGreater(len(upstreams[0].received), counts[0])

    @inlineCallbacks
    def test_captured(self) -> Steps[None]:
        """
        A labeled tunnel's requests from an HTTPS edge are captured by its
        agent (inspection is on by default) and read back from its API.
        """
        upstream = yield listen_recording(self)
        agent, _ = yield self.start_labeled(upstream.port, "app=web")
        logged = yield agent.wait_for_event(msg="starting web service", obj="web")

        fetched = yield self.curl.fetch(self.url("/seen?by=inspector"))
        listed = yield self.curl.fetch(f"http://{logged['addr']}/api/requests/http")

        [capture] = json.loads(listed.body)["requests"]
        self.assertEqual(fetched.status, 200)
        self.assertEqual(
            (capture["request"]["uri"], capture["response"]["status_code"]),
            ("/seen?by=inspector", 200),
        )


class RoutesTests(LabeledTestCase):
    """
    An HTTPS edge's routes end in each kind of backend, and a TCP edge
    forwards to a labeled tunnel.
    """

    tcp_port = free_port()
    edges = (
        "  web:\n"
        "    type: https\n"
        f"    hostports: ['{HOST}']\n"
        "    routes:\n"
        "      - match_type: exact_path\n"
        "        match: /hello\n"
        "        backend:\n"
        "          type: http_response\n"
        "          status: 418\n"
        "          headers: {Content-Type: text/plain}\n"
        "          body: short and stout\n"
        "      - match: /nobody\n"
        "        backend: {type: tunnel_group, labels: {app: nobody}}\n"
        "      - match: /failover\n"
        "        backend:\n"
        "          type: failover\n"
        "          backends:\n"
        "            - {type: tunnel_group, labels: {app: nobody}}\n"
        "            - {type: tunnel_group, labels: {app: web}}\n"
        "      - match: /static\n"
        "        backend: {type: static_address, address: 'STATIC'}\n"
        "      - match: /secure-static\n"
        "        backend: {type: static_address, address: 'TLS', tls: true}\n"
        "  secure:\n"
        "    type: tls\n"
        f"    hostports: ['secure.{DOMAIN}']\n"
        "    backend: {type: tunnel_group, labels: {app: secure}}\n"
        "  db:\n"
        "    type: tcp\n"
        f"    hostports: ['tcp.{DOMAIN}:{tcp_port}']\n"
        "    backend: {type: tunnel_group, labels: {app: web}}\n"
    )

    @inlineCallbacks
    def setUp(self) -> Steps[None]:
        self.static: RecordingUpstream = yield listen_recording(self)
        issued = ensure_edge_certificate(
            FilePath(os.path.abspath(self.mktemp())), ["localhost"]
        )
        pem = issued.cert_path.getContent() + issued.key_path.getContent()
        tls = PrivateCertificate.loadPEM(pem).options()
        self.static_tls: RecordingUpstream = yield listen_recording(self, tls)
        self.edges = self.edges.replace(
            "STATIC", f"127.0.0.1:{self.static.port}"
        ).replace("TLS", f"localhost:{self.static_tls.port}")
        yield super().setUp()
        self.upstream: RecordingUpstream = yield listen_recording(self)
        yield self.start_labeled(self.upstream.port, "app=web")

    @inlineCallbacks
    def test_http_response(self) -> Steps[None]:
        """
        An exact path answered by an HTTP response backend gets its status,
        headers and body, and no tunnel sees the request.
        """
        fetched = yield self.curl.fetch(self.url("/hello"))

        self.assertEqual(
            (fetched.status, fetched.header("content-type"), fetched.body),
            (418, "text/plain", b"short and stout"),
        )
        self.assertEqual(self.upstream.received, [])

    @inlineCallbacks
    def test_nobody(self) -> Steps[None]:
        """
        A label set no tunnel has is answered C{503} with a page naming the
        labels and how to start such a tunnel.
        """
        fetched = yield self.curl.fetch(self.url("/nobody/x"))

        self.assertEqual(
            (fetched.status, fetched.header("tunnelkit-error-code")),
            (503, "TK_BACKEND_UNAVAILABLE"),
        )
        self.assertIn(b"tunnelkit tunnel --label app=nobody", fetched.body)

    @inlineCallbacks
    def test_failover(self) -> Steps[None]:
        """
        A failover backend whose first group is empty sends the request to
        the second group's tunnel, with the path and Host the client sent.
        """
        fetched = yield self.curl.fetch(self.url("/failover/a?b=c"))

        [received] = self.upstream.received
        self.assertEqual(
            (fetched.status, received.target, received.header("host")),
            (200, "/failover/a?b=c", f"{HOST}:{self.https_port}"),
        )

    @inlineCallbacks
    def test_static_address(self) -> Steps[None]:
        """
        A static address backend sends the request to its address, with
        the forwarded headers the edge adds.
        """
        fetched = yield self.curl.fetch(self.url("/static/page"))

        [received] = self.static.received
        self.assertEqual(
            (fetched.status, received.target, received.header("x-forwarded-proto")),
            (200, "/static/page", "https"),
        )
        self.assertEqual(self.upstream.received, [])

    @inlineCallbacks
    def test_static_address_tls(self) -> Steps[None]:
        """
        A static address with C{tls: true} is reached over TLS, without
        checking its certificate (from a CA nobody trusts here).
        """
        fetched = yield self.curl.fetch(self.url("/secure-static/x"))

        [received] = self.static_tls.received
        self.assertEqual(
            (fetched.status, received.secure, received.target),
            (200, True, "/secure-static/x"),
        )

    @inlineCallbacks
    def test_routes_on_one_connection(self) -> Steps[None]:
        """
        Requests for two routes on one kept-alive connection each reach
        their own target, the second once the first is answered.
        """
        ran = yield self.curl.run(
            ["-o", "/dev/null", "-o", "/dev/null"]
            + ["-w", "%{http_code} %{num_connects}\\n"]
            + [self.url("/failover/one"), self.url("/static/two")]
        )

        self.assertEqual(ran.text("out").split(), ["200", "1", "200", "0"])
        self.assertEqual(
            (
                [r.target for r in self.upstream.received],
                [r.target for r in self.static.received],
            ),
            (["/failover/one"], ["/static/two"]),
        )

    @inlineCallbacks
    def test_default_route(self) -> Steps[None]:
        """
        A path no route matches goes to the edge's own group, C{edge=web},
        which no tunnel joined here.
        """
        fetched = yield self.curl.fetch(self.url("/elsewhere"))

        self.assertEqual(fetched.status, 503)
        self.assertIn(b"edge=web", fetched.body)

    @inlineCallbacks
    def test_tcp_edge(self) -> Steps[None]:
        """
        A TCP edge's port carries raw bytes to a labeled tunnel: an HTTP
        request written on it reaches the tunnel's service as it was sent.
        """
        connections = RawConnections(self)
        connection: Any = yield connections.connect(self.tcp_port)

        connection.send(b"GET /raw HTTP/1.1\r\nHost: raw\r\nConnection: close\r\n\r\n")
        answer = yield connection.wait_closed()

        [received] = self.upstream.received
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer[:80])
        self.assertEqual((received.target, received.header("host")), ("/raw", "raw"))
        self.assertEqual(json.loads(answer.partition(b"\r\n\r\n")[2])["target"], "/raw")

    @inlineCallbacks
    def test_tls_edge(self) -> Steps[None]:
        """
        A TLS edge's host name on the HTTPS port is passed through, not
        terminated: the client's TLS reaches the labeled tunnel's service,
        whose own certificate the client checks.
        """
        issued = ensure_edge_certificate(
            FilePath(os.path.join(self.directory, "service-tls")),
            [f"secure.{DOMAIN}"],
        )
        pem = issued.cert_path.getContent() + issued.key_path.getContent()
        service = yield listen_recording(
            self, PrivateCertificate.loadPEM(pem).options()
        )
        yield self.start_labeled(service.port, "app=secure")
        curl = Curl(self, self.directory, issued.ca_path.path)

        fetched = yield curl.fetch(f"https://secure.{DOMAIN}:{self.https_port}/tls")

        [received] = service.received
        self.assertEqual(
            (fetched.status, received.secure, received.target), (200, True, "/tls")
        )

    @inlineCallbacks
    def test_tls_edge_terminated_at_agent(self) -> Steps[None]:
        """
        A labeled tunnel started with C{--crt} and C{--key} ends the TLS of
        a TLS edge's connections itself: the client checks the agent's
        certificate, and the service gets the request in plaintext.
        """
        issued = ensure_edge_certificate(
            FilePath(os.path.join(self.directory, "agent-tls")),
            [f"secure.{DOMAIN}"],
        )
        service = yield listen_recording(self)
        crt, key = issued.cert_path.path, issued.key_path.path
        yield self.start_labeled(
            service.port, "app=secure", flags=["--crt", crt, "--key", key]
        )
        curl = Curl(self, self.directory, issued.ca_path.path)

        fetched = yield curl.fetch(f"https://secure.{DOMAIN}:{self.https_port}/end")

        [received] = service.received
        self.assertEqual(
            (fetched.status, received.secure, received.target), (200, False, "/end")
        )


class ReloadTests(TestCase):
    """
    C{SIGHUP} makes a running edge load its edge definitions again.
    """

    timeout = 120

    @inlineCallbacks
    def test_sighup(self) -> Steps[None]:
        """
        A name nothing serves is refused at the TLS handshake; after the
        file gains an edge for it and C{twistd -n tunnel-edge} gets
        C{SIGHUP}, the new edge answers at once; a file that no longer
        loads leaves the edges served as they were.
        """
        directory = make_directory(self)
        config = write_labeled_edge(directory, "")
        edge = yield start_edge(self, directory, config, twistd=True)
        https_port = yield http_listener_port(edge, "https")
        curl = Curl(self, directory, edge.ca_path)
        url = f"https://{HOST}:{https_port}/"
        before = yield curl.fetch(url)
        with open(config, "a", encoding="utf-8") as output:
            output.write(
                "  web:\n"
                "    type: https\n"
                f"    hostports: ['{HOST}']\n"
                "    backend: {type: http_response, status: 200, body: reloaded}\n"
            )

        edge.program.send_signal("HUP")
        yield edge.program.wait_for_event(where=mentions("loaded 1 edge definitions"))
        after = yield curl.fetch(url)
        with open(config, "a", encoding="utf-8") as output:
            output.write("    routes: [{match: /, backend: {type: nope}}]\n")
        edge.program.send_signal("HUP")
        yield edge.program.wait_for_event(where=mentions("was not reloaded"))
        kept = yield curl.fetch(url)

        self.assertIn("unrecognized name", before.errors)
        self.assertEqual((after.status, after.body), (200, b"reloaded"))
        self.assertEqual((kept.status, kept.body), (200, b"reloaded"))


class EmbeddedEdgeTests(TestCase):
    """
    C{tunnelkit tunnel --label} with no C{server_addr}, where only the edge
    inside the agent could serve it.
    """

    @inlineCallbacks
    def test_needs_edge(self) -> Steps[None]:
        """
        The command exits with status 1 and C{TK_LABELS_NEED_EDGE} saying to
        set C{server_addr}, not with an error about an C{edge.yml} the user
        does not have.
        """
        home = make_directory(self)
        argv = TUNNELKIT + ["tunnel", "--label", "app=web", "1"]
        program = start_program(self, "tunnelkit tunnel", argv, home=home)

        code = yield program.wait_for_exit()

        self.assertEqual(code, 1, program.describe())
        self.assertIn("ERROR: TK_LABELS_NEED_EDGE:", program.text("err"))
        self.assertIn("set server_addr", program.text("err"))
        self.assertNotIn("TK_LABELS_NOT_ALLOWED", program.text())
