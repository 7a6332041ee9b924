"""agent.ledger: the provider's SQLite ledger keeps the best voucher through crashes."""

from __future__ import annotations

import sqlite3
import stat
import subprocess
import sys
import textwrap

import pytest

from jupyter_gpumarket.agent.ledger import LEDGER_FILE, ProviderLedger
from jupyter_gpumarket.exceptions import AgentError, PaymentError

CID = bytes(range(32))
CID2 = bytes(range(1, 33))
RENTER = "0x" + "11" * 20
PROVIDER = "0x" + "22" * 20
TOKEN = "0x" + "33" * 20
BIG = 2**88 - 1  # the escrow's per-channel maximum: more than SQLite's int64


def open_channel(ledger: ProviderLedger, cid: bytes = CID, deposit: int = 10**6) -> None:
    ledger.upsert_channel(
        cid,
        renter=RENTER,
        provider=PROVIDER,
        token=TOKEN,
        deposit=deposit,
        price_per_hour=3_600_000,
        lease_id="lease-1",
    )


def test_channels_are_recorded_and_updated(tmp_path):
    with ProviderLedger(tmp_path) as ledger:
        open_channel(ledger)
        ch = ledger.channel(CID)
        assert ch is not None
        assert (ch.renter, ch.deposit, ch.state, ch.lease_id) == (RENTER, 10**6, "open", "lease-1")
        ledger.upsert_channel(
            "0x" + CID.hex(),
            renter=RENTER,
            provider=PROVIDER,
            token=TOKEN,
            deposit=BIG,
            price_per_hour=1,
        )
        ch = ledger.channel(CID)
        assert ch is not None
        assert (ch.deposit, ch.lease_id) == (BIG, "lease-1")  # top-up kept the lease
        ledger.set_channel_state(CID, "stopping")
        assert [c.channel_id for c in ledger.channels("stopping")] == [CID]
        assert ledger.channels("open") == []
        with pytest.raises(AgentError, match="channel state must be one of"):
            ledger.set_channel_state(CID, "weird")
        with pytest.raises(AgentError, match="upsert it first"):
            ledger.set_channel_state(CID2, "open")
        assert ledger.channel(CID2) is None


def test_only_the_highest_voucher_is_kept(tmp_path):
    with ProviderLedger(tmp_path) as ledger:
        open_channel(ledger)
        assert ledger.highest_voucher(CID) is None
        assert ledger.save_voucher(CID, 100, b"a" * 65)
        assert ledger.save_voucher(CID, 250, b"b" * 65)
        assert not ledger.save_voucher(CID, 200, b"c" * 65)  # stale: ignored
        assert not ledger.save_voucher(CID, 250, b"d" * 65)  # duplicate: ignored
        assert ledger.save_voucher(CID, BIG, b"e" * 65)  # no int64 overflow
        best = ledger.highest_voucher(CID)
        assert best is not None
        assert (best.amount, best.signature) == (BIG, b"e" * 65)


def test_vouchers_need_a_known_channel_and_valid_amounts(tmp_path):
    with ProviderLedger(tmp_path) as ledger:
        with pytest.raises(AgentError, match="unknown channel"):
            ledger.save_voucher(CID, 1, b"x" * 65)
        open_channel(ledger)
        with pytest.raises(PaymentError, match="amount"):
            ledger.save_voucher(CID, -1, b"x" * 65)
        with pytest.raises(PaymentError, match="32 bytes"):
            ledger.save_voucher(b"short", 1, b"x" * 65)


