// Fault injection for the e2e tests: a copy of wrangler.toml with a binding
// removed or pointed at a database that has no tables, so that D1, KV or the
// Queue fail inside the real runtime exactly as a broken or missing binding
// does in production — or with a binding added that the committed file does
// not have (`extraToml`, e.g. a `send_email` binding). The copy lives in its
// own directory (with .dev.vars) and names the built Worker and the
// migrations by absolute path.
import fs from "node:fs";
import fsp from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { ROOT } from "../harness.mjs";

/**
 * Writes a faulty config; returns { args, cleanup } for startGateway({ args }).
 * @param {object} fault
 * @param {boolean} [fault.noQueue]   drop the EVENTS producer binding
 * @param {boolean} [fault.noKv]      drop the TOKENS KV binding
 * @param {boolean} [fault.emptyD1]   bind DB to a fresh database without tables
 * @param {string} [fault.extraToml]  TOML appended to the copy
 */
export async function faultyConfig({ noQueue = false, noKv = false, emptyD1 = false, extraToml = "" } = {}) {
  let toml = fs.readFileSync(path.join(ROOT, "wrangler.toml"), "utf8");
  toml = toml.replace(/^main = ".*"$/m, `main = ${JSON.stringify(path.join(ROOT, "build", "worker", "shim.mjs"))}`);
  toml = toml.replace(/^migrations_dir = ".*"$/m, `migrations_dir = ${JSON.stringify(path.join(ROOT, "migrations"))}`);
  const drop = (re, what) => {
    const next = toml.replace(re, "");
    if (next === toml) throw new Error(`faultyConfig: no ${what} block found in wrangler.toml`);
    toml = next;
  };
  if (noQueue) drop(/\[\[queues\.producers\]\]\s*\nbinding = "EVENTS"\s*\nqueue = "[^"]*"\s*\n/, "EVENTS producer");
  if (noKv) drop(/\[\[kv_namespaces\]\]\s*\nbinding = "TOKENS"\s*\n(#[^\n]*\n)*id = "[^"]*"\s*\n/, "TOKENS namespace");
  if (emptyD1) {
    toml = toml.replace(/database_name = "portcullis"/, 'database_name = "portcullis-empty"');
    toml = toml.replace(/database_id = "[^"]*"/, 'database_id = "11111111-1111-1111-1111-111111111111"');
  }
  if (extraToml) toml += `\n${extraToml}\n`;
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "portcullis-fault-"));
  fs.writeFileSync(path.join(dir, "wrangler.toml"), toml);
  fs.copyFileSync(path.join(ROOT, ".dev.vars"), path.join(dir, ".dev.vars"));
  return {
    args: ["--config", path.join(dir, "wrangler.toml")],
    cleanup: () => fsp.rm(dir, { recursive: true, force: true }),
  };
}
