"""Flow window sized from the measured delivery rate (core.flow)."""

from __future__ import annotations

import pytest

from jupyter_gpumarket.core.flow import MIB, FlowWindow


def _run_link(flow: FlowWindow, rate: float, seconds: float, msg: int = MIB) -> float:
    """Push ``msg``-byte frames through a link of ``rate`` bytes/s (acked on arrival, one
    way 75 ms) as fast as the window allows; return the largest in-flight seen."""
    now, seq, link_free, peak = 0.0, 0, 0.0, 0
    arrivals: list[tuple[float, int]] = []
    while now < seconds:
        while flow.may_write(msg):
            seq += 1
            flow.on_written(seq, msg, now)
            link_free = max(link_free, now) + msg / rate
            arrivals.append((link_free + 0.15, seq))  # + one round trip until the ack is back
            peak = max(peak, flow.in_flight)
        now = arrivals[0][0]
        while arrivals and arrivals[0][0] <= now:
            flow.on_acked(arrivals.pop(0)[1], now)
    return peak


def test_a_slow_link_gets_a_window_of_a_few_seconds_of_its_own_rate() -> None:
    flow = FlowWindow(target_seconds=2.0, min_bytes=2 * MIB, max_bytes=32 * MIB)
    rate = 1.25e6  # 10 Mbit/s
    peak = _run_link(flow, rate, 30.0)
    assert flow.rate == pytest.approx(rate, rel=0.15)
    assert peak <= 2.0 * rate + 2 * MIB  # never more than ~2 s of the link queued ahead
    assert flow.window == max(2 * MIB, int(flow.rate * 2.0))


def test_a_fast_link_opens_the_window_up_to_the_cap() -> None:
    flow = FlowWindow(target_seconds=2.0, min_bytes=2 * MIB, max_bytes=32 * MIB)
    _run_link(flow, 100e6, 5.0)
    assert flow.window == 32 * MIB


def test_a_frame_larger_than_the_window_goes_out_alone() -> None:
    flow = FlowWindow(min_bytes=MIB, max_bytes=MIB)
    assert flow.may_write(10 * MIB)
    flow.on_written(1, 10 * MIB, 0.0)
    assert not flow.may_write(1)
    flow.on_acked(1, 1.0)
    assert flow.in_flight == 0
    assert flow.may_write(10 * MIB)


def test_acks_count_whole_frames_and_a_new_connection_starts_empty() -> None:
    flow = FlowWindow()
    for seq in (1, 2, 3):
        flow.on_written(seq, 100, 0.0)
    flow.on_acked(2, 0.1)
    assert flow.in_flight == 100
    flow.on_acked(2, 0.2)  # the same ack again changes nothing
    assert flow.in_flight == 100
    flow.reset()
    assert flow.in_flight == 0
    flow.on_acked(3, 0.3)  # a late ack of the old connection
    assert flow.in_flight == 0


@pytest.mark.parametrize(("target", "lo", "hi"), [(0.0, 1, 2), (1.0, 0, 2), (1.0, 3, 2)])
def test_bad_settings_are_refused(target: float, lo: int, hi: int) -> None:
    with pytest.raises(ValueError, match="target_seconds"):
        FlowWindow(target_seconds=target, min_bytes=lo, max_bytes=hi)
