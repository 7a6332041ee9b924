"""One spare tunnel process per Jupyter server, started and connected ahead of need.

Starting an interpreter and importing the link costs a tunnel process ~0.3-0.6 s on the
machines measured here, more than a kernel's start may add (issue #15: <= direct + 0.3 s), so
the server keeps one process ready: a kernel's start takes it and a new one starts in the
background. The spare has no link: when its server exits (or discards it) its control socket
closes and it exits at once. A spare started under other PYTHON* / LD_* variables or another
GPUMARKET_TUNNEL_WS than the taker's is discarded (a tunnel process reads those when it starts).
GPUMARKET_TUNNEL_SPARE=0 turns the spare off.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from jupyter_gpumarket.exceptions import TunnelError

if TYPE_CHECKING:
    from jupyter_gpumarket.provisioning.tunnel_client import TunnelClient

__all__ = ["SPARE_GRACE", "enabled", "refill", "take"]

log = logging.getLogger(__name__)

SPARE_GRACE = 15.0  # a spare that never gets its controller's connection exits after this

EnvKey = tuple[str, tuple[tuple[str, str], ...]]

_lock = threading.Lock()
_spare: tuple[EnvKey, TunnelClient] | None = None
_filling = False


def enabled() -> bool:
    return os.environ.get("GPUMARKET_TUNNEL_SPARE", "1").lower() not in ("0", "false", "no", "off")


# What a tunnel process takes from its environment when it starts: the interpreter's and the
# dynamic loader's variables and its websocket choice. Everything else (the provider, token and
# pin, the wallet, the offer) the provisioner resolves and sends with ``open``.
_READ_PREFIXES = ("PYTHON", "LD_")
_READ = ("GPUMARKET_TUNNEL_WS",)


def _env_key() -> EnvKey:
    env = sorted(
        (k, v) for k, v in os.environ.items() if k.startswith(_READ_PREFIXES) or k in _READ
    )
    return sys.executable, tuple(env)


def take() -> TunnelClient | None:
    """The ready spare, if there is one started under this environment (and spares are on)."""
    global _spare
    with _lock:
        spare, _spare = _spare, None
    if spare is None:
        return None
    key, client = spare
    if enabled() and key == _env_key() and client.usable():
        return client
    client.discard()
    return None


def refill(start: Callable[[str, float], TunnelClient]) -> None:
    """Start a spare in the background unless one is there or on its way."""
    global _filling
    if not enabled():
        return
    with _lock:
        if _spare is not None or _filling:
            return
        _filling = True
    threading.Thread(
        target=_fill, args=(start,), name="gpumarket-tunnel-spare", daemon=True
    ).start()


def _fill(start: Callable[[str, float], TunnelClient]) -> None:
    global _spare, _filling
    key = _env_key()
    try:
        client = start("spare", SPARE_GRACE)
    except TunnelError as exc:
        log.warning("could not start a spare tunnel process: %s", exc)
        client = None
    with _lock:
        _filling = False
        if client is not None and _spare is None:
            _spare, client = (key, client), None
    if client is not None:
        client.discard()
