"""`gpumarket provider serve`'s shared GPU slices: the flags, the slices to rent, and the
agent settings that watch them (cli/provider.py calls these three)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from jupyter_gpumarket.cli import argtypes
from jupyter_gpumarket.exceptions import ConfigError

__all__ = ["add_arguments", "agent_config", "layout"]

log = logging.getLogger("jupyter_gpumarket.provider")


def add_arguments(serve: argparse.ArgumentParser) -> None:
    from jupyter_gpumarket.core.gpu_slices import MAX_SLICES

    group = serve.add_argument_group("shared GPU slices (one GPU, several kernels)")
    group.add_argument(
        "--slices",
        type=argtypes.int_in(2, MAX_SLICES, f"slices per GPU, 2 to {MAX_SLICES}"),
        help="rent each GPU to N kernels at once: MIG instances where MIG is on, else "
        "time-shared with a memory cap per kernel (CUDA MPS where its daemon runs, else "
        "watched: warned, then stopped over the slice); the offer is priced per slice",
    )
    group.add_argument(
        "--mig-profile", metavar="PROFILE", help="rent the GPU's MIG instances of PROFILE (1g.10gb)"
    )
    group.add_argument(
        "--slice-vram-mb",
        type=argtypes.megabytes(2**31 - 1),
        help="memory cap per time-shared slice (default: an equal share of the GPU)",
    )
    group.add_argument(
        "--slice-grace",
        type=argtypes.seconds(),
        default=10.0,
        help="seconds a kernel may stay over its slice's memory before it is stopped",
    )


def layout(args: argparse.Namespace, inventory: Any, *, sandboxed: bool) -> Any:
    """The slices to rent (agent.gpu_slices.SliceLayout), or None for whole GPUs.

    MPS only for unsandboxed kernels: the sandbox does not show them the daemon's pipe dir
    (and its control pipe is no renter's to use); sandboxed slices are watched instead."""
    if args.slices is None and args.mig_profile is None:
        if args.slice_vram_mb is not None:
            raise ConfigError("--slice-vram-mb needs --slices N")
        return None
    from jupyter_gpumarket.agent.gpu_slices import mps_pipe_dir, plan_layout

    if args.gpus_per_kernel != 1:
        raise ConfigError("a slice is part of one GPU: drop --gpus-per-kernel with --slices")
    planned = plan_layout(
        inventory,
        slices=args.slices,
        mig_profile=args.mig_profile,
        slice_vram_mib=args.slice_vram_mb,
        mps_dir=None if args.simulate_gpu or sandboxed else mps_pipe_dir(),
    )
    log.info(
        "renting %d GPU slice(s) (%s): %s",
        len(planned.slices),
        planned.info()["mode"],
        planned.describe(),
    )
    if args.max_kernels < len(planned.slices):
        log.warning(
            "--max-kernels %d leaves %d slice(s) idle: pass --max-kernels %d",
            args.max_kernels,
            len(planned.slices) - args.max_kernels,
            len(planned.slices),
        )
    return planned


def agent_config(args: argparse.Namespace, layout: Any) -> dict[str, Any]:
    """The AgentConfig fields of a sliced provider."""
    if layout is None:
        return {}
    from jupyter_gpumarket.agent.gpu_slices import NvmlVramReader, SimulatedVramReader

    reader = SimulatedVramReader() if args.simulate_gpu else NvmlVramReader()
    return {"gpu_slices": layout.slices, "vram_reader": reader, "slice_grace": args.slice_grace}
