"""The launch routes on a real Jupyter server: each refuses a request without credentials and
one the Authorizer denies (403, the events websocket too), and bad input is a 4xx with a JSON
message, never a 500. The same server (gpumarket kernels culled after 3 s idle) culls a kernel
nobody watches and settles it."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from launchwatch import EventWatch, launch
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from agentproc import AgentProcess
from jupyterproc import JupyterServer, start_jupyter

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent

ROUTES = [
    ("GET", "/gpumarket/api/launches"),
    ("POST", "/gpumarket/api/launches/k1/confirm"),
    ("POST", "/gpumarket/api/launches/k1/cancel"),
    ("GET", "/gpumarket/api/quote?offer=1"),
]


@pytest.fixture(scope="module")
def jupyter(
    tmp_path_factory: pytest.TempPathFactory, agent: AgentProcess
) -> Iterator[JupyterServer]:
    tmp = tmp_path_factory.mktemp("launch-routes")
    path = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH", "")]))
    env = {**agent.env(), "PYTHONPATH": path, "GPUMARKET_HOME": str(tmp / "home")}
    server = start_jupyter(
        tmp,
        env,
        "--ServerApp.authorizer_class=denyauth.HeaderDenies",
        "--GpuMarketExtension.cull_idle_timeout=3",
    )
    yield server
    server.stop()


def _call(
    server: JupyterServer,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"{}",
) -> tuple[int, Any]:
    req = urllib.request.Request(
        f"{server.url}{path}",
        data=body if method == "POST" else None,
        method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        with err:
            text = err.read()
        return err.code, json.loads(text) if text.startswith(b"{") else text


def _auth(server: JupyterServer, **more: str) -> dict[str, str]:
    return {"Authorization": f"token {server.token}", **more}


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_route_refuses_strangers_and_the_denied(
    jupyter: JupyterServer, method: str, path: str
) -> None:
    assert _call(jupyter, method, path)[0] == 403
    denied = _auth(jupyter, **{"X-Test-Deny": "gpumarket"})
    assert _call(jupyter, method, path, denied)[0] == 403


def test_the_events_websocket_refuses_strangers_and_the_denied(jupyter: JupyterServer) -> None:
    url = jupyter.url.replace("http://", "ws://") + "/gpumarket/api/events"
    for headers in ({}, _auth(jupyter, **{"X-Test-Deny": "gpumarket"})):
        with pytest.raises(InvalidStatus) as err:
            connect(url, additional_headers=headers, open_timeout=30).__enter__()
        assert err.value.response.status_code == 403
    with (
        connect(url, additional_headers=_auth(jupyter), open_timeout=30) as ws,
        pytest.raises(TimeoutError),
    ):
        ws.recv(timeout=1)  # no launches: an empty snapshot, then nothing


def test_no_launches_yet(jupyter: JupyterServer) -> None:
    assert _call(jupyter, "GET", "/gpumarket/api/launches", _auth(jupyter)) == (
        200,
        {"launches": []},
    )


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/gpumarket/api/launches/nope/cancel", b"{}", 404),
        ("POST", "/gpumarket/api/launches/nope/confirm", b"{}", 404),
        ("GET", "/gpumarket/api/quote", b"", 400),
        ("GET", "/gpumarket/api/quote?offer=abc", b"", 400),
        ("GET", "/gpumarket/api/quote?offer=1&budget=-5", b"", 400),
        ("GET", "/gpumarket/api/quote?offer=1&budget=x", b"", 400),
        ("GET", "/gpumarket/api/quote?offer=1&initial_hours=0", b"", 400),
        ("GET", "/gpumarket/api/quote?offer=1&network=nowhere", b"", 400),
    ],
)
def test_bad_input_is_a_4xx_with_a_message(
    jupyter: JupyterServer, method: str, path: str, body: bytes, status: int
) -> None:
    code, answer = _call(jupyter, method, path, _auth(jupyter), body)
    assert code == status, answer
    assert isinstance(answer, dict)
    assert answer["message"]


def test_an_idle_kernel_nobody_watches_is_culled_and_settled(jupyter: JupyterServer) -> None:
    server = jupyter
    watch = EventWatch(server)
    try:
        kid = server.request("POST", "/api/kernels", {"name": "gpumarket"})["id"]
        ended = watch.wait(launch(kid, "ended"), timeout=60)
        assert ended["reason"] == "culled"
        culls = watch.of("cull", kid)
        assert culls
        assert all(c["timeout_s"] == 3 for c in culls)
        countdown = [c["cull_in_s"] for c in culls if c["cull_in_s"] is not None]
        assert countdown == sorted(countdown, reverse=True)
        assert countdown[-1] == 0
        deadline = time.monotonic() + 30  # the shutdown finishes after the lease ended
        while server.request("GET", "/api/kernels"):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert "culling the kernel after" in server.log()
    finally:
        watch.close()
