"""
Tests for L{tunnelkit.edge.routing}, L{tunnelkit.edge.backends} and
L{tunnelkit.edge.routes}: the tunnel groups and their balancing, the
built-in backends, building backends from C{edge.yml} mappings, and
matching routes by path.
"""

import random
from typing import Any

import twisted.plugin
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tunnelkit.config import ConfigError
from tunnelkit.config._yaml import parse_yaml
from tunnelkit.edge import backends
from tunnelkit.edge.backends import (
    BUILT_IN,
    BackendBuilder,
    BuildContext,
    FailoverBackend,
    HttpResponseBackend,
    StaticAddressBackend,
    TunnelGroupBackend,
    WeightedBackend,
    build_backend,
)
from tunnelkit.edge.routes import Route, RouteTable
from tunnelkit.edge.routing import (
    FAILURE_HOLD,
    BackendRequest,
    Balancer,
    FixedResponse,
    LabeledBinding,
    StaticAddress,
    TunnelGroups,
    TunnelTarget,
    Unavailable,
    label_set,
)
from tunnelkit.interfaces import IBackend, IBackendBuilder, IBackendFactory

WEB = label_set({"app": "web"})
API = label_set({"app": "api"})


def request(time: float = 100.0, **headers: str) -> BackendRequest:
    """
    @return: a request to the edge C{web} at C{time}.
    """
    return BackendRequest(
        protocol="https",
        host="app.example.com",
        path="/",
        client="192.0.2.1:5000",
        edge="web",
        labels={"edge": "web"},
        time=time,
        headers=tuple((name.lower(), value) for name, value in headers.items()),
    )


def tunnel(name: str, labels: Any = WEB, online: bool = True) -> LabeledBinding:
    """
    @return: a labeled tunnel, online (with a stand-in session) or not.
    """
    return LabeledBinding(
        binding_id=name,
        name=name,
        labels=labels,
        forwards_to="http://localhost:8000",
        session_id="s-" + name,
        owner="alice",
        session=object() if online else None,  # type: ignore[arg-type]
    )


@implementer(IBackend)
class Fixed:
    """
    A backend that always decides the same, counting its calls.
    """

    def __init__(self, decision: Any) -> None:
        self.decision = decision
        self.calls = 0

    def choose(self, request: BackendRequest) -> Any:
        self.calls += 1
        return self.decision


class TunnelGroupsTests(SynchronousTestCase):
    """
    Tunnels are grouped by their exact label sets.
    """

    def test_exact_labels(self) -> None:
        """
        A group holds the tunnels with exactly its labels, in the order
        they joined, and not those with more labels.
        """
        groups = TunnelGroups()
        first, second = tunnel("a"), tunnel("b")
        wider = tunnel("c", label_set({"app": "web", "env": "prod"}))
        for member in (first, second, wider):
            groups.add(member)

        self.assertEqual(groups.members(WEB), [first, second])

    def test_remove(self) -> None:
        """
        A removed tunnel leaves its group; removing it again does nothing,
        and an emptied group is gone.
        """
        groups = TunnelGroups()
        member = tunnel("a")
        groups.add(member)

        groups.remove(member)
        groups.remove(member)

        self.assertEqual((groups.members(WEB), len(groups)), ([], 0))


class BalancerTests(SynchronousTestCase):
    """
    A group's connections are spread round robin or by least connections,
    past tunnels that are offline or just failed.
    """

    def test_round_robin(self) -> None:
        """
        Round robin takes each tunnel in turn.
        """
        members = [tunnel("a"), tunnel("b"), tunnel("c")]
        balancer = Balancer("round_robin")

        picked = [balancer.pick(members, 0.0) for _ in range(6)]

        self.assertEqual([m.name for m in picked if m], list("abcabc"))

    def test_skips_failed(self) -> None:
        """
        A tunnel that failed is skipped for L{FAILURE_HOLD} seconds, then
        taken again.
        """
        members = [tunnel("a"), tunnel("b")]
        members[0].failed_at = 10.0
        balancer = Balancer("round_robin")

        during = {balancer.pick(members, 11.0).name for _ in range(4)}  # type: ignore
        after = {
            balancer.pick(members, 10.0 + FAILURE_HOLD).name  # type: ignore
            for _ in range(4)
        }

        self.assertEqual((during, after), ({"b"}, {"a", "b"}))

    def test_skips_offline(self) -> None:
        """
        A tunnel whose session is gone is never picked; with none healthy
        the pick is C{None}.
        """
        members = [tunnel("a", online=False)]

        self.assertIsNone(Balancer().pick(members, 0.0))

    def test_least_connections(self) -> None:
        """
        Least connections takes the tunnel with the fewest open
        connections, ties in round-robin order.
        """
        members = [tunnel("a"), tunnel("b"), tunnel("c")]
        members[0].open_connections = 3
        members[1].open_connections = 1
        members[2].open_connections = 1
        balancer = Balancer("least_connections")

        first = balancer.pick(members, 0.0)
        second = balancer.pick(members, 0.0)

        self.assertEqual([first.name, second.name], ["b", "c"])  # type: ignore


