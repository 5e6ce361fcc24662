"""
End-to-end tests of TLS tunnels: the real C{tunnelkit edge} and
C{tunnelkit tls} run as child processes on loopback, and C{openssl
s_client}, C{curl} and TLS clients of this process reach local TLS
services through the edge's HTTPS port by the tunnel's name (SNI).

The edge serves HTTPS and TLS tunnels on one port under the domain
C{tunnels.test}; every local service has a certificate from a CA of its
own, which the clients trust instead of the edge's, so a completed
handshake proves the client saw the service's certificate, not the
edge's.
"""

import os
import shutil
from typing import Any

from OpenSSL import SSL
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import SSL4ClientEndpoint, TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SkipTest

from tests.e2e import (
    LOOPBACK,
    TOKEN,
    WAIT,
    Program,
    Steps,
    bounded,
    free_port,
    mentions,
    start_agent,
    start_program,
    write_agent_config,
    write_file,
)
from tests.loopback import _Echo, _ServerFactory, listen_loopback
from tests.tlscerts import Issued, issue, make_ca
from tests.tlshello import in_records
from tests.webclients import Curl, RawConnections
from tests.webservers import RecordingUpstream, listen_recording
from tests.webtunnels import HttpTunnelTestCase, tunnel_urls
from tunnelkit.pki import server_tls_options

OPENSSL_INSTALL = "apt-get install -y openssl"

NAME = "secure.tunnels.test"
"""The name of the TLS tunnel most tests bind."""


def openssl() -> str:
    """
    @return: the C{openssl} command.
    @raise SkipTest: when it is not installed.
    """
    path = shutil.which("openssl")
    if path is None:
        raise SkipTest(f"needs openssl: {OPENSSL_INSTALL}")
    return path


class TlsTunnelTestCase(HttpTunnelTestCase):
    """
    An edge serving HTTPS and TLS tunnels, and a CA of the local services
    with a certificate for L{NAME}.

    @ivar service_ca: the CA of the local services.
    @ivar service_cert: its certificate for L{NAME}.
    """

    @inlineCallbacks
    def arrange(self) -> Steps[None]:
        self.service_ca = make_ca(self.directory, "service-ca")
        self.service_cert = issue(self.service_ca, self.directory, NAME, (NAME,))
        yield self.start_edge()
        self.service_curl = Curl(self, self.directory, self.service_ca.cert_path)

    @property
    def port(self) -> int:
        """
        @return: the edge's HTTPS port, which TLS tunnels share.
        """
        return self.edge.ports["https"]

    def start_tls_agent(self, *arguments: str, home: str | None = None) -> Program:
        """
        Start C{tunnelkit tls ARGUMENTS} against the test's edge.
        """
        home = home or self.directory
        config = write_agent_config(
            home,
            self.edge.edge.server_addr,
            self.edge.ca_path,
            TOKEN,
            name="agent.yml",
        )
        return start_agent(self, home, ["tls", *arguments, "--config", config])

    @inlineCallbacks
    def start_tls_tunnel(self, *arguments: str) -> Steps[Program]:
        """
        Start a TLS tunnel and wait until it is bound, with the URL the
        edge's port says.
        """
        agent = self.start_tls_agent(*arguments)
        (url,) = yield tunnel_urls(agent, 1)
        self.assertEqual(url, f"tls://{NAME}:{self.port}")
        return agent

    @inlineCallbacks
    def start_openssl_server(self, certificate: Issued) -> Steps[int]:
        """
        Run C{openssl s_server -www} with C{certificate} on a loopback port.

        @return: a Deferred firing with its port once it accepts.
        """
        port = free_port()
        argv = [openssl(), "s_server", "-accept", f"{LOOPBACK}:{port}"]
        argv += ["-cert", certificate.cert_path, "-key", certificate.key_path, "-www"]
        server = start_program(self, "s_server", argv, self.directory)
        yield server.wait_for_line("^ACCEPT")
        return port

    def s_client(self, *arguments: str) -> Deferred:
        """
        Run C{openssl s_client -brief} against the edge's HTTPS port, with
        no input, so that it ends after the handshake.

        @return: a Deferred firing with the ended L{Program}.
        """
        argv = [openssl(), "s_client", "-brief", "-connect", f"{LOOPBACK}:{self.port}"]
        client = start_program(self, "s_client", [*argv, *arguments], self.directory)
        return client.wait_for_exit().addCallback(lambda _: client)

    def edge_event(self, code: str) -> Deferred:
        """
        @return: a Deferred firing with the edge's log event carrying
            C{code}.
        """
        return self.edge.edge.program.wait_for_event(code=code)


