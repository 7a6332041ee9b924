"""chain.renter_ledger + `gpumarket leases`: the renter's lease list and deposit recovery."""

from __future__ import annotations

import json
import threading

import pytest
from chain_helpers import USD, advance, balance

from jupyter_gpumarket.chain import keystore
from jupyter_gpumarket.chain.leases import LeaseChain
from jupyter_gpumarket.chain.profiles import NetworkProfile, save_profile
from jupyter_gpumarket.chain.renter_ledger import RenterLedger, ledger_path
from jupyter_gpumarket.cli import main
from jupyter_gpumarket.exceptions import ConfigError, PaymentError

CID = bytes(range(32))
PROVIDER = "0x" + "22" * 20
RENTER = "0x" + "11" * 20
REQUIRED = {
    "id",
    "offer_id",
    "provider",
    "channel_id",
    "state",
    "billed_seconds",
    "price_per_hour",
    "spent",
    "refunded",
    "txs",
}


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUMARKET_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def new(ledger: RenterLedger, cid: bytes = CID, **kw):
    return ledger.create(
        provider=PROVIDER,
        channel_id=cid,
        network="devnet",
        renter=RENTER,
        price_per_hour=2**80,  # more than int64: stored as text
        deposit=5 * USD,
        offer_id=3,
        **kw,
    )


def test_lease_lifecycle_is_recorded(home):
    ledger = RenterLedger()
    assert ledger.path == ledger_path() == home / "leases.sqlite3"
    rec = new(ledger, txs=[{"kind": "open", "tx_hash": "0x01", "gas_used": 1}])
    assert rec.state == "open"
    assert ledger.get(rec.id[:6]) == rec  # unique prefix
    assert ledger.get("0x" + CID.hex()).id == rec.id  # channel id
    ledger.update(rec.id, state="running", started_at=100.0)
    ledger.update(rec.id, state="stopped", billed_seconds=61, ended_at=161.0)
    ledger.add_tx(rec.id, {"kind": "settle", "tx_hash": "0x02", "gas_used": 2})
    done = ledger.update(rec.id, state="settled", spent=42, refunded=5 * USD - 42)
    assert RenterLedger().get(rec.id) == done  # persisted
    assert done.price_per_hour == 2**80
    assert [t["kind"] for t in done.txs] == ["open", "settle"]
    assert ledger.needing_recovery() == []
    assert set(done.to_json()) >= REQUIRED


def test_bad_values_and_ids_are_refused(home):
    ledger = RenterLedger()
    rec = new(ledger)
    with pytest.raises(ConfigError, match="no lease 'ffff0000'"):
        ledger.get("ffff0000")
    with pytest.raises(ConfigError, match="lease state must be one of"):
        ledger.update(rec.id, state="lost")
    with pytest.raises(PaymentError, match="spent"):
        ledger.update(rec.id, spent=-1)
    with pytest.raises(ConfigError, match="cannot be updated"):
        ledger.update(rec.id, provider=RENTER)
    with pytest.raises(ConfigError, match="already recorded"):
        new(ledger)  # one lease per channel
    with pytest.raises(ConfigError, match="is not a lease id"):
        ledger.get("%")  # LIKE wildcards are not ids
    assert ledger.get(rec.id).state == "open"