class BuiltInBackendTests(SynchronousTestCase):
    """
    The built-in backends decide as documented, and provide L{IBackend}.
    """

    def test_provide_interface(self) -> None:
        """
        Every built-in backend and the test double provide L{IBackend};
        every built-in factory provides L{IBackendFactory}.
        """
        groups = TunnelGroups()
        backends = [
            TunnelGroupBackend(groups, WEB),
            WeightedBackend([(Fixed(None), 1)]),
            FailoverBackend([]),
            HttpResponseBackend(FixedResponse(200)),
            StaticAddressBackend(StaticAddress("127.0.0.1", 80)),
            Fixed(None),
        ]

        for backend in backends:
            self.assertTrue(verifyObject(IBackend, backend))
        for factory in BUILT_IN.values():
            self.assertTrue(verifyObject(IBackendFactory, factory))

    def test_tunnel_group_targets(self) -> None:
        """
        A tunnel group sends requests to its tunnels in turn.
        """
        groups = TunnelGroups()
        members = [tunnel("a"), tunnel("b")]
        for member in members:
            groups.add(member)
        backend = TunnelGroupBackend(groups, WEB)

        decisions = [backend.choose(request()) for _ in range(2)]

        self.assertEqual(decisions, [TunnelTarget(m) for m in members])

    def test_tunnel_group_empty(self) -> None:
        """
        With no tunnel of its labels online, a tunnel group is unavailable,
        and says which labels to start a tunnel with.
        """
        backend = TunnelGroupBackend(TunnelGroups(), API)

        decision = backend.choose(request())

        self.assertIsInstance(decision, Unavailable)
        self.assertIn("tunnelkit tunnel --label app=api", decision.sentence)

    def test_weighted_split(self) -> None:
        """
        Over 1,000 requests, a 70/30 weighted backend sends each child a
        share within five standard deviations of its weight (about 72
        requests either way).
        """
        first, second = Fixed(FixedResponse(201)), Fixed(FixedResponse(202))
        backend = WeightedBackend([(first, 70), (second, 30)], random.Random(1))

        for _ in range(1000):
            backend.choose(request())

        spread = 5 * (1000 * 0.7 * 0.3) ** 0.5
        self.assertLess(abs(first.calls - 700), spread)
        self.assertEqual(first.calls + second.calls, 1000)

    def test_weighted_zero(self) -> None:
        """
        A child of weight 0 gets nothing.
        """
        never, always = Fixed(FixedResponse(201)), Fixed(FixedResponse(202))
        backend = WeightedBackend([(never, 0), (always, 1)], random.Random(2))

        for _ in range(50):
            backend.choose(request())

        self.assertEqual((never.calls, always.calls), (0, 50))

    def test_weighted_passes_over_unavailable(self) -> None:
        """
        A child with no target is passed over for another.
        """
        empty = Fixed(Unavailable("none"))
        backend = WeightedBackend(
            [(empty, 10000), (Fixed(FixedResponse(202)), 1)], random.Random(3)
        )

        self.assertEqual(backend.choose(request()), FixedResponse(202))

    def test_failover_order(self) -> None:
        """
        A failover backend takes the first child that has a target, and
        does not ask the later ones.
        """
        later = Fixed(FixedResponse(203))
        backend = FailoverBackend(
            [Fixed(Unavailable("none")), Fixed(FixedResponse(202)), later]
        )

        self.assertEqual(
            (backend.choose(request()), later.calls), (FixedResponse(202), 0)
        )

    def test_failover_all_unavailable(self) -> None:
        """
        When no child has a target, the last child's reason is given.
        """
        backend = FailoverBackend([Fixed(Unavailable("a")), Fixed(Unavailable("b"))])

        self.assertEqual(backend.choose(request()), Unavailable("b"))

    def test_failover_to_second_group(self) -> None:
        """
        With the first group empty, a failover of two tunnel groups sends
        requests to the second.
        """
        groups = TunnelGroups()
        backup = tunnel("backup", API)
        groups.add(backup)
        backend = FailoverBackend(
            [TunnelGroupBackend(groups, WEB), TunnelGroupBackend(groups, API)]
        )

        self.assertEqual(backend.choose(request()), TunnelTarget(backup))


