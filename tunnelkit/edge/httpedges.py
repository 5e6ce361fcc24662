"""
The part of a public HTTP connection that serves the HTTPS edges of
C{edge.yml}: finding the route of a request's path, asking its backend for
a target, opening the stream to a static address, and switching a
kept-alive connection to another route's target once the earlier
responses are done.

L{EdgeRouting} is a mixin of L{tunnelkit.edge.http.HttpIngress}, which
holds the connection's state and calls L{EdgeRouting._route_edge} for each
request to an edge's host.
"""

from typing import Any, NoReturn

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress
from twisted.logger import Logger
from twisted.python.failure import Failure

from tunnelkit.addresses import format_address
from tunnelkit.edge.httpheads import HeadProblem, check_same_host, request_path
from tunnelkit.edge.httpstreams import (
    RequestStream,
    connect_static,
    fixed_response,
    http_request,
)
from tunnelkit.edge.names import HttpBinding
from tunnelkit.edge.routes import Route, ServedEdge
from tunnelkit.edge.routing import (
    FixedResponse,
    LabeledBinding,
    StaticAddress,
    TunnelTarget,
    Unavailable,
)
from tunnelkit.errorpage import error_response

_log = Logger()


class Refusal(Exception):
    """
    Stop parsing: the edge answers this request itself.
    """

    def __init__(self, response: bytes, code: str) -> None:
        super().__init__(code)
        self.response = response


class EdgeRouting:
    """
    Routing a public HTTP connection's requests for an HTTPS edge.
    """

    # typing note: the state below is L{tunnelkit.edge.http.HttpIngress}'s,
    # declared here for the methods that use it.
    router: Any
    transport: Any
    client: IAddress | None
    lost: bool
    _host: str | None
    _url: bytes
    _authority: bytes | None
    _headers: list[tuple[bytes, bytes]]
    _state: str
    _binding: HttpBinding | LabeledBinding | None
    _stream: RequestStream | None
    _refusal: Refusal | None
    _route_taken: Route | None
    _previous: RequestStream | None
    _next: TunnelTarget | StaticAddress | None

    def _stop(
        self,
        status: int,
        code: str,
        title: str,
        sentence: str,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> NoReturn:
        raise NotImplementedError()

    def _reject(self, problem: HeadProblem) -> NoReturn:
        raise NotImplementedError()

    def _open_stream(
        self,
        binding: HttpBinding | LabeledBinding,
        stream: RequestStream | None = None,
    ) -> None:
        raise NotImplementedError()

    def _route_edge(
        self, edge: ServedEdge, host: str, method: bytes
    ) -> LabeledBinding | None:
        """
        Route a request for an HTTPS edge: find the route of its path, and
        for the first request of the connection ask the route's backend
        where it goes.

        @return: the labeled tunnel to open a stream to, or C{None} when
            the connection already has its stream (or a static address is
            being connected).
        """
        try:
            check_same_host(self._host, host)
        except HeadProblem as problem:
            self._reject(problem)
        path = request_path(self._url, self._authority)
        route = edge.routes.match(path)
        if route is None:
            self._stop(
                404,
                "TK_ROUTE_NOT_FOUND",
                "Route not found",
                f"No route of the edge {edge.id} serves {path}; check the URL.",
            )
        taken = self._route_taken
        if taken is not None and route.key == taken.key:
            binding = self._binding
            return binding if isinstance(binding, LabeledBinding) else None
        if taken is not None and (self._next is not None or self._stream is None):
            self._stop(
                421,
                "TK_MISDIRECTED_REQUEST",
                "Misdirected request",
                f"This connection is still switching to another route of {host};"
                f" open a new connection for {path}.",
            )
        self._host = host
        decision = self._decide(route, edge, host, path)
        if taken is not None and isinstance(decision, (TunnelTarget, StaticAddress)):
            self._switch(route, decision)
            return decision.binding if isinstance(decision, TunnelTarget) else None
        if isinstance(decision, TunnelTarget):
            self._route_taken = route
            return decision.binding
        if isinstance(decision, StaticAddress):
            self._route_taken = route
            self._open_static(decision)
            return None
        if isinstance(decision, FixedResponse):
            response = fixed_response(decision, method == b"HEAD")
            self._refusal = Refusal(response, "fixed")
            raise self._refusal
        sentence = decision.sentence if isinstance(decision, Unavailable) else ""
        self._stop(
            503,
            "TK_BACKEND_UNAVAILABLE",
            "No tunnel available",
            f"Nothing serves {host}{path} right now: {sentence}",
        )

    def _decide(self, route: Route, edge: ServedEdge, host: str, path: str) -> Any:
        request = http_request(
            edge,
            host,
            path,
            format_address(self.client),
            self.router.reactor.seconds(),
            self._headers,
        )
        decision = route.ask(request)
        if decision is None:
            self._stop(
                502,
                "TK_BACKEND_FAILED",
                "Backend failed",
                f"The edge could not decide where {host}{path} goes: its backend"
                " failed. The edge's operator will find the error in its log.",
            )
        return decision

    def _switch(self, route: Route, decision: TunnelTarget | StaticAddress) -> None:
        """
        A request on this connection goes to another route than the earlier
        ones: end the current stream, and keep the request (the client's
        bytes unread meanwhile) until the earlier responses are done, then
        open a stream to the new target (see L{_start_next}).
        """
        previous = self._stream
        assert previous is not None
        binding, self._binding = self._binding, None
        if binding is not None:
            binding.open_connections -= 1
        waiting = RequestStream(self, b"")
        waiting.connecting = Deferred()
        waiting.connecting.addErrback(lambda failure: None)
        self._previous, self._stream, self._next = previous, waiting, decision
        self._route_taken = route
        self.transport.pauseProducing()
        if previous.transport is not None:
            # The public connection stops feeding the ending stream, which
            # would otherwise stop it, closing it, as the stream ends.
            previous.transport.unregisterProducer()
        previous.half_close()

    def _start_next(self) -> None:
        """
        The earlier route's responses are done: open the stream the waiting
        request goes to.
        """
        stream, decision, self._next = self._stream, self._next, None
        assert stream is not None and decision is not None
        if isinstance(decision, StaticAddress):
            connect_static(self.router.reactor, decision, stream)
            assert stream.connecting is not None
            stream.connecting.addErrback(self._static_failed, stream, decision)
            return
        try:
            self._open_stream(decision.binding, stream)
        except Refusal as refusal:
            self._refusal = None
            self._stream = None
            self._state = "refused"
            self.transport.write(refusal.response)
            self.transport.loseConnection()

    def _open_static(self, address: StaticAddress) -> None:
        """
        Connect to a static address for this connection's requests; the
        client's bytes wait, unread, until it answers.
        """
        stream = RequestStream(self, b"")
        self._stream = stream
        self.transport.pauseProducing()
        connect_static(self.router.reactor, address, stream)
        assert stream.connecting is not None
        stream.connecting.addErrback(self._static_failed, stream, address)

    def _static_failed(
        self, reason: Failure, stream: RequestStream, address: StaticAddress
    ) -> None:
        stream.connecting = None
        if stream is not self._stream or self.lost:
            return
        _log.warn(
            "cannot reach {host}:{port} for {client}: {error}",
            host=address.host,
            port=address.port,
            client=format_address(self.client),
            error=reason.getErrorMessage(),
        )
        self._stream = None
        self._state = "refused"
        self.transport.write(
            error_response(
                502,
                "TK_STATIC_UNREACHABLE",
                "Upstream unreachable",
                f"The edge could not connect to the address serving {self._host}."
                " Try again in a moment.",
            )
        )
        self.transport.loseConnection()
