"""
Tests for L{tunnelkit.agent.fileserver}, the file server of C{file://}
tunnels, with raw HTTP requests over loopback (a TCP connection stands in
for the stream from the edge): listings, content types, C{HEAD}, ranges,
conditional requests, methods, and many ways of trying to leave the root.
"""

import errno
import hashlib
import os
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web import http

from tunnelkit.agent import fileserver
from tunnelkit.agent.filepaths import PathRefused, request_names
from tunnelkit.agent.fileserver import FileServer, content_type, origin_form
from tunnelkit.errorpage import error_page
from tests.e2e import Steps
from tests.rawhttp import RawClients, Response, read_response, read_responses, serve

SECRET = b"TOP SECRET, never served"
HELLO = b"hello world\n"


def write(path: str, data: bytes) -> None:
    """
    Write a file, making its directory.
    """
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def get(path: str, *headers: str, method: str = "GET") -> bytes:
    """
    @return: a request for C{path} (written as it goes on the wire) that
        asks the server to close after answering.
    """
    lines = [f"{method} {path} HTTP/1.1", "Host: files.example", *headers]
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class FileServerTestCase(TestCase):
    """
    A root directory with files, a directory beside it holding a secret,
    and symlinks inside the root that lead in and out; the file server
    listens on loopback.
    """

    def setUp(self) -> Any:
        base = os.path.abspath(self.mktemp())
        self.root = os.path.join(base, "root")
        self.outside = os.path.join(base, "secret")
        self.sibling = os.path.join(base, "root-evil")
        write(os.path.join(self.root, "a.txt"), HELLO)
        write(os.path.join(self.root, "page.html"), b"<p>hi</p>")
        write(os.path.join(self.root, "data.json"), b"{}")
        write(os.path.join(self.root, "image.png"), b"\x89PNG")
        write(os.path.join(self.root, "blob.zzz"), b"?")
        write(os.path.join(self.root, "sub", "b.txt"), b"bee")
        write(os.path.join(self.root, "site", "index.html"), b"<h1>index</h1>")
        write(os.path.join(self.root, 'we<ird> &"name.txt'), b"w")
        os.makedirs(os.path.join(self.root, "empty"))
        write(os.path.join(self.outside, "s.txt"), SECRET)
        write(os.path.join(self.sibling, "s.txt"), SECRET)
        os.symlink("a.txt", os.path.join(self.root, "in.txt"))
        os.symlink("..", os.path.join(self.root, "sub", "up"))
        os.symlink("../secret/s.txt", os.path.join(self.root, "out.txt"))
        os.symlink("../secret", os.path.join(self.root, "outdir"))
        os.symlink(
            os.path.join(self.outside, "s.txt"), os.path.join(self.root, "absout")
        )
        os.symlink("../root-evil/s.txt", os.path.join(self.root, "prefix.txt"))
        os.symlink("/", os.path.join(self.root, "slash"))
        os.symlink("nowhere", os.path.join(self.root, "broken"))
        self.clients = RawClients(self)
        return self.listen(self.root)

    @inlineCallbacks
    def listen(self, root: str) -> Steps[None]:
        """
        Serve C{root} on a new loopback port, kept in C{port}.
        """
        server = FileServer(root, reactor)
        self.port = yield serve(self, server.connection)

    @inlineCallbacks
    def fetch(self, request: bytes, head_only: bool = False) -> Steps[Response]:
        """
        Send one request on a new connection.

        @return: the one response.
        """
        data = yield self.clients.exchange(self.port, request)
        return read_response(data, head_only)


