"""One event-stream client's outbox: a bounded queue between the hub (any thread) and the
client's websocket writes (the server's loop). The hub never waits: an event that does not
fit drops the client (``on_overflow``), who reconnects and reads a fresh snapshot."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["EVENT_QUEUE", "EventOutbox"]

EVENT_QUEUE = 512  # events waiting for one client; a client this far behind is dropped


class EventOutbox:
    """``offer`` from any thread; ``run`` writes each event with ``write`` (awaited: a slow
    client's writes back up here, never in the hub), until ``close`` or an overflow."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        write: Callable[[str], Awaitable[Any]],
        on_overflow: Callable[[], None],
        limit: int = EVENT_QUEUE,
    ) -> None:
        self._loop = loop
        self._write = write
        self._on_overflow = on_overflow
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(limit)
        self.closed = False
        self.dropped = False

    def offer(self, event: dict[str, Any]) -> None:
        """Queue ``event`` (callable from any thread; never blocks)."""
        self._loop.call_soon_threadsafe(self._put, event)

    def _put(self, event: dict[str, Any]) -> None:
        if self.closed:
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.closed = self.dropped = True
            self._on_overflow()

    async def run(self) -> None:
        while not self.closed:
            event = await self._queue.get()
            if self.closed:
                return
            await self._write(json.dumps(event))

    def close(self) -> None:
        self.closed = True
