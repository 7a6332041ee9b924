"""A paid kernel's lease across the tunnel process boundary (provisioning.tunnel_paid): what the
server hands the process is checked there, what the process reports is checked in the server,
and bad input on either side of the control socket costs only that input (real processes and
sockets)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from jupyter_gpumarket.core import control, paymsgs
from jupyter_gpumarket.exceptions import LinkLost, ProtocolError
from jupyter_gpumarket.provisioning.link import ProviderTarget
from jupyter_gpumarket.provisioning.tunnel_client import TunnelClient
from jupyter_gpumarket.provisioning.tunnel_paid import (
    ProcessPayer,
    parse_payment,
    payment_event,
    payment_line,
)

TARGET = ProviderTarget("wss://127.0.0.1:9", "sha256:" + "00" * 32, "")
SIG = "0x" + "11" * 65
SPEC = {
    "session_key": "0x" + "12" * 32,
    "channel": "0x" + "ab" * 32,
    "provider": "0x" + "13" * 20,
    "chain_id": 31337,
    "escrow": "0x" + "e5" * 20,
}
BAD_SPECS = [
    None,
    [SPEC],
    {**SPEC, "session_key": "0x" + "12" * 31},  # short key
    {**SPEC, "session_key": "0x" + "12" * 32 + "\n"},
    {**SPEC, "session_key": 12},
    {**SPEC, "channel": "0x" + "zz" * 32},
    {**SPEC, "provider": "0x" + "13" * 19},
    {**SPEC, "escrow": None},
    {**SPEC, "chain_id": -1},
    {**SPEC, "chain_id": True},
    {**SPEC, "chain_id": "31337"},
]
BAD_PAYMENTS = [
    None,
    42,
    "not json",
    "[]",
    control.dump(control.StopKernel(end_lease=True)).decode(),  # not a payment
    control.dump(control.Signal(signum=9)).decode(),
    json.dumps({"op": "voucher", "amount": -1, "signature": SIG}),
    json.dumps({"op": "voucher", "amount": True, "signature": SIG}),
    json.dumps({"op": "voucher", "amount": 5, "signature": "0x12"}),
    json.dumps({"op": "voucher", "amount": 5, "signature": SIG, "extra": 1}),
    json.dumps({"op": "deposit_changed", "tx_hash": "0x1"}),
    json.dumps({"op": "voucher", "amount": 1, "signature": SIG, "pad": "x" * 800_000}),
]


def test_the_process_checks_the_lease_it_is_handed() -> None:
    payer = ProcessPayer.from_spec(SPEC, lambda ev: None)
    assert payer.channel_hex == SPEC["channel"]
    assert SPEC["session_key"][2:] not in repr(payer)
    for bad in BAD_SPECS:
        with pytest.raises(ProtocolError):
            ProcessPayer.from_spec(bad, lambda ev: None)


def test_payments_cross_as_agent_messages_and_nothing_else_passes() -> None:
    voucher = paymsgs.Voucher(amount=7, signature=SIG)
    assert parse_payment(payment_line(voucher)) == voucher
    deposit = paymsgs.DepositChanged(tx_hash="0x" + "cd" * 32)
    assert parse_payment(payment_line(deposit)) == deposit
    for bad in BAD_PAYMENTS:
        with pytest.raises(ProtocolError):
            parse_payment(bad)


@pytest.mark.parametrize(
    ("event", "parsed"),
    [
        ({"ev": "ack", "amount": 5}, ("ack", 5)),
        ({"ev": "ack", "amount": 2**256 - 1}, ("ack", 2**256 - 1)),
        ({"ev": "ack", "amount": 2**256}, None),
        ({"ev": "ack", "amount": -1}, None),
        ({"ev": "ack", "amount": "5"}, None),
        ({"ev": "ack", "amount": 5.0}, None),
        ({"ev": "ack", "amount": True}, None),
        ({"ev": "ack"}, None),
        ({"ev": "interval", "seconds": 2}, ("interval", 2)),
        ({"ev": "interval", "seconds": 0}, None),
        ({"ev": "interval", "seconds": 3601}, None),
        ({"ev": "interval", "seconds": [2]}, None),
    ],
)
def test_payment_events_are_checked(event: dict[str, Any], parsed: Any) -> None:
    assert payment_event(event) == parsed


def test_a_tunnel_process_refuses_bad_leases_and_payments_and_keeps_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))

    async def scenario() -> TunnelClient:
        client = await TunnelClient.spawn("k1", TARGET, grace=1.0)
        try:
            with pytest.raises(ProtocolError, match="no paid lease"):  # an unpaid process
                await client.request("pay", wait=10, msg=payment_line(paymsgs.Voucher(1, SIG)))
            for bad in BAD_SPECS[1:]:  # (None: an unpaid kernel)
                with pytest.raises(ProtocolError, match="paid"):
                    await client.request(
                        "open",
                        wait=10,
                        target={"url": TARGET.url, "tls_fingerprint": "", "token": ""},
                        key="k",
                        settings={"connect_timeout": 1, "link_grace": 1},
                        paid=bad,
                    )
            # a well-formed lease, whose provider cannot be reached: the payer stays
            with pytest.raises(Exception, match="reach"):
                await client.request(
                    "open",
                    wait=20,
                    target={
                        "url": TARGET.url,
                        "tls_fingerprint": TARGET.tls_fingerprint,
                        "token": "",
                    },
                    key="k",
                    settings={"connect_timeout": 1, "link_grace": 1},
                    paid=SPEC,
                )
            for bad in BAD_PAYMENTS:
                with pytest.raises(ProtocolError):
                    await client.request("pay", wait=10, msg=bad)
            for bad_text in (None, 5, "x" * (64 * 1024 + 1)):
                with pytest.raises(ProtocolError):
                    await client.request("notify", wait=10, text=bad_text)
            # a good payment is parsed, and refused only for want of a link
            with pytest.raises(LinkLost):
                await client.request("pay", wait=10, msg=payment_line(paymsgs.Voucher(1, SIG)))
            client.send_agent(paymsgs.Voucher(2, SIG))  # fire and forget: logged, not raised
            client.stop_kernel()
            client.notify("hello")
            with pytest.raises(LinkLost):  # still served, still controlled by this client
                await client.request("signal", wait=10, signum=2)
            assert client._proc is not None
            assert client._proc.poll() is None
        finally:
            client.detach()
        return client

    client = asyncio.run(scenario())
    assert client._proc is not None
    assert client._proc.wait(20) == 0  # its grace over, it leaves cleanly


class _Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    def on_ack(self, amount: int) -> None:
        self.seen.append(("ack", amount))

    def on_interval(self, seconds: int) -> None:
        self.seen.append(("interval", seconds))


HOSTILE_LINES = [
    b"not json\n",
    b"\xff\xfe\n",
    b"[1, 2]\n",
    b"null\n",
    b'{"ev": "ack", "amount": "5"}\n',
    b'{"ev": "ack", "amount": -1}\n',
    b'{"ev": "ack", "amount": true}\n',
    b'{"ev": "ack", "amount": 1.5}\n',
    b'{"ev": "ack", "amount": %d}\n' % 2**256,
    b'{"ev": "ack"}\n',
    b'{"ev": "interval", "seconds": 0}\n',
    b'{"ev": "interval", "seconds": "2"}\n',
    b'{"id": "x", "ok": true}\n',
    b'{"id": [1], "ok": false, "error": "?"}\n',
    b'{"ev": "status", "open": true, "reconnects": "many"}\n',
    b'{"ev": "ack", "amount": 5}\n',  # the only good ones
    b'{"ev": "interval", "seconds": 2}\n',
]


def test_a_tunnel_client_survives_a_process_that_sends_garbage(tmp_path: Path) -> None:
    """What a broken (or impostor) tunnel process writes costs the server only those lines:
    malformed events are dropped, the kernel does not count as exited, acks stay exact."""
    path = tmp_path / "t.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(1)
    conns: list[socket.socket] = []

    def serve() -> None:
        conn, _ = server.accept()
        conns.append(conn)
        for line in HOSTILE_LINES:
            conn.sendall(line)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    recorder = _Recorder()
    client = asyncio.run(TunnelClient.connect(str(path), os.getpid(), TARGET, payer=recorder))
    try:
        deadline = time.monotonic() + 10
        while len(recorder.seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert recorder.seen == [("ack", 5), ("interval", 2)]
        assert client.exit_code is None
        assert client.dead_reason is None
        assert client._listener is not None
        assert client._listener.is_alive()
    finally:
        client.detach()
        for conn in conns:
            conn.close()
        server.close()
        thread.join(5)
