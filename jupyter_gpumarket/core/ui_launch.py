"""What the status view shows of a launch: the stepper, spend, the cull countdown, sparklines.

Pure: fed the server's events (docs/server-api.md, "Events") as dicts, returns rows and text.
The states and labels are the contract's; an event's own ``label`` wins (it carries
"reconnecting (attempt N)" and "failed at STEP").

.. code-block:: text

    step               shown as
    choosing           done ✓ / current ● / pending ○ / failed ✗, with the time spent in it
    confirming         (the current step shows its running time, state_elapsed_s)
    opening_channel
    connecting
    syncing_files
    starting_kernel
    ready              after ready this row shows the live state: busy, reconnecting, lost, ...
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jupyter_gpumarket.core.ui_format import Token, clean, format_duration, format_money

__all__ = [
    "LABELS",
    "STEPS",
    "LaunchTrack",
    "SpendView",
    "StepRow",
    "cull_text",
    "sparkline_svg",
    "spend_view",
]

STEPS = (
    "choosing",
    "confirming",
    "opening_channel",
    "connecting",
    "syncing_files",
    "starting_kernel",
    "ready",
)
LABELS = {
    "choosing": "choosing an offer",
    "confirming": "waiting for your confirmation",
    "opening_channel": "opening channel (wallet signs)",
    "connecting": "connecting",
    "syncing_files": "syncing files",
    "starting_kernel": "starting kernel",
    "ready": "ready",
    "busy": "busy",
    "reconnecting": "reconnecting (attempt N)",
    "low_funds": "low funds",
    "lost": "lost",
    "ended": "ended",
    "failed": "failed at STEP",
}
_AFTER_READY = frozenset({"ready", "busy", "reconnecting", "low_funds", "lost", "ended"})
_MARKS = {"done": "✓", "current": "●", "pending": "○", "failed": "✗"}


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


@dataclass(frozen=True)
class StepRow:
    state: str
    label: str
    status: str  # done | current | pending | failed
    elapsed: str  # "3 s", or "" for a pending step

    @property
    def text(self) -> str:
        tail = f" · {self.elapsed}" if self.elapsed else ""
        return f"{_MARKS[self.status]} {self.label}{tail}"


class LaunchTrack:
    """One kernel's launch, from its ``launch`` events: where each step began, where it is now."""

    def __init__(self) -> None:
        self.latest: dict[str, Any] | None = None
        self._entered: dict[str, float] = {}  # state -> elapsed_s when it began

    def feed(self, event: Mapping[str, Any]) -> None:
        if event.get("type") != "launch":
            return
        state = event.get("state")
        if not isinstance(state, str) or state not in LABELS:
            return
        elapsed = _num(event.get("elapsed_s")) or 0.0
        in_state = _num(event.get("state_elapsed_s")) or 0.0
        self._entered.setdefault(state, max(0.0, elapsed - in_state))
        self.latest = dict(event)

    @property
    def state(self) -> str | None:
        return None if self.latest is None else str(self.latest["state"])

    @property
    def cancellable(self) -> bool:
        return self.latest is not None and self.latest.get("cancellable") is True

    def message(self) -> str:
        msg = None if self.latest is None else self.latest.get("message")
        return clean(msg, 300) if isinstance(msg, str) else ""

    def rows(self) -> list[StepRow]:
        latest = self.latest or {}
        state = self.state
        failed_step = latest.get("step") if state == "failed" else None
        if state in _AFTER_READY:
            current = "ready"
        elif state == "failed":
            current = failed_step if failed_step in STEPS else "choosing"
        else:
            current = state or ""
        idx = STEPS.index(current) if current in STEPS else -1
        now = _num(latest.get("elapsed_s")) or 0.0
        rows = []
        for i, step in enumerate(STEPS):
            label = LABELS[step]
            if i < idx:
                status = "done"
                began = self._entered.get(step)
                nxt = min(
                    (t for s, t in self._entered.items() if s in STEPS[i + 1 :]), default=None
                )
                elapsed = (
                    format_duration(nxt - began) if began is not None and nxt is not None else ""
                )
            elif i == idx:
                status = "failed" if state == "failed" else "current"
                if state == "ready" or state in _AFTER_READY:
                    status = "done" if state in ("ready", "busy") else "current"
                    raw = latest.get("label")
                    label = clean(raw, 60) if isinstance(raw, str) else LABELS[state or "ready"]
                elif state == "failed":
                    raw = latest.get("label")
                    label = clean(raw, 60) if isinstance(raw, str) else f"failed at {step}"
                began = self._entered.get(step, now)
                elapsed = format_duration(now - began) if step != "ready" else ""
                if step == "ready":
                    elapsed = format_duration(now) + " since launch"
            else:
                status, elapsed = "pending", ""
            rows.append(StepRow(step, label, status, elapsed))
        return rows


