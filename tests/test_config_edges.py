"""
Tests for the C{edges:} section of C{edge.yml} (L{tunnelkit.config.edges})
and the authtokens' C{labels}: what loads, and the errors, located at the
file, line and key, that stop a bad file from loading.
"""

from tests.test_config_edge import EdgeTestCase
from tunnelkit.config import HostPort

EDGES = """\
authtokens:
  - name: alice
    token: alice-token-1234
    labels: ["app=*", "env=prod"]
edges:
  web:
    type: https
    hostports: ["app.example.com:443", "www.example.com"]
    routes:
      - match_type: exact_path
        match: /health
        backend: {type: http_response, status: 200, body: ok}
      - match: /
        backend: {type: tunnel_group, labels: {app: web}}
  db:
    type: tcp
    hostports: ["tcp.example.com:25000"]
https_listener: tcp:443
"""


class EdgesTests(EdgeTestCase):
    """
    Edges load with their hostports and routes.
    """

    def test_loads(self) -> None:
        """
        Each edge keeps its id, type and hostports, a port left out being
        443; routes keep their order and match types (C{path_prefix} when
        not given).
        """
        config = self.load(EDGES)

        web, db = config.edges
        self.assertEqual(
            (web.id, web.type, web.hostports, db.hostports),
            (
                "web",
                "https",
                (HostPort("app.example.com", 443), HostPort("www.example.com", 443)),
                (HostPort("tcp.example.com", 25000),),
            ),
        )
        self.assertEqual(
            [route.describe() for route in web.routes],
            ["exact_path /health", "path_prefix /"],
        )

    def test_token_labels(self) -> None:
        """
        An authtoken's C{labels} allow exactly the labels they name, or
        any value for C{name=*}.
        """
        [grant] = self.load(EDGES).authtokens

        self.assertEqual(
            [
                grant.may_bind_label("app", "anything"),
                grant.may_bind_label("env", "prod"),
                grant.may_bind_label("env", "dev"),
            ],
            [True, True, False],
        )

    def test_no_edges(self) -> None:
        """
        A file without C{edges} has none.
        """
        self.assertEqual(self.load("").edges, ())


class EdgesErrorTests(EdgeTestCase):
    """
    Bad edges stop the file from loading, with the place named.
    """

    def test_unknown_backend_type(self) -> None:
        """
        An unknown backend type names the edge and the route.
        """
        error = self.fails(
            "edges:\n"
            "  web:\n"
            "    type: https\n"
            "    hostports: [app.example.com]\n"
            "    routes:\n"
            "      - match: /api\n"
            "        backend: {type: canary}\n"
            "https_listener: tcp:443\n"
        )

        self.assertError(
            error,
            "TK_CONFIG_INVALID_VALUE",
            7,
            "edges.web.routes[0].backend.type",
        )
        self.assertIn("edge 'web', route path_prefix /api", error.message)

    def test_bad_option(self) -> None:
        """
        A bad option of a built-in backend is an error at the option.
        """
        error = self.fails(
            "edges:\n"
            "  db:\n"
            "    type: tcp\n"
            "    hostports: ['tcp.example.com:25000']\n"
            "    backend:\n"
            "      type: tunnel_group\n"
            "      balance: random\n"
        )

        self.assertError(
            error, "TK_CONFIG_INVALID_VALUE", 7, "edges.db.backend.balance"
        )
        self.assertIn("round_robin", error.message)

    def test_https_edge_without_listener(self) -> None:
        """
        An https edge in a file without C{https_listener} is an error at its
        type, saying to configure the listener.
        """
        error = self.fails(
            "edges:\n  web:\n    type: https\n    hostports: [app.example.com]\n"
        )

        self.assertError(error, "TK_CONFIG_INVALID_VALUE", 3, "edges.web.type")
        self.assertIn("configure https_listener", error.message)

    def test_tls_edge_without_listener(self) -> None:
        """
        A tls edge needs C{https_listener} too; a tcp edge does not.
        """
        error = self.fails(
            "edges:\n"
            "  db: {type: tcp, hostports: ['tcp.example.com:25000']}\n"
            "  pass: {type: tls, hostports: [tls.example.com]}\n"
        )

        self.assertError(error, "TK_CONFIG_INVALID_VALUE", 3, "edges.pass.type")

    def test_unsatisfiable_labels_allowed(self) -> None:
        """
        A label set no token may bind and no tunnel has loads: it is
        answered C{503} at request time instead.
        """
        config = self.load(
            "edges:\n"
            "  web:\n"
            "    type: https\n"
            "    hostports: [app.example.com]\n"
            "    backend: {type: tunnel_group, labels: {nobody: here}}\n"
            "https_listener: tcp:443\n"
        )

        self.assertEqual(len(config.edges), 1)

    def test_overlapping_hosts(self) -> None:
        """
        Two edges with one host name are an error at the second hostport,
        whatever the ports.
        """
        error = self.fails(
            "edges:\n"
            "  a:\n"
            "    type: https\n"
            "    hostports: [app.example.com]\n"
            "  b:\n"
            "    type: tls\n"
            "    hostports: ['app.example.com:8443']\n"
        )

        self.assertError(error, "TK_CONFIG_INVALID_VALUE", 7, "edges.b.hostports[0]")
        self.assertIn("edge 'a'", error.message)

    def test_overlapping_ports(self) -> None:
        """
        Two TCP edges on one port are an error.
        """
        error = self.fails(
            "edges:\n"
            "  a: {type: tcp, hostports: ['a.example.com:25000']}\n"
            "  b: {type: tcp, hostports: ['b.example.com:25000']}\n"
        )

        self.assertError(error, "TK_CONFIG_INVALID_VALUE", 3, "edges.b.hostports[0]")

    def test_reserved_port(self) -> None:
        """
        A TCP edge may not take a port reserved for an authtoken.
        """
        error = self.fails(
            "authtokens:\n"
            "  - {name: alice, token: alice-token-1, reserved_addrs: ['h:25000']}\n"
            "edges:\n"
            "  a: {type: tcp, hostports: ['a.example.com:25000']}\n"
        )

        self.assertIn("reserved for the authtoken 'alice'", error.message)

    def test_routes_on_tcp(self) -> None:
        """
        Only HTTPS edges have routes.
        """
        error = self.fails(
            "edges:\n"
            "  a:\n"
            "    type: tcp\n"
            "    hostports: ['a.example.com:25000']\n"
            "    routes: []\n"
        )

        self.assertError(error, "TK_CONFIG_UNKNOWN_KEY", 5, "edges.a.routes")

    def test_bad_path(self) -> None:
        """
        A route's match must be a path.
        """
        error = self.fails(
            "edges:\n"
            "  a:\n"
            "    type: https\n"
            "    hostports: [a.example.com]\n"
            "    routes:\n"
            "      - {match: api, backend: {type: tunnel_group}}\n"
        )

        self.assertError(error, "TK_CONFIG_INVALID_VALUE", 6, "edges.a.routes[0].match")

    def test_bad_label_pattern(self) -> None:
        """
        An authtoken label that is not C{name=value}, C{name=*} or C{*} is
        refused.
        """
        error = self.fails(
            "authtokens:\n  - {name: a, token: a-token-123, labels: ['app']}\n"
        )

        self.assertEqual(error.key, "authtokens[0].labels[0]")
