"""Inside a remote kernel: the latest telemetry sample of this kernel, for widgets and code.

The provider's agent writes its latest sample (``core.telemetry``'s JSON form: CPU, RAM, the
kernel's GPUs, billed seconds and spend) about every second, atomically, to the file named by
``$GPUMARKET_TELEMETRY_FILE`` in the kernel's environment::

    from jupyter_gpumarket.telemetry_view import read_latest
    read_latest()  # {"t": ..., "cpu_pct": 97.5, "ram_mib": 2048, "gpus": [...], ...} or None

``None`` means no sample yet (the kernel just started) or not a gpumarket kernel.
"""

from __future__ import annotations

import os
from typing import Any

from jupyter_gpumarket.core import safejson
from jupyter_gpumarket.core.telemetry import MAX_SAMPLE_BYTES, TelemetrySample
from jupyter_gpumarket.exceptions import ProtocolError

__all__ = ["TELEMETRY_FILE_ENV", "read_latest"]

TELEMETRY_FILE_ENV = "GPUMARKET_TELEMETRY_FILE"


def read_latest(path: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """The latest sample as a dict, or None when there is none (yet) or it is unreadable."""
    if path is None:
        path = os.environ.get(TELEMETRY_FILE_ENV)
        if not path:
            return None
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SAMPLE_BYTES + 1)
    except OSError:
        return None
    try:
        return TelemetrySample.from_json(
            safejson.loads(data, "telemetry file", max_bytes=MAX_SAMPLE_BYTES)
        ).to_json()
    except (ProtocolError, ValueError):
        return None
