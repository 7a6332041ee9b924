"""A short wss connection to an agent whose certificate is the offer's pinned one."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from websockets.asyncio.client import ClientConnection

from jupyter_gpumarket import pinned

__all__ = ["pinned_connection"]


@contextlib.asynccontextmanager
async def pinned_connection(
    url: str, tls_fingerprint: str, *, max_size: int, **kwargs: object
) -> AsyncIterator[ClientConnection]:
    """Connect (the caller bounds the time), check the pin, yield; ``max_size`` bounds every
    message the agent may send (a bigger one fails the connection with 1009, unread)."""
    async with pinned.pinned_connection(
        url,
        tls_fingerprint,
        unreachable=lambda exc: f"the agent at {url} does not answer: {exc}",
        mismatch=lambda shown: (
            f"the agent at {url} presented {shown}, not the offer's pinned "
            f"{tls_fingerprint}: someone else answers at that address"
        ),
        open_timeout=None,
        max_size=max_size,
        max_queue=4,
        compression=None,
        ping_interval=None,
        **kwargs,
    ) as ws:
        yield ws
