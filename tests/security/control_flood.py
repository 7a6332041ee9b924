"""A hostile renter flooding an agent with maximal manifests, as its own process (so the
test's loop, which asks the small questions, is not the one doing the flooding).

    python control_flood.py URL TOKEN maximal|pages

``maximal``: ~32 MB sync_offers (the whole file list in one message), back to back;
``pages``: maximal sync_offer pages (at the agent's request cap), back to back. Each
reconnects when the agent closes the link. The messages are written by hand, as any client
could (not through this tree's control.dump), so the same attack runs against agents from
before pages.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import ssl
import sys

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from jupyter_gpumarket.core import control
from jupyter_gpumarket.core.frames import Channel
from jupyter_gpumarket.core.session import TunnelSession

SHA = hashlib.sha256(b"x").hexdigest()
MAX_MESSAGE = 32 * 1024 * 1024  # the control-message cap before pages


def files(count: int, name_bytes: int, tag: str) -> dict[str, list[object]]:
    stem = "x" * (name_bytes - 12)
    return {f"d{i % 500}/{stem}{tag}{i:07d}": [1, SHA, i] for i in range(count)}


def offer(manifest: dict[str, list[object]], *, more: bool = False) -> bytes:
    body: dict[str, object] = {"op": "sync_offer", "manifest": {"files": manifest}}
    if more:
        body["more"] = True
    return json.dumps(body, separators=(",", ":")).encode()


def messages(mode: str) -> list[bytes]:
    if mode == "maximal":
        raw = offer(files(88_000, 240, "m"))
        assert len(raw) < MAX_MESSAGE, len(raw)
        return [raw]
    cap = getattr(control, "MAX_REQUEST_BYTES", 1 << 20)  # agents before pages: 1 MiB pages
    per_page = cap // 360
    page = offer(files(per_page, 240, "p"), more=True)  # a maximal page
    assert len(page) <= cap, (len(page), cap)
    return [page] * (8 * 2900 // per_page) + [offer({"end.txt": [1, SHA, 1]})]


def tls() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def drain(ws: ClientConnection, me: TunnelSession) -> None:
    """Read the agent's answers and acknowledgements as they come (never waited for)."""
    while True:
        me.receive(await ws.recv())


async def flood(url: str, token: str, mode: str) -> None:
    """Send the mode's messages back to back, forever, not waiting for answers."""
    batch = messages(mode)
    hello = json.dumps({"op": "hello", "token": token})
    sent = 0
    while True:
        with contextlib.suppress(ConnectionClosed, OSError, TimeoutError):
            async with connect(url, ssl=tls(), compression=None, max_size=None) as ws:
                await ws.send(hello)
                await ws.recv()  # the welcome
                me = TunnelSession()
                reader = asyncio.ensure_future(drain(ws, me))
                try:
                    while not reader.done():
                        for raw in batch:
                            await ws.send(me.send(Channel.AGENT, [raw]))
                            sent += 1
                            print(f"sent {sent}", flush=True)
                finally:
                    reader.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await reader  # whatever the agent answered: flood on


if __name__ == "__main__":
    asyncio.run(flood(*sys.argv[1:4]))
