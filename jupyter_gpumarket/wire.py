"""The asyncio shell around :class:`~jupyter_gpumarket.core.session.TunnelSession`.

Both ends of the tunnel (agent lease, renter link) use one :class:`SessionPipe`: it frames
outgoing messages in order, writes them to whichever websocket is attached right now, sends
lone ACK frames when data arrived that no outgoing frame acknowledged, and on reattach drops its
queue and replays from the session's buffer instead (the queue only ever holds frames that are
also in the replay buffer, so nothing is lost or sent twice).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from websockets.asyncio.connection import Connection
from websockets.exceptions import ConnectionClosed

from jupyter_gpumarket.core import control
from jupyter_gpumarket.core.frames import Channel
from jupyter_gpumarket.core.session import Delivery, TunnelSession

__all__ = ["ACK_DELAY", "SessionPipe"]

ACK_DELAY = 0.05  # a lone ACK goes out this long after data that no reply acknowledged


class SessionPipe:
    def __init__(self, session: TunnelSession) -> None:
        self.session = session
        self.ws: Connection | None = None
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._writer = asyncio.ensure_future(self._write_loop())
        self._ack_timer: asyncio.TimerHandle | None = None

    # -- the websocket ---------------------------------------------------------------------
    def attach(self, ws: Connection, peer_last_received: int) -> None:
        """Write to ``ws`` from now on, starting with what the peer has not received."""
        replay = self.session.replay_after(peer_last_received)
        self.ws = ws
        while not self._outbox.empty():
            self._outbox.get_nowait()
        for data in replay:
            self._outbox.put_nowait(data)

    def detach(self, ws: Connection | None = None) -> bool:
        """Stop writing to ``ws`` (or whatever is attached). True if it was attached."""
        if ws is not None and self.ws is not ws:
            return False
        self.ws = None
        return True

    async def _write_loop(self) -> None:
        get = self._outbox.get
        while True:
            data = await get()
            ws = self.ws
            if ws is None:
                continue  # stays in the replay buffer; sent again on reattach
            with contextlib.suppress(ConnectionClosed):
                await ws.send(data)

    # -- traffic ---------------------------------------------------------------------------
    def send(self, channel: Channel, parts: Sequence[Any]) -> None:
        self._outbox.put_nowait(self.session.send(channel, parts))

    def send_control(self, msg: Any) -> None:
        self.send(Channel.AGENT, [control.dump(msg)])

    def receive(self, data: bytes) -> Delivery | None:
        """Feed one binary websocket message; ProtocolError on bad input."""
        session = self.session
        delivery = session.receive(data)
        if session.ack_due():
            self._outbox.put_nowait(session.ack_frame())
        elif session.ack_pending and self._ack_timer is None:
            self._ack_timer = asyncio.get_running_loop().call_later(ACK_DELAY, self._flush_ack)
        return delivery

    def _flush_ack(self) -> None:
        self._ack_timer = None
        if self.session.ack_pending:
            self._outbox.put_nowait(self.session.ack_frame())

    async def drain(self, timeout: float = 2.0) -> None:
        """Write what is queued to the attached websocket (best effort, bounded)."""
        ws = self.ws
        if ws is None:
            return
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            async with asyncio.timeout(timeout):
                while not self._outbox.empty():
                    await ws.send(self._outbox.get_nowait())

    def close(self) -> None:
        self._writer.cancel()
        if self._ack_timer is not None:
            self._ack_timer.cancel()
        self.ws = None
