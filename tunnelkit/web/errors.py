"""
The errors of the agent's web API, in ngrok's shape.

Every refusal is an L{ApiError}: a small number (C{error_code}) that
clients can test, the HTTP status, a short C{msg} that names the kind of
failure, and C{details.err} that says what exactly went wrong and, where it
helps, what to do.
"""

from __future__ import annotations

import json

from twisted.web.iweb import IRequest

INVALID_REQUEST = 100
NOT_FOUND = 101
INVALID_TUNNEL = 102
TUNNEL_START_FAILED = 103
NOT_READY = 104
METHOD_NOT_ALLOWED = 105
UNSUPPORTED_MEDIA_TYPE = 106
HOST_NOT_ALLOWED = 107
CANNOT_REPLAY = 108
REPLAY_FAILED = 109

_DEFAULTS: dict[int, tuple[int, str]] = {
    INVALID_REQUEST: (400, "invalid request"),
    NOT_FOUND: (404, "not found"),
    INVALID_TUNNEL: (400, "invalid tunnel configuration"),
    TUNNEL_START_FAILED: (502, "failed to start tunnel"),
    NOT_READY: (503, "tunnelkit is not yet ready to start tunnels"),
    METHOD_NOT_ALLOWED: (405, "method not allowed"),
    UNSUPPORTED_MEDIA_TYPE: (415, "request bodies must be JSON"),
    HOST_NOT_ALLOWED: (403, "host not allowed"),
    CANNOT_REPLAY: (400, "cannot replay this request"),
    REPLAY_FAILED: (502, "failed to replay the request"),
}
"""The HTTP status and message of each error code."""


class ApiError(Exception):
    """
    A request the API refuses.

    @ivar error_code: one of the codes of this module.
    @ivar status_code: the HTTP status of the answer.
    @ivar msg: the kind of failure.
    @ivar err: what exactly went wrong.
    """

    def __init__(self, error_code: int, err: str) -> None:
        status_code, msg = _DEFAULTS[error_code]
        super().__init__(error_code, err)
        self.error_code = error_code
        self.status_code = status_code
        self.msg = msg
        self.err = err

    def to_json(self) -> dict[str, object]:
        """
        @return: the error's JSON object.
        """
        return {
            "error_code": self.error_code,
            "status_code": self.status_code,
            "msg": self.msg,
            "details": {"err": self.err},
        }

    def render(self, request: IRequest) -> bytes:
        """
        Set the request's status and content type for this error.

        @return: the body to send.
        """
        request.setResponseCode(self.status_code)
        return json_body(request, self.to_json())


def json_body(request: IRequest, value: object) -> bytes:
    """
    Set the headers of a JSON answer.

    @return: C{value} as UTF-8 JSON text, ending in a newline.
    """
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"x-content-type-options", b"nosniff")
    return json.dumps(value, ensure_ascii=False).encode("utf-8") + b"\n"
