"""
Tests for L{tunnelkit.control.messages}: the message classes, their
encoding, and the incremental reader.
"""

import json
import struct
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tunnelkit.control.messages import (
    MAX_MESSAGE_SIZE,
    MESSAGE_TYPES,
    Auth,
    AuthResp,
    Bind,
    BindLabels,
    BindLabelsResp,
    BindResp,
    Envelope,
    ErrorReply,
    HttpOpts,
    Message,
    MessageReader,
    ProxyHeader,
    Restart,
    RestartResp,
    ServerInfo,
    ServerInfoResp,
    Stop,
    StopResp,
    StopTunnel,
    StopTunnelResp,
    TcpOpts,
    TlsOpts,
    Unbind,
    UnbindResp,
    decode_message,
    encode_error,
    encode_message,
)
from tunnelkit.errors import TunnelkitError

SAMPLES: list[Message] = [
    Auth(
        authtoken="tk_secret",
        agent_version="0.1.0",
        os="linux",
        arch="amd64",
        session_id="s-1",
        metadata="laptop",
    ),
    AuthResp(
        session_id="s-1", edge_version="0.1.0", domain="example.com", resumed=True
    ),
    Bind(
        id="b1",
        name="web",
        proto="https",
        forwards_to="localhost:8080",
        metadata="m",
        opts=HttpOpts(
            subdomain="web",
            hostname="web.example.org",
            basic_auth=("user:pass",),
            schemes=("https",),
        ),
    ),
    BindResp(id="b1", url="https://web.example.com", proto="https"),
    BindLabels(
        id="w1",
        name="web",
        labels=("app=web", "env=prod"),
        forwards_to="http://localhost:8000",
    ),
    BindLabelsResp(id="w1", labels=("app=web", "env=prod")),
    Unbind(id="b1"),
    UnbindResp(),
    ServerInfo(),
    ServerInfoResp(edge_version="0.1.0", domain="example.com", region="eu"),
    StopTunnel(id="b1", message="The tunnel was stopped.", error_code="TK_STOPPED"),
    StopTunnelResp(),
    Restart(),
    RestartResp(),
    Stop(),
    StopResp(),
    ProxyHeader(
        binding_id="b1",
        client_addr="192.0.2.7:51000",
        proto="tls",
        passthrough_tls=True,
    ),
    ErrorReply(code="TK_AUTH_FAILED", message="The authtoken is not valid."),
]


def frame(envelope: object) -> bytes:
    """
    Frame any JSON value as a message would be.

    @param envelope: the value to encode as the payload.
    @return: the length prefix and the JSON.
    """
    payload = json.dumps(envelope).encode("utf-8")
    return struct.pack(">I", len(payload)) + payload


def read_one(data: bytes) -> Message:
    """
    Read and decode exactly one message from bytes.

    @param data: the framed bytes.
    @return: the decoded message.
    """
    [envelope] = MessageReader().feed(data)
    return decode_message(envelope)


def decode_body(kind: str, body: dict[str, Any]) -> Message:
    """
    Decode a message given as a type and a body.

    @param kind: the message type.
    @param body: the JSON body.
    @return: the decoded message.
    """
    return read_one(frame({"v": 1, "type": kind, "body": body}))


