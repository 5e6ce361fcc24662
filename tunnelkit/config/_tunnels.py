"""
Tunnel definitions: the entries under C{tunnels:} in the agent file.

Each definition is validated against the keys its protocol allows (http,
tcp, tls, or a labeled tunnel), its upstream address is normalised into an
L{UpstreamAddress}, and ngrok's older spellings (C{auth}, C{bind_tls},
C{hostname}, C{client_cas}) are folded into one representation.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Callable, Mapping

from tunnelkit.config._errors import UNKNOWN_KEY, ConfigError, unknown_key_message
from tunnelkit.config._parsing import HostPort, parse_host_port, parse_port
from tunnelkit.config._values import Section
from tunnelkit.config._yaml import YamlNode, YamlScalar, parse_yaml
from tunnelkit.hostnames import DEFAULT_PORTS, DNS_NAME, NAME_OR_WILDCARD

PROTOCOLS = ("http", "tcp", "tls")
METADATA_LIMIT = 4096

_COMMON_KEYS = frozenset({"proto", "addr", "metadata", "proxy_proto"})
_KEYS_BY_KIND: dict[str, frozenset[str]] = {
    "http": frozenset(
        {
            "inspect",
            "subdomain",
            "hostname",
            "domain",
            "auth",
            "basic_auth",
            "bind_tls",
            "schemes",
            "host_header",
            "mutual_tls_cas",
            "client_cas",
        }
    ),
    "tcp": frozenset({"remote_addr"}),
    "tls": frozenset(
        {
            "subdomain",
            "hostname",
            "domain",
            "crt",
            "key",
            "mutual_tls_cas",
            "client_cas",
        }
    ),
    "labeled": frozenset({"labels", "inspect", "crt", "key"}),
}
TUNNEL_KEYS = _COMMON_KEYS.union(*_KEYS_BY_KIND.values())


SCHEMES_BY_BIND_TLS: dict[str, tuple[str, ...]] = {
    "true": ("https",),
    "false": ("http",),
    "both": ("http", "https"),
}
"""The public schemes each value of ngrok v2's C{bind_tls} stands for."""

DEFAULT_SCHEMES = ("http", "https")
"""The public schemes of an HTTP tunnel that names none."""


@dataclass(frozen=True)
class UpstreamAddress:
    """
    Where a tunnel forwards its connections on the agent's side.

    @ivar scheme: C{http} or C{https} (HTTP to the upstream, with TLS for
        C{https}, not verified), C{tcp} (raw bytes) or C{file} (the built-in
        file server).
    @ivar host: the upstream host (C{""} for C{file}).
    @ivar port: the upstream port (C{None} for C{file}).
    @ivar path: for C{file}, the absolute directory or file served; for
        C{http}/C{https}, the URL path as written (usually C{""}).
    """

    scheme: str
    host: str
    port: int | None
    path: str = ""

    def __str__(self) -> str:
        if self.scheme == "file":
            return "file://" + urllib.parse.quote(self.path)
        netloc = str(HostPort(self.host, self.port or 0))
        if self.scheme == "tcp":
            return netloc
        return f"{self.scheme}://{netloc}{self.path}"


def parse_upstream_address(text: str, default_scheme: str = "http") -> UpstreamAddress:
    """
    Parse a tunnel's C{addr}: a port, C{host:port}, or an C{http://},
    C{https://} or C{file:///abs/path} URL.

    @param text: the address as written (a port may also come as digits).
    @param default_scheme: the scheme for a bare port or C{host:port},
        C{http} for HTTP tunnels and C{tcp} for TCP and TLS tunnels.
    @return: the normalised address; a bare port means C{localhost}.
    @raise ValueError: when C{text} is not such an address.
    """
    text = text.strip()
    if text.isdigit():
        return UpstreamAddress(default_scheme, "localhost", parse_port(text))
    if "://" not in text:
        address = parse_host_port(text)
        return UpstreamAddress(default_scheme, address.host, address.port)
    parts = urllib.parse.urlsplit(text)
    scheme = parts.scheme.lower()
    if parts.query or parts.fragment:
        raise ValueError(f"{text!r} must not have a query or fragment")
    if scheme == "file":
        path = urllib.parse.unquote(parts.path)
        if parts.netloc not in ("", "localhost") or not path.startswith("/"):
            raise ValueError(
                f"{text!r} is not a file URL with an absolute path; write "
                "file:///absolute/path"
            )
        return UpstreamAddress("file", "", None, path)
    if scheme not in DEFAULT_PORTS:
        raise ValueError(
            f"the scheme {parts.scheme!r} is not supported; use http://, https:// "
            "or file://"
        )
    if parts.username is not None or not parts.hostname:
        raise ValueError(f"{text!r} must name a host and no user")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{text!r} has an invalid port")
    if port == 0:
        raise ValueError(f"{text!r} has an invalid port")
    return UpstreamAddress(
        scheme, parts.hostname, port or DEFAULT_PORTS[scheme], parts.path
    )


