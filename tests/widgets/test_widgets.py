"""OfferPicker and StatusView with ipywidgets' dummy comm (no kernel, no browser): build the
widget, feed it server answers and events, assert what its children show. The server is
replaced at the one transport seam, ``ServerClient.request``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "core"))

from test_ui_format import OFFERS

from jupyter_gpumarket.exceptions import ConfigError
from jupyter_gpumarket.widgets import OfferPicker, ServerClient, StatusView
from jupyter_gpumarket.widgets.client import find_server

TOKEN = {"symbol": "TUSD", "decimals": 6}
QUOTE = {
    "offer_id": 7,
    "price_per_hour": 2_000_000,
    "deposit": 5_000_000,
    "budget": 10_000_000,
    "seconds_covered": 9000,
    "token": TOKEN,
    "text": "2.00 TUSD/h · deposit 5.00 ≈ 2 h 30 min · budget cap 10.00",
}


class FakeServer(ServerClient):
    def __init__(self, sessions: list[dict[str, Any]] | None = None) -> None:
        super().__init__("http://127.0.0.1:1/", "tok", kernel_id="kid")
        self.calls: list[tuple[str, str, Any, dict[str, Any]]] = []
        self.sessions = sessions or []

    def request(self, method, path, body=None, query=None, timeout=None):  # type: ignore[override]
        q = dict(query or {})
        self.calls.append((method, path, body, q))
        route = path.removeprefix("gpumarket/api/")
        if (method, route) == ("GET", "wallet"):
            return {"address": "0x1", "token": TOKEN}
        if (method, route) == ("GET", "config"):
            return {"network": "devnet", "budget_cap": 20_000_000}
        if (method, route) == ("GET", "offers"):
            return {
                "offers": [o for o in OFFERS if "region" not in q or o["region"] == q["region"]]
            }
        if (method, route) == ("GET", "quote"):
            if q["offer"] == 3:
                raise ConfigError("GET quote -> 502: provider unreachable")
            return QUOTE
        if (method, route) == ("POST", "selection"):
            return {k: v for k, v in body.items() if k != "path"}
        if (method, path) == ("GET", "api/sessions"):
            return self.sessions
        if method == "PATCH":
            return {}
        if (method, route) == ("POST", "launches/k1/cancel"):
            return {
                "kernel_id": "k1",
                "state": "ended",
                "label": "ended",
                "reason": "cancelled",
                "elapsed_s": 3,
                "state_elapsed_s": 0,
                "cancellable": False,
                "message": "cancelled: nothing was paid",
            }
        raise AssertionError(f"unexpected {method} {path}")


def test_picker_filters_quote_confirm_use_and_switch() -> None:
    srv = FakeServer([{"id": "s1", "path": "work/nb.ipynb", "kernel": {"id": "kid"}}])
    p = OfferPicker(srv)
    assert p.path == "work/nb.ipynb"
    assert p.budget.value == 20.0  # the config's budget cap
    assert "gpumarket-unusable" in p.table.value
    assert "unreachable" in p.table.value
    assert [v for _, v in p.offer.options] == [7, 3]  # usable only, ranked
    assert p.offer.value == 7
    assert "2.00 TUSD/h · deposit 5.00" in p.quote_text.value
    assert p.use.disabled
    assert not p.confirm.disabled

    p.region.value = "eu"
    _, _, _, q = [c for c in srv.calls if c[1].endswith("offers")][-1]
    assert q == {"policy": "cheapest", "region": "eu"}
    p.max_price.value = 2.5
    _, _, _, q = [c for c in srv.calls if c[1].endswith("offers")][-1]
    assert q["max_price"] == 2_500_000
    assert [v for _, v in p.offer.options] == [3]
    p.region.value = ""

    p.offer.value = 3  # a quote the server refuses: shown, nothing to confirm
    assert "provider unreachable" in p.quote_text.value
    assert p.confirm.disabled
    p.offer.value = 7
    p.confirm.click()
    assert p.confirmed_quote == QUOTE
    assert not p.use.disabled
    p.hours.value = 2.0  # another horizon: confirm again
    assert p.confirmed_quote is None
    assert p.use.disabled
    p.confirm.click()
    p.use.click()
    posted = next(c[2] for c in srv.calls if c[0] == "POST")
    assert posted == {
        "path": "work/nb.ipynb",
        "offer": "7",
        "network": "devnet",
        "budget": 20_000_000,
        "initial_hours": 2.0,
        "confirmed_quote": QUOTE,
    }
    p.switch_thread.join(5)
    patch = next(c for c in srv.calls if c[0] == "PATCH")
    assert patch[1:3] == ("api/sessions/s1", {"kernel": {"name": "gpumarket"}})
    assert "Python 3 (GPU Market)" in p.message.value


def test_picker_without_session_says_which_kernel_to_pick() -> None:
    srv = FakeServer([])
    p = OfferPicker(srv, region="eu-west")
    p.confirm.click()
    p.use.click()
    assert "Kernel → Change Kernel → Python 3 (GPU Market)" in p.message.value
    assert not any(c[0] == "PATCH" for c in srv.calls)
    with pytest.raises(TypeError, match="unknown filter"):
        OfferPicker(srv, colour="red")


def _ev(kind: str, **kw: Any) -> dict[str, Any]:
    return {"type": kind, "kernel_id": "k1", "t": 0.0, **kw}


def test_status_view_follows_launch_spend_cull_and_telemetry() -> None:
    srv = FakeServer()
    v = StatusView(srv, notebook="nb.ipynb")
    v.apply(
        _ev(
            "launch",
            state="connecting",
            label="connecting",
            elapsed_s=2,
            state_elapsed_s=0,
            cancellable=True,
            notebook="/srv/root/other-nb.ipynb",
        )
    )
    assert v.kernel_id is None  # another notebook's launch
    v.apply(
        _ev(
            "launch",
            state="opening_channel",
            label="opening channel (wallet signs)",
            elapsed_s=1,
            state_elapsed_s=0,
            cancellable=True,
            notebook="/srv/root/nb.ipynb",  # JPY_SESSION_NAME: absolute
        )
    )
    assert v.kernel_id == "k1"
    assert "● opening channel (wallet signs)" in v.stepper.value
    assert v.cancel.layout.display == ""
    assert not v.cancel.disabled
    v.apply(
        _ev(
            "spend",
            rate_per_hour=1_840_000,
            spent=500_000,
            deposit=5_000_000,
            deposit_left=4_500_000,
            budget=10_000_000,
            seconds_left=8800,
            token=TOKEN,
        )
    )
    assert "1.84 TUSD/h" in v.spend.value
    assert "2 h 26 min" in v.spend.value
    assert v.budget_bar.value == pytest.approx(0.05)
    v.apply(_ev("cull", idle_s=60, cull_in_s=1740))
    assert "29 min" in v.cull.value
    for i in range(3):
        v.apply(
            _ev(
                "telemetry",
                sample={
                    "t": i,
                    "cpu_pct": 5,
                    "ram_mib": 100,
                    "gpus": [
                        {
                            "index": 0,
                            "util_pct": 50 * i,
                            "mem_used_mib": 1000,
                            "mem_total_mib": 8000,
                            "temp_c": 60,
                            "power_w": 200.5,
                        }
                    ],
                },
            )
        )
    assert v.telemetry.value.count("<svg") == 4
    assert "100 %" in v.telemetry.value
    v.apply({**_ev("spend", spent=1), "kernel_id": "k2"})  # another kernel: ignored
    assert "1.84 TUSD/h" in v.spend.value
    v.cancel.click()
    assert srv.calls[-1][:2] == ("POST", "gpumarket/api/launches/k1/cancel")
    assert v.cancel.layout.display == "none"
    assert "nothing was paid" in v.message.value


def test_status_view_inside_the_remote_kernel_reads_the_telemetry_file(tmp_path: Path) -> None:
    sample = {
        "t": 1.0,
        "cpu_pct": 97.5,
        "ram_mib": 2048,
        "billed_seconds": 311,
        "spend": 86389,
        "gpus": [],
    }
    f = tmp_path / "telemetry.json"
    f.write_text(json.dumps(sample))
    from jupyter_gpumarket.widgets.feed import TelemetryFileFeed

    v = StatusView(remote=True)
    got: list[dict[str, Any]] = []
    feed = TelemetryFileFeed(lambda e: (got.append(e), v.apply(e)), every_s=0.05, path=str(f))
    feed.start()
    try:
        feed._thread.join(0.5)
    finally:
        feed.stop()
    assert got
    assert got[0]["sample"]["spend"] == 86389
    assert "CPU only" in v.telemetry.value
    assert "billed 5 min 11 s" in v.telemetry.value


def test_find_server_matches_this_kernel_and_says_what_to_do() -> None:
    with pytest.raises(ConfigError, match="no running Jupyter server owns kernel abc"):
        find_server("abc", servers=lambda: [{"url": "http://127.0.0.1:9/", "token": "t"}])
    with pytest.raises(ConfigError, match="0 server"):
        find_server("abc", servers=lambda: [])


def test_importing_the_package_imports_no_widgets_or_web3() -> None:
    import subprocess

    code = (
        "import sys, jupyter_gpumarket as j\n"
        "assert callable(j.pick) and callable(j.status)\n"
        "print(sorted(m for m in ('ipywidgets', 'web3') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
