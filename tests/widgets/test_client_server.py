"""The widgets' server client against a real Jupyter server: from inside a notebook's kernel it
finds its server through the runtime info and its notebook through the sessions API."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect

from jupyterproc import JupyterServer, execute, start_jupyter

FIND = """
from jupyter_gpumarket.widgets.client import find_server
c = find_server()
print(json.dumps({"url": c.url, "kernel": c.kernel_id, "path": c.notebook_path()}))
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[JupyterServer]:
    srv = start_jupyter(tmp_path, {"PYTHONPATH": os.environ.get("PYTHONPATH", "")})
    try:
        yield srv
    finally:
        srv.stop()


@pytest.mark.slow
def test_kernel_finds_its_server_and_notebook(server: JupyterServer) -> None:
    session = server.request(
        "POST",
        "/api/sessions",
        {"path": "work/a.ipynb", "type": "notebook", "name": "a", "kernel": {"name": "python3"}},
    )
    kid = session["kernel"]["id"]
    with connect(server.ws_url(f"/api/kernels/{kid}/channels")) as ws:
        reply, out = execute(ws, "import json\n" + FIND)
    assert reply["content"]["status"] == "ok", reply["content"]
    found = json.loads(out.strip().splitlines()[-1])
    assert found == {"url": server.url + "/", "kernel": kid, "path": "work/a.ipynb"}
