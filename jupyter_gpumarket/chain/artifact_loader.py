"""Load the committed contract artifacts (ABI + bytecode) and check they match the sources."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from jupyter_gpumarket.exceptions import ArtifactStale

__all__ = ["ARTIFACTS_DIR", "ContractArtifact", "check_sources_unchanged", "load_artifact"]

ARTIFACTS_DIR = Path(__file__).resolve().parent / "artifacts"
_FIX = "run `python scripts/compile_contracts.py` and commit jupyter_gpumarket/chain/artifacts"


@dataclass(frozen=True)
class ContractArtifact:
    """A compiled contract: its name, ABI and creation bytecode (0x-hex)."""

    name: str
    abi: tuple[dict[str, Any], ...]
    bytecode: str
    source_sha256: str

    def __post_init__(self) -> None:
        if not self.bytecode.startswith("0x") or len(self.bytecode) < 4:
            raise ArtifactStale(f"artifact {self.name}: bytecode is missing; {_FIX}")


@cache
def load_artifact(name: str) -> ContractArtifact:
    """Read ``artifacts/<name>.json`` (TestUSD, Escrow, Registry)."""
    path = ARTIFACTS_DIR / f"{name}.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactStale(f"contract artifact {path} is unreadable ({exc}); {_FIX}") from exc
    return ContractArtifact(
        name=name,
        abi=tuple(data["abi"]),
        bytecode=data["bytecode"],
        source_sha256=data["source_sha256"],
    )


def check_sources_unchanged(name: str) -> None:
    """Cheap staleness check (no compiler): the source hash recorded in the artifact."""
    from jupyter_gpumarket.chain.compile import sources_sha256

    if sources_sha256(name) != load_artifact(name).source_sha256:
        raise ArtifactStale(f"contracts/{name}.vy (or a module) changed since compiling; {_FIX}")