class EncodingTests(SynchronousTestCase):
    """
    Tests for L{encode_message}, L{encode_error} and L{decode_message}.
    """

    def test_samples_cover_every_type(self) -> None:
        """
        The samples used below hold one instance of every registered type.
        """
        covered = {type(sample).TYPE for sample in SAMPLES}

        self.assertEqual(covered, set(MESSAGE_TYPES))

    def test_every_type_round_trips(self) -> None:
        """
        Every message decodes back to an equal message after encoding.
        """
        decoded = [read_one(encode_message(sample)) for sample in SAMPLES]

        self.assertEqual(decoded, SAMPLES)

    def test_exact_bytes(self) -> None:
        """
        A message is a 4-byte big-endian length and a compact JSON envelope.
        """
        data = encode_message(Unbind(id="b1"))

        payload = b'{"v":1,"type":"unbind","body":{"id":"b1"}}'
        self.assertEqual(data, struct.pack(">I", len(payload)) + payload)

    def test_encode_error(self) -> None:
        """
        L{encode_error} frames an C{error} message with code and sentence.
        """
        data = encode_error("TK_NOPE", "Do something else.")

        self.assertEqual(read_one(data), ErrorReply("TK_NOPE", "Do something else."))

    def test_non_ascii_text_round_trips(self) -> None:
        """
        Text outside ASCII, including characters JSON must escape, survives.
        """
        message = Auth(metadata='café \u2028 \U0001f600 "quoted" \\')

        self.assertEqual(read_one(encode_message(message)), message)

    def test_encode_too_large(self) -> None:
        """
        A message whose JSON exceeds the limit is refused when encoding.
        """
        message = Auth(metadata="x" * 200)

        error = self.assertRaises(TunnelkitError, encode_message, message, max_size=100)
        self.assertEqual(error.code, "TK_MESSAGE_TOO_LARGE")

    def test_unknown_body_fields_ignored(self) -> None:
        """
        Fields a newer peer adds to a body are ignored.
        """
        message = decode_body("unbind", {"id": "b1", "reason": {"x": [1, 2]}})

        self.assertEqual(message, Unbind(id="b1"))

    def test_unknown_envelope_fields_ignored(self) -> None:
        """
        Fields a newer peer adds to the envelope are ignored.
        """
        data = frame({"v": 1, "type": "unbind", "body": {"id": "b1"}, "trace": "t"})

        self.assertEqual(read_one(data), Unbind(id="b1"))

    def test_missing_fields_take_defaults(self) -> None:
        """
        Fields left out of a body take their defaults.
        """
        message = decode_body("auth_resp", {"session_id": "s"})

        self.assertEqual(message, AuthResp(session_id="s"))

    def test_missing_body_is_empty(self) -> None:
        """
        An envelope without a body decodes as if the body were empty.
        """
        message = read_one(frame({"v": 1, "type": "server_info_resp"}))

        self.assertEqual(message, ServerInfoResp())

    def test_unknown_type(self) -> None:
        """
        A message of an unknown type is refused with C{TK_UNKNOWN_MESSAGE}.
        """
        [envelope] = MessageReader().feed(frame({"v": 1, "type": "teleport"}))

        error = self.assertRaises(TunnelkitError, decode_message, envelope)
        self.assertEqual(error.code, "TK_UNKNOWN_MESSAGE")
        self.assertIn("'teleport'", error.message)

    def test_newer_version(self) -> None:
        """
        A message from a newer major version is refused with
        C{TK_PROTOCOL_VERSION}.
        """
        [envelope] = MessageReader().feed(frame({"v": 2, "type": "unbind"}))

        error = self.assertRaises(TunnelkitError, decode_message, envelope)
        self.assertEqual(error.code, "TK_PROTOCOL_VERSION")

    def test_wrong_string_type(self) -> None:
        """
        A number where a string belongs is C{TK_BAD_MESSAGE} naming the field.
        """
        error = self.assertRaises(
            TunnelkitError, decode_body, "auth", {"authtoken": "t", "os": 3}
        )

        self.assertEqual(error.code, "TK_BAD_MESSAGE")
        self.assertIn("auth.os", error.message)

    def test_wrong_boolean_type(self) -> None:
        """
        A string where a boolean belongs is C{TK_BAD_MESSAGE} naming the field.
        """
        error = self.assertRaises(
            TunnelkitError, decode_body, "proxy", {"passthrough_tls": "yes"}
        )

        self.assertEqual(error.code, "TK_BAD_MESSAGE")
        self.assertIn("proxy.passthrough_tls", error.message)

    def test_wrong_array_item_type(self) -> None:
        """
        A number inside an array of strings is C{TK_BAD_MESSAGE} naming it.
        """
        body = {"proto": "http", "opts": {"schemes": ["http", 1]}}

        error = self.assertRaises(TunnelkitError, decode_body, "bind", body)

        self.assertEqual(error.code, "TK_BAD_MESSAGE")
        self.assertIn("bind.opts.schemes", error.message)

    def test_error_leaves_value_out(self) -> None:
        """
        The sentence for a field of the wrong type does not repeat the value,
        which may be a secret.
        """
        error = self.assertRaises(
            TunnelkitError, decode_body, "auth", {"authtoken": ["tk_secret"]}
        )

        self.assertNotIn("tk_secret", error.message)

    def test_body_not_object(self) -> None:
        """
        A body that is not an object is C{TK_BAD_MESSAGE}.
        """
        data = frame({"v": 1, "type": "unbind", "body": ["b1"]})

        error = self.assertRaises(TunnelkitError, MessageReader().feed, data)

        self.assertEqual(error.code, "TK_BAD_MESSAGE")


