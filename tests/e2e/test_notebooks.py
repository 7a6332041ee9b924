"""The notebooks of notebooks/, executed against `gpumarket demo` as a user runs them.

The demo (chain, four providers, JupyterLab) runs for the module. Each notebook opens a server
session on the local ``python3`` kernel; its ``local`` cells run there (the picker finds the
demo's server through the runtime info, as in JupyterLab); the test then does what the user does
with the picker (choose an offer, Confirm cost, Use), the session switches to the ``gpumarket``
kernel, and the ``remote`` cells run on the provider. Outputs are checked, not only "no error".
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import psutil
import pytest
from notebookrun import NotebookSession, text_of, where

from jupyterproc import JupyterServer, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # a whole demo per module
NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "notebooks"  # git-ignored


@dataclass
class Demo:
    server: JupyterServer
    home: Path
    root: Path

    def offer(self, provider: str) -> int:
        """The offer id of a demo provider (``local`` = this machine, ``rtx4090-ap``, …)."""
        ready = (
            self.home / "provider-ready.json"
            if provider == "local"
            else self.home / "providers" / provider / "ready.json"
        )
        return int(json.loads(ready.read_text())["offer_id"])


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    tmp = tmp_path_factory.mktemp("demo")
    root = tmp / "notebooks"
    shutil.copytree(NOTEBOOKS, root)  # the kernels sync and write here, not in the repo
    port, token = free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),  # the picker must find this server only
        "JUPYTER_CONFIG_DIR": str(tmp / "config"),
    }
    env.pop("GPUMARKET_CONFIRM", None)  # the picker's confirmed quote lets the launch go
    cmd = [
        sys.executable, "-m", "jupyter_gpumarket.cli", "demo", "--port", str(port),
        "--home", str(tmp / "home"), "--notebook-dir", str(root),
        "--", f"--IdentityProvider.token={token}",
    ]  # fmt: skip
    log = tmp / "demo.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    server = JupyterServer(proc, f"http://127.0.0.1:{port}", token, log)
    try:
        deadline = time.monotonic() + 240  # hang detection only
        while "JupyterLab ready" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        yield Demo(server, tmp / "home", root)
    finally:
        # everything the demo started, kernels included: none may outlive its Ctrl-C
        try:
            tree = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:  # the demo died: its log says why
            tree = []
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = None
        print((tmp / "home" / "lab.log").read_text(errors="replace")[-4000:])
    assert code == 0, log.read_text()
    _, alive = psutil.wait_procs(tree, timeout=10)
    assert not alive, f"left behind: {[(p.pid, p.cmdline()) for p in alive]}"


def _notebook(name: str) -> tuple[Any, list[Any]]:
    """The notebook and its code cells that run in CI (tagged local or remote)."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    return nb, [c for c in nb.cells if c.cell_type == "code" and where(c) is not None]


def _run(session: NotebookSession, cell: Any) -> str:
    """Execute ``cell``, keep its outputs in it (saved as a CI artifact), return its text."""
    cell.outputs = [nbformat.from_dict(o) for o in session.execute(cell.source)]
    return text_of(cell.outputs)


def _save(nb: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, ARTIFACTS / name)


def _use(session: NotebookSession, offer_id: int) -> float:
    """In the picker: choose ``offer_id``, Confirm cost, Use; then wait until the session runs
    on the gpumarket kernel. Seconds from the Use click to that kernel's first executed cell."""
    shown = text_of(
        session.execute(
            f"picker.offer.value = {offer_id}\n"
            "print('quote', picker.quote_text.value)\n"
            "picker.confirm.click()\n"
            "print('use enabled', not picker.use.disabled)"
        )
    )
    assert "TUSD/h" in shown, shown  # the cost shown before paying
    assert "deposit" in shown, shown
    assert "use enabled True" in shown, shown
    clicked = time.monotonic()
    # Use stores the selection and PATCHes the session: this kernel goes away meanwhile
    session.execute("picker.use.click()\nprint(picker.message.value)")
    session.wait_for_kernel("gpumarket")
    session.execute("pass")
    return time.monotonic() - clicked


