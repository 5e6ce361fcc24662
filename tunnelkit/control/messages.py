"""
The control messages between agent and edge, and their framing.

A message on the wire is a 4-byte big-endian length followed by that many
bytes of UTF-8 JSON, an envelope C{{"v": 1, "type": ..., "body": {...}}}.
This module holds the typed message classes, encodes them, and reads them
back incrementally from bytes; it does no I/O. The format is described for
people in C{docs/wire.md}.
"""

import json
import struct
from dataclasses import dataclass, field, fields
from functools import cache
from types import MappingProxyType
from typing import Any, ClassVar, Generic, Mapping, Self, TypeVar, get_type_hints

from tunnelkit.errors import TunnelkitError

PROTOCOL_VERSION = 1
"""The major version of the control protocol this module speaks."""

MAX_MESSAGE_SIZE = 65536
"""The default largest JSON payload, in bytes, a reader accepts."""

PROTOS = ("http", "https", "tcp", "tls")
"""The tunnel protocols a binding may ask for."""

_LENGTH = struct.Struct(">I")
_COMPATIBLE = "check that agent and edge run compatible tunnelkit versions"


def _quote(text: str, limit: int = 40) -> str:
    """
    Show text that came from a peer safely inside an error sentence.

    @param text: any string.
    @param limit: how many characters to show at most.
    @return: a printable, quoted, shortened form of C{text}.
    """
    if len(text) > limit:
        return repr(text[:limit]) + "..."
    return repr(text)


