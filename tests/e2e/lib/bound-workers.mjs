// wrangler dev configs for the gateway with service bindings to other Workers
// run in the same `wrangler dev` (multi-config: `-c gateway.toml -c a.toml ...`).
// The gateway's wrangler.toml is copied with absolute paths, minus the vars
// named in `dropVars`, plus a `[[services]]` entry per binding; `.dev.vars`
// goes beside it (wrangler reads secrets from the config's directory).
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { ROOT } from "../harness.mjs";

/**
 * @param {{binding: string, service: string, script: string}[]} bindings  script: path under ROOT
 * @param {string[]} dropVars  [vars] entries to remove from the copy (e.g. ORIGIN_URL)
 * @returns {{args: string[], cleanup: () => void}}  args for startGateway
 */
export function boundWorkers(bindings, dropVars = []) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "portcullis-bound-"));
  const abs = (p) => JSON.stringify(path.join(ROOT, p));
  let gateway = fs
    .readFileSync(path.join(ROOT, "wrangler.toml"), "utf8")
    .replace(/^main = .*$/m, `main = ${abs("build/worker/shim.mjs")}`)
    .replace(/^migrations_dir = .*$/m, `migrations_dir = ${abs("migrations")}`);
  for (const v of dropVars) gateway = gateway.replace(new RegExp(`^${v} = .*$`, "m"), "");
  fs.copyFileSync(path.join(ROOT, ".dev.vars"), path.join(dir, ".dev.vars"));
  const primary = path.join(dir, "gateway.toml");
  const services = bindings.map((b) => `[[services]]\nbinding = "${b.binding}"\nservice = "${b.service}"\n`).join("\n");
  fs.writeFileSync(primary, `${gateway}\n${services}`);
  const args = ["-c", primary];
  for (const b of bindings) {
    const cfg = path.join(dir, `${b.service}.toml`);
    fs.writeFileSync(cfg, `name = "${b.service}"\nmain = ${abs(b.script)}\ncompatibility_date = "2026-11-01"\n`);
    args.push("-c", cfg);
  }
  return { args, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}
