"""core.renter_lease_state: the renter's lease states as a table."""

from __future__ import annotations

import pytest

from jupyter_gpumarket.core.renter_lease_state import (
    FINAL_STATES,
    TRANSITIONS,
    LeaseEvent,
    RenterEvent,
    RenterState,
    next_state,
    spent_source,
)
from jupyter_gpumarket.exceptions import ProtocolError

S, E = RenterState, RenterEvent


@pytest.mark.parametrize(
    ("path", "end"),
    [
        ([E.KERNEL_READY, E.KERNEL_READY, E.LEASE_ENDED, E.CHAIN_SETTLED], S.SETTLED),
        ([E.KERNEL_READY, E.LEASE_ENDED, E.CLOSE_REQUESTED, E.CHAIN_WITHDRAWN], S.WITHDRAWN),
        ([E.LEASE_ENDED, E.CLOSE_REQUESTED, E.CHAIN_SETTLED], S.SETTLED),  # launch failed
        ([E.KERNEL_READY, E.CHAIN_SETTLED, E.CHAIN_SETTLED], S.SETTLED),  # settled while running
    ],
)
def test_a_lease_moves_along_the_table(path: list[RenterEvent], end: RenterState) -> None:
    state = S.OPEN
    for event in path:
        state = next_state(state, event)
    assert state is end


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (S.STOPPED, E.KERNEL_READY),  # a kernel ready after the lease ended
        (S.SETTLED, E.LEASE_ENDED),  # the renter's estimate over the chain's numbers
        (S.SETTLED, E.CHAIN_WITHDRAWN),
        (S.WITHDRAWN, E.CLOSE_REQUESTED),
        (S.FAILED, E.KERNEL_READY),
        (S.CLOSING, E.KERNEL_READY),
    ],
)
def test_a_move_the_table_lacks_is_the_callers_bug(state: RenterState, event: RenterEvent) -> None:
    with pytest.raises(ProtocolError, match=f"{event.value} is not allowed in state {state.value}"):
        next_state(state, event)
    made = LeaseEvent(event, state, 1.0 if event in (E.KERNEL_READY, E.LEASE_ENDED) else None)
    with pytest.raises(ProtocolError, match="bug in the caller"):
        _ = made.next


def test_final_states_only_take_their_own_chain_news() -> None:
    for (state, event), new in TRANSITIONS.items():
        if state in FINAL_STATES:
            assert new is state, (state, event)
    assert not any(state is S.FAILED for state, _ in TRANSITIONS)


def test_events_are_validated_where_they_are_made() -> None:
    with pytest.raises(ProtocolError, match="type must be a RenterEvent"):
        LeaseEvent("kernel_ready", S.OPEN, 1.0)  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match="state must be a RenterState"):
        LeaseEvent(E.KERNEL_READY, "open", 1.0)  # type: ignore[arg-type]
    for bad in (None, -1.0, True, "now"):
        with pytest.raises(ProtocolError, match="needs the time it happened"):
            LeaseEvent(E.LEASE_ENDED, S.RUNNING, bad)  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match="at only goes with"):
        LeaseEvent(E.CHAIN_SETTLED, S.STOPPED, 5.0)
    assert LeaseEvent(E.KERNEL_READY, S.OPEN, 5.0).next is S.RUNNING


def test_spent_is_an_estimate_until_the_chain_closed_the_channel() -> None:
    assert {s: spent_source(s) for s in S} == {
        S.OPEN: "estimate",
        S.RUNNING: "estimate",
        S.STOPPED: "estimate",
        S.CLOSING: "estimate",
        S.SETTLED: "chain",
        S.WITHDRAWN: "chain",
        S.FAILED: "chain",
    }
