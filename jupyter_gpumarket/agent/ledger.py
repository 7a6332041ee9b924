"""The provider's ledger: channels, the highest voucher of each, and on-chain redemptions.

SQLite in the agent's state dir (``<state_dir>/ledger.sqlite3``, WAL, ``synchronous=FULL``):
a voucher is on disk when ``save_voucher`` returns, so the agent acknowledges a voucher only
after saving it and a crash never loses an earned voucher. Only the highest voucher of a
channel is kept (vouchers are cumulative: it supersedes all lower ones).

Redemptions and settlements are written *before* they are sent (``begin_tx`` -> pending),
then get their hash (``tx_sent``) and outcome (``tx_confirmed`` / ``tx_failed``). After a crash
or while the RPC is down, ``to_redeem()`` lists the channels whose best voucher is not yet
confirmed on chain, and ``txs(status="pending")`` the transactions to look up again.

Amounts are stored as decimal text: the escrow allows 2**88 base units, more than SQLite's
64-bit integers hold.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from jupyter_gpumarket.exceptions import AgentError, PaymentError

__all__ = [
    "LEDGER_FILE",
    "TX_KINDS",
    "TX_STATUSES",
    "LedgerChannel",
    "ProviderLedger",
    "StoredVoucher",
    "TxRecord",
]

LEDGER_FILE = "ledger.sqlite3"
SCHEMA_VERSION = 1
TX_KINDS = ("redeem", "settle")
TX_STATUSES = ("pending", "confirmed", "failed")
CHANNEL_STATES = ("open", "stopping", "settled", "closed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS channels (
    channel_id      TEXT PRIMARY KEY,
    renter          TEXT NOT NULL,
    provider        TEXT NOT NULL,
    token           TEXT NOT NULL,
    deposit         TEXT NOT NULL,
    price_per_hour  TEXT NOT NULL,
    lease_id        TEXT,
    state           TEXT NOT NULL,
    opened_at       REAL NOT NULL,
    updated_at      REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS vouchers (
    channel_id      TEXT PRIMARY KEY REFERENCES channels(channel_id),
    amount          TEXT NOT NULL,
    signature       BLOB NOT NULL,
    received_at     REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS txs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    channel_id      TEXT NOT NULL REFERENCES channels(channel_id),
    kind            TEXT NOT NULL,
    amount          TEXT NOT NULL,
    tx_hash         TEXT,
    status          TEXT NOT NULL,
    error           TEXT,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS txs_by_status ON txs(status);
"""


def _hex(channel_id: bytes | str) -> str:
    raw = (
        bytes.fromhex(channel_id.removeprefix("0x")) if isinstance(channel_id, str) else channel_id
    )
    if len(raw) != 32:
        raise PaymentError(f"channel_id must be 32 bytes, got {len(raw)}")
    return "0x" + bytes(raw).hex()


def _amount(name: str, value: int) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PaymentError(f"{name} must be a non-negative int of base units, got {value!r}")
    return str(value)


@dataclass(frozen=True)
class LedgerChannel:
    channel_id: bytes
    renter: str
    provider: str
    token: str
    deposit: int
    price_per_hour: int
    lease_id: str | None
    state: str
    opened_at: float
    updated_at: float


@dataclass(frozen=True)
class StoredVoucher:
    channel_id: bytes
    amount: int
    signature: bytes
    received_at: float


@dataclass(frozen=True)
class TxRecord:
    id: int
    channel_id: bytes
    kind: str
    amount: int
    tx_hash: str | None
    status: str
    error: str | None
    created_at: float
    updated_at: float


def _channel(row: sqlite3.Row) -> LedgerChannel:
    return LedgerChannel(
        channel_id=bytes.fromhex(row["channel_id"][2:]),
        renter=row["renter"],
        provider=row["provider"],
        token=row["token"],
        deposit=int(row["deposit"]),
        price_per_hour=int(row["price_per_hour"]),
        lease_id=row["lease_id"],
        state=row["state"],
        opened_at=row["opened_at"],
        updated_at=row["updated_at"],
    )


