// Every wrangler call `npm run deploy` makes, one small function each, and
// the parsers of their outputs (pure, exported for tests/deploy). wrangler
// runs as a child process, non-interactive (stdin is a pipe), with its
// machine-readable output file (WRANGLER_OUTPUT_FILE_PATH) read back for
// deploy targets and failure codes. Secret values only ever travel on stdin.
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

// eslint-disable-next-line no-control-regex
export const stripAnsi = (s) => String(s).replace(/\x1b\[[0-9;?]*[A-Za-z]/g, "");

/** What a step needs, as the API-token permission to grant (Cloudflare dashboard wording). */
export const PERMISSIONS = {
  account: "Account · Account Settings · Read",
  d1: "Account · D1 · Edit",
  kv: "Account · Workers KV Storage · Edit",
  queues: "Account · Queues · Edit",
  scripts: "Account · Workers Scripts · Edit",
  routes: "Zone · Workers Routes · Edit (on the zones of your routes)",
};

/** OAuth scopes (`wrangler login`) the steps need. */
export const NEEDED_SCOPES = ["account:read", "workers_scripts:write", "d1:write", "workers_kv:write", "queues:write"];

/** A failed wrangler step: `kind` is `login`, `permission` or `failed`; `detail` is wrangler's own error text. */
export class WranglerError extends Error {
  constructor({ step, kind, detail, permission, code }) {
    super(`${step}: ${kind}`);
    Object.assign(this, { step, kind, detail, permission, code });
  }
}

/** The first JSON value in a command's stdout (wrangler may print notices before it). */
export function extractJson(stdout) {
  const text = stripAnsi(stdout).trim();
  try {
    return JSON.parse(text);
  } catch {
    const lines = text.split("\n");
    const i = lines.findIndex((l) => /^\s*[[{]/.test(l));
    if (i < 0) throw new Error("no JSON in wrangler's output");
    return JSON.parse(lines.slice(i).join("\n"));
  }
}

/** The entries of wrangler's output file (ND-JSON). */
export function parseOutputEntries(text) {
  return String(text ?? "")
    .split("\n")
    .filter((l) => l.trim() !== "")
    .flatMap((l) => {
      try {
        return [JSON.parse(l)];
      } catch {
        return [];
      }
    });
}

/**
 * wrangler's error message (its stderr, or its stdout's last lines when that
 * is empty), without colours, banners, log-file notes or stack frames.
 */
export function errorText(stdout, stderr) {
  const skip = [/^\s*⛅️ wrangler/, /^─+$/, /Logs were written to/, /If you think this is a bug/, /^\s+at\s/, /^\s*$/];
  const clean = (t) =>
    stripAnsi(t)
      .split("\n")
      .map((l) => l.replace(/✘\s*\[ERROR\]\s*/, "").trimEnd())
      .filter((l) => !skip.some((re) => re.test(l)));
  const lines = clean(stderr).length ? clean(stderr) : clean(stdout);
  return lines.slice(-12).join("\n").trim();
}

// API error codes: 1000 / 9106 / 6003 / 6111 a missing or invalid credential;
// 10000 "Authentication error" (the token lacks the permission), 9109
// unauthorized to access the resource, 7403 no access to the account.
const LOGIN_CODES = [1000, 6003, 6111, 9106];
const PERMISSION_CODES = [10000, 9109, 7403];
const LOGIN_RE = /not logged in|not authenticated|it's necessary to set a CLOUDFLARE_API_TOKEN|Invalid (API )?Token|Invalid access token|\[code: (1000|6003|6111|9106)\]/i;
const PERMISSION_RE = /Authentication error|not authori[sz]ed|forbidden|\[code: (10000|9109|7403)\]/i;

/** Sorts a failure into `login`, `permission` or `failed` from its API error code, else wrangler's text. */
export function classifyFailure({ stdout = "", stderr = "", entries = [] }) {
  const failed = entries.filter((e) => e.type === "command-failed").pop();
  const code = failed?.code;
  if (LOGIN_CODES.includes(code)) return { kind: "login", code };
  if (PERMISSION_CODES.includes(code)) return { kind: "permission", code };
  const text = `${failed?.message ?? ""}\n${stripAnsi(stderr)}`;
  if (LOGIN_RE.test(text)) return { kind: "login", code };
  if (PERMISSION_RE.test(text)) return { kind: "permission", code };
  return { kind: "failed", code };
}

/**
 * `wrangler whoami --json`: `{loggedIn, authType, email, accounts: [{id, name}], scopes}`
 * (`scopes` null for API tokens, whose permissions wrangler cannot list).
 */
export function parseWhoami(stdout) {
  const j = extractJson(stdout);
  if (!j || j.loggedIn !== true) return { loggedIn: false, accounts: [], scopes: null };
  return {
    loggedIn: true,
    authType: j.authType ?? null,
    email: j.email ?? null,
    accounts: (j.accounts ?? []).map((a) => ({ id: a.id, name: a.name })),
    scopes: Array.isArray(j.tokenPermissions) ? j.tokenPermissions.map(String) : null,
  };
}

/** `wrangler d1 list --json`: `[{name, id}]`. */
export function parseD1List(stdout) {
  const j = extractJson(stdout);
  if (!Array.isArray(j)) throw new Error("wrangler d1 list --json did not print a list");
  return j.map((d) => ({ name: d.name, id: d.uuid }));
}

/** `wrangler kv namespace list`: `[{title, id}]`. */
export function parseKvList(stdout) {
  const j = extractJson(stdout);
  if (!Array.isArray(j)) throw new Error("wrangler kv namespace list did not print a list");
  return j.map((n) => ({ title: n.title, id: n.id }));
}

/** `wrangler queues info NAME`: the queue's id, or null when the account has no such queue. */
export function parseQueueInfo(name, { code, stdout, stderr }) {
  const text = stripAnsi(`${stdout}\n${stderr}`);
  if (code === 0) {
    const m = /^Queue ID:\s*(\S+)/m.exec(text);
    if (!m) throw new Error(`wrangler queues info ${name} printed no queue id`);
    return m[1];
  }
  if (text.includes(`Queue "${name}" does not exist`)) return null;
  return undefined;
}

/** `wrangler secret list --format json`: the secrets' names, or null when the Worker does not exist yet. */
export function parseSecretList(worker, { code, stdout, stderr }) {
  if (code === 0) {
    const j = extractJson(stdout);
    if (!Array.isArray(j)) throw new Error("wrangler secret list did not print a list");
    return new Set(j.map((s) => s.name));
  }
  if (stripAnsi(`${stdout}\n${stderr}`).includes(`Worker "${worker}" not found`)) return null;
  return undefined;
}

/** `wrangler deployments status --json`: the version ids the live deployment serves, or null without one. */
export function parseDeploymentStatus({ code, stdout, stderr }) {
  if (code === 0) {
    const j = extractJson(stdout);
    return (j.versions ?? []).map((v) => ({ id: v.version_id, percentage: v.percentage }));
  }
  if (/has no deployments|not found/i.test(stripAnsi(`${stdout}\n${stderr}`))) return null;
  return undefined;
}

/** `wrangler versions view ID --json`: the version's tag (`workers/tag`), or null. */
export function parseVersionTag(stdout) {
  const j = extractJson(stdout);
  return j?.annotations?.["workers/tag"] ?? null;
}

/** The `deploy` entry of wrangler's output file: `{targets, versionId}`. */
export function parseDeployEntries(entries) {
  const d = entries.filter((e) => e.type === "deploy").pop();
  if (!d) return null;
  return { targets: d.targets ?? [], versionId: d.version_id ?? null };
}

/** The migration files `wrangler d1 migrations apply` applied, from its table of them; [] when there were none. */
export function parseAppliedMigrations(stdout) {
  const text = stripAnsi(stdout);
  if (/No migrations to apply/.test(text)) return [];
  const names = [];
  for (const m of text.matchAll(/│\s*([^\s│]+\.sql)\s*│/g)) if (!names.includes(m[1])) names.push(m[1]);
  return names;
}

/** The bundle sizes `wrangler deploy --dry-run` prints: `{kib, gzipKib}` or null. */
export function parseUploadSize(stdout) {
  const m = /Total Upload:\s*([\d.]+)\s*KiB\s*\/\s*gzip:\s*([\d.]+)\s*KiB/.exec(stripAnsi(stdout));
  return m ? { kib: Number(m[1]), gzipKib: Number(m[2]) } : null;
}

/**
 * Runs `node wrangler.js ARGS` with the environment `env` (the whole of it:
 * the caller leaves secrets out) and resolves `{code, stdout, stderr, entries}`
 * (never rejects on a non-zero exit). `input` goes to its stdin, which is
 * closed either way so that wrangler never waits for a prompt's answer.
 * `interactive`: wrangler shares this process's terminal instead (stdout and
 * stderr are then not captured: failures are read from the output file), so
 * that on a terminal it asks before it takes over a custom domain or DNS
 * record that belongs to something else.
 */
export function runWrangler({ root, node, args, input = "", env = process.env, timeoutMs = 10 * 60_000, interactive = false }) {
  const outFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "portcullis-wrangler-")), "output.ndjson");
  return new Promise((resolve, reject) => {
    const child = spawn(node, [path.join(root, "node_modules", "wrangler", "bin", "wrangler.js"), ...args], {
      cwd: root,
      // No banner: it also skips wrangler's update check (a request to the npm registry).
      env: { ...env, WRANGLER_SEND_METRICS: "false", WRANGLER_HIDE_BANNER: "true", NO_COLOR: "1", FORCE_COLOR: "0", WRANGLER_OUTPUT_FILE_PATH: outFile },
      stdio: interactive ? "inherit" : ["pipe", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    const timer = setTimeout(() => child.kill("SIGTERM"), timeoutMs);
    child.stdout?.on("data", (d) => (stdout += d));
    child.stderr?.on("data", (d) => (stderr += d));
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      let entries = [];
      try {
        entries = parseOutputEntries(fs.readFileSync(outFile, "utf8"));
      } catch {
        // no output file: wrangler wrote no entries
      }
      fs.rmSync(path.dirname(outFile), { recursive: true, force: true });
      resolve({ code: code ?? 1, stdout, stderr, entries });
    });
    if (child.stdin) {
      child.stdin.on("error", () => {});
      child.stdin.end(input);
    }
  });
}

/**
 * The wrangler calls, bound to a repository root, a Node binary and the
 * environment every call gets (without secrets; with the account id). `run` is runWrangler, or a
 * stand-in in tests. Each method returns parsed data or throws WranglerError.
 */
export function wranglerCalls({ root, node, env = process.env, run = runWrangler }) {
  const call = async (step, permission, args, { input, interactive = false } = {}) => {
    const r = await run({ root, node, args, input, env, interactive });
    return { ...r, step, permission };
  };
  const fail = (r) => {
    const { kind, code } = classifyFailure(r);
    const failed = r.entries.filter((e) => e.type === "command-failed").pop();
    const detail = errorText(r.stdout, r.stderr) || stripAnsi(failed?.message ?? "").trim();
    return new WranglerError({ step: r.step, kind, code, permission: r.permission, detail });
  };
  const ok = (r, parse) => {
    if (r.code !== 0) throw fail(r);
    try {
      return parse(r);
    } catch (e) {
      throw new WranglerError({ step: r.step, kind: "failed", permission: r.permission, detail: `${e.message}\n${errorText(r.stdout, "")}` });
    }
  };
  const cfg = (file) => ["--config", file];
  return {
    /** `wrangler whoami --json`: not logged in is an answer, not a failure. */
    async whoami() {
      const r = await call("checking the login (wrangler whoami)", PERMISSIONS.account, ["whoami", "--json"]);
      if (r.code !== 0) {
        let who = null;
        try {
          who = parseWhoami(r.stdout);
        } catch {
          // not JSON: a failure
        }
        if (who && !who.loggedIn) return who;
        throw fail(r);
      }
      return parseWhoami(r.stdout);
    },
    async listD1(config) {
      return ok(await call("listing D1 databases (wrangler d1 list)", PERMISSIONS.d1, ["d1", "list", "--json", ...cfg(config)]), (r) => parseD1List(r.stdout));
    },
    async createD1(config, name) {
      ok(await call(`creating D1 database ${name} (wrangler d1 create)`, PERMISSIONS.d1, ["d1", "create", name, "--update-config=false", ...cfg(config)]), () => null);
    },
    async listKv(config) {
      return ok(await call("listing KV namespaces (wrangler kv namespace list)", PERMISSIONS.kv, ["kv", "namespace", "list", ...cfg(config)]), (r) => parseKvList(r.stdout));
    },
    async createKv(config, title) {
      ok(await call(`creating KV namespace ${title} (wrangler kv namespace create)`, PERMISSIONS.kv, ["kv", "namespace", "create", title, "--update-config=false", ...cfg(config)]), () => null);
    },
    /** The queue's id, or null when it does not exist. */
    async queueInfo(config, name) {
      const r = await call(`looking up queue ${name} (wrangler queues info)`, PERMISSIONS.queues, ["queues", "info", name, ...cfg(config)]);
      const id = parseQueueInfo(name, r);
      if (id === undefined) throw fail(r);
      return id;
    },
    async createQueue(config, name) {
      ok(await call(`creating queue ${name} (wrangler queues create)`, PERMISSIONS.queues, ["queues", "create", name, ...cfg(config)]), () => null);
    },
    /** The Worker's secret names, or null when the Worker does not exist yet. */
    async listSecrets(config, worker) {
      const r = await call("listing the Worker's secrets (wrangler secret list)", PERMISSIONS.scripts, ["secret", "list", "--format", "json", "--name", worker, ...cfg(config)]);
      const names = parseSecretList(worker, r);
      if (names === undefined) throw fail(r);
      return names;
    },
    /** Sets `secrets` ({NAME: value}) in one request; the values go on stdin as JSON. */
    async putSecrets(config, worker, secrets) {
      ok(await call("setting secrets (wrangler secret bulk)", PERMISSIONS.scripts, ["secret", "bulk", "--name", worker, ...cfg(config)], { input: JSON.stringify(secrets) }), () => null);
    },
    /** The migrations it applied (none when all were). */
    async applyMigrations(config, binding) {
      return ok(await call(`applying D1 migrations to ${binding} (wrangler d1 migrations apply --remote)`, PERMISSIONS.d1, ["d1", "migrations", "apply", binding, "--remote", ...cfg(config)]), (r) => parseAppliedMigrations(r.stdout));
    },
    /** The live deployment's versions, or null when the Worker has none. */
    async deploymentStatus(config, worker) {
      const r = await call("reading the live deployment (wrangler deployments status)", PERMISSIONS.scripts, ["deployments", "status", "--json", "--name", worker, ...cfg(config)]);
      const v = parseDeploymentStatus(r);
      if (v === undefined) throw fail(r);
      return v;
    },
    async versionTag(config, worker, versionId) {
      return ok(await call("reading the live version (wrangler versions view)", PERMISSIONS.scripts, ["versions", "view", versionId, "--json", "--name", worker, ...cfg(config)]), (r) => parseVersionTag(r.stdout));
    },
    /** `wrangler deploy --dry-run --outdir`: bundles and checks without an account; `{kib, gzipKib}`. */
    async bundle(config, outdir) {
      return ok(await call("bundling the Worker (wrangler deploy --dry-run)", null, ["deploy", "--dry-run", "--outdir", outdir, ...cfg(config)]), (r) => parseUploadSize(r.stdout));
    },
    /** `wrangler deploy`: `{targets, versionId}`. */
    async deploy(config, { tag, message }) {
      return ok(
        await call("deploying the Worker (wrangler deploy)", `${PERMISSIONS.scripts}; with routes on a zone also ${PERMISSIONS.routes}`, ["deploy", "--tag", tag, "--message", message, ...cfg(config)], { interactive: true }),
        (r) => parseDeployEntries(r.entries) ?? { targets: [], versionId: null },
      );
    },
  };
}
