"""``--simulate-gpu "MODEL[xCOUNT]"``: an inventory that claims GPUs this machine lacks.

For demos and tests of the market: the agent advertises (and its probe reports) the simulated
GPUs, its offers carry ``simulated=1`` in their metadata, and the seeded challenge still runs on
what the machine really has, so it fails (the verdict never reads the label).
"""

from __future__ import annotations

import re

from jupyter_gpumarket.agent.gpu import GpuInfo, GpuInventory
from jupyter_gpumarket.core.gpu_catalog import normalize
from jupyter_gpumarket.exceptions import ConfigError

__all__ = ["parse_simulated", "simulated_inventory"]

_SPEC = re.compile(r"^(?P<model>[^x]{1,128}?)\s*(?:x\s*(?P<count>\d{1,2}))?$")
_CC = {"Blackwell": (10, 0), "Hopper": (9, 0), "Ada": (8, 9), "Ampere": (8, 0), "Turing": (7, 5)}
_MIB = 1024 * 1024


def parse_simulated(spec: str) -> tuple[str, int]:
    """``"H100x2"`` -> ("H100", 2); ``"RTX 4090"`` -> ("RTX 4090", 1); ConfigError otherwise."""
    m = _SPEC.match((spec or "").strip())
    count = int(m.group("count") or 1) if m else 0
    if m is None or not 1 <= count <= 64:
        raise ConfigError(
            f"--simulate-gpu {spec!r}: use MODEL or MODELxCOUNT (1 to 64), e.g. H100x2"
        )
    model = m.group("model").strip()
    if normalize(model) is None:
        raise ConfigError(
            f"--simulate-gpu {spec!r}: {model!r} is not in the GPU table (core/gpus.json)"
        )
    return model, count


def simulated_inventory(spec: str) -> GpuInventory:
    """The inventory an agent with ``--simulate-gpu spec`` claims (NVML-like names)."""
    model, count = parse_simulated(spec)
    cls = normalize(model)
    assert cls is not None
    gpus = tuple(
        GpuInfo(
            index=i,
            name=f"{cls.vendor} {cls.name}",
            uuid=f"GPU-simulated-{i:04d}",
            memory_total_bytes=cls.vram_mib * _MIB,
            compute_capability=_CC.get(cls.arch, (1, 0)),
        )
        for i in range(count)
    )
    return GpuInventory(
        gpus=gpus,
        driver_version="simulated",
        cuda_driver_version="simulated",
        reason=f"SIMULATED by --simulate-gpu {spec!r}: this machine does not have these GPUs",
    )
