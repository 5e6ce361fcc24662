"""
The agent's REST API under C{/api}, with ngrok's paths and JSON shapes,
the Prometheus text at C{/metrics}, and the pages (L{pages_resource}) at
every other path.

The routes read the running agent through an L{ApiHost} (the
L{tunnelkit.agent.app.AgentApplication} in a real agent), so the API works
from the moment the web interface listens, before the agent's session is
up. Every refusal is an L{ApiError} in ngrok's error shape.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Protocol

from klein import Klein
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from werkzeug.exceptions import MethodNotAllowed, NotFound

from tunnelkit.agent.captures import Capture
from tunnelkit.agent.inspection import Inspection
from tunnelkit.agent.replay import (
    Changes,
    ReplayRefused,
    changed_request,
    replay,
    replayed_request,
)
from tunnelkit.agent.service import AgentService
from tunnelkit.agent.tunnel import Tunnel
from tunnelkit.config import AgentConfig, ConfigError, parse_tunnel_settings
from tunnelkit.errors import TunnelkitError
from tunnelkit.web import har, prometheus
from tunnelkit.web.errors import (
    CANNOT_REPLAY,
    INVALID_REQUEST,
    INVALID_TUNNEL,
    METHOD_NOT_ALLOWED,
    NOT_FOUND,
    NOT_READY,
    REPLAY_FAILED,
    TUNNEL_START_FAILED,
    ApiError,
    json_body,
)
from tunnelkit.web.events import EventStream
from tunnelkit.web.pages import pages_resource
from tunnelkit.web.shapes import capture_json, status_json, tunnel_entries

_log = Logger()

DEFAULT_LIMIT = 50
"""Captures listed by C{GET /api/requests/http} when no C{limit} is given."""

HTTP_TWIN = " (http)"
"""What ends the name of the C{http} URL's entry of a tunnel with two."""

REPLAY_FIELDS = frozenset({"id", "tunnel_name"})
CHANGED_REPLAY_FIELDS = frozenset(
    {"tunnel_name", "method", "path", "headers", "body", "body_base64"}
)


class ApiHost(Protocol):
    """
    What the API reads of the running agent.
    """

    config: AgentConfig
    reactor: Any
    agent: AgentService | None
    inspection: Inspection | None
    authtoken: str
    web_url: str | None


def read_json_object(request: IRequest, allowed: frozenset[str] | None) -> dict:
    """
    @param allowed: the fields the object may have, or C{None} for any.
    @return: the request's body, a JSON object.
    @raise ApiError: when it is not a JSON object, or has unknown fields.
    """
    content = request.content
    raw = content.read() if content is not None else b""
    try:
        value = json.loads(raw.decode("utf-8")) if raw.strip() else None
    except (UnicodeDecodeError, ValueError) as error:
        raise ApiError(INVALID_REQUEST, f"the body is not JSON: {error}")
    if not isinstance(value, dict):
        raise ApiError(INVALID_REQUEST, "the body must be a JSON object")
    if allowed is not None:
        unknown = sorted(key for key in value if key not in allowed)
        if unknown:
            listed = ", ".join(repr(key) for key in unknown)
            known = ", ".join(sorted(allowed))
            raise ApiError(
                INVALID_REQUEST, f"unknown fields {listed}; the fields are {known}"
            )
    return value


