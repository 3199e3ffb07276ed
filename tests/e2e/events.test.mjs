// E2E events: every auth action of the password slice puts an event on the
// EVENTS queue; the Worker's own queue consumer prints each one it receives as
// `portcullis.event {json}`, which the harness collects. Checks the envelope
// ({id, type, timestamp, data}) and that `data` carries exactly the documented
// fields with the right values.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import { startGateway, post, json, randomEmail } from "./harness.mjs";

const PASSWORD = "correct horse battery";
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;
const CLIENT = { "cf-connecting-ip": "198.51.100.23", "user-agent": "portcullis-e2e-events/1.0" };

let gw;

before(async () => {
  gw = await startGateway();
});

after(async () => {
  await gw?.stop();
});

// ---------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------

async function call(res, status, what) {
  const body = res.status === 204 ? null : await json(res);
  assert.equal(res.status, status, `${what}: ${res.status} ${JSON.stringify(body)}`);
  return body;
}

const signup = (email, headers = CLIENT, extra = {}) =>
  post(`${gw.url}/auth/signup`, { email, password: PASSWORD, ...extra }, headers).then((r) => call(r, 201, "signup"));
const login = (email, password = PASSWORD, headers = CLIENT) => post(`${gw.url}/auth/login`, { email, password }, headers);
const refresh = (token, headers = CLIENT) => post(`${gw.url}/auth/refresh`, { refresh_token: token }, headers);
const authed = (method, path, token) =>
  fetch(`${gw.url}${path}`, { method, headers: { authorization: `Bearer ${token}`, ...CLIENT } });

/** Waits for the event matching `type` and `match(data)`; checks the envelope; returns it. */
async function eventOf(type, match, sentAt = Date.now()) {
  const e = await gw.waitForEvent((ev) => ev?.type === type && ev.data && match(ev.data), 15_000);
  assert.match(e.id, UUID, `event id: ${JSON.stringify(e)}`);
  assert.equal(e.type, type);
  assert.match(e.timestamp, RFC3339, `timestamp: ${e.timestamp}`);
  const skew = Math.abs(Date.parse(e.timestamp) - sentAt);
  assert.ok(skew < 120_000, `timestamp ${e.timestamp} is ${skew} ms from the request`);
  assert.equal(typeof e.data, "object");
  assert.notEqual(e.data, null);
  return e;
}

function assertData(e, expected) {
  assert.deepEqual(Object.keys(e.data).sort(), Object.keys(expected).sort(), `${e.type} data keys: ${JSON.stringify(e.data)}`);
  assert.deepEqual(e.data, expected);
}

/** Emits a marker event (a failed login for a fresh address) and waits for it:
 *  every event caused before it has been published by then. */
async function barrier() {
  const marker = randomEmail("barrier");
  await call(await login(marker, "not the password"), 401, "barrier login");
  await eventOf("login_failed", (d) => d.email === marker);
}

// ---------------------------------------------------------------------------
// tests
// ---------------------------------------------------------------------------

test("signup emits user_created with exactly user_id, email (normalised), name and provider email", async () => {
  const email = randomEmail("created");
  const t = Date.now();
  const auth = await signup(`  ${email.toUpperCase()} `, CLIENT, { name: "Ada" });
  const e = await eventOf("user_created", (d) => d.user_id === auth.user.id, t);
  assertData(e, { user_id: auth.user.id, email, name: "Ada", provider: "email" });

  const anonymous = await signup(randomEmail("created"));
  const e2 = await eventOf("user_created", (d) => d.user_id === anonymous.user.id);
  assertData(e2, { user_id: anonymous.user.id, email: anonymous.user.email, name: null, provider: "email" });
});

test("login emits login with exactly user_id, email, provider, ip_address (CF-Connecting-IP) and user_agent", async () => {
  const email = randomEmail("login");
  const auth = await signup(email);
  const t = Date.now();
  const body = await call(await login(email.toUpperCase()), 200, "login");
  assert.equal(body.user.id, auth.user.id);
  const e = await eventOf("login", (d) => d.user_id === auth.user.id, t);
  assertData(e, {
    user_id: auth.user.id,
    email,
    provider: "email",
    ip_address: CLIENT["cf-connecting-ip"],
    user_agent: CLIENT["user-agent"],
  });
});

