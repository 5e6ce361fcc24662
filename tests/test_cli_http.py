"""
Tests for C{tunnelkit http}: its flags, the tunnel definition they make,
their usage errors, and its help; and for http tunnels started by name from
the config file.
"""

import sys
from io import StringIO
from typing import Any

from tunnelkit import cli
from tunnelkit.agent.tunnel import Tunnel
from tunnelkit.config import BasicAuthCredential, TunnelDefinition, UpstreamAddress
from tests.test_cli import CommandTestCase, IdleReactor

HTTP_AGENT = """\
version: "2"
server_addr: edge.example.com:4443
tunnels:
  web:
    proto: http
    addr: https://localhost:8443
    host_header: rewrite
    basic_auth: ["ann:password1"]
    schemes: [https]
"""


class HttpCommandTestCase(CommandTestCase):
    """
    Run C{tunnelkit http} up to the reactor, with an empty config file.
    """

    def setUp(self) -> None:
        super().setUp()
        self.config = self.write("tunnelkit.yml", 'version: "2"\n')
        self.patch(cli, "install_logs", lambda *args, **kw: None)
        self.reactor = IdleReactor()

    def tunnel_for(self, *argv: str) -> TunnelDefinition:
        """
        Run C{tunnelkit http ARGV...}, which must succeed.

        @return: the one tunnel it starts.
        """
        status = self.run_command(
            "http", "--config", self.config, *argv, reactor=self.reactor
        )

        self.assertEqual((status, self.stderr.getvalue()), (0, ""))
        [start] = self.reactor.when_running
        app = start.__self__  # type: ignore[attr-defined]
        [definition] = app.tunnel_definitions
        self.assertIsInstance(definition, TunnelDefinition)
        return definition  # type: ignore[no-any-return]

    def assertUsageError(self, error: str, *argv: str) -> None:
        """
        Assert that C{tunnelkit http ARGV...} exits 2 with C{error}, the
        hint for C{http}, and nothing else; the reactor is not run.
        """
        status = self.run_command(
            "http", "--config", self.config, *argv, reactor=self.reactor
        )

        self.assertEqual(status, 2)
        self.assertEqual(
            self.stderr.getvalue(),
            f"ERROR: {error}\nRun 'tunnelkit http --help' for usage.\n",
        )
        self.assertEqual((self.stdout.getvalue(), self.reactor.runs), ("", 0))


class HttpDefinitionTests(HttpCommandTestCase):
    """
    The tunnel C{tunnelkit http} starts.
    """

    def test_port(self) -> None:
        """
        A port is C{http://localhost:PORT}, in a tunnel named
        C{command_line} with ngrok's defaults: both schemes, the public Host
        preserved, inspection on.
        """
        definition = self.tunnel_for("8080")

        self.assertEqual(
            definition,
            TunnelDefinition(
                name="command_line",
                proto="http",
                addr=UpstreamAddress("http", "localhost", 8080),
                inspect=True,
                schemes=("http", "https"),
                host_header="preserve",
            ),
        )

    def test_host_port(self) -> None:
        """
        C{host:port} is an http upstream on that host.
        """
        definition = self.tunnel_for("10.0.0.5:8000")

        self.assertEqual(definition.addr, UpstreamAddress("http", "10.0.0.5", 8000))

    def test_http_url(self) -> None:
        """
        An C{http://} URL without a port means port 80.
        """
        definition = self.tunnel_for("http://site.dev")

        self.assertEqual(definition.addr, UpstreamAddress("http", "site.dev", 80))

    def test_https_url(self) -> None:
        """
        An C{https://} URL is an https upstream.
        """
        definition = self.tunnel_for("https://localhost:8443")

        self.assertEqual(definition.addr, UpstreamAddress("https", "localhost", 8443))

    def test_file_url(self) -> None:
        """
        A C{file:///} URL of an existing directory is served by the file
        server.
        """
        definition = self.tunnel_for("file://" + self.directory)

        self.assertEqual(
            definition.addr, UpstreamAddress("file", "", None, self.directory)
        )

    def test_host_header_rewrite(self) -> None:
        """
        C{--host-header rewrite} is kept for the bind request.
        """
        definition = self.tunnel_for("--host-header", "rewrite", "8080")

        self.assertEqual(definition.host_header, "rewrite")

    def test_host_header_literal(self) -> None:
        """
        C{--host-header=VALUE} is kept as written.
        """
        definition = self.tunnel_for("--host-header=App.internal:9000", "8080")

        self.assertEqual(definition.host_header, "App.internal:9000")

    def test_subdomain(self) -> None:
        """
        C{--subdomain} is asked for, in lower case.
        """
        definition = self.tunnel_for("--subdomain", "MyApp", "8080")

        self.assertEqual((definition.subdomain, definition.hostname), ("myapp", None))

    def test_hostname(self) -> None:
        """
        C{--hostname} is asked for.
        """
        definition = self.tunnel_for("--hostname", "app.example.com", "8080")

        self.assertEqual(definition.hostname, "app.example.com")

    def test_domain(self) -> None:
        """
        C{--domain}, ngrok v3's name, is the same as C{--hostname}.
        """
        definition = self.tunnel_for("--domain", "*.example.com", "8080")

        self.assertEqual(definition.hostname, "*.example.com")

    def test_basic_auth_repeated(self) -> None:
        """
        C{--basic-auth} may be repeated, and C{--auth} is ngrok v2's name for
        it; the users keep their order.
        """
        definition = self.tunnel_for(
            "--basic-auth", "ann:password1", "--auth", "bob:pass:word2", "8080"
        )

        self.assertEqual(
            definition.basic_auth,
            (
                BasicAuthCredential("ann", "password1"),
                BasicAuthCredential("bob", "pass:word2"),
            ),
        )

    def test_scheme(self) -> None:
        """
        One C{--scheme} gives that scheme only.
        """
        definition = self.tunnel_for("--scheme", "https", "8080")

        self.assertEqual(definition.schemes, ("https",))

    def test_schemes_ordered(self) -> None:
        """
        Both schemes, in any order and repeated, give C{(http, https)}.
        """
        definition = self.tunnel_for(
            "--scheme", "https", "--scheme", "http", "--scheme", "https", "8080"
        )

        self.assertEqual(definition.schemes, ("http", "https"))

    def test_bind_tls(self) -> None:
        """
        C{--bind-tls} gives ngrok v2's schemes: true is https, false is http,
        both is both.
        """
        schemes = []
        for word in ("true", "false", "both"):
            self.setUp()
            schemes.append(self.tunnel_for("--bind-tls", word, "8080").schemes)

        self.assertEqual(schemes, [("https",), ("http",), ("http", "https")])

    def test_inspect_false(self) -> None:
        """
        C{--inspect=false} is stored on the definition.
        """
        definition = self.tunnel_for("--inspect=false", "8080")

        self.assertFalse(definition.inspect)

    def test_metadata(self) -> None:
        """
        C{--metadata} is attached to the tunnel.
        """
        definition = self.tunnel_for("--metadata", "build 7", "8080")

        self.assertEqual(definition.metadata, "build 7")

    def test_flags_after_address(self) -> None:
        """
        Flags may follow the address, as ngrok users write them.
        """
        definition = self.tunnel_for("8080", "--subdomain", "app", "--scheme=https")

        self.assertEqual(
            (definition.subdomain, definition.schemes), ("app", ("https",))
        )


