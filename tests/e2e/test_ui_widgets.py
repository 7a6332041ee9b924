"""The notebook UI end to end: JupyterLab in Chromium (Debian's, driven by Playwright) on a
devnet market with real paid providers. A notebook's local kernel shows ``pick()``; the user
confirms the cost and presses Use; the notebook's kernel becomes the remote gpumarket kernel
and runs a cell there; a second notebook's ``status()`` follows the launch through the server's
events. Screenshots go to tests/artifacts/ (git-ignored; CI keeps them as artifacts)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from market_kit import dead_endpoint
from marketfleet import Fleet, running_fleet

from jupyterproc import JupyterServer, start_jupyter

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parents[1] / "artifacts"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
LONG = 180_000  # ms: only to detect a hang (2 shared cores, a chain, providers, Lab)


def _notebook(path: Path, *cells: str, kernel: str = "python3") -> None:
    nb = {
        "cells": [
            {"cell_type": "code", "id": f"c{i}", "metadata": {}, "source": src, "outputs": [],
             "execution_count": None}
            for i, src in enumerate(cells)
        ],
        "metadata": {"kernelspec": {"name": kernel, "display_name": kernel, "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }  # fmt: skip
    path.write_text(json.dumps(nb))


@pytest.fixture
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.skip(
            f"{CHROMIUM} is missing: as root, `apt-get install chromium` (scripts/setup.sh)"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: pip install -e '.[test]' (scripts/setup.sh)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    specs = {"cheap": (3, 1_000_000, "eu-west", ()), "dear": (4, 3_000_000, "us-east", ())}
    with running_fleet(tmp_path, specs) as f:
        endpoint, pin = dead_endpoint()  # an offer nobody answers: shown grey, with its reason
        f.ids["dead"] = f.register(5, endpoint=endpoint, tls_fingerprint=bytes.fromhex(pin[7:]))
        yield f


@contextlib.contextmanager
def _lab(fleet: Fleet, tmp: Path) -> Iterator[JupyterServer]:
    env = {**fleet.renter_env, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    server = start_jupyter(tmp / "lab", env)
    try:
        yield server
    finally:
        server.stop()
        shutil.copy(server.log_path, ARTIFACTS / "ui-jupyter.log")


def _open(page: Any, server: JupyterServer, name: str) -> None:
    page.goto(f"{server.url}/lab/tree/{name}?token={server.token}")
    page.wait_for_selector(".jp-StatusBar-TextItem:has-text('| Idle')", timeout=LONG)


def _run_cell(page: Any, index: int) -> None:
    page.locator(".jp-Notebook .jp-Cell .jp-InputArea-editor").nth(index).click()
    page.keyboard.press("Shift+Enter")


@contextlib.contextmanager
def _shots_on_failure(ctx: Any) -> Iterator[None]:
    """On failure, a screenshot of every page (what the user would have seen)."""
    try:
        yield
    except BaseException:
        for i, page in enumerate(ctx.pages):
            with contextlib.suppress(Exception):
                page.screenshot(path=str(ARTIFACTS / f"ui-failure-{i}.png"), full_page=True)
        raise


@pytest.mark.timeout(900)
def test_pick_confirm_use_runs_a_cell_on_the_remote_kernel(
    fleet: Fleet, browser: Any, tmp_path: Path
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    root = tmp_path / "lab" / "notebooks"
    root.mkdir(parents=True)
    _notebook(
        root / "pick.ipynb",
        "import jupyter_gpumarket\njupyter_gpumarket.pick()",
        "import os\nprint('REMOTE', os.getpid(), 'GPUMARKET_TELEMETRY_FILE' in os.environ)",
        "import jupyter_gpumarket\njupyter_gpumarket.status()",
    )
    _notebook(root / "watch.ipynb", "import jupyter_gpumarket\n"
              "jupyter_gpumarket.status(notebook='pick.ipynb')")  # fmt: skip
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(_lab(fleet, tmp_path))
        ctx = browser.new_context(viewport={"width": 1500, "height": 1000})
        stack.enter_context(_shots_on_failure(ctx))
        watch = ctx.new_page()
        _open(watch, server, "watch.ipynb")
        _run_cell(watch, 0)
        watch.wait_for_selector(".gpumarket-status", timeout=LONG)

        page = ctx.new_page()
        _open(page, server, "pick.ipynb")
        _run_cell(page, 0)
        picker = page.locator(".gpumarket-picker")
        picker.wait_for(timeout=LONG)
        page.wait_for_selector(".gpumarket-offers .gpumarket-unusable", timeout=LONG)
        page.wait_for_selector(".gpumarket-quote", timeout=LONG)
        table = page.locator(".gpumarket-offers").inner_text()
        assert f"{fleet.agents['cheap'].offer_id}" in table
        quote = page.locator(".gpumarket-quote").inner_text()
        assert "TUSD/h" in quote
        assert "deposit" in quote
        picker.get_by_role("button", name="Confirm cost").click()
        page.wait_for_selector(".gpumarket-quote .gpumarket-confirmed", timeout=LONG)
        page.screenshot(path=str(ARTIFACTS / "ui-picker.png"), full_page=True)

        (before,) = [s for s in server.request("GET", "/api/sessions") if s["path"] == "pick.ipynb"]
        assert before["kernel"]["name"] == "python3"
        t0 = time.monotonic()
        picker.locator("button.mod-success", has_text="Use").click()
        page.wait_for_selector(".jp-Toolbar-kernelName:has-text('GPU Market')", timeout=LONG)
        page.wait_for_selector(".jp-StatusBar-TextItem:has-text('| Idle')", timeout=LONG)
        _run_cell(page, 1)
        out = page.locator(".jp-OutputArea-output:has-text('REMOTE')")
        out.wait_for(timeout=LONG)
        use_to_first_cell = time.monotonic() - t0
        text = out.inner_text()
        assert "True" in text  # the agent's kernel environment: a remote kernel
        _run_cell(page, 2)
        page.wait_for_selector(".gpumarket-status .gpumarket-telemetry", timeout=LONG)
        page.screenshot(path=str(ARTIFACTS / "ui-remote-status.png"), full_page=True)

        watch.wait_for_selector(".gpumarket-step-done:has-text('ready')", timeout=LONG)
        watch.wait_for_selector(".gpumarket-spend", timeout=LONG)
        watch.screenshot(path=str(ARTIFACTS / "ui-status.png"), full_page=True)
        sessions = server.request("GET", "/api/sessions")
        (nb,) = [s for s in sessions if s["path"] == "pick.ipynb"]
        assert nb["kernel"]["name"] == "gpumarket"
        assert nb["kernel"]["id"] != before["kernel"]["id"]
        selection = server.request("GET", "/gpumarket/api/selection?path=pick.ipynb")
        assert selection["selection"]["offer"] == str(fleet.agents["cheap"].offer_id)
        assert selection["selection"]["confirmed_quote"]["offer_id"] == int(
            selection["selection"]["offer"]
        )
        (ARTIFACTS / "ui-timings.json").write_text(
            json.dumps({"use_click_to_first_cell_s": round(use_to_first_cell, 2)})
        )
        print(f"Use click -> first executed cell: {use_to_first_cell:.2f} s")
        ctx.close()
