"""Where the project keeps its per-user files (keystore, network profiles, tools)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["gpumarket_home", "networks_dir", "tools_dir"]


def gpumarket_home() -> Path:
    """``$GPUMARKET_HOME`` or ``~/.gpumarket`` (tests point the variable at a tmp dir)."""
    return Path(os.environ.get("GPUMARKET_HOME") or Path.home() / ".gpumarket")


def networks_dir() -> Path:
    return gpumarket_home() / "networks"


def tools_dir() -> Path:
    return gpumarket_home() / "tools"