class ListingTests(FileServerTestCase):
    """
    Directories without an index are listed.
    """

    @inlineCallbacks
    def test_root_listing(self) -> Steps[None]:
        """
        The root is listed as HTML: directories first, then files, each
        linked, without a link to a parent.
        """
        response = yield self.fetch(get("/"))

        self.assertEqual(response.status, 200)
        self.assertEqual(response.header("content-type"), "text/html; charset=utf-8")
        body = response.body.decode("utf-8")
        self.assertIn("<title>Index of /</title>", body)
        self.assertLess(body.index('href="./sub/"'), body.index('href="./a.txt"'))
        for link in ("./empty/", "./site/", "./in.txt", "./page.html"):
            self.assertIn(f'href="{link}"', body)
        self.assertNotIn('href="../"', body)

    @inlineCallbacks
    def test_names_escaped_links_quoted(self) -> Steps[None]:
        """
        A name with markup characters is escaped in the text and
        percent-encoded in its link.
        """
        response = yield self.fetch(get("/"))

        body = response.body.decode("utf-8")
        self.assertIn(
            '<a href="./we%3Cird%3E%20%26%22name.txt">we&lt;ird&gt; &amp;&quot;'
            "name.txt</a>",
            body,
        )
        self.assertNotIn("<ird>", body)

    @inlineCallbacks
    def test_outside_links_hidden(self) -> Steps[None]:
        """
        Symlinks that lead out of the root, or nowhere, are not listed.
        """
        response = yield self.fetch(get("/"))

        body = response.body.decode("utf-8")
        for name in ("out.txt", "outdir", "absout", "prefix.txt", "slash", "broken"):
            self.assertNotIn(name, body)

    @inlineCallbacks
    def test_subdirectory(self) -> Steps[None]:
        """
        A subdirectory's listing links to its parent and its entries.
        """
        response = yield self.fetch(get("/sub/"))

        body = response.body.decode("utf-8")
        self.assertIn("<title>Index of /sub/</title>", body)
        self.assertIn('href="../"', body)
        self.assertIn('href="./b.txt"', body)
        self.assertIn('href="./up/"', body)

    @inlineCallbacks
    def test_index(self) -> Steps[None]:
        """
        A directory with an C{index.html} is answered with it.
        """
        response = yield self.fetch(get("/site/"))

        self.assertEqual((response.status, response.body), (200, b"<h1>index</h1>"))
        self.assertEqual(response.header("content-type"), "text/html; charset=utf-8")

    @inlineCallbacks
    def test_redirect_to_slash(self) -> Steps[None]:
        """
        A directory asked for without its trailing slash is redirected to
        it, with the query kept.
        """
        response = yield self.fetch(get("/sub?sort=name"))

        self.assertEqual(response.status, 301)
        self.assertEqual(response.header("location"), "/sub/?sort=name")

    @inlineCallbacks
    def test_head(self) -> Steps[None]:
        """
        C{HEAD} of a listing gives its headers and no body.
        """
        data = yield self.clients.exchange(self.port, get("/", method="HEAD"))

        head, _, body = data.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200 "), head)
        self.assertEqual(body, b"")
        self.assertIn(b"Content-Length: ", head)

    @inlineCallbacks
    def test_unreadable_directory(self) -> Steps[None]:
        """
        A directory that cannot be read is answered with C{403}.
        """
        if os.geteuid() == 0:
            self.skipTest("root reads every directory")
        locked = os.path.join(self.root, "locked")
        os.makedirs(locked)
        os.chmod(locked, 0)
        self.addCleanup(os.chmod, locked, 0o755)

        response = yield self.fetch(get("/locked/"))

        self.assertEqual(response.status, 403)


