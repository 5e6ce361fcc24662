"""
End-to-end tests of the agent's web API over real sockets: a real edge and
C{tunnelkit http} agent as child processes on loopback, C{curl} sending
requests through the tunnel, and the API read and driven over HTTP from
the test. Replays are checked where they land, at the upstream.

The last test sends 500 MB of bodies through a tunnel with a small capture
store, and reads from the agent's metrics that the store never held more
than its capacity.
"""

import base64
import json
import os
from typing import Any, Callable
from urllib.parse import urlsplit

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.task import LoopingCall, deferLater
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse
from treq.client import HTTPClient

from tests.e2e import WAIT, Program, Steps, bounded
from tests.test_e2e_http_bulk import MIB, MemoryWatch
from tests.webservers import (
    BulkUpstream,
    RecordingUpstream,
    listen_bulk,
    listen_recording,
)
from tests.webtunnels import HttpTunnelTestCase, tunnel_urls

POLL_INTERVAL = 0.05
"""Seconds between two looks at something a test waits for."""

BOUND_CAPACITY = 4 * MIB
"""The capture store of the 500 MB test: a small part of what passes."""

BOUND_BODY_CAP = 256 * 1024
BOUND_BODY = MIB
BOUND_EXCHANGES = 500
"""500 exchanges of a 1 MiB body each, half uploads and half downloads, by
two curl processes at once."""

BOUND_SECONDS = 100.0
"""The deadline of the 500 MB transfer: generous for two busy CPUs; it
usually takes a small part of that."""


def wait_until(
    condition: Callable[[], bool], what: str, seconds: float = WAIT
) -> Deferred:
    """
    Look at C{condition} every L{POLL_INTERVAL} seconds until it holds.

    @return: a Deferred that fires once it does, or fails after
        C{seconds}.
    """
    done: Deferred[None] = Deferred()

    def look() -> None:
        if condition() and not done.called:
            loop.stop()
            done.callback(None)

    loop = LoopingCall(look)
    loop.start(POLL_INTERVAL)

    def stop(result: Any) -> Any:
        if loop.running:
            loop.stop()
        return result

    return bounded(done, seconds, what).addBoth(stop)


