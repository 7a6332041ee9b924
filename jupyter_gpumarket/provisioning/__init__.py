"""Kernel provisioner that launches kernels on a provider through the tunnel.

``GpuMarketProvisioner`` is imported on first use (PEP 562): a tunnel process imports only the
link and the shim from this package, not the provisioner and everything it pulls in (jupyter_client,
the launch flow, the market), which halves its start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jupyter_gpumarket.provisioning.provisioner import GpuMarketProvisioner

__all__ = ["GpuMarketProvisioner"]


def __getattr__(name: str) -> Any:
    if name == "GpuMarketProvisioner":
        from jupyter_gpumarket.provisioning.provisioner import GpuMarketProvisioner

        return GpuMarketProvisioner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
