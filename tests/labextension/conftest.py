"""A real `jupyter lab` serving this tree's built labextension, and Debian's Chromium driven
by Playwright (no browser download), shared by the labextension's UI tests."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import jupyter_gpumarket

from jupyterproc import JupyterServer, start_jupyter

CHROMIUM = os.environ.get("GPUMARKET_CHROMIUM", "/usr/bin/chromium")
BUILT = Path(jupyter_gpumarket.__file__).parent / "labextension"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "labextension"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


def _needs() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed: run scripts/setup.sh"
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM}: apt-get install chromium (or set GPUMARKET_CHROMIUM)"
    if not list((BUILT / "static").glob("remoteEntry.*.js")):
        return f"the labextension is not built in {BUILT}: run scripts/setup.sh"
    return None


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    """`jupyter lab` whose labextension is this tree's build and whose `gpumarket` kernelspec is
    a plain local ipykernel (the UI switches kernels; the remote path has its own tests)."""
    why = _needs()
    if why:
        pytest.skip(why)
    tmp = tmp_path_factory.mktemp("lab")
    share = tmp / "share"
    (share / "labextensions").mkdir(parents=True)
    (share / "labextensions" / "jupyter-gpumarket").symlink_to(BUILT)
    spec = share / "kernels" / "gpumarket"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python 3 (GPU Market)",
                "language": "python",
            }
        )
    )
    env = {
        "JUPYTER_PATH": str(share),
        "JUPYTER_DATA_DIR": str(tmp / "data"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "workspaces"),
        "PYTHONPATH": os.pathsep.join(
            p
            for p in (
                str(Path(jupyter_gpumarket.__file__).parents[1]),
                os.environ.get("PYTHONPATH"),
            )
            if p
        ),
    }
    server = start_jupyter(
        tmp,
        env,
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        timeout=120,
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def browser(lab: JupyterServer) -> Iterator[Any]:
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
