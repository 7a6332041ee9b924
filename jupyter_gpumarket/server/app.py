"""The jupyter_server extension: REST endpoints under /gpumarket/."""

from __future__ import annotations

import asyncio
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Float, Int

from jupyter_gpumarket.server import handlers
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

    def initialize_handlers(self) -> None:
        self.handlers.extend(handlers.default_handlers)
        self.handlers.extend(launch_handlers)
        from jupyter_gpumarket.server.api_handlers import api_routes

        self.handlers.extend(api_routes)

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        """Once the server's loop runs: take back remote kernels a crashed server left, then
        recover the deposits of leases that are over (never those of re-adopted kernels)."""
        self._readopt = asyncio.ensure_future(
            readopt_kernels(serverapp.kernel_manager, serverapp.root_dir, self.log)
        )
        self.recovery.start(after=self._readopt)
        self.launch_monitor = LaunchMonitor(
            serverapp.kernel_manager, lambda: self.cull_idle_timeout
        )
        self.launch_monitor.start()

    async def stop_extension(self) -> None:
        await self.recovery.stop()
        if getattr(self, "launch_monitor", None) is not None:
            await self.launch_monitor.stop()
