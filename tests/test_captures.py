"""
Tests for L{tunnelkit.agent.captures}: the captured messages and the store
of captures, bounded in bytes.
"""

import datetime

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tunnelkit.agent.captures import (
    ENTRY_OVERHEAD,
    Capture,
    CapturedRequest,
    CapturedResponse,
    CaptureStore,
    canonical_header_name,
)


def capture(body: bytes = b"", tunnel: str = "web", started: float = 0.0) -> Capture:
    """
    @return: a capture of a C{POST /} request with C{body}.
    """
    request = CapturedRequest(
        head=b"POST / HTTP/1.1\r\n\r\n", method="POST", uri="/", body_size=len(body)
    )
    request.wire_body += body
    return Capture(tunnel, "192.0.2.1", started, request)


def fixed_bits(bits: int) -> int:
    """
    Stand in for C{random.getrandbits}: always C{0xc0ffee}.
    """
    return 0xC0FFEE


class CapturedMessageTests(SynchronousTestCase):
    """
    L{CapturedRequest} and L{CapturedResponse}.
    """

    def test_headers_grouped_by_canonical_name(self) -> None:
        """
        The headers group every value by the name Go's HTTP library would
        write, in the order they were sent.
        """
        request = CapturedRequest(
            head=b"GET / HTTP/1.1\r\nx-forwarded-for: a\r\nAccept: */*\r\n"
            b"X-FORWARDED-FOR: b\r\n\r\n"
        )

        self.assertEqual(
            request.headers(),
            {"X-Forwarded-For": ["a", "b"], "Accept": ["*/*"]},
        )

    def test_fields_read_from_head(self) -> None:
        """
        The header fields of a response are read from its head, in order,
        as sent.
        """
        response = CapturedResponse(
            head=b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
            b"Content-Length: 10\r\n\r\n"
        )

        self.assertEqual(
            response.header_fields,
            [
                (b"Set-Cookie", b"a=1"),
                (b"Set-Cookie", b"b=2"),
                (b"Content-Length", b"10"),
            ],
        )

    def test_header_any_case(self) -> None:
        """
        L{CapturedRequest.header} finds the first value whatever the case.
        """
        request = CapturedRequest(head=b"GET / HTTP/1.1\r\nHost: x\r\nhost: y\r\n\r\n")

        self.assertEqual(request.header("HOST"), "x")
        self.assertIsNone(request.header("accept"))

    def test_raw_is_head_and_wire_body(self) -> None:
        """
        The raw message is the head followed by the body as on the wire.
        """
        response = CapturedResponse(head=b"HTTP/1.1 200 OK\r\n\r\n")
        response.wire_body += b"3\r\nabc\r\n"
        response.decoded_body = bytearray(b"abc")

        self.assertEqual(response.raw, b"HTTP/1.1 200 OK\r\n\r\n3\r\nabc\r\n")
        self.assertEqual(response.body, b"abc")

    def test_truncated(self) -> None:
        """
        A body longer than what was kept is truncated.
        """
        request = CapturedRequest(body_size=10)
        request.wire_body += b"12345"

        self.assertTrue(request.truncated)
        request.body_size = 5
        self.assertFalse(request.truncated)

    def test_status(self) -> None:
        """
        The status text is the code and the reason.
        """
        self.assertEqual(
            CapturedResponse(status_code=404, reason="Not Found").status,
            "404 Not Found",
        )

    def test_canonical_name(self) -> None:
        """
        Each dash-separated word is capitalised, the rest lower case.
        """
        self.assertEqual(canonical_header_name("content-TYPE"), "Content-Type")
        self.assertEqual(canonical_header_name("www-authenticate"), "Www-Authenticate")


class CaptureTests(SynchronousTestCase):
    """
    The attributes of a L{Capture} that the console and the API read.
    """

    def test_pending(self) -> None:
        """
        Without a response, a capture has no duration, status or code.
        """
        pending = capture()

        self.assertEqual(
            (pending.duration, pending.status, pending.status_code),
            (None, None, None),
        )

    def test_complete(self) -> None:
        """
        With a response, a capture has its duration in seconds, its status
        text and code, and the method and target of its request.
        """
        done = capture(started=100.0)
        done.response = CapturedResponse(status_code=201, reason="Created")
        done.ended = 100.25

        self.assertEqual(
            (done.duration, done.status, done.status_code, done.method, done.uri),
            (0.25, "201 Created", 201, "POST", "/"),
        )

    def test_start_is_local_time(self) -> None:
        """
        The start is an aware datetime of the moment the request began.
        """
        start = capture(started=1_000_000.0).start

        self.assertIsNotNone(start.tzinfo)
        self.assertEqual(start.timestamp(), 1_000_000.0)
        self.assertIsInstance(start, datetime.datetime)

    def test_stored_bytes_counts_everything_kept(self) -> None:
        """
        The bytes counted are the overhead, the names and the bytes of both
        messages.
        """
        small, large = capture(b""), capture(b"x" * 1000)

        self.assertEqual(large.stored_bytes() - small.stored_bytes(), 1000)
        self.assertGreater(small.stored_bytes(), ENTRY_OVERHEAD)


