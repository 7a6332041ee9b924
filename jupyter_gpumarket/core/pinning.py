"""TLS certificate pinning by SHA-256 fingerprint (pure; the shells hand in DER bytes)."""

from __future__ import annotations

import hashlib
import hmac
import re

from jupyter_gpumarket.exceptions import ConfigError

__all__ = ["fingerprint", "fingerprint_matches", "normalize_fingerprint"]

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def fingerprint(der: bytes) -> str:
    """The pin of a DER certificate: ``sha256:<64 lowercase hex>``."""
    return "sha256:" + hashlib.sha256(der).hexdigest()


def normalize_fingerprint(value: str) -> str:
    """Accept ``sha256:<hex>``, bare hex, or OpenSSL's ``AB:CD:...`` form; return the pin form."""
    text = value.strip().lower()
    if text.startswith("sha256:"):
        text = text[len("sha256:") :]
    elif text.startswith("sha256 fingerprint="):
        text = text[len("sha256 fingerprint=") :]
    text = text.replace(":", "")
    if not _HEX64.match(text):
        raise ConfigError(
            f"TLS fingerprint {value!r} is not a SHA-256 fingerprint: expected 'sha256:' followed "
            "by 64 hex digits, as printed by `gpumarket provider serve` or in its ready file"
        )
    return "sha256:" + text


def fingerprint_matches(der: bytes, pinned: str) -> bool:
    return hmac.compare_digest(fingerprint(der), normalize_fingerprint(pinned))
