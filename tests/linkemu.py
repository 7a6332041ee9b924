"""A userspace WAN link emulator: an asyncio TCP proxy with one-way delay, a bandwidth cap,
stalls that hold bytes, and resets (the kernel's netem is not available on these machines).

.. code-block:: python

    async with LinkEmulator("127.0.0.1", server_port, delay=0.075, rate=1.25e6) as link:
        ...  # connect to 127.0.0.1:link.port: 150 ms round trip, 10 Mbit/s each way
        link.stall()     # every byte is held (both ways, new connections too), nothing lost
        link.stall(existing_only=True)  # the path changed: open connections hang, new ones pass
        link.unstall()   # held bytes go on at the link's rate; TCP never noticed
        link.reset()     # every current connection gets an RST; new ones are accepted

Each direction of each connection is two stages, like a router's queue and the wire:
serialization (``len / rate`` per chunk, on a schedule that accumulates while the link is
busy, so the average rate is exact whatever the timer jitter) and propagation (``delay``
later, pipelined). The proxy stops reading from a sender once ``buffer`` bytes wait for
serialization, so the sender's own socket fills as it would behind a real bottleneck. A new
connection's first bytes leave one round trip after the accept (the TCP handshake the
loopback accept skipped).

:class:`ThreadedLink` runs one on its own loop in a daemon thread (tests); run as a script,
``python tests/linkemu.py TARGET_PORT --delay S --rate BYTES_PER_S`` prints its port and
takes ``stall`` / ``unstall`` / ``reset`` / ``stats`` lines on stdin (benchmarks: a process
of its own, so the code measured does not share a GIL with the link).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections import deque
from dataclasses import dataclass, field

from loopthread import OnLoopThread

from netfault import _abort_with_rst, _require_loopback

__all__ = ["LinkEmulator", "ThreadedLink"]

_CHUNK = 16384
_CLOSE_TIMEOUT = 5.0
# A busy link's clock runs on from the previous chunk's end even when the timer woke late:
# restarting it at "now" after every late wake-up lost the oversleep each time (a 16 KB
# chunk is 1.3 ms at 100 Mbit/s, and sleeps overshoot by about that: half the rate was
# lost). Only a link idle for longer than this starts its clock again at "now".
_MAX_LAG = 0.01


@dataclass(eq=False)
class _Conn:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    dead: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def abort(self) -> None:
        self.dead = True
        _abort_with_rst(self.client)
        _abort_with_rst(self.upstream)


class LinkEmulator:
    """Forward ``127.0.0.1:<port>`` to a loopback target through an emulated link.

    ``delay`` is one way (seconds), ``rate`` bytes per second in each direction (None: no
    cap), ``buffer`` the bytes a direction queues before it stops reading its sender.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        delay: float = 0.0,
        rate: float | None = None,
        buffer: int = 256 * 1024,
        host: str = "127.0.0.1",
    ) -> None:
        _require_loopback(target_host, "target_host")
        _require_loopback(host, "host")
        if delay < 0 or (rate is not None and rate <= 0) or buffer < _CHUNK:
            raise ValueError(f"bad link: delay={delay}, rate={rate}, buffer={buffer}")
        self.target_host, self.target_port, self.host = target_host, target_port, host
        self.delay, self.rate, self.buffer = delay, rate, buffer
        self.port = 0
        self.stalled_since: float | None = None
        self._held: set[_Conn] | None = None  # the stalled connections (None: all, new too)
        self.bytes_up = self.bytes_down = self.connections = self.resets = 0
        self._conns: set[_Conn] = set()
        self._server: asyncio.Server | None = None
        self._changed = asyncio.Event()
        self._closing = False

    # -- controls (on the emulator's loop) ----------------------------------------------------
    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def stall(self, existing_only: bool = False) -> None:
        """Hold every byte, both ways, on every connection (new ones too) until unstall();
        ``existing_only``: only on the connections open now (a path that changed: a roaming
        client's old connections hang without a reset, new ones go through)."""
        if self.stalled_since is None:
            self.stalled_since = time.monotonic()
            self._held = set(self._conns) if existing_only else None
        self._wake()

    def unstall(self) -> None:
        self.stalled_since = None
        self._held = None
        self._wake()

    def reset(self) -> None:
        """RST every current connection, both sides; new connections are accepted."""
        for conn in list(self._conns):
            if not conn.dead:
                conn.abort()
                self.resets += 1
        self._wake()

    def stats(self) -> dict[str, object]:
        return {
            "delay_s": self.delay,
            "rate_bytes_per_s": self.rate,
            "stalled": self.stalled_since is not None,
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
            "connections": self.connections,
            "active": len(self._conns),
            "resets": self.resets,
        }

    async def aclose(self) -> None:
        self._closing = True
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            conn.abort()
            for task in conn.tasks:
                task.cancel()
        self._wake()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), _CLOSE_TIMEOUT)

    async def __aenter__(self) -> LinkEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- the link ----------------------------------------------------------------------------
    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _unstalled(self, conn: _Conn) -> None:
        while self._holds(conn) and not (conn.dead or self._closing):
            await self._changed.wait()

    def _holds(self, conn: _Conn) -> bool:
        return self.stalled_since is not None and (self._held is None or conn in self._held)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted = time.monotonic()
        conn = _Conn(writer)
        self._conns.add(conn)
        self.connections += 1
        try:
            await self._unstalled(conn)  # a stalled path: the SYN waits too
            if conn.dead or self._closing:
                return
            try:
                up_reader, conn.upstream = await asyncio.wait_for(
                    asyncio.open_connection(self.target_host, self.target_port), _CLOSE_TIMEOUT
                )
            except (OSError, TimeoutError):
                conn.abort()
                return
            # the handshake the loopback accept skipped: the client's first byte leaves one
            # round trip after its SYN, the server's one way after it
            t0 = max(accepted, time.monotonic())
            conn.tasks = [
                asyncio.create_task(
                    self._direction(reader, conn.upstream, conn, "up", t0 + 2 * self.delay)
                ),
                asyncio.create_task(
                    self._direction(up_reader, writer, conn, "down", t0 + self.delay)
                ),
            ]
            await asyncio.wait(conn.tasks)
        finally:
            if self._closing:
                conn.abort()
            elif not conn.dead:
                _close(conn)
            self._conns.discard(conn)

    async def _direction(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        conn: _Conn,
        name: str,
        start: float,
    ) -> None:
        queued: deque[bytes] = deque()  # waiting for serialization
        wire: deque[tuple[float, bytes]] = deque()  # (arrival time, bytes) in propagation
        state = {"queued": 0, "eof": False, "free_at": start}
        moved = asyncio.Event()

        async def read() -> None:
            while not conn.dead:
                while state["queued"] >= self.buffer and not conn.dead:
                    moved.clear()
                    await moved.wait()
                data = await reader.read(_CHUNK)
                if not data:
                    state["eof"] = True
                    moved.set()
                    return
                queued.append(data)
                state["queued"] += len(data)
                moved.set()

        async def serialize() -> None:
            while not conn.dead:
                if not queued:
                    if state["eof"]:
                        wire.append((0.0, b""))
                        moved.set()
                        return
                    moved.clear()
                    await moved.wait()
                    continue
                await self._unstalled(conn)
                data = queued.popleft()
                state["queued"] -= len(data)
                now = time.monotonic()
                free_at = float(state["free_at"])
                if free_at < now - _MAX_LAG:  # idle: the link's clock restarts now
                    free_at = now
                if self.rate is not None:
                    free_at += len(data) / self.rate
                state["free_at"] = free_at
                wire.append((free_at + self.delay, data))
                moved.set()
                if free_at > now:
                    await asyncio.sleep(free_at - now)

        async def deliver() -> None:
            while not conn.dead:
                if not wire:
                    moved.clear()
                    await moved.wait()
                    continue
                at, data = wire[0]
                if not data and at == 0.0:
                    if writer.can_write_eof() and not writer.transport.is_closing():
                        writer.write_eof()
                    return
                await self._unstalled(conn)
                wait = at - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue  # a stall may have begun meanwhile
                wire.popleft()
                writer.write(data)
                if name == "up":
                    self.bytes_up += len(data)
                else:
                    self.bytes_down += len(data)
                await writer.drain()

        stages = [asyncio.create_task(fn()) for fn in (read, serialize, deliver)]
        try:
            await asyncio.wait(stages, return_when=asyncio.FIRST_EXCEPTION)
            if any(t.done() and not t.cancelled() and t.exception() for t in stages):
                conn.abort()  # a reset on one side is passed on as a reset on the other
        finally:
            for task in stages:
                task.cancel()
            for task in stages:
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await task