class HttpUsageErrorTests(HttpCommandTestCase):
    """
    Bad flags and addresses exit 2 with a sentence and the hint.
    """

    def test_no_address(self) -> None:
        """
        The address is required.
        """
        self.assertUsageError("Wrong number of arguments.")

    def test_bad_address(self) -> None:
        """
        An address that is neither a port, C{host:port} nor a URL is named.
        """
        self.assertUsageError(
            "'nowhere' has no port; write it as host:port; give a port, host:port,"
            " or an http://, https:// or file:/// URL",
            "nowhere",
        )

    def test_unsupported_scheme(self) -> None:
        """
        A URL scheme other than http, https and file is refused.
        """
        status = self.run_command("http", "--config", self.config, "ftp://host:21")

        self.assertEqual(status, 2)
        self.assertIn("the scheme 'ftp' is not supported", self.stderr.getvalue())

    def test_relative_file_url(self) -> None:
        """
        A file URL must carry an absolute path.
        """
        status = self.run_command("http", "--config", self.config, "file://srv/www")

        self.assertEqual(status, 2)
        self.assertIn("file:///absolute/path", self.stderr.getvalue())

    def test_missing_directory(self) -> None:
        """
        A file URL of a path that does not exist is refused before starting.
        """
        missing = self.directory + "/missing"

        self.assertUsageError(
            f"{missing} does not exist; give the absolute path of a directory or"
            " file to serve",
            "file://" + missing,
        )

    def test_short_password(self) -> None:
        """
        A password under 8 characters is refused as the config refuses it,
        without writing the password.
        """
        self.assertUsageError(
            "--basic-auth: the password for 'ann' must be at least 8 characters",
            "--basic-auth",
            "ann:short",
            "8080",
        )
        self.assertNotIn("short", self.stderr.getvalue().replace("ann", ""))

    def test_credential_without_colon(self) -> None:
        """
        A credential must be C{user:password}.
        """
        self.assertUsageError(
            "--basic-auth: write the credential as user:password",
            "--basic-auth",
            "justauser",
            "8080",
        )

    def test_bad_scheme(self) -> None:
        """
        C{--scheme} takes http or https only.
        """
        self.assertUsageError(
            "--scheme must be http or https, not 'tcp'", "--scheme", "tcp", "8080"
        )

    def test_bind_tls_and_scheme(self) -> None:
        """
        C{--bind-tls} and C{--scheme} cannot be given together.
        """
        self.assertUsageError(
            "--bind-tls and --scheme choose the same thing; give one of them",
            "--bind-tls",
            "true",
            "--scheme",
            "https",
            "8080",
        )

    def test_bad_bind_tls(self) -> None:
        """
        C{--bind-tls} takes true, false or both.
        """
        self.assertUsageError(
            "--bind-tls must be true, false or both, not 'yes'",
            "--bind-tls",
            "yes",
            "8080",
        )

    def test_bad_inspect(self) -> None:
        """
        C{--inspect} takes true or false.
        """
        self.assertUsageError(
            "--inspect must be true or false, not 'no'", "--inspect", "no", "8080"
        )

    def test_hostname_and_domain(self) -> None:
        """
        C{--hostname} and C{--domain} are the same flag, given once.
        """
        self.assertUsageError(
            "--domain is another name for --hostname; give one of them",
            "--hostname",
            "a.example.com",
            "--domain",
            "b.example.com",
            "8080",
        )

    def test_subdomain_and_hostname(self) -> None:
        """
        A subdomain and a host name cannot both be asked for.
        """
        self.assertUsageError(
            "give either --subdomain or --domain, not both",
            "--subdomain",
            "app",
            "--domain",
            "b.example.com",
            "8080",
        )

    def test_bad_subdomain(self) -> None:
        """
        A subdomain must be a DNS name.
        """
        self.assertUsageError(
            "--subdomain: 'my_app' is not a valid DNS name",
            "--subdomain",
            "my_app",
            "8080",
        )

    def test_bad_hostname(self) -> None:
        """
        A host name must be a DNS name, possibly a wildcard.
        """
        self.assertUsageError(
            "--hostname: 'app..example.com' is not a valid DNS name",
            "--hostname",
            "app..example.com",
            "8080",
        )

    def test_bad_host_header(self) -> None:
        """
        A host header with a space cannot be sent.
        """
        self.assertUsageError(
            "--host-header: 'a b' is not a host header; give preserve, rewrite or"
            " a host such as app.internal:8080",
            "--host-header",
            "a b",
            "8080",
        )