class BindTests(SynchronousTestCase):
    """
    Tests for L{Bind} and its options, which are decoded by protocol.
    """

    def test_tcp_opts(self) -> None:
        """
        The options of a C{tcp} binding decode as L{TcpOpts}.
        """
        body = {"proto": "tcp", "opts": {"remote_addr": "0.0.0.0:2222"}}

        message = decode_body("bind", body)

        self.assertEqual(message, Bind(proto="tcp", opts=TcpOpts("0.0.0.0:2222")))

    def test_http_opts(self) -> None:
        """
        The options of an C{http} binding decode as L{HttpOpts}.
        """
        body = {"proto": "http", "opts": {"subdomain": "a", "basic_auth": ["u:p"]}}

        message = decode_body("bind", body)

        expected = Bind(proto="http", opts=HttpOpts(subdomain="a", basic_auth=("u:p",)))
        self.assertEqual(message, expected)

    def test_tls_opts(self) -> None:
        """
        The options of a C{tls} binding decode as L{TlsOpts}, ignoring fields
        that belong to other protocols.
        """
        body = {"proto": "tls", "opts": {"hostname": "h.example", "schemes": [1]}}

        message = decode_body("bind", body)

        self.assertEqual(message, Bind(proto="tls", opts=TlsOpts(hostname="h.example")))

    def test_default_opts_follow_proto(self) -> None:
        """
        A binding made without options gets the defaults of its protocol.
        """
        binding = Bind(proto="tls")

        self.assertEqual(binding.opts, TlsOpts())

    def test_opts_encode_as_object(self) -> None:
        """
        Options are encoded as a nested object, arrays as JSON arrays.
        """
        binding = Bind(proto="http", opts=HttpOpts(schemes=("http", "https")))

        body = binding.to_body()

        self.assertEqual(
            body["opts"],
            {
                "subdomain": "",
                "hostname": "",
                "basic_auth": [],
                "schemes": ["http", "https"],
                "host_header": "",
            },
        )

    def test_unknown_proto(self) -> None:
        """
        A binding for an unknown protocol is C{TK_BAD_MESSAGE} naming the field.
        """
        error = self.assertRaises(TunnelkitError, decode_body, "bind", {"proto": "ssh"})

        self.assertEqual(error.code, "TK_BAD_MESSAGE")
        self.assertIn("bind.proto", error.message)

    def test_opts_not_object(self) -> None:
        """
        Options that are not an object are C{TK_BAD_MESSAGE}.
        """
        body = {"proto": "tcp", "opts": "0.0.0.0:22"}

        error = self.assertRaises(TunnelkitError, decode_body, "bind", body)

        self.assertEqual(error.code, "TK_BAD_MESSAGE")
        self.assertIn("bind.opts", error.message)

    def test_mismatched_opts(self) -> None:
        """
        Options of another protocol's class are refused on construction.
        """
        error = self.assertRaises(TunnelkitError, Bind, proto="tcp", opts=TlsOpts())

        self.assertEqual(error.code, "TK_BAD_MESSAGE")

    def test_repr_hides_secrets(self) -> None:
        """
        The C{repr} of a request leaves out authtokens and passwords.
        """
        texts = repr(Auth(authtoken="tk_secret")) + repr(
            Bind(opts=HttpOpts(basic_auth=("user:hunter2",)))
        )

        self.assertNotIn("tk_secret", texts)
        self.assertNotIn("hunter2", texts)