class FileTests(FileServerTestCase):
    """
    Files, with their types, over keep-alive connections.
    """

    @inlineCallbacks
    def test_text(self) -> Steps[None]:
        """
        A text file is sent whole, typed with its charset, with a length.
        """
        response = yield self.fetch(get("/a.txt"))

        self.assertEqual((response.status, response.body), (200, HELLO))
        self.assertEqual(response.header("content-type"), "text/plain; charset=utf-8")
        self.assertEqual(response.header("content-length"), str(len(HELLO)))
        self.assertEqual(response.header("accept-ranges"), "bytes")

    @inlineCallbacks
    def test_types(self) -> Steps[None]:
        """
        Types come from the extension; binary types carry no charset, and
        an unknown extension is C{application/octet-stream}.
        """
        types = []
        for name in ("page.html", "data.json", "image.png", "blob.zzz"):
            response = yield self.fetch(get("/" + name))
            types.append(response.header("content-type"))

        self.assertEqual(
            types,
            [
                "text/html; charset=utf-8",
                "application/json; charset=utf-8",
                "image/png",
                "application/octet-stream",
            ],
        )

    def test_type_table(self) -> None:
        """
        Compressed files are typed as what they are, not decompressed by a
        content coding.
        """
        self.assertEqual(content_type("logs.tar.gz"), "application/gzip")

    def test_types_without_host_table(self) -> None:
        """
        The types the documentation promises do not depend on the host's
        C{mime.types}: with an empty host table they are still given.
        """
        self.patch(fileserver, "_HOST_TYPES", {})

        types = [content_type(name) for name in ("logs.tar.gz", "a.html", "a.json")]

        self.assertEqual(
            types,
            [
                "application/gzip",
                "text/html; charset=utf-8",
                "application/json; charset=utf-8",
            ],
        )
        self.assertEqual(content_type("a.zzz"), "application/octet-stream")

    @inlineCallbacks
    def test_head(self) -> Steps[None]:
        """
        C{HEAD} gives the headers of the file, its full length included,
        and no body.
        """
        data = yield self.clients.exchange(self.port, get("/a.txt", method="HEAD"))

        response = read_response(data, head_only=True)
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header("content-length"), str(len(HELLO)))
        self.assertTrue(data.endswith(b"\r\n\r\n"), data)

    @inlineCallbacks
    def test_symlink_inside(self) -> Steps[None]:
        """
        A symlink that stays inside the root is followed.
        """
        response = yield self.fetch(get("/in.txt"))
        through_directory = yield self.fetch(get("/sub/up/a.txt"))

        self.assertEqual((response.status, response.body), (200, HELLO))
        self.assertEqual(through_directory.body, HELLO)

    @inlineCallbacks
    def test_encoded_name(self) -> Steps[None]:
        """
        A percent-encoded name reaches its file.
        """
        response = yield self.fetch(get("/we%3Cird%3E%20%26%22name.txt"))

        self.assertEqual((response.status, response.body), (200, b"w"))

    @inlineCallbacks
    def test_keep_alive(self) -> Steps[None]:
        """
        Several requests are answered on one connection, in order.
        """
        first = b"GET /a.txt HTTP/1.1\r\nHost: f\r\n\r\n"
        second = b"HEAD /sub/b.txt HTTP/1.1\r\nHost: f\r\n\r\n"

        data = yield self.clients.exchange(
            self.port, first + second + get("/sub/b.txt")
        )

        responses = read_responses(data, (False, True, False))
        self.assertEqual(
            [(r.status, r.body) for r in responses],
            [(200, HELLO), (200, b""), (200, b"bee")],
        )

    @inlineCallbacks
    def test_half_close(self) -> Steps[None]:
        """
        A client that half-closes after its request still gets the answer.
        """
        request = b"GET /a.txt HTTP/1.1\r\nHost: f\r\n\r\n"

        data = yield self.clients.exchange(self.port, request, half_close=True)

        self.assertEqual(read_response(data).body, HELLO)

    @inlineCallbacks
    def test_large_file(self) -> Steps[None]:
        """
        A file of several megabytes arrives whole and unchanged.
        """
        content = os.urandom(3 * 1024 * 1024 + 17)
        write(os.path.join(self.root, "big.bin"), content)

        response = yield self.fetch(get("/big.bin"))

        self.assertEqual(
            hashlib.sha256(response.body).hexdigest(),
            hashlib.sha256(content).hexdigest(),
        )

    @inlineCallbacks
    def test_unreadable(self) -> Steps[None]:
        """
        A file that cannot be opened for reading is answered with C{403}.
        """

        def refuse(self: Any) -> Any:
            raise PermissionError(errno.EACCES, "Permission denied")

        self.patch(fileserver._ServedFile, "openForReading", refuse)

        response = yield self.fetch(get("/a.txt"))

        self.assertEqual(response.status, 403)
        self.assertNotIn(HELLO, response.body)

    @inlineCallbacks
    def test_unreadable_mode(self) -> Steps[None]:
        """
        A file whose mode forbids reading is answered with C{403}.
        """
        if os.geteuid() == 0:
            self.skipTest("root reads every file")
        os.chmod(os.path.join(self.root, "a.txt"), 0)

        response = yield self.fetch(get("/a.txt"))

        self.assertEqual(response.status, 403)

    @inlineCallbacks
    def test_fifo(self) -> Steps[None]:
        """
        A named pipe is neither listed nor opened: it is not found.
        """
        os.mkfifo(os.path.join(self.root, "pipe"))

        response = yield self.fetch(get("/pipe"))
        listing = yield self.fetch(get("/"))

        self.assertEqual(response.status, 404)
        self.assertNotIn(b"pipe", listing.body)

    def test_symlink_not_opened(self) -> None:
        """
        The opening refuses a path whose last part became a symlink after
        it was resolved.
        """
        served = fileserver._ServedFile(os.path.join(self.root, "out.txt"), "out.txt")

        self.assertRaises(OSError, served.openForReading)

    @inlineCallbacks
    def test_missing(self) -> Steps[None]:
        """
        A name that is not there is C{404}, as is a file asked for as a
        directory.
        """
        missing = yield self.fetch(get("/nope.txt"))
        as_directory = yield self.fetch(get("/a.txt/"))

        self.assertEqual((missing.status, as_directory.status), (404, 404))


