"""
Tests for L{tunnelkit.agent.exchanges}: reading the HTTP exchanges of a
connection from copies of its two directions, as bytes arrive in any
pieces.
"""

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tunnelkit.agent.captures import Capture, CapturedRequest
from tunnelkit.agent import exchanges
from tunnelkit.agent.exchanges import MAX_HEAD_SIZE, ExchangeTap

GET = b"GET /a?x=1 HTTP/1.1\r\nHost: app.example\r\nX-Forwarded-Proto: https\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"
POST = (
    b"POST /form HTTP/1.1\r\nHost: app.example\r\nContent-Length: 11\r\n\r\nhello world"
)
CHUNKED_PUT = (
    b"PUT /up HTTP/1.1\r\nHost: app.example\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n"
)
CHUNKED_OK = (
    b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"4\r\n\r\n\r\n\r\n3\r\nxyz\r\n0\r\nTrailer: yes\r\n\r\n"
)
NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"


class Recorder:
    """
    Records what a tap sends, as the store would receive it.

    @ivar opened: the captures opened, in order.
    @ivar completed: the captures completed, in order.
    """

    def __init__(self) -> None:
        self.opened: list[Capture] = []
        self.completed: list[Capture] = []

    def opened_(self, capture: Capture) -> None:
        self.opened.append(capture)

    def completed_(self, capture: Capture) -> None:
        self.completed.append(capture)


class _Sink:
    def __init__(self, recorder: Recorder) -> None:
        self.opened = recorder.opened_
        self.completed = recorder.completed_


class TapTestCase(SynchronousTestCase):
    """
    A tap with a recorder, a clock the test moves, and a body cap.
    """

    body_cap = 1024

    def setUp(self) -> None:
        self.now = 1000.0
        self.recorder = Recorder()
        self.named: list[CapturedRequest] = []
        self.tap = ExchangeTap(
            _Sink(self.recorder),
            lambda: self.now,
            "192.0.2.7",
            self.tunnel_name,
            self.body_cap,
        )

    def tunnel_name(self, request: CapturedRequest) -> str:
        """
        Name every request's tunnel C{web}, recording the request.
        """
        self.named.append(request)
        return "web"

    def exchange(self, request: bytes, response: bytes) -> list[Capture]:
        """
        Send C{request} one way, then C{response} the other, whole.

        @return: the captures completed.
        """
        self.tap.request_data(request)
        self.tap.response_data(response)
        return self.recorder.completed


class OneExchangeTests(TapTestCase):
    """
    One request and its response.
    """

    def test_request(self) -> None:
        """
        The request's method, target, version, headers, raw bytes and the
        client's address are captured, and its tunnel named from it.
        """
        [capture] = self.exchange(GET, OK)

        request = capture.request
        self.assertEqual(
            (request.method, request.uri, request.proto, request.raw),
            ("GET", "/a?x=1", "HTTP/1.1", GET),
        )
        self.assertEqual(request.header("x-forwarded-proto"), "https")
        self.assertEqual(
            (capture.remote_addr, capture.tunnel_name), ("192.0.2.7", "web")
        )
        self.assertEqual(self.named, [request])

    def test_response(self) -> None:
        """
        The response's status, headers, raw bytes and body are captured.
        """
        [capture] = self.exchange(GET, OK)

        response = capture.response
        assert response is not None
        self.assertEqual(
            (response.status, response.proto, response.raw, response.body),
            ("200 OK", "HTTP/1.1", OK, b"hello"),
        )
        self.assertEqual(response.headers()["Content-Type"], ["text/plain"])
        self.assertEqual((response.body_size, response.truncated), (5, False))

    def test_times(self) -> None:
        """
        A capture starts when its request began and ends when its response
        was complete.
        """
        self.tap.request_data(GET)
        self.now = 1000.5

        self.tap.response_data(OK)

        [capture] = self.recorder.completed
        self.assertEqual((capture.started, capture.ended), (1000.0, 1000.5))

    def test_opened_then_completed(self) -> None:
        """
        A capture is opened once its request is complete, without a
        response, and completed once the response is.
        """
        self.tap.request_data(POST)

        self.assertEqual(len(self.recorder.opened), 1)
        self.assertIsNone(self.recorder.opened[0].response)
        self.assertEqual(self.recorder.completed, [])
        self.assertFalse(self.tap.idle)

        self.tap.response_data(OK)

        self.assertEqual(self.recorder.completed, self.recorder.opened)
        self.assertTrue(self.tap.idle)

    def test_request_body(self) -> None:
        """
        A request body sized by C{Content-Length} is captured.
        """
        [capture] = self.exchange(POST, OK)

        self.assertEqual(capture.request.body, b"hello world")
        self.assertEqual(capture.request.raw, POST)

    def test_chunked_bodies(self) -> None:
        """
        Chunked bodies are kept as on the wire in the raw bytes, and
        decoded as the body; a blank line inside a chunk does not end them.
        """
        [capture] = self.exchange(CHUNKED_PUT, CHUNKED_OK)

        response = capture.response
        assert response is not None
        self.assertEqual(capture.request.raw, CHUNKED_PUT)
        self.assertEqual(capture.request.body, b"hello world")
        self.assertEqual(response.raw, CHUNKED_OK)
        self.assertEqual(response.body, b"\r\n\r\nxyz")
        self.assertEqual(response.body_size, 7)

    def test_framing_fields_any_case(self) -> None:
        """
        The fields that frame a body are found whatever their case, and of
        several C{Transfer-Encoding} fields the last decides.
        """
        sized = b"HTTP/1.1 200 OK\r\ncontent-LENGTH: 3\r\n\r\nabc"
        chunked = (
            b"HTTP/1.1 200 OK\r\nTRANSFER-encoding: gzip\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
        )

        first, second = self.exchange(GET + GET, sized + chunked)

        assert first.response is not None and second.response is not None
        self.assertEqual((first.response.raw, second.response.raw), (sized, chunked))
        self.assertEqual(second.response.body, b"hi")

    def test_bodiless_statuses(self) -> None:
        """
        A C{204} response has no body, whatever follows it.
        """
        [capture] = self.exchange(GET, NO_CONTENT)

        assert capture.response is not None
        self.assertEqual(capture.response.raw, NO_CONTENT)


