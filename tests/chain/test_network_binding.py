"""A profile's escrow must hold the profile's token, and its contracts must have code.

Before: ``gpumarket network add`` saved any token next to any escrow, and every command bound
them as given, so a renter signed permits and OpenChannel messages for a token the Escrow
refuses, or read balances of a token the leases are not paid in."""

from __future__ import annotations

import json

import pytest

from jupyter_gpumarket.chain.client import deploy
from jupyter_gpumarket.chain.recovery import lease_chain
from jupyter_gpumarket.cli import main
from jupyter_gpumarket.exceptions import ConfigError

STRANGER = "0x" + "5a" * 20


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUMARKET_HOME", str(tmp_path))
    monkeypatch.delenv("GPUMARKET_NETWORK", raising=False)
    return tmp_path


def _add(c, name: str, token: str, escrow: str, registry: str, *extra: str) -> int:
    url = c.w3.provider.endpoint_uri
    chain_id = str(c.w3.eth.chain_id)
    return main(
        [
            "network",
            "add",
            name,
            "--rpc-url",
            url,
            "--chain-id",
            chain_id,
            "--token",
            token,
            "--escrow",
            escrow,
            "--registry",
            registry,
            *extra,
        ]
    )


def test_the_deployment_s_own_token_is_saved(any_chain, home):
    c = any_chain
    assert _add(c, "good", c.token.address, c.escrow.address, c.registry.address) == 0
    data = json.loads((home / "networks" / "good.json").read_text())
    assert data["contracts"]["token"] == c.token.address
    lease_chain("good")  # binds without complaint


def test_another_token_is_refused_naming_both(any_chain, accounts, home, capsys):
    c = any_chain
    other = deploy(c.w3, accounts[0], "TestUSD")
    assert _add(c, "bad", other, c.escrow.address, c.registry.address) == 1
    err = capsys.readouterr().err
    assert other in err
    assert c.token.address in err
    assert not (home / "networks" / "bad.json").exists()
    # saved unchecked, the profile is refused where its contracts are bound
    assert _add(c, "bad", other, c.escrow.address, c.registry.address, "--no-verify") == 0
    with pytest.raises(ConfigError, match=c.token.address):
        lease_chain("bad")


@pytest.mark.parametrize("which", ["escrow", "registry"])
def test_an_address_without_code_is_refused(any_chain, home, capsys, which):
    c = any_chain
    addrs = {"escrow": c.escrow.address, "registry": c.registry.address, which: STRANGER}
    assert _add(c, "empty", c.token.address, addrs["escrow"], addrs["registry"]) == 1
    err = capsys.readouterr().err
    assert "no code" in err
    assert which in err