@dataclass(frozen=True)
class BasicAuthCredential:
    """
    One user allowed through an HTTP tunnel's basic authentication.

    @ivar username: the user name.
    @ivar password: the password, at least 8 characters (not shown by repr).
    """

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class TunnelDefinition:
    """
    One named tunnel from the agent configuration.

    @ivar name: the key it was defined under.
    @ivar proto: C{http}, C{tcp} or C{tls}; C{None} for a labeled tunnel.
    @ivar addr: where its connections go.
    @ivar metadata: an opaque string shown in the tunnels API, or C{None}.
    @ivar inspect: whether HTTP exchanges are captured (http and labeled).
    @ivar remote_addr: the reserved public TCP address asked for (tcp).
    @ivar subdomain: the subdomain asked for on the edge's domain.
    @ivar hostname: the full host name asked for (C{hostname} or C{domain}).
    @ivar basic_auth: users allowed through basic authentication (http).
    @ivar schemes: the public schemes, a tuple of C{http}/C{https} (http).
    @ivar host_header: C{preserve}, C{rewrite} or a literal host (http).
    @ivar crt: a certificate file for TLS termination at the agent.
    @ivar key: the private key file for C{crt}.
    @ivar mutual_tls_cas: a CA file that client certificates must chain to.
    @ivar labels: the C{(key, value)} labels of a labeled tunnel.
    @ivar proxy_proto: the PROXY protocol version sent upstream, C{0} for none.
    """

    name: str
    proto: str | None
    addr: UpstreamAddress
    metadata: str | None = None
    inspect: bool = False
    remote_addr: HostPort | None = None
    subdomain: str | None = None
    hostname: str | None = None
    basic_auth: tuple[BasicAuthCredential, ...] = ()
    schemes: tuple[str, ...] = ()
    host_header: str | None = None
    crt: str | None = None
    key: str | None = None
    mutual_tls_cas: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    proxy_proto: int = 0

    @property
    def labeled(self) -> bool:
        """
        Whether this tunnel is bound by labels rather than a protocol.
        """
        return self.proto is None


def read_metadata(section: Section) -> str | None:
    """
    Read a C{metadata} key: a string of at most 4096 characters.

    @param section: the mapping holding it.
    @return: the string, or C{None} when absent.
    """
    metadata = section.string("metadata")
    if metadata is not None and len(metadata) > METADATA_LIMIT:
        raise section.key_error(
            "metadata",
            f"is {len(metadata)} characters long; the limit is {METADATA_LIMIT}",
        )
    return metadata


def read_tunnel(name: str, section: Section) -> TunnelDefinition:
    """
    Validate one tunnel definition.

    @param name: the tunnel's name.
    @param section: its mapping, with the prefix C{tunnels.NAME}.
    @return: the definition.
    @raise ConfigError: for unknown or misplaced keys and bad values.
    """
    section.check_keys(TUNNEL_KEYS)
    kind = _kind(section)
    _check_keys_belong(section, kind)

    default_scheme = "tcp" if kind in ("tcp", "tls") else "http"
    addr_node = section.require("addr", "; give a port, host:port or URL to forward to")
    addr = _read_addr(section, addr_node, default_scheme, kind)

    crt = section.file_path("crt")
    key = section.file_path("key")
    if (crt is None) != (key is None):
        present = "crt" if crt is not None else "key"
        raise section.key_error(present, "'crt' and 'key' must be given together")
    mutual_tls_cas = _read_alias_path(section, "mutual_tls_cas", "client_cas")
    if kind == "tls" and mutual_tls_cas is not None and crt is None:
        present = "client_cas" if section.has("client_cas") else "mutual_tls_cas"
        raise section.key_error(
            present,
            "a tls tunnel checks client certificates only where it ends TLS, at"
            " the agent: give 'crt' and 'key' too",
        )

    return TunnelDefinition(
        name=name,
        proto=None if kind == "labeled" else kind,
        addr=addr,
        metadata=read_metadata(section),
        inspect=section.boolean("inspect", kind in ("http", "labeled")),
        remote_addr=section.host_port("remote_addr", None),
        subdomain=_read_host(section, "subdomain", parse_subdomain),
        hostname=_read_hostname(section),
        basic_auth=_read_basic_auth(section),
        schemes=_read_schemes(section) if kind == "http" else (),
        host_header=(
            _read_host(section, "host_header", parse_host_header) or "preserve"
            if kind == "http"
            else None
        ),
        crt=crt,
        key=key,
        mutual_tls_cas=mutual_tls_cas,
        labels=_read_labels(section) if kind == "labeled" else (),
        proxy_proto=_read_proxy_proto(section),
    )


