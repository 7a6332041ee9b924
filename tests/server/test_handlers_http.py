"""The extension's HTTP handlers on a real Jupyter server: the server's Authorizer applies to
each (403 when it denies the ``gpumarket`` resource), and each 4xx path answers as documented."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jupyterproc import JupyterServer, start_jupyter

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent

ROUTES = [
    ("GET", "/gpumarket/health"),
    ("GET", "/gpumarket/leases"),
    ("POST", "/gpumarket/kernels/nope/pull"),
]


@pytest.fixture(scope="module")
def jupyter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    tmp = tmp_path_factory.mktemp("handlers")
    path = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH", "")]))
    env = {"PYTHONPATH": path, "GPUMARKET_HOME": str(tmp / "home")}
    server = start_jupyter(tmp, env, "--ServerApp.authorizer_class=denyauth.HeaderDenies")
    yield server
    server.stop()


def _call(
    server: JupyterServer, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    req = urllib.request.Request(
        f"{server.url}{path}",
        data=b"{}" if method == "POST" else None,
        method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        body = err.read()
        return err.code, json.loads(body) if body.startswith(b"{") else body


def _auth(server: JupyterServer, **more: str) -> dict[str, str]:
    return {"Authorization": f"token {server.token}", **more}


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_the_authorizer_decides_on_every_handler(
    jupyter: JupyterServer, method: str, path: str
) -> None:
    status, _ = _call(jupyter, method, path, _auth(jupyter, **{"X-Test-Deny": "gpumarket"}))
    assert status == 403
    # the denial is for this resource only: the server's own API still answers
    status, _ = _call(jupyter, "GET", "/api/status", _auth(jupyter, **{"X-Test-Deny": "gpumarket"}))
    assert status == 200


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_handler_refuses_a_request_without_credentials(
    jupyter: JupyterServer, method: str, path: str
) -> None:
    status, _ = _call(jupyter, method, path)
    assert status == 403


def test_health_answers_when_allowed(jupyter: JupyterServer) -> None:
    status, body = _call(jupyter, "GET", "/gpumarket/health", _auth(jupyter))
    assert status == 200
    assert set(body) == {"version", "kernels"}


def test_pull_of_an_unknown_kernel_is_404(jupyter: JupyterServer) -> None:
    status, body = _call(jupyter, "POST", "/gpumarket/kernels/nope/pull", _auth(jupyter))
    assert status == 404
    assert "no kernel nope" in body["message"]


def test_pull_of_a_local_kernel_is_400(jupyter: JupyterServer) -> None:
    kernel = jupyter.request("POST", "/api/kernels", {"name": "python3"})
    try:
        status, body = _call(
            jupyter, "POST", f"/gpumarket/kernels/{kernel['id']}/pull", _auth(jupyter)
        )
        assert status == 400
        assert "not a gpumarket kernel" in body["message"]
    finally:
        jupyter.request("DELETE", f"/api/kernels/{kernel['id']}")


def test_a_kernel_id_outside_the_pattern_is_404(jupyter: JupyterServer) -> None:
    status, _ = _call(jupyter, "POST", "/gpumarket/kernels/..%2Fx/pull", _auth(jupyter))
    assert status == 404
