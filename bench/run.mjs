// `npm run bench [-- options]`: Portcullis against a bare pass-through Worker and a
// jose gateway, side by side on this machine, on the bare runtime (`workerd serve`,
// not `wrangler dev`), driven by wrk; then cold starts against the pass-through, and
// the CPU of a signup, a login and a refresh. See bench/README.md for the method.
//
// Options:
//   --seconds N       load per target for each throughput figure, split into rounds (default 10)
//   --rounds N        rounds the throughput load is split into, targets interleaved (default 2)
//   --connections N   wrk connections for throughput runs (default 16)
//   --micro-seconds N length of one token-check micro run (default 2)
//   --micro-rounds N  rounds of micro runs, variants interleaved; medians reported (default 3)
//   --micro-connections N  wrk connections in the CPU micro runs (default 8)
//   --paired-seconds N     length of the paired-latency token-check run (default 20)
//   --no-profile      skip the CPU profile of Portcullis
//   --startup-rounds N     cold starts per target, alternating (default 10)
//   --signin-users N       accounts in the sign-in CPU measurement, per profile (default 24)
//   --no-signin       skip the sign-in CPU measurement
//   --record          write the results table into bench/README.md
//   --quick           short runs, for checking that the bench works
//
// Everything generated (workerd configs, the bundled jose gateway, token lists, logs,
// CPU profiles, results.json / results.md) goes to bench/out/ (gitignored).
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import zlib from "node:zlib";
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";
import { createLocalJWKSet, jwtVerify } from "jose";

import { parseOptions } from "./lib/args.mjs";
import { makeSigningKey, minter } from "./lib/keys.mjs";
import { mintMany } from "./lib/mint-pool.mjs";
import { cpuNs, freePort, sleep, start, stop, stopAll, waitHttp, waitOutput } from "./lib/proc.mjs";
import { ensureWrk, runWrk } from "./lib/wrk.mjs";
import { portcullisPlatform, writeConfig } from "./lib/workerd.mjs";
import { pairedLatency } from "./lib/paired.mjs";
import { connectInspector, profileDuring, summarise } from "./lib/profile.mjs";
import { coldStarts, compileMs } from "./lib/startup.mjs";
import { signinCosts, summary } from "./lib/signin-cost.mjs";

const BENCH = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(BENCH, "..");
const OUT = path.join(BENCH, "out");
const BUILD = path.join(ROOT, "build");
// The Worker is copied here at start: a rebuild during the run cannot mix two builds.
const SNAP = path.join(OUT, "build");
const WORKERD = path.join(ROOT, "node_modules", "@cloudflare", "workerd-linux-64", "bin", "workerd");

const ISSUER = "https://portcullis.bench.example";
const AUDIENCE = "portcullis";
const ROUTES =
  '[{"path": "/api/public/*", "policy": "public"}, {"path": "/api/admin/*", "policy": "role:admin"}, {"path": "/api/fresh/*", "policy": "authenticated", "fresh": true}]';
// The revocation set Portcullis runs with (seeded into the fake D1's revocation log):
// revoked sessions, and users whose roles changed, within the last ACCESS_TTL.
const REVOCATIONS = { sessions: 10_000, users: 1_000 };

// Targets.
const TARGET_BA = 0.75;
const TARGET_BC = 1.2;
const TARGET_FRESH_US = 40;
const TARGET_REPEAT_US = 5;

function parseArgs(argv) {
  const defaults = { seconds: 10, rounds: 2, connections: 16, microSeconds: 2, microRounds: 3, microConnections: 8, pairedSeconds: 20, profile: true, record: false, warmup: 2, startupRounds: 10, signinUsers: 24, signin: true };
  return parseOptions(argv, defaults, {
    "--seconds": ["num", "seconds"],
    "--connections": ["num", "connections"],
    "--micro-seconds": ["num", "microSeconds"],
    "--rounds": ["num", "rounds"],
    "--micro-rounds": ["num", "microRounds"],
    "--micro-connections": ["num", "microConnections"],
    "--paired-seconds": ["num", "pairedSeconds"],
    "--no-profile": ["set", "profile", false],
    "--startup-rounds": ["num", "startupRounds"],
    "--signin-users": ["num", "signinUsers"],
    "--no-signin": ["set", "signin", false],
    "--record": ["set", "record", true],
    "--quick": ["all", { seconds: 4, microSeconds: 1, microRounds: 2, pairedSeconds: 4, warmup: 1, startupRounds: 3, signinUsers: 4 }],
  }, fileURLToPath(import.meta.url));
}

const log = (msg) => console.log(`[bench] ${msg}`);
const fmt = (n, d = 0) => (n === undefined || n === null || Number.isNaN(n) ? "–" : n.toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d }));
const median = (xs) => {
  const a = [...xs].sort((x, y) => x - y);
  return a.length % 2 ? a[(a.length - 1) / 2] : (a[a.length / 2 - 1] + a[a.length / 2]) / 2;
};
const ms = (us) => `${fmt(us / 1000, 2)} ms`;

function compatibilityDate() {
  const toml = fs.readFileSync(path.join(ROOT, "wrangler.toml"), "utf8");
  return toml.match(/^compatibility_date\s*=\s*"([^"]+)"/m)?.[1] ?? "2026-11-01";
}

function checkBuild() {
  for (const f of ["index.js", "index_bg.wasm", "named/index_bg.wasm", "worker/shim.mjs"]) {
    if (!fs.existsSync(path.join(BUILD, f))) throw new Error(`build/${f} is missing: run \`npm run build\` (npm run bench builds first)`);
  }
  const shim = fs.readFileSync(path.join(BUILD, "worker", "shim.mjs"), "utf8");
  const shimImports = [...shim.matchAll(/from\s+['"]([^'"]+)['"]/g)].map((m) => m[1]);
  const index = fs.readFileSync(path.join(BUILD, "index.js"), "utf8");
  const indexImports = [...new Set([...index.matchAll(/import\s*(?:[\w{}\s,*]+from\s*)?["']([^"']+)["']/g)].map((m) => m[1]))];
  const unexpected = indexImports.filter((s) => s !== "cloudflare:workers" && s !== "./index_bg.wasm");
  if (unexpected.length) throw new Error(`build/index.js imports ${unexpected.join(", ")}: bench/run.mjs only embeds index.js + index_bg.wasm`);
  return { shimImports, indexImports };
}

function gitDescribe() {
  try {
    const head = execFileSync("git", ["rev-parse", "--short", "HEAD"], { cwd: ROOT, encoding: "utf8" }).trim();
    const dirty = execFileSync("git", ["status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock"], { cwd: ROOT, encoding: "utf8" }).trim();
    return dirty ? `${head} + uncommitted changes in src/` : head;
  } catch {
    return "unknown";
  }
}

