"""One gpumarket kernel's launch, from choosing an offer to its end (pure; the provisioner
feeds events, every UI shows the states).

The names and labels are the contract of docs/server-api.md: the widget, the server's event
stream, the JupyterLab panel and the server log all show ``label`` word for word. A dev
launch skips ``confirming`` and ``opening_channel``; a launch without files to sync skips
``syncing_files``; a failover goes back from any launch step to ``opening_channel`` for the
next offer. ``ready ⇄ busy`` follows the kernel's iopub status, but a dead link is never
``ready``: while it is down the state is ``reconnecting`` whatever the kernel said last.

.. code-block:: text

    state            event          -> next state       what it means
    <launch step>    CONFIRM_NEEDED -> confirming       the quote waits for the user
    <launch step>    OPEN_CHANNEL   -> opening_channel  the wallet signs the deposit
    <launch step>    CONNECT        -> connecting       wss + challenge to the provider
    <launch step>    SYNC_FILES     -> syncing_files    the notebook's directory goes over
    <launch step>    START_KERNEL   -> starting_kernel  the agent starts the kernel
    <launch step>    KERNEL_READY   -> ready            billing starts (paid)
    <launch step>    FAIL           -> failed           ``step`` = the state it failed in
    <launch step>    CANCEL         -> ended            reason cancelled, nothing billed
    ready|busy|low_funds  START_KERNEL -> starting_kernel   a restart on the same lease
    ready|busy       KERNEL_BUSY    -> busy
    ready|busy       KERNEL_IDLE    -> ready
    ready|busy|low_funds|reconnecting  LINK_DOWN -> reconnecting  ``attempt`` counts up
    reconnecting     LINK_UP        -> ready
    reconnecting     KERNEL_BUSY | KERNEL_IDLE | FUNDS_LOW -> reconnecting  (the link decides)
    ready|busy       FUNDS_LOW      -> low_funds        voucher / deposit warning
    low_funds        FUNDS_LOW | KERNEL_BUSY | KERNEL_IDLE -> low_funds
    low_funds        FUNDS_OK       -> ready            topped up
    <live>           LINK_LOST      -> lost             the grace ran out
    <live>|lost      END            -> ended            ``reason`` says why
    ended|failed     anything       -> same             late news

(<launch step> = choosing, confirming, opening_channel, connecting, syncing_files,
starting_kernel; <live> = ready, busy, low_funds, reconnecting.) Any other pair is a bug in
the caller (for example CANCEL once ready) and raises :class:`LaunchStateConflict`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any

from jupyter_gpumarket.exceptions import LaunchStateConflict, ProtocolError

__all__ = [
    "CANCELLABLE",
    "LABELS",
    "LAUNCH_STEPS",
    "TRANSITIONS",
    "EndReason",
    "LaunchEvent",
    "LaunchEventType",
    "LaunchMachine",
    "LaunchState",
    "step_hint",
]


class LaunchState(Enum):
    CHOOSING = "choosing"
    CONFIRMING = "confirming"
    OPENING_CHANNEL = "opening_channel"
    CONNECTING = "connecting"
    SYNCING_FILES = "syncing_files"
    STARTING_KERNEL = "starting_kernel"
    READY = "ready"
    BUSY = "busy"
    RECONNECTING = "reconnecting"
    LOW_FUNDS = "low_funds"
    LOST = "lost"
    ENDED = "ended"
    FAILED = "failed"


class EndReason(Enum):
    CANCELLED = "cancelled"
    STOPPED = "stopped"
    CULLED = "culled"
    DEPOSIT_USED = "deposit_used"
    PROVIDER_GONE = "provider_gone"
    BUDGET = "budget"


class LaunchEventType(Enum):
    CONFIRM_NEEDED = "confirm_needed"
    OPEN_CHANNEL = "open_channel"
    CONNECT = "connect"
    SYNC_FILES = "sync_files"
    START_KERNEL = "start_kernel"
    KERNEL_READY = "kernel_ready"
    KERNEL_BUSY = "kernel_busy"
    KERNEL_IDLE = "kernel_idle"
    LINK_DOWN = "link_down"
    LINK_UP = "link_up"
    FUNDS_LOW = "funds_low"
    FUNDS_OK = "funds_ok"
    LINK_LOST = "link_lost"
    FAIL = "fail"
    CANCEL = "cancel"
    END = "end"


_S, _E = LaunchState, LaunchEventType

LABELS: dict[LaunchState, str] = {
    _S.CHOOSING: "choosing an offer",
    _S.CONFIRMING: "waiting for your confirmation",
    _S.OPENING_CHANNEL: "opening channel (wallet signs)",
    _S.CONNECTING: "connecting",
    _S.SYNCING_FILES: "syncing files",
    _S.STARTING_KERNEL: "starting kernel",
    _S.READY: "ready",
    _S.BUSY: "busy",
    _S.RECONNECTING: "reconnecting (attempt N)",
    _S.LOW_FUNDS: "low funds",
    _S.LOST: "lost",
    _S.ENDED: "ended",
    _S.FAILED: "failed at STEP",
}

LAUNCH_STEPS = (
    _S.CHOOSING,
    _S.CONFIRMING,
    _S.OPENING_CHANNEL,
    _S.CONNECTING,
    _S.SYNCING_FILES,
    _S.STARTING_KERNEL,
)
CANCELLABLE = frozenset(LAUNCH_STEPS)
_LIVE = (_S.READY, _S.BUSY, _S.LOW_FUNDS, _S.RECONNECTING)
_STEP_EVENTS = {
    _E.CONFIRM_NEEDED: _S.CONFIRMING,
    _E.OPEN_CHANNEL: _S.OPENING_CHANNEL,
    _E.CONNECT: _S.CONNECTING,
    _E.SYNC_FILES: _S.SYNCING_FILES,
    _E.START_KERNEL: _S.STARTING_KERNEL,
    _E.KERNEL_READY: _S.READY,
    _E.FAIL: _S.FAILED,
    _E.CANCEL: _S.ENDED,
}

TRANSITIONS: dict[tuple[LaunchState, LaunchEventType], LaunchState] = {
    **{(s, e): nxt for s in LAUNCH_STEPS for e, nxt in _STEP_EVENTS.items()},
    **{(s, _E.START_KERNEL): _S.STARTING_KERNEL for s in (_S.READY, _S.BUSY, _S.LOW_FUNDS)},
    (_S.READY, _E.KERNEL_BUSY): _S.BUSY,
    (_S.READY, _E.KERNEL_IDLE): _S.READY,
    (_S.BUSY, _E.KERNEL_BUSY): _S.BUSY,
    (_S.BUSY, _E.KERNEL_IDLE): _S.READY,
    **{(s, _E.LINK_DOWN): _S.RECONNECTING for s in _LIVE},
    (_S.RECONNECTING, _E.LINK_UP): _S.READY,
    (_S.RECONNECTING, _E.KERNEL_BUSY): _S.RECONNECTING,
    (_S.RECONNECTING, _E.KERNEL_IDLE): _S.RECONNECTING,
    (_S.RECONNECTING, _E.FUNDS_LOW): _S.RECONNECTING,
    (_S.READY, _E.FUNDS_LOW): _S.LOW_FUNDS,
    (_S.BUSY, _E.FUNDS_LOW): _S.LOW_FUNDS,
    (_S.LOW_FUNDS, _E.FUNDS_LOW): _S.LOW_FUNDS,
    (_S.LOW_FUNDS, _E.KERNEL_BUSY): _S.LOW_FUNDS,
    (_S.LOW_FUNDS, _E.KERNEL_IDLE): _S.LOW_FUNDS,
    (_S.LOW_FUNDS, _E.FUNDS_OK): _S.READY,
    **{(s, _E.LINK_LOST): _S.LOST for s in _LIVE},
    **{(s, _E.END): _S.ENDED for s in (*_LIVE, _S.LOST)},
    **{(s, e): s for s in (_S.ENDED, _S.FAILED) for e in _E},
}

# What to do when a step fails (appended to the error's own message).
_HINTS = {
    _S.CHOOSING: "pick another offer in the GPU picker or widen the filter (`gpumarket offers`)",
    _S.CONFIRMING: "confirm the quote in the GPU panel, or set GPUMARKET_CONFIRM=0 for "
    "non-interactive runs, then start the kernel again",
    _S.OPENING_CHANNEL: "check the wallet's balance and the network (`gpumarket wallet`), "
    "then start the kernel again",
    _S.CONNECTING: "the provider did not answer: pick another offer or try again later",
    _S.SYNCING_FILES: "make the notebook's directory smaller (.gpumarketignore) or retry",
    _S.STARTING_KERNEL: "the provider could not start the kernel: pick another offer",
}


def step_hint(step: LaunchState) -> str:
    """What to do after ``step`` failed (a launch step), for the ``failed`` event's message."""
    return _HINTS.get(step, "start the kernel again")