def _json_kind(value: object) -> str:
    """
    Name the JSON type of a decoded value, for error sentences.

    @param value: a value produced by C{json.loads}.
    @return: e.g. C{"a string"} or C{"null"}.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _bad(sentence: str) -> TunnelkitError:
    """
    Make the error for a message that breaks the format.

    @param sentence: what is wrong, without the closing advice.
    @return: a C{TK_BAD_MESSAGE} error.
    """
    return TunnelkitError("TK_BAD_MESSAGE", f"{sentence}; {_COMPATIBLE}.")


def _decode_value(value: object, hint: object, where: str) -> object:
    """
    Check one decoded JSON value against a field's type.

    @param value: the decoded JSON value.
    @param hint: the field's type: C{str}, C{bool} or C{tuple[str, ...]}.
    @param where: the field's name for the error, e.g. C{bind.opts.hostname}.
    @return: the value as the field stores it (arrays become tuples).
    @raise TunnelkitError: C{TK_BAD_MESSAGE} if the value has the wrong type.
    """
    if hint is str:
        if isinstance(value, str):
            return value
        wanted = "a string"
    elif hint is bool:
        if isinstance(value, bool):
            return value
        wanted = "a boolean"
    elif hint == tuple[str, ...]:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        wanted = "an array of strings"
    else:
        raise TypeError(f"no JSON decoding for fields of type {hint!r}")
    raise _bad(f"Field {where} must be {wanted}, not {_json_kind(value)}")


class _Body:
    """
    The JSON object form shared by messages and binding options.

    Subclasses are frozen dataclasses whose fields are C{str}, C{bool} or
    C{tuple[str, ...]}, each with a default, so a missing field takes its
    default and an unknown one is ignored.
    """

    _WHERE: ClassVar[str]

    @classmethod
    @cache
    def _field_types(cls) -> tuple[tuple[str, object], ...]:
        hints = get_type_hints(cls)
        return tuple((f.name, hints[f.name]) for f in fields(cls))  # type: ignore

    @classmethod
    def _decode_fields(cls, body: object, skip: str = "") -> dict[str, Any]:
        """
        Check and convert the fields of a decoded JSON object.

        @param body: the decoded JSON value that should be an object.
        @param skip: a field left out, for subclasses that decode it themselves.
        @return: keyword arguments for the class.
        @raise TunnelkitError: C{TK_BAD_MESSAGE} naming the first bad field.
        """
        if not isinstance(body, dict):
            raise _bad(f"The body of {cls._WHERE} must be an object")
        values = {}
        for name, hint in cls._field_types():
            if name != skip and name in body:
                where = f"{cls._WHERE}.{name}"
                values[name] = _decode_value(body[name], hint, where)
        return values

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Self:
        """
        Build an instance from a decoded JSON object.

        @param body: the JSON object; unknown keys are ignored, missing keys
            take their defaults.
        @return: the instance.
        @raise TunnelkitError: C{TK_BAD_MESSAGE} naming a field of the wrong
            type.
        """
        return cls(**cls._decode_fields(body))

    def to_body(self) -> dict[str, Any]:
        """
        @return: this instance as a JSON-ready object.
        """
        body: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            body[f.name] = list(value) if isinstance(value, tuple) else value
        return body


class Message(_Body):
    """
    A control message: one of the classes in L{MESSAGE_TYPES}.

    @cvar TYPE: the C{type} of the envelope that carries this message.
    """

    TYPE: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "TYPE" in cls.__dict__:
            cls._WHERE = cls.TYPE


_R = TypeVar("_R", bound=Message)


class Request(Message, Generic[_R]):
    """
    A message that opens an RPC stream and expects one reply.

    @cvar RESPONSE: the class of a successful reply; its type is this
        request's type followed by C{_resp}. The other possible reply is
        L{ErrorReply}.
    """

    RESPONSE: ClassVar[type[Message]]


# Binding options, one class per tunnel protocol.


@dataclass(frozen=True)
class TcpOpts(_Body):
    """
    Options of a C{tcp} binding.

    @ivar remote_addr: the public C{host:port} to bind, or C{""} for any.
    """

    _WHERE: ClassVar[str] = "bind.opts"
    remote_addr: str = ""


@dataclass(frozen=True)
class HttpOpts(_Body):
    """
    Options of an C{http} or C{https} binding.

    @ivar subdomain: the name to take under the edge's domain, or C{""}.
    @ivar hostname: a full host name to take instead, or C{""}.
    @ivar basic_auth: C{user:password} pairs, any of which lets a request in.
    @ivar schemes: the public schemes to serve, C{"http"} and/or C{"https"};
        empty means both.
    @ivar host_header: the C{Host} the upstream should see, which the edge
        writes into each request (the original goes in C{X-Forwarded-Host});
        C{""} passes the public host through unchanged.
    """

    _WHERE: ClassVar[str] = "bind.opts"
    subdomain: str = ""
    hostname: str = ""
    basic_auth: tuple[str, ...] = field(default=(), repr=False)
    schemes: tuple[str, ...] = ()
    host_header: str = ""


@dataclass(frozen=True)
class TlsOpts(_Body):
    """
    Options of a C{tls} binding, whose connections pass through by SNI.

    @ivar subdomain: the name to take under the edge's domain, or C{""}.
    @ivar hostname: a full host name to take instead, or C{""}.
    """

    _WHERE: ClassVar[str] = "bind.opts"
    subdomain: str = ""
    hostname: str = ""


BindOpts = TcpOpts | HttpOpts | TlsOpts
"""The options of a binding, one class per tunnel protocol."""

OPTS_BY_PROTO: Mapping[str, type[BindOpts]] = MappingProxyType(
    {"tcp": TcpOpts, "http": HttpOpts, "https": HttpOpts, "tls": TlsOpts}
)
"""The options class that goes with each tunnel protocol."""


# Replies.


@dataclass(frozen=True)
class ErrorReply(Message):
    """
    The reply to a request that failed.

    @ivar code: a stable C{TK_} code.
    @ivar message: a sentence saying what went wrong and what to do.
    """

    TYPE: ClassVar[str] = "error"
    code: str = ""
    message: str = ""


@dataclass(frozen=True)
class AuthResp(Message):
    """
    The edge accepted the agent.

    @ivar session_id: the session's id, to send again when resuming it.
    @ivar edge_version: the edge's tunnelkit version.
    @ivar domain: the base domain public names are made under.
    @ivar resumed: whether an earlier session was resumed.
    """

    TYPE: ClassVar[str] = "auth_resp"
    session_id: str = ""
    edge_version: str = ""
    domain: str = ""
    resumed: bool = False


@dataclass(frozen=True)
class BindResp(Message):
    """
    The edge made a binding public.

    @ivar id: the binding id the agent chose.
    @ivar url: the public URL, such as C{https://name.example.com}.
    @ivar proto: the binding's tunnel protocol.
    @ivar token: an opaque affinity token; sent back in L{Bind}, it asks for
        the same public address after a reconnect, even to a restarted edge.
    @ivar urls: every public URL of the binding, C{url} first: an HTTP
        binding served over both schemes has an C{https} and an C{http} URL.
    """

    TYPE: ClassVar[str] = "bind_resp"
    id: str = ""
    url: str = ""
    proto: str = ""
    token: str = ""
    urls: tuple[str, ...] = ()


@dataclass(frozen=True)
class BindLabelsResp(Message):
    """
    The edge added a labeled tunnel to the groups its labels select.

    @ivar id: the binding id the agent chose.
    @ivar labels: the labels bound, C{key=value} each, sorted.
    """

    TYPE: ClassVar[str] = "bind_labels_resp"
    id: str = ""
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class UnbindResp(Message):
    """
    The edge removed a binding.
    """

    TYPE: ClassVar[str] = "unbind_resp"


@dataclass(frozen=True)
class ServerInfoResp(Message):
    """
    What the edge says about itself.

    @ivar edge_version: the edge's tunnelkit version.
    @ivar domain: the base domain public names are made under.
    @ivar region: the edge's region name, or C{""}.
    """

    TYPE: ClassVar[str] = "server_info_resp"
    edge_version: str = ""
    domain: str = ""
    region: str = ""


@dataclass(frozen=True)
class StopTunnelResp(Message):
    """
    The agent stopped the tunnel.
    """

    TYPE: ClassVar[str] = "stop_tunnel_resp"


@dataclass(frozen=True)
class RestartResp(Message):
    """
    The agent will restart.
    """

    TYPE: ClassVar[str] = "restart_resp"


@dataclass(frozen=True)
class StopResp(Message):
    """
    The agent will stop.
    """

    TYPE: ClassVar[str] = "stop_resp"


# Requests from the agent to the edge.


@dataclass(frozen=True)
class Auth(Request[AuthResp]):
    """
    The agent's first request on a new connection.

    @ivar authtoken: the agent's secret; left out of C{repr}.
    @ivar agent_version: the agent's tunnelkit version.
    @ivar os: the agent's operating system, e.g. C{linux}.
    @ivar arch: the agent's machine architecture, e.g. C{amd64}.
    @ivar session_id: C{""} for a new session, else the session to resume.
    @ivar metadata: free text the user attached to the session.
    """

    TYPE: ClassVar[str] = "auth"
    RESPONSE: ClassVar[type[Message]] = AuthResp
    authtoken: str = field(default="", repr=False)
    agent_version: str = ""
    os: str = ""
    arch: str = ""
    session_id: str = ""
    metadata: str = ""


@dataclass(frozen=True)
class Bind(Request[BindResp]):
    """
    Ask the edge for a public endpoint.

    @ivar id: the binding id, chosen by the agent and unique in its session.
    @ivar name: the tunnel's name in the agent's configuration.
    @ivar proto: one of L{PROTOS}.
    @ivar forwards_to: where the agent sends connections, for display only.
    @ivar metadata: free text the user attached to the tunnel.
    @ivar opts: the options for C{proto}; C{None} is replaced on construction
        by that protocol's defaults, so an instance never holds C{None}.
    @ivar token: the affinity token of an earlier L{BindResp} for this
        binding, or C{""}.
    @raise TunnelkitError: C{TK_BAD_MESSAGE} on construction if C{proto} is
        unknown or C{opts} is not the class L{OPTS_BY_PROTO} gives for it.
    """

    TYPE: ClassVar[str] = "bind"
    RESPONSE: ClassVar[type[Message]] = BindResp
    id: str = ""
    name: str = ""
    proto: str = "http"
    forwards_to: str = ""
    metadata: str = ""
    opts: BindOpts | None = None
    token: str = ""

    def __post_init__(self) -> None:
        opts_class = OPTS_BY_PROTO.get(self.proto)
        if opts_class is None:
            raise _bad(
                f"Field bind.proto must be one of {', '.join(PROTOS)},"
                f" not {_quote(self.proto)}"
            )
        if self.opts is None:
            object.__setattr__(self, "opts", opts_class())
        elif type(self.opts) is not opts_class:
            raise _bad(
                f"Field bind.opts of a {self.proto} binding must hold"
                f" {opts_class.__name__}, not {type(self.opts).__name__}"
            )

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Self:
        """
        Build a bind request, decoding C{opts} by C{proto}.

        @param body: the JSON object; unknown keys are ignored.
        @return: the request.
        @raise TunnelkitError: C{TK_BAD_MESSAGE} naming a bad field.
        """
        values = cls._decode_fields(body, skip="opts")
        proto = values.get("proto", "http")
        opts_class = OPTS_BY_PROTO.get(proto)
        opts = body.get("opts")
        if opts_class is not None and opts is not None:
            values["opts"] = opts_class.from_body(opts)
        return cls(**values)

    def to_body(self) -> dict[str, Any]:
        """
        @return: this request as a JSON-ready object, C{opts} included.
        """
        body = super().to_body()
        body["opts"] = self.opts.to_body() if self.opts is not None else {}
        return body


@dataclass(frozen=True)
class BindLabels(Request[BindLabelsResp]):
    """
    Offer a labeled tunnel: it has no public address of its own, and takes
    the connections of every edge route whose backend asks for exactly its
    labels; the protocol comes from that edge.

    @ivar id: the binding id, chosen by the agent and unique in its session.
    @ivar name: the tunnel's name in the agent's configuration.
    @ivar labels: C{key=value} strings, at least one, each key once.
    @ivar forwards_to: where the agent sends connections, for display only.
    @ivar metadata: free text the user attached to the tunnel.
    """

    TYPE: ClassVar[str] = "bind_labels"
    RESPONSE: ClassVar[type[Message]] = BindLabelsResp
    id: str = ""
    name: str = ""
    labels: tuple[str, ...] = ()
    forwards_to: str = ""
    metadata: str = ""


@dataclass(frozen=True)
class Unbind(Request[UnbindResp]):
    """
    Ask the edge to remove a binding.

    @ivar id: the binding id given in L{Bind}.
    """

    TYPE: ClassVar[str] = "unbind"
    RESPONSE: ClassVar[type[Message]] = UnbindResp
    id: str = ""


@dataclass(frozen=True)
class ServerInfo(Request[ServerInfoResp]):
    """
    Ask the edge about itself.
    """

    TYPE: ClassVar[str] = "server_info"
    RESPONSE: ClassVar[type[Message]] = ServerInfoResp


# Requests from the edge to the agent.


@dataclass(frozen=True)
class StopTunnel(Request[StopTunnelResp]):
    """
    Tell the agent that the edge closed one of its bindings.

    @ivar id: the binding id.
    @ivar message: a sentence for the agent's user.
    @ivar error_code: the C{TK_} code of the reason, or C{""}.
    """

    TYPE: ClassVar[str] = "stop_tunnel"
    RESPONSE: ClassVar[type[Message]] = StopTunnelResp
    id: str = ""
    message: str = ""
    error_code: str = ""


@dataclass(frozen=True)
class Restart(Request[RestartResp]):
    """
    Ask the agent to restart itself.
    """

    TYPE: ClassVar[str] = "restart"
    RESPONSE: ClassVar[type[Message]] = RestartResp


@dataclass(frozen=True)
class Stop(Request[StopResp]):
    """
    Ask the agent to stop.
    """

    TYPE: ClassVar[str] = "stop"
    RESPONSE: ClassVar[type[Message]] = StopResp


# The header of a proxied connection.


@dataclass(frozen=True)
class ProxyHeader(Message):
    """
    The first message of a stream carrying one public connection; it has no
    reply, and every byte after it is the connection's own data.

    @ivar binding_id: the binding the connection arrived on.
    @ivar client_addr: the public client's C{ip:port}.
    @ivar proto: the binding's tunnel protocol.
    @ivar passthrough_tls: whether the bytes are TLS the edge did not end.
    """

    TYPE: ClassVar[str] = "proxy"
    binding_id: str = ""
    client_addr: str = ""
    proto: str = ""
    passthrough_tls: bool = False


MESSAGE_TYPES: Mapping[str, type[Message]] = MappingProxyType(
    {
        cls.TYPE: cls
        for cls in (
            Auth,
            AuthResp,
            Bind,
            BindResp,
            BindLabels,
            BindLabelsResp,
            Unbind,
            UnbindResp,
            ServerInfo,
            ServerInfoResp,
            StopTunnel,
            StopTunnelResp,
            Restart,
            RestartResp,
            Stop,
            StopResp,
            ProxyHeader,
            ErrorReply,
        )
    }
)
"""Every message class, by the C{type} of its envelope."""


@dataclass(frozen=True)
class Envelope:
    """
    One framed message, checked for shape but not yet decoded by type.

    @ivar version: the sender's protocol major version, at least 1.
    @ivar type: the message type, which may be one this side does not know.
    @ivar body: the message's JSON object.
    """

    version: int
    type: str
    body: Mapping[str, Any]


def encode_message(message: Message, max_size: int = MAX_MESSAGE_SIZE) -> bytes:
    """
    Frame a message for the wire.

    @param message: the message.
    @param max_size: the largest JSON payload allowed, in bytes.
    @return: the length prefix and the JSON envelope.
    @raise TunnelkitError: C{TK_MESSAGE_TOO_LARGE} if the JSON is longer
        than C{max_size}.
    """
    envelope = {"v": PROTOCOL_VERSION, "type": message.TYPE, "body": message.to_body()}
    payload = json.dumps(envelope, separators=(",", ":")).encode("ascii")
    if len(payload) > max_size:
        raise TunnelkitError(
            "TK_MESSAGE_TOO_LARGE",
            f"A {message.TYPE} message would take {len(payload)} bytes, more than"
            f" the limit of {max_size}; shorten its metadata or other long fields.",
        )
    return _LENGTH.pack(len(payload)) + payload


def encode_error(code: str, message: str) -> bytes:
    """
    Frame an C{error} reply.

    @param code: a stable C{TK_} code.
    @param message: a sentence saying what went wrong and what to do.
    @return: the framed L{ErrorReply}.
    @raise TunnelkitError: C{TK_MESSAGE_TOO_LARGE} if the sentence is longer
        than a message may be.
    """
    return encode_message(ErrorReply(code=code, message=message))


def decode_message(envelope: Envelope) -> Message:
    """
    Turn an envelope into its typed message.

    @param envelope: an envelope from L{MessageReader.feed}.
    @return: an instance of the class L{MESSAGE_TYPES} gives for its type.
    @raise TunnelkitError: C{TK_PROTOCOL_VERSION} if the sender speaks a
        newer major version, C{TK_UNKNOWN_MESSAGE} for an unknown type, or
        C{TK_BAD_MESSAGE} for a field of the wrong type.
    """
    if envelope.version > PROTOCOL_VERSION:
        raise TunnelkitError(
            "TK_PROTOCOL_VERSION",
            f"The peer speaks control protocol version {envelope.version}, but"
            f" this side speaks only version {PROTOCOL_VERSION}; upgrade"
            " tunnelkit here to match the peer.",
        )
    cls = MESSAGE_TYPES.get(envelope.type)
    if cls is None:
        raise TunnelkitError(
            "TK_UNKNOWN_MESSAGE",
            f"The message type {_quote(envelope.type)} is not known here; "
            f"{_COMPATIBLE}.",
        )
    return cls.from_body(envelope.body)


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _parse_envelope(payload: bytes) -> Envelope:
    """
    Check the JSON payload of one frame.

    @param payload: the bytes after the length prefix.
    @return: the envelope.
    @raise TunnelkitError: C{TK_BAD_MESSAGE} if it is not a UTF-8 JSON
        object with a string C{type}, an integer C{v} of at least 1, and an
        object C{body} (a missing body counts as empty).
    """
    try:
        value = json.loads(payload.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise _bad("A message is not valid UTF-8 JSON") from None
    if not isinstance(value, dict):
        raise _bad(f"A message must be a JSON object, not {_json_kind(value)}")
    kind = value.get("type")
    if not isinstance(kind, str) or not kind:
        raise _bad("A message has no type")
    version = value.get("v")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _bad(f"A {_quote(kind)} message has no valid protocol version v")
    body = value.get("body", {})
    if not isinstance(body, dict):
        raise _bad(f"The body of a {_quote(kind)} message must be an object")
    return Envelope(version=version, type=kind, body=body)


class MessageReader:
    """
    Split a byte stream into envelopes, however the bytes are chunked.

    A reader made with C{max_messages} stops after that many messages and
    keeps every later byte, unread, in L{unconsumed}: this is how the raw
    data after a proxy header is handed on exactly. After an error the
    stream cannot be resynchronised, so every later C{feed} raises it again.
    """

    def __init__(
        self, max_size: int = MAX_MESSAGE_SIZE, max_messages: int | None = None
    ) -> None:
        """
        @param max_size: the largest JSON payload accepted, in bytes.
        @param max_messages: how many messages to read before stopping, or
            C{None} to read for as long as bytes come.
        """
        self._max_size = max_size
        self._remaining = max_messages
        self._buffer = bytearray()
        self._error: TunnelkitError | None = None

    @property
    def done(self) -> bool:
        """
        Whether C{max_messages} messages have been read.
        """
        return self._remaining == 0

    @property
    def unconsumed(self) -> bytes:
        """
        The bytes fed that are not part of a returned message: a partial
        message, or, once L{done}, everything after the last message.
        """
        return bytes(self._buffer)

    def feed(self, data: bytes) -> list[Envelope]:
        """
        Add bytes and take out the messages they complete.

        @param data: the next bytes of the stream.
        @return: the envelopes completed, in order; often none.
        @raise TunnelkitError: C{TK_BAD_MESSAGE} if a length is over the
            limit or a payload is not a valid envelope.
        """
        if self._error is not None:
            raise self._error
        buffer = self._buffer
        buffer += data
        envelopes: list[Envelope] = []
        offset = 0
        try:
            while self._remaining != 0 and len(buffer) - offset >= _LENGTH.size:
                (size,) = _LENGTH.unpack_from(buffer, offset)
                if size > self._max_size:
                    raise _bad(
                        f"A message of {size} bytes is over the limit of"
                        f" {self._max_size}"
                    )
                end = offset + _LENGTH.size + size
                if len(buffer) < end:
                    break
                envelopes.append(_parse_envelope(bytes(buffer[end - size : end])))
                offset = end
                if self._remaining is not None:
                    self._remaining -= 1
        except TunnelkitError as error:
            self._error = error
            raise
        finally:
            del buffer[:offset]
        return envelopes
