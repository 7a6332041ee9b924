"""The agent's scatter write of a frame (wire_send.send_buffers) on a real websockets server
connection on loopback: what the client receives, backpressure from a peer that does not read,
and the fallback to ws.send where scattering would not write what websockets would."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve

from jupyter_gpumarket.wire_send import SCATTER_MIN, send_buffers

MB = 1024 * 1024


@asynccontextmanager
async def _pair(
    compression: str | None = None, write_limit: int = 32 * 1024
) -> AsyncIterator[tuple[ServerConnection, ClientConnection]]:
    """A websockets server connection and the client connected to it."""
    got: asyncio.Future[ServerConnection] = asyncio.get_running_loop().create_future()
    done = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        got.set_result(ws)
        await done.wait()

    async with serve(
        handler, "127.0.0.1", 0, compression=compression, write_limit=write_limit
    ) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(
            f"ws://127.0.0.1:{port}", compression=compression, max_size=None
        ) as client:
            ws = await asyncio.wait_for(got, 10)
            try:
                yield ws, client
            finally:
                done.set()


def _messages() -> list[list[bytes]]:
    big = bytes(range(256)) * (MB // 256)
    return [
        [b"head", b"", memoryview(big), b"tail"],
        [b"small"],
        [bytearray(b"x" * SCATTER_MIN), memoryview(big)[:1000], b"y" * 3],
        [b"a" * 125],
        [memoryview(big)[5 : 5 + 65536]],
        [b"h" * 10, memoryview(big)[: 2 * 65536 + 1], memoryview(big)[7:]],
    ]


async def _exchange(compression: str | None) -> None:
    async with _pair(compression) as (ws, client):
        messages = _messages()
        sender = asyncio.ensure_future(_send_all(ws, messages))
        for buffers in messages:
            assert await asyncio.wait_for(client.recv(), 30) == b"".join(buffers)
        await asyncio.wait_for(sender, 30)
        await ws.ping()  # websockets' own frames keep working after ours
        await asyncio.wait_for(client.ping(), 30)
        await ws.send(b"after")
        assert await asyncio.wait_for(client.recv(), 30) == b"after"


async def _send_all(ws: ServerConnection, messages: list[list[bytes]]) -> None:
    for buffers in messages:
        await send_buffers(ws, buffers)


async def test_scattered_messages_arrive_whole_and_in_order() -> None:
    await _exchange(None)


async def test_with_compression_it_falls_back_to_ws_send() -> None:
    await _exchange("deflate")


async def test_a_peer_that_does_not_read_holds_the_sender_back() -> None:
    async with _pair(None) as (ws, client):
        client.transport.pause_reading()  # the renter stops reading: buffers fill up
        big = memoryview(b"z" * MB)
        sent = 0

        async def flood() -> None:
            nonlocal sent
            while True:
                await send_buffers(ws, [b"hdr", big])
                sent += 1
                await asyncio.sleep(0)  # a sender that never waits still lets the test run

        task = asyncio.ensure_future(flood())
        try:
            async with asyncio.timeout(30):  # hang detection only
                # the transport crossed its high-water mark (websockets has no event for it)
                while not ws.paused:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            held = sent
            for _ in range(20):
                await asyncio.sleep(0)
            assert sent == held  # drain() waits: no more is written while paused
            assert not task.done()
            assert ws.transport.get_write_buffer_size() < 64 * MB  # bounded, not the flood
            client.transport.resume_reading()
            for _ in range(held + 1):
                assert await asyncio.wait_for(client.recv(), 30) == b"hdr" + big
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
