"""
End-to-end tests of the built-in file server: C{tunnelkit http
file:///DIR} behind a real edge, fetched with C{curl} as a browser or a
script would, including requests crafted to read outside C{DIR}.
"""

import gzip
import os
import random
import uuid

from twisted.internet.defer import inlineCallbacks

from tests.e2e import Steps
from tests.webtunnels import HttpTunnelTestCase

HELLO = b"hello through the tunnel\n"
BLOB_SIZE = 100 * 1024

TRAVERSALS = [
    ("/../outside/secret.txt", 404),
    ("/./../outside/secret.txt", 404),
    ("/sub/../../outside/secret.txt", 404),
    ("/%2e%2e/outside/secret.txt", 404),
    ("/.%2e/outside/secret.txt", 404),
    ("/%2E%2E%2Foutside%2Fsecret.txt", 404),
    ("/..%2foutside%2fsecret.txt", 404),
    ("/sub/..%2f..%2foutside%2fsecret.txt", 404),
    ("/sub/%2e%2e/%2e%2e/outside/secret.txt", 404),
    ("/%252e%252e/outside/secret.txt", 404),
    ("/%c0%ae%c0%ae/outside/secret.txt", 404),
    ("/..\\outside\\secret.txt", 404),
    ("/%5c..%5coutside%5csecret.txt", 404),
    ("/sub/..%5c..%5coutside%5csecret.txt", 404),
    ("/%00/../outside/secret.txt", 400),
    ("//etc/passwd", 404),
    ("/escape/secret.txt", 404),
    ("/leak.txt", 404),
]
"""Paths, sent as written (C{curl --path-as-is}), that would read
C{outside/secret.txt} (beside the directory served) or another file
outside it if the server let them, each with the status
C{docs/http-tunnels.md} gives it; C{escape} and C{leak.txt} are symlinks
inside the directory that point out of it. The secret's absolute path
after C{//} is added by the test."""