def _voucher(row: sqlite3.Row) -> StoredVoucher:
    return StoredVoucher(
        channel_id=bytes.fromhex(row["channel_id"][2:]),
        amount=int(row["amount"]),
        signature=bytes(row["signature"]),
        received_at=row["received_at"],
    )


def _tx(row: sqlite3.Row) -> TxRecord:
    return TxRecord(
        id=row["id"],
        channel_id=bytes.fromhex(row["channel_id"][2:]),
        kind=row["kind"],
        amount=int(row["amount"]),
        tx_hash=row["tx_hash"],
        status=row["status"],
        error=row["error"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class ProviderLedger:
    """One agent's ledger; safe to share between threads of one process."""

    def __init__(
        self, state_dir: str | os.PathLike[str], *, clock: Callable[[], float] = time.time
    ):
        self.path = Path(state_dir) / LEDGER_FILE
        self._clock = clock
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
            os.close(fd)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA busy_timeout=5000")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise AgentError(
                    f"{self.path} was written by a newer gpumarket (schema {version}); "
                    "upgrade jupyter-gpumarket before running this agent"
                )
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise AgentError(
                f"cannot open the provider ledger {self.path} ({exc}): check the state dir is "
                "writable; move a corrupt file aside (earned vouchers are in it: keep a copy)"
            ) from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> ProviderLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                raise AgentError(
                    f"provider ledger {self.path} write failed ({exc}): check disk space and "
                    "permissions; the agent must not acknowledge vouchers it cannot store"
                ) from None

    def _read(self, sql: str, args: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._db.execute(sql, args))

    # ------------------------------------------------------------------ channels

    def upsert_channel(
        self,
        channel_id: bytes | str,
        *,
        renter: str,
        provider: str,
        token: str,
        deposit: int,
        price_per_hour: int,
        lease_id: str | None = None,
    ) -> None:
        """Record a channel (or refresh its deposit and lease after a top-up / reconnect)."""
        cid, now = _hex(channel_id), self._clock()
        deposit_s, price_s = _amount("deposit", deposit), _amount("price_per_hour", price_per_hour)
        with self._write() as db:
            db.execute(
                "INSERT INTO channels VALUES (?, ?, ?, ?, ?, ?, ?, 'open', ?, ?) "
                "ON CONFLICT(channel_id) DO UPDATE SET deposit = excluded.deposit, "
                "lease_id = COALESCE(excluded.lease_id, lease_id), "
                "updated_at = excluded.updated_at",
                (cid, renter, provider, token, deposit_s, price_s, lease_id, now, now),
            )

    def channel(self, channel_id: bytes | str) -> LedgerChannel | None:
        rows = self._read("SELECT * FROM channels WHERE channel_id = ?", (_hex(channel_id),))
        return _channel(rows[0]) if rows else None

    def channels(self, state: str | None = None) -> list[LedgerChannel]:
        if state is None:
            rows = self._read("SELECT * FROM channels ORDER BY opened_at")
        else:
            rows = self._read("SELECT * FROM channels WHERE state = ? ORDER BY opened_at", (state,))
        return [_channel(r) for r in rows]

    def set_channel_state(self, channel_id: bytes | str, state: str) -> None:
        if state not in CHANNEL_STATES:
            raise AgentError(f"channel state must be one of {CHANNEL_STATES}, got {state!r}")
        with self._write() as db:
            cur = db.execute(
                "UPDATE channels SET state = ?, updated_at = ? WHERE channel_id = ?",
                (state, self._clock(), _hex(channel_id)),
            )
            if cur.rowcount != 1:
                raise AgentError(f"no channel {_hex(channel_id)} in the ledger; upsert it first")

    # ------------------------------------------------------------------ vouchers

    def save_voucher(self, channel_id: bytes | str, amount: int, signature: bytes) -> bool:
        """Keep the voucher if it is the channel's highest; True when it was stored.

        Durable on return (WAL + synchronous=FULL): acknowledge the voucher only after this.
        """
        cid, amount_s = _hex(channel_id), _amount("amount", amount)
        with self._write() as db:
            if db.execute("SELECT 1 FROM channels WHERE channel_id = ?", (cid,)).fetchone() is None:
                raise AgentError(f"voucher for unknown channel {cid}: upsert_channel first")
            row = db.execute("SELECT amount FROM vouchers WHERE channel_id = ?", (cid,)).fetchone()
            if row is not None and int(row["amount"]) >= amount:
                return False
            db.execute(
                "INSERT INTO vouchers VALUES (?, ?, ?, ?) ON CONFLICT(channel_id) DO UPDATE SET "
                "amount = excluded.amount, signature = excluded.signature, "
                "received_at = excluded.received_at",
                (cid, amount_s, bytes(signature), self._clock()),
            )
            return True

    def highest_voucher(self, channel_id: bytes | str) -> StoredVoucher | None:
        rows = self._read("SELECT * FROM vouchers WHERE channel_id = ?", (_hex(channel_id),))
        return _voucher(rows[0]) if rows else None

    # ------------------------------------------------------------------ on-chain txs

    def begin_tx(self, channel_id: bytes | str, kind: str, amount: int) -> int:
        """Write a redemption/settlement as pending before sending it; its ledger id."""
        if kind not in TX_KINDS:
            raise AgentError(f"tx kind must be one of {TX_KINDS}, got {kind!r}")
        now = self._clock()
        with self._write() as db:
            cur = db.execute(
                "INSERT INTO txs (channel_id, kind, amount, status, created_at, updated_at) "
                "VALUES (?, ?, ?, 'pending', ?, ?)",
                (_hex(channel_id), kind, _amount("amount", amount), now, now),
            )
            return int(cur.lastrowid or 0)

    def _update_tx(self, tx_id: int, sql: str, args: tuple[object, ...]) -> None:
        with self._write() as db:
            cur = db.execute(f"UPDATE txs SET {sql}, updated_at = ? WHERE id = ?", (*args, tx_id))
            if cur.rowcount != 1:
                raise AgentError(f"no transaction {tx_id} in the ledger")

    def tx_sent(self, tx_id: int, tx_hash: str) -> None:
        self._update_tx(tx_id, "tx_hash = ?", (tx_hash, self._clock()))

    def tx_confirmed(self, tx_id: int, tx_hash: str | None = None) -> None:
        self._update_tx(
            tx_id,
            "status = 'confirmed', error = NULL, tx_hash = COALESCE(?, tx_hash)",
            (tx_hash, self._clock()),
        )

    def tx_failed(self, tx_id: int, error: str) -> None:
        self._update_tx(tx_id, "status = 'failed', error = ?", (error, self._clock()))

    def txs(
        self, channel_id: bytes | str | None = None, status: str | None = None
    ) -> list[TxRecord]:
        where, args = [], []
        if channel_id is not None:
            where.append("channel_id = ?")
            args.append(_hex(channel_id))
        if status is not None:
            if status not in TX_STATUSES:
                raise AgentError(f"tx status must be one of {TX_STATUSES}, got {status!r}")
            where.append("status = ?")
            args.append(status)
        sql = "SELECT * FROM txs" + (" WHERE " + " AND ".join(where) if where else "")
        return [_tx(r) for r in self._read(sql + " ORDER BY id", tuple(args))]

    def redeemed(self, channel_id: bytes | str) -> int:
        """The highest amount confirmed on chain for the channel (0 if none)."""
        rows = self.txs(channel_id, "confirmed")
        return max((t.amount for t in rows), default=0)

    def settled(self, channel_id: bytes | str) -> bool:
        return any(t.kind == "settle" for t in self.txs(channel_id, "confirmed"))

    def to_redeem(self) -> list[StoredVoucher]:
        """Best vouchers not yet confirmed on chain and with no transaction in flight (retry
        these when the RPC is back; settle those whose channel is ``stopping``). Channels set
        ``closed`` (nothing left to collect on chain) are skipped."""
        out = []
        rows = self._read(
            "SELECT v.* FROM vouchers v JOIN channels c ON c.channel_id = v.channel_id "
            "WHERE c.state != 'closed' ORDER BY v.received_at"
        )
        for row in rows:
            v = _voucher(row)
            if self.settled(v.channel_id) or self.redeemed(v.channel_id) >= v.amount:
                continue
            if self.txs(v.channel_id, "pending"):
                continue
            out.append(v)
        return out
