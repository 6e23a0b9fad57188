#!/usr/bin/env bash
# The smoke subset (serving, the plain-python contract, framework compatibility) on
# every supported CPython besides the one the full suite ran on. One abi3 wheel serves
# them all; each version gets its own virtualenv in .venv-smoke-X.Y.
#   .ci/smoke-pythons.sh [VERSION ...]     (default: 3.10 3.12 3.13)
set -euo pipefail
cd "$(dirname "$0")/.."

versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(3.10 3.12 3.13)
tests=(tests/test_http.py tests/test_contract.py tests/test_compat.py tests/test_compat_libs.py
  tests/test_api.py tests/test_check.py tests/test_tasks.py)
profile=${PROFILE:-release}

rm -rf target/smoke-wheel
.venv/bin/maturin build --quiet --profile "$profile" --interpreter .venv/bin/python -o target/smoke-wheel
wheel=$(ls target/smoke-wheel/ferrocorn-*.whl)

for version in "${versions[@]}"; do
  python=$(.ci/pyenv-python.sh "$version")
  venv=.venv-smoke-$version
  echo "== smoke on $("$python" --version)"
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -r requirements-dev.txt
  "$venv/bin/python" -m pip install --quiet --force-reinstall --no-deps "$wheel"
  "$venv/bin/python" -m pytest -q -p no:cacheprovider "${tests[@]}"
done
