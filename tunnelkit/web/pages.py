"""
The agent's web pages: the inspector at C{/inspect/http}, the status page at
C{/status}, and the style sheets and scripts they load from C{/static/},
all shipped inside the package so they work without a network.

The pages are plain files: everything they show comes from the REST API,
which they call from the browser. This module only serves them, each with
its content type and with headers that keep a browser from guessing types,
framing the pages or running scripts from anywhere else.
"""

from functools import cache
from importlib.resources import files
from typing import Mapping

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, NoResource, Resource
from twisted.web.util import Redirect, redirectTo

INSPECTOR_PATH = b"/inspect/http"
"""Where the inspector is, and where C{/} sends a browser."""

_CONTENT_TYPES = {
    ".css": b"text/css; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".html": b"text/html; charset=utf-8",
}
"""The content type of each kind of file served; files of other kinds in the
package directories are not served."""

_POLICY = (
    b"default-src 'none'; script-src 'self'; style-src 'self';"
    b" style-src-attr 'unsafe-inline'; img-src 'self'; connect-src 'self';"
    b" base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""The C{Content-Security-Policy} of the pages: scripts and style sheets from
the package only (no inline script, so captured text that slipped into the
page could not run), requests to the agent only, and no framing. Style
attributes are allowed because the error report of the browser's XML parser
carries them."""


@cache
def _files(directory: str) -> Mapping[str, tuple[bytes, bytes]]:
    """
    Read the files of one of the package's asset directories, once.

    @param directory: C{static} or C{templates}.
    @return: each file's name mapped to its content type and bytes.
    """
    found = {}
    for entry in files(__package__).joinpath(directory).iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in _CONTENT_TYPES:
            found[entry.name] = (_CONTENT_TYPES[suffix], entry.read_bytes())
    return found


class _Asset(Resource):
    """
    One file, answered to C{GET} and C{HEAD} with its content type.
    """

    isLeaf = True

    def __init__(self, content_type: bytes, body: bytes) -> None:
        super().__init__()
        self.content_type = content_type
        self.body = body

    def render_GET(self, request: IRequest) -> bytes:
        request.setHeader(b"content-type", self.content_type)
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"referrer-policy", b"no-referrer")
        if self.content_type.startswith(b"text/html"):
            request.setHeader(b"content-security-policy", _POLICY)
            request.setHeader(b"x-frame-options", b"DENY")
        return self.body


class _Page(_Asset):
    """
    An HTML page at a path with no children: C{/status/x} is not found.
    """

    isLeaf = False

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        return NoResource()


class _ToInspector(Resource):
    """
    A directory whose own path, with or without its slash, redirects to the
    inspector.
    """

    def __init__(self) -> None:
        super().__init__()
        self.putChild(b"", Redirect(INSPECTOR_PATH))

    def render_GET(self, request: IRequest) -> bytes:
        return redirectTo(INSPECTOR_PATH, request)


class _StaticFiles(Resource):
    """
    The files of the package's C{static} directory, by name: no listing, no
    subdirectories, and nothing outside it.
    """

    def render_GET(self, request: IRequest) -> bytes:
        return NoResource().render(request)

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        found = _files("static").get(path.decode("utf-8", "replace"))
        if found is None:
            return NoResource()
        return _Asset(*found)


def pages_resource() -> IResource:
    """
    The pages of the agent's web interface, for the web app to mount at
    C{/}: C{/} redirects (302) to the inspector, C{/inspect/http} is the
    inspector, C{/status} the status page, and C{/static/NAME} the files they
    load.
    """
    templates = _files("templates")
    root = _ToInspector()
    inspect = _ToInspector()
    inspect.putChild(b"http", _Page(*templates["inspector.html"]))
    root.putChild(b"inspect", inspect)
    root.putChild(b"status", _Page(*templates["status.html"]))
    root.putChild(b"static", _StaticFiles())
    return root
