"""Compile the Vyper sources in ``jupyter_gpumarket/contracts`` into artifact dictionaries.

Only ``scripts/compile_contracts.py`` (the one generator) writes them to disk; the staleness
test calls :func:`compile_all` and compares with the committed files.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from jupyter_gpumarket.exceptions import ConfigError

__all__ = [
    "CONTRACTS",
    "CONTRACTS_DIR",
    "EVM_VERSION",
    "compile_all",
    "compile_contract",
    "dumps",
    "sources_sha256",
]

CONTRACTS_DIR = Path(__file__).resolve().parent.parent / "contracts"
CONTRACTS = ("TestUSD", "Escrow", "Registry")  # top-level contracts; escrow_*.vy are modules
# cancun: transient storage for the reentrancy lock; supported by anvil and py-evm alike.
EVM_VERSION = "cancun"


def compile_contract(name: str) -> dict[str, Any]:
    """Compile ``contracts/<name>.vy``; return its artifact (abi, bytecode, provenance)."""
    try:
        import vyper
        from vyper.cli.vyper_compile import compile_files
        from vyper.compiler.settings import OptimizationLevel, Settings
    except ImportError as exc:  # only the contracts' build needs the compiler
        raise ConfigError(
            "compiling the contracts needs vyper and snekmate: "
            "pip install 'jupyter-gpumarket[build]'"
        ) from exc

    source = CONTRACTS_DIR / f"{name}.vy"
    settings = Settings(optimize=OptimizationLevel.GAS, evm_version=EVM_VERSION)
    out = compile_files([str(source)], ("abi", "bytecode"), settings=settings)
    (result,) = out.values()
    return {
        "contract_name": name,
        "compiler": f"vyper {vyper.__version__}",
        "evm_version": EVM_VERSION,
        "optimize": "gas",
        "source_sha256": sources_sha256(name),
        "abi": result["abi"],
        "bytecode": result["bytecode"],
    }


def sources_sha256(name: str) -> str:
    """Hash of ``<name>.vy`` and the project's own modules it may import (escrow_*.vy)."""
    digest = hashlib.sha256()
    for path in [CONTRACTS_DIR / f"{name}.vy", *sorted(CONTRACTS_DIR.glob("escrow_*.vy"))]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def compile_all() -> dict[str, dict[str, Any]]:
    """Compile every contract the project ships."""
    return {name: compile_contract(name) for name in CONTRACTS}


def dumps(artifact: dict[str, Any]) -> str:
    """The exact text of an artifact file (stable, so the staleness test can compare text)."""
    return json.dumps(artifact, indent=1, sort_keys=True) + "\n"