def test_concurrent_tx_appends_are_not_lost(home):
    ledger = RenterLedger()
    rec = new(ledger)

    def append(n: int) -> None:
        for i in range(10):
            RenterLedger().add_tx(rec.id, {"kind": "redeem", "tx_hash": f"0x{n}{i}", "gas_used": 1})

    threads = [threading.Thread(target=append, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ledger.get(rec.id).txs) == 40


def test_cli_lists_leases_as_json_and_text(home, capsys):
    assert main(["leases"]) == 0
    assert "no leases yet" in capsys.readouterr().out
    rec = new(RenterLedger())
    assert main(["leases", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert set(rows[0]) >= REQUIRED
    assert rows[0]["id"] == rec.id
    assert main(["leases"]) == 0
    out = capsys.readouterr().out
    assert rec.id in out
    assert "open" in out


def test_cli_close_recovers_the_deposit_on_anvil(
    home, anvil, contracts, deployment, accounts, monkeypatch, capsys
):
    c, renter, provider = contracts, accounts[1], accounts[2]
    monkeypatch.setattr(keystore, "SCRYPT_N", 2**10)
    monkeypatch.setenv("GPUMARKET_WALLET_PASSWORD", "pw")
    keystore.create_keystore("pw", private_key=renter.key)
    save_profile(
        NetworkProfile(
            name="testchain",
            rpc_url=anvil.rpc_url,
            chain_id=c.w3.eth.chain_id,
            token=deployment.token,
            escrow=deployment.escrow,
            registry=deployment.registry,
            close_delay=deployment.close_delay,
        )
    )
    chain = LeaseChain(c)
    before = balance(c, renter.address)
    opened = chain.open(renter, provider=provider.address, price_per_hour=3600, deposit=USD)
    rec = RenterLedger().create(
        provider=provider.address,
        channel_id=opened.channel_id,
        network="testchain",
        renter=renter.address,
        price_per_hour=3600,
        deposit=USD,
        txs=[t.to_json() for t in opened.txs],
        state="stopped",
    )
    # the provider got one voucher on chain, then vanished
    sig = chain.sign_voucher(opened.session_key, opened.channel_id, 777)
    chain.redeem_highest(provider, opened.channel_id, (777, sig))

    assert main(["leases", "close", rec.id]) == 0
    assert "close requested" in capsys.readouterr().out
    assert RenterLedger().get(rec.id).state == "closing"
    assert main(["leases", "close", rec.id]) == 0  # too early: still closing, nothing sent
    assert "close requested" in capsys.readouterr().out

    advance(c, deployment.close_delay + 1)
    assert main(["leases", "close", rec.id]) == 0
    assert "withdrawn" in capsys.readouterr().out
    done = RenterLedger().get(rec.id)
    assert (done.state, done.spent, done.refunded) == ("withdrawn", 777, USD - 777)
    assert [t["kind"] for t in done.txs] == ["open", "close", "withdraw"]
    assert balance(c, renter.address) == before - 777
    assert main(["leases", "close", rec.id]) == 0
    assert "already withdrawn" in capsys.readouterr().out


def test_cli_close_after_the_provider_settled(
    home, anvil, contracts, deployment, accounts, monkeypatch, capsys
):
    c, renter, provider = contracts, accounts[1], accounts[2]
    monkeypatch.setattr(keystore, "SCRYPT_N", 2**10)
    monkeypatch.setenv("GPUMARKET_WALLET_PASSWORD", "pw")
    keystore.create_keystore("pw", private_key=renter.key)
    profile = NetworkProfile(
        name="testchain",
        rpc_url=anvil.rpc_url,
        chain_id=c.w3.eth.chain_id,
        token=deployment.token,
        escrow=deployment.escrow,
        registry=deployment.registry,
    )
    save_profile(profile)
    chain = LeaseChain(c)
    opened = chain.open(renter, provider=provider.address, price_per_hour=3600, deposit=USD)
    rec = RenterLedger().create(
        provider=provider.address,
        channel_id=opened.channel_id,
        network="testchain",
        renter=renter.address,
        price_per_hour=3600,
        deposit=USD,
    )
    sig = chain.sign_voucher(opened.session_key, opened.channel_id, 50)
    chain.settle_highest(provider, opened.channel_id, (50, sig))
    assert main(["leases", "close", rec.id]) == 0
    assert "settled" in capsys.readouterr().out
    done = RenterLedger().get(rec.id)
    assert (done.state, done.spent, done.refunded, done.txs) == ("settled", 50, USD - 50, [])
