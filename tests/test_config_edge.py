"""
Tests for L{tunnelkit.config.edge}: loading and validating the edge file,
and checking authtokens.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os

from twisted.trial.unittest import SynchronousTestCase

from tunnelkit.config import (
    AuthtokenGrant,
    ConfigError,
    EdgeConfig,
    EdgeTlsFiles,
    HostPort,
    PortRange,
    load_edge_config,
)

EXAMPLE = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "edge.yml")


def sha256_hex(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class EdgeTestCase(SynchronousTestCase):
    """
    Shared helpers: write an edge file and load it, or expect an error.
    """

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)

    def write(self, name: str, text: str) -> str:
        path = os.path.join(self.directory, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def load(self, text: str) -> EdgeConfig:
        return load_edge_config(self.write("edge.yml", text))

    def fails(self, text: str) -> ConfigError:
        return self.assertRaises(
            ConfigError, load_edge_config, self.write("edge.yml", text)
        )

    def assertError(
        self, error: ConfigError, code: str, line: int | None, key: str | None
    ) -> None:
        self.assertEqual((error.code, error.line, error.key), (code, line, key))


class EdgeDefaultsTests(EdgeTestCase):
    """
    An empty file, and the shipped example.
    """

    def test_empty_file_defaults(self) -> None:
        """
        An empty file gives the documented defaults.
        """
        config = self.load("")

        self.assertEqual(
            (
                config.agent_listener,
                config.http_listener,
                config.https_listener,
                config.domain,
                config.public_host,
                config.tcp_port_range,
                config.tcp_bind_host,
                config.authtokens,
                config.allow_anonymous,
                config.state_dir,
                config.tls,
                config.session_grace,
            ),
            (
                "tcp:4443",
                None,
                None,
                "localhost",
                "localhost",
                PortRange(20000, 29999),
                "0.0.0.0",
                (),
                False,
                os.path.expanduser("~/.local/state/tunnelkit-edge"),
                None,
                60.0,
            ),
        )

    def test_example_loads(self) -> None:
        """
        C{examples/edge.yml} loads cleanly, with its two tokens.
        """
        config = load_edge_config(EXAMPLE)

        self.assertEqual([g.name for g in config.authtokens], ["alice", "ci"])

    def test_missing_file(self) -> None:
        """
        A file that does not exist is C{TK_CONFIG_UNREADABLE}.
        """
        path = os.path.join(self.directory, "none.yml")

        error = self.assertRaises(ConfigError, load_edge_config, path)

        self.assertEqual((error.code, error.path), ("TK_CONFIG_UNREADABLE", path))


class EdgeKeyTests(EdgeTestCase):
    """
    Each edge key is read and validated.
    """

    def test_version(self) -> None:
        """
        C{version: 1} is accepted.
        """
        self.assertEqual(self.load("version: 1\n").version, 1)

    def test_version_wrong(self) -> None:
        """
        C{version: 2} is C{TK_CONFIG_VERSION}.
        """
        error = self.fails("domain: a.example\nversion: 2\n")

        self.assertError(error, "TK_CONFIG_VERSION", 2, "version")

    def test_unknown_key(self) -> None:
        """
        A misspelled key is reported with a suggestion.
        """
        error = self.fails("version: 1\ntcp_port_rang: 1-2\n")

        self.assertError(error, "TK_CONFIG_UNKNOWN_KEY", 2, "tcp_port_rang")
        self.assertIn("did you mean 'tcp_port_range'?", error.message)

    def test_listeners(self) -> None:
        """
        Listener endpoints are kept as strings; a bare number means TCP.
        """
        config = self.load(
            "agent_listener: 5000\nhttp_listener: tcp:0\n"
            "https_listener: tcp:port=0:interface=127.0.0.1\n"
        )

        self.assertEqual(
            (config.agent_listener, config.http_listener, config.https_listener),
            ("tcp:5000", "tcp:0", "tcp:port=0:interface=127.0.0.1"),
        )

    def test_listener_invalid(self) -> None:
        """
        A string that is not an endpoint is an invalid value.
        """
        error = self.fails("\nagent_listener: 'nonsense:4443'\n")

        self.assertError(error, "TK_CONFIG_INVALID_VALUE", 2, "agent_listener")

    def test_domain(self) -> None:
        """
        The domain is lower-cased, and C{public_host} follows it.
        """
        config = self.load("domain: Tunnels.Example.com\n")

        self.assertEqual(
            (config.domain, config.public_host),
            ("tunnels.example.com", "tunnels.example.com"),
        )

    def test_domain_invalid(self) -> None:
        """
        A domain with a space is invalid.
        """
        error = self.fails("domain: 'bad domain'\n")

        self.assertError(error, "TK_CONFIG_INVALID_VALUE", 1, "domain")

    def test_public_host_ip(self) -> None:
        """
        C{public_host} may be an IP address.
        """
        self.assertEqual(
            self.load("public_host: 203.0.113.7\n").public_host, "203.0.113.7"
        )

    def test_tcp_port_range(self) -> None:
        """
        C{tcp_port_range} is an inclusive range.
        """
        config = self.load("tcp_port_range: '30000-30010'\n")

        self.assertEqual(
            (
                config.tcp_port_range,
                len(config.tcp_port_range),
                30010 in config.tcp_port_range,
            ),
            (PortRange(30000, 30010), 11, True),
        )

    def test_tcp_port_range_reversed(self) -> None:
        """
        A range whose low end is above its high end is invalid.
        """
        error = self.fails("tcp_port_range: '3000-2000'\n")

        self.assertError(error, "TK_CONFIG_INVALID_VALUE", 1, "tcp_port_range")

    def test_tcp_port_range_out_of_bounds(self) -> None:
        """
        A range reaching past 65535 is invalid.
        """
        error = self.fails("tcp_port_range: '60000-70000'\n")

        self.assertError(error, "TK_CONFIG_INVALID_VALUE", 1, "tcp_port_range")

    def test_tcp_port_range_garbage(self) -> None:
        """
        A range that is not numbers is invalid.
        """
        error = self.fails("tcp_port_range: 'low-high'\n")

        self.assertError(error, "TK_CONFIG_INVALID_VALUE", 1, "tcp_port_range")

    def test_tcp_bind_host(self) -> None:
        """
        C{tcp_bind_host} is kept.
        """
        self.assertEqual(
            self.load("tcp_bind_host: 127.0.0.1\n").tcp_bind_host, "127.0.0.1"
        )

    def test_allow_anonymous(self) -> None:
        """
        C{allow_anonymous: true} is read.
        """
        self.assertTrue(self.load("allow_anonymous: true\n").allow_anonymous)

    def test_allow_anonymous_invalid(self) -> None:
        """
        C{allow_anonymous: maybe} is invalid.
        """
        error = self.fails("allow_anonymous: maybe\n")

        self.assertError(error, "TK_CONFIG_INVALID_VALUE", 1, "allow_anonymous")

    def test_state_dir_relative(self) -> None:
        """
        A relative C{state_dir} is relative to the file's directory.
        """
        config = self.load("state_dir: state\n")

        self.assertEqual(config.state_dir, os.path.join(self.directory, "state"))

    def test_state_dir_home(self) -> None:
        """
        C{~} in C{state_dir} is expanded.
        """
        config = self.load("state_dir: ~/edge\n")

        self.assertEqual(config.state_dir, os.path.expanduser("~/edge"))

    def test_tls(self) -> None:
        """
        C{tls} with both files gives their absolute paths.
        """
        self.write("cert.pem", "c")
        self.write("key.pem", "k")

        config = self.load("tls:\n  cert: cert.pem\n  key: key.pem\n")

        self.assertEqual(
            config.tls,
            EdgeTlsFiles(
                os.path.join(self.directory, "cert.pem"),
                os.path.join(self.directory, "key.pem"),
            ),
        )

    def test_tls_cert_only(self) -> None:
        """
        C{tls} with only C{cert} misses C{key}.
        """
        self.write("cert.pem", "c")

        error = self.fails("version: 1\ntls:\n  cert: cert.pem\n")

        self.assertError(error, "TK_CONFIG_MISSING_KEY", 2, "tls.key")

    def test_tls_missing_file(self) -> None:
        """
        A C{tls} file that does not exist is invalid.
        """
        self.write("cert.pem", "c")

        error = self.fails("tls:\n  cert: cert.pem\n  key: gone.pem\n")

        self.assertError(error, "TK_CONFIG_INVALID_VALUE", 3, "tls.key")

    def test_tls_unknown_key(self) -> None:
        """
        An unknown key under C{tls} is reported with its dotted name.
        """
        error = self.fails("tls:\n  crt: cert.pem\n")

        self.assertError(error, "TK_CONFIG_UNKNOWN_KEY", 2, "tls.crt")

    def test_durations(self) -> None:
        """
        C{session_grace} and the heartbeat keys are durations.
        """
        config = self.load(
            "session_grace: 2m\nheartbeat_interval: 5s\nheartbeat_tolerance: 7500ms\n"
        )

        self.assertEqual(
            (
                config.session_grace,
                config.heartbeat_interval,
                config.heartbeat_tolerance,
            ),
            (120.0, 5.0, 7.5),
        )

    def test_duration_invalid(self) -> None:
        """
        C{session_grace: 60} without a unit is invalid.
        """
        error = self.fails("session_grace: 60\n")

        self.assertError(error, "TK_CONFIG_INVALID_VALUE", 1, "session_grace")

    def test_log_settings(self) -> None:
        """
        The log keys are read as for the agent.
        """
        config = self.load("log: stderr\nlog_level: debug\nlog_format: json\n")

        self.assertEqual(
            (config.log, config.log_level, config.log_format),
            ("stderr", "debug", "json"),
        )


class AuthtokenTests(EdgeTestCase):
    """
    The C{authtokens} list and L{EdgeConfig.check_token}.
    """

    def test_plain_token(self) -> None:
        """
        A plain token is accepted by L{EdgeConfig.check_token}.
        """
        config = self.load("authtokens:\n  - name: a\n    token: tok-a\n")

        self.assertEqual(config.check_token("tok-a"), config.authtokens[0])

    def test_sha256_token(self) -> None:
        """
        A token given by its digest is accepted.
        """
        config = self.load(
            f"authtokens:\n  - name: a\n    token_sha256: {sha256_hex('tok-a')}\n"
        )

        self.assertEqual(config.check_token("tok-a").name, "a")

    def test_wrong_token(self) -> None:
        """
        A token that is not configured gets no grant.
        """
        config = self.load("authtokens:\n  - name: a\n    token: tok-a\n")

        self.assertIsNone(config.check_token("tok-b"))

    def test_no_tokens(self) -> None:
        """
        With no tokens configured, no token is accepted.
        """
        self.assertIsNone(self.load("").check_token(""))

    def test_reserved_addrs(self) -> None:
        """
        A grant carries its reserved TCP addresses.
        """
        config = self.load(
            "authtokens:\n  - name: a\n    token: tok-a\n"
            "    reserved_addrs: ['e.example:20001']\n"
        )

        self.assertEqual(
            config.check_token("tok-a"),
            AuthtokenGrant(
                "a",
                (HostPort("e.example", 20001),),
                token_digest=hashlib.sha256(b"tok-a").digest(),
            ),
        )

    def test_plain_token_not_kept(self) -> None:
        """
        No value of the loaded configuration holds the plain token.
        """
        config = self.load("authtokens:\n  - name: a\n    token: plain-secret\n")

        values = [getattr(config, f.name) for f in dataclasses.fields(config)]
        values += [
            getattr(g, f.name) for g in config.authtokens for f in dataclasses.fields(g)
        ]
        self.assertNotIn("plain-secret", [v for v in values if isinstance(v, str)])
        self.assertNotIn("plain-secret", repr(config))

    def test_compares_every_token(self) -> None:
        """
        The check compares with C{hmac.compare_digest} against every grant,
        even after a match.
        """
        config = self.load(
            "authtokens:\n  - name: a\n    token: tok-a\n"
            "  - name: b\n    token: tok-b\n  - name: c\n    token: tok-c\n"
        )
        compared = []
        real = hmac.compare_digest

        def recording(a: bytes, b: bytes) -> bool:
            compared.append(b)
            return real(a, b)

        self.patch(hmac, "compare_digest", recording)

        grant = config.check_token("tok-a")

        self.assertEqual(
            (grant.name, compared), ("a", [g.token_digest for g in config.authtokens])
        )

    def test_duplicate_name(self) -> None:
        """
        Two tokens with one name are invalid, at the second name.
        """
        error = self.fails(
            "authtokens:\n  - name: a\n    token: t1\n  - name: a\n    token: t2\n"
        )

        self.assertError(error, "TK_CONFIG_INVALID_VALUE", 4, "authtokens[1].name")

    def test_duplicate_token(self) -> None:
        """
        The same token given plainly and as a digest is a duplicate.
        """
        error = self.fails(
            "authtokens:\n  - name: a\n    token: t1\n"
            f"  - name: b\n    token_sha256: {sha256_hex('t1')}\n"
        )

        self.assertError(
            error, "TK_CONFIG_INVALID_VALUE", 5, "authtokens[1].token_sha256"
        )
        self.assertNotIn("t1", error.message)

    def test_token_and_digest(self) -> None:
        """
        Giving both C{token} and C{token_sha256} is invalid.
        """
        digest = sha256_hex("t1")

        error = self.fails(
            f"authtokens:\n  - name: a\n    token: t1\n    token_sha256: {digest}\n"
        )

        self.assertError(
            error, "TK_CONFIG_INVALID_VALUE", 4, "authtokens[0].token_sha256"
        )

    def test_no_token(self) -> None:
        """
        An entry with neither token form misses C{token}.
        """
        error = self.fails("version: 1\nauthtokens:\n  - name: a\n")

        self.assertError(error, "TK_CONFIG_MISSING_KEY", 3, "authtokens[0].token")

    def test_no_name(self) -> None:
        """
        An entry without a name misses C{name}.
        """
        error = self.fails("authtokens:\n  - token: t\n")

        self.assertError(error, "TK_CONFIG_MISSING_KEY", 2, "authtokens[0].name")

    def test_bad_digest(self) -> None:
        """
        A digest that is not 64 hex digits is invalid.
        """
        error = self.fails("authtokens:\n  - name: a\n    token_sha256: abc\n")

        self.assertError(
            error, "TK_CONFIG_INVALID_VALUE", 3, "authtokens[0].token_sha256"
        )

    def test_item_not_mapping(self) -> None:
        """
        A list item that is a bare string is invalid.
        """
        error = self.fails("authtokens:\n  - tok-a\n")

        self.assertError(error, "TK_CONFIG_INVALID_VALUE", 2, "authtokens[0]")

    def test_item_unknown_key(self) -> None:
        """
        A misspelled key inside an entry is suggested.
        """
        error = self.fails("authtokens:\n  - name: a\n    tokn: t\n")

        self.assertError(error, "TK_CONFIG_UNKNOWN_KEY", 3, "authtokens[0].tokn")
        self.assertIn("did you mean 'token'?", error.message)

    def test_reserved_addr_invalid(self) -> None:
        """
        A reserved address without a port is invalid, at its list item.
        """
        error = self.fails(
            "authtokens:\n  - name: a\n    token: t\n    reserved_addrs:\n"
            "      - e.example\n"
        )

        self.assertError(
            error, "TK_CONFIG_INVALID_VALUE", 5, "authtokens[0].reserved_addrs[0]"
        )

    def test_reserved_addr_twice(self) -> None:
        """
        One address reserved for two tokens is invalid.
        """
        error = self.fails(
            "authtokens:\n  - name: a\n    token: t1\n    reserved_addrs: ['e:1']\n"
            "  - name: b\n    token: t2\n    reserved_addrs: ['e:1']\n"
        )

        self.assertError(
            error, "TK_CONFIG_INVALID_VALUE", 7, "authtokens[1].reserved_addrs"
        )
