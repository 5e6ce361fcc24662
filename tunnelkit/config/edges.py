"""
The C{edges:} section of C{edge.yml}: public endpoints the operator
defines on the edge, each with host:ports, a type (C{https}, C{tls} or
C{tcp}) and, for HTTPS, routes by path, each ending in a backend.

This module checks the shape of the section and that no two edges share a
host:port; the backends themselves are checked by building them (see
L{tunnelkit.edge.backends}), which L{tunnelkit.config.edge} does once the
whole file is read, so a bad backend stops the file from loading too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tunnelkit.config._errors import UNKNOWN_KEY
from tunnelkit.config._parsing import HostPort
from tunnelkit.config._values import Section
from tunnelkit.config._yaml import YamlMapping, YamlNode, describe
from tunnelkit.hostnames import is_name_or_wildcard

EDGE_TYPES = ("https", "tls", "tcp")
"""The kinds of edge."""

MATCH_TYPES = ("path_prefix", "exact_path")
"""How an HTTPS route matches a request's path."""

DEFAULT_PORTS = {"https": 443, "tls": 443}
"""The port of a host written without one, by edge type."""

_EDGE_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_EDGE_KEYS = ("type", "hostports", "routes", "backend")
_ROUTE_KEYS = ("match_type", "match", "backend")


@dataclass(frozen=True)
class RouteDefinition:
    """
    One route of an HTTPS edge.

    @ivar match_type: C{path_prefix} or C{exact_path}.
    @ivar match: the path, starting with C{/}.
    @ivar backend: the backend's mapping, built later.
    @ivar where: the dotted key of the backend, for errors.
    """

    match_type: str
    match: str
    backend: YamlNode
    where: str

    def describe(self) -> str:
        """
        @return: the route as messages name it, C{path_prefix /api}.
        """
        return f"{self.match_type} {self.match}"


@dataclass(frozen=True)
class EdgeDefinition:
    """
    One edge of C{edge.yml}.

    @ivar id: its id, the key it is written under; the edge's tunnels are
        labeled C{edge=ID} unless its backends ask for other labels.
    @ivar type: C{https}, C{tls} or C{tcp}.
    @ivar hostports: where it is served: the host routed by (C{https},
        C{tls}) and the port (the TCP port listened on for C{tcp}; the
        public port of the HTTPS listener, for display, otherwise).
    @ivar routes: an HTTPS edge's routes, in the order written.
    @ivar backend: the backend of a TCP or TLS edge, or of the requests no
        route of an HTTPS edge matches; C{None} for a tunnel group with the
        labels C{edge=ID}.
    @ivar where: the dotted key of C{backend}, for errors.
    """

    id: str
    type: str
    hostports: tuple[HostPort, ...]
    routes: tuple[RouteDefinition, ...] = ()
    backend: YamlNode | None = None
    where: str = ""


def read_edges(
    root: Section, tcp_reserved: dict[int, str]
) -> tuple[EdgeDefinition, ...]:
    """
    Read the C{edges:} section.

    @param root: the file's top level.
    @param tcp_reserved: ports already reserved for authtokens, to the
        token's name: a TCP edge may not take them.
    @return: the edges, in the order written.
    @raise ConfigError: for a bad edge or route, or two edges that share a
        host:port.
    """
    section = root.child("edges")
    if section is None:
        return ()
    edges = []
    by_host: dict[str, str] = {}
    by_port: dict[int, str] = {}
    for edge_id in section.keys():
        node = section.node(edge_id)
        if not isinstance(node, YamlMapping):
            raise section.key_error(
                edge_id,
                "expected a mapping with type, hostports and routes or backend,"
                f" got {describe(node) if node is not None else 'null'}",
            )
        if not _EDGE_ID.match(edge_id):
            raise section.key_error(
                edge_id,
                f"{edge_id!r} is not an edge id; use lower-case letters, digits,"
                " '-' and '_'",
            )
        edge = _read_edge(edge_id, Section(node, section.dotted(edge_id)))
        for index, hostport in enumerate(edge.hostports):
            _check_overlap(
                section.child(edge_id), edge, index, hostport, by_host, by_port
            )
            if edge.type == "tcp" and hostport.port in tcp_reserved:
                raise _hostport_error(
                    section.child(edge_id),
                    index,
                    f"port {hostport.port} is reserved for the authtoken"
                    f" {tcp_reserved[hostport.port]!r}; give the edge another port",
                )
        edges.append(edge)
    return tuple(edges)


