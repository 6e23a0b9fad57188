#!/usr/bin/env bash
# Side-by-side benchmark: ferrocorn vs granian, uvicorn and gunicorn+uvicorn-worker.
# Usage: bench/run.sh [--quick] [--rounds N] [--duration S] [--servers a,b] [--workloads a,b]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
venv="$here/.venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
fi
# Peers come from PyPI into their own venv; ferrocorn is the project's build (.venv).
"$venv/bin/pip" install --quiet uvicorn granian gunicorn uvicorn-worker fastapi uvloop httptools
if ! command -v wrk >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi
export FERROCORN_PYTHON="${FERROCORN_PYTHON:-$root/.venv/bin/python}"
exec "$venv/bin/python" "$here/run.py" "$@"