def _kind(section: Section) -> str:
    if section.has("labels"):
        if section.has("proto"):
            raise section.key_error(
                "proto",
                "a labeled tunnel takes its protocol from the edge; remove "
                "'proto' or remove 'labels'",
                UNKNOWN_KEY,
            )
        return "labeled"
    if not section.has("proto"):
        raise section.missing(
            "proto", "the key 'proto' is required; give http, tcp or tls, or 'labels'"
        )
    return section.choice("proto", PROTOCOLS, "http")


def _check_keys_belong(section: Section, kind: str) -> None:
    allowed = _COMMON_KEYS | _KEYS_BY_KIND[kind]
    if kind == "labeled":
        allowed = allowed - {"proto"}
    for key in section.keys():
        if key in allowed:
            continue
        owners = [k for k in ("http", "tcp", "tls") if key in _KEYS_BY_KIND[k]]
        if kind == "labeled":
            what = "a labeled tunnel (its protocol and host come from the edge)"
        else:
            what = f"{'an' if kind == 'http' else 'a'} {kind} tunnel"
        if owners:
            message = (
                f"{key!r} does not apply to {what}; it is a key of "
                f"{' and '.join(owners)} tunnels"
            )
        else:
            message = unknown_key_message(key, allowed)
        raise section.key_error(key, message, UNKNOWN_KEY)


def _read_addr(
    section: Section, node: YamlNode, default_scheme: str, kind: str
) -> UpstreamAddress:
    if isinstance(node, YamlScalar) and isinstance(node.value, bool):
        raise section.invalid("addr", node, "expected a port, host:port or URL")
    text = section.text_of("addr", node)
    try:
        addr = parse_upstream_address(text, default_scheme)
    except ValueError as e:
        raise section.invalid("addr", node, str(e))
    if kind in ("tcp", "tls") and addr.scheme != "tcp":
        raise section.invalid(
            "addr",
            node,
            f"a {kind} tunnel forwards raw bytes; give a port or host:port",
        )
    return addr


def parse_subdomain(text: str) -> str:
    """
    Check a subdomain asked for under the edge's domain.

    @param text: one or more DNS labels, such as C{app} or C{api.app}.
    @return: the name in lower case.
    @raise ValueError: when it is not a valid DNS name.
    """
    return _dns_name(text, DNS_NAME)


def parse_hostname(text: str) -> str:
    """
    Check a full host name asked for, such as C{app.example.com} or a
    wildcard C{*.example.com}.

    @param text: the host name.
    @return: the name in lower case.
    @raise ValueError: when it is not a valid DNS name.
    """
    return _dns_name(text, NAME_OR_WILDCARD)


def _dns_name(text: str, pattern: re.Pattern[str]) -> str:
    value = text.lower()
    if not pattern.match(value):
        raise ValueError(f"{value!r} is not a valid DNS name")
    return value


def parse_host_header(text: str) -> str:
    """
    Check an HTTP tunnel's C{host_header}: C{preserve}, C{rewrite}, or a
    literal host sent as is.

    @param text: the value as written.
    @return: the value.
    @raise ValueError: when it is empty or holds spaces or control
        characters, which cannot be sent in a C{Host} header.
    """
    if not text or any(c.isspace() or not c.isprintable() for c in text):
        raise ValueError(
            f"{text!r} is not a host header; give preserve, rewrite or a host"
            " such as app.internal:8080"
        )
    return text


def _read_host(section: Section, key: str, parse: Callable[[str], str]) -> str | None:
    value = section.nonempty_string(key)
    if value is None:
        return None
    try:
        return parse(value)
    except ValueError as e:
        raise section.key_error(key, str(e))


def _read_hostname(section: Section) -> str | None:
    if section.has("hostname") and section.has("domain"):
        raise section.key_error(
            "domain", "'domain' and 'hostname' are the same setting; keep one"
        )
    key = "domain" if section.has("domain") else "hostname"
    hostname = _read_host(section, key, parse_hostname)
    if hostname is not None and section.has("subdomain"):
        raise section.key_error(key, f"give either 'subdomain' or {key!r}, not both")
    return hostname


def parse_credential(text: str) -> BasicAuthCredential:
    """
    Parse one basic authentication credential, C{user:password}.

    @param text: the credential as written.
    @return: the credential.
    @raise ValueError: when there is no user or colon, or the password is
        shorter than 8 characters.
    """
    username, colon, password = text.partition(":")
    if not colon or not username:
        raise ValueError("write the credential as user:password")
    if len(password) < 8:
        raise ValueError(f"the password for {username!r} must be at least 8 characters")
    return BasicAuthCredential(username, password)


