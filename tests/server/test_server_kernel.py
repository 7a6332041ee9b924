"""A real Jupyter server starts the `gpumarket` kernel and talks to it over its websocket."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect

from agentproc import AgentProcess
from jupyterproc import JupyterServer, execute, start_jupyter

pytestmark = pytest.mark.slow


@pytest.fixture
def jupyter(tmp_path: Path, agent: AgentProcess) -> Iterator[JupyterServer]:
    server = start_jupyter(tmp_path, agent.env())
    yield server
    server.stop()


def test_health_endpoint(jupyter: JupyterServer) -> None:
    body = jupyter.request("GET", "/gpumarket/health")
    assert body["kernels"] == 0
    assert body["version"]


def test_notebook_kernel_runs_remotely_through_the_server(
    jupyter: JupyterServer, agent: AgentProcess
) -> None:
    kernel = jupyter.request("POST", "/api/kernels", {"name": "gpumarket"})
    assert kernel["name"] == "gpumarket"
    with connect(jupyter.ws_url(f"/api/kernels/{kernel['id']}/channels")) as ws:
        reply, text = execute(ws, "import os; print('remote', os.getcwd())")
    assert reply["content"]["status"] == "ok"
    assert text.startswith("remote " + str(agent.state_dir / "leases"))
    assert jupyter.request("GET", "/gpumarket/health")["kernels"] == 1
    jupyter.request("DELETE", f"/api/kernels/{kernel['id']}")
    assert jupyter.request("GET", "/api/kernels") == []


def test_files_pull_on_demand_through_rest_and_cli(jupyter: JupyterServer, tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "notebooks" / "input.txt").write_text("hello")
    kernel = jupyter.request("POST", "/api/kernels", {"name": "gpumarket", "path": ""})
    with connect(jupyter.ws_url(f"/api/kernels/{kernel['id']}/channels")) as ws:
        reply, _ = execute(ws, "open('output.txt', 'w').write(open('input.txt').read().upper())")
    assert reply["content"]["status"] == "ok"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "jupyter_gpumarket.cli",
            "files",
            "pull",
            kernel["id"],
            "--server",
            jupyter.url,
            "--token",
            jupyter.token,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "pulled output.txt" in out.stdout
    assert (tmp_path / "notebooks" / "output.txt").read_text() == "HELLO"
    again = jupyter.request("POST", f"/gpumarket/kernels/{kernel['id']}/pull", {})
    assert again["pulled"] == []  # nothing new the second time
    jupyter.request("DELETE", f"/api/kernels/{kernel['id']}")
