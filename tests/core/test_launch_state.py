"""The launch state machine: the documented states, labels and transitions, fed synchronously."""

from __future__ import annotations

import pytest

from jupyter_gpumarket.core.launch_state import (
    CANCELLABLE,
    LABELS,
    TRANSITIONS,
    EndReason,
    LaunchEvent,
    LaunchEventType,
    LaunchMachine,
    LaunchState,
)
from jupyter_gpumarket.exceptions import LaunchStateConflict, ProtocolError

E, S = LaunchEventType, LaunchState

# docs/server-api.md's table, word for word
DOC_TABLE = {
    "choosing": ("choosing an offer", True),
    "confirming": ("waiting for your confirmation", True),
    "opening_channel": ("opening channel (wallet signs)", True),
    "connecting": ("connecting", True),
    "syncing_files": ("syncing files", True),
    "starting_kernel": ("starting kernel", True),
    "ready": ("ready", False),
    "busy": ("busy", False),
    "reconnecting": ("reconnecting (attempt N)", False),
    "low_funds": ("low funds", False),
    "lost": ("lost", False),
    "ended": ("ended", False),
    "failed": ("failed at STEP", False),
}


def test_states_labels_and_cancellable_are_the_documented_ones() -> None:
    assert {s.value: (LABELS[s], s in CANCELLABLE) for s in S} == DOC_TABLE


def run(*events: LaunchEvent, start: float = 100.0) -> tuple[LaunchMachine, list[str]]:
    m = LaunchMachine(start)
    seen = [m.state.value]
    for i, ev in enumerate(events, 1):
        if m.handle(ev, start + i):
            seen.append(m.state.value)
    return m, seen


def test_a_paid_launch_walks_every_step_with_its_elapsed_time() -> None:
    m, seen = run(
        LaunchEvent(E.CONFIRM_NEEDED),
        LaunchEvent(E.OPEN_CHANNEL),
        LaunchEvent(E.CONNECT),
        LaunchEvent(E.SYNC_FILES),
        LaunchEvent(E.START_KERNEL),
        LaunchEvent(E.KERNEL_READY),
        LaunchEvent(E.KERNEL_BUSY),
        LaunchEvent(E.KERNEL_IDLE),
    )
    assert seen == [
        "choosing",
        "confirming",
        "opening_channel",
        "connecting",
        "syncing_files",
        "starting_kernel",
        "ready",
        "busy",
        "ready",
    ]
    snap = m.snapshot(110.5)
    assert snap["elapsed_s"] == 10.5
    assert snap["state_elapsed_s"] == 2.5
    assert snap["cancellable"] is False
    assert snap["label"] == "ready"


def test_reconnecting_counts_attempts_and_is_never_shown_idle() -> None:
    m, _ = run(LaunchEvent(E.CONNECT), LaunchEvent(E.KERNEL_READY))
    m.handle(LaunchEvent(E.LINK_DOWN, attempt=1), 200)
    m.handle(LaunchEvent(E.KERNEL_IDLE), 201)  # a stale status while the link is down
    assert m.state is S.RECONNECTING
    assert m.handle(LaunchEvent(E.LINK_DOWN, attempt=2), 202)
    assert m.label == "reconnecting (attempt 2)"
    assert m.snapshot(203)["attempt"] == 2
    m.handle(LaunchEvent(E.LINK_UP), 204)
    assert m.state is S.READY
    assert m.attempt is None
    m.handle(LaunchEvent(E.LINK_DOWN, attempt=1), 205)
    m.handle(LaunchEvent(E.LINK_LOST, message="unreachable for 120 s"), 206)
    m.handle(LaunchEvent(E.END, reason=EndReason.PROVIDER_GONE), 207)
    assert (m.state, m.reason) == (S.ENDED, EndReason.PROVIDER_GONE)


def test_low_funds_holds_until_topped_up() -> None:
    m, _ = run(LaunchEvent(E.CONNECT), LaunchEvent(E.KERNEL_READY))
    m.handle(LaunchEvent(E.FUNDS_LOW, message="80 % of the budget spent"), 200)
    m.handle(LaunchEvent(E.KERNEL_BUSY), 201)
    assert m.state is S.LOW_FUNDS
    assert m.message is None
    m.handle(LaunchEvent(E.FUNDS_OK), 202)
    assert m.state is S.READY


