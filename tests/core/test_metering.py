"""core.metering: billed seconds, amounts due, and the renter's voucher schedule."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_gpumarket.core.metering import (
    BillingClock,
    ClockState,
    Tick,
    VoucherSchedule,
    amount_due,
    initial_deposit,
)
from jupyter_gpumarket.exceptions import PaymentError

PRICE = 2_500_000  # 2.50 TUSD per hour


def test_amount_due_rounds_down_like_the_registry():
    assert amount_due(3600, 1) == 1
    assert amount_due(3599, 1) == 0
    assert amount_due(PRICE, 3600) == PRICE
    assert amount_due(PRICE, 90) == PRICE * 90 // 3600
    with pytest.raises(PaymentError, match="seconds must not be negative"):
        amount_due(PRICE, -1)


def test_initial_deposit_is_the_smaller_of_budget_and_hours():
    assert initial_deposit(10 * PRICE, PRICE, 2) == 2 * PRICE
    assert initial_deposit(PRICE // 2, PRICE, 2) == PRICE // 2
    assert initial_deposit(10 * PRICE, PRICE, 0.5) == PRICE // 2
    with pytest.raises(PaymentError, match="initial_hours"):
        initial_deposit(PRICE, PRICE, 0)
    with pytest.raises(PaymentError, match="budget"):
        initial_deposit(0, PRICE)


def test_launch_sync_and_failure_are_free():
    clock = BillingClock()
    # channel open at 0, file push 0..30 s, kernel never becomes ready, launch fails at 40 s
    clock.kernel_stopped(40.0)
    clock.end(41.0)
    assert clock.billed_seconds(100.0) == 0
    assert clock.state is ClockState.ENDED


def test_billing_starts_at_ready_and_pauses_across_a_restart():
    clock = BillingClock()
    clock.kernel_ready(30.0)  # after a 30 s file push
    assert clock.billed_seconds(45.5) == 15
    clock.kernel_ready(46.0)  # duplicate ready: ignored
    clock.kernel_stopped(60.0)  # restart begins
    assert clock.billed_seconds(70.0) == 30  # paused while restarting + re-syncing
    clock.kernel_ready(75.0)
    clock.end(100.25)
    assert clock.running_seconds(500.0) == pytest.approx(55.25)
    assert clock.billed_seconds(500.0) == 55
    clock.kernel_ready(600.0)  # late news after the end
    assert clock.billed_seconds(700.0) == 55


def test_clock_refuses_time_going_backwards():
    clock = BillingClock()
    clock.kernel_ready(10.0)
    with pytest.raises(PaymentError, match="monotonic"):
        clock.kernel_stopped(9.0)


def test_schedule_signs_in_arrears_and_final_is_exact():
    s = VoucherSchedule(price_per_hour=3600, deposit=10_000, budget=10_000)
    assert s.tick(0) == Tick(amount=None)
    assert s.tick(15).amount == 15
    assert s.tick(15).amount is None  # nothing new: no duplicate voucher
    assert s.tick(30).amount == 30
    assert s.final(37) == 37


def test_prepay_lead_is_a_knob_that_moves_the_risk_to_the_renter():
    s = VoucherSchedule(price_per_hour=3600, deposit=1000, budget=1000, lead_seconds=15)
    assert s.tick(0).amount == 15  # one interval ahead
    assert s.tick(15).amount == 30
    assert s.final(20) == 30  # the final voucher cannot go below what was signed


def test_schedule_warns_once_at_80_percent_then_stops_before_the_limit():
    s = VoucherSchedule(price_per_hour=3600, deposit=100, budget=1000, interval=10)
    ticks = [s.tick(t) for t in range(0, 200, 10)]
    warnings = [t.warn for t in ticks if t.warn]
    assert len(warnings) == 1
    assert "80 %" in warnings[0]
    assert "deposit" in warnings[0]
    assert "auto top-up" in warnings[0]
    stop_at = next(i for i, t in enumerate(ticks) if t.stop)
    assert ticks[stop_at].stop is not None
    assert "deposit" in ticks[stop_at].stop
    assert 10 * stop_at + 10 > 100  # the next interval would not have been payable
    assert max(t.amount or 0 for t in ticks) <= 100
    assert s.final(10_000) == 100  # never above the deposit


def test_schedule_stops_at_the_budget_cap():
    s = VoucherSchedule(price_per_hour=3600, deposit=1000, budget=50, interval=15)
    ticks = [s.tick(t) for t in (15, 30, 45)]
    assert [t.amount for t in ticks] == [15, 30, 45]
    assert ticks[1].stop is None
    assert ticks[2].stop is not None  # 45 + 15 s would be above the cap of 50
    assert "budget cap" in ticks[2].stop
    assert s.tick(60) == Tick(amount=None, stop="the budget is spent; the lease was stopped")
    assert s.final(60) == 50


def test_auto_top_up_asks_once_then_continues_to_the_budget():
    s = VoucherSchedule(price_per_hour=3600, deposit=100, budget=250, interval=10, auto_top_up=True)
    assert s.tick(60).top_up == 0  # 60 + 4 intervals <= 100
    assert s.tick(61).top_up == 100  # 61 + 4 intervals > 100
    assert s.tick(60).top_up == 0  # pending: not asked twice
    assert s.tick(60).stop is None
    s.deposit_added(100)
    assert s.limit == 200
    assert s.tick(170).top_up == 50  # the last step is what the budget allows
    s.deposit_added(50)
    ticks = [s.tick(t) for t in range(180, 300, 10)]
    assert any(t.stop and "budget cap" in t.stop for t in ticks)
    assert s.signed <= 250


def test_top_up_failure_allows_asking_again():
    s = VoucherSchedule(
        price_per_hour=3600, deposit=100, budget=1000, interval=10, auto_top_up=True
    )
    assert s.tick(70).top_up == 100
    s.top_up_failed()
    assert s.tick(71).top_up == 100


def test_schedule_validates_its_inputs():
    with pytest.raises(PaymentError, match="interval"):
        VoucherSchedule(price_per_hour=1, deposit=1, budget=1, interval=0)
    with pytest.raises(PaymentError, match="price_per_hour"):
        VoucherSchedule(price_per_hour=1.5, deposit=1, budget=1)  # type: ignore[arg-type]
    with pytest.raises(PaymentError, match="amount"):
        Tick(amount=-1)


segments = st.lists(
    st.tuples(st.floats(0, 300, allow_nan=False), st.floats(0, 900, allow_nan=False)),
    min_size=1,
    max_size=8,
)


@settings(max_examples=200, deadline=None)
@given(
    price=st.integers(1, 10**10),
    deposit=st.integers(1, 10**9),
    budget=st.integers(1, 10**9),
    interval=st.integers(1, 60),
    auto=st.booleans(),
    parts=segments,
)
def test_vouchers_monotonic_and_within_deposit_and_budget(
    price, deposit, budget, interval, auto, parts
):
    clock = BillingClock()
    s = VoucherSchedule(
        price_per_hour=price, deposit=deposit, budget=budget, interval=interval, auto_top_up=auto
    )
    now, last, signed = 0.0, 0, []
    for gap, run in parts:
        now += gap
        clock.kernel_ready(now)
        end = now + run
        while now < end and not s.stopped:
            now = min(end, now + interval)
            tick = s.tick(clock.billed_seconds(now))
            if tick.top_up:
                s.deposit_added(tick.top_up)
            if tick.amount is not None:
                assert tick.amount > last
                last = tick.amount
                signed.append(tick.amount)
        clock.kernel_stopped(now)
    final = s.final(clock.billed_seconds(now))
    assert final >= last
    assert all(a <= min(s.deposit, budget) for a in [*signed, final])
    assert s.deposit <= max(deposit, budget)


@settings(max_examples=300, deadline=None)
@given(
    price=st.integers(1, 10**12),
    parts=st.lists(st.integers(0, 10**7), min_size=1, max_size=6),
)
def test_billing_error_is_below_one_second_of_price(price, parts):
    """Over any T (ms resolution), 0 <= exact - charged < price/3600 + 1 base unit."""
    clock = BillingClock()
    now = 0.0
    total_ms = 0
    for ms in parts:
        clock.kernel_ready(now)
        now += ms / 1000
        clock.kernel_stopped(now)
        total_ms += ms
        now += 5.0
    s = VoucherSchedule(price_per_hour=price, deposit=10**30, budget=10**30)
    charged = s.final(clock.billed_seconds(now))
    exact = Fraction(price * total_ms, 3600 * 1000)
    assert exact - charged >= 0
    assert exact - charged < Fraction(price, 3600) + 1


def test_a_clock_carries_seconds_billed_before_it():
    clock = BillingClock(carried=100.5)
    assert clock.billed_seconds(0.0) == 100
    clock.kernel_ready(10.0)
    assert clock.billed_seconds(20.0) == 110
    with pytest.raises(PaymentError, match="carried"):
        BillingClock(carried=-1)
