// A/B of two Portcullis builds on the bare runtime, for deciding whether a change pays:
//
//   node bench/experiments/ab.mjs DIR_A DIR_B [rounds] [seconds] [path] [tokens[,tokens...]]
//
// DIR_A and DIR_B (relative to bench/out/) each hold an `index.js` + `index_bg.wasm`
// copied from build/. Each is served by its own workerd, with the pass-through (P) as a
// third target, all from the configs and token list of the last `npm run bench` run
// (bench/out/b-portcullis.capnp, a-passthrough.capnp, tokens-repeat.txt), so run that
// once first. wrk rounds alternate A, B, P (the order of A and B flips every round); it
// prints req/s and workerd CPU/req per round and the medians. Per-run noise on this
// machine is a few percent: use 8+ rounds and compare CPU/req as well as req/s.
// VARS_A / VARS_B add vars, e.g. VARS_B=ORIGIN_TIMEOUT_MS=0.
import path from "node:path";
import { start, stopAll, waitOutput, cpuNs, freePort } from "../lib/proc.mjs";
import { runWrk } from "../lib/wrk.mjs";
import { OUT, serveBuild } from "../lib/serve-build.mjs";
const [dirA, dirB, rounds = 5, secs = 4, urlPath = "/api/data", tokens = "tokens-repeat.txt"] = process.argv.slice(2);
const originPort = await freePort();
const origin = start(process.execPath, [path.join(OUT, "..", "origin.mjs"), String(originPort)]);
await waitOutput(origin, /listening/);
const targets = {};
// VARS_A / VARS_B, e.g. VARS_B='ORIGIN_TIMEOUT_MS=0'
targets.A = await serveBuild("A", "b-portcullis.capnp", { dir: dirA, originPort, vars: process.env.VARS_A });
targets.B = await serveBuild("B", "b-portcullis.capnp", { dir: dirB, originPort, vars: process.env.VARS_B });
targets.P = await serveBuild("P", "a-passthrough.capnp", { originPort });
const res = { A: [], B: [], P: [] };
try {
  // `tokens` may list several files (comma-separated, paths absolute or under bench/out):
  // the warm-up uses the first, round r the (r+1)-th (wrapping) — with never-seen
  // tokens in each, every round measures fresh-token checks.
  const files = tokens.split(",").map((f) => (path.isAbsolute(f) ? f : path.join(OUT, f)));
  const fileFor = (r) => files[files.length === 1 ? 0 : 1 + (r % (files.length - 1))];
  for (const n of ["A", "B", "P"]) await runWrk("wrk", path.join(OUT, ".."), { base: `http://127.0.0.1:${targets[n].port}`, path: urlPath, tokensFile: files[0], seconds: 2 });
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 ? ["B", "A", "P"] : ["A", "B", "P"];
    const line = [];
    for (const n of order) {
      const c0 = cpuNs(targets[n].pid);
      const w = await runWrk("wrk", path.join(OUT, ".."), { base: `http://127.0.0.1:${targets[n].port}`, path: urlPath, tokensFile: fileFor(r), seconds: Number(secs) });
      const cpu = (cpuNs(targets[n].pid) - c0) / 1000 / w.requests;
      if (w.non2xx && urlPath !== "/api/admin/x") throw new Error(`${n}: ${w.non2xx} non-2xx`);
      res[n].push({ rps: w.rps, cpu });
      line.push(`${n} ${w.rps.toFixed(0)} req/s ${cpu.toFixed(1)} µs`);
    }
    console.log(`round ${r}: ${line.join(" | ")}`);
  }
  const med = (a) => a.slice().sort((x, y) => x - y)[Math.floor(a.length / 2)];
  for (const n of ["A", "B", "P"]) console.log(`${n}: median ${med(res[n].map((x) => x.rps)).toFixed(0)} req/s, ${med(res[n].map((x) => x.cpu)).toFixed(1)} µs CPU/req`);
  console.log(`A/P ${(med(res.A.map((x) => x.rps)) / med(res.P.map((x) => x.rps))).toFixed(3)}  B/P ${(med(res.B.map((x) => x.rps)) / med(res.P.map((x) => x.rps))).toFixed(3)}  per-round B/A: ${res.A.map((a, i) => (res.B[i].rps / a.rps).toFixed(3)).join(" ")}`);
} finally {
  await stopAll();
}
