"""The REST API under /gpumarket/api/ on a real Jupyter server: every route refuses a request
without credentials and one the Authorizer denies (parametrized over the route table, so a new
route without auth fails here), and bad input answers 400/403/404/502 JSON, never a 500."""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tornado import web

from jupyter_gpumarket.server.api_handlers import api_routes

from jupyterproc import JupyterServer, start_jupyter

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent
PASSWORD = "correct horse"
METHODS = ("get", "post", "put", "delete")


def _route_calls() -> list[tuple[str, str]]:
    """(METHOD, path) of every method of every API route, path groups filled in."""
    out = []
    for pattern, handler in api_routes:
        path = re.sub(r"\(\?P<\w+>[^)]*\)", "abc", pattern)
        for m in METHODS:
            if getattr(handler, m) is not getattr(web.RequestHandler, m):
                out.append((m.upper(), path))
    return out


ROUTE_CALLS = _route_calls()


@pytest.fixture(scope="module")
def jupyter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    from jupyter_gpumarket.chain import keystore

    tmp = tmp_path_factory.mktemp("api")
    home = tmp / "home"
    (home / "networks").mkdir(parents=True)
    offline = {  # a network whose RPC never answers
        "name": "offline",
        "rpc_url": "http://127.0.0.1:9",
        "chain_id": 31337,
        "contracts": {"token": "0x" + "11" * 20, "escrow": "0x" + "22" * 20,
                      "registry": "0x" + "33" * 20},
    }  # fmt: skip
    (home / "networks" / "offline.json").write_text(json.dumps(offline))
    saved = keystore.SCRYPT_N
    keystore.SCRYPT_N = 2**10
    try:
        keystore.create_keystore(PASSWORD, path=home / "wallet.json")
    finally:
        keystore.SCRYPT_N = saved
    path = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH", "")]))
    env = {"PYTHONPATH": path, "GPUMARKET_HOME": str(home), "GPUMARKET_NETWORK": "offline"}
    server = start_jupyter(tmp, env, "--ServerApp.authorizer_class=denyauth.HeaderDenies")
    yield server
    server.stop()


