"""
The public TCP ports the edge binds for agents' TCP tunnels: which port a
bind gets (a reserved address when asked for, else the port the session
held before or its affinity token names, else a free port of the range),
listening on it, and closing it again.
"""

from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError

from tunnelkit.control.messages import Bind, TcpOpts
from tunnelkit.edge.names import session_scope
from tunnelkit.edge.tcp import TcpBinding
from tunnelkit.errors import TunnelkitError

if TYPE_CHECKING:
    from tunnelkit.edge.server import EdgeServer
    from tunnelkit.edge.session import EdgeSession

MAX_BIND_ATTEMPTS = 64
"""Ports of the range tried before a bind fails with TK_PORT_RANGE_EXHAUSTED."""


class TcpBindings:
    """
    The TCP tunnels' public ports of an edge server, which keeps the book
    of held ports (L{tunnelkit.edge.ports.PortBook}) and the affinity
    tokens.

    @ivar bindings: the bindings by port, listening or in their grace
        period.
    """

    def __init__(self, server: "EdgeServer") -> None:
        self.server = server
        self.bindings: dict[int, TcpBinding] = {}

    def bind(self, session: "EdgeSession", request: Bind) -> tuple[TcpBinding, str]:
        """
        Bind a public TCP port for a session: a reserved address if asked
        for, else the port the session held before, else a free port of
        the range.

        @return: the binding and its affinity token.
        """
        assert session.session_id is not None and session.grant is not None
        opts = request.opts if isinstance(request.opts, TcpOpts) else TcpOpts()

        if opts.remote_addr:
            port = self._reserved_port(session, opts.remote_addr, request.id)
            candidates = [port]
        else:
            candidates = self._preferred_ports(session, request)
            candidates.extend(self.server.ports.candidates(MAX_BIND_ATTEMPTS))

        for port in candidates:
            binding = self._take_port(session, request, port)
            if binding is not None:
                assert self.server.tokens is not None
                owner = session_scope(session)
                return binding, self.server.tokens.issue(owner, request.id, port)
            if opts.remote_addr:
                raise TunnelkitError(
                    "TK_ADDR_UNAVAILABLE",
                    f"{opts.remote_addr} cannot be bound on this edge right now;"
                    " another program may hold the port.",
                )
        raise TunnelkitError(
            "TK_PORT_RANGE_EXHAUSTED",
            f"No free port is left in {self.server.config.tcp_port_range.low}-"
            f"{self.server.config.tcp_port_range.high}; stop other tunnels or ask the"
            " edge's operator to widen tcp_port_range.",
        )

    def _reserved_port(
        self, session: "EdgeSession", remote_addr: str, binding_id: str
    ) -> int:
        grant = session.grant
        assert grant is not None
        for reserved in grant.reserved_addrs:
            if f"{reserved.host}:{reserved.port}" == remote_addr or (
                str(reserved) == remote_addr
            ):
                hold = self.server.ports.holder(reserved.port)
                if (
                    hold is not None
                    and hold.session_id != session.session_id
                    and hold.expires is not None
                    and self.server.session_owners.get(hold.session_id) == grant.name
                ):
                    # The same authtoken's earlier session is gone and its
                    # grace period runs: an agent restarted with a new
                    # session takes its reserved address over.
                    self.server.ports.release(reserved.port)
                    hold = None
                if hold is not None and hold.session_id != session.session_id:
                    raise TunnelkitError(
                        "TK_ADDR_IN_USE",
                        f"{remote_addr} is bound by another agent session of"
                        f" the authtoken {grant.name!r}; stop that agent first.",
                    )
                if hold is not None and hold.binding_id != binding_id:
                    raise TunnelkitError(
                        "TK_ADDR_IN_USE",
                        f"{remote_addr} is already bound by this agent's tunnel"
                        f" {hold.binding_id!r}; give each tunnel its own address.",
                    )
                return reserved.port
        raise TunnelkitError(
            "TK_ADDR_NOT_RESERVED",
            f"{remote_addr} is not reserved for the authtoken {grant.name!r}; use"
            " one of its reserved addresses or leave remote_addr out.",
        )

    def _preferred_ports(self, session: "EdgeSession", request: Bind) -> list[int]:
        assert session.session_id is not None
        preferred = []
        held = self.server.ports.held_for(session.session_id, request.id)
        if held is not None:
            preferred.append(held)
        token = request.token
        if token and self.server.tokens is not None:
            port = self.server.tokens.port_of(token, session_scope(session), request.id)
            low, high = (
                self.server.config.tcp_port_range.low,
                self.server.config.tcp_port_range.high,
            )
            if (
                port is not None
                and low <= port <= high
                and port not in self.server.ports.reserved
            ):
                preferred.append(port)
        return preferred

    def _take_port(
        self, session: "EdgeSession", request: Bind, port: int
    ) -> TcpBinding | None:
        session_id = session.session_id
        assert session_id is not None
        hold = self.server.ports.holder(port)
        binding = self.bindings.get(port)
        if hold is not None:
            if hold.session_id != session_id or hold.binding_id != request.id:
                return None
            if binding is not None and binding.session not in (None, session):
                return None
        if binding is None:
            url = f"tcp://{self.server.config.public_host}:{port}"
            binding = TcpBinding(request.id, port, url, request.forwards_to)
            try:
                binding.listener = self.server.reactor.listenTCP(
                    port, binding.factory(), interface=self.server.config.tcp_bind_host
                )
            except CannotListenError:
                return None
            self.bindings[port] = binding
        binding.session = session
        self.server.ports.hold(port, session_id, request.id)
        return binding

    def unbind(self, binding: TcpBinding) -> None:
        """
        Close a binding's public port and free it.
        """
        binding.session = None
        self.server.ports.release(binding.port)
        if self.bindings.get(binding.port) is binding:
            del self.bindings[binding.port]
        self._stop_listening(binding)

    def close(self, port: int) -> bool:
        """
        Stop listening on a port whose grace period has ended.

        @return: whether a binding held the port.
        """
        binding = self.bindings.pop(port, None)
        if binding is None:
            return False
        self._stop_listening(binding)
        return True

    def stop(self) -> "list[Deferred[None]]":
        """
        Stop listening on every port, as the edge stops.

        @return: what fires as each listener has stopped.
        """
        waiting = [self._stop_listening(b) for b in self.bindings.values()]
        self.bindings.clear()
        return [d for d in waiting if d is not None]

    def _stop_listening(self, binding: TcpBinding) -> "Deferred[None] | None":
        listener, binding.listener = binding.listener, None
        if listener is None:
            return None
        return listener.stopListening()
