"""
Tests for TLS binds at the edge: the names they get by the same rules as
HTTP names, one name space shared with HTTP tunnels, the C{tls://} URL,
what the HTTPS port does with each server name, and names held through a
session's grace period.
"""

from typing import Any

from twisted.internet.testing import StringTransport

from tests.test_edge_http_binds import HTTP_GRANTS, http_bind, serve_http
from tests.test_edge_session import (
    BOB_TOKEN,
    GRACE,
    PUBLIC_HOST,
    EdgeTestCase,
    disconnect,
    make_edge,
)
from tunnelkit.control.messages import Bind, TlsOpts, Unbind
from tunnelkit.edge.http import HttpIngressFactory
from tunnelkit.edge.hosts import RANDOM_NAME_LENGTH
from tunnelkit.edge.sni import TERMINATE, TlsBinding

HOST = PUBLIC_HOST.encode("ascii")


def tls_bind(binding_id: str = "secure", **opts: Any) -> Bind:
    """
    @return: a TLS bind request with the given options.
    """
    return Bind(
        id=binding_id,
        name=binding_id,
        proto="tls",
        forwards_to="localhost:8443",
        opts=TlsOpts(**opts),
    )


class TlsBindTests(EdgeTestCase):
    """
    TLS binds get names as HTTP binds do, from the same name space.
    """

    def setUp(self) -> None:
        self.edge = make_edge(authtokens=HTTP_GRANTS)
        self.reactor = self.edge.reactor
        serve_http(self.edge)

    def test_random_name(self) -> None:
        """
        A bind that asks for no name gets a random one under the domain and
        one C{tls://} URL, and its name passes through.
        """
        session, _, _ = self.authed()

        reply = session.bind(tls_bind())

        name = reply.url.removeprefix("tls://")
        label, _, domain = name.partition(".")
        self.assertEqual((len(label), domain), (RANDOM_NAME_LENGTH, PUBLIC_HOST))
        self.assertEqual((reply.urls, reply.proto), ((reply.url,), "tls"))
        self.assertIs(self.edge.route_sni(name), session.bindings["secure"])

    def test_port_in_url(self) -> None:
        """
        An HTTPS port other than 443 is written in the URL.
        """
        serve_http(self.edge, 8080, 8443)
        session, _, _ = self.authed()

        reply = session.bind(tls_bind(subdomain="db"))

        self.assertEqual(reply.url, f"tls://db.{PUBLIC_HOST}:8443")

    def test_hostname_rules(self) -> None:
        """
        A hostname covered by the token's patterns is bound, wildcard
        included; a name outside the domain that the token's patterns do
        not cover, even one another token may take, is refused with
        C{TK_HOSTNAME_NOT_ALLOWED}.
        """
        alice, _, _ = self.authed()
        bob, _, _ = self.authed(BOB_TOKEN)

        exact = alice.bind(tls_bind("a", hostname="app.example.org"))
        wild = alice.bind(tls_bind("b", hostname="*.alice.example.org"))
        not_allowed = self.refused(tls_bind(hostname="db.example.net"), bob.bind)
        others = self.refused(tls_bind(hostname="app.example.org"), bob.bind)

        self.assertEqual(
            (exact.url, wild.url),
            ("tls://app.example.org", "tls://*.alice.example.org"),
        )
        self.assertEqual(
            (not_allowed.code, others.code), ("TK_HOSTNAME_NOT_ALLOWED",) * 2
        )
        self.assertIs(self.edge.route_sni("x.alice.example.org"), alice.bindings["b"])

    def test_invalid_name(self) -> None:
        """
        A subdomain that is not a DNS name is refused with
        C{TK_HOSTNAME_INVALID}.
        """
        session, _, _ = self.authed()

        error = self.refused(tls_bind(subdomain="no_way"), session.bind)

        self.assertEqual(error.code, "TK_HOSTNAME_INVALID")

    def test_http_name_taken_by_tls(self) -> None:
        """
        A name one session bound for a TLS tunnel is refused to another
        session's HTTP tunnel, and the other way round.
        """
        alice, _, _ = self.authed()
        bob, _, _ = self.authed(BOB_TOKEN)
        alice.bind(tls_bind(subdomain="db"))
        bob.bind(http_bind(subdomain="web"))

        http_error = self.refused(http_bind("w2", subdomain="db"), bob.bind)
        tls_error = self.refused(tls_bind("t2", subdomain="web"), alice.bind)

        self.assertEqual((http_error.code, tls_error.code), ("TK_HOSTNAME_TAKEN",) * 2)

    def test_same_session_two_kinds(self) -> None:
        """
        One agent cannot bind the same name for an HTTP and a TLS tunnel.
        """
        session, _, _ = self.authed()
        session.bind(http_bind(subdomain="web"))

        error = self.refused(tls_bind(subdomain="web"), session.bind)

        self.assertEqual(error.code, "TK_HOSTNAME_TAKEN")
        self.assertIn("'web'", error.message)

    def test_route_sni(self) -> None:
        """
        The HTTPS port passes a TLS tunnel's name through, terminates an
        HTTP tunnel's, and has nowhere to send any other; the most specific
        binding wins whatever its kind.
        """
        alice, _, _ = self.authed()
        alice.bind(http_bind("web", hostname="*.alice.example.org"))
        alice.bind(tls_bind("db", hostname="db.alice.example.org"))

        routes = {
            name: self.edge.route_sni(name)
            for name in (
                "db.alice.example.org",
                "www.alice.example.org",
                "nobody.example.org",
            )
        }

        self.assertIsInstance(routes["db.alice.example.org"], TlsBinding)
        self.assertIs(routes["www.alice.example.org"], TERMINATE)
        self.assertIsNone(routes["nobody.example.org"])

    def test_https_edge_terminated(self) -> None:
        """
        The host of an HTTPS edge of C{edge.yml} is terminated, even when a
        TLS tunnel binds the same name: the edge's routes come first.
        """
        session, _, _ = self.authed()
        session.bind(tls_bind(hostname="api.alice.example.org"))
        self.edge.edges.https.add("api.alice.example.org", object())  # type: ignore[arg-type]

        route = self.edge.route_sni("api.alice.example.org")

        self.assertIs(route, TERMINATE)

    def test_http_request_for_tls_name(self) -> None:
        """
        A plain HTTP request for a TLS tunnel's name is answered C{404}:
        the HTTP ingress does not serve TLS tunnels.
        """
        session, _, _ = self.authed()
        session.bind(tls_bind(subdomain="db"))
        ingress = HttpIngressFactory(self.edge, "http").buildProtocol(None)
        transport = StringTransport()
        ingress.makeConnection(transport)

        ingress.dataReceived(b"GET / HTTP/1.1\r\nHost: db.%s\r\n\r\n" % HOST)

        self.assertTrue(transport.value().startswith(b"HTTP/1.1 404 "))
        self.assertIn(b"TK_TUNNEL_NOT_FOUND", transport.value())

    def test_no_https_listener(self) -> None:
        """
        An edge without an HTTPS port refuses TLS binds with
        C{TK_PROTO_UNSUPPORTED}, saying which setting is missing.
        """
        del self.edge.http_ports["https"]
        session, _, _ = self.authed()

        error = self.refused(tls_bind(), session.bind)

        self.assertEqual(error.code, "TK_PROTO_UNSUPPORTED")
        self.assertIn("https_listener", error.message)

    def test_unbind(self) -> None:
        """
        Unbinding frees the name at once.
        """
        session, _, _ = self.authed()
        session.bind(tls_bind(subdomain="db"))

        session.unbind(Unbind(id="secure"))

        self.assertIsNone(self.edge.route_sni(f"db.{PUBLIC_HOST}"))


