#!/usr/bin/env bash
# Prints the path of pyenv's newest CPython VERSION (3.12 -> the newest 3.12.x; an exact
# version such as 2.7.18 also works), or fails with a message naming what was looked for.
# Shared by the smoke runs, the Autobahn suite and bench/run.sh's BENCH_PYTHON.
#   .ci/pyenv-python.sh VERSION
set -euo pipefail
version=${1:?usage: pyenv-python.sh VERSION}
root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
python=$(ls -d "$root/versions/$version/bin/python" "$root/versions/$version".*/bin/python \
  2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$python" ]; then
  echo "no CPython $version under $root/versions (pyenv install $version)" >&2
  exit 1
fi
echo "$python"
