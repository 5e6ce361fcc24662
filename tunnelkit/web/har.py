"""
The captured exchanges as an HTTP Archive (HAR 1.2), the format browsers'
developer tools and many HTTP tools import.

Bodies that are UTF-8 text are written as text, any other as base64 (with
C{"encoding": "base64"}); a body that was cut at the capture cap says so in
its C{comment}. An exchange without a response has a response of status 0.
"""

from __future__ import annotations

import base64
from typing import Any, Iterable
from urllib.parse import parse_qsl, urlsplit

from tunnelkit import __version__
from tunnelkit.agent.captures import Capture, CapturedMessage

HAR_VERSION = "1.2"


def _headers(message: CapturedMessage) -> list[dict[str, str]]:
    return [
        {"name": name.decode("latin-1"), "value": value.decode("latin-1")}
        for name, value in message.header_fields
    ]


def _text(body: bytes) -> dict[str, str]:
    """
    @return: a body as HAR carries it: C{text}, and C{encoding} when that
        text is base64.
    """
    try:
        return {"text": body.decode("utf-8")}
    except UnicodeDecodeError:
        return {"text": base64.b64encode(body).decode("ascii"), "encoding": "base64"}


def _truncation(message: CapturedMessage) -> dict[str, str]:
    if not message.truncated:
        return {}
    return {"comment": f"body cut at {len(message.body)} of {message.body_size} bytes"}


def request_url(capture: Capture) -> str:
    """
    @return: the request's absolute URL, from its target, its C{Host} and
        the scheme the edge says the client used (C{X-Forwarded-Proto}).
    """
    request = capture.request
    target = request.uri
    if "://" in target:
        return target
    scheme = request.header("x-forwarded-proto") or "http"
    host = request.header("host") or "localhost"
    return f"{scheme}://{host}{target}"


def _request(capture: Capture) -> dict[str, Any]:
    request = capture.request
    query = urlsplit(request.uri).query
    shown: dict[str, Any] = {
        "method": request.method,
        "url": request_url(capture),
        "httpVersion": request.proto,
        "cookies": [],
        "headers": _headers(request),
        "queryString": [
            {"name": name, "value": value}
            for name, value in parse_qsl(query, keep_blank_values=True)
        ],
        "headersSize": len(request.head),
        "bodySize": request.body_size,
    }
    if request.body_size:
        shown["postData"] = {
            "mimeType": request.header("content-type") or "",
            "params": [],
            **_text(request.body),
            **_truncation(request),
        }
    return shown


def _response(capture: Capture) -> dict[str, Any]:
    response = capture.response
    if response is None:
        return {
            "status": 0,
            "statusText": "",
            "httpVersion": "",
            "cookies": [],
            "headers": [],
            "content": {"size": 0, "mimeType": ""},
            "redirectURL": "",
            "headersSize": -1,
            "bodySize": -1,
            "comment": "no response",
        }
    return {
        "status": response.status_code,
        "statusText": response.reason,
        "httpVersion": response.proto,
        "cookies": [],
        "headers": _headers(response),
        "content": {
            "size": response.body_size,
            "mimeType": response.header("content-type") or "",
            **_text(response.body),
            **_truncation(response),
        },
        "redirectURL": response.header("location") or "",
        "headersSize": len(response.head),
        "bodySize": response.body_size,
    }


def _entry(capture: Capture) -> dict[str, Any]:
    milliseconds = (capture.duration or 0.0) * 1000
    return {
        "startedDateTime": capture.start.isoformat(timespec="milliseconds"),
        "time": milliseconds,
        "request": _request(capture),
        "response": _response(capture),
        "cache": {},
        "timings": {"send": 0, "wait": milliseconds, "receive": 0},
        "comment": f"tunnel {capture.tunnel_name}, capture {capture.id}",
    }


def har_log(captures: Iterable[Capture]) -> dict[str, Any]:
    """
    @param captures: the exchanges, in the order they are listed.
    @return: the HAR document.
    """
    return {
        "log": {
            "version": HAR_VERSION,
            "creator": {"name": "tunnelkit", "version": __version__},
            "pages": [],
            "entries": [_entry(capture) for capture in captures],
        }
    }
