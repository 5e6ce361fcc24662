"""
Configuration files of the agent (ngrok's C{version: "2"} YAML) and the edge.

This package is the one place that reads them: L{load_agent_config} and
L{load_edge_config} return frozen, fully validated objects or raise a
L{ConfigError} that names the file, line and key at fault, so nothing starts
on a bad file. L{set_agent_config_key} edits one key of the agent file in
place for C{tunnelkit config add-authtoken} and C{add-server-addr}.
"""

from tunnelkit.config._errors import (
    CODES,
    INVALID_VALUE,
    MISSING_KEY,
    SYNTAX,
    UNKNOWN_KEY,
    UNREADABLE,
    VERSION,
    ConfigError,
)
from tunnelkit.config._tunnels import (
    DEFAULT_SCHEMES,
    PROTOCOLS,
    SCHEMES_BY_BIND_TLS,
    BasicAuthCredential,
    TunnelDefinition,
    UpstreamAddress,
    parse_credential,
    parse_host_header,
    parse_hostname,
    parse_subdomain,
    parse_tunnel_settings,
    parse_upstream_address,
)
from tunnelkit.config._parsing import (
    HostPort,
    parse_duration,
    parse_host_port,
)
from tunnelkit.config.agent import (
    AgentConfig,
    default_agent_config_path,
    load_agent_config,
)
from tunnelkit.config.edge import (
    AuthtokenGrant,
    EdgeConfig,
    EdgeTlsFiles,
    PortRange,
    load_edge_config,
    token_digest,
)
from tunnelkit.config.editing import set_agent_config_key

__all__ = [
    "AgentConfig",
    "AuthtokenGrant",
    "BasicAuthCredential",
    "CODES",
    "ConfigError",
    "DEFAULT_SCHEMES",
    "EdgeConfig",
    "EdgeTlsFiles",
    "HostPort",
    "INVALID_VALUE",
    "MISSING_KEY",
    "PROTOCOLS",
    "PortRange",
    "SCHEMES_BY_BIND_TLS",
    "SYNTAX",
    "TunnelDefinition",
    "UNKNOWN_KEY",
    "UNREADABLE",
    "UpstreamAddress",
    "VERSION",
    "default_agent_config_path",
    "load_agent_config",
    "load_edge_config",
    "parse_credential",
    "parse_duration",
    "parse_host_header",
    "parse_host_port",
    "parse_hostname",
    "parse_subdomain",
    "parse_tunnel_settings",
    "parse_upstream_address",
    "set_agent_config_key",
    "token_digest",
]
