"""
Reading the server name (SNI) of a TLS ClientHello, without I/O: bytes go
in as they arrive, and each call says whether more are needed or what the
hello asked for.

L{ClientHelloReader} takes the first bytes of a connection in any pieces,
follows the TLS records they carry (a hello may be split over several
records, and each record over several reads), gathers the handshake
message, and parses the ClientHello (RFC 8446 section 4.1.2, RFC 5246
section 7.4.1.2) far enough to find its C{server_name} extension (RFC 6066
section 3). It never decrypts or answers anything: the bytes it read are
the caller's to pass on unchanged.

Each record is looked at once, when it is complete, so the work is linear
in the bytes read however they are split. A hello whose records end past
the reader's limit is refused as too large, however the bytes are split;
the reader holds no more than the limit and one read.
"""

from dataclasses import dataclass
from enum import Enum

from tunnelkit.hostnames import is_name_or_wildcard

__all__ = [
    "MAX_HELLO_SIZE",
    "HelloOutcome",
    "HelloReading",
    "ClientHelloReader",
    "read_client_hello",
]

MAX_HELLO_SIZE = 16384
"""The most bytes of a connection read while looking for its ClientHello:
records and their headers together. Browsers and TLS libraries send hellos
of 200 to 2,000 bytes, in one record."""

_RECORD_HEADER = 5
_HANDSHAKE_HEADER = 4
_MAX_RECORD = 2**14
"""The largest plaintext record payload (RFC 8446 section 5.1)."""

_HANDSHAKE = 22
"""The record content type of handshake messages."""

_CLIENT_HELLO = 1
"""The handshake message type of a ClientHello."""

_SERVER_NAME = 0
"""The extension type of C{server_name}."""

_HOST_NAME = 0
"""The C{NameType} of a DNS host name in a C{server_name} list."""


class HelloOutcome(Enum):
    """
    What the bytes read so far say.
    """

    NEED_MORE = "need more"
    """The hello is not complete yet."""
    NAME = "name"
    """The hello is complete and names a server."""
    NO_SNI = "no SNI"
    """The hello is complete and names no server."""
    MALFORMED = "malformed"
    """The bytes are not a well-formed TLS ClientHello."""
    TOO_LARGE = "too large"
    """The hello does not fit in the reader's limit."""


@dataclass(frozen=True)
class HelloReading:
    """
    The result of feeding bytes to a L{ClientHelloReader}.

    @ivar outcome: what the bytes say.
    @ivar name: for L{HelloOutcome.NAME}, the server name, in lower case
        without a trailing dot; else C{""}.
    @ivar problem: for L{HelloOutcome.MALFORMED} and
        L{HelloOutcome.TOO_LARGE}, what is wrong, for logs; else C{""}.
    """

    outcome: HelloOutcome
    name: str = ""
    problem: str = ""


NEED_MORE = HelloReading(HelloOutcome.NEED_MORE)
NO_SNI = HelloReading(HelloOutcome.NO_SNI)


class _Malformed(Exception):
    """
    The hello breaks a rule of TLS; the message says which.
    """


class ClientHelloReader:
    """
    Reads a connection's first bytes until its ClientHello is complete.

    Once a call has returned anything but L{HelloOutcome.NEED_MORE}, the
    reader is done and returns that same result for any later call.

    @ivar limit: the most bytes it reads, records and headers together.
    @ivar size: the bytes fed so far.
    """

    def __init__(self, limit: int = MAX_HELLO_SIZE) -> None:
        self.limit = limit
        self.size = 0
        self._pending = bytearray()
        self._handshake = bytearray()
        self._result = NEED_MORE

    def feed(self, data: bytes) -> HelloReading:
        """
        Read more of the connection.

        @param data: the bytes that arrived next, of any length.
        @return: what all the bytes fed so far say.
        """
        if self._result is not NEED_MORE:
            return self._result
        self.size += len(data)
        self._pending += data
        try:
            self._result = self._read_records()
        except _Malformed as problem:
            self._result = HelloReading(HelloOutcome.MALFORMED, problem=str(problem))
        if self._result is NEED_MORE and self.size > self.limit:
            self._result = self._too_large()
        if self._result is not NEED_MORE:
            self._pending = bytearray()
            self._handshake = bytearray()
        return self._result

    def _read_records(self) -> HelloReading:
        """
        Take every complete record out of the pending bytes, then parse the
        hello if the handshake bytes hold all of it.
        """
        pending = self._pending
        read_before = self.size - len(pending)
        offset = 0
        while len(pending) - offset >= _RECORD_HEADER:
            content_type = pending[offset]
            major, minor = pending[offset + 1], pending[offset + 2]
            length = int.from_bytes(pending[offset + 3 : offset + 5], "big")
            _check_record(content_type, major, minor, length, offset == 0)
            end = offset + _RECORD_HEADER + length
            if read_before + end > self.limit:
                # However many bytes one read brought, a record that ends
                # past the limit is not read.
                return self._too_large()
            if end > len(pending):
                break
            self._handshake += pending[offset + _RECORD_HEADER : end]
            offset = end
            reading = self._read_handshake()
            if reading is not NEED_MORE:
                return reading
        del pending[:offset]
        _check_start(pending)
        return NEED_MORE

    def _too_large(self) -> HelloReading:
        return HelloReading(
            HelloOutcome.TOO_LARGE,
            problem=f"no complete ClientHello in the first {self.limit} bytes",
        )

    def _read_handshake(self) -> HelloReading:
        handshake = self._handshake
        if len(handshake) < _HANDSHAKE_HEADER:
            return NEED_MORE
        if handshake[0] != _CLIENT_HELLO:
            raise _Malformed(
                f"the first handshake message is of type {handshake[0]},"
                " not a ClientHello"
            )
        length = int.from_bytes(handshake[1:4], "big")
        if length > self.limit:
            return HelloReading(
                HelloOutcome.TOO_LARGE,
                problem=f"the ClientHello is {length} bytes long; the limit is"
                f" {self.limit}",
            )
        if len(handshake) < _HANDSHAKE_HEADER + length:
            return NEED_MORE
        body = bytes(handshake[_HANDSHAKE_HEADER : _HANDSHAKE_HEADER + length])
        return _parse_client_hello(body)


