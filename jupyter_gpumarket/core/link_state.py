"""The renter's link to one lease as a state machine (pure; provisioning/link.py acts on it).

A link opens once (a new lease, or the adoption of a running one after a server restart),
then lives through cuts: each loss starts the link grace, each reconnect ends it. It dies when
the provider ends the lease, when a reconnect is refused for good, or when the grace runs out;
closing is the renter's own decision and ends everything.

.. code-block:: text

    state     event          -> state     what the link does on entering
    OPENING   CONNECTED      -> UP        read frames (ADOPTING: numbering taken from the agent)
    ADOPTING  CONNECTED      -> UP
    UP        LOST           -> LOST      note the time (lost_since); reconnect with backoff
    UP        ENDED          -> DEAD      the provider ended the lease: report the kernel lost
    LOST      CONNECTED      -> UP        resumed: both sides replay what the other missed,
                                          or revived: the silent link carries bytes again
    LOST      ENDED          -> DEAD      the silent link, kept open, brought the lease's end
    LOST      FAILED         -> DEAD      a refusal that retrying cannot fix
    LOST      GRACE_EXPIRED  -> DEAD      unreachable for longer than the link grace
    any       CLOSE          -> CLOSING   stop reading and reconnecting (dead_reason is kept)
    CLOSING   anything else  -> CLOSING   late news of a link the renter closed

The first connection's failure is the opener's exception, not an event: OPENING/ADOPTING only
go to UP or CLOSING. Any other pair (LOST in OPENING, CONNECTED in DEAD) is a bug in the
caller and raises ProtocolError.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from jupyter_gpumarket.exceptions import ProtocolError

__all__ = ["TRANSITIONS", "LinkEvent", "LinkState", "LinkStatus"]


class LinkState(enum.Enum):
    OPENING = "opening"
    ADOPTING = "adopting"
    UP = "up"
    LOST = "lost"
    DEAD = "dead"
    CLOSING = "closing"


class LinkEvent(enum.Enum):
    CONNECTED = "connected"
    LOST = "lost"
    ENDED = "ended"
    FAILED = "failed"
    GRACE_EXPIRED = "grace_expired"
    CLOSE = "close"


S, E = LinkState, LinkEvent
TRANSITIONS: dict[tuple[LinkState, LinkEvent], LinkState] = {
    (S.OPENING, E.CONNECTED): S.UP,
    (S.ADOPTING, E.CONNECTED): S.UP,
    (S.UP, E.LOST): S.LOST,
    (S.UP, E.ENDED): S.DEAD,
    (S.LOST, E.CONNECTED): S.UP,
    (S.LOST, E.ENDED): S.DEAD,
    (S.LOST, E.FAILED): S.DEAD,
    (S.LOST, E.GRACE_EXPIRED): S.DEAD,
    **{(state, E.CLOSE): S.CLOSING for state in S},
    **{(S.CLOSING, event): S.CLOSING for event in E},
}


@dataclass
class LinkStatus:
    """Where the link stands; ``lost_since`` while LOST, ``dead_reason`` once DEAD."""

    state: LinkState = LinkState.OPENING
    lost_since: float | None = None
    dead_reason: str | None = None

    @classmethod
    def opening(cls, *, adopt: bool) -> LinkStatus:
        return cls(LinkState.ADOPTING if adopt else LinkState.OPENING)

    @property
    def closing(self) -> bool:
        return self.state is LinkState.CLOSING

    @property
    def adopting(self) -> bool:
        return self.state is LinkState.ADOPTING

    def handle(self, event: LinkEvent, *, now: float = 0.0, reason: str = "") -> LinkState:
        """Apply ``event`` (``now`` for LOST, ``reason`` for the events that kill the link)."""
        new = TRANSITIONS.get((self.state, event))
        if new is None:
            raise ProtocolError(
                f"link state bug: {event.value} is not expected in state {self.state.value}"
            )
        if self.state is LinkState.CLOSING:
            return new
        if new is LinkState.LOST:
            self.lost_since = now
        elif new is LinkState.UP:
            self.lost_since = None
        elif new is LinkState.DEAD:
            self.dead_reason = reason or event.value
        self.state = new
        return new
