"""chain.renter_ledger: atomic state transitions under concurrent writers, networks per lease,
and the records reconciled with the chain (`gpumarket leases` on anvil)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from chain_helpers import USD

from jupyter_gpumarket.chain.leases import LeaseChain
from jupyter_gpumarket.chain.profiles import NetworkProfile, save_profile
from jupyter_gpumarket.chain.renter_ledger import LeaseRecord, NetworkKey, RenterLedger
from jupyter_gpumarket.cli import main
from jupyter_gpumarket.core.renter_lease_state import RenterEvent
from jupyter_gpumarket.exceptions import LeaseStateChanged

PROVIDER = "0x" + "22" * 20
RENTER = "0x" + "11" * 20
ESCROW = "0x" + "ee" * 20
HERE = NetworkKey(31337, ESCROW)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GPUMARKET_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def new(ledger: RenterLedger, n: int, key: NetworkKey | None = HERE, **kw: object) -> LeaseRecord:
    return ledger.create(
        provider=PROVIDER,
        channel_id=n.to_bytes(32, "big"),
        network="devnet",
        renter=RENTER,
        price_per_hour=3600,
        deposit=USD,
        network_key=key,
        **kw,  # type: ignore[arg-type]
    )


def test_two_writers_that_saw_the_same_state_cannot_both_move_it(home: Path) -> None:
    """Each writer (its own connection, its own thread) read the lease as stopped; one
    requests the close while the other records the provider's settle: exactly one wins, the
    other is told, and the row says what the winner wrote."""
    ledger = RenterLedger()
    for n in range(20):
        lease = ledger.transition(new(ledger, n + 1), RenterEvent.LEASE_ENDED, at=1.0)
        seen = {"close": RenterLedger().get(lease.id), "settle": RenterLedger().get(lease.id)}
        barrier = threading.Barrier(2)
        outcome: dict[str, str] = {}
        errors: list[str] = []

        def write(
            who: str,
            seen: dict[str, LeaseRecord] = seen,
            barrier: threading.Barrier = barrier,
            outcome: dict[str, str] = outcome,
            errors: list[str] = errors,
        ) -> None:
            own = RenterLedger()  # a connection per call, per thread
            barrier.wait()
            try:
                if who == "close":
                    own.transition(seen[who], RenterEvent.CLOSE_REQUESTED, close_at=99)
                else:
                    own.transition(seen[who], RenterEvent.CHAIN_SETTLED, spent=7, refunded=USD - 7)
                outcome[who] = "won"
            except LeaseStateChanged as exc:
                errors.append(str(exc))
                outcome[who] = "lost"

        threads = [threading.Thread(target=write, args=(w,)) for w in ("close", "settle")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(outcome.values()) == ["lost", "won"], outcome
        (error,) = errors
        assert f"lease {lease.id} is " in error
        assert "no longer stopped" in error
        winner = next(w for w, o in outcome.items() if o == "won")
        row = ledger.get(lease.id)
        if winner == "close":
            assert (row.state, row.close_at, row.spent) == ("closing", 99, 0)
        else:
            assert (row.state, row.close_at, row.spent) == ("settled", None, 7)


_RACER = """
import sys, time
from pathlib import Path
from jupyter_gpumarket.chain.renter_ledger import RenterLedger
from jupyter_gpumarket.core.renter_lease_state import RenterEvent
from jupyter_gpumarket.exceptions import LeaseStateChanged

event, go = RenterEvent(sys.argv[1]), Path(sys.argv[2])
ledger = RenterLedger()
seen = ledger.list()  # every lease as stopped, read before the race
print("ready", flush=True)
while not go.exists():
    time.sleep(0.001)
for record in seen:
    try:
        ledger.transition(record, event, spent=5, refunded=5)
        print("won", record.id, flush=True)
    except LeaseStateChanged:
        print("lost", record.id, flush=True)
