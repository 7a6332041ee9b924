"""Small helpers of the market's tests."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from websockets.asyncio.server import ServerConnection, serve

from jupyter_gpumarket.agent.tls import ensure_certificate, server_ssl_context

Handler = Callable[[ServerConnection], Awaitable[None]]


def dead_endpoint() -> tuple[str, str]:
    """A wss URL where nothing listens (a port just freed) and some pin."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"wss://127.0.0.1:{port}", "sha256:" + "11" * 32


@contextlib.asynccontextmanager
async def hostile(tmp: Path, handler: Handler) -> AsyncIterator[tuple[str, str]]:
    """A TLS websocket server in this process answering every connection with ``handler``."""
    cert = ensure_certificate(tmp / "hostile-cert")
    async with serve(handler, "127.0.0.1", 0, ssl=server_ssl_context(cert), max_size=2**16) as s:
        port = s.sockets[0].getsockname()[1]
        yield f"wss://127.0.0.1:{port}", cert.fingerprint
