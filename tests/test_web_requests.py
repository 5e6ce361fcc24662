"""
Tests for the captured-request half of the agent's REST API through
C{treq.testing.StubTreq}: listing, reading and clearing captures,
replaying them as they were or changed, the HAR export and the event
stream.
"""

import base64
import datetime
from typing import Any

from twisted.internet.defer import fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.web.test.requesthelper import DummyRequest

from tunnelkit.agent.captures import CaptureStore
from tunnelkit.web import api
from tunnelkit.web.events import KEEPALIVE_INTERVAL, EventStream
from tests.webapi import ApiTestCase, captured


class RequestListTests(ApiTestCase):
    """
    C{GET /api/requests/http} and C{GET /api/requests/http/:id}.
    """

    def add(self, count: int, **options: Any) -> list[Any]:
        """
        @return: C{count} new captures, added to the store.
        """
        made = []
        for _ in range(count):
            made.append(captured(**options))
            self.store().add(made[-1])
        return made

    def test_newest_first(self) -> None:
        """
        The list has ngrok's shape, newest first.
        """
        made = self.add(3)

        status, _, body = self.call("GET", "/api/requests/http")

        self.assertEqual(status, 200)
        self.assertEqual(body["uri"], "/api/requests/http")
        self.assertEqual(
            [r["id"] for r in body["requests"]], [c.id for c in made[::-1]]
        )

    def test_limit(self) -> None:
        """
        C{limit} keeps the newest; without it, 50 are listed.
        """
        made = self.add(60)

        _, _, limited = self.call("GET", "/api/requests/http?limit=2")
        _, _, default = self.call("GET", "/api/requests/http")

        self.assertEqual(
            [r["id"] for r in limited["requests"]], [made[-1].id, made[-2].id]
        )
        self.assertEqual(len(default["requests"]), 50)

    def test_bad_limit(self) -> None:
        """
        A C{limit} that is not a number is refused.
        """
        self.assertApiError(self.call("GET", "/api/requests/http?limit=x"), 400, 100)

    def test_tunnel_name(self) -> None:
        """
        C{tunnel_name} keeps only that tunnel's captures.
        """
        self.add(2, tunnel="web")
        [twin] = self.add(1, tunnel="web (http)")

        _, _, body = self.call("GET", "/api/requests/http?tunnel_name=web%20%28http%29")

        self.assertEqual([r["id"] for r in body["requests"]], [twin.id])

    def test_capture_shape(self) -> None:
        """
        A capture has ngrok's shape: its path, tunnel, client, start in
        RFC 3339 with the local offset, duration in nanoseconds, and both
        sides with headers by name, raw bytes and body in base64, the
        body's size and whether it was cut.
        """
        [made] = self.add(1, method="POST", uri="/form?a=1", body=b"x=1")

        status, _, body = self.call("GET", f"/api/requests/http/{made.id}")

        self.assertEqual(status, 200)
        self.assertEqual(body["uri"], f"/api/requests/http/{made.id}")
        self.assertEqual(
            (body["tunnel_name"], body["remote_addr"]), ("web", "192.0.2.7")
        )
        start = datetime.datetime.fromisoformat(body["start"])
        self.assertEqual(start.timestamp(), made.started)
        self.assertEqual(start.utcoffset(), made.start.utcoffset())
        self.assertEqual(body["duration"], 250_000_000)
        request = body["request"]
        self.assertEqual(
            (request["method"], request["uri"], request["proto"]),
            ("POST", "/form?a=1", "HTTP/1.1"),
        )
        self.assertEqual(request["headers"]["Host"], ["web.tunnels.test"])
        self.assertEqual(base64.b64decode(request["raw"]), made.request.raw)
        self.assertEqual(base64.b64decode(request["body"]), b"x=1")
        self.assertEqual((request["body_size"], request["truncated"]), (3, False))
        response = body["response"]
        self.assertEqual((response["status"], response["status_code"]), ("200 OK", 200))
        self.assertEqual(base64.b64decode(response["body"]), b"ok")

    def test_pending(self) -> None:
        """
        A capture without a response has C{response: null} and a duration
        of 0.
        """
        [made] = self.add(1, status=None)

        _, _, body = self.call("GET", f"/api/requests/http/{made.id}")

        self.assertEqual((body["response"], body["duration"]), (None, 0))

    def test_unknown(self) -> None:
        """
        An unknown id is C{404}.
        """
        self.assertApiError(
            self.call("GET", "/api/requests/http/nope"), 404, 101, "nope"
        )

    def test_clear(self) -> None:
        """
        C{DELETE /api/requests/http} clears the store: C{204}.
        """
        self.add(2)

        status, _, body = self.call("DELETE", "/api/requests/http")

        self.assertEqual((status, body), (204, b""))
        self.assertEqual(len(self.store()), 0)


