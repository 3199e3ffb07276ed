// `npm run deploy`'s pure parts: the parsers of wrangler's outputs (against
// outputs recorded from the installed wrangler, see record-fixtures.mjs), the
// idempotence decisions (what to create given what exists), the secrets it
// needs, the config overlay and the production checks.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import {
  classifyFailure,
  errorText,
  parseAppliedMigrations,
  parseD1List,
  parseDeployEntries,
  parseDeploymentStatus,
  parseKvList,
  parseQueueInfo,
  parseSecretList,
  parseUploadSize,
  parseVersionTag,
  parseWhoami,
  wranglerCalls,
} from "../../scripts/deploy/wrangler.mjs";
import { isPlaceholderId, kvTitle, planResources, planSecrets, wantedResources, withIds } from "../../scripts/deploy/plan.mjs";
import { isSecretName, neededSecrets, oauthSecretName, placeholder } from "../../scripts/deploy/secrets.mjs";
import { overlay, productionProblems, sharedResourceProblems } from "../../scripts/deploy/config.mjs";
import { chooseAccount, fingerprint, servedAt } from "../../scripts/deploy.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "..", "..");
const fixture = (name) => JSON.parse(fs.readFileSync(path.join(HERE, "fixtures", `${name}.json`), "utf8"));

// ---------------------------------------------------------------------------
// Parsers, on recorded wrangler output
// ---------------------------------------------------------------------------

test("whoami_json_gives_the_login_and_its_accounts", () => {
  const who = parseWhoami(fixture("whoami").stdout);
  assert.equal(who.loggedIn, true);
  assert.equal(who.email, "ops@example.com");
  assert.deepEqual(who.accounts, [{ id: "a1b2c3d4e5f60718293a4b5c6d7e8f90", name: "Example" }]);
  assert.equal(who.scopes, null, "an API token lists no OAuth scopes");
  assert.equal(parseWhoami(fixture("whoami-logged-out").stdout).loggedIn, false);
});

test("whoami_of_an_oauth_login_lists_its_scopes", () => {
  const who = parseWhoami(JSON.stringify({ loggedIn: true, authType: "OAuth Token", email: "a@b.c", accounts: [], tokenPermissions: ["d1:write", "queues:write"] }));
  assert.deepEqual(who.scopes, ["d1:write", "queues:write"]);
});

test("d1_and_kv_lists_parse_to_names_and_ids", () => {
  assert.deepEqual(parseD1List(fixture("d1-list-empty").stdout), []);
  const dbs = parseD1List(fixture("d1-list").stdout);
  assert.equal(dbs.length, 1);
  assert.equal(dbs[0].name, "portcullis");
  assert.match(dbs[0].id, /^[0-9a-f]{8}-[0-9a-f]{4}-/);
  const kv = parseKvList(fixture("kv-list").stdout);
  assert.deepEqual(kv.map((k) => k.title), ["portcullis-tokens"]);
  assert.match(kv[0].id, /^[0-9a-f]{32}$/);
});

test("queues_info_tells_an_existing_queue_from_a_missing_one_and_a_failure", () => {
  assert.equal(parseQueueInfo("portcullis-events", fixture("queues-info")), "5d1e4f2a3b6c7d8e9f0a1b2c3d4e5f60");
  assert.equal(parseQueueInfo("portcullis-events", fixture("queues-info-missing")), null);
  assert.equal(parseQueueInfo("portcullis-events", fixture("queues-create-denied")), undefined, "a failure is neither");
});

test("secret_list_gives_names_or_null_for_a_worker_not_yet_deployed", () => {
  assert.deepEqual([...parseSecretList("portcullis", fixture("secret-list"))], ["KEY_ENCRYPTION_KEY"]);
  assert.equal(parseSecretList("portcullis", fixture("secret-list-no-worker")), null);
  assert.equal(parseSecretList("portcullis", fixture("d1-list-logged-out")), undefined);
});

