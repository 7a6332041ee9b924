"""The one wss connect to an agent whose certificate is pinned by its SHA-256 fingerprint.

The tunnel link, the relay/probe client and the market's probes and challenges all connect
here: no CA (the agent's certificate is self-signed), TLS 1.2 or newer, and the peer's DER
certificate compared (constant time, core.pinning) with the pin before anything is sent.
Lower-layer connect errors become ProviderUnreachable, a wrong certificate
TlsFingerprintMismatch; each caller words the messages for its situation.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidURI

from jupyter_gpumarket.core.pinning import fingerprint, fingerprint_matches
from jupyter_gpumarket.exceptions import ProviderUnreachable, TlsFingerprintMismatch

__all__ = ["client_ssl_context", "connect_pinned", "pinned_connection"]

# (exception) -> message for ProviderUnreachable; (presented fingerprint) -> message for
# TlsFingerprintMismatch ("no certificate" when the peer showed none).
Unreachable = Callable[[BaseException], str]
Mismatch = Callable[[str], str]


def client_ssl_context() -> ssl.SSLContext:
    # No CA: the agent's certificate is self-signed and pinned by fingerprint instead.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


async def connect_pinned(
    url: str,
    tls_fingerprint: str,
    *,
    unreachable: Unreachable,
    mismatch: Mismatch,
    **connect_kwargs: Any,
) -> ClientConnection:
    """An open websocket to ``url`` whose certificate matches ``tls_fingerprint``; the caller
    closes it. ``connect_kwargs`` go to websockets' ``connect`` (timeouts, sizes, pings)."""
    try:
        ws = await connect(url, ssl=client_ssl_context(), **connect_kwargs)
    except (OSError, InvalidHandshake, InvalidURI, ValueError) as exc:
        raise ProviderUnreachable(unreachable(exc)) from exc
    ssl_object = ws.transport.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
    if not der or not fingerprint_matches(der, tls_fingerprint):
        await ws.close()
        raise TlsFingerprintMismatch(mismatch(fingerprint(der) if der else "no certificate"))
    return ws


@contextlib.asynccontextmanager
async def pinned_connection(
    url: str,
    tls_fingerprint: str,
    *,
    unreachable: Unreachable,
    mismatch: Mismatch,
    **connect_kwargs: Any,
) -> AsyncIterator[ClientConnection]:
    """:func:`connect_pinned` as a context manager that closes the connection on exit."""
    ws = await connect_pinned(
        url, tls_fingerprint, unreachable=unreachable, mismatch=mismatch, **connect_kwargs
    )
    async with ws:
        yield ws
