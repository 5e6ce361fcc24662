"""
Tests for labeled tunnels on the edge: C{bind_labels} requests of agent
sessions, the tunnel groups they join and leave, the authtokens' label
permissions, and loading the edge definitions again.
"""

import os

from twisted.logger import LogLevel, globalLogPublisher
from zope.interface.verify import verifyObject

from tests.test_edge_session import (
    ALICE_TOKEN,
    BOB_TOKEN,
    GRANTS,
    PUBLIC_HOST,
    EdgeReactor,
    EdgeTestCase,
    disconnect,
    make_edge,
)
from tunnelkit.config import load_edge_config
from tunnelkit.config.edge import AuthtokenGrant
from tunnelkit.control.messages import (
    Bind,
    BindLabels,
    BindLabelsResp,
    HttpOpts,
    Unbind,
)
from tunnelkit.edge.routing import label_set
from tunnelkit.edge.server import EdgeServer
from tunnelkit.edge.sni import TERMINATE
from tunnelkit.interfaces import IHttpRouter, IPassthrough, ISniRouter

WEB = label_set({"app": "web", "env": "prod"})


def labeled(binding_id: str = "web", *labels: str) -> BindLabels:
    """
    @return: a request to bind a labeled tunnel.
    """
    return BindLabels(
        id=binding_id,
        name=binding_id,
        labels=labels or ("env=prod", "app=web"),
        forwards_to="http://localhost:8000",
    )


class BindLabelsTests(EdgeTestCase):
    """
    Agents offer labeled tunnels, which join the group of their labels.
    """

    def setUp(self) -> None:
        alice, bob = GRANTS[0], GRANTS[1]
        grants = (
            AuthtokenGrant(
                alice.name,
                alice.reserved_addrs,
                token_digest=alice.token_digest,
                labels=("app=*", "env=prod"),
            ),
            bob,
        )
        self.edge = make_edge(authtokens=grants)
        self.reactor = self.edge.reactor

    def test_router(self) -> None:
        """
        The edge server is what its HTTP listeners and its HTTPS port route
        with.
        """
        self.assertTrue(verifyObject(IHttpRouter, self.edge))
        self.assertTrue(verifyObject(ISniRouter, self.edge))

    def test_tls_edge_destination(self) -> None:
        """
        A TLS edge's host name leads the HTTPS port to a destination that
        provides L{IPassthrough}; an HTTPS edge's host is terminated.
        """
        config = load_edge_config(
            self.write_file(
                "edges:\n"
                "  a: {type: tls, hostports: [a.example.com]}\n"
                "  b: {type: https, hostports: [b.example.com]}\n"
                "https_listener: tcp:443\n"
            )
        )
        edge = make_edge(edges=config.edges)

        destination = edge.route_sni("a.example.com")

        self.assertTrue(verifyObject(IPassthrough, destination))
        self.assertEqual(destination.name, "a.example.com")  # type: ignore
        self.assertIs(edge.route_sni("b.example.com"), TERMINATE)

    def write_file(self, text: str) -> str:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "edge.yml")
        with open(path, "w", encoding="utf-8") as output:
            output.write(text)
        return path

    def test_joins_group(self) -> None:
        """
        A labeled tunnel joins the group of exactly its labels, and the
        reply names them sorted.
        """
        session, _, _ = self.authed()

        reply = session.bind_labels(labeled())

        [member] = self.edge.groups.members(WEB)
        self.assertEqual(
            (reply, member.session, member.name),
            (BindLabelsResp(id="web", labels=("app=web", "env=prod")), session, "web"),
        )

    def test_two_agents_one_group(self) -> None:
        """
        Tunnels of two sessions with the same labels share a group.
        """
        first, _, _ = self.authed()
        second, _, _ = self.authed()

        first.bind_labels(labeled())
        second.bind_labels(labeled())

        self.assertEqual(
            [m.session for m in self.edge.groups.members(WEB)], [first, second]
        )

    def test_session_end_leaves_at_once(self) -> None:
        """
        When a session ends its tunnels leave their groups at once, with no
        grace period.
        """
        session, _, _ = self.authed()
        session.bind_labels(labeled())

        disconnect(session)

        self.assertEqual(self.edge.groups.members(WEB), [])

    def test_unbind(self) -> None:
        """
        Unbinding a labeled tunnel takes it out of its group.
        """
        session, _, _ = self.authed()
        session.bind_labels(labeled())

        session.unbind(Unbind(id="web"))

        self.assertEqual(self.edge.groups.members(WEB), [])

    def test_label_not_allowed(self) -> None:
        """
        A label the authtoken may not bind is refused, and nothing joins.
        """
        session, _, _ = self.authed()

        error = self.refused(labeled("web", "env=dev"), session.bind_labels)

        self.assertEqual(error.code, "TK_LABELS_NOT_ALLOWED")
        self.assertEqual(len(self.edge.groups), 0)

    def test_token_without_labels(self) -> None:
        """
        An authtoken with no C{labels} may bind no labeled tunnel.
        """
        session, _, _ = self.authed(token=BOB_TOKEN)

        error = self.refused(labeled(), session.bind_labels)

        self.assertEqual(error.code, "TK_LABELS_NOT_ALLOWED")

    def test_bad_labels(self) -> None:
        """
        Labels that are not C{name=value}, or none, are refused.
        """
        session, _, _ = self.authed()

        codes = [
            self.refused(labeled("a", "app"), session.bind_labels).code,
            self.refused(
                BindLabels(id="b", name="b", labels=()), session.bind_labels
            ).code,
        ]

        self.assertEqual(codes, ["TK_LABELS_INVALID", "TK_LABELS_INVALID"])

    def test_id_taken(self) -> None:
        """
        A second binding with the same id is refused.
        """
        session, _, _ = self.authed(token=ALICE_TOKEN)
        session.bind_labels(labeled())

        error = self.refused(labeled(), session.bind_labels)

        self.assertEqual(error.code, "TK_BINDING_EXISTS")


