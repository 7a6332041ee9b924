"""Network profiles and `gpumarket network add | list | use`."""

from __future__ import annotations

import json

import pytest

from jupyter_gpumarket.chain.profiles import NetworkProfile, active_profile, load_profile
from jupyter_gpumarket.cli import main
from jupyter_gpumarket.exceptions import ConfigError

TOKEN = "0x" + "ab" * 20


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUMARKET_HOME", str(tmp_path))
    monkeypatch.delenv("GPUMARKET_NETWORK", raising=False)
    return tmp_path


def test_add_preset_list_use(home, capsys):
    assert main(["network", "add", "base-sepolia", "--preset", "base-sepolia"]) == 0
    data = json.loads((home / "networks" / "base-sepolia.json").read_text())
    assert data["chain_id"] == 84532
    assert data["contracts"]["escrow"] is None
    assert (
        main(
            [
                "network",
                "add",
                "mine",
                "--rpc-url",
                "http://127.0.0.1:1",
                "--chain-id",
                "5",
                "--token",
                TOKEN,
                "--escrow",
                TOKEN,
                "--registry",
                TOKEN,
                "--no-verify",
            ]
        )
        == 0
    )
    assert main(["network", "use", "base-sepolia"]) == 0
    capsys.readouterr()
    assert main(["network", "list"]) == 0
    out = capsys.readouterr().out
    assert "* base-sepolia" in out
    assert "  mine" in out
    assert active_profile().name == "base-sepolia"
    with pytest.raises(ConfigError, match="no escrow/registry address"):
        active_profile().require_contracts()
    token, escrow, registry = load_profile("mine").require_contracts()
    assert token.lower() == escrow.lower() == registry.lower() == TOKEN


def test_add_without_required_fields_names_them(home, capsys):
    assert main(["network", "add", "x", "--chain-id", "1"]) == 1
    err = capsys.readouterr().err
    assert "--rpc-url" in err
    assert "--token" in err


def test_use_unknown_profile(home, capsys):
    assert main(["network", "use", "nope"]) == 1
    assert "gpumarket network list" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("field", "value"),
    [("name", "Bad Name"), ("rpc_url", "ftp://x"), ("chain_id", 0), ("token", "0x12")],
)
def test_profile_validation_names_the_field(field, value):
    kwargs = {"name": "ok", "rpc_url": "http://x", "chain_id": 1, "token": TOKEN, field: value}
    with pytest.raises(ConfigError, match=field.split("_")[0]):
        NetworkProfile(**kwargs)


def test_round_trip_keeps_unknown_fields():
    p = NetworkProfile(
        name="d", rpc_url="http://x", chain_id=1, token=TOKEN, extra={"chain": "anvil"}
    )
    assert NetworkProfile.from_json(p.to_json()) == p
    assert p.to_json()["chain"] == "anvil"
