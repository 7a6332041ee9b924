"""`gpumarket provider`: placeholder, filled by the agent work."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add the `provider` command group (none yet)."""