class MessageReaderTests(SynchronousTestCase):
    """
    Tests for L{MessageReader}.
    """

    def test_byte_by_byte(self) -> None:
        """
        A message fed one byte at a time comes out once, when complete.
        """
        data = encode_message(SAMPLES[0])
        reader = MessageReader()

        results = [reader.feed(data[i : i + 1]) for i in range(len(data))]

        self.assertEqual(results[:-1], [[]] * (len(data) - 1))
        self.assertEqual([decode_message(e) for e in results[-1]], [SAMPLES[0]])

    def test_two_in_one_feed(self) -> None:
        """
        Two messages in one chunk both come out, in order.
        """
        data = encode_message(Unbind(id="a")) + encode_message(Unbind(id="b"))

        envelopes = MessageReader().feed(data)

        self.assertEqual(
            [decode_message(e) for e in envelopes], [Unbind(id="a"), Unbind(id="b")]
        )

    def test_partial_kept(self) -> None:
        """
        The bytes of an incomplete message stay in C{unconsumed}.
        """
        data = encode_message(Unbind(id="a"))
        reader = MessageReader()

        reader.feed(data[:7])

        self.assertEqual(reader.unconsumed, data[:7])

    def test_remainder_after_proxy_header(self) -> None:
        """
        A reader limited to one message leaves every later byte unread and
        exact, even bytes that look like a message.
        """
        raw = encode_message(Unbind(id="x")) + bytes(range(256)) + b"\x00\x00"
        reader = MessageReader(max_messages=1)

        envelopes = reader.feed(encode_message(ProxyHeader(binding_id="b1")) + raw)

        self.assertEqual(len(envelopes), 1)
        self.assertTrue(reader.done)
        self.assertEqual(reader.unconsumed, raw)

    def test_oversize_length(self) -> None:
        """
        A length over the limit is refused as soon as the length is read.
        """
        reader = MessageReader(max_size=100)

        error = self.assertRaises(TunnelkitError, reader.feed, struct.pack(">I", 101))

        self.assertEqual(error.code, "TK_BAD_MESSAGE")

    def test_default_limit(self) -> None:
        """
        By default a payload of exactly the limit is accepted.
        """
        padding = MAX_MESSAGE_SIZE - len(frame({"v": 1, "type": "x", "p": ""})) + 4
        data = frame({"v": 1, "type": "x", "p": "p" * padding})

        [envelope] = MessageReader().feed(data)

        self.assertEqual(len(data), MAX_MESSAGE_SIZE + 4)
        self.assertEqual(envelope.type, "x")

    def test_bad_json(self) -> None:
        """
        A payload that is not JSON is C{TK_BAD_MESSAGE}.
        """
        data = struct.pack(">I", 5) + b"{nope"

        error = self.assertRaises(TunnelkitError, MessageReader().feed, data)

        self.assertEqual(error.code, "TK_BAD_MESSAGE")

    def test_bad_utf8(self) -> None:
        """
        A payload that is not UTF-8 is C{TK_BAD_MESSAGE}.
        """
        data = struct.pack(">I", 3) + b'"\xff"'

        error = self.assertRaises(TunnelkitError, MessageReader().feed, data)

        self.assertEqual(error.code, "TK_BAD_MESSAGE")

    def test_not_an_object(self) -> None:
        """
        A JSON payload that is not an object is C{TK_BAD_MESSAGE}.
        """
        error = self.assertRaises(TunnelkitError, MessageReader().feed, frame([1]))

        self.assertEqual(error.code, "TK_BAD_MESSAGE")

    def test_missing_type(self) -> None:
        """
        An envelope without a type is C{TK_BAD_MESSAGE}.
        """
        data = frame({"v": 1, "body": {}})

        error = self.assertRaises(TunnelkitError, MessageReader().feed, data)

        self.assertEqual(error.code, "TK_BAD_MESSAGE")

    def test_bad_version(self) -> None:
        """
        An envelope whose C{v} is missing, not an integer, or below 1 is
        C{TK_BAD_MESSAGE}.
        """
        versions: list[dict[str, object]] = [{}, {"v": "1"}, {"v": True}, {"v": 0}]

        codes = []
        for version in versions:
            data = frame({"type": "unbind", **version})
            codes.append(self.assertRaises(TunnelkitError, MessageReader().feed, data))

        self.assertEqual([e.code for e in codes], ["TK_BAD_MESSAGE"] * 4)

    def test_non_standard_constants(self) -> None:
        """
        C{NaN} and C{Infinity}, which JSON lacks, are C{TK_BAD_MESSAGE}.
        """
        payload = b'{"v":1,"type":"x","body":{"n":NaN}}'
        data = struct.pack(">I", len(payload)) + payload

        error = self.assertRaises(TunnelkitError, MessageReader().feed, data)

        self.assertEqual(error.code, "TK_BAD_MESSAGE")

    def test_deep_nesting(self) -> None:
        """
        JSON nested too deeply to parse is C{TK_BAD_MESSAGE}.
        """
        payload = b"[" * 60000
        data = struct.pack(">I", len(payload)) + payload

        error = self.assertRaises(TunnelkitError, MessageReader().feed, data)

        self.assertEqual(error.code, "TK_BAD_MESSAGE")

    def test_error_repeats(self) -> None:
        """
        After an error, every later feed raises the same error.
        """
        reader = MessageReader(max_size=10)
        first = self.assertRaises(TunnelkitError, reader.feed, struct.pack(">I", 11))

        second = self.assertRaises(
            TunnelkitError, reader.feed, encode_message(Unbind())
        )

        self.assertIs(second, first)


