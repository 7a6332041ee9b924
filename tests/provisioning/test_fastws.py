"""The picows connection of the renter's link (provisioning.fastws), against a real agent and
against hostile loopback websocket servers: a message over the size limit, whole or in
fragments; a certificate that is not the pinned one; a flood the renter does not read; a
fragmented message; a server that never answers the close."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, ConnectionClosedError

from jupyter_gpumarket.agent.tls import ensure_certificate, server_ssl_context
from jupyter_gpumarket.core import control
from jupyter_gpumarket.exceptions import ProviderRefused, TlsFingerprintMismatch
from jupyter_gpumarket.provisioning import fastws
from jupyter_gpumarket.provisioning.fastws import PicowsConnection
from jupyter_gpumarket.provisioning.link_connect import LinkSettings, ProviderTarget, connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from agentproc import AgentProcess, environ, running_agent

LIMIT = 64 * 1024
CLOSE_TIMEOUT = 1.0
Handler = Callable[[ServerConnection], Awaitable[None]]


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return ensure_certificate(tmp_path_factory.mktemp("cert"))


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    with running_agent(tmp_path_factory.mktemp("agent")) as agent:
        yield agent


async def _open(url: str, pin: str, **kw: Any) -> PicowsConnection:
    return await fastws.connect_pinned(
        url,
        pin,
        unreachable=lambda exc: f"unreachable: {exc}",
        mismatch=lambda shown: f"presented {shown}",
        open_timeout=10,
        max_size=kw.pop("max_size", LIMIT),
        close_timeout=CLOSE_TIMEOUT,
        **kw,
    )


class _Hostile:
    """A websockets server on loopback whose handler misbehaves."""

    def __init__(self, cert: Any, handler: Handler) -> None:
        self.cert, self.handler = cert, handler

    async def __aenter__(self) -> str:
        self.server = await serve(
            self.handler,
            "127.0.0.1",
            0,
            ssl=server_ssl_context(self.cert),
            max_size=None,
            compression=None,
        )
        port = self.server.sockets[0].getsockname()[1]
        return f"wss://127.0.0.1:{port}/"

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()


class _RawTls:
    """A TLS server that does the websocket upgrade by hand and then ignores everything
    (never answers a close frame); records every byte it received."""

    def __init__(self, cert: Any) -> None:
        self.cert = cert
        self.received = bytearray()
        self.writers: list[asyncio.StreamWriter] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await reader.read(4096)
            if not chunk:
                return
            head += chunk
            self.received += chunk
        key = next(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(
            hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
        )
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        while chunk := await reader.read(4096):  # a close frame included: no answer
            self.received += chunk

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(
            self._serve, "127.0.0.1", 0, ssl=server_ssl_context(self.cert)
        )
        port = self.server.sockets[0].getsockname()[1]
        return f"wss://127.0.0.1:{port}/"

    async def __aexit__(self, *exc: object) -> None:
        for writer in self.writers:
            writer.transport.abort()
        self.server.close()


# -- a real agent -----------------------------------------------------------------------------
async def test_the_link_handshake_runs_over_picows(agent: AgentProcess) -> None:
    target = ProviderTarget(agent.url, agent.fingerprint, agent.token)
    with environ({fastws.ENV: "picows"}):
        ws, opened = await connect(target, LinkSettings(), control.Hello(token=agent.token), 10)
    assert isinstance(ws, PicowsConnection)
    assert opened.welcome.lease
    assert ws.rx_bytes > 0
    assert ws.rx_at > 0
    await ws.close()
    assert ws.close_rcvd is not None
    assert ws.close_rcvd.code == 1000


async def test_a_wrong_pin_on_a_real_agent_is_refused_with_the_link_message(
    agent: AgentProcess,
) -> None:
    wrong = "sha256:" + "0" * 64
    target = ProviderTarget(agent.url, wrong, agent.token)
    with environ({fastws.ENV: "picows"}), pytest.raises(TlsFingerprintMismatch) as err:
        await connect(target, LinkSettings(), control.Hello(token=agent.token), 10)
    assert f"presented certificate {agent.fingerprint}, not the pinned {wrong}" in str(err.value)


def test_the_implementation_is_chosen_by_env() -> None:
    with environ({fastws.ENV: ""}):
        assert fastws.tunnel_ws() == "picows"
    with environ({fastws.ENV: "websockets"}):
        assert fastws.tunnel_ws() == "websockets"
    with environ({fastws.ENV: "curl"}), pytest.raises(ValueError, match="GPUMARKET_TUNNEL_WS"):
        fastws.tunnel_ws()


# -- hostile servers --------------------------------------------------------------------------
async def test_a_wrong_certificate_is_refused_before_any_byte_is_sent(cert: Any) -> None:
    raw = _RawTls(cert)
    async with raw as url:
        with pytest.raises(TlsFingerprintMismatch, match=f"presented {cert.fingerprint}"):
            await _open(url, "sha256:" + "ab" * 32)
        await asyncio.sleep(0.2)
    assert bytes(raw.received) == b""  # not even the upgrade request, let alone the hello


@pytest.mark.parametrize("fragments", [1, 4], ids=["whole", "fragmented"])
async def test_a_message_over_the_limit_closes_1009_with_a_clear_error(
    cert: Any, fragments: int
) -> None:
    seen: list[Any] = []

    async def oversize(ws: ServerConnection) -> None:
        piece = b"x" * (LIMIT // fragments + 1)
        await ws.send([piece] * fragments if fragments > 1 else piece)
        try:
            await ws.wait_closed()
        finally:
            seen.append(ws.close_code)

    async with _Hostile(cert, oversize) as url:
        ws = await _open(url, cert.fingerprint)
        with pytest.raises(ConnectionClosedError) as err:
            await asyncio.wait_for(ws.recv(), 10)
        await asyncio.wait_for(ws.wait_closed(), 10)
    assert err.value.sent is not None
    assert err.value.sent.code == 1009
    assert seen == [1009]  # the server was told why
    mapped = connect_closed_error(err.value)
    assert isinstance(mapped, ProviderRefused)
    assert "over the tunnel's size limit" in str(mapped)


def connect_closed_error(exc: ConnectionClosed) -> Exception:
    from jupyter_gpumarket.provisioning.link_connect import closed_error

    return closed_error(exc, "wss://hostile")


async def test_fragmented_messages_are_reassembled_text_and_binary_kept_apart(cert: Any) -> None:
    async def fragments(ws: ServerConnection) -> None:
        await ws.send([b"ab", b"cd", b"e" * 1000])
        await ws.send(["héllo ", "wörld"])
        await ws.send(b"whole")
        await ws.send([b"x" * (LIMIT // 2), b"y" * (LIMIT // 2)])  # exactly the limit
        await ws.wait_closed()

    async with _Hostile(cert, fragments) as url:
        ws = await _open(url, cert.fingerprint)
        got = [await asyncio.wait_for(ws.recv(), 10) for _ in range(4)]
        await ws.close()
    assert got == [b"abcd" + b"e" * 1000, "héllo wörld", b"whole", b"x" * 32768 + b"y" * 32768]


async def test_a_flood_the_renter_does_not_read_stays_bounded(cert: Any) -> None:
    count, size, max_queue = 600, 64 * 1024, 16
    sent: list[int] = [0]

    async def flood(ws: ServerConnection) -> None:
        for i in range(count):
            await ws.send(i.to_bytes(4, "big") + bytes(size - 4))
            sent[0] = i + 1
        await ws.wait_closed()

    async with _Hostile(cert, flood) as url:
        ws = await _open(url, cert.fingerprint, max_size=size, max_queue=max_queue)
        await asyncio.sleep(1.0)  # the renter is busy: reading pauses, the server blocks
        held = ws.queued
        # One read of the transport may carry a few more messages than the high-water mark
        # (picows delivers what it parsed): a few 64 KB messages at most.
        assert held <= max_queue + 4, (held, ws.peak_queue)
        assert sent[0] < count  # the server could not push everything: backpressure held
        got = [await asyncio.wait_for(ws.recv(), 30) for _ in range(count)]
        await ws.close()
    assert [int.from_bytes(m[:4], "big") for m in got] == list(range(count))
    assert ws.peak_queue <= max_queue + 4


async def test_a_server_that_never_answers_the_close_is_hung_up_on(cert: Any) -> None:
    raw = _RawTls(cert)
    async with raw as url:
        ws = await _open(url, cert.fingerprint)
        async with asyncio.timeout(5 * CLOSE_TIMEOUT):  # only detects a hang
            await ws.close(1000, "bye")
            await ws.wait_closed()
        assert ws.close_rcvd is None
        with pytest.raises(ConnectionClosed):
            await ws.send(b"late")
        await asyncio.sleep(0.1)
    assert b"GET / HTTP/1.1" in raw.received  # it got the upgrade, then our close frame


async def test_the_peers_close_code_and_reason_reach_the_accessor(cert: Any) -> None:
    async def refuse(ws: ServerConnection) -> None:
        await ws.send(b"last words")
        await ws.close(control.CloseCode.UNKNOWN_LEASE, "no such lease")

    async with _Hostile(cert, refuse) as url:
        ws = await _open(url, cert.fingerprint)
        got = [m async for m in _messages(ws)]
        await asyncio.wait_for(ws.wait_closed(), 10)
    assert got == [b"last words"]  # queued messages come before the close
    assert ws.close_rcvd is not None
    assert (ws.close_rcvd.code, ws.close_rcvd.reason) == (4002, "no such lease")


async def _messages(ws: PicowsConnection) -> AsyncIterator[bytes | str]:
    try:
        async for message in ws:
            yield message
    except ConnectionClosed:
        return


async def test_a_clean_close_by_the_peer_ends_iteration(cert: Any) -> None:
    async def bye(ws: ServerConnection) -> None:
        await ws.send("one")
        await ws.close()

    async with _Hostile(cert, bye) as url:
        ws = await _open(url, cert.fingerprint)
        got = [m async for m in ws]  # ConnectionClosedOK ends the loop, as in websockets
    assert got == ["one"]
    assert ws.close_rcvd is not None
    assert ws.close_rcvd.code == 1000


async def test_invalid_utf8_text_closes_1007(cert: Any) -> None:
    async def bad_text(ws: ServerConnection) -> None:
        # websockets refuses to send invalid UTF-8 as text: write the frame by hand
        ws.transport.write(b"\x81\x02\xc3\x28")
        await ws.wait_closed()

    async with _Hostile(cert, bad_text) as url:
        ws = await _open(url, cert.fingerprint)
        with pytest.raises(ConnectionClosedError) as err:
            await asyncio.wait_for(ws.recv(), 10)
    assert err.value.sent is not None
    assert err.value.sent.code == 1007


async def test_an_unreachable_provider_is_reported(cert: Any) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    from jupyter_gpumarket.exceptions import ProviderUnreachable

    with pytest.raises(ProviderUnreachable, match="unreachable"):
        await _open(f"wss://127.0.0.1:{port}/", cert.fingerprint)
