"""GET /gpumarket/leases shows the active network's leases; ?all=1 every network's."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest

from jupyterproc import start_jupyter

pytestmark = pytest.mark.slow

ESCROW = "0x" + "ee" * 20


def test_leases_of_other_networks_only_with_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jupyter_gpumarket.chain.profiles import NetworkProfile, save_profile
    from jupyter_gpumarket.chain.renter_ledger import NetworkKey, RenterLedger

    home = tmp_path / "home"
    monkeypatch.setenv("GPUMARKET_HOME", str(home))
    profile = save_profile(
        NetworkProfile(
            name="here",
            rpc_url="http://127.0.0.1:9",  # nothing listens: the list is still served
            chain_id=31337,
            token="0x" + "aa" * 20,
            escrow=ESCROW,
            registry="0x" + "bb" * 20,
        )
    )
    ledger = RenterLedger()
    ids = {}
    for n, (name, key) in enumerate(
        [
            ("here", NetworkKey(31337, ESCROW)),
            ("old devnet", NetworkKey(31337, "0x" + "dd" * 20)),
            ("unknown", None),
        ]
    ):
        ids[name] = ledger.create(
            provider="0x" + "22" * 20,
            channel_id=bytes([n + 1]) * 32,
            network="here",
            renter="0x" + "11" * 20,
            price_per_hour=3600,
            deposit=10**6,
            network_key=key,
            owner_pid=1,  # alive (init): in use, so the server's recovery leaves it alone
        ).id
    env = {"GPUMARKET_HOME": str(home), "GPUMARKET_NETWORK": str(profile)}
    server = start_jupyter(tmp_path, env, "--GpuMarketExtension.auto_recover=False")
    try:
        active = server.request("GET", "/gpumarket/leases")["leases"]
        every = server.request("GET", "/gpumarket/leases?all=1")["leases"]
        with pytest.raises(urllib.error.HTTPError) as bad:
            server.request("GET", "/gpumarket/leases?all=yes")
        bad.value.close()  # the error holds the response: its socket stays open until closed
    finally:
        assert server.stop() == 0
    assert [r["id"] for r in active] == [ids["here"]]
    assert {r["id"]: r["network_label"] for r in every} == {
        ids["here"]: f"chain 31337 escrow {ESCROW}",
        ids["old devnet"]: f"chain 31337 escrow 0x{'dd' * 20}",
        ids["unknown"]: "unknown network",
    }
    assert bad.value.code == 400
    assert all(r["spent_source"] == "estimate" for r in every)
