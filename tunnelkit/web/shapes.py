"""
The JSON objects of the agent's API, in ngrok's shapes: a tunnel, a
captured exchange, and the agent's status.
"""

from __future__ import annotations

import base64
import dataclasses
from typing import Any, Mapping
from urllib.parse import quote

from tunnelkit import __version__
from tunnelkit.agent.captures import Capture, CapturedMessage
from tunnelkit.agent.tunnel import Tunnel
from tunnelkit.config import AgentConfig, HostPort

SECRET_SETTINGS = frozenset({"authtoken", "api_key"})
"""Settings never shown; their first characters are shown instead, under
C{NAME_prefix}."""

SECRET_PREFIX_LENGTH = 4
"""How many characters of a secret setting are shown."""

HIDDEN_SETTINGS = frozenset({"tunnels", "paths"})
"""Settings shown elsewhere: the tunnels have their own resources, and the
files read are shown as C{config_paths}."""

NANOSECONDS = 1_000_000_000


def tunnel_uri(name: str) -> str:
    """
    @return: the API path of the tunnel named C{name}.
    """
    return "/api/tunnels/" + quote(name, safe="")


def tunnel_entries(tunnel: Tunnel, inspected: bool) -> list[dict[str, Any]]:
    """
    @param inspected: whether the tunnel's exchanges are captured.
    @return: the tunnel as the API lists it: one entry per public URL (an
        HTTP tunnel with two URLs is C{NAME} and C{NAME (http)}), or one
        entry with an empty C{public_url} while it is not bound.
    """
    named = tunnel.named_urls() or [(tunnel.name, "")]
    metrics = tunnel.metrics.to_json()
    entries = []
    for name, url in named:
        scheme = url.partition("://")[0] if url else tunnel.proto
        entries.append(
            {
                "name": name,
                "uri": tunnel_uri(name),
                "public_url": url,
                "proto": scheme,
                "config": {"addr": tunnel.forwards_to, "inspect": inspected},
                "metrics": metrics,
            }
        )
    return entries


def _message_json(message: CapturedMessage) -> dict[str, Any]:
    return {
        "proto": message.proto,
        "headers": message.headers(),
        "raw": base64.b64encode(message.raw).decode("ascii"),
        "body": base64.b64encode(message.body).decode("ascii"),
        "body_size": message.body_size,
        "truncated": message.truncated,
    }


def capture_json(capture: Capture) -> dict[str, Any]:
    """
    @return: a capture as the API shows it: ngrok's shape, with C{raw} and
        C{body} in base64, C{body_size} and C{truncated} for each side, and
        C{replay_of} for a replay.
    """
    request = capture.request
    duration = capture.duration
    shown: dict[str, Any] = {
        "uri": f"/api/requests/http/{capture.id}",
        "id": capture.id,
        "tunnel_name": capture.tunnel_name,
        "remote_addr": capture.remote_addr,
        "start": capture.start.isoformat(timespec="seconds"),
        "duration": 0 if duration is None else int(duration * NANOSECONDS),
        "request": {"method": request.method, "uri": request.uri}
        | _message_json(request),
        "response": None,
    }
    response = capture.response
    if response is not None:
        shown["response"] = {
            "status": response.status,
            "status_code": response.status_code,
        } | _message_json(response)
    if capture.replay_of is not None:
        shown["replay_of"] = capture.replay_of
    return shown


def _setting(value: Any) -> Any:
    if isinstance(value, HostPort):
        return str(value)
    if isinstance(value, tuple):
        return [_setting(item) for item in value]
    return value


def settings_json(config: AgentConfig, authtoken: str) -> dict[str, Any]:
    """
    @param authtoken: the authtoken the agent presents (from the command
        line, the environment or the file).
    @return: the agent's global settings as a flat mapping: every setting
        of the file but the tunnels, C{config_paths} for the files read,
        and for each secret only its first characters, as C{NAME_prefix}.
    """
    shown: dict[str, Any] = {"config_paths": list(config.paths)}
    for field in dataclasses.fields(config):
        if field.name in HIDDEN_SETTINGS or field.name in SECRET_SETTINGS:
            continue
        shown[field.name] = _setting(getattr(config, field.name))
    if config.web_addr is None:
        shown["web_addr"] = False
    shown["authtoken_prefix"] = authtoken[:SECRET_PREFIX_LENGTH]
    return shown


def status_json(
    status: str,
    latency: float | None,
    web_addr: str,
    config: AgentConfig,
    authtoken: str,
    metrics: Mapping[str, Any],
) -> dict[str, Any]:
    """
    @param status: the session's state, such as C{online}.
    @param latency: the last round trip to the edge in seconds, if known.
    @param web_addr: where the web interface listens.
    @param metrics: the metrics of all tunnels together.
    @return: the agent's status as C{GET /api/status} shows it.
    """
    leg: dict[str, Any] = {"region": ""}
    leg["latency"] = f"{round(latency * 1000)}ms" if latency is not None else ""
    return {
        "status": status,
        "agent_version": __version__,
        "session": {"legs": [leg]},
        "uri": "/api/status",
        "web_addr": web_addr,
        "config": settings_json(config, authtoken),
        "metrics": metrics,
    }
