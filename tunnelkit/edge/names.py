"""
Host names at the edge: which name an HTTP or TLS tunnel gets, who may bind
which name, and the public URLs of a binding.

HTTP and TLS tunnels share one name space: a name is bound by one tunnel,
of either kind, at a time, under the same rules, and the HTTPS port asks
the same table whether a server name is passed through (a TLS tunnel's)
or terminated (an HTTP tunnel's).

The rules: a random name under the edge's domain, derived from the edge's
secret, the session and the binding, for a tunnel that asks for none; a
subdomain for anyone, unless another authtoken's hostname patterns cover
it; a full hostname for the authtoken whose patterns cover it (the most
specific pattern of any token decides), or one label below the domain as a
subdomain would be. A name held by another session, even in its grace
period, is refused, except to the same authtoken's later session.
"""

import base64
import hashlib
import hmac
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tunnelkit.config import EdgeConfig, parse_credential
from tunnelkit.control.messages import Bind, HttpOpts, TlsOpts
from tunnelkit.edge.hosts import (
    HostTable,
    is_valid_pattern,
    pattern_covers,
    random_name,
)
from tunnelkit.edge.sni import TERMINATE, TlsBinding
from tunnelkit.errors import TunnelkitError
from tunnelkit.hostnames import DEFAULT_PORTS

if TYPE_CHECKING:
    from tunnelkit.edge.session import EdgeSession

MAX_NAME_ATTEMPTS = 8
"""Random names tried before a bind fails with TK_HOSTNAME_TAKEN."""


def _credential_digest(credential: bytes) -> bytes:
    return hashlib.sha256(b"tunnelkit basic auth\0" + credential).digest()


@dataclass(eq=False)
class HttpBinding:
    """
    A public host name bound for one HTTP tunnel.

    @ivar binding_id: the id the agent gave the binding.
    @ivar name: the host, or a wildcard such as C{*.example.com}.
    @ivar schemes: the public schemes served, C{http} and/or C{https}.
    @ivar urls: the public URLs, C{https} first.
    @ivar host_header: the C{Host} the upstream sees, or C{b""} to pass the
        public one through.
    @ivar session: the agent session serving it, or C{None} while that
        session is gone and the name is in its grace period.
    @ivar session_id: the id of the session that holds the name.
    @ivar owner: the name of the authtoken that holds it.
    @ivar expires: when the grace period ends, or C{None} while connected.
    @ivar forwards_to: the agent's local address, for display.
    @ivar auth_digests: digests of the basic-auth users; empty for none.
    @ivar open_connections: public connections open now.
    @ivar total_connections: public connections since the binding was made.
    """

    binding_id: str
    name: str
    schemes: frozenset[str]
    urls: tuple[str, ...]
    forwards_to: str
    session_id: str
    owner: str
    host_header: bytes = b""
    auth_digests: tuple[bytes, ...] = field(default=(), repr=False)
    session: "EdgeSession | None" = None
    expires: float | None = None
    open_connections: int = 0
    total_connections: int = 0

    @staticmethod
    def digests_of(credentials: tuple[str, ...]) -> tuple[bytes, ...]:
        """
        @param credentials: C{user:password} strings.
        @return: what L{authorized} compares against.
        """
        return tuple(_credential_digest(c.encode("utf-8")) for c in credentials)

    def authorized(self, authorization: bytes | None) -> bool:
        """
        Check an C{Authorization} header against the binding's users. Every
        user's digest is compared, in constant time, whatever matches.

        @return: C{True} when the binding has no users, or the header gives
            one of them.
        """
        if not self.auth_digests:
            return True
        presented = b""
        if authorization is not None:
            scheme, _, encoded = authorization.strip().partition(b" ")
            if scheme.lower() == b"basic":
                try:
                    presented = base64.b64decode(encoded.strip(), validate=True)
                except ValueError:
                    presented = b""
        digest = _credential_digest(presented)
        matched = False
        for expected in self.auth_digests:
            matched |= hmac.compare_digest(digest, expected)
        return matched and bool(presented)


