"""A paid kernel outlives a Jupyter server crash: the next server re-adopts it and keeps paying
from the same channel with the saved session key; the seconds in between are billed once."""

from __future__ import annotations

import signal
import time
import urllib.error
from pathlib import Path

import pytest
from websockets.sync.client import connect

from agentproc import environ
from jupyterproc import execute, start_jupyter
from marketproc import PRICE, leases_json, running_market

pytestmark = pytest.mark.slow


def _kernel_ids(server) -> list[str]:
    try:
        return [k["id"] for k in server.request("GET", "/api/kernels")]
    except urllib.error.HTTPError:  # a kernel still being added
        return []


def test_a_paid_kernel_survives_a_server_crash_and_keeps_paying(tmp_path: Path) -> None:
    from jupyter_gpumarket.chain.dev_accounts import dev_account
    from jupyter_gpumarket.provisioning import paid_state

    runtime = {"JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    with running_market(tmp_path, "--payment-grace", "30") as market:
        provider = dev_account(1).address
        before = market.token_balance(provider)
        env = market.renter_env
        first = start_jupyter(tmp_path, env)
        kid = first.request("POST", "/api/kernels", {"name": "gpumarket"})["id"]
        started = time.monotonic()
        with connect(first.ws_url(f"/api/kernels/{kid}/channels")) as ws:
            reply, _ = execute(ws, "x = 7; import os; pid = os.getpid()")
            assert reply["content"]["status"] == "ok"
        with environ(runtime):
            saved = paid_state.load(kid)
        assert saved is not None
        assert saved.channel_id.startswith("0x")
        assert "crypto" in saved.session_key  # an encrypted keystore, not the key itself
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
        time.sleep(3)  # nobody pays for a moment

        second = start_jupyter(tmp_path, env)
        try:
            deadline = time.monotonic() + 60
            while kid not in _kernel_ids(second) and time.monotonic() < deadline:
                time.sleep(0.3)
            assert _kernel_ids(second) == [kid]
            with connect(second.ws_url(f"/api/kernels/{kid}/channels")) as ws:
                reply, text = execute(ws, "print(x, pid == os.getpid())")
                # the re-adopting server tells this session again that the offer is unsandboxed
                kernel_text = [ln for ln in text.splitlines() if not ln.startswith("[gpumarket]")]
                assert kernel_text == ["7 True"]
                time.sleep(8)  # several voucher intervals: the re-adopted lease pays them
                reply, text = execute(ws, "print('still paid')")
                assert reply["content"]["status"] == "ok"
                assert text.strip() == "still paid"
            second.request("DELETE", f"/api/kernels/{kid}")
            ran = time.monotonic() - started
        finally:
            second.stop()
        with environ(runtime):
            assert paid_state.load(kid) is None  # the lease ended: nothing left to resume
        (lease,) = leases_json(env)
        assert lease["state"] in ("stopped", "settled")  # settled: the provider was quick
        billed = lease["billed_seconds"]
        assert ran - 4 <= billed <= ran + 1  # the time the server was down is billed, once
        deadline = time.monotonic() + 30
        while not market.channel(lease["channel_id"]).state.startswith("closed"):
            assert time.monotonic() < deadline
            time.sleep(0.5)
        paid = market.token_balance(provider) - before
        assert abs(paid - PRICE * billed // 3600) <= PRICE // 3600
