"""jupyter-gpumarket: Jupyter kernels on GPUs rented from a decentralized market."""

from __future__ import annotations

from typing import Any

from jupyter_gpumarket._version import __version__

__all__ = ["__version__"]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "jupyter-gpumarket"}]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from jupyter_gpumarket.server.app import GpuMarketExtension

    return [{"module": "jupyter_gpumarket", "app": GpuMarketExtension}]
