"""
The whole agent process as one service: the web interface on
C{web_addr}, the embedded edge when no C{server_addr} is configured, then
the agent's session to its edge.
"""

import os
from dataclasses import replace
from typing import Any, Callable, Sequence

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from tunnelkit.agent.captures import CaptureStore
from tunnelkit.agent.inspection import Inspection
from tunnelkit.agent.service import AgentService
from tunnelkit.config import AgentConfig, EdgeConfig, HostPort, TunnelDefinition
from tunnelkit.config.edge import PortRange
from tunnelkit.edge.server import EdgeServer
from tunnelkit.errors import TunnelkitError
from tunnelkit.web.app import WebInterface

_log = Logger()


def default_state_dir(environ: dict[str, str] | None = None) -> str:
    """
    @return: where the agent keeps the embedded edge's state: under
        C{$XDG_STATE_HOME}, else C{~/.local/state}.
    """
    environ = dict(os.environ) if environ is None else environ
    base = environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(base, "tunnelkit", "embedded-edge")


def embedded_edge_config(state_dir: str, tls: bool = False) -> EdgeConfig:
    """
    @param tls: whether to serve TLS tunnels too.
    @return: the configuration of an edge inside the agent's process: on
        loopback only, with public HTTP on a port the kernel picks, the base
        domain C{localhost} (so that C{http://NAME.localhost:PORT} reaches it
        from this machine), accepting the agent without an authtoken. It
        serves HTTPS only with C{tls}, for the TLS tunnels that share its
        port: no certificate checker accepts a wildcard over the single
        label C{localhost}, so no browser would trust the names it
        terminates itself, while a TLS tunnel's service presents its own.
    """
    return EdgeConfig(
        agent_listener="tcp:0:interface=127.0.0.1",
        http_listener="tcp:0:interface=127.0.0.1",
        https_listener="tcp:0:interface=127.0.0.1" if tls else None,
        domain="localhost",
        public_host="127.0.0.1",
        tcp_bind_host="127.0.0.1",
        tcp_port_range=PortRange(20000, 29999),
        allow_anonymous=True,
        state_dir=state_dir,
    )


class AgentApplication(MultiService):
    """
    The agent process: an optional embedded edge and the agent service.

    @ivar agent: the agent service, once created.
    @ivar edge: the embedded edge, when there is one.
    @ivar ready: fires with the agent service once its tunnels are bound,
        or fails with the error that stopped it: C{TK_LABELS_NEED_EDGE},
        before anything starts, for a labeled tunnel without a
        C{server_addr}, as the embedded edge has no edges to route to it.
    @ivar inspection: the captures of HTTP exchanges and how they are made,
        or C{None} when C{inspect_db_size} is C{-1}.
    @ivar web: the web interface, once listening; C{None} with
        C{web_addr: false}.
    @ivar web_url: the web interface's base URL, such as
        C{http://127.0.0.1:4040}, once listening, else C{None}.
    """

    def __init__(
        self,
        config: AgentConfig,
        tunnels: Sequence[TunnelDefinition],
        reactor: Any,
        authtoken: str = "",
        state_dir: str | None = None,
        on_stopped: Callable[[Any], None] | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.tunnel_definitions = list(tunnels)
        self.reactor = reactor
        self.authtoken = authtoken
        self.state_dir = state_dir or default_state_dir()
        self.on_stopped = on_stopped
        self.agent: AgentService | None = None
        self.edge: EdgeServer | None = None
        self.ready: Deferred = Deferred()
        self.inspection: Inspection | None = None
        capacity = config.inspect_capacity
        if capacity is not None:
            store = CaptureStore(capacity)
            self.inspection = Inspection(store, reactor, config.inspect_body_size)
        self.web: WebInterface | None = None
        self.web_url: str | None = None

    def startService(self) -> None:
        super().startService()
        ensureDeferred(self._start()).addErrback(self._failed)

    async def _start(self) -> None:
        config = self.config
        labeled = [d.name for d in self.tunnel_definitions if d.labels]
        if config.server_addr is None and labeled:
            raise TunnelkitError(
                "TK_LABELS_NEED_EDGE",
                f"The labeled tunnel {labeled[0]!r} needs an edge that defines"
                " edges in its edge.yml, and the edge inside the agent defines"
                " none; set server_addr to such an edge.",
            )
        if config.web_addr is not None:
            web = WebInterface(self, config.web_allow_hosts)
            self.web_url = web.listen(
                self.reactor, config.web_addr, config.web_addr_fallback
            )
            self.web = web
        edge_address = config.server_addr
        root_cas: str | None = config.root_cas
        if edge_address is None:
            tls = any(d.proto == "tls" for d in self.tunnel_definitions)
            self.edge = EdgeServer(
                embedded_edge_config(self.state_dir, tls), self.reactor
            )
            port = await self.edge.start()
            address = port.getHost()
            edge_address = HostPort("127.0.0.1", address.port)
            assert self.edge.ca_path is not None
            root_cas = self.edge.ca_path.path
            _log.info(
                "no server_addr configured; started an embedded edge on {edge}",
                edge=str(edge_address),
                obj="edge",
            )
        self.agent = AgentService(
            replace(config, server_addr=edge_address),
            self.tunnel_definitions,
            self.reactor,
            edge_address,
            root_cas,
            self.authtoken,
            inspection=self.inspection,
        )
        self.agent.setServiceParent(self)
        self.agent.stopped.addBoth(self._agent_stopped)
        self.agent.ready.addCallbacks(
            lambda _: self.ready.callback(self.agent), self._failed
        )

    def _failed(self, failure: Failure) -> None:
        if not self.ready.called:
            self.ready.errback(failure)
        elif self.on_stopped is None:
            _log.failure("the agent failed", failure)

    def _agent_stopped(self, outcome: Any) -> None:
        if self.on_stopped is not None:
            self.on_stopped(outcome)

    def stopService(self) -> Deferred:
        stopping = super().stopService()
        web, self.web = self.web, None
        if web is not None:
            stopping.addBoth(lambda _: web.stop())
        edge, self.edge = self.edge, None
        if edge is not None:
            stopping.addBoth(lambda _: edge.stopService())
        return stopping
