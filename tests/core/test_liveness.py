"""Liveness judged by progress: fed times, asserted actions (core.liveness)."""

from __future__ import annotations

import pytest

from jupyter_gpumarket.core.liveness import Liveness, LivenessAction

A = LivenessAction


def test_a_quiet_link_is_probed_then_declared_dead_after_the_silence_timeout() -> None:
    live = Liveness(0.0, interval=1.0, silence_timeout=4.0)
    assert live.poll(0.5) is A.NOTHING
    assert live.poll(1.0) is A.PING
    assert live.poll(1.5) is A.NOTHING  # one probe per interval
    assert live.poll(2.0) is A.PING
    assert live.poll(3.0) is A.PING
    assert live.poll(3.5) is A.NOTHING
    assert live.poll(4.25) is A.DEAD
    assert live.dead
    assert live.poll(4.5) is A.NOTHING  # DEAD is said once per silence
    assert live.poll(5.25) is A.PING  # the silent link is still probed, once per interval
    assert live.poll(5.5) is A.NOTHING
    assert live.poll(100.0) is A.PING
    assert live.dead


def test_bytes_after_the_silence_revive_the_same_link_and_the_rules_start_over() -> None:
    live = Liveness(0.0, interval=1.0, silence_timeout=4.0)
    live.received(2.0)
    assert live.poll(6.25) is A.DEAD
    live.received(1.0)  # a stale report (older than the silence) revives nothing
    assert live.poll(6.5) is not A.REVIVED
    live.received(16.0)  # a 10 s stall ends: the held bytes arrive
    assert live.poll(16.25) is A.REVIVED
    assert not live.dead
    assert live.poll(16.5) is A.NOTHING
    assert live.poll(20.25) is A.DEAD  # silent again: declared again
    assert live.poll(20.5) is A.NOTHING


def test_any_bytes_received_keep_a_link_alive_however_late_a_pong_would_be() -> None:
    # a receiver of a long download: bytes arrive all the time, no pong ever comes back
    live = Liveness(0.0, interval=1.0, silence_timeout=4.0)
    for tick in range(1, 200):
        now = tick * 0.25
        live.received(now - 0.1)
        assert live.poll(now) in (A.NOTHING, A.HEARTBEAT)


def test_a_receiver_that_sends_nothing_sends_a_heartbeat_each_interval() -> None:
    live = Liveness(0.0, interval=1.0, silence_timeout=4.0)
    actions = []
    for tick in range(1, 17):
        now = tick * 0.25
        live.received(now)
        actions.append(live.poll(now))
    assert actions.count(A.HEARTBEAT) == 4
    assert A.PING not in actions


def test_what_we_send_spares_heartbeats_but_not_probes() -> None:
    # a sender of a long upload hears nothing: sending is no proof that the peer lives
    live = Liveness(0.0, interval=1.0, silence_timeout=4.0)
    actions = []
    for tick in range(1, 19):
        now = tick * 0.25
        live.sent(now)
        actions.append(live.poll(now))
    assert A.HEARTBEAT not in actions
    assert actions.count(A.PING) == 4
    assert actions.count(A.DEAD) == 1
    assert actions[-1] is A.NOTHING  # declared at 4.25 s, probed again one interval later


def test_stale_reports_do_not_move_time_back() -> None:
    live = Liveness(10.0, interval=1.0, silence_timeout=4.0)
    live.received(12.0)
    live.received(5.0)
    assert live.silent_for(13.0) == 1.0


@pytest.mark.parametrize(("interval", "timeout"), [(0.0, 4.0), (1.0, 1.0), (2.0, 1.0)])
def test_settings_that_would_kill_a_quiet_link_are_refused(interval: float, timeout: float) -> None:
    with pytest.raises(ValueError, match="must"):
        Liveness(0.0, interval=interval, silence_timeout=timeout)
