"""
Tests for HTTP binds at the edge: which names sessions get, who may take
which name, the URLs in the reply, and names held through a session's grace
period.
"""

from typing import Any

from twisted.internet.address import IPv4Address

from tests.test_edge_session import (
    ALICE_TOKEN,
    BOB_TOKEN,
    GRACE,
    PUBLIC_HOST,
    SECRET,
    EdgeTestCase,
    RecordedListener,
    disconnect,
    make_edge,
)
from tunnelkit.config import AuthtokenGrant, token_digest
from tunnelkit.control.messages import Bind, HttpOpts, Unbind
from tunnelkit.edge.hosts import RANDOM_NAME_LENGTH
from tunnelkit.edge.server import EdgeServer

HTTP_GRANTS = (
    AuthtokenGrant(
        name="alice",
        hostnames=("app.example.org", "*.alice.example.org"),
        token_digest=token_digest(ALICE_TOKEN),
    ),
    AuthtokenGrant(name="bob", token_digest=token_digest(BOB_TOKEN)),
)


def http_bind(binding_id: str = "web", **opts: Any) -> Bind:
    """
    @return: an HTTP bind request with the given options.
    """
    return Bind(
        id=binding_id,
        name=binding_id,
        proto="http",
        forwards_to="http://localhost:8080",
        opts=HttpOpts(**opts),
    )


def serve_http(edge: EdgeServer, http_port: int = 80, https_port: int = 443) -> None:
    """
    Give an edge that is not started public listeners, as if it were.
    """
    edge.http_ports.update(
        http=RecordedListener(IPv4Address("TCP", "0.0.0.0", http_port)),
        https=RecordedListener(IPv4Address("TCP", "0.0.0.0", https_port)),
    )
    edge.names.secret = SECRET


