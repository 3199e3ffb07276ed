#!/usr/bin/env bash
# The Python side of the origin helpers' tests (npm test only): a virtualenv in
# .venv-origin with FastAPI, uvicorn, PyJWT, pytest and their dependencies from
# PyPI, pinned in packages/origin-python/requirements-dev.txt. Skipped when it
# is already there for the current requirements (about 20 s when cold).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-origin"
REQ="$ROOT/packages/origin-python/requirements-dev.txt"
STAMP="$VENV/.portcullis-installed"

say() { printf '[setup] %s\n' "$*"; }

if [ -f "$STAMP" ] && [ "$STAMP" -nt "$REQ" ] && [ -x "$VENV/bin/python" ]; then
  say "python origin venv (FastAPI, PyJWT, pytest): ok"
  exit 0
fi
command -v python3 >/dev/null 2>&1 || { echo "[setup] error: python3 not found (the origin helper tests need it)" >&2; exit 1; }
start=$SECONDS
say "python origin venv (FastAPI, PyJWT, pytest): installing into .venv-origin"
rm -rf "$VENV"
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ"
touch "$STAMP"
say "python origin venv (FastAPI, PyJWT, pytest): installed in $((SECONDS - start)) s"
