"""
The heads of public HTTP requests, without I/O: the shapes the edge
refuses, what a head is routed by, and the head the edge sends on to the
agent in the client's place.

L{tunnelkit.edge.http.HttpIngress} collects a head from the parser and
calls these functions; a head the edge refuses raises L{HeadProblem},
which carries what its error page says.
"""

from dataclasses import dataclass

from tunnelkit.edge.hosts import normalise_host_header

_FORWARDED = frozenset({b"x-forwarded-proto", b"x-forwarded-host"})
"""The forwarding headers the edge sets anew, dropping the client's."""


class HeadProblem(Exception):
    """
    A request head the edge answers itself.

    @ivar status: the HTTP status of the answer.
    @ivar code: the C{TK_} code of the problem.
    @ivar title: the error page's title.
    @ivar sentence: what is wrong and what to do.
    """

    def __init__(self, status: int, code: str, title: str, sentence: str) -> None:
        super().__init__(code)
        self.status = status
        self.code = code
        self.title = title
        self.sentence = sentence


@dataclass(frozen=True)
class RoutingHead:
    """
    What a request head is routed by.

    @ivar host: the host the request names, normalised: its absolute
        target's authority, else its one C{Host} header.
    @ivar authorization: the value of its C{Authorization} header, if any.
    @ivar forwarded_for: its C{X-Forwarded-For} headers joined, if any.
    @ivar authority: the authority of an absolute target (without user
        information), or C{None} for a target in origin form.
    """

    host: str
    authorization: bytes | None
    forwarded_for: bytes | None
    authority: bytes | None


def head_too_large(limit: int) -> HeadProblem:
    """
    @param limit: the largest head accepted, in bytes.
    @return: the problem of a head larger than C{limit}.
    """
    return HeadProblem(
        431,
        "TK_HEADER_TOO_LARGE",
        "Request header too large",
        f"The request's head is larger than this edge accepts ({limit} bytes);"
        " send fewer or shorter headers.",
    )


def check_form(
    method: bytes, version: str, framed: bool, later: bool, upgrade: bool
) -> None:
    """
    Refuse request shapes the edge does not pass on: versions other than
    HTTP/1.0 and 1.1, an HTTP/1.0 body framed by C{Transfer-Encoding}
    (RFC 9112 section 6.1 calls its framing faulty: a smuggling shape),
    C{CONNECT}, and an upgrade on a connection that already carried a
    request, whose answer could not be told from earlier responses.

    @param method: the request's method.
    @param version: its HTTP version, such as C{1.1}.
    @param framed: whether it has a C{Transfer-Encoding} header.
    @param later: whether earlier requests came on the same connection.
    @param upgrade: whether it asks to upgrade the connection.
    @raise HeadProblem: for a shape the edge refuses.
    """
    if version not in ("1.0", "1.1") or (version == "1.0" and framed):
        raise HeadProblem(
            400,
            "TK_BAD_REQUEST",
            "Bad request",
            "Only HTTP/1.0 and HTTP/1.1 requests are served, and an HTTP/1.0"
            " request may not use Transfer-Encoding; check the client.",
        )
    if method == b"CONNECT":
        raise HeadProblem(
            405,
            "TK_METHOD_NOT_ALLOWED",
            "Method not allowed",
            "Tunnels are not forward proxies: CONNECT is not served.",
        )
    if later and upgrade:
        raise HeadProblem(
            400,
            "TK_BAD_REQUEST",
            "Bad request",
            "Send an upgrade request (WebSocket) as the first request of a new"
            " connection.",
        )


def check_same_host(opened_for: str | None, host: str) -> None:
    """
    Refuse a request for another host than the earlier requests of its
    connection were for.

    @param opened_for: the host of the connection's earlier requests, or
        C{None} for its first request.
    @param host: the host of this request.
    @raise HeadProblem: when the hosts differ.
    """
    if opened_for is not None and host != opened_for:
        raise HeadProblem(
            421,
            "TK_MISDIRECTED_REQUEST",
            "Misdirected request",
            f"This connection was opened for {opened_for}, not {host}; open a"
            " new connection for each host.",
        )


