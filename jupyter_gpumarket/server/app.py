"""The jupyter_server extension: REST endpoints under /gpumarket/."""

from __future__ import annotations

import asyncio
from typing import Any

from jupyter_server.extension.application import ExtensionApp

from jupyter_gpumarket.server import handlers
from jupyter_gpumarket.server.readopt import readopt_kernels


class GpuMarketExtension(ExtensionApp):
    """Registers the gpumarket handlers; later issues add offers, leases and wallet state."""

    name = "jupyter_gpumarket"

    def initialize_handlers(self) -> None:
        self.handlers.extend(handlers.default_handlers)

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        """Once the server's loop runs: take back remote kernels a crashed server left."""
        self._readopt = asyncio.ensure_future(
            readopt_kernels(serverapp.kernel_manager, serverapp.root_dir, self.log)
        )