def _call(
    server: JupyterServer,
    method: str,
    path: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    auth: bool = True,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    if data is None and method in ("POST", "PUT"):
        data = b"{}"
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    if auth:
        hdrs["Authorization"] = f"token {server.token}"
    req = urllib.request.Request(f"{server.url}{path}", data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        text = err.read()
        return err.code, json.loads(text) if text.startswith(b"{") else text


def test_the_route_table_is_covered() -> None:
    methods = {m for m, _ in ROUTE_CALLS}
    assert methods == {"GET", "POST", "PUT", "DELETE"}
    assert len(ROUTE_CALLS) >= 12


@pytest.mark.parametrize(("method", "path"), ROUTE_CALLS)
def test_every_api_route_refuses_a_request_without_credentials(
    jupyter: JupyterServer, method: str, path: str
) -> None:
    status, _ = _call(jupyter, method, path, auth=False)
    assert status == 403


@pytest.mark.parametrize(("method", "path"), ROUTE_CALLS)
def test_the_authorizer_decides_on_every_api_route(
    jupyter: JupyterServer, method: str, path: str
) -> None:
    status, _ = _call(jupyter, method, path, headers={"X-Test-Deny": "gpumarket"})
    assert status == 403


@pytest.mark.parametrize(
    "query",
    [
        "min_vram_gib=-1",
        "max_price=cheap",
        "verified=2",
        "policy=random",
        "sort=cheapest",
        "network=..%2Fx",
        "gpu=",
        "region=" + "x" * 3000,
    ],
)
def test_a_bad_offers_query_is_400_json(jupyter: JupyterServer, query: str) -> None:
    status, body = _call(jupyter, "GET", f"/gpumarket/api/offers?{query}")
    assert status == 400, body
    assert isinstance(body["message"], str)
    assert body["message"]


def test_offers_from_an_unreachable_chain_are_502_with_what_to_do(
    jupyter: JupyterServer,
) -> None:
    status, body = _call(jupyter, "GET", "/gpumarket/api/offers?gpu=H100")
    assert status == 502, body
    assert "127.0.0.1:9" in body["message"]
    assert "gpumarket devnet" in body["message"]  # what to do
    status, body = _call(jupyter, "GET", "/gpumarket/api/offers?network=nosuchnet")
    assert status == 400
    assert "gpumarket network list" in body["message"]
    # JupyterLab's cache buster (a bare ?<ms>) is not an unknown parameter: the chain answers
    status, body = _call(jupyter, "GET", "/gpumarket/api/offers?gpu=H100&1764500000000")
    assert status == 502, body


def test_a_selection_is_stored_read_and_deleted(jupyter: JupyterServer) -> None:
    api = "/gpumarket/api/selection"
    status, body = _call(jupyter, "GET", f"{api}?path=work/nb.ipynb")
    assert (status, body) == (200, {"path": "work/nb.ipynb", "selection": None, "default": None})
    sel = {"path": "work/nb.ipynb", "offer": "gpu=H100,verified=1", "budget": 5_000_000}
    status, body = _call(jupyter, "POST", api, sel)
    assert status == 200, body
    assert body["offer"] == "gpu=H100,verified=1"
    assert body["path"] == "work/nb.ipynb"
    status, body = _call(jupyter, "POST", api, {"path": None, "offer": "policy=cheapest"})
    assert status == 200, body
    status, body = _call(jupyter, "GET", f"{api}?path=work/nb.ipynb")
    assert body["selection"]["budget"] == 5_000_000
    assert body["default"]["offer"] == "policy=cheapest"
    status, body = _call(jupyter, "GET", api)
    assert body["path"] is None
    assert body["selection"]["offer"] == "policy=cheapest"
    status, body = _call(jupyter, "DELETE", f"{api}?path=work/nb.ipynb")
    assert (status, body) == (200, {"path": "work/nb.ipynb", "selection": None})
    assert _call(jupyter, "GET", f"{api}?path=work/nb.ipynb")[1]["selection"] is None


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (json.dumps({"offer": "7", "budget": -5}).encode(), "budget"),
        (json.dumps({"offer": "7", "budget": "5"}).encode(), "budget"),
        (json.dumps({"offer": "bogus=1"}).encode(), "not understood"),
        (json.dumps({"offer": "7", "owner": "me"}).encode(), "unknown field"),
        (json.dumps({"offer": "7", "path": "../../x.ipynb"}).encode(), "path"),
        (json.dumps({"offer": "7", "network": "nosuchnet"}).encode(), "nosuchnet"),
        (json.dumps({"offer": "7", "network": "nb.json"}).encode(), "network"),
        (b'{"offer": "' + b"1" * 70_000 + b'"}', "larger than"),
    ],
)
def test_a_bad_selection_is_400_json(jupyter: JupyterServer, raw: bytes, says: str) -> None:
    status, body = _call(jupyter, "POST", "/gpumarket/api/selection", raw=raw)
    assert status == 400, body
    assert says in body["message"]


def test_an_offer_id_on_an_unreachable_chain_is_502(jupyter: JupyterServer) -> None:
    status, body = _call(jupyter, "POST", "/gpumarket/api/selection", {"offer": 7})
    assert status == 502, body
    assert body["message"]


@pytest.mark.parametrize("query", ["path=..%2Fx.ipynb", "path=", "path=a%5Cb"])
def test_a_bad_selection_path_is_400(jupyter: JupyterServer, query: str) -> None:
    for method in ("GET", "DELETE"):
        status, body = _call(jupyter, method, f"/gpumarket/api/selection?{query}")
        assert status == 400, body


