"""
TLS termination at the agent: a tunnel with C{crt} and C{key} ends the
public client's TLS in the agent, with that certificate, and forwards the
plaintext to its local service; with C{mutual_tls_cas} the client must
also present a certificate signed by one of those CAs.

The edge passes such a tunnel's connections through untouched, so the
keys never leave the agent's machine. Each stream from the edge gets a
TLS server protocol whose application protocol (the splice to the local
service) is connected only once the handshake has completed: a client
that fails the handshake, or presents no acceptable certificate, never
causes a connection to the local service.

The TLS context of a tunnel is made from its files when the tunnel is
first bound (L{prepare_termination}), so an unusable file stops the agent
with an error instead of failing each connection, and is kept while the
tunnel is.

Known limit: a client's C{close_notify} ends the connection both ways, as
Twisted's TLS does; a client that half-closes with it and still waits for
the answer gets none.
"""

import weakref
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL
from OpenSSL.crypto import X509, PKey
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IDelayedCall,
    IHandshakeListener,
    IProtocol,
    IReactorTime,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.ssl import CertificateOptions, TLSVersion
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from tunnelkit.agent.tunnel import Tunnel
from tunnelkit.errors import TunnelkitError
from tunnelkit.tlstransport import LinkTLSFactory, LinkTLSProtocol

_log = Logger()

HANDSHAKE_TIMEOUT = 10.0
"""Seconds a public client has to complete its TLS handshake with the agent."""

_terminations: dict[int, "Termination"] = {}
"""The termination of each tunnel that has been bound, by the tunnel's
C{id}; an entry goes when its tunnel does."""


def termination_options(
    crt: str, key: str, mutual_tls_cas: str | None = None
) -> CertificateOptions:
    """
    Build the TLS server options of a tunnel that terminates at the agent.

    @param crt: a PEM file: the certificate, then any intermediates.
    @param key: the certificate's unencrypted PEM private key.
    @param mutual_tls_cas: a PEM file of CA certificates; when given, a
        client must present a certificate that one of them signed.
    @return: options accepting TLS 1.2 and newer.
    @raise TunnelkitError: C{TK_TLS_CERT_INVALID} when C{crt} or C{key}
        cannot be read or used, or do not belong together;
        C{TK_MUTUAL_TLS_CAS_INVALID} when C{mutual_tls_cas} holds no
        certificate.
    """
    certificates = _read_certificates(crt, "TK_TLS_CERT_INVALID", _cert_advice)
    private_key = _read_key(key)
    if _public_der(certificates[0].public_key()) != _public_der(
        private_key.public_key()
    ):
        raise TunnelkitError(
            "TK_TLS_CERT_INVALID",
            f"the key in {key} does not belong to the certificate in {crt};"
            f" {_cert_advice}",
        )
    options: dict[str, Any] = {}
    if mutual_tls_cas is not None:
        authorities = _read_certificates(
            mutual_tls_cas, "TK_MUTUAL_TLS_CAS_INVALID", _cas_advice
        )
        options = dict(
            verify=True,
            requireCertificate=True,
            caCerts=[X509.from_cryptography(c) for c in authorities],
        )
    try:
        built = CertificateOptions(
            privateKey=PKey.from_cryptography_key(private_key),
            certificate=X509.from_cryptography(certificates[0]),
            extraCertChain=[X509.from_cryptography(c) for c in certificates[1:]],
            raiseMinimumTo=TLSVersion.TLSv1_2,
            **options,
        )
        context = built.getContext()
    except (TypeError, ValueError, SSL.Error) as error:
        raise TunnelkitError(
            "TK_TLS_CERT_INVALID",
            f"the key in {key} cannot be used for TLS ({error}); {_cert_advice}",
        ) from None
    # Whatever the client offers by ALPN, no protocol is chosen: the
    # upstream may speak anything. Twisted's own callback would answer an
    # empty name, which OpenSSL turns into an internal_error alert.
    context.set_alpn_select_callback(_no_alpn)
    return built


def _no_alpn(connection: SSL.Connection, offered: list[bytes]) -> Any:
    return SSL.NO_OVERLAPPING_PROTOCOLS


_cert_advice = (
    "give --crt a PEM certificate (leaf first, then any intermediates) and"
    " --key its unencrypted PEM key (crt and key in the config file)"
)
_cas_advice = (
    "give --mutual-tls-cas (mutual_tls_cas) a PEM file of the CA certificates"
    " client certificates must be signed by"
)


def _read_certificates(path: str, code: str, advice: str) -> list[x509.Certificate]:
    try:
        with open(path, "rb") as source:
            data = source.read()
    except OSError as error:
        raise TunnelkitError(
            code, f"cannot read {path} ({error.strerror or error}); {advice}"
        ) from None
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        certificates = []
    if not certificates:
        raise TunnelkitError(code, f"{path} holds no PEM certificate; {advice}")
    return certificates


