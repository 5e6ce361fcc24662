"""
Tests for L{tunnelkit.web.pages}: which paths serve the inspector, the status
page and their files, with which headers, and which paths serve nothing.
"""

from typing import Any

from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase

from tunnelkit.web.pages import pages_resource


class PagesTests(SynchronousTestCase):
    """
    L{pages_resource} serves the pages and their static files, and nothing
    else.
    """

    def setUp(self) -> None:
        self.client = StubTreq(pages_resource())

    def request(self, method: str, path: str) -> tuple[Any, bytes]:
        """
        Send a request to the pages without following redirects.

        @return: the response and its body.
        """
        responses: list[Any] = []
        self.client.request(
            method, "http://127.0.0.1:4040" + path, allow_redirects=False
        ).addCallback(responses.append)
        self.client.flush()
        [response] = responses
        bodies: list[bytes] = []
        response.content().addCallback(bodies.append)
        self.client.flush()
        return response, bodies[0]

    def test_root_redirects_to_inspector(self) -> None:
        """
        C{/}, C{/inspect} and C{/inspect/} answer C{302} to C{/inspect/http}.
        """
        for path in ["/", "/inspect", "/inspect/"]:
            response, _ = self.request("GET", path)

            self.assertEqual(response.code, 302, path)
            self.assertEqual(
                response.headers.getRawHeaders("location"), ["/inspect/http"], path
            )

    def test_pages_are_html_with_policy(self) -> None:
        """
        The inspector and the status page are HTML that loads the package's
        script, with a content security policy that allows no inline script
        and no framing.
        """
        for path, script in [
            ("/inspect/http", b"/static/inspector.js"),
            ("/status", b"/static/status.js"),
        ]:
            response, body = self.request("GET", path)

            self.assertEqual(response.code, 200, path)
            self.assertEqual(
                response.headers.getRawHeaders("content-type"),
                ["text/html; charset=utf-8"],
            )
            [policy] = response.headers.getRawHeaders("content-security-policy")
            self.assertIn("script-src 'self';", policy)
            self.assertIn("frame-ancestors 'none'", policy)
            self.assertIn(b'src="' + script + b'"', body)

    def test_static_files_have_their_types(self) -> None:
        """
        Style sheets and scripts under C{/static/} are served with their
        content types and C{nosniff}.
        """
        for path, content_type in [
            ("/static/tunnelkit.css", "text/css; charset=utf-8"),
            ("/static/inspector.js", "text/javascript; charset=utf-8"),
            ("/static/favicon.svg", "image/svg+xml"),
        ]:
            response, body = self.request("GET", path)

            self.assertEqual(response.code, 200, path)
            self.assertEqual(
                response.headers.getRawHeaders("content-type"), [content_type]
            )
            self.assertEqual(
                response.headers.getRawHeaders("x-content-type-options"), ["nosniff"]
            )
            self.assertTrue(body)

    def test_no_listing_and_no_traversal(self) -> None:
        """
        Directory paths, unknown names, paths that climb out of the static
        directory and the HTML templates' own names all answer C{404}.
        """
        for path in [
            "/static",
            "/static/",
            "/static/nothing.js",
            "/static/../pages.py",
            "/static/%2e%2e/pages.py",
            "/static/..%2fpages.py",
            "/static/inspector.html",
            "/status/",
            "/inspect/http/x",
            "/anything",
        ]:
            response, _ = self.request("GET", path)

            self.assertEqual(response.code, 404, path)

    def test_head_and_other_methods(self) -> None:
        """
        C{HEAD} is answered like C{GET} without a body; other methods are
        refused with C{405}.
        """
        head, head_body = self.request("HEAD", "/status")
        post, _ = self.request("POST", "/status")

        self.assertEqual((head.code, head_body), (200, b""))
        self.assertEqual(post.code, 405)