"""


def test_two_processes_racing_on_every_lease_each_lease_has_one_winner(
    home: Path, tmp_path: Path
) -> None:
    ledger = RenterLedger()
    ids = [
        ledger.transition(new(ledger, n + 1), RenterEvent.LEASE_ENDED, at=1.0).id for n in range(40)
    ]
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = {
        event: subprocess.Popen(
            [sys.executable, "-c", _RACER, event, str(go)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for event in ("chain_settled", "chain_withdrawn")
    }
    for proc in procs.values():
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
    go.touch()
    wins: dict[str, set[str]] = {}
    for event, proc in procs.items():
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        lines = [line.split() for line in out.splitlines()]
        assert len(lines) == len(ids)
        wins[event] = {lease for verdict, lease in lines if verdict == "won"}
    assert wins["chain_settled"] | wins["chain_withdrawn"] == set(ids)
    assert not wins["chain_settled"] & wins["chain_withdrawn"]  # never both
    for lease_id in ids:
        expected = "settled" if lease_id in wins["chain_settled"] else "withdrawn"
        assert ledger.get(lease_id).state == expected


def test_live_progress_is_one_statement_and_stops_with_the_lease(home: Path) -> None:
    ledger = RenterLedger()
    lease = new(ledger, 1)
    assert ledger.progress(lease.id, billed_seconds=3, spent=3)  # open: billing may start
    ledger.transition(lease.id, RenterEvent.KERNEL_READY, at=time.time())
    assert ledger.progress(lease.id, billed_seconds=9, spent=9, deposit=2 * USD)
    row = ledger.get(lease.id).to_json()
    assert (row["billed_seconds"], row["spent"], row["deposit_left"]) == (9, 9, 2 * USD - 9)
    assert row["spent_source"] == "estimate"
    assert row["started_at"] is not None
    ledger.transition(lease.id, RenterEvent.CHAIN_SETTLED, spent=8, refunded=2 * USD - 8)
    assert not ledger.progress(lease.id, billed_seconds=12, spent=12)  # the chain's stand
    assert ledger.get(lease.id).spent == 8


def _refusing_profile(name: str, escrow: str) -> NetworkProfile:
    return NetworkProfile(
        name=name,
        rpc_url="http://127.0.0.1:9",  # nothing listens: the lease list still works
        chain_id=31337,
        token="0x" + "aa" * 20,
        escrow=escrow,
        registry="0x" + "bb" * 20,
    )


def _listed(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, object]]:
    assert main(["leases", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_leases_of_another_network_are_hidden_without_all(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An old devnet's lease (same chain id, another escrow) and one from before networks
    were recorded show only under --all; the active network's lease always."""
    ledger = RenterLedger()
    here = new(ledger, 1)
    old_devnet = new(ledger, 2, key=NetworkKey(31337, "0x" + "dd" * 20))
    unknown = new(ledger, 3, key=None)
    monkeypatch.setenv("GPUMARKET_NETWORK", str(save_profile(_refusing_profile("here", ESCROW))))
    assert [r["id"] for r in _listed(capsys)] == [here.id]
    rows = {r["id"]: r for r in _listed(capsys, "--all")}
    assert set(rows) == {here.id, old_devnet.id, unknown.id}
    assert rows[unknown.id]["network_label"] == "unknown network"
    assert rows[old_devnet.id]["network_label"] == f"chain 31337 escrow 0x{'dd' * 20}"
    assert rows[here.id]["chain_id"] == 31337
    assert rows[here.id]["escrow"] == ESCROW
    assert main(["leases"]) == 0
    text = capsys.readouterr()
    assert here.id in text.out
    assert old_devnet.id not in text.out
    assert unknown.id not in text.out
    assert "not checked against the chain" in text.err  # the chain is down: said, not hidden
    assert main(["leases", "--all"]) == 0
    assert "unknown network (not the active network)" in capsys.readouterr().out


def test_a_ledger_from_before_networks_migrates_and_its_rows_are_unknown(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
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
            txs TEXT NOT NULL DEFAULT '[]', error TEXT, owner_pid INTEGER)"""
    )
    db.execute(
        "INSERT INTO leases (id, provider, network, renter, channel_id, state, created_at, "
        "price_per_hour, deposit) VALUES ('old1', ?, 'devnet', ?, ?, 'stopped', 1.0, '3600', '5')",
        (PROVIDER, RENTER, "0x" + "00" * 32),
    )
    db.commit()
    db.close()
    ledger = RenterLedger()
    (old,) = ledger.list()
    assert (old.id, old.network_key, old.state) == ("old1", None, "stopped")
    assert ledger.list(HERE) == []
    fresh = new(ledger, 9)
    assert [r.id for r in RenterLedger().list(HERE)] == [fresh.id]
    monkeypatch.setenv("GPUMARKET_NETWORK", str(save_profile(_refusing_profile("here", ESCROW))))
    assert [r["id"] for r in _listed(capsys)] == [fresh.id]
    assert [r["id"] for r in _listed(capsys, "--all")] == ["old1", fresh.id]


def test_gpumarket_leases_shows_what_the_chain_settled(
    home: Path,
    anvil: object,
    contracts: object,
    deployment: object,
    accounts: list[object],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The renter signed 90 and stopped; the provider settled only 60 (it held no better
    voucher): the list says settled, 60 from the chain, the settle tx, and the rest refunded."""
    c, renter, provider = contracts, accounts[1], accounts[2]
    profile = NetworkProfile(
        name="testchain",
        rpc_url=anvil.rpc_url,  # type: ignore[attr-defined]
        chain_id=c.w3.eth.chain_id,  # type: ignore[attr-defined]
        token=deployment.token,  # type: ignore[attr-defined]
        escrow=deployment.escrow,  # type: ignore[attr-defined]
        registry=deployment.registry,  # type: ignore[attr-defined]
    )
    monkeypatch.setenv("GPUMARKET_NETWORK", str(save_profile(profile)))
    chain = LeaseChain(c)  # type: ignore[arg-type]
    opened = chain.open(renter, provider=provider.address, price_per_hour=3600, deposit=USD)  # type: ignore[attr-defined]
    ledger = RenterLedger()
    lease = ledger.create(
        provider=provider.address,  # type: ignore[attr-defined]
        channel_id=opened.channel_id,
        network="testchain",
        renter=renter.address,  # type: ignore[attr-defined]
        price_per_hour=3600,
        deposit=USD,
        txs=[t.to_json() for t in opened.txs],
        network_key=NetworkKey(profile.chain_id, deployment.escrow),  # type: ignore[attr-defined]
    )
    ledger.transition(lease, RenterEvent.KERNEL_READY, at=time.time())
    ledger.progress(lease.id, billed_seconds=90, spent=90)
    (row,) = _listed(capsys)
    assert (row["state"], row["spent"], row["spent_source"]) == ("running", 90, "estimate")
    ledger.transition(lease.id, RenterEvent.LEASE_ENDED, at=time.time(), refunded=USD - 90)
    sig = chain.sign_voucher(opened.session_key, opened.channel_id, 60)
    settled = chain.settle_highest(provider, opened.channel_id, (60, sig))  # type: ignore[arg-type]
    (row,) = _listed(capsys)
    assert (row["state"], row["spent"], row["refunded"]) == ("settled", 60, USD - 60)
    assert row["spent_source"] == "chain"
    assert row["txs"][-1] == settled.tx.to_json()
    (again,) = _listed(capsys)  # reconciling again changes nothing
    assert again == row
    assert main(["leases"]) == 0
    out = capsys.readouterr().out
    assert f"settled on chain in tx {settled.tx.tx_hash}" in out
