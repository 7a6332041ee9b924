"""A paid launch on a devnet through a real Jupyter server, as the events websocket shows it:
the quote, the confirmation before the wallet signs, every step in order, spend, the receipt;
cancel while confirming (nothing moves, not even gas) and after the channel opened (only gas:
the provider settles the channel at 0 and the deposit comes back)."""

from __future__ import annotations

import os
import signal
import threading
import time
import urllib.error
from collections.abc import Iterator
from typing import Any

import pytest
from launchwatch import EventWatch, any_launch, launch

from jupyterproc import JupyterServer, start_jupyter
from marketproc import PRICE, Market, leases_json, running_market

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Market]:
    with running_market(tmp_path_factory.mktemp("launch-market")) as m:
        yield m


@pytest.fixture(scope="module")
def jupyter(tmp_path_factory: pytest.TempPathFactory, market: Market) -> Iterator[JupyterServer]:
    tmp = tmp_path_factory.mktemp("launch-paid")
    server = start_jupyter(tmp, {**market.renter_env, "GPUMARKET_CONFIRM": "1"})
    (tmp / "notebooks" / "data.txt").write_text("x")
    yield server
    server.stop()


@pytest.fixture
def watch(jupyter: JupyterServer) -> Iterator[EventWatch]:
    w = EventWatch(jupyter)
    yield w
    w.close()


def _start_in_background(jupyter: JupyterServer) -> dict[str, Any]:
    outcome: dict[str, Any] = {}

    def start() -> None:
        try:
            body = {"name": "gpumarket", "path": ""}
            outcome["kernel"] = jupyter.request("POST", "/api/kernels", body, timeout=120)
        except urllib.error.HTTPError as exc:
            outcome["status"] = exc.code
            exc.close()

    outcome["thread"] = threading.Thread(target=start, daemon=True)
    outcome["thread"].start()
    return outcome


def _balances(market: Market) -> tuple[int, int]:
    from jupyter_gpumarket.chain.dev_accounts import dev_account

    return (
        market.token_balance(dev_account(2).address),
        market.token_balance(dev_account(1).address),
    )


def _confirm_quote(jupyter: JupyterServer, watch: EventWatch, kid: str) -> dict[str, Any]:
    asked = watch.wait(lambda e: e["type"] == "warning" and e["kernel_id"] == kid)
    assert asked["code"] == "confirm"
    return dict(asked["quote"])


def test_confirm_then_every_step_in_order_then_spend_and_a_receipt(
    jupyter: JupyterServer, watch: EventWatch, market: Market
) -> None:
    started = _start_in_background(jupyter)
    kid = watch.wait(any_launch("confirming"))["kernel_id"]
    quote = _confirm_quote(jupyter, watch, kid)
    offer = market.ready["offer_id"]
    assert quote["offer_id"] == offer
    assert quote["price_per_hour"] == PRICE
    assert quote["deposit"] == PRICE  # one initial hour, below the budget of 10.00
    assert quote["text"] == "3.60 TUSD/h · deposit 3.60 ≈ 1 h 0 min · budget cap 10.00"
    # GET quote says the same
    path = f"/gpumarket/api/quote?offer={offer}&budget=10000000&initial_hours=1"
    assert jupyter.request("GET", path + f"&network={market.profile}") == quote
    with pytest.raises(urllib.error.HTTPError) as err:  # not an offer in the registry
        jupyter.request("GET", f"/gpumarket/api/quote?offer=999&network={market.profile}")
    assert err.value.code == 404
    err.value.close()
    # a quote for less than this launch costs does not confirm it
    cheaper = {**quote, "price_per_hour": PRICE - 1}
    with pytest.raises(urllib.error.HTTPError) as err:
        jupyter.request("POST", f"/gpumarket/api/launches/{kid}/confirm", {"quote": cheaper})
    assert err.value.code == 400
    err.value.close()
    answer = jupyter.request("POST", f"/gpumarket/api/launches/{kid}/confirm", {"quote": quote})
    assert answer["kernel_id"] == kid
    ready = watch.wait(launch(kid, "ready"), timeout=120)
    started["thread"].join(60)
    assert started["kernel"]["id"] == kid
    assert watch.states(kid) == [
        "choosing",
        "confirming",
        "opening_channel",
        "connecting",
        "syncing_files",
        "starting_kernel",
        "ready",
    ]
    assert ready["offer_id"] == offer
    assert ready["lease_id"]
    spend = watch.wait(lambda e: e["type"] == "spend" and e["kernel_id"] == kid)
    assert spend["rate_per_hour"] == PRICE
    assert spend["deposit"] == PRICE
    assert spend["budget"] == 10_000_000
    assert spend["token"] == {"symbol": "TUSD", "decimals": 6}
    time.sleep(3)  # a few billed seconds
    jupyter.request("DELETE", f"/api/kernels/{kid}")
    receipt = watch.wait(lambda e: e["type"] == "receipt" and e["kernel_id"] == kid)
    assert receipt["lease_id"] == ready["lease_id"]
    assert receipt["seconds"] >= 3
    assert receipt["charged"] == PRICE * receipt["seconds"] // 3600
    assert receipt["refunded"] == PRICE - receipt["charged"]
    assert watch.wait(launch(kid, "ended"))["reason"] == "stopped"


