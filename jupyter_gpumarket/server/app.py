"""The jupyter_server extension: REST endpoints under /gpumarket/."""

from __future__ import annotations

from jupyter_server.extension.application import ExtensionApp

from jupyter_gpumarket.server import handlers


class GpuMarketExtension(ExtensionApp):
    """Registers the gpumarket handlers; later issues add offers, leases and wallet state."""

    name = "jupyter_gpumarket"

    def initialize_handlers(self) -> None:
        self.handlers.extend(handlers.default_handlers)
