"""The jupyter_server extension: REST endpoints under /gpumarket/."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Float, Int

from jupyter_gpumarket.provisioning import launch_events, selection_store
from jupyter_gpumarket.server import course_handlers, handlers
from jupyter_gpumarket.server.launch_handlers import launch_handlers
from jupyter_gpumarket.server.launch_monitor import LaunchMonitor
from jupyter_gpumarket.server.readopt import readopt_kernels
from jupyter_gpumarket.server.recovery import DepositRecovery


class GpuMarketExtension(ExtensionApp):
    """Registers the gpumarket handlers; later issues add offers, leases and wallet state."""

    name = "jupyter_gpumarket"

    auto_recover = Bool(
        True,
        config=True,
        help="Get unspent deposits of leases whose provider never settled back automatically "
        "(requestClose, then withdraw after the challenge period); needs "
        "GPUMARKET_WALLET_PASSWORD. Off: run `gpumarket leases close ID` by hand.",
    )
    recovery_settle_grace = Float(
        600.0,
        config=True,
        help="Seconds a stopped lease waits for its provider's own settle before the server "
        "requests the close.",
    )

    cull_idle_timeout = Int(
        1800,
        config=True,
        help="Seconds a gpumarket kernel may sit idle with no client connected before it is "
        "stopped and its lease settled (jupyter_server's culling rules; 0 = never). The "
        "Config field cull_idle_timeout_s.",
    )

    def initialize_settings(self) -> None:
        self.recovery = DepositRecovery(
            self.log, enabled=self.auto_recover, settle_grace=self.recovery_settle_grace
        )
        # the launch's confirm step reads the selections the API stores (their confirmed_quote)
        root = str(self.serverapp.root_dir) if self.serverapp is not None else None
        launch_events.set_selection_lookup(
            lambda path: selection_store.stored_selection(path, root)
        )

    def initialize_handlers(self) -> None:
        self.handlers.extend(handlers.default_handlers)
        from jupyter_gpumarket.server.api_handlers import api_routes

        self.handlers.extend(api_routes)
        self.handlers.extend(launch_handlers)
        self.handlers.extend(course_handlers.default_handlers)

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        """Once the server's loop runs: take back remote kernels a crashed server left, then
        recover the deposits of leases that are over (never those of re-adopted kernels)."""
        self._readopt = asyncio.ensure_future(
            readopt_kernels(serverapp.kernel_manager, serverapp.root_dir, self.log)
        )
        self.recovery.start(after=self._readopt)
        self.launch_monitor = LaunchMonitor(serverapp.kernel_manager, self._cull_timeout)
        self.launch_monitor.start()
        _start_spare_tunnel(serverapp)

    _cull_read: tuple[float, int | None] = (float("-inf"), None)

    def _cull_timeout(self) -> int:
        """The idle timeout for gpumarket kernels: what the user stored with PUT config (read
        at most every 5 s), else the ``cull_idle_timeout`` trait."""
        read_at, stored = self._cull_read
        now = time.monotonic()
        if now - read_at > 5.0:
            stored = selection_store.stored_cull_timeout()
            self._cull_read = (now, stored)
        return self.cull_idle_timeout if stored is None else stored

    async def stop_extension(self) -> None:
        await self.recovery.stop()
        launch_events.set_selection_lookup(None)
        if getattr(self, "launch_monitor", None) is not None:
            await self.launch_monitor.stop()


def _start_spare_tunnel(serverapp: Any) -> None:
    """Have a tunnel process ready for the first remote kernel (provisioning.tunnel_spare),
    unless kernels run their tunnel in the server (GPUMARKET_TUNNEL_PROCESS=0, or the
    GpuMarketProvisioner.tunnel_process trait off)."""
    from jupyter_gpumarket.provisioning import tunnel_spare
    from jupyter_gpumarket.provisioning.tunnel_client import TunnelClient, process_mode_env

    env = process_mode_env()
    trait = serverapp.config.get("GpuMarketProvisioner", {}).get("tunnel_process", True)
    if trait if env is None else env:
        tunnel_spare.refill(TunnelClient.start)
