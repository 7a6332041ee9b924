"""ZMQ socket pumps shared by the agent's kernel bridge and the renter's loopback shim."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

import zmq
import zmq.asyncio

from jupyter_gpumarket.core.frames import Channel

__all__ = ["SocketPumps"]

log = logging.getLogger(__name__)


class SocketPumps:
    """One task per socket hands every multipart message (zero-copy frames) to a callback;
    :meth:`close` stops the tasks and closes the sockets."""

    def __init__(
        self,
        sockets: dict[Channel, zmq.asyncio.Socket],
        on_message: Callable[[Channel, list[Any]], None],
        *,
        skip: Iterable[Channel] = (),
        name: str = "zmq",
    ) -> None:
        self.sockets = sockets
        self._on_message = on_message
        self._name = name
        self._tasks = [
            asyncio.ensure_future(self._pump(channel, sock))
            for channel, sock in sockets.items()
            if channel not in set(skip)
        ]

    async def _pump(self, channel: Channel, sock: zmq.asyncio.Socket) -> None:
        on_message = self._on_message
        try:
            while True:
                on_message(channel, await sock.recv_multipart(copy=False))
        except (asyncio.CancelledError, zmq.ContextTerminated):
            pass
        except zmq.ZMQError as exc:  # the socket was closed under us
            log.debug("%s %s socket stopped: %s", self._name, channel.name, exc)

    async def close(self, linger_ms: int = 0) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sock in self.sockets.values():
            sock.close(linger=linger_ms)
        self.sockets.clear()  # the owner shares this dict: nothing to send to any more