test("migrations_apply_output_names_what_it_applied", () => {
  // Recorded when migrations/ held these eight (each printed in several progress tables).
  const applied = parseAppliedMigrations(fixture("d1-migrations-apply").stdout);
  assert.equal(applied.length, 8);
  assert.equal(applied[0], "0001_init.sql");
  assert.equal(applied.at(-1), "0008_mask_dead_letter_secrets.sql");
  assert.deepEqual(parseAppliedMigrations(fixture("d1-migrations-apply-none").stdout), []);
});

test("deploy_output_file_gives_targets_and_version_and_status_gives_the_live_tag", () => {
  const d = parseDeployEntries(fixture("deploy").entries);
  assert.ok(d.targets.includes("auth.example.com (custom domain)"));
  assert.match(d.versionId, /^[0-9a-f-]{36}$/);
  const live = parseDeploymentStatus(fixture("deployments-status"));
  assert.deepEqual(live, [{ id: d.versionId, percentage: 100 }]);
  assert.equal(parseVersionTag(fixture("versions-view").stdout), "deploy-0123456789abcdef01234567");
  assert.deepEqual(servedAt(d.targets), ["auth.example.com (custom domain)"]);
  assert.deepEqual(servedAt(["portcullis.sub.workers.dev", "schedule: * * * * *"]), ["https://portcullis.sub.workers.dev"]);
  assert.deepEqual(parseUploadSize(fixture("deploy-dry-run").stdout), { kib: 1719.99, gzipKib: 664.85 });
});

