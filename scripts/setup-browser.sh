#!/usr/bin/env bash
# The browser for tests/e2e/browser.test.mjs (npm test only): Debian's Chromium,
# driven by playwright-core (an npm devDependency; it downloads no browser).
# Skipped when $CHROMIUM_PATH or /usr/bin/chromium is there; otherwise
# `apt-get install chromium` (about 20 s; apt-get update first if the package
# lists are missing), as root or through sudo.
set -euo pipefail

say() { printf '[setup] %s\n' "$*"; }

CHROMIUM="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [ -x "$CHROMIUM" ]; then
  say "chromium for the browser tests: ok ($CHROMIUM)"
  exit 0
fi
if [ -n "${CHROMIUM_PATH:-}" ]; then
  echo "[setup] error: CHROMIUM_PATH=$CHROMIUM_PATH is not an executable" >&2
  exit 1
fi
command -v apt-get >/dev/null 2>&1 || {
  echo "[setup] error: chromium is missing and apt-get is not available: install Chromium, or set CHROMIUM_PATH" >&2
  exit 1
}
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "[setup] error: installing chromium needs root or sudo" >&2; exit 1; }
  SUDO=(sudo -n)
fi
start=$SECONDS
say "chromium for the browser tests: apt-get install chromium"
export DEBIAN_FRONTEND=noninteractive
if ! "${SUDO[@]}" apt-get install -y -q chromium >/dev/null 2>&1; then
  "${SUDO[@]}" apt-get update -q >/dev/null
  "${SUDO[@]}" apt-get install -y -q chromium >/dev/null
fi
[ -x "$CHROMIUM" ] || { echo "[setup] error: apt-get install chromium did not provide $CHROMIUM" >&2; exit 1; }
say "chromium for the browser tests: installed in $((SECONDS - start)) s ($("$CHROMIUM" --version 2>/dev/null | head -1))"