class HttpNames:
    """
    The HTTP and TLS bindings of an edge, by host name, and the rules for
    binding.

    @ivar hosts: the bindings by host name, which the ingress routes with.
    @ivar listeners: the public HTTP and HTTPS listeners by scheme, for the
        ports in URLs; the edge server fills it as it listens.
    @ivar secret: the edge's secret, for random names.
    """

    def __init__(self, config: EdgeConfig) -> None:
        self.config = config
        self.hosts: HostTable[HttpBinding | TlsBinding] = HostTable()
        self.listeners: dict[str, Any] = {}
        self.secret = b""

    def bind(self, session: "EdgeSession", request: Bind) -> HttpBinding:
        """
        Bind a public host name for an HTTP tunnel: the hostname or
        subdomain asked for, if the authtoken may take it, else a random
        name under the edge's domain that stays the same for the session.

        @return: the binding, registered in L{hosts}.
        """
        assert session.session_id is not None and session.grant is not None
        opts = request.opts if isinstance(request.opts, HttpOpts) else HttpOpts()
        schemes = self._http_schemes(opts)
        credentials = _check_credentials(opts.basic_auth)
        name = self._name(session, request.id, opts.hostname, opts.subdomain)

        self._take(name)
        urls = tuple(self._url(scheme, name) for scheme in ("https", "http"))
        binding = HttpBinding(
            binding_id=request.id,
            name=name,
            schemes=frozenset(schemes),
            urls=tuple(url for url in urls if url.split(":", 1)[0] in schemes),
            forwards_to=request.forwards_to,
            session_id=session.session_id,
            owner=session.grant.name,
            host_header=_check_host_header(opts.host_header),
            auth_digests=HttpBinding.digests_of(credentials),
            session=session,
        )
        self.hosts.add(name, binding)
        return binding

    def bind_tls(self, session: "EdgeSession", request: Bind) -> TlsBinding:
        """
        Bind a public host name for a TLS tunnel, by the rules of L{bind}:
        connections to the HTTPS port whose ClientHello names it pass
        through to the agent.

        @return: the binding, registered in L{hosts}.
        @raise TunnelkitError: C{TK_PROTO_UNSUPPORTED} when the edge has no
            HTTPS port, and the errors of host names L{bind} raises.
        """
        assert session.session_id is not None and session.grant is not None
        if "https" not in self.listeners:
            raise TunnelkitError(
                "TK_PROTO_UNSUPPORTED",
                "This edge serves no TLS tunnels: its operator has not set"
                " https_listener, the port TLS tunnels share with HTTPS. Use a"
                " tcp tunnel.",
            )
        opts = request.opts if isinstance(request.opts, TlsOpts) else TlsOpts()
        name = self._name(session, request.id, opts.hostname, opts.subdomain)

        self._take(name)
        binding = TlsBinding(
            binding_id=request.id,
            name=name,
            url=self._url("https", name).replace("https://", "tls://", 1),
            forwards_to=request.forwards_to,
            session_id=session.session_id,
            owner=session.grant.name,
            session=session,
        )
        self.hosts.add(name, binding)
        return binding

    def unbind(self, binding: HttpBinding | TlsBinding) -> None:
        """
        Remove an HTTP or TLS binding's name at once.
        """
        binding.session = None
        self.hosts.remove(binding.name, binding)

    def route_sni(self, name: str) -> TlsBinding | object | None:
        """
        Say where a connection to the HTTPS port goes by its server name.

        @param name: the SNI name, in lower case.
        @return: the L{TlsBinding} serving it, to pass the connection
            through to; L{TERMINATE} when an HTTP tunnel serves it; C{None}
            when no tunnel does.
        """
        binding = self.hosts.lookup(name)
        if binding is None or isinstance(binding, TlsBinding):
            return binding
        return TERMINATE

    def _take(self, name: str) -> None:
        """
        Make room for a new binding of C{name}: one held in its grace
        period by the same authtoken, which the checks let through, goes.
        """
        previous = self.hosts.get(name)
        if previous is not None:
            self.hosts.remove(name, previous)

    def _http_schemes(self, opts: HttpOpts) -> set[str]:
        if not self.listeners:
            raise TunnelkitError(
                "TK_PROTO_UNSUPPORTED",
                "This edge serves no HTTP tunnels: its operator has set neither"
                " http_listener nor https_listener. Use a tcp tunnel.",
            )
        asked = set(opts.schemes) or {"http", "https"}
        unknown = asked - set(DEFAULT_PORTS)
        if unknown:
            raise TunnelkitError(
                "TK_BAD_MESSAGE",
                f"Unknown scheme {sorted(unknown)[0]!r} in bind.opts.schemes; use"
                " http or https.",
            )
        served = {scheme for scheme in asked if scheme in self.listeners}
        if not served:
            raise TunnelkitError(
                "TK_SCHEME_UNAVAILABLE",
                f"This edge serves only {' and '.join(sorted(self.listeners))};"
                f" ask for that scheme instead of {' and '.join(sorted(asked))}.",
            )
        return served

    def _name(
        self, session: "EdgeSession", binding_id: str, hostname: str, subdomain: str
    ) -> str:
        """
        Choose the name of an HTTP or TLS binding: the hostname or subdomain
        asked for, if the authtoken may take it, else a random name.
        """
        grant = session.grant
        assert grant is not None and session.session_id is not None
        domain = self.config.domain
        if hostname:
            name = hostname.strip().lower().rstrip(".")
            if not is_valid_pattern(name):
                raise TunnelkitError(
                    "TK_HOSTNAME_INVALID",
                    f"{hostname!r} is not a valid host name; write one such"
                    " as app.example.com or *.example.com.",
                )
            allowed = any(pattern_covers(p, name) for p in grant.hostnames)
            if not allowed and not _directly_under(name, domain):
                raise TunnelkitError(
                    "TK_HOSTNAME_NOT_ALLOWED",
                    f"The authtoken {grant.name!r} may not bind {name}; ask the"
                    " edge's operator to list it under the token's hostnames,"
                    f" or use a subdomain of {domain}.",
                )
        elif subdomain:
            name = f"{subdomain.strip().lower()}.{domain}"
            if not is_valid_pattern(name) or name.startswith("*"):
                raise TunnelkitError(
                    "TK_HOSTNAME_INVALID",
                    f"{subdomain!r} is not a valid subdomain; use letters,"
                    " digits and hyphens.",
                )
        else:
            return self._random_name(session, binding_id)
        self._check_reservation(grant.name, name)
        self._check_holder(session, binding_id, name)
        return name

    def _check_reservation(self, owner: str, name: str) -> None:
        """
        Let the most specific hostname pattern of any authtoken that covers
        C{name} decide who may bind it: an exact name beats a wildcard, and
        a longer wildcard a shorter one.

        @raise TunnelkitError: C{TK_HOSTNAME_RESERVED} when that pattern is
            another token's.
        """
        best: tuple[int, int] | None = None
        best_owner = owner
        for grant in self.config.authtokens:
            for pattern in grant.hostnames:
                if not pattern_covers(pattern, name):
                    continue
                rank = (0 if pattern.startswith("*.") else 1, len(pattern))
                if best is None or rank > best:
                    best, best_owner = rank, grant.name
        if best_owner != owner:
            raise TunnelkitError(
                "TK_HOSTNAME_RESERVED",
                f"{name} is reserved for another authtoken on this edge;"
                " choose another name.",
            )

    def _check_holder(self, session: "EdgeSession", binding_id: str, name: str) -> None:
        holder = self.hosts.get(name)
        if holder is None:
            return
        if holder.session_id == session.session_id:
            if holder.binding_id == binding_id or holder.session is None:
                return
            raise TunnelkitError(
                "TK_HOSTNAME_TAKEN",
                f"{name} is already bound by this agent's tunnel"
                f" {holder.binding_id!r}; give each tunnel its own name.",
            )
        assert session.grant is not None
        if holder.session is None and holder.owner == session.grant.name:
            # The same authtoken's earlier session is gone and its grace
            # period runs: a restarted agent takes its names over.
            return
        raise TunnelkitError(
            "TK_HOSTNAME_TAKEN",
            f"{name} is already bound by another agent session; stop that"
            " agent or choose another name.",
        )

    def _random_name(self, session: "EdgeSession", binding_id: str) -> str:
        scope = session_scope(session)
        for attempt in range(MAX_NAME_ATTEMPTS):
            name = random_name(self.secret, scope, binding_id, attempt)
            name = f"{name}.{self.config.domain}"
            holder = self.hosts.get(name)
            if holder is None or holder.session_id == session.session_id:
                return name
        raise TunnelkitError(
            "TK_HOSTNAME_TAKEN",
            "No free random name was found for this tunnel; try again, or ask"
            " for a subdomain.",
        )

    def _url(self, scheme: str, name: str) -> str:
        listener = self.listeners.get(scheme)
        if listener is None:
            return f"{scheme}://{name}"
        port = getattr(listener.getHost(), "port", 0)
        if port == DEFAULT_PORTS[scheme]:
            return f"{scheme}://{name}"
        return f"{scheme}://{name}:{port}"