def _read_credential(section: Section, key: str, node: YamlNode) -> BasicAuthCredential:
    try:
        return parse_credential(section.text_of(key, node))
    except ValueError as e:
        raise section.invalid(key, node, str(e))


def _read_basic_auth(section: Section) -> tuple[BasicAuthCredential, ...]:
    if section.has("auth") and section.has("basic_auth"):
        raise section.key_error(
            "auth", "'auth' is the older spelling of 'basic_auth'; keep one"
        )
    auth = section.node("auth")
    if auth is not None:
        return (_read_credential(section, "auth", auth),)
    items = section.items("basic_auth") or []
    return tuple(_read_credential(section, key, node) for key, node in items)


def _read_schemes(section: Section) -> tuple[str, ...]:
    if section.has("bind_tls") and section.has("schemes"):
        raise section.key_error(
            "schemes", "'bind_tls' and 'schemes' set the same thing; keep one"
        )
    if section.has("bind_tls"):
        word = section.choice("bind_tls", tuple(SCHEMES_BY_BIND_TLS), "both")
        return SCHEMES_BY_BIND_TLS[word]
    items = section.items("schemes")
    if items is None:
        return DEFAULT_SCHEMES
    seen = []
    for key, node in items:
        scheme = section.text_of(key, node)
        if scheme not in ("http", "https"):
            raise section.invalid(key, node, f"{scheme!r} is not one of http, https")
        seen.append(scheme)
    if not seen:
        raise section.key_error("schemes", "must list at least one of http, https")
    return tuple(s for s in ("http", "https") if s in seen)


def _read_alias_path(section: Section, key: str, alias: str) -> str | None:
    if section.has(key) and section.has(alias):
        raise section.key_error(
            alias, f"{alias!r} is the older spelling of {key!r}; keep one"
        )
    return section.file_path(alias if section.has(alias) else key)


def _read_labels(section: Section) -> tuple[tuple[str, str], ...]:
    labels: dict[str, str] = {}
    for key, node in section.items("labels") or []:
        text = section.text_of(key, node)
        name, equals, value = text.partition("=")
        name, value = name.strip(), value.strip()
        if not equals or not name or not value:
            raise section.invalid(
                key, node, f"{text!r} is not a label; write key=value"
            )
        if name in labels:
            raise section.invalid(key, node, f"the label {name!r} is given twice")
        labels[name] = value
    if not labels:
        raise section.key_error("labels", "must list at least one key=value label")
    return tuple(labels.items())


def _read_proxy_proto(section: Section) -> int:
    node = section.node("proxy_proto")
    if node is None:
        return 0
    if (
        not isinstance(node, YamlScalar)
        or isinstance(node.value, bool)
        or node.text not in ("", "0", "1", "2")
    ):
        shown = node.text if isinstance(node, YamlScalar) else "this value"
        raise section.invalid("proxy_proto", node, f'{shown!r} is not one of "", 1, 2')
    return int(node.text or "0")


def read_tunnels(root: Section) -> dict[str, TunnelDefinition]:
    """
    Read the C{tunnels} map of the agent file.

    @param root: the top-level section.
    @return: the definitions by name, in the order they were written.
    """
    tunnels = root.child("tunnels")
    if tunnels is None:
        return {}
    result = {}
    for name in tunnels.keys():
        if not name.strip():
            raise tunnels.key_error(name, "a tunnel name must not be empty")
        definition = tunnels.child(name)
        if definition is None:
            raise tunnels.key_error(
                name, "the tunnel has no settings; give at least 'proto' and 'addr'"
            )
        result[name] = read_tunnel(name, definition)
    return result


def parse_tunnel_settings(
    name: str, settings: Mapping[str, object], source: str = "<api>"
) -> TunnelDefinition:
    """
    Validate a tunnel definition given as data (decoded JSON, say) rather
    than as a file, with the same keys, defaults and errors as an entry of
    the file's C{tunnels} map.

    @param name: the tunnel's name.
    @param settings: its keys and values (strings, numbers, booleans, null,
        lists and maps).
    @param source: what errors name as the file; relative file paths are
        read relative to the working directory.
    @return: the definition.
    @raise ConfigError: for unknown or misplaced keys and bad values, with
        the key C{tunnels.NAME.KEY} (C{tunnels.NAME} when several keys are
        unknown: the message names them all).
    """
    unknown = sorted(key for key in settings if key not in TUNNEL_KEYS)
    if len(unknown) > 1:
        listed = ", ".join(repr(key) for key in unknown)
        raise ConfigError(
            UNKNOWN_KEY,
            f"unknown keys {listed}; remove them or check the documentation"
            " for valid keys",
            path=source,
            key=f"tunnels.{name}",
        )
    text = json.dumps({"tunnels": {name: dict(settings)}}, ensure_ascii=False)
    root = Section(parse_yaml(text, source))
    return read_tunnels(root)[name]
