"""
Tests for L{tunnelkit.edge.clienthello}: the server name of real and
hand-built ClientHellos, whatever records and pieces they arrive in, and
every way a hello can be refused.
"""

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tests.tlshello import (
    HelloBuilder,
    handshake_message,
    in_records,
    openssl_hello,
    pieces,
    server_name_extension,
)
from tunnelkit.edge.clienthello import (
    MAX_HELLO_SIZE,
    ClientHelloReader,
    HelloOutcome,
    HelloReading,
    read_client_hello,
)

_EXAMPLES = settings(max_examples=300, derandomize=True, deadline=None, database=None)
"""Many examples, the same ones every run."""

_NAMES = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z0-9]{1,10}){0,3}\Z")
"""Host names of one to four labels."""


def feed_all(chunks: list[bytes], limit: int = MAX_HELLO_SIZE) -> list[HelloReading]:
    """
    @return: what the reader said after each piece.
    """
    reader = ClientHelloReader(limit)
    return [reader.feed(chunk) for chunk in chunks]


class ServerNameTests(SynchronousTestCase):
    """
    The name a complete hello asks for.
    """

    def test_openssl_hello(self) -> None:
        """
        The name in an OpenSSL client's hello is read, in lower case.
        """
        hello = openssl_hello(b"App.Example.COM", [b"h2", b"http/1.1"])

        reading = read_client_hello(hello)

        self.assertEqual(
            reading, HelloReading(HelloOutcome.NAME, name="app.example.com")
        )

    def test_openssl_hello_without_name(self) -> None:
        """
        An OpenSSL client that sends no name gives L{HelloOutcome.NO_SNI}.
        """
        reading = read_client_hello(openssl_hello(None))

        self.assertEqual(reading.outcome, HelloOutcome.NO_SNI)

    def test_no_extensions(self) -> None:
        """
        A hello without an extension block (allowed before TLS 1.2) names
        no server.
        """
        reading = read_client_hello(HelloBuilder(extensions=None).records())

        self.assertEqual(reading.outcome, HelloOutcome.NO_SNI)

    def test_other_extensions_only(self) -> None:
        """
        A hello whose extensions hold no C{server_name} names no server.
        """
        builder = HelloBuilder(
            extensions=[(43, b"\x02\x03\x04"), (10, b"\x00\x02\x00\x1d")]
        )

        reading = read_client_hello(builder.records())

        self.assertEqual(reading.outcome, HelloOutcome.NO_SNI)

    def test_trailing_dot(self) -> None:
        """
        A name written with a trailing dot is read without it.
        """
        reading = read_client_hello(HelloBuilder().with_name(b"web.test.").records())

        self.assertEqual(reading.name, "web.test")

    def test_other_name_types_skipped(self) -> None:
        """
        Entries of the list of another name type are passed over for the
        host name.
        """
        data = server_name_extension((7, b"opaque"), (0, b"web.test"))
        builder = HelloBuilder(extensions=[(0, data)])

        reading = read_client_hello(builder.records())

        self.assertEqual(reading.name, "web.test")

    def test_bytes_after_the_hello(self) -> None:
        """
        Bytes after a complete hello (a client's next records) do not
        change the result.
        """
        hello = HelloBuilder().with_name(b"web.test").records()
        following = in_records(b"\x01", content_type=20) + b"early data"

        reading = read_client_hello(hello + following)

        self.assertEqual(reading.name, "web.test")

    def test_done_stays_done(self) -> None:
        """
        Once the hello is read, later bytes return the same result and are
        not counted against the limit.
        """
        reader = ClientHelloReader(limit=400)
        first = reader.feed(HelloBuilder().with_name(b"web.test").records())

        later = reader.feed(b"\xff" * 1000)

        self.assertEqual((first.name, later), ("web.test", first))

    @_EXAMPLES
    @given(name=_NAMES, size=st.integers(1, 300), cuts=st.lists(st.integers(0, 600)))
    def test_any_fragmentation(self, name: str, size: int, cuts: list[int]) -> None:
        """
        However a hello is cut into records and the records into pieces,
        the reader needs more until the last piece, and then reads the
        name.
        """
        hello = HelloBuilder().with_name(name.encode("ascii")).records(size)
        chunks = pieces(hello, cuts)

        readings = feed_all(chunks)

        self.assertEqual(
            [r.outcome for r in readings[:-1]],
            [HelloOutcome.NEED_MORE] * (len(chunks) - 1),
        )
        self.assertEqual(readings[-1], HelloReading(HelloOutcome.NAME, name=name))

    @_EXAMPLES
    @given(cuts=st.lists(st.integers(0, 2000), max_size=40))
    def test_openssl_hello_in_pieces(self, cuts: list[int]) -> None:
        """
        A real hello arriving in any pieces is read once its last byte
        arrives.
        """
        chunks = pieces(openssl_hello(b"web.tunnels.test"), cuts)

        readings = feed_all(chunks)

        self.assertEqual(readings[-1].name, "web.tunnels.test")
        self.assertNotIn(HelloOutcome.NAME, [r.outcome for r in readings[:-1]])

    def test_one_byte_records_one_byte_reads(self) -> None:
        """
        A hello in records of one byte each, read one byte at a time, is
        read whole.
        """
        hello = HelloBuilder().with_name(b"tiny.test").records(1)

        readings = feed_all([hello[i : i + 1] for i in range(len(hello))])

        self.assertEqual(readings[-1].name, "tiny.test")
        self.assertEqual({r.outcome for r in readings[:-1]}, {HelloOutcome.NEED_MORE})