class ReplayApiTests(ApiTestCase):
    """
    C{POST /api/requests/http} and C{POST /api/requests/http/:id/replay},
    with the replay itself recorded instead of sent.
    """

    def setUp(self) -> None:
        super().setUp()
        self.sent: list[tuple[Any, ...]] = []
        self.outcome: Any = succeed(None)

        def replay(
            reactor: Any,
            inspection: Any,
            tunnel: Any,
            data: bytes,
            replay_of: str,
            tunnel_name: str | None = None,
        ) -> Any:
            self.sent.append((tunnel.name, data, replay_of, tunnel_name))
            return self.outcome

        self.patch(api, "replay", replay)
        self.capture = captured(method="POST", uri="/form", body=b"x=1")
        self.store().add(self.capture)

    def test_replay(self) -> None:
        """
        A replay sends the captured bytes to the capture's tunnel: C{204}.
        """
        status, _, body = self.call(
            "POST", "/api/requests/http", {"id": self.capture.id}
        )

        self.assertEqual((status, body), (204, b""))
        self.assertEqual(
            self.sent, [("web", self.capture.request.raw, self.capture.id, "web")]
        )

    def test_replay_other_tunnel(self) -> None:
        """
        C{tunnel_name} sends the replay to another tunnel.
        """
        self.call(
            "POST",
            "/api/requests/http",
            {"id": self.capture.id, "tunnel_name": "web (http)"},
        )

        self.assertEqual(self.sent[0][0], "web")
        self.assertEqual(self.sent[0][3], "web (http)")

    def test_unknown_fields(self) -> None:
        """
        Unknown fields are refused, named.
        """
        answer = self.call(
            "POST", "/api/requests/http", {"id": self.capture.id, "times": 3}
        )

        self.assertApiError(answer, 400, 100, "'times'")
        self.assertEqual(self.sent, [])

    def test_missing_id(self) -> None:
        """
        A replay needs an id, of a capture the store holds.
        """
        self.assertApiError(self.call("POST", "/api/requests/http", {}), 400, 100)
        self.assertApiError(
            self.call("POST", "/api/requests/http", {"id": "nope"}), 404, 101
        )

    def test_unknown_tunnel(self) -> None:
        """
        A replay to a tunnel the agent does not have is C{404}.
        """
        answer = self.call(
            "POST", "/api/requests/http", {"id": self.capture.id, "tunnel_name": "x"}
        )

        self.assertApiError(answer, 404, 101, "x")

    def test_truncated(self) -> None:
        """
        A request whose body was cut cannot be replayed as it was.
        """
        self.capture.request.body_size = 10_000

        answer = self.call("POST", "/api/requests/http", {"id": self.capture.id})

        self.assertApiError(answer, 400, 108, "body")

    def test_unreachable(self) -> None:
        """
        An upstream that cannot be reached is C{502} with code 109.
        """
        self.outcome = fail(ConnectionRefusedError())

        answer = self.call("POST", "/api/requests/http", {"id": self.capture.id})

        self.assertApiError(answer, 502, 109, "http://localhost:8080")

    def test_changed(self) -> None:
        """
        A replay with changes sends the request changed: method, path,
        headers, and the body with its length.
        """
        status, _, _ = self.call(
            "POST",
            f"/api/requests/http/{self.capture.id}/replay",
            {
                "method": "PUT",
                "path": "/other",
                "headers": {"Host": ["b.test"], "X-Tag": ["1"]},
                "body": "é",
            },
        )

        self.assertEqual(status, 204)
        self.assertEqual(
            self.sent[0][1],
            b"PUT /other HTTP/1.1\r\nHost: b.test\r\nX-Tag: 1\r\n"
            b"Content-Length: 2\r\n\r\n\xc3\xa9",
        )

    def test_changed_base64_body(self) -> None:
        """
        A binary body is given in base64.
        """
        self.call(
            "POST",
            f"/api/requests/http/{self.capture.id}/replay",
            {"body_base64": base64.b64encode(b"\x00\xff").decode()},
        )

        self.assertTrue(self.sent[0][1].endswith(b"Content-Length: 2\r\n\r\n\x00\xff"))

    def test_changed_nothing(self) -> None:
        """
        An empty change replays the request rebuilt from what was captured.
        """
        self.call("POST", f"/api/requests/http/{self.capture.id}/replay", {})

        self.assertEqual(self.sent[0][1], self.capture.request.raw)

    def test_changed_refused(self) -> None:
        """
        Changes of the wrong type or that are not valid HTTP are refused.
        """
        path = f"/api/requests/http/{self.capture.id}/replay"
        for changes, status, code in (
            ({"headers": {"X": "not a list"}}, 400, 100),
            ({"body": "a", "body_base64": "YQ=="}, 400, 100),
            ({"body_base64": "***"}, 400, 100),
            ({"method": 7}, 400, 100),
            ({"method": "G T"}, 400, 108),
            ({"verb": "GET"}, 400, 100),
        ):
            self.assertApiError(self.call("POST", path, changes), status, code)
        self.assertEqual(self.sent, [])

    def test_inspection_off(self) -> None:
        """
        Without inspection there is nothing to replay.
        """
        self.app.inspection = None

        answer = self.call("POST", "/api/requests/http", {"id": self.capture.id})

        self.assertApiError(answer, 404, 101)


