"""The browser-wallet path in a real `jupyter lab` and Debian's Chromium, against a devnet with a
paid provider: a stub EIP-1193 provider injected into the page (``window.ethereum``) signs with
a devnet key that stays in this test process (a Playwright binding with eth_account). Connect
the browser wallet, pick the offer, confirm: the provisioner asks the page to sign the opening
(``sign`` event), the page signs it and posts it, and the kernel runs on the provider, paid
from the browser's address — the server's keystore stays locked throughout."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")

from eth_account import Account
from eth_account.messages import encode_typed_data
from labenv import market_lab, needs_ui
from labkit import PANEL, kernel_of, open_page, wait_for
from playwright.sync_api import expect

from jupyterproc import JupyterServer
from marketproc import Market, leases_json, running_market

pytestmark = pytest.mark.slow

SPEND = re.compile(r"● [\d.]+/h · [\d.]+ spent · \S+ left")

STUB = """
window.ethereum = {
  isStub: true,
  async request({ method, params }) {
    const answer = JSON.parse(await window.__gpumarketEth(method, JSON.stringify(params || [])));
    if (answer.error) { throw Object.assign(new Error(answer.error), { code: 4001 }); }
    return answer.result;
  }
};
"""


class StubWallet:
    """What the page's ``window.ethereum`` asks, answered with ``key`` on the devnet."""

    def __init__(self, market: Market, key: Any) -> None:
        from jupyter_gpumarket.chain.client import connect

        self.key = key
        self.w3 = connect(market.devnet.profile.rpc_url)
        self.calls: list[str] = []

    def __call__(self, method: str, params_json: str) -> str:
        self.calls.append(method)
        params = json.loads(params_json)
        try:
            return json.dumps({"result": self.answer(method, params)})
        except Exception as exc:  # the page sees a wallet error, as with MetaMask
            return json.dumps({"error": f"{type(exc).__name__}: {exc}"})

    def answer(self, method: str, params: list[Any]) -> Any:
        if method in ("eth_requestAccounts", "eth_accounts"):
            return [self.key.address]
        if method == "eth_chainId":
            return hex(self.w3.eth.chain_id)
        if method == "wallet_switchEthereumChain":
            return None
        if method == "eth_signTypedData_v4":
            assert params[0].lower() == self.key.address.lower()
            typed = json.loads(params[1])
            signed = Account.sign_message(encode_typed_data(full_message=typed), self.key.key)
            return "0x" + bytes(signed.signature).hex()
        if method == "eth_sendTransaction":
            tx = params[0]
            signed = self.key.sign_transaction(
                {
                    "to": tx["to"],
                    "data": tx["data"],
                    "gas": 500_000,
                    "gasPrice": self.w3.eth.gas_price,
                    "nonce": self.w3.eth.get_transaction_count(self.key.address),
                    "chainId": self.w3.eth.chain_id,
                }
            )
            return "0x" + bytes(self.w3.eth.send_raw_transaction(signed.raw_transaction)).hex()
        if method == "eth_getTransactionReceipt":
            r = self.w3.eth.get_transaction_receipt(params[0])
            return {"status": hex(r["status"])}
        raise ValueError(f"the stub wallet does not do {method}")


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Market]:
    needs_ui()
    with running_market(tmp_path_factory.mktemp("walletmarket")) as m:
        yield m


@pytest.fixture(scope="module")
def wallet_lab(market: Market, tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    with market_lab(tmp_path_factory.mktemp("walletlab"), market.renter_env) as server:
        yield server


def test_a_browser_wallet_signs_the_opening_and_the_kernel_runs(
    browser: Any, market: Market, wallet_lab: JupyterServer, artifacts: Path
) -> None:
    from jupyter_gpumarket.chain.dev_accounts import dev_account

    stub = StubWallet(market, dev_account(2))

    def install(page: Any) -> None:
        page.expose_function("__gpumarketEth", stub)
        page.add_init_script(STUB)

    s = open_page(browser, wallet_lab, "browser.ipynb", install)
    page = s.page
    panel = page.locator(PANEL)
    try:
        wallet = panel.locator(".jp-GpuMarket-wallet")
        expect(wallet.locator('[data-fact="unlocked"]')).to_have_text("locked", timeout=60_000)
        wallet.get_by_role("button", name="Connect browser wallet").click()
        expect(wallet.locator('[data-fact="browser-wallet"]')).to_contain_text(stub.key.address)

        offer_id = str(market.ready["offer_id"])
        row = panel.locator(f'[data-offer-id="{offer_id}"]')
        expect(row).to_be_visible()
        row.get_by_role("button", name="Use for this notebook").click()
        dialog = page.locator(".jp-Dialog")
        expect(dialog).to_contain_text("/h · deposit")
        dialog.get_by_role("button", name="Confirm & switch kernel").click()
        confirm = panel.locator(".jp-GpuMarket-stepper .jp-GpuMarket-confirmButton")
        wait_for(
            page,
            lambda: (
                (kernel_of(wallet_lab, "browser.ipynb") or {}).get("name") == "gpumarket"
                or confirm.is_visible()
            ),
            "the kernel switch or a confirmation",
            timeout=240,
        )
        if confirm.is_visible():
            confirm.click()
        wait_for(
            page,
            lambda: (k := kernel_of(wallet_lab, "browser.ipynb")) and k["name"] == "gpumarket",
            "the gpumarket kernel",
            timeout=240,
        )
        status = page.locator(".jp-GpuMarket-statusItem")
        expect(status).to_contain_text(SPEND, timeout=180_000)
        assert "eth_signTypedData_v4" in stub.calls or "eth_sendTransaction" in stub.calls
        status.screenshot(path=str(artifacts / "status-browser-wallet.png"))
        mine = [x for x in leases_json(market.renter_env) if x["renter"] == stub.key.address]
        assert mine
        assert s.errors == []
    except BaseException:
        page.screenshot(path=str(artifacts / "browser-wallet-failure.png"))
        raise
    finally:
        page.context.close()