def read_client_hello(data: bytes, limit: int = MAX_HELLO_SIZE) -> HelloReading:
    """
    Read a ClientHello from bytes at hand.

    @param data: a connection's first bytes.
    @param limit: the most bytes to read.
    @return: what they say, as L{ClientHelloReader.feed} would.
    """
    return ClientHelloReader(limit).feed(data)


def _check_start(pending: bytearray) -> None:
    """
    Refuse a record at once when the first bytes of its header already show
    it is not a TLS handshake record, instead of waiting for a header that
    may never complete.
    """
    if pending and pending[0] != _HANDSHAKE:
        raise _Malformed(_not_handshake(pending[0]))
    if len(pending) >= 2 and pending[1] != 3:
        raise _Malformed(f"the record's protocol version {pending[1]}.x is not TLS")


def _check_record(
    content_type: int, major: int, minor: int, length: int, first: bool
) -> None:
    """
    Check the header of a record that carries part of the hello.

    @raise _Malformed: if it is not a TLS handshake record of a valid size.
    """
    if content_type != _HANDSHAKE:
        if first:
            raise _Malformed(_not_handshake(content_type))
        raise _Malformed(
            f"a record of content type {content_type} came before the"
            " ClientHello was complete"
        )
    if major != 3 or minor > 4:
        raise _Malformed(f"the record's protocol version {major}.{minor} is not TLS")
    if length == 0:
        raise _Malformed("an empty handshake record")
    if length > _MAX_RECORD:
        raise _Malformed(f"a record of {length} bytes, over the {_MAX_RECORD} limit")


def _not_handshake(first_byte: int) -> str:
    if first_byte & 0x80:
        return "an SSL 2 hello, which cannot name a server"
    return f"the first byte {first_byte} does not start a TLS handshake record"


class _Cursor:
    """
    Reads the fields of a message, each checked against what is left.
    """

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.offset = 0
        self.what = what

    @property
    def left(self) -> int:
        return len(self.data) - self.offset

    def take(self, count: int, field_name: str) -> bytes:
        if count > self.left:
            raise _Malformed(f"the {self.what} ends inside its {field_name}")
        start = self.offset
        self.offset += count
        return self.data[start : self.offset]

    def number(self, width: int, field_name: str) -> int:
        return int.from_bytes(self.take(width, field_name), "big")

    def vector(self, width: int, field_name: str) -> bytes:
        return self.take(self.number(width, f"{field_name} length"), field_name)


def _parse_client_hello(body: bytes) -> HelloReading:
    """
    Parse a whole ClientHello message body.

    @raise _Malformed: if a field does not fit, or the extensions break
        the rules the upstream would refuse them for.
    """
    hello = _Cursor(body, "ClientHello")
    hello.take(2, "legacy_version")
    hello.take(32, "random")
    if len(hello.vector(1, "session id")) > 32:
        raise _Malformed("the session id is longer than 32 bytes")
    suites = hello.vector(2, "cipher suites")
    if not suites or len(suites) % 2:
        raise _Malformed("the list of cipher suites is empty or of odd length")
    if not hello.vector(1, "compression methods"):
        raise _Malformed("the list of compression methods is empty")
    if not hello.left:
        # A hello before TLS 1.2 may carry no extensions at all.
        return NO_SNI
    extensions = _Cursor(hello.vector(2, "extensions"), "extension list")
    if hello.left:
        raise _Malformed("bytes follow the extensions")

    name: str | None = None
    seen: set[int] = set()
    while extensions.left:
        kind = extensions.number(2, "extension type")
        data = extensions.vector(2, "extension")
        if kind in seen:
            raise _Malformed(f"the extension of type {kind} appears twice")
        seen.add(kind)
        if kind == _SERVER_NAME:
            name = _parse_server_name(data)
    if name is None:
        return NO_SNI
    return HelloReading(HelloOutcome.NAME, name=name)


def _parse_server_name(data: bytes) -> str:
    """
    Parse the data of a C{server_name} extension: a list of names, of which
    one host name is taken.

    @return: the host name, in lower case without a trailing dot.
    @raise _Malformed: for an empty or ill-sized list, two host names, or a
        name that is not a DNS name.
    """
    extension = _Cursor(data, "server_name extension")
    names = _Cursor(extension.vector(2, "server name list"), "server name list")
    if extension.left or not names.left:
        raise _Malformed("the server name list is empty or ill-sized")
    found: bytes | None = None
    while names.left:
        name_type = names.number(1, "name type")
        name = names.vector(2, "name")
        if name_type != _HOST_NAME:
            continue
        if found is not None:
            raise _Malformed("the server name list holds two host names")
        found = name
    if found is None:
        raise _Malformed("the server name list holds no host name")
    try:
        text = found.decode("ascii").lower()
    except UnicodeDecodeError:
        raise _Malformed("the server name is not ASCII") from None
    if text.endswith("."):
        text = text[:-1]
    if text.startswith("*") or not is_name_or_wildcard(text):
        raise _Malformed(f"the server name {text[:80]!r} is not a host name")
    return text
