"""A paid launch whose channel a browser wallet signs (``wallet: "browser"``), through a real
Jupyter server and a devnet provider: the ``sign`` event, a forged answer refused with 400
while the launch keeps waiting, the wallet's own signatures (eth_signTypedData_v4 of the
event's typed data, as the browser does) accepted, the provider relaying the opening,
vouchers signed by the session key, and the browser's address as the lease's renter."""

from __future__ import annotations

import threading
import time
import urllib.error
from collections.abc import Iterator
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from launchwatch import EventWatch, any_launch, launch

from jupyterproc import JupyterServer, start_jupyter
from marketproc import Market, leases_json, running_market

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Market]:
    with running_market(tmp_path_factory.mktemp("browser-market")) as m:
        yield m


def _browser_env(market: Market) -> dict[str, str]:
    from jupyter_gpumarket.chain.dev_accounts import dev_account

    env = {
        k: v
        for k, v in market.renter_env.items()
        if k not in ("GPUMARKET_WALLET", "GPUMARKET_WALLET_PASSWORD")
    }
    return {
        **env,
        "GPUMARKET_CONFIRM": "0",
        "GPUMARKET_WALLET_MODE": "browser",
        "GPUMARKET_BROWSER_ADDRESS": dev_account(2).address,
    }


@pytest.fixture(scope="module")
def jupyter(tmp_path_factory: pytest.TempPathFactory, market: Market) -> Iterator[JupyterServer]:
    tmp = tmp_path_factory.mktemp("browser-wallet")
    server = start_jupyter(tmp, _browser_env(market))
    yield server
    server.stop()


@pytest.fixture
def watch(jupyter: JupyterServer) -> Iterator[EventWatch]:
    w = EventWatch(jupyter)
    yield w
    w.close()


def _start(jupyter: JupyterServer) -> dict[str, Any]:
    outcome: dict[str, Any] = {}

    def start() -> None:
        try:
            body = {"name": "gpumarket", "path": ""}
            outcome["kernel"] = jupyter.request("POST", "/api/kernels", body, timeout=180)
        except urllib.error.HTTPError as exc:
            outcome["status"] = exc.code
            exc.close()

    outcome["thread"] = threading.Thread(target=start, daemon=True)
    outcome["thread"].start()
    return outcome


def _sign(key: Any, typed: dict[str, Any]) -> str:
    signed = Account.sign_message(encode_typed_data(full_message=typed), key)
    return "0x" + bytes(signed.signature).hex()


def _post_signed(jupyter: JupyterServer, kid: str, body: dict[str, Any]) -> int:
    try:
        jupyter.request("POST", f"/gpumarket/api/launches/{kid}/signed", body)
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code
    return 200


def test_the_browser_signs_the_opening_and_the_lease_runs(
    jupyter: JupyterServer, watch: EventWatch, market: Market
) -> None:
    from jupyter_gpumarket.chain.dev_accounts import dev_account

    browser = dev_account(2)
    started = _start(jupyter)
    kid = watch.wait(any_launch("opening_channel"), timeout=120)["kernel_id"]
    asked = watch.wait(
        lambda e: e["type"] == "warning" and e["kernel_id"] == kid and e["code"] == "sign"
    )
    opening = asked["opening"]
    assert opening["renter"] == browser.address
    assert "typed_data" in opening["methods"]
    stranger = Account.create()
    forged = {
        "open_sig": _sign(stranger.key, opening["open_channel"]),
        "permit_sig": _sign(stranger.key, opening["permit"]),
    }
    assert _post_signed(jupyter, kid, forged) == 400
    assert _post_signed(jupyter, kid, {"tx_hash": "0x" + "ab" * 32}) == 400
    assert watch.states(kid)[-1] == "opening_channel"  # still waiting
    good = {
        "open_sig": _sign(browser.key, opening["open_channel"]),
        "permit_sig": _sign(browser.key, opening["permit"]),
    }
    assert _post_signed(jupyter, kid, good) == 200
    assert _post_signed(jupyter, kid, good) == 409  # answered: nothing more is taken
    ready = watch.wait(launch(kid, "ready"), timeout=120)
    started["thread"].join(60)
    assert started["kernel"]["id"] == kid
    spend = watch.wait(lambda e: e["type"] == "spend" and e["kernel_id"] == kid)
    assert spend["deposit"] == int(opening["deposit"]) - int(opening["relay_fee"])
    time.sleep(3)
    jupyter.request("DELETE", f"/api/kernels/{kid}")
    receipt = watch.wait(lambda e: e["type"] == "receipt" and e["kernel_id"] == kid)
    assert receipt["lease_id"] == ready["lease_id"]
    leases = leases_json(market.renter_env)
    (lease,) = [x for x in leases if x["channel_id"] == opening["channel_id"]]
    assert lease["renter"] == browser.address


