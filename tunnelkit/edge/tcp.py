"""
Public TCP listeners of the edge: each accepted connection becomes one
proxied stream to the agent that holds the binding.
"""

from typing import TYPE_CHECKING

from twisted.internet.interfaces import IAddress, IListeningPort
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from tunnelkit.control.messages import ProxyHeader, encode_message
from tunnelkit.errors import TunnelkitError
from tunnelkit.addresses import format_address
from tunnelkit.splice import SpliceEnd, splice

if TYPE_CHECKING:
    from tunnelkit.edge.session import EdgeSession

_log = Logger()


class TcpBinding:
    """
    A public TCP port bound for one tunnel.

    @ivar session: the agent session that serves it, or C{None} while its
        session is gone and the port is in its grace period.
    @ivar listener: the listening port, once listening.
    """

    def __init__(self, binding_id: str, port: int, url: str, forwards_to: str) -> None:
        self.binding_id = binding_id
        self.port = port
        self.url = url
        self.forwards_to = forwards_to
        self.session: "EdgeSession | None" = None
        self.listener: IListeningPort | None = None
        self.open_connections = 0
        self.total_connections = 0

    def factory(self) -> "TcpIngressFactory":
        """
        @return: the factory for this binding's listener.
        """
        return TcpIngressFactory(self)


class _ProxyStream(SpliceEnd):
    """
    The edge's end of a proxied stream: the header first, then raw bytes.
    """

    def __init__(self, header: bytes) -> None:
        super().__init__()
        self._header = header

    def connectionMade(self) -> None:
        self.transport.write(self._header)


class PublicConnection(SpliceEnd):
    """
    A connection from the internet to a TCP binding.
    """

    def __init__(self, binding: TcpBinding, client: IAddress | None) -> None:
        super().__init__()
        self.binding = binding
        self.client = client
        self._counted = False

    def connectionMade(self) -> None:
        binding = self.binding
        session = binding.session
        if session is None:
            _log.info(
                "connection from {client} to {url} closed: the tunnel is offline",
                client=format_address(self.client),
                url=binding.url,
            )
            self.transport.abortConnection()
            return
        binding.open_connections += 1
        binding.total_connections += 1
        self._counted = True
        header = encode_message(
            ProxyHeader(
                binding_id=binding.binding_id,
                client_addr=format_address(self.client),
                proto="tcp",
            )
        )
        stream = _ProxyStream(header)
        try:
            opened = session.mux.open_stream(stream)
        except TunnelkitError as error:
            _log.warn(
                "cannot proxy {client} to {url}: {error}",
                client=format_address(self.client),
                url=binding.url,
                error=error,
            )
            self.transport.abortConnection()
            return
        opened.addErrback(self._not_opened)
        splice(self, stream)

    def _not_opened(self, reason: Failure) -> None:
        _log.warn(
            "agent did not take connection from {client} to {url}: {error}",
            client=format_address(self.client),
            url=self.binding.url,
            error=reason.getErrorMessage(),
        )

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._counted:
            self._counted = False
            self.binding.open_connections -= 1
        super().connectionLost(reason)


class TcpIngressFactory(Factory):
    """
    Builds a L{PublicConnection} for each connection to a binding's port.
    """

    noisy = False

    def __init__(self, binding: TcpBinding) -> None:
        self.binding = binding

    def buildProtocol(self, addr: IAddress | None) -> PublicConnection:
        return PublicConnection(self.binding, addr)
