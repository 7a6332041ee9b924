"""`gpumarket demo` (the README's main command) and the getting-started notebook."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from agentproc import AgentProcess
from jupyterproc import JupyterServer, free_port

pytestmark = pytest.mark.slow
NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def test_demo_runs_lab_with_the_remote_kernel_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    port, token = free_port(), secrets.token_hex(8)
    with (tmp_path / "demo.log").open("wb") as log:
        proc = _popen_demo(port, token, tmp_path, log)
    server = JupyterServer(proc, f"http://127.0.0.1:{port}", token, tmp_path / "demo.log")
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                specs = server.request("GET", "/api/kernelspecs", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                assert proc.poll() is None, server.log()
                assert time.monotonic() < deadline, server.log()
                time.sleep(0.2)
        assert specs["default"] == "gpumarket"
        assert "getting-started.ipynb" in {
            c["name"] for c in server.request("GET", "/api/contents")["content"]
        }
        kernel = server.request("POST", "/api/kernels", {"name": "gpumarket"})
        assert server.request("GET", f"/api/kernels/{kernel['id']}")["execution_state"]
        ready = json.loads((tmp_path / "home" / "provider-ready.json").read_text())
        assert ready["url"].startswith("wss://127.0.0.1:")
        assert ready["offer_id"] >= 1  # a real offer in the devnet's Registry
        server.request("DELETE", f"/api/kernels/{kernel['id']}")
        leases = subprocess.run(
            [sys.executable, "-m", "jupyter_gpumarket.cli", "leases", "--json"],
            capture_output=True,
            text=True,
            env={**os.environ, "GPUMARKET_HOME": str(tmp_path / "home")},
            check=True,
        )
        (lease,) = json.loads(leases.stdout)
        assert lease["offer_id"] == ready["offer_id"]
        # paid for, ended; "settled" once the provider settled it (records follow the chain)
        assert lease["state"] in ("stopped", "settled")
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
    assert code == 0, server.log()
    assert "demo stopped" in server.log()
    assert not (tmp_path / "home" / "provider-ready.json").exists()  # provider gone too


def _popen_demo(port: int, token: str, tmp: Path, log: object) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        "-m",
        "jupyter_gpumarket.cli",
        "demo",
        "--port",
        str(port),
        "--home",
        str(tmp / "home"),
        "--",
        f"--IdentityProvider.token={token}",
    ]
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)  # type: ignore[arg-type]


def test_getting_started_notebook_runs_on_the_remote_kernel(remote_env: AgentProcess) -> None:
    nb = nbformat.read(NOTEBOOKS / "getting-started.ipynb", as_version=4)
    # the cells tagged remote, straight on the gpumarket kernel (GPUMARKET_* name the agent);
    # the local ones (picker, receipt) need the user's server: tests/e2e/test_notebooks.py
    nb.cells = [c for c in nb.cells if "remote" in c.metadata.get("tags", [])]
    NotebookClient(nb, kernel_name="gpumarket", timeout=120).execute()
    outputs = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
    )
    assert "work dir" in outputs
    assert str(remote_env.state_dir) in outputs
    assert "CPU only: this provider has no GPU" in outputs
    assert "loss" in outputs
