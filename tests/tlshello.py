"""
TLS ClientHellos for the tests of the edge's SNI reading: real ones, as
OpenSSL writes them for a client, and hand-built ones whose every field a
test chooses, split into records and pieces as a test asks.
"""

import struct
from dataclasses import dataclass, field

from OpenSSL import SSL


def openssl_hello(server_name: bytes | None, alpn: list[bytes] | None = None) -> bytes:
    """
    @param server_name: the SNI name the client sends, or C{None} for none.
    @param alpn: protocols offered by ALPN, if any.
    @return: the first flight of an OpenSSL client: one record holding its
        ClientHello.
    """
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    if alpn:
        context.set_alpn_protos(alpn)
    connection = SSL.Connection(context, None)
    if server_name is not None:
        connection.set_tlsext_host_name(server_name)
    connection.set_connect_state()
    try:
        connection.do_handshake()
    except SSL.WantReadError:
        pass
    return connection.bio_read(65536)


def _vector(width: int, data: bytes) -> bytes:
    return len(data).to_bytes(width, "big") + data


def server_name_extension(*names: tuple[int, bytes]) -> bytes:
    """
    @param names: C{(name_type, name)} entries of the list.
    @return: the data of a C{server_name} extension listing them.
    """
    entries = b"".join(bytes([kind]) + _vector(2, name) for kind, name in names)
    return _vector(2, entries)


@dataclass
class HelloBuilder:
    """
    A ClientHello built field by field.

    @ivar extensions: C{(type, data)} pairs, in order; C{None} leaves the
        extension block out altogether (as hellos before TLS 1.2 may).
    """

    session_id: bytes = b"\x07" * 32
    cipher_suites: bytes = b"\x13\x01\x13\x02\xc0\x2f"
    compression: bytes = b"\x00"
    extensions: list[tuple[int, bytes]] | None = field(default_factory=list)
    trailing: bytes = b""

    def with_name(self, name: bytes) -> "HelloBuilder":
        """
        @return: this builder, with a C{server_name} extension naming C{name}
            after an unrelated extension (supported_versions).
        """
        assert self.extensions is not None
        self.extensions.append((43, b"\x02\x03\x04"))
        self.extensions.append((0, server_name_extension((0, name))))
        return self

    def body(self) -> bytes:
        """
        @return: the ClientHello message body.
        """
        body = b"\x03\x03" + b"\x11" * 32
        body += _vector(1, self.session_id)
        body += _vector(2, self.cipher_suites)
        body += _vector(1, self.compression)
        if self.extensions is not None:
            block = b"".join(
                struct.pack(">H", kind) + _vector(2, data)
                for kind, data in self.extensions
            )
            body += _vector(2, block)
        return body + self.trailing

    def message(self) -> bytes:
        """
        @return: the handshake message: type 1 and the body's length first.
        """
        return handshake_message(1, self.body())

    def records(self, size: int = 2**14) -> bytes:
        """
        @param size: the most handshake bytes per record.
        @return: the message in handshake records.
        """
        return in_records(self.message(), size)


def handshake_message(kind: int, body: bytes) -> bytes:
    """
    @return: a handshake message of type C{kind}.
    """
    return bytes([kind]) + len(body).to_bytes(3, "big") + body


def in_records(
    message: bytes, size: int = 2**14, content_type: int = 22, version: int = 0x0301
) -> bytes:
    """
    @param message: handshake bytes.
    @param size: the most bytes per record; the last one may hold fewer.
    @return: C{message} cut into records of C{content_type}.
    """
    records = []
    for start in range(0, len(message), size):
        fragment = message[start : start + size]
        records.append(struct.pack(">BHH", content_type, version, len(fragment)))
        records.append(fragment)
    return b"".join(records)


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    """
    @param cuts: offsets into C{data}, in any order, repeats allowed.
    @return: C{data} cut at each offset.
    """
    bounds = sorted({0, len(data), *(c for c in cuts if 0 < c < len(data))})
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]
