"""The renter link's state table (core.link_state)."""

from __future__ import annotations

import pytest

from jupyter_gpumarket.core.link_state import TRANSITIONS, LinkEvent, LinkState, LinkStatus
from jupyter_gpumarket.exceptions import ProtocolError

S, E = LinkState, LinkEvent


def test_a_link_lives_through_cuts_and_dies_when_the_grace_runs_out() -> None:
    link = LinkStatus.opening(adopt=False)
    assert link.handle(E.CONNECTED) is S.UP
    assert link.handle(E.LOST, now=10.0) is S.LOST
    assert link.lost_since == 10.0
    assert link.handle(E.CONNECTED) is S.UP
    assert link.lost_since is None
    link.handle(E.LOST, now=20.0)
    assert link.handle(E.GRACE_EXPIRED, reason="unreachable for 120 s") is S.DEAD
    assert link.dead_reason == "unreachable for 120 s"


def test_closing_is_final_and_keeps_why_the_link_died() -> None:
    link = LinkStatus.opening(adopt=True)
    assert link.adopting
    link.handle(E.CONNECTED)
    link.handle(E.ENDED, reason="the provider ended the lease")
    assert link.handle(E.CLOSE) is S.CLOSING
    for event in E:
        assert link.handle(event, now=99.0) is S.CLOSING
    assert link.closing
    assert link.dead_reason == "the provider ended the lease"
    assert link.lost_since is None


@pytest.mark.parametrize(
    ("state", "event"),
    [(s, e) for s in S for e in E if (s, e) not in TRANSITIONS],
)
def test_every_pair_outside_the_table_is_a_caller_bug(state: LinkState, event: LinkEvent) -> None:
    with pytest.raises(ProtocolError, match="link state bug"):
        LinkStatus(state).handle(event)
