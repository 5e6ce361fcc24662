"""
Public HTTP at the edge: each connection's requests are parsed as they
arrive, routed by C{Host} to an HTTP binding, checked, and streamed to the
agent over one proxied stream, while the agent's responses flow back to the
client byte for byte.

Request heads are parsed with httptools (llhttp); bodies, whether sized by
C{Content-Length} or chunked, pass through in the pieces they arrive in and
are never held whole. The edge changes a request only by adding
C{X-Forwarded-For}, C{X-Forwarded-Proto} and C{X-Forwarded-Host} (replacing
any the client sent for the last two) and the C{Host} header, when the
tunnel asks or when the target is an absolute URI (whose authority then
stands for the host); chunked bodies are framed anew, so chunk sizes and
trailers are not kept. The checks of a head and the head sent on are
L{tunnelkit.edge.httpheads}'s.

Responses are not parsed. So that they stay in order, a request the edge
refuses after others went to the agent on the same connection is answered
only once the agent has finished the earlier ones: the edge half-closes the
stream, waits for the agent to close its side, then writes its error page
and closes the connection.

A host of an HTTPS edge of C{edge.yml} is served by the edge's routes
(see L{tunnelkit.edge.routes}): the first request of a connection for a
route asks the route's backend for a target, the later ones for the same
route follow it, and a request for another route waits, unread, until the
earlier stream has ended, then goes to its own route's target. Known
limit: a pipelined request for a third route, sent while such a switch
waits, is answered C{421}.

Known limit: a connection idle between requests is closed by the
upstream's keep-alive timeout, not by the edge, and holds one stream of the
agent's session until then.
"""

from typing import Any, NoReturn

import httptools
from twisted.internet.interfaces import IAddress, IDelayedCall, IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from tunnelkit.addresses import format_address
from tunnelkit.control.messages import ProxyHeader, encode_message
from tunnelkit.edge.httpedges import EdgeRouting, Refusal
from tunnelkit.edge.httpheads import (
    HeadProblem,
    check_form,
    check_same_host,
    forwarded_head,
    head_too_large,
    read_routing_head,
)
from tunnelkit.edge.httpstreams import RequestStream
from tunnelkit.edge.names import HttpBinding
from tunnelkit.edge.routes import Route
from tunnelkit.edge.routing import LabeledBinding, StaticAddress, TunnelTarget
from tunnelkit.errorpage import error_response
from tunnelkit.errors import TunnelkitError
from tunnelkit.interfaces import IHttpRouter
from tunnelkit.sockets import set_no_delay
from tunnelkit.tlstransport import read_in_large_pieces

_log = Logger()