def test_tx_lifecycle_and_retry_list(tmp_path):
    with ProviderLedger(tmp_path) as ledger:
        open_channel(ledger)
        open_channel(ledger, CID2)
        ledger.save_voucher(CID, 500, b"a" * 65)
        ledger.save_voucher(CID2, 700, b"b" * 65)
        assert [v.channel_id for v in ledger.to_redeem()] == [CID, CID2]

        tx = ledger.begin_tx(CID, "redeem", 500)
        assert [v.channel_id for v in ledger.to_redeem()] == [CID2]  # in flight
        ledger.tx_sent(tx, "0xaa")
        ledger.tx_failed(tx, "RPC unavailable")
        assert ledger.txs(CID, "failed")[0].error == "RPC unavailable"
        assert [v.channel_id for v in ledger.to_redeem()] == [CID, CID2]  # retry it

        tx = ledger.begin_tx(CID, "redeem", 500)
        ledger.tx_sent(tx, "0xbb")
        ledger.tx_confirmed(tx)
        assert ledger.redeemed(CID) == 500
        assert [v.channel_id for v in ledger.to_redeem()] == [CID2]

        ledger.save_voucher(CID, 900, b"c" * 65)  # more earned after the redemption
        assert [v.channel_id for v in ledger.to_redeem()] == [CID2, CID]  # oldest first
        tx = ledger.begin_tx(CID, "settle", 900)
        ledger.tx_confirmed(tx, "0xcc")
        assert ledger.settled(CID)
        assert [t.tx_hash for t in ledger.txs(CID)] == ["0xaa", "0xbb", "0xcc"]
        assert [v.channel_id for v in ledger.to_redeem()] == [CID2]
        with pytest.raises(AgentError, match="tx kind"):
            ledger.begin_tx(CID, "steal", 1)
        with pytest.raises(AgentError, match="no transaction 999"):
            ledger.tx_confirmed(999)
        with pytest.raises(AgentError, match="tx status"):
            ledger.txs(status="lost")


def test_file_is_private_and_wal(tmp_path):
    with ProviderLedger(tmp_path / "state") as ledger:
        open_channel(ledger)
    path = tmp_path / "state" / LEDGER_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_voucher_survives_a_crash_right_after_saving(tmp_path):
    """A process SIGKILLs itself right after save_voucher returned: the voucher is there."""
    code = textwrap.dedent(
        f"""
        import os, signal
        from jupyter_gpumarket.agent.ledger import ProviderLedger
        ledger = ProviderLedger({str(tmp_path)!r})
        ledger.upsert_channel({CID!r}, renter={RENTER!r}, provider={PROVIDER!r},
                              token={TOKEN!r}, deposit=10**6, price_per_hour=1)
        ledger.save_voucher({CID!r}, 123, b"s" * 65)
        tx = ledger.begin_tx({CID!r}, "settle", 123)
        ledger.tx_sent(tx, "0xdead")
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False, timeout=60)
    assert proc.returncode == -9
    assert (tmp_path / (LEDGER_FILE + "-wal")).exists()  # never checkpointed: WAL recovery
    with ProviderLedger(tmp_path) as ledger:
        best = ledger.highest_voucher(CID)
        assert best is not None
        assert (best.amount, best.signature) == (123, b"s" * 65)
        pending = ledger.txs(status="pending")
        assert [(t.kind, t.amount, t.tx_hash) for t in pending] == [("settle", 123, "0xdead")]
        assert ledger.to_redeem() == []  # in flight: look the hash up before resending


def test_reopen_keeps_everything(tmp_path):
    with ProviderLedger(tmp_path) as ledger:
        open_channel(ledger)
        ledger.save_voucher(CID, 42, b"z" * 65)
    with ProviderLedger(tmp_path) as ledger:
        best = ledger.highest_voucher(CID)
        assert best is not None
        assert best.amount == 42
        assert not ledger.save_voucher(CID, 41, b"y" * 65)


def test_newer_schema_and_garbage_files_are_refused(tmp_path):
    with ProviderLedger(tmp_path):
        pass
    with sqlite3.connect(tmp_path / LEDGER_FILE) as db:
        db.execute("PRAGMA user_version=99")
    with pytest.raises(AgentError, match="newer gpumarket"):
        ProviderLedger(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / LEDGER_FILE).write_bytes(b"not a database" * 100)
    with pytest.raises(AgentError, match="cannot open the provider ledger"):
        ProviderLedger(bad)


def test_a_channel_with_nothing_to_collect_leaves_the_retry_list(tmp_path):
    """A channel the provider found closed or not payable (foreign token, rotated key after a
    settle elsewhere) is set ``closed``: its voucher is no longer retried every round."""
    ledger = ProviderLedger(tmp_path)
    open_channel(ledger)
    ledger.save_voucher(CID, 5, b"\x01" * 65)
    assert [v.amount for v in ledger.to_redeem()] == [5]
    ledger.set_channel_state(CID, "closed")
    assert ledger.to_redeem() == []
