"""The saved state of a paid lease: round trip, encryption, billed time after a pause."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from eth_account import Account

from jupyter_gpumarket.exceptions import ConfigError, WalletError
from jupyter_gpumarket.provisioning import paid_state

from agentproc import environ


def _state(key, **kw) -> paid_state.PaidState:
    base = {
        "kernel_id": "k1",
        "network": "devnet",
        "offer": {"offer_id": 1},
        "channel_id": "0x" + "11" * 32,
        "chain_id": 31337,
        "escrow": "0x" + "22" * 20,
        "deposit": 1000,
        "budget": 5000,
        "auto_top_up": False,
        "record_id": "r1",
        "renter": "0x" + "33" * 20,
        "session_key": paid_state.encrypt_session_key(bytes(key.key), "pw"),
        "signed": 40,
        "billed_seconds": 12.5,
        "billing": True,
        "saved_at": 1000.0,
    }
    return paid_state.PaidState(**{**base, **kw})


def test_round_trip_private_file_and_the_key_only_with_the_password(tmp_path: Path):
    key = Account.create()
    with environ({"JUPYTER_RUNTIME_DIR": str(tmp_path)}):
        paid_state.save(_state(key))
        path = next((tmp_path / "gpumarket-kernels" / "paid").glob("*.json"))
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert bytes(key.key).hex() not in path.read_text()
        back = paid_state.load("k1")
        assert back is not None
        assert paid_state.decrypt_session_key(back, "pw").address == key.address
        with pytest.raises(WalletError, match="GPUMARKET_WALLET_PASSWORD"):
            paid_state.decrypt_session_key(back, "wrong")
        paid_state.forget("k1")
        assert paid_state.load("k1") is None
        paid_state.forget("k1")  # twice is fine


def test_billed_time_runs_on_while_billing_and_not_while_stopped():
    key = Account.create()
    assert _state(key).billed_now(1010.0) == 22.5
    assert _state(key, billing=False).billed_now(1010.0) == 12.5


def test_a_damaged_state_file_says_how_to_get_the_deposit_back(tmp_path: Path):
    with environ({"JUPYTER_RUNTIME_DIR": str(tmp_path)}):
        path = tmp_path / "gpumarket-kernels" / "paid" / "k2.json"
        path.parent.mkdir(parents=True)
        path.write_text("{not json")
        with pytest.raises(ConfigError, match="leases close"):
            paid_state.load("k2")