class HttpHelpTests(CommandTestCase):
    """
    C{tunnelkit http --help}.
    """

    def help_text(self) -> str:
        """
        @return: what C{tunnelkit http --help} prints, after checking that
            it exits 0.
        """
        self.patch(sys, "stdout", StringIO())

        status = self.run_command("http", "--help")

        self.assertEqual(status, 0)
        return self.stdout.getvalue()

    def test_synopsis_and_flags(self) -> None:
        """
        The help names the command's arguments and every flag.
        """
        text = self.help_text()

        self.assertTrue(
            text.startswith("tunnelkit http [options] PORT|HOST:PORT|URL\n"), text
        )
        for flag in (
            "--host-header=",
            "--subdomain=",
            "--hostname=",
            "--domain=",
            "--basic-auth=",
            "--auth=",
            "--scheme=",
            "--bind-tls=",
            "--inspect=",
            "--metadata=",
            "--config=",
            "--authtoken=",
        ):
            self.assertIn(flag, text)

    def test_address_forms(self) -> None:
        """
        The help explains the address forms and the password rule.
        """
        text = " ".join(self.help_text().split())

        self.assertIn("file:///ABSOLUTE/PATH serves that directory or file", text)
        self.assertIn("without verifying its certificate", text)
        self.assertIn("8 characters or more", text)

    def test_other_commands_synopsis(self) -> None:
        """
        Every command's help starts with its own synopsis alone.
        """
        self.patch(sys, "stdout", StringIO())

        self.run_command("tcp", "--help")

        self.assertTrue(
            self.stdout.getvalue().startswith(
                "tunnelkit tcp [options] PORT|HOST:PORT\n"
            )
        )

    def test_version_flag(self) -> None:
        """
        C{--version} on a command prints tunnelkit's version, not Twisted's.
        """
        self.patch(sys, "stdout", StringIO())

        status = self.run_command("http", "--version")

        self.assertEqual(status, 0)
        self.assertTrue(self.stdout.getvalue().startswith("tunnelkit version "))


class ConfigHttpTunnelTests(HttpCommandTestCase):
    """
    http tunnels defined in the config file start by name.
    """

    def test_start_by_name(self) -> None:
        """
        C{start web} starts the config's http tunnel, whose bind request
        asks for an http binding with its options.
        """
        config = self.write("http.yml", HTTP_AGENT)

        status = self.run_command(
            "start", "--config", config, "web", reactor=self.reactor
        )

        self.assertEqual((status, self.stderr.getvalue()), (0, ""))
        [start] = self.reactor.when_running
        [definition] = start.__self__.tunnel_definitions  # type: ignore
        request = Tunnel(definition).bind_request()
        opts: Any = request.opts
        self.assertEqual(
            (request.proto, opts.host_header, opts.schemes, opts.basic_auth),
            ("http", "localhost:8443", ("https",), ("ann:password1",)),
        )
