"""
A tunnel as the agent runs it: its definition, its public URL once bound,
and where its connections go.
"""

from dataclasses import dataclass

from tunnelkit.config import TunnelDefinition, UpstreamAddress
from tunnelkit.control.messages import Bind, BindOpts, HttpOpts, TcpOpts, TlsOpts
from tunnelkit.errors import TunnelkitError


def upstream_display(addr: UpstreamAddress, proto: str | None) -> str:
    """
    @return: the local address as ngrok shows it: C{localhost:22} for TCP,
        a URL for HTTP.
    """
    if proto == "tcp" or proto == "tls":
        return f"{addr.host}:{addr.port}"
    return str(addr)


@dataclass
class Tunnel:
    """
    One running tunnel.

    @ivar public_url: the URL the edge gave it, or C{None} until bound.
    @ivar token: the edge's affinity token for the last binding, sent back
        to ask for the same public address after a reconnect.
    @ivar open_connections: proxied connections open now.
    @ivar total_connections: proxied connections since the agent started.
    """

    definition: TunnelDefinition
    public_url: str | None = None
    token: str = ""
    open_connections: int = 0
    total_connections: int = 0

    @property
    def name(self) -> str:
        """
        @return: the tunnel's name, also its binding id.
        """
        return self.definition.name

    @property
    def proto(self) -> str:
        """
        @return: the tunnel's protocol, or C{""} for a labeled tunnel.
        """
        return self.definition.proto or ""

    @property
    def forwards_to(self) -> str:
        """
        @return: the local address, for display.
        """
        return upstream_display(self.definition.addr, self.definition.proto)

    def bind_request(self) -> Bind:
        """
        @return: the request that binds this tunnel on the edge.
        @raise TunnelkitError: C{TK_PROTO_UNSUPPORTED} for a labeled tunnel,
            which this agent cannot bind yet.
        """
        definition = self.definition
        if definition.labeled or not definition.proto:
            raise TunnelkitError(
                "TK_PROTO_UNSUPPORTED",
                f"Tunnel {self.name!r} is a labeled tunnel, which this version"
                " cannot start yet; give it a proto (tcp) instead of labels.",
            )
        return Bind(
            id=self.name,
            name=self.name,
            proto=self.proto,
            forwards_to=self.forwards_to,
            metadata=definition.metadata or "",
            opts=self._options(),
            token=self.token,
        )

    def _options(self) -> BindOpts:
        definition = self.definition
        if definition.proto == "tcp":
            remote_addr = definition.remote_addr
            return TcpOpts(remote_addr=str(remote_addr) if remote_addr else "")
        if definition.proto == "tls":
            return TlsOpts(
                subdomain=definition.subdomain or "",
                hostname=definition.hostname or "",
            )
        return HttpOpts(
            subdomain=definition.subdomain or "",
            hostname=definition.hostname or "",
            basic_auth=tuple(
                f"{credential.username}:{credential.password}"
                for credential in definition.basic_auth
            ),
            schemes=definition.schemes,
        )
