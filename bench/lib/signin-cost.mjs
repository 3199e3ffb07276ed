// What a sign-in costs Portcullis in CPU, in the real runtime: signups, password logins and
// refreshes against a real SQL database, each request timed by the CPU its workerd process
// used meanwhile (the CPU time the Workers plans limit per request).
//
// Two workerd processes: Portcullis, with workerd's own D1 binding
// (`cloudflare-internal:d1-api`, as on Cloudflare) as `DB`, and the database it talks to
// (`workers/d1-server.js`: the D1 protocol over a SQLite-backed Durable Object, the
// migrations applied), so the SQL work is counted apart, as D1's own is on Cloudflare.
// KV and the queue are the stub service (a login publishes an event: one queue send).
//
// Every request comes from another client address (`CF-Connecting-IP`), and no account
// logs in more than three times, so the rate limits run their checks as usual but never
// refuse. The isolate's first few signups, logins and refreshes (the signing key made,
// memory grown, hot code compiled again by V8's optimising tier) are not counted.
import fs from "node:fs";
import path from "node:path";
import { writeConfig } from "./workerd.mjs";
import { cpuNs, freePort, start, stop, waitHttp } from "./proc.mjs";

const median = (xs) => {
  const a = [...xs].sort((x, y) => x - y);
  return a.length % 2 ? a[(a.length - 1) / 2] : (a[a.length / 2 - 1] + a[a.length / 2]) / 2;
};

/** Median, 90th percentile, min and max of CPU samples (µs). */
export function summary(samples) {
  const a = [...samples].sort((x, y) => x - y);
  return { n: a.length, median: median(a), p90: a[Math.min(a.length - 1, Math.floor(a.length * 0.9))], min: a[0], max: a[a.length - 1] };
}

/**
 * Runs the sign-in measurement once for a Portcullis build.
 * `build`: { js, wasm } file paths; `vars`: Portcullis's vars (an argon2 profile among them);
 * `name`: a label for configs and logs. Resolves to { signup, login, refresh, noop } — each
 * a list of CPU µs per request.
 */
