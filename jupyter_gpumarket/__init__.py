"""jupyter-gpumarket: Jupyter kernels on GPUs rented from a decentralized market."""

from __future__ import annotations

from typing import Any

from jupyter_gpumarket._version import __version__

__all__ = ["__version__", "pick", "status"]


def pick(**filters: Any) -> Any:
    """The GPU offer picker for this notebook (``widgets.OfferPicker``); imports ipywidgets only
    when called."""
    from jupyter_gpumarket.widgets import pick as _pick

    return _pick(**filters)


def status(**kwargs: Any) -> Any:
    """Launch, spend and GPU telemetry of this notebook's gpumarket kernel
    (``widgets.StatusView``); imports ipywidgets only when called."""
    from jupyter_gpumarket.widgets import status as _status

    return _status(**kwargs)


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "jupyter-gpumarket"}]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from jupyter_gpumarket.server.app import GpuMarketExtension

    return [{"module": "jupyter_gpumarket", "app": GpuMarketExtension}]
