"""The renter's list of leases: ``$GPUMARKET_HOME/leases.sqlite3`` (``~/.gpumarket``).

One row per lease (= one escrow channel). The provisioner writes it as the lease goes
(opened -> running -> stopped -> settled), ``gpumarket leases`` reads it, and ``gpumarket
leases close ID`` (or the server extension) drives the recovery of unspent deposits
(closing -> withdrawn). SQLite because the Jupyter server and the CLI may write at the same
time. Session keys are never stored here. ``owner_pid`` is the process that opened the lease
and drives it (a Jupyter server, or any process running the provisioner): while it lives, an
open lease may have a kernel starting or running, so nothing else may close its channel.

States::

    open       channel open, kernel not ready yet (or failed before: nothing billed)
    running    kernel ready, vouchers streaming
    stopped    lease over on the renter's side; waiting for the provider's settle
    closing    requestClose sent; withdraw after close_at
    settled    the provider settled: paid + refunded are final
    withdrawn  the renter withdrew the rest after the challenge period: final
    failed     the channel never opened (nothing on chain)
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from jupyter_gpumarket.chain.paths import gpumarket_home
from jupyter_gpumarket.exceptions import ConfigError, PaymentError

__all__ = ["FINAL_STATES", "LEASE_STATES", "LeaseRecord", "RenterLedger", "ledger_path"]

LEASE_STATES = ("open", "running", "stopped", "closing", "settled", "withdrawn", "failed")
FINAL_STATES = ("settled", "withdrawn", "failed")
_AMOUNTS = ("price_per_hour", "deposit", "spent", "refunded")
_UPDATABLE = {
    "state",
    "started_at",
    "ended_at",
    "billed_seconds",
    "deposit",
    "spent",
    "refunded",
    "close_at",
    "error",
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS leases (
    id              TEXT PRIMARY KEY,
    offer_id        INTEGER,
    provider        TEXT NOT NULL,
    provider_url    TEXT,
    network         TEXT NOT NULL,
    renter          TEXT NOT NULL,
    channel_id      TEXT NOT NULL UNIQUE,
    state           TEXT NOT NULL,
    created_at      REAL NOT NULL,
    started_at      REAL,
    ended_at        REAL,
    billed_seconds  INTEGER NOT NULL DEFAULT 0,
    price_per_hour  TEXT NOT NULL,
    deposit         TEXT NOT NULL,
    spent           TEXT NOT NULL DEFAULT '0',
    refunded        TEXT NOT NULL DEFAULT '0',
    close_at        INTEGER,
    txs             TEXT NOT NULL DEFAULT '[]',
    error           TEXT,
    owner_pid       INTEGER
);
"""


def ledger_path() -> Path:
    return gpumarket_home() / "leases.sqlite3"


