"""Kernel provisioner that launches kernels on a provider through the tunnel."""

from jupyter_gpumarket.provisioning.provisioner import GpuMarketProvisioner

__all__ = ["GpuMarketProvisioner"]
