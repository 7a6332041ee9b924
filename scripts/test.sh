#!/usr/bin/env bash
# The test command (README, .ci/run): installs what it needs into ./.venv, then runs the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/setup.sh
source scripts/setup.sh
.venv/bin/ruff check jupyter_gpumarket tests benchmarks
.venv/bin/mypy  # [tool.mypy] in pyproject.toml: core/ strictly, the public entry points
exec .venv/bin/python -m pytest "$@"
