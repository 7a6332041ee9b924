"""How a paid lease's channel gets opened, end to end on a devnet: by a provider relaying for a
renter without gas, from a course's credit pool with a grant code, topped up automatically, or
stopped cleanly when the deposit is spent."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
from eth_account import Account
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from web3.logs import DISCARD

from agentproc import environ
from marketproc import (
    PASSWORD,
    PRICE,
    Market,
    leases_json,
    running_market,
    stream_text_until_dead,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def market(tmp_path: Path):
    with running_market(tmp_path) as m:
        yield m


def _contracts(market: Market) -> Any:
    from jupyter_gpumarket.chain.client import Contracts, connect

    p = market.devnet.profile
    return Contracts.at(connect(p.rpc_url), *p.require_contracts())


def _wallet(tmp_path: Path, name: str) -> Any:
    from jupyter_gpumarket.chain.keystore import create_keystore

    acct = Account.create()
    create_keystore(PASSWORD, private_key=acct.key, path=tmp_path / f"{name}.json")
    return acct


def _run_notebook(env: dict[str, str], *sources: str) -> Any:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in sources]
    with environ(env):
        NotebookClient(nb, kernel_name="gpumarket", timeout=120).execute()
    return nb


def _settled(market: Market, channel_id: str) -> Any:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        info = market.channel(channel_id)
        if info.state.startswith("closed"):
            return info
        time.sleep(0.5)
    raise AssertionError(f"channel {channel_id} not settled: {market.channel(channel_id)}")


def test_a_renter_without_gas_is_relayed_by_the_provider(market: Market, tmp_path: Path) -> None:
    from jupyter_gpumarket.chain.client import send
    from jupyter_gpumarket.chain.dev_accounts import dev_account

    c, provider = _contracts(market), dev_account(1).address
    renter = _wallet(tmp_path, "gasless")
    send(c.w3, dev_account(0), c.token.functions.mint(renter.address, 20 * 10**6))
    env = {**market.renter_env, "GPUMARKET_WALLET": str(tmp_path / "gasless.json")}
    provider_before = market.token_balance(provider)

    nb = _run_notebook(env, "import time; time.sleep(3); print('ran')")
    assert nb.cells[0].outputs[-1]["text"].strip() == "ran"

    (lease,) = [x for x in leases_json(env) if x["provider"] == provider]
    info = _settled(market, lease["channel_id"])
    fee = 10_000  # the provider's default --relay-fee, published in its offer
    assert info.renter == renter.address
    paid = market.token_balance(provider) - provider_before - fee
    assert abs(paid - PRICE * lease["billed_seconds"] // 3600) <= PRICE // 3600
    assert market.token_balance(renter.address) == 20 * 10**6 - fee - paid
    assert c.w3.eth.get_balance(renter.address) == 0  # it never needed gas
    assert lease["txs"][0]["kind"] == "open"


def test_a_student_with_a_grant_code_and_an_empty_wallet(market: Market, tmp_path: Path) -> None:
    from jupyter_gpumarket.chain.client import send
    from jupyter_gpumarket.chain.dev_accounts import dev_account
    from jupyter_gpumarket.core import eip712
    from jupyter_gpumarket.core.grant_code import issue_grant

    c, admin, provider = _contracts(market), dev_account(3), dev_account(1).address
    send(c.w3, admin, c.token.functions.approve(c.escrow.address, 50 * 10**6))
    receipt = send(c.w3, admin, c.escrow.functions.createPool(c.token.address, 50 * 10**6))
    (event,) = c.escrow.events.PoolCreated().process_receipt(receipt, errors=DISCARD)
    pool_id = bytes(event["args"]["pool_id"])
    student = _wallet(tmp_path, "student")
    now = c.w3.eth.get_block("latest")["timestamp"]
    code = issue_grant(
        admin.key,
        eip712.Domain(c.w3.eth.chain_id, c.escrow.address),
        pool_id=pool_id,
        student=student.address,
        cap=5 * 10**6,
        expiry=now + 3600,
    ).encode()
    env = {
        **market.renter_env,
        "GPUMARKET_WALLET": str(tmp_path / "student.json"),
        "GPUMARKET_GRANT": code,
    }
    provider_before = market.token_balance(provider)

    nb = _run_notebook(env, "import time; time.sleep(3); print('ran')")
    assert nb.cells[0].outputs[-1]["text"].strip() == "ran"

    (lease,) = [x for x in leases_json(env) if x["provider"] == provider]
    _settled(market, lease["channel_id"])
    got = market.token_balance(provider) - provider_before
    pool_balance = c.escrow.functions.pools(pool_id).call()[2]
    assert 50 * 10**6 - pool_balance == got  # the pool paid lease + relay fee, got the rest back
    assert got > 10_000  # the fee and some seconds
    assert (market.token_balance(student.address), c.w3.eth.get_balance(student.address)) == (0, 0)


def test_auto_top_up_keeps_a_small_deposit_going(market: Market) -> None:
    from jupyter_gpumarket.chain.dev_accounts import dev_account

    provider = dev_account(1).address
    env = {
        **market.renter_env,
        "GPUMARKET_INITIAL_HOURS": "0.003",  # 10.8 s of deposit at 1,000 base units/s
        "GPUMARKET_AUTO_TOP_UP": "1",
    }
    nb = _run_notebook(env, "import time; time.sleep(16)", "print('still here')")
    assert nb.cells[1].outputs[-1]["text"].strip() == "still here"

    (lease,) = [x for x in leases_json(env) if x["provider"] == provider]
    kinds = [t["kind"] for t in lease["txs"]]
    assert "top_up" in kinds, kinds
    info = _settled(market, lease["channel_id"])
    assert info.deposit > 10_800
    assert abs(info.redeemed - PRICE * lease["billed_seconds"] // 3600) <= PRICE // 3600


def test_without_top_up_the_kernel_stops_cleanly_when_the_deposit_is_spent(
    market: Market,
) -> None:
    env = {**market.renter_env, "GPUMARKET_INITIAL_HOURS": "0.003"}
    km = KernelManager(kernel_name="gpumarket")
    with environ(env):
        km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=30)
        kc.execute("import time; time.sleep(60)")
        joined = stream_text_until_dead(km, kc)
        assert not km.is_alive()
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert "80 % of this lease's deposit is spent" in joined  # warned first
    assert "is spent: the kernel is stopped cleanly" in joined
    (lease,) = leases_json(env)
    info = _settled(market, lease["channel_id"])
    assert info.redeemed <= info.deposit == 10_800