@pytest.mark.parametrize("at", range(1, 6))
def test_cancel_works_in_every_state_before_ready(at: int) -> None:
    steps = [E.CONFIRM_NEEDED, E.OPEN_CHANNEL, E.CONNECT, E.SYNC_FILES, E.START_KERNEL]
    m, _ = run(*(LaunchEvent(e) for e in steps[:at]))
    assert m.cancellable
    m.handle(LaunchEvent(E.CANCEL, message="cancelled; gas spent: 0"), 300)
    snap = m.snapshot(300)
    assert (snap["state"], snap["reason"], snap["cancellable"]) == ("ended", "cancelled", False)
    assert snap["message"] == "cancelled; gas spent: 0"


@pytest.mark.parametrize("live", [E.KERNEL_IDLE, E.KERNEL_BUSY])
def test_cancel_after_ready_is_a_conflict_that_says_stop_instead(live: LaunchEventType) -> None:
    m, _ = run(LaunchEvent(E.CONNECT), LaunchEvent(E.KERNEL_READY), LaunchEvent(live))
    with pytest.raises(LaunchStateConflict, match="stop the kernel instead"):
        m.handle(LaunchEvent(E.CANCEL), 300)
    assert m.state in (S.READY, S.BUSY)


def test_failed_names_the_step_and_what_to_do() -> None:
    m, _ = run(LaunchEvent(E.OPEN_CHANNEL), LaunchEvent(E.CONNECT))
    m.handle(LaunchEvent(E.FAIL, message="provider refused: full"), 200)
    snap = m.snapshot(200)
    assert snap["state"] == "failed"
    assert snap["step"] == "connecting"
    assert snap["label"] == "failed at connecting"
    assert snap["message"].startswith("provider refused: full; ")
    assert "another offer" in snap["message"]
    assert not m.handle(LaunchEvent(E.KERNEL_READY), 201)  # late news changes nothing


def test_a_failover_goes_back_to_opening_a_channel() -> None:
    _, seen = run(
        LaunchEvent(E.OPEN_CHANNEL),
        LaunchEvent(E.CONNECT),
        LaunchEvent(E.OPEN_CHANNEL),
        LaunchEvent(E.CONNECT),
        LaunchEvent(E.KERNEL_READY),
    )
    assert seen[-3:] == ["opening_channel", "connecting", "ready"]


def test_a_restart_starts_the_kernel_again_on_the_same_lease() -> None:
    m, _ = run(LaunchEvent(E.CONNECT), LaunchEvent(E.KERNEL_READY))
    m.handle(LaunchEvent(E.START_KERNEL), 200)
    assert m.state is S.STARTING_KERNEL
    m.handle(LaunchEvent(E.KERNEL_READY), 201)
    assert m.state is S.READY


def test_every_pair_outside_the_table_is_a_conflict() -> None:
    for state in S:
        for ev in E:
            if (state, ev) in TRANSITIONS:
                continue
            m = LaunchMachine(0)
            m.state = state
            with pytest.raises(LaunchStateConflict):
                m.handle(_event(ev), 1)


def _event(ev: LaunchEventType) -> LaunchEvent:
    if ev is E.LINK_DOWN:
        return LaunchEvent(ev, attempt=1)
    if ev is E.END:
        return LaunchEvent(ev, reason=EndReason.STOPPED)
    return LaunchEvent(ev)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"type": "connect"}, "type"),
        ({"type": E.LINK_DOWN}, "attempt"),
        ({"type": E.LINK_DOWN, "attempt": 0}, "attempt"),
        ({"type": E.LINK_DOWN, "attempt": True}, "attempt"),
        ({"type": E.CONNECT, "attempt": 1}, "attempt"),
        ({"type": E.END}, "reason"),
        ({"type": E.END, "reason": "culled"}, "reason"),
        ({"type": E.CANCEL, "reason": EndReason.CULLED}, "reason"),
        ({"type": E.CONNECT, "message": 3}, "message"),
    ],
)
def test_events_are_validated_where_they_are_made(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ProtocolError, match=field):
        LaunchEvent(**kwargs)  # type: ignore[arg-type]


def test_the_clock_must_be_seconds() -> None:
    with pytest.raises(ProtocolError, match="now"):
        LaunchMachine(float("nan"))
    with pytest.raises(ProtocolError, match="now"):
        LaunchMachine(0).handle(LaunchEvent(E.CONNECT), "soon")  # type: ignore[arg-type]
