"""The wallet password a user unlocked through the server API (``POST wallet/unlock``): held in
this process's memory only (never on disk, never in a kernel's environment), forgotten after its
timeout or on ``POST wallet/lock``. The provisioner, running inside the same Jupyter server,
uses it when GPUMARKET_WALLET_PASSWORD is not set."""

from __future__ import annotations

import threading
import time

__all__ = ["MAX_TIMEOUT_S", "expires_in", "lock", "password", "unlock"]

MAX_TIMEOUT_S = 7 * 24 * 3600

_guard = threading.Lock()
_password: str | None = None
_expires_at = 0.0


def unlock(secret: str, timeout_s: float) -> None:
    """Keep ``secret`` for ``timeout_s`` seconds (the caller checked it against the keystore)."""
    global _password, _expires_at
    with _guard:
        _password, _expires_at = secret, time.monotonic() + timeout_s


def lock() -> None:
    global _password, _expires_at
    with _guard:
        _password, _expires_at = None, 0.0


def password() -> str | None:
    """The unlocked password, or None (never unlocked, locked, or expired)."""
    global _password
    with _guard:
        if _password is not None and time.monotonic() >= _expires_at:
            _password = None
        return _password


def expires_in() -> float | None:
    """Seconds until the unlock expires; None when locked."""
    if password() is None:
        return None
    return max(0.0, _expires_at - time.monotonic())
