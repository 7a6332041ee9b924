"""POST /gpumarket/api/course/join on a real Jupyter server: authenticated, authorized, and
each bad body answered with a 400 that says what to send."""

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
ROUTE = "/gpumarket/api/course/join"


@pytest.fixture(scope="module")
def jupyter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    tmp = tmp_path_factory.mktemp("course-join")
    path = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH", "")]))
    env = {"PYTHONPATH": path, "GPUMARKET_HOME": str(tmp / "home")}
    server = start_jupyter(tmp, env, "--ServerApp.authorizer_class=denyauth.HeaderDenies")
    yield server
    server.stop()


def _post(server: JupyterServer, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    req = urllib.request.Request(
        f"{server.url}{ROUTE}",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", **headers},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        raw = err.read()
        return err.code, json.loads(raw) if raw.startswith(b"{") else raw


def _auth(server: JupyterServer, **more: str) -> dict[str, str]:
    return {"Authorization": f"token {server.token}", **more}


def test_join_needs_credentials_and_the_authorizer(jupyter: JupyterServer) -> None:
    body = json.dumps({"code": "x"}).encode()
    assert _post(jupyter, body, {})[0] == 403
    assert _post(jupyter, body, _auth(jupyter, **{"X-Test-Deny": "gpumarket"}))[0] == 403


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"not json", "send JSON"),
        (b"[]", "send {"),
        (json.dumps({"code": "x", "wallet": "y"}).encode(), "send {"),
        (json.dumps({"code": 5}).encode(), "strings"),
        (json.dumps({"code": "gpmgrant1.abc"}).encode(), "course code"),
        (json.dumps({"code": "gpmcode1.e30"}).encode(), "damaged"),
        (b'{"code": "' + b"a" * 9000 + b'"}', "too large"),
    ],
)
def test_bad_bodies_are_400_with_what_to_send(jupyter: JupyterServer, body, match) -> None:
    status, answer = _post(jupyter, body, _auth(jupyter))
    assert status == 400, answer
    assert match in answer["message"]
