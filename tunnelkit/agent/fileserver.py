"""
The built-in file server of C{file://} tunnels: a directory, or one file,
served over a stream as HTTP/1.1 with keep-alive.

It is built on C{twisted.web}: each stream gets an L{HTTPChannel} of a
L{Site} whose one resource resolves the request path itself (with
L{tunnelkit.agent.filepaths}, which never leaves the root) and serves what
it names. Files are sent by the producers of L{twisted.web.static.File}, so
a large file is read as the stream's window allows, never whole; single
and multiple byte ranges, C{ETag}, C{Last-Modified} and the conditional
headers C{If-None-Match}, C{If-Modified-Since} and C{If-Range} are honoured.
Directories without an C{index.html} get an HTML listing. Only C{GET} and
C{HEAD} are served; request bodies are read and dropped.
"""

import errno
import hashlib
import html
import io
import os
import stat
import time
from typing import IO, Any
from urllib.parse import quote, unquote_to_bytes

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http, server, static
from twisted.web.resource import Resource
from zope.interface import implementer

from tunnelkit.agent.filepaths import PathRefused, Target, resolve, servable_entry
from tunnelkit.errorpage import ERROR_CODE_HEADER, error_page

_log = Logger()

IDLE_TIMEOUT = 60.0
"""Seconds a connection may wait between requests before it is closed."""

ALLOWED_METHODS = b"GET, HEAD"
"""The methods the file server answers; others get C{405}."""

INDEX_NAME = "index.html"
"""The file served in place of a directory's listing."""

MAX_RANGES = 16
"""The most parts a C{Range} header may ask for; one with more is ignored."""

OWN_TYPES = {
    ".css": "text/css",
    ".gif": "image/gif",
    ".gz": "application/gzip",
    ".htm": "text/html",
    ".html": "text/html",
    ".ico": "image/vnd.microsoft.icon",
    ".jpeg": "image/jpeg",
    ".jpg": "image/jpeg",
    ".js": "application/javascript",
    ".json": "application/json",
    ".md": "text/markdown",
    ".mjs": "application/javascript",
    ".mp4": "video/mp4",
    ".pdf": "application/pdf",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".tar": "application/x-tar",
    ".tgz": "application/gzip",
    ".txt": "text/plain",
    ".wasm": "application/wasm",
    ".webp": "image/webp",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".xml": "application/xml",
    ".zip": "application/zip",
}
"""The types of common web files, and of compressed files, which the file
server gives whatever the host's C{mime.types} says; other extensions are
looked up there."""

_HOST_TYPES = static.loadMimeTypes()
_DEFAULT_TYPE = "application/octet-stream"
_TEXT_TYPES = ("application/javascript", "application/json", "application/xml")


def content_type(name: str) -> str:
    """
    @param name: a file name.
    @return: its C{Content-Type}, from its extension; text types carry
        C{charset=utf-8}, and an unknown extension is
        C{application/octet-stream}.
    """
    extension = os.path.splitext(name)[1].lower()
    kind = OWN_TYPES.get(extension) or _HOST_TYPES.get(extension, _DEFAULT_TYPE)
    textual = (
        kind.startswith("text/")
        or kind in _TEXT_TYPES
        or kind.endswith(("+xml", "+json"))
    )
    return f"{kind}; charset=utf-8" if textual else kind


def entity_tag(status: os.stat_result) -> bytes:
    """
    @return: a strong C{ETag} for a file in the state C{status} describes:
        it changes when the file's inode, size or modification time does.
    """
    identity = f"{status.st_dev}:{status.st_ino}:{status.st_size}:{status.st_mtime_ns}"
    digest = hashlib.blake2b(identity.encode("ascii"), digest_size=12).hexdigest()
    return f'"{digest}"'.encode("ascii")


def _tags(header: bytes) -> list[bytes]:
    """
    @return: the entity tags listed in an C{If-None-Match} header, C{*}
        included as it is.
    """
    return [tag.strip() for tag in header.split(b",") if tag.strip()]


def _weak_match(header: bytes, etag: bytes) -> bool:
    """
    @return: whether C{If-None-Match} names C{etag}, comparing weakly.
    """
    for tag in _tags(header):
        if tag == b"*" or tag.removeprefix(b"W/") == etag:
            return True
    return False


def _http_date(header: bytes) -> int | None:
    """
    @return: the seconds since the epoch an HTTP date stands for, or
        C{None} when it is not a date.
    """
    try:
        return int(http.stringToDatetime(header.split(b";", 1)[0].strip()))
    except (ValueError, IndexError):
        return None


