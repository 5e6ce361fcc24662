"""
Tests for L{tunnelkit.edge.httpheads}: the checks, routing facts and
forwarded head of public HTTP requests, without I/O.
"""

from twisted.trial.unittest import SynchronousTestCase

from tunnelkit.edge.httpheads import (
    HeadProblem,
    RoutingHead,
    check_form,
    check_same_host,
    forwarded_head,
    head_too_large,
    read_routing_head,
    request_path,
)


class CheckFormTests(SynchronousTestCase):
    """
    L{check_form} refuses the request shapes the edge does not pass on.
    """

    def test_plain_requests(self) -> None:
        """
        HTTP/1.0 and 1.1 requests of ordinary methods pass, and so does an
        upgrade as a connection's first request.
        """
        check_form(b"GET", "1.1", False, False, False)
        check_form(b"POST", "1.1", True, True, False)
        check_form(b"GET", "1.0", False, True, False)
        check_form(b"GET", "1.1", False, False, True)

    def test_refused_shapes(self) -> None:
        """
        Other versions, an HTTP/1.0 body framed by Transfer-Encoding,
        CONNECT and a later upgrade are refused with their codes.
        """
        shapes = [
            ((b"GET", "2.0", False, False, False), 400, "TK_BAD_REQUEST"),
            ((b"POST", "1.0", True, False, False), 400, "TK_BAD_REQUEST"),
            ((b"CONNECT", "1.1", False, False, False), 405, "TK_METHOD_NOT_ALLOWED"),
            ((b"GET", "1.1", False, True, True), 400, "TK_BAD_REQUEST"),
        ]

        for arguments, status, code in shapes:
            problem = self.assertRaises(HeadProblem, check_form, *arguments)

            self.assertEqual((problem.status, problem.code), (status, code))


class RoutingHeadTests(SynchronousTestCase):
    """
    L{read_routing_head} finds the host, credentials and forwarding chain a
    request is routed by.
    """

    def test_host_header(self) -> None:
        """
        The one Host header names the host, normalised; the Authorization
        header is kept and the X-Forwarded-For headers are joined in order.
        """
        headers = [
            (b"Host", b"Web.Example.com:80"),
            (b"X-Forwarded-For", b"198.51.100.1"),
            (b"authorization", b"Basic eDp5"),
            (b"x-forwarded-for", b"198.51.100.2"),
        ]

        head = read_routing_head(b"/a?b", headers)

        self.assertEqual(
            head,
            RoutingHead(
                "web.example.com",
                b"Basic eDp5",
                b"198.51.100.1, 198.51.100.2",
                None,
            ),
        )

    def test_absolute_target(self) -> None:
        """
        An absolute target's authority, without user information, stands
        for the host whatever Host header came with it.
        """
        head = read_routing_head(
            b"HTTP://user@web.example.com/p", [(b"Host", b"other.example.com")]
        )

        self.assertEqual(
            (head.host, head.authority), ("web.example.com", b"web.example.com")
        )

    def test_no_single_valid_host(self) -> None:
        """
        No Host header, two of them, or one that is not a host name is a
        bad request.
        """
        for headers in [[], [(b"Host", b"a.test"), (b"Host", b"b.test")]]:
            problem = self.assertRaises(HeadProblem, read_routing_head, b"/", headers)
            self.assertEqual(problem.code, "TK_BAD_REQUEST")

        problem = self.assertRaises(
            HeadProblem, read_routing_head, b"/", [(b"Host", b"a b")]
        )

        self.assertEqual(problem.code, "TK_BAD_REQUEST")


class ForwardedHeadTests(SynchronousTestCase):
    """
    L{forwarded_head} writes the head the agent receives.
    """

    def test_head(self) -> None:
        """
        The target goes in origin form; the first Host is kept, or replaced
        when the tunnel asks; the client's forwarding headers give way to
        the edge's, which extend X-Forwarded-For with the client.
        """
        headers = [
            (b"Host", b"web.test"),
            (b"X-Forwarded-Proto", b"gopher"),
            (b"Accept", b"*/*"),
            (b"X-Forwarded-For", b"192.0.2.1"),
        ]
        routing = read_routing_head(b"http://web.test/p?q", headers)

        head = forwarded_head(
            b"GET", b"http://web.test/p?q", "1.1", headers, routing, b"", "::1", "https"
        )
        renamed = forwarded_head(
            b"GET", b"/", "1.0", headers, routing, b"local", "::1", "http"
        )

        self.assertEqual(
            head,
            b"GET /p?q HTTP/1.1\r\nHost: web.test\r\nAccept: */*\r\n"
            b"X-Forwarded-For: 192.0.2.1, ::1\r\nX-Forwarded-Proto: https\r\n"
            b"X-Forwarded-Host: web.test\r\n\r\n",
        )
        self.assertTrue(renamed.startswith(b"GET / HTTP/1.0\r\nHost: local\r\n"))

    def test_host_added(self) -> None:
        """
        A request routed by its absolute target without a Host header gets
        one, naming the target's authority.
        """
        routing = read_routing_head(b"http://web.test", [])

        head = forwarded_head(
            b"GET", b"http://web.test", "1.0", [], routing, b"", "192.0.2.9", "http"
        )

        self.assertEqual(
            head,
            b"GET / HTTP/1.0\r\nX-Forwarded-For: 192.0.2.9\r\n"
            b"X-Forwarded-Proto: http\r\nX-Forwarded-Host: web.test\r\n"
            b"Host: web.test\r\n\r\n",
        )


class OtherChecksTests(SynchronousTestCase):
    """
    The smaller checks and facts of a head.
    """

    def test_same_host(self) -> None:
        """
        A connection's later request for another host is misdirected; its
        first request, or one for the same host, is not.
        """
        check_same_host(None, "a.test")
        check_same_host("a.test", "a.test")

        problem = self.assertRaises(HeadProblem, check_same_host, "a.test", "b.test")

        self.assertEqual(
            (problem.status, problem.code), (421, "TK_MISDIRECTED_REQUEST")
        )

    def test_too_large(self) -> None:
        """
        The problem of a head over the limit names the limit.
        """
        problem = head_too_large(8192)

        self.assertEqual((problem.status, problem.code), (431, "TK_HEADER_TOO_LARGE"))
        self.assertIn("8192 bytes", problem.sentence)

    def test_request_path(self) -> None:
        """
        Routes match the path without its query, of origin and absolute
        targets alike.
        """
        self.assertEqual(request_path(b"/a/b?c=d", None), "/a/b")
        self.assertEqual(request_path(b"http://h.test/a?x", b"h.test"), "/a")
        self.assertEqual(request_path(b"http://h.test", b"h.test"), "/")
