"""A loopback TCP proxy for tests that can reset, black-hole or refuse the connections it carries.

.. code-block:: python

    async with FaultProxy("127.0.0.1", server_port) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        proxy.blackhole()   # bytes vanish both ways, sockets stay open, new connects stall
        proxy.restore()     # traffic flows again (see restore() for what happens to old links)
        proxy.reset()       # every current connection gets an RST; new ones still accepted
        proxy.refuse()      # new connections are reset as soon as they are accepted

:class:`ThreadedProxy` runs a :class:`FaultProxy` on its own event loop in a daemon thread, for
code under test that runs on another loop (or none) and must not share the proxy's loop.

Both only listen on and forward to loopback addresses, and :meth:`FaultProxy.aclose` /
:meth:`ThreadedProxy.stop` end every connection and task they started, within a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
from dataclasses import dataclass, field
from typing import Literal

from loopthread import OnLoopThread

__all__ = ["FaultProxy", "ThreadedProxy"]

Mode = Literal["pass", "blackhole", "refuse"]

_CHUNK = 65536
_CONNECT_TIMEOUT = 5.0
_CLOSE_TIMEOUT = 5.0


def _require_loopback(host: str, what: str) -> None:
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"{what} must be a loopback address (127.0.0.1, ::1), got {host!r}")


def _abort_with_rst(writer: asyncio.StreamWriter | None) -> None:
    """Close a socket so the peer sees a reset, not an orderly FIN (SO_LINGER 0)."""
    if writer is None or writer.transport.is_closing():
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass(eq=False)
class _Link:
    """One proxied connection: the client's socket and, once connected, the upstream one."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    lost_bytes: int = 0
    dead: bool = False
    pumps: list[asyncio.Task[None]] = field(default_factory=list)

    def abort(self) -> None:
        self.dead = True
        _abort_with_rst(self.client)
        _abort_with_rst(self.upstream)