def _seconds(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ProtocolError(f"{name} must be seconds, got {value!r}")


@dataclass(frozen=True)
class LaunchEvent:
    """One thing that happened to the launch; ``attempt`` only with LINK_DOWN (from 1),
    ``reason`` only with END, ``message`` (what happened, what to do) with any."""

    type: LaunchEventType
    attempt: int | None = None
    reason: EndReason | None = None
    message: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.type, LaunchEventType):
            raise ProtocolError(f"type must be a LaunchEventType, got {self.type!r}")
        if self.type is _E.LINK_DOWN:
            if isinstance(self.attempt, bool) or not isinstance(self.attempt, int):
                raise ProtocolError(f"LINK_DOWN needs attempt (an int), got {self.attempt!r}")
            if self.attempt < 1:
                raise ProtocolError(f"attempt counts from 1, got {self.attempt}")
        elif self.attempt is not None:
            raise ProtocolError(f"attempt only goes with link_down, not {self.type.value}")
        if self.type is _E.END:
            if not isinstance(self.reason, EndReason):
                raise ProtocolError(f"END needs reason (an EndReason), got {self.reason!r}")
        elif self.reason is not None:
            raise ProtocolError(f"reason only goes with end, not {self.type.value}")
        if self.message is not None and not isinstance(self.message, str):
            raise ProtocolError(f"message must be text or None, got {self.message!r}")


