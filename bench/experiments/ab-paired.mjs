// Paired A/B of the token check of two Portcullis builds, for changes too small for
// wrk rounds to see on this machine:
//
//   node bench/experiments/ab-paired.mjs DIR_A DIR_B [seconds] [warm]
//
// DIR_A and DIR_B (under bench/out/) each hold an `index.js` + `index_bg.wasm` copied
// from build/. Both are served from the last `npm run bench` run's config (its key, its
// routes) and driven on one connection each, one request at a time, in a new random
// order every cycle (lib/paired.mjs): a 401 without a token and a 403 after checking a
// never-seen token (minted here with that run's key, bench/out/bench-key.json; both
// builds get the same tokens, each new to its isolate), plus a 403 after a token already seen.
// Prints each build's fresh and repeat check (403 − 401) and B − A, with 95 % intervals.
// With `warm` > 0, each isolate first checks that many other never-seen tokens, so the
// measured ones meet a token cache (and a wasm heap) in their steady state, not growing.
// With AB_FORWARD=1, both builds also forward to a local origin (bench/origin.mjs) with a
// never-seen and with an already-seen token: the fresh forward (check, assertion signing,
// identity headers, forward) minus the repeat forward, per build and B − A.
// VARS_A / VARS_B (a JSON object) set vars for one build, e.g. a ROUTES an older build
// can parse: VARS_A='{"ROUTES": "[...]"}'.
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { freePort, start, stopAll, waitOutput } from "../lib/proc.mjs";
import { mintMany } from "../lib/mint-pool.mjs";
import { pairedLatency } from "../lib/paired.mjs";
import { OUT, serveBuild } from "../lib/serve-build.mjs";

const [dirA, dirB, seconds = 20, warm = 0] = process.argv.slice(2);
if (!dirA || !dirB) {
  console.error("usage: node bench/experiments/ab-paired.mjs DIR_A DIR_B [seconds] [warm]");
  process.exit(2);
}
const key = JSON.parse(fs.readFileSync(path.join(OUT, "bench-key.json"), "utf8"));
const [repeat] = fs.readFileSync(path.join(OUT, "tokens-repeat.txt"), "utf8").split("\n");
// Enough never-seen tokens for the run (about 1,500 checks a second per build here).
const forward = process.env.AB_FORWARD === "1";
const tokens = await mintMany({ kid: key.kid, privateKey: crypto.createPrivateKey({ key: key.jwk, format: "jwk" }) }, key.tokenOpts, Number(warm) + Math.ceil(Number(seconds) * 1500 * (forward ? 2 : 1)) + 500);
const warming = tokens.slice(0, Number(warm));
// The forward's never-seen tokens are others than the 403's: a token the 403 checked
// would be a cached one for the forward.
const fresh = tokens.slice(Number(warm), forward ? Number(warm) + Math.floor((tokens.length - Number(warm)) / 2) : undefined);
const freshForward = forward ? tokens.slice(Number(warm) + fresh.length) : [];
try {
  let originPort;
  if (forward) {
    originPort = await freePort();
    await waitOutput(start(process.execPath, [path.join(OUT, "..", "origin.mjs"), String(originPort)]), /listening/);
  }
  const varsOf = (name) => JSON.parse(process.env[name] || "{}");
  const A = await serveBuild("A", "b-portcullis.capnp", { dir: dirA, originPort, vars: varsOf("VARS_A") });
  const B = await serveBuild("B", "b-portcullis.capnp", { dir: dirB, originPort, vars: varsOf("VARS_B") });
  const pool = (list = fresh) => {
    const it = list.values();
    return () => {
      const t = it.next();
      return t.done ? undefined : `Bearer ${t.value}`;
    };
  };
  if (warming.length) {
    await pairedLatency([{ key: "A", port: A.port, path: "/api/admin/x", header: pool(warming), status: 403 }, { key: "B", port: B.port, path: "/api/admin/x", header: pool(warming), status: 403 }], 3600, { warmupCycles: 0 });
  }
  const v = (key, port, header, status, p = "/api/admin/x") => ({ key, port, path: p, header, status });
  const forwards = forward
    ? [
        v("AfwdFresh", A.port, pool(freshForward), 200, "/api/data"),
        v("AfwdRepeat", A.port, () => `Bearer ${repeat}`, 200, "/api/data"),
        v("BfwdFresh", B.port, pool(freshForward), 200, "/api/data"),
        v("BfwdRepeat", B.port, () => `Bearer ${repeat}`, 200, "/api/data"),
      ]
    : [];
  const r = await pairedLatency(
    [
      v("A401", A.port, () => `Basic ${repeat}`, 401),
      v("Afresh", A.port, pool(), 403),
      v("Arepeat", A.port, () => `Bearer ${repeat}`, 403),
      v("B401", B.port, () => `Basic ${repeat}`, 401),
      v("Bfresh", B.port, pool(), 403),
      v("Brepeat", B.port, () => `Bearer ${repeat}`, 403),
      ...forwards,
    ],
    Number(seconds),
  );
  const ci = (x) => `${x.median.toFixed(1)} µs [${x.lo.toFixed(1)} … ${x.hi.toFixed(1)}]`;
  console.log(`${r.samples.A401} samples per variant${r.stoppedEarly ? " (the fresh tokens ran out)" : ""}`);
  console.log(`A (${dirA}): fresh check ${ci(r.diff("Afresh", "A401"))}, repeat ${ci(r.diff("Arepeat", "A401"))}`);
  console.log(`B (${dirB}): fresh check ${ci(r.diff("Bfresh", "B401"))}, repeat ${ci(r.diff("Brepeat", "B401"))}`);
  console.log(`B − A: fresh 403 ${ci(r.diff("Bfresh", "Afresh"))}, 401 ${ci(r.diff("B401", "A401"))}`);
  if (forward) {
    console.log(`fresh − repeat forward: A ${ci(r.diff("AfwdFresh", "AfwdRepeat"))}, B ${ci(r.diff("BfwdFresh", "BfwdRepeat"))}`);
    console.log(`B − A: fresh forward ${ci(r.diff("BfwdFresh", "AfwdFresh"))}, repeat forward ${ci(r.diff("BfwdRepeat", "AfwdRepeat"))}`);
  }
} finally {
  await stopAll();
}
