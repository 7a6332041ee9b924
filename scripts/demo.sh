#!/usr/bin/env bash
# The main job (README): a devnet market of four local providers + JupyterLab with the notebooks.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/setup.sh
source scripts/setup.sh
exec .venv/bin/gpumarket demo "$@"