test("failures_are_told_apart_login_permission_other", () => {
  assert.equal(classifyFailure(fixture("d1-list-logged-out")).kind, "login");
  assert.equal(classifyFailure(fixture("queues-create-denied")).kind, "permission");
  assert.equal(classifyFailure(fixture("queues-info-missing")).kind, "failed");
  const text = errorText(fixture("queues-create-denied").stdout, fixture("queues-create-denied").stderr);
  assert.match(text, /Authentication error \[code: 10000\]/);
  assert.doesNotMatch(text, /\x1b\[|Logs were written/, "no colours, no log-file note");
});

test("a_failed_call_is_a_wrangler_error_naming_the_step_and_the_permission", async () => {
  const denied = fixture("queues-create-denied");
  const calls = wranglerCalls({ root: ROOT, node: "node", run: async () => denied });
  await assert.rejects(calls.createQueue("cfg", "portcullis-events"), (e) => {
    assert.equal(e.kind, "permission");
    assert.match(e.step, /creating queue portcullis-events/);
    assert.match(e.permission, /Queues · Edit/);
    assert.match(e.detail, /Authentication error/);
    return true;
  });
});

test("secrets_travel_on_stdin_never_in_arguments", async () => {
  const seen = [];
  const calls = wranglerCalls({ root: ROOT, node: "node", run: async (opts) => (seen.push(opts), fixture("secret-bulk")) });
  await calls.putSecrets("cfg", "portcullis", { KEY_ENCRYPTION_KEY: "c2VjcmV0LXZhbHVl" });
  assert.equal(seen.length, 1);
  assert.ok(!seen[0].args.join(" ").includes("c2VjcmV0LXZhbHVl"), "not on the command line");
  assert.deepEqual(JSON.parse(seen[0].input), { KEY_ENCRYPTION_KEY: "c2VjcmV0LXZhbHVl" });
});

// ---------------------------------------------------------------------------
// Idempotence decisions
// ---------------------------------------------------------------------------

const CONFIG = {
  name: "portcullis",
  d1_databases: [{ binding: "DB", database_name: "portcullis", database_id: "00000000-0000-0000-0000-000000000000", migrations_dir: "/m" }],
  kv_namespaces: [{ binding: "TOKENS", id: "00000000000000000000000000000000" }],
  queues: {
    producers: [{ binding: "EVENTS", queue: "portcullis-events" }, { binding: "DEAD_LETTERS", queue: "portcullis-events-dlq" }],
    consumers: [{ queue: "portcullis-events", dead_letter_queue: "portcullis-events-dlq" }, { queue: "portcullis-events-dlq" }],
  },
};

test("placeholder_ids_mean_look_up_by_name", () => {
  assert.ok(isPlaceholderId("00000000-0000-0000-0000-000000000000"));
  assert.ok(isPlaceholderId(undefined));
  assert.ok(!isPlaceholderId("9f9af847-8725-4330-9f65-1398093e72df"));
  assert.equal(kvTitle("portcullis", "TOKENS"), "portcullis-tokens");
  assert.deepEqual(wantedResources(CONFIG), {
    d1: [{ binding: "DB", name: "portcullis", id: null }],
    kv: [{ binding: "TOKENS", title: "portcullis-tokens", id: null }],
    queues: ["portcullis-events", "portcullis-events-dlq"],
  });
});

test("an_empty_account_gets_everything_created", () => {
  const p = planResources(wantedResources(CONFIG), { d1: [{ name: "other", id: "x" }], kv: [{ title: "TOKENS", id: "y" }], queues: new Set(["unrelated"]) });
  assert.deepEqual([...p.d1, ...p.kv, ...p.queues].map((r) => r.action), ["create", "create", "create", "create"]);
  assert.deepEqual(p.problems, []);
});

test("what_exists_is_used_with_its_id_and_nothing_is_created_twice", () => {
  const existing = { d1: [{ name: "portcullis", id: "d1-id" }], kv: [{ title: "portcullis-tokens", id: "kv-id" }], queues: new Set(["portcullis-events"]) };
  const p = planResources(wantedResources(CONFIG), existing);
  assert.deepEqual(p.d1.map((d) => [d.action, d.id]), [["use", "d1-id"]]);
  assert.deepEqual(p.kv.map((k) => [k.action, k.id]), [["use", "kv-id"]]);
  assert.deepEqual(p.queues.map((q) => [q.name, q.action]), [["portcullis-events", "use"], ["portcullis-events-dlq", "create"]]);
  // After creating the rest, the next plan creates nothing.
  existing.queues.add("portcullis-events-dlq");
  const again = planResources(wantedResources(CONFIG), existing);
  assert.ok([...again.d1, ...again.kv, ...again.queues].every((r) => r.action === "use"));
  const filled = withIds(CONFIG, again);
  assert.equal(filled.d1_databases[0].database_id, "d1-id");
  assert.equal(filled.kv_namespaces[0].id, "kv-id");
  assert.equal(filled.d1_databases[0].migrations_dir, "/m", "the rest of each binding is kept");
});

test("a_configured_id_is_used_if_the_account_has_it_and_is_a_problem_if_not", () => {
  const cfg = { ...CONFIG, d1_databases: [{ ...CONFIG.d1_databases[0], database_id: "given-id" }] };
  const ok = planResources(wantedResources(cfg), { d1: [{ name: "old-name", id: "given-id" }], kv: [], queues: new Set() });
  assert.deepEqual(ok.d1.map((d) => [d.action, d.id]), [["use", "given-id"]]);
  assert.deepEqual(ok.problems, []);
  const bad = planResources(wantedResources(cfg), { d1: [{ name: "portcullis", id: "another" }], kv: [], queues: new Set() });
  assert.match(bad.problems[0], /database_id given-id .* is not a database of this account/);
});

test("secrets_already_on_the_worker_are_never_overwritten", () => {
  const needed = neededSecrets({ WEBHOOK_URLS: "https://h.example", EMAIL_TRANSPORT: "resend" });
  assert.deepEqual(needed.map((s) => s.name), ["KEY_ENCRYPTION_KEY", "WEBHOOK_SECRET", "EMAIL_API_KEY"]);
  const first = planSecrets(needed, new Set(), { EMAIL_API_KEY: "k" });
  assert.deepEqual(first.map((s) => s.action), ["generate", "generate", "env"]);
  const second = planSecrets(needed, new Set(["KEY_ENCRYPTION_KEY", "WEBHOOK_SECRET", "EMAIL_API_KEY"]), { EMAIL_API_KEY: "other" });
  assert.deepEqual(second.map((s) => s.action), ["keep", "keep", "keep"]);
  assert.equal(second[2].ignoredEnv, true);
  const missing = planSecrets(needed, new Set(["KEY_ENCRYPTION_KEY"]), {});
  assert.deepEqual(missing.map((s) => s.action), ["keep", "generate", "missing"]);
  assert.deepEqual(planSecrets(needed, null, {}).map((s) => s.action), ["generate", "generate", "unknown"], "a dry run cannot know");
});

test("the_secrets_a_configuration_needs", () => {
  const names = (vars, available) => neededSecrets(vars, available).map((s) => `${s.name}${s.required ? "" : "?"}`);
  assert.deepEqual(names({}), ["KEY_ENCRYPTION_KEY"]);
  assert.deepEqual(names({ EMAIL_TRANSPORT: "log" }), ["KEY_ENCRYPTION_KEY"]);
  assert.deepEqual(names({ EMAIL_TRANSPORT: "cloudflare" }), ["KEY_ENCRYPTION_KEY"], "the send_email binding needs no key");
  assert.deepEqual(names({ HOOK_URL: "https://hook.example" }), ["KEY_ENCRYPTION_KEY", "WEBHOOK_SECRET", "HOOK_SECRET?"]);
  assert.deepEqual(names({ HOOK_URL: "https://hook.example" }, (n) => n === "HOOK_SECRET"), ["KEY_ENCRYPTION_KEY", "HOOK_SECRET?"]);
  assert.deepEqual(names({}, (n) => n === "INTROSPECTION_SECRET"), ["KEY_ENCRYPTION_KEY", "INTROSPECTION_SECRET?"], "given: set; else introspection stays off");
  const oauth = JSON.stringify([{ id: "gh", preset: "github", client_id: "x" }, { id: "my-idp", issuer: "https://idp.example", client_id: "y" }]);
  assert.deepEqual(names({ OAUTH_PROVIDERS: oauth }), ["KEY_ENCRYPTION_KEY", "OAUTH_GH_CLIENT_SECRET", "OAUTH_MY_IDP_CLIENT_SECRET?"]);
  assert.equal(oauthSecretName("my-idp"), "OAUTH_MY_IDP_CLIENT_SECRET");
  assert.match(placeholder("KEY_ENCRYPTION_KEY", "kek"), /^[A-Za-z0-9+/]{43}=$/);
  assert.match(placeholder("WEBHOOK_SECRET", "whsec"), /^whsec_[A-Za-z0-9+/]{43}=$/);
});

test("every_secret_the_worker_reads_is_known_to_deploy", () => {
  // Secret-like setting names in the Worker's core: each must be in the table,
  // or deploy would neither set it nor keep it out of [vars].
  const found = new Set();
  const walk = (dir) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (p.endsWith(".rs")) for (const m of fs.readFileSync(p, "utf8").matchAll(/"([A-Z][A-Z0-9_]*(?:_SECRET|_KEY|_TOKEN|_PASSWORD))"/g)) found.add(m[1]);
    }
  };
  walk(path.join(ROOT, "src", "core"));
  assert.ok(found.has("KEY_ENCRYPTION_KEY"), "the scan sees config.rs");
  for (const name of found) assert.ok(isSecretName(name), `${name} is read by src/core but unknown to scripts/deploy/secrets.mjs`);
});