@dataclass(frozen=True)
class SpendView:
    rate: str  # "1.84 TUSD/h"
    spent: str
    deposit_left: str
    budget: str
    time_left: str
    budget_fraction: float  # spent / budget in [0, 1]


def spend_view(event: Mapping[str, Any]) -> SpendView:
    """A ``spend`` event as the status view's texts and the budget bar's fill."""
    token = Token.from_json(event.get("token"))
    spent = event.get("spent")
    budget = event.get("budget")
    frac = 0.0
    s, b = _num(spent), _num(budget)
    if s is not None and b:
        frac = min(1.0, max(0.0, s / b))
    return SpendView(
        rate=format_money(event.get("rate_per_hour"), token) + "/h",
        spent=format_money(spent, token, places=4),
        deposit_left=format_money(event.get("deposit_left"), token),
        budget=format_money(budget, token),
        time_left=format_duration(event.get("seconds_left")),
        budget_fraction=frac,
    )


def cull_text(event: Mapping[str, Any]) -> str:
    """A ``cull`` event: ``"idle 5 min · stopped in 25 min if still idle"`` (or culling off)."""
    idle = format_duration(event.get("idle_s"))
    cull_in = event.get("cull_in_s")
    held = event.get("held_by")
    timeout = event.get("timeout_s")
    if cull_in is None and held == "connected" and timeout:
        return (
            f"idle {idle} · an open notebook holds it; once closed, stopped and settled "
            f"after {format_duration(timeout)} idle"
        )
    if cull_in is None and held == "busy":
        return (
            f"busy · stopped and settled after {format_duration(timeout)} idle"
            if timeout
            else "busy"
        )
    if cull_in is None:
        return f"idle {idle} · idle culling is off: the kernel bills until you stop it"
    return f"idle {idle} · stopped and settled in {format_duration(cull_in)} if still idle"


def sparkline_svg(
    values: Sequence[float | None],
    *,
    lo: float = 0.0,
    hi: float | None = None,
    width: int = 120,
    height: int = 24,
    color: str = "#1a73e8",
) -> str:
    """A small inline SVG polyline of ``values`` (None = gap) scaled into [lo, hi]."""
    pts = [(i, v) for i, v in enumerate(values) if v is not None and math.isfinite(v)]
    top = hi if hi is not None else max((v for _, v in pts), default=1.0)
    span = top - lo if top > lo else 1.0
    n = max(len(values) - 1, 1)
    coords = []
    for i, v in pts:
        x = i * (width - 2) / n + 1
        y = height - 1 - (min(max(v, lo), lo + span) - lo) * (height - 2) / span
        coords.append(f"{x:.1f},{y:.1f}")
    line = (
        f"<polyline fill='none' stroke='{color}' stroke-width='1.5' points='{' '.join(coords)}'/>"
        if coords
        else ""
    )
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}' style='vertical-align:middle;background:#f6f8fa'>"
        f"{line}</svg>"
    )