class TruncationTests(TapTestCase):
    """
    Bodies longer than the cap.
    """

    body_cap = 4

    def test_sized_body(self) -> None:
        """
        Only the first bytes of a long body are kept, its whole size is
        counted, and it says it was truncated.
        """
        [capture] = self.exchange(POST, OK)

        request = capture.request
        self.assertEqual((request.body, request.body_size), (b"hell", 11))
        self.assertTrue(request.truncated)
        self.assertEqual(request.raw, POST[: -len(b"hello world")] + b"hell")

    def test_chunked_body(self) -> None:
        """
        A chunked body is cut at the cap both as on the wire and decoded.
        """
        [capture] = self.exchange(CHUNKED_PUT, OK)

        request = capture.request
        self.assertEqual((request.body, request.body_size), (b"hell", 11))
        self.assertEqual(len(request.wire_body), 4)
        self.assertTrue(request.truncated)

    def test_bound(self) -> None:
        """
        Whatever the body's size, no more than the cap is kept of it.
        """
        body = b"z" * 100_000
        head = b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body)

        for start in range(0, len(head + body), 4096):
            self.tap.request_data((head + body)[start : start + 4096])

        [capture] = self.recorder.opened
        self.assertEqual(len(capture.request.wire_body), 4)
        self.assertEqual(capture.request.body_size, len(body))