/** Sizes of the deployed module, and the custom sections the build stripped from it (names, producers, …). */
function wasmSizes() {
  const deployed = fs.readFileSync(path.join(SNAP, "index_bg.wasm"));
  const wasm = fs.readFileSync(path.join(SNAP, "named", "index_bg.wasm"));
  let i = 8;
  let custom = 0;
  const customs = [];
  const leb = () => {
    let r = 0;
    let s = 0;
    for (;;) {
      const b = wasm[i++];
      r += (b & 0x7f) * 2 ** s;
      s += 7;
      if (b < 0x80) return r;
    }
  };
  while (i < wasm.length) {
    const id = wasm[i++];
    const size = leb();
    const startAt = i;
    if (id === 0) {
      const nlen = leb();
      customs.push({ name: wasm.subarray(i, i + nlen).toString(), size });
      custom += size;
    }
    i = startAt + size;
  }
  return {
    raw: deployed.length,
    gzip: zlib.gzipSync(deployed, { level: 9 }).length,
    customBytes: custom,
    customs,
    js: fs.statSync(path.join(SNAP, "index.js")).size,
  };
}

function machine() {
  const cpus = os.cpus();
  let workerd = "?";
  let wrk = "?";
  try {
    workerd = execFileSync(WORKERD, ["--version"], { encoding: "utf8" }).trim();
  } catch {}
  try {
    wrk = execFileSync("wrk", ["--version"], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).split("\n")[0].trim();
  } catch (e) {
    wrk = String(e.stdout ?? "").split("\n")[0].trim() || "wrk";
  }
  const jose = JSON.parse(fs.readFileSync(path.join(ROOT, "node_modules", "jose", "package.json"), "utf8")).version;
  return {
    cpu: cpus[0]?.model ?? "?",
    cores: os.availableParallelism?.() ?? cpus.length,
    loadavg: os.loadavg().map((x) => x.toFixed(2)).join(" "),
    node: process.version,
    workerd,
    wrk,
    jose,
    date: new Date().toISOString(),
  };
}

async function bundleJoseGateway() {
  const outfile = path.join(OUT, "jose-gateway.bundle.js");
  await esbuild.build({
    entryPoints: [path.join(BENCH, "workers", "jose-gateway.js")],
    bundle: true,
    format: "esm",
    platform: "neutral",
    target: "es2022",
    conditions: ["workerd", "worker", "browser"],
    mainFields: ["module", "main"],
    minify: false, // readable names in CPU profiles; V8 does not care
    outfile,
    logLevel: "warning",
    absWorkingDir: ROOT,
  });
  return outfile;
}

async function startWorkerd(name, cfgPath, port, extraArgs = []) {
  const child = start(WORKERD, ["serve", cfgPath, "--experimental", ...extraArgs], { logFile: path.join(OUT, `${name}.log`), cwd: OUT });
  await waitHttp(`http://127.0.0.1:${port}/api/public/ready`, child);
  return child;
}

async function get(base, urlPath, headers = {}) {
  const r = await fetch(base + urlPath, { headers, redirect: "manual" });
  const text = await r.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {}
  return { status: r.status, json, text, headers: r.headers };
}