class MalformedTests(SynchronousTestCase):
    """
    Bytes that are not a well-formed ClientHello are refused as soon as
    they show it.
    """

    def assertMalformed(self, data: bytes, problem: str) -> None:
        """
        Reading C{data} gives L{HelloOutcome.MALFORMED} with a problem
        containing C{problem}.
        """
        reading = read_client_hello(data)
        self.assertEqual(reading.outcome, HelloOutcome.MALFORMED, reading)
        self.assertIn(problem, reading.problem)

    def test_http_request(self) -> None:
        """
        A plain HTTP request is not TLS.
        """
        self.assertMalformed(
            b"GET / HTTP/1.1\r\nHost: web.test\r\n\r\n", "first byte 71"
        )

    def test_first_byte_is_enough(self) -> None:
        """
        One byte that cannot start a handshake record is refused at once,
        without waiting for more.
        """
        self.assertMalformed(b"G", "first byte 71")

    def test_ssl2_hello(self) -> None:
        """
        An SSL 2 hello is refused: it cannot carry a name.
        """
        self.assertMalformed(b"\x80\x2e\x01\x00\x02", "SSL 2")

    def test_not_tls_version(self) -> None:
        """
        A record whose major version is not 3 is refused.
        """
        self.assertMalformed(b"\x16\x02", "protocol version 2.x")

    def test_unknown_minor_version(self) -> None:
        """
        A record of a version after TLS 1.3's record layer is refused.
        """
        self.assertMalformed(b"\x16\x03\x09\x00\x10", "protocol version 3.9")

    def test_empty_record(self) -> None:
        """
        A handshake record of no bytes is refused.
        """
        self.assertMalformed(b"\x16\x03\x01\x00\x00", "empty handshake record")

    def test_oversized_record(self) -> None:
        """
        A record over 16 KiB is refused from its header alone.
        """
        self.assertMalformed(b"\x16\x03\x01\x40\x01", "over the 16384 limit")

    def test_other_record_in_between(self) -> None:
        """
        An alert record between two parts of the hello is refused.
        """
        hello = HelloBuilder().with_name(b"web.test").records(20)
        alert = in_records(b"\x02\x28", content_type=21)

        self.assertMalformed(hello[:25] + alert + hello[25:], "content type 21")

    def test_not_a_client_hello(self) -> None:
        """
        A handshake message of another type (a ServerHello) is refused.
        """
        self.assertMalformed(in_records(handshake_message(2, b"\x03\x03")), "type 2")

    def test_truncated_fields(self) -> None:
        """
        A hello whose length ends inside any of its fields is refused,
        naming the field; ending right after the compression methods, it
        is a hello without extensions.
        """
        builder = HelloBuilder().with_name(b"web.test")
        body = builder.body()
        without_extensions = len(HelloBuilder(extensions=None).body())

        readings = {
            cut: read_client_hello(in_records(handshake_message(1, body[:cut])))
            for cut in range(len(body))
        }

        self.assertEqual(
            [cut for cut, r in readings.items() if r.outcome != HelloOutcome.MALFORMED],
            [without_extensions],
        )
        self.assertEqual(readings[without_extensions].outcome, HelloOutcome.NO_SNI)
        self.assertEqual(
            {
                r.problem
                for r in readings.values()
                if r.outcome == HelloOutcome.MALFORMED
                and not r.problem.startswith("the ClientHello ends inside its ")
            },
            set(),
        )

    def test_long_session_id(self) -> None:
        """
        A session id over 32 bytes is refused.
        """
        builder = HelloBuilder(session_id=b"\x01" * 33).with_name(b"a.test")

        self.assertMalformed(builder.records(), "session id")

    def test_odd_cipher_suites(self) -> None:
        """
        A cipher suite list of odd length is refused.
        """
        builder = HelloBuilder(cipher_suites=b"\x13\x01\x13").with_name(b"a.test")

        self.assertMalformed(builder.records(), "cipher suites")

    def test_no_compression(self) -> None:
        """
        A hello offering no compression method at all is refused.
        """
        builder = HelloBuilder(compression=b"").with_name(b"a.test")

        self.assertMalformed(builder.records(), "compression methods")

    def test_bytes_after_extensions(self) -> None:
        """
        Bytes between the extension block and the end of the message are
        refused.
        """
        builder = HelloBuilder(trailing=b"\x00").with_name(b"a.test")

        self.assertMalformed(builder.records(), "bytes follow the extensions")

    def test_duplicate_extension(self) -> None:
        """
        Two extensions of one type are refused.
        """
        builder = HelloBuilder().with_name(b"a.test").with_name(b"b.test")

        self.assertMalformed(builder.records(), "appears twice")

    def test_empty_name_list(self) -> None:
        """
        A C{server_name} extension with an empty list is refused.
        """
        builder = HelloBuilder(extensions=[(0, b"\x00\x00")])

        self.assertMalformed(builder.records(), "empty or ill-sized")

    def test_empty_extension_data(self) -> None:
        """
        A C{server_name} extension without data (which only a server may
        send) is refused.
        """
        builder = HelloBuilder(extensions=[(0, b"")])

        self.assertMalformed(builder.records(), "server_name extension ends")

    def test_two_host_names(self) -> None:
        """
        A list of two host names is refused.
        """
        data = server_name_extension((0, b"a.test"), (0, b"b.test"))

        self.assertMalformed(
            HelloBuilder(extensions=[(0, data)]).records(), "two host names"
        )

    def test_no_host_name_in_list(self) -> None:
        """
        A list of names of other types only is refused.
        """
        data = server_name_extension((7, b"opaque"))

        self.assertMalformed(
            HelloBuilder(extensions=[(0, data)]).records(), "no host name"
        )

    def test_not_a_host_name(self) -> None:
        """
        Names that are not DNS host names are refused: non-ASCII bytes,
        spaces, a port, a wildcard, an empty name, a name too long.
        """
        for name in (
            b"caf\xc3\xa9.test",
            b"a b.test",
            b"web.test:443",
            b"*.test",
            b"",
            b"a." * 127 + b"test",
        ):
            with self.subTest(name=name):
                builder = HelloBuilder().with_name(name)
                self.assertEqual(
                    read_client_hello(builder.records()).outcome,
                    HelloOutcome.MALFORMED,
                )

    @_EXAMPLES
    @given(data=st.binary(min_size=1, max_size=400))
    def test_random_bytes(self, data: bytes) -> None:
        """
        Random bytes never crash the reader, and never give a name that is
        not a valid host name.
        """
        reading = read_client_hello(data)

        if reading.outcome is HelloOutcome.NAME:
            self.assertRegex(reading.name, r"^[a-z0-9.-]+$")

    @_EXAMPLES
    @given(
        position=st.integers(0, 10_000),
        value=st.integers(0, 255),
        cuts=st.lists(st.integers(0, 400), max_size=10),
    )
    def test_corrupted_hello(self, position: int, value: int, cuts: list[int]) -> None:
        """
        A hello with one byte changed, in any pieces, is read without an
        error: as a name, no name, malformed, or needing more bytes; and
        the outcome does not depend on how it was cut.
        """
        hello = bytearray(HelloBuilder().with_name(b"web.test").records(100))
        hello[position % len(hello)] = value
        whole = read_client_hello(bytes(hello))

        readings = feed_all(pieces(bytes(hello), cuts))

        self.assertEqual(readings[-1].outcome, whole.outcome)