def listen_tls_echo(test: Any, certificate: Issued) -> Deferred:
    """
    Start a TLS echo server with C{certificate} until the test's clean-up.

    @return: a Deferred firing with its port.
    """
    factory = _ServerFactory(_Echo)
    options = server_tls_options(
        FilePath(certificate.cert_path), FilePath(certificate.key_path)
    )
    return listen_loopback(test, factory, factory.connections, options)


class _EchoExchange(Protocol):
    """
    Sends a payload over TLS and reads as much back.
    """

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.received = bytearray()
        self.done: Deferred = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.payload)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if len(self.received) >= len(self.payload) and not self.done.called:
            self.done.callback(bytes(self.received))
            self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.done.called:
            self.done.errback(reason)


def echo_through(port: int, ca: Issued, payload: bytes, name: str = NAME) -> Deferred:
    """
    Connect to the edge's port over TLS, as C{name}, trusting only C{ca},
    and send C{payload}.

    @return: a Deferred firing with what came back.
    """
    with open(ca.cert_path, "rb") as source:
        trust = Certificate.loadPEM(source.read())
    options = optionsForClientTLS(name, trustRoot=trust)
    exchange = _EchoExchange(payload)
    endpoint = SSL4ClientEndpoint(reactor, LOOPBACK, port, options, timeout=WAIT)
    connecting = endpoint.connect(Factory.forProtocol(lambda: exchange))
    connecting.addCallback(lambda _: exchange.done)
    return bounded(connecting, WAIT, "the echo through the TLS tunnel")


class PassthroughTests(TlsTunnelTestCase):
    """
    Connections for a TLS tunnel's name reach the local TLS service
    untouched: clients see its own certificate.
    """

    @inlineCallbacks
    def test_openssl_sees_service_certificate(self) -> Steps[None]:
        """
        C{openssl s_client -servername NAME} completes a handshake that it
        verifies against the service's CA alone, for the tunnel's name.
        """
        service = yield self.start_openssl_server(self.service_cert)
        yield self.start_tls_tunnel(str(service), "--subdomain", "secure")

        client = yield self.s_client(
            "-servername",
            NAME,
            "-CAfile",
            self.service_ca.cert_path,
            "-verify_return_error",
            "-verify_hostname",
            NAME,
        )

        output = client.text()
        self.assertEqual(client.exit_code, 0, client.describe())
        self.assertIn(f"Peer certificate: CN = {NAME}", output)
        self.assertIn("Verification: OK", output)

    @inlineCallbacks
    def test_curl(self) -> Steps[None]:
        """
        C{curl --resolve} (the test's C{Curl}) trusting only the service's
        CA fetches the page C{openssl s_server -www} serves.
        """
        service = yield self.start_openssl_server(self.service_cert)
        yield self.start_tls_tunnel(str(service), "--hostname", NAME)

        response = yield self.service_curl.fetch(f"https://{NAME}:{self.port}/")

        self.assertEqual(response.status, 200, response.describe())
        self.assertIn(b"s_server", response.body)

    @inlineCallbacks
    def test_echo_protocol(self) -> Steps[None]:
        """
        A protocol that is not HTTP (an echo over TLS) works through the
        tunnel, for a megabyte both ways.
        """
        service = yield listen_tls_echo(self, self.service_cert)
        yield self.start_tls_tunnel(str(service), "--subdomain", "secure")
        payload = os.urandom(1 << 20)

        echoed = yield echo_through(self.port, self.service_ca, payload)

        self.assertEqual(echoed, payload)

    @inlineCallbacks
    def test_https_and_tls_on_one_port(self) -> Steps[None]:
        """
        An HTTPS tunnel and a TLS tunnel on the edge's one port are served
        at once: the HTTPS name is terminated with the edge's certificate
        and routed by host, the TLS name passed through.
        """
        service = yield listen_tls_echo(self, self.service_cert)
        web: RecordingUpstream = yield listen_recording(self)
        yield self.start_tls_tunnel(str(service), "--subdomain", "secure")
        http_home = os.path.join(self.directory, "http-agent")
        os.makedirs(http_home)
        http_agent = self.start_agent(
            str(web.port), "--subdomain", "web", home=http_home
        )
        yield tunnel_urls(http_agent)

        page = yield self.curl.fetch(f"https://web.tunnels.test:{self.port}/here")
        echoed = yield echo_through(self.port, self.service_ca, b"ping")

        self.assertEqual(page.status, 200, page.describe())
        self.assertEqual([r.target for r in web.received], ["/here"])
        self.assertEqual(echoed, b"ping")

    @inlineCallbacks
    def test_offline_tunnel(self) -> Steps[None]:
        """
        While a stopped agent's name is held for its grace period, a client
        asking for it gets the C{internal_error} alert.
        """
        service = yield listen_tls_echo(self, self.service_cert)
        agent = yield self.start_tls_tunnel(str(service), "--subdomain", "secure")
        yield agent.stop()
        yield self.edge.edge.program.wait_for_line("names .*secure.tunnels.test")

        client = yield self.s_client("-servername", NAME)

        self.assertNotEqual(client.exit_code, 0)
        self.assertIn("internal error", client.text())
        yield self.edge_event("TK_TUNNEL_OFFLINE")


