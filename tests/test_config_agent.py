"""
Tests for L{tunnelkit.config.agent}: loading, merging and validating the
agent configuration file.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tunnelkit.config import (
    AgentConfig,
    ConfigError,
    HostPort,
    UpstreamAddress,
    default_agent_config_path,
    load_agent_config,
    parse_duration,
    parse_host_port,
    parse_tunnel_settings,
    parse_upstream_address,
)
from tunnelkit.errors import TunnelkitError

EXAMPLE = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "ngrok.yml")


class ConfigFiles:
    """
    Writes configuration files into one fresh directory of a test.
    """

    def __init__(self, case: SynchronousTestCase) -> None:
        self.directory = case.mktemp()
        os.makedirs(self.directory)

    def write(self, name: str, text: str) -> str:
        path = os.path.join(self.directory, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path


class AgentTestCase(SynchronousTestCase):
    """
    Shared helpers: write YAML and load it, or load it expecting an error.
    """

    def setUp(self) -> None:
        self.files = ConfigFiles(self)

    def load(self, *texts: str) -> AgentConfig:
        paths = [self.files.write(f"f{i}.yml", t) for i, t in enumerate(texts)]
        return load_agent_config(paths)

    def fails(self, *texts: str) -> ConfigError:
        paths = [self.files.write(f"f{i}.yml", t) for i, t in enumerate(texts)]
        return self.assertRaises(ConfigError, load_agent_config, paths)

    def tunnel(self, body: str, name: str = "t") -> Any:
        indented = "".join("    " + line + "\n" for line in body.splitlines())
        config = self.load(f"tunnels:\n  {name}:\n{indented}")
        return config.tunnels[name]

    def tunnel_fails(self, body: str) -> ConfigError:
        indented = "".join("    " + line + "\n" for line in body.splitlines())
        return self.fails(f"tunnels:\n  t:\n{indented}")

    def assertError(
        self, error: ConfigError, code: str, line: int | None, key: str | None
    ) -> None:
        self.assertEqual((error.code, error.line, error.key), (code, line, key))


class DefaultsTests(AgentTestCase):
    """
    An empty file, and the example file shipped in the repository.
    """

    def test_empty_file_gives_defaults(self) -> None:
        """
        An empty file loads as the defaults, with its path recorded.
        """
        path = self.files.write("empty.yml", "")

        config = load_agent_config([path])

        self.assertEqual(config, AgentConfig(paths=(path,)))

    def test_default_values(self) -> None:
        """
        The defaults are ngrok's, with no edge configured.
        """
        config = AgentConfig()

        self.assertEqual(
            (
                config.server_addr,
                config.web_addr,
                config.log,
                config.log_level,
                config.log_format,
                config.console_ui,
                config.heartbeat_interval,
                config.heartbeat_tolerance,
                config.connect_timeout,
                config.remote_management,
                config.root_cas,
                dict(config.tunnels),
            ),
            (
                None,
                HostPort("127.0.0.1", 4040),
                "false",
                "info",
                "term",
                "iftty",
                10.0,
                15.0,
                10.0,
                True,
                "host",
                {},
            ),
        )

    def test_example_loads(self) -> None:
        """
        C{examples/ngrok.yml} loads cleanly and defines its six tunnels.
        """
        config = load_agent_config([EXAMPLE])

        self.assertEqual(
            list(config.tunnels), ["web", "api", "files", "ssh", "secure", "canary"]
        )

    def test_error_is_tunnelkit_error(self) -> None:
        """
        L{ConfigError} is a L{TunnelkitError} with a code and a message.
        """
        error = self.fails("authtokn: x\n")

        self.assertIsInstance(error, TunnelkitError)
        self.assertIn("authtoken", error.message)


class TopLevelKeyTests(AgentTestCase):
    """
    Each top-level key is read and validated.
    """

    def test_version_string(self) -> None:
        """
        C{version: "2"} is accepted.
        """
        self.assertEqual(self.load('version: "2"\n').version, "2")

    def test_version_number(self) -> None:
        """
        C{version: 2} written as a number is accepted too.
        """
        self.assertEqual(self.load("version: 2\n").version, "2")

    def test_version_missing_allowed(self) -> None:
        """
        A file without C{version} loads, leniently.
        """
        config = self.load("log_level: debug\n")

        self.assertEqual((config.version, config.log_level), (None, "debug"))

    def test_version_wrong(self) -> None:
        """
        C{version: 3} is C{TK_CONFIG_VERSION} at its line.
        """
        error = self.fails("authtoken: abc\nversion: 3\n")

        self.assertError(error, "TK_CONFIG_VERSION", 2, "version")

    def test_authtoken(self) -> None:
        """
        The authtoken is kept, and hidden from repr.
        """
        config = self.load("authtoken: s3cr3t-token\n")

        self.assertEqual(config.authtoken, "s3cr3t-token")
        self.assertNotIn("s3cr3t-token", repr(config))

    def test_authtoken_with_space(self) -> None:
        """
        An authtoken with a space in it is an invalid value.
        """
        error = self.fails('authtoken: "ab cd"\n')

        self.assertError(error, "TK_CONFIG_INVALID_VALUE", 1, "authtoken")

    def test_authtoken_number(self) -> None:
        """
        An all-digit authtoken is read as the text written.
        """
        self.assertEqual(self.load("authtoken: 0123\n").authtoken, "0123")

    def test_server_addr(self) -> None:
        """
        C{server_addr} is a host and port.
        """
        config = self.load("server_addr: edge.example.com:443\n")

        self.assertEqual(config.server_addr, HostPort("edge.example.com", 443))

    def test_server_addr_default_port(self) -> None:
        """
        A C{server_addr} without a port uses 4443.
        """
        config = self.load("server_addr: edge.example.com\n")

        self.assertEqual(config.server_addr, HostPort("edge.example.com", 4443))

    def test_server_addr_ipv6(self) -> None:
        """
        An IPv6 C{server_addr} is written in brackets.
        """
        config = self.load('server_addr: "[::1]:9000"\n')

        self.assertEqual(config.server_addr, HostPort("::1", 9000))

    def test_server_addr_bad_port(self) -> None:
        """
        A port out of range is an invalid value.
        """
        error = self.fails("server_addr: edge:70000\n")

        self.assertError(error, "TK_CONFIG_INVALID_VALUE", 1, "server_addr")

    def test_root_cas_trusted_is_host(self) -> None:
        """
        ngrok's C{trusted} means the system trust store here.
        """
        self.assertEqual(self.load("root_cas: trusted\n").root_cas, "host")

    def test_root_cas_file(self) -> None:
        """
        A relative C{root_cas} path is read relative to the file.
        """
        self.files.write("ca.pem", "pem")

        config = self.load("root_cas: ca.pem\n")

        self.assertEqual(
            config.root_cas,
            os.path.abspath(os.path.join(self.files.directory, "ca.pem")),
        )

    def test_root_cas_missing_file(self) -> None:
        """
        A C{root_cas} file that does not exist is an invalid value.
        """
        error = self.fails("root_cas: nowhere.pem\n")

        self.assertError(error, "TK_CONFIG_INVALID_VALUE", 1, "root_cas")

    def test_log_false(self) -> None:
        """
        C{log: false} turns logging off.
        """
        self.assertEqual(self.load("log: false\n").log, "false")

    def test_log_stderr(self) -> None:
        """
        C{log: stderr} is kept as a word.
        """
        self.assertEqual(self.load("log: stderr\n").log, "stderr")

    def test_log_path(self) -> None:
        """
        A log file path is made absolute.
        """
        config = self.load("log: agent.log\n")

        self.assertEqual(
            config.log, os.path.abspath(os.path.join(self.files.directory, "agent.log"))
        )

    def test_log_level_invalid(self) -> None:
        """
        An unknown level lists the valid ones.
        """
        error = self.fails("log_level: verbose\n")

        self.assertError(error, "TK_CONFIG_INVALID_VALUE", 1, "log_level")
        self.assertIn("crit, warn, error, info, debug", error.message)

    def test_log_format(self) -> None:
        """
        C{log_format: json} is accepted.
        """
        self.assertEqual(self.load("log_format: json\n").log_format, "json")

    def test_log_format_invalid(self) -> None:
        """
        C{log_format: xml} is an invalid value.
        """
        error = self.fails("log_format: xml\n")

        self.assertError(error, "TK_CONFIG_INVALID_VALUE", 1, "log_format")

    def test_web_addr(self) -> None:
        """
        C{web_addr} is a host and port, and may use port 0.
        """
        config = self.load("web_addr: 0.0.0.0:0\n")

        self.assertEqual(config.web_addr, HostPort("0.0.0.0", 0))

    def test_web_addr_false(self) -> None:
        """
        C{web_addr: false} turns the web interface off.
        """
        self.assertIsNone(self.load("web_addr: false\n").web_addr)

    def test_web_addr_port_only(self) -> None:
        """
        A bare port number listens on loopback.
        """
        config = self.load("web_addr: 4141\n")

        self.assertEqual(config.web_addr, HostPort("127.0.0.1", 4141))

    def test_web_addr_fallback_unset(self) -> None:
        """
        Only with C{web_addr} unset (or null) may the web interface move to a
        later port; the default address written out must be free, as must
        any other.
        """
        unset = self.load("log_level: info\n")
        null = self.load("web_addr:\n")
        written = self.load("web_addr: 127.0.0.1:4040\n")
        other = self.load("web_addr: 4141\n")

        self.assertEqual(
            [c.web_addr_fallback for c in (unset, null, written, other)],
            [True, True, False, False],
        )
        self.assertEqual(written.web_addr, unset.web_addr)

    def test_web_addr_true(self) -> None:
        """
        C{web_addr: true} is an invalid value.
        """
        error = self.fails("web_addr: true\n")

        self.assertError(error, "TK_CONFIG_INVALID_VALUE", 1, "web_addr")

    def test_web_allow_hosts(self) -> None:
        """
        C{web_allow_hosts} is a tuple of strings.
        """
        config = self.load("web_allow_hosts: [a.example, .internal]\n")

        self.assertEqual(config.web_allow_hosts, ("a.example", ".internal"))

    def test_web_allow_hosts_not_list(self) -> None:
        """
        A string where a list belongs is an invalid value.
        """
        error = self.fails("web_allow_hosts: a.example\n")

        self.assertError(error, "TK_CONFIG_INVALID_VALUE", 1, "web_allow_hosts")

    def test_inspect_db_size_default(self) -> None:
        """
        0 means 50 MB of capture storage.
        """
        config = self.load("inspect_db_size: 0\n")

        self.assertEqual(config.inspect_capacity, 50 * 1024 * 1024)

    def test_inspect_db_size_disabled(self) -> None:
        """
        -1 disables inspection.
        """
        self.assertIsNone(self.load("inspect_db_size: -1\n").inspect_capacity)

    def test_inspect_db_size_bytes(self) -> None:
        """
        A positive size is a number of bytes.
        """
        self.assertEqual(self.load("inspect_db_size: 1000\n").inspect_capacity, 1000)

    def test_inspect_db_size_negative(self) -> None:
        """
        Sizes below -1 are invalid.
        """
        error = self.fails("inspect_db_size: -2\n")

        self.assertError(error, "TK_CONFIG_INVALID_VALUE", 1, "inspect_db_size")

    def test_inspect_db_size_string(self) -> None:
        """
        A size written as a word is invalid.
        """
        error = self.fails("inspect_db_size: big\n")

        self.assertError(error, "TK_CONFIG_INVALID_VALUE", 1, "inspect_db_size")

    def test_inspect_body_size_default(self) -> None:
        """
        Without C{inspect_body_size}, 1 MiB of each body is kept.
        """
        self.assertEqual(self.load("log: stdout\n").inspect_body_size, 1024 * 1024)

    def test_inspect_body_size_bytes(self) -> None:
        """
        C{inspect_body_size} is a number of bytes; 0 keeps no body.
        """
        self.assertEqual(self.load("inspect_body_size: 4096\n").inspect_body_size, 4096)
        self.assertEqual(self.load("inspect_body_size: 0\n").inspect_body_size, 0)

    def test_inspect_body_size_negative(self) -> None:
        """
        A negative C{inspect_body_size} is invalid.
        """
        error = self.fails("inspect_body_size: -1\n")

        self.assertError(error, "TK_CONFIG_INVALID_VALUE", 1, "inspect_body_size")

    def test_console_ui(self) -> None:
        """
        C{console_ui: false} reads as the word C{false}.
        """
        self.assertEqual(self.load("console_ui: false\n").console_ui, "false")

    def test_console_ui_invalid(self) -> None:
        """
        C{console_ui: sometimes} is invalid.
        """
        error = self.fails("console_ui: sometimes\n")

        self.assertError(error, "TK_CONFIG_INVALID_VALUE", 1, "console_ui")

    def test_console_ui_color(self) -> None:
        """
        C{console_ui_color: transparent} is accepted.
        """
        config = self.load("console_ui_color: transparent\n")

        self.assertEqual(config.console_ui_color, "transparent")

    def test_durations(self) -> None:
        """
        The three durations are read in seconds.
        """
        config = self.load(
            "heartbeat_interval: 500ms\nheartbeat_tolerance: 1m30s\n"
            "connect_timeout: 2s\n"
        )

        self.assertEqual(
            (
                config.heartbeat_interval,
                config.heartbeat_tolerance,
                config.connect_timeout,
            ),
            (0.5, 90.0, 2.0),
        )

    def test_duration_without_unit(self) -> None:
        """
        A duration without a unit is an invalid value.
        """
        error = self.fails("heartbeat_interval: 10\n")

        self.assertError(error, "TK_CONFIG_INVALID_VALUE", 1, "heartbeat_interval")

    def test_duration_zero(self) -> None:
        """
        A zero timeout is an invalid value.
        """
        error = self.fails("connect_timeout: 0s\n")

        self.assertError(error, "TK_CONFIG_INVALID_VALUE", 1, "connect_timeout")

    def test_metadata(self) -> None:
        """
        C{metadata} is kept as written.
        """
        self.assertEqual(self.load("metadata: '{\"a\": 1}'\n").metadata, '{"a": 1}')

    def test_metadata_too_long(self) -> None:
        """
        C{metadata} longer than 4096 characters is invalid.
        """
        error = self.fails("metadata: " + "x" * 4097 + "\n")

        self.assertError(error, "TK_CONFIG_INVALID_VALUE", 1, "metadata")

    def test_ignored_keys_accepted(self) -> None:
        """
        C{update_check}, C{update_channel} and C{region} load and are not kept.
        """
        config = self.load("update_check: false\nupdate_channel: beta\nregion: eu\n")

        self.assertEqual(config, AgentConfig(paths=config.paths))

    def test_update_check_type(self) -> None:
        """
        An ignored key still has to have the right type.
        """
        error = self.fails("update_check: weekly\n")

        self.assertError(error, "TK_CONFIG_INVALID_VALUE", 1, "update_check")

    def test_remote_management(self) -> None:
        """
        C{remote_management: false} is read.
        """
        config = self.load("remote_management: false\n")

        self.assertFalse(config.remote_management)

    def test_null_means_default(self) -> None:
        """
        A key with no value takes the default.
        """
        config = self.load("log_level:\nweb_addr:\n")

        self.assertEqual(
            (config.log_level, config.web_addr), ("info", HostPort("127.0.0.1", 4040))
        )

    def test_yaml_merge_keys(self) -> None:
        """
        YAML anchors and C{<<} merge keys work inside tunnel definitions.
        """
        config = self.load(
            "tunnels:\n  a: &base\n    proto: tcp\n    addr: 22\n"
            "  b:\n    <<: *base\n    addr: 23\n"
        )

        self.assertEqual(
            (config.tunnels["b"].proto, config.tunnels["b"].addr.port), ("tcp", 23)
        )


class ErrorTests(AgentTestCase):
    """
    Every error code names the file, line and key.
    """

    def test_str_format(self) -> None:
        """
        C{str()} reads C{file:line: key: message (code)}.
        """
        error = self.fails("version: '2'\ntunnels:\n  web:\n    proto: htp\n")

        self.assertEqual(
            str(error),
            f"{error.path}:4: tunnels.web.proto: 'htp' is not one of http, tcp, "
            "tls (TK_CONFIG_INVALID_VALUE)",
        )

    def test_explicit_missing_file(self) -> None:
        """
        A named file that does not exist is C{TK_CONFIG_UNREADABLE}.
        """
        path = os.path.join(self.files.directory, "absent.yml")

        error = self.assertRaises(ConfigError, load_agent_config, [path])

        self.assertEqual(
            (error.code, error.path, error.line), ("TK_CONFIG_UNREADABLE", path, None)
        )

    def test_directory_unreadable(self) -> None:
        """
        A directory named as a file is C{TK_CONFIG_UNREADABLE}.
        """
        error = self.assertRaises(
            ConfigError, load_agent_config, [self.files.directory]
        )

        self.assertEqual(error.code, "TK_CONFIG_UNREADABLE")

    def test_syntax_error(self) -> None:
        """
        YAML that does not parse gives its line and column.
        """
        error = self.fails("version: '2'\ntunnels: [a\n")

        self.assertEqual(
            (error.code, error.line, error.column, error.key),
            ("TK_CONFIG_SYNTAX", 3, 1, None),
        )

    def test_not_utf8(self) -> None:
        """
        A file that is not UTF-8 is a syntax error.
        """
        path = os.path.join(self.files.directory, "latin1.yml")
        with open(path, "wb") as f:
            f.write(b"metadata: caf\xe9\n")

        error = self.assertRaises(ConfigError, load_agent_config, [path])

        self.assertEqual(error.code, "TK_CONFIG_SYNTAX")

    def test_control_character(self) -> None:
        """
        A control character YAML does not allow is a syntax error.
        """
        error = self.fails("metadata: a\x07b\n")

        self.assertEqual(error.code, "TK_CONFIG_SYNTAX")

    def test_duplicate_key(self) -> None:
        """
        A key written twice in one mapping is a syntax error at the second.
        """
        error = self.fails("log: stdout\nlog: stderr\n")

        self.assertEqual((error.code, error.line), ("TK_CONFIG_SYNTAX", 2))

    def test_unknown_tag(self) -> None:
        """
        A tag outside the safe schema is a syntax error.
        """
        error = self.fails("metadata: !!python/name:os.system ''\n")

        self.assertEqual((error.code, error.line), ("TK_CONFIG_SYNTAX", 1))

    def test_recursive_alias(self) -> None:
        """
        An alias to a mapping that contains it is a syntax error.
        """
        error = self.fails("tunnels: &a\n  t: *a\n")

        self.assertEqual(error.code, "TK_CONFIG_SYNTAX")

    def test_top_level_not_mapping(self) -> None:
        """
        A file holding a list is an invalid value.
        """
        error = self.fails("- a\n- b\n")

        self.assertEqual((error.code, error.line), ("TK_CONFIG_INVALID_VALUE", 1))

    def test_unknown_key_suggestion(self) -> None:
        """
        A misspelled key is C{TK_CONFIG_UNKNOWN_KEY} suggesting the right one.
        """
        error = self.fails("version: '2'\nweb_adr: 127.0.0.1:4040\n")

        self.assertError(error, "TK_CONFIG_UNKNOWN_KEY", 2, "web_adr")
        self.assertIn("did you mean 'web_addr'?", error.message)

    def test_unknown_key_no_suggestion(self) -> None:
        """
        A key far from any known one gets no suggestion.
        """
        error = self.fails("zzzzzz: 1\n")

        self.assertError(error, "TK_CONFIG_UNKNOWN_KEY", 1, "zzzzzz")
        self.assertNotIn("did you mean", error.message)

    def test_unknown_tunnel_key_suggestion(self) -> None:
        """
        A misspelled tunnel key names the tunnel and suggests the key.
        """
        error = self.tunnel_fails("proto: http\naddr: 80\nsubdomian: web")

        self.assertError(error, "TK_CONFIG_UNKNOWN_KEY", 5, "tunnels.t.subdomian")
        self.assertIn("did you mean 'subdomain'?", error.message)

    def test_ip_restriction_unsupported(self) -> None:
        """
        C{ip_restriction} is reported as an unknown key.
        """
        error = self.tunnel_fails("proto: http\naddr: 80\nip_restriction: {}")

        self.assertError(error, "TK_CONFIG_UNKNOWN_KEY", 5, "tunnels.t.ip_restriction")

    def test_missing_addr(self) -> None:
        """
        A tunnel without C{addr} is C{TK_CONFIG_MISSING_KEY} at its name.
        """
        error = self.fails("version: '2'\ntunnels:\n  web:\n    proto: http\n")

        self.assertError(error, "TK_CONFIG_MISSING_KEY", 3, "tunnels.web.addr")

    def test_missing_proto(self) -> None:
        """
        A tunnel with neither C{proto} nor C{labels} misses C{proto}.
        """
        error = self.fails("tunnels:\n  web:\n    addr: 80\n")

        self.assertError(error, "TK_CONFIG_MISSING_KEY", 2, "tunnels.web.proto")

    def test_tunnel_without_settings(self) -> None:
        """
        A tunnel name with nothing under it is an invalid value.
        """
        error = self.fails("tunnels:\n  web:\n")

        self.assertError(error, "TK_CONFIG_INVALID_VALUE", 2, "tunnels.web")

    def test_tunnels_not_mapping(self) -> None:
        """
        C{tunnels} holding a list is an invalid value.
        """
        error = self.fails("tunnels:\n  - web\n")

        self.assertError(error, "TK_CONFIG_INVALID_VALUE", 2, "tunnels")


class TunnelTests(AgentTestCase):
    """
    Tunnel definition keys, per protocol.
    """

    def test_http_defaults(self) -> None:
        """
        An http tunnel inspects, serves both schemes and preserves the Host.
        """
        tunnel = self.tunnel("proto: http\naddr: 8080")

        self.assertEqual(
            (tunnel.inspect, tunnel.schemes, tunnel.host_header, tunnel.proxy_proto),
            (True, ("http", "https"), "preserve", 0),
        )

    def test_proto_invalid(self) -> None:
        """
        An unknown protocol lists the valid ones.
        """
        error = self.tunnel_fails("proto: udp\naddr: 53")

        self.assertError(error, "TK_CONFIG_INVALID_VALUE", 3, "tunnels.t.proto")

    def test_addr_port(self) -> None:
        """
        A bare port forwards to localhost.
        """
        tunnel = self.tunnel("proto: http\naddr: 8080")

        self.assertEqual(tunnel.addr, UpstreamAddress("http", "localhost", 8080))

    def test_addr_host_port_tcp(self) -> None:
        """
        C{host:port} on a tcp tunnel is a raw TCP upstream.
        """
        tunnel = self.tunnel("proto: tcp\naddr: 10.0.0.5:22")

        self.assertEqual(tunnel.addr, UpstreamAddress("tcp", "10.0.0.5", 22))

    def test_addr_https_url(self) -> None:
        """
        An https URL without a port uses 443.
        """
        tunnel = self.tunnel("proto: http\naddr: https://internal.example")

        self.assertEqual(tunnel.addr, UpstreamAddress("https", "internal.example", 443))

    def test_addr_file_url(self) -> None:
        """
        A file URL keeps its absolute path.
        """
        tunnel = self.tunnel("proto: http\naddr: file:///srv/my%20files")

        self.assertEqual(
            tunnel.addr, UpstreamAddress("file", "", None, "/srv/my files")
        )

    def test_addr_url_on_tcp(self) -> None:
        """
        A URL on a tcp tunnel is an invalid value.
        """
        error = self.tunnel_fails("proto: tcp\naddr: http://localhost:80")

        self.assertError(error, "TK_CONFIG_INVALID_VALUE", 4, "tunnels.t.addr")

    def test_addr_bad_scheme(self) -> None:
        """
        An C{ftp://} upstream is an invalid value.
        """
        error = self.tunnel_fails("proto: http\naddr: ftp://host:21")

        self.assertError(error, "TK_CONFIG_INVALID_VALUE", 4, "tunnels.t.addr")

    def test_addr_without_port(self) -> None:
        """
        A host without a port is an invalid value.
        """
        error = self.tunnel_fails("proto: tcp\naddr: db.internal")

        self.assertError(error, "TK_CONFIG_INVALID_VALUE", 4, "tunnels.t.addr")

    def test_key_of_other_proto(self) -> None:
        """
        C{remote_addr} on an http tunnel names both the key and the protocols.
        """
        error = self.tunnel_fails("proto: http\naddr: 80\nremote_addr: e:1")

        self.assertError(error, "TK_CONFIG_UNKNOWN_KEY", 5, "tunnels.t.remote_addr")
        self.assertIn("an http tunnel", error.message)
        self.assertIn("tcp tunnels", error.message)

    def test_inspect(self) -> None:
        """
        C{inspect: false} turns capture off.
        """
        self.assertFalse(self.tunnel("proto: http\naddr: 80\ninspect: false").inspect)

    def test_inspect_on_tcp(self) -> None:
        """
        C{inspect} on a tcp tunnel does not apply.
        """
        error = self.tunnel_fails("proto: tcp\naddr: 22\ninspect: true")

        self.assertEqual(error.code, "TK_CONFIG_UNKNOWN_KEY")

    def test_remote_addr(self) -> None:
        """
        A tcp tunnel's C{remote_addr} is a host and port.
        """
        tunnel = self.tunnel("proto: tcp\naddr: 22\nremote_addr: e.example:20022")

        self.assertEqual(tunnel.remote_addr, HostPort("e.example", 20022))

    def test_subdomain(self) -> None:
        """
        C{subdomain} is lower-cased.
        """
        tunnel = self.tunnel("proto: http\naddr: 80\nsubdomain: Web")

        self.assertEqual(tunnel.subdomain, "web")

    def test_subdomain_invalid(self) -> None:
        """
        A subdomain with an underscore is invalid.
        """
        error = self.tunnel_fails("proto: http\naddr: 80\nsubdomain: my_app")

        self.assertError(error, "TK_CONFIG_INVALID_VALUE", 5, "tunnels.t.subdomain")

    def test_domain_alias(self) -> None:
        """
        C{domain} sets the hostname.
        """
        tunnel = self.tunnel("proto: tls\naddr: 443\ndomain: '*.example.org'")

        self.assertEqual(tunnel.hostname, "*.example.org")

    def test_domain_and_hostname(self) -> None:
        """
        C{domain} and C{hostname} together conflict.
        """
        error = self.tunnel_fails(
            "proto: http\naddr: 80\nhostname: a.example\ndomain: b.example"
        )

        self.assertError(error, "TK_CONFIG_INVALID_VALUE", 6, "tunnels.t.domain")

    def test_subdomain_and_hostname(self) -> None:
        """
        C{subdomain} and C{hostname} together conflict.
        """
        error = self.tunnel_fails(
            "proto: http\naddr: 80\nsubdomain: a\nhostname: b.example"
        )

        self.assertEqual(error.code, "TK_CONFIG_INVALID_VALUE")

    def test_auth(self) -> None:
        """
        The v2 C{auth} gives one credential.
        """
        tunnel = self.tunnel("proto: http\naddr: 80\nauth: 'ann:password1'")

        self.assertEqual(
            [(c.username, c.password) for c in tunnel.basic_auth],
            [("ann", "password1")],
        )

    def test_basic_auth(self) -> None:
        """
        C{basic_auth} gives several credentials; passwords may hold colons.
        """
        tunnel = self.tunnel(
            "proto: http\naddr: 80\nbasic_auth: ['a:12345678', 'b:pass:word']"
        )

        self.assertEqual(
            [(c.username, c.password) for c in tunnel.basic_auth],
            [("a", "12345678"), ("b", "pass:word")],
        )

    def test_basic_auth_hidden_from_repr(self) -> None:
        """
        Passwords do not appear in the repr of a definition.
        """
        tunnel = self.tunnel("proto: http\naddr: 80\nauth: 'ann:hunter2hunter2'")

        self.assertNotIn("hunter2hunter2", repr(tunnel))

    def test_short_password(self) -> None:
        """
        A password under 8 characters is invalid, at its list item.
        """
        error = self.tunnel_fails(
            "proto: http\naddr: 80\nbasic_auth:\n  - 'a:12345678'\n  - 'b:short'"
        )

        self.assertError(error, "TK_CONFIG_INVALID_VALUE", 7, "tunnels.t.basic_auth[1]")

    def test_credential_without_colon(self) -> None:
        """
        A credential without a colon is invalid.
        """
        error = self.tunnel_fails("proto: http\naddr: 80\nauth: justauser")

        self.assertError(error, "TK_CONFIG_INVALID_VALUE", 5, "tunnels.t.auth")

    def test_auth_and_basic_auth(self) -> None:
        """
        C{auth} and C{basic_auth} together conflict.
        """
        error = self.tunnel_fails(
            "proto: http\naddr: 80\nauth: 'a:12345678'\nbasic_auth: ['b:12345678']"
        )

        self.assertEqual(error.code, "TK_CONFIG_INVALID_VALUE")

    def test_bind_tls_true(self) -> None:
        """
        C{bind_tls: true} means https only.
        """
        tunnel = self.tunnel("proto: http\naddr: 80\nbind_tls: true")

        self.assertEqual(tunnel.schemes, ("https",))

    def test_bind_tls_false(self) -> None:
        """
        C{bind_tls: false} means http only.
        """
        tunnel = self.tunnel("proto: http\naddr: 80\nbind_tls: false")

        self.assertEqual(tunnel.schemes, ("http",))

    def test_bind_tls_both(self) -> None:
        """
        C{bind_tls: both} means both schemes.
        """
        tunnel = self.tunnel("proto: http\naddr: 80\nbind_tls: both")

        self.assertEqual(tunnel.schemes, ("http", "https"))

    def test_schemes_normalised(self) -> None:
        """
        C{schemes} is put in a fixed order.
        """
        tunnel = self.tunnel("proto: http\naddr: 80\nschemes: [https, http]")

        self.assertEqual(tunnel.schemes, ("http", "https"))

    def test_schemes_invalid(self) -> None:
        """
        An unknown scheme is invalid, at its list item.
        """
        error = self.tunnel_fails("proto: http\naddr: 80\nschemes: [ftp]")

        self.assertError(error, "TK_CONFIG_INVALID_VALUE", 5, "tunnels.t.schemes[0]")

    def test_bind_tls_and_schemes(self) -> None:
        """
        C{bind_tls} and C{schemes} are mutually exclusive.
        """
        error = self.tunnel_fails(
            "proto: http\naddr: 80\nbind_tls: true\nschemes: [https]"
        )

        self.assertError(error, "TK_CONFIG_INVALID_VALUE", 6, "tunnels.t.schemes")

    def test_host_header_literal(self) -> None:
        """
        C{host_header} may be a literal host.
        """
        tunnel = self.tunnel("proto: http\naddr: 80\nhost_header: app.internal")

        self.assertEqual(tunnel.host_header, "app.internal")

    def test_host_header_with_space(self) -> None:
        """
        A C{host_header} holding a space cannot be sent, so it is invalid.
        """
        error = self.tunnel_fails("proto: http\naddr: 80\nhost_header: 'a b'")

        self.assertError(error, "TK_CONFIG_INVALID_VALUE", 5, "tunnels.t.host_header")

    def test_tls_crt_key(self) -> None:
        """
        A tls tunnel's C{crt} and C{key} resolve to existing files.
        """
        self.files.write("c.pem", "c")
        self.files.write("k.pem", "k")

        tunnel = self.tunnel("proto: tls\naddr: 443\ncrt: c.pem\nkey: k.pem")

        self.assertEqual(
            (os.path.basename(tunnel.crt), os.path.basename(tunnel.key)),
            ("c.pem", "k.pem"),
        )

    def test_crt_without_key(self) -> None:
        """
        C{crt} alone is invalid.
        """
        self.files.write("c.pem", "c")

        error = self.tunnel_fails("proto: tls\naddr: 443\ncrt: c.pem")

        self.assertError(error, "TK_CONFIG_INVALID_VALUE", 5, "tunnels.t.crt")

    def test_client_cas_alias(self) -> None:
        """
        C{client_cas} sets C{mutual_tls_cas}.
        """
        for name in ("ca.pem", "c.pem", "k.pem"):
            self.files.write(name, "c")

        tunnel = self.tunnel(
            "proto: tls\naddr: 443\ncrt: c.pem\nkey: k.pem\nclient_cas: ca.pem"
        )

        self.assertEqual(os.path.basename(tunnel.mutual_tls_cas), "ca.pem")

    def test_tls_client_cas_without_crt(self) -> None:
        """
        A tls tunnel with C{mutual_tls_cas} (or C{client_cas}) but no
        C{crt} is invalid: only TLS ended at the agent checks client
        certificates.
        """
        self.files.write("ca.pem", "c")

        for key in ("mutual_tls_cas", "client_cas"):
            with self.subTest(key=key):
                error = self.tunnel_fails(f"proto: tls\naddr: 443\n{key}: ca.pem")
                self.assertError(
                    error, "TK_CONFIG_INVALID_VALUE", 5, f"tunnels.t.{key}"
                )

    def test_labeled(self) -> None:
        """
        A labeled tunnel has labels and no protocol.
        """
        tunnel = self.tunnel("labels: [env=prod, team=infra]\naddr: 8000")

        self.assertEqual(
            (tunnel.proto, tunnel.labeled, tunnel.labels),
            (None, True, (("env", "prod"), ("team", "infra"))),
        )

    def test_labeled_with_proto(self) -> None:
        """
        A labeled tunnel with C{proto} is an error at C{proto}.
        """
        error = self.tunnel_fails("labels: [env=prod]\nproto: http\naddr: 80")

        self.assertError(error, "TK_CONFIG_UNKNOWN_KEY", 4, "tunnels.t.proto")

    def test_labeled_with_hostname(self) -> None:
        """
        A labeled tunnel with C{hostname} is an error at C{hostname}.
        """
        error = self.tunnel_fails("labels: [env=prod]\naddr: 80\nhostname: a.example")

        self.assertError(error, "TK_CONFIG_UNKNOWN_KEY", 5, "tunnels.t.hostname")

    def test_bad_label(self) -> None:
        """
        A label without C{=} is invalid, at its list item.
        """
        error = self.tunnel_fails("labels:\n  - env=prod\n  - infra\naddr: 80")

        self.assertError(error, "TK_CONFIG_INVALID_VALUE", 5, "tunnels.t.labels[1]")

    def test_proxy_proto(self) -> None:
        """
        C{proxy_proto: 2} asks for PROXY protocol version 2.
        """
        self.assertEqual(
            self.tunnel("proto: tcp\naddr: 22\nproxy_proto: 2").proxy_proto, 2
        )

    def test_proxy_proto_empty(self) -> None:
        """
        C{proxy_proto: ""} means none.
        """
        self.assertEqual(
            self.tunnel("proto: tcp\naddr: 22\nproxy_proto: ''").proxy_proto, 0
        )

    def test_proxy_proto_invalid(self) -> None:
        """
        C{proxy_proto: 3} is invalid.
        """
        error = self.tunnel_fails("proto: tcp\naddr: 22\nproxy_proto: 3")

        self.assertError(error, "TK_CONFIG_INVALID_VALUE", 5, "tunnels.t.proxy_proto")

    def test_tunnel_metadata(self) -> None:
        """
        A tunnel's C{metadata} is kept.
        """
        self.assertEqual(self.tunnel("proto: tcp\naddr: 22\nmetadata: m").metadata, "m")


class TunnelSettingsTests(SynchronousTestCase):
    """
    L{parse_tunnel_settings}: a tunnel definition given as data, as the
    API's C{POST /api/tunnels} takes it.
    """

    def test_same_defaults_as_the_file(self) -> None:
        """
        Settings are read as the file's are: a port for C{addr}, and the
        defaults of an http tunnel.
        """
        definition = parse_tunnel_settings("web", {"proto": "http", "addr": 8080})

        self.assertEqual(definition.name, "web")
        self.assertEqual(definition.addr.port, 8080)
        self.assertTrue(definition.inspect)
        self.assertEqual(definition.schemes, ("http", "https"))

    def test_unknown_keys(self) -> None:
        """
        Every unknown key is named.
        """
        error = self.assertRaises(
            ConfigError,
            parse_tunnel_settings,
            "web",
            {"proto": "http", "addr": 80, "options": 1, "zone": "x"},
        )

        self.assertEqual(error.code, "TK_CONFIG_UNKNOWN_KEY")
        self.assertIn("'options', 'zone'", error.message)

    def test_bad_value(self) -> None:
        """
        A bad value is reported with its key.
        """
        error = self.assertRaises(
            ConfigError, parse_tunnel_settings, "web", {"proto": "htp", "addr": 80}
        )

        self.assertEqual(error.key, "tunnels.web.proto")


class MergeTests(AgentTestCase):
    """
    Several files merge as ngrok merges them.
    """

    def test_scalar_override(self) -> None:
        """
        A later file's scalar replaces the earlier one.
        """
        config = self.load("log_level: info\nlog: stdout\n", "log_level: debug\n")

        self.assertEqual((config.log_level, config.log), ("debug", "stdout"))

    def test_list_replaced(self) -> None:
        """
        A later file's list replaces the earlier list wholesale.
        """
        config = self.load("web_allow_hosts: [a, b]\n", "web_allow_hosts: [c]\n")

        self.assertEqual(config.web_allow_hosts, ("c",))

    def test_tunnels_merged(self) -> None:
        """
        Tunnels from both files are kept.
        """
        config = self.load(
            "tunnels:\n  a:\n    proto: tcp\n    addr: 22\n",
            "tunnels:\n  b:\n    proto: tcp\n    addr: 23\n",
        )

        self.assertEqual(list(config.tunnels), ["a", "b"])

    def test_tunnel_keys_merged(self) -> None:
        """
        A tunnel in both files takes each key from the later file when set.
        """
        config = self.load(
            "tunnels:\n  web:\n    proto: http\n    addr: 8080\n    subdomain: w\n",
            "tunnels:\n  web:\n    addr: 9090\n",
        )

        web = config.tunnels["web"]
        self.assertEqual((web.proto, web.addr.port, web.subdomain), ("http", 9090, "w"))

    def test_tunnel_list_key_replaced(self) -> None:
        """
        A list inside a tunnel is replaced, not appended to.
        """
        config = self.load(
            "tunnels:\n  w:\n    proto: http\n    addr: 80\n    schemes: [http]\n",
            "tunnels:\n  w:\n    schemes: [https]\n",
        )

        self.assertEqual(config.tunnels["w"].schemes, ("https",))

    def test_error_names_file_of_origin(self) -> None:
        """
        An error in a merged value names the file and line it came from.
        """
        error = self.fails(
            "tunnels:\n  web:\n    proto: htp\n    addr: 80\n",
            "version: '2'\ntunnels:\n  web:\n    addr: 81\n",
        )

        self.assertEqual(
            (os.path.basename(error.path), error.line, error.key),
            ("f0.yml", 3, "tunnels.web.proto"),
        )

    def test_later_file_error_location(self) -> None:
        """
        An error in the later file names the later file.
        """
        error = self.fails("version: '2'\n", "\n\nlog_level: loud\n")

        self.assertEqual((os.path.basename(error.path), error.line), ("f1.yml", 3))

    def test_version_checked_per_file(self) -> None:
        """
        A wrong version in the second file names the second file.
        """
        error = self.fails("version: '2'\n", "version: '3'\n")

        self.assertEqual(
            (error.code, os.path.basename(error.path)), ("TK_CONFIG_VERSION", "f1.yml")
        )

    def test_paths_recorded(self) -> None:
        """
        The files read are recorded in order.
        """
        config = self.load("log: stdout\n", "log: stderr\n")

        self.assertEqual(
            [os.path.basename(p) for p in config.paths], ["f0.yml", "f1.yml"]
        )


class DefaultPathTests(SynchronousTestCase):
    """
    The default file's location on each platform.
    """

    def test_linux_xdg(self) -> None:
        """
        On Linux, C{$XDG_CONFIG_HOME} is used when set.
        """
        path = default_agent_config_path(
            "linux", {"HOME": "/home/u", "XDG_CONFIG_HOME": "/cfg"}
        )

        self.assertEqual(path, "/cfg/tunnelkit/tunnelkit.yml")

    def test_linux_home(self) -> None:
        """
        On Linux without C{XDG_CONFIG_HOME}, C{~/.config} is used.
        """
        path = default_agent_config_path("linux", {"HOME": "/home/u"})

        self.assertEqual(path, "/home/u/.config/tunnelkit/tunnelkit.yml")

    def test_linux_relative_xdg_ignored(self) -> None:
        """
        A relative C{XDG_CONFIG_HOME} is ignored, as the XDG spec says.
        """
        path = default_agent_config_path(
            "linux", {"HOME": "/home/u", "XDG_CONFIG_HOME": "cfg"}
        )

        self.assertEqual(path, "/home/u/.config/tunnelkit/tunnelkit.yml")

    def test_macos(self) -> None:
        """
        On macOS, C{~/Library/Application Support} is used.
        """
        path = default_agent_config_path(
            "darwin", {"HOME": "/Users/u", "XDG_CONFIG_HOME": "/cfg"}
        )

        self.assertEqual(
            path, "/Users/u/Library/Application Support/tunnelkit/tunnelkit.yml"
        )

    def test_windows(self) -> None:
        """
        On Windows, C{%LOCALAPPDATA%} is used.
        """
        path = default_agent_config_path(
            "win32", {"LOCALAPPDATA": "C:\\Users\\u\\AppData\\Local"}
        )

        self.assertEqual(path, "C:\\Users\\u\\AppData\\Local\\tunnelkit\\tunnelkit.yml")

    def test_windows_without_localappdata(self) -> None:
        """
        On Windows without C{LOCALAPPDATA}, the profile's AppData is used.
        """
        path = default_agent_config_path("win32", {"USERPROFILE": "C:\\Users\\u"})

        self.assertEqual(path, "C:\\Users\\u\\AppData\\Local\\tunnelkit\\tunnelkit.yml")

    def test_missing_default_is_empty(self) -> None:
        """
        Loading with no paths when the default file is absent gives defaults.
        """
        home = self.mktemp()
        os.makedirs(home)

        config = load_agent_config([], platform="linux", environ={"HOME": home})

        self.assertEqual(config, AgentConfig())

    def test_existing_default_is_read(self) -> None:
        """
        Loading with no paths reads the default file when it exists.
        """
        home = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(home, ".config", "tunnelkit"))
        path = os.path.join(home, ".config", "tunnelkit", "tunnelkit.yml")
        with open(path, "w") as f:
            f.write("log_level: warn\n")

        config = load_agent_config([], platform="linux", environ={"HOME": home})

        self.assertEqual((config.paths, config.log_level), ((path,), "warn"))


class ParsingTests(SynchronousTestCase):
    """
    The value parsers the loaders and the command line share.
    """

    def test_durations(self) -> None:
        """
        Go-style durations convert to seconds.
        """
        cases = {
            "10s": 10.0,
            "500ms": 0.5,
            "1m30s": 90.0,
            "1h": 3600.0,
            "1.5s": 1.5,
            "2us": 2e-6,
            "0": 0.0,
            "-1s": -1.0,
        }

        results = {text: parse_duration(text) for text in cases}

        for text, seconds in cases.items():
            self.assertAlmostEqual(results[text], seconds, msg=text)

    def test_bad_durations(self) -> None:
        """
        Numbers without units, lone units and unknown units are rejected.
        """
        for text in ("10", "s", "", "10x", "1s2", "1d"):
            self.assertRaises(ValueError, parse_duration, text)

    def test_host_port(self) -> None:
        """
        Host and port, bracketed IPv6, and a default port are understood.
        """
        self.assertEqual(
            (
                parse_host_port("a.example:80"),
                parse_host_port("[::1]:80"),
                parse_host_port("a.example", default_port=4443),
            ),
            (
                HostPort("a.example", 80),
                HostPort("::1", 80),
                HostPort("a.example", 4443),
            ),
        )

    def test_host_port_str(self) -> None:
        """
        An IPv6 address prints in brackets.
        """
        self.assertEqual(str(HostPort("::1", 80)), "[::1]:80")

    def test_bad_host_port(self) -> None:
        """
        A missing port, a port out of range or an empty host are rejected.
        """
        for text in ("a.example", "a:0", "a:65536", ":80", "a:b", "[::1"):
            self.assertRaises(ValueError, parse_host_port, text)

    def test_upstream_port_scheme(self) -> None:
        """
        A bare port takes the default scheme given.
        """
        self.assertEqual(
            parse_upstream_address("22", "tcp"), UpstreamAddress("tcp", "localhost", 22)
        )

    def test_upstream_str(self) -> None:
        """
        Upstream addresses print back as URLs or host:port.
        """
        self.assertEqual(
            [
                str(parse_upstream_address("http://h:81/x")),
                str(parse_upstream_address("22", "tcp")),
                str(parse_upstream_address("file:///srv/a b")),
            ],
            ["http://h:81/x", "localhost:22", "file:///srv/a%20b"],
        )

    def test_upstream_relative_file(self) -> None:
        """
        A file URL with a host part is rejected.
        """
        self.assertRaises(ValueError, parse_upstream_address, "file://srv/files")
