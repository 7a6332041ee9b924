"""The provider's paid-lease state machine (pure; the agent feeds events and acts on states).

Vouchers are due every ``interval`` seconds (default 15) once the kernel is ready. Lateness is
measured from the moment the last covering voucher arrived (or the kernel became ready):
``late = now - last_ok - interval``. ``poll(now)`` turns the clock into events:

- late by ``slack <= t < interval`` (slack default 5 s absorbs network and timer jitter):
  VOUCHER_LATE(t) -> SHORT: tell the renter, keep running;
- late by ``t >= interval``: VOUCHER_LATE(t) -> PAUSED: refuse new executions (the running
  cell finishes; interrupts, shutdowns and vouchers still work);
- ``now - last_ok >= grace`` (default 60 s): GRACE_EXPIRED -> STOPPING: stop the kernel, free
  the GPU, settle with the highest voucher. So the provider's unpaid time is at most the grace.

A covering voucher (``Decision.covers``) is VOUCHER_OK: back to RUNNING from SHORT or PAUSED.
A kernel *restart* is not KERNEL_EXITED: the lease goes on; KERNEL_EXITED means the lease's
kernel is gone for good (exit, launch failure, renter's shutdown).

.. code-block:: text

    state          event           -> next state    what the agent does on entering
    AUTHENTICATED  KERNEL_READY    -> RUNNING       start the billing clock and voucher timer
    AUTHENTICATED  VOUCHER_OK      -> AUTHENTICATED (a voucher for 0 s: nothing to do)
    AUTHENTICATED  KERNEL_EXITED   -> STOPPING      launch failed: nothing is billed
    AUTHENTICATED  RENTER_GONE     -> STOPPING
    RUNNING        VOUCHER_OK      -> RUNNING
    RUNNING        VOUCHER_LATE_W  -> SHORT         warn the renter ("voucher late")
    RUNNING        VOUCHER_LATE_P  -> PAUSED        refuse new executions
    SHORT          VOUCHER_OK      -> RUNNING       clear the warning
    SHORT          VOUCHER_LATE_W  -> SHORT
    SHORT          VOUCHER_LATE_P  -> PAUSED        refuse new executions
    PAUSED         VOUCHER_OK      -> RUNNING       accept executions again
    PAUSED         VOUCHER_LATE_*  -> PAUSED
    RUNNING|SHORT|PAUSED  GRACE_EXPIRED -> STOPPING stop the kernel, settle
    RUNNING|SHORT|PAUSED  KERNEL_EXITED -> STOPPING settle
    RUNNING|SHORT|PAUSED  RENTER_GONE   -> STOPPING stop the kernel, settle
    RUNNING|SHORT|PAUSED  KERNEL_READY  -> same     a restart finished
    STOPPING       VOUCHER_OK      -> STOPPING      a last voucher is still money
    STOPPING       KERNEL_EXITED | RENTER_GONE | GRACE_EXPIRED | VOUCHER_LATE_* -> STOPPING
    STOPPING       SETTLE_DONE     -> SETTLED       lease over; ledger says settled
    SETTLED        anything but SETTLE_DONE -> SETTLED (late news)

(VOUCHER_LATE_W / _P are VOUCHER_LATE(t) with t below / at least one interval.) Any other pair
is a bug in the caller (for example SETTLE_DONE before STOPPING) and raises ProtocolError.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from jupyter_gpumarket.core.metering import DEFAULT_INTERVAL
from jupyter_gpumarket.exceptions import ProtocolError

__all__ = [
    "DEFAULT_GRACE",
    "DEFAULT_SLACK",
    "TRANSITIONS",
    "Event",
    "EventType",
    "LeaseMachine",
    "LeasePolicy",
    "LeaseState",
]

DEFAULT_GRACE = 60
DEFAULT_SLACK = 5


class LeaseState(Enum):
    AUTHENTICATED = "authenticated"
    RUNNING = "running"
    SHORT = "short"
    PAUSED = "paused"
    STOPPING = "stopping"
    SETTLED = "settled"


class EventType(Enum):
    KERNEL_READY = "kernel_ready"
    VOUCHER_OK = "voucher_ok"
    VOUCHER_LATE = "voucher_late"
    GRACE_EXPIRED = "grace_expired"
    KERNEL_EXITED = "kernel_exited"
    RENTER_GONE = "renter_gone"
    SETTLE_DONE = "settle_done"


@dataclass(frozen=True)
class Event:
    """One thing that happened to the lease; ``late_by`` (seconds) only for VOUCHER_LATE."""

    type: EventType
    late_by: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.type, EventType):
            raise ProtocolError(f"type must be an EventType, got {self.type!r}")
        if not isinstance(self.late_by, int | float) or math.isnan(self.late_by):
            raise ProtocolError(f"late_by must be seconds, got {self.late_by!r}")
        if self.late_by < 0:
            raise ProtocolError(f"late_by must not be negative, got {self.late_by}")
        if self.type is not EventType.VOUCHER_LATE and self.late_by:
            raise ProtocolError(f"late_by only goes with VOUCHER_LATE, not {self.type.value}")


@dataclass(frozen=True)
class LeasePolicy:
    """Voucher interval and the grace after which a lease without vouchers is stopped."""

    interval: float = DEFAULT_INTERVAL
    grace: float = DEFAULT_GRACE
    slack: float = DEFAULT_SLACK

    def __post_init__(self) -> None:
        if not self.interval > 0:
            raise ProtocolError(f"interval must be positive seconds, got {self.interval!r}")
        if not 0 <= self.slack < self.interval:
            raise ProtocolError(
                f"slack ({self.slack!r}) must be at least 0 and below the interval "
                f"({self.interval})"
            )
        if not self.grace >= self.interval:
            raise ProtocolError(
                f"grace ({self.grace!r}) must be at least the voucher interval ({self.interval})"
            )


_S, _E = LeaseState, EventType
_LIVE = (_S.RUNNING, _S.SHORT, _S.PAUSED)
# The lateness of VOUCHER_LATE splits it in two rows: "warn" (< 1 interval) and "pause".
_WARN, _PAUSE = "late_warn", "late_pause"

TRANSITIONS: dict[tuple[LeaseState, EventType | str], LeaseState] = {
    (_S.AUTHENTICATED, _E.KERNEL_READY): _S.RUNNING,
    (_S.AUTHENTICATED, _E.VOUCHER_OK): _S.AUTHENTICATED,
    (_S.AUTHENTICATED, _E.KERNEL_EXITED): _S.STOPPING,
    (_S.AUTHENTICATED, _E.RENTER_GONE): _S.STOPPING,
    (_S.RUNNING, _E.VOUCHER_OK): _S.RUNNING,
    (_S.RUNNING, _WARN): _S.SHORT,
    (_S.RUNNING, _PAUSE): _S.PAUSED,
    (_S.SHORT, _E.VOUCHER_OK): _S.RUNNING,
    (_S.SHORT, _WARN): _S.SHORT,
    (_S.SHORT, _PAUSE): _S.PAUSED,
    (_S.PAUSED, _E.VOUCHER_OK): _S.RUNNING,
    (_S.PAUSED, _WARN): _S.PAUSED,
    (_S.PAUSED, _PAUSE): _S.PAUSED,
    **{(s, _E.GRACE_EXPIRED): _S.STOPPING for s in _LIVE},
    **{(s, _E.KERNEL_EXITED): _S.STOPPING for s in _LIVE},
    **{(s, _E.RENTER_GONE): _S.STOPPING for s in _LIVE},
    **{(s, _E.KERNEL_READY): s for s in _LIVE},
    **{
        (_S.STOPPING, e): _S.STOPPING
        for e in (_E.VOUCHER_OK, _E.KERNEL_EXITED, _E.RENTER_GONE, _E.GRACE_EXPIRED, _WARN, _PAUSE)
    },
    (_S.STOPPING, _E.SETTLE_DONE): _S.SETTLED,
    **{(_S.SETTLED, e): _S.SETTLED for e in (*_E, _WARN, _PAUSE) if e is not _E.SETTLE_DONE},
}


class LeaseMachine:
    """One lease's state; ``handle`` events, ``poll`` the clock for lateness and grace."""

    def __init__(self, policy: LeasePolicy | None = None) -> None:
        self.policy = policy or LeasePolicy()
        self.state = LeaseState.AUTHENTICATED
        self._last_ok: float | None = None  # when vouchers were last up to date
        self._reported: str | None = None  # the lateness row already fed, to not repeat it

    @property
    def executions_allowed(self) -> bool:
        """New execute_requests may go to the kernel (not while PAUSED or later)."""
        return self.state in (LeaseState.AUTHENTICATED, LeaseState.RUNNING, LeaseState.SHORT)

    @property
    def kernel_wanted(self) -> bool:
        """The kernel should be running (false from STOPPING on)."""
        return self.state not in (LeaseState.STOPPING, LeaseState.SETTLED)

    def _key(self, event: Event) -> EventType | str:
        if event.type is not EventType.VOUCHER_LATE:
            return event.type
        return _WARN if event.late_by < self.policy.interval else _PAUSE

    def handle(self, event: Event, now: float | None = None) -> LeaseState:
        """Apply ``event`` (``now`` needed for KERNEL_READY and VOUCHER_OK); the new state."""
        key = self._key(event)
        try:
            new = TRANSITIONS[(self.state, key)]
        except KeyError:
            raise ProtocolError(
                f"lease event {event.type.value} is not allowed in state {self.state.value}: "
                "this is a bug in the agent's lease wiring; report it"
            ) from None
        if event.type in (EventType.VOUCHER_OK, EventType.KERNEL_READY):
            if now is None:
                raise ProtocolError(f"{event.type.value} needs the time it happened (now=...)")
            first_ready = event.type is EventType.KERNEL_READY and self._last_ok is None
            if event.type is EventType.VOUCHER_OK or first_ready:
                self._last_ok = now
                self._reported = None
        elif isinstance(key, str):
            self._reported = key
        self.state = new
        return new

    def poll(self, now: float) -> Event | None:
        """The event the clock calls for at ``now`` (feed it to ``handle``), or None."""
        if self._last_ok is None or self.state not in _LIVE:
            return None
        waited = now - self._last_ok
        if waited >= self.policy.grace:
            return Event(EventType.GRACE_EXPIRED)
        late = waited - self.policy.interval
        if late < self.policy.slack:
            return None
        key = _WARN if late < self.policy.interval else _PAUSE
        if key == self._reported:
            return None
        return Event(EventType.VOUCHER_LATE, late_by=late)

    def next_deadline(self) -> float | None:
        """When ``poll`` may next return an event (for the shell's timer), or None."""
        if self._last_ok is None or self.state not in _LIVE:
            return None
        grace_at = self._last_ok + self.policy.grace
        if self._reported is None:
            return min(self._last_ok + self.policy.interval + self.policy.slack, grace_at)
        if self._reported == _WARN:
            return min(self._last_ok + 2 * self.policy.interval, grace_at)
        return grace_at
