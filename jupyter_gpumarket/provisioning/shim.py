"""Loopback ZMQ shim: what local Jupyter clients connect to instead of a local kernel.

It binds the five kernel sockets on 127.0.0.1 with fresh ports and forwards every multipart
message, untouched, to the tunnel; messages from the tunnel go out on the matching socket.
Shell, control, stdin and heartbeat are ROUTERs (the client's identity rides along as the first
part), IOPub is a PUB.

A warning the user must see (an unsandboxed offer) is also attached to the next execute
request: front ends show only IOPub output whose parent is one of their requests, so the
shim sends it as that request's stderr output, before the kernel's own.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence

import zmq
import zmq.asyncio
from jupyter_client.session import Session

from jupyter_gpumarket.core.frames import Channel
from jupyter_gpumarket.zmqpump import SocketPumps

__all__ = ["ZmqShim"]

log = logging.getLogger(__name__)

_DELIM = b"<IDS|MSG>"
_MAX_HEADER_BYTES = 64 * 1024

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
        self._forward = forward
        self._announce: list[tuple[str, bytes]] = []
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
        self._pumps = SocketPumps(
            self._sockets, self._on_client, skip=(Channel.IOPUB,), name="shim"
        )

    def notify(self, text: str, key: bytes) -> None:
        """Tell every local client something on IOPub (stderr stream), signed with ``key``."""
        session = Session(key=key, username="gpumarket")
        session.send(
            self._sockets[Channel.IOPUB],
            "stream",
            {"name": "stderr", "text": text + "\n"},
            ident=b"stream",
        )

    def announce(self, text: str, key: bytes) -> None:
        """Show ``text`` now to every client and as output of the next cell that runs."""
        self.notify(text, key)
        self._announce.append((text, key))

    def _on_client(self, channel: Channel, parts: list[zmq.Frame]) -> None:
        if self._announce and channel is Channel.SHELL:
            header = _execute_header(parts)
            if header is not None:
                pending, self._announce = self._announce, []
                for text, key in pending:
                    Session(key=key, username="gpumarket").send(
                        self._sockets[Channel.IOPUB],
                        "stream",
                        {"name": "stderr", "text": text + "\n"},
                        parent=header,
                        ident=b"stream",
                    )
        self._forward(channel, parts)

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

    async def close(self, linger_ms: int = 0) -> None:
        """Close the sockets; ``linger_ms`` lets output already queued (a last notice) leave
        for the clients first, blocking the caller up to that long."""
        await self._pumps.close(linger_ms)
        self._context.term()


def _execute_header(parts: Sequence[zmq.Frame]) -> dict[str, object] | None:
    """The header of a local client's ``execute_request``, else None (the signature is the
    kernel's to check; this only picks the parent for a notice sent back to the same client)."""

    def data(part: zmq.Frame | bytes) -> bytes:
        return part.bytes if isinstance(part, zmq.Frame) else bytes(part)

    at = next(
        (i + 2 for i, p in enumerate(parts[:16]) if len(p) == len(_DELIM) and data(p) == _DELIM),
        None,
    )
    if at is None or at >= len(parts) or len(parts[at]) > _MAX_HEADER_BYTES:
        return None
    try:
        header = json.loads(data(parts[at]))
    except ValueError:
        return None
    if not isinstance(header, dict) or header.get("msg_type") != "execute_request":
        return None
    return header