def _string_field(body: dict, name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise ApiError(INVALID_REQUEST, f"{name!r} must be a string")
    return value


def _changes(body: dict) -> Changes:
    headers = body.get("headers")
    if headers is not None:
        valid = isinstance(headers, dict) and all(
            isinstance(values, list) and all(isinstance(v, str) for v in values)
            for values in headers.values()
        )
        if not valid:
            raise ApiError(
                INVALID_REQUEST,
                "'headers' must map each name to a list of strings",
            )
    text = _string_field(body, "body")
    encoded = _string_field(body, "body_base64")
    if text is not None and encoded is not None:
        raise ApiError(INVALID_REQUEST, "give 'body' or 'body_base64', not both")
    content = text.encode("utf-8") if text is not None else None
    if encoded is not None:
        try:
            content = base64.b64decode(encoded, validate=True)
        except binascii.Error as error:
            raise ApiError(INVALID_REQUEST, f"'body_base64' is not base64: {error}")
    return Changes(
        method=_string_field(body, "method"),
        path=_string_field(body, "path"),
        headers=headers,
        body=content,
    )


class AgentApi:
    """
    The API's routes, for one agent.
    """

    app = Klein()

    def __init__(self, host: ApiHost) -> None:
        self.host = host
        self._pages = pages_resource()

    # Reading the agent

    def _agent(self) -> AgentService | None:
        return self.host.agent

    def _tunnels(self) -> list[Tunnel]:
        agent = self._agent()
        return list(agent.tunnels.values()) if agent is not None else []

    def _entries(self) -> list[dict[str, Any]]:
        inspection = self.host.inspection
        return [
            entry
            for tunnel in self._tunnels()
            for entry in tunnel_entries(
                tunnel, inspection is not None and inspection.covers(tunnel)
            )
        ]

    def _tunnel(self, name: str) -> Tunnel:
        """
        @return: the tunnel an entry name stands for (C{NAME} or
            C{NAME (http)}).
        @raise ApiError: when there is none.
        """
        agent = self._agent()
        tunnels = agent.tunnels if agent is not None else {}
        tunnel = tunnels.get(name)
        if tunnel is None and name.endswith(HTTP_TWIN):
            twin = tunnels.get(name[: -len(HTTP_TWIN)])
            if twin is not None and any(n == name for n, _ in twin.named_urls()):
                tunnel = twin
        if tunnel is None:
            raise ApiError(NOT_FOUND, f'tunnel "{name}" not found')
        return tunnel

    def _inspection(self) -> Inspection:
        inspection = self.host.inspection
        if inspection is None:
            raise ApiError(
                NOT_FOUND,
                "inspection is disabled (inspect_db_size: -1), so nothing is"
                " captured",
            )
        return inspection

    def _capture(self, capture_id: str) -> Capture:
        inspection = self.host.inspection
        capture = inspection.store.get(capture_id) if inspection else None
        if capture is None:
            raise ApiError(
                NOT_FOUND,
                f"request {capture_id!r} not found: it was never captured, or"
                " was evicted or cleared",
            )
        return capture

    def _status(self) -> tuple[str, float | None]:
        agent = self._agent()
        if agent is None:
            return "connecting", None
        session = agent.session
        latency = session.mux.latency if session is not None else None
        return agent.status, latency

    # Errors

    @app.handle_errors(ApiError)
    def refused(self, request: IRequest, failure: Failure) -> bytes:
        error = failure.value
        assert isinstance(error, ApiError)
        if error.status_code >= 500 or request.method != b"GET":
            _log.warn(
                "{msg}",
                msg=error.msg,
                pg=request.path.decode("latin-1"),
                err=error.err,
                obj="web",
            )
        return error.render(request)

    @app.handle_errors(NotFound)
    def not_found(self, request: IRequest, failure: Failure) -> bytes:
        return ApiError(NOT_FOUND, "no such resource").render(request)

    @app.handle_errors(MethodNotAllowed)
    def not_allowed(self, request: IRequest, failure: Failure) -> bytes:
        error = failure.value
        assert isinstance(error, MethodNotAllowed)
        if error.valid_methods:
            request.setHeader(b"allow", ", ".join(error.valid_methods).encode())
        method = request.method.decode("latin-1")
        return ApiError(METHOD_NOT_ALLOWED, f"{method} is not allowed here").render(
            request
        )

    # The root

    @app.route("/api", methods=["GET"])
    @app.route("/api/", methods=["GET"])
    def root(self, request: IRequest) -> bytes:
        return json_body(
            request,
            {
                "uri": "/api",
                "tunnels": "/api/tunnels",
                "requests": "/api/requests/http",
                "status": "/api/status",
            },
        )

    # Tunnels

    @app.route("/api/tunnels", methods=["GET"])
    def list_tunnels(self, request: IRequest) -> bytes:
        return json_body(request, {"tunnels": self._entries(), "uri": "/api/tunnels"})

    @app.route("/api/tunnels", methods=["POST"])
    async def start_tunnel(self, request: IRequest) -> bytes:
        body = read_json_object(request, None)
        name = body.pop("name", None)
        if not isinstance(name, str) or not name.strip():
            raise ApiError(INVALID_TUNNEL, "'name' is required: name the tunnel")
        try:
            definition = parse_tunnel_settings(name, body)
        except ConfigError as error:
            key = (error.key or "").removeprefix(f"tunnels.{name}").lstrip(".")
            where = f"{key}: " if key else ""
            raise ApiError(INVALID_TUNNEL, f"{where}{error.message}")
        agent = self._agent()
        if agent is None:
            raise ApiError(
                NOT_READY,
                "TK_SESSION_NOT_READY: The agent has not yet established a session"
                " with its edge, so it cannot start tunnels; try again once it is"
                " online.",
            )
        try:
            tunnel = await agent.add_tunnel(definition)
        except TunnelkitError as error:
            if error.code == "TK_TUNNEL_EXISTS":
                raise ApiError(INVALID_TUNNEL, str(error))
            if error.code == "TK_SESSION_NOT_READY":
                raise ApiError(NOT_READY, str(error))
            raise ApiError(TUNNEL_START_FAILED, str(error))
        request.setResponseCode(201)
        inspection = self.host.inspection
        inspected = inspection is not None and inspection.covers(tunnel)
        return json_body(request, tunnel_entries(tunnel, inspected)[0])

    @app.route("/api/tunnels/<name>", methods=["GET"])
    def show_tunnel(self, request: IRequest, name: str) -> bytes:
        self._tunnel(name)
        for entry in self._entries():
            if entry["name"] == name:
                return json_body(request, entry)
        raise ApiError(NOT_FOUND, f'tunnel "{name}" not found')

    @app.route("/api/tunnels/<name>", methods=["DELETE"])
    async def stop_tunnel(self, request: IRequest, name: str) -> bytes:
        tunnel = self._tunnel(name)
        agent = self._agent()
        assert agent is not None
        await agent.remove_tunnel(tunnel.name)
        request.setResponseCode(204)
        return b""

    # Captured requests

    @app.route("/api/requests/http", methods=["GET"])
    def list_requests(self, request: IRequest) -> bytes:
        limit = DEFAULT_LIMIT
        raw_limit = request.args.get(b"limit")
        if raw_limit:
            text = raw_limit[0].decode("latin-1")
            if not text.isdigit():
                raise ApiError(INVALID_REQUEST, f"limit {text!r} is not a number")
            limit = int(text)
        names = request.args.get(b"tunnel_name")
        tunnel_name = names[0].decode("utf-8", "replace") if names else None
        inspection = self.host.inspection
        captures = (
            inspection.store.recent(limit, tunnel_name)
            if inspection is not None
            else []
        )
        return json_body(
            request,
            {
                "uri": "/api/requests/http",
                "requests": [capture_json(capture) for capture in captures],
            },
        )

    @app.route("/api/requests/http", methods=["DELETE"])
    def clear_requests(self, request: IRequest) -> bytes:
        inspection = self.host.inspection
        if inspection is not None:
            inspection.store.clear()
        request.setResponseCode(204)
        return b""

    @app.route("/api/requests/http/<capture_id>", methods=["GET"])
    def show_request(self, request: IRequest, capture_id: str) -> bytes:
        return json_body(request, capture_json(self._capture(capture_id)))

    @app.route("/api/requests/http", methods=["POST"])
    async def replay_request(self, request: IRequest) -> bytes:
        body = read_json_object(request, REPLAY_FIELDS)
        capture_id = _string_field(body, "id")
        if not capture_id:
            raise ApiError(INVALID_REQUEST, "'id' is required: the capture to replay")
        capture = self._capture(capture_id)
        try:
            data = replayed_request(capture)
        except ReplayRefused as refused:
            raise ApiError(CANNOT_REPLAY, str(refused))
        await self._replay(capture, data, _string_field(body, "tunnel_name"))
        request.setResponseCode(204)
        return b""

    @app.route("/api/requests/http/<capture_id>/replay", methods=["POST"])
    async def replay_changed(self, request: IRequest, capture_id: str) -> bytes:
        body = read_json_object(request, CHANGED_REPLAY_FIELDS)
        capture = self._capture(capture_id)
        changes = _changes(body)
        try:
            data = changed_request(capture, changes)
        except ReplayRefused as refused:
            raise ApiError(CANNOT_REPLAY, str(refused))
        await self._replay(capture, data, _string_field(body, "tunnel_name"))
        request.setResponseCode(204)
        return b""

    async def _replay(
        self, capture: Capture, data: bytes, tunnel_name: str | None
    ) -> None:
        inspection = self._inspection()
        name = tunnel_name or capture.tunnel_name
        tunnel = self._tunnel(name)
        try:
            sending = replay(
                self.host.reactor, inspection, tunnel, data, capture.id, name
            )
        except ReplayRefused as refused:
            raise ApiError(CANNOT_REPLAY, str(refused))
        try:
            await sending
        except Exception as error:
            raise ApiError(
                REPLAY_FAILED,
                f"could not reach {tunnel.forwards_to}: {error}",
            )

    @app.route("/api/requests/har", methods=["GET"])
    def export_har(self, request: IRequest) -> bytes:
        inspection = self.host.inspection
        captures = list(inspection.store) if inspection is not None else []
        request.setHeader(
            b"content-disposition", b'attachment; filename="tunnelkit.har"'
        )
        body = json_body(request, har.har_log(captures))
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        return body

    @app.route("/api/events", methods=["GET"])
    def events(self, request: IRequest) -> Deferred[None]:
        inspection = self.host.inspection
        store = inspection.store if inspection is not None else None
        stream = EventStream(request, store, self.host.reactor)
        stream.start()
        return stream.ended

    # Status

    @app.route("/api/status", methods=["GET"])
    def status(self, request: IRequest) -> bytes:
        agent = self._agent()
        state, latency = self._status()
        config = agent.config if agent is not None else self.host.config
        metrics = agent.metrics.to_json() if agent is not None else {}
        web_url = self.host.web_url or ""
        return json_body(
            request,
            status_json(
                state,
                latency,
                web_url.removeprefix("http://"),
                config,
                self.host.authtoken,
                metrics,
            ),
        )

    @app.route("/metrics", methods=["GET"])
    def metrics(self, request: IRequest) -> bytes:
        state, latency = self._status()
        inspection = self.host.inspection
        request.setHeader(b"content-type", prometheus.CONTENT_TYPE)
        return prometheus.metrics_text(
            self._tunnels(),
            state,
            latency,
            inspection.store if inspection is not None else None,
        )

    @app.route("/api/<path:rest>", methods=["GET"])
    def unknown(self, request: IRequest, rest: str) -> bytes:
        raise ApiError(NOT_FOUND, f"no API resource at /api/{rest}")

    # The pages

    @app.route("/", branch=True, methods=["GET"])
    def pages(self, request: IRequest) -> IResource:
        return self._pages
