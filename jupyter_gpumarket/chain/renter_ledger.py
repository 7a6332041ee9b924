"""The renter's list of leases: ``$GPUMARKET_HOME/leases.sqlite3`` (``~/.gpumarket``).

One row per lease (= one escrow channel). The provisioner writes it as the lease goes
(opened -> running -> stopped -> settled), ``gpumarket leases`` reads it, and ``gpumarket
leases close ID`` (or the server extension) drives the recovery of unspent deposits
(closing -> withdrawn). SQLite because the Jupyter server and the CLI may write at the same
time. Session keys are never stored here. ``owner_pid`` is the process that opened the lease
and drives it (a Jupyter server, or any process running the provisioner): while it lives, an
open lease may have a kernel starting or running, so nothing else may close its channel.

States and their transitions: ``core/renter_lease_state.py`` (the table). A change of state is
one ``UPDATE ... WHERE state = <the state the writer saw>``: a writer that lost a race gets
LeaseStateChanged, never a silent overwrite. While a lease runs, the provisioner writes its
billed seconds and spend at each voucher (:meth:`RenterLedger.progress`); ``spent`` is the
renter's estimate until the chain says the channel closed (``spent_source``).

``chain_id`` + ``escrow`` say which deployment a lease belongs to (NULL in rows written before
they were recorded: an unknown network); ``network`` is the profile name or path that found it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from jupyter_gpumarket.chain.paths import gpumarket_home
from jupyter_gpumarket.chain.renter_lease import AMOUNTS as _AMOUNTS
from jupyter_gpumarket.chain.renter_lease import (
    FINAL_STATES,
    LEASE_STATES,
    LeaseRecord,
    NetworkKey,
)
from jupyter_gpumarket.core import renter_lease_state as rls
from jupyter_gpumarket.core.renter_lease_state import LeaseEvent, RenterEvent, RenterState
from jupyter_gpumarket.exceptions import ConfigError, LeaseStateChanged, PaymentError

__all__ = [
    "FINAL_STATES",
    "LEASE_STATES",
    "LeaseRecord",
    "NetworkKey",
    "RenterLedger",
    "ledger_path",
]

_ACTIVE = tuple(s.value for s in rls.ACTIVE_STATES)
_UPDATABLE = {
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
    owner_pid       INTEGER,
    chain_id        INTEGER,
    escrow          TEXT
);
"""
# columns added after the first release: files written before get them (rows keep NULL)
_ADDED_COLUMNS = {"owner_pid": "INTEGER", "chain_id": "INTEGER", "escrow": "TEXT"}


def ledger_path() -> Path:
    return gpumarket_home() / "leases.sqlite3"


def _row(row: sqlite3.Row) -> LeaseRecord:
    data = dict(row)
    for name in _AMOUNTS:
        data[name] = int(data[name])
    data["txs"] = json.loads(data["txs"])
    return LeaseRecord(**data)