def origin_form(target: bytes) -> tuple[bytes, bytes | None]:
    """
    Read the path and the query of a request target, which may be in
    absolute form (C{http://host/path?query}), as RFC 9112 section 3.2.2
    asks of a server; the host in it is not used.

    @param target: the request target as sent.
    @return: the path, still percent-encoded (C{/} when an absolute
        target has none), and the query, or C{None} when there is none.
    """
    target, question, query = target.partition(b"?")
    scheme, separator, rest = target.partition(b"://")
    if separator and scheme.lower() in (b"http", b"https"):
        slash = rest.find(b"/")
        target = rest[slash:] if slash >= 0 else b"/"
    return target, query if question else None


_PAGES = {
    301: ("TK_FILE_MOVED", "Moved"),
    400: ("TK_FILE_BAD_PATH", "Bad request path"),
    403: ("TK_FILE_FORBIDDEN", "Not readable"),
    404: ("TK_FILE_NOT_FOUND", "Not found"),
    405: ("TK_FILE_METHOD_NOT_ALLOWED", "Method not allowed"),
}
"""The stable code and the heading of each page the file server answers
with instead of a file or a listing."""


def _format_size(size: int) -> str:
    """
    @return: a size as people read it: C{512 B}, C{1.5 KiB}, C{12.0 MiB}.
    """
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


class _ServedFile(static.File):
    """
    One regular file, sent with Twisted's range-aware producers.

    @ivar name: the name the file was requested by, which gives its type.
    """

    contentEncodings: dict[str, str] = {}

    def __init__(self, path: str, name: str) -> None:
        super().__init__(path, defaultType=_DEFAULT_TYPE)
        self.name = name
        # typing note: twisted.web declares File.type and File.encoding as
        # None at class level, where they mean "not computed yet".
        self.type = content_type(name)  # type: ignore[assignment]
        self.encoding = None
        self._size = 0

    def getFileSize(self) -> int:
        """
        @return: the size of the file as opened, which the ranges refer to.
        """
        return self._size

    def _rangeToOffsetAndSize(
        self, start: int | None, end: int | None
    ) -> tuple[int, int]:
        """
        Measure one part of a C{Range} header against the file.

        @param start: the first byte asked for, or C{None} for a suffix.
        @param end: the last byte asked for (the suffix's length when
            C{start} is C{None}), or C{None} for the rest of the file.
        @return: C{(offset, size)} of the bytes the part names, clipped to
            the file (a suffix longer than the file is the whole file), or
            C{(0, 0)} when it names none.
        """
        size = self.getFileSize()
        if start is None:
            assert end is not None
            offset = max(size - end, 0)
            stop = size
        else:
            offset = start
            stop = size if end is None else min(end + 1, size)
        if offset >= stop:
            return 0, 0
        return offset, stop - offset

    def _ranges_usable(self, parts: list[tuple[int | None, int | None]]) -> bool:
        """
        @return: whether the parts of a C{Range} header may be answered as
            asked: at most L{MAX_RANGES} of them, none overlapping another,
            and together no longer than the file. Any other is ignored, as
            RFC 9110 section 14.2 allows, so that a short header cannot ask
            for many copies of the file.
        """
        if len(parts) > MAX_RANGES:
            return False
        spans = sorted(self._rangeToOffsetAndSize(*part) for part in parts)
        spans = [span for span in spans if span != (0, 0)]
        if sum(length for offset, length in spans) > self.getFileSize():
            return False
        for (offset, length), (following, _) in zip(spans, spans[1:]):
            if offset + length > following:
                return False
        return True

    def openForReading(self) -> IO[bytes]:
        """
        Open the file without blocking, and only if it is a regular file
        and not (any more) a symlink: its path is already the real one.

        @raise OSError: when it cannot be opened, or is no regular file.
        """
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW
        descriptor = os.open(self.path, flags)
        opened = os.fdopen(descriptor, "rb")
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            opened.close()
            raise OSError(errno.ENOENT, "not a regular file", self.path)
        return opened

    def serve(self, request: server.Request, respond: "_Respond") -> object:
        """
        Answer a C{GET} or C{HEAD} for this file.

        @return: L{server.NOT_DONE_YET}.
        """
        try:
            opened = self.openForReading()
        except OSError as error:
            if error.errno in (errno.EACCES, errno.EPERM):
                return respond(403, "This file cannot be read.")
            return respond(404, "There is no file at this address.")
        status = os.fstat(opened.fileno())
        self._size = status.st_size
        etag = entity_tag(status)
        modified = int(status.st_mtime)
        request.setHeader(b"ETag", etag)
        request.setHeader(b"Last-Modified", http.datetimeToString(modified))
        request.setHeader(b"Accept-Ranges", b"bytes")

        if self._not_modified(request, etag, modified):
            opened.close()
            request.setResponseCode(http.NOT_MODIFIED)
            return respond.finish(b"")
        self._drop_unusable_range(request, etag, modified)
        if request.method == b"HEAD":
            opened.close()
            self._setContentHeaders(request)
            return respond.finish(b"")
        self.makeProducer(request, opened).start()
        return server.NOT_DONE_YET

    @staticmethod
    def _not_modified(request: server.Request, etag: bytes, modified: int) -> bool:
        """
        @return: whether the client's copy is current: C{If-None-Match}
            names the tag, or, without it, C{If-Modified-Since} is not
            older than the file.
        """
        none_match = request.getHeader(b"if-none-match")
        if none_match is not None:
            return _weak_match(none_match, etag)
        since = request.getHeader(b"if-modified-since")
        if since is None:
            return False
        date = _http_date(since)
        return date is not None and modified <= date

    def _drop_unusable_range(
        self, request: server.Request, etag: bytes, modified: int
    ) -> None:
        """
        Forget a C{Range} header that must be ignored, so the whole file is
        sent: one that does not parse, one with too many, overlapping or
        too long parts, or one whose C{If-Range} names another version of
        the file (by strong tag, or exact date).
        """
        byte_range = request.getHeader(b"range")
        if byte_range is None:
            return
        try:
            usable = self._ranges_usable(self._parseRangeHeader(byte_range))
        except ValueError:
            usable = False
        condition = request.getHeader(b"if-range")
        if usable and condition is not None:
            condition = condition.strip()
            if condition.startswith((b'"', b"W/")):
                usable = condition == etag
            else:
                usable = _http_date(condition) == modified
        if not usable:
            request.requestHeaders.removeHeader(b"range")


