"""``jupyter_gpumarket.status()``: the launch stepper, spend, the idle-cull countdown and GPU
telemetry sparklines of one gpumarket kernel, fed by the server's events (docs/server-api.md).

In the local kernel the view follows the events of the notebook's gpumarket kernel (or the one
named); inside a remote kernel it reads the agent's telemetry through the kernel's environment
(``telemetry_view.read_latest``), with no route to the user's server. Events may arrive from a
feed thread: :meth:`StatusView.apply` serializes them under a lock.
"""

from __future__ import annotations

import html
import threading
from collections import deque
from collections.abc import Mapping
from typing import Any

import ipywidgets as w

from jupyter_gpumarket.core.ui_format import NONE, Token, format_duration, format_money
from jupyter_gpumarket.core.ui_launch import LaunchTrack, cull_text, sparkline_svg, spend_view
from jupyter_gpumarket.exceptions import GpuMarketError
from jupyter_gpumarket.widgets.client import ServerClient

__all__ = ["StatusView"]

HISTORY = 120  # telemetry samples kept for the sparklines (about two minutes)
_METRICS = (  # (label, sample key, unit, fixed top or None)
    ("util", "util_pct", "%", 100.0),
    ("VRAM", "mem_used_mib", "MiB", None),
    ("power", "power_w", "W", None),
    ("temp", "temp_c", "°C", None),
)
_STATUS_COLORS = {"done": "#188038", "current": "#1a73e8", "pending": "#999", "failed": "#d93025"}


