"""The market's core modules stay pure: standard library, core and exceptions only (no I/O
libraries), and the GPU table ships inside the package."""

from __future__ import annotations

import ast
import sys
from importlib import resources
from pathlib import Path

import pytest

import jupyter_gpumarket.core as core

MODULES = (
    "gpu_catalog",
    "verification",
    "challenge",
    "challenge_reference",
    "challenge_plan",
    "vram_proof",
    "seeded",
    "reputation",
    "ranking",
    "market_offer",
    "offer_filter",
    "challenge_wire",
    "probe_limit",
    "telemetry",
    "hw_claim",
    "f32codec",
)
IO_MODULES = {
    "socket",
    "asyncio",
    "subprocess",
    "urllib",
    "http",
    "ssl",
    "os",
    "shutil",
    "threading",
}


@pytest.mark.parametrize("name", MODULES)
def test_imports_are_stdlib_or_core(name):
    tree = ast.parse((Path(core.__file__).parent / f"{name}.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots = [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots = [node.module.split(".")[0]]
            if roots[0] == "jupyter_gpumarket":
                assert node.module.startswith(
                    ("jupyter_gpumarket.core", "jupyter_gpumarket.exceptions")
                ), node.module
                continue
        else:
            continue
        for root in roots:
            assert root in sys.stdlib_module_names or root == "__future__", (name, root)
            assert root not in IO_MODULES, (name, root)


def test_the_gpu_table_is_package_data():
    assert resources.files("jupyter_gpumarket.core").joinpath("gpus.json").is_file()