class _Respond:
    """
    Finish a request with a status and a small page, or a given body, as
    C{HEAD} wants it: with the length but without the body.
    """

    def __init__(self, request: server.Request) -> None:
        self.request = request

    def __call__(
        self, status: int, sentence: str, headers: dict[bytes, bytes] | None = None
    ) -> object:
        self.request.setResponseCode(status)
        for name, value in (headers or {}).items():
            self.request.setHeader(name, value)
        code, title = _PAGES[status]
        self.request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        self.request.setHeader(b"Cache-Control", b"no-store")
        self.request.setHeader(ERROR_CODE_HEADER, code.encode("ascii"))
        return self.finish(error_page(status, code, title, sentence))

    def finish(self, body: bytes) -> object:
        """
        Send C{body} (not for C{HEAD}, nor for C{304}) and finish.

        @return: L{server.NOT_DONE_YET}, for the resource to return.
        """
        request = self.request
        if body or request.code != http.NOT_MODIFIED:
            if request.responseHeaders.getRawHeaders(b"content-length") is None:
                request.setHeader(b"Content-Length", b"%d" % (len(body),))
        if request.method != b"HEAD":
            request.write(body)
        request.finish()
        return server.NOT_DONE_YET


class FileResource(Resource):
    """
    The file server's one resource: it resolves the whole request path and
    answers for the file or directory it names.
    """

    isLeaf = True

    def __init__(self, root: str) -> None:
        """
        @param root: the absolute path of the directory or file served.
        """
        super().__init__()
        self.root = root

    def render(self, request: server.Request) -> object:
        """
        Answer one request.

        @return: L{server.NOT_DONE_YET}; the answer is written here or by a
            file producer.
        """
        request.setHeader(b"Server", b"tunnelkit")
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        respond = _Respond(request)
        if request.method not in (b"GET", b"HEAD"):
            return respond(
                405,
                "The file server answers GET and HEAD only.",
                {b"Allow": ALLOWED_METHODS},
            )
        raw_path, query = origin_form(request.uri)
        try:
            target = resolve(self.root, raw_path)
        except PathRefused as refused:
            return respond(refused.status, refused.sentence)

        if not target.is_directory:
            if target.wants_directory and not target.at_root:
                return respond(404, "There is no directory at this address.")
            return _ServedFile(target.path, target.name).serve(request, respond)
        if not target.wants_directory:
            location = raw_path + b"/"
            if query is not None:
                location += b"?" + query
            return respond(
                301,
                "The directory is at this address with a slash at the end.",
                {b"Location": location},
            )
        index = servable_entry(target.path, INDEX_NAME, os.path.realpath(self.root))
        if index is not None and stat.S_ISREG(index[1].st_mode):
            return _ServedFile(index[0], INDEX_NAME).serve(request, respond)
        return self._listing(request, respond, target, raw_path)

    def _listing(
        self,
        request: server.Request,
        respond: _Respond,
        target: Target,
        raw_path: bytes,
    ) -> object:
        """
        Answer with an HTML listing of a directory.
        """
        root = os.path.realpath(self.root)
        try:
            names = sorted(os.listdir(target.path))
        except OSError as error:
            if error.errno in (errno.EACCES, errno.EPERM):
                return respond(403, "This directory cannot be listed.")
            return respond(404, "There is no directory at this address.")

        shown = unquote_to_bytes(raw_path).decode("utf-8", "replace")
        rows = []
        if not target.at_root:
            rows.append('<tr><td><a href="../">../</a></td><td></td><td></td></tr>')
        entries = []
        for name in names:
            entry = servable_entry(target.path, name, root)
            if entry is not None:
                status = entry[1]
                entries.append((not stat.S_ISDIR(status.st_mode), name, status))
        for is_file, name, status in sorted(entries):
            slash = "" if is_file else "/"
            href = "./" + quote(os.fsencode(name)) + slash
            label = os.fsencode(name).decode("utf-8", "replace") + slash
            size = _format_size(status.st_size) if is_file else "-"
            when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(status.st_mtime))
            rows.append(
                f'<tr><td><a href="{html.escape(href)}">{html.escape(label)}</a></td>'
                f"<td>{size}</td><td>{when} UTC</td></tr>"
            )
        title = html.escape(f"Index of {shown}")
        body = (
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{title}</title>\n<style>\n"
            "body { font-family: system-ui, sans-serif; margin: 2rem; }\n"
            "td { padding: .2rem 1.5rem .2rem 0; }\n"
            "td:nth-child(2) { text-align: right; }\n"
            "</style>\n</head>\n<body>\n"
            f"<h1>{title}</h1>\n<table>\n"
            "<tr><th>Name</th><th>Size</th><th>Modified</th></tr>\n"
            + "\n".join(rows)
            + "\n</table>\n</body>\n</html>\n"
        ).encode("utf-8")
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-cache")
        return respond.finish(body)


