"""
Tests for the agent's REST API through C{treq.testing.StubTreq}: tunnels,
status, Prometheus metrics, errors, and the guard every request passes.
"""

from dataclasses import replace

from twisted.trial.unittest import SynchronousTestCase

from tunnelkit.config import AgentConfig
from tunnelkit.control.messages import Unbind
from tunnelkit.errors import TunnelkitError
from tunnelkit.web.guard import HostAllowList, host_without_port
from tests.webapi import TOKEN, ApiTestCase

METRIC_KEYS = ["count", "p50", "p90", "p95", "p99", "rate1", "rate15", "rate5"]


class TunnelListTests(ApiTestCase):
    """
    C{GET /api/tunnels} and C{GET /api/tunnels/:name}.
    """

    def test_list(self) -> None:
        """
        The list has ngrok's shape: an HTTP tunnel with two URLs is two
        entries, C{NAME} and C{NAME (http)}, then the TCP tunnel.
        """
        status, _, body = self.call("GET", "/api/tunnels")

        self.assertEqual(status, 200)
        self.assertEqual(body["uri"], "/api/tunnels")
        self.assertEqual(
            [(t["name"], t["public_url"], t["proto"]) for t in body["tunnels"]],
            [
                ("web", "https://web.tunnels.test", "https"),
                ("web (http)", "http://web.tunnels.test", "http"),
                ("ssh", "tcp://tunnels.test:20001", "tcp"),
            ],
        )

    def test_entry_shape(self) -> None:
        """
        Each entry has its path, its config (the local address as a URL,
        and whether it is inspected) and its metrics.
        """
        _, _, body = self.call("GET", "/api/tunnels")

        web, twin, ssh = body["tunnels"]
        self.assertEqual(web["uri"], "/api/tunnels/web")
        self.assertEqual(twin["uri"], "/api/tunnels/web%20%28http%29")
        self.assertEqual(
            web["config"], {"addr": "http://localhost:8080", "inspect": True}
        )
        self.assertEqual(ssh["config"], {"addr": "localhost:22", "inspect": False})
        self.assertEqual(sorted(web["metrics"]["http"]), METRIC_KEYS)
        self.assertEqual(
            sorted(web["metrics"]["conns"]), sorted(METRIC_KEYS + ["gauge"])
        )

    def test_metrics_counted(self) -> None:
        """
        The metrics are the tunnel's own.
        """
        tunnel = self.agent.tunnels["web"]
        tunnel.metrics.connection_opened()
        tunnel.metrics.http_exchange(0.002)

        _, _, body = self.call("GET", "/api/tunnels/web")

        self.assertEqual(body["metrics"]["conns"]["gauge"], 1)
        self.assertEqual(body["metrics"]["http"]["count"], 1)
        self.assertAlmostEqual(body["metrics"]["http"]["p50"], 2_000_000, delta=1)

    def test_one(self) -> None:
        """
        One tunnel is found by either of its names.
        """
        for path, url in (
            ("/api/tunnels/web", "https://web.tunnels.test"),
            ("/api/tunnels/web%20%28http%29", "http://web.tunnels.test"),
        ):
            status, _, body = self.call("GET", path)
            self.assertEqual((status, body["public_url"]), (200, url))

    def test_unknown(self) -> None:
        """
        An unknown tunnel is C{404} in ngrok's error shape.
        """
        self.assertApiError(self.call("GET", "/api/tunnels/nope"), 404, 101, "nope")

    def test_unbound(self) -> None:
        """
        A tunnel not bound yet is listed with an empty URL and its own
        protocol.
        """
        self.agent.tunnels["ssh"].public_url = None

        _, _, body = self.call("GET", "/api/tunnels/ssh")

        self.assertEqual((body["public_url"], body["proto"]), ("", "tcp"))

    def test_no_agent_yet(self) -> None:
        """
        Before the agent service exists, there are no tunnels.
        """
        self.app.agent = None

        _, _, body = self.call("GET", "/api/tunnels")

        self.assertEqual(body["tunnels"], [])