def _read_edge(edge_id: str, edge: Section) -> EdgeDefinition:
    edge.check_keys(_EDGE_KEYS)
    kind = edge.choice("type", EDGE_TYPES, "")
    if not kind:
        raise edge.missing("type", "each edge needs a type: https, tls or tcp")
    hostports = _read_hostports(edge, kind)
    routes: tuple[RouteDefinition, ...] = ()
    if edge.has("routes"):
        if kind != "https":
            raise edge.key_error(
                "routes",
                f"a {kind} edge has no routes; give it one backend instead",
                UNKNOWN_KEY,
            )
        routes = _read_routes(edge)
    return EdgeDefinition(
        id=edge_id,
        type=kind,
        hostports=hostports,
        routes=routes,
        backend=edge.node("backend"),
        where=edge.dotted("backend"),
    )


def _read_hostports(edge: Section, kind: str) -> tuple[HostPort, ...]:
    items = edge.items("hostports")
    if not items:
        raise edge.missing("hostports", "each edge needs at least one host:port")
    hostports = []
    for key, node in items:
        text = edge.text_of(key, node).strip().lower()
        default = DEFAULT_PORTS.get(kind)
        hostport = edge.host_port_of(key, node, default_port=default)
        host = hostport.host.rstrip(".")
        if kind != "tcp" and not is_name_or_wildcard(host):
            raise edge.invalid(
                key,
                node,
                f"{text!r} does not start with a host name such as"
                " app.example.com; an edge routes by name",
            )
        hostports.append(HostPort(host, hostport.port))
    return tuple(hostports)


def _read_routes(edge: Section) -> tuple[RouteDefinition, ...]:
    routes = []
    seen: set[tuple[str, str]] = set()
    for key, node in edge.items("routes") or []:
        if not isinstance(node, YamlMapping):
            raise edge.invalid(
                key, node, f"expected a route mapping, got {describe(node)}"
            )
        route = Section(node, edge.dotted(key))
        route.check_keys(_ROUTE_KEYS)
        match_type = route.choice("match_type", MATCH_TYPES, "path_prefix")
        match = route.nonempty_string("match")
        if match is None:
            raise route.missing("match", "each route needs a path to match, /...")
        if not match.startswith("/") or any(c.isspace() for c in match):
            raise route.key_error(
                "match", f"{match!r} is not a path; write one such as /api"
            )
        if (match_type, match) in seen:
            raise route.key_error(
                "match",
                f"another route of this edge already matches {match_type}" f" {match}",
            )
        seen.add((match_type, match))
        backend = route.require("backend", "; each route ends in a backend")
        routes.append(
            RouteDefinition(match_type, match, backend, route.dotted("backend"))
        )
    return tuple(routes)


def _check_overlap(
    edge_section: Section | None,
    edge: EdgeDefinition,
    index: int,
    hostport: HostPort,
    by_host: dict[str, str],
    by_port: dict[int, str],
) -> None:
    if edge.type == "tcp":
        owner = by_port.get(hostport.port)
        if owner is not None:
            raise _hostport_error(
                edge_section,
                index,
                f"port {hostport.port} is already a hostport of the edge"
                f" {owner!r}; hostports may not overlap",
            )
        by_port[hostport.port] = edge.id
        return
    owner = by_host.get(hostport.host)
    if owner is not None:
        raise _hostport_error(
            edge_section,
            index,
            f"{hostport.host} is already a hostport of the edge {owner!r};"
            " hostports may not overlap",
        )
    by_host[hostport.host] = edge.id


def _hostport_error(
    edge_section: Section | None, index: int, message: str
) -> Exception:
    assert edge_section is not None
    items = edge_section.items("hostports") or []
    key, node = items[index]
    return edge_section.invalid(key, node, message)