def test_cancel_while_the_wallet_is_asked_moves_nothing(
    jupyter: JupyterServer, watch: EventWatch, market: Market
) -> None:
    from jupyter_gpumarket.chain.dev_accounts import dev_account

    before = market.token_balance(dev_account(2).address)
    started = _start(jupyter)
    kid = watch.wait(any_launch("opening_channel"), timeout=120)["kernel_id"]
    watch.wait(lambda e: e["type"] == "warning" and e["kernel_id"] == kid and e["code"] == "sign")
    jupyter.request("POST", f"/gpumarket/api/launches/{kid}/cancel", {})
    assert watch.wait(launch(kid, "ended"))["reason"] == "cancelled"
    started["thread"].join(60)
    assert "kernel" not in started
    assert _post_signed(jupyter, kid, {"tx_hash": "0x" + "ab" * 32}) == 409
    assert market.token_balance(dev_account(2).address) == before


def test_the_browser_sends_the_opening_itself_and_posts_its_hash(
    jupyter: JupyterServer, watch: EventWatch, market: Market
) -> None:
    """MetaMask has no eth_signTransaction: the wallet sends approve + open and posts the
    open's hash; the server finds the channel on chain before the launch goes on."""
    from jupyter_gpumarket.chain.client import connect
    from jupyter_gpumarket.chain.dev_accounts import dev_account

    browser = dev_account(2)
    w3 = connect(market.devnet.profile.rpc_url)
    started = _start(jupyter)
    kid = watch.wait(any_launch("opening_channel"), timeout=120)["kernel_id"]
    asked = watch.wait(
        lambda e: e["type"] == "warning" and e["kernel_id"] == kid and e["code"] == "sign"
    )
    opening = asked["opening"]
    hashes = []
    for tx in opening["transactions"]:
        signed = browser.sign_transaction(
            {
                "to": tx["to"],
                "data": tx["data"],
                "gas": 500_000,
                "gasPrice": w3.eth.gas_price,
                "nonce": w3.eth.get_transaction_count(browser.address),
                "chainId": w3.eth.chain_id,
            }
        )
        h = w3.eth.send_raw_transaction(signed.raw_transaction)
        assert w3.eth.wait_for_transaction_receipt(h)["status"] == 1
        hashes.append("0x" + bytes(h).hex())
    assert _post_signed(jupyter, kid, {"tx_hash": hashes[0]}) == 400  # the approve, not the open
    assert _post_signed(jupyter, kid, {"tx_hash": hashes[1]}) == 200
    watch.wait(launch(kid, "ready"), timeout=120)
    started["thread"].join(60)
    spend = watch.wait(lambda e: e["type"] == "spend" and e["kernel_id"] == kid)
    assert spend["deposit"] == int(opening["deposit"])
    jupyter.request("DELETE", f"/api/kernels/{kid}")
    watch.wait(lambda e: e["type"] == "receipt" and e["kernel_id"] == kid)
    leases = leases_json(market.renter_env)
    (lease,) = [x for x in leases if x["channel_id"] == opening["channel_id"]]
    assert lease["renter"] == browser.address
