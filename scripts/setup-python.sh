#!/usr/bin/env bash
# The Python side of the interop tests (npm test only): a virtualenv in
# .venv-interop with PyJWT and cryptography from PyPI, pinned in
# tests/interop/requirements.txt. Skipped when it is already there for the
# current requirements (about 10 s when cold).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-interop"
REQ="$ROOT/tests/interop/requirements.txt"
STAMP="$VENV/.portcullis-installed"

say() { printf '[setup] %s\n' "$*"; }

if [ -f "$STAMP" ] && [ "$STAMP" -nt "$REQ" ] && [ -x "$VENV/bin/python" ]; then
  say "python interop venv (PyJWT): ok"
  exit 0
fi
command -v python3 >/dev/null 2>&1 || { echo "[setup] error: python3 not found (the interop tests need it)" >&2; exit 1; }
start=$SECONDS
say "python interop venv (PyJWT): installing into .venv-interop"
rm -rf "$VENV"
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ"
touch "$STAMP"
say "python interop venv (PyJWT): installed in $((SECONDS - start)) s"
