#!/usr/bin/env bash
# One command for the side-by-side benchmark: ferrocorn vs granian, uvicorn, and gunicorn
# with uvicorn-worker. Prepares bench/.venv (peers from PyPI) and wrk, then runs run.py.
#
#   bench/run.sh                      # 3 rounds x 3 workloads x 4 servers, 10 s each
#   bench/run.sh --quick              # CI smoke: 1 round, 2 s, hello world only
#   bench/run.sh --servers ferrocorn,granian --workloads hello,echo --rounds 5
#
# ferrocorn is run by $FERROCORN_PYTHON (default: the project's .venv/bin/python), an
# interpreter where ferrocorn is already installed; this script never builds it.
#
# BENCH_PYTHON=3.12 bench/run.sh ...  runs every server on that CPython (from pyenv):
# the peers in bench/.venv-3.12, and ferrocorn as this checkout built by `make build`
# (its abi3 extension serves every CPython >= 3.10), imported there through a .pth file.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
venv="$here/.venv"
python="${PYTHON:-python3}"
if [ -n "${BENCH_PYTHON:-}" ]; then
  venv="$here/.venv-$BENCH_PYTHON"
  python=$("$root/.ci/pyenv-python.sh" "$BENCH_PYTHON")
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "== creating $venv" >&2
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
fi
# Unpinned: a no-op when everything is there; each results file records the versions.
"$venv/bin/python" -m pip install --quiet -r "$here/requirements.txt"
if [ -n "${BENCH_PYTHON:-}" ]; then
  site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$root/python" > "$site/ferrocorn-checkout.pth"
  export BENCH_VENV="$venv" FERROCORN_PYTHON="$venv/bin/python"
fi

if ! command -v wrk >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "== installing wrk" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
  else
    echo "wrk is missing: run 'sudo apt-get install -y wrk' (Debian/Ubuntu) first" >&2
    exit 1
  fi
fi

export FERROCORN_PYTHON="${FERROCORN_PYTHON:-$root/.venv/bin/python}"
exec "$venv/bin/python" "$here/run.py" "$@"