@implementer(IHalfCloseableProtocol)
class HttpIngress(EdgeRouting, Protocol):
    """
    One public connection to the HTTP or HTTPS listener.

    @ivar lost: whether the connection has closed.
    """

    # typing note: TCP and TLS transports both offer producers, half-close
    # and abort, which no single Twisted interface declares.
    transport: Any

    def __init__(self, factory: "HttpIngressFactory", client: IAddress | None) -> None:
        self.factory = factory
        self.router: Any = factory.router
        self.scheme = factory.scheme
        self.client = client
        self.client_host = getattr(client, "host", "")
        self.lost = False
        self.upgrading = False
        self._held = b""
        self._status_line = b""
        self._requests = 0
        self._parser = httptools.HttpRequestParser(self)
        self._state = "head"
        self._head_size = 0
        self._head_bytes = 0
        self._head_timer: IDelayedCall | None = None
        self._head_deadline: float | None = None
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._chunked = False
        self._framed = False
        self._forwarding = False
        self._host: str | None = None
        self._authority: bytes | None = None
        self._binding: HttpBinding | LabeledBinding | None = None
        self._route_taken: Route | None = None
        self._previous: RequestStream | None = None
        self._producer_registered = False
        self._next: TunnelTarget | StaticAddress | None = None
        self._stream: RequestStream | None = None
        self._refusal: Refusal | None = None

    # The public connection

    def connectionMade(self) -> None:
        set_no_delay(self.transport)
        self._start_head_timer()

    def dataReceived(self, data: bytes) -> None:
        state = self._state
        if state == "raw":
            self._stream_write(data)
            return
        if state == "upgrading":
            self._held += data
            return
        if state != "head" and state != "body":
            return
        limit = self.router.max_header_size
        offset = 0
        while offset < len(data) and self._state in ("head", "body"):
            piece = data[offset : offset + limit] if len(data) > limit else data
            offset += len(piece)
            if self._state == "head":
                self._head_size += len(piece)
            self._feed(piece)
            if self._state == "head" and self._head_size > limit:
                self._refuse(head_too_large(limit))
        if self._state == "upgrading" and offset < len(data):
            self._held += data[offset:]

    def _feed(self, piece: bytes) -> None:
        try:
            self._parser.feed_data(piece)
        except httptools.HttpParserUpgrade as upgrade:
            start = upgrade.args[0] if upgrade.args else len(piece)
            self._upgraded(piece[start:])
        except httptools.HttpParserCallbackError:
            refusal = self._refusal
            if refusal is None:
                raise
            self._refusal = None
            self._answer(refusal)
        except httptools.HttpParserError as error:
            _log.warn(
                "malformed request from {client}: {error}",
                client=format_address(self.client),
                error=str(error),
            )
            self._refuse(
                HeadProblem(
                    400,
                    "TK_BAD_REQUEST",
                    "Bad request",
                    "The request is not valid HTTP/1.1; check the client sending"
                    " it.",
                )
            )

    def readConnectionLost(self) -> None:
        stream = self._stream
        if stream is not None and self._state in ("head", "body", "raw", "upgrading"):
            stream.half_close()
        elif stream is None:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = True
        state, self._state = self._state, "closed"
        self._cancel_head_timer()
        binding = self._binding
        if binding is not None:
            binding.open_connections -= 1
            self._binding = None
        previous, self._previous = self._previous, None
        if previous is not None:
            previous.abort()
        stream, self._stream = self._stream, None
        if stream is not None and stream.connecting is not None:
            stream.abort()
            return
        if stream is None or stream.transport is None:
            return
        clean = reason.check(type(connectionDone.value)) is not None
        if state == "head" or (state == "raw" and clean):
            # Between requests nothing of the client's is left to forward,
            # however its connection ended (a TLS client closing without
            # close_notify, as curl and browsers do, is reported as lost),
            # and an upgraded connection that closed cleanly is done too:
            # end the stream as a half-close would, so that the upstream's
            # connection closes cleanly. Anything the agent still sends
            # resets it (see RequestStream.dataReceived).
            stream.transport.loseWriteConnection()
        else:
            stream.transport.abortConnection()

    # Parser callbacks

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._head_bytes = 0
        self._chunked = False
        self._framed = False
        if self._head_deadline is None:
            self._start_head_timer()

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_bytes += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > self.router.max_header_size:
            self._reject(head_too_large(self.router.max_header_size))
        self._headers.append((name, value))
        if name.lower() == b"transfer-encoding":
            self._framed = True
            if b"chunked" in value.lower():
                self._chunked = True

    def on_headers_complete(self) -> None:
        self._head_deadline = None
        self._state = "body"
        self._head_size = 0
        parser = self._parser
        method = parser.get_method()
        version = parser.get_http_version()
        try:
            check_form(
                method,
                version,
                self._framed,
                self._requests > 0,
                parser.should_upgrade(),
            )
            head = read_routing_head(self._url, self._headers)
        except HeadProblem as problem:
            self._reject(problem)
        self._authority = head.authority
        host = head.host
        edge = None
        if self.scheme == "https":
            edge = self.router.edges.https.lookup(host)
        binding: HttpBinding | LabeledBinding | None
        if edge is not None:
            binding = self._route_edge(edge, host, method)
        else:
            binding = self._route(host, head.authorization)
        if self._stream is None:
            assert binding is not None
            self._open_stream(binding)
        self._forwarding = True
        self._requests += 1
        host_header = b"" if binding is None else binding.host_header
        self._stream_write(
            forwarded_head(
                method,
                self._url,
                version,
                self._headers,
                head,
                host_header,
                self.client_host,
                self.scheme,
            )
        )

    def on_body(self, body: bytes) -> None:
        if not self._forwarding:
            return
        if self._chunked:
            self._stream_write(b"%x\r\n" % len(body))
            self._stream_write(body)
            self._stream_write(b"\r\n")
        else:
            self._stream_write(body)

    def on_message_complete(self) -> None:
        if self._forwarding and self._chunked:
            self._stream_write(b"0\r\n\r\n")
        self._forwarding = False
        if self._state == "body":
            self._state = "head"

    # Routing and checks

    def _route(self, host: str, authorization: bytes | None) -> HttpBinding:
        try:
            check_same_host(self._host, host)
        except HeadProblem as problem:
            self._reject(problem)
        binding = self.router.hosts.lookup(host)
        if not isinstance(binding, HttpBinding) or self.scheme not in binding.schemes:
            self._stop(
                404,
                "TK_TUNNEL_NOT_FOUND",
                "Tunnel not found",
                f"Tunnel {host} not found: no tunnel serves this host over"
                f" {self.scheme} on this edge. Check the URL the agent printed.",
            )
        if binding.session is None:
            self._stop(
                503,
                "TK_TUNNEL_OFFLINE",
                "Tunnel offline",
                f"The tunnel {host} is offline: its agent is not connected right"
                " now. Try again once the agent has reconnected.",
            )
        if not binding.authorized(authorization):
            if authorization is not None:
                _log.warn(
                    "wrong basic-auth credentials from {client} for {host}",
                    client=format_address(self.client),
                    host=host,
                )
            self._stop(
                401,
                "TK_BASIC_AUTH_REQUIRED",
                "Authentication required",
                "This tunnel is protected by basic authentication; give a user"
                " name and password it accepts.",
                [(b"WWW-Authenticate", b'Basic realm="tunnelkit", charset="UTF-8"')],
            )
        self._host = host
        return binding

    # The stream to the agent

    def _open_stream(
        self,
        binding: HttpBinding | LabeledBinding,
        stream: RequestStream | None = None,
    ) -> None:
        """
        Open a stream to the agent serving C{binding}.

        @param stream: the stream to open, holding bytes already written to
            it, or C{None} for a new one.
        @raise Refusal: when the agent's session cannot open streams now.
        """
        session = binding.session
        assert session is not None
        header = encode_message(
            ProxyHeader(
                binding_id=binding.binding_id,
                client_addr=format_address(self.client),
                proto=self.scheme,
            )
        )
        if stream is None:
            stream = RequestStream(self, header)
        stream.header = header
        waited = stream.connecting is not None
        try:
            opened = session.mux.open_stream(stream)
        except TunnelkitError as error:
            if isinstance(binding, LabeledBinding):
                binding.failed_at = self.router.reactor.seconds()
            self._stop(
                503,
                "TK_TUNNEL_OFFLINE",
                "Tunnel offline",
                f"The agent serving {binding.name} cannot take connections right"
                f" now ({error.message}). Try again in a moment.",
            )
        self._stream = stream
        self._binding = binding
        binding.open_connections += 1
        binding.total_connections += 1
        if not waited:
            self.stream_connected(stream)
        opened.addErrback(self._not_opened, stream, binding)

    def stream_connected(self, stream: RequestStream, resume: bool = False) -> None:
        """
        The stream can carry bytes: let each side's backpressure pause the
        other, and read in large pieces.

        @param resume: read from the client again, after waiting for a
            static address to answer.
        """
        if stream is not self._stream or self.lost:
            return
        read_in_large_pieces(self.transport)
        if self._producer_registered:
            self.transport.unregisterProducer()
        self._producer_registered = True
        self.transport.registerProducer(stream.transport, True)
        stream.transport.registerProducer(self.transport, True)
        if resume:
            self.transport.resumeProducing()

    def _not_opened(
        self,
        reason: Failure,
        stream: RequestStream,
        binding: HttpBinding | LabeledBinding,
    ) -> None:
        if isinstance(binding, LabeledBinding):
            binding.failed_at = self.router.reactor.seconds()
        _log.warn(
            "agent did not take connection from {client} to {host}: {error}",
            client=format_address(self.client),
            host=self._host,
            error=reason.getErrorMessage(),
        )
        if stream is self._stream and not stream.answered and not self.lost:
            self._stream = None
            self._state = "refused"
            self.transport.write(
                error_response(
                    502,
                    "TK_AGENT_REFUSED",
                    "Tunnel unavailable",
                    f"The agent serving {self._host} did not accept the"
                    " connection. Try again in a moment.",
                )
            )
            self.transport.loseConnection()

    def _stream_write(self, data: bytes) -> None:
        stream = self._stream
        if stream is not None:
            stream.send(data)

    def _upgraded(self, rest: bytes) -> None:
        """
        An upgrade request went to the agent: hold the client's further
        bytes, unread, until the upstream's status line says whether it
        switched protocols.
        """
        self._state = "upgrading"
        self.upgrading = True
        self._held = rest
        self.transport.pauseProducing()

    def upgrade_answered(self, data: bytes) -> bytes:
        """
        Read the status line of the answer to an upgrade request from the
        agent's first bytes: on C{101} the connection carries raw bytes both
        ways from now on; otherwise the upstream declined, and the client's
        held bytes are parsed as requests again.

        @param data: bytes from the agent.
        @return: the bytes to pass on to the client now.
        """
        line = self._status_line + data
        if b"\n" not in line and len(line) < 1024:
            self._status_line = line
            return b""
        self._status_line = b""
        self.upgrading = False
        held, self._held = self._held, b""
        if line[:13] in (b"HTTP/1.1 101 ", b"HTTP/1.0 101 "):
            self._state = "raw"
            self._stream_write(held)
        else:
            self._state = "head"
            self._parser = httptools.HttpRequestParser(self)
            if held:
                self.router.reactor.callLater(0, self._resume_parsing, held)
                return line
        if not self.lost:
            self.transport.resumeProducing()
        return line

    def _resume_parsing(self, held: bytes) -> None:
        if self.lost or self._state != "head":
            return
        self.dataReceived(held)
        if not self.lost:
            self.transport.resumeProducing()

    def stream_lost(self, stream: RequestStream, reason: Failure) -> None:
        """
        The agent closed the stream: close the public connection, after the
        edge's own answer if one waits for the agent's responses to end.
        """
        if stream is self._previous:
            self._previous = None
            if self.lost:
                return
            if reason.check(type(connectionDone.value)):
                self._start_next()
            else:
                self.transport.abortConnection()
            return
        if stream is not self._stream:
            return
        self._stream = None
        if self.lost:
            return
        pending, self._refusal = self._refusal, None
        if pending is not None:
            self.transport.write(pending.response)
            self.transport.loseConnection()
        elif reason.check(type(connectionDone.value)):
            self.transport.loseConnection()
        else:
            self.transport.abortConnection()

    # The edge's own answers

    def _stop(
        self,
        status: int,
        code: str,
        title: str,
        sentence: str,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> NoReturn:
        """
        Refuse the request being parsed and stop parsing.

        @raise Refusal: always; the parser turns it into
            C{HttpParserCallbackError}, which L{_feed} handles.
        """
        head_only = self._parser.get_method() == b"HEAD"
        response = error_response(status, code, title, sentence, headers, head_only)
        self._refusal = Refusal(response, code)
        _log.info(
            "refused a request from {client}: {code}",
            client=format_address(self.client),
            code=code,
            host=self._host,
        )
        raise self._refusal

    def _reject(self, problem: HeadProblem) -> NoReturn:
        """
        Refuse the request being parsed for a problem of its head; see
        L{_stop}.
        """
        self._stop(problem.status, problem.code, problem.title, problem.sentence)

    def _refuse(self, problem: HeadProblem) -> None:
        """
        Answer with an error outside a parser callback.
        """
        response = error_response(
            problem.status, problem.code, problem.title, problem.sentence
        )
        self._answer(Refusal(response, problem.code))

    def _answer(self, refusal: Refusal) -> None:
        self._state = "refused"
        self._forwarding = False
        self._cancel_head_timer()
        stream = self._stream
        if stream is None:
            self.transport.write(refusal.response)
            self.transport.loseConnection()
            return
        self._refusal = refusal
        stream.half_close()

    def _start_head_timer(self) -> None:
        """
        Give the head now starting C{router.head_timeout} seconds. The
        one timer of the connection is only moved when it fires early, so a
        request on a busy keep-alive connection costs no timer of its own.
        """
        reactor = self.router.reactor
        self._head_deadline = reactor.seconds() + self.router.head_timeout
        if self._head_timer is None:
            self._head_timer = reactor.callLater(
                self.router.head_timeout, self._head_timed_out
            )

    def _cancel_head_timer(self) -> None:
        self._head_deadline = None
        timer, self._head_timer = self._head_timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _head_timed_out(self) -> None:
        self._head_timer = None
        deadline = self._head_deadline
        if deadline is None or self._state != "head" or self.lost:
            return
        left = deadline - self.router.reactor.seconds()
        if left > 0:
            self._head_timer = self.router.reactor.callLater(left, self._head_timed_out)
            return
        _log.info(
            "closing connection from {client}: no complete request in {timeout}s",
            client=format_address(self.client),
            timeout=self.router.head_timeout,
        )
        self._refuse(
            HeadProblem(
                408,
                "TK_REQUEST_TIMEOUT",
                "Request timeout",
                f"The request's head did not arrive within"
                f" {self.router.head_timeout:g} seconds; send the whole head at"
                " once, or check the network between the client and the edge.",
            )
        )


class HttpIngressFactory(Factory):
    """
    Builds an L{HttpIngress} for each connection to a public HTTP or HTTPS
    listener.

    @ivar router: what requests are routed with, an L{IHttpRouter}.
    @ivar scheme: C{http} or C{https}, the scheme of this listener.
    """

    noisy = False

    def __init__(self, router: IHttpRouter, scheme: str) -> None:
        self.router = router
        self.scheme = scheme

    def buildProtocol(self, addr: IAddress | None) -> HttpIngress:
        return HttpIngress(self, addr)