def test_cancel_while_confirming_moves_nothing(
    jupyter: JupyterServer, watch: EventWatch, market: Market
) -> None:
    before, leases = _balances(market), len(leases_json(market.renter_env))
    started = _start_in_background(jupyter)
    kid = watch.wait(any_launch("confirming"))["kernel_id"]
    body = jupyter.request("POST", f"/gpumarket/api/launches/{kid}/cancel", {})
    assert (body["state"], body["reason"]) == ("ended", "cancelled")
    assert "no gas spent" in body["message"]
    started["thread"].join(60)
    assert "kernel" not in started
    assert watch.states(kid) == ["choosing", "confirming", "ended"]
    assert _balances(market) == before
    assert len(leases_json(market.renter_env)) == leases  # no channel was opened


def test_cancel_after_the_channel_opened_costs_only_gas(
    jupyter: JupyterServer, watch: EventWatch, market: Market
) -> None:
    renter_before, provider_before = _balances(market)
    known = {x["channel_id"] for x in leases_json(market.renter_env)}
    started = _start_in_background(jupyter)
    kid = watch.wait(any_launch("confirming"))["kernel_id"]
    quote = _confirm_quote(jupyter, watch, kid)
    jupyter.request("POST", f"/gpumarket/api/launches/{kid}/confirm", {"quote": quote})
    late = watch.wait(
        lambda e: e["kernel_id"] == kid and e.get("state") in ("syncing_files", "starting_kernel")
    )
    pid = market.provider_proc.pid
    os.kill(pid, signal.SIGSTOP)  # the provider hangs: the launch cannot get past this step
    try:
        body = jupyter.request("POST", f"/gpumarket/api/launches/{kid}/cancel", {})
    finally:
        os.kill(pid, signal.SIGCONT)
    ended = body if body["state"] == "ended" else watch.wait(launch(kid, "ended"))
    assert ended["reason"] == "cancelled"
    assert "nothing billed" in ended["message"]
    assert "gas spent: " in ended["message"]
    assert "gas units" in ended["message"]
    started["thread"].join(60)
    assert "kernel" not in started
    watch.wait(launch(kid, "ended"))  # the cancel's answer can come before its event
    assert watch.states(kid)[-2:] == [late["state"], "ended"]
    (lease,) = [x for x in leases_json(market.renter_env) if x["channel_id"] not in known]
    deadline = time.monotonic() + 60  # the provider settles the channel at 0
    while not market.channel(lease["channel_id"]).state.startswith("closed"):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert _balances(market) == (renter_before, provider_before)  # tokens: all back
