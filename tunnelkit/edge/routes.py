"""
The edges of C{edge.yml} as the listeners use them: which edge serves a
host name or a TCP port, and which route of an HTTPS edge serves a path.

L{build_edges} turns the definitions into L{EdgeRoutes}, building every
backend; the result is replaced whole when the definitions are loaded
again. Lookups cost a dictionary probe per label of a host, one per TCP
port, and for a path one probe for the exact routes plus one per distinct
length of the prefix routes; none of them looks at tunnels.
"""

from dataclasses import dataclass, field
from typing import Iterable, Sequence

from twisted.logger import Logger

from tunnelkit.config._parsing import HostPort
from tunnelkit.config.edges import EdgeDefinition
from tunnelkit.edge.backends import BUILT_IN, BuildContext, build_backend
from tunnelkit.edge.hosts import HostTable
from tunnelkit.edge.routing import BackendRequest, Decision, TunnelGroups, label_set
from tunnelkit.edge.backends import TunnelGroupBackend
from tunnelkit.interfaces import IBackend, IBackendFactory

_log = Logger()


@dataclass(eq=False)
class Route:
    """
    One route of an edge: where its requests go.

    @ivar edge: the edge's id.
    @ivar description: how messages name it: C{path_prefix /api}, or
        C{default} for an edge's own backend.
    @ivar backend: what decides where each request goes.
    """

    edge: str
    description: str
    backend: IBackend

    def ask(self, request: BackendRequest) -> Decision | None:
        """
        Ask the route's backend where a request goes.

        @return: the decision, or C{None} when the backend raised, which is
            logged here with its traceback, as the
            L{tunnelkit.interfaces.IBackend} contract says.
        """
        try:
            decision: Decision = self.backend.choose(request)
        except Exception:
            _log.failure(
                "the backend of edge {edge} route {route} raised instead of"
                " deciding",
                edge=self.edge,
                route=self.description,
            )
            return None
        return decision

    @property
    def key(self) -> tuple[str, str]:
        """
        @return: what tells routes apart, the edge and the description: the
            same route loaded again (on C{SIGHUP}) has the same key.
        """
        return (self.edge, self.description)


class RouteTable:
    """
    The routes of one HTTPS edge by path: an exact path first, then the
    longest matching prefix, then the edge's default route.
    """

    def __init__(self, default: Route | None = None) -> None:
        self.default = default
        self._exact: dict[str, Route] = {}
        self._prefixes: dict[str, Route] = {}
        self._lengths: list[int] = []

    def add(self, match_type: str, match: str, route: Route) -> None:
        """
        Add a route; a later one for the same match replaces the earlier.

        @param match_type: C{exact_path} or C{path_prefix}.
        @param match: the path.
        """
        if match_type == "exact_path":
            self._exact[match] = route
            return
        self._prefixes[match] = route
        self._lengths = sorted({len(prefix) for prefix in self._prefixes}, reverse=True)

    def match(self, path: str) -> Route | None:
        """
        @param path: a request's path, without its query.
        @return: the route serving it, or C{None}.
        """
        route = self._exact.get(path)
        if route is not None:
            return route
        prefixes = self._prefixes
        for length in self._lengths:
            if length <= len(path):
                route = prefixes.get(path[:length])
                if route is not None:
                    return route
        return self.default


@dataclass(eq=False)
class ServedEdge:
    """
    One edge, ready to serve.

    @ivar id: its id.
    @ivar type: C{https}, C{tls} or C{tcp}.
    @ivar hostports: where it is served.
    @ivar routes: its routes by path (an HTTPS edge's); a TCP or TLS edge
        has only the default route.
    """

    id: str
    type: str
    hostports: tuple[HostPort, ...]
    routes: RouteTable

    @property
    def labels(self) -> dict[str, str]:
        """
        @return: its own labels, C{{"edge": ID}}.
        """
        return {"edge": self.id}


@dataclass
class EdgeRoutes:
    """
    Every edge by what it is found by.

    @ivar https: HTTPS edges by host name.
    @ivar tls: TLS edges by host name (the SNI name).
    @ivar tcp: TCP edges by port.
    """

    https: HostTable[ServedEdge] = field(default_factory=HostTable)
    tls: HostTable[ServedEdge] = field(default_factory=HostTable)
    tcp: dict[int, ServedEdge] = field(default_factory=dict)

    def edges(self) -> list[ServedEdge]:
        """
        @return: every edge, each once.
        """
        seen: dict[str, ServedEdge] = {}
        for edge in [*self.https.values(), *self.tls.values(), *self.tcp.values()]:
            seen.setdefault(edge.id, edge)
        return list(seen.values())


def build_edges(
    definitions: Sequence[EdgeDefinition],
    groups: TunnelGroups,
    factories: dict[str, IBackendFactory] | None = None,
) -> EdgeRoutes:
    """
    Build every edge and its backends.

    @param groups: the tunnel groups the backends look in.
    @param factories: the kinds of backend by type; the built-in ones if
        not given.
    @raise ConfigError: for a backend that cannot be built.
    """
    kinds = factories if factories is not None else dict(BUILT_IN)
    table = EdgeRoutes()
    for definition in definitions:
        edge = _build_edge(definition, groups, kinds)
        for hostport in definition.hostports:
            if definition.type == "tcp":
                table.tcp[hostport.port] = edge
            elif definition.type == "tls":
                table.tls.add(hostport.host, edge)
            else:
                table.https.add(hostport.host, edge)
    return table


def _build_edge(
    definition: EdgeDefinition,
    groups: TunnelGroups,
    factories: dict[str, IBackendFactory],
) -> ServedEdge:
    edge_id = definition.id
    place = f"edge {edge_id!r}"
    if definition.backend is None:
        backend: IBackend = TunnelGroupBackend(groups, label_set({"edge": edge_id}))
    else:
        context = BuildContext(groups, edge_id, place, factories)
        backend = build_backend(definition.backend, definition.where, context)
    routes = RouteTable(Route(edge_id, "default", backend))
    for route in definition.routes:
        context = BuildContext(
            groups, edge_id, f"{place}, route {route.describe()}", factories
        )
        built = build_backend(route.backend, route.where, context)
        routes.add(
            route.match_type, route.match, Route(edge_id, route.describe(), built)
        )
    return ServedEdge(edge_id, definition.type, definition.hostports, routes)


def tcp_ports(definitions: Iterable[EdgeDefinition]) -> frozenset[int]:
    """
    @return: the ports TCP edges listen on.
    """
    return frozenset(
        hostport.port
        for definition in definitions
        if definition.type == "tcp"
        for hostport in definition.hostports
    )