class TlsGraceTests(EdgeTestCase):
    """
    A dropped session's TLS names stay held through the grace period.
    """

    def setUp(self) -> None:
        self.edge = make_edge(authtokens=HTTP_GRANTS)
        self.reactor = self.edge.reactor
        serve_http(self.edge)

    def test_offline_then_resumed(self) -> None:
        """
        While the session is gone the name stays bound, offline; the same
        session binding again takes it back.
        """
        first, _, auth = self.authed()
        first.bind(tls_bind(subdomain="db"))
        disconnect(first)
        held = self.edge.route_sni(f"db.{PUBLIC_HOST}")

        again, _, _ = self.authed(session_id=auth.session_id)
        again.bind(tls_bind(subdomain="db"))

        assert isinstance(held, TlsBinding)
        self.assertIsNone(held.session)
        self.assertIs(
            self.edge.route_sni(f"db.{PUBLIC_HOST}"), again.bindings["secure"]
        )

    def test_other_token_waits(self) -> None:
        """
        Another token cannot take the name, even for an HTTP tunnel, until
        the grace period is over; then the name is free.
        """
        alice, _, _ = self.authed()
        alice.bind(tls_bind(subdomain="db"))
        disconnect(alice)
        bob, _, _ = self.authed(BOB_TOKEN)

        error = self.refused(http_bind(subdomain="db"), bob.bind)
        self.reactor.advance(GRACE)
        freed = self.edge.route_sni(f"db.{PUBLIC_HOST}")
        reply = bob.bind(http_bind(subdomain="db"))

        self.assertEqual(error.code, "TK_HOSTNAME_TAKEN")
        self.assertIsNone(freed)
        self.assertEqual(reply.url, f"https://db.{PUBLIC_HOST}")
