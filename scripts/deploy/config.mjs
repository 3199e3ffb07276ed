// The deploy config: the committed wrangler.toml with the operator's
// deploy.config.toml laid over it, and the production checks it must pass
// before anything is built or created.
//
// deploy.config.toml is a wrangler config fragment. Tables merge into
// wrangler.toml's key by key; a key set to "" is removed (a var, or a
// setting such as `limits`, which the Workers Free plan refuses); binding lists
// (d1_databases, kv_namespaces, services, send_email, r2_buckets,
// queues.producers) merge entry by entry, by binding (or name); any other
// value replaces (queues.consumers too: renaming a queue restates them). Its
// own table [portcullis] holds the script's options and is not passed on to
// wrangler.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { isSecretName } from "./secrets.mjs";

/** The earliest compatibility_date with Node compatibility on by default (the gateway's Ed25519 needs node:crypto). */
export const MIN_COMPATIBILITY_DATE = "2026-08-04";

/** The [portcullis] options and their types. */
export const OPTIONS = {
  allow_log_email: { type: "boolean", default: false },
};

/** A configuration file that cannot be read or parsed. */
export class ConfigFileError extends Error {}

let wranglerLib = null;

/** Parses a wrangler-style TOML / JSON / JSONC file with wrangler's own parser (so both read it alike). */
export function readConfigFile(root, file) {
  if (!fs.existsSync(file)) throw new ConfigFileError(`${file}: no such file`);
  wranglerLib ??= createRequire(import.meta.url)(path.join(root, "node_modules", "wrangler"));
  try {
    return wranglerLib.experimental_readRawConfig({ config: file }).rawConfig;
  } catch (e) {
    const at = e?.location?.line ? `:${e.location.line}:${e.location.column ?? 0}` : "";
    throw new ConfigFileError(`${file}${at}: ${e?.message ?? e}`);
  }
}

const isTable = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

/** List paths whose entries merge by a key, and the key(s). */
const KEYED_LISTS = {
  d1_databases: ["binding"],
  kv_namespaces: ["binding"],
  r2_buckets: ["binding"],
  services: ["binding"],
  send_email: ["name", "binding"],
  "queues.producers": ["binding"],
};

function entryKey(entry, keys) {
  if (!isTable(entry)) return undefined;
  for (const k of keys) if (typeof entry[k] === "string") return `${k}=${entry[k]}`;
  return undefined;
}

/** `over` laid over `base` (see the module comment). */
export function overlay(base, over, at = "") {
  if (at === "vars" && isTable(over)) {
    const out = { ...(isTable(base) ? base : {}) };
    for (const [k, v] of Object.entries(over)) {
      if (v === "") delete out[k];
      else out[k] = v;
    }
    return out;
  }
  if (isTable(base) && isTable(over)) {
    const out = { ...base };
    for (const [k, v] of Object.entries(over)) {
      if (v === "") delete out[k];
      else out[k] = overlay(base[k], v, at ? `${at}.${k}` : k);
    }
    return out;
  }
  const keys = KEYED_LISTS[at];
  if (keys && Array.isArray(base) && Array.isArray(over)) {
    const out = base.map((e) => ({ ...e }));
    for (const e of over) {
      const key = entryKey(e, keys);
      const i = key === undefined ? -1 : out.findIndex((b) => entryKey(b, keys) === key);
      if (i >= 0) out[i] = { ...out[i], ...e };
      else out.push(e);
    }
    return out;
  }
  return over;
}

/** Makes the config's file paths (main, migrations_dir) absolute, from the directory of the file they came from. */
function absolutePaths(config, dir) {
  const out = { ...config };
  if (typeof out.main === "string") out.main = path.resolve(dir, out.main);
  if (Array.isArray(out.d1_databases)) {
    out.d1_databases = out.d1_databases.map((d) => (typeof d?.migrations_dir === "string" ? { ...d, migrations_dir: path.resolve(dir, d.migrations_dir) } : d));
  }
  return out;
}