def _close(conn: _Conn) -> None:
    conn.dead = True
    conn.client.close()
    if conn.upstream is not None:
        conn.upstream.close()


class ThreadedLink(OnLoopThread[LinkEmulator]):
    """A :class:`LinkEmulator` on its own loop in a daemon thread (tests/loopthread.py);
    controls block until applied."""

    thread_name = "linkemu"

    def __init__(self, target_host: str, target_port: int, **link: float | int | None) -> None:
        super().__init__()
        self._args, self._link = (target_host, target_port), link

    def make(self) -> LinkEmulator:
        return LinkEmulator(*self._args, **self._link)  # type: ignore[arg-type]

    @property
    def emulator(self) -> LinkEmulator:
        return self.obj

    def stall(self, existing_only: bool = False) -> None:
        self.call(lambda: self.emulator.stall(existing_only))

    def unstall(self) -> None:
        self.call(lambda: self.emulator.unstall())

    def reset(self) -> None:
        self.call(lambda: self.emulator.reset())

    def stats(self) -> dict[str, object]:
        return self.call(lambda: self.emulator.stats())


async def _serve(args: argparse.Namespace) -> None:
    emu = LinkEmulator("127.0.0.1", args.target_port, delay=args.delay, rate=args.rate)
    await emu.start()
    print(emu.port, flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    commands = {"stall": emu.stall, "unstall": emu.unstall, "reset": emu.reset}
    while line := (await reader.readline()).decode().strip():
        if line in commands:
            commands[line]()
            print("ok", flush=True)
        elif line == "stats":
            print(json.dumps(emu.stats()), flush=True)
        else:
            print(f"unknown command {line!r}", flush=True)
    await emu.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target_port", type=int)
    parser.add_argument("--delay", type=float, default=0.0, help="one-way delay, seconds")
    parser.add_argument("--rate", type=float, default=None, help="bytes per second each way")
    asyncio.run(_serve(parser.parse_args()))
