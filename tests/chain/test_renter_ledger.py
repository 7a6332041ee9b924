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
from jupyter_gpumarket.core.renter_lease_state import RenterEvent
from jupyter_gpumarket.exceptions import ConfigError, PaymentError, ProtocolError

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
    running = ledger.transition(rec.id, RenterEvent.KERNEL_READY, at=100.0)
    assert (running.state, running.started_at) == ("running", 100.0)
    assert ledger.transition(rec.id, RenterEvent.KERNEL_READY, at=130.0).started_at == 100.0
    assert ledger.progress(rec.id, billed_seconds=30, spent=30, deposit=5 * USD)
    live = ledger.get(rec.id)
    assert (live.billed_seconds, live.spent, live.spent_source) == (30, 30, "estimate")
    assert live.to_json()["deposit_left"] == 5 * USD - 30
    ledger.transition(rec.id, RenterEvent.LEASE_ENDED, at=161.0, billed_seconds=61)
    assert not ledger.progress(rec.id, billed_seconds=99, spent=99)  # over: not written
    assert ledger.get(rec.id).billed_seconds == 61
    ledger.add_tx(rec.id, {"kind": "settle", "tx_hash": "0x02", "gas_used": 2})
    done = ledger.transition(rec.id, RenterEvent.CHAIN_SETTLED, spent=42, refunded=5 * USD - 42)
    assert done.spent_source == "chain"
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
    with pytest.raises(ConfigError, match="only by"):
        ledger.update(rec.id, state="settled")  # a state changes only by a transition
    with pytest.raises(PaymentError, match="spent"):
        ledger.update(rec.id, spent=-1)
    with pytest.raises(ConfigError, match="cannot be updated"):
        ledger.update(rec.id, provider=RENTER)
    with pytest.raises(ConfigError, match="already recorded"):
        new(ledger)  # one lease per channel
    with pytest.raises(ConfigError, match="is not a lease id"):
        ledger.get("%")  # LIKE wildcards are not ids
    assert ledger.get(rec.id).state == "open"
    ledger.transition(rec.id, RenterEvent.CHAIN_SETTLED)
    with pytest.raises(ProtocolError, match="chain_withdrawn is not allowed in state settled"):
        ledger.transition(rec.id, RenterEvent.CHAIN_WITHDRAWN)  # a bug: settled is final
    assert ledger.get(rec.id).state == "settled"


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
    )
    RenterLedger().transition(rec.id, RenterEvent.LEASE_ENDED, at=1.0)
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
    settled = chain.settle_highest(provider, opened.channel_id, (50, sig))
    assert main(["leases", "close", rec.id]) == 0
    assert "settled" in capsys.readouterr().out
    done = RenterLedger().get(rec.id)
    assert (done.state, done.spent, done.refunded) == ("settled", 50, USD - 50)
    assert done.txs == [settled.tx.to_json()]  # the provider's settle, found in the events