class _FileRequest(server.Request):
    """
    A request whose body, which the file server never needs, is dropped
    as it arrives instead of being kept in memory or a temporary file.
    """

    def gotLength(self, length: int | None) -> None:
        # typing note: twisted.web types Request.content by its initial None.
        self.content = _Discard()  # type: ignore[assignment]


class _Discard(io.BytesIO):
    """
    A file that forgets what is written to it, and so reads empty.
    """

    def write(self, data: Any) -> int:
        """
        Drop C{data}.

        @return: its length, as if it had been written.
        """
        return len(data)


@implementer(IHalfCloseableProtocol)
class FileChannel(http.HTTPChannel):
    """
    An HTTP connection of the file server on one stream.

    When the client half-closes after its last request, the answers still
    in progress are sent before the stream is closed. An idle connection is
    closed after L{IDLE_TIMEOUT}, and logged at debug level only.

    @ivar closed: fires with C{None} when the connection is gone.
    """

    # typing note: a stream's transport aborts, which ITransport does not
    # declare.
    transport: Any

    def __init__(self) -> None:
        super().__init__()
        self.closed: Deferred[None] = Deferred()
        self._read_closed = False

    # _handlingRequest and _abortingCall are HTTPChannel's documented
    # instance variables: whether an answer is in progress, and the call
    # that aborts a connection that did not close after its timeout.

    def readConnectionLost(self) -> None:
        self._read_closed = True
        if not self._handlingRequest:
            self.loseConnection()

    def writeConnectionLost(self) -> None:
        """
        Nothing to do: the stream closes once both sides have closed.
        """

    def requestDone(self, request: Any) -> None:
        super().requestDone(request)
        if self._read_closed and not self._handlingRequest:
            self.loseConnection()

    def timeoutConnection(self) -> None:
        _log.debug("closing an idle file server connection")
        if self.abortTimeout is not None:
            self._abortingCall = self.callLater(
                self.abortTimeout, self.transport.abortConnection
            )
        self.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        if not self.closed.called:
            self.closed.callback(None)


class FileSite(server.Site):
    """
    The file server's site: quiet (its access log goes to the debug level),
    with L{FileChannel} connections and no tracebacks shown to clients.
    """

    protocol = FileChannel  # type: ignore[assignment]
    requestFactory = _FileRequest
    displayTracebacks = False
    noisy = False

    def log(self, request: http.Request) -> None:
        """
        Log one answered request at debug level.
        """
        _log.debug(
            "file server answered {method} {path} with {code}",
            method=request.method.decode("ascii", "replace"),
            path=request.path.decode("ascii", "replace"),
            code=request.code,
        )


class FileServer:
    """
    Serve one directory or file to any number of streams.
    """

    def __init__(
        self, root: str, reactor: Any, idle_timeout: float = IDLE_TIMEOUT
    ) -> None:
        """
        @param root: the absolute path served.
        @param reactor: the reactor for the connections' timeouts.
        @param idle_timeout: seconds a connection may idle between requests.
        """
        self.root = root
        self.site = FileSite(FileResource(root), timeout=idle_timeout, reactor=reactor)

    def connection(self) -> FileChannel:
        """
        @return: the protocol for one more stream.
        """
        channel = self.site.buildProtocol(None)
        assert isinstance(channel, FileChannel)
        return channel
