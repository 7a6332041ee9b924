"""The in-process hub of gpumarket kernels' launches: one :class:`LaunchTracker` per kernel
(a :class:`~jupyter_gpumarket.core.launch_state.LaunchMachine` plus what the events name),
fed by the provisioner, read by the server's routes and event stream.

Events are plain dicts in the shape of docs/server-api.md (``launch``, ``spend``,
``telemetry``, ``cull``, ``warning``, ``receipt``). :meth:`LaunchHub.publish` hands each to
every subscriber synchronously: a subscriber must never block (the server's event stream
puts it in a bounded per-client queue with ``call_soon_threadsafe``). Every launch
transition also goes to the server log.

Cancel (before ready): :meth:`LaunchTracker.cancel` marks the launch cancelled and cancels
the task that runs it, unless it is opening the channel (a chain transaction in a thread
cannot be taken back halfway: the launch stops right after it, and the channel goes back
as on any launch failure). The provisioner turns the cancellation into
:class:`~jupyter_gpumarket.exceptions.LaunchCancelled` and ends the launch with
``reason: cancelled``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from jupyter_gpumarket.core.launch_state import (
    EndReason,
    LaunchEvent,
    LaunchEventType,
    LaunchMachine,
    LaunchState,
)
from jupyter_gpumarket.core.quote import Quote
from jupyter_gpumarket.exceptions import ConfigError, LaunchCancelled, LaunchStateConflict

__all__ = [
    "LaunchHub",
    "LaunchTracker",
    "hub",
    "set_selection_lookup",
    "stored_selection",
]

log = logging.getLogger("jupyter_gpumarket.launch")

Subscriber = Callable[[dict[str, Any]], None]
_E = LaunchEventType
MAX_LAUNCHES = 1000  # ended launches kept for GET launches, oldest dropped first


class LaunchTracker:
    """One gpumarket kernel's launch: its machine, the offer and lease it names, the task
    that runs it (for cancel), the confirmation it may wait for."""

    def __init__(self, hub: LaunchHub, kernel_id: str, notebook: str | None) -> None:
        self.hub = hub
        self.kernel_id = kernel_id
        self.notebook = notebook
        self.machine = LaunchMachine(time.time())
        self.offer_id: int | None = None
        self.lease_id: str | None = None
        self.lease: Any = None  # provisioning.paid.PaidLease of a paid launch
        self.link: Any = None  # provisioning.link.RemoteLink once connected
        self.quote: Quote | None = None
        self.confirmed: Quote | None = None  # what the user confirmed (covers failovers too)
        self.cancel_requested = False
        self.culled = False
        self.gas_used = 0
        self._task: asyncio.Task[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._confirmed: asyncio.Event | None = None
        self._lock = threading.Lock()
        self.log: logging.Logger | logging.LoggerAdapter[Any] = log  # the server's, once known

    # -- the machine -------------------------------------------------------------------------
    def event(self) -> dict[str, Any]:
        """The ``launch`` event of the current state."""
        now = time.time()
        with self._lock:
            snap = self.machine.snapshot(now)
        return {
            "type": "launch",
            "kernel_id": self.kernel_id,
            "t": now,
            **snap,
            "notebook": self.notebook,
            "offer_id": self.offer_id,
            "lease_id": self.lease_id,
        }

    def handle(self, event: LaunchEvent) -> None:
        """Apply ``event``; publish and log the new state when something changed."""
        with self._lock:
            changed = self.machine.handle(event, time.time())
        if changed:
            data = self.event()
            self.log.info(
                "gpumarket %s: %s%s",
                self.kernel_id,
                data["label"],
                f" ({data['message']})" if data["message"] else "",
            )
            self.hub.publish(data)

    def step(self, kind: LaunchEventType) -> None:
        """A launch step begins (the provisioner calls this); a cancelled launch stops here."""
        if self.cancel_requested:
            raise LaunchCancelled("the launch was cancelled")
        self.handle(LaunchEvent(kind))

    @property
    def state(self) -> LaunchState:
        return self.machine.state

    def watch_task(self) -> None:
        """Remember the task running the launch (the caller's), so cancel can stop it."""
        with contextlib.suppress(RuntimeError):
            self._task = asyncio.current_task()
            self._loop = asyncio.get_running_loop()

    # -- cancel ------------------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop the launch (any step before ready); LaunchStateConflict once ready."""
        with self._lock:
            if not self.machine.cancellable:
                raise LaunchStateConflict(
                    f"the launch of kernel {self.kernel_id} is {self.machine.label}: it can "
                    "no longer be cancelled; stop the kernel instead (DELETE /api/kernels/ID)"
                )
            self.cancel_requested = True
            interruptible = self.machine.state is not LaunchState.OPENING_CHANNEL
        task, loop = self._task, self._loop
        if interruptible and task is not None and loop is not None and not task.done():
            loop.call_soon_threadsafe(task.cancel)
        self.log.info("gpumarket %s: cancel requested", self.kernel_id)

    def cancelled(self, refund_note: str = "") -> None:
        """The launch stopped after a cancel: ``ended`` with reason cancelled."""
        gas = (
            f"gas spent: {self.gas_used} gas units (the channel's transactions)"
            if self.gas_used
            else "no gas spent (no transaction was sent)"
        )
        text = f"launch cancelled: nothing billed; {gas}{refund_note}"
        self.handle(LaunchEvent(_E.CANCEL, message=text))

    # -- confirmation ------------------------------------------------------------------------
    async def wait_confirmed(self, quote: Quote, timeout: float) -> None:
        """Enter ``confirming`` and wait (cancellable) for :meth:`confirm` with a quote that
        covers ``quote``; ConfigError after ``timeout`` seconds."""
        self.quote = quote
        self._confirmed = asyncio.Event()
        self.step(_E.CONFIRM_NEEDED)
        self.warn("confirm", f"confirm to pay: {quote.text}", quote=quote.to_json())
        try:
            async with asyncio.timeout(timeout):
                await self._confirmed.wait()
        except TimeoutError:
            raise ConfigError(
                f"nobody confirmed the cost ({quote.text}) within {timeout:.0f} s: nothing was paid"
            ) from None

    def confirm(self, quote: Quote) -> None:
        """The user confirmed ``quote`` (POST launches/ID/confirm)."""
        with self._lock:
            waiting = self.machine.state is LaunchState.CONFIRMING
        if not waiting or self.quote is None or self._confirmed is None:
            raise LaunchStateConflict(
                f"kernel {self.kernel_id} is {self.machine.label}, not waiting for a confirmation"
            )
        if not quote.covers(self.quote):
            raise ConfigError(
                f"the confirmed quote does not cover this launch ({self.quote.text}): confirm "
                "the current quote (GET /gpumarket/api/quote)"
            )
        self.confirmed = quote
        loop, event = self._loop, self._confirmed
        if loop is not None:
            loop.call_soon_threadsafe(event.set)
        else:  # pragma: no cover - a launch always runs on a loop
            event.set()

    def warn(self, code: str, message: str, **extra: Any) -> None:
        """A ``warning`` event of this kernel."""
        self.hub.publish(
            {
                "type": "warning",
                "kernel_id": self.kernel_id,
                "t": time.time(),
                "code": code,
                "message": message,
                **extra,
            }
        )

    # -- money -------------------------------------------------------------------------------
    def spend(self) -> dict[str, Any] | None:
        """The ``spend`` event of a paid lease (None for a dev kernel)."""
        lease = self.lease
        if lease is None:
            return None
        sched = lease.schedule
        spent = int(sched.signed)
        deposit = int(lease.deposit)
        limit = min(deposit, int(sched.budget))
        price = int(sched.price_per_hour)
        return {
            "type": "spend",
            "kernel_id": self.kernel_id,
            "t": time.time(),
            "lease_id": self.lease_id,
            "rate_per_hour": price,
            "spent": spent,
            "deposit": deposit,
            "deposit_left": max(0, deposit - spent),
            "budget": int(sched.budget),
            "seconds_left": max(0, limit - spent) * 3600 // price,
            "vouchers": int(lease.vouchers_sent),
            "token": _token(self.quote),
        }

    def receipt(self, seconds: int, charged: int, refunded: int, txs: list[Any]) -> None:
        self.hub.publish(
            {
                "type": "receipt",
                "kernel_id": self.kernel_id,
                "t": time.time(),
                "lease_id": self.lease_id,
                "seconds": seconds,
                "charged": charged,
                "refunded": refunded,
                "txs": txs,
                "token": _token(self.quote),
            }
        )

    def end(self, reason: EndReason, message: str | None = None) -> None:
        """A live kernel ended (stopped, culled, budget, provider gone)."""
        if self.machine.state in (LaunchState.ENDED, LaunchState.FAILED):
            return
        if self.machine.cancellable:  # stopped before it was ready
            self.cancelled()
            return
        self.handle(LaunchEvent(_E.END, reason=reason, message=message))


def _token(quote: Quote | None) -> dict[str, Any]:
    if quote is None:
        return {"symbol": "TUSD", "decimals": 6}
    return {"symbol": quote.symbol, "decimals": quote.decimals}


class LaunchHub:
    """Every gpumarket kernel's tracker in this process, and who listens."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._trackers: dict[str, LaunchTracker] = {}
        self._subscribers: list[Subscriber] = []

    @property
    def ui_attached(self) -> bool:
        """Someone watches the event stream (a UI that can show the confirmation)."""
        with self._lock:
            return bool(self._subscribers)

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        """Call ``fn`` (it must not block) with each event; returns the unsubscribe."""
        with self._lock:
            self._subscribers.append(fn)

        def unsubscribe() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._subscribers.remove(fn)

        return unsubscribe

    def publish(self, event: dict[str, Any]) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for fn in subscribers:
            try:
                fn(event)
            except Exception:  # one broken listener must not stop the launch
                log.exception("gpumarket event listener failed")

    def begin(
        self,
        kernel_id: str,
        notebook: str | None,
        logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    ) -> LaunchTracker:
        """A new launch of ``kernel_id`` (a fresh start; a restart keeps its tracker);
        its transitions go to ``logger`` (the server's log) too."""
        tracker = LaunchTracker(self, kernel_id, notebook)
        if logger is not None:
            tracker.log = logger
        with self._lock:
            self._trackers.pop(kernel_id, None)
            self._trackers[kernel_id] = tracker
            while len(self._trackers) > MAX_LAUNCHES:
                del self._trackers[next(iter(self._trackers))]
        data = tracker.event()
        tracker.log.info("gpumarket %s: %s", kernel_id, data["label"])
        self.publish(data)
        return tracker

    def get(self, kernel_id: str) -> LaunchTracker | None:
        with self._lock:
            return self._trackers.get(kernel_id)

    def trackers(self) -> list[LaunchTracker]:
        with self._lock:
            return list(self._trackers.values())

    def launches(self) -> list[dict[str, Any]]:
        """The latest ``launch`` event of every kernel (GET launches)."""
        return [t.event() for t in self.trackers()]

    def snapshot(self) -> list[dict[str, Any]]:
        """What a new event-stream client gets first: launches, then spends."""
        trackers = self.trackers()
        spends = [s for s in (t.spend() for t in trackers) if s is not None]
        return [*(t.event() for t in trackers), *spends]


_HUB = LaunchHub()


def hub() -> LaunchHub:
    """This process's hub."""
    return _HUB


# -- the stored selection seam ---------------------------------------------------------------
# The server's selection store (GET/POST selection) plugs its lookup in here; until it does,
# no notebook has a stored selection (and so no confirmed quote).
_selection_lookup: Callable[[str | None], dict[str, Any] | None] | None = None


def set_selection_lookup(fn: Callable[[str | None], dict[str, Any] | None] | None) -> None:
    """Install the function that returns the stored ``<Selection>`` of a notebook path (None:
    the default selection), or None when there is none."""
    global _selection_lookup
    _selection_lookup = fn


def stored_selection(path: str | None) -> dict[str, Any] | None:
    """The ``<Selection>`` stored for notebook ``path`` (else the default one), or None."""
    fn = _selection_lookup
    if fn is None:
        return None
    try:
        found = fn(path)
        if found is None and path is not None:
            found = fn(None)
    except Exception as exc:  # a broken store means no confirmed quote, not a failed launch
        log.warning("gpumarket: the stored selection could not be read: %s", exc)
        return None
    return found if isinstance(found, dict) else None
