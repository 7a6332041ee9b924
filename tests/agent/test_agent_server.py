"""The agent's websocket front door: bad input gets a clear close code, others keep working."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from jupyter_gpumarket.agent.server import AgentConfig, AgentServer
from jupyter_gpumarket.core import control
from jupyter_gpumarket.core.control import CloseCode
from jupyter_gpumarket.core.frames import Channel, encode_frame
from jupyter_gpumarket.exceptions import AgentError

TOKEN = "test-token"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[AgentServer]:
    srv = AgentServer(
        AgentConfig(
            state_dir=tmp_path / "state",
            dev_token=TOKEN,
            max_kernels=2,
            max_frame_bytes=64 * 1024,
            ready_file=tmp_path / "ready.json",
        )
    )
    await srv.start()
    yield srv
    await srv.stop()


def _ssl() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def _open(srv: AgentServer) -> ClientConnection:
    return await connect(srv.url, ssl=_ssl(), compression=None)


async def _hello(srv: AgentServer, **kw: object) -> tuple[ClientConnection, control.Welcome]:
    ws = await _open(srv)
    await ws.send(control.dump(control.Hello(token=TOKEN, **kw)).decode())  # type: ignore[arg-type]
    return ws, control.parse_welcome(await ws.recv())


async def _drain(ws: ClientConnection) -> None:
    while True:
        await ws.recv()


async def _closed_with(ws: ClientConnection) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed):
        await _drain(ws)
    assert ws.close_code is not None
    return ws.close_code, ws.close_reason or ""


async def test_ready_file_and_certificate(server: AgentServer, tmp_path: Path) -> None:
    ready = json.loads((tmp_path / "ready.json").read_text())
    assert ready == {"url": server.url, "tls_fingerprint": server.cert.fingerprint}
    assert (server.config.state_dir / "tls-key.pem").stat().st_mode & 0o777 == 0o600
    # the same certificate (and so the same pin) after a restart of the agent
    again = AgentServer(server.config)
    assert again.cert.fingerprint == server.cert.fingerprint


async def test_connections_use_tcp_nodelay(server: AgentServer) -> None:
    import socket

    ws, _ = await _hello(server)
    sock = ws.transport.get_extra_info("socket")
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    await ws.close()


async def test_good_hello_gets_a_lease(server: AgentServer) -> None:
    ws, welcome = await _hello(server)
    assert welcome.lease in server.leases
    assert welcome.last_received == 0
    assert welcome.agent["version"]
    await ws.close()


@pytest.mark.parametrize(
    ("first", "code", "reason"),
    [
        ("not json", CloseCode.PROTOCOL, "bad hello"),
        (json.dumps({"op": "hello"}), CloseCode.PROTOCOL, "bad hello"),
        (json.dumps({"op": "hello", "token": "wrong"}), CloseCode.UNAUTHORIZED, "wrong dev token"),
        (
            json.dumps({"op": "hello", "token": TOKEN, "lease": "nope"}),
            CloseCode.UNKNOWN_LEASE,
            "not on this provider",
        ),
    ],
)
async def test_bad_hellos_are_refused_with_a_reason(
    server: AgentServer, first: str, code: int, reason: str
) -> None:
    ws = await _open(server)
    await ws.send(first)
    got_code, got_reason = await _closed_with(ws)
    assert got_code == code
    assert reason in got_reason
    assert not server.leases
    # the agent still serves others
    ok, welcome = await _hello(server)
    assert welcome.lease in server.leases
    await ok.close()


async def test_garbage_frame_closes_only_that_link(server: AgentServer) -> None:
    bad, _ = await _hello(server)
    good, good_welcome = await _hello(server)
    await bad.send(b"\x01\x2a garbage")
    code, reason = await _closed_with(bad)
    assert code == CloseCode.PROTOCOL
    assert "unknown channel" in reason or "shorter" in reason
    # the other lease still talks: a signal with no kernel is harmless and acked
    await good.send(encode_frame(Channel.AGENT, 1, 0, [b'{"op":"signal","signum":2}']))
    assert good_welcome.lease in server.leases
    await good.close()


async def test_unknown_agent_op_and_text_after_hello_close_the_link(server: AgentServer) -> None:
    ws, _ = await _hello(server)
    await ws.send(encode_frame(Channel.AGENT, 1, 0, [b'{"op":"format_disk"}']))
    code, reason = await _closed_with(ws)
    assert (code, reason) == (CloseCode.PROTOCOL, "unknown agent op 'format_disk'")
    ws, _ = await _hello(server)
    await ws.send("text is not a frame")
    assert (await _closed_with(ws))[0] == CloseCode.PROTOCOL


async def test_oversized_frame_is_refused_with_1009(server: AgentServer) -> None:
    ws, _ = await _hello(server)
    await ws.send(encode_frame(Channel.SHELL, 1, 0, [b"x" * 100_000]))
    code, _ = await _closed_with(ws)
    assert code == 1009  # message too big


async def test_capacity_is_enforced(server: AgentServer) -> None:
    a, _ = await _hello(server)
    b, _ = await _hello(server)
    c = await _open(server)
    await c.send(control.dump(control.Hello(token=TOKEN)).decode())
    code, reason = await _closed_with(c)
    assert code == CloseCode.CAPACITY
    assert "full" in reason
    await a.close()
    await b.close()


async def test_dev_mode_needs_a_token(tmp_path: Path) -> None:
    with pytest.raises(AgentError, match="--dev-token"):
        AgentConfig(state_dir=tmp_path, dev_token=None)


async def test_gpus_are_allotted_exclusively_and_freed(tmp_path: Path) -> None:
    srv = AgentServer(
        AgentConfig(state_dir=tmp_path / "s", dev_token=TOKEN, max_kernels=4, gpu_indices=(0, 1))
    )
    await srv.start()
    try:
        a, wa = await _hello(srv)
        b, wb = await _hello(srv)
        assert {tuple(wa.agent["gpus"]), tuple(wb.agent["gpus"])} == {(0,), (1,)}
        c = await _open(srv)
        await c.send(control.dump(control.Hello(token=TOKEN)).decode())
        code, reason = await _closed_with(c)
        assert code == CloseCode.CAPACITY
        assert "GPUs" in reason
        lease = srv.leases[wa.lease]
        await lease.end()
        d, wd = await _hello(srv)
        assert wd.agent["gpus"] == wa.agent["gpus"]
        for ws in (a, b, d):
            await ws.close()
    finally:
        await srv.stop()


async def test_file_sync_refuses_paths_and_blobs_it_should_not_take(server: AgentServer) -> None:
    from jupyter_gpumarket.core.session import TunnelSession

    ws, _ = await _hello(server)
    me = TunnelSession()
    sha = "ab" * 32

    async def ask(msg: object, *data: bytes) -> object:
        await ws.send(me.send(Channel.AGENT, [control.dump(msg), *data]))
        while True:
            delivery = me.receive(await ws.recv())
            if delivery is not None:
                return control.parse_agent_message(delivery.parts[0])

    for path in ("../evil", "/etc/passwd", "a/../../b"):
        reply = await ask(control.SyncOffer(manifest={"files": {path: [1, sha, 0]}}))
        assert isinstance(reply, control.Refused)
        assert reply.request == "sync_offer"
    reply = await ask(control.BlobChunk(sha256=sha, last=True), b"x")
    assert isinstance(reply, control.Refused)
    assert "not in the offered manifest" in reply.message
    reply = await ask(control.FetchBlob(sha256=sha))
    assert isinstance(reply, control.Refused)
    assert "not in the last pull manifest" in reply.message
    ok = await ask(control.SyncOffer(manifest={"files": {"a.txt": [1, sha, 0]}}))
    assert ok == control.SyncNeed(missing=(sha,))  # the link is still up and serving
    await ws.close()


async def test_a_renter_gone_past_the_grace_loses_its_lease_and_frees_its_gpu(
    tmp_path: Path,
) -> None:
    import asyncio

    srv = AgentServer(
        AgentConfig(state_dir=tmp_path / "s", dev_token=TOKEN, gpu_indices=(0,), client_grace=0.3)
    )
    await srv.start()
    try:
        ws, welcome = await _hello(srv)
        assert welcome.agent["gpus"] == [0]
        lease_dir = srv.leases[welcome.lease].dir
        await ws.close()
        await asyncio.sleep(0.1)
        assert welcome.lease in srv.leases  # within the grace: kept for a resume
        await asyncio.sleep(0.6)
        assert welcome.lease not in srv.leases
        assert not lease_dir.exists()
        again, welcome2 = await _hello(srv)
        assert welcome2.agent["gpus"] == [0]  # the GPU is free again
        await again.close()
    finally:
        await srv.stop()
