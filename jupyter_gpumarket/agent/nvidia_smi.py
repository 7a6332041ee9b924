"""Reading ``nvidia-smi --query-gpu=... --format=csv`` output and comparing it with NVML's
inventory: the GPU check (benchmarks/gpu_check.py) runs both on real hardware and reports each
difference. Pure: the caller runs nvidia-smi.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping, Sequence

from jupyter_gpumarket.agent.gpu import GpuInventory
from jupyter_gpumarket.exceptions import ProtocolError

__all__ = ["cross_check", "parse_nvidia_smi_csv"]


def parse_nvidia_smi_csv(text: str) -> tuple[dict[str, str | None], ...]:
    """Parse ``nvidia-smi --query-gpu=... --format=csv`` output (with its header line).

    Keys are the query fields without units ("memory.total"); a value loses the unit its header
    declares ("81559 MiB" under "[MiB]" -> "81559"); "N/A" and "[N/A]" become None.
    """
    rows = [r for r in csv.reader(text.strip().splitlines(), skipinitialspace=True) if r]
    if not rows:
        raise ProtocolError("nvidia-smi CSV is empty: run it with --format=csv (header included)")
    fields: list[tuple[str, str | None]] = []
    for head in rows[0]:
        m = re.fullmatch(r"\s*([\w.]+)\s*(?:\[(.+)\])?\s*", head)
        if m is None:
            raise ProtocolError(f"nvidia-smi CSV header field {head!r} is not 'name [unit]'")
        fields.append((m.group(1), m.group(2)))
    parsed = []
    for line_no, row in enumerate(rows[1:], start=2):
        if len(row) != len(fields):
            raise ProtocolError(
                f"nvidia-smi CSV line {line_no} has {len(row)} values for {len(fields)} fields"
            )
        out: dict[str, str | None] = {}
        for (key, unit), raw in zip(fields, row, strict=True):
            value = raw.strip()
            if unit and value.endswith(f" {unit}"):
                value = value[: -len(unit) - 1]
            out[key] = None if value in ("N/A", "[N/A]", "[Not Supported]") else value
        parsed.append(out)
    return tuple(parsed)


def cross_check(inv: GpuInventory, rows: Sequence[Mapping[str, str | None]]) -> tuple[str, ...]:
    """Differences between NVML's inventory and nvidia-smi rows; ``()`` when they agree.

    Compares count, and per index whichever of name, uuid, memory.total (MiB) and
    driver_version the rows carry.
    """
    problems = []
    if len(rows) != len(inv.gpus):
        problems.append(f"nvidia-smi lists {len(rows)} GPU(s), NVML {len(inv.gpus)}")
    by_index = {g.index: g for g in inv.gpus}
    for row in rows:
        idx = row.get("index")
        gpu = by_index.get(int(idx)) if idx is not None and idx.isdigit() else None
        if gpu is None:
            problems.append(f"nvidia-smi GPU {idx} is missing from NVML's inventory")
            continue
        expected = {
            "name": gpu.name,
            "uuid": gpu.uuid,
            "memory.total": str(gpu.memory_total_mib),
            "driver_version": inv.driver_version,
        }
        for key, mine in expected.items():
            if key in row and row[key] != mine:
                problems.append(f"GPU {idx} {key}: nvidia-smi {row[key]!r}, NVML {mine!r}")
    return tuple(problems)
