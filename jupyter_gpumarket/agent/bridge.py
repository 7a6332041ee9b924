"""ZMQ side of the agent: the sockets that talk to one kernel process.

Shell, control and stdin use one DEALER each, all with the same identity, so the kernel's ROUTER
sees ``[agent-id, client-id, <IDS|MSG>, ...]``: the renter's client identity travels as an inner
routing id and replies come back with it, so any number of clients (and stdin requests, which
ipykernel routes by the shell identity) work through one set of sockets. IOPub is a SUB to the
kernel's PUB; heartbeat a DEALER carrying the client's REQ envelope through the kernel's echo.
Parts travel untouched: signatures are the renter's, made with the key the kernel was started with.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import zmq
import zmq.asyncio

from jupyter_gpumarket.core.frames import Channel
from jupyter_gpumarket.zmqpump import SocketPumps

__all__ = ["KernelBridge"]

log = logging.getLogger(__name__)

_AGENT_IDENTITY = b"gpumarket-agent"
_SOCKET_TYPES = {
    Channel.SHELL: ("shell", zmq.DEALER),
    Channel.CONTROL: ("control", zmq.DEALER),
    Channel.STDIN: ("stdin", zmq.DEALER),
    Channel.IOPUB: ("iopub", zmq.SUB),
    Channel.HB: ("hb", zmq.DEALER),
}


class KernelBridge:
    """Connects to one kernel's sockets and pumps messages both ways.

    ``on_message(channel, parts)`` is called for every message the kernel sends.
    """

    def __init__(
        self,
        context: zmq.asyncio.Context,
        endpoint: Callable[[str], str],
        on_message: Callable[[Channel, list[zmq.Frame]], None],
    ) -> None:
        self._sockets: dict[Channel, zmq.asyncio.Socket] = {}
        for channel, (name, kind) in _SOCKET_TYPES.items():
            sock = context.socket(kind)
            sock.linger = 0
            if kind == zmq.DEALER and channel is not Channel.HB:
                sock.identity = _AGENT_IDENTITY
            if kind == zmq.SUB:
                sock.setsockopt(zmq.SUBSCRIBE, b"")
            sock.connect(endpoint(name))
            self._sockets[channel] = sock
        self._pumps = SocketPumps(self._sockets, on_message, name="kernel")

    def send(self, channel: Channel, parts: Sequence[bytes]) -> None:
        """Queue a message from the renter to the kernel (never blocks the loop)."""
        sock = self._sockets.get(channel)
        if sock is None:
            log.warning("dropping message for channel %s: not a kernel channel", channel.name)
            return
        try:
            sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            log.warning("kernel %s queue full; dropping one message", channel.name)

    async def close(self) -> None:
        await self._pumps.close()
