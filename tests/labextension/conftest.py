"""A real `jupyter lab` serving this tree's built labextension, and Debian's Chromium driven
by Playwright (no browser download), shared by the labextension's UI tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from labenv import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, LAB_ARGS, lab_env, needs_ui

from jupyterproc import JupyterServer, start_jupyter


# module scope, not session: Playwright's sync API keeps its own event loop set as the main
# thread's running loop while it is open, so every later asyncio.run() in the session would fail
@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    """`jupyter lab` with this tree's labextension and the stand-in `gpumarket` spec."""
    needs_ui()
    tmp = tmp_path_factory.mktemp("lab")
    server = start_jupyter(tmp, lab_env(tmp, standin_spec=True), *LAB_ARGS, timeout=120)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    needs_ui()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def shutdown_kernels(lab: JupyterServer) -> Iterator[None]:
    yield
    for s in lab.request("GET", "/api/sessions"):
        lab.request("DELETE", f"/api/sessions/{s['id']}")