def mapping(text: str) -> Any:
    """
    @return: the located mapping of a YAML document.
    """
    return parse_yaml(text, "edge.yml")


def build(text: str, factories: Any = None, groups: Any = None) -> Any:
    """
    Build the backend a YAML mapping describes, for the edge C{web}.
    """
    context = BuildContext(
        groups or TunnelGroups(),
        "web",
        "edge 'web', route path_prefix /",
        factories or dict(BUILT_IN),
    )
    return build_backend(mapping(text), "edges.web.backend", context)


class BuildBackendTests(SynchronousTestCase):
    """
    Backends are built from their mappings; bad ones are configuration
    errors located at the mapping, naming the edge and route.
    """

    def test_http_response(self) -> None:
        """
        An http_response mapping gives its status, headers and body.
        """
        backend = build(
            "type: http_response\nstatus: 404\nheaders: {X-A: b}\nbody: gone\n"
        )

        self.assertEqual(
            backend.choose(request()), FixedResponse(404, (("X-A", "b"),), b"gone")
        )

    def test_static_address(self) -> None:
        """
        A static_address mapping gives its host, port and TLS.
        """
        backend = build("type: static_address\naddress: 127.0.0.1:8443\ntls: true\n")

        self.assertEqual(
            backend.choose(request()), StaticAddress("127.0.0.1", 8443, True)
        )

    def test_default_labels(self) -> None:
        """
        A tunnel group without labels asks for the edge's own label.
        """
        groups = TunnelGroups()
        member = tunnel("a", label_set({"edge": "web"}))
        groups.add(member)

        backend = build("type: tunnel_group\n", groups=groups)

        self.assertEqual(backend.choose(request()), TunnelTarget(member))

    def test_nested(self) -> None:
        """
        Weighted and failover backends build their children.
        """
        backend = build(
            "type: failover\n"
            "backends:\n"
            "  - {type: tunnel_group, labels: [app=none]}\n"
            "  - type: weighted\n"
            "    backends:\n"
            "      - {weight: 1, backend: {type: http_response, status: 204}}\n"
        )

        self.assertEqual(backend.choose(request()), FixedResponse(204))

    def test_unknown_type(self) -> None:
        """
        An unknown type is an error at the type's line that names the edge,
        the route and the types known.
        """
        error = self.assertRaises(ConfigError, build, "status: 200\ntype: teapot\n")

        self.assertEqual((error.line, error.key), (2, "edges.web.backend.type"))
        self.assertIn("edge 'web', route path_prefix /", error.message)
        self.assertIn("tunnel_group", error.message)

    def test_missing_type(self) -> None:
        """
        A mapping without a type is an error.
        """
        error = self.assertRaises(ConfigError, build, "status: 200\n")

        self.assertEqual(error.code, "TK_CONFIG_MISSING_KEY")

    def test_bad_option(self) -> None:
        """
        An unknown option is an error that names it.
        """
        error = self.assertRaises(ConfigError, build, "type: tunnel_group\nlabel: x\n")

        self.assertIn("unknown option 'label'", error.message)

    def test_bad_child_located(self) -> None:
        """
        An error in a child is located at the child.
        """
        error = self.assertRaises(
            ConfigError,
            build,
            "type: weighted\nbackends:\n  - weight: 5\n    backend: {type: nope}\n",
        )

        self.assertEqual(
            (error.line, error.key),
            (4, "edges.web.backend.backends[0].backend.type"),
        )

    def test_weight_range(self) -> None:
        """
        A weight over 10000 is refused.
        """
        error = self.assertRaises(
            ConfigError,
            build,
            "type: weighted\nbackends:\n  - {weight: 10001, backend: {type:"
            " tunnel_group}}\n",
        )

        self.assertIn("from 0 to 10000", error.message)

    def test_builder_provides_interface(self) -> None:
        """
        What factories build with provides L{IBackendBuilder}.
        """
        context = BuildContext(TunnelGroups(), "web", "edge 'web'")
        builder = BackendBuilder(mapping("type: x\n"), "edges.web.backend", context)

        self.assertTrue(verifyObject(IBackendBuilder, builder))

    def test_plugin_factory(self) -> None:
        """
        A factory given among the kinds builds the backends of its type
        from their plain options.
        """

        @implementer(IBackendFactory)
        class Echo:
            type = "echo"

            def build(self, options: Any, builder: Any) -> Any:
                return Fixed(FixedResponse(200, body=options["say"].encode()))

        factories = {**BUILT_IN, "echo": Echo()}

        backend = build("type: echo\nsay: hi\n", factories)

        self.assertTrue(verifyObject(IBackendFactory, factories["echo"]))
        self.assertEqual(backend.choose(request()).body, b"hi")

    def test_plugin_builds_no_backend(self) -> None:
        """
        A factory that returns something other than an L{IBackend} is a
        configuration error, not a failure at request time.
        """

        @implementer(IBackendFactory)
        class Broken:
            type = "broken"

            def build(self, options: Any, builder: Any) -> Any:
                return object()

        broken = Broken()

        error = self.assertRaises(
            ConfigError, build, "type: broken\n", {**BUILT_IN, "broken": broken}
        )

        self.assertTrue(verifyObject(IBackendFactory, broken))
        self.assertIn("built no IBackend", error.message)

    def test_plugin_option_located(self) -> None:
        """
        A plugin's error that names one of its options points at that
        option's line, not the backend's.
        """

        @implementer(IBackendFactory)
        class Picky:
            type = "picky"

            def build(self, options: Any, builder: Any) -> Any:
                raise ValueError("header must be a header field name")

        error = self.assertRaises(
            ConfigError,
            build,
            "type: picky\nvalue: 'yes'\nheader: 'X Canary'\n",
            {**BUILT_IN, "picky": Picky()},
        )

        self.assertEqual((error.line, error.key), (3, "edges.web.backend.header"))

    def test_unnamed_option_at_backend(self) -> None:
        """
        An error that names none of the options points at the backend.
        """

        @implementer(IBackendFactory)
        class Vague:
            type = "vague"

            def build(self, options: Any, builder: Any) -> Any:
                raise ValueError("something is wrong")

        error = self.assertRaises(
            ConfigError,
            build,
            "type: vague\nvalue: 1\n",
            {**BUILT_IN, "vague": Vague()},
        )

        self.assertEqual((error.line, error.key), (1, "edges.web.backend"))


