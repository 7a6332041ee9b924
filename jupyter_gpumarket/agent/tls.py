"""The provider's self-signed TLS certificate, created on first start and kept in the state dir.

Renters do not trust it through a CA: they pin its SHA-256 fingerprint (from the registry entry,
or from the ready file / console line in dev mode).
"""

from __future__ import annotations

import datetime as dt
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from jupyter_gpumarket.core.pinning import fingerprint
from jupyter_gpumarket.exceptions import AgentError

__all__ = ["ProviderCertificate", "ensure_certificate", "server_ssl_context"]

CERT_NAME = "tls-cert.pem"
KEY_NAME = "tls-key.pem"


@dataclass(frozen=True)
class ProviderCertificate:
    cert_path: Path
    key_path: Path
    fingerprint: str


def _create(cert_path: Path, key_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gpumarket-provider")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_bytes)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def ensure_certificate(state_dir: Path) -> ProviderCertificate:
    """Load the certificate from ``state_dir``, creating it (key mode 0600) on first start."""
    cert_path, key_path = state_dir / CERT_NAME, state_dir / KEY_NAME
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not (cert_path.exists() and key_path.exists()):
            _create(cert_path, key_path)
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError) as exc:
        raise AgentError(
            f"cannot create or read the TLS certificate in {state_dir}: {exc}; "
            f"check the directory's permissions or delete {cert_path.name} and {key_path.name} "
            "to make a new one (renters must then pin the new fingerprint)"
        ) from exc
    der = cert.public_bytes(serialization.Encoding.DER)
    return ProviderCertificate(cert_path, key_path, fingerprint(der))


def server_ssl_context(cert: ProviderCertificate) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert.cert_path, cert.key_path)
    return ctx
