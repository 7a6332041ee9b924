"""Re-adopt remote kernels that kept running while the Jupyter server was down."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from jupyter_gpumarket.exceptions import GpuMarketError
from jupyter_gpumarket.procs import pid_alive
from jupyter_gpumarket.provisioning import records

__all__ = ["readopt_kernels"]


def _api_path(root_dir: str, cwd: str | None) -> str | None:
    if not cwd:
        return None
    try:
        rel = Path(cwd).resolve().relative_to(Path(root_dir).resolve())
    except ValueError:
        return None
    return rel.as_posix() if str(rel) != "." else ""


async def readopt_kernels(kernel_manager: Any, root_dir: str, log: logging.Logger) -> list[str]:
    """Start each recorded kernel id again; the provisioner reattaches instead of launching.

    Kernels whose provider no longer has them are dropped (their record is deleted).
    """
    adopted = []
    for record in records.load_all():
        if record.kernel_id in kernel_manager:
            continue
        if record.server_pid != os.getpid() and pid_alive(record.server_pid):
            log.info(
                "remote kernel %s belongs to running server pid %s",
                record.kernel_id,
                record.server_pid,
            )
            continue
        try:
            await kernel_manager.start_kernel(
                kernel_id=record.kernel_id,
                kernel_name=record.kernel_name,
                path=_api_path(root_dir, record.cwd),
            )
        except (GpuMarketError, OSError) as exc:
            log.warning("dropped remote kernel %s: %s", record.kernel_id, exc)
            records.forget(record.kernel_id)
            continue
        adopted.append(record.kernel_id)
        log.info("re-adopted remote kernel %s on %s", record.kernel_id, record.provider_url)
    return adopted