class ReloadTests(EdgeTestCase):
    """
    The edge definitions are loaded again without a restart.
    """

    def write(self, text: str) -> str:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "edge.yml")
        with open(path, "w", encoding="utf-8") as output:
            output.write(text)
        return path

    def test_new_edges_served(self) -> None:
        """
        After a reload the new edges are served, the old ones are gone, and
        the new TCP edge's port is listened on.
        """
        first = load_edge_config(
            self.write(
                "edges: {a: {type: https, hostports: [a.example.com]}}\n"
                "https_listener: tcp:443\n"
            )
        )
        edge = make_edge(edges=first.edges)
        second = load_edge_config(
            self.write(
                "edges:\n"
                "  b: {type: https, hostports: [b.example.com]}\n"
                "  c: {type: tcp, hostports: ['c.example.com:20005']}\n"
                "https_listener: tcp:443\n"
            )
        )

        edge.reload_edges(second)

        self.assertIsNone(edge.edges.https.lookup("a.example.com"))
        self.assertEqual(edge.edges.https.lookup("b.example.com").id, "b")  # type: ignore
        self.assertEqual(list(edge.tcp_edges.ports), [20005])
        self.assertIn(20005, edge.ports.reserved)

    def test_other_settings_warned(self) -> None:
        """
        A changed setting outside C{edges} is not applied, and a warning
        says a restart is needed for it.
        """
        edge = make_edge()
        changed = load_edge_config(self.write("domain: other.example.com\n"))
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)

        edge.reload_edges(changed)

        warnings = [e for e in events if e.get("log_level") == LogLevel.warn]
        self.assertEqual(len(warnings), 1)
        self.assertIn("restart", warnings[0]["log_format"])
        self.assertNotEqual(edge.config.domain, "other.example.com")

    def test_changed_settings_named(self) -> None:
        """
        The warning names the top-level settings that changed, and only
        those.
        """
        first = load_edge_config(
            self.write("domain: a.example.com\nsession_grace: 60s\nlog: stdout\n")
        )
        edge = EdgeServer(first, EdgeReactor())
        changed = load_edge_config(
            self.write("domain: b.example.com\nsession_grace: 1m\nlog: stderr\n")
        )
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)

        edge.reload_edges(changed)

        [warning] = [e for e in events if e.get("log_level") == LogLevel.warn]
        self.assertIn("{settings}", warning["log_format"])
        self.assertEqual(warning["settings"], "domain, public_host, log")


class EdgeNamesTests(EdgeTestCase):
    """
    The host names of edges are not given to tunnels.
    """

    def test_edge_host_refused(self) -> None:
        """
        An HTTP tunnel asking for an HTTPS edge's host by subdomain is
        refused with C{TK_HOSTNAME_RESERVED}, naming the edge.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "edge.yml")
        with open(path, "w", encoding="utf-8") as output:
            output.write(
                f"edges: {{web: {{type: https, hostports: [app.{PUBLIC_HOST}]}}}}\n"
                "https_listener: tcp:443\n"
            )
        self.edge = make_edge(edges=load_edge_config(path).edges)
        self.edge.names.listeners["https"] = object()
        session, _, _ = self.authed()
        request = Bind(id="w", name="w", proto="http", opts=HttpOpts(subdomain="app"))

        error = self.refused(request, session.bind)

        self.assertEqual(error.code, "TK_HOSTNAME_RESERVED")
        self.assertIn("'web'", error.message)