def session_scope(session: "EdgeSession") -> str:
    """
    What an affinity token is bound to: the authtoken's name and the
    session id, so that no other authtoken can use it.
    """
    assert session.grant is not None and session.session_id is not None
    return f"{session.grant.name}\0{session.session_id}"


def _directly_under(name: str, domain: str) -> bool:
    """
    Whether C{name} is one label below C{domain}, as a subdomain would be.
    """
    label, dot, rest = name.partition(".")
    return bool(dot) and rest == domain and label != "*"


def _check_host_header(value: str) -> bytes:
    """
    Check the C{Host} a bind asks the edge to send upstream: it is written
    into every request, so it must be one token of printable ASCII.

    @raise TunnelkitError: C{TK_HOST_HEADER_INVALID} otherwise.
    """
    if not all("!" <= character <= "~" for character in value):
        raise TunnelkitError(
            "TK_HOST_HEADER_INVALID",
            "The host header to send upstream must be printable ASCII without"
            " spaces, such as localhost:8080; fix --host-header.",
        )
    return value.encode("ascii")


def _check_credentials(credentials: tuple[str, ...]) -> tuple[str, ...]:
    """
    Check the basic-auth users of a bind request.

    @raise TunnelkitError: C{TK_BASIC_AUTH_INVALID} for a credential without
        a user or with a password under 8 characters.
    """
    for credential in credentials:
        try:
            parse_credential(credential)
        except ValueError as error:
            raise TunnelkitError(
                "TK_BASIC_AUTH_INVALID",
                f"A basic-auth credential is refused: {error}.",
            ) from None
    return credentials
