#!/usr/bin/env bash
# Checks the release artifacts in dist/ as a user would get them (issue #16):
#   - twine's metadata check on the sdist and every wheel;
#   - auditwheel show on every wheel: the platform tag it finds is in the wheel's name;
#   - tests/test_dist.py: the wheel for this machine installed into clean virtualenvs
#     (pyenv's CPython 3.10, 3.12, 3.13) with no cargo/rustc on PATH, serving a request.
# Builds dist/ (`make dist`) first when it holds no wheel for this machine.
#   .ci/dist-check.sh            FERROCORN_DIST_PYTHONS="3.12" .ci/dist-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

arch=$(uname -m)
if ! compgen -G "dist/ferrocorn-*-manylinux*_${arch}.whl" >/dev/null; then
  echo "== no $arch wheel in dist/: make dist"
  make dist
fi

echo "== twine check"
.venv/bin/twine check --strict dist/*

echo "== auditwheel show"
for wheel in dist/*.whl; do
  report=$(.venv/bin/auditwheel show "$wheel" 2>&1 | tr '\n' ' ')
  tag=$(grep -o 'following platform tag: *"[^"]*"' <<<"$report" | sed 's/.*"\(.*\)"/\1/' || true)
  if [ -z "$tag" ] || [[ "$(basename "$wheel")" != *"$tag"* ]]; then
    echo "dist-check: auditwheel finds ${tag:-no tag} for $(basename "$wheel"): $report" >&2
    exit 1
  fi
  echo "$(basename "$wheel"): $tag"
done

echo "== the wheel in clean virtualenvs"
FERROCORN_DIST_TEST=1 .venv/bin/python -m pytest -q -p no:cacheprovider tests/test_dist.py
