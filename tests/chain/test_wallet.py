"""Wallet keystore and the `gpumarket wallet` commands (in process, on the session anvil)."""

from __future__ import annotations

import json
import stat

import pytest

from jupyter_gpumarket.chain import keystore
from jupyter_gpumarket.chain.profiles import NetworkProfile, save_profile
from jupyter_gpumarket.cli import main
from jupyter_gpumarket.exceptions import KeystoreCorrupt, WalletError, WrongPassword

KEY = "0x" + "42" * 32


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUMARKET_HOME", str(tmp_path))
    monkeypatch.setenv("GPUMARKET_WALLET_PASSWORD", "correct horse")
    monkeypatch.delenv("GPUMARKET_NETWORK", raising=False)
    monkeypatch.setattr(keystore, "SCRYPT_N", 2**10)  # fast tests; users get 2**18
    return tmp_path


def test_create_show_and_unlock(home, capsys):
    assert main(["wallet", "create"]) == 0
    path = home / "wallet.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text())
    assert data["crypto"]["kdf"] == "scrypt"
    address = keystore.keystore_address()
    assert main(["wallet", "show"]) == 0
    assert address in capsys.readouterr().out
    assert keystore.load_account("correct horse").address == address


def test_import_key_file_and_refuse_overwrite(home, tmp_path, capsys):
    key_file = tmp_path / "key.txt"
    key_file.write_text(KEY + "\n")
    assert main(["wallet", "import", "--key-file", str(key_file)]) == 0
    before = (home / "wallet.json").read_bytes()
    assert main(["wallet", "create"]) == 1
    assert "a wallet already exists" in capsys.readouterr().err
    assert (home / "wallet.json").read_bytes() == before
    assert keystore.load_account("correct horse").key.hex().removeprefix("0x") == "42" * 32


def test_wrong_password_is_a_clear_error(home, capsys, monkeypatch):
    keystore.create_keystore("correct horse", private_key=KEY)
    with pytest.raises(WrongPassword, match="wrong password"):
        keystore.load_account("battery staple")
    before = (home / "wallet.json").read_bytes()
    monkeypatch.setenv("GPUMARKET_WALLET_PASSWORD", "battery staple")
    assert main(["wallet", "show", "--verify"]) == 1
    err = capsys.readouterr().err
    assert "wrong password" in err
    assert "Traceback" not in err
    assert (home / "wallet.json").read_bytes() == before
    monkeypatch.setenv("GPUMARKET_WALLET_PASSWORD", "correct horse")
    assert main(["wallet", "show", "--verify"]) == 0
    assert "password ok" in capsys.readouterr().out


@pytest.mark.parametrize("content", ["{not json", '{"address": "zz"}', "[]"])
def test_corrupted_keystore_is_a_clear_error(home, capsys, content):
    (home / "wallet.json").write_text(content)
    with pytest.raises(KeystoreCorrupt):
        keystore.load_account("correct horse")
    assert main(["wallet", "show"]) == 1
    err = capsys.readouterr().err
    assert "gpumarket: error:" in err
    assert "Traceback" not in err
    assert (home / "wallet.json").read_text() == content


def test_missing_wallet_says_how_to_create_one(home):
    with pytest.raises(WalletError, match="gpumarket wallet create"):
        keystore.keystore_address()


def test_bad_private_key(home):
    with pytest.raises(WalletError, match="not a valid private key"):
        keystore.create_keystore("pw", private_key="0x1234")


def test_fund_and_balance_on_devnet(home, capsys, anvil, deployment):
    save_profile(
        NetworkProfile(
            name="devnet",
            rpc_url=anvil.rpc_url,
            chain_id=31337,
            token=deployment.token,
            escrow=deployment.escrow,
            registry=deployment.registry,
            close_delay=600,
            devnet=True,
        )
    )
    keystore.create_keystore("correct horse")  # a fresh key: no gas, no tokens
    assert main(["wallet", "fund", "--amount", "12.5"]) == 0
    assert "12.50 TUSD" in capsys.readouterr().out
    assert main(["wallet", "balance"]) == 0
    out = capsys.readouterr().out
    assert "12.50 TUSD" in out
    assert "1.00 ETH" in out


def test_fund_refuses_non_devnet_and_dead_rpc_is_clear(home, capsys, deployment):
    save_profile(
        NetworkProfile(
            name="real", rpc_url="http://127.0.0.1:9", chain_id=8453, token=deployment.token
        )
    )
    keystore.create_keystore("correct horse")
    assert main(["wallet", "fund", "--network", "real"]) == 1
    assert "not a devnet" in capsys.readouterr().err
    assert main(["wallet", "balance", "--network", "real"]) == 1
    err = capsys.readouterr().err
    assert "does not answer" in err
    assert "Traceback" not in err
