"""The renter's lease states (pure): what the renter's ledger may say a lease is, and how it moves.

One row per lease in ``chain/renter_ledger.py`` holds a :class:`RenterState`; every change of
state goes through :func:`next_state`, and the ledger applies the result atomically (``UPDATE ...
WHERE state = <the state the caller saw>``), so two writers (the provisioner, the CLI, the
server's recovery) can never both move the same lease from the same state.

.. code-block:: text

    state     event            -> next state  who feeds it / what it means
    OPEN      KERNEL_READY     -> RUNNING     provisioner: billing started (started_at)
    OPEN      LEASE_ENDED      -> STOPPED     provisioner: launch failed or ended before ready
    RUNNING   KERNEL_READY     -> RUNNING     provisioner: a restart finished
    RUNNING   LEASE_ENDED      -> STOPPED     provisioner: final voucher sent; the provider settles
    STOPPED   LEASE_ENDED      -> STOPPED     (a second shutdown path: nothing new)
    OPEN|RUNNING|STOPPED|CLOSING  CLOSE_REQUESTED -> CLOSING   renter sent requestClose (or the
                                               chain says the channel is closing)
    OPEN|RUNNING|STOPPED|CLOSING  CHAIN_SETTLED   -> SETTLED   the chain says: closed by the
                                               provider's settle (amounts are the chain's)
    OPEN|RUNNING|STOPPED|CLOSING  CHAIN_WITHDRAWN -> WITHDRAWN the chain says: closed by the
                                               renter's withdraw (amounts are the chain's)
    SETTLED   CHAIN_SETTLED    -> SETTLED     reconciling again: nothing new
    WITHDRAWN CHAIN_WITHDRAWN  -> WITHDRAWN   reconciling again: nothing new

``FAILED`` (the channel never opened: nothing on chain) is only ever a lease's first state.
Any other pair is a bug in the caller (for example KERNEL_READY after STOPPED, or LEASE_ENDED
of a settled lease) and raises ProtocolError. SETTLED, WITHDRAWN and FAILED are final; only in
those is a lease's ``spent`` the chain's number rather than the renter's
estimate (:func:`spent_source`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from jupyter_gpumarket.exceptions import ProtocolError

__all__ = [
    "ACTIVE_STATES",
    "FINAL_STATES",
    "INITIAL_STATES",
    "TRANSITIONS",
    "LeaseEvent",
    "RenterEvent",
    "RenterState",
    "next_state",
    "spent_source",
]


class RenterState(Enum):
    OPEN = "open"
    RUNNING = "running"
    STOPPED = "stopped"
    CLOSING = "closing"
    SETTLED = "settled"
    WITHDRAWN = "withdrawn"
    FAILED = "failed"


class RenterEvent(Enum):
    KERNEL_READY = "kernel_ready"
    LEASE_ENDED = "lease_ended"
    CLOSE_REQUESTED = "close_requested"
    CHAIN_SETTLED = "chain_settled"
    CHAIN_WITHDRAWN = "chain_withdrawn"


_S, _E = RenterState, RenterEvent
_NOT_FINAL = (_S.OPEN, _S.RUNNING, _S.STOPPED, _S.CLOSING)
ACTIVE_STATES = (_S.OPEN, _S.RUNNING)
FINAL_STATES = (_S.SETTLED, _S.WITHDRAWN, _S.FAILED)
INITIAL_STATES = (_S.OPEN, _S.FAILED)

TRANSITIONS: dict[tuple[RenterState, RenterEvent], RenterState] = {
    (_S.OPEN, _E.KERNEL_READY): _S.RUNNING,
    (_S.OPEN, _E.LEASE_ENDED): _S.STOPPED,
    (_S.RUNNING, _E.KERNEL_READY): _S.RUNNING,
    (_S.RUNNING, _E.LEASE_ENDED): _S.STOPPED,
    (_S.STOPPED, _E.LEASE_ENDED): _S.STOPPED,
    **{(s, _E.CLOSE_REQUESTED): _S.CLOSING for s in _NOT_FINAL},
    **{(s, _E.CHAIN_SETTLED): _S.SETTLED for s in _NOT_FINAL},
    **{(s, _E.CHAIN_WITHDRAWN): _S.WITHDRAWN for s in _NOT_FINAL},
    (_S.SETTLED, _E.CHAIN_SETTLED): _S.SETTLED,
    (_S.WITHDRAWN, _E.CHAIN_WITHDRAWN): _S.WITHDRAWN,
}


@dataclass(frozen=True)
class LeaseEvent:
    """One thing that happened to a renter's lease, seen in ``state``; ``at`` (a
    ``time.time()``) is when, for the events that set a time (KERNEL_READY, LEASE_ENDED)."""

    type: RenterEvent
    state: RenterState
    at: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.type, RenterEvent):
            raise ProtocolError(f"type must be a RenterEvent, got {self.type!r}")
        if not isinstance(self.state, RenterState):
            raise ProtocolError(f"state must be a RenterState, got {self.state!r}")
        timed = self.type in (_E.KERNEL_READY, _E.LEASE_ENDED)
        if timed and (
            isinstance(self.at, bool) or not isinstance(self.at, int | float) or self.at < 0
        ):
            raise ProtocolError(f"{self.type.value} needs the time it happened, got {self.at!r}")
        if not timed and self.at is not None:
            raise ProtocolError(f"at only goes with kernel_ready / lease_ended, not {self.type}")

    @property
    def next(self) -> RenterState:
        return next_state(self.state, self.type)


def next_state(state: RenterState, event: RenterEvent) -> RenterState:
    """The state after ``event`` in ``state``; ProtocolError for a pair the table lacks."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise ProtocolError(
            f"renter lease event {event.value} is not allowed in state {state.value}: this is "
            "a bug in the caller's lease bookkeeping (it acted on a lease it did not read "
            "first, or on a final one); report it"
        ) from None


def spent_source(state: RenterState) -> str:
    """ "chain" where the ledger's ``spent`` is the chain's (the channel closed; FAILED: nothing
    went on chain), "estimate" where it is what the renter signed (the provider may settle
    less)."""
    return "chain" if state in FINAL_STATES else "estimate"