class ConnectionTests(TapTestCase):
    """
    Several exchanges on one connection.
    """

    def test_keep_alive(self) -> None:
        """
        Requests one after another each get their own response.
        """
        self.exchange(GET, OK)
        self.exchange(POST, NO_CONTENT)

        first, second = self.recorder.completed
        self.assertEqual((first.request.raw, second.request.raw), (GET, POST))
        assert first.response is not None and second.response is not None
        self.assertEqual((first.response.raw, second.response.raw), (OK, NO_CONTENT))

    def test_pipelined(self) -> None:
        """
        Requests sent together, and responses sent together, are told apart
        by their raw bytes and matched in order.
        """
        captures = self.exchange(
            GET + POST + CHUNKED_PUT + GET, OK + CHUNKED_OK + NO_CONTENT + OK
        )

        self.assertEqual(
            [capture.request.raw for capture in captures],
            [GET, POST, CHUNKED_PUT, GET],
        )
        self.assertEqual(
            [capture.response.raw for capture in captures if capture.response],
            [OK, CHUNKED_OK, NO_CONTENT, OK],
        )

    def test_head(self) -> None:
        """
        The response to C{HEAD} has no body though it gives a length, and
        the next response is read after it.
        """
        head = b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n"
        answer = b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"

        first, second = self.exchange(head + GET, answer + OK)

        assert first.response is not None and second.response is not None
        self.assertEqual((first.response.raw, second.response.raw), (answer, OK))
        self.assertEqual(first.response.body_size, 0)

    def test_continue(self) -> None:
        """
        A C{100 Continue} is not a response of its own: the request's
        response is the final one.
        """
        [capture] = self.exchange(POST, b"HTTP/1.1 100 Continue\r\n\r\n" + OK)

        assert capture.response is not None
        self.assertEqual(capture.response.raw, OK)

    def test_until_close(self) -> None:
        """
        A response without a length ends with the connection.
        """
        answer = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it"
        self.exchange(GET, answer)
        self.assertEqual(self.recorder.completed, [])

        self.tap.connection_lost()

        [capture] = self.recorder.completed
        assert capture.response is not None
        self.assertEqual(
            (capture.response.raw, capture.response.body), (answer, b"all of it")
        )

    def test_lost_without_response(self) -> None:
        """
        A request still waiting when the connection ends is completed
        without a response, at that time.
        """
        self.tap.request_data(GET)
        self.now = 1003.0

        self.tap.connection_lost()

        [capture] = self.recorder.completed
        self.assertIsNone(capture.response)
        self.assertEqual(capture.ended, 1003.0)

    def test_lost_during_request_body(self) -> None:
        """
        A request whose body was cut off by the end of the connection is
        kept with what came of it.
        """
        self.tap.request_data(POST[:-4])

        self.tap.connection_lost()

        [capture] = self.recorder.completed
        self.assertEqual(capture.request.body, b"hello w")
        self.assertIsNone(capture.response)

    def test_early_response(self) -> None:
        """
        A response that comes before its request's body is complete answers
        that request, which is kept as far as it came.
        """
        refusal = b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n"
        self.tap.request_data(POST[:-6])

        self.tap.response_data(refusal)
        self.tap.request_data(POST[-6:])

        [capture] = self.recorder.completed
        assert capture.response is not None
        self.assertEqual(capture.response.status_code, 413)
        self.assertEqual(capture.request.body, b"hello")
        self.assertTrue(self.tap.stopped)


class SplitTests(TapTestCase):
    """
    The pieces bytes arrive in do not change what is captured.
    """

    @settings(max_examples=150, deadline=None)
    @given(
        request_cuts=st.lists(st.integers(min_value=1, max_value=400), max_size=12),
        response_cuts=st.lists(st.integers(min_value=1, max_value=400), max_size=12),
    )
    def test_any_pieces(
        self, request_cuts: list[int], response_cuts: list[int]
    ) -> None:
        """
        A pipelined conversation cut anywhere is captured exactly as when
        sent whole.
        """
        self.setUp()
        requests = GET + CHUNKED_PUT + POST + b"HEAD / HTTP/1.1\r\n\r\n" + GET
        responses = (
            CHUNKED_OK
            + b"HTTP/1.1 100 Continue\r\n\r\n"
            + OK
            + NO_CONTENT
            + b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"
            + OK
        )

        for data, cuts, feed in (
            (requests, request_cuts, self.tap.request_data),
            (responses, response_cuts, self.tap.response_data),
        ):
            position = 0
            for cut in sorted(set(cuts)):
                feed(data[position:cut])
                position = max(position, cut)
            feed(data[position:])

        captured = [
            (capture.request.raw, capture.response.raw if capture.response else None)
            for capture in self.recorder.completed
        ]
        self.assertEqual(
            captured,
            [
                (GET, CHUNKED_OK),
                (CHUNKED_PUT, OK),
                (POST, NO_CONTENT),
                (
                    b"HEAD / HTTP/1.1\r\n\r\n",
                    b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",
                ),
                (GET, OK),
            ],
        )


def _described(capture: Capture) -> tuple[object, ...]:
    """
    @return: everything a capture holds, for comparing two.
    """
    request, response = capture.request, capture.response
    described: tuple[object, ...] = (
        capture.tunnel_name,
        capture.remote_addr,
        capture.started,
        capture.ended,
        request.method,
        request.uri,
        request.proto,
        request.forwarded_proto,
        request.raw,
        request.body,
        request.body_size,
        request.truncated,
        request.chunked,
    )
    if response is not None:
        described += (
            response.status_code,
            response.reason,
            response.proto,
            response.raw,
            response.body,
            response.body_size,
            response.truncated,
        )
    return described