class PluginDiscoveryTests(SynchronousTestCase):
    """
    Plugins are found with Twisted's plugin system; one whose type cannot
    be used is left out with a warning, logged once.
    """

    def test_taken_type_warned_once(self) -> None:
        """
        A plugin with a built-in's type is left out, with one warning
        naming its class, however often the plugins are looked for.
        """

        @implementer(IBackendFactory)
        class Shadow:
            type = "tunnel_group"

            def build(self, options: Any, builder: Any) -> Any:
                raise AssertionError("never built")

        shadow = Shadow()
        self.patch(twisted.plugin, "getPlugins", lambda interface: [shadow])
        self.patch(backends, "_warned", set())

        with capturedLogs() as events:
            first = backends.backend_factories()
            backends.backend_factories()

        warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
        self.assertIs(first["tunnel_group"], BUILT_IN["tunnel_group"])
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn(f"{__name__}.{Shadow.__qualname__}", warnings[0])
        self.assertNotIn(" at 0x", warnings[0])


class RouteTableTests(SynchronousTestCase):
    """
    Paths match an exact route first, then the longest prefix, then the
    default.
    """

    def setUp(self) -> None:
        self.default = Route("web", "default", Fixed(None))
        self.table = RouteTable(self.default)
        self.api = Route("web", "path_prefix /api", Fixed(None))
        self.api_v2 = Route("web", "path_prefix /api/v2", Fixed(None))
        self.health = Route("web", "exact_path /api/health", Fixed(None))
        self.table.add("path_prefix", "/api", self.api)
        self.table.add("path_prefix", "/api/v2", self.api_v2)
        self.table.add("exact_path", "/api/health", self.health)

    def test_longest_prefix(self) -> None:
        """
        The longest matching prefix wins.
        """
        self.assertEqual(
            [self.table.match(p) for p in ("/api/x", "/api/v2/x", "/apix")],
            [self.api, self.api_v2, self.api],
        )

    def test_exact(self) -> None:
        """
        An exact path wins over a prefix, and only for that path.
        """
        self.assertEqual(
            [self.table.match(p) for p in ("/api/health", "/api/healthz")],
            [self.health, self.api],
        )

    def test_default(self) -> None:
        """
        A path no route matches gets the default route.
        """
        self.assertIs(self.table.match("/other"), self.default)