class FaultProxy:
    """Forward ``127.0.0.1:<port>`` to ``target_host:target_port``, with faults on demand.

    Counters (forwarded bytes ``bytes_up`` client->target and ``bytes_down`` target->client,
    ``dropped_up`` / ``dropped_down`` while black-holed, ``connections`` accepted, ``resets``
    links aborted) are plain ints. Controls are synchronous and must be called on the proxy's
    loop; from another thread use :class:`ThreadedProxy`.
    """

    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1") -> None:
        _require_loopback(target_host, "target_host")
        _require_loopback(host, "host")
        self.target_host, self.target_port, self.host = target_host, target_port, host
        self.port = 0
        self.mode: Mode = "pass"
        self.bytes_up = self.bytes_down = self.dropped_up = self.dropped_down = 0
        self.connections = self.resets = 0
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._changed = asyncio.Event()
        self._closing = False

    async def start(self) -> int:
        """Listen on a random free port of ``host``; return it (also in ``self.port``)."""
        self._server = await asyncio.start_server(self._handle, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    @property
    def active(self) -> int:
        """Connections currently open (including ones stalled by a black hole)."""
        return len(self._links)

    def reset(self) -> None:
        """Abort every current connection with an RST on both sides; keep accepting new ones."""
        for link in list(self._links):
            if not link.dead:
                link.abort()
                self.resets += 1
        self._wake()

    def blackhole(self) -> None:
        """Silently drop bytes both ways on open connections; stall new ones (not read, not
        forwarded, not closed) until :meth:`restore`."""
        self._set_mode("blackhole")

    def refuse(self) -> None:
        """Reset each new connection as soon as it is accepted; open ones carry on."""
        self._set_mode("refuse")

    def restore(self) -> None:
        """Let traffic through again. Connections that lost bytes in a black hole are reset:
        their byte streams have a gap, which real TCP never delivers. Connections stalled while
        black-holed (nothing read yet) are connected upstream and carry on intact."""
        for link in list(self._links):
            if link.lost_bytes and not link.dead:
                link.abort()
                self.resets += 1
        self._set_mode("pass")

    def stats(self) -> dict[str, int | str]:
        return {
            "mode": self.mode,
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
            "dropped_up": self.dropped_up,
            "dropped_down": self.dropped_down,
            "connections": self.connections,
            "active": self.active,
            "resets": self.resets,
        }

    async def aclose(self) -> None:
        """Stop listening, reset every connection, and wait (bounded) for all tasks to end."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.abort()
        self._wake()
        # Our pump tasks are cancelled; the handlers (owned by asyncio.start_server, which logs
        # an error for a cancelled one on 3.11) then end by themselves, within the timeout.
        for task in [t for link in self._links for t in link.pumps]:
            task.cancel()
        handlers = set(self._handlers)
        if handlers:
            _, late = await asyncio.wait(handlers, timeout=_CLOSE_TIMEOUT)
            for task in late:
                task.cancel()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), _CLOSE_TIMEOUT)

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _set_mode(self, mode: Mode) -> None:
        self.mode = mode
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        link = _Link(writer)
        self._links.add(link)
        self.connections += 1
        try:
            while self.mode == "blackhole" and not (link.dead or self._closing):
                await self._changed.wait()  # stalled: the client's bytes wait in the kernel
            if link.dead or self._closing or self.mode == "refuse":
                return
            try:
                up_reader, link.upstream = await asyncio.wait_for(
                    asyncio.open_connection(self.target_host, self.target_port), _CONNECT_TIMEOUT
                )
            except (OSError, TimeoutError):
                link.abort()  # target down: the client sees a reset, not a quiet close
                return
            if link.dead or self._closing:
                return
            link.pumps = [
                asyncio.create_task(self._pump(reader, link.upstream, link, "up")),
                asyncio.create_task(self._pump(up_reader, writer, link, "down")),
            ]
            await asyncio.wait(link.pumps)
        finally:
            if link.dead or self._closing or self.mode == "refuse":
                link.abort()
            else:  # both directions ended with EOF: close in order, as the peers did
                link.dead = True
                link.client.close()
                if link.upstream is not None:
                    link.upstream.close()
            self._links.discard(link)
            self._handlers.discard(task)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        link: _Link,
        direction: Literal["up", "down"],
    ) -> None:
        try:
            while not link.dead:
                data = await reader.read(_CHUNK)
                if self.mode == "blackhole":
                    link.lost_bytes += len(data)
                    if direction == "up":
                        self.dropped_up += len(data)
                    else:
                        self.dropped_down += len(data)
                    if not data:
                        return  # the FIN is lost too; the other side keeps waiting
                    continue
                if not data:
                    if writer.can_write_eof() and not writer.transport.is_closing():
                        writer.write_eof()
                    return
                writer.write(data)
                if direction == "up":
                    self.bytes_up += len(data)
                else:
                    self.bytes_down += len(data)
                await writer.drain()
        except OSError:
            link.abort()  # a reset on one side is passed on as a reset on the other


class ThreadedProxy(OnLoopThread[FaultProxy]):
    """A :class:`FaultProxy` on its own event loop in a daemon thread (tests/loopthread.py):
    ``start()`` returns the port; controls block until the proxy's loop has applied them, so a
    test can call ``proxy.reset()`` and then assert."""

    thread_name = "netfault-proxy"

    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1") -> None:
        _require_loopback(target_host, "target_host")
        _require_loopback(host, "host")
        super().__init__()
        self._args = (target_host, target_port, host)

    def make(self) -> FaultProxy:
        target_host, target_port, host = self._args
        return FaultProxy(target_host, target_port, host=host)

    @property
    def proxy(self) -> FaultProxy:
        """The proxy itself, for reading counters (plain ints, safe to read from any thread)."""
        return self.obj

    def reset(self) -> None:
        self.call(lambda: self.proxy.reset())

    def blackhole(self) -> None:
        self.call(lambda: self.proxy.blackhole())

    def refuse(self) -> None:
        self.call(lambda: self.proxy.refuse())

    def restore(self) -> None:
        self.call(lambda: self.proxy.restore())

    def stats(self) -> dict[str, int | str]:
        return self.call(lambda: self.proxy.stats())
