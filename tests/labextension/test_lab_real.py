"""The GPU Market labextension against the real thing: a devnet with a paid provider, the real
server extension and the `gpumarket` kernelspec with its provisioner, in a real `jupyter lab`
and Debian's Chromium — unlock the wallet, pick the offer, confirm the cost, the kernel switches
and starts on the provider, the status bar shows the spend, Stop & settle shows the refund."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")

from labenv import market_lab, needs_ui
from labkit import PANEL, kernel_of, open_page, wait_for
from playwright.sync_api import expect

from jupyterproc import JupyterServer
from marketproc import PASSWORD, Market, running_market

pytestmark = pytest.mark.slow

SPEND = re.compile(r"● [\d.]+/h · [\d.]+ spent · \S+ left")


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Market]:
    needs_ui()
    with running_market(tmp_path_factory.mktemp("labmarket")) as m:
        yield m


@pytest.fixture(scope="module")
def real_lab(market: Market, tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    with market_lab(tmp_path_factory.mktemp("reallab"), market.renter_env) as server:
        yield server


def test_unlock_pick_confirm_run_on_the_provider_and_settle(
    browser: Any, market: Market, real_lab: JupyterServer, artifacts: Path
) -> None:
    s = open_page(browser, real_lab, "real.ipynb")
    page = s.page
    panel = page.locator(PANEL)
    try:
        wallet = panel.locator(".jp-GpuMarket-wallet")
        expect(wallet.locator('[data-fact="unlocked"]')).to_have_text("locked", timeout=60_000)
        wallet.get_by_role("button", name="Unlock…").click()
        page.locator(".jp-Dialog input").fill(PASSWORD)
        page.locator(".jp-Dialog input").press("Enter")
        expect(wallet.locator('[data-fact="unlocked"]')).to_contain_text("unlocked")

        offer_id = str(market.ready["offer_id"])
        row = panel.locator(f'[data-offer-id="{offer_id}"]')
        expect(row).to_be_visible()
        row.get_by_role("button", name="Use for this notebook").click()
        dialog = page.locator(".jp-Dialog")
        expect(dialog).to_contain_text("/h · deposit")
        dialog.get_by_role("button", name="Confirm & switch kernel").click()
        # the stored confirmed quote lets the launch pay at once; a server that asks again
        # (warning `confirm`) gets its answer from the stepper, the panel follows the new kernel
        confirm = panel.locator(".jp-GpuMarket-stepper .jp-GpuMarket-confirmButton")
        wait_for(
            page,
            lambda: (
                (kernel_of(real_lab, "real.ipynb") or {}).get("name") == "gpumarket"
                or confirm.is_visible()
            ),
            "the kernel switch or a confirmation",
            timeout=240,
        )
        if confirm.is_visible():
            confirm.click()
        kernel = wait_for(
            page,
            lambda: (k := kernel_of(real_lab, "real.ipynb")) and k["name"] == "gpumarket" and k,
            "the gpumarket kernel",
            timeout=240,
        )
        status = page.locator(".jp-GpuMarket-statusItem")
        expect(status).to_contain_text(SPEND, timeout=180_000)
        status.screenshot(path=str(artifacts / "status-real-devnet.png"))
        expect(panel.locator('.jp-GpuMarket-stepper li[data-state="ready"]')).to_have_class(
            re.compile(r"jp-mod-done")
        )

        status.click()
        lease = panel.locator(".jp-GpuMarket-lease")
        expect(lease.locator('[data-fact="vouchers"]')).to_be_visible()
        lease.get_by_role("button", name="Stop & settle").click()
        expect(lease.locator(".jp-GpuMarket-stopped")).to_contain_text("refund", timeout=120_000)
        receipt = lease.locator(".jp-GpuMarket-receipt")
        expect(receipt.locator('[data-fact="txs"]')).to_contain_text("0x", timeout=60_000)
        expect(receipt.locator('[data-fact="refunded"]')).to_contain_text("TUSD")
        panel.screenshot(path=str(artifacts / "panel-real-settled.png"))
        assert kernel["id"]
        assert s.errors == []
    except BaseException:
        page.screenshot(path=str(artifacts / "real-failure.png"))
        raise
    finally:
        page.context.close()
