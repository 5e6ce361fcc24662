"""
Tests for C{tunnelkit tls}: its flags, the tunnel definition they make, and
their usage errors.
"""

import os

from tunnelkit import cli
from tunnelkit.config import TunnelDefinition, UpstreamAddress
from tests.test_cli import CommandTestCase, IdleReactor


class TlsCommandTestCase(CommandTestCase):
    """
    Run C{tunnelkit tls} up to the reactor, with an empty config file and
    certificate files that exist (their contents are read only when the
    tunnel is bound).
    """

    def setUp(self) -> None:
        super().setUp()
        self.config = self.write("tunnelkit.yml", 'version: "2"\n')
        self.crt = self.write("site.pem", "certificate")
        self.key = self.write("site.key", "key")
        self.cas = self.write("clients.pem", "authorities")
        self.patch(cli, "install_logs", lambda *args, **kw: None)
        self.reactor = IdleReactor()

    def tunnel_for(self, *argv: str) -> TunnelDefinition:
        """
        Run C{tunnelkit tls ARGV...}, which must succeed.

        @return: the one tunnel it starts.
        """
        status = self.run_command(
            "tls", "--config", self.config, *argv, reactor=self.reactor
        )

        self.assertEqual((status, self.stderr.getvalue()), (0, ""))
        [start] = self.reactor.when_running
        app = start.__self__  # type: ignore[attr-defined]
        [definition] = app.tunnel_definitions
        self.assertIsInstance(definition, TunnelDefinition)
        return definition

    def assertUsageError(self, error: str, *argv: str) -> None:
        """
        Assert that C{tunnelkit tls ARGV...} exits 2 with C{error} and the
        hint for C{tls}; the reactor is not run.
        """
        status = self.run_command(
            "tls", "--config", self.config, *argv, reactor=self.reactor
        )

        self.assertEqual(status, 2)
        self.assertEqual(
            self.stderr.getvalue(),
            f"ERROR: {error}\nRun 'tunnelkit tls --help' for usage.\n",
        )
        self.assertEqual(self.reactor.runs, 0)


class TlsDefinitionTests(TlsCommandTestCase):
    """
    The tunnel C{tunnelkit tls} starts.
    """

    def test_port(self) -> None:
        """
        C{tunnelkit tls 8443} passes a random name through to
        localhost:8443.
        """
        definition = self.tunnel_for("8443")

        self.assertEqual(
            (definition.name, definition.proto, definition.addr),
            ("command_line", "tls", UpstreamAddress("tcp", "localhost", 8443)),
        )
        self.assertEqual(
            (definition.subdomain, definition.hostname, definition.crt),
            (None, None, None),
        )

    def test_host_port_and_names(self) -> None:
        """
        A C{host:port} upstream, and a subdomain or a hostname (or its v3
        name C{--domain}), lower-cased.
        """
        sub = self.tunnel_for("10.0.0.5:443", "--subdomain", "DB")
        self.reactor.when_running.clear()
        host = self.tunnel_for("443", "--hostname", "DB.Example.com")
        self.reactor.when_running.clear()
        domain = self.tunnel_for("443", "--domain", "*.example.com")

        self.assertEqual(sub.addr, UpstreamAddress("tcp", "10.0.0.5", 443))
        self.assertEqual(
            (sub.subdomain, host.hostname, domain.hostname),
            ("db", "db.example.com", "*.example.com"),
        )

    def test_termination(self) -> None:
        """
        C{--crt}, C{--key} and C{--mutual-tls-cas} (or C{--client-cas}) give
        absolute paths, however they were written; C{--terminate-at agent}
        may say so too.
        """
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(os.path.dirname(self.crt))

        definition = self.tunnel_for(
            "8080",
            "--crt",
            os.path.basename(self.crt),
            "--key",
            self.key,
            "--client-cas",
            self.cas,
            "--terminate-at",
            "agent",
        )

        self.assertEqual(
            (definition.crt, definition.key, definition.mutual_tls_cas),
            (self.crt, self.key, self.cas),
        )
        self.assertTrue(os.path.isabs(definition.crt or ""))

    def test_metadata(self) -> None:
        """
        C{--metadata} is kept with the tunnel.
        """
        definition = self.tunnel_for("443", "--metadata", "db primary")

        self.assertEqual(definition.metadata, "db primary")


class TlsUsageErrorTests(TlsCommandTestCase):
    """
    Flags that cannot work together, or name what does not exist.
    """

    def test_url(self) -> None:
        """
        A URL is not an address TLS bytes can be forwarded to as they are.
        """
        self.assertUsageError(
            "'https://localhost:8443' is not a TCP address; a tls tunnel forwards"
            " the TLS bytes as they are: give a port or host:port",
            "https://localhost:8443",
        )

    def test_subdomain_and_hostname(self) -> None:
        """
        A subdomain and a hostname cannot both be asked for.
        """
        self.assertUsageError(
            "give either --subdomain or --hostname, not both",
            "443",
            "--subdomain",
            "a",
            "--hostname",
            "a.example.com",
        )

    def test_crt_without_key(self) -> None:
        """
        C{--crt} alone is refused.
        """
        self.assertUsageError(
            "--crt and --key must be given together", "443", "--crt", self.crt
        )

    def test_missing_file(self) -> None:
        """
        A certificate file that does not exist is named.
        """
        self.assertUsageError(
            "--key: /nonexistent/key.pem does not exist or is not a file",
            "443",
            "--crt",
            self.crt,
            "--key",
            "/nonexistent/key.pem",
        )

    def test_mutual_tls_without_crt(self) -> None:
        """
        Client certificates are checked only where TLS ends, at the agent.
        """
        self.assertUsageError(
            "--mutual-tls-cas needs --crt and --key: client certificates are"
            " checked where TLS ends, at the agent",
            "443",
            "--mutual-tls-cas",
            self.cas,
        )

    def test_both_cas_flags(self) -> None:
        """
        C{--client-cas} is another name for C{--mutual-tls-cas}, not a
        second file.
        """
        self.assertUsageError(
            "--client-cas is another name for --mutual-tls-cas; give one",
            "443",
            "--client-cas",
            self.cas,
            "--mutual-tls-cas",
            self.cas,
        )

    def test_terminate_at_edge(self) -> None:
        """
        The edge does not end TLS for TLS tunnels; the error says what to
        do instead.
        """
        self.assertUsageError(
            "the edge does not end TLS for tls tunnels; use --terminate-at agent"
            " with --crt and --key, or pass TLS through to the upstream (the"
            " default)",
            "443",
            "--terminate-at",
            "edge",
        )

    def test_terminate_at_agent_without_crt(self) -> None:
        """
        C{--terminate-at agent} needs a certificate to end TLS with.
        """
        self.assertUsageError(
            "--terminate-at agent needs --crt and --key",
            "443",
            "--terminate-at",
            "agent",
        )

    def test_terminate_at_upstream_with_crt(self) -> None:
        """
        C{--terminate-at upstream} contradicts a certificate to end TLS with.
        """
        self.assertUsageError(
            "--crt and --key end TLS at the agent; leave them out to pass TLS"
            " through to the upstream",
            "443",
            "--terminate-at",
            "upstream",
            "--crt",
            self.crt,
            "--key",
            self.key,
        )

    def test_terminate_at_unknown(self) -> None:
        """
        Another word for C{--terminate-at} is refused.
        """
        self.assertUsageError(
            "--terminate-at must be agent or upstream, not 'nowhere'",
            "443",
            "--terminate-at",
            "nowhere",
        )
