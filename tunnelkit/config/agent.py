"""
The agent configuration: ngrok's C{version: "2"} file, loaded and merged.

L{load_agent_config} reads one or more files, merges them the way ngrok
does (later files override scalars, replace lists, and merge maps key by
key), validates every key, and returns a frozen L{AgentConfig}; any problem
raises a L{ConfigError} naming the file, line and key of the bad value.
L{default_agent_config_path} says where the file lives when none is named.
"""

from __future__ import annotations

import ntpath
import os
import posixpath
import sys
import types
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from tunnelkit.config._errors import VERSION, ConfigError
from tunnelkit.config._tunnels import (
    TunnelDefinition,
    read_metadata,
    read_tunnels,
)
from tunnelkit.config._parsing import HostPort
from tunnelkit.config._values import Section
from tunnelkit.config._yaml import (
    YamlMapping,
    YamlScalar,
    empty_mapping,
    merge_mappings,
    read_yaml_file,
)

AGENT_CONFIG_VERSION = "2"
DEFAULT_SERVER_PORT = 4443
DEFAULT_WEB_ADDR = HostPort("127.0.0.1", 4040)
DEFAULT_INSPECT_DB_BYTES = 50 * 1024 * 1024
DEFAULT_INSPECT_BODY_BYTES = 1024 * 1024

AGENT_KEYS = frozenset(
    {
        "version",
        "authtoken",
        "server_addr",
        "root_cas",
        "log",
        "log_level",
        "log_format",
        "web_addr",
        "web_allow_hosts",
        "inspect_db_size",
        "inspect_body_size",
        "console_ui",
        "console_ui_color",
        "heartbeat_interval",
        "heartbeat_tolerance",
        "connect_timeout",
        "metadata",
        "update_check",
        "update_channel",
        "region",
        "remote_management",
        "tunnels",
    }
)


@dataclass(frozen=True)
class AgentConfig:
    """
    The agent's validated configuration, after merging every file.

    Constructing it with no arguments gives the defaults, the same as an
    empty file.

    @ivar paths: the files read, in order (empty when only the default path
        was looked at and it does not exist).
    @ivar version: C{"2"} when a file set it, else C{None}.
    @ivar authtoken: the credential presented to the edge (not shown by
        repr), or C{None}.
    @ivar server_addr: the edge's agent address, or C{None} when no edge is
        configured (the agent then runs an embedded edge on loopback).
    @ivar root_cas: C{"host"} to verify the edge against the system's trust
        store (C{trusted} in a file means the same), else the absolute path
        of a PEM file of CA certificates.
    @ivar log: C{stdout}, C{stderr}, C{false} or an absolute file path.
    @ivar log_level: C{crit}, C{warn}, C{error}, C{info} or C{debug}.
    @ivar log_format: C{term}, C{logfmt} or C{json}.
    @ivar web_addr: where the web interface and API listen, or C{None} when
        disabled with C{web_addr: false}.
    @ivar web_addr_set: whether a file set C{web_addr}; see
        L{web_addr_fallback}.
    @ivar web_allow_hosts: extra Host header values the web interface
        accepts.
    @ivar inspect_db_size: as written: bytes of capture storage, C{0} for
        the default, C{-1} to disable inspection; see
        L{inspect_capacity}.
    @ivar inspect_body_size: the most bytes kept of each captured request
        or response body (1 MiB by default); the rest is counted, not kept.
    @ivar console_ui: C{"true"}, C{"false"} or C{"iftty"}.
    @ivar console_ui_color: C{"black"} or C{"transparent"}.
    @ivar heartbeat_interval: seconds between heartbeats to the edge.
    @ivar heartbeat_tolerance: seconds without an answer before the session
        is dropped and redialled.
    @ivar connect_timeout: seconds allowed to dial the edge.
    @ivar metadata: an opaque string reported to the edge, or C{None}.
    @ivar remote_management: whether the edge may stop or restart the agent.
    @ivar tunnels: the tunnel definitions by name, in file order.
    """

    paths: tuple[str, ...] = ()
    version: str | None = None
    authtoken: str | None = field(default=None, repr=False)
    server_addr: HostPort | None = None
    root_cas: str = "host"
    log: str = "false"
    log_level: str = "info"
    log_format: str = "term"
    web_addr: HostPort | None = DEFAULT_WEB_ADDR
    web_addr_set: bool = False
    web_allow_hosts: tuple[str, ...] = ()
    inspect_db_size: int = 0
    inspect_body_size: int = DEFAULT_INSPECT_BODY_BYTES
    console_ui: str = "iftty"
    console_ui_color: str = "black"
    heartbeat_interval: float = 10.0
    heartbeat_tolerance: float = 15.0
    connect_timeout: float = 10.0
    metadata: str | None = None
    remote_management: bool = True
    tunnels: Mapping[str, TunnelDefinition] = field(
        default_factory=lambda: types.MappingProxyType({})
    )

    @property
    def inspect_capacity(self) -> int | None:
        """
        Bytes of capture storage, or C{None} when inspection is disabled.
        """
        if self.inspect_db_size == -1:
            return None
        if self.inspect_db_size == 0:
            return DEFAULT_INSPECT_DB_BYTES
        return self.inspect_db_size

    @property
    def web_addr_fallback(self) -> bool:
        """
        Whether the web interface may listen on a later port when
        C{web_addr}'s is taken: only with the default left unset, as in
        ngrok; an address written in a file, even the default one, must be
        free.
        """
        return not self.web_addr_set and self.web_addr == DEFAULT_WEB_ADDR


