"""Attacks by strangers on a real agent process: what they may cost before they authenticate.

- huge first messages from several unauthenticated clients are cut off at the pre-auth size
  limit (the agent's peak RSS stays flat) while a renter still gets its welcome;
- more unauthenticated connections from one address than its budget are refused (1013) while
  an authenticated link and renters from other addresses keep working;
- deeply nested JSON (hello, relay_open, control messages) is a clean protocol error, and the
  agent keeps serving.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from jupyter_gpumarket.agent.preauth import PREAUTH_PER_IP, PREAUTH_TOTAL
from jupyter_gpumarket.core import control
from jupyter_gpumarket.core.control import CloseCode
from jupyter_gpumarket.core.frames import Channel, decode_frame, encode_frame

from agentproc import AgentProcess, running_agent

pytestmark = pytest.mark.slow

HANG = 60.0  # seconds: only to detect a hang, never a performance bound
MB = 1024 * 1024


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentProcess]:
    # every welcome opens a lease: room for many, and they end soon after their renter leaves
    with running_agent(tmp_path / "agent", "--max-kernels", "64", "--client-grace", "1") as proc:
        yield proc


def _ssl() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


@asynccontextmanager
async def _renter(
    agent: AgentProcess, source: str = "127.0.0.1"
) -> AsyncIterator[ClientConnection]:
    """A renter with the right token: connected, welcomed."""
    async with connect(
        agent.url, ssl=_ssl(), compression=None, max_size=None, local_addr=(source, 0)
    ) as ws:
        await ws.send(control.dump(control.Hello(token=agent.token)).decode())
        control.parse_welcome(await asyncio.wait_for(ws.recv(), HANG))
        yield ws


async def _drain(ws: ClientConnection) -> None:
    while True:
        await asyncio.wait_for(ws.recv(), HANG)


async def _welcomed(agent: AgentProcess, source: str = "127.0.0.1") -> None:
    async with _renter(agent, source):
        pass


class RawClient:
    """A websocket client that writes frames byte by byte, as an attacker would."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, url: str, source: str = "127.0.0.1") -> RawClient:
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(
            parts.hostname, parts.port, ssl=_ssl(), local_addr=(source, 0)
        )
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET / HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HANG)
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    async def send_text_streamed(self, payload_size: int, prefix: bytes) -> int:
        """Send one text frame of ``payload_size`` bytes in 1 MiB writes (zero mask key, so
        the payload is its own masked form); returns how many bytes went out before the
        agent cut the connection."""
        header = b"\x81\xff" + payload_size.to_bytes(8, "big") + b"\0\0\0\0"
        sent = 0
        try:
            self.writer.write(header + prefix)
            sent = len(prefix)
            chunk = b"a" * MB
            while sent < payload_size:
                piece = chunk[: payload_size - sent]
                self.writer.write(piece)
                await self.writer.drain()
                sent += len(piece)
        except (ConnectionError, ssl.SSLError, OSError):
            pass
        return sent

    async def close_code(self) -> int | None:
        """The code of the agent's close frame (None: the link ended without one)."""
        try:
            head = await asyncio.wait_for(self.reader.readexactly(2), HANG)
            while head[0] & 0x0F != 0x8:  # skip anything before the close frame
                size = head[1] & 0x7F
                if size == 126:
                    size = int.from_bytes(await self.reader.readexactly(2), "big")
                elif size == 127:
                    size = int.from_bytes(await self.reader.readexactly(8), "big")
                await self.reader.readexactly(size)
                head = await self.reader.readexactly(2)
            body = await self.reader.readexactly(head[1] & 0x7F)
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            return None
        return int.from_bytes(body[:2], "big") if len(body) >= 2 else None

    async def close(self) -> None:
        """Drop the connection at once (an attacker waits for no closing handshake)."""
        self.writer.transport.abort()
        for _ in range(3):  # the socket is closed on a later turn of the loop
            await asyncio.sleep(0)


async def test_huge_unauthenticated_messages_are_cut_off_and_renters_still_get_in(
    agent: AgentProcess,
) -> None:
    """4 strangers each stream a 50 MB 'hello': the agent must not buffer them."""
    before = _peak_rss(agent.proc.pid)
    floods = [await RawClient.open(agent.url) for _ in range(4)]
    prefix = b'{"op":"hello","token":"'
    tasks = [asyncio.ensure_future(f.send_text_streamed(50 * MB, prefix)) for f in floods]
    welcomed = 0
    while welcomed < 40:  # renters keep getting in for as long as the flood lasts
        await asyncio.wait_for(_welcomed(agent), HANG)
        welcomed += 1
        if all(t.done() for t in tasks):
            break
    await asyncio.wait_for(asyncio.gather(*tasks), HANG)
    codes = [await f.close_code() for f in floods]
    for f in floods:
        await f.close()
    growth = _peak_rss(agent.proc.pid) - before
    assert welcomed >= 1
    assert growth < 200 * MB, f"agent peak RSS grew by {growth // MB} MB during the flood"
    assert codes == [1009] * 4  # message too big: refused at the frame header
    assert agent.proc.poll() is None
    await asyncio.wait_for(_welcomed(agent), HANG)


