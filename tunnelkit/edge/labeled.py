"""
The edges of C{edge.yml} and the labeled tunnels they route to, as the
edge server holds them: the tunnel groups agents bind labeled tunnels
into, the edges built from the definitions with their backends, the
listeners of the TCP edges, what the HTTPS port and the host name checks
ask of them, and loading the definitions again (on C{SIGHUP}).
"""

import signal
from dataclasses import fields, replace
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from tunnelkit.config import ConfigError, EdgeConfig, load_edge_config
from tunnelkit.config.edge import EDGE_KEYS
from tunnelkit.control.messages import Bind, BindLabels
from tunnelkit.edge.backends import backend_factories, read_labels
from tunnelkit.edge.routes import EdgeRoutes, build_edges, tcp_ports
from tunnelkit.edge.routing import LabeledBinding, TunnelGroups
from tunnelkit.edge.sni import TERMINATE
from tunnelkit.edge.tcpedges import TcpEdgeListeners, TlsEdgeDestination
from tunnelkit.errors import TunnelkitError

if TYPE_CHECKING:
    from tunnelkit.edge.server import EdgeServer
    from tunnelkit.edge.session import EdgeSession

_log = Logger()


class EdgeDefinitions:
    """
    The edges of C{edge.yml} and the labeled tunnels online.

    @ivar groups: the labeled tunnels online, by label set; kept across
        reloads.
    @ivar edges: the edges, built with their backends; replaced whole on a
        reload.
    @ivar listeners: the listening ports of the TCP edges.
    """

    def __init__(self, server: "EdgeServer") -> None:
        self.server = server
        self.groups = TunnelGroups()
        self.edges: EdgeRoutes = build_edges(
            server.config.edges, self.groups, backend_factories()
        )
        self.listeners = TcpEdgeListeners(server)

    # Labeled tunnels

    def bind(self, session: "EdgeSession", request: BindLabels) -> LabeledBinding:
        """
        Add a labeled tunnel to the group of its labels.

        @raise TunnelkitError: C{TK_LABELS_INVALID} for labels that are not
            C{name=value} strings, each name once; C{TK_LABELS_NOT_ALLOWED}
            for a label the authtoken may not bind.
        """
        assert session.session_id is not None and session.grant is not None
        grant = session.grant
        labels = parse_label_strings(request.labels)
        for name, value in sorted(labels):
            if not grant.may_bind_label(name, value):
                raise TunnelkitError(
                    "TK_LABELS_NOT_ALLOWED",
                    f"The authtoken {grant.name!r} may not bind the label"
                    f" {name}={value}; ask the edge's operator to list it under"
                    " the token's labels in edge.yml.",
                )
        binding = LabeledBinding(
            binding_id=request.id,
            name=request.name,
            labels=labels,
            forwards_to=request.forwards_to,
            session_id=session.session_id,
            owner=grant.name,
            session=session,
        )
        self.groups.add(binding)
        return binding

    def unbind(self, binding: LabeledBinding) -> None:
        """
        Take a labeled tunnel out of its group at once.
        """
        binding.session = None
        self.groups.remove(binding)

    # What the HTTPS port and the name checks ask

    def route_sni(self, name: str) -> object | None:
        """
        Say where a connection to the HTTPS port goes when an edge serves
        its server name: an HTTPS edge's host is terminated, as its routes
        are served before any tunnel's; a TLS edge's host is passed through
        to the target its backend picks.

        @return: L{TERMINATE}, a L{TlsEdgeDestination}, or C{None} when no
            edge serves the name.
        """
        if self.edges.https.lookup(name) is not None:
            return TERMINATE
        tls_edge = self.edges.tls.lookup(name)
        if tls_edge is not None:
            return TlsEdgeDestination(self.server, tls_edge, name)
        return None

    def check_not_edge(self, request: Bind) -> None:
        """
        Refuse an HTTP or TLS tunnel a host name that an edge serves.

        @raise TunnelkitError: C{TK_HOSTNAME_RESERVED}.
        """
        opts: Any = request.opts
        domain = self.server.config.domain
        name = opts.hostname or (f"{opts.subdomain}.{domain}" if opts.subdomain else "")
        name = name.strip().lower().rstrip(".")
        if not name:
            return
        edge = self.edges.https.lookup(name) or self.edges.tls.lookup(name)
        if edge is not None:
            raise TunnelkitError(
                "TK_HOSTNAME_RESERVED",
                f"{name} is served by the edge {edge.id!r} defined in this edge's"
                " edge.yml; choose another name.",
            )

    # Loading again

    def reload(self, config: EdgeConfig) -> None:
        """
        Serve the edges of a newly loaded configuration in place of the
        current ones: their routes and backends at once, and the ports of TCP
        edges opened and closed to match. Only C{edges:} is read; the other
        settings of C{config} need a restart to apply, which is logged when
        they differ.
        """
        server = self.server
        edges = build_edges(config.edges, self.groups, backend_factories())
        changed = changed_settings(server.config, config)
        if changed:
            _log.warn(
                "edge.yml changed settings other than edges: {settings}; only"
                " edges apply on reload, restart the edge for the others",
                settings=", ".join(changed),
            )
        reserved = server.ports.reserved - tcp_ports(server.config.edges)
        lines = {k: v for k, v in server.config.lines.items() if k in EDGE_KEYS}
        lines.update({k: v for k, v in config.lines.items() if k not in EDGE_KEYS})
        server.config = replace(server.config, edges=config.edges, lines=lines)
        server.ports.reserved = reserved | tcp_ports(config.edges)
        self.edges = edges
        refused = self.listeners.update()
        for error in refused:
            _log.error(
                "{code}: {error}; this edge is not served until the port is free"
                " and edge.yml is reloaded",
                code=error.code,
                error=error.message,
            )
        _log.info(
            "loaded {count} edge definitions from {path}",
            count=len(config.edges) - len(refused),
            path=config.path,
        )

    def reload_file(self) -> bool:
        """
        Read C{edge.yml} again and serve its edges (see L{reload}). A file
        that does not load is logged, and the edges served stay as they
        were.

        @return: whether the new edges are served.
        """
        try:
            config = load_edge_config(self.server.config.path)
        except ConfigError as error:
            _log.error(
                "edge.yml was not reloaded, the edges served are unchanged: {error}",
                error=str(error),
            )
            return False
        self.reload(config)
        return True