/** The same paths, relative to `dir` (where the generated config is written). */
export function relativePaths(config, dir) {
  const rel = (p) => path.relative(dir, p).split(path.sep).join("/") || ".";
  const out = { ...config };
  if (typeof out.main === "string") out.main = rel(out.main);
  if (Array.isArray(out.d1_databases)) {
    out.d1_databases = out.d1_databases.map((d) => (typeof d?.migrations_dir === "string" ? { ...d, migrations_dir: rel(d.migrations_dir) } : d));
  }
  return out;
}

/**
 * Reads wrangler.toml and the deploy config file and merges them:
 * `{config, options, problems}`, `config` with absolute paths and without
 * [portcullis], `options` the [portcullis] options with defaults.
 */
export function loadDeployConfig(root, wranglerToml, deployConfigFile) {
  const base = absolutePaths(readConfigFile(root, wranglerToml), path.dirname(wranglerToml));
  const raw = readConfigFile(root, deployConfigFile);
  const { portcullis = {}, ...over } = raw;
  const problems = [];
  const options = {};
  if (!isTable(portcullis)) {
    problems.push(`[portcullis] in ${deployConfigFile} must be a table`);
  } else {
    for (const [k, v] of Object.entries(portcullis)) {
      if (!(k in OPTIONS)) problems.push(`[portcullis] ${k}: not an option (known: ${Object.keys(OPTIONS).join(", ")})`);
      else if (typeof v !== OPTIONS[k].type) problems.push(`[portcullis] ${k}: must be a ${OPTIONS[k].type}`);
      else options[k] = v;
    }
  }
  for (const [k, o] of Object.entries(OPTIONS)) if (!(k in options)) options[k] = o.default;
  const config = overlay(base, absolutePaths(over, path.dirname(deployConfigFile)));
  problems.push(...sharedResourceProblems(base, config));
  return { config, options, problems };
}

/**
 * A Worker renamed in the deploy config (a second deployment, say staging,
 * on the same account) that still names wrangler.toml's D1 database or
 * queues would share them with the first: its events consumed by the other
 * Worker, its keys sealed under another KEY_ENCRYPTION_KEY.
 */
export function sharedResourceProblems(base, config) {
  if (config.name === base.name) return [];
  const baseQueues = new Set([...(base.queues?.producers ?? []).map((p) => p.queue), ...(base.queues?.consumers ?? []).flatMap((c) => [c.queue, c.dead_letter_queue])].filter(Boolean));
  const shared = [
    ...(config.d1_databases ?? []).filter((d) => (base.d1_databases ?? []).some((b) => b.database_name === d.database_name)).map((d) => `D1 database ${d.database_name}`),
    ...[...new Set([...(config.queues?.producers ?? []).map((p) => p.queue), ...(config.queues?.consumers ?? []).flatMap((c) => [c.queue, c.dead_letter_queue])])].filter((q) => baseQueues.has(q)).map((q) => `queue ${q}`),
  ];
  if (shared.length === 0) return [];
  return [`name: the Worker is renamed to ${config.name}, but still uses wrangler.toml's ${shared.join(", ")}: a second deployment on the account would share them with the first. Give it its own (database_name, the queues.producers' queue and the queues.consumers) in the deploy config`];
}

/** Whether `host` (a URL's hostname) is a loopback name or address. */
export function isLoopbackHost(host) {
  const h = host.toLowerCase().replace(/^\[|\]$/g, "");
  return h === "localhost" || h.endsWith(".localhost") || /^127\.\d+\.\d+\.\d+$/.test(h) || h === "::1" || h === "0.0.0.0";
}

const parseUrl = (s) => {
  try {
    return new URL(s);
  } catch {
    return null;
  }
};

/**
 * The production checks on a merged deploy config: every problem, each a
 * sentence naming the setting and what to do. Empty when it may be deployed.
 * (The Worker's own validation of every value runs after the build, on the
 * built Worker: see probe.mjs.)
 */