async def test_unauthenticated_connections_over_the_per_address_budget_are_refused(
    agent: AgentProcess,
) -> None:
    async with _renter(agent) as renter:  # authenticated before the flood: never counted
        idle = [await RawClient.open(agent.url) for _ in range(PREAUTH_PER_IP)]
        extra = [await RawClient.open(agent.url) for _ in range(4)]
        assert [await c.close_code() for c in extra] == [1013] * 4  # try again later
        # renters from another address are not charged for this one's strangers
        await asyncio.wait_for(_welcomed(agent, "127.0.0.2"), HANG)
        # the authenticated link still answers: a pull request gets its manifest
        await renter.send(encode_frame(Channel.AGENT, 1, 0, [b'{"op":"pull_request"}']))
        while True:
            frame = decode_frame(await asyncio.wait_for(renter.recv(), HANG))  # type: ignore[arg-type]
            if frame.channel is Channel.AGENT:
                assert control.parse_agent_message(bytes(frame.parts[0])).op == "pull_manifest"
                break
        for c in idle + extra:
            await c.close()
    # the budget comes back once the strangers are gone
    for _ in range(100):
        try:
            await asyncio.wait_for(_welcomed(agent), HANG)
            break
        except ConnectionClosed as exc:
            refused = exc
        assert refused.rcvd is not None
        assert refused.rcvd.code == 1013
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the per-address budget never came back")


async def test_unauthenticated_connections_from_many_addresses_meet_the_global_cap(
    agent: AgentProcess,
) -> None:
    async with _renter(agent) as renter:
        addresses = [f"127.0.1.{i}" for i in range(1, 1 + PREAUTH_TOTAL // PREAUTH_PER_IP)]
        idle = [
            await RawClient.open(agent.url, a) for a in addresses for _ in range(PREAUTH_PER_IP)
        ]
        late = await RawClient.open(agent.url, "127.0.2.1")  # its own budget is untouched
        assert await late.close_code() == 1013
        await renter.send(encode_frame(Channel.AGENT, 1, 0, [b'{"op":"signal","signum":2}']))
        for c in [*idle, late]:
            await c.close()
        assert agent.proc.poll() is None


async def test_stalled_handshakes_are_dropped(agent: AgentProcess) -> None:
    """Slow strangers: no TLS hello, TLS but no HTTP upgrade, half an upgrade request. Each
    is dropped by the agent's handshake timeouts (they hold no pre-auth slot meanwhile)."""
    parts = urlsplit(agent.url)

    async def eof(reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            while await reader.read(4096):
                pass

    streams = [
        await asyncio.open_connection(parts.hostname, parts.port),  # never starts TLS
        await asyncio.open_connection(parts.hostname, parts.port, ssl=_ssl()),  # no request
        await asyncio.open_connection(parts.hostname, parts.port, ssl=_ssl()),
    ]
    streams[2][1].write(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")  # never ends
    await asyncio.wait_for(asyncio.gather(*(eof(r) for r, _ in streams)), HANG)
    for _, writer in streams:
        writer.transport.abort()
    await asyncio.sleep(0)
    await asyncio.wait_for(_welcomed(agent), HANG)


def _deep(levels: int, open_: str = "[", close: str = "]") -> str:
    return open_ * levels + "1" + close * levels


_DEEP_FIRST_MESSAGES = {
    "hello-list": '{"op":"hello","token":"t","x":' + _deep(5000) + "}",
    "hello-dict": '{"op":"hello","token":' + _deep(2000, '{"a":', "}") + "}",
    "relay-open": '{"op":"relay_open","renter":' + _deep(5000) + "}",
    "unterminated": '{"op":"hello","token":"t","x":' + "[" * 8000,
    "bare-array": "[" * 8000,
}


@pytest.mark.parametrize(
    "message", list(_DEEP_FIRST_MESSAGES.values()), ids=list(_DEEP_FIRST_MESSAGES)
)
async def test_deeply_nested_first_message_is_a_protocol_error(
    agent: AgentProcess, message: str
) -> None:
    async with connect(agent.url, ssl=_ssl(), compression=None) as ws:
        await ws.send(message)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), HANG)
    assert ws.close_code == CloseCode.PROTOCOL, (ws.close_code, ws.close_reason)
    assert "nests" in (ws.close_reason or "")
    await asyncio.wait_for(_welcomed(agent), HANG)
    assert agent.proc.poll() is None


@pytest.mark.parametrize(
    "payload",
    [
        b'{"op":"sync_offer","manifest":' + _deep(100_000).encode() + b"}",
        b'{"op":"start_kernel","key":"k","env":' + _deep(40_000, '{"A":', "}").encode() + b"}",
        b"[" * 200_000,
    ],
    ids=["sync-offer", "start-kernel-env", "bare-array"],
)
async def test_deeply_nested_control_message_is_a_protocol_error(
    agent: AgentProcess, payload: bytes
) -> None:
    async with _renter(agent) as ws:
        await ws.send(encode_frame(Channel.AGENT, 1, 0, [payload]))
        with pytest.raises(ConnectionClosed):
            await _drain(ws)
    assert ws.close_code == CloseCode.PROTOCOL, (ws.close_code, ws.close_reason)
    assert "nests" in (ws.close_reason or "")
    await asyncio.wait_for(_welcomed(agent), HANG)
    assert agent.proc.poll() is None