class SingleFileTests(FileServerTestCase):
    """
    A root that is one file.
    """

    @inlineCallbacks
    def test_served_at_root_and_name(self) -> Steps[None]:
        """
        The file is served at C{/} and at its own name, and nothing else is.
        """
        yield self.listen(os.path.join(self.root, "a.txt"))

        at_root = yield self.fetch(get("/"))
        by_name = yield self.fetch(get("/a.txt"))
        other = yield self.fetch(get("/page.html"))

        self.assertEqual((at_root.status, at_root.body), (200, HELLO))
        self.assertEqual(at_root.header("content-type"), "text/plain; charset=utf-8")
        self.assertEqual(by_name.body, HELLO)
        self.assertEqual(other.status, 404)


class RangeTests(FileServerTestCase):
    """
    Byte ranges of a file.
    """

    @inlineCallbacks
    def test_single(self) -> Steps[None]:
        """
        A range is answered C{206} with its bytes and C{Content-Range}.
        """
        response = yield self.fetch(get("/a.txt", "Range: bytes=0-4"))

        self.assertEqual((response.status, response.body), (206, b"hello"))
        self.assertEqual(response.header("content-range"), "bytes 0-4/12")
        self.assertEqual(response.header("content-length"), "5")

    @inlineCallbacks
    def test_suffix_and_open(self) -> Steps[None]:
        """
        C{bytes=-N} is the last N bytes, C{bytes=N-} from N to the end.
        """
        suffix = yield self.fetch(get("/a.txt", "Range: bytes=-6"))
        rest = yield self.fetch(get("/a.txt", "Range: bytes=6-"))

        self.assertEqual((suffix.body, rest.body), (b"world\n", b"world\n"))
        self.assertEqual(rest.header("content-range"), "bytes 6-11/12")

    @inlineCallbacks
    def test_unsatisfiable(self) -> Steps[None]:
        """
        A range past the end is C{416} with the file's length.
        """
        response = yield self.fetch(get("/a.txt", "Range: bytes=100-200"))

        self.assertEqual(response.status, 416)
        self.assertEqual(response.header("content-range"), "bytes */12")
        self.assertEqual(response.body, b"")

    @inlineCallbacks
    def test_malformed_ignored(self) -> Steps[None]:
        """
        A C{Range} that does not parse is ignored: the whole file is sent.
        """
        response = yield self.fetch(get("/a.txt", "Range: lines=1-2"))

        self.assertEqual((response.status, response.body), (200, HELLO))

    @inlineCallbacks
    def test_multiple(self) -> Steps[None]:
        """
        Several ranges are sent as C{multipart/byteranges}.
        """
        response = yield self.fetch(get("/a.txt", "Range: bytes=0-1,6-7"))

        self.assertEqual(response.status, 206)
        self.assertTrue(
            (response.header("content-type") or "").startswith(
                "multipart/byteranges; boundary="
            )
        )
        self.assertIn(b"Content-range: bytes 0-1/12\r\n\r\nhe", response.body)
        self.assertIn(b"Content-range: bytes 6-7/12\r\n\r\nwo", response.body)

    @inlineCallbacks
    def test_suffix_longer_than_file(self) -> Steps[None]:
        """
        A suffix longer than the file is the whole file, as a range.
        """
        response = yield self.fetch(get("/a.txt", "Range: bytes=-100"))

        self.assertEqual((response.status, response.body), (206, HELLO))
        self.assertEqual(response.header("content-range"), "bytes 0-11/12")

    @inlineCallbacks
    def test_many_parts_ignored(self) -> Steps[None]:
        """
        A C{Range} asking for the whole of a large file hundreds of times
        is ignored: the file is sent once, with C{200}.
        """
        big = os.urandom(1024 * 1024)
        write(os.path.join(self.root, "big.bin"), big)
        responses = []
        for parts in (500, 1000):
            ranges = ",".join(["0-"] * parts)
            response = yield self.fetch(get("/big.bin", f"Range: bytes={ranges}"))
            responses.append(response)

        for response in responses:
            self.assertEqual(response.status, 200)
            self.assertEqual(response.header("content-length"), str(len(big)))
            self.assertEqual(response.body, big)

    @inlineCallbacks
    def test_overlapping_ignored(self) -> Steps[None]:
        """
        Ranges that overlap, even two of them, are ignored.
        """
        overlapping = yield self.fetch(get("/a.txt", "Range: bytes=0-5,3-8"))
        suffix = yield self.fetch(get("/a.txt", "Range: bytes=-4,6-"))

        self.assertEqual((overlapping.status, overlapping.body), (200, HELLO))
        self.assertEqual((suffix.status, suffix.body), (200, HELLO))

    @inlineCallbacks
    def test_part_limit(self) -> Steps[None]:
        """
        Sixteen separate single bytes are sent as asked; seventeen are
        ignored.
        """
        write(os.path.join(self.root, "abc.txt"), bytes(range(65, 105)))
        sixteen = ",".join(f"{i}-{i}" for i in range(0, 32, 2))
        seventeen = ",".join(f"{i}-{i}" for i in range(0, 34, 2))

        asked = yield self.fetch(get("/abc.txt", f"Range: bytes={sixteen}"))
        ignored = yield self.fetch(get("/abc.txt", f"Range: bytes={seventeen}"))

        self.assertEqual(asked.status, 206)
        self.assertEqual(asked.body.count(b"Content-range: bytes "), 16)
        self.assertEqual(
            (ignored.status, ignored.header("content-length")), (200, "40")
        )


