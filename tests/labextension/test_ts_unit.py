"""The labextension's pure TypeScript logic (formatting, launch states, spend, offers), tested
with vitest through `npm test` in labextension/ so that the suite's one command covers it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

LABEXT = Path(__file__).resolve().parents[2] / "labextension"


def test_vitest_unit_tests_pass() -> None:
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed: the labextension's unit tests need Node.js and npm")
    if not (LABEXT / "node_modules" / "vitest" / "package.json").is_file():
        pytest.skip(
            "labextension/node_modules has no vitest: run scripts/setup.sh (it installs the "
            "labextension's build and test dependencies)"
        )
    env = {**os.environ, "CI": "1", "NO_COLOR": "1"}
    proc = subprocess.run(
        [npm, "test", "--silent"],
        cwd=LABEXT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"vitest failed:\n{out[-6000:]}"
    assert " passed" in out, out[-2000:]
