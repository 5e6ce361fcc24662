"""
The agent's web API in memory, for its tests: a real L{AgentApplication}
(not started) with a real L{AgentService} whose session is a
L{FakeSession}, served through C{treq.testing.StubTreq}.
"""

import json
from dataclasses import replace
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tunnelkit.agent.app import AgentApplication
from tunnelkit.agent.captures import Capture, CapturedRequest, CapturedResponse
from tunnelkit.agent.service import AgentService
from tunnelkit.agent.tunnel import Tunnel
from tunnelkit.config import AgentConfig, HostPort, TunnelDefinition, UpstreamAddress
from tunnelkit.control.messages import AuthResp
from tunnelkit.errors import TunnelkitError
from tunnelkit.web.app import web_resource

BASE = "http://localhost:4040"
EDGE = HostPort("edge.example.com", 4443)
TOKEN = "tk-secret-authtoken-0123"

WEB = TunnelDefinition(
    name="web",
    proto="http",
    addr=UpstreamAddress("http", "localhost", 8080),
    inspect=True,
    schemes=("http", "https"),
)
SSH = TunnelDefinition(
    name="ssh", proto="tcp", addr=UpstreamAddress("tcp", "localhost", 22)
)


class FakeMux:
    """
    The multiplexer of a L{FakeSession}: only its latency.
    """

    latency: float | None = 0.0123


class FakeSession:
    """
    Stands in for the agent's session with its edge: binds every tunnel
    (or refuses with L{refusal}) and records the requests sent.

    @ivar requests: every request sent with L{request}.
    @ivar refusal: the error L{bind} answers with, if set.
    """

    def __init__(self) -> None:
        self.auth = AuthResp(session_id="s1")
        self.mux = FakeMux()
        self.requests: list[Any] = []
        self.refusal: TunnelkitError | None = None

    async def bind(self, tunnel: Tunnel) -> TunnelkitError | None:
        """
        Give the tunnel the URLs an edge would, or refuse it.
        """
        if self.refusal is not None:
            return self.refusal
        if tunnel.proto == "http":
            tunnel.public_urls = (
                f"https://{tunnel.name}.tunnels.test",
                f"http://{tunnel.name}.tunnels.test",
            )
        else:
            tunnel.public_urls = ("tcp://tunnels.test:20001",)
        return None

    def request(self, message: Any) -> "Deferred[Any]":
        """
        Record a request and answer it.
        """
        self.requests.append(message)
        return succeed(None)


def captured(
    method: str = "GET",
    uri: str = "/",
    status: int | None = 200,
    tunnel: str = "web",
    body: bytes = b"",
) -> Capture:
    """
    @return: a capture, complete when C{status} is given.
    """
    head = f"{method} {uri} HTTP/1.1\r\nHost: web.tunnels.test\r\n".encode()
    head += b"X-Forwarded-Proto: https\r\n"
    if body:
        head += b"Content-Length: %d\r\n" % len(body)
    request = CapturedRequest(
        head=head + b"\r\n",
        method=method,
        uri=uri,
        body_size=len(body),
    )
    request.wire_body += body
    capture = Capture(tunnel, "192.0.2.7", 1_700_000_000.0, request)
    if status is not None:
        response = CapturedResponse(
            head=f"HTTP/1.1 {status} OK\r\nContent-Type: text/plain\r\n\r\n".encode(),
            status_code=status,
            reason="OK",
            body_size=2,
        )
        response.wire_body += b"ok"
        capture.response = response
        capture.ended = capture.started + 0.25
    return capture


class ApiTestCase(SynchronousTestCase):
    """
    An agent application, its service and session, and the API over them.
    """

    config = AgentConfig(authtoken="from-the-file-0123")

    def setUp(self) -> None:
        self.clock = Clock()
        self.app = AgentApplication(self.config, [WEB, SSH], self.clock, TOKEN)
        self.app.web_url = "http://127.0.0.1:4040"
        self.agent = AgentService(
            replace(self.config, server_addr=EDGE),
            [WEB, SSH],
            self.clock,
            EDGE,
            None,
            TOKEN,
            inspection=self.app.inspection,
        )
        self.app.agent = self.agent
        self.session = FakeSession()
        self.agent.session = self.session  # type: ignore[assignment]
        for tunnel in self.agent.tunnels.values():
            self.successResultOf(ensureDeferred(self.session.bind(tunnel)))
        self.treq = StubTreq(web_resource(self.app, self.config.web_allow_hosts))

    def store(self) -> Any:
        """
        @return: the application's capture store.
        """
        assert self.app.inspection is not None
        return self.app.inspection.store

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, list[str]] | None = None,
        base: str = BASE,
        redirects: bool = False,
    ) -> tuple[int, Any, Any]:
        """
        Send one request and read the whole answer.

        @param body: JSON-ready data sent as C{application/json}, or
            C{bytes} sent as they are.
        @param redirects: whether to follow redirects.
        @return: the status, the headers, and the body: parsed JSON when
            the answer is JSON, else bytes.
        """
        sent_headers = dict(headers or {})
        data = None
        if isinstance(body, bytes):
            data = body
        elif body is not None:
            data = json.dumps(body).encode()
            sent_headers.setdefault("Content-Type", ["application/json"])
        answering = self.treq.request(
            method,
            base + path,
            data=data,
            headers=sent_headers,
            allow_redirects=redirects,
        )
        self.treq.flush()
        response = self.successResultOf(answering)
        content = self.successResultOf(response.content())
        kind = response.headers.getRawHeaders("content-type", [""])[0]
        if kind.startswith("application/json") and content:
            return response.code, response.headers, json.loads(content)
        return response.code, response.headers, content

    def assertApiError(
        self, answer: tuple[int, Any, Any], status: int, code: int, *words: str
    ) -> None:
        """
        Check an answer is an error in ngrok's shape, with this status and
        code, whose C{details.err} holds each of C{words}.
        """
        got_status, headers, body = answer
        self.assertEqual(got_status, status)
        self.assertEqual(
            sorted(body), ["details", "error_code", "msg", "status_code"], body
        )
        self.assertEqual((body["error_code"], body["status_code"]), (code, status))
        self.assertIsInstance(body["msg"], str)
        for word in words:
            self.assertIn(word, body["details"]["err"])
