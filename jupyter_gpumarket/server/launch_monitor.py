"""What the server sees of each live gpumarket kernel, turned into events twice a second:
``ready ⇄ busy`` (the kernel's iopub status, as jupyter_server's own activity tracking
records it), ``reconnecting (attempt n)`` / ``lost`` (the link), ``spend`` and
``telemetry`` when they change, and the idle culling of paid-for kernels (``cull``
countdown; ``ended`` reason ``culled``). Low funds come from the lease's notices
(:func:`jupyter_gpumarket.provisioning.launch_flow.notice`).

Culling builds on jupyter_server's: the same idle clock (``kernel.last_activity``), the same
``MappingKernelManager.cull_connected`` and ``cull_busy`` rules, and the same shutdown
(``shutdown_kernel``, which settles the lease), with its own timeout for gpumarket kernels
only (``GpuMarketExtension.cull_idle_timeout``, default 1800 s, 0 = off; a kernelspec's
``metadata.cull_idle_timeout`` wins, as in jupyter_server). A tab closed on a paid kernel
stops costing money after that timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from jupyter_gpumarket.core.launch_state import LaunchEvent, LaunchEventType, LaunchState
from jupyter_gpumarket.provisioning.launch_events import LaunchTracker, hub

__all__ = ["LaunchMonitor", "cull_status"]

log = logging.getLogger("jupyter_gpumarket.launch")
_E, _S = LaunchEventType, LaunchState
_LIVE = (_S.READY, _S.BUSY, _S.LOW_FUNDS, _S.RECONNECTING)
TICK = 0.5


def cull_status(
    idle_s: float, timeout: int, busy: bool, connections: int, cull_busy: bool, cull_connected: bool
) -> tuple[float | None, str | None]:
    """(seconds until the kernel is culled, what holds it) as jupyter_server decides: a busy
    kernel (unless cull_busy) or one with a client connected (unless cull_connected) is not
    culled; ``None`` seconds when culling is off or held."""
    if timeout <= 0:
        return None, None
    if busy and not cull_busy:
        return None, "busy"
    if connections and not cull_connected:
        return None, "connected"
    return max(0.0, timeout - idle_s), None


class LaunchMonitor:
    """One periodic task on the server's loop watching the hub's live kernels."""

    def __init__(self, kernel_manager: Any, cull_timeout: Callable[[], int]) -> None:
        self.km = kernel_manager
        self.cull_timeout = cull_timeout
        self._task: asyncio.Task[None] | None = None
        self._seen: dict[str, dict[str, Any]] = {}

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            for t in hub().trackers():
                if t.state in _LIVE:
                    try:
                        await self.watch(t)
                    except Exception:  # one kernel's trouble must not stop the others
                        log.exception("gpumarket %s: watching the kernel failed", t.kernel_id)

    async def watch(self, t: LaunchTracker) -> None:
        seen = self._seen.setdefault(t.kernel_id, {})
        self._link(t)
        kernel = self._kernel(t.kernel_id)
        state = getattr(kernel, "execution_state", None)
        if state in ("busy", "idle") and t.state in (_S.READY, _S.BUSY, _S.LOW_FUNDS):
            t.handle(LaunchEvent(_E.KERNEL_BUSY if state == "busy" else _E.KERNEL_IDLE))
        self._money(t, seen)
        self._telemetry(t, seen)
        if kernel is not None:
            await self._cull(t, kernel, state == "busy", seen)

    def _kernel(self, kernel_id: str) -> Any:
        return self.km.get_kernel(kernel_id) if kernel_id in self.km else None

    def _link(self, t: LaunchTracker) -> None:
        link = t.link
        if link is None:
            return
        if link.dead_reason:
            t.handle(LaunchEvent(_E.LINK_LOST, message=f"{link.dead_reason}: start a new kernel"))
        elif link.lost_since is not None:
            attempt = max(1, int(getattr(link, "reconnect_attempt", 0) or 1))
            t.handle(LaunchEvent(_E.LINK_DOWN, attempt=attempt))
        elif t.state is _S.RECONNECTING:
            t.handle(LaunchEvent(_E.LINK_UP))

    def _money(self, t: LaunchTracker, seen: dict[str, Any]) -> None:
        spend = t.spend()
        if spend is None:
            return
        key = (spend["spent"], spend["deposit"], spend["budget"])
        if key != seen.get("spend"):
            seen["spend"] = key
            hub().publish(spend)

    def _telemetry(self, t: LaunchTracker, seen: dict[str, Any]) -> None:
        link = t.link
        if link is None:
            return
        samples = link.telemetry.to_json()
        if samples and samples[-1].get("t") != seen.get("telemetry"):
            seen["telemetry"] = samples[-1].get("t")
            hub().publish(
                {
                    "type": "telemetry",
                    "kernel_id": t.kernel_id,
                    "t": time.time(),
                    "sample": samples[-1],
                }
            )

    async def _cull(self, t: LaunchTracker, kernel: Any, busy: bool, seen: dict[str, Any]) -> None:
        timeout = kernel.kernel_spec.metadata.get("cull_idle_timeout", self.cull_timeout())
        last = getattr(kernel, "last_activity", None)
        if last is None:
            return
        idle_s = max(0.0, (datetime.now(UTC) - last).total_seconds())
        connections = self.km._kernel_connections.get(t.kernel_id, 0)
        cull_in, held = cull_status(
            idle_s,
            int(timeout),
            busy,
            connections,
            bool(self.km.cull_busy),
            bool(self.km.cull_connected),
        )
        now = time.monotonic()
        due = now - seen.get("cull_at", 0.0) >= (
            1.0 if cull_in is not None and cull_in <= 60 else 5.0
        )
        shape = (cull_in is None, held)  # culling switched on/off, or held by something else
        if due or shape != seen.get("cull") or cull_in == 0.0:
            seen["cull_at"], seen["cull"] = now, shape
            hub().publish(
                {
                    "type": "cull",
                    "kernel_id": t.kernel_id,
                    "t": time.time(),
                    "idle_s": round(idle_s, 1),
                    "cull_in_s": None if cull_in is None else round(cull_in, 1),
                    "timeout_s": int(timeout),
                    "held_by": held,
                }
            )
        if cull_in == 0.0 and not t.culled:
            t.culled = True
            log.warning(
                "gpumarket %s: culling the kernel after %d s idle (settles its lease)",
                t.kernel_id,
                int(idle_s),
            )
            await self.km.shutdown_kernel(t.kernel_id)
