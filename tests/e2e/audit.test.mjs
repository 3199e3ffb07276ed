// The audit log in the real runtime: every event the queue consumer handles
// lands in D1 `audit_log` with who, what, when, IP and user agent (stored
// once); admins read it at /auth/admin/audit (filters, cursor pages), users
// their own at /auth/audit (since the account's latest takeover, without an
// admin's client, nor, while the address is unverified, the client of
// requests anyone with the address can make); no one-time secret is ever stored, and no webhook gets the
// queued context; address-only events are attributed by the SQL at the
// write; the cron trigger purges entries past AUDIT_RETENTION_DAYS and beyond
// AUDIT_MAX_ENTRIES; and a failing audit write neither fails the action nor
// holds up its deliveries.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { startGateway, post, json, randomEmail, sleep } from "./harness.mjs";
import { signup, login, makeAdmin, authed, assertProblem, PASSWORD } from "./lib/accounts.mjs";
import { d1, d1Script, sqlText } from "./lib/d1.mjs";

const CLIENT = { "cf-connecting-ip": "198.51.100.77", "user-agent": "portcullis-e2e-audit/1.0 (+audit)" };
const ADMIN_CLIENT = { "cf-connecting-ip": "10.66.0.5", "user-agent": "AdminConsole/3.1 (corp-laptop-042)" };
const MAX_ENTRIES = 1000;
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
      vars: { AUDIT_RETENTION_DAYS: "1", AUDIT_MAX_ENTRIES: String(MAX_ENTRIES), RETRY_BASE_DELAY_SECS: "1", WEBHOOK_URLS: rx.url },
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
    // The client is the entry's own members, not copied into data again.
    for (const e of entries) assert.ok(!("ip_address" in e.data) && !("user_agent" in e.data), JSON.stringify(e));
    const raw = await d1(gw, `SELECT data FROM audit_log WHERE user_id = ${sqlText(id)}`);
    assert.ok(raw.every((r) => !r.data.includes(CLIENT["user-agent"])), JSON.stringify(raw));
    assert.equal(byType.login.outcome, "success");
    assert.equal(byType.login.data.email, email);
    assert.equal(byType.login_failed.outcome, "failure");
    assert.equal(byType.login_failed.data.reason, "invalid_password");
    // Newest first (entries of one second in the order of their ids).
    for (let i = 1; i < entries.length; i++) assert.ok(entries[i - 1].at >= entries[i].at);
  });

  test("an admin action names the admin who acted, and the user is shown neither them nor their client", async () => {
    const target = await signup(gw, randomEmail("audit-target"));
    const res = await authed(`${gw.url}/auth/admin/users/${target.user.id}/roles/editor`, admin.access_token, { method: "POST", headers: ADMIN_CLIENT });
    assert.equal(res.status, 200, await res.text());
    const [entry] = await entriesWhen(`user_id=${target.user.id}&type=role_added`, (e) => e.length === 1);
    assert.equal(entry.actor_id, admin.user.id);
    assert.equal(entry.data.role, "editor");
    assert.equal(entry.ip_address, ADMIN_CLIENT["cf-connecting-ip"]);
    assert.equal(entry.user_agent, ADMIN_CLIENT["user-agent"]);
    const own = await get("/auth/audit", target.access_token, "type=role_added");
    assert.equal(own.res.status, 200);
    assert.equal(own.body.entries.length, 1);
    const mine = own.body.entries[0];
    assert.equal(mine.actor_id, undefined, "users are not told which admin acted");
    assert.deepEqual([mine.ip_address, mine.user_agent], [null, null], "nor from where");
    assert.ok(!JSON.stringify(own.body).includes(ADMIN_CLIENT["cf-connecting-ip"]));
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
    for (const q of ["limit=0", "limit=%2B5", "limit=+5", "limit=-1", "since=yesterday", "until=2026-02-30T00:00:00Z", "cursor=%21%21", "type=nope", "user_id=a%2Fb", "offset=3", "since=20&until=10"]) {
      await assertProblem(await authed(`${gw.url}/auth/admin/audit?${q}`, admin.access_token), 422, "invalid_query");
    }
    await assertProblem(await authed(`${gw.url}/auth/audit?user_id=${admin.user.id}`, user.access_token), 422, "invalid_query");
    // Above the largest page, the largest page (as /auth/admin/users caps its own).
    const big = await adminAudit("limit=500");
    assert.equal(big.res.status, 200, JSON.stringify(big.body));
    assert.ok(big.body.entries.length <= 200);
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

  test("webhooks get the documented envelope: the queued context (client, acting admin) never", async () => {
    const email = randomEmail("audit-ctx");
    await userWithLogins(email, 1);
    const login = await until("the login at the webhook", () => rx.events.find((e) => e.type === "login" && e.data.email === email));
    const created = rx.events.find((e) => e.type === "user_created" && e.data.email === email);
    for (const e of [login, created]) assert.deepEqual(Object.keys(e).sort(), ["data", "id", "timestamp", "type", "v"], JSON.stringify(e));
    // user_created's data names no client: nothing of the request's reached the webhook.
    assert.ok(!JSON.stringify(created).includes(CLIENT["user-agent"]) && !JSON.stringify(created).includes(CLIENT["cf-connecting-ip"]));
    // An admin action's event does not name the admin either.
    const target = await signup(gw, randomEmail("audit-ctx-target"));
    const res = await authed(`${gw.url}/auth/admin/users/${target.user.id}/ban`, admin.access_token, { method: "POST", headers: ADMIN_CLIENT });
    assert.equal(res.status, 200, await res.text());
    const banned = await until("the ban at the webhook", () => rx.events.find((e) => e.type === "user_banned" && e.data.user_id === target.user.id));
    assert.ok(!JSON.stringify(banned).includes(admin.user.id) && !JSON.stringify(banned).includes(ADMIN_CLIENT["user-agent"]));
    assert.ok(rx.events.every((e) => !("ctx" in e)), "no webhook body has ctx");
  });

  test("attribution by address: the account that has it when the entry is written, if it existed at the event", async () => {
    const owned = randomEmail("audit-attr-owned");
    const later = randomEmail("audit-attr-later");
    const known = await signup(gw, owned);
    // The entry of `later`'s failed sign-in cannot be written before an account has the address.
    await d1Script(gw, `CREATE TRIGGER audit_hold_later BEFORE INSERT ON audit_log
      WHEN NEW.data LIKE ${sqlText(`%${later}%`)} AND NOT EXISTS (SELECT 1 FROM users WHERE email = ${sqlText(later)})
      BEGIN SELECT RAISE(ABORT, 'held by the test'); END`);
    let event;
    try {
      for (const email of [owned, later]) {
        await assertProblem(await post(`${gw.url}/auth/login`, { email, password: "not the password" }, CLIENT), 401, "invalid_credentials");
      }
      event = await until("the failure at the webhook", () => rx.events.find((e) => e.type === "login_failed" && e.data.email === later));
      await gw.waitForLog((l) => l.includes("portcullis.audit_failed") && l.includes(`id=${event.id}`), 20_000);
      // The account comes a second after the event at least, then the entry (at a retry).
      const at = Date.parse(event.timestamp) / 1000;
      await until("the next second", () => seconds() > at, 5_000, 50);
      await signup(gw, later);
    } finally {
      await d1Script(gw, "DROP TRIGGER IF EXISTS audit_hold_later");
    }
    const [entry] = await entriesWhen(`type=login_failed&since=${Date.parse(event.timestamp) / 1000}&limit=200`, (e) => e.some((x) => x.id === event.id), "the held failure")
      .then((e) => e.filter((x) => x.id === event.id));
    assert.equal(entry.user_id, null, "an account made after the event is not given it");
    const [mine] = (await adminAudit(`user_id=${known.user.id}&type=login_failed`)).body.entries;
    assert.equal(mine?.data.email, owned, "an account that had the address then is");
  });

  test("after a takeover the new holder's own view starts there; admins keep the earlier holder's history", async () => {
    const email = randomEmail("audit-takeover");
    const PLANTER = { "cf-connecting-ip": "192.0.2.44", "user-agent": "planter-device/1.0" };
    const planted = await post(`${gw.url}/auth/signup`, { email, password: PASSWORD }, PLANTER);
    const planter = await json(planted);
    assert.equal(planted.status, 201, JSON.stringify(planter));
    assert.equal((await post(`${gw.url}/auth/login`, { email, password: PASSWORD }, PLANTER)).status, 200);
    const id = planter.user.id;
    await entriesWhen(`user_id=${id}`, (e) => e.length >= 2, "the planter's entries");
    const t = seconds();
    await until("the next second", () => seconds() > t, 5_000, 50);
    const request = await post(`${gw.url}/auth/magic-link`, { email }, CLIENT);
    assert.equal(request.status, 200);
    const link = await gw.waitForEvent((e) => e.type === "magic_link_requested" && e.data.email === email, 20_000);
    const verified = await post(`${gw.url}/auth/magic-link/verify`, { token: link.data.token }, CLIENT);
    const owner = await json(verified);
    assert.equal(verified.status, 200, JSON.stringify(owner));
    assert.equal(owner.user.id, id, "the account is the owner's now");
    const own = await until("the takeover in the owner's view", async () => {
      const { res, body } = await get("/auth/audit", owner.access_token, "limit=200");
      assert.equal(res.status, 200, JSON.stringify(body));
      return body.entries.some((e) => e.type === "email_verified") && body.entries;
    });
    const takeover = own.find((e) => e.type === "email_verified").at;
    assert.ok(own.every((e) => e.at >= takeover), JSON.stringify(own.map((e) => [e.type, e.at])));
    assert.ok(!own.some((e) => e.type === "user_created"), "the planter's sign-up is not the owner's to read");
    const text = JSON.stringify(own);
    assert.ok(!text.includes(PLANTER["cf-connecting-ip"]) && !text.includes(PLANTER["user-agent"]), text);
    // Asking from earlier reads from the takeover; administrators see it all.
    const since = (await get("/auth/audit", owner.access_token, `since=${t - 3600}&type=user_created`)).body;
    assert.deepEqual(since, { entries: [], next_cursor: null });
    const all = (await adminAudit(`user_id=${id}&limit=200`)).body.entries;
    const created = all.find((e) => e.type === "user_created");
    assert.equal(created.ip_address, PLANTER["cf-connecting-ip"]);
  });

  test("an unverified account is not shown the client of others using its address; administrators are", async () => {
    const email = randomEmail("audit-unverified");
    const PLANTER = { "cf-connecting-ip": "192.0.2.45", "user-agent": "planter-device/2.0" };
    const OWNER = { "cf-connecting-ip": "203.0.113.77", "user-agent": "Mozilla/5.0 (owner's laptop) Firefox/133.0" };
    const planted = await post(`${gw.url}/auth/signup`, { email, password: PASSWORD }, PLANTER);
    const planter = await json(planted);
    assert.equal(planted.status, 201, JSON.stringify(planter));
    // The address's owner, from their own client, tries every way in.
    await assertProblem(await post(`${gw.url}/auth/signup`, { email, password: PASSWORD }, OWNER), 409, "email_taken");
    await assertProblem(await post(`${gw.url}/auth/login`, { email, password: "the owner's own guess" }, OWNER), 401, "invalid_credentials");
    for (const p of ["/auth/password/forgot", "/auth/magic-link", "/auth/otp"]) {
      const res = await post(`${gw.url}${p}`, { email }, OWNER);
      assert.equal(res.status, 200, p);
      await res.arrayBuffer();
    }
    const kinds = ["login_failed", "password_reset_requested", "magic_link_requested", "email_otp_requested"];
    const all = await entriesWhen(`user_id=${planter.user.id}&limit=200`, (e) => kinds.every((k) => e.some((x) => x.type === k)), "the owner's attempts");
    for (const k of kinds) {
      const e = all.find((x) => x.type === k);
      assert.deepEqual([e.ip_address, e.user_agent], [OWNER["cf-connecting-ip"], OWNER["user-agent"]], `admin view, ${k}`);
    }
    const { res, body } = await get("/auth/audit", planter.access_token, "limit=200");
    assert.equal(res.status, 200, JSON.stringify(body));
    for (const k of kinds) {
      const e = body.entries.find((x) => x.type === k);
      assert.ok(e, `${k} in ${JSON.stringify(body.entries.map((x) => x.type))}`);
      assert.deepEqual([e.ip_address, e.user_agent], [null, null], k);
    }
    const text = JSON.stringify(body);
    assert.ok(!text.includes(OWNER["cf-connecting-ip"]) && !text.includes("owner's laptop"), text);
    const created = body.entries.find((x) => x.type === "user_created");
    assert.equal(created.ip_address, PLANTER["cf-connecting-ip"], "the holder's own requests keep their client");
  });

  test("the own view's type filter reads its own index, newest first without a sort", async () => {
    const plan = await d1(gw, "EXPLAIN QUERY PLAN SELECT id, type, user_id, actor_id, outcome, ip_address, user_agent, at, data FROM audit_log WHERE 1 = 1 AND user_id = 'u' AND type = 'login' ORDER BY at DESC, id DESC LIMIT 51");
    const detail = plan.map((r) => r.detail).join(" | ");
    assert.match(detail, /audit_log_user_type_at/, detail);
    assert.doesNotMatch(detail, /TEMP B-TREE/, detail);
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
  // Last: the flood pushes every earlier entry out.
  test("the cron trigger deletes the oldest written entries beyond AUDIT_MAX_ENTRIES, whatever their age", async () => {
    const flood = MAX_ENTRIES + 200;
    const now = seconds();
    await d1(gw, `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ${flood})
      INSERT INTO audit_log (id, type, user_id, outcome, at, data)
      SELECT 'flood-' || printf('%05d', i), 'token_refreshed', 'flood-user', 'success', ${now} - i, '{}' FROM n`);
    const [{ n: before }] = await d1(gw, "SELECT COUNT(*) AS n FROM audit_log");
    assert.ok(before > flood, `${before} entries`);
    const seen = gw.logs().filter((l) => l.includes("portcullis.audit_cap_reached")).length;
    const res = await fetch(`${gw.url}/__scheduled?cron=${encodeURIComponent("* * * * *")}`);
    assert.ok(res.status < 500, `scheduled: ${res.status}`);
    await res.arrayBuffer();
    let n = 0;
    const line = await gw.waitForLog((l) => l.includes("portcullis.audit_cap_reached") && ++n > seen, 20_000);
    assert.match(line, new RegExp(`deleted=${before - MAX_ENTRIES} max_entries=${MAX_ENTRIES}`));
    // The newest written stay — the last 1,000 of the flood, though they are
    // older by `at` than what went; every entry written before them is gone.
    const rows = await d1(gw, "SELECT id FROM audit_log ORDER BY rowid");
    assert.equal(rows.length, MAX_ENTRIES);
    assert.equal(rows[0].id, `flood-${String(flood - MAX_ENTRIES + 1).padStart(5, "0")}`);
    assert.equal(rows.at(-1).id, `flood-${String(flood).padStart(5, "0")}`);
    // New entries still come, and the cap holds them too.
    const after = await userWithLogins(randomEmail("audit-after-cap"), 0);
    await entriesWhen(`user_id=${after.user.id}`, (e) => e.length === 1);
  });
});
