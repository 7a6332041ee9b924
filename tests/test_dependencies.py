"""What the package imports is what it declares: each third-party module that
jupyter_gpumarket imports comes from a distribution named in pyproject.toml."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "jupyter_gpumarket"
# imported only to compile the contracts (jupyter_gpumarket.chain.compile): the build extra
BUILD_ONLY = {"vyper"}
# GPU backends of the verification challenge (agent/challenge_compute.py): used when the
# provider's machine has them, never required (numpy, declared, is the fallback)
OPTIONAL_ACCELERATORS = {"torch", "cupy"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _names(requirements: list[str]) -> set[str]:
    return {_norm(re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0]) for r in requirements}


def _imported_modules() -> dict[str, str]:
    """Top-level module -> one file that imports it (absolute imports only)."""
    found: dict[str, str] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def test_every_imported_distribution_is_declared() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = _names(project["dependencies"])
    build = _names(project["optional-dependencies"]["build"])
    dists = importlib.metadata.packages_distributions()
    undeclared = {}
    for module, where in _imported_modules().items():
        if module in sys.stdlib_module_names or module in ("__future__", "jupyter_gpumarket"):
            continue
        if module in OPTIONAL_ACCELERATORS:
            continue
        provided = {_norm(d) for d in dists.get(module, [])}
        assert provided, f"{module} (imported by {where}) is not installed"
        declared = build if module in BUILD_ONLY else runtime
        if not provided & declared:
            undeclared[module] = (sorted(provided), where)
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_the_contract_compiler_is_not_a_runtime_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not {"vyper", "snekmate"} & _names(project["dependencies"])
    assert {"vyper", "snekmate"} <= _names(project["optional-dependencies"]["test"])
    for module, where in _imported_modules().items():
        if module in BUILD_ONLY:
            assert where == "jupyter_gpumarket/chain/compile.py", where
