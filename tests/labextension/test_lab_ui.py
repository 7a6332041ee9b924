"""The GPU Market labextension in a real `jupyter lab` and Debian's Chromium: open the panel,
filter, pick an offer, confirm the cost, the notebook's kernel switches to `gpumarket`; the
launch stepper, toast, status item (one screenshot per state), lease view, stop & settle; and
the error states (server extension missing, chain down, provider lost) with the gpumarket API
mocked at the browser's transport seam."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")

from gpumock import QUOTE, GpuMarketMock, launch, spend
from labkit import PANEL, Session, kernel_of, open_page, wait_for
from playwright.sync_api import expect

pytestmark = pytest.mark.slow

STATUS = ".jp-GpuMarket-statusItem"
WARN = re.compile(r"\bjp-mod-warn\b")


@pytest.fixture
def open_lab(browser: Any, lab: Any, shutdown_kernels: None) -> Iterator[Callable[..., Session]]:
    contexts: list[Any] = []

    def _open(notebook: str, mode: str = "ok") -> Session:
        mock = GpuMarketMock(mode=mode)
        s = open_page(browser, lab, notebook, mock.install)
        contexts.append(s.page.context)
        s.mock = mock
        return s

    yield _open
    for context in contexts:
        context.close()


def test_pick_filter_confirm_switches_kernel_and_shows_spend(
    open_lab: Callable[..., Session], lab: Any, artifacts: Path
) -> None:
    s = open_lab("gpu.ipynb")
    page, mock = s.page, s.mock
    panel = page.locator(PANEL)
    expect(panel.locator("h2")).to_have_text("GPU Market")
    offers = panel.locator(".jp-GpuMarket-offer")
    expect(offers).to_have_count(3)
    # unusable offers are greyed with their reason; badges show the verification level
    gone = panel.locator('[data-offer-id="h100-gone"]')
    expect(gone).to_have_class("jp-GpuMarket-offer jp-mod-greyed")
    expect(gone).to_contain_text("unreachable: probe timed out")
    expect(gone.get_by_role("button", name="Use for this notebook")).to_be_disabled()
    expect(gone).to_contain_text('<img src=x onerror="window.__pwned=2">')
    assert panel.locator("img").count() == 0
    assert page.evaluate("() => window.__pwned === undefined")
    expect(panel.locator('[data-offer-id="h100-eu"] .jp-GpuMarket-badge')).to_have_text(
        "challenged"
    )
    panel.screenshot(path=str(artifacts / "panel-offers.png"))
    # filters: GPU, verified only; the server is asked with the same filter
    panel.locator('[data-filter="gpu"]').fill("4090")
    expect(offers).to_have_count(1)
    expect(offers.first).to_contain_text("RTX 4090·24G")
    wait_for(
        page,
        lambda: any(q.get("gpu") == "4090" for q in mock.asked("GET", "api/offers")),
        "GET offers?gpu=4090",
    )
    panel.locator('[data-filter="gpu"]').fill("")
    panel.locator('[data-filter="verified"]').check()
    expect(offers).to_have_count(2)
    panel.locator('[data-filter="verified"]').uncheck()
    panel.locator('[data-filter="policy"]').select_option("fastest")
    expect(offers.first).to_have_attribute("data-offer-id", "h100-eu")

    # pick → cost confirmation → selection stored with the notebook path → kernel switched
    panel.locator('[data-offer-id="h100-eu"]').get_by_role(
        "button", name="Use for this notebook"
    ).click()
    dialog = page.locator(".jp-Dialog")
    expect(dialog).to_contain_text("1.84 TUSD/h · deposit 5.00 ≈ 2 h 43 min · budget cap 10.00")
    dialog.get_by_role("button", name="Confirm & switch kernel").click()
    wait_for(page, lambda: mock.asked("POST", "api/selection"), "POST selection")
    selection = mock.asked("POST", "api/selection")[0]
    assert selection["path"] == "gpu.ipynb"
    assert selection["offer"] == "h100-eu"
    assert selection["confirmed_quote"]["deposit"] == 5_000_000
    kernel = wait_for(
        page,
        lambda: (k := kernel_of(lab, "gpu.ipynb")) and k["name"] == "gpumarket" and k,
        "the gpumarket kernel",
    )
    kid = kernel["id"]

    # launch stepper + toast, Cancel before ready
    status = page.locator(STATUS)
    now = time.time()
    mock.push(launch(kid, "opening_channel", t=now - 4, elapsed_s=4))
    mock.push(launch(kid, "connecting", t=now, elapsed_s=6, message="to wss://10.0.0.2:8443"))
    stepper = panel.locator(".jp-GpuMarket-stepper")
    expect(stepper.locator('li[data-state="opening_channel"]')).to_have_class(
        "jp-GpuMarket-step jp-mod-done"
    )
    expect(stepper.locator('li[data-state="connecting"]')).to_have_class(
        "jp-GpuMarket-step jp-mod-active"
    )
    expect(stepper.locator('li[data-state="opening_channel"] .jp-GpuMarket-stepTime')).to_have_text(
        "4s"
    )
    toast = page.locator(".jp-toast-message, .Toastify__toast").filter(
        has_text="GPU Market: connecting"
    )
    expect(toast.first).to_be_visible(timeout=15_000)
    expect(status).to_have_text("H100·80G ● connecting")
    status.screenshot(path=str(artifacts / "status-launching.png"))
    stepper.get_by_role("button", name="Cancel").click()
    wait_for(page, lambda: mock.asked("POST", f"api/launches/{kid}/cancel"), "POST cancel")
    expect(panel.locator(".jp-GpuMarket-launchState")).to_have_text("ended")

    # a new launch: ready, spend ticking locally
    now = time.time()
    mock.push(launch(kid, "starting_kernel", t=now, elapsed_s=8))
    mock.push(launch(kid, "ready", t=now + 0.01, elapsed_s=9))
    mock.push(spend(kid, t=time.time(), seconds_left=9664))
    expect(status).to_contain_text(
        re.compile(r"^H100·80G ● 1\.84/h · 0\.37 spent · 2h4[01]m left$")
    )
    # the clock runs locally between spend events: 2h41m (9660 s) passes without a new event
    expect(status).to_contain_text("· 2h40m left", timeout=20_000)
    expect(status).not_to_have_class(WARN)
    status.screenshot(path=str(artifacts / "status-ready.png"))
    # left, right after the kernel status
    bar = page.locator("#jp-main-statusbar .jp-StatusBar-Left")
    items = bar.locator(":scope > .jp-StatusBar-Item")
    texts = [t.strip() for t in items.all_inner_texts()]
    ours = next(i for i, t in enumerate(texts) if t.startswith("H100·80G"))
    assert "Python 3 (GPU Market)" in texts[ours - 1], texts
    page.locator("#jp-main-statusbar").screenshot(path=str(artifacts / "statusbar-ready.png"))
    # warn: under 15 minutes left
    mock.push(spend(kid, t=time.time(), seconds_left=600, spent=4_400_000, vouchers=9))
    expect(status).to_have_class(WARN)
    expect(status).to_contain_text(re.compile(r"· (10|9)m left"))
    status.screenshot(path=str(artifacts / "status-warn.png"))
    # link trouble: reconnecting, banner says the kernel lives on
    mock.push(launch(kid, "reconnecting", attempt=2))
    expect(status).to_contain_text("reconnecting (attempt 2)")
    expect(panel.locator(".jp-GpuMarket-banner")).to_have_text(
        "link down, reconnecting (attempt 2) (kernel alive, output buffered)"
    )
    status.screenshot(path=str(artifacts / "status-reconnecting.png"))
    mock.push(launch(kid, "busy"))
    expect(panel.locator(".jp-GpuMarket-banner")).to_be_hidden()

    # click → lease view: telemetry sparklines, vouchers; stop & settle shows the refund
    for i in range(5):
        mock.push(
            {
                "type": "telemetry",
                "kernel_id": kid,
                "sample": {
                    "t": time.time() + i,
                    "gpus": [
                        {
                            "index": 0,
                            "util_pct": 20 * i,
                            "mem_used_mib": 1000 * i,
                            "mem_total_mib": 81920,
                            "temp_c": 40 + i,
                            "power_w": 100 + 30 * i,
                        }
                    ],
                },
            }
        )
    mock.push({"type": "cull", "kernel_id": kid, "idle_s": 120, "cull_in_s": 1680})
    status.click()
    lease = panel.locator(".jp-GpuMarket-lease")
    expect(lease.locator('[data-fact="vouchers"]')).to_have_text("9")
    expect(lease.locator('[data-metric="util"] .jp-GpuMarket-sparkValue')).to_have_text("80%")
    expect(lease.locator('[data-metric="power"] polyline')).to_have_attribute("points", _nonempty)
    expect(lease.locator(".jp-GpuMarket-idle")).to_contain_text("culled in 28m")
    panel.screenshot(path=str(artifacts / "panel-lease.png"))
    lease.get_by_role("button", name="Stop & settle").click()
    expect(lease.locator(".jp-GpuMarket-stopped")).to_contain_text("refund 4.59 TUSD")
    assert mock.asked("DELETE", "api/leases/7") is not None
    mock.push(launch(kid, "ended", reason="stopped"))
    mock.push(
        {
            "type": "receipt",
            "kernel_id": kid,
            "lease_id": "7",
            "seconds": 812,
            "charged": 410_000,
            "refunded": 4_590_000,
            "txs": [
                {"kind": "open", "tx_hash": "0x" + "cd" * 32, "gas_used": 180_000},
                "0x" + "ef" * 32,
            ],
            "token": spend(kid)["token"],
        }
    )
    receipt = lease.locator(".jp-GpuMarket-receipt")
    expect(receipt).to_contain_text("13 min 32 s")
    expect(receipt.locator('[data-fact="refunded"]')).to_have_text("4.59 TUSD")
    expect(receipt.locator('[data-fact="txs"]')).to_contain_text("open 0xcdcd…cdcd")
    expect(status).to_contain_text("ended")
    status.screenshot(path=str(artifacts / "status-ended.png"))
    assert s.errors == []


_nonempty = re.compile(r"\d")


def test_server_extension_missing_says_how_to_fix(
    open_lab: Callable[..., Session], artifacts: Path
) -> None:
    s = open_lab("missing.ipynb", mode="missing")
    problem = s.page.locator(f'{PANEL} [data-problem="server"]')
    expect(problem).to_contain_text("server extension is not running")
    expect(problem).to_contain_text("jupyter server extension enable jupyter_gpumarket")
    expect(s.page.locator(f"{PANEL} .jp-GpuMarket-offers")).to_be_hidden()
    s.page.locator(PANEL).screenshot(path=str(artifacts / "panel-server-missing.png"))
    s.page.locator(f"{PANEL} .jp-GpuMarket-retry").click()
    expect(problem).to_be_visible()
    assert s.errors == []


def test_chain_down_says_what_and_wallet_unlock(
    open_lab: Callable[..., Session], artifacts: Path
) -> None:
    s = open_lab("chain.ipynb", mode="chain_down")
    panel = s.page.locator(PANEL)
    expect(panel.locator('[data-problem="offers"]')).to_contain_text(
        "chain unreachable at http://127.0.0.1:8545"
    )
    expect(panel.locator(".jp-GpuMarket-offers .jp-GpuMarket-fix")).to_contain_text(
        "network profile"
    )
    expect(panel.locator('[data-problem="wallet"]')).to_be_visible()
    panel.screenshot(path=str(artifacts / "panel-chain-down.png"))
    # the chain comes back: Refresh shows offers and the wallet; unlock with the password dialog
    s.mock.mode = "ok"
    panel.locator(".jp-GpuMarket-refresh").click()
    expect(panel.locator(".jp-GpuMarket-offer")).to_have_count(3)
    wallet = panel.locator(".jp-GpuMarket-wallet")
    expect(wallet.locator('[data-fact="balance"]')).to_have_text("250.00 TUSD")
    expect(wallet.locator('[data-fact="unlocked"]')).to_have_text("locked")
    for password in ("wrong", "s3cret"):
        wallet.get_by_role("button", name="Unlock…").click()
        s.page.locator(".jp-Dialog input").fill(password)
        s.page.locator(".jp-Dialog input").press("Enter")
        expect(s.page.locator(".jp-Dialog")).to_have_count(0)
    expect(s.page.get_by_text("wrong password for the keystore").first).to_be_visible()
    expect(wallet.locator('[data-fact="unlocked"]')).to_have_text("unlocked (1h00m left)")
    assert [b["password"] for b in s.mock.asked("POST", "api/wallet/unlock")] == ["wrong", "s3cret"]
    panel.screenshot(path=str(artifacts / "panel-wallet-unlocked.png"))
    assert s.errors == []


def test_provider_lost_banner_relaunches_on_a_similar_offer(
    open_lab: Callable[..., Session], lab: Any, artifacts: Path
) -> None:
    s = open_lab("lost.ipynb")
    page, mock = s.page, s.mock
    kid = kernel_of(lab, "lost.ipynb")["id"]
    wait_for(page, lambda: mock.sockets, "the events websocket")
    # a launch that asks for the confirmation (the kernel was not started from the panel)
    mock.push(launch(kid, "confirming", notebook="lost.ipynb"))
    mock.push(
        {
            "type": "warning",
            "kernel_id": kid,
            "code": "confirm",
            "message": "confirm the cost",
            "quote": QUOTE,
        }
    )
    stepper = page.locator(f"{PANEL} .jp-GpuMarket-stepper")
    expect(stepper.locator(".jp-GpuMarket-quote")).to_have_text(QUOTE["text"])
    stepper.get_by_role("button", name="Confirm").click()
    wait_for(page, lambda: mock.asked("POST", f"api/launches/{kid}/confirm"), "POST confirm")
    assert mock.asked("POST", f"api/launches/{kid}/confirm")[0] == {"quote": QUOTE}
    expect(stepper.locator(".jp-GpuMarket-launchState")).to_have_text(
        "opening channel (wallet signs)"
    )
    mock.push(launch(kid, "ready", notebook="lost.ipynb"))
    mock.push(spend(kid))
    mock.push(launch(kid, "ended", reason="provider_gone", notebook="lost.ipynb"))
    mock.push(
        {
            "type": "receipt",
            "kernel_id": kid,
            "lease_id": "7",
            "seconds": 60,
            "charged": 30_000,
            "refunded": 4_970_000,
            "txs": [],
            "token": spend(kid)["token"],
        }
    )
    banner = page.locator(f"{PANEL} .jp-GpuMarket-banner")
    expect(banner).to_contain_text("provider gone: 4.97 TUSD refunded")
    banner.screenshot(path=str(artifacts / "banner-provider-gone.png"))
    banner.get_by_role("button", name="Relaunch on a similar offer").click()
    dialog = page.locator(".jp-Dialog")
    expect(dialog).to_be_visible()
    quotes = mock.asked("GET", "api/quote")
    assert quotes, "no quote was asked for the relaunch"
    assert quotes[-1]["offer"] != "h100-eu", quotes
    dialog.get_by_role("button", name="Cancel").click()
    assert s.errors == []
