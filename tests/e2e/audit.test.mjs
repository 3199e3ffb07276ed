// The audit log in the real runtime: every event the queue consumer handles
// lands in D1 `audit_log` with who, what, when, IP and user agent; admins read
// it at /auth/admin/audit (filters, cursor pages), users their own at
// /auth/audit; no one-time secret is ever stored; the cron trigger purges
// entries past AUDIT_RETENTION_DAYS; and a failing audit write neither fails
// the action nor holds up its deliveries.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { startGateway, post, json, randomEmail, sleep } from "./harness.mjs";
import { signup, login, makeAdmin, authed, assertProblem, PASSWORD } from "./lib/accounts.mjs";
import { d1, sqlText } from "./lib/d1.mjs";

const CLIENT = { "cf-connecting-ip": "198.51.100.77", "user-agent": "portcullis-e2e-audit/1.0 (+audit)" };
const RFC3339 = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/;

async function until(what, fn, timeoutMs = 30_000, everyMs = 200) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

/** A loopback webhook receiver recording every event it gets. */
async function receiver() {
  const events = [];
  const server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      try { events.push(JSON.parse(body)); } catch {}
      res.writeHead(204).end();
    });
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${server.address().port}/hook`,
    events,
    close: () => new Promise((r) => { server.closeAllConnections?.(); server.close(r); }),
  };
}

describe("audit log", () => {
  let gw, rx, admin;
  const seconds = () => Math.floor(Date.now() / 1000);

  before(async () => {
    rx = await receiver();
    gw = await startGateway({
      args: ["--test-scheduled"],
      vars: { AUDIT_RETENTION_DAYS: "1", RETRY_BASE_DELAY_SECS: "1", WEBHOOK_URLS: rx.url },
    });
    admin = await makeAdmin(gw, randomEmail("audit-admin"));
  });
  after(async () => {
    await gw?.stop();
    await rx?.close();
  });

  /** GET `path` with `query` as `token`; the parsed body and the response. */
  async function get(path, token, query = "") {
    const res = await authed(`${gw.url}${path}${query ? `?${query}` : ""}`, token);
    return { res, body: await json(res) };
  }
  const adminAudit = (query) => get("/auth/admin/audit", admin.access_token, query);

  /** The admin view's entries for `query`, once `ready(entries)` holds. */
  function entriesWhen(query, ready, what = query) {
    return until(`audit entries ${what}`, async () => {
      const { res, body } = await adminAudit(query);
      assert.equal(res.status, 200, JSON.stringify(body));
      return ready(body.entries) && body.entries;
    });
  }

  /** Signs `email` up and logs in `logins` times, all as CLIENT; returns the last AuthResponse. */
  async function userWithLogins(email, logins) {
    const res = await post(`${gw.url}/auth/signup`, { email, password: PASSWORD }, CLIENT);
    let auth = await json(res);
    assert.equal(res.status, 201, JSON.stringify(auth));
    for (let i = 0; i < logins; i++) {
      const r = await post(`${gw.url}/auth/login`, { email, password: PASSWORD }, CLIENT);
      auth = await json(r);
      assert.equal(r.status, 200, JSON.stringify(auth));
    }
    return auth;
  }

  test("an action appears with its type, user, IP, user agent and time; a failure with outcome failure", async () => {
    const email = randomEmail("audit-fields");
    const t0 = seconds();
    const auth = await userWithLogins(email, 1);
    const bad = await post(`${gw.url}/auth/login`, { email, password: "not the password" }, CLIENT);
    await assertProblem(bad, 401, "invalid_credentials");
    const t1 = seconds();
    const id = auth.user.id;
    const entries = await entriesWhen(`user_id=${id}`, (e) => e.length === 3, "for the new user");
    assert.deepEqual(entries.map((e) => e.type).sort(), ["login", "login_failed", "user_created"]);
    for (const e of entries) {
      assert.equal(e.user_id, id, JSON.stringify(e));
      assert.equal(e.ip_address, CLIENT["cf-connecting-ip"], JSON.stringify(e));
      assert.equal(e.user_agent, CLIENT["user-agent"], JSON.stringify(e));
      assert.match(e.at, RFC3339);
      const at = Date.parse(e.at) / 1000;
      assert.ok(at >= t0 && at <= t1, `${e.at} within the test`);
      assert.deepEqual(Object.keys(e).sort(), ["at", "data", "id", "ip_address", "outcome", "type", "user_agent", "user_id"]);
      assert.match(e.id, /^[0-9a-f-]{36}$/);
    }
    const byType = Object.fromEntries(entries.map((e) => [e.type, e]));
    assert.equal(byType.login.outcome, "success");
    assert.equal(byType.login.data.email, email);
    assert.equal(byType.login_failed.outcome, "failure");
    assert.equal(byType.login_failed.data.reason, "invalid_password");
    // Newest first (entries of one second in the order of their ids).
    for (let i = 1; i < entries.length; i++) assert.ok(entries[i - 1].at >= entries[i].at);
  });

  test("an admin action names the admin who acted", async () => {
    const target = await signup(gw, randomEmail("audit-target"));
    const res = await authed(`${gw.url}/auth/admin/users/${target.user.id}/roles/editor`, admin.access_token, { method: "POST" });
    assert.equal(res.status, 200, await res.text());
    const [entry] = await entriesWhen(`user_id=${target.user.id}&type=role_added`, (e) => e.length === 1);
    assert.equal(entry.actor_id, admin.user.id);
    assert.equal(entry.data.role, "editor");
    const own = await get("/auth/audit", target.access_token, "type=role_added");
    assert.equal(own.res.status, 200);
    assert.equal(own.body.entries.length, 1);
    assert.equal(own.body.entries[0].actor_id, undefined, "users are not told which admin acted");
  });

  test("filters by user, type and time select exactly their entries", async () => {
    const a = await userWithLogins(randomEmail("audit-filter-a"), 2);
    const b = await userWithLogins(randomEmail("audit-filter-b"), 1);
    const mine = await entriesWhen(`user_id=${a.user.id}`, (e) => e.length === 3);
    assert.ok(mine.every((e) => e.user_id === a.user.id));
    await entriesWhen(`user_id=${b.user.id}`, (e) => e.length === 2);
    const logins = (await adminAudit(`user_id=${a.user.id}&type=login`)).body.entries;
    assert.equal(logins.length, 2);
    assert.ok(logins.every((e) => e.type === "login"));
    const everyLogin = (await adminAudit("type=login&limit=200")).body.entries;
    assert.ok(everyLogin.every((e) => e.type === "login"));
    assert.ok(everyLogin.some((e) => e.user_id === b.user.id) && everyLogin.some((e) => e.user_id === a.user.id));
    // `since` is inclusive and `until` exclusive: split at one entry's time,
    // the two halves are the whole, without overlap (RFC 3339 or Unix seconds).
    const split = mine[0].at;
    const newer = (await adminAudit(`user_id=${a.user.id}&since=${encodeURIComponent(split)}`)).body.entries;
    const older = (await adminAudit(`user_id=${a.user.id}&until=${Date.parse(split) / 1000}`)).body.entries;
    assert.ok(newer.length >= 1 && newer.every((e) => e.at >= split));
    assert.ok(older.every((e) => e.at < split));
    assert.deepEqual([...newer, ...older].map((e) => e.id), mine.map((e) => e.id));
    const future = (await adminAudit(`since=${seconds() + 3600}`)).body;
    assert.deepEqual(future, { entries: [], next_cursor: null });
  });

  test("pages walk every entry once, newest first, with the cursor", async () => {
    const u = await userWithLogins(randomEmail("audit-pages"), 6);
    const all = await entriesWhen(`user_id=${u.user.id}&limit=200`, (e) => e.length === 7);
    const walked = [];
    let cursor = null;
    let pages = 0;
    do {
      const { res, body } = await adminAudit(`user_id=${u.user.id}&limit=2${cursor ? `&cursor=${cursor}` : ""}`);
      assert.equal(res.status, 200, JSON.stringify(body));
      assert.ok(body.entries.length <= 2);
      walked.push(...body.entries.map((e) => e.id));
      cursor = body.next_cursor;
      pages += 1;
    } while (cursor);
    assert.equal(pages, 4);
    assert.equal(new Set(walked).size, walked.length, "no entry twice");
    assert.deepEqual(walked, all.map((e) => e.id), "every entry, in the one-page order");
    for (let i = 1; i < all.length; i++) assert.ok(all[i - 1].at >= all[i].at, "newest first");
    // The default page is 50.
    const { body } = await adminAudit("");
    assert.ok(body.entries.length <= 50);
  });

  test("401 without a token, 403 for a non-admin before the query is read, 422 invalid_query for bad parameters", async () => {
    const user = await signup(gw, randomEmail("audit-nonadmin"));
    await assertProblem(await fetch(`${gw.url}/auth/admin/audit`), 401, "missing_token");
    await assertProblem(await fetch(`${gw.url}/auth/audit`), 401, "missing_token");
    await assertProblem(await authed(`${gw.url}/auth/admin/audit`, user.access_token), 403, "insufficient_role");
    await assertProblem(await authed(`${gw.url}/auth/admin/audit?limit=0`, user.access_token), 403, "insufficient_role");
    for (const q of ["limit=0", "limit=201", "since=yesterday", "until=2026-02-30T00:00:00Z", "cursor=%21%21", "type=nope", "user_id=a%2Fb", "offset=3", "since=20&until=10"]) {
      await assertProblem(await authed(`${gw.url}/auth/admin/audit?${q}`, admin.access_token), 422, "invalid_query");
    }
    await assertProblem(await authed(`${gw.url}/auth/audit?user_id=${admin.user.id}`, user.access_token), 422, "invalid_query");
    const res = await authed(`${gw.url}/auth/audit`, user.access_token, { method: "DELETE" });
    assert.equal(res.status, 405);
    assert.equal(res.headers.get("allow"), "GET, HEAD");
  });

  test("a user sees only their own entries, failed attempts on their account included", async () => {
    const a = await userWithLogins(randomEmail("audit-own-a"), 1);
    const b = await userWithLogins(randomEmail("audit-own-b"), 1);
    const bad = await post(`${gw.url}/auth/login`, { email: a.user.email, password: "wrong password!" }, CLIENT);
    await assertProblem(bad, 401, "invalid_credentials");
    await entriesWhen(`user_id=${a.user.id}`, (e) => e.length === 3);
    await entriesWhen(`user_id=${b.user.id}`, (e) => e.length === 2);
    const { res, body } = await get("/auth/audit", a.access_token, "limit=200");
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.deepEqual(body.entries.map((e) => e.type).sort(), ["login", "login_failed", "user_created"]);
    assert.ok(body.entries.every((e) => e.user_id === a.user.id));
    const theirs = (await get("/auth/audit", b.access_token)).body.entries;
    assert.deepEqual(theirs.map((e) => e.type).sort(), ["login", "user_created"]);
  });

  test("no magic-link token, code, reset or verification token is stored", async () => {
    const email = randomEmail("audit-secrets");
    const auth = await signup(gw, email);
    for (const p of ["/auth/magic-link", "/auth/otp", "/auth/password/forgot"]) {
      const res = await post(`${gw.url}${p}`, { email });
      assert.equal(res.status, 200, p);
      await res.arrayBuffer();
    }
    const verify = await authed(`${gw.url}/auth/email/verify/request`, auth.access_token, { method: "POST" });
    assert.equal(verify.status, 200, await verify.text());
    const fields = { magic_link_requested: "token", email_otp_requested: "code", password_reset_requested: "token", email_verification_requested: "token" };
    const secrets = [];
    for (const [type, field] of Object.entries(fields)) {
      const ev = await gw.waitForEvent((e) => e.type === type && e.data.email === email, 20_000);
      assert.ok(typeof ev.data[field] === "string" && ev.data[field].length >= 6 && ev.data[field] !== "[redacted]", type);
      secrets.push(ev.data[field]);
    }
    const entries = await entriesWhen(`user_id=${auth.user.id}&limit=200`, (e) => Object.keys(fields).every((t) => e.some((x) => x.type === t)));
    for (const type of Object.keys(fields)) {
      const e = entries.find((x) => x.type === type);
      assert.equal(e.data.email, email, type);
      assert.deepEqual(Object.keys(e.data).filter((k) => k === "token" || k === "code"), [], `${type}: ${JSON.stringify(e.data)}`);
    }
    const rows = await d1(gw, `SELECT * FROM audit_log WHERE user_id = ${sqlText(auth.user.id)}`);
    assert.ok(rows.length >= 5);
    const raw = JSON.stringify(rows) + JSON.stringify(entries);
    for (const s of secrets) assert.ok(!raw.includes(s), `a secret (${s.slice(0, 3)}…) is in audit_log`);
    assert.ok(!raw.includes("sealed"), "not even sealed");
  });

  test("a failing audit write neither fails the action nor holds up its delivery; the entry follows", async () => {
    const email = randomEmail("audit-fault");
    const auth = await signup(gw, email);
    await entriesWhen(`user_id=${auth.user.id}`, (e) => e.length === 1);
    await d1(gw, "ALTER TABLE audit_log RENAME TO audit_log_paused");
    let event;
    try {
      const res = await post(`${gw.url}/auth/login`, { email, password: PASSWORD }, CLIENT);
      assert.equal(res.status, 200, "the action succeeds");
      await res.arrayBuffer();
      event = await until("the login at the webhook", () => rx.events.find((e) => e.type === "login" && e.data.user_id === auth.user.id));
      await gw.waitForLog((l) => l.includes("portcullis.audit_failed") && l.includes(`id=${event.id}`), 20_000);
    } finally {
      await d1(gw, "ALTER TABLE audit_log_paused RENAME TO audit_log");
    }
    // The message is tried again: the entry is written, the webhook not sent twice.
    const entries = await entriesWhen(`user_id=${auth.user.id}&type=login`, (e) => e.length === 1);
    assert.equal(entries[0].id, event.id);
    assert.equal(entries[0].user_agent, CLIENT["user-agent"]);
    await gw.waitForLog((l) => l.includes("portcullis.delivered") && l.includes(event.id));
    assert.equal(rx.events.filter((e) => e.id === event.id).length, 1, "delivered once");
  });

  test("the cron trigger purges entries older than AUDIT_RETENTION_DAYS and keeps the rest", async () => {
    const old = await userWithLogins(randomEmail("audit-old"), 1);
    const fresh = await userWithLogins(randomEmail("audit-fresh"), 1);
    await entriesWhen(`user_id=${old.user.id}`, (e) => e.length === 2);
    await entriesWhen(`user_id=${fresh.user.id}`, (e) => e.length === 2);
    // Two days back: past the one day of retention.
    await d1(gw, `UPDATE audit_log SET at = at - 172800 WHERE user_id = ${sqlText(old.user.id)}`);
    assert.equal((await adminAudit(`user_id=${old.user.id}`)).body.entries.length, 2);
    let runs = 0;
    const before = gw.logs().filter((l) => l.includes("portcullis.prune audit_log=")).length;
    const res = await fetch(`${gw.url}/__scheduled?cron=${encodeURIComponent("*/15 * * * *")}`);
    assert.ok(res.status < 500, `scheduled: ${res.status}`);
    await res.arrayBuffer();
    const line = await gw.waitForLog((l) => l.includes("portcullis.prune audit_log=") && ++runs > before, 20_000);
    assert.match(line, /audit_log=([2-9]|\d\d+)/);
    assert.deepEqual((await adminAudit(`user_id=${old.user.id}`)).body.entries, []);
    assert.deepEqual(await d1(gw, `SELECT id FROM audit_log WHERE user_id = ${sqlText(old.user.id)}`), []);
    assert.equal((await adminAudit(`user_id=${fresh.user.id}`)).body.entries.length, 2, "younger entries stay");
  });
});