def test_config_is_stored_and_checked(jupyter: JupyterServer) -> None:
    api = "/gpumarket/api/config"
    status, body = _call(jupyter, "GET", api)
    assert status == 200
    assert body["cull_idle_timeout_s"] == 1800
    assert body["budget_cap"] is None
    status, body = _call(jupyter, "PUT", api, {"budget_cap": 7_000_000, "verified_only": True})
    assert status == 200, body
    assert _call(jupyter, "GET", api)[1]["budget_cap"] == 7_000_000
    for bad in (
        {"budget_cap": -1},
        {"cull_idle_timeout_s": -5},
        {"policy": "fastest!"},
        {"network": "nosuchnet"},
        {"network": "nb.json"},  # a name, never a file the server would read
        {"colour": "blue"},
    ):
        status, body = _call(jupyter, "PUT", api, bad)
        assert status == 400, (bad, body)
        assert body["message"]
    status, body = _call(jupyter, "PUT", api, raw=b"{,}")
    assert status == 400
    assert "JSON" in body["message"]
    assert _call(jupyter, "GET", api)[1]["budget_cap"] == 7_000_000  # unchanged by the refusals
    _call(jupyter, "PUT", api, {"budget_cap": None, "verified_only": False})


def test_wallet_unlock_checks_the_password_and_lock_forgets_it(
    jupyter: JupyterServer,
) -> None:
    status, body = _call(jupyter, "GET", "/gpumarket/api/wallet")
    assert status == 200
    assert body["address"].startswith("0x")
    assert body["unlocked"] is False
    assert body["balances"] == {"token": None, "native": None}  # the chain is unreachable
    assert body["message"]
    assert not {"key", "private_key", "password"} & set(body)
    status, body = _call(jupyter, "POST", "/gpumarket/api/wallet/unlock", {"password": "wrong"})
    assert status == 403, body
    assert "wrong password" in body["message"]
    assert _call(jupyter, "GET", "/gpumarket/api/wallet")[1]["unlocked"] is False
    status, body = _call(
        jupyter, "POST", "/gpumarket/api/wallet/unlock", {"password": PASSWORD, "timeout_s": 60}
    )
    assert status == 200, body
    assert body["unlocked"] is True
    assert 0 < body["unlock_expires_in_s"] <= 60
    assert PASSWORD not in json.dumps(body)
    status, body = _call(jupyter, "POST", "/gpumarket/api/wallet/lock")
    assert status == 200
    assert body["unlocked"] is False
    assert body["unlock_expires_in_s"] is None


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"password": ""},
        {"password": 5},
        {"password": PASSWORD, "timeout_s": -1},
        {"password": PASSWORD, "timeout_s": "1h"},
        {"password": PASSWORD, "timeout_s": 10**9},
        {"password": PASSWORD, "remember": True},
    ],
)
def test_a_bad_unlock_body_is_400(jupyter: JupyterServer, body: dict[str, Any]) -> None:
    status, reply = _call(jupyter, "POST", "/gpumarket/api/wallet/unlock", body)
    assert status == 400, reply
    assert reply["message"]


def test_leases_answer_like_the_old_route_and_unknown_ids_are_404(
    jupyter: JupyterServer,
) -> None:
    status, new = _call(jupyter, "GET", "/gpumarket/api/leases")
    assert status == 200
    assert new["leases"] == []
    status, old = _call(jupyter, "GET", "/gpumarket/leases")
    assert status == 200
    assert old == new
    assert _call(jupyter, "GET", "/gpumarket/api/leases?all=2")[0] == 400
    for lease in ("abcdef", "0x" + "ab" * 32, "not-hex", "x" * 100):
        status, body = _call(jupyter, "DELETE", f"/gpumarket/api/leases/{lease}")
        assert status == 404, (lease, body)
        assert body["message"]


def test_telemetry_of_an_unknown_kernel_is_404(jupyter: JupyterServer) -> None:
    status, body = _call(jupyter, "GET", "/gpumarket/api/telemetry?kernel_id=nope")
    assert status == 404
    assert "nope" in body["message"]
