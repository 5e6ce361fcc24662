"""
A tunnel as the agent runs it: its definition, its public URL once bound,
and where its connections go.
"""

from dataclasses import dataclass

from tunnelkit.config import TunnelDefinition, UpstreamAddress
from tunnelkit.control.messages import Bind, TcpOpts


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
        @return: the tunnel's protocol.
        """
        return self.definition.proto or "tcp"

    @property
    def forwards_to(self) -> str:
        """
        @return: the local address, for display.
        """
        return upstream_display(self.definition.addr, self.definition.proto)

    def bind_request(self) -> Bind:
        """
        @return: the request that binds this tunnel on the edge.
        @raise TunnelkitError: for a protocol this agent cannot bind yet.
        """
        definition = self.definition
        remote_addr = definition.remote_addr
        opts = TcpOpts(remote_addr=str(remote_addr) if remote_addr else "")
        return Bind(
            id=self.name,
            name=self.name,
            proto=self.proto,
            forwards_to=self.forwards_to,
            metadata=definition.metadata or "",
            opts=opts,
            token=self.token,
        )
