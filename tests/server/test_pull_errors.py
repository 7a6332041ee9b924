"""A pull that fails on the renter's own disk (a directory it may not write) answers a JSON
error that says what to do, never a bare 500: through a real Jupyter server and a real agent."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


def _pull(jupyter: JupyterServer, kernel_id: str) -> tuple[int, Any]:
    try:
        return 200, jupyter.request("POST", f"/gpumarket/kernels/{kernel_id}/pull", {})
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _immutable(path: Path, on: bool) -> None:
    subprocess.run(["chattr", "+i" if on else "-i", str(path)], check=True, capture_output=True)


@pytest.mark.parametrize("where", ["", "sub"])
def test_a_pull_that_cannot_write_locally_says_what_to_do(
    jupyter: JupyterServer, tmp_path: Path, where: str
) -> None:
    if os.geteuid() != 0 or not shutil.which("chattr"):
        pytest.skip("an immutable dir (chattr +i) needs root and chattr")
    local = tmp_path / "notebooks" / where
    local.mkdir(exist_ok=True)
    kernel = jupyter.request("POST", "/api/kernels", {"name": "gpumarket", "path": ""})
    try:
        with connect(jupyter.ws_url(f"/api/kernels/{kernel['id']}/channels")) as ws:
            code = f"import os, time; os.makedirs({where or '.'!r}, exist_ok=True); "
            code += f"open(os.path.join({where!r}, 'out.txt'), 'w').write('x'); time.sleep(1)"
            reply, _ = execute(ws, code)  # past the scan's racy-timestamp window
        assert reply["content"]["status"] == "ok"
        _immutable(local, True)  # EPERM even for root: the pull cannot write there
        try:
            status, body = _pull(jupyter, kernel["id"])
        finally:
            _immutable(local, False)
        assert status != 500, body
        assert 400 <= status < 600, body
        assert "pull" in body["message"], body
        assert "Operation not permitted" in body["message"], body
    finally:
        jupyter.request("DELETE", f"/api/kernels/{kernel['id']}")