def read_routing_head(url: bytes, headers: list[tuple[bytes, bytes]]) -> RoutingHead:
    """
    Read what a request is routed by from its target and headers.

    @param url: the request target as sent.
    @param headers: the headers as sent, in order.
    @raise HeadProblem: when the request names no host, several, or one
        that is not a host name.
    """
    host_values = []
    authorization = forwarded_for = None
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"host":
            host_values.append(value)
        elif lowered == b"authorization":
            authorization = value
        elif lowered == b"x-forwarded-for":
            if forwarded_for is not None:
                value = forwarded_for + b", " + value
            forwarded_for = value

    authority = None
    if url[:7].lower() == b"http://" or url[:8].lower() == b"https://":
        authority = url.split(b"/", 3)[2].rpartition(b"@")[2]
        host_values = [authority]
    if len(host_values) != 1:
        raise HeadProblem(
            400,
            "TK_BAD_REQUEST",
            "Bad request",
            "The request must carry exactly one Host header naming the tunnel.",
        )
    host = normalise_host_header(host_values[0])
    if host is None:
        raise HeadProblem(
            400,
            "TK_BAD_REQUEST",
            "Bad request",
            "The request's Host header is not a valid host name.",
        )
    return RoutingHead(host, authorization, forwarded_for, authority)


def origin_target(url: bytes, authority: bytes | None) -> bytes:
    """
    @param url: a request target as sent.
    @param authority: its authority, when it is in absolute form.
    @return: the target in origin form: the path and query.
    """
    if authority is None:
        return url
    path = url.split(b"/", 3)[3:]
    return b"/" + (path[0] if path else b"")


def request_path(url: bytes, authority: bytes | None) -> str:
    """
    @return: the path of a request target without its query, as routes
        match it.
    """
    return origin_target(url, authority).split(b"?", 1)[0].decode("latin-1")


def forwarded_head(
    method: bytes,
    url: bytes,
    version: str,
    headers: list[tuple[bytes, bytes]],
    routing: RoutingHead,
    host_header: bytes,
    client_host: str,
    scheme: str,
) -> bytes:
    """
    The head the edge sends to the agent for a request: its target in
    origin form, its first C{Host} (replaced when the tunnel asks), its
    other headers but the forwarding ones, then C{X-Forwarded-For},
    C{X-Forwarded-Proto} and C{X-Forwarded-Host}.

    @param method: the request's method.
    @param url: its target as sent.
    @param version: its HTTP version, such as C{1.1}.
    @param headers: its headers as sent, in order.
    @param routing: what it was routed by.
    @param host_header: the C{Host} the tunnel asks for, or C{b""} to keep
        the public host.
    @param client_host: the public client's IP address.
    @param scheme: the public listener's scheme, C{http} or C{https}.
    @return: the head, ending with its blank line.
    """
    target = origin_target(url, routing.authority)
    lines = [method + b" " + target + b" HTTP/" + version.encode("ascii")]
    # An absolute target's authority is what the request was routed by,
    # so it stands for the public host, whatever Host the client sent.
    authority = routing.authority
    public_host = b"" if authority is None else authority
    sent_host = False
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"host":
            if sent_host:
                continue
            sent_host = True
            public_host = value if authority is None else authority
            value = host_header or public_host
        elif lowered == b"x-forwarded-for" or lowered in _FORWARDED:
            continue
        lines.append(name + b": " + value)

    client = client_host.encode("ascii")
    if routing.forwarded_for:
        client = routing.forwarded_for + b", " + client
    lines.append(b"X-Forwarded-For: " + client)
    lines.append(b"X-Forwarded-Proto: " + scheme.encode("ascii"))
    lines.append(b"X-Forwarded-Host: " + public_host)
    if not sent_host:
        lines.append(b"Host: " + (host_header or public_host))
    lines.append(b"\r\n")
    return b"\r\n".join(lines)