class FileServerTests(HttpTunnelTestCase):
    """
    C{tunnelkit http file:///DIR} serves the files of C{DIR} with HTTP's
    caching and range features, and nothing outside it.
    """

    @inlineCallbacks
    def arrange(self) -> Steps[None]:
        self.root = os.path.join(self.directory, "www")
        self.blob = random.Random(BLOB_SIZE).randbytes(BLOB_SIZE)
        self.secret = f"tk-secret-{uuid.uuid4().hex}".encode("ascii")
        self.secret_path = self.make_tree()
        yield self.start_edge()
        yield self.start_tunnel(f"file://{self.root}", "--subdomain", "files")

    def make_tree(self) -> str:
        """
        Fill the directory served, and beside it C{outside/secret.txt}.

        @return: the absolute path of the secret file.
        """
        outside = os.path.join(self.directory, "outside")
        os.makedirs(os.path.join(self.root, "sub"))
        os.makedirs(outside)
        secret_path = os.path.join(outside, "secret.txt")
        with open(secret_path, "wb") as secret:
            secret.write(self.secret)
        files = {
            "hello.txt": HELLO,
            "page.html": b"<!DOCTYPE html><title>page</title>\n",
            "data.json": b'{"answer": 42}\n',
            "notes.gz": gzip.compress(b"notes\n", mtime=0),
            "blob.tkdata": self.blob,
            "sub/inner.txt": b"inner\n",
        }
        for name, content in files.items():
            with open(os.path.join(self.root, name), "wb") as output:
                output.write(content)
        os.symlink("../outside", os.path.join(self.root, "escape"))
        os.symlink(secret_path, os.path.join(self.root, "leak.txt"))
        os.symlink("hello.txt", os.path.join(self.root, "alias.txt"))
        return secret_path

    def url(self, path: str) -> str:
        """
        @return: the public https URL of C{path} on the tunnel.
        """
        return self.edge.url("https", "files.tunnels.test", path)

    @inlineCallbacks
    def test_listing(self) -> Steps[None]:
        """
        The root is an HTML listing of its entries, the directory first,
        with the symlinks that lead out of the root left out and the one
        that stays inside listed.
        """
        response = yield self.curl.fetch(self.url("/"))

        body = response.body.decode("utf-8")
        self.assertEqual(
            (response.status, response.header("content-type")),
            (200, "text/html; charset=utf-8"),
            response.describe(),
        )
        for name in ("sub/", "alias.txt", "hello.txt", "blob.tkdata", "notes.gz"):
            self.assertIn(f'href="./{name}"', body)
        self.assertLess(body.index('href="./sub/"'), body.index('href="./alias.txt"'))
        self.assertNotIn("escape", body)
        self.assertNotIn("leak.txt", body)

    @inlineCallbacks
    def test_content_types(self) -> Steps[None]:
        """
        Each file is served whole with a C{Content-Type} from its
        extension: text types with C{charset=utf-8}, C{.gz} as
        C{application/gzip}, an unknown extension as
        C{application/octet-stream}.
        """
        expected = {
            "/hello.txt": "text/plain; charset=utf-8",
            "/page.html": "text/html; charset=utf-8",
            "/data.json": "application/json; charset=utf-8",
            "/notes.gz": "application/gzip",
            "/blob.tkdata": "application/octet-stream",
        }

        served = {}
        for path in expected:
            response = yield self.curl.fetch(self.url(path))
            served[path] = response.header("content-type")

        self.assertEqual(served, expected)

    @inlineCallbacks
    def test_head(self) -> Steps[None]:
        """
        C{HEAD} is answered with the headers of C{GET}, the length
        included, and no body.
        """
        response = yield self.curl.fetch(self.url("/hello.txt"), "--head")

        self.assertEqual(
            (response.status, response.header("content-length"), response.downloaded),
            (200, str(len(HELLO)), 0),
            response.describe(),
        )

    @inlineCallbacks
    def test_range(self) -> Steps[None]:
        """
        A C{Range} of one span is answered C{206} with exactly those bytes
        and a C{Content-Range} naming them and the file's size.
        """
        response = yield self.curl.fetch(
            self.url("/blob.tkdata"), "-H", "Range: bytes=1000-1999"
        )

        self.assertEqual(
            (response.status, response.header("content-range")),
            (206, f"bytes 1000-1999/{BLOB_SIZE}"),
            response.describe(),
        )
        self.assertEqual(response.body, self.blob[1000:2000])

    @inlineCallbacks
    def test_range_past_the_end(self) -> Steps[None]:
        """
        A C{Range} that starts past the end is answered C{416} with
        C{Content-Range: bytes */SIZE}.
        """
        response = yield self.curl.fetch(
            self.url("/blob.tkdata"), "-H", f"Range: bytes={BLOB_SIZE + 10}-"
        )

        self.assertEqual(
            (response.status, response.header("content-range")),
            (416, f"bytes */{BLOB_SIZE}"),
            response.describe(),
        )

    @inlineCallbacks
    def test_entity_tag(self) -> Steps[None]:
        """
        A request whose C{If-None-Match} names the file's C{ETag} is
        answered C{304} without a body.
        """
        first = yield self.curl.fetch(self.url("/hello.txt"))
        tag = first.header("etag")

        second = yield self.curl.fetch(
            self.url("/hello.txt"), "-H", f"If-None-Match: {tag}"
        )

        self.assertTrue(tag, first.describe())
        self.assertEqual((second.status, second.body), (304, b""), second.describe())

    @inlineCallbacks
    def test_last_modified(self) -> Steps[None]:
        """
        A request whose C{If-Modified-Since} is the file's C{Last-Modified}
        is answered C{304} without a body.
        """
        first = yield self.curl.fetch(self.url("/hello.txt"))
        modified = first.header("last-modified")

        second = yield self.curl.fetch(
            self.url("/hello.txt"), "-H", f"If-Modified-Since: {modified}"
        )

        self.assertTrue(modified, first.describe())
        self.assertEqual((second.status, second.body), (304, b""), second.describe())

    @inlineCallbacks
    def test_directory_without_slash(self) -> Steps[None]:
        """
        A directory asked for without its trailing slash is redirected
        (C{301}) to the address with the slash.
        """
        response = yield self.curl.fetch(self.url("/sub"))

        self.assertEqual(response.status, 301, response.describe())
        self.assertTrue(
            (response.header("location") or "").endswith("/sub/"), response.describe()
        )

    @inlineCallbacks
    def test_other_methods(self) -> Steps[None]:
        """
        A method other than C{GET} and C{HEAD} is answered C{405} with
        C{Allow: GET, HEAD}.
        """
        response = yield self.curl.fetch(
            self.url("/hello.txt"), "--data-binary", "ignored"
        )

        self.assertEqual(
            (response.status, response.header("allow")),
            (405, "GET, HEAD"),
            response.describe(),
        )

    @inlineCallbacks
    def test_keep_alive(self) -> Steps[None]:
        """
        curl fetching several files in one run uses one connection, and
        each file comes back whole.
        """
        arguments = ["-w", "%{num_connects} "]
        for name in ("hello.txt", "sub/inner.txt", "alias.txt"):
            output = os.path.join(self.directory, f"fetched-{name.replace('/', '-')}")
            arguments += ["-o", output, self.url(f"/{name}")]

        curl = yield self.curl.run(arguments)

        fetched = []
        for name in ("hello.txt", "sub-inner.txt", "alias.txt"):
            with open(os.path.join(self.directory, f"fetched-{name}"), "rb") as copy:
                fetched.append(copy.read())
        self.assertEqual(curl.text("out"), "1 0 0 ", curl.describe())
        self.assertEqual(fetched, [HELLO, b"inner\n", HELLO])

    @inlineCallbacks
    def test_symlink_inside(self) -> Steps[None]:
        """
        A symlink to a file inside the directory served is followed.
        """
        response = yield self.curl.fetch(self.url("/alias.txt"))

        self.assertEqual((response.status, response.body), (200, HELLO))

    @inlineCallbacks
    def test_no_way_out(self) -> Steps[None]:
        """
        Each request crafted to leave the directory served (dot segments
        plain and encoded, encoded slashes and backslashes, double encoding,
        overlong UTF-8, a NUL, an empty first segment, symlinks out of the
        root, a target not starting with C{/}) is answered C{404} or C{400}
        as documented, and no answer holds the secret file's content or
        C{/etc/passwd}'s.
        """
        attempts = [*TRAVERSALS, ("/" + self.secret_path, 404)]
        with open("/etc/passwd", "rb") as passwd:
            system_line = passwd.readline().strip() or b"root:"

        answers = []
        for path, _ in attempts:
            response = yield self.curl.fetch(self.url(path), "--path-as-is")
            answers.append((path, response))
        relative = yield self.curl.fetch(
            self.url("/"), "--request-target", "../outside/secret.txt"
        )
        answers.append(("../outside/secret.txt", relative))

        leaked = [
            path
            for path, response in answers
            if self.secret in response.body or system_line in response.body
        ]
        self.assertEqual(leaked, [])
        self.assertEqual(
            [(path, response.status) for path, response in answers],
            [*attempts, ("../outside/secret.txt", 400)],
        )