class TunnelStartTests(ApiTestCase):
    """
    C{POST /api/tunnels}.
    """

    def test_started(self) -> None:
        """
        A tunnel defined with the file's keys and a name starts: C{201}
        with the tunnel, which the agent now runs.
        """
        status, _, body = self.call(
            "POST", "/api/tunnels", {"name": "api", "proto": "http", "addr": "9000"}
        )

        self.assertEqual(status, 201)
        self.assertEqual(body["name"], "api")
        self.assertEqual(body["public_url"], "https://api.tunnels.test")
        self.assertEqual(body["config"]["addr"], "http://localhost:9000")
        self.assertIn("api", self.agent.tunnels)

    def test_unknown_keys(self) -> None:
        """
        Unknown keys are refused with C{400}, code 102, naming them.
        """
        answer = self.call(
            "POST",
            "/api/tunnels",
            {"name": "x", "proto": "http", "addr": 80, "options": {}, "zone": 1},
        )

        self.assertApiError(answer, 400, 102, "'options'", "'zone'")
        self.assertNotIn("x", self.agent.tunnels)

    def test_bad_value(self) -> None:
        """
        A bad value is refused with the config file's words, naming the key.
        """
        answer = self.call(
            "POST", "/api/tunnels", {"name": "x", "proto": "htp", "addr": 80}
        )

        self.assertApiError(answer, 400, 102, "proto", "'htp'")

    def test_no_name(self) -> None:
        """
        A tunnel needs a name.
        """
        answer = self.call("POST", "/api/tunnels", {"proto": "http", "addr": 80})

        self.assertApiError(answer, 400, 102, "name")

    def test_exists(self) -> None:
        """
        A name already running is refused as ngrok does, with code 102, and
        C{details.err} starts with tunnelkit's code, C{TK_TUNNEL_EXISTS}.
        """
        answer = self.call(
            "POST", "/api/tunnels", {"name": "web", "proto": "http", "addr": 80}
        )

        self.assertApiError(answer, 400, 102, 'tunnel "web" already exists')
        self.assertTrue(answer[2]["details"]["err"].startswith("TK_TUNNEL_EXISTS: "))

    def test_not_ready(self) -> None:
        """
        Without a session with the edge, C{503} with code 104, and
        C{details.err} starts with C{TK_SESSION_NOT_READY}.
        """
        self.agent.session = None

        answer = self.call(
            "POST", "/api/tunnels", {"name": "x", "proto": "http", "addr": 80}
        )

        self.assertApiError(answer, 503, 104)
        self.assertTrue(
            answer[2]["details"]["err"].startswith("TK_SESSION_NOT_READY: ")
        )

    def test_refused_by_edge(self) -> None:
        """
        The edge's refusal is C{502} with code 103 and the edge's words.
        """
        self.session.refusal = TunnelkitError(
            "TK_HOSTNAME_TAKEN", "x.example is reserved by another account"
        )

        answer = self.call(
            "POST", "/api/tunnels", {"name": "x", "proto": "http", "addr": 80}
        )

        self.assertApiError(answer, 502, 103, "TK_HOSTNAME_TAKEN", "reserved")

    def test_not_json(self) -> None:
        """
        A body that is not JSON, or not an object, is C{400} with code 100.
        """
        json_type = {"Content-Type": ["application/json"]}
        for body in (b"{nope", b"[1, 2]", b""):
            answer = self.call("POST", "/api/tunnels", body, json_type)
            self.assertApiError(answer, 400, 100)


class TunnelStopTests(ApiTestCase):
    """
    C{DELETE /api/tunnels/:name}.
    """

    def test_stopped(self) -> None:
        """
        Stopping a tunnel answers C{204}, unbinds it on the edge and
        forgets it.
        """
        status, _, body = self.call("DELETE", "/api/tunnels/ssh")

        self.assertEqual((status, body), (204, b""))
        self.assertNotIn("ssh", self.agent.tunnels)
        self.assertEqual(self.session.requests, [Unbind(id="ssh")])

    def test_twin_name(self) -> None:
        """
        C{NAME (http)} stops the tunnel it is a URL of.
        """
        status, _, _ = self.call("DELETE", "/api/tunnels/web%20%28http%29")

        self.assertEqual(status, 204)
        self.assertNotIn("web", self.agent.tunnels)

    def test_unknown(self) -> None:
        """
        Stopping an unknown tunnel is C{404}.
        """
        self.assertApiError(self.call("DELETE", "/api/tunnels/nope"), 404, 101)


class StatusTests(ApiTestCase):
    """
    C{GET /api/status}.
    """

    def test_shape(self) -> None:
        """
        The status says the session's state, the version, the latency in
        milliseconds, the web address and the metrics of all tunnels.
        """
        self.agent.tunnels["web"].metrics.http_exchange(0.1)

        status, _, body = self.call("GET", "/api/status")

        self.assertEqual(status, 200)
        self.assertEqual(
            (body["status"], body["uri"], body["web_addr"]),
            ("online", "/api/status", "127.0.0.1:4040"),
        )
        self.assertEqual(body["session"], {"legs": [{"region": "", "latency": "12ms"}]})
        self.assertEqual(body["metrics"]["http"]["count"], 1)
        self.assertIn("agent_version", body)

    def test_config(self) -> None:
        """
        The global settings are a flat mapping, without the tunnels.
        """
        _, _, body = self.call("GET", "/api/status")

        config = body["config"]
        self.assertEqual(config["server_addr"], "edge.example.com:4443")
        self.assertEqual(config["inspect_db_size"], 0)
        self.assertEqual(config["heartbeat_interval"], 10.0)
        self.assertNotIn("tunnels", config)

    def test_secrets_by_prefix(self) -> None:
        """
        The authtoken in use is shown by its first characters only, and no
        secret appears anywhere in the status.
        """
        status, _, body = self.call("GET", "/api/status")
        _, _, raw = self.call("GET", "/api/status", headers={"Accept": ["*/*"]})

        self.assertEqual(body["config"]["authtoken_prefix"], TOKEN[:4])
        self.assertNotIn("authtoken", body["config"])
        text = str(body)
        self.assertNotIn(TOKEN, text)
        self.assertNotIn("from-the-file-0123", text)

    def test_reconnecting(self) -> None:
        """
        Without a session the state is not online, and no latency is
        shown.
        """
        self.agent.session = None
        self.agent.session_id = "s1"

        _, _, body = self.call("GET", "/api/status")

        self.assertEqual(body["status"], "reconnecting")
        self.assertEqual(body["session"]["legs"][0]["latency"], "")