// ---------------------------------------------------------------------------
// Config overlay and production checks
// ---------------------------------------------------------------------------

test("the_deploy_config_overlays_wrangler_toml", () => {
  const base = { name: "portcullis", vars: { A: "1", ORIGIN_URL: "http://127.0.0.1:8790" }, d1_databases: [{ binding: "DB", database_name: "portcullis", migrations_dir: "m" }], routes: [{ pattern: "a.example" }], triggers: { crons: ["* * * * *"] } };
  const out = overlay(base, { vars: { ORIGIN_URL: "", ISSUER: "https://x.example" }, d1_databases: [{ binding: "DB", database_id: "id" }], routes: [{ pattern: "b.example", custom_domain: true }], services: [{ binding: "ORIGIN", service: "api" }] });
  assert.deepEqual(out.vars, { A: "1", ISSUER: "https://x.example" }, 'a var set to "" is removed');
  assert.deepEqual(out.d1_databases, [{ binding: "DB", database_name: "portcullis", migrations_dir: "m", database_id: "id" }], "merged by binding");
  assert.deepEqual(out.routes, [{ pattern: "b.example", custom_domain: true }], "other lists replace");
  assert.deepEqual(out.triggers, { crons: ["* * * * *"] });
  assert.deepEqual(out.services, [{ binding: "ORIGIN", service: "api" }]);
  assert.deepEqual(base.vars.ORIGIN_URL, "http://127.0.0.1:8790", "the base is not modified");
});