class RefusalTests(TlsTunnelTestCase):
    """
    Connections the HTTPS port cannot route are refused, each on its own,
    without disturbing the others.
    """

    @inlineCallbacks
    def arrange(self) -> Steps[None]:
        yield super().arrange()
        self.service = yield listen_tls_echo(self, self.service_cert)
        yield self.start_tls_tunnel(str(self.service), "--subdomain", "secure")
        self.raw = RawConnections(self)

    @inlineCallbacks
    def test_no_sni(self) -> Steps[None]:
        """
        A client that sends no server name gets the C{unrecognized_name}
        alert.
        """
        client = yield self.s_client("-noservername")

        self.assertNotEqual(client.exit_code, 0)
        self.assertIn("unrecognized name", client.text())
        yield self.edge_event("TK_TLS_NO_SNI")

    @inlineCallbacks
    def test_unknown_name(self) -> Steps[None]:
        """
        A name no tunnel serves gets the C{unrecognized_name} alert, from
        curl's point of view too.
        """
        client = yield self.s_client("-servername", "nobody.tunnels.test")
        response = yield self.service_curl.fetch(
            f"https://nobody.tunnels.test:{self.port}/"
        )

        self.assertIn("unrecognized name", client.text())
        self.assertEqual(response.status, 0)
        self.assertIn("unrecognized name", response.errors)

    @inlineCallbacks
    def test_fragmented_hello(self) -> Steps[None]:
        """
        A ClientHello cut into records of 50 bytes, written in small pieces,
        is read whole, and the handshake completes with the service.
        """
        client = FragmentingClient(self.service_ca, record_size=50, piece_size=37)
        yield self.raw_connect(client)

        answer = yield client.finished

        self.assertEqual(answer, b"fragments")
        self.assertEqual(client.peer_name, NAME)

    @inlineCallbacks
    def test_garbage(self) -> Steps[None]:
        """
        Bytes that are not TLS are answered with nothing and the connection
        closed; the edge logs a warning, and the tunnel still serves.
        """
        connection = yield self.raw.connect(self.port)

        connection.send(b"GET / HTTP/1.1\r\nHost: secure.tunnels.test\r\n\r\n")
        received = yield connection.wait_closed()
        event = yield self.edge_event("TK_TLS_HELLO_MALFORMED")
        echoed = yield echo_through(self.port, self.service_ca, b"still here")

        self.assertEqual(received, b"")
        self.assertEqual(event["lvl"], "warn")
        self.assertEqual(echoed, b"still here")

    @inlineCallbacks
    def test_hello_never_finishes(self) -> Steps[None]:
        """
        A client that sends half a hello and stops is closed after the
        edge's timeout; other clients are served meanwhile.
        """
        connection = yield self.raw.connect(self.port)
        connection.send(in_records(b"\x01\x00\x01\x00" + b"\x03\x03" * 20))

        echoed = yield echo_through(self.port, self.service_ca, b"meanwhile")
        received = yield connection.wait_closed()
        yield self.edge_event("TK_TLS_HELLO_TIMEOUT")

        self.assertEqual(echoed, b"meanwhile")
        self.assertEqual(received, b"")

    def raw_connect(self, client: "FragmentingClient") -> Deferred:
        """
        Connect C{client} to the edge's port over plain TCP.
        """
        endpoint = TCP4ClientEndpoint(reactor, LOOPBACK, self.port, timeout=WAIT)
        connecting = endpoint.connect(Factory.forProtocol(lambda: client))
        self.addCleanup(client.abort)
        return bounded(connecting, WAIT, "a connection to the edge")