def changed_settings(old: EdgeConfig, new: EdgeConfig) -> list[str]:
    """
    @return: the top-level keys of C{edge.yml}, other than C{edges}, whose
        values differ between two loads of it, in the order of the fields
        of L{EdgeConfig}.
    """
    return [
        each.name
        for each in fields(EdgeConfig)
        if each.name in EDGE_KEYS
        and each.name != "edges"
        and getattr(old, each.name) != getattr(new, each.name)
    ]


def reload_on_sighup(server: "EdgeServer") -> None:
    """
    Make C{SIGHUP} reload the edge definitions of C{server} (see
    L{EdgeDefinitions.reload_file}); the command line and the twistd plugin
    call this before the reactor runs.
    """

    def received(number: int, frame: Any) -> None:
        server.reactor.callFromThread(server.reload_config)

    signal.signal(signal.SIGHUP, received)


def parse_label_strings(labels: tuple[str, ...]) -> frozenset[tuple[str, str]]:
    """
    Read the labels of a C{bind_labels} request.

    @raise TunnelkitError: C{TK_LABELS_INVALID} unless they are one or more
        C{name=value} strings with a valid name and value, each name once.
    """
    try:
        return read_labels(list(labels))
    except ValueError as error:
        raise TunnelkitError(
            "TK_LABELS_INVALID",
            f"The labels of a labeled tunnel are refused: {error}. Give one or"
            " more --label name=value.",
        ) from None
