"""
A tunnel as the agent runs it: its definition, its public URL once bound,
and where its connections go.
"""

from dataclasses import dataclass, field

from tunnelkit.agent.metrics import TunnelMetrics, WallClock
from tunnelkit.config import TunnelDefinition, UpstreamAddress
from tunnelkit.control.messages import (
    Bind,
    BindLabels,
    BindOpts,
    HttpOpts,
    TcpOpts,
    TlsOpts,
)
from tunnelkit.hostnames import DEFAULT_PORTS


def upstream_display(addr: UpstreamAddress, proto: str | None) -> str:
    """
    @return: the local address as ngrok shows it: C{localhost:22} for TCP,
        a URL for HTTP.
    """
    if proto == "tcp" or proto == "tls":
        return f"{addr.host}:{addr.port}"
    return str(addr)


def rewritten_host(addr: UpstreamAddress) -> str:
    """
    @return: the C{Host} an upstream expects when the tunnel's C{host_header}
        is C{rewrite}: its host, with C{:port} unless the port is the
        scheme's default (80 for C{http}, 443 for C{https}); C{""} for the
        file server, which has no host.
    """
    if addr.port is None:
        return ""
    host = f"[{addr.host}]" if ":" in addr.host else addr.host
    if addr.port == DEFAULT_PORTS.get(addr.scheme):
        return host
    return f"{host}:{addr.port}"


@dataclass
class Tunnel:
    """
    One running tunnel.

    @ivar public_urls: every URL the edge gave it, the main one first; empty
        until bound.
    @ivar token: the edge's affinity token for the last binding, sent back
        to ask for the same public address after a reconnect.
    @ivar metrics: its connections and HTTP exchanges in numbers; the
        agent service gives each tunnel metrics that feed its own, and a
        tunnel made on its own times them by the system clock.
    """

    definition: TunnelDefinition
    public_urls: tuple[str, ...] = ()
    token: str = ""
    metrics: TunnelMetrics = field(
        default_factory=lambda: TunnelMetrics(WallClock()), compare=False, repr=False
    )

    @property
    def open_connections(self) -> int:
        """
        @return: proxied connections open now.
        """
        return self.metrics.open_connections

    @property
    def total_connections(self) -> int:
        """
        @return: proxied connections since the tunnel was made.
        """
        return self.metrics.total_connections

    @property
    def public_url(self) -> str | None:
        """
        The main URL the edge gave the tunnel, or C{None} until bound;
        setting it sets L{public_urls} to that one URL (or none).
        """
        return self.public_urls[0] if self.public_urls else None

    @public_url.setter
    def public_url(self, url: str | None) -> None:
        self.public_urls = (url,) if url else ()

    def named_urls(self) -> list[tuple[str, str]]:
        """
        Name each public URL as ngrok v2 names its tunnels: when an HTTP
        tunnel has both an C{https} and an C{http} URL, the C{http} one is
        called C{"NAME (http)"}; every other URL carries the plain name.

        @return: C{(name, url)} for each URL in L{public_urls}.
        """
        twin = f"{self.name} (http)" if len(self.public_urls) > 1 else self.name
        return [
            (twin if url.startswith("http:") else self.name, url)
            for url in self.public_urls
        ]

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

    @property
    def labels(self) -> str:
        """
        @return: a labeled tunnel's labels as people write them,
            C{app=web,env=prod}; C{""} for other tunnels.
        """
        return ",".join(f"{name}={value}" for name, value in self.definition.labels)

    def bind_request(self) -> Bind | BindLabels:
        """
        @return: the request that binds this tunnel on the edge: for a
            labeled tunnel, the one that offers it to the edge routes that
            ask for its labels.
        """
        definition = self.definition
        if definition.labeled or not definition.proto:
            return BindLabels(
                id=self.name,
                name=self.name,
                labels=tuple(f"{k}={v}" for k, v in definition.labels),
                forwards_to=self.forwards_to,
                metadata=definition.metadata or "",
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
            host_header=self._host_header(),
        )

    def _host_header(self) -> str:
        """
        @return: the C{Host} the edge writes into each request: C{""} to
            preserve the public one, the upstream's for C{rewrite}, else the
            literal value.
        """
        host_header = self.definition.host_header or "preserve"
        if host_header == "preserve":
            return ""
        if host_header == "rewrite":
            return rewritten_host(self.definition.addr)
        return host_header
