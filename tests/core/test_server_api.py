"""The server API's input checks (core.server_api): what a handler answers 400 for."""

from __future__ import annotations

from typing import Any

import pytest

from jupyter_gpumarket.core.market_offer import Policy
from jupyter_gpumarket.core.server_api import (
    CONFIG_DEFAULTS,
    check_notebook_path,
    merge_config,
    parse_offers_query,
    parse_selection,
)
from jupyter_gpumarket.core.verification import Level
from jupyter_gpumarket.exceptions import ConfigError


def test_an_offers_query_maps_to_the_cli_constraints() -> None:
    query, network = parse_offers_query(
        {
            "gpu": "H100",
            "min_vram_gib": "40",
            "max_price": "2500000",
            "region": "eu",
            "verified": "1",
            "policy": "value",
        }
    )
    c = query.constraints
    assert (c.gpu, c.min_vram_mib, c.max_price, c.region) == ("H100", 40 * 1024, 2500000, "eu")
    assert c.min_level is Level.DETECTED
    assert query.policy is Policy.VALUE
    assert network is None
    empty, _ = parse_offers_query({})
    assert empty.policy is Policy.CHEAPEST
    assert empty.constraints.min_level is Level.SELF_REPORTED


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ({"min_vram_gib": "-1"}, "min_vram_gib"),
        ({"min_vram_gib": "nan"}, "min_vram_gib"),
        ({"min_vram_gib": "lots"}, "min_vram_gib"),
        ({"max_price": "-5"}, "max_price"),
        ({"max_price": "1e9"}, "max_price"),
        ({"max_price": "9" * 79}, "max_price"),
        ({"verified": "yes"}, "verified"),
        ({"policy": "random"}, "policy"),
        ({"gpu": ""}, "gpu"),
        ({"region": "x" * 65}, "region"),
        ({"region": "eu\x00"}, "region"),
        ({"sort": "cheapest"}, "unknown query parameter"),
        ({"network": "../../etc/passwd"}, "network"),
        ({"network": "x.json"}, "network"),
    ],
)
def test_a_bad_offers_query_names_the_parameter(args: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        parse_offers_query(args)


def test_a_selection_is_normalized() -> None:
    path, sel = parse_selection(
        {"path": "/work/nb.ipynb", "offer": 7, "budget": 5, "initial_hours": 2}
    )
    assert path == "work/nb.ipynb"
    assert sel == {
        "offer": "7",
        "network": None,
        "budget": 5,
        "initial_hours": 2.0,
        "confirmed_quote": None,
    }
    path, sel = parse_selection({"path": None, "offer": " gpu=H100,verified=1 "})
    assert path is None
    assert sel["offer"] == "gpu=H100,verified=1"


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ([], "JSON object"),
        ({}, "offer is required"),
        ({"offer": None}, "offer is required"),
        ({"offer": "x=1"}, "not understood"),
        ({"offer": "0"}, "start at 1"),
        ({"offer": "7", "budget": -1}, "budget"),
        ({"offer": "7", "budget": 0}, "budget"),
        ({"offer": "7", "budget": 1.5}, "budget"),
        ({"offer": "7", "budget": True}, "budget"),
        ({"offer": "7", "budget": "100"}, "budget"),
        ({"offer": "7", "budget": 2**256}, "budget"),
        ({"offer": "7", "initial_hours": 0}, "initial_hours"),
        ({"offer": "7", "initial_hours": -2}, "initial_hours"),
        ({"offer": "7", "initial_hours": "1"}, "initial_hours"),
        ({"offer": "7", "network": "Dev Net"}, "network"),
        ({"offer": "7", "network": "/tmp/x.json"}, "network"),
        ({"offer": "7", "network": "notebook.json"}, "network"),
        ({"offer": "7", "network": ".."}, "network"),
        ({"offer": "7", "network": ".hidden"}, "network"),
        ({"offer": "7", "confirmed_quote": "yes"}, "confirmed_quote"),
        ({"offer": "7", "confirmed_quote": {"t": "x" * 5000}}, "confirmed_quote"),
        ({"offer": "7", "wallet": "/tmp/w.json"}, "wallet must be"),
        ({"offer": "7", "wallet": "browser"}, "wallet_address"),
        ({"offer": "7", "wallet": "browser", "wallet_address": "0x12"}, "wallet_address"),
        ({"offer": "7", "wallet_address": "0x" + "ab" * 20}, "wallet_address goes with"),
        ({"offer": "7", "path": "../outside.ipynb"}, "path"),
        ({"offer": "7", "path": "a/./b.ipynb"}, "path"),
        ({"offer": "7", "path": "a\\b.ipynb"}, "path"),
        ({"offer": "7", "path": "nb\n.ipynb"}, "path"),
        ({"offer": "7", "path": "x" * 1025}, "path"),
        ({"offer": "7", "path": ""}, "path"),
        ({"offer": "7", "path": 3}, "path"),
    ],
)
def test_a_bad_selection_names_the_field(body: Any, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        parse_selection(body)


@pytest.mark.parametrize("path", ["/", "//", "a//b", "..", "a/..", "./a"])
def test_notebook_paths_never_leave_the_root(path: str) -> None:
    with pytest.raises(ConfigError):
        check_notebook_path(path)


def test_config_merges_checked_fields() -> None:
    out = merge_config(CONFIG_DEFAULTS, {"budget_cap": 5, "policy": "FASTEST", "auto_topup": True})
    assert out == {**CONFIG_DEFAULTS, "budget_cap": 5, "policy": "fastest", "auto_topup": True}
    assert merge_config(out, {"budget_cap": None, "network": ""})["budget_cap"] is None
    assert merge_config(out, {"cull_idle_timeout_s": 0})["cull_idle_timeout_s"] == 0


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("x", "JSON object"),
        ({"budget_cap": -1}, "budget_cap"),
        ({"budget_cap": 0}, "budget_cap"),
        ({"auto_topup": 1}, "auto_topup"),
        ({"verified_only": "true"}, "verified_only"),
        ({"policy": "random"}, "policy"),
        ({"network": "a b"}, "network"),
        ({"cull_idle_timeout_s": -1}, "cull_idle_timeout_s"),
        ({"cull_idle_timeout_s": 1.5}, "cull_idle_timeout_s"),
        ({"cull_idle_timeout_s": 10**9}, "cull_idle_timeout_s"),
        ({"budget": 5}, "unknown field"),
    ],
)
def test_a_bad_config_names_the_field(body: Any, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        merge_config(CONFIG_DEFAULTS, body)


def test_a_browser_wallet_selection_is_kept_and_reaches_the_launch() -> None:
    from jupyter_gpumarket.provisioning.selection_store import _as_settings

    address = "0x" + "Ab" * 20
    _path, sel = parse_selection(
        {"path": None, "offer": "7", "wallet": "browser", "wallet_address": address}
    )
    assert (sel["wallet"], sel["wallet_address"]) == ("browser", address)
    _path, plain = parse_selection({"path": None, "offer": "7", "wallet": "keystore"})
    assert "wallet" not in plain  # the keystore is the default: stored as before
    settings = _as_settings(sel, {})
    assert settings["GPUMARKET_WALLET_MODE"] == "browser"
    assert settings["GPUMARKET_BROWSER_ADDRESS"] == address