class LaunchMachine:
    """One kernel's launch state, with when it began and when the state was entered
    (``now`` values are the caller's clock: time.time() for the events' ``t``)."""

    def __init__(self, now: float) -> None:
        _seconds("now", now)
        self.state = LaunchState.CHOOSING
        self.began = self.since = now
        self.step: LaunchState | None = None  # the launch step that failed
        self.attempt: int | None = None
        self.reason: EndReason | None = None
        self.message: str | None = None

    @property
    def cancellable(self) -> bool:
        return self.state in CANCELLABLE

    @property
    def label(self) -> str:
        if self.state is _S.RECONNECTING:
            return f"reconnecting (attempt {self.attempt})"
        if self.state is _S.FAILED and self.step is not None:
            return f"failed at {LABELS[self.step]}"
        return LABELS[self.state]

    def handle(self, event: LaunchEvent, now: float) -> bool:
        """Apply ``event`` at ``now``; whether anything changed (state, attempt, message)."""
        _seconds("now", now)
        try:
            new = TRANSITIONS[(self.state, event.type)]
        except KeyError:
            what = "cancel" if event.type is _E.CANCEL else f"launch event {event.type.value}"
            raise LaunchStateConflict(
                f"{what} is not possible while the kernel is {self.label}"
                + (": stop the kernel instead" if event.type is _E.CANCEL else "")
            ) from None
        if self.state in (_S.ENDED, _S.FAILED):
            return False  # late news
        before = (self.state, self.attempt, self.message)
        if new is _S.FAILED:
            self.step = self.state
            text = event.message or "the launch failed"
            self.message = f"{text}; {step_hint(self.state)}"
        elif new is _S.ENDED:
            self.reason = EndReason.CANCELLED if event.type is _E.CANCEL else event.reason
            self.message = event.message
        else:
            self.message = event.message
        self.attempt = event.attempt if new is _S.RECONNECTING else None
        if new is not self.state:
            self.since = now
        self.state = new
        return (self.state, self.attempt, self.message) != before

    def snapshot(self, now: float) -> dict[str, Any]:
        """The ``launch`` event's state fields (docs/server-api.md), at ``now``."""
        return {
            "state": self.state.value,
            "label": self.label,
            "step": self.step.value if self.step is not None else None,
            "attempt": self.attempt,
            "elapsed_s": round(max(0.0, now - self.began), 3),
            "state_elapsed_s": round(max(0.0, now - self.since), 3),
            "cancellable": self.cancellable,
            "message": self.message,
            "reason": self.reason.value if self.reason is not None else None,
        }