class HttpBindTests(EdgeTestCase):
    """
    HTTP binds get names under the edge's domain or names their authtoken
    may take.
    """

    def setUp(self) -> None:
        self.edge = make_edge(authtokens=HTTP_GRANTS)
        self.reactor = self.edge.reactor
        serve_http(self.edge)

    def test_random_name(self) -> None:
        """
        A bind that asks for no name gets a random one under the domain, with
        an https and an http URL, and is routed there.
        """
        session, _, _ = self.authed()

        reply = session.bind(http_bind())

        name = reply.url.removeprefix("https://")
        label, _, domain = name.partition(".")
        self.assertEqual((len(label), domain), (RANDOM_NAME_LENGTH, PUBLIC_HOST))
        self.assertEqual(reply.urls, (f"https://{name}", f"http://{name}"))
        self.assertEqual(reply.proto, "http")
        self.assertIs(self.edge.hosts.lookup(name), session.bindings["web"])

    def test_random_name_stable_for_session(self) -> None:
        """
        The same session binding again after a reconnect gets the same
        random name; another session gets another.
        """
        first, _, auth = self.authed()
        name = first.bind(http_bind()).url
        disconnect(first)

        again, _, _ = self.authed(session_id=auth.session_id)
        other, _, _ = self.authed()

        self.assertEqual(again.bind(http_bind()).url, name)
        self.assertNotEqual(other.bind(http_bind()).url, name)

    def test_ports_in_urls(self) -> None:
        """
        Listeners on other ports than 80 and 443 put the port in the URLs.
        """
        serve_http(self.edge, 8080, 8443)
        session, _, _ = self.authed()

        reply = session.bind(http_bind(subdomain="web"))

        self.assertEqual(
            reply.urls,
            (
                f"https://web.{PUBLIC_HOST}:8443",
                f"http://web.{PUBLIC_HOST}:8080",
            ),
        )

    def test_schemes(self) -> None:
        """
        A bind for one scheme gets that URL only; a scheme the edge does not
        serve is refused with C{TK_SCHEME_UNAVAILABLE}.
        """
        session, _, _ = self.authed()
        del self.edge.http_ports["http"]

        reply = session.bind(http_bind("a", subdomain="a", schemes=("https",)))
        error = self.refused(http_bind("b", schemes=("http",)), session.bind)

        self.assertEqual(reply.urls, (f"https://a.{PUBLIC_HOST}",))
        self.assertEqual(error.code, "TK_SCHEME_UNAVAILABLE")

    def test_subdomain_taken(self) -> None:
        """
        A subdomain bound by one session is refused to another with
        C{TK_HOSTNAME_TAKEN}.
        """
        alice, _, _ = self.authed()
        bob, _, _ = self.authed(BOB_TOKEN)
        alice.bind(http_bind(subdomain="web"))

        error = self.refused(http_bind(subdomain="web"), bob.bind)

        self.assertEqual(error.code, "TK_HOSTNAME_TAKEN")

    def test_same_name_two_tunnels(self) -> None:
        """
        One session cannot bind one name for two tunnels.
        """
        session, _, _ = self.authed()
        session.bind(http_bind("a", subdomain="web"))

        error = self.refused(http_bind("b", subdomain="web"), session.bind)

        self.assertEqual(error.code, "TK_HOSTNAME_TAKEN")

    def test_hostname_allowed(self) -> None:
        """
        A token binds the hostnames and wildcards its grant lists.
        """
        session, _, _ = self.authed()

        exact = session.bind(http_bind("a", hostname="app.example.org"))
        wild = session.bind(http_bind("b", hostname="*.alice.example.org"))

        self.assertEqual(exact.url, "https://app.example.org")
        self.assertEqual(wild.url, "https://*.alice.example.org")
        self.assertIs(
            self.edge.hosts.lookup("x.y.alice.example.org"), session.bindings["b"]
        )

    def test_hostname_not_allowed(self) -> None:
        """
        A hostname outside the grant's list and the domain is refused with
        C{TK_HOSTNAME_NOT_ALLOWED}.
        """
        bob, _, _ = self.authed(BOB_TOKEN)

        error = self.refused(http_bind(hostname="app.example.org"), bob.bind)

        self.assertEqual(error.code, "TK_HOSTNAME_NOT_ALLOWED")

    def test_reserved_for_other(self) -> None:
        """
        A subdomain covered by another token's hostnames is refused with
        C{TK_HOSTNAME_RESERVED}.
        """
        edge = make_edge(
            authtokens=(
                AuthtokenGrant(
                    "alice",
                    hostnames=(f"*.{PUBLIC_HOST}",),
                    token_digest=token_digest(ALICE_TOKEN),
                ),
                HTTP_GRANTS[1],
            )
        )
        serve_http(edge)
        bob, _, _ = self.authed(BOB_TOKEN, edge=edge)

        error = self.refused(http_bind(subdomain="web"), bob.bind)

        self.assertEqual(error.code, "TK_HOSTNAME_RESERVED")

    def test_most_specific_reservation_wins(self) -> None:
        """
        An exact name listed for one token cannot be taken by another token
        whose wildcard also covers it; the wildcard's token keeps the rest.
        """
        edge = make_edge(
            authtokens=(
                AuthtokenGrant(
                    "alice",
                    hostnames=("app.example.org",),
                    token_digest=token_digest(ALICE_TOKEN),
                ),
                AuthtokenGrant(
                    "bob",
                    hostnames=("*.example.org",),
                    token_digest=token_digest(BOB_TOKEN),
                ),
            )
        )
        serve_http(edge)
        bob, _, _ = self.authed(BOB_TOKEN, edge=edge)

        error = self.refused(http_bind("a", hostname="app.example.org"), bob.bind)
        other = bob.bind(http_bind("b", hostname="www.example.org"))

        self.assertEqual(error.code, "TK_HOSTNAME_RESERVED")
        self.assertEqual(other.url, "https://www.example.org")

    def test_host_header_must_be_one_token(self) -> None:
        """
        A host header with spaces, line breaks or non-ASCII characters is
        refused, so nothing can be written into requests through it.
        """
        session, _, _ = self.authed()

        for value in ("x\r\nX-Injected: 1", "a b", "caf\u00e9"):
            error = self.refused(http_bind(host_header=value), session.bind)

            self.assertEqual(error.code, "TK_HOST_HEADER_INVALID", value)

    def test_invalid_names(self) -> None:
        """
        Names that are not DNS names are refused with C{TK_HOSTNAME_INVALID}.
        """
        session, _, _ = self.authed()

        for opts in ({"subdomain": "a b"}, {"hostname": "x..y"}):
            error = self.refused(http_bind(**opts), session.bind)

            self.assertEqual(error.code, "TK_HOSTNAME_INVALID", opts)

    def test_short_password(self) -> None:
        """
        A basic-auth password under 8 characters is refused.
        """
        session, _, _ = self.authed()

        error = self.refused(http_bind(basic_auth=("alice:short",)), session.bind)

        self.assertEqual(error.code, "TK_BASIC_AUTH_INVALID")

    def test_no_listeners(self) -> None:
        """
        An edge without HTTP listeners refuses HTTP binds.
        """
        self.edge.http_ports.clear()
        session, _, _ = self.authed()

        error = self.refused(http_bind(), session.bind)

        self.assertEqual(error.code, "TK_PROTO_UNSUPPORTED")

    def test_unbind(self) -> None:
        """
        Unbinding frees the name at once.
        """
        alice, _, _ = self.authed()
        bob, _, _ = self.authed(BOB_TOKEN)
        alice.bind(http_bind(subdomain="web"))

        alice.unbind(Unbind(id="web"))

        self.assertIsNone(self.edge.hosts.lookup(f"web.{PUBLIC_HOST}"))
        self.assertEqual(
            bob.bind(http_bind(subdomain="web")).url, f"https://web.{PUBLIC_HOST}"
        )