class ConditionalTests(FileServerTestCase):
    """
    C{ETag}, C{Last-Modified} and the conditional headers.
    """

    @inlineCallbacks
    def validators(self) -> Steps[tuple[str, str]]:
        """
        @return: the C{ETag} and C{Last-Modified} of C{/a.txt}.
        """
        response = yield self.fetch(get("/a.txt"))
        etag, modified = response.header("etag"), response.header("last-modified")
        assert etag is not None and modified is not None
        return etag, modified

    @inlineCallbacks
    def test_validators(self) -> Steps[None]:
        """
        A file carries a quoted strong C{ETag} and its modification time.
        """
        os.utime(os.path.join(self.root, "a.txt"), (1700000000, 1700000000))

        etag, modified = yield self.validators()

        self.assertTrue(etag.startswith('"') and etag.endswith('"'), etag)
        self.assertEqual(modified, "Tue, 14 Nov 2023 22:13:20 GMT")

    @inlineCallbacks
    def test_if_none_match(self) -> Steps[None]:
        """
        C{If-None-Match} naming the tag, alone, in a list, weakly or as
        C{*}, gives C{304} without a body but with the tag.
        """
        etag, _ = yield self.validators()
        statuses = []
        for value in (etag, f'"other", {etag}', f"W/{etag}", "*"):
            response = yield self.fetch(get("/a.txt", f"If-None-Match: {value}"))
            statuses.append((response.status, response.body, response.header("etag")))

        self.assertEqual(statuses, [(304, b"", etag)] * 4)

    @inlineCallbacks
    def test_if_none_match_other(self) -> Steps[None]:
        """
        Another tag gives the file.
        """
        response = yield self.fetch(get("/a.txt", 'If-None-Match: "stale"'))

        self.assertEqual((response.status, response.body), (200, HELLO))

    @inlineCallbacks
    def test_changed_file_new_tag(self) -> Steps[None]:
        """
        The tag changes when the file does.
        """
        etag, _ = yield self.validators()
        write(os.path.join(self.root, "a.txt"), b"changed content\n")

        response = yield self.fetch(get("/a.txt", f"If-None-Match: {etag}"))

        self.assertEqual(response.status, 200)
        self.assertNotEqual(response.header("etag"), etag)

    @inlineCallbacks
    def test_if_modified_since(self) -> Steps[None]:
        """
        C{If-Modified-Since} at or after the modification time gives
        C{304}; an earlier date gives the file.
        """
        os.utime(os.path.join(self.root, "a.txt"), (1700000000, 1700000000))
        same = http.datetimeToString(1700000000).decode()
        earlier = http.datetimeToString(1600000000).decode()

        current = yield self.fetch(get("/a.txt", f"If-Modified-Since: {same}"))
        stale = yield self.fetch(get("/a.txt", f"If-Modified-Since: {earlier}"))

        self.assertEqual((current.status, current.body), (304, b""))
        self.assertEqual((stale.status, stale.body), (200, HELLO))

    @inlineCallbacks
    def test_none_match_wins(self) -> Steps[None]:
        """
        With C{If-None-Match}, C{If-Modified-Since} is not looked at.
        """
        future = http.datetimeToString(4000000000).decode()

        response = yield self.fetch(
            get("/a.txt", 'If-None-Match: "stale"', f"If-Modified-Since: {future}")
        )

        self.assertEqual(response.status, 200)

    @inlineCallbacks
    def test_if_range(self) -> Steps[None]:
        """
        C{If-Range} with the current tag or date gives the range; with a
        stale one, the whole file.
        """
        etag, modified = yield self.validators()
        results = []
        for condition in (etag, modified, '"stale"', "Mon, 01 Jan 2001 00:00:00 GMT"):
            response = yield self.fetch(
                get("/a.txt", "Range: bytes=0-4", f"If-Range: {condition}")
            )
            results.append((response.status, response.body))

        self.assertEqual(
            results, [(206, b"hello"), (206, b"hello"), (200, HELLO), (200, HELLO)]
        )