class HarTests(ApiTestCase):
    """
    C{GET /api/requests/har}.
    """

    def test_export(self) -> None:
        """
        The export is a HAR 1.2 download of every capture, oldest first,
        with URLs, headers, query, bodies and times.
        """
        first = captured(method="POST", uri="/form?a=1&b=", body=b"x=1")
        second = captured(status=None)
        self.store().add(first)
        self.store().add(second)

        status, headers, body = self.call("GET", "/api/requests/har")

        self.assertEqual(status, 200)
        self.assertEqual(
            headers.getRawHeaders("content-disposition"),
            ['attachment; filename="tunnelkit.har"'],
        )
        log = body["log"]
        self.assertEqual((log["version"], log["creator"]["name"]), ("1.2", "tunnelkit"))
        done, pending = log["entries"]
        self.assertEqual(done["request"]["url"], "https://web.tunnels.test/form?a=1&b=")
        self.assertEqual(
            done["request"]["queryString"],
            [{"name": "a", "value": "1"}, {"name": "b", "value": ""}],
        )
        self.assertEqual(done["request"]["postData"]["text"], "x=1")
        self.assertEqual(done["response"]["content"]["text"], "ok")
        self.assertEqual(done["time"], 250.0)
        self.assertEqual(pending["response"]["status"], 0)

    def test_binary_and_truncated(self) -> None:
        """
        A body that is not UTF-8 is in base64, and a cut body says so.
        """
        capture = captured(method="POST", body=b"\xff\xfe")
        capture.request.body_size = 100
        self.store().add(capture)

        _, _, body = self.call("GET", "/api/requests/har")

        post = body["log"]["entries"][0]["request"]["postData"]
        self.assertEqual((post["encoding"], post["text"]), ("base64", "//4="))
        self.assertIn("cut", post["comment"])


class EventStreamTests(ApiTestCase):
    """
    C{GET /api/events}, and L{EventStream}.
    """

    def test_route(self) -> None:
        """
        The route answers with an event stream that tells of captures.
        """
        received: list[bytes] = []
        answering = self.treq.get("http://localhost/api/events")
        self.treq.flush()
        response = self.successResultOf(answering)
        response.deliverBody(_Collector(received))

        self.store().add(captured())
        self.treq.flush()

        self.assertEqual(
            response.headers.getRawHeaders("content-type"),
            ["text/event-stream; charset=utf-8"],
        )
        self.assertIn(b"event: capture\n", b"".join(received))

    def stream(self) -> tuple[DummyRequest, CaptureStore, Clock, EventStream]:
        """
        @return: a started stream on a dummy request, its store and clock.
        """
        request = DummyRequest([b"api", b"events"])
        store = CaptureStore(1 << 20)
        clock = Clock()
        stream = EventStream(request, store, clock)
        stream.start()
        return request, store, clock, stream

    def test_capture_events(self) -> None:
        """
        A capture is sent when added and again when complete, each as one
        event of JSON.
        """
        request, store, clock, stream = self.stream()
        capture = captured(status=None)

        store.add(capture)
        capture.response = captured().response
        store.complete(capture)

        events = b"".join(request.written).split(b"\n\n")
        sent = [e for e in events if e.startswith(b"event: capture")]
        self.assertEqual(len(sent), 2)
        self.assertIn(b'"response":null', sent[0])
        self.assertIn(b'"status_code":200', sent[1])
        self.assertIn(capture.id.encode(), sent[1])

    def test_clear_event(self) -> None:
        """
        Clearing the store sends C{event: clear}.
        """
        request, store, clock, stream = self.stream()

        store.clear()

        self.assertIn(b"event: clear\ndata: {}\n\n", request.written)

    def test_keepalive(self) -> None:
        """
        A comment is sent every 15 seconds.
        """
        request, store, clock, stream = self.stream()
        before = len(request.written)

        clock.advance(KEEPALIVE_INTERVAL)
        clock.advance(KEEPALIVE_INTERVAL)

        self.assertEqual(request.written[before:], [b": keep-alive\n\n"] * 2)

    def test_end(self) -> None:
        """
        When the subscriber goes away (the route's Deferred is cancelled)
        it is forgotten and the keep-alives stop.
        """
        request, store, clock, stream = self.stream()
        ending = stream.ended

        ending.cancel()
        self.failureResultOf(ending)
        before = len(request.written)
        store.add(captured())
        clock.advance(KEEPALIVE_INTERVAL * 3)

        self.assertEqual(len(request.written), before)
        self.assertEqual(store._listeners, [])


class _Collector:
    """
    A body protocol that keeps every piece of a response it is given.
    """

    def __init__(self, received: list[bytes]) -> None:
        self.received = received

    def makeConnection(self, transport: Any) -> None:
        pass

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def connectionLost(self, reason: Any) -> None:
        pass