class StatusView(w.VBox):
    """The status of one gpumarket kernel. ``kernel_id=None``: the notebook's, else the latest
    launch seen. ``remote=True``: inside the remote kernel (telemetry only)."""

    def __init__(
        self,
        client: ServerClient | None = None,
        kernel_id: str | None = None,
        notebook: str | None = None,
        remote: bool = False,
    ) -> None:
        self.client = client
        self.kernel_id = kernel_id
        self.notebook = notebook
        self.remote = remote
        self.track = LaunchTrack()
        self.samples: deque[Mapping[str, Any]] = deque(maxlen=HISTORY)
        self._lock = threading.RLock()
        self.feed: Any = None

        self.title = w.HTML("<b>GPU Market kernel</b>")
        self.stepper = w.HTML("<i>waiting for a launch…</i>")
        self.message = w.HTML("")
        self.cancel = w.Button(description="Cancel launch", button_style="warning", icon="stop")
        self.cancel.layout.display = "none"
        self.cancel.on_click(self._on_cancel)
        self.spend = w.HTML("")
        self.budget_bar = w.FloatProgress(value=0.0, min=0.0, max=1.0, description="budget")
        self.budget_bar.layout.display = "none"
        self.cull = w.HTML("")
        self.telemetry = w.HTML("")
        super().__init__(
            [
                self.title,
                self.stepper,
                self.message,
                self.cancel,
                self.spend,
                self.budget_bar,
                self.cull,
                self.telemetry,
            ]
        )
        self.add_class("gpumarket-status")
        if remote:
            self.stepper.value = (
                "<span style='color:#188038'>✓ running on the provider's machine</span>"
            )

    # --- events (from any thread) ---
    def apply(self, event: Mapping[str, Any]) -> None:
        """Show one server event (launch, spend, telemetry, cull, warning, receipt)."""
        with self._lock:
            kind = event.get("type")
            if not self._ours(event):
                return
            if kind == "launch":
                self.track.feed(event)
                self._show_launch()
            elif kind == "spend":
                self._show_spend(event)
            elif kind == "telemetry":
                sample = event.get("sample")
                if isinstance(sample, Mapping):
                    self.samples.append(sample)
                    self._show_telemetry()
            elif kind == "cull":
                self.cull.value = html.escape(cull_text(event))
            elif kind == "warning":
                self.message.value = _note(str(event.get("message") or ""), "#b06000")
            elif kind == "receipt":
                self._show_receipt(event)

    def _ours(self, event: Mapping[str, Any]) -> bool:
        kid = event.get("kernel_id")
        if kid is None or self.remote:
            return True
        if self.kernel_id is None:
            nb = event.get("notebook")
            if event.get("type") == "launch" and _same_notebook(nb, self.notebook):
                self.kernel_id = str(kid)  # follow this launch from now on
            else:
                return False
        return kid == self.kernel_id

    def _show_launch(self) -> None:
        rows = self.track.rows()
        self.stepper.value = (
            "<div class='gpumarket-stepper'>"
            + "".join(
                f"<div class='gpumarket-step gpumarket-step-{r.status}' "
                f"style='color:{_STATUS_COLORS[r.status]}'>{html.escape(r.text)}</div>"
                for r in rows
            )
            + "</div>"
        )
        msg = self.track.message()
        failed = self.track.state in ("failed", "lost")
        self.message.value = _note(msg, "#d93025" if failed else "#444") if msg else ""
        self.cancel.layout.display = "" if self.track.cancellable else "none"
        self.cancel.disabled = not self.track.cancellable

    def _show_spend(self, event: Mapping[str, Any]) -> None:
        v = spend_view(event)
        self.spend.value = (
            f"<span class='gpumarket-spend'>{html.escape(v.rate)} · spent {html.escape(v.spent)}"
            f" · deposit left {html.escape(v.deposit_left)} ≈ {html.escape(v.time_left)}"
            f" · budget {html.escape(v.budget)}</span>"
        )
        self.budget_bar.value = v.budget_fraction
        self.budget_bar.bar_style = "danger" if v.budget_fraction >= 0.9 else "info"
        self.budget_bar.layout.display = ""

    def _show_telemetry(self) -> None:
        latest = self.samples[-1]
        gpus = latest.get("gpus") or []
        parts = []
        if not gpus:
            cpu = latest.get("cpu_pct")
            parts.append(f"CPU only · CPU {cpu}% · RAM {latest.get('ram_mib')} MiB")
            parts.append(
                sparkline_svg([_f(s.get("cpu_pct")) for s in self.samples], color="#5f6368")
            )
        for g in gpus if isinstance(gpus, list) else []:
            idx = g.get("index")
            cells = [f"<b>GPU {html.escape(str(idx))}</b>"]
            for label, key, unit, top in _METRICS:
                series = [_f(_gpu(s, idx).get(key)) for s in self.samples]
                if key == "mem_used_mib":
                    top = _f(g.get("mem_total_mib"))
                now = series[-1]
                shown = NONE if now is None else f"{now:.0f} {unit}"
                cells.append(f"{label} {sparkline_svg(series, hi=top)} {shown}")
            parts.append(" &nbsp; ".join(cells))
        if self.remote:
            spend = latest.get("spend")
            billed = latest.get("billed_seconds")
            parts.append(
                f"billed {format_duration(billed)} · spent {format_money(spend, Token(), places=4)}"
            )
        self.telemetry.value = "<div class='gpumarket-telemetry'>" + "<br>".join(parts) + "</div>"

    def _show_receipt(self, event: Mapping[str, Any]) -> None:
        token = Token.from_json(event.get("token"))
        self.message.value = _note(
            f"lease settled: {format_duration(event.get('seconds'))} · charged "
            f"{format_money(event.get('charged'), token, places=4)} · refunded "
            f"{format_money(event.get('refunded'), token, places=4)}",
            "#188038",
        )

    def _on_cancel(self, _: Any) -> None:
        if self.client is None or self.kernel_id is None:
            return
        try:
            event = self.client.api("POST", f"launches/{self.kernel_id}/cancel", {})
        except GpuMarketError as e:
            self.message.value = _note(str(e), "#d93025")
            return
        if isinstance(event, Mapping):
            self.apply({"type": "launch", **event})

    # --- feed ---
    def start(self) -> StatusView:
        """Follow live events in a background thread (idempotent)."""
        from jupyter_gpumarket.widgets.feed import EventFeed, TelemetryFileFeed

        if self.feed is None:
            if self.remote:
                self.feed = TelemetryFileFeed(self.apply)
            elif self.client is not None:
                self.feed = EventFeed(self.client, self.apply)
            if self.feed is not None:
                self.feed.start()
        return self

    def close(self) -> None:
        if self.feed is not None:
            self.feed.stop()
        super().close()


def _same_notebook(event_path: Any, wanted: str | None) -> bool:
    """``wanted`` (relative to the server root) names the event's notebook, which may be
    relative or the absolute path the kernel got in ``JPY_SESSION_NAME``."""
    if wanted is None:
        return True
    if not isinstance(event_path, str):
        return False
    want = wanted.strip("/")
    return event_path == want or event_path.endswith("/" + want)


def _note(text: str, color: str) -> str:
    return f"<span style='color:{color}'>{html.escape(text)}</span>"


def _f(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _gpu(sample: Mapping[str, Any], index: Any) -> Mapping[str, Any]:
    for g in sample.get("gpus") or []:
        if isinstance(g, Mapping) and g.get("index") == index:
            return g
    return {}