class MethodTests(FileServerTestCase):
    """
    Only C{GET} and C{HEAD} are served.
    """

    @inlineCallbacks
    def test_not_allowed(self) -> Steps[None]:
        """
        Other methods get C{405} with C{Allow}, and change nothing.
        """
        results = []
        for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH"):
            response = yield self.fetch(
                get("/a.txt", "Content-Length: 0", method=method)
            )
            results.append((response.status, response.header("allow")))

        self.assertEqual(results, [(405, "GET, HEAD")] * 5)
        with open(os.path.join(self.root, "a.txt"), "rb") as f:
            self.assertEqual(f.read(), HELLO)

    @inlineCallbacks
    def test_body_dropped(self) -> Steps[None]:
        """
        The body of a refused request is read and dropped, and the next
        request on the connection is answered.
        """
        body = b"x" * 300_000
        refused = b"POST /a.txt HTTP/1.1\r\nHost: f\r\nContent-Length: %d\r\n\r\n" % (
            len(body),
        )

        data = yield self.clients.exchange(self.port, refused + body + get("/a.txt"))

        responses = read_responses(data)
        self.assertEqual([r.status for r in responses], [405, 200])
        self.assertEqual(responses[1].body, HELLO)


TRAVERSALS = [
    "/../secret/s.txt",
    "/%2e%2e/secret/s.txt",
    "/%2E%2e/secret/s.txt",
    "/.%2e/secret/s.txt",
    "/sub/../../secret/s.txt",
    "/sub/%2e%2e/%2e%2e/secret/s.txt",
    "/sub/..%2f..%2fsecret/s.txt",
    "/..%2fsecret%2fs.txt",
    "/%2e%2e%2fsecret%2fs.txt",
    "/..%5csecret%5cs.txt",
    "/..%5C..%5Csecret%5Cs.txt",
    "/..\\secret\\s.txt",
    "//secret/s.txt",
    "/sub//../../secret/s.txt",
    "/%2fsecret/s.txt",
    "/%c0%ae%c0%ae/secret/s.txt",
    "/./../secret/s.txt",
    "/out.txt",
    "/outdir/s.txt",
    "/outdir/",
    "/absout",
    "/prefix.txt",
    "/slash/etc/passwd",
    "/sub/up/../secret/s.txt",
    "/a.txt%00.html",
    "/secret%00/../a.txt",
    "http://files.example/../secret/s.txt",
]
"""Request paths that try to reach the secret beside the root."""