class PrometheusTests(ApiTestCase):
    """
    C{GET /metrics}.
    """

    def test_text(self) -> None:
        """
        The metrics are Prometheus text: per tunnel counters and gauges,
        and the capture store's size.
        """
        self.agent.tunnels["web"].metrics.connection_opened()

        status, headers, body = self.call("GET", "/metrics")

        self.assertEqual(status, 200)
        self.assertTrue(
            headers.getRawHeaders("content-type")[0].startswith(
                "text/plain; version=0.0.4"
            )
        )
        lines = body.decode().splitlines()
        self.assertIn('tunnelkit_tunnel_connections_total{tunnel="web"} 1', lines)
        self.assertIn('tunnelkit_tunnel_connections_open{tunnel="ssh"} 0', lines)
        self.assertIn("# TYPE tunnelkit_capture_store_bytes gauge", lines)
        self.assertIn("tunnelkit_capture_store_capacity_bytes 52428800", lines)
        self.assertIn("tunnelkit_session_online 1", lines)

    def test_label_escaped(self) -> None:
        """
        Quotes and backslashes in tunnel names are escaped.
        """
        from tunnelkit.web.prometheus import label_value

        self.assertEqual(label_value('a"b\\c\nd'), 'a\\"b\\\\c\\nd')


class ErrorShapeTests(ApiTestCase):
    """
    Refusals of the routes themselves.
    """

    def test_unknown_api_path(self) -> None:
        """
        An unknown path under C{/api} is C{404} in the API's shape.
        """
        self.assertApiError(self.call("GET", "/api/nothing/here"), 404, 101)

    def test_method_not_allowed(self) -> None:
        """
        A method a resource does not take is C{405} in the API's shape.
        """
        answer = self.call("PUT", "/api/tunnels", {"name": "x"})

        self.assertApiError(answer, 405, 105, "PUT")
        self.assertIn("GET", answer[1].getRawHeaders("allow")[0])

    def test_root(self) -> None:
        """
        C{/api} lists the resources.
        """
        status, _, body = self.call("GET", "/api")

        self.assertEqual((status, body["tunnels"]), (200, "/api/tunnels"))

    def test_pages(self) -> None:
        """
        Every other path is the pages': C{/} redirects to the inspector.
        """
        status, headers, _ = self.call("GET", "/")
        page, _, _ = self.call("GET", "/inspect/http")

        self.assertEqual(status, 302)
        self.assertEqual(headers.getRawHeaders("location"), ["/inspect/http"])
        self.assertEqual(page, 200)


