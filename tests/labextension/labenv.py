"""What the labextension's UI tests share besides fixtures: where Chromium and the built
extension are, the Jupyter dirs of a test Lab, and the skip when something is missing (a module
of its own: test files import it by name, which a conftest.py cannot safely be)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

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


def lab_env(tmp: Path, standin_spec: bool) -> dict[str, str]:
    """Jupyter dirs under ``tmp`` whose labextension is this tree's build; ``standin_spec``: a
    `gpumarket` kernelspec that is a plain local ipykernel (the UI switches kernels; the remote
    path has its own tests)."""
    share = tmp / "share"
    (share / "labextensions").mkdir(parents=True)
    (share / "labextensions" / "jupyter-gpumarket").symlink_to(BUILT)
    if standin_spec:
        spec = share / "kernels" / "gpumarket"
        spec.mkdir(parents=True)
        argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        (spec / "kernel.json").write_text(
            json.dumps(
                {"argv": argv, "display_name": "Python 3 (GPU Market)", "language": "python"}
            )
        )
    tree = str(Path(jupyter_gpumarket.__file__).parents[1])
    return {
        "JUPYTER_PATH": str(share),
        "JUPYTER_DATA_DIR": str(tmp / "data"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "workspaces"),
        "PYTHONPATH": os.pathsep.join(p for p in (tree, os.environ.get("PYTHONPATH")) if p),
    }


LAB_ARGS = (
    "--LabApp.news_url=None",
    "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
)


def needs_ui() -> None:
    why = _needs()
    if why:
        pytest.skip(why)


@contextlib.contextmanager
def market_lab(tmp: Path, renter_env: dict[str, str]) -> Iterator[JupyterServer]:
    """A real `jupyter lab` renting from a running devnet market: the renter's network and
    wallet, but no offer, password or budget (the panel chooses, unlocks and confirms)."""
    drop = ("GPUMARKET_OFFER", "GPUMARKET_WALLET_PASSWORD", "GPUMARKET_BUDGET")
    env = {k: v for k, v in renter_env.items() if k not in drop}
    env.update(lab_env(tmp, standin_spec=False))
    server = start_jupyter(tmp, env, *LAB_ARGS, timeout=120)
    try:
        yield server
    finally:
        for s in server.request("GET", "/api/sessions"):
            server.request("DELETE", f"/api/sessions/{s['id']}", timeout=120)
        server.stop()
