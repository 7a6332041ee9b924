"""Paid leases end to end on a devnet: a published offer, a channel, vouchers, settlement."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

from agentproc import environ
from marketproc import PRICE, Market, leases_json, running_market, stream_text_until_dead
from netfault import ThreadedProxy

pytestmark = pytest.mark.slow


@pytest.fixture
def market(tmp_path: Path) -> Iterator[Market]:
    with running_market(tmp_path) as m:
        yield m


def _leases(market: Market) -> list[dict[str, Any]]:
    return leases_json(market.renter_env)


def test_a_notebook_pays_exactly_for_the_seconds_it_ran(market: Market) -> None:
    from jupyter_gpumarket.chain.dev_accounts import dev_account

    renter, provider = dev_account(2).address, dev_account(1).address
    escrow = market.devnet.profile.require_contracts()[1]
    before = {a: market.token_balance(a) for a in (renter, provider, escrow)}
    assert market.ready["offer_id"] >= 1

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import time, os\nt0 = time.time()\ntime.sleep(6)"),
        nbformat.v4.new_code_cell("print(os.environ.get('GPUMARKET_WALLET_PASSWORD'))"),
    ]
    with environ(market.renter_env):
        NotebookClient(nb, kernel_name="gpumarket", timeout=120).execute()
    assert nb.cells[1].outputs[0]["text"].strip() == "None"  # no wallet secret in the kernel

    (lease,) = _leases(market)
    assert lease["offer_id"] == market.ready["offer_id"]
    assert lease["state"] in ("stopped", "settled")  # settled: the provider was quick
    billed = lease["billed_seconds"]
    assert 6 <= billed <= 30
    deadline = time.monotonic() + 30
    while not market.channel(lease["channel_id"]).state.startswith("closed") and (
        time.monotonic() < deadline
    ):
        time.sleep(0.5)
    assert market.channel(lease["channel_id"]).state.startswith("closed")  # provider settled
    after = {a: market.token_balance(a) for a in (renter, provider, escrow)}
    paid = after[provider] - before[provider]
    assert abs(paid - PRICE * billed // 3600) <= PRICE // 3600  # within 1 s of price
    assert before[renter] - after[renter] == paid  # the rest came back
    assert after[escrow] == before[escrow]
    txs = [t["kind"] for t in lease["txs"]]
    assert len([t for t in txs if t not in ("approve", "settle")]) <= 1  # renter's side: one open


def test_nbclient_through_a_jupyter_server_pays_exactly_and_the_escrow_returns_to_before(
    market: Market, tmp_path: Path
) -> None:
    """The acceptance run: devnet + a paid provider + a Jupyter server; nbclient executes the
    notebook on the server's `gpumarket` kernel (jupyter_server's GatewayKernelManager); the
    balances on chain afterwards are exactly the billed seconds' price."""
    from jupyter_server.gateway.gateway_client import GatewayClient
    from jupyter_server.gateway.managers import GatewayKernelManager

    from jupyter_gpumarket.chain.dev_accounts import dev_account

    from jupyterproc import start_jupyter

    renter, provider = dev_account(2).address, dev_account(1).address
    escrow = market.devnet.profile.require_contracts()[1]
    before = {a: market.token_balance(a) for a in (renter, provider, escrow)}
    # the gateway client sends no token on its websocket: a loopback server without one
    server = start_jupyter(
        tmp_path, market.renter_env, "--ServerApp.disable_check_xsrf=True", token=""
    )
    GatewayClient.instance(url=server.url)
    try:
        nb = nbformat.v4.new_notebook()
        nb.cells = [
            nbformat.v4.new_code_cell("import time; time.sleep(4); x = 6 * 7"),
            nbformat.v4.new_code_cell("print(x)"),
        ]
        client = NotebookClient(
            nb, kernel_name="gpumarket", kernel_manager_class=GatewayKernelManager, timeout=120
        )
        client.execute(kernel_name="gpumarket")  # the gateway manager reads it from here
    finally:
        GatewayClient.clear_instance()
        server.stop()
    assert nb.cells[1].outputs[0]["text"].strip() == "42"
    (lease,) = _leases(market)
    deadline = time.monotonic() + 30
    while not market.channel(lease["channel_id"]).state.startswith("closed"):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    after = {a: market.token_balance(a) for a in (renter, provider, escrow)}
    paid = after[provider] - before[provider]
    assert 4 <= lease["billed_seconds"] <= 30
    assert abs(paid - PRICE * lease["billed_seconds"] // 3600) <= PRICE // 3600
    assert before[renter] - after[renter] == paid
    assert after[escrow] == before[escrow]


def test_a_launch_without_a_wallet_password_says_what_to_do(
    market: Market, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jupyter_gpumarket.exceptions import ConfigError

    env = {**market.renter_env}
    env.pop("GPUMARKET_WALLET_PASSWORD")
    monkeypatch.delenv("GPUMARKET_WALLET_PASSWORD", raising=False)
    km = KernelManager(kernel_name="gpumarket")
    with environ(env), pytest.raises(ConfigError, match="GPUMARKET_WALLET_PASSWORD"):
        km.start_kernel()


def test_a_renter_that_stops_paying_is_paused_then_stopped(
    market: Market, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jupyter_gpumarket.provisioning import paid_run

    async def no_vouchers(*args: Any) -> None:  # a renter whose wallet never signs
        return None

    monkeypatch.setattr(paid_run, "stream_vouchers", no_vouchers)
    km = KernelManager(kernel_name="gpumarket")
    with environ(market.renter_env):
        km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=30)
        joined = stream_text_until_dead(km, kc)
        assert not km.is_alive()  # the provider stopped the kernel after its payment grace
        assert "overdue" in joined or "late" in joined  # the notebook was told first
        assert "stops this kernel" in joined
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    (lease,) = _leases(market)
    deadline = time.monotonic() + 30
    while not market.channel(lease["channel_id"]).state.startswith("closed") and (
        time.monotonic() < deadline
    ):
        time.sleep(0.5)
    info = market.channel(lease["channel_id"])
    assert info.state.startswith("closed")  # settled for what vouchers covered: nothing
    assert info.redeemed == 0


def test_a_forged_session_key_is_refused_on_connect(
    market: Market, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eth_account import Account

    from jupyter_gpumarket.exceptions import AuthenticationFailed
    from jupyter_gpumarket.provisioning import paid

    real_open = paid.open_paid_lease

    def forged(**kw: Any) -> paid.PaidLease:
        lease = real_open(**kw)
        lease.session_key = Account.create()  # not the key registered in the channel
        return lease

    monkeypatch.setattr(paid, "open_paid_lease", forged)
    km = KernelManager(kernel_name="gpumarket")
    with environ(market.renter_env), pytest.raises(AuthenticationFailed, match="session key"):
        km.start_kernel()
    assert not km.has_kernel


def test_provider_killed_mid_lease_the_renter_gets_the_deposit_back(market: Market) -> None:
    from traitlets.config import Config

    from jupyter_gpumarket.chain.client import connect
    from jupyter_gpumarket.chain.dev_accounts import dev_account

    renter = dev_account(2).address
    before = market.token_balance(renter)
    config = Config({"GpuMarketProvisioner": {"link_grace_seconds": 3.0}})
    km = KernelManager(kernel_name="gpumarket", config=config)
    with environ(market.renter_env):
        km.start_kernel()
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=30)
    (lease,) = _leases(market)
    deadline = time.monotonic() + 20
    while market.channel(lease["channel_id"]).redeemed == 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    redeemed = market.channel(lease["channel_id"]).redeemed
    assert redeemed > 0  # the provider redeems held vouchers periodically, mid-lease
    market.provider_proc.kill()
    deadline = time.monotonic() + 20
    while km.is_alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not km.is_alive()  # reported dead within the link grace
    kc.stop_channels()
    with environ(market.renter_env):
        km.shutdown_kernel(now=True)
    # a new start (what Jupyter's restarter tries) opens no channel to the dead provider,
    # whose offer is still active on chain
    from jupyter_gpumarket.exceptions import ProviderUnreachable

    balance = market.token_balance(renter)
    with environ(market.renter_env), pytest.raises(ProviderUnreachable, match="nothing was paid"):
        KernelManager(kernel_name="gpumarket").start_kernel()
    assert len(_leases(market)) == 1
    assert market.token_balance(renter) == balance

    def close() -> str:
        out = subprocess.run(
            [sys.executable, "-m", "jupyter_gpumarket.cli", "leases", "close", lease["id"]],
            capture_output=True,
            text=True,
            env={**os.environ, **market.renter_env},
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    close()  # requestClose: the challenge period starts
    assert market.channel(lease["channel_id"]).state == "closing"
    w3 = connect(market.devnet.profile.rpc_url)
    w3.provider.make_request("evm_increaseTime", [61])
    w3.provider.make_request("evm_mine", [])
    close()  # withdraw
    assert market.channel(lease["channel_id"]).state.startswith("closed")
    # the unspent deposit came back; the provider keeps what it had redeemed
    assert before - market.token_balance(renter) == market.channel(lease["channel_id"]).redeemed
    assert market.channel(lease["channel_id"]).redeemed >= redeemed


def test_a_kernel_that_cannot_start_costs_nothing(tmp_path: Path) -> None:
    from jupyter_gpumarket.chain.dev_accounts import dev_account
    from jupyter_gpumarket.exceptions import KernelLaunchError

    with running_market(tmp_path, "--kernel-python", "/nonexistent/python3") as m:
        renter, provider = dev_account(2).address, dev_account(1).address
        before = {a: m.token_balance(a) for a in (renter, provider)}
        km = KernelManager(kernel_name="gpumarket")
        with environ(m.renter_env), pytest.raises(KernelLaunchError, match="could not start"):
            km.start_kernel()
        assert not km.has_kernel
        (lease,) = _leases(m)
        assert "could not start" in lease["error"]
        deadline = time.monotonic() + 30
        while not m.channel(lease["channel_id"]).state.startswith("closed") and (
            time.monotonic() < deadline
        ):
            time.sleep(0.5)
        assert m.channel(lease["channel_id"]).state.startswith("closed")  # settled at 0
        assert {a: m.token_balance(a) for a in (renter, provider)} == before  # nobody paid


def test_a_vanished_renter_costs_the_provider_at_most_one_interval(tmp_path: Path) -> None:
    from jupyter_gpumarket.chain.dev_accounts import dev_account

    from jupyterproc import start_jupyter

    with running_market(tmp_path, "--client-grace", "3") as m:
        provider = dev_account(1).address
        before = m.token_balance(provider)
        server = start_jupyter(tmp_path / "jupyter", m.renter_env)
        kernel = server.request("POST", "/api/kernels", {"name": "gpumarket"})
        assert kernel["name"] == "gpumarket"
        time.sleep(7)  # a few vouchers at the 2 s interval
        (lease,) = _leases(m)
        server.proc.kill()  # the renter's Jupyter server vanishes
        server.proc.wait(10)
        killed = time.monotonic()
        deadline = killed + 40
        while not m.channel(lease["channel_id"]).state.startswith("closed") and (
            time.monotonic() < deadline
        ):
            time.sleep(0.5)
        assert m.channel(lease["channel_id"]).state.startswith("closed")  # provider settled
        paid = m.token_balance(provider) - before
        ran = time.monotonic() - killed + 7  # an upper bound on the seconds the kernel ran
        assert paid > 0
        assert paid <= PRICE * ran // 3600
        # what the provider could not collect is at most the grace plus one voucher interval
        assert paid >= PRICE * (7 - 2 - 1) // 3600


def test_an_unsandboxed_offer_is_labelled_on_chain(market: Market) -> None:
    from jupyter_gpumarket.chain.client import Contracts, connect
    from jupyter_gpumarket.provisioning.offers import pick_offer

    p = market.devnet.profile
    registry = Contracts.at(connect(p.rpc_url), *p.require_contracts()).registry
    offer = pick_offer(registry, str(market.ready["offer_id"]))
    # started with --sandbox off; the default relay fee is published next to it
    assert offer.metadata == "gpumarket:isolation=unsandboxed;relay_fee=10000"
    assert offer.unsandboxed


class LateProxy(ThreadedProxy):
    """A fault proxy whose target (the devnet's RPC port) is known only once the chain runs."""

    def __init__(self) -> None:
        super().__init__("127.0.0.1", 1)

    def set_target(self, port: int) -> None:
        self._args = ("127.0.0.1", port, "127.0.0.1")


def test_the_kernel_keeps_running_while_the_rpc_is_down_and_redemption_catches_up(
    tmp_path: Path,
) -> None:
    rpc = LateProxy()
    with running_market(tmp_path, provider_rpc=rpc) as m:
        try:
            km = KernelManager(kernel_name="gpumarket")
            with environ(m.renter_env):
                km.start_kernel()
            kc = km.client()
            kc.start_channels()
            kc.wait_for_ready(timeout=30)
            rpc.refuse()
            rpc.reset()  # the provider's RPC is gone (before its first voucher is due)
            (lease,) = _leases(m)
            time.sleep(12)  # longer than the payment grace: vouchers need no chain
            assert km.is_alive()
            out: list[str] = []
            kc.execute_interactive(
                "print('still computing')",
                timeout=30,
                output_hook=lambda msg: out.append(msg["content"].get("text", "")),
            )
            assert "still computing" in "".join(out)
            assert m.channel(lease["channel_id"]).redeemed == 0  # nothing reached the chain
            rpc.restore()
            deadline = time.monotonic() + 30
            while m.channel(lease["channel_id"]).redeemed == 0 and time.monotonic() < deadline:
                time.sleep(0.5)
            assert m.channel(lease["channel_id"]).redeemed > 0  # redemption caught up
            kc.stop_channels()
            with environ(m.renter_env):
                km.shutdown_kernel()
        finally:
            rpc.stop()
