"""Notebook widgets: ``pick()`` (OfferPicker) and ``status()`` (StatusView).

Both run in the notebook's kernel and talk to the Jupyter server's gpumarket API
(docs/server-api.md) through :mod:`jupyter_gpumarket.widgets.client`; inside a remote gpumarket
kernel ``status()`` reads the agent's telemetry from the kernel's environment instead.
"""

from __future__ import annotations

import os
from typing import Any

from jupyter_gpumarket.widgets.client import ServerClient, find_server
from jupyter_gpumarket.widgets.picker import OfferPicker
from jupyter_gpumarket.widgets.status import StatusView

__all__ = ["OfferPicker", "ServerClient", "StatusView", "find_server", "pick", "status"]


def pick(client: ServerClient | None = None, **filters: Any) -> OfferPicker:
    """The offer picker for this notebook. Filters: gpu, min_vram_gib, max_price (token units
    per hour), region, verified, policy (cheapest|fastest|value)."""
    return OfferPicker(client or find_server(), **filters)


def status(
    client: ServerClient | None = None,
    kernel_id: str | None = None,
    *,
    notebook: str | None = None,
    live: bool = True,
) -> StatusView:
    """The status of this notebook's gpumarket kernel (launch, spend, cull, telemetry), or of
    the kernel ``kernel_id``, or of the launch of another ``notebook`` (its server path).

    Inside a remote gpumarket kernel (``$GPUMARKET_TELEMETRY_FILE`` set by the agent) it shows
    this kernel's telemetry, read locally."""
    from jupyter_gpumarket.telemetry_view import TELEMETRY_FILE_ENV

    if client is None and kernel_id is None and os.environ.get(TELEMETRY_FILE_ENV):
        view = StatusView(remote=True)
    else:
        client = client or find_server()
        if notebook is None and kernel_id is None:
            try:
                notebook = client.notebook_path()
            except Exception:
                notebook = None
        view = StatusView(client, kernel_id=kernel_id, notebook=notebook)
    return view.start() if live else view