@dataclass(frozen=True)
class LeaseRecord:
    """One lease as the renter knows it; amounts in token base units."""

    id: str
    offer_id: int | None
    provider: str
    provider_url: str | None
    network: str
    renter: str
    channel_id: str  # 0x hex
    state: str
    created_at: float
    started_at: float | None
    ended_at: float | None
    billed_seconds: int
    price_per_hour: int
    deposit: int
    spent: int
    refunded: int
    close_at: int | None
    txs: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    owner_pid: int | None = None  # None: recorded before owners were (treated as gone)

    def __post_init__(self) -> None:
        if self.state not in LEASE_STATES:
            raise ConfigError(f"lease state must be one of {LEASE_STATES}, got {self.state!r}")
        for name in (*_AMOUNTS, "billed_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise PaymentError(f"lease {name} must be a non-negative int, got {value!r}")

    @property
    def channel_bytes(self) -> bytes:
        return bytes.fromhex(self.channel_id[2:])

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _row(row: sqlite3.Row) -> LeaseRecord:
    data = dict(row)
    for name in _AMOUNTS:
        data[name] = int(data[name])
    data["txs"] = json.loads(data["txs"])
    return LeaseRecord(**data)


def _add_owner_column(db: sqlite3.Connection) -> None:
    """Files written before ``owner_pid`` existed get the column (rows keep NULL)."""
    if "owner_pid" in {r["name"] for r in db.execute("PRAGMA table_info(leases)")}:
        return
    try:
        db.execute("ALTER TABLE leases ADD COLUMN owner_pid INTEGER")
    except sqlite3.OperationalError as exc:  # another process added it in between
        if "duplicate column" not in str(exc):
            raise


def _cid(channel_id: bytes | str) -> str:
    raw = (
        bytes.fromhex(channel_id.removeprefix("0x")) if isinstance(channel_id, str) else channel_id
    )
    if len(raw) != 32:
        raise PaymentError(f"channel_id must be 32 bytes, got {len(raw)}")
    return "0x" + bytes(raw).hex()


class RenterLedger:
    """The leases file; every method opens and closes its own connection (short, safe across
    processes)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or ledger_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with self._db() as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(_SCHEMA)
                _add_owner_column(db)
        except sqlite3.DatabaseError as exc:
            raise ConfigError(
                f"cannot open the lease list {self.path} ({exc}): check the directory is "
                "writable, or move a corrupt file aside"
            ) from None

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=10)
        db.row_factory = sqlite3.Row
        try:
            with db:
                yield db
        finally:
            db.close()

    def create(
        self,
        *,
        provider: str,
        channel_id: bytes | str,
        network: str,
        renter: str,
        price_per_hour: int,
        deposit: int,
        offer_id: int | None = None,
        provider_url: str | None = None,
        txs: Iterable[dict[str, Any]] = (),
        state: str = "open",
        owner_pid: int | None = None,
    ) -> LeaseRecord:
        """Record a newly opened channel; the new lease (its id is short and random).

        ``owner_pid``: the process driving the lease, this one unless given."""
        record = LeaseRecord(
            id=uuid.uuid4().hex[:12],
            offer_id=offer_id,
            provider=provider,
            provider_url=provider_url,
            network=network,
            renter=renter,
            channel_id=_cid(channel_id),
            state=state,
            created_at=time.time(),
            started_at=None,
            ended_at=None,
            billed_seconds=0,
            price_per_hour=price_per_hour,
            deposit=deposit,
            spent=0,
            refunded=0,
            close_at=None,
            txs=list(txs),
            owner_pid=os.getpid() if owner_pid is None else owner_pid,
        )
        data = record.to_json()
        for name in _AMOUNTS:
            data[name] = str(data[name])
        data["txs"] = json.dumps(data["txs"])
        cols = ", ".join(data)
        try:
            with self._db() as db:
                db.execute(
                    f"INSERT INTO leases ({cols}) VALUES ({', '.join('?' * len(data))})",
                    tuple(data.values()),
                )
        except sqlite3.IntegrityError:
            raise ConfigError(
                f"a lease for channel {record.channel_id} is already recorded: "
                "`gpumarket leases` shows it"
            ) from None
        return record

    def get(self, lease_id: str) -> LeaseRecord:
        """The lease with this id (or unique id prefix, or channel id); ConfigError if none."""
        text = lease_id.lower().removeprefix("0x")
        if not text or any(ch not in "0123456789abcdef" for ch in text):
            raise ConfigError(f"{lease_id!r} is not a lease id: `gpumarket leases` lists them")
        with self._db() as db:
            rows = list(
                db.execute(
                    "SELECT * FROM leases WHERE id LIKE ? OR channel_id = ?",
                    (text + "%", "0x" + text),
                )
            )
        if len(rows) != 1:
            what = "no lease" if not rows else f"{len(rows)} leases match"
            raise ConfigError(f"{what} {lease_id!r}: `gpumarket leases` lists the ids")
        return _row(rows[0])

    def list(self) -> list[LeaseRecord]:
        with self._db() as db:
            return [_row(r) for r in db.execute("SELECT * FROM leases ORDER BY created_at")]

    def needing_recovery(self) -> list[LeaseRecord]:
        """Leases whose deposit may still be on the escrow (not settled/withdrawn/failed)."""
        return [r for r in self.list() if r.state not in FINAL_STATES]

    def update(self, lease_id: str, **changes: Any) -> LeaseRecord:
        """Change some fields (state, times, billed_seconds, amounts, close_at, error)."""
        bad = set(changes) - _UPDATABLE
        if bad:
            raise ConfigError(f"lease fields {sorted(bad)} cannot be updated")
        current = self.get(lease_id)
        record = LeaseRecord(**{**current.to_json(), **changes})  # validates
        values = {k: str(v) if k in _AMOUNTS else v for k, v in changes.items()}
        if values:
            sets = ", ".join(f"{k} = ?" for k in values)
            with self._db() as db:
                db.execute(f"UPDATE leases SET {sets} WHERE id = ?", (*values.values(), current.id))
        return record

    def add_tx(self, lease_id: str, tx: dict[str, Any]) -> LeaseRecord:
        """Append a transaction (``{"kind", "tx_hash", "gas_used"}``) to the lease."""
        current = self.get(lease_id)
        with self._db() as db:  # one statement: atomic even with another process writing
            db.execute(
                "UPDATE leases SET txs = json_insert(txs, '$[#]', json(?)) WHERE id = ?",
                (json.dumps(dict(tx)), current.id),
            )
        return self.get(current.id)
