"""The WAN link emulator delays, caps, holds and resets as it says (lower bounds only)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from linkemu import LinkEmulator


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


async def _roundtrip(port: int, payload: bytes) -> tuple[bytes, float, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    t0 = time.monotonic()
    writer.write(payload)
    got = await asyncio.wait_for(reader.readexactly(len(payload)), 30)
    return got, time.monotonic() - t0, writer


async def test_delay_and_rate_apply_to_every_byte(echo_port: int) -> None:
    async with LinkEmulator("127.0.0.1", echo_port, delay=0.05, rate=4e6) as link:
        payload = bytes(range(256)) * 4096  # 1 MiB
        got, took, writer = await _roundtrip(link.port, payload)
        assert got == payload
        # three one-way delays (handshake, there, back) and the bytes at 4 MB/s, at least
        assert took >= 3 * 0.05 + len(payload) / 4e6
        assert link.stats()["bytes_up"] == link.stats()["bytes_down"] == len(payload)
        writer.close()


async def test_a_stall_holds_bytes_and_loses_none(echo_port: int) -> None:
    async with LinkEmulator("127.0.0.1", echo_port, delay=0.01) as link:
        reader, writer = await asyncio.open_connection("127.0.0.1", link.port)
        writer.write(b"before")
        assert await asyncio.wait_for(reader.readexactly(6), 10) == b"before"
        link.stall()
        writer.write(b"held")
        await asyncio.sleep(0.5)
        assert not reader._buffer  # type: ignore[attr-defined]  # nothing got through
        link.unstall()
        assert await asyncio.wait_for(reader.readexactly(4), 10) == b"held"
        writer.close()


async def test_a_reset_kills_open_connections_and_accepts_new_ones(echo_port: int) -> None:
    async with LinkEmulator("127.0.0.1", echo_port) as link:
        reader, writer = await asyncio.open_connection("127.0.0.1", link.port)
        writer.write(b"x")
        await asyncio.wait_for(reader.readexactly(1), 10)
        link.reset()
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(1), 10)
        got, _, again = await _roundtrip(link.port, b"again")
        assert got == b"again"
        again.close()
        writer.close()


async def test_a_stall_of_open_connections_lets_new_ones_through(echo_port: int) -> None:
    async with LinkEmulator("127.0.0.1", echo_port, delay=0.01) as link:
        reader, writer = await asyncio.open_connection("127.0.0.1", link.port)
        writer.write(b"a")
        await asyncio.wait_for(reader.readexactly(1), 10)
        link.stall(existing_only=True)  # a roaming client: the old path hangs, a new one works
        writer.write(b"held")
        got, _, fresh = await _roundtrip(link.port, b"new path")
        assert got == b"new path"
        assert not reader._buffer  # type: ignore[attr-defined]  # the old one still hangs
        link.unstall()
        assert await asyncio.wait_for(reader.readexactly(4), 10) == b"held"
        fresh.close()
        writer.close()
