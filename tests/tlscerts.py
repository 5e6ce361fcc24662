"""
Certificates for the TLS tunnel tests: small CAs, and server and client
certificates they sign, written as PEM files into a test's directory.
"""

import datetime
import os
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass
class Issued:
    """
    A certificate and its key, in memory and in files.

    @ivar cert_path: the PEM certificate.
    @ivar key_path: its unencrypted PEM key.
    """

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_path: str
    key_path: str


def _write(path: str, data: bytes) -> str:
    with open(path, "wb") as output:
        output.write(data)
    return path


def _save(
    directory: str, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> Issued:
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return Issued(
        cert,
        key,
        _write(
            os.path.join(directory, f"{name}.pem"),
            cert.public_bytes(serialization.Encoding.PEM),
        ),
        _write(os.path.join(directory, f"{name}.key"), key_pem),
    )


def _builder(subject: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey) -> Any:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
    )


def make_ca(directory: str, name: str) -> Issued:
    """
    @return: a new self-signed CA, written as C{NAME.pem} and C{NAME.key}.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        _builder(name, subject, key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    return _save(directory, name, cert, key)


def issue(
    authority: Issued,
    directory: str,
    name: str,
    hostnames: tuple[str, ...] = (),
    client: bool = False,
) -> Issued:
    """
    @param hostnames: the DNS names of a server certificate.
    @param client: issue a client certificate instead.
    @return: a certificate for C{name} that C{authority} signed, written as
        C{NAME.pem} and C{NAME.key}.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    usage = (
        ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    )
    builder = (
        _builder(name, authority.certificate.subject, key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .add_extension(x509.ExtendedKeyUsage([usage]), False)
    )
    if hostnames:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(h) for h in hostnames]), False
        )
    cert = builder.sign(authority.key, hashes.SHA256())
    return _save(directory, name, cert, key)
