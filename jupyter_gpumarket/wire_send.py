"""Write one tunnel frame, given as buffers, to a websocket with as few copies as it allows.

On websockets' server connection (the agent's side), a frame is written as one websocket
binary message whose header is computed here (:func:`~jupyter_gpumarket.core.wsframe.
binary_frame_header`) and whose payload buffers go to ``transport.writelines`` unjoined: the
kernel's output parts (zmq frames) reach the TLS layer without the two copies ``ws.send``
makes (our join, then websockets' serialize). Only when that is exactly what ``ws.send`` would
write: the connection is OPEN, no fragmented send is under way, no extension (compression) was
negotiated, and we are the server (no mask). Anything else goes through ``ws.send``, joined.

Ordering: websockets writes its own frames (pongs, pings, close) synchronously on the same loop
from ``protocol.data_to_send()``; anything it left there is flushed first, so frames stay in
the order they were made. Backpressure: as ``ws.send`` does, we wait on the connection's
``drain`` (the transport's write-buffer high-water mark) after writing.
"""

from __future__ import annotations

import asyncio
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.protocol import SERVER, State

from jupyter_gpumarket.core.wsframe import binary_frame_header

__all__ = ["SCATTER_MIN", "coalesce", "send_buffers"]

# Buffers this large are written as they are; smaller neighbours are joined (a copy of a few
# KiB), so that TLS does not seal each small Jupyter message part in a record of its own.
SCATTER_MIN = 64 * 1024


async def send_buffers(ws: Any, buffers: list[bytes]) -> None:
    """Send ``buffers``, joined, as one binary message on ``ws``; ConnectionClosed when it is
    closed (as ``ws.send``)."""
    size = sum(len(b) for b in buffers)
    if size >= SCATTER_MIN and isinstance(ws, ServerConnection) and _scatter_safe(ws):
        ws.send_data()  # websockets' own frames made earlier go first
        ws.transport.writelines(coalesce([binary_frame_header(size), *buffers]))
        try:
            await ws.drain()
        except Exception as exc:  # as send_context: a write error ends the connection
            ws.set_connection_exc(exc)
            ws.transport.abort()
            await asyncio.shield(ws.connection_lost_waiter)
            raise ws.close_exc from None
        return
    await ws.send(buffers[0] if len(buffers) == 1 else b"".join(buffers))


def coalesce(buffers: list[bytes]) -> list[bytes]:
    """The same bytes in the same order, each run of buffers under SCATTER_MIN joined."""
    out: list[bytes] = []
    small: list[bytes] = []
    for buf in buffers:
        if len(buf) < SCATTER_MIN:
            small.append(buf)
            continue
        if small:
            out.append(b"".join(small))
            small = []
        out.append(buf)
    if small:
        out.append(b"".join(small))
    return out


def _scatter_safe(ws: ServerConnection) -> bool:
    protocol = ws.protocol
    return (
        protocol.state is State.OPEN
        and protocol.side is SERVER
        and not protocol.extensions
        and not protocol.expect_continuation_frame
        and ws.send_in_progress is None
        and not ws.transport.is_closing()
    )
