"""
The agent's web interface as a whole: the API and the pages behind the
guard, served over HTTP on C{web_addr}.

L{WebInterface.listen} binds the address and logs C{starting web service}
with the address bound, as ngrok does (wrappers such as pyngrok read the
API's address from that line). When C{web_addr} is left unset and its
default, C{127.0.0.1:4040}, is taken, the next ports up to 4049 are tried in
turn, as ngrok does, so that several agents can run on one machine; an
address set in the file, the default one included, must be free.
"""

from __future__ import annotations

from typing import Any, Sequence

from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.web.resource import IResource
from twisted.web.server import Site

from tunnelkit.config import HostPort
from tunnelkit.errors import TunnelkitError
from tunnelkit.web.api import AgentApi, ApiHost
from tunnelkit.web.guard import GuardedResource, HostAllowList

_log = Logger()

DEFAULT_PORT_TRIES = 10
"""Ports tried from the default C{web_addr}'s, one after another, when unset."""


class _WebSite(Site):
    """
    The interface's site: no access log beyond a debug line per request,
    and a record of open connections, so that stopping aborts them (event
    streams never end on their own).
    """

    noisy = False

    def __init__(self, resource: IResource) -> None:
        super().__init__(resource)
        self.open_channels: set[Any] = set()

    def buildProtocol(self, addr: Any) -> Any:
        channel = super().buildProtocol(addr)
        if channel is None:
            return None
        self.open_channels.add(channel)
        lost = channel.connectionLost

        def forget(reason: Any) -> None:
            self.open_channels.discard(channel)
            lost(reason)

        channel.connectionLost = forget
        return channel

    def log(self, request: Any) -> None:
        _log.debug(
            "{method} {path} {code}",
            method=request.method.decode("latin-1"),
            path=request.uri.decode("latin-1"),
            code=request.code,
            obj="web",
        )


def web_resource(host: ApiHost, allow_hosts: Sequence[str]) -> IResource:
    """
    @return: the root resource of the web interface: the API and the pages
        behind the Host and content-type guard.
    """
    return GuardedResource(AgentApi(host).app.resource(), HostAllowList(allow_hosts))


class WebInterface:
    """
    The web interface of one agent, listening once L{listen} succeeded.

    @ivar url: its base URL, such as C{http://127.0.0.1:4040}, once
        listening.
    """

    def __init__(self, host: ApiHost, allow_hosts: Sequence[str]) -> None:
        self.allow_hosts = list(allow_hosts)
        self.site = _WebSite(web_resource(host, allow_hosts))
        self.url: str | None = None
        self._port: IListeningPort | None = None

    def listen(self, reactor: Any, address: HostPort, fallback: bool = False) -> str:
        """
        Listen on C{address}, or with C{fallback} on the first free port of
        the ten from its port.

        @param fallback: whether later ports may be used: for the default
            address when C{web_addr} is unset (L{AgentConfig.web_addr_fallback}).

        @return: the base URL.
        @raise TunnelkitError: C{TK_WEB_ADDR_IN_USE} when the address (or
            every port tried) is taken, C{TK_WEB_ADDR_INVALID} when it
            cannot be listened on at all.
        """
        tries = DEFAULT_PORT_TRIES if fallback else 1
        for offset in range(tries):
            candidate = HostPort(address.host, address.port + offset)
            try:
                self._port = reactor.listenTCP(
                    candidate.port, self.site, interface=candidate.host
                )
            except CannotListenError as error:
                if "in use" in str(error.socketError) and offset + 1 < tries:
                    continue
                raise self._listen_error(candidate, error, tries)
            break
        assert self._port is not None
        bound: Any = self._port.getHost()
        shown = str(HostPort(address.host, bound.port))
        self.url = f"http://{shown}"
        _log.info(
            "starting web service",
            obj="web",
            addr=shown,
            allow_hosts=self.allow_hosts,
        )
        return self.url

    @staticmethod
    def _listen_error(
        address: HostPort, error: CannotListenError, tries: int
    ) -> TunnelkitError:
        reason = str(error.socketError)
        if "in use" in reason:
            taken = (
                f"{address} and the {tries - 1} ports before it are"
                if tries > 1
                else f"{address} is"
            )
            return TunnelkitError(
                "TK_WEB_ADDR_IN_USE",
                f"The web interface cannot listen: {taken} already in use."
                " Set web_addr to a free address (port 0 lets the system pick"
                " one), or web_addr: false to run without it.",
            )
        return TunnelkitError(
            "TK_WEB_ADDR_INVALID",
            f"The web interface cannot listen on {address}: {reason}. Set"
            " web_addr to an address of this machine, or web_addr: false.",
        )

    def stop(self) -> Any:
        """
        Stop listening and close the open connections.

        @return: a Deferred that fires once the port is closed, or C{None}.
        """
        for channel in list(self.site.open_channels):
            transport = channel.transport
            if transport is not None:
                transport.abortConnection()
        port, self._port = self._port, None
        return port.stopListening() if port is not None else None
