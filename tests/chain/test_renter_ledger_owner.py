"""chain.renter_ledger: each lease records the process that drives it (owner_pid)."""

from __future__ import annotations

import os
import sqlite3

import pytest

from jupyter_gpumarket.chain.renter_ledger import RenterLedger

PROVIDER = "0x" + "22" * 20
RENTER = "0x" + "11" * 20


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUMARKET_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def new(ledger: RenterLedger, cid: bytes, **kw):
    return ledger.create(
        provider=PROVIDER,
        channel_id=cid,
        network="devnet",
        renter=RENTER,
        price_per_hour=3600,
        deposit=10**6,
        **kw,
    )


def test_the_creating_process_owns_the_lease_unless_told(home):
    ledger = RenterLedger()
    mine = new(ledger, bytes(32))
    other = new(ledger, bytes([1]) * 32, owner_pid=12345)
    assert RenterLedger().get(mine.id).owner_pid == os.getpid()
    assert RenterLedger().get(other.id).owner_pid == 12345
    assert RenterLedger().get(other.id).to_json()["owner_pid"] == 12345


def test_a_ledger_from_before_owners_gets_the_column_and_keeps_its_rows(home):
    home.mkdir(parents=True)
    db = sqlite3.connect(home / "leases.sqlite3")
    db.execute(
        """CREATE TABLE leases (
            id TEXT PRIMARY KEY, offer_id INTEGER, provider TEXT NOT NULL, provider_url TEXT,
            network TEXT NOT NULL, renter TEXT NOT NULL, channel_id TEXT NOT NULL UNIQUE,
            state TEXT NOT NULL, created_at REAL NOT NULL, started_at REAL, ended_at REAL,
            billed_seconds INTEGER NOT NULL DEFAULT 0, price_per_hour TEXT NOT NULL,
            deposit TEXT NOT NULL, spent TEXT NOT NULL DEFAULT '0',
            refunded TEXT NOT NULL DEFAULT '0', close_at INTEGER,
            txs TEXT NOT NULL DEFAULT '[]', error TEXT)"""
    )
    db.execute(
        "INSERT INTO leases (id, provider, network, renter, channel_id, state, created_at, "
        "price_per_hour, deposit) VALUES ('old1', ?, 'devnet', ?, ?, 'open', 1.0, '3600', '5')",
        (PROVIDER, RENTER, "0x" + "00" * 32),
    )
    db.commit()
    db.close()
    ledger = RenterLedger()
    (old,) = ledger.list()
    assert (old.id, old.state, old.owner_pid) == ("old1", "open", None)
    fresh = new(ledger, bytes([7]) * 32)
    assert RenterLedger().get(fresh.id).owner_pid == os.getpid()
    assert [r.id for r in RenterLedger().needing_recovery()] == ["old1", fresh.id]