class HttpGraceTests(EdgeTestCase):
    """
    A dropped session's names stay held through the grace period.
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
        first.bind(http_bind(subdomain="web"))
        disconnect(first)
        held = self.edge.hosts.lookup(f"web.{PUBLIC_HOST}")

        again, _, resumed = self.authed(session_id=auth.session_id)
        reply = again.bind(http_bind(subdomain="web"))

        self.assertIsNotNone(held)
        assert held is not None
        self.assertIsNone(held.session)
        self.assertTrue(resumed.resumed)
        self.assertEqual(reply.url, f"https://web.{PUBLIC_HOST}")
        self.assertIs(self.edge.hosts.lookup(f"web.{PUBLIC_HOST}").session, again)

    def test_other_token_waits(self) -> None:
        """
        Another token cannot take the name during the grace period, and can
        once it is over.
        """
        alice, _, _ = self.authed()
        alice.bind(http_bind(subdomain="web"))
        disconnect(alice)
        bob, _, _ = self.authed(BOB_TOKEN)

        error = self.refused(http_bind(subdomain="web"), bob.bind)
        self.reactor.advance(GRACE)
        reply = bob.bind(http_bind(subdomain="web"))

        self.assertEqual(error.code, "TK_HOSTNAME_TAKEN")
        self.assertEqual(reply.url, f"https://web.{PUBLIC_HOST}")

    def test_same_token_takes_over(self) -> None:
        """
        A new session of the same token takes a name held in its grace
        period, as an agent restarted with a new session would.
        """
        first, _, _ = self.authed()
        first.bind(http_bind(subdomain="web"))
        disconnect(first)
        second, _, _ = self.authed()

        reply = second.bind(http_bind(subdomain="web"))

        self.assertEqual(reply.url, f"https://web.{PUBLIC_HOST}")

    def test_released_after_grace(self) -> None:
        """
        When the grace period ends the name is no longer routed.
        """
        session, _, _ = self.authed()
        session.bind(http_bind(subdomain="web"))
        disconnect(session)

        self.reactor.advance(GRACE)

        self.assertIsNone(self.edge.hosts.lookup(f"web.{PUBLIC_HOST}"))