def _read_key(path: str) -> Any:
    try:
        with open(path, "rb") as source:
            data = source.read()
    except OSError as error:
        raise TunnelkitError(
            "TK_TLS_CERT_INVALID",
            f"cannot read {path} ({error.strerror or error}); {_cert_advice}",
        ) from None
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as error:
        raise TunnelkitError(
            "TK_TLS_CERT_INVALID",
            f"{path} holds no usable PEM private key ({error}); {_cert_advice}",
        ) from None


def _public_der(key: Any) -> bytes:
    der: bytes = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


class Termination:
    """
    The TLS server side of one tunnel that terminates at the agent.

    @ivar factory: what the TLS protocol of each stream is made with.
    """

    def __init__(self, options: CertificateOptions, clock: IReactorTime) -> None:
        self.clock = clock
        self.factory = LinkTLSFactory(options, False, Factory(), clock)

    def protocol(self, inner: IProtocol, client: str) -> IProtocol:
        """
        @param inner: what the plaintext goes to once the handshake is done.
        @param client: the public client's address, for logs.
        @return: the protocol of one stream from the edge.
        """
        return TerminatingTLS(self.factory, HandshakeGate(inner, self.clock, client))


def prepare_termination(tunnel: Tunnel, clock: IReactorTime) -> "Termination | None":
    """
    Make the TLS context of a tunnel that terminates at the agent, the
    first time it is bound, and keep it while the tunnel is.

    @return: the termination, or C{None} for a tunnel without C{crt}.
    @raise TunnelkitError: see L{termination_options}.
    """
    definition = tunnel.definition
    if definition.crt is None or definition.key is None:
        return None
    key = id(tunnel)
    termination = _terminations.get(key)
    if termination is None:
        options = termination_options(
            definition.crt, definition.key, definition.mutual_tls_cas
        )
        termination = _terminations[key] = Termination(options, clock)
        weakref.finalize(tunnel, _terminations.pop, key, None)
    return termination


def terminate_tls(
    clock: IReactorTime, tunnel: Tunnel, inner: IProtocol, client: str
) -> IProtocol:
    """
    @param inner: the protocol the plaintext of the stream goes to.
    @param client: the public client's address, for logs.
    @return: the protocol of one stream of a tunnel that terminates TLS at
        the agent.
    @raise TunnelkitError: see L{termination_options}, for a tunnel whose
        files could not be used when it was bound.
    """
    termination = prepare_termination(tunnel, clock)
    assert termination is not None, "only tunnels with crt and key terminate"
    return termination.protocol(inner, client)


class TerminatingTLS(LinkTLSProtocol):
    """
    The agent's TLS server end of one public connection.

    What the splice asks of its transport is done here in TLS terms: a
    half-close sends C{close_notify} and goes on reading until the client
    closes, and closing does not wait for the local service's connection,
    registered as this transport's producer, to be unregistered first.
    """

    def loseWriteConnection(self) -> None:
        """
        The local service has sent all it will: send C{close_notify}.
        """
        self.loseConnection()

    def loseConnection(self) -> None:
        if self._producer is not None:
            self.unregisterProducer()
        super().loseConnection()


@implementer(IHandshakeListener)
class HandshakeGate(Protocol):
    """
    Holds back the protocol behind TLS until the handshake has completed,
    and ends a connection whose handshake takes longer than
    L{HANDSHAKE_TIMEOUT}.
    """

    def __init__(self, inner: IProtocol, clock: IReactorTime, client: str) -> None:
        self.inner = inner
        self.clock = clock
        self.client = client
        self.secured = False
        self._timer: IDelayedCall | None = None

    def connectionMade(self) -> None:
        self._timer = self.clock.callLater(HANDSHAKE_TIMEOUT, self._timed_out)

    def handshakeCompleted(self) -> None:
        self._cancel_timer()
        self.secured = True
        self.inner.makeConnection(self.transport)  # type: ignore[arg-type]

    def dataReceived(self, data: bytes) -> None:
        self.inner.dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_timer()
        if self.secured:
            self.inner.connectionLost(reason)
        elif not reason.check(ConnectionDone):
            _log.warn(
                "TLS handshake with {client} failed: {error}",
                client=self.client,
                error=reason.getErrorMessage(),
                obj="tunnels",
            )

    def _timed_out(self) -> None:
        self._timer = None
        _log.warn(
            "no TLS handshake from {client} within {timeout}s; closing",
            client=self.client,
            timeout=HANDSHAKE_TIMEOUT,
            obj="tunnels",
        )
        self.transport.abortConnection()  # type: ignore[union-attr]

    def _cancel_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
