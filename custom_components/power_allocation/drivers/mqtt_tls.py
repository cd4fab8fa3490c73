"""TLS to the MQTT broker: a private CA, a client certificate for mutual TLS, and their checks.

The UI keeps certificates as PEM text in the config entry (as Home Assistant's MQTT integration
keeps its uploaded files); a YAML configuration may name files instead. `tls_context` builds the
one `ssl.SSLContext` the driver, the config flow's connection test and the broker check all use.
`check_tls_pem` says which of the three texts is unusable before anything is saved.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

CA_CERT = "ca_cert"
CLIENT_CERT = "client_cert"
CLIENT_KEY = "client_key"


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """TLS to the broker: each of the CA, the client certificate and its key as a file or as PEM
    text. No CA: the system's trusted CAs. No client certificate: no mutual TLS."""

    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    verify_hostname: bool = True
    ca_pem: str | None = None
    cert_pem: str | None = None
    key_pem: str | None = field(default=None, repr=False)


class InvalidTlsPemError(ValueError):
    """One of the PEM texts cannot be used: `field` names it (`CA_CERT`, ...), `error` is the
    config flow's error key for it."""

    def __init__(self, field_name: str, error: str, reason: str) -> None:
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name
        self.error = error


def tls_context(tls: TlsOptions) -> ssl.SSLContext:
    """The client's TLS context (reads files: not on the event loop); raises `ssl.SSLError` or
    `OSError` for material it cannot load."""
    # As paho's own `tls_set` builds it: certificate and host name checked, but without the
    # X.509 strict mode of `ssl.create_default_context`, which refuses many home-made CAs.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if tls.ca_certs is None and tls.ca_pem is None:
        context.load_default_certs()
    else:
        context.load_verify_locations(cafile=tls.ca_certs, cadata=tls.ca_pem)
    context.check_hostname = tls.verify_hostname
    if tls.certfile is not None:
        context.load_cert_chain(tls.certfile, tls.keyfile)
    if tls.cert_pem is not None:
        # `ssl` loads a certificate chain from files only: they live for this call, in a folder
        # only this user may read.
        with tempfile.TemporaryDirectory(prefix="power-allocation-tls-") as folder:
            certfile, keyfile = Path(folder, "client.pem"), Path(folder, "client.key")
            _write_private(certfile, tls.cert_pem)
            if tls.key_pem is not None:
                _write_private(keyfile, tls.key_pem)
            context.load_cert_chain(certfile, keyfile if tls.key_pem is not None else None)
    return context


def _write_private(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as file:
        file.write(text)


def check_tls_pem(ca_pem: str | None, cert_pem: str | None, key_pem: str | None) -> None:
    """Raise `InvalidTlsPemError` for the first text that is not what it should be: the CA
    certificate(s), the client certificate, its private key (unencrypted, and the certificate's)."""
    if ca_pem is not None:
        try:
            x509.load_pem_x509_certificates(ca_pem.encode())
        except ValueError:
            raise InvalidTlsPemError(
                CA_CERT, "invalid_certificate", "not a PEM certificate"
            ) from None
    if (cert_pem is None) != (key_pem is None):
        missing = CLIENT_KEY if key_pem is None else CLIENT_CERT
        raise InvalidTlsPemError(
            missing, "cert_and_key", "a client certificate needs its key, and a key its cert"
        )
    if cert_pem is None or key_pem is None:
        return
    try:
        certificate = x509.load_pem_x509_certificate(cert_pem.encode())
    except ValueError:
        raise InvalidTlsPemError(
            CLIENT_CERT, "invalid_certificate", "not a PEM certificate"
        ) from None
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except (ValueError, TypeError):  # TypeError: the key is encrypted
        raise InvalidTlsPemError(
            CLIENT_KEY, "invalid_key", "not an unencrypted PEM private key"
        ) from None
    public = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*public) != certificate.public_key().public_bytes(*public):
        raise InvalidTlsPemError(
            CLIENT_KEY, "key_mismatch", "not the key of the client certificate"
        )