def _selection(demo: Demo, path: str) -> dict[str, Any]:
    body = demo.server.request("GET", f"/gpumarket/api/selection?path={path}")
    return dict(body["selection"] or {})


def test_getting_started(demo: Demo) -> None:
    nb, cells = _notebook("getting-started.ipynb")
    assert {where(c) for c in cells} == {"local", "remote"}
    out: dict[str, str] = {}
    local_offer = demo.offer("local")
    session = NotebookSession(demo.server, "getting-started.ipynb").open("python3")
    try:
        for cell in cells:
            tags = set(cell.metadata["tags"])
            if where(cell) == "local" and session.kernel()["name"] != "python3":
                session.change_kernel("python3")  # what the notebook tells the user to do
            out[next(iter(tags - {"local", "remote"}))] = _run(session, cell)
            for _ in range(20):  # what the cell says to do when the first sample is late
                if "spend" not in tags or "run this cell again" not in out["spend"]:
                    break
                time.sleep(1.0)
                out["spend"] = _run(session, cell)
            if "pick" in tags:
                assert "OfferPicker" in out["pick"] or "VBox" in out["pick"], out["pick"]
                use_to_first_cell = _use(session, local_offer)
                selection = _selection(demo, "getting-started.ipynb")
                assert selection["offer"] == str(local_offer)
                assert selection["confirmed_quote"]["offer_id"] == local_offer
                print(f"Use click -> first executed cell: {use_to_first_cell:.1f} s")
    finally:
        session.close()
        _save(nb, "getting-started.ipynb")

    # the offer is this machine: its GPU if it has one, else CPU only, said plainly
    gpu = shutil.which("nvidia-smi") is not None
    assert ("GPU  " if gpu else "CPU only") in out["gpu-check"], out["gpu-check"]
    assert "SIMULATED" not in out["gpu-check"]
    first, last = map(float, re.search(r"loss\s+([\d.]+) -> ([\d.]+)", out["train"]).groups())
    assert last < first / 10, out["train"]  # it learned
    if not gpu:
        assert "on the CPU" in out["train"], out["train"]  # numpy or pure Python, no torch
    billed = re.search(r"billed\s+(\d+) s, spend (\d+)", out["spend"])
    assert billed is not None, out["spend"]  # the agent's sample: seconds billed, spend so far
    assert "= charged + refunded: True" in out["receipt"], out["receipt"]
    charged = re.search(r"charged\s+([\d.]+) TUSD", out["receipt"])
    assert charged is not None, out["receipt"]
    assert float(charged.group(1)) > 0, out["receipt"]


def test_transparency(demo: Demo) -> None:
    nb, cells = _notebook("transparency.ipynb")
    out: dict[str, str] = {}
    simulated = demo.offer("rtx4090-ap")
    session = NotebookSession(demo.server, "transparency.ipynb").open("python3")
    try:
        for cell in cells:
            tags = set(cell.metadata["tags"])
            out[next(iter(tags - {"local", "remote"}))] = _run(session, cell)
            if "pick" in tags:
                _use(session, simulated)
    finally:
        session.close()
        _save(nb, "transparency.ipynb")

    offers = out["offers"].splitlines()
    assert len(offers) == 4, out["offers"]
    assert sum("simulated" in line for line in offers) == 3, out["offers"]
    assert all("level " in line for line in offers)
    challenge = out["challenge"]
    assert "(SIMULATED)" in challenge, challenge
    assert re.search(r"offer \d+: MISMATCH", challenge), challenge  # the challenge caught it
    samples = re.search(r"(\d+) telemetry samples", out["telemetry"])
    assert samples is not None, out["telemetry"]
    assert int(samples.group(1)) >= 1, out["telemetry"]
    assert "billed" in out["telemetry"]