short_text = st.text(
    alphabet=st.sampled_from('ab1:" \\\xe9\u2028\U0001f600'), max_size=8
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | short_text,
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(short_text, children, max_size=3),
    max_leaves=8,
)
field_names = st.sampled_from(
    sorted({name for cls in MESSAGE_TYPES.values() for name in cls().to_body()})
)
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "v": json_values | st.integers(min_value=-2, max_value=3),
        "type": json_values | st.sampled_from(sorted(MESSAGE_TYPES)),
        "body": json_values
        | st.dictionaries(field_names | short_text, json_values, max_size=6),
    },
)


class MessageReaderPropertyTests(SynchronousTestCase):
    """
    Properties of L{MessageReader} and L{decode_message} on any input.
    """

    @given(st.lists(st.binary(max_size=64), max_size=20))
    def test_any_bytes(self, chunks: list[bytes]) -> None:
        """
        Any bytes, in any chunks, give envelopes or C{TK_BAD_MESSAGE}.
        """
        reader = MessageReader(max_size=512)

        try:
            for chunk in chunks:
                for envelope in reader.feed(chunk):
                    self.assertIsInstance(envelope, Envelope)
        except TunnelkitError as error:
            self.assertEqual(error.code, "TK_BAD_MESSAGE")

    @given(st.binary(max_size=300))
    def test_any_payload(self, payload: bytes) -> None:
        """
        Any payload behind a valid length gives an envelope or
        C{TK_BAD_MESSAGE}.
        """
        reader = MessageReader()

        try:
            envelopes = reader.feed(struct.pack(">I", len(payload)) + payload)
        except TunnelkitError as error:
            self.assertEqual(error.code, "TK_BAD_MESSAGE")
        else:
            self.assertEqual(len(envelopes), 1)

    @given(envelopes)
    def test_any_envelope(self, envelope: dict[str, Any]) -> None:
        """
        Any JSON object decodes to a message or fails with one of the three
        codes a peer's message can earn, never anything else.
        """
        data = frame(envelope)

        try:
            decode_message(MessageReader().feed(data)[0])
        except TunnelkitError as error:
            self.assertIn(
                error.code,
                {"TK_BAD_MESSAGE", "TK_UNKNOWN_MESSAGE", "TK_PROTOCOL_VERSION"},
            )
