"""The server API drives real paid launches on a devnet: a wallet unlocked through
``POST wallet/unlock`` and a selection stored through ``POST selection`` (the server's
environment has neither a password nor an offer) start a paid kernel for that notebook;
``DELETE leases/{id}`` stops it and reports what it cost; a kernelspec pinned by
``gpumarket kernelspec add`` launches on its pinned offer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from websockets.sync.client import connect

from jupyterproc import JupyterServer, execute, start_jupyter
from marketproc import PASSWORD, Market, running_market

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Market]:
    with running_market(tmp_path_factory.mktemp("apimarket")) as m:
        yield m


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("jupyter-data")


@pytest.fixture(scope="module")
def jupyter(
    market: Market, data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[JupyterServer]:
    env = {
        k: v
        for k, v in market.renter_env.items()
        if k not in ("GPUMARKET_OFFER", "GPUMARKET_WALLET_PASSWORD", "GPUMARKET_BUDGET")
    }
    env.update({"JUPYTER_DATA_DIR": str(data_dir), "GPUMARKET_CONFIRM": "0"})
    saved = {k: os.environ.pop(k) for k in ("GPUMARKET_OFFER", "GPUMARKET_WALLET_PASSWORD")
             if k in os.environ}  # fmt: skip
    try:
        server = start_jupyter(tmp_path_factory.mktemp("apiserver"), env)
    finally:
        os.environ.update(saved)
    yield server
    server.stop()


def _call(server: JupyterServer, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    try:
        return 200, server.request(method, path, body, timeout=180)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def _run_in(server: JupyterServer, kernel_id: str, code: str) -> str:
    with connect(server.ws_url(f"/api/kernels/{kernel_id}/channels"), open_timeout=30) as ws:
        reply, text = execute(ws, code)
    assert reply["content"]["status"] == "ok", reply
    return text


def _lease_of(server: JupyterServer, kernel_offer: int) -> dict[str, Any]:
    leases = server.request("GET", "/gpumarket/api/leases")["leases"]
    running = [x for x in leases if x["state"] in ("open", "running")]
    assert len(running) == 1, leases
    assert running[0]["offer_id"] == kernel_offer
    return running[0]


def test_a_stored_selection_and_an_unlocked_wallet_launch_a_paid_kernel_that_delete_settles(
    market: Market, jupyter: JupyterServer
) -> None:
    offer_id = market.ready["offer_id"]
    status, body = _call(jupyter, "POST", "/gpumarket/api/selection", {"offer": 999})
    assert status == 400
    assert "999" in body["message"]
    status, body = _call(jupyter, "POST", "/gpumarket/api/wallet/unlock", {"password": "nope"})
    assert status == 403
    status, body = _call(jupyter, "POST", "/gpumarket/api/wallet/unlock", {"password": PASSWORD})
    assert status == 200
    assert body["unlocked"] is True
    assert body["balances"]["token"] > 0
    assert body["balances"]["native"] > 0
    assert body["token"]["decimals"] == 6
    status, body = _call(
        jupyter,
        "POST",
        "/gpumarket/api/selection",
        {"path": "work/nb.ipynb", "offer": str(offer_id), "budget": 9_000_000},
    )
    assert status == 200, body
    status, offers = _call(jupyter, "GET", "/gpumarket/api/offers?region=eu")
    assert status == 200, offers
    assert [o["id"] for o in offers["offers"]] == [offer_id]
    assert offers["offers"][0]["usable"]

    notebook = jupyter.log_path.parent / "notebooks" / "work" / "nb.ipynb"
    notebook.parent.mkdir(parents=True, exist_ok=True)
    notebook.write_text(json.dumps(nbformat.v4.new_notebook()))
    session = jupyter.request(
        "POST",
        "/api/sessions",
        {"path": "work/nb.ipynb", "name": "nb.ipynb", "type": "notebook",
         "kernel": {"name": "gpumarket"}},
        timeout=180,
    )  # fmt: skip
    kernel_id = session["kernel"]["id"]
    text = _run_in(
        jupyter,
        kernel_id,
        "import os, time; time.sleep(3); print(os.environ.get('GPUMARKET_WALLET_PASSWORD'))",
    )
    assert text.splitlines()[-1] == "None"  # the unlocked password stays in the server
    lease = _lease_of(jupyter, offer_id)

    status, stopped = _call(jupyter, "DELETE", f"/gpumarket/api/leases/{lease['id']}")
    assert status == 200, stopped
    assert stopped["lease_id"] == lease["id"]
    assert stopped["kernel_id"] == kernel_id
    assert stopped["status"] in ("settled", "stopped"), stopped  # stopped: a slow provider
    if stopped["status"] == "settled":
        assert stopped["message"] is None
        assert "settle" in [tx["kind"] for tx in stopped["txs"]], stopped
    assert stopped["charged"] > 0, stopped
    assert stopped["refund"] == stopped["deposit"] - stopped["charged"]
    assert stopped["deposit"] <= 9_000_000  # the selection's budget bounds the deposit
    assert stopped["txs"], stopped
    assert kernel_id not in [k["id"] for k in jupyter.request("GET", "/api/kernels")]
    status, again = _call(jupyter, "DELETE", f"/gpumarket/api/leases/{lease['id']}")
    assert status == 200
    assert again["kernel_id"] is None


def _cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "JUPYTER_DATA_DIR": str(data_dir)},
        timeout=120,
    )


def test_a_pinned_kernelspec_launches_on_its_offer_and_is_removed(
    market: Market, jupyter: JupyterServer, data_dir: Path
) -> None:
    offer_id = market.ready["offer_id"]
    gm = ("-m", "jupyter_gpumarket.cli", "kernelspec")
    added = _cli(data_dir, *gm, "add", str(offer_id), "--name", "pinned",
                 "--display-name", "Python 3 (pinned offer)", "--budget", "8000000")  # fmt: skip
    assert added.returncode == 0, added.stderr
    listed = _cli(data_dir, "-m", "jupyter", "kernelspec", "list")
    assert "pinned" in listed.stdout, listed
    assert "gpumarket" in listed.stdout, listed
    specs = jupyter.request("GET", "/api/kernelspecs")["kernelspecs"]
    assert specs["pinned"]["spec"]["display_name"] == "Python 3 (pinned offer)"

    jupyter.request("DELETE", "/gpumarket/api/selection")  # no default: only the pin decides
    jupyter.request("POST", "/gpumarket/api/wallet/unlock", {"password": PASSWORD})
    kernel = jupyter.request("POST", "/api/kernels", {"name": "pinned"}, timeout=180)
    try:
        assert _run_in(jupyter, kernel["id"], "print(6 * 7)").splitlines()[-1] == "42"
        lease = _lease_of(jupyter, offer_id)
        assert lease["deposit"] <= 8_000_000
    finally:
        jupyter.request("DELETE", f"/api/kernels/{kernel['id']}", timeout=120)

    refused = _cli(data_dir, *gm, "remove", "python3")
    assert refused.returncode == 1
    assert "not written by" in refused.stderr
    removed = _cli(data_dir, *gm, "remove", "pinned")
    assert removed.returncode == 0, removed.stderr
    assert "pinned" not in _cli(data_dir, "-m", "jupyter", "kernelspec", "list").stdout