def default_agent_config_path(
    platform: str | None = None, environ: Mapping[str, str] | None = None
) -> str:
    """
    Say where the agent's configuration file lives when none is named.

    On Linux and other Unix systems C{$XDG_CONFIG_HOME/tunnelkit/tunnelkit.yml}
    (C{~/.config/...} when that variable is unset or not absolute); on macOS
    C{~/Library/Application Support/tunnelkit/tunnelkit.yml}; on Windows
    C{%LOCALAPPDATA%\\tunnelkit\\tunnelkit.yml}.

    @param platform: a C{sys.platform} value; defaults to this machine's.
    @param environ: the environment; defaults to C{os.environ}.
    @return: the path, whether or not the file exists.
    """
    platform = sys.platform if platform is None else platform
    environ = os.environ if environ is None else environ
    if platform.startswith("win"):
        base = environ.get("LOCALAPPDATA")
        if not base:
            profile = environ.get("USERPROFILE") or (
                environ.get("HOMEDRIVE", "") + environ.get("HOMEPATH", "")
            )
            base = ntpath.join(profile or ntpath.expanduser("~"), "AppData", "Local")
        return ntpath.join(base, "tunnelkit", "tunnelkit.yml")
    home = environ.get("HOME") or posixpath.expanduser("~")
    if platform == "darwin":
        return posixpath.join(
            home, "Library", "Application Support", "tunnelkit", "tunnelkit.yml"
        )
    base = environ.get("XDG_CONFIG_HOME", "")
    if not posixpath.isabs(base):
        base = posixpath.join(home, ".config")
    return posixpath.join(base, "tunnelkit", "tunnelkit.yml")


