// Serves a Worker from one of the last `npm run bench` run's workerd configs
// (bench/out/*.capnp), on a new port and pointed at a given origin, optionally with
// another Portcullis build (a directory under bench/out/ holding index.js +
// index_bg.wasm) and extra vars: the experiments' way of putting builds side by side.
import fs from "node:fs";
import path from "node:path";
import { start, waitHttp, freePort } from "./proc.mjs";

export const OUT = path.join(path.dirname(new URL(import.meta.url).pathname), "..", "out");
const WORKERD = path.join(OUT, "..", "..", "node_modules/@cloudflare/workerd-linux-64/bin/workerd");

/**
 * Starts `workerd serve` for bench/out/`src` as `name`; `dir` swaps in another build,
 * `vars` ("NAME=value,NAME=value", or an object or its JSON for values with commas,
 * such as ROUTES) sets vars, replacing those the config has. Resolves to { port, pid } once
 * it answers.
 */
export async function serveBuild(name, src, { dir = null, originPort, vars = "" } = {}) {
  const port = await freePort();
  if (!fs.existsSync(path.join(OUT, src))) throw new Error(`bench/out/${src} is missing: run npm run bench once first`);
  let cfg = fs.readFileSync(path.join(OUT, src), "utf8");
  cfg = cfg.replace(/address = "127\.0\.0\.1:\d+"/, `address = "127.0.0.1:${port}"`);
  if (originPort) cfg = cfg.replace(/"http:\/\/127\.0\.0\.1:\d+"/, `"http://127.0.0.1:${originPort}"`);
  if (dir) cfg = cfg.replaceAll('embed "build/', `embed "${dir}/`);
  if (typeof vars === "string" && vars.trim().startsWith("{")) vars = JSON.parse(vars);
  const pairs = typeof vars === "string" ? (vars ? vars.split(",").map((kv) => kv.split("=")) : []) : Object.entries(vars);
  for (const [k, v] of pairs) {
    const binding = `(name = "${k}", text = ${JSON.stringify(String(v))})`;
    const existing = new RegExp(`\\(name = "${k}", text = "(?:[^"\\\\]|\\\\.)*"\\)`);
    cfg = existing.test(cfg) ? cfg.replace(existing, () => binding) : cfg.replace(/(\(name = "[A-Z_]+", text = "[^"]*"\))/, () => `${binding},\n          $1`);
  }
  const f = path.join(OUT, `ab-${name}.capnp`);
  fs.writeFileSync(f, cfg);
  // BENCH_CPU=n pins the workerd to that CPU (taskset), e.g. to keep a paired client off it.
  const args = ["serve", f, "--experimental"];
  const cpu = process.env.BENCH_CPU;
  const w = cpu ? start("taskset", ["-c", cpu, WORKERD, ...args], { logFile: path.join(OUT, `ab-${name}.log`) }) : start(WORKERD, args, { logFile: path.join(OUT, `ab-${name}.log`) });
  await waitHttp(`http://127.0.0.1:${port}/api/public/x`, w);
  return { port, pid: w.pid };
}