test("a_setting_set_to_an_empty_string_is_removed_like_a_var", () => {
  // The Workers Free plan refuses any CPU limit: `limits = ""` takes wrangler.toml's away.
  const base = { name: "portcullis", limits: { cpu_ms: 1000 }, observability: { enabled: true } };
  assert.deepEqual(overlay(base, { limits: "" }), { name: "portcullis", observability: { enabled: true } });
  assert.deepEqual(overlay(base, { limits: { cpu_ms: 5000 } }).limits, { cpu_ms: 5000 });
  assert.deepEqual(overlay(base, { observability: { enabled: "" } }).observability, {});
  assert.deepEqual(base.limits, { cpu_ms: 1000 }, "the base is not modified");
});

test("a_renamed_worker_must_not_share_the_first_deployments_database_or_queues", () => {
  const base = {
    name: "portcullis",
    d1_databases: [{ binding: "DB", database_name: "portcullis" }],
    queues: { producers: [{ binding: "EVENTS", queue: "portcullis-events" }], consumers: [{ queue: "portcullis-events", dead_letter_queue: "portcullis-events-dlq" }] },
  };
  assert.deepEqual(sharedResourceProblems(base, base), [], "the first deployment");
  const renamed = overlay(base, { name: "portcullis-staging" });
  assert.match(sharedResourceProblems(base, renamed)[0], /^name: the Worker is renamed to portcullis-staging, but still uses wrangler.toml's D1 database portcullis, queue portcullis-events, queue portcullis-events-dlq/);
  const own = overlay(base, {
    name: "portcullis-staging",
    d1_databases: [{ binding: "DB", database_name: "staging" }],
    queues: { producers: [{ binding: "EVENTS", queue: "staging-events" }], consumers: [{ queue: "staging-events", dead_letter_queue: "staging-dlq" }] },
  });
  assert.deepEqual(own.queues.consumers, [{ queue: "staging-events", dead_letter_queue: "staging-dlq" }], "consumers are replaced, not merged");
  assert.deepEqual(sharedResourceProblems(base, own), []);
});

const PROD = {
  name: "portcullis",
  compatibility_date: "2026-11-01",
  vars: { ISSUER: "https://auth.example.com", ORIGIN_URL: "https://api.example.com", EMAIL_TRANSPORT: "resend", MAGIC_LINK_URL: "https://app.example.com/m" },
};
// `patch.vars` entries set to undefined are removed.
const problems = (patch = {}, options = { allow_log_email: false }) => {
  const vars = Object.fromEntries(Object.entries({ ...PROD.vars, ...(patch.vars ?? {}) }).filter(([, v]) => v !== undefined));
  return productionProblems({ ...PROD, ...patch, vars }, options);
};

test("a_production_config_passes_the_checks", () => {
  assert.deepEqual(problems(), []);
  assert.deepEqual(problems({ vars: { ORIGIN_URL: undefined }, services: [{ binding: "ORIGIN", service: "api" }] }), [], "or an ORIGIN service binding");
});

test("each_production_check_names_its_setting", () => {
  const first = (patch, options) => {
    const p = problems(patch, options);
    assert.equal(p.length, 1, JSON.stringify(p));
    return p[0];
  };
  assert.match(first({ vars: { ISSUER: undefined } }), /^ISSUER: not set/);
  assert.match(first({ vars: { ISSUER: "http://auth.example.com" } }), /^ISSUER: "http:\/\/auth.example.com" is not an https URL/);
  assert.match(first({ vars: { ORIGIN_URL: undefined } }), /^ORIGIN_URL: no origin/);
  assert.match(first({ services: [{ binding: "ORIGIN", service: "api" }] }), /^ORIGIN_URL: set together with the ORIGIN service binding/);
  assert.match(first({ vars: { EMAIL_TRANSPORT: undefined } }), /^EMAIL_TRANSPORT: is "log"/);
  assert.deepEqual(problems({ vars: { EMAIL_TRANSPORT: "log" } }, { allow_log_email: true }), [], "the explicit opt-out");
  assert.match(first({ vars: { EMAIL_TRANSPORT: "cloudflare" } }), /^EMAIL_TRANSPORT: is "cloudflare", which sends through the send_email binding EMAIL/);
  assert.deepEqual(problems({ vars: { EMAIL_TRANSPORT: "cloudflare" }, send_email: [{ name: "EMAIL" }] }), [], "with the binding");
  assert.match(first({ vars: { MAGIC_LINK_URL: "http://127.0.0.1:8790/magic-link" } }), /^MAGIC_LINK_URL: .* is a loopback address/);
  assert.match(first({ vars: { CORS_ORIGINS: "https://app.example.com, http://localhost:3000" } }), /^CORS_ORIGINS: "http:\/\/localhost:3000" is a loopback address/);
  assert.match(first({ vars: { KEY_ENCRYPTION_KEY: "x" } }), /^KEY_ENCRYPTION_KEY: is a secret, not a var/);
  assert.match(first({ vars: { OAUTH_GH_CLIENT_SECRET: "x" } }), /^OAUTH_GH_CLIENT_SECRET: is a secret/);
  assert.match(first({ vars: { ACCESS_TTL: 900 } }), /^ACCESS_TTL: must be a string/);
  assert.match(first({ compatibility_date: "2026-01-01" }), /^compatibility_date: "2026-01-01" is before 2026-08-04/);
});

// ---------------------------------------------------------------------------
// Account choice and the deploy fingerprint
// ---------------------------------------------------------------------------

test("the_account_is_the_configured_one_or_the_only_one", () => {
  const one = { accounts: [{ id: "a1", name: "A" }] };
  const two = { accounts: [{ id: "a1", name: "A" }, { id: "b2", name: "B" }] };
  assert.deepEqual(chooseAccount(one, null), { id: "a1" });
  assert.deepEqual(chooseAccount(two, "b2"), { id: "b2" });
  assert.match(chooseAccount(two, null).problem, /several accounts \(A \(a1\), B \(b2\)\): set account_id/);
  assert.match(chooseAccount(one, "zz").problem, /account_id zz is not an account this login reaches/);
});

test("the_fingerprint_follows_the_bundle_and_the_config", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "portcullis-fp-"));
  try {
    fs.writeFileSync(path.join(dir, "shim.js"), "export default {}");
    fs.writeFileSync(path.join(dir, "README.md"), "not part of it");
    const a = fingerprint(dir, { vars: { A: "1" } });
    assert.match(a, /^deploy-[0-9a-f]{24}$/);
    assert.equal(fingerprint(dir, { vars: { A: "1" } }), a);
    assert.notEqual(fingerprint(dir, { vars: { A: "2" } }), a);
    fs.writeFileSync(path.join(dir, "README.md"), "changed");
    assert.equal(fingerprint(dir, { vars: { A: "1" } }), a);
    fs.writeFileSync(path.join(dir, "shim.js"), "export default { fetch() {} }");
    assert.notEqual(fingerprint(dir, { vars: { A: "1" } }), a);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