def load_agent_config(
    paths: Sequence[str] = (),
    *,
    platform: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> AgentConfig:
    """
    Load, merge and validate the agent's configuration files.

    With no paths, the default file (L{default_agent_config_path}) is read
    if it exists, and an empty configuration is returned if it does not.
    Files named explicitly must exist.

    @param paths: the files to read, in order; later files win.
    @param platform: a C{sys.platform} value for finding the default file.
    @param environ: the environment for finding the default file.
    @return: the validated configuration.
    @raise ConfigError: when any file is missing, unreadable, not YAML, or
        holds an unknown key or a bad value; no partial result is returned.
    """
    if not paths:
        default = default_agent_config_path(platform, environ)
        if not os.path.exists(default):
            return AgentConfig()
        paths = [default]
    return build_agent_config([read_yaml_file(path) for path in paths], paths)


def build_agent_config(
    documents: Sequence[YamlMapping], paths: Sequence[str]
) -> AgentConfig:
    """
    Validate already-parsed agent files and merge them into one configuration.

    @param documents: the top-level mapping of each file, in order.
    @param paths: the files they came from.
    @return: the validated configuration.
    @raise ConfigError: as for L{load_agent_config}.
    """
    merged = empty_mapping(paths[0] if paths else "")
    version = None
    for document in documents:
        version = _check_version(document) or version
        merged = merge_mappings(merged, document)
    return _read_agent(Section(merged), tuple(paths), version)


def _check_version(document: YamlMapping) -> str | None:
    entry = document.entries.get("version")
    if entry is None:
        return None
    node = entry.value
    if isinstance(node, YamlScalar):
        if node.value is None:
            return None
        if not isinstance(node.value, bool) and node.text == AGENT_CONFIG_VERSION:
            return AGENT_CONFIG_VERSION
        shown = repr(node.text)
    else:
        shown = "a list or mapping"
    raise ConfigError(
        VERSION,
        f'version {shown} is not supported; this agent reads the version "2" '
        'format, so write version: "2" (version 3 files need converting)',
        path=node.path,
        line=node.line,
        key="version",
    )


def _read_authtoken(root: Section) -> str | None:
    token = root.nonempty_string("authtoken")
    if token is not None and any(c.isspace() for c in token):
        raise root.key_error("authtoken", "must not contain spaces or line breaks")
    return token


def _read_root_cas(root: Section) -> str:
    value = root.string("root_cas")
    if value is None or value in ("host", "trusted"):
        return "host"
    path = root.file_path("root_cas")
    assert path is not None
    return path


def _read_web_addr(root: Section) -> HostPort | None:
    node = root.node("web_addr")
    if node is None:
        return DEFAULT_WEB_ADDR
    if isinstance(node, YamlScalar) and isinstance(node.value, bool):
        if node.value:
            raise root.invalid("web_addr", node, "expected host:port or false")
        return None
    if isinstance(node, YamlScalar) and isinstance(node.value, int):
        if not 0 <= node.value <= 65535:
            raise root.invalid(
                "web_addr", node, f"port {node.value} is outside 0-65535"
            )
        return HostPort(DEFAULT_WEB_ADDR.host, node.value)
    return root.host_port("web_addr", DEFAULT_WEB_ADDR, allow_port_zero=True)


def _read_inspect_db_size(root: Section) -> int:
    size = root.integer("inspect_db_size", 0)
    if size < -1:
        raise root.key_error(
            "inspect_db_size",
            f"{size} is not a size; give bytes, 0 for 50 MB, or -1 to disable",
        )
    return size


def _read_inspect_body_size(root: Section) -> int:
    size = root.integer("inspect_body_size", DEFAULT_INSPECT_BODY_BYTES)
    if size < 0:
        raise root.key_error(
            "inspect_body_size",
            f"{size} is not a size; give the bytes kept of each body, 0 for none",
        )
    return size


def _read_ignored(root: Section) -> None:
    """
    Validate the keys kept for compatibility with ngrok files but unused:
    C{update_check}, C{update_channel} and C{region}.
    """
    root.boolean("update_check", True)
    root.string("update_channel")
    root.string("region")


def _read_agent(
    root: Section, paths: tuple[str, ...], version: str | None
) -> AgentConfig:
    root.check_keys(AGENT_KEYS)
    _read_ignored(root)
    log = root.log_settings()
    allow_hosts = []
    for key, node in root.items("web_allow_hosts") or []:
        host = root.text_of(key, node).strip()
        if not host:
            raise root.invalid(key, node, "must not be empty")
        allow_hosts.append(host)
    return AgentConfig(
        paths=paths,
        version=version,
        authtoken=_read_authtoken(root),
        server_addr=root.host_port(
            "server_addr", None, default_port=DEFAULT_SERVER_PORT
        ),
        root_cas=_read_root_cas(root),
        log=log.log,
        log_level=log.log_level,
        log_format=log.log_format,
        web_addr=_read_web_addr(root),
        web_addr_set=root.node("web_addr") is not None,
        web_allow_hosts=tuple(allow_hosts),
        inspect_db_size=_read_inspect_db_size(root),
        inspect_body_size=_read_inspect_body_size(root),
        console_ui=root.choice("console_ui", ("true", "false", "iftty"), "iftty"),
        console_ui_color=root.choice(
            "console_ui_color", ("black", "transparent"), "black"
        ),
        heartbeat_interval=root.duration("heartbeat_interval", 10.0),
        heartbeat_tolerance=root.duration("heartbeat_tolerance", 15.0),
        connect_timeout=root.duration("connect_timeout", 10.0),
        metadata=read_metadata(root),
        remote_management=root.boolean("remote_management", True),
        tunnels=types.MappingProxyType(read_tunnels(root)),
    )
