// Prices the runtime pieces a gateway's hot path is made of, in this workerd on this
// machine: `node bench/experiments/runtime-costs.mjs [seconds] [variant,...]` (Node 22; not part of
// `npm run bench`). Every variant of bench/experiments/runtime-costs.worker.js is a
// pass-through plus one piece; all are interleaved on one connection (bench/lib/paired.mjs)
// and reported as the median latency difference to a baseline (`copy` for forwards,
// `r-2-headers` for responses the Worker writes itself), µs per request.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { freePort, start, stopAll, waitHttp, waitOutput } from "../lib/proc.mjs";
import { writeConfig } from "../lib/workerd.mjs";
import { pairedLatency } from "../lib/paired.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const OUT = path.join(HERE, "..", "out");
const WORKERD = path.join(HERE, "..", "..", "node_modules", "@cloudflare", "workerd-linux-64", "bin", "workerd");
const seconds = Number(process.argv[2] || 25);
// Optional: a comma-separated list of the variants to run (the baselines always run).
const only = process.argv[3] ? new Set(["copy", "r-2-headers", ...process.argv[3].split(",")]) : null;

fs.mkdirSync(OUT, { recursive: true });
try {
  const originPort = await freePort();
  const origin = start(process.execPath, [path.join(HERE, "..", "origin.mjs"), String(originPort)]);
  await waitOutput(origin, /listening/);
  const port = await freePort();
  const cfg = writeConfig(OUT, "runtime-costs", {
    port,
    compatibilityDate: "2026-11-01",
    modules: [{ name: "runtime-costs.worker.js", file: path.join(HERE, "runtime-costs.worker.js"), type: "esModule" }],
    vars: { ORIGIN_URL: `http://127.0.0.1:${originPort}` },
  });
  const w = start(WORKERD, ["serve", cfg, "--experimental"], { logFile: path.join(OUT, "runtime-costs.log") });
  await waitHttp(`http://127.0.0.1:${port}/copy`, w);
  const names = (await (await fetch(`http://127.0.0.1:${port}/`)).json()).filter((k) => !only || only.has(k));
  const auth = `Bearer ${"x".repeat(590)}`;
  const r = await pairedLatency(
    names.map((k) => ({ key: k, port, path: `/${k}`, header: () => auth, status: k.startsWith("r-") ? 401 : 200 })),
    seconds,
  );
  console.log(`median latency difference to the baseline (${r.samples.copy} requests per variant; 95 % bootstrap interval), µs:`);
  for (const k of names) {
    const baseline = k.startsWith("r-") ? "r-2-headers" : "copy";
    if (k === baseline) continue;
    const d = r.diff(k, baseline);
    console.log(`  ${k.padEnd(22)} vs ${baseline.padEnd(12)} ${d.median.toFixed(1).padStart(6)}  [${d.lo.toFixed(1)} … ${d.hi.toFixed(1)}]`);
  }
} finally {
  await stopAll();
}
