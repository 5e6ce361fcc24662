"""
The interfaces between tunnelkit's parts, and those that other packages
implement: a backend that decides where public traffic goes
(L{IBackend}), the Twisted plugin that makes one from C{edge.yml}
(L{IBackendFactory}), what such a factory builds children with
(L{IBackendBuilder}), what the public HTTP listeners route by
(L{IHttpRouter}), what the shared HTTPS port routes TLS connections by
their server names with (L{ISniRouter}), where it passes a connection
through to (L{IPassthrough}), and a protocol that takes received bytes in
pieces (L{IPiecesReceiver}).

Every provider, real or fake, is checked against its interface with
C{zope.interface.verify.verifyObject} in the tests.
"""

from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IAddress
from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from tunnelkit.splice import SpliceEnd


class IPiecesReceiver(Interface):
    """
    A protocol that can take bytes received in several pieces without their
    being joined first.
    """

    def piecesReceived(pieces: list[bytes]) -> None:
        """
        Bytes arrived, in consecutive pieces: the same as C{dataReceived}
        with the pieces joined.

        @param pieces: at least two pieces, in order.
        """


class IHttpRouter(Interface):
    """
    What the public HTTP and HTTPS listeners route requests with: the HTTP
    tunnels by host name, the edges defined in C{edge.yml}, and the limits
    every request is held to.
    """

    reactor = Attribute(
        "The reactor: its clock times request heads, and it runs deferred work."
    )
    head_timeout = Attribute(
        "Seconds a client has to send a complete request head (a float)."
    )
    max_header_size = Attribute("The largest request head accepted, in bytes.")
    hosts = Attribute(
        "The HTTP tunnels by host name: a L{tunnelkit.edge.hosts.HostTable} of"
        " L{tunnelkit.edge.names.HttpBinding}."
    )
    edges = Attribute(
        "The edges of C{edge.yml} by host name: a"
        " L{tunnelkit.edge.routes.EdgeRoutes}. An HTTPS edge's host is served"
        " by its routes before any tunnel's."
    )


class IPassthrough(Interface):
    """
    Where the HTTPS port passes a TLS connection through to, untouched.
    """

    name = Attribute("What the destination is called in logs, such as its name.")

    def open_passthrough(end: "SpliceEnd", client: IAddress | None) -> None:
        """
        Open the way to the destination for one public connection and
        splice C{end} to it. What C{end} read so far (the ClientHello)
        goes first.

        @param end: the public connection, connected, not yet spliced.
        @param client: the public client's address.
        @raise tunnelkit.errors.TunnelkitError: when the destination cannot
            take the connection now (C{TK_TUNNEL_OFFLINE}); C{end} is left
            alone.
        """


class ISniRouter(Interface):
    """
    What the HTTPS port routes connections with, by the server names (SNI)
    of their ClientHellos.
    """

    def route_sni(name: str) -> object:
        """
        @param name: the server name of a ClientHello, in lower case.
        @return: an L{IPassthrough} to pass the connection through to,
            L{tunnelkit.edge.sni.TERMINATE} to terminate it at the edge and
            serve it as HTTP, or C{None} when nothing serves the name.
        """


class IBackend(Interface):
    """
    Decides where one public connection, or one HTTP request, goes: to a
    tunnel, to a fixed response, to a static address, or nowhere.

    The edge asks the backend of a route once for each public connection
    of a TCP or TLS edge, and once for each HTTP connection of an HTTPS
    edge and route: the later requests of a kept-alive connection that
    match the same route go where the first one went, and a request for
    another route is asked about anew.

    Errors: C{choose} must not raise for any request, however odd. An
    exception it raises is treated as a bug in the backend: the edge logs it
    with its traceback, answers the client C{502} with the code
    C{TK_BACKEND_FAILED} (an HTTP request) or closes the connection (TCP or
    TLS), and keeps the backend in place for the next request. A backend
    with no target to offer returns L{tunnelkit.edge.routing.Unavailable},
    which a failover backend above it takes as its cue to try the next
    child.

    State: C{choose} runs in the reactor's thread and must return at once,
    without blocking or doing I/O. A backend may keep state between calls
    that concerns its own decisions (counters, a round-robin cursor, a
    random generator, a table of its own), and the tunnel groups it was
    built with always show the tunnels online now. It must not keep the
    request or anything reached from it after returning. One backend object
    serves every connection of its route until the edge definitions are
    loaded again (on C{SIGHUP}), when a new one is built from the new file
    and the old one is dropped without notice.
    """

    def choose(request: Any) -> Any:
        """
        Decide where a request goes.

        @param request: a L{tunnelkit.edge.routing.BackendRequest}: the
            protocol, host, path, headers and client of the request, the
            edge's own labels and the time.
        @return: one of the decisions of L{tunnelkit.edge.routing}:
            L{TunnelTarget<tunnelkit.edge.routing.TunnelTarget>},
            L{FixedResponse<tunnelkit.edge.routing.FixedResponse>},
            L{StaticAddress<tunnelkit.edge.routing.StaticAddress>} or
            L{Unavailable<tunnelkit.edge.routing.Unavailable>}.
        """


class IBackendBuilder(Interface):
    """
    What a backend factory builds its backend with: the children named in
    its options, the tunnel groups, and the edge's own labels.
    """

    edge_labels = Attribute(
        "The labels of the edge being built, C{{'edge': EDGE_ID}}: the labels"
        " a tunnel group configured without labels asks for."
    )

    def child(*keys: Any) -> IBackend:
        """
        Build a child backend described in the options.

        @param keys: the way from the options to the child's mapping (which
            has its own C{type}): an option name, then list indexes or
            further names, such as C{("backends", 0, "backend")}.
        @return: the child.
        @raise ValueError: when nothing is there; an error in the child is
            raised as a configuration error located at the child.
        """

    def tunnel_group(labels: Any, balance: str = "round_robin") -> IBackend:
        """
        Build a tunnel group backend.

        @param labels: a mapping of label names to values; every tunnel
            bound with exactly these labels is a target.
        @param balance: C{round_robin} or C{least_connections}.
        @return: the backend.
        @raise ValueError: for labels that are not C{name: value} strings or
            an unknown C{balance}.
        """


class IBackendFactory(Interface):
    """
    A kind of backend that C{edge.yml} can name by its type. Third parties
    provide one in a Twisted plugin: a module in their package's own
    C{twisted/plugins/} directory with an object providing both
    L{twisted.plugin.IPlugin} and this interface.
    """

    type = Attribute(
        "The name C{edge.yml} gives this kind of backend in C{type:}: lower-case"
        " letters, digits and underscores, such as C{canary}. A plugin cannot"
        " take the name of a built-in backend."
    )

    def build(options: Any, builder: IBackendBuilder) -> IBackend:
        """
        Build a backend from its options in C{edge.yml}. This runs when the
        file is loaded (at start and on every reload) and must not do I/O.

        @param options: the backend's mapping without C{type}, as plain
            values: a C{dict} of C{str} keys to strings, numbers, booleans,
            C{None}, lists and dicts.
        @param builder: for the children named in the options and the
            tunnel groups.
        @return: the backend.
        @raise ValueError: for a missing, unknown or bad option, with a
            sentence naming it; the edge reports it as a configuration error
            that names the file, line, edge and route, and does not start
            (or keeps the definitions it had, on a reload).
        """
