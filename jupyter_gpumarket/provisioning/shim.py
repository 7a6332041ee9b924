"""Loopback ZMQ shim: what local Jupyter clients connect to instead of a local kernel.

It binds the five kernel sockets on 127.0.0.1 with fresh ports and forwards every multipart
message, untouched, to the tunnel; messages from the tunnel go out on the matching socket.
Shell, control, stdin and heartbeat are ROUTERs (the client's identity rides along as the first
part), IOPub is a PUB.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import zmq
import zmq.asyncio
from jupyter_client.session import Session

from jupyter_gpumarket.core.frames import Channel
from jupyter_gpumarket.zmqpump import SocketPumps

__all__ = ["ZmqShim"]

log = logging.getLogger(__name__)

_SOCKETS = {
    Channel.SHELL: ("shell_port", zmq.ROUTER),
    Channel.CONTROL: ("control_port", zmq.ROUTER),
    Channel.STDIN: ("stdin_port", zmq.ROUTER),
    Channel.IOPUB: ("iopub_port", zmq.PUB),
    Channel.HB: ("hb_port", zmq.ROUTER),
}


class ZmqShim:
    """Binds the local sockets; ``forward(channel, parts)`` receives what clients send."""

    def __init__(self, forward: Callable[[Channel, list[zmq.Frame]], None]) -> None:
        self._context = zmq.asyncio.Context()
        self._sockets: dict[Channel, zmq.asyncio.Socket] = {}
        self.ports: dict[str, int] = {}
        for channel, (port_name, kind) in _SOCKETS.items():
            sock = self._context.socket(kind)
            sock.linger = 0
            if kind == zmq.PUB:
                sock.sndhwm = 0  # never drop output locally; the tunnel is the bound
            elif channel is not Channel.HB:
                # as ipykernel does: a reconnecting client (same session id) takes over
                sock.router_handover = 1
            self.ports[port_name] = sock.bind_to_random_port("tcp://127.0.0.1")
            self._sockets[channel] = sock
        self._pumps = SocketPumps(self._sockets, forward, skip=(Channel.IOPUB,), name="shim")

    def notify(self, text: str, key: bytes) -> None:
        """Tell every local client something on IOPub (stderr stream), signed with ``key``."""
        session = Session(key=key, username="gpumarket")
        session.send(
            self._sockets[Channel.IOPUB],
            "stream",
            {"name": "stderr", "text": text + "\n"},
            ident=b"stream",
        )

    def deliver(self, channel: Channel, parts: Sequence[bytes]) -> None:
        """Send a message from the kernel to the local clients."""
        sock = self._sockets.get(channel)
        if sock is None:
            log.warning("message on channel %s has no local socket; dropped", channel.name)
            return
        try:
            sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            log.warning("local %s socket is full; one message dropped", channel.name)
        except zmq.ZMQError as exc:  # e.g. ROUTER with an empty identity part
            log.warning("local %s socket refused a message: %s", channel.name, exc)

    async def close(self) -> None:
        await self._pumps.close()
        self._context.term()
