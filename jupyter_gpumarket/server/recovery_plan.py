"""Which leases the server's deposit recovery acts on, and when (no I/O: facts in, plans out).

The first row whose condition holds gives a lease's status::

    status    condition                                          the task
    final     settled / withdrawn / failed                       nothing
    in_use    open/running, and its owner process lives or a     nothing: never close the
              kernel (running, being re-adopted) pays from its   channel of a kernel that runs
              channel
    waiting   stopped less than settle_grace ago                 nothing yet: the provider
                                                                 normally settles by itself
    retrying  the last step failed                               a step at next_at (backoff)
    closing   close requested                                    withdraw at next_at (close_at)
    due       otherwise                                          a step now

The shell that feeds it and takes the steps is ``server/recovery.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Set
from dataclasses import dataclass
from typing import Any

from jupyter_gpumarket.chain.renter_ledger import FINAL_STATES
from jupyter_gpumarket.exceptions import ConfigError

__all__ = ["LeaseStatus", "RecoveryPlanner", "lease_in_use"]

ACTIVE_STATES = ("open", "running")


@dataclass(frozen=True)
class LeaseStatus:
    """Where the background recovery of one lease stands; ``next_at`` is a ``time.time()``."""

    status: str
    next_at: float | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "next_at": self.next_at, "error": self.error}


@dataclass(frozen=True)
class _Attempt:
    next_at: float
    failures: int = 0
    error: str | None = None


def lease_in_use(
    record: Any, *, live_pids: Set[int], busy_channels: Set[str], busy_urls: Set[str]
) -> bool:
    """An open lease whose kernel may be starting or running: its owner process lives, or a
    kernel record (a kernel running, or being re-adopted) pays from its channel
    (``busy_channels``) or, saying nothing of its channel, uses its provider (``busy_urls``)."""
    if record.state not in ACTIVE_STATES:
        return False
    if record.owner_pid is not None and record.owner_pid in live_pids:
        return True
    return record.channel_id.lower() in busy_channels or record.provider_url in busy_urls


class RecoveryPlanner:
    """Which leases to take a recovery step for now, and when to look again (no I/O)."""

    def __init__(
        self,
        *,
        settle_grace: float = 600.0,
        retry_base: float = 5.0,
        retry_cap: float = 600.0,
        withdraw_margin: float = 2.0,
    ) -> None:
        if min(settle_grace, retry_base, withdraw_margin) < 0 or retry_cap < retry_base:
            raise ConfigError(
                "recovery delays must be >= 0 and retry_cap >= retry_base, got "
                f"{settle_grace=}, {retry_base=}, {retry_cap=}, {withdraw_margin=}"
            )
        self.settle_grace = settle_grace
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self.withdraw_margin = withdraw_margin
        self._attempts: dict[str, _Attempt] = {}

    def status(self, record: Any, *, now: float, in_use: bool) -> LeaseStatus:
        if record.state in FINAL_STATES:
            return LeaseStatus("final")
        if in_use:
            return LeaseStatus("in_use")
        if record.state == "stopped" and record.ended_at is not None:
            until = record.ended_at + self.settle_grace
            if now < until:
                return LeaseStatus("waiting", until)
        attempt = self._attempts.get(record.id)
        if attempt is not None and attempt.failures:
            return LeaseStatus("retrying", attempt.next_at, attempt.error)
        if record.state == "closing":
            return LeaseStatus("closing", attempt.next_at if attempt else now)
        return LeaseStatus("due", now)

    def due(
        self, records: Iterable[Any], *, now: float, in_use: Callable[[Any], bool]
    ) -> list[Any]:
        """The leases to take one step for now, oldest first."""
        return [
            r
            for r in records
            if (s := self.status(r, now=now, in_use=in_use(r))).next_at is not None
            and s.status != "waiting"
            and s.next_at <= now
        ]

    def next_at(
        self, records: Iterable[Any], *, now: float, in_use: Callable[[Any], bool]
    ) -> float | None:
        """When something is planned next (None: nothing until the ledger changes)."""
        times = [
            s.next_at
            for r in records
            if (s := self.status(r, now=now, in_use=in_use(r))).next_at is not None
        ]
        return min(times, default=None)

    def stepped(self, record: Any, *, now: float, chain_now: int | None) -> None:
        """A step went through; ``record`` is the lease as the ledger has it after it."""
        if record.state != "closing" or record.close_at is None:
            self._attempts.pop(record.id, None)
            return
        remaining = max(0, record.close_at - (chain_now if chain_now is not None else now))
        # close_at is in chain time; look again at most retry_cap later (a devnet's clock jumps)
        wait = min(remaining + self.withdraw_margin, self.retry_cap)
        self._attempts[record.id] = _Attempt(now + wait)

    def failed(self, lease_id: str, error: str, *, now: float) -> float:
        """A step failed; the delay until the next one (doubles each time up to retry_cap)."""
        failures = self._attempts[lease_id].failures + 1 if lease_id in self._attempts else 1
        delay = min(self.retry_cap, self.retry_base * 2.0 ** (failures - 1))
        self._attempts[lease_id] = _Attempt(now + delay, failures, error)
        return delay

    def forget_except(self, lease_ids: Set[str]) -> None:
        """Drop what is remembered about leases that no longer need recovery."""
        for lease_id in set(self._attempts) - lease_ids:
            del self._attempts[lease_id]
