"""The tunnel process's control socket: only its controller drives it, bad lines drop only
their own connection, and with no controller it leaves after its grace (a real process)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat

import pytest

from jupyter_gpumarket.exceptions import LinkLost, ProtocolError
from jupyter_gpumarket.provisioning.link import ProviderTarget
from jupyter_gpumarket.provisioning.tunnel_client import TunnelClient

TARGET = ProviderTarget("wss://127.0.0.1:9", "", "token")


def _ask(path: str, line: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(line)
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def test_strangers_cannot_drive_it_and_it_leaves_when_nobody_controls_it(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))

    async def scenario() -> tuple[TunnelClient, str]:
        client = await TunnelClient.spawn("k1", TARGET, grace=1.0)
        path = str(client.socket_path)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        # a second connection may not stop (or otherwise drive) the process ...
        for op in ("stop", "start", "signal", "open", "push"):
            reply = json.loads(
                await asyncio.to_thread(_ask, path, b'{"id": 1, "op": "%s"}\n' % op.encode())
            )
            assert reply["ok"] is False, op
            assert "say hello first" in reply["error"], op
        # ... nor take it over with a hello for a lease it does not carry
        reply = json.loads(
            await asyncio.to_thread(_ask, path, b'{"id": 2, "op": "hello", "lease": "x"}\n')
        )
        assert reply["ok"] is False
        # garbage drops only the connection that sent it
        for junk in (b"not json\n", b"[1, 2]\n", b"\xff\xfe\n"):
            assert await asyncio.to_thread(_ask, path, junk) == b""
        # the controller still works: an op it may send, refused for a reason of its own
        with pytest.raises(LinkLost):
            await client.request("signal", wait=10, signum=2)
        with pytest.raises(ProtocolError):
            await client.request("no-such-op", wait=10)
        client.detach()  # its server is gone: nobody re-adopts it
        return client, path

    client, path = asyncio.run(scenario())
    assert client._proc is not None
    assert client._proc.wait(20) == 0  # gone after its 1 s grace (bounded only to catch a hang)
    assert not os.path.exists(path)