EXCHANGES = (
    (GET, OK),
    (POST, OK),
    (POST, NO_CONTENT),
    (CHUNKED_PUT, OK),
    (GET, CHUNKED_OK),
    (b"HEAD / HTTP/1.1\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"),
    (
        b"GET /n HTTP/1.1\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 3\r\n\r\n",
    ),
    (
        b"POST /e HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nhi",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    ),
    (b"GET /old HTTP/1.0\r\n\r\n", b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    (
        b"GET /c HTTP/1.1\r\nConnection: keep-alive\r\nX-Forwarded-Proto: http\r\n\r\n",
        b"HTTP/1.1 404 Not Found\r\nConnection: keep-alive\r\nContent-Length: 1"
        b"\r\n\r\nx",
    ),
    (
        b"PATCH /p?q=%20 HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 1030\r\n\r\n" + b"b" * 1030,
    ),
    (GET, b"HTTP/1.1 200\r\nContent-Length: 1\r\n\r\nx"),
    (GET, b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n"),
    (GET, b"HTTP/1.1 418 I'm a teapot \r\nContent-Length: 0\r\n\r\n"),
    (GET, b"HTTP/1.1 200  Two Spaces\r\nContent-Length: 0\r\n\r\n"),
    (b"GET  /two-spaces HTTP/1.1\r\n\r\n", OK),
    (b"OPTIONS * HTTP/1.1\r\nX-Forwarded-Proto:  HTTP \r\n\r\n", OK),
    (b"GET /bye HTTP/1.1\r\nConnection: close\r\n\r\n", OK),
    (GET, b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx"),
)
"""Exchanges of several kinds: those read whole when they come whole, and
those always read piece by piece."""


class WholeMessageTests(SynchronousTestCase):
    """
    A message that comes whole in one piece is read in one go when it is of
    the usual kind; what is captured is what reading it piece by piece
    captures.
    """

    def tap(self, clock: list[float], cap: int) -> tuple[ExchangeTap, Recorder]:
        recorder = Recorder()
        tap = ExchangeTap(
            _Sink(recorder), lambda: clock[0], "192.0.2.7", lambda r: "web", cap
        )
        return tap, recorder

    @settings(max_examples=100, deadline=None)
    @given(
        picks=st.lists(st.integers(0, len(EXCHANGES) - 1), min_size=1, max_size=8),
        cap=st.sampled_from([0, 1, 4, 1024, 1 << 20]),
    )
    def test_same_as_pieces(self, picks: list[int], cap: int) -> None:
        """
        A conversation of exchanges sent a message at a time is captured
        exactly as when every byte comes alone.
        """
        results = []
        for piecewise in (False, True):
            clock = [1000.0]
            tap, recorder = self.tap(clock, cap)
            for pick in picks:
                request, response = EXCHANGES[pick]
                for data, feed in (
                    (request, tap.request_data),
                    (response, tap.response_data),
                ):
                    if piecewise:
                        for index in range(len(data)):
                            feed(data[index : index + 1])
                    else:
                        feed(data)
                    clock[0] += 0.25
            results.append(
                (
                    [_described(capture) for capture in recorder.completed],
                    [_described(capture) for capture in recorder.opened],
                    tap.stopped,
                )
            )
        self.assertEqual(results[0], results[1])
        self.assertTrue(results[0][0])

    def test_usual_messages_read_whole(self) -> None:
        """
        Usual messages never go to the piece-by-piece reader; a chunked
        one, and every message after a C{Connection: close}, do.
        """
        pieces: list[bytes] = []
        feed_piece = exchanges._MessageReader._feed_piece

        def counted(reader: exchanges._MessageReader, piece: bytes) -> None:
            pieces.append(piece)
            feed_piece(reader, piece)

        self.patch(exchanges._MessageReader, "_feed_piece", counted)
        clock = [1000.0]
        tap, recorder = self.tap(clock, 1024)
        for request, response in [(GET, OK), (POST, OK), (POST, NO_CONTENT)]:
            tap.request_data(request)
            tap.response_data(response)
        self.assertEqual((len(recorder.completed), pieces), (3, []))

        tap.request_data(GET)
        tap.response_data(CHUNKED_OK)
        self.assertEqual(b"".join(pieces), CHUNKED_OK)

        del pieces[:]
        closing = b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"
        tap.request_data(closing)
        tap.response_data(OK)
        tap.request_data(GET)
        self.assertEqual(b"".join(pieces), closing + GET)
        self.assertTrue(tap.stopped)

    def test_whole_response_matched(self) -> None:
        """
        A whole response read in one go answers the oldest request waiting.
        """
        clock = [1000.0]
        tap, recorder = self.tap(clock, 1024)
        tap.request_data(GET)
        tap.request_data(POST)
        tap.response_data(OK)
        clock[0] = 1001.0
        tap.response_data(NO_CONTENT)

        first, second = recorder.completed
        assert first.response is not None and second.response is not None
        self.assertEqual(
            (first.request.raw, first.response.raw, first.ended),
            (GET, OK, 1000.0),
        )
        self.assertEqual(
            (second.request.raw, second.response.raw, second.ended),
            (POST, NO_CONTENT, 1001.0),
        )

    def test_whole_request_rejected(self) -> None:
        """
        A whole message the parser rejects stops the capture, as it does
        when read piece by piece.
        """
        clock = [1000.0]
        tap, recorder = self.tap(clock, 1024)
        tap.request_data(b"GET /a HTTP/1.1\r\nBad Name: x\r\n\r\n")

        self.assertTrue(tap.stopped)
        self.assertEqual(recorder.completed, [])


class StopTests(TapTestCase):
    """
    Where capture stops for the rest of a connection.
    """

    def test_upgrade(self) -> None:
        """
        A request for an upgrade and its C{101} are captured; the bytes
        after them are not read as HTTP.
        """
        upgrade = (
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\n\r\n"
        )
        switching = (
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\n\r\n"
        )

        self.exchange(upgrade + b"\x81\x05hello", switching + b"\x81\x02hi")
        self.tap.request_data(GET)

        [capture] = self.recorder.completed
        assert capture.response is not None
        self.assertEqual(
            (capture.request.raw, capture.response.raw), (upgrade, switching)
        )
        self.assertTrue(self.tap.stopped)

    def test_upgrade_refused(self) -> None:
        """
        A request for an upgrade answered without one is captured with its
        response, and capture stops after it.
        """
        upgrade = (
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n"
        )

        [capture] = self.exchange(upgrade, OK)

        assert capture.response is not None
        self.assertEqual(capture.response.raw, OK)
        self.assertTrue(self.tap.stopped)

    def test_connect(self) -> None:
        """
        C{CONNECT} and the response that opens the tunnel are captured, and
        nothing after them.
        """
        connect = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
        established = b"HTTP/1.1 200 Connection Established\r\n\r\n"

        [capture] = self.exchange(connect + b"\x16\x03\x01", established + b"\x16\x03")

        assert capture.response is not None
        self.assertEqual(
            (capture.method, capture.response.raw), ("CONNECT", established)
        )
        self.assertTrue(self.tap.stopped)

    def test_malformed_request(self) -> None:
        """
        Bytes that are not HTTP stop capture quietly; what was captured
        before stays, and a request still waiting ends without a response.
        """
        self.exchange(GET, OK)
        self.tap.request_data(POST)

        self.tap.request_data(b"NOT HTTP AT ALL\x00\r\n\r\n")
        self.tap.response_data(OK)

        first, second = self.recorder.completed
        self.assertIsNotNone(first.response)
        self.assertIsNone(second.response)
        self.assertTrue(self.tap.stopped)

    def test_malformed_response(self) -> None:
        """
        A response that is not HTTP stops capture quietly.
        """
        self.tap.request_data(GET)

        self.tap.response_data(b"SSH-2.0-OpenSSH\r\n\r\n")

        [capture] = self.recorder.completed
        self.assertIsNone(capture.response)
        self.assertTrue(self.tap.stopped)

    def test_response_without_request(self) -> None:
        """
        A response with no request to answer stops capture.
        """
        self.tap.response_data(OK)

        self.assertTrue(self.tap.stopped)
        self.assertEqual(self.recorder.completed, [])

    def test_long_head(self) -> None:
        """
        A head longer than L{MAX_HEAD_SIZE} stops capture rather than being
        kept.
        """
        self.tap.request_data(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * MAX_HEAD_SIZE)

        self.assertTrue(self.tap.stopped)
        self.assertEqual(self.recorder.opened, [])

    def test_recorder_failure(self) -> None:
        """
        An unexpected error while capturing is logged and stops capture; it
        does not reach the caller, whose bytes must go on.
        """

        def broken(capture: Capture) -> None:
            raise RuntimeError("broken store")

        self.tap._opened = broken

        self.tap.request_data(GET)

        self.assertTrue(self.tap.stopped)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_replay_names(self) -> None:
        """
        A tap told a tunnel name gives it to every capture, and names the
        capture it replays.
        """
        tap = ExchangeTap(
            _Sink(self.recorder), lambda: 0.0, "", self.tunnel_name, 10, "c0ffee"
        )
        tap.name_tunnel("web (http)")

        tap.request_data(GET)
        tap.response_data(OK)

        [capture] = self.recorder.completed
        self.assertEqual(
            (capture.tunnel_name, capture.replay_of), ("web (http)", "c0ffee")
        )
        self.assertEqual(self.named, [])