test("a wrong password emits login_failed with exactly email, reason, ip_address and user_agent, and no login", async () => {
  const email = randomEmail("wrongpw");
  const auth = await signup(email);
  const t = Date.now();
  await call(await login(email, "not the password"), 401, "wrong password");
  const e = await eventOf("login_failed", (d) => d.email === email, t);
  assert.deepEqual(Object.keys(e.data).sort(), ["email", "ip_address", "reason", "user_agent"]);
  assert.equal(e.data.email, email);
  assert.equal(typeof e.data.reason, "string");
  assert.ok(e.data.reason.length > 0, "reason is empty");
  assert.equal(e.data.ip_address, CLIENT["cf-connecting-ip"]);
  assert.equal(e.data.user_agent, CLIENT["user-agent"]);
  await barrier();
  assert.deepEqual(
    gw.events().filter((ev) => ev.type === "login" && ev.data?.user_id === auth.user.id),
    [],
    "a failed login must not emit login",
  );
});

test("an unknown email emits login_failed with the normalised email and the connection's IP", async () => {
  const email = randomEmail("unknown");
  const t = Date.now();
  // no CF-Connecting-IP sent: wrangler dev sets it from the connection
  await call(await login(` ${email.toUpperCase()}`, "not the password", { "user-agent": "portcullis-e2e-events/unknown" }), 401, "unknown email");
  const e = await eventOf("login_failed", (d) => d.email === email, t);
  assert.deepEqual(Object.keys(e.data).sort(), ["email", "ip_address", "reason", "user_agent"]);
  assert.equal(typeof e.data.reason, "string");
  assert.ok(e.data.reason.length > 0, "reason is empty");
  assert.equal(e.data.ip_address, "127.0.0.1");
  assert.equal(e.data.user_agent, "portcullis-e2e-events/unknown");
});

test("refresh emits token_refreshed with exactly user_id, ip_address and user_agent of the refreshing client", async () => {
  const auth = await signup(randomEmail("refresh"));
  const client = { "cf-connecting-ip": "192.0.2.77", "user-agent": "portcullis-e2e-events/refresher" };
  const t = Date.now();
  await call(await refresh(auth.refresh_token, client), 200, "refresh");
  const e = await eventOf("token_refreshed", (d) => d.user_id === auth.user.id, t);
  assertData(e, { user_id: auth.user.id, ip_address: client["cf-connecting-ip"], user_agent: client["user-agent"] });
});

test("logout emits logout with exactly user_id", async () => {
  const auth = await signup(randomEmail("logout"));
  const t = Date.now();
  await call(await authed("POST", "/auth/logout", auth.access_token), 204, "logout");
  const e = await eventOf("logout", (d) => d.user_id === auth.user.id, t);
  assertData(e, { user_id: auth.user.id });
});

test("reuse of a rotated refresh token emits one session_revoked with user_id, session_id and revoke_all false", async () => {
  const auth = await signup(randomEmail("reuse"));
  await call(await refresh(auth.refresh_token), 200, "refresh");
  const t = Date.now();
  await call(await refresh(auth.refresh_token), 401, "reuse");
  const e = await eventOf("session_revoked", (d) => d.user_id === auth.user.id, t);
  assertData(e, { user_id: auth.user.id, session_id: auth.user.session_id, revoke_all: false });
  // presenting it once more finds the session already revoked: no second event
  await call(await refresh(auth.refresh_token), 401, "second reuse");
  await barrier();
  const revoked = gw.events().filter((ev) => ev.type === "session_revoked" && ev.data?.user_id === auth.user.id);
  assert.equal(revoked.length, 1, JSON.stringify(revoked));
});