class GuardTests(ApiTestCase):
    """
    The Host and content-type checks every request passes.
    """

    config = AgentConfig(
        web_allow_hosts=("inspect.example", ".corp.test", "10.1.0.0/16")
    )

    def test_foreign_host(self) -> None:
        """
        A Host that is neither loopback nor allowed is refused with C{403},
        for the API and the pages alike.
        """
        for path in ("/api/tunnels", "/inspect/http", "/metrics"):
            answer = self.call("GET", path, base="http://evil.example:4040")
            self.assertApiError(answer, 403, 107, "evil.example")

    def test_loopback_hosts(self) -> None:
        """
        C{localhost}, C{127.0.0.1} and C{[::1]} are served, with or without
        a port.
        """
        for host in ("localhost", "127.0.0.1:4040", "[::1]:4040", "[::1]"):
            status, _, _ = self.call(
                "GET", "/api/tunnels", base="http://localhost", headers={"Host": [host]}
            )
            self.assertEqual(status, 200, host)

    def test_allowed_hosts(self) -> None:
        """
        Hosts allowed by C{web_allow_hosts} are served: an exact name, a
        name under a suffix, an address in a network.
        """
        for host in ("inspect.example:4040", "a.corp.test", "corp.test", "10.1.2.3"):
            status, _, _ = self.call(
                "GET", "/api/tunnels", base="http://localhost", headers={"Host": [host]}
            )
            self.assertEqual(status, 200, host)

    def test_rebinding_name_refused(self) -> None:
        """
        Names that only look like allowed ones are refused.
        """
        for host in (
            "inspect.example.evil",
            "evilcorp.test",
            "10.2.0.1",
            "localhost.evil",
        ):
            answer = self.call(
                "GET", "/api/tunnels", base="http://localhost", headers={"Host": [host]}
            )
            self.assertEqual(answer[0], 403, host)

    def test_form_post_refused(self) -> None:
        """
        A form post is refused with C{415}, and changes nothing.
        """
        form = b"name=x&proto=http&addr=80"
        multipart = (
            b'--x\r\nContent-Disposition: form-data; name="name"\r\n\r\nx\r\n--x--\r\n'
        )
        for kind, body in (
            ("application/x-www-form-urlencoded", form),
            ("multipart/form-data; boundary=x", multipart),
            ("text/plain", b'{"name": "x", "proto": "http", "addr": 80}'),
        ):
            answer = self.call("POST", "/api/tunnels", body, {"Content-Type": [kind]})
            self.assertApiError(answer, 415, 106, kind.split(";")[0])
        self.assertNotIn("x", self.agent.tunnels)

    def test_post_without_type_refused(self) -> None:
        """
        A post without a content type is refused.
        """
        answer = self.call("POST", "/api/requests/http", b'{"id": "x"}')

        self.assertApiError(answer, 415, 106)

    def test_delete_with_form_body_refused(self) -> None:
        """
        A C{DELETE} with a body must be JSON too; without a body it needs
        no content type.
        """
        refused = self.call(
            "DELETE",
            "/api/tunnels/ssh",
            b"a=1",
            {"Content-Type": ["application/x-www-form-urlencoded"]},
        )
        self.assertApiError(refused, 415, 106)
        self.assertIn("ssh", self.agent.tunnels)

        status, _, _ = self.call("DELETE", "/api/tunnels/ssh")
        self.assertEqual(status, 204)

    def test_json_with_charset(self) -> None:
        """
        C{application/json} with parameters is JSON.
        """
        status, _, _ = self.call(
            "POST",
            "/api/tunnels",
            b'{"name": "x", "proto": "http", "addr": 80}',
            {"Content-Type": ["application/json; charset=utf-8"]},
        )

        self.assertEqual(status, 201)


class HostAllowListTests(SynchronousTestCase):
    """
    L{HostAllowList} and L{host_without_port}.
    """

    def test_port_stripped(self) -> None:
        """
        The port, an IPv6 address's brackets and a final dot are left out,
        and case does not matter.
        """
        self.assertEqual(host_without_port("Example.COM:80"), "example.com")
        self.assertEqual(host_without_port("[::1]:4040"), "::1")
        self.assertEqual(host_without_port("localhost."), "localhost")
        self.assertEqual(host_without_port("::1"), "::1")

    def test_defaults(self) -> None:
        """
        Loopback addresses and C{localhost} are allowed; no other name, nor
        a request without a Host.
        """
        hosts = HostAllowList()

        for allowed in ("localhost", "127.0.0.1", "127.1.2.3:80", "[::1]"):
            self.assertTrue(hosts.allows(allowed), allowed)
        for refused in ("example.com", "192.168.1.1", None, ""):
            self.assertFalse(hosts.allows(refused), refused)

    def test_entries(self) -> None:
        """
        Entries are IP addresses, networks, exact names and suffixes.
        """
        hosts = HostAllowList(["192.0.2.5", "2001:db8::/32", "Box.Lan", ".dev.test"])

        for allowed in ("192.0.2.5", "[2001:db8::7]:4040", "box.lan", "x.y.dev.test"):
            self.assertTrue(hosts.allows(allowed), allowed)
        for refused in ("192.0.2.6", "box.lan.evil", "xdev.test"):
            self.assertFalse(hosts.allows(refused), refused)


class InspectionOffTests(ApiTestCase):
    """
    The API of an agent with C{inspect_db_size: -1}.
    """

    config = replace(AgentConfig(), inspect_db_size=-1)

    def test_tunnels_not_inspected(self) -> None:
        """
        No tunnel is shown as inspected.
        """
        _, _, body = self.call("GET", "/api/tunnels")

        self.assertEqual({t["config"]["inspect"] for t in body["tunnels"]}, {False})

    def test_no_requests(self) -> None:
        """
        The list of requests is empty, and the store's metrics are left
        out.
        """
        _, _, body = self.call("GET", "/api/requests/http")
        _, _, text = self.call("GET", "/metrics")

        self.assertEqual(body["requests"], [])
        self.assertNotIn(b"capture_store", text)
