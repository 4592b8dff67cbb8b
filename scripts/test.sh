#!/usr/bin/env bash
# Set up, then lint and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
. .venv/bin/activate
ruff check .
ruff format --check .
python -m pytest "$@"