function expect(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

/** The gateways must do their job before they are timed. */
async function correctness({ a, b, c }, { token, sub, adminToken, kid, jwks, originPort, mint }) {
  const bearer = { authorization: `Bearer ${token}` };
  // (a)
  expect((await get(a, "/api/data", bearer)).status === 200, "(a) pass-through answers 200");
  // (b) Portcullis
  const jw = await get(b, "/.well-known/jwks.json");
  expect(jw.status === 200 && jw.json?.keys?.some((k) => k.kid === kid), `(b) JWKS publishes the bench key ${kid} (fake D1 works): ${jw.status} ${jw.text.slice(0, 200)}`);
  const ok = await get(b, "/api/data", bearer);
  expect(ok.status === 200 && ok.json?.user === sub && ok.json?.assertion === true, `(b) valid token -> 200 with identity + assertion: ${ok.status} ${ok.text.slice(0, 200)}`);
  const echo = await get(b, "/api/echo", { ...bearer, "x-auth-user-id": "spoofed" });
  expect(echo.json?.["x-auth-user-id"] === sub && !echo.json?.authorization, `(b) identity headers forwarded, spoofed X-Auth-* and Authorization removed: ${echo.text.slice(0, 300)}`);
  const assertion = echo.json?.["x-auth-assertion"];
  const { payload, protectedHeader } = await jwtVerify(assertion, createLocalJWKSet(jwks), { issuer: ISSUER, audience: `http://127.0.0.1:${originPort}` });
  expect(payload.sub === sub && protectedHeader.kid === kid, "(b) the origin assertion verifies against the JWKS (private key unsealed with KEY_ENCRYPTION_KEY)");
  expect((await get(b, "/api/data")).status === 401, "(b) no token -> 401");
  expect((await get(b, "/api/data", { authorization: `Bearer ${token.slice(0, -4)}AAAA` })).status === 401, "(b) bad signature -> 401");
  expect((await get(b, "/api/admin/x", bearer)).status === 403, "(b) non-admin on role:admin route -> 403");
  expect((await get(b, "/api/admin/x", { authorization: `Bearer ${adminToken}` })).status === 200, "(b) admin on role:admin route -> 200");
  expect((await get(b, "/api/public/x")).status === 200, "(b) public route without token -> 200");
  // Revocation: the fake D1's log was read (the set is in place), the fresh rule reads the session.
  const revoked = await get(b, "/api/data", { authorization: `Bearer ${mint({ sid: "bench-revoked-session-9999" })}` });
  expect(revoked.status === 401 && revoked.json?.code === "token_revoked", `(b) a revoked session's token -> 401 token_revoked: ${revoked.status} ${revoked.text.slice(0, 200)}`);
  const lost = await get(b, "/api/data", { authorization: `Bearer ${mint({ sub: "bench-revoked-user-999", roles: ["user"] })}` });
  expect(lost.status === 401 && lost.json?.code === "token_revoked", `(b) a token claiming a role its user lost -> 401 token_revoked: ${lost.status}`);
  const fresh = await get(b, "/api/fresh/x", { authorization: `Bearer ${mint({ sid: "sub" })}` });
  expect(fresh.status === 200, `(b) a fresh rule's session read from D1 -> 200: ${fresh.status} ${fresh.text.slice(0, 200)}`);
  // (c) jose gateway
  const okc = await get(c, "/api/data", bearer);
  expect(okc.status === 200 && okc.json?.user === sub, `(c) valid token -> 200 with identity: ${okc.status} ${okc.text.slice(0, 200)}`);
  expect((await get(c, "/api/data")).status === 401, "(c) no token -> 401");
  expect((await get(c, "/api/data", { authorization: `Bearer ${token.slice(0, -4)}AAAA` })).status === 401, "(c) bad signature -> 401");
  expect((await get(c, "/api/admin/x", bearer)).status === 403, "(c) non-admin on admin route -> 403");
  expect((await get(c, "/api/public/x")).status === 200, "(c) public route -> 200");
}

/** Statements in the fake D1's log: all, or those matching `what` (a regex source). */
const d1Count = (child, what = "") => (child.output().match(new RegExp(`\\[fake-d1\\] ${what}`, "g")) ?? []).length;
const D1_KINDS = { revocationLog: "SELECT (seq, kind|MAX\\(seq\\))", freshCheck: "SELECT (id, user_id|group_concat)", keys: "SELECT kid, alg" };
const d1Counts = (child) => ({ total: d1Count(child), ...Object.fromEntries(Object.entries(D1_KINDS).map(([k, re]) => [k, d1Count(child, re)])) });

async function main() {
  const opt = parseArgs(process.argv.slice(2));
  const t0 = Date.now();
  fs.mkdirSync(OUT, { recursive: true });
  const build = checkBuild();
  fs.mkdirSync(SNAP, { recursive: true });
  for (const f of ["index.js", "index_bg.wasm", "named/index_bg.wasm"]) {
    fs.mkdirSync(path.dirname(path.join(SNAP, f)), { recursive: true });
    fs.copyFileSync(path.join(BUILD, f), path.join(SNAP, f));
  }
  build.commit = gitDescribe();
  build.wasmSha256 = crypto.createHash("sha256").update(fs.readFileSync(path.join(SNAP, "index_bg.wasm"))).digest("hex").slice(0, 12);
  if (!fs.existsSync(WORKERD)) throw new Error(`workerd not found at ${path.relative(ROOT, WORKERD)} (it comes with the wrangler devDependency: npm ci)`);
  const wrkBin = ensureWrk(log);
  const mach = machine();
  const sizes = wasmSizes();
  log(`machine: ${mach.cpu}, ${mach.cores} cores, load ${mach.loadavg}; ${mach.workerd}; ${mach.wrk}; node ${mach.node}`);
  if (os.loadavg()[0] > mach.cores * 0.5) log(`warning: the machine is busy (load ${mach.loadavg}); numbers will be noisy`);
  log(`Portcullis build: commit ${build.commit}, wasm sha256 ${build.wasmSha256} (snapshot in bench/out/build/)`);
  log(`build/worker/shim.mjs imports ${build.shimImports.join(", ")}; build/index.js imports ${build.indexImports.join(", ")}`);
  log(`wasm: ${fmt(sizes.raw)} B raw, ${fmt(sizes.gzip)} B gzipped (custom sections stripped by the build: ${sizes.customs.map((c) => `${c.name} ${fmt(c.size)} B`).join(", ")})`);

  // Keys and tokens, exactly as Portcullis would issue them.
  const key = await makeSigningKey();
  const tokenOpts = { issuer: ISSUER, audience: AUDIENCE, ttl: 900 }; // = ACCESS_TTL below: longer lifetimes are refused
  const mint = minter(key, tokenOpts);
  // For the experiments (experiments/ab-paired.mjs), which mint more tokens for this run's configs.
  fs.writeFileSync(path.join(OUT, "bench-key.json"), JSON.stringify({ kid: key.kid, jwk: key.privateKey.export({ format: "jwk" }), tokenOpts }));
  const token = mint({ roles: ["user"] });
  const sub = JSON.parse(Buffer.from(token.split(".")[1], "base64url")).sub;
  const adminToken = mint({ roles: ["admin"] });
  await jwtVerify(token, createLocalJWKSet(key.jwks), { issuer: ISSUER, audience: AUDIENCE, algorithms: ["EdDSA"], typ: "at+jwt" });
  const repeatFile = path.join(OUT, "tokens-repeat.txt");
  fs.writeFileSync(repeatFile, token + "\n");
  let freshUsed = 0;
  const freshFile = async (name, n) => {
    const t = Date.now();
    const toks = await mintMany(key, tokenOpts, n);
    const f = path.join(OUT, `tokens-${name}.txt`);
    fs.writeFileSync(f, toks.join("\n") + "\n");
    freshUsed += n;
    log(`minted ${fmt(n)} fresh tokens for ${name} in ${fmt((Date.now() - t) / 1000, 1)} s`);
    return { file: f, count: n };
  };

  // Origin, and the three Workers, each in its own workerd process.
  const originPort = await freePort();
  const origin = start(process.execPath, [path.join(BENCH, "origin.mjs"), String(originPort)], { logFile: path.join(OUT, "origin.log") });
  await waitOutput(origin, /listening \d+/);
  const ORIGIN_URL = `http://127.0.0.1:${originPort}`;
  const compat = compatibilityDate();
  const joseBundle = await bundleJoseGateway();
  const ports = { a: await freePort(), b: await freePort(), c: await freePort() };
  const portcullisVars = {
    AUDIENCE,
    ISSUER,
    ACCESS_TTL: "900",
    REFRESH_TTL: "2592000",
    MAGIC_LINK_TTL: "600",
    OTP_TTL: "600",
    ROUTES,
    DEFAULT_POLICY: "authenticated",
    ORIGIN_URL,
    KEY_ENCRYPTION_KEY: key.kek,
    EMAIL_TRANSPORT: "log",
    ALLOW_PASSWORDLESS_SIGNUP: "false",
    COOKIE_MODE: "false",
    // Extra vars for experiments, e.g. BENCH_PORTCULLIS_VARS='{"ORIGIN_TIMEOUT_MS":"0"}'.
    ...JSON.parse(process.env.BENCH_PORTCULLIS_VARS ?? "{}"),
  };
  // Profiles run the same code with its `name` section (build/named/), so Rust functions appear by name.
  const portcullisConfig = (name, port, { named = false } = {}) =>
    writeConfig(OUT, name, {
      port,
      compatibilityDate: compat,
      modules: [
        { name: "index.js", file: path.join(SNAP, "index.js"), type: "esModule" },
        { name: "index_bg.wasm", file: path.join(SNAP, ...(named ? ["named"] : []), "index_bg.wasm"), type: "wasm" },
      ],
      vars: portcullisVars,
      extra: portcullisPlatform(OUT, BENCH, [key.row], REVOCATIONS),
    });
  const configFor = {
    a: (name, port) => writeConfig(OUT, name, {
      port,
      compatibilityDate: compat,
      modules: [{ name: "passthrough.js", file: path.join(BENCH, "workers", "passthrough.js"), type: "esModule" }],
      vars: { ORIGIN_URL },
    }),
    b: portcullisConfig,
    c: (name, port) => writeConfig(OUT, name, {
      port,
      compatibilityDate: compat,
      modules: [{ name: "jose-gateway.js", file: joseBundle, type: "esModule" }],
      vars: { ORIGIN_URL, ISSUER, AUDIENCE, JWKS: JSON.stringify(key.jwks) },
    }),
  };
  const names = { a: "a-passthrough", b: "b-portcullis", c: "c-jose-gateway" };
  const cfg = Object.fromEntries(["a", "b", "c"].map((t) => [t, configFor[t](names[t], ports[t])]));
  const proc = {
    a: await startWorkerd("a-passthrough", cfg.a, ports.a),
    b: await startWorkerd("b-portcullis", cfg.b, ports.b),
    c: await startWorkerd("c-jose-gateway", cfg.c, ports.c),
  };
  const base = { a: `http://127.0.0.1:${ports.a}`, b: `http://127.0.0.1:${ports.b}`, c: `http://127.0.0.1:${ports.c}` };
  log(`origin ${ORIGIN_URL} (Node http); workerd: a ${base.a}, b ${base.b}, c ${base.c}; configs in bench/out/*.capnp`);

  await correctness(base, { token, sub, adminToken, kid: key.kid, jwks: key.jwks, originPort, mint });
  log(`correctness checks passed (identity headers, assertion, 401/403, JWKS from the fake D1, revocation set of ${fmt(REVOCATIONS.sessions)} sessions and ${fmt(REVOCATIONS.users)} users, fresh rule)`);

  // One measured load phase: wrk plus the CPU the target's workerd used meanwhile.
  const phase = async (target, { path: p, tokens, scheme, connections, seconds, expectStatus = "2xx" }) => {
    const pid = proc[target].pid;
    const cpu0 = cpuNs(pid);
    const r = await runWrk(wrkBin, BENCH, { base: base[target], path: p, tokensFile: tokens, scheme, connections, seconds });
    r.cpu_ns = cpuNs(pid) - cpu0;
    r.cpu_us_per_req = r.cpu_ns / 1000 / r.requests;
    if (r.errors) log(`warning: ${target} ${p}: ${r.errors} socket errors`);
    if (expectStatus === "2xx" && r.non2xx) throw new Error(`${target} ${p}: ${r.non2xx} of ${r.requests} responses were not 2xx`);
    if (expectStatus === "error" && r.non2xx !== r.requests) throw new Error(`${target} ${p}: expected only 4xx, got ${r.requests - r.non2xx} 2xx`);
    return r;
  };
  const warm = (target, p, tokens, scheme = "Bearer") => phase(target, { path: p, tokens, scheme, connections: opt.connections, seconds: opt.warmup, expectStatus: "any" });

  // Runs every variant once per round, in the same order each round (so slow drifts in the
  // machine's background load hit all variants alike), then merges the rounds.
  // A variant with `fresh` gets its own never-used token list in every round, sized from
  // the last measured rate of itself or of the variant named by fresh.like.
  const inRounds = async (variants, n) => {
    const runs = Object.fromEntries(variants.map((v) => [v.key, []]));
    const files = {};
    for (let i = 0; i < n; i++) {
      for (const v of variants) {
        let tokens = v.tokens;
        let count = Infinity;
        if (v.fresh?.reuse) {
          tokens = files[v.fresh.reuse].file; // for a target that caches nothing: wrapping is harmless
        } else if (v.fresh) {
          const prev = runs[v.key].at(-1) ?? runs[v.fresh.like]?.at(-1);
          const need = Math.ceil((prev?.rps ?? v.fresh.rps ?? 3000) * v.seconds * 1.3) + 500;
          files[v.key] = await freshFile(`${v.key}-${i}`, need);
          ({ file: tokens, count } = files[v.key]);
        }
        const r = await phase(v.target, { ...v, tokens });
        r.wrapped = r.requests > count;
        runs[v.key].push(r);
      }
    }
    const merged = {};
    for (const [k, list] of Object.entries(runs)) {
      const requests = list.reduce((a, r) => a + r.requests, 0);
      const dur = list.reduce((a, r) => a + r.duration_us, 0);
      merged[k] = {
        requests,
        rps: requests / (dur / 1e6),
        cpu_us_per_req: list.reduce((a, r) => a + r.cpu_ns, 0) / 1000 / requests,
        mean_us: list.reduce((a, r) => a + r.mean_us * r.requests, 0) / requests,
        p50_us: median(list.map((r) => r.p50_us)),
        p90_us: median(list.map((r) => r.p90_us)),
        p99_us: median(list.map((r) => r.p99_us)),
        wrapped: list.some((r) => r.wrapped),
        rounds: list.map(({ raw, ...r }) => r),
      };
    }
    return merged;
  };
  // Per-round differences x − y of a field, as { median, min, max }.
  const delta = (x, y, field) => {
    const ds = x.rounds.map((r, i) => r[field] - y.rounds[i][field]);
    return { median: median(ds), min: Math.min(...ds), max: Math.max(...ds) };
  };

  const results = { machine: mach, build, wasm: sizes, options: opt, throughput: {}, fresh: {}, micro: {}, d1: {}, revocations: REVOCATIONS };
  const loadStarted = Date.now();
  const d1Before = d1Counts(proc.b);

  // 1. Throughput, same client token on every request (a client reusing its access token).
  const tput = { connections: opt.connections, seconds: opt.seconds / opt.rounds, path: "/api/data", tokens: repeatFile };
  for (const t of ["a", "b", "c"]) await warm(t, "/api/data", repeatFile);
  results.throughput = await inRounds(["a", "b", "c"].map((t) => ({ key: t, target: t, ...tput })), opt.rounds);
  for (const t of ["a", "b", "c"]) {
    const r = results.throughput[t];
    log(`throughput ${t}: ${fmt(r.rps)} req/s, p50 ${ms(r.p50_us)}, p99 ${ms(r.p99_us)}, workerd CPU ${fmt(r.cpu_us_per_req, 1)} µs/req (rounds: ${r.rounds.map((x) => fmt(x.rps)).join(", ")})`);
  }

  // 2. Throughput when every request brings a token the isolate has never seen.
  {
    const f = await inRounds(
      [
        // First-round size estimate: the cached-token rate (fresh tokens are not faster).
        { key: "b", target: "b", ...tput, tokens: null, fresh: { rps: results.throughput.b.rps } },
        // jose caches nothing: it gets the very tokens Portcullis just got.
        { key: "c", target: "c", ...tput, tokens: null, fresh: { reuse: "b" } },
      ],
      opt.rounds,
    );
    results.fresh = f;
    for (const t of ["b", "c"]) {
      const r = f[t];
      log(`fresh-token throughput ${t}: ${fmt(r.rps)} req/s, p50 ${ms(r.p50_us)}, p99 ${ms(r.p99_us)}, workerd CPU ${fmt(r.cpu_us_per_req, 1)} µs/req${r.wrapped ? " (token list wrapped)" : ""}`);
    }
  }

  // 3. Token-check cost.
  //    The check is isolated by comparing requests that differ only in their token, on a
  //    role:admin route: 401 (no bearer token: no check) vs 403 after a successful token
  //    check (a user token: no origin fetch, no assertion). Fresh tokens have never been
  //    seen by the isolate; the repeat token has. The full forward adds public route vs
  //    authenticated route (check + assertion + identity headers).
  //    (a) paired, interleaved latency on one connection: precise (see lib/paired.mjs);
  //    (b) workerd CPU per request over interleaved wrk runs: the CPU view, noisier.
  {
    const pool = async (n) => {
      const it = (await mintMany(key, tokenOpts, n)).values();
      return () => {
        const t = it.next();
        return t.done ? undefined : `Bearer ${t.value}`;
      };
    };
    const P = (key_, port, p, header, status) => ({ key: key_, port, path: p, header, status });
    const bearer = () => `Bearer ${token}`;
    const basic = () => `Basic ${token}`;
    const ci = (x) => `${fmt(x.median, 1)} µs [${fmt(x.lo, 1)} … ${fmt(x.hi, 1)}]`;
    // Token checks: 401/403 answers only (fast), so most of the time goes here.
    const checkSeconds = opt.pairedSeconds * 0.6;
    const pc = await pairedLatency(
      [
        P("none401", ports.b, "/api/admin/x", basic, 401),
        P("repeat403", ports.b, "/api/admin/x", bearer, 403),
        P("fresh403", ports.b, "/api/admin/x", await pool(Math.ceil(checkSeconds * 1500) + 300), 403),
        P("c_none401", ports.c, "/api/admin/x", basic, 401),
        P("c_verify403", ports.c, "/api/admin/x", bearer, 403),
        // For scale: one native Ed25519 operation per request, as a gateway meets it
        // (between other requests' work, caches cold), against a request doing none.
        P("c_crypto0", ports.c, "/__bench/crypto?op=sign&n=0", () => null, 200),
        P("c_sign1", ports.c, "/__bench/crypto?op=sign&n=1", () => null, 200),
        P("c_verify1", ports.c, "/__bench/crypto?op=verify&n=1", () => null, 200),
      ],
      checkSeconds,
    );
    // Full forwards to the origin.
    const forwardSeconds = opt.pairedSeconds - checkSeconds;
    const freshRuleToken = mint({ sid: "sub" });
    const pf = await pairedLatency(
      [
        P("public200", ports.b, "/api/public/x", bearer, 200),
        P("repeat200", ports.b, "/api/data", bearer, 200),
        // A `"fresh": true` rule: the same cached check, plus the session read from D1.
        P("freshRule200", ports.b, "/api/fresh/x", () => `Bearer ${freshRuleToken}`, 200),
        P("fresh200", ports.b, "/api/data", await pool(Math.ceil(forwardSeconds * 600) + 300), 200),
        P("c_public200", ports.c, "/api/public/x", bearer, 200),
        P("c_verify200", ports.c, "/api/data", bearer, 200),
      ],
      forwardSeconds,
    );
    results.paired = {
      seconds: { check: checkSeconds, forward: forwardSeconds },
      samples: { check: pc.samples.none401, forward: pf.samples.public200 },
      stoppedEarly: pc.stoppedEarly || pf.stoppedEarly,
      medians: { ...pc.medians, ...pf.medians },
      fresh: pc.diff("fresh403", "none401"),
      repeat: pc.diff("repeat403", "none401"),
      freshVsRepeat: pc.diff("fresh403", "repeat403"),
      jose: pc.diff("c_verify403", "c_none401"),
      signOnce: pc.diff("c_sign1", "c_crypto0"),
      verifyOnce: pc.diff("c_verify1", "c_crypto0"),
      forwardFresh: pf.diff("fresh200", "public200"),
      forwardRepeat: pf.diff("repeat200", "public200"),
      freshRule: pf.diff("freshRule200", "repeat200"),
      joseForward: pf.diff("c_verify200", "c_public200"),
    };
    const pr = results.paired;
    log(`paired latency (${fmt(pr.samples.check)} / ${fmt(pr.samples.forward)} samples per variant${pr.stoppedEarly ? ", a token pool ran dry" : ""}): token check fresh ${ci(pr.fresh)}, repeat ${ci(pr.repeat)}, fresh − repeat ${ci(pr.freshVsRepeat)}; forward fresh ${ci(pr.forwardFresh)}, repeat ${ci(pr.forwardRepeat)}, fresh rule − repeat ${ci(pr.freshRule)}; jose check ${ci(pr.jose)}, forward ${ci(pr.joseForward)}; one native sign / verify per request ${ci(pr.signOnce)} / ${ci(pr.verifyOnce)}`);

    const one = { connections: opt.microConnections, seconds: opt.microSeconds };
    await warm("b", "/api/admin/x", repeatFile);
    await warm("c", "/api/admin/x", repeatFile);
    const m = await inRounds(
      [
        { key: "none401", target: "b", path: "/api/admin/x", tokens: repeatFile, scheme: "Basic", expectStatus: "error" },
        { key: "repeat403", target: "b", path: "/api/admin/x", tokens: repeatFile, expectStatus: "error" },
        { key: "fresh403", target: "b", path: "/api/admin/x", fresh: { like: "repeat403" }, expectStatus: "error" },
        { key: "c_none401", target: "c", path: "/api/admin/x", tokens: repeatFile, scheme: "Basic", expectStatus: "error" },
        { key: "c_verify403", target: "c", path: "/api/admin/x", tokens: repeatFile, expectStatus: "error" },
      ].map((v) => ({ ...one, ...v })),
      opt.microRounds,
    );
    results.micro = m;
    results.check = {
      fresh: delta(m.fresh403, m.none401, "cpu_us_per_req"),
      repeat: delta(m.repeat403, m.none401, "cpu_us_per_req"),
      jose: delta(m.c_verify403, m.c_none401, "cpu_us_per_req"),
    };
    for (const [k, v] of Object.entries(m)) log(`cpu micro ${k}: ${fmt(v.rps)} req/s, workerd CPU ${fmt(v.cpu_us_per_req, 1)} µs/req (rounds ${v.rounds.map((x) => fmt(x.cpu_us_per_req, 1)).join(", ")})${v.wrapped ? " (wrapped)" : ""}`);
    const c = results.check;
    log(`token check, workerd CPU/req difference: fresh ${fmt(c.fresh.median, 1)} µs [${fmt(c.fresh.min, 1)} … ${fmt(c.fresh.max, 1)}], repeat ${fmt(c.repeat.median, 1)} µs [${fmt(c.repeat.min, 1)} … ${fmt(c.repeat.max, 1)}]; jose ${fmt(c.jose.median, 1)} µs`);
  }

  // 4. Native WebCrypto Ed25519 in this workerd, the floor under any token check.
  results.native = await calibrateCrypto(base.c, proc.c.pid);
  log(`WebCrypto Ed25519 in workerd: verify ${fmt(results.native.verify, 1)} µs, sign ${fmt(results.native.sign, 1)} µs (CPU per operation)`);

  const d1After = d1Counts(proc.b);
  results.d1.duringLoad = Object.fromEntries(Object.entries(d1After).map(([k, v]) => [k, v - d1Before[k]]));
  results.d1.total = d1After.total;
  results.d1.loadSeconds = (Date.now() - loadStarted) / 1000;

  // 5. Cold start: a new workerd process until its first answer, JS pass-through against
  //    Portcullis, both forwarding a public-route request to the origin.
  {
    const starts = await coldStarts({
      workerd: WORKERD,
      out: OUT,
      targets: { a: { config: cfg.a, path: "/api/public/x", status: 200 }, b: { config: cfg.b, path: "/api/public/x", status: 200 } },
      rounds: opt.startupRounds,
    });
    const med = (list, k) => median(list.map((x) => x[k]));
    results.startup = {
      rounds: opt.startupRounds,
      a: { wallMs: med(starts.a, "wallMs"), cpuMs: med(starts.a, "cpuMs") },
      b: { wallMs: med(starts.b, "wallMs"), cpuMs: med(starts.b, "cpuMs") },
      // The module alone, in this Node's V8 (workerd's V8 is another build of the same engine).
      compileMs: await compileMs(fs.readFileSync(path.join(SNAP, "index_bg.wasm"))),
      raw: starts,
    };
    const st = results.startup;
    log(`cold start (median of ${st.rounds}): (a) ${fmt(st.a.wallMs, 1)} ms wall, ${fmt(st.a.cpuMs, 1)} ms CPU; (b) ${fmt(st.b.wallMs, 1)} ms wall, ${fmt(st.b.cpuMs, 1)} ms CPU; b/a ${fmt(st.b.wallMs / st.a.wallMs, 2)} wall; wasm compile in Node ${fmt(st.compileMs, 1)} ms`);
  }

  // 6. What a sign-in costs: CPU per signup, login and refresh, Portcullis against a real
  //    SQL database, at the default argon2 profile and at the light one.
  if (opt.signin) {
    results.signin = {};
    for (const profile of ["default", "light"]) {
      const r = await signinCosts({
        out: OUT,
        bench: BENCH,
        root: ROOT,
        workerd: WORKERD,
        compatibilityDate: compat,
        build: { js: path.join(SNAP, "index.js"), wasm: path.join(SNAP, "index_bg.wasm") },
        vars: { ...portcullisVars, PASSWORD_HASH_PROFILE: profile },
        name: profile,
        users: opt.signinUsers,
      });
      results.signin[profile] = Object.fromEntries(Object.entries(r).map(([k, v]) => [k, summary(v)]));
      const x = results.signin[profile];
      const ms_ = (v) => `${fmt(v / 1000, 2)} ms`;
      log(`sign-in CPU, ${profile} profile (median, p90, max): signup ${ms_(x.signup.median)} ${ms_(x.signup.p90)} ${ms_(x.signup.max)}; login ${ms_(x.login.median)} ${ms_(x.login.p90)} ${ms_(x.login.max)}; refresh ${ms_(x.refresh.median)} ${ms_(x.refresh.p90)} ${ms_(x.refresh.max)}; no-op 401 ${ms_(x.noop.median)}`);
    }
  }

  // 7. Where Portcullis spends its CPU: a V8 CPU profile under fresh and repeat-token load.
  if (opt.profile) {
    try {
      results.profile = await profileTargets(configFor, names, wrkBin, repeatFile, freshFile, opt);
    } catch (e) {
      log(`profile skipped: ${e.message}`);
    }
  }

  await stopAll();
  results.elapsedS = (Date.now() - t0) / 1000;
  const md = report(results);
  fs.writeFileSync(path.join(OUT, "results.json"), JSON.stringify(results, (k, v) => (k === "raw" ? undefined : v), 2));
  fs.writeFileSync(path.join(OUT, "results.md"), md);
  console.log("\n" + md);
  if (opt.record) {
    const readme = path.join(BENCH, "README.md");
    const text = fs.readFileSync(readme, "utf8");
    const re = /(<!-- bench:results:start -->\n)[\s\S]*?(<!-- bench:results:end -->)/;
    if (!re.test(text)) throw new Error("bench/README.md has no <!-- bench:results:start/end --> markers");
    fs.writeFileSync(readme, text.replace(re, `$1${md}$2`));
    log("recorded the table in bench/README.md");
  }
  log(`done in ${fmt(results.elapsedS, 0)} s; details in bench/out/results.json, logs in bench/out/*.log`);
}

async function calibrateCrypto(base, pid) {
  const out = {};
  for (const op of ["verify", "sign"]) {
    const burst = async (n, times) => {
      const c0 = cpuNs(pid);
      for (let i = 0; i < times; i++) {
        const r = await fetch(`${base}/__bench/crypto?op=${op}&n=${n}`);
        const j = await r.json();
        if (!j.ok) throw new Error(`calibration ${op} failed`);
      }
      return cpuNs(pid) - c0;
    };
    await burst(50, 3); // warm
    const N = 200;
    const per = [];
    for (let k = 0; k < 5; k++) {
      const with_ = await burst(N, 1);
      const without = await burst(0, 1);
      per.push((with_ - without) / 1000 / N);
    }
    out[op] = median(per);
  }
  return out;
}

/** Portcullis frames worth naming in a breakdown (generic async glue left out). */
const GLUE = /^(\(root\)|\(anonymous\)|\(program\)|_ \[|oe \[|js-to-wasm|wasm-to-js|wasm_bindgen::convert::closures|js_sys::futures::(queue::Queue::new|future_to_promise)|portcullis::edge::router::route::\{\{closure\}\}|portcullis::edge::mod)/;

/**
 * CPU profiles (V8 sampling profiler through workerd's inspector) of each target under
 * load, each in a fresh workerd process of its own: where the time goes, and how
 * Portcullis's split between Rust (wasm), wasm-bindgen glue (index.js) and runtime
 * natives compares with the JS Workers doing the same job.
 */
async function profileTargets(configFor, names, wrkBin, repeatFile, freshFile, opt) {
  const seconds = Math.min(3, opt.seconds);
  const plan = {
    a: [{ kind: "a-forward", path: "/api/data", what: "(a) pass-through forward" }],
    c: [
      { kind: "c-forward", path: "/api/data", what: "(c) jose gateway, authenticated forward" },
      { kind: "c-check", path: "/api/admin/x", what: "(c) jose gateway, 403 after verify" },
    ],
    b: [
      { kind: "b-401", path: "/api/admin/x", scheme: "Basic", what: "Portcullis, 401 (no token)" },
      { kind: "b-check-repeat", path: "/api/admin/x", what: "Portcullis, 403 after a cached token check" },
      { kind: "b-check-fresh", path: "/api/admin/x", fresh: true, what: "Portcullis, 403 after a fresh token check" },
      { kind: "b-public", path: "/api/public/x", what: "Portcullis, public-route forward (no token check)" },
      { kind: "b-forward-repeat", path: "/api/data", what: "Portcullis, authenticated forward, cached token" },
      { kind: "b-forward-fresh", path: "/api/data", fresh: true, what: "Portcullis, authenticated forward, fresh token" },
    ],
  };
  const out = {};
  for (const target of ["a", "c", "b"]) {
    const port = await freePort();
    const inspectorPort = await freePort();
    const cfgPath = configFor[target](`${names[target]}-profiled`, port, { named: true });
    const child = await startWorkerd(`${names[target]}-profiled`, cfgPath, port, [`--inspector-addr=127.0.0.1:${inspectorPort}`]);
    const base = `http://127.0.0.1:${port}`;
    for (const p of new Set(plan[target].map((l) => l.path))) {
      await runWrk(wrkBin, BENCH, { base, path: p, tokensFile: repeatFile, connections: opt.connections, seconds: 1 });
    }
    const inspector = await connectInspector(`http://127.0.0.1:${inspectorPort}`);
    try {
      for (const l of plan[target]) {
        const tokens = l.fresh ? (await freshFile(`profile-${l.kind}`, Math.ceil(3500 * seconds))).file : repeatFile;
        const { profile, result } = await profileDuring(
          inspector,
          () => runWrk(wrkBin, BENCH, { base, path: l.path, tokensFile: tokens, scheme: l.scheme, connections: opt.connections, seconds }),
          100,
        );
        fs.writeFileSync(path.join(OUT, `profile-${l.kind}.cpuprofile`), JSON.stringify(profile));
        const s = summarise(profile);
        const R = result.requests;
        const per = (x) => ({ ...x, perReq: x.us / R });
        out[l.kind] = {
          what: l.what,
          requests: R,
          perReqUs: s.busyUs / R,
          categories: Object.fromEntries(Object.entries(s.categories).map(([k, v]) => [k, v / R])),
          self: s.self.slice(0, 20).map(per),
          inclusive: s.inclusive.filter((x) => !GLUE.test(x.name)).slice(0, 20).map(per),
        };
        const cat = out[l.kind].categories;
        log(`profile ${l.kind}: ${fmt(R)} requests, ${fmt(s.busyUs / R)} µs sampled/req (rust ${fmt(cat.rust)}, glue ${fmt(cat.glue)}, runtime ${fmt(cat.runtime)}, gc ${fmt(cat.gc)}, other ${fmt(cat.other)})`);
      }
    } finally {
      inspector.close();
      await stop(child);
    }
  }
  return out;
}

function report(r) {
  const t = r.throughput;
  const f = r.fresh;
  const ba = t.b.rps / t.a.rps;
  const bc = t.b.rps / t.c.rps;
  const mark = (ok) => (ok ? "✅" : "❌");
  const row = (name, x, note = "") =>
    `| ${name} | ${fmt(x.rps)} | ${ms(x.p50_us)} | ${ms(x.p99_us)} | ${fmt(x.cpu_us_per_req, 0)} |${note ? ` ${note}` : ""}`;
  const c = r.check;
  const m = r.micro;
  const L = [];
  L.push(`Measured ${r.machine.date.slice(0, 16).replace("T", " ")} UTC, Portcullis at commit ${r.build.commit} (wasm sha256 ${r.build.wasmSha256}), on ${r.machine.cpu}, ${r.machine.cores} cores (load average at start ${r.machine.loadavg}); ${r.machine.workerd}; ${r.machine.wrk.split(" [")[0]}; Node ${r.machine.node}; jose ${r.machine.jose}. \`wrk -t1 -c${r.options.connections} -d${r.options.seconds}s\` after a ${r.options.warmup} s warm-up; origin: Node \`http\` on loopback. Whole run: ${fmt(r.elapsedS)} s.`);
  L.push("");
  L.push("**Throughput** — `GET /api/data`, the same valid token on every request (a client reusing its access token):");
  L.push("");
  L.push("| target | req/s | p50 | p99 | workerd CPU µs/req |");
  L.push("|---|---:|---:|---:|---:|");
  L.push(row("(a) bare JS pass-through", t.a));
  L.push(row("(b) **Portcullis**", t.b));
  L.push(row("(c) JS gateway (jose)", t.c));
  L.push("");
  L.push(`**b/a = ${fmt(ba, 2)}** (target ≥ ${TARGET_BA}) ${mark(ba >= TARGET_BA)} · **b/c = ${fmt(bc, 2)}** (target ≥ ${TARGET_BC}) ${mark(bc >= TARGET_BC)}`);
  L.push("");
  L.push("**Every request with a never-seen token** (worst case, same setup):");
  L.push("");
  L.push("| target | req/s | p50 | p99 | workerd CPU µs/req |");
  L.push("|---|---:|---:|---:|---:|");
  L.push(row("(b) **Portcullis**", f.b, f.b.wrapped ? "(token list wrapped)" : ""));
  L.push(row("(c) JS gateway (jose)", f.c));
  L.push("");
  L.push(`fresh-token b/c = ${fmt(f.b.rps / f.c.rps, 2)}`);
  L.push("");
  const pr = r.paired;
  const ci = (x) => `${fmt(x.median, 1)} <sub>[${fmt(x.lo, 1)} … ${fmt(x.hi, 1)}]</sub>`;
  const rng = (x) => `${fmt(x.median, 1)} <sub>[${fmt(x.min, 1)} … ${fmt(x.max, 1)}]</sub>`;
  L.push(`**Token check inside the Worker**, in µs per request. *Paired latency*: median latency difference between requests that differ only in their token, interleaved in random order on one connection per target (${fmt(pr.samples.check)} requests per check variant in ${fmt(pr.seconds.check)} s, ${fmt(pr.samples.forward)} per forward variant in ${fmt(pr.seconds.forward)} s; 95 % bootstrap interval). *CPU*: difference in workerd CPU time per request over ${r.options.microRounds} interleaved wrk rounds (-c${r.options.microConnections}, ${r.options.microSeconds} s each; median [min … max]).`);
  L.push("");
  L.push("| | Portcullis, paired latency | Portcullis, CPU | target | jose gateway, paired latency | jose gateway, CPU |");
  L.push("|---|---:|---:|---:|---:|---:|");
  L.push(`| token check, **fresh token** (403 after the check − 401 without a token) | **${ci(pr.fresh)}** | ${rng(c.fresh)} | ≤ ${TARGET_FRESH_US} ${mark(pr.fresh.median <= TARGET_FRESH_US)} | ${ci(pr.jose)} | ${rng(c.jose)} |`);
  L.push(`| token check, **token already seen** by the isolate | **${ci(pr.repeat)}** | ${rng(c.repeat)} | ≤ ${TARGET_REPEAT_US} ${mark(pr.repeat.median <= TARGET_REPEAT_US)} | (no cache) | |`);
  L.push(`| fresh − already seen (both 403: identical responses) | ${ci(pr.freshVsRepeat)} | | | | |`);
  L.push(`| authenticated − public forward, fresh token (check + assertion signing + identity headers) | ${ci(pr.forwardFresh)} | | | ${ci(pr.joseForward)} | |`);
  L.push(`| authenticated − public forward, token already seen (cached check and assertion) | ${ci(pr.forwardRepeat)} | | | (no cache) | |`);
  L.push(`| a \`"fresh": true\` rule − the same forward without it, token already seen (the full path and one D1 batch, here the in-memory fake: a real D1 adds its round trip) | ${ci(pr.freshRule)} | | | | |`);
  L.push(`| for scale: one native (WebCrypto) Ed25519 **verify** / **sign** per request, from JS in this workerd | ${fmt(pr.verifyOnce.median, 1)} / ${fmt(pr.signOnce.median, 1)} | | | | |`);
  L.push(`| for scale: the same, ${fmt(200)} in a row (caches hot; CPU per operation) | ${fmt(r.native.verify, 1)} / ${fmt(r.native.sign, 1)} | | | | |`);
  L.push("");
  const md = pr.medians;
  const lat = (k, label) => `${label} ${fmt(md[k])}`;
  L.push(`Paired-run median latencies (µs, client-measured, one connection): Portcullis ${[lat("none401", "401 no token"), lat("repeat403", "403 cached token"), lat("fresh403", "403 fresh token"), lat("public200", "public forward"), lat("repeat200", "authenticated forward, cached"), lat("fresh200", "authenticated forward, fresh"), lat("freshRule200", "fresh rule, cached")].join(", ")}; jose ${[lat("c_none401", "401"), lat("c_verify403", "403 after verify"), lat("c_public200", "public forward"), lat("c_verify200", "authenticated forward")].join(", ")}.`);
  const mm = (k, label) => `${label} ${fmt(m[k].cpu_us_per_req, 1)}`;
  L.push(`CPU runs, workerd CPU µs/req: Portcullis ${[mm("none401", "401"), mm("repeat403", "403 cached token"), mm("fresh403", "403 fresh token")].join(", ")}; jose ${[mm("c_none401", "401"), mm("c_verify403", "403 after verify")].join(", ")}.`);
  L.push("");
  const dl = r.d1.duringLoad;
  L.push(`**Revocation on**: Portcullis checks every token against a revocation set of ${fmt(r.revocations.sessions)} revoked sessions and ${fmt(r.revocations.users)} users whose roles changed (seeded into the fake D1's revocation log; \`REVOCATION_LAG\` 10 s). D1 statements Portcullis ran (fake D1 log): ${r.d1.total} in total; during the ${fmt(r.d1.loadSeconds)} s of load phases **${dl.total}**: ${dl.revocationLog} reading the revocation log (${fmt(dl.revocationLog / 2)} reads of one batch of two statements, in the background, about one every half lag; no request waits for them), ${dl.freshCheck} for the fresh rule's session checks (${fmt(dl.freshCheck / 2)} requests of the paired run, one batch of two each), ${dl.keys} key loads, ${dl.total - dl.revocationLog - dl.freshCheck - dl.keys} others.`);
  L.push("");
  const w = r.wasm;
  L.push(`**Wasm** \`build/index_bg.wasm\`: **${fmt(w.raw)} B raw** (${fmt(w.raw / 1024)} KiB), **${fmt(w.gzip)} B gzipped** (${fmt(w.gzip / 1024)} KiB, gzip -9); custom sections stripped by the build (kept in \`build/named/\` for profiles): ${w.customs.map((x) => `\`${x.name}\` ${fmt(x.size)} B`).join(", ")}. \`build/index.js\`: ${fmt(w.js)} B.`);
  const st = r.startup;
  if (st) {
    L.push("");
    L.push(`**Cold start** — a new workerd process until the answer to its first request (\`GET /api/public/x\`, forwarded to the origin): config, the Worker's modules compiled (for Portcullis, its wasm), its global scope, the request; median of ${fmt(st.rounds)} starts each, the two alternating:`);
    L.push("");
    L.push("| target | wall ms | workerd CPU ms |");
    L.push("|---|---:|---:|");
    L.push(`| (a) bare JS pass-through | ${fmt(st.a.wallMs, 1)} | ${fmt(st.a.cpuMs, 1)} |`);
    L.push(`| (b) **Portcullis** | ${fmt(st.b.wallMs, 1)} | ${fmt(st.b.cpuMs, 1)} |`);
    L.push("");
    L.push(`**b/a = ${fmt(st.b.wallMs / st.a.wallMs, 2)}** (wall), ${fmt(st.b.cpuMs / st.a.cpuMs, 2)} (CPU): Portcullis adds ${fmt(st.b.wallMs - st.a.wallMs, 1)} ms wall, ${fmt(st.b.cpuMs - st.a.cpuMs, 1)} ms CPU to a cold start. For scale, compiling \`build/index_bg.wasm\` (${fmt(w.raw)} B, ${fmt(w.gzip)} B gzipped) alone takes ${fmt(st.compileMs, 1)} ms in Node ${r.machine.node}'s V8.`);
  }
  const si = r.signin;
  if (si) {
    const c = (x) => `${fmt(x.median / 1000, 2)} <sub>${fmt(x.p90 / 1000, 2)} · ${fmt(x.max / 1000, 2)}</sub>`;
    L.push("");
    L.push(`**Sign-in CPU** — workerd CPU time per request in ms, median <sub>90th percentile · max</sub> over ${fmt(si.default.login.n)} logins, ${fmt(si.default.signup.n)} signups and ${fmt(si.default.refresh.n)} refreshes per profile: Portcullis with workerd's own D1 binding, talking to a SQLite database in another workerd process (its SQL work is not counted, as D1's is not on Cloudflare); each sign-in also sends one event to the queue. The CPU limit per request is 10 ms on the Workers Free plan, 30,000 ms by default on Workers Paid (\`[limits] cpu_ms\`, up to 300,000):`);
    L.push("");
    L.push("| \`PASSWORD_HASH_PROFILE\` (argon2id) | signup | login | refresh | for scale: a 401 with no work |");
    L.push("|---|---:|---:|---:|---:|");
    const names = { default: "`default` (19,456 KiB, 2 passes, 1 lane)", light: "`light` (7,168 KiB, 5 passes, 1 lane)" };
    for (const [k, x] of Object.entries(si)) L.push(`| ${names[k] ?? k} | ${c(x.signup)} | **${c(x.login)}** | **${c(x.refresh)}** | ${c(x.noop)} |`);
  }
  if (r.profile) {
    L.push("");
    L.push("**Where the CPU goes** — V8 sampling profiles (100 µs interval) under wrk -c16 load, each target in its own fresh workerd; sampled µs per request by kind of code (the profiler inflates absolute times by roughly 1.3×, compare rows with each other):");
    L.push("");
    L.push("| load | sampled µs/req | Rust (wasm) | JS glue / Worker JS | runtime natives | GC | V8 other |");
    L.push("|---|---:|---:|---:|---:|---:|---:|");
    for (const p of Object.values(r.profile)) {
      const k = p.categories;
      L.push(`| ${p.what} | ${fmt(p.perReqUs)} | ${fmt(k.rust)} | ${fmt(k.glue)} | ${fmt(k.runtime)} | ${fmt(k.gc)} | ${fmt(k.other)} |`);
    }
    L.push("");
    const esc = (n) => `\`${n.replace(/\|/g, "\\|").slice(0, 90)}\``;
    for (const p of Object.values(r.profile)) {
      if (!p.what.startsWith("Portcullis")) continue;
      L.push(`<details><summary>Profile: ${p.what} (${fmt(p.perReqUs)} sampled µs/req)</summary>`);
      L.push("");
      L.push("| inclusive | µs/req | function |  | self | µs/req | function |");
      L.push("|---:|---:|---|---|---:|---:|---|");
      for (let i = 0; i < 15; i++) {
        const a = p.inclusive[i];
        const b = p.self[i];
        L.push(`| ${a ? fmt(a.share * 100, 1) + "%" : ""} | ${a ? fmt(a.perReq, 1) : ""} | ${a ? esc(a.name) : ""} | | ${b ? fmt(b.share * 100, 1) + "%" : ""} | ${b ? fmt(b.perReq, 1) : ""} | ${b ? esc(b.name) : ""} |`);
      }
      L.push("");
      L.push("</details>");
      L.push("");
    }
  }
  return L.join("\n").trimEnd() + "\n";
}

process.on("SIGINT", async () => {
  await stopAll();
  process.exit(130);
});

main().catch(async (e) => {
  console.error(`[bench] error: ${e.stack ?? e}`);
  await stopAll();
  process.exit(1);
});
