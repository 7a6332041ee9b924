"""The jupyter_server extension: REST endpoints under /gpumarket/."""

from __future__ import annotations

import asyncio
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Float

from jupyter_gpumarket.server import course_handlers, handlers
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

    def initialize_settings(self) -> None:
        self.recovery = DepositRecovery(
            self.log, enabled=self.auto_recover, settle_grace=self.recovery_settle_grace
        )

    def initialize_handlers(self) -> None:
        self.handlers.extend(handlers.default_handlers)
        self.handlers.extend(course_handlers.default_handlers)

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        """Once the server's loop runs: take back remote kernels a crashed server left, then
        recover the deposits of leases that are over (never those of re-adopted kernels)."""
        self._readopt = asyncio.ensure_future(
            readopt_kernels(serverapp.kernel_manager, serverapp.root_dir, self.log)
        )
        self.recovery.start(after=self._readopt)

    async def stop_extension(self) -> None:
        await self.recovery.stop()