class FragmentingClient(Protocol):
    """
    A TLS client driven by hand over a plain TCP connection: its
    ClientHello is re-cut into small records and written in small pieces,
    one per reactor turn; then the handshake goes on as usual, and one
    message is echoed.

    @ivar finished: fires with the echo, or fails if the connection ends
        first.
    @ivar peer_name: the common name of the certificate the server showed.
    """

    transport: Any

    def __init__(self, ca: Issued, record_size: int, piece_size: int) -> None:
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        context.load_verify_locations(ca.cert_path)
        context.set_verify(SSL.VERIFY_PEER, lambda *args: bool(args[-1]))
        self.tls = SSL.Connection(context, None)
        self.tls.set_tlsext_host_name(NAME.encode("ascii"))
        self.tls.set_connect_state()
        self.record_size = record_size
        self.piece_size = piece_size
        self.finished: Deferred = Deferred()
        self.peer_name = ""
        self._secured = False
        self._echo = bytearray()

    def connectionMade(self) -> None:
        try:
            self.tls.do_handshake()
        except SSL.WantReadError:
            pass
        first = self.tls.bio_read(65536)
        message = first[5:]
        pieces = in_records(message, self.record_size, version=0x0301)
        chunks = [
            pieces[i : i + self.piece_size]
            for i in range(0, len(pieces), self.piece_size)
        ]
        self._write_slowly(chunks)

    def _write_slowly(self, chunks: list[bytes]) -> None:
        if not chunks or not self.transport.connected:
            return
        self.transport.write(chunks[0])
        reactor.callLater(0, self._write_slowly, chunks[1:])

    def dataReceived(self, data: bytes) -> None:
        self.tls.bio_write(data)
        try:
            if not self._secured:
                self.tls.do_handshake()
                self._secured = True
                peer = self.tls.get_peer_certificate()
                assert peer is not None
                self.peer_name = peer.get_subject().commonName or ""
                self.tls.send(b"fragments")
            self._echo += self.tls.recv(65536)
        except SSL.WantReadError:
            pass
        except SSL.Error as error:
            if not self.finished.called:
                self.finished.errback(Failure(error))
        self._flush()
        if len(self._echo) >= len(b"fragments") and not self.finished.called:
            self.finished.callback(bytes(self._echo))
            self.transport.loseConnection()

    def _flush(self) -> None:
        try:
            data = self.tls.bio_read(65536)
        except SSL.WantReadError:
            return
        self.transport.write(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.finished.called:
            self.finished.errback(reason)

    def abort(self) -> None:
        """
        Drop the connection if it is still open.
        """
        if self.transport is not None and self.transport.connected:
            self.transport.abortConnection()


class TerminationTests(TlsTunnelTestCase):
    """
    With C{--crt} and C{--key} the agent ends TLS with that certificate and
    forwards plaintext; with C{--mutual-tls-cas} only clients with a
    certificate those CAs signed get through.
    """

    @inlineCallbacks
    def arrange(self) -> Steps[None]:
        yield super().arrange()
        self.upstream: RecordingUpstream = yield listen_recording(self)
        self.client_ca = make_ca(self.directory, "client-ca")

    def termination_flags(self, mutual: bool = False) -> list[str]:
        """
        @return: the flags that end TLS at the agent with the service's
            certificate, and require client certificates if C{mutual}.
        """
        flags = ["--crt", self.service_cert.cert_path]
        flags += ["--key", self.service_cert.key_path]
        if mutual:
            flags += ["--mutual-tls-cas", self.client_ca.cert_path]
        return flags

    @inlineCallbacks
    def test_plain_upstream(self) -> Steps[None]:
        """
        A client sees the tunnel's certificate, and the plain HTTP upstream
        gets the request as sent, unchanged by the edge.
        """
        yield self.start_tls_tunnel(
            str(self.upstream.port), "--subdomain", "secure", *self.termination_flags()
        )

        response = yield self.service_curl.fetch(f"https://{NAME}:{self.port}/plain")

        self.assertEqual(response.status, 200, response.describe())
        (request,) = self.upstream.received
        self.assertEqual((request.target, request.secure), ("/plain", False))
        self.assertEqual(request.header("host"), f"{NAME}:{self.port}")
        self.assertIsNone(request.header("x-forwarded-for"))

    @inlineCallbacks
    def test_config_file(self) -> Steps[None]:
        """
        A tls tunnel of the config file with C{crt}, C{key} and
        C{mutual_tls_cas}, started by name, requires a client certificate.
        """
        good = issue(self.client_ca, self.directory, "alice", client=True)
        config = write_agent_config(
            self.directory,
            self.edge.edge.server_addr,
            self.edge.ca_path,
            TOKEN,
            name="agent.yml",
        )
        with open(config, "a", encoding="utf-8") as output:
            output.write(
                "tunnels:\n  site:\n    proto: tls\n"
                f"    addr: {self.upstream.port}\n    subdomain: secure\n"
                f"    crt: {self.service_cert.cert_path}\n"
                f"    key: {self.service_cert.key_path}\n"
                f"    client_cas: {self.client_ca.cert_path}\n"
            )
        agent = start_agent(self, self.directory, ["start", "site", "--config", config])
        yield tunnel_urls(agent, 1)

        refused = yield self.service_curl.fetch(f"https://{NAME}:{self.port}/")
        accepted = yield self.service_curl.fetch(
            f"https://{NAME}:{self.port}/",
            "--cert",
            good.cert_path,
            "--key",
            good.key_path,
        )

        self.assertEqual(refused.status, 0, refused.describe())
        self.assertEqual(accepted.status, 200, accepted.describe())

    @inlineCallbacks
    def test_mutual_tls_good_certificate(self) -> Steps[None]:
        """
        A client certificate the configured CA signed is accepted.
        """
        good = issue(self.client_ca, self.directory, "alice", client=True)
        yield self.start_tls_tunnel(
            str(self.upstream.port),
            "--subdomain",
            "secure",
            *self.termination_flags(mutual=True),
        )

        response = yield self.service_curl.fetch(
            f"https://{NAME}:{self.port}/mine",
            "--cert",
            good.cert_path,
            "--key",
            good.key_path,
        )

        self.assertEqual(response.status, 200, response.describe())
        self.assertEqual([r.target for r in self.upstream.received], ["/mine"])

    @inlineCallbacks
    def test_mutual_tls_bad_certificate(self) -> Steps[None]:
        """
        A client certificate from another CA, or none, is refused in the
        handshake, logged by the agent at warn, and never reaches the
        upstream.
        """
        stranger = make_ca(self.directory, "stranger-ca")
        bad = issue(stranger, self.directory, "mallory", client=True)
        agent = yield self.start_tls_tunnel(
            str(self.upstream.port),
            "--subdomain",
            "secure",
            *self.termination_flags(mutual=True),
        )

        with_bad = yield self.service_curl.fetch(
            f"https://{NAME}:{self.port}/",
            "--cert",
            bad.cert_path,
            "--key",
            bad.key_path,
        )
        without = yield self.service_curl.fetch(f"https://{NAME}:{self.port}/")
        yield agent.wait_for_event(
            occurrence=2, where=mentions("TLS handshake with"), lvl="warn"
        )

        self.assertEqual((with_bad.status, without.status), (0, 0))
        self.assertNotEqual(with_bad.exit_code, 0)
        self.assertEqual(self.upstream.received, [])

    @inlineCallbacks
    def test_unusable_certificate(self) -> Steps[None]:
        """
        A certificate file that holds no certificate stops the agent with
        C{TK_TLS_CERT_INVALID}, naming the file.
        """
        broken = write_file(os.path.join(self.directory, "broken.pem"), "nothing\n")
        agent = self.start_tls_agent(
            str(self.upstream.port),
            "--crt",
            broken,
            "--key",
            self.service_cert.key_path,
        )

        status = yield agent.wait_for_exit()

        self.assertEqual(status, 1)
        self.assertIn("TK_TLS_CERT_INVALID", agent.text("err"))
        self.assertIn("broken.pem", agent.text("err"))


class EmbeddedEdgeTests(HttpTunnelTestCase):
    """
    An agent without C{server_addr} serves its TLS tunnel on the embedded
    edge, under C{localhost}.
    """

    def arrange(self) -> None:
        self.service_ca = make_ca(self.directory, "service-ca")
        self.service_cert = issue(
            self.service_ca, self.directory, "secure.localhost", ("secure.localhost",)
        )

    @inlineCallbacks
    def test_tls_on_embedded_edge(self) -> Steps[None]:
        """
        C{tunnelkit tls PORT --subdomain secure} prints a
        C{tls://secure.localhost:PORT} URL, whose connections reach the
        local TLS service.
        """
        service = yield listen_tls_echo(self, self.service_cert)
        config = write_file(
            os.path.join(self.directory, "alone.yml"),
            'version: "2"\nweb_addr: false\n',
        )
        agent = start_agent(
            self,
            self.directory,
            ["tls", str(service), "--subdomain", "secure", "--config", config],
        )

        found = yield agent.wait_for_line(
            r"^Forwarding\s+tls://secure\.localhost:([0-9]+) -> ", stream="out"
        )
        port = int(found.group(1))
        echoed = yield echo_through(
            port, self.service_ca, b"embedded", "secure.localhost"
        )

        self.assertEqual(echoed, b"embedded")
