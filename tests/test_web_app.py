"""
Tests for L{tunnelkit.web.app}: where the web interface listens, what it
logs, and how the agent application starts and stops it.
"""

import errno
import socket
from typing import Any

from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from tunnelkit.agent.app import AgentApplication
from tunnelkit.config import AgentConfig, HostPort
from tunnelkit.errors import TunnelkitError
from tunnelkit.web.app import WebInterface


class BusyReactor(MemoryReactorClock):
    """
    A memory reactor on which some ports are taken.

    @ivar taken: the ports another program listens on.
    @ivar refusal: the error every listen fails with, if set.
    """

    def __init__(self, taken: set[int] = set(), refusal: int | None = None) -> None:
        super().__init__()
        self.taken = taken
        self.refusal = refusal

    def listenTCP(
        self, port: int, factory: Any, backlog: int = 50, interface: str = ""
    ) -> Any:
        if self.refusal is not None:
            raise CannotListenError(
                interface, port, socket.error(self.refusal, "Cannot assign address")
            )
        if port in self.taken:
            raise CannotListenError(
                interface,
                port,
                socket.error(errno.EADDRINUSE, "Address already in use"),
            )
        return super().listenTCP(port, factory, backlog, interface)


def listen(
    reactor: BusyReactor, address: HostPort, fallback: bool = False
) -> tuple[WebInterface, str]:
    """
    @return: a web interface for a not started agent, listening on
        C{address} (or a later port, with C{fallback}), and its URL.
    """
    app = AgentApplication(AgentConfig(), [], reactor)
    web = WebInterface(app, ["a.example"])
    return web, web.listen(reactor, address, fallback)


class ListenTests(SynchronousTestCase):
    """
    L{WebInterface.listen}.
    """

    def test_listens(self) -> None:
        """
        The interface listens on the address, and logs C{starting web
        service} with it and the allowed hosts, as ngrok does.
        """
        reactor = BusyReactor()

        with capturedLogs() as events:
            web, url = listen(reactor, HostPort("127.0.0.1", 4040))

        [(port, _, _, interface)] = reactor.tcpServers
        self.assertEqual(
            (port, interface, url), (4040, "127.0.0.1", "http://127.0.0.1:4040")
        )
        [started] = [e for e in events if e.get("log_format") == "starting web service"]
        self.assertEqual(
            (started["obj"], started["addr"], started["allow_hosts"]),
            ("web", "127.0.0.1:4040", ["a.example"]),
        )

    def test_default_taken(self) -> None:
        """
        With the default address, a taken port makes way for the next.
        """
        reactor = BusyReactor(taken={4040, 4041})

        web, url = listen(reactor, HostPort("127.0.0.1", 4040), fallback=True)

        self.assertEqual(url, "http://127.0.0.1:4042")

    def test_default_all_taken(self) -> None:
        """
        When the ten default ports are taken, the error says so.
        """
        reactor = BusyReactor(taken=set(range(4040, 4050)))

        error = self.assertRaises(
            TunnelkitError, listen, reactor, HostPort("127.0.0.1", 4040), True
        )

        self.assertEqual(error.code, "TK_WEB_ADDR_IN_USE")
        self.assertIn("web_addr", error.message)

    def test_set_address_taken(self) -> None:
        """
        An address from the file must be free: no other port is tried.
        """
        reactor = BusyReactor(taken={5000})

        error = self.assertRaises(
            TunnelkitError, listen, reactor, HostPort("127.0.0.1", 5000)
        )

        self.assertEqual(error.code, "TK_WEB_ADDR_IN_USE")
        self.assertEqual(reactor.tcpServers, [])

    def test_cannot_listen(self) -> None:
        """
        An address that cannot be listened on at all is C{TK_WEB_ADDR_INVALID}.
        """
        reactor = BusyReactor(refusal=errno.EADDRNOTAVAIL)

        error = self.assertRaises(
            TunnelkitError, listen, reactor, HostPort("192.0.2.1", 4040)
        )

        self.assertEqual(error.code, "TK_WEB_ADDR_INVALID")


class ApplicationTests(SynchronousTestCase):
    """
    The web interface in L{AgentApplication}.
    """

    def test_clash_fails_start(self) -> None:
        """
        When the web interface cannot listen, the agent does not start:
        C{ready} fails with the error, before any edge is started.
        """
        reactor = BusyReactor(taken={5000})
        app = AgentApplication(
            AgentConfig(web_addr=HostPort("127.0.0.1", 5000)), [], reactor
        )

        app.startService()

        failure = self.failureResultOf(app.ready, TunnelkitError)
        self.assertEqual(failure.value.code, "TK_WEB_ADDR_IN_USE")
        self.assertIsNone(app.edge)
        self.assertIsNone(app.web_url)

    def test_default_unset_falls_back(self) -> None:
        """
        With C{web_addr} unset and 4040 taken, the agent's web interface
        listens on the next port.
        """
        reactor = BusyReactor(taken={4040})
        app = AgentApplication(AgentConfig(), [], reactor, state_dir=self.mktemp())

        app.startService()

        self.assertEqual(app.web_url, "http://127.0.0.1:4041")

    def test_default_written_taken(self) -> None:
        """
        C{web_addr: 127.0.0.1:4040} written in the file must be free, although
        it is the default: the agent does not start, and no other port is
        tried.
        """
        reactor = BusyReactor(taken={4040})
        config = AgentConfig(web_addr=HostPort("127.0.0.1", 4040), web_addr_set=True)
        app = AgentApplication(config, [], reactor)

        app.startService()

        failure = self.failureResultOf(app.ready, TunnelkitError)
        self.assertEqual(failure.value.code, "TK_WEB_ADDR_IN_USE")
        self.assertEqual(reactor.tcpServers, [])

    def test_web_addr_false(self) -> None:
        """
        With C{web_addr: false} there is no web interface and no URL.
        """
        app = AgentApplication(AgentConfig(web_addr=None), [], BusyReactor())

        self.assertEqual((app.web, app.web_url), (None, None))

    def test_inspection(self) -> None:
        """
        The application's store holds C{inspect_db_size} bytes, and each
        body is capped at C{inspect_body_size}; C{-1} turns inspection off.
        """
        app = AgentApplication(
            AgentConfig(inspect_db_size=4096, inspect_body_size=10), [], BusyReactor()
        )
        off = AgentApplication(AgentConfig(inspect_db_size=-1), [], BusyReactor())

        assert app.inspection is not None
        self.assertEqual(
            (app.inspection.store.capacity, app.inspection.body_cap), (4096, 10)
        )
        self.assertIsNone(off.inspection)
