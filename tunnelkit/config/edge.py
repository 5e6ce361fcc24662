"""
The edge configuration: C{edge.yml}, loaded, validated and ready to use.

L{load_edge_config} reads the file into a frozen L{EdgeConfig}. Authtokens
are hashed while the file is read, so only SHA-256 digests outlive loading,
and L{EdgeConfig.check_token} compares a presented token against every
digest in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
from dataclasses import dataclass, field
from typing import Mapping

from tunnelkit.config._errors import MISSING_KEY, VERSION, ConfigError
from tunnelkit.config._parsing import HostPort, resolve_path
from tunnelkit.config._values import Section
from tunnelkit.config.edges import EdgeDefinition, read_edges
from tunnelkit.config._yaml import YamlMapping, YamlScalar, describe, read_yaml_file
from tunnelkit.hostnames import DNS_NAME, is_name_or_wildcard

EDGE_CONFIG_VERSION = 1
DEFAULT_STATE_DIR = "~/.local/state/tunnelkit-edge"

EDGE_KEYS = frozenset(
    {
        "version",
        "agent_listener",
        "http_listener",
        "https_listener",
        "domain",
        "public_host",
        "tcp_port_range",
        "tcp_bind_host",
        "authtokens",
        "allow_anonymous",
        "state_dir",
        "tls",
        "session_grace",
        "heartbeat_interval",
        "heartbeat_tolerance",
        "http_head_timeout",
        "http_max_header_size",
        "log",
        "log_level",
        "log_format",
        "edges",
    }
)
_AUTHTOKEN_KEYS = frozenset(
    {"name", "token", "token_sha256", "reserved_addrs", "hostnames", "labels"}
)
_LABEL_PATTERN = re.compile(
    r"^(\*|[A-Za-z0-9][A-Za-z0-9_.\-/]*=(\*|[A-Za-z0-9_.\-/:]*))$"
)
_DOMAIN = DNS_NAME
_SHA256_HEX = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass(frozen=True)
class PortRange:
    """
    An inclusive range of TCP ports.

    @ivar low: the first port.
    @ivar high: the last port, at least C{low}.
    """

    low: int
    high: int

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.low <= port <= self.high

    def __len__(self) -> int:
        return self.high - self.low + 1

    def __str__(self) -> str:
        return f"{self.low}-{self.high}"


@dataclass(frozen=True)
class AuthtokenGrant:
    """
    What one authtoken allows on this edge.

    @ivar name: the name the operator gave the token (safe to log).
    @ivar reserved_addrs: the public TCP addresses this token may bind.
    @ivar hostnames: the host names this token may bind for HTTP and TLS
        tunnels, exact (C{app.example.com}) or wildcards
        (C{*.example.com}); no other token may take a name they cover.
    @ivar token_digest: the SHA-256 digest of the token (not shown by repr).
    @ivar labels: the labels this token may bind labeled tunnels with:
        C{name=value}, C{name=*} (any value) or C{*} (any label); a labeled
        tunnel needs every one of its labels allowed.
    """

    name: str
    reserved_addrs: tuple[HostPort, ...] = ()
    hostnames: tuple[str, ...] = ()
    token_digest: bytes = field(default=b"", repr=False)
    labels: tuple[str, ...] = ()

    def may_bind_label(self, name: str, value: str) -> bool:
        """
        @return: whether one of L{labels} allows the label C{name=value}.
        """
        allowed = self.labels
        return "*" in allowed or f"{name}=*" in allowed or f"{name}={value}" in allowed


@dataclass(frozen=True)
class EdgeTlsFiles:
    """
    The certificate the edge presents, from files.

    @ivar cert: absolute path of the PEM certificate (chain).
    @ivar key: absolute path of the PEM private key.
    """

    cert: str
    key: str


@dataclass(frozen=True)
class EdgeConfig:
    """
    The edge's validated configuration; see C{docs/edge-config.md}.

    @ivar path: the file read, or C{""} for a configuration built in code.
    @ivar version: C{1} when the file set it, else C{None}.
    @ivar agent_listener: the Twisted server endpoint agents dial.
    @ivar http_listener: the endpoint for public HTTP, or C{None}.
    @ivar https_listener: the endpoint for public HTTPS and TLS, or C{None}.
    @ivar domain: the public base domain tunnels get names under.
    @ivar public_host: the host printed in C{tcp://} URLs.
    @ivar tcp_port_range: the ports handed out to TCP tunnels.
    @ivar tcp_bind_host: the interface public TCP listeners bind.
    @ivar authtokens: the tokens accepted, by digest.
    @ivar allow_anonymous: whether agents without a valid token are served.
    @ivar state_dir: the absolute directory for the edge's state.
    @ivar tls: the edge's certificate files, or C{None} to generate a CA in
        C{state_dir}.
    @ivar session_grace: seconds a dropped session's ports stay reserved.
    @ivar heartbeat_interval: seconds between heartbeats.
    @ivar heartbeat_tolerance: seconds without an answer before a session is
        torn down.
    @ivar http_head_timeout: seconds a public HTTP client has to send a
        complete request head before it is answered 408.
    @ivar http_max_header_size: the largest request head accepted, in bytes;
        larger ones are answered 431.
    @ivar log: C{stdout}, C{stderr}, C{false} or an absolute file path.
    @ivar log_level: C{crit}, C{warn}, C{error}, C{info} or C{debug}.
    @ivar log_format: C{term}, C{logfmt} or C{json}.
    @ivar edges: the edges defined under C{edges:}, their backends checked.
    @ivar lines: the line each key is written on, by dotted key: the
        top-level keys, and C{edges.ID.type} and C{edges.ID.hostports}.
    """

    path: str = ""
    version: int | None = None
    agent_listener: str = "tcp:4443"
    http_listener: str | None = None
    https_listener: str | None = None
    domain: str = "localhost"
    public_host: str = "localhost"
    tcp_port_range: PortRange = PortRange(20000, 29999)
    tcp_bind_host: str = "0.0.0.0"
    authtokens: tuple[AuthtokenGrant, ...] = ()
    allow_anonymous: bool = False
    state_dir: str = field(
        default_factory=lambda: os.path.expanduser(DEFAULT_STATE_DIR)
    )
    tls: EdgeTlsFiles | None = None
    session_grace: float = 60.0
    heartbeat_interval: float = 10.0
    heartbeat_tolerance: float = 15.0
    http_head_timeout: float = 30.0
    http_max_header_size: int = 32768
    log: str = "false"
    log_level: str = "info"
    log_format: str = "term"
    edges: tuple[EdgeDefinition, ...] = ()
    lines: Mapping[str, int] = field(
        default_factory=dict, compare=False, hash=False, repr=False
    )

    def where(self, key: str) -> str:
        """
        Say where a key is set, for messages about a setting that fails
        once the edge uses it.

        @param key: a dotted key, such as C{state_dir}.
        @return: C{edge.yml:7: state_dir} when the file sets it, else the
            key and that its default applies.
        """
        line = self.lines.get(key)
        if line is not None and self.path:
            return f"{self.path}:{line}: {key}"
        if self.path:
            return f"{key} (not set in {self.path}, so its default applies)"
        return key

    def check_token(self, token: str) -> AuthtokenGrant | None:
        """
        Find the grant for a presented authtoken.

        The token's SHA-256 digest is compared with every configured digest
        using C{hmac.compare_digest}, and all of them are compared whatever
        the outcome, so the time taken does not depend on which (if any)
        matched or on how much of it matched.

        @param token: the token an agent presented.
        @return: the matching grant, or C{None}; C{allow_anonymous} is for
            the caller to apply.
        """
        digest = hashlib.sha256(token.encode("utf-8")).digest()
        found = None
        for grant in self.authtokens:
            if hmac.compare_digest(digest, grant.token_digest) and found is None:
                found = grant
        return found


def token_digest(token: str) -> bytes:
    """
    @param token: an authtoken.
    @return: its SHA-256 digest, as stored in L{AuthtokenGrant.token_digest}.
    """
    return hashlib.sha256(token.encode("utf-8")).digest()


def load_edge_config(path: str) -> EdgeConfig:
    """
    Load and validate the edge's configuration file.

    @param path: the file to read.
    @return: the validated configuration.
    @raise ConfigError: when the file is missing, unreadable, not YAML, or
        holds an unknown key or a bad value; no partial result is returned.
    """
    return build_edge_config(read_yaml_file(path), path)


def build_edge_config(document: YamlMapping, path: str) -> EdgeConfig:
    """
    Validate an already-parsed edge file.

    @param document: the file's top-level mapping.
    @param path: the file it came from.
    @return: the validated configuration.
    @raise ConfigError: as for L{load_edge_config}.
    """
    root = Section(document)
    root.check_keys(EDGE_KEYS)
    version = _read_version(root)
    domain = _read_domain(root)
    log = root.log_settings()
    authtokens = _read_authtokens(root)
    reserved = {
        a.port: grant.name for grant in authtokens for a in grant.reserved_addrs
    }
    edges = read_edges(root, reserved)
    https_listener = _read_endpoint(root, "https_listener", None)
    _check_edge_listeners(root, edges, https_listener)
    check_edges(edges)
    return EdgeConfig(
        path=path,
        version=version,
        agent_listener=_read_endpoint(root, "agent_listener", "tcp:4443") or "",
        http_listener=_read_endpoint(root, "http_listener", None),
        https_listener=https_listener,
        domain=domain,
        public_host=_read_public_host(root, domain),
        tcp_port_range=_read_port_range(root),
        tcp_bind_host=_read_bind_host(root),
        authtokens=authtokens,
        allow_anonymous=root.boolean("allow_anonymous", False),
        state_dir=_read_state_dir(root),
        tls=_read_tls(root),
        session_grace=root.duration("session_grace", 60.0),
        heartbeat_interval=root.duration("heartbeat_interval", 10.0),
        heartbeat_tolerance=root.duration("heartbeat_tolerance", 15.0),
        http_head_timeout=root.duration("http_head_timeout", 30.0),
        http_max_header_size=_read_header_size(root),
        log=log.log,
        log_level=log.log_level,
        log_format=log.log_format,
        edges=edges,
        lines=_key_lines(root),
    )


def _key_lines(root: Section) -> dict[str, int]:
    """
    @return: the lines of the keys L{EdgeConfig.lines} holds.
    """
    lines = {key: entry.line for key, entry in root.mapping.entries.items()}
    section = root.child("edges")
    for edge_id in section.keys() if section is not None else []:
        edge = section.child(edge_id) if section is not None else None
        for key in ("type", "hostports"):
            entry = edge.entry(key) if edge is not None else None
            if entry is not None:
                lines[f"edges.{edge_id}.{key}"] = entry.line
    return lines


def _check_edge_listeners(
    root: Section, edges: tuple[EdgeDefinition, ...], https_listener: str | None
) -> None:
    """
    Refuse an C{https} or C{tls} edge when the file sets no C{https_listener}:
    nothing would ever serve it.

    @raise ConfigError: at the edge's C{type}.
    """
    if https_listener is not None:
        return
    section = root.child("edges")
    for edge in edges:
        edge_section = section.child(edge.id) if section is not None else None
        if edge.type == "tcp" or edge_section is None:
            continue
        article = "an" if edge.type == "https" else "a"
        raise edge_section.key_error(
            "type",
            f"{article} {edge.type} edge is served on https_listener, which this"
            " file does not set; configure https_listener (such as tcp:443), or"
            " remove the edge",
        )


def check_edges(edges: tuple[EdgeDefinition, ...]) -> None:
    """
    Build every backend of the edges once, with the plugins installed now,
    so that an unknown type or a bad option stops the file from loading.

    @raise ConfigError: naming the file, line, edge and route at fault.
    """
    if not edges:
        return
    from tunnelkit.edge.backends import backend_factories
    from tunnelkit.edge.routes import build_edges
    from tunnelkit.edge.routing import TunnelGroups

    build_edges(edges, TunnelGroups(), backend_factories())


def _read_version(root: Section) -> int | None:
    node = root.node("version")
    if node is None:
        return None
    if (
        isinstance(node, YamlScalar)
        and not isinstance(node.value, bool)
        and node.text == str(EDGE_CONFIG_VERSION)
    ):
        return EDGE_CONFIG_VERSION
    shown = repr(node.text) if isinstance(node, YamlScalar) else describe(node)
    raise ConfigError(
        VERSION,
        f"version {shown} is not supported; this edge reads version 1 files, "
        "so write version: 1",
        path=node.path,
        line=node.line,
        key="version",
    )


def _read_endpoint(root: Section, key: str, default: str | None) -> str | None:
    """
    Read a server endpoint description, checking that Twisted can parse it.

    The description is parsed against a L{MemoryReactor}, so the check
    neither listens nor touches the global reactor.
    """
    node = root.node(key)
    if node is None:
        return default
    if isinstance(node, YamlScalar) and isinstance(node.value, int):
        description = f"tcp:{node.text}"
    else:
        description = root.text_of(key, node).strip()
    from twisted.internet.endpoints import serverFromString
    from twisted.internet.testing import MemoryReactor

    try:
        serverFromString(MemoryReactor(), description)
    except Exception as e:
        raise root.invalid(
            key,
            node,
            f"{description!r} is not a Twisted server endpoint such as "
            f"'tcp:4443' or 'tcp:port=443:interface=0.0.0.0' ({e})",
        )
    return description


def _read_domain(root: Section) -> str:
    domain = root.nonempty_string("domain", "localhost")
    assert domain is not None
    domain = domain.lower().rstrip(".")
    if not _DOMAIN.match(domain):
        raise root.key_error("domain", f"{domain!r} is not a valid DNS name")
    return domain


def _is_host(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return bool(_DOMAIN.match(text.lower()))


def _read_public_host(root: Section, domain: str) -> str:
    host = root.nonempty_string("public_host", domain)
    assert host is not None
    if not _is_host(host):
        raise root.key_error(
            "public_host", f"{host!r} is not a host name or IP address"
        )
    return host


def _read_bind_host(root: Section) -> str:
    host = root.nonempty_string("tcp_bind_host", "0.0.0.0")
    assert host is not None
    if not _is_host(host):
        raise root.key_error(
            "tcp_bind_host", f"{host!r} is not a host name or IP address"
        )
    return host


def _read_port_range(root: Section) -> PortRange:
    node = root.node("tcp_port_range")
    if node is None:
        return PortRange(20000, 29999)
    text = root.text_of("tcp_port_range", node).strip()
    low_text, dash, high_text = text.partition("-")
    if not dash:
        high_text = low_text
    low_text, high_text = low_text.strip(), high_text.strip()
    if not (low_text.isdigit() and high_text.isdigit()):
        raise root.invalid(
            "tcp_port_range", node, f"{text!r} is not a port range such as 20000-29999"
        )
    low, high = int(low_text), int(high_text)
    if not (1 <= low <= 65535 and 1 <= high <= 65535):
        raise root.invalid("tcp_port_range", node, f"{text!r} must lie within 1-65535")
    if low > high:
        raise root.invalid(
            "tcp_port_range", node, f"{text!r} starts after it ends; write low-high"
        )
    return PortRange(low, high)


def _read_header_size(root: Section) -> int:
    size = root.integer("http_max_header_size", 32768)
    if not 1024 <= size <= 1048576:
        raise root.key_error(
            "http_max_header_size", f"{size} must lie within 1024-1048576 bytes"
        )
    return size


def _read_authtokens(root: Section) -> tuple[AuthtokenGrant, ...]:
    grants: list[AuthtokenGrant] = []
    names: set[str] = set()
    digests: dict[bytes, str] = {}
    reserved: dict[int, str] = {}
    patterns: dict[str, str] = {}
    for item_key, node in root.items("authtokens") or []:
        if not isinstance(node, YamlMapping):
            raise root.invalid(
                item_key,
                node,
                f"expected a mapping with name and token, got {describe(node)}",
            )
        item = Section(node, root.dotted(item_key))
        grant = _read_grant(item)
        if grant.name in names:
            raise item.key_error(
                "name", f"the name {grant.name!r} is used by two authtokens"
            )
        if grant.token_digest in digests:
            secret_key = "token" if item.has("token") else "token_sha256"
            raise item.key_error(
                secret_key,
                f"this token is the same as the one named "
                f"{digests[grant.token_digest]!r}; give each token once",
            )
        for addr in grant.reserved_addrs:
            if addr.port in reserved:
                raise item.key_error(
                    "reserved_addrs",
                    f"port {addr.port} of {addr} is already reserved for"
                    f" {reserved[addr.port]!r}; the edge binds reserved addresses"
                    " by port, so each port can be reserved once",
                )
            reserved[addr.port] = grant.name
        for pattern in grant.hostnames:
            if pattern in patterns:
                raise item.key_error(
                    "hostnames",
                    f"{pattern} is already listed for {patterns[pattern]!r}; a"
                    " host name can belong to one authtoken",
                )
            patterns[pattern] = grant.name
        names.add(grant.name)
        digests[grant.token_digest] = grant.name
        grants.append(grant)
    return tuple(grants)


def _read_grant(item: Section) -> AuthtokenGrant:
    item.check_keys(_AUTHTOKEN_KEYS)
    name = item.nonempty_string("name")
    if name is None:
        raise item.missing("name", "each authtoken needs a 'name' (used in logs)")
    if item.has("token") and item.has("token_sha256"):
        raise item.key_error(
            "token_sha256", "give either 'token' or 'token_sha256', not both"
        )
    if item.has("token"):
        token = item.string("token") or ""
        if not token.strip() or any(c.isspace() for c in token):
            raise item.key_error("token", "must be a non-empty token without spaces")
        digest = token_digest(token)
    elif item.has("token_sha256"):
        hex_digest = item.string("token_sha256") or ""
        if not _SHA256_HEX.match(hex_digest):
            raise item.key_error(
                "token_sha256", "must be 64 hexadecimal digits (a SHA-256 digest)"
            )
        digest = bytes.fromhex(hex_digest)
    else:
        raise ConfigError(
            MISSING_KEY,
            f"the authtoken {name!r} needs 'token' or 'token_sha256'",
            path=item.mapping.path,
            line=item.line,
            key=item.dotted("token"),
        )
    addrs = tuple(
        item.host_port_of(key, node) for key, node in item.items("reserved_addrs") or []
    )
    return AuthtokenGrant(
        name=name,
        reserved_addrs=addrs,
        hostnames=_read_hostnames(item),
        token_digest=digest,
        labels=_read_label_patterns(item),
    )


def _read_label_patterns(item: Section) -> tuple[str, ...]:
    patterns = []
    for key, node in item.items("labels") or []:
        pattern = item.text_of(key, node).strip()
        if not _LABEL_PATTERN.match(pattern):
            raise item.invalid(
                key,
                node,
                f"{pattern!r} is not a label pattern; write name=value, name=*" " or *",
            )
        patterns.append(pattern)
    return tuple(patterns)


def _read_hostnames(item: Section) -> tuple[str, ...]:
    hostnames = []
    for key, node in item.items("hostnames") or []:
        pattern = item.text_of(key, node).strip().lower().rstrip(".")
        if not is_name_or_wildcard(pattern):
            raise item.invalid(
                key,
                node,
                f"{pattern!r} is not a host name or wildcard such as"
                " app.example.com or *.example.com",
            )
        hostnames.append(pattern)
    return tuple(hostnames)


def _read_state_dir(root: Section) -> str:
    node = root.node("state_dir")
    if node is None:
        return os.path.expanduser(DEFAULT_STATE_DIR)
    text = root.text_of("state_dir", node)
    if not text.strip():
        raise root.invalid("state_dir", node, "must not be empty")
    return resolve_path(text, node.path)


def _read_tls(root: Section) -> EdgeTlsFiles | None:
    tls = root.child("tls")
    if tls is None:
        return None
    tls.check_keys(("cert", "key"))
    cert = tls.file_path("cert")
    key = tls.file_path("key")
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        absent = "cert" if cert is None else "key"
        raise tls.missing(absent, "'cert' and 'key' must be given together")
    return EdgeTlsFiles(cert=cert, key=key)
