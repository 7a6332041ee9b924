"""core.lease_state: the provider's paid-lease state machine, driven by events and the clock."""

from __future__ import annotations

import pytest

from jupyter_gpumarket.core.lease_state import (
    TRANSITIONS,
    Event,
    EventType,
    LeaseMachine,
    LeasePolicy,
    LeaseState,
)
from jupyter_gpumarket.exceptions import ProtocolError

E, S = EventType, LeaseState


def running(policy=None, at=0.0) -> LeaseMachine:
    m = LeaseMachine(policy)
    m.handle(Event(E.KERNEL_READY), now=at)
    return m


def drive(m: LeaseMachine, until: float, step: float = 0.5) -> list[LeaseState]:
    """Poll every ``step`` seconds up to ``until``; the states entered."""
    seen, now = [], 0.0
    while now <= until:
        event = m.poll(now)
        if event is not None:
            seen.append(m.handle(event, now))
        now += step
    return seen


def test_defaults_are_15_s_interval_and_60_s_grace():
    assert LeasePolicy() == LeasePolicy(interval=15, grace=60, slack=5)


def test_on_time_vouchers_keep_running():
    m = running()
    for t in range(15, 300, 15):
        assert m.poll(t) is None
        m.handle(Event(E.VOUCHER_OK), now=t)
    assert m.state is S.RUNNING
    assert m.executions_allowed


def test_late_vouchers_warn_then_pause_then_stop_at_grace():
    m = running()
    assert drive(m, 70) == [S.SHORT, S.PAUSED, S.STOPPING]
    assert not m.executions_allowed
    assert not m.kernel_wanted
    m.handle(Event(E.SETTLE_DONE))
    assert m.state is S.SETTLED


def test_when_each_state_is_entered():
    m = running()
    assert m.next_deadline() == 20
    assert m.poll(19.9) is None  # within the slack: jitter is not lateness
    assert m.handle(m.poll(20.0), 20.0) is S.SHORT
    assert m.poll(25.0) is None  # already warned
    assert m.next_deadline() == 30
    assert m.executions_allowed
    assert m.handle(m.poll(30.0), 30.0) is S.PAUSED
    assert m.next_deadline() == 60
    assert m.poll(59.9) is None
    assert m.poll(60.0) == Event(E.GRACE_EXPIRED)


def test_a_voucher_clears_short_and_paused():
    m = running()
    m.handle(Event(E.VOUCHER_LATE, late_by=3), 18)
    assert m.state is S.SHORT
    m.handle(Event(E.VOUCHER_OK), now=19)
    assert m.state is S.RUNNING
    m.handle(Event(E.VOUCHER_LATE, late_by=15), 49)
    assert m.state is S.PAUSED
    m.handle(Event(E.VOUCHER_OK), now=50)
    assert m.state is S.RUNNING
    assert m.poll(69) is None  # timer restarted from the voucher at 50
    assert m.poll(70) is not None


def test_restart_keeps_the_lease_and_the_voucher_timer():
    m = running()
    m.handle(Event(E.KERNEL_READY), now=40)  # a restart finished
    assert m.state is S.RUNNING
    assert m.poll(61) == Event(E.GRACE_EXPIRED)  # the restart did not reset the timer


@pytest.mark.parametrize("event", [E.KERNEL_EXITED, E.RENTER_GONE])
def test_kernel_exit_or_renter_gone_stops(event):
    m = running()
    assert m.handle(Event(event)) is S.STOPPING
    assert m.handle(Event(E.VOUCHER_OK), now=5) is S.STOPPING  # a last voucher is still money
    assert m.poll(500) is None


def test_launch_failure_goes_straight_to_stopping():
    m = LeaseMachine()
    assert m.poll(1000) is None  # no timer before the kernel is ready: nothing is due
    assert m.handle(Event(E.KERNEL_EXITED)) is S.STOPPING


def test_illegal_events_are_caller_bugs():
    m = running()
    with pytest.raises(ProtocolError, match="settle_done is not allowed in state running"):
        m.handle(Event(E.SETTLE_DONE))
    m.handle(Event(E.RENTER_GONE))
    m.handle(Event(E.SETTLE_DONE))
    with pytest.raises(ProtocolError, match="not allowed in state settled"):
        m.handle(Event(E.SETTLE_DONE))
    assert m.handle(Event(E.KERNEL_EXITED)) is S.SETTLED  # late news is fine
    with pytest.raises(ProtocolError, match="needs the time"):
        running().handle(Event(E.VOUCHER_OK))


def test_every_state_has_rows_and_settled_is_terminal():
    assert {s for s, _ in TRANSITIONS} == set(LeaseState)
    assert {v for (s, _), v in TRANSITIONS.items() if s is S.SETTLED} == {S.SETTLED}


def test_events_and_policy_are_validated():
    with pytest.raises(ProtocolError, match="late_by only goes with VOUCHER_LATE"):
        Event(E.VOUCHER_OK, late_by=1)
    with pytest.raises(ProtocolError, match="negative"):
        Event(E.VOUCHER_LATE, late_by=-1)
    with pytest.raises(ProtocolError, match="grace"):
        LeasePolicy(interval=15, grace=10)
    with pytest.raises(ProtocolError, match="interval"):
        LeasePolicy(interval=0)
    with pytest.raises(ProtocolError, match="slack"):
        LeasePolicy(interval=15, slack=15)