export function productionProblems(config, options) {
  const problems = [];
  const vars = isTable(config.vars) ? config.vars : {};
  const where = "in [vars] of the deploy config";

  if (typeof config.name !== "string" || config.name.trim() === "") problems.push("name: the Worker has no name: set name in wrangler.toml or the deploy config");
  if (typeof config.compatibility_date !== "string" || config.compatibility_date < MIN_COMPATIBILITY_DATE) {
    problems.push(`compatibility_date: ${JSON.stringify(config.compatibility_date ?? null)} is before ${MIN_COMPATIBILITY_DATE}: the gateway's Ed25519 needs Node compatibility, on by default from that date; every token check would fail`);
  }
  for (const [k, v] of Object.entries(vars)) {
    if (typeof v !== "string") problems.push(`${k}: must be a string ${where} (a TOML table or number would reach the Worker as JSON, not text)`);
    if (isSecretName(k)) problems.push(`${k}: is a secret, not a var: remove it from [vars] (vars are readable in the dashboard and in your files). \`npm run deploy\` sets missing secrets itself, from the environment or generated`);
  }

  const issuer = typeof vars.ISSUER === "string" ? vars.ISSUER.trim() : "";
  const issuerUrl = issuer ? parseUrl(issuer) : null;
  if (!issuer) {
    problems.push(`ISSUER: not set: set it ${where} to the public https URL the gateway is served at (e.g. "https://auth.example.com"); it is every token's \`iss\` and the discovery issuer`);
  } else if (!issuerUrl || issuerUrl.protocol !== "https:") {
    problems.push(`ISSUER: ${JSON.stringify(issuer)} is not an https URL: set it to the public https URL the gateway is served at`);
  }

  const originUrl = typeof vars.ORIGIN_URL === "string" ? vars.ORIGIN_URL.trim() : "";
  const originBinding = (config.services ?? []).some((s) => s?.binding === "ORIGIN");
  if (!originUrl && !originBinding) {
    problems.push(`ORIGIN_URL: no origin: set ORIGIN_URL ${where} to the API the gateway protects, or bind it as a service ([[services]] binding = "ORIGIN" service = "your-api")`);
  } else if (originUrl && originBinding) {
    problems.push(`ORIGIN_URL: set together with the ORIGIN service binding, which would then be unused: keep one (ORIGIN_URL = "" in [vars] removes the URL)`);
  }

  const transport = typeof vars.EMAIL_TRANSPORT === "string" && vars.EMAIL_TRANSPORT.trim() !== "" ? vars.EMAIL_TRANSPORT.trim() : "log";
  if (transport === "cloudflare" && !(Array.isArray(config.send_email) && config.send_email.some((b) => b?.name === "EMAIL"))) {
    problems.push(`EMAIL_TRANSPORT: is "cloudflare", which sends through the send_email binding EMAIL: add [[send_email]] name = "EMAIL" to the deploy config (the domain of EMAIL_FROM onboarded to Cloudflare Email Service)`);
  }
  if (transport === "log" && !options.allow_log_email) {
    problems.push(`EMAIL_TRANSPORT: is "log": every email (sign-in links, codes, reset links) would only be written to the Worker's log. Set EMAIL_TRANSPORT ${where} to a real transport (with EMAIL_FROM and the link URLs), or, for a deployment that sends no email, set allow_log_email = true under [portcullis]`);
  }

  for (const [k, v] of Object.entries(vars)) {
    if (typeof v !== "string") continue;
    for (const part of v.split(/[\s,]+/)) {
      const u = /^https?:\/\//i.test(part) ? parseUrl(part) : null;
      if (u && isLoopbackHost(u.hostname)) {
        problems.push(`${k}: ${JSON.stringify(part)} is a loopback address (a development value): set ${k} ${where} to the production URL${k === "ORIGIN_URL" ? ", or \"\" with an ORIGIN service binding" : ""}`);
        break;
      }
    }
  }
  return problems;
}

/**
 * Writes `config` as `dir/wrangler.jsonc` (paths relative to it), headed by
 * `comment` lines, and returns its path. wrangler reads it like wrangler.toml.
 */
export function writeGeneratedConfig(config, dir, comment) {
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, "wrangler.jsonc");
  const head = comment.split("\n").map((l) => `// ${l}`.trimEnd()).join("\n");
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, `${head}\n${JSON.stringify(relativePaths(config, dir), null, 2)}\n`);
  fs.renameSync(tmp, file);
  return file;
}