test("revoking one own session emits session_revoked for it; revoke-others emits one with revoke_all true and no session_id", async () => {
  const email = randomEmail("revoke");
  const auth = await signup(email);
  const second = await call(await login(email), 200, "second login");
  await call(await login(email), 200, "third login");
  let t = Date.now();
  await call(await authed("DELETE", `/auth/sessions/${second.user.session_id}`, auth.access_token), 204, "delete session");
  const one = await eventOf("session_revoked", (d) => d.user_id === auth.user.id, t);
  assertData(one, { user_id: auth.user.id, session_id: second.user.session_id, revoke_all: false });
  t = Date.now();
  const res = await call(await authed("POST", "/auth/sessions/revoke-others", auth.access_token), 200, "revoke-others");
  assert.deepEqual(res, { revoked: 1 });
  const all = await eventOf("session_revoked", (d) => d.user_id === auth.user.id && d.revoke_all === true, t);
  assertData(all, { user_id: auth.user.id, session_id: null, revoke_all: true });
});

test("ten racing revocations of one session: one 204 and one session_revoked, the rest 404; revoke-others with nothing to revoke emits nothing", async () => {
  const email = randomEmail("race-revoke");
  const auth = await signup(email);
  const victim = await call(await login(email), 200, "second login");
  const answers = await Promise.all(
    Array.from({ length: 10 }, () => authed("DELETE", `/auth/sessions/${victim.user.session_id}`, auth.access_token)),
  );
  const statuses = answers.map((r) => r.status).sort();
  assert.deepEqual(statuses, [204, ...Array(9).fill(404)], `statuses ${statuses}`);
  for (const r of answers) if (r.status === 404) assert.equal((await json(r)).code, "not_found");
  // Nothing is left to revoke: answered, but no phantom revocation.
  for (let i = 0; i < 2; i++) {
    const res = await call(await authed("POST", "/auth/sessions/revoke-others", auth.access_token), 200, "revoke-others");
    assert.deepEqual(res, { revoked: 0 });
  }
  await barrier();
  const revoked = gw.events().filter((ev) => ev.type === "session_revoked" && ev.data?.user_id === auth.user.id);
  assert.equal(revoked.length, 1, JSON.stringify(revoked));
  assertData(revoked[0], { user_id: auth.user.id, session_id: victim.user.session_id, revoke_all: false });
});

test("rejected requests emit nothing: no user_created for an invalid or duplicate signup", async () => {
  const invalid = randomEmail("invalid");
  const taken = randomEmail("taken");
  const auth = await signup(taken);
  await call(await post(`${gw.url}/auth/signup`, { email: invalid, password: "short" }), 422, "short password");
  await call(await post(`${gw.url}/auth/signup`, { email: invalid, password: PASSWORD, admin: true }), 422, "unknown field");
  await call(await post(`${gw.url}/auth/signup`, { email: taken, password: PASSWORD }), 409, "duplicate");
  await barrier();
  const created = gw.events().filter((ev) => ev.type === "user_created");
  assert.deepEqual(created.filter((ev) => ev.data?.email === invalid), [], "user_created for a rejected signup");
  assert.deepEqual(
    created.filter((ev) => ev.data?.email === taken).map((ev) => ev.data.user_id),
    [auth.user.id],
    "exactly one user_created for the taken address",
  );
});

test("every event carries its own id", async () => {
  await barrier();
  const all = gw.events();
  assert.ok(all.length >= 15, `only ${all.length} events seen`);
  const ids = all.map((e) => e.id);
  for (const id of ids) assert.match(id, UUID);
  assert.equal(new Set(ids).size, ids.length, "duplicate event ids");
  // nothing went to the dead-letter queue or was found malformed on the way
  const trouble = gw.logs().filter((l) => /portcullis\.(dead_letter|malformed_event)/.test(l));
  assert.deepEqual(trouble, []);
});

test("the event stream carries nothing secret: no passwords or tokens in any event", async () => {
  const secret = `pw-${crypto.randomBytes(6).toString("hex")}`;
  const email = randomEmail("secret");
  const res = await post(`${gw.url}/auth/signup`, { email, password: secret }, CLIENT);
  const auth = await call(res, 201, "signup");
  await call(await login(email, `${secret}-wrong`), 401, "wrong password");
  const refreshed = await call(await refresh(auth.refresh_token), 200, "refresh");
  await barrier();
  const text = gw.logs().filter((l) => l.includes("portcullis.event ")).join("\n");
  for (const s of [secret, auth.access_token, auth.refresh_token, refreshed.refresh_token, refreshed.access_token]) {
    assert.ok(!text.includes(s), `event log contains a secret: ${s.slice(0, 12)}…`);
  }
});
