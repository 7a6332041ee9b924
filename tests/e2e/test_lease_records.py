"""The renter's lease records tell the truth: live while the kernel runs, the chain's once the
provider settled (a devnet, a paid provider process, a real kernel, `gpumarket leases --json`)."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import KernelManager

from agentproc import environ
from jupyterproc import start_jupyter
from marketproc import Market, leases_json, running_market

pytestmark = pytest.mark.slow


@pytest.fixture
def market(tmp_path: Path) -> Iterator[Market]:
    with running_market(tmp_path) as m:
        yield m


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        if value := check():
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def _rpc(market: Market, method: str, *params: Any) -> Any:
    """One JSON-RPC call on a connection closed right after (no pooled socket left behind)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
    req = urllib.request.Request(
        market.devnet.profile.rpc_url,
        data=body.encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())["result"]


def only_lease(market: Market) -> dict[str, Any]:
    (lease,) = leases_json(market.renter_env)
    return lease


def test_a_lease_is_live_while_it_runs_and_the_chains_once_settled(
    market: Market, tmp_path: Path
) -> None:
    from jupyter_gpumarket.chain.dev_accounts import dev_account

    provider = dev_account(1).address
    before = market.token_balance(provider)
    km = KernelManager(kernel_name="gpumarket")
    with environ(market.renter_env):
        km.start_kernel()
    try:
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=60)
        live = wait_for(
            "live billing in the lease list",
            lambda: (r := only_lease(market))["billed_seconds"] > 0 and r["spent"] > 0 and r,
        )
        assert live["state"] == "running"
        assert live["started_at"] is not None
        assert live["started_at"] <= time.time()
        assert live["spent_source"] == "estimate"
        assert live["deposit_left"] == live["deposit"] - live["spent"]
        kc.stop_channels()
    finally:
        with environ(market.renter_env):
            km.shutdown_kernel(now=False)
    channel_id = live["channel_id"]
    wait_for("the provider's settle", lambda: market.channel(channel_id).state.startswith("closed"))
    paid = market.token_balance(provider) - before
    assert paid > 0

    lease = only_lease(market)
    assert lease["state"] == "settled"
    assert lease["spent_source"] == "chain"
    assert lease["spent"] == paid == market.channel(channel_id).redeemed
    assert lease["refunded"] == lease["deposit"] - paid
    (settle,) = [t for t in lease["txs"] if t["kind"] == "settle"]
    receipt = _rpc(market, "eth_getTransactionReceipt", settle["tx_hash"])
    escrow = market.devnet.profile.require_contracts()[1]
    assert receipt["status"] == "0x1"
    assert receipt["to"].lower() == escrow.lower()
    assert receipt["from"].lower() == provider.lower()  # the provider's settle, not the renter's

    # the server's report (GET /gpumarket/leases) asks nothing of the user any more
    server = start_jupyter(tmp_path, market.renter_env)
    try:
        report = server.request("GET", "/gpumarket/leases")
    finally:
        assert server.stop() == 0
    (row,) = report["leases"]
    assert row["state"] == "settled"
    assert row["recovery"]["status"] == "final"
    assert row["recovery"]["command"] is None
    assert row["expected_refund"] == lease["deposit"] - paid