class LimitTests(SynchronousTestCase):
    """
    A hello is read within the limit of bytes, or refused as too large.
    """

    def test_message_longer_than_limit(self) -> None:
        """
        A handshake header announcing a hello longer than the limit is
        refused at once.
        """
        header = in_records(b"\x01\x00\x50\x00", size=4)

        reading = read_client_hello(header, limit=1000)

        self.assertEqual(reading.outcome, HelloOutcome.TOO_LARGE)
        self.assertIn("20480 bytes long", reading.problem)

    def test_bytes_beyond_limit(self) -> None:
        """
        A hello not complete within the limit of bytes fed is refused once
        the limit is passed, even when every record is small.
        """
        hello = HelloBuilder().with_name(b"web.test").records(1)
        limit = len(hello) // 2

        readings = feed_all(pieces(hello, list(range(0, len(hello), 10))), limit)

        outcomes = [r.outcome for r in readings]
        first = outcomes.index(HelloOutcome.TOO_LARGE)
        self.assertEqual(set(outcomes[:first]), {HelloOutcome.NEED_MORE})
        self.assertEqual(set(outcomes[first:]), {HelloOutcome.TOO_LARGE})
        self.assertLessEqual((first - 1) * 10, limit)

    def test_beyond_limit_in_one_read(self) -> None:
        """
        A hello that ends past the limit is refused as too large even when
        one read brings all of it.
        """
        hello = HelloBuilder().with_name(b"web.test").records(1)

        reading = read_client_hello(hello, limit=len(hello) - 1)

        self.assertEqual(reading.outcome, HelloOutcome.TOO_LARGE)
        self.assertIn(f"first {len(hello) - 1} bytes", reading.problem)

    def test_record_announced_past_limit(self) -> None:
        """
        A record whose header announces that it ends past the limit is
        refused at once, without waiting for its bytes.
        """
        header = b"\x16\x03\x01\x01\x00"

        reading = read_client_hello(header, limit=200)

        self.assertEqual(reading.outcome, HelloOutcome.TOO_LARGE)

    def test_fits_exactly(self) -> None:
        """
        A hello of exactly the limit is read.
        """
        hello = HelloBuilder().with_name(b"web.test").records()

        reading = read_client_hello(hello, limit=len(hello))

        self.assertEqual(reading.name, "web.test")

    def test_default_limit(self) -> None:
        """
        A hello padded to 12 KiB, larger than any browser's, is within the
        default limit.
        """
        builder = HelloBuilder(extensions=[(21, b"\x00" * 12288)]).with_name(b"a.test")

        reading = read_client_hello(builder.records())

        self.assertEqual(reading.name, "a.test")
