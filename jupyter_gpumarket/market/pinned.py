"""A short wss connection to an agent whose certificate is the offer's pinned one."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidURI

from jupyter_gpumarket.core.pinning import fingerprint, fingerprint_matches
from jupyter_gpumarket.exceptions import ProviderUnreachable, TlsFingerprintMismatch

__all__ = ["pinned_connection"]


def _client_ssl() -> ssl.SSLContext:
    # No CA: the agent's certificate is self-signed and pinned by fingerprint instead.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


@contextlib.asynccontextmanager
async def pinned_connection(
    url: str, tls_fingerprint: str, *, max_size: int, **kwargs: object
) -> AsyncIterator[ClientConnection]:
    """Connect (the caller bounds the time), check the pin, yield; ``max_size`` bounds every
    message the agent may send (a bigger one fails the connection with 1009, unread)."""
    try:
        ws = await connect(
            url,
            ssl=_client_ssl(),
            open_timeout=None,
            max_size=max_size,
            max_queue=4,
            compression=None,
            ping_interval=None,
            **kwargs,  # type: ignore[arg-type]
        )
    except (OSError, InvalidHandshake, InvalidURI, ValueError) as exc:
        raise ProviderUnreachable(f"the agent at {url} does not answer: {exc}") from exc
    async with ws:
        ssl_object = ws.transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        if not der or not fingerprint_matches(der, tls_fingerprint):
            shown = fingerprint(der) if der else "no certificate"
            raise TlsFingerprintMismatch(
                f"the agent at {url} presented {shown}, not the offer's pinned "
                f"{tls_fingerprint}: someone else answers at that address"
            )
        yield ws
