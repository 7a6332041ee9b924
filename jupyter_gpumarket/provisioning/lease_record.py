"""What the renter's ledger says about a paid lease while it runs (the provisioner's writes).

Blocking (SQLite): the tunnel loop calls these through ``asyncio.to_thread``. Every change of
state is a :class:`~jupyter_gpumarket.core.renter_lease_state.RenterEvent` applied atomically;
a lease the chain already closed (reconciled as settled/withdrawn by ``gpumarket leases`` or the
server) is left as the chain says, never overwritten with the renter's estimate.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from jupyter_gpumarket.core.renter_lease_state import RenterEvent
from jupyter_gpumarket.exceptions import LeaseStateChanged

__all__ = ["PROGRESS_EVERY", "ProgressWriter", "record_ended", "record_started"]

log = logging.getLogger(__name__)

# at most one progress write per this many seconds (vouchers may come every second or two)
PROGRESS_EVERY = 5.0
_ENDABLE = ("open", "running", "stopped")


def record_started(ledger: Any, record_id: str, at: float) -> None:
    """Billing started at ``at`` (a ``time.time()``): the lease is running."""
    record = ledger.get(record_id)
    if record.state not in ("open", "running"):
        log.info("lease %s is %s already: not marked running", record_id, record.state)
        return
    try:
        ledger.transition(record, RenterEvent.KERNEL_READY, at=at)
    except LeaseStateChanged as exc:
        log.info("%s", exc)


def record_ended(ledger: Any, record_id: str, **changes: Any) -> None:
    """The lease is over on the renter's side (``changes``: billed seconds, spend, error)."""
    record = ledger.get(record_id)
    if record.state not in _ENDABLE:  # the chain closed it first: its numbers stand
        log.info("lease %s is %s already: the chain's amounts stand", record_id, record.state)
        return
    try:
        ledger.transition(record, RenterEvent.LEASE_ENDED, at=time.time(), **changes)
    except LeaseStateChanged as exc:
        log.info("%s", exc)


class ProgressWriter:
    """Writes a running lease's billed seconds, spend and deposit at a voucher, at most once
    per ``every`` seconds and only when they changed (one UPDATE, no read)."""

    def __init__(self, ledger: Any, record_id: str, every: float = PROGRESS_EVERY) -> None:
        self.ledger, self.record_id, self.every = ledger, record_id, every
        self._last: float | None = None
        self._written: tuple[int, int, int] | None = None

    def due(self, now: float) -> bool:
        return self._last is None or now - self._last >= self.every

    def write(self, billed_seconds: int, spent: int, deposit: int) -> bool:
        """Write if due and changed; whether the ledger row was written."""
        now = time.monotonic()
        values = (billed_seconds, spent, deposit)
        if values == self._written or not self.due(now):
            return False
        self._last = now
        try:
            written = self.ledger.progress(
                self.record_id, billed_seconds=billed_seconds, spent=spent, deposit=deposit
            )
        except Exception as exc:  # a locked or full disk must not stop the payments
            log.warning("could not record lease %s's progress: %s", self.record_id, exc)
            return False
        if written:
            self._written = values
        return written