export async function signinCosts({ out, bench, root, workerd, compatibilityDate, build, vars, name, users = 24, loginsPerUser = 3, refreshesPerLogin = 2, warm = 4 }) {
  const migrationsDir = path.join(root, "migrations");
  const migrations = fs.readdirSync(migrationsDir).filter((f) => f.endsWith(".sql")).sort().map((f) => fs.readFileSync(path.join(migrationsDir, f), "utf8"));
  const migrationsFile = path.join(out, "migrations.json");
  fs.writeFileSync(migrationsFile, JSON.stringify(migrations));

  // SQL needs SQLite storage on disk (a fresh directory per run); in memory there is none.
  const d1State = path.join(out, `d1-${name}-state`);
  fs.rmSync(d1State, { recursive: true, force: true });
  fs.mkdirSync(d1State, { recursive: true });
  const d1Port = await freePort();
  const d1Config = writeConfig(out, `d1-${name}`, {
    port: d1Port,
    compatibilityDate,
    modules: [{ name: "d1-server.js", file: path.join(bench, "workers", "d1-server.js"), type: "esModule" }],
    extra: {
      bindings: [
        { name: "MIGRATIONS", kind: `text = embed ${JSON.stringify(path.relative(out, migrationsFile))}` },
        { name: "DATABASE", kind: `durableObjectNamespace = "Database"` },
      ],
      worker: [`durableObjectNamespaces = [ (className = "Database", uniqueKey = "portcullis-bench-d1", enableSql = true) ]`, `durableObjectStorage = (localDisk = "d1-state")`],
      services: [`(name = "d1-state", disk = (path = ${JSON.stringify(d1State)}, writable = true))`],
    },
  });
  const port = await freePort();
  const rel = (f) => path.relative(out, f).split(path.sep).join("/");
  const config = writeConfig(out, `signin-${name}`, {
    port,
    compatibilityDate,
    modules: [
      { name: "index.js", file: build.js, type: "esModule" },
      { name: "index_bg.wasm", file: build.wasm, type: "wasm" },
    ],
    vars,
    extra: {
      bindings: [
        { name: "DB", kind: `wrapped = (moduleName = "cloudflare-internal:d1-api", innerBindings = [ (name = "fetcher", service = "d1") ])` },
        { name: "TOKENS", kind: `kvNamespace = "stub"` },
        { name: "EVENTS", kind: `queue = "stub"` },
        { name: "DEAD_LETTERS", kind: `queue = "stub"` },
      ],
      services: [
        `(name = "stub", worker = (modules = [ (name = "stub.js", esModule = embed ${JSON.stringify(rel(path.join(bench, "workers", "stub.js")))}) ], compatibilityDate = ${JSON.stringify(compatibilityDate)}))`,
        `(name = "d1", external = (address = "127.0.0.1:${d1Port}", http = ()))`,
      ],
    },
  });

  const d1 = start(workerd, ["serve", d1Config, "--experimental"], { logFile: path.join(out, `d1-${name}.log`), cwd: out });
  const gw = start(workerd, ["serve", config, "--experimental"], { logFile: path.join(out, `signin-${name}.log`), cwd: out });
  try {
    const base = `http://127.0.0.1:${port}`;
    await waitHttp(`http://127.0.0.1:${d1Port}/`, d1);
    await waitHttp(`${base}/.well-known/jwks.json`, gw);
    let client = 0;
    const call = async (p, body, expect) => {
      client++;
      const headers = { "cf-connecting-ip": `10.${(client >> 16) & 255}.${(client >> 8) & 255}.${client & 255}` };
      if (body) headers["content-type"] = "application/json";
      const c0 = cpuNs(gw.pid);
      const r = await fetch(base + p, { method: body ? "POST" : "GET", headers, body: body ? JSON.stringify(body) : undefined });
      const text = await r.text();
      const cpuUs = (cpuNs(gw.pid) - c0) / 1000;
      if (r.status !== expect) throw new Error(`sign-in bench (${name}): ${body ? "POST" : "GET"} ${p} answered ${r.status}, expected ${expect}: ${text.slice(0, 300)}\n${gw.output().slice(-2000)}`);
      return { cpuUs, json: text ? JSON.parse(text) : null };
    };
    const password = "a bench passphrase, not common";
    const email = (i) => `bench-${name}-${i}@example.com`;
    const signup = (i) => call("/auth/signup", { email: email(i), password }, 201);
    const login = (i) => call("/auth/login", { email: email(i), password }, 200);
    const refresh = (token) => call("/auth/refresh", { refresh_token: token }, 200);

    // The isolate's first few of each are not counted: its signing key is made, its wasm
    // memory grows, and V8 compiles the hot wasm code again, optimised, on other threads.
    for (let i = 1; i <= warm; i++) {
      await signup(-i);
      const first = await login(-i);
      await refresh(first.json.refresh_token);
    }

    const result = { signup: [], login: [], refresh: [], noop: [] };
    for (let i = 0; i < users; i++) result.signup.push((await signup(i)).cpuUs);
    const tokens = [];
    for (let round = 0; round < loginsPerUser; round++) {
      for (let i = 0; i < users; i++) {
        const r = await login(i);
        result.login.push(r.cpuUs);
        tokens.push(r.json.refresh_token);
      }
    }
    for (let token of tokens) {
      for (let k = 0; k < refreshesPerLogin; k++) {
        const r = await refresh(token);
        result.refresh.push(r.cpuUs);
        token = r.json.refresh_token;
      }
    }
    // For scale: an auth API request that does nothing (no token: 401), the runtime's and the router's share.
    for (let i = 0; i < users; i++) result.noop.push((await call("/auth/me", null, 401)).cpuUs);
    return result;
  } finally {
    await stop(gw);
    await stop(d1);
  }
}
