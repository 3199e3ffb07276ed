// CPU per signup, login and refresh of one or more Portcullis builds in workerd, against a
// real SQL database (lib/signin-cost.mjs; `npm run bench` runs the same for build/):
//
//   node bench/experiments/signin-cpu.mjs DIR[:NAME=value,NAME=value] ... [--users N]
//
// Each DIR (under bench/out/) holds an `index.js` + `index_bg.wasm` copied from build/; vars
// after a colon are set for that build only (e.g. `head:PASSWORD_HASH_PROFILE=light`). The
// builds run one after another, each in fresh processes; the output gives median, 90th
// percentile and max CPU per request, in ms.
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { signinCosts, summary } from "../lib/signin-cost.mjs";
import { OUT } from "../lib/serve-build.mjs";
import { stopAll } from "../lib/proc.mjs";

const args = process.argv.slice(2);
let users = 24;
const targets = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--users") users = Number(args[++i]);
  else targets.push(args[i]);
}
if (!targets.length) {
  console.error("usage: node bench/experiments/signin-cpu.mjs DIR[:NAME=value,...] ... [--users N]");
  process.exit(2);
}
const ROOT = path.join(OUT, "..", "..");
const vars = {
  ISSUER: "https://portcullis.bench.example",
  AUDIENCE: "portcullis",
  KEY_ENCRYPTION_KEY: crypto.randomBytes(32).toString("base64"),
  EMAIL_TRANSPORT: "log",
  ORIGIN_URL: "http://127.0.0.1:9",
};
const ms = (us) => (us / 1000).toFixed(2);
try {
  for (const t of targets) {
    const [dir, extra = ""] = t.split(":");
    const v = { ...vars };
    for (const kv of extra ? extra.split(",") : []) {
      const [k, ...rest] = kv.split("=");
      v[k] = rest.join("=");
    }
    const r = await signinCosts({
      out: OUT,
      bench: path.join(OUT, ".."),
      root: ROOT,
      workerd: path.join(ROOT, "node_modules/@cloudflare/workerd-linux-64/bin/workerd"),
      compatibilityDate: "2026-11-01",
      build: { js: path.join(OUT, dir, "index.js"), wasm: path.join(OUT, dir, "index_bg.wasm") },
      vars: v,
      name: dir.replace(/\W/g, "_") + (extra ? "-x" : ""),
      users,
    });
    const line = (k) => {
      const s = summary(r[k]);
      return `${k} ${ms(s.median)} ms (p90 ${ms(s.p90)}, max ${ms(s.max)}, n ${s.n})`;
    };
    console.log(`${t}: ${["signup", "login", "refresh", "noop"].map(line).join("; ")}`);
  }
} finally {
  await stopAll();
}