class ApiClient:
    """
    Calls to one agent's API over a real socket, a new connection each.

    @ivar base: the API's base URL, such as C{http://127.0.0.1:40123}.
    """

    def __init__(self, base: str) -> None:
        self.base = base
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.http = HTTPClient(Agent(reactor, pool=pool))

    @inlineCallbacks
    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, list[str]] | None = None,
    ) -> Steps[tuple[int, Any]]:
        """
        Send one request and read the answer.

        @return: a Deferred firing with the status and the body, parsed
            when it is JSON.
        """
        sent = Headers(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            sent.setRawHeaders("content-type", ["application/json"])
        answering = self.http.request(method, self.base + path, data=data, headers=sent)
        response: IResponse = yield bounded(answering, WAIT, f"{method} {path}")
        content: bytes = yield bounded(readBody(response), WAIT, f"the body of {path}")
        kind = (response.headers.getRawHeaders("content-type") or [""])[0]
        if kind.startswith("application/json") and content:
            return response.code, json.loads(content)
        return response.code, content


def web_address(agent: Program) -> Deferred:
    """
    @return: a Deferred firing with the base URL of the agent's API, read
        from its C{starting web service} log line.
    """
    logged = agent.wait_for_event(msg="starting web service", obj="web")
    return logged.addCallback(lambda event: f"http://{event['addr']}")


class CaptureApiTests(HttpTunnelTestCase):
    """
    Requests through a tunnel, read back and replayed through the API.
    """

    @inlineCallbacks
    def arrange(self) -> Steps[None]:
        self.upstream: RecordingUpstream = yield listen_recording(self)
        yield self.start_edge()

    @inlineCallbacks
    def start_inspected(self, *arguments: str) -> Steps[tuple[list[str], ApiClient]]:
        """
        Start C{tunnelkit http UPSTREAM ARGUMENTS}.

        @return: a Deferred firing with its URLs and a client of its API.
        """
        agent = self.start_agent(str(self.upstream.port), *arguments)
        urls = yield tunnel_urls(agent)
        base = yield web_address(agent)
        return urls, ApiClient(base)

    @inlineCallbacks
    def captures(self, api: ApiClient, count: int) -> Steps[list[dict[str, Any]]]:
        """
        Wait until C{count} captures have their responses.

        @return: a Deferred firing with them, newest first.
        """
        seen: list[dict[str, Any]] = []

        @inlineCallbacks
        def read() -> Steps[None]:
            status, body = yield api.call("GET", "/api/requests/http")
            seen[:] = [r for r in body["requests"] if r["response"] is not None]

        for _ in range(int(WAIT / POLL_INTERVAL)):
            yield read()
            if len(seen) >= count:
                return seen
            yield _sleep(POLL_INTERVAL)
        raise AssertionError(f"waited for {count} captures, saw {seen}")

    @inlineCallbacks
    def test_read_back(self) -> Steps[None]:
        """
        A request sent through the tunnel by curl is captured: the API
        shows it with its body, the upstream's response, the tunnel by the
        name of the URL used, and the client's address.
        """
        urls, api = yield self.start_inspected()
        fetched = yield self.curl.fetch(urls[1] + "/hello?x=1", "--data-binary", "ping")
        self.assertEqual(fetched.status, 200, fetched.describe())

        [capture] = yield self.captures(api, 1)

        request = capture["request"]
        self.assertEqual((request["method"], request["uri"]), ("POST", "/hello?x=1"))
        self.assertEqual(_decoded(request["body"]), b"ping")
        self.assertEqual(capture["tunnel_name"], "command_line (http)")
        self.assertEqual(capture["remote_addr"], "127.0.0.1")
        self.assertEqual(capture["response"]["status_code"], 200)
        self.assertEqual(_decoded(capture["response"]["body"]), fetched.body)
        status, tunnels = yield api.call("GET", "/api/tunnels")
        self.assertEqual(
            [t["name"] for t in tunnels["tunnels"]],
            ["command_line", "command_line (http)"],
        )

    @inlineCallbacks
    def test_replay(self) -> Steps[None]:
        """
        A replay reaches the upstream with the request as it was, and is
        captured naming the capture it replays.
        """
        urls, api = yield self.start_inspected()
        yield self.curl.fetch(urls[0] + "/order", "--data-binary", "qty=1")
        [capture] = yield self.captures(api, 1)

        status, _ = yield api.call("POST", "/api/requests/http", {"id": capture["id"]})
        yield wait_until(lambda: len(self.upstream.received) == 2, "the replay")

        self.assertEqual(status, 204)
        first, replayed = self.upstream.received
        self.assertEqual(
            (replayed.method, replayed.target, replayed.body, replayed.header("host")),
            (first.method, first.target, first.body, first.header("host")),
        )
        newest, _ = yield self.captures(api, 2)
        self.assertEqual(newest["replay_of"], capture["id"])

    @inlineCallbacks
    def test_replay_with_changes(self) -> Steps[None]:
        """
        A replay with changes reaches the upstream changed: method, path,
        headers and body, with its length counted anew.
        """
        urls, api = yield self.start_inspected()
        yield self.curl.fetch(urls[0] + "/order", "--data-binary", "qty=1")
        [capture] = yield self.captures(api, 1)

        status, _ = yield api.call(
            "POST",
            f"/api/requests/http/{capture['id']}/replay",
            {
                "method": "PUT",
                "path": "/order/7?dry=1",
                "headers": {"Host": ["changed.test"], "X-Replayed": ["yes"]},
                "body": '{"qty": 2}',
            },
        )
        yield wait_until(lambda: len(self.upstream.received) == 2, "the replay")

        self.assertEqual(status, 204)
        replayed = self.upstream.received[1]
        self.assertEqual(
            (replayed.method, replayed.target, replayed.body),
            ("PUT", "/order/7?dry=1", b'{"qty": 2}'),
        )
        self.assertEqual(
            (replayed.header("host"), replayed.header("x-replayed")),
            ("changed.test", "yes"),
        )
        self.assertEqual(replayed.header("content-length"), "10")

    @inlineCallbacks
    def test_tunnels_at_run_time(self) -> Steps[None]:
        """
        A tunnel started through the API serves requests at the URL the
        API gives; once deleted, its URLs are served no more (the edge
        answers its C{http} URL with C{404}).
        """
        urls, api = yield self.start_inspected()

        status, started = yield api.call(
            "POST",
            "/api/tunnels",
            {
                "name": "extra",
                "proto": "http",
                "addr": str(self.upstream.port),
                "subdomain": "extra",
            },
        )
        self.assertEqual(status, 201, started)
        fetched = yield self.curl.fetch(started["public_url"] + "/via-api")
        self.assertEqual(fetched.status, 200, fetched.describe())
        self.assertEqual(self.upstream.received[-1].target, "/via-api")

        _, plain = yield api.call("GET", "/api/tunnels/extra%20%28http%29")
        status, _ = yield api.call("DELETE", "/api/tunnels/extra")
        gone = yield self.curl.fetch(plain["public_url"] + "/after")
        _, listed = yield api.call("GET", "/api/tunnels")

        self.assertEqual(status, 204)
        self.assertEqual(gone.status, 404, gone.describe())
        self.assertNotIn("extra", [t["name"] for t in listed["tunnels"]])

    @inlineCallbacks
    def test_inspect_off(self) -> Steps[None]:
        """
        With C{--inspect=false} nothing is captured, and the tunnel says so.
        """
        urls, api = yield self.start_inspected("--inspect", "false")

        fetched = yield self.curl.fetch(urls[0] + "/quiet")
        _, listed = yield api.call("GET", "/api/requests/http")
        _, tunnels = yield api.call("GET", "/api/tunnels")

        self.assertEqual(fetched.status, 200)
        self.assertEqual(listed["requests"], [])
        self.assertEqual({t["config"]["inspect"] for t in tunnels["tunnels"]}, {False})

    @inlineCallbacks
    def test_foreign_host(self) -> Steps[None]:
        """
        Over a real socket too, a request whose Host is not loopback is
        refused.
        """
        urls, api = yield self.start_inspected()

        status, body = yield api.call(
            "GET", "/api/tunnels", headers={"Host": ["rebound.example"]}
        )

        self.assertEqual((status, body["error_code"]), (403, 107))


class StoreBoundTests(HttpTunnelTestCase):
    """
    500 MB of bodies through a tunnel whose capture store holds 4 MiB.
    """

    timeout = int(BOUND_SECONDS) + 60

    @inlineCallbacks
    def arrange(self) -> Steps[None]:
        self.upstream: BulkUpstream = yield listen_bulk(self)
        yield self.start_edge()
        config = os.path.join(self.directory, "bound.yml")
        with open(config, "w", encoding="utf-8") as limits:
            limits.write(
                f"inspect_db_size: {BOUND_CAPACITY}\n"
                f"inspect_body_size: {BOUND_BODY_CAP}\n"
            )
        self.agent = self.start_agent(
            str(self.upstream.port), "--subdomain", "bound", "--config", config
        )
        urls = yield tunnel_urls(self.agent)
        self.url = urls[1]
        base = yield web_address(self.agent)
        self.api = ApiClient(base)

    def curl_configs(self) -> tuple[str, str]:
        """
        Write the curl configs of L{BOUND_EXCHANGES} transfers of
        L{BOUND_BODY} bytes, half of them uploads (of a file written here)
        and half downloads.

        @return: the paths of the uploads' config and the downloads'.
        """
        body = os.path.join(self.directory, "body.bin")
        with open(body, "wb") as output:
            output.write(os.urandom(BOUND_BODY))
        uploads = ['header = "Expect:"']
        downloads = []
        for number in range(BOUND_EXCHANGES // 2):
            uploads += [
                f'url = "{self.url}/upload/{number}"',
                f'upload-file = "{body}"',
                'output = "/dev/null"',
            ]
            downloads += [
                f'url = "{self.url}/bytes/{BOUND_BODY}"',
                'output = "/dev/null"',
            ]
        paths = []
        for name, lines in (("uploads", uploads), ("downloads", downloads)):
            paths.append(os.path.join(self.directory, f"{name}.curl"))
            with open(paths[-1], "w", encoding="utf-8") as config:
                config.write("\n".join(lines) + "\n")
        return paths[0], paths[1]

    @inlineCallbacks
    def store_metrics(self) -> Steps[dict[str, float]]:
        """
        @return: a Deferred firing with the capture store's Prometheus
            samples, by name.
        """
        status, text = yield self.api.call("GET", "/metrics")
        samples = {}
        for line in text.decode().splitlines():
            if line.startswith("tunnelkit_capture"):
                name, _, value = line.partition(" ")
                samples[name] = float(value)
        return samples

    @inlineCallbacks
    def test_bound_kept(self) -> Steps[None]:
        """
        While 500 MB of request and response bodies pass, the store never
        holds more than its capacity (its high-water mark, and every
        sample read meanwhile, stay below it), evicts as it goes, and the
        agent's memory does not grow with the traffic.
        """
        watch = MemoryWatch({"agent": self.agent})
        self.addCleanup(watch.stop)
        samples: list[dict[str, float]] = []
        reading = [False]

        @inlineCallbacks
        def sample() -> Steps[None]:
            if reading[0]:
                return
            reading[0] = True
            try:
                samples.append((yield self.store_metrics()))
            finally:
                reading[0] = False

        sampler = LoopingCall(sample)
        sampler.start(0.25)
        self.addCleanup(lambda: sampler.running and sampler.stop())

        public = urlsplit(self.url)
        resolve = f"{public.hostname}:{public.port}:127.0.0.1"
        runs = [
            self.curl.run(
                ["--resolve", resolve, "-K", config, "-w", "%{http_code}\\n"],
                seconds=BOUND_SECONDS,
            )
            for config in self.curl_configs()
        ]
        curls = yield gatherResults(runs)
        sampler.stop()
        watch.stop()
        final = yield self.store_metrics()

        codes = [code for curl in curls for code in curl.text("out").split()]
        self.assertEqual([curl.exit_code for curl in curls], [0, 0])
        self.assertEqual((len(codes), set(codes)), (BOUND_EXCHANGES, {"200"}))
        moved = sum(t.length for t in self.upstream.transfers)
        self.assertEqual(moved, BOUND_EXCHANGES * BOUND_BODY)
        self.assertEqual(
            final["tunnelkit_capture_store_capacity_bytes"], BOUND_CAPACITY
        )
        self.assertLessEqual(
            final["tunnelkit_capture_store_peak_bytes"], BOUND_CAPACITY
        )
        self.assertTrue(samples)
        for seen in samples + [final]:
            self.assertLessEqual(seen["tunnelkit_capture_store_bytes"], BOUND_CAPACITY)
        self.assertGreaterEqual(final["tunnelkit_captures_total"], BOUND_EXCHANGES)
        self.assertGreater(final["tunnelkit_capture_evictions_total"], 0)
        self.assertLess(watch.growth()["agent"], 64 * MIB)


def _decoded(text: str) -> bytes:
    return base64.b64decode(text)


def _sleep(seconds: float) -> Deferred:
    return deferLater(reactor, seconds, lambda: None)