class TraversalTests(FileServerTestCase):
    """
    No request path reaches a file outside the root.
    """

    @inlineCallbacks
    def test_refused(self) -> Steps[None]:
        """
        Each attempt is answered C{404} (or C{400} when malformed), and no
        answer holds the secret.
        """
        answers = {}
        for path in TRAVERSALS:
            data = yield self.clients.exchange(self.port, get(path))
            answers[path] = data

        for path, data in answers.items():
            self.assertNotIn(SECRET, data, path)
            status = read_response(data).status
            self.assertIn(status, (400, 404), f"{path} gave {status}")

    @inlineCallbacks
    def test_full_path_of_secret(self) -> Steps[None]:
        """
        The absolute path of the secret, written after the root's slash, is
        not found.
        """
        response = yield self.fetch(get("/" + os.path.join(self.outside, "s.txt")))

        self.assertIn(response.status, (400, 404))
        self.assertNotIn(SECRET, response.body)

    def test_names_checked_before_decoding(self) -> None:
        """
        Encoded slashes do not split a name, and encoded dots are dots.
        """
        self.assertRaises(PathRefused, request_names, b"/a%2fb")
        self.assertRaises(PathRefused, request_names, b"/%2E%2E")
        self.assertEqual(request_names(b"/a%20b/c/"), ([b"a b", b"c"], True))

    def test_nul_malformed(self) -> None:
        """
        A NUL byte makes the path malformed (C{400}), not merely missing.
        """
        refused = self.assertRaises(PathRefused, request_names, b"/a%00b")

        self.assertEqual(refused.status, 400)


class AbsoluteFormTests(FileServerTestCase):
    """
    A request target in absolute form is served by its path and query.
    """

    @inlineCallbacks
    def test_file(self) -> Steps[None]:
        """
        C{GET http://host/a.txt} is the file at C{/a.txt}.
        """
        response = yield self.fetch(get("http://files.example/a.txt"))

        self.assertEqual((response.status, response.body), (200, HELLO))

    @inlineCallbacks
    def test_redirect_keeps_query(self) -> Steps[None]:
        """
        A directory without its slash is redirected to its path with the
        slash, in origin form, with the query kept.
        """
        response = yield self.fetch(get("HTTPS://files.example:8443/sub?x=1"))

        self.assertEqual(response.status, 301)
        self.assertEqual(response.header("location"), "/sub/?x=1")

    @inlineCallbacks
    def test_no_path(self) -> Steps[None]:
        """
        An absolute target without a path names the root.
        """
        response = yield self.fetch(get("http://files.example"))

        self.assertEqual(response.status, 200)
        self.assertIn(b"<title>Index of /</title>", response.body)

    def test_origin_form(self) -> None:
        """
        L{origin_form} splits the query from the path, whatever the form.
        """
        self.assertEqual(origin_form(b"/a?b=c"), (b"/a", b"b=c"))
        self.assertEqual(origin_form(b"/a?"), (b"/a", b""))
        self.assertEqual(origin_form(b"http://h/a/b"), (b"/a/b", None))
        self.assertEqual(origin_form(b"http://h?q"), (b"/", b"q"))
        self.assertEqual(origin_form(b"ftp://h/a"), (b"ftp://h/a", None))