def _add_columns(db: sqlite3.Connection) -> None:
    """Files written before a column existed get it (their rows keep NULL)."""
    have = {r["name"] for r in db.execute("PRAGMA table_info(leases)")}
    for name, kind in _ADDED_COLUMNS.items():
        if name in have:
            continue
        try:
            db.execute(f"ALTER TABLE leases ADD COLUMN {name} {kind}")
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
                _add_columns(db)
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
        network_key: NetworkKey | None = None,
    ) -> LeaseRecord:
        """Record a newly opened channel; the new lease (its id is short and random).

        ``owner_pid``: the process driving the lease, this one unless given. ``network_key``:
        the chain id + escrow of the deployment (what ``gpumarket leases`` filters on)."""
        if state not in {s.value for s in rls.INITIAL_STATES}:
            raise ConfigError(f"a new lease starts open or failed, not {state!r}")
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
            chain_id=network_key.chain_id if network_key else None,
            escrow=network_key.escrow if network_key else None,
        )
        data = record.columns()
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

    def list(self, network: NetworkKey | None = None) -> list[LeaseRecord]:
        """Every lease, oldest first; only those of ``network`` when given (rows of an unknown
        network never match one)."""
        with self._db() as db:
            records = [_row(r) for r in db.execute("SELECT * FROM leases ORDER BY created_at")]
        if network is None:
            return records
        return [r for r in records if r.network_key == network]

    def needing_recovery(self, network: NetworkKey | None = None) -> list[LeaseRecord]:
        """Leases whose deposit may still be on the escrow (not settled/withdrawn/failed)."""
        return [r for r in self.list(network) if r.state not in FINAL_STATES]

    def update(self, lease_id: str, **changes: Any) -> LeaseRecord:
        """Change some fields (times, billed_seconds, amounts, close_at, error); a state
        changes only through :meth:`transition`."""
        bad = set(changes) - _UPDATABLE
        if bad:
            raise ConfigError(
                f"lease fields {sorted(bad)} cannot be updated (a state changes only by "
                "RenterLedger.transition)"
            )
        current = self.get(lease_id)
        record = replace(current, **changes)  # validates
        values = {k: str(v) if k in _AMOUNTS else v for k, v in changes.items()}
        if values:
            sets = ", ".join(f"{k} = ?" for k in values)
            with self._db() as db:
                db.execute(f"UPDATE leases SET {sets} WHERE id = ?", (*values.values(), current.id))
        return record

    def transition(
        self,
        lease: str | LeaseRecord,
        event: RenterEvent,
        *,
        at: float | None = None,
        **changes: Any,
    ) -> LeaseRecord:
        """Apply ``event`` to the lease (an id: read now; a record: as the caller read it) and
        change ``changes`` in the same statement; the lease as written.

        ``at``: when KERNEL_READY (sets ``started_at`` once) or LEASE_ENDED (``ended_at``)
        happened. ProtocolError: the table has no such move (the caller's bug).
        LeaseStateChanged: another writer changed the state since it was read."""
        current = self.get(lease) if isinstance(lease, str) else lease
        seen = RenterState(current.state)
        new = LeaseEvent(event, seen, at).next
        bad = set(changes) - _UPDATABLE
        if bad:
            raise ConfigError(f"lease fields {sorted(bad)} cannot be updated")
        if event is RenterEvent.KERNEL_READY and current.started_at is None:
            changes.setdefault("started_at", at)
        if event is RenterEvent.LEASE_ENDED and current.ended_at is None:
            changes.setdefault("ended_at", at)
        record = replace(current, state=new.value, **changes)  # validates
        values = {k: str(v) if k in _AMOUNTS else v for k, v in changes.items()}
        sets = ", ".join(["state = ?", *(f"{k} = ?" for k in values)])
        with self._db() as db:
            cursor = db.execute(
                f"UPDATE leases SET {sets} WHERE id = ? AND state = ?",
                (new.value, *values.values(), current.id, seen.value),
            )
        if cursor.rowcount != 1:
            now = self.get(current.id).state
            raise LeaseStateChanged(
                f"lease {current.id} is {now} now, no longer {seen.value}: another process "
                f"changed it first, so {event.value} was not applied; read the lease again "
                "(`gpumarket leases`) and act on what it says now"
            )
        return record

    def progress(
        self, lease_id: str, *, billed_seconds: int, spent: int, deposit: int | None = None
    ) -> bool:
        """A running lease's billed seconds and spend so far (one UPDATE, no read); False when
        the lease is no longer open or running (it ended meanwhile: nothing written)."""
        for name, value in (("billed_seconds", billed_seconds), ("spent", spent)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise PaymentError(f"lease {name} must be a non-negative int, got {value!r}")
        sets, args = ["billed_seconds = ?", "spent = ?"], [billed_seconds, str(spent)]
        if deposit is not None:
            sets.append("deposit = ?")
            args.append(str(deposit))
        with self._db() as db:
            cursor = db.execute(
                f"UPDATE leases SET {', '.join(sets)} WHERE id = ? AND state IN (?, ?)",
                (*args, lease_id, *_ACTIVE),
            )
        return cursor.rowcount == 1

    def add_tx(self, lease_id: str, tx: dict[str, Any]) -> LeaseRecord:
        """Append a transaction (``{"kind", "tx_hash", "gas_used"}``) to the lease."""
        current = self.get(lease_id)
        with self._db() as db:  # one statement: atomic even with another process writing
            db.execute(
                "UPDATE leases SET txs = json_insert(txs, '$[#]', json(?)) WHERE id = ?",
                (json.dumps(dict(tx)), current.id),
            )
        return self.get(current.id)
