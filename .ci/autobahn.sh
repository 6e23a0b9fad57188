#!/usr/bin/env bash
# Autobahn WebSocket conformance (fuzzingclient) against a real ferrocorn server.
#
#   .ci/autobahn.sh                 install wstest if needed, run the CI case set
#   .ci/autobahn.sh --install-only  only install wstest (prints its path)
#   .ci/autobahn.sh --cases '["1.*", "12.1.*"]'   run other cases (a JSON list)
#
# wstest (autobahntestsuite) is Python 2.7 code: it is installed once, with pinned
# packages, into a virtualenv in $AUTOBAHN_HOME (default ~/.cache/ferrocorn-autobahn)
# from pyenv's 2.7.18, as /work/shared/conformance.md describes. The server is
# ferrocorn from .venv (build it first: make build) serving tests/apps/ws_echo.py.
# Exits non-zero unless every case's behaviour is OK, NON-STRICT or INFORMATIONAL;
# prints a count per behaviour and the failing cases. The report is left in
# $AUTOBAHN_REPORTS (default target/autobahn).
set -euo pipefail
cd "$(dirname "$0")/.."

AUTOBAHN_HOME=${AUTOBAHN_HOME:-$HOME/.cache/ferrocorn-autobahn}
AUTOBAHN_REPORTS=${AUTOBAHN_REPORTS:-target/autobahn}
PYTHON=${PYTHON:-.venv/bin/python}
WSTEST=$AUTOBAHN_HOME/py27/bin/wstest
# Every case of these groups. On the 2-core CI machine the run takes about 11 minutes,
# nearly all of it wstest's own (Python 2) CPU on 12.* and 13.* (permessage-deflate,
# 1000 messages a case); 9.* (large messages) takes 11 seconds, so nothing is dropped.
CASES='["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "12.*", "13.*"]'
INSTALL_ONLY=false

while [ $# -gt 0 ]; do
  case "$1" in
    --install-only) INSTALL_ONLY=true ;;
    --cases) CASES=$2; shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

install_wstest() {
  if [ -x "$WSTEST" ] && "$AUTOBAHN_HOME/py27/bin/python" -c "import autobahntestsuite" 2>/dev/null; then
    return
  fi
  local py27
  py27=$(.ci/pyenv-python.sh 2.7.18)
  echo "== installing wstest into $AUTOBAHN_HOME"
  rm -rf "$AUTOBAHN_HOME"
  mkdir -p "$AUTOBAHN_HOME"
  python3 -m venv "$AUTOBAHN_HOME/tool"
  "$AUTOBAHN_HOME/tool/bin/pip" install --quiet "virtualenv<20.22"
  "$AUTOBAHN_HOME/tool/bin/virtualenv" --quiet -p "$py27" "$AUTOBAHN_HOME/py27"
  # Pinned: newer releases of these dropped Python 2.7.
  "$AUTOBAHN_HOME/py27/bin/pip" install --quiet --disable-pip-version-check \
    setuptools==44.0.0 txaio==2.1.0 incremental==16.10.1 pyOpenSSL==19.1.0 \
    cryptography==3.3.2 Twisted==19.10.0 zope.interface==4.6.0 jinja2==2.11.3 \
    markupsafe==1.1.1 Werkzeug==1.0.1 klein==17.10.0 service_identity==18.1.0 \
    unittest2==1.1.0 six==1.16.0 "autobahn[accelerate,twisted]==0.10.9" \
    autobahntestsuite==25.10.1
  "$AUTOBAHN_HOME/py27/bin/python" -c "import autobahntestsuite"
}

install_wstest
if $INSTALL_ONLY; then
  echo "$WSTEST"
  exit 0
fi

if ! "$PYTHON" -c "import ferrocorn" 2>/dev/null; then
  echo "ferrocorn is not installed in $PYTHON: run make build first" >&2
  exit 1
fi
exec "$PYTHON" tests/autobahn/run.py --wstest "$WSTEST" --cases "$CASES" \
  --reports "$AUTOBAHN_REPORTS"