class ErrorPageTests(FileServerTestCase):
    """
    The file server's refusals are tunnelkit's error pages.
    """

    @inlineCallbacks
    def test_not_found_page(self) -> Steps[None]:
        """
        A missing file is answered with the page of L{error_page}, and its
        code in the error code header.
        """
        response = yield self.fetch(get("/missing.txt"))

        self.assertEqual(response.status, 404)
        self.assertEqual(response.header("tunnelkit-error-code"), "TK_FILE_NOT_FOUND")
        self.assertEqual(
            response.body,
            error_page(
                404,
                "TK_FILE_NOT_FOUND",
                "Not found",
                "There is no file at this address.",
            ),
        )


class QuietTests(FileServerTestCase):
    """
    The file server writes no access log above debug level.
    """

    @inlineCallbacks
    def test_no_access_log(self) -> Steps[None]:
        """
        Answering requests, refused ones included, logs nothing at info or
        above from twisted.web or the file server.
        """
        events: list[dict[str, Any]] = []

        def observe(event: dict[str, Any]) -> None:
            namespace = event.get("log_namespace", "")
            if event.get("log_level", LogLevel.info) >= LogLevel.info and (
                namespace.startswith(("twisted.web", "tunnelkit.agent"))
                or namespace == "log_legacy"
            ):
                events.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

        yield self.fetch(get("/a.txt"))
        yield self.fetch(get("/a.txt", "Range: nonsense"))
        yield self.fetch(get("/../x"))
        yield self.fetch(get("/a.txt", method="HEAD"), head_only=True)

        self.assertEqual(events, [])


class FlowTests(TestCase):
    """
    A file is read as the connection takes it.
    """

    @inlineCallbacks
    def test_paused_connection_stops_reading(self) -> Steps[None]:
        """
        When the transport pauses the connection as the file starts, none
        of it is read until the transport resumes; then all of it follows.
        """
        root = os.path.abspath(self.mktemp())
        content = os.urandom(1024 * 1024)
        write(os.path.join(root, "big.bin"), content)
        channel = FileServer(root, Clock()).connection()
        transport = StringTransport()
        channel.makeConnection(transport)
        self.addCleanup(channel.connectionLost, None)

        channel.dataReceived(b"GET /big.bin HTTP/1.1\r\nHost: f\r\n\r\n")
        channel.pauseProducing()
        for _ in range(5):
            yield deferLater(reactor, 0, lambda: None)
        while_paused = len(transport.value())
        channel.resumeProducing()
        while not transport.value().endswith(content[-64:]):
            yield deferLater(reactor, 0, lambda: None)

        self.assertLess(while_paused, 1024)
        self.assertEqual(transport.value().split(b"\r\n\r\n", 1)[1], content)


class IdleTests(SynchronousTestCase):
    """
    An idle connection is closed after the idle timeout.
    """

    def test_idle_closed(self) -> None:
        """
        With no request for the idle timeout, the connection is closed,
        and it is aborted if it does not go away.
        """
        clock = Clock()
        channel = FileServer("/nonexistent", clock, idle_timeout=5).connection()
        transport = StringTransport()
        channel.makeConnection(transport)

        clock.advance(5)
        closing = transport.disconnecting
        clock.advance(channel.abortTimeout or 0)

        self.assertTrue(closing)
        self.assertTrue(transport.disconnected)

    def test_lost_fires_closed(self) -> None:
        """
        C{closed} fires when the connection is lost, and no timer is left.
        """
        clock = Clock()
        channel = FileServer("/nonexistent", clock).connection()
        channel.makeConnection(StringTransport())

        channel.connectionLost(None)  # type: ignore[arg-type]

        self.assertIsNone(self.successResultOf(channel.closed))
        self.assertEqual(clock.getDelayedCalls(), [])