class CaptureStoreTests(SynchronousTestCase):
    """
    L{CaptureStore}.
    """

    def test_ids(self) -> None:
        """
        Ids are 8 hex digits of the store, then a count of 8 hex digits.
        """
        store = CaptureStore(1 << 20, rng=fixed_bits)
        first, second = capture(), capture()

        store.add(first)
        store.add(second)

        self.assertEqual(
            (first.id, second.id), ("00c0ffee00000001", "00c0ffee00000002")
        )

    def test_recent_newest_first(self) -> None:
        """
        L{CaptureStore.recent} lists the newest first, up to the limit,
        optionally of one tunnel only.
        """
        store = CaptureStore(1 << 20)
        made = [capture(tunnel=name) for name in ("a", "b", "a", "b")]
        for each in made:
            store.add(each)

        self.assertEqual(store.recent(), made[::-1])
        self.assertEqual(store.recent(limit=2), [made[3], made[2]])
        self.assertEqual(store.recent(tunnel_name="a"), [made[2], made[0]])
        self.assertEqual(store.recent(limit=1, tunnel_name="a"), [made[2]])

    def test_get(self) -> None:
        """
        A stored capture is found by its id; an unknown id finds nothing.
        """
        store = CaptureStore(1 << 20)
        kept = capture()
        store.add(kept)

        self.assertIs(store.get(kept.id), kept)
        self.assertIsNone(store.get("nope"))

    def test_oldest_evicted_first(self) -> None:
        """
        When a capture does not fit, the oldest ones go until it does.
        """
        size = capture(b"x" * 1000).stored_bytes()
        store = CaptureStore(size * 3)
        made = [capture(b"x" * 1000) for _ in range(5)]

        for each in made:
            store.add(each)

        self.assertEqual(list(store), made[2:])
        self.assertEqual((store.stored_bytes, store.evicted), (size * 3, 2))

    def test_too_large_not_kept(self) -> None:
        """
        A capture larger than the whole capacity is given an id but not
        kept, and nothing else is evicted for it.
        """
        store = CaptureStore(4000)
        small, huge = capture(), capture(b"x" * 5000)
        store.add(small)

        store.add(huge)

        self.assertEqual(list(store), [small])
        self.assertTrue(huge.id)
        self.assertEqual(store.evicted, 1)

    def test_complete_counts_again(self) -> None:
        """
        Completing a capture counts its response, evicting older captures
        to make room, and keeps its place in the order.
        """
        size = capture(b"x" * 1000).stored_bytes()
        store = CaptureStore(size * 3)
        first, second, third = (capture(b"x" * 1000) for _ in range(3))
        for each in (first, second, third):
            store.add(each)
        response = CapturedResponse(head=b"HTTP/1.1 200 OK\r\n\r\n")
        response.wire_body += b"y" * 500
        second.response = response

        store.complete(second)

        self.assertEqual(list(store), [second, third])
        self.assertEqual(store.stored_bytes, size * 2 + response.stored_bytes())

    def test_complete_evicted(self) -> None:
        """
        Completing a capture the store no longer holds changes nothing and
        tells nobody.
        """
        store = CaptureStore(1 << 20)
        told: list[Capture] = []
        gone = capture()
        store.add(gone)
        store.clear()
        store.subscribe(told.append)

        store.complete(gone)

        self.assertEqual((list(store), told, store.stored_bytes), ([], [], 0))

    def test_subscribers_told(self) -> None:
        """
        Subscribers hear of each capture added and completed, and of
        clearing, until they unsubscribe.
        """
        store = CaptureStore(1 << 20)
        told: list[object] = []
        unsubscribe = store.subscribe(told.append, lambda: told.append("clear"))
        kept = capture()

        store.add(kept)
        store.complete(kept)
        store.clear()
        unsubscribe()
        store.add(capture())

        self.assertEqual(told, [kept, kept, "clear"])

    def test_clear(self) -> None:
        """
        Clearing drops every capture and every byte.
        """
        store = CaptureStore(1 << 20)
        store.add(capture(b"abc"))

        store.clear()

        self.assertEqual((len(store), store.stored_bytes), (0, 0))

    @settings(max_examples=200, deadline=None)
    @given(
        capacity=st.integers(min_value=0, max_value=20_000),
        steps=st.lists(
            st.tuples(
                st.sampled_from(["add", "complete", "clear"]),
                st.integers(min_value=0, max_value=8_000),
            ),
            max_size=60,
        ),
    )
    def test_never_over_capacity(
        self, capacity: int, steps: list[tuple[str, int]]
    ) -> None:
        """
        Whatever is added and completed, in any order and size, the store
        never holds more than its capacity, and its count of bytes is the
        sum of what it holds.
        """
        store = CaptureStore(capacity)
        made: list[Capture] = []

        for action, size in steps:
            if action == "add":
                made.append(capture(b"x" * size))
                store.add(made[-1])
            elif action == "complete" and made:
                chosen = made[size % len(made)]
                response = CapturedResponse()
                response.wire_body += b"y" * size
                chosen.response = response
                store.complete(chosen)
            elif action == "clear":
                store.clear()

            held = sum(each.stored_bytes() for each in store)
            self.assertLessEqual(store.stored_bytes, capacity)
            self.assertLessEqual(store.peak_bytes, capacity)
            self.assertEqual(store.stored_bytes, held)
