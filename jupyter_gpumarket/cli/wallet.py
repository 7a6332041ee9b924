"""`gpumarket wallet`: placeholder until the escrow work lands."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add the `wallet` command group (none yet)."""
