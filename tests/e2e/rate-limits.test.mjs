// Rate limits and the login back-off, in the real runtime: the built-in
// defaults (RATE_LIMITS unset), exact counts under 50 concurrent requests
// (one D1 upsert per key), 429 problem+json with Retry-After, one
// `rate_limit_exceeded` event per window, no exemption for requests without
// a usable client IP, the login back-off exact under concurrency (and concurrent
// right passwords all let in), IPv6 /64s counted together by their /48 (charged only
// for what each /64 admits), the daily
// cap on failed email codes per address, refresh per session and the audit
// listings per caller, and a RATE_LIMITS typo refusing to serve.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startGateway, post, json, randomEmail, sleep } from "./harness.mjs";
import { withEvent, eventFor, authed } from "./lib/accounts.mjs";

let gw; // built-in defaults
let tight; // small limits, no back-off, 3 failed codes a day
let patient; // default limits, a back-off whose first wait (30 s) outlasts any burst

before(async () => {
  [gw, tight, patient] = await Promise.all([
    startGateway({ vars: { RATE_LIMITS: null } }),
    startGateway({
      vars: {
        RATE_LIMITS: {
          signup: { ip: "3/2s", email: "off" },
          login: { ip: "30/1h", email: "10/1h" },
          "password/forgot": { ip: "100/1h", ipv6_48: "5/1h", email: "off" },
          "magic-link": { ip: "3/1h", ipv6_48: "6/1h", email: "off" },
        },
        LOGIN_BACKOFF: "off",
        OTP_MAX_FAILURES_PER_DAY: "3",
      },
    }),
    startGateway({ vars: { RATE_LIMITS: null, LOGIN_BACKOFF: "5/30/900" } }),
  ]);
});

after(async () => {
  await Promise.all([gw?.stop(), tight?.stop(), patient?.stop()]);
});

let ipSeq = 0;
/** A client IP no other test uses. */
const freshIp = () => `198.51.100.${++ipSeq}`;
const from = (ip) => ({ "cf-connecting-ip": ip });
const PASSWORD = "correct horse battery staple";

async function signup(g, email, ip = freshIp()) {
  const res = await post(`${g.url}/auth/signup`, { email, password: PASSWORD }, from(ip));
  assert.equal(res.status, 201, JSON.stringify(await json(res)));
}

/** Fires all requests at once; returns [status, body, retry-after] per request. */
async function burst(requests) {
  return Promise.all(
    requests.map(async (r) => {
      const res = await r();
      return { status: res.status, body: await json(res), retryAfter: res.headers.get("retry-after"), type: res.headers.get("content-type") };
    }),
  );
}

function tally(results) {
  const out = {};
  for (const r of results) out[r.status] = (out[r.status] ?? 0) + 1;
  return out;
}

function assertRateLimited(r, maxWindow) {
  assert.equal(r.status, 429);
  assert.match(r.type, /^application\/problem\+json/);
  assert.equal(r.body.code, "rate_limited");
  assert.equal(r.body.status, 429);
  const secs = Number(r.retryAfter);
  assert.ok(Number.isInteger(secs) && secs >= 1 && secs <= maxWindow, `Retry-After ${r.retryAfter}`);
}

const exceeded = (g, pred) => g.events().filter((e) => e.type === "rate_limit_exceeded" && pred(e.data));

/** Waits until an event caused now (a sign-up's `user_created`) is logged: everything sent before it is, too. */
async function settle(g) {
  const email = randomEmail("marker");
  await withEvent(g, eventFor("user_created", email), () => signup(g, email));
}

test("defaults: 50 concurrent magic-link requests for one email -> exactly 5 accepted, one event", async () => {
  const email = randomEmail("burst");
  const ip = freshIp();
  const results = await burst(Array.from({ length: 50 }, () => () => post(`${gw.url}/auth/magic-link`, { email }, from(ip))));
  assert.deepEqual(tally(results), { 200: 5, 429: 45 });
  for (const r of results.filter((r) => r.status === 429)) assertRateLimited(r, 3600);
  const ev = await gw.waitForEvent((e) => e.type === "rate_limit_exceeded" && e.data.email === email);
  assert.deepEqual(ev.data, { endpoint: "magic-link", ip_address: ip, email, limit: 5, key_type: "email" });
  await sleep(500);
  assert.equal(exceeded(gw, (d) => d.email === email && d.key_type === "email").length, 1, "one event per window, not one per refusal");
  // The same 50 requests also passed the per-IP limit (20): that key reports once too.
  assert.equal(exceeded(gw, (d) => d.ip_address === ip && d.key_type === "ip").length, 1);
});

test("defaults: verification links for one address -> 5 an hour, even 12 at once; then 429 with Retry-After and one event", async () => {
  // Sign-up does not prove the address: whoever signs up under it must not mail it at will.
  const email = randomEmail("verify-flood");
  const ip = freshIp();
  const res = await post(`${gw.url}/auth/signup`, { email, password: PASSWORD }, from(ip));
  assert.equal(res.status, 201);
  const { access_token } = await json(res);
  const ask = () => authed(`${gw.url}/auth/email/verify/request`, access_token, { method: "POST", headers: from(ip) });
  assert.deepEqual(tally(await burst(Array.from({ length: 12 }, () => ask))), { 200: 5, 429: 7 });
  const last = await burst([ask]);
  assertRateLimited(last[0], 3600);
  const ev = await gw.waitForEvent((e) => e.type === "rate_limit_exceeded" && e.data.email === email);
  assert.deepEqual(ev.data, { endpoint: "email/verify/request", ip_address: ip, email, limit: 5, key_type: "email" });
  // An event that carries a link is seen once its email is printed too, which
  // may come after a later event: wait for the five, then see no sixth.
  const requested = (e) => e.type === "email_verification_requested" && e.data.email === email;
  const seen = new Set();
  while (seen.size < 5) seen.add((await gw.waitForEvent((e) => requested(e) && !seen.has(e.id))).id);
  await settle(gw);
  await sleep(500);
  assert.equal(gw.events().filter(requested).length, 5);
  assert.equal(exceeded(gw, (d) => d.email === email).length, 1, "one event per window");
});

test("defaults: 50 concurrent OTP requests from one IP for different emails -> exactly 20 accepted", async () => {
  const ip = freshIp();
  const results = await burst(
    Array.from({ length: 50 }, (_, i) => () => post(`${gw.url}/auth/otp`, { email: randomEmail(`ip${i}`) }, from(ip))),
  );
  assert.deepEqual(tally(results), { 200: 20, 429: 30 });
  const ev = await gw.waitForEvent((e) => e.type === "rate_limit_exceeded" && e.data.ip_address === ip);
  assert.equal(ev.data.endpoint, "otp");
  assert.equal(ev.data.key_type, "ip");
  assert.equal(ev.data.limit, 20);
});

test("a missing or unusable client IP is not exempt: such requests share one bucket", async () => {
  const results = [];
  for (let i = 0; i < 22; i++) {
    const res = await post(`${gw.url}/auth/password/forgot`, { email: randomEmail(`noip${i}`) }, from(`not-an-ip-${i}`));
    results.push({ status: res.status, body: await json(res), retryAfter: res.headers.get("retry-after"), type: res.headers.get("content-type") });
  }
  assert.deepEqual(tally(results), { 200: 20, 429: 2 });
  assertRateLimited(results[21], 3600);
});

test("defaults: /auth/oauth/* is limited per IP (60 per 10 minutes), with an event that has no email", async () => {
  const ip = freshIp();
  const results = await burst(
    Array.from({ length: 62 }, () => () => fetch(`${gw.url}/auth/oauth/nosuch/authorize?redirect_to=x`, { headers: from(ip), redirect: "manual" })),
  );
  const t = tally(results);
  assert.equal(t[429], 2, JSON.stringify(t));
  for (const r of results.filter((r) => r.status === 429)) assertRateLimited(r, 600);
  const ev = await gw.waitForEvent((e) => e.type === "rate_limit_exceeded" && e.data.ip_address === ip);
  assert.deepEqual(ev.data, { endpoint: "oauth", ip_address: ip, email: null, limit: 60, key_type: "ip" });
});

test("known and unknown emails are limited alike (no enumeration through the limiter)", async () => {
  const known = randomEmail("known");
  await signup(gw, known);
  for (const email of [known, randomEmail("unknown")]) {
    const ip = freshIp();
    const statuses = [];
    for (let i = 0; i < 6; i++) {
      const res = await post(`${gw.url}/auth/password/forgot`, { email }, from(ip));
      statuses.push(res.status);
      await res.arrayBuffer();
    }
    assert.deepEqual(statuses, [200, 200, 200, 200, 200, 429], email);
  }
});

test("login back-off: after 5 failures the account must wait, even with the right password; success clears it", async () => {
  for (const known of [true, false]) {
    const email = randomEmail(known ? "backoff" : "ghost");
    if (known) await signup(gw, email);
    const ip = freshIp();
    for (let i = 0; i < 5; i++) {
      const res = await post(`${gw.url}/auth/login`, { email, password: "wrong password " + i }, from(ip));
      assert.equal(res.status, 401);
      assert.equal((await json(res)).code, "invalid_credentials");
    }
    const blocked = await post(`${gw.url}/auth/login`, { email, password: PASSWORD }, from(freshIp()));
    const r = { status: blocked.status, body: await json(blocked), retryAfter: blocked.headers.get("retry-after"), type: blocked.headers.get("content-type") };
    assertRateLimited(r, 900);
    // The first refusal of the back-off is reported once, like a counter's.
    const ev = await gw.waitForEvent((e) => e.type === "rate_limit_exceeded" && e.data.email === email);
    assert.deepEqual([ev.data.endpoint, ev.data.key_type, ev.data.limit], ["login", "email", 5]);
    const again = await post(`${gw.url}/auth/login`, { email, password: PASSWORD }, from(freshIp()));
    assert.equal(again.status, 429);
    await again.arrayBuffer();
    await sleep(300);
    assert.equal(gw.events().filter((e) => e.type === "rate_limit_exceeded" && e.data.email === email).length, 1);
    if (!known) continue;
    await sleep(Number(r.retryAfter) * 1000 + 1100);
    const ok = await post(`${gw.url}/auth/login`, { email, password: PASSWORD }, from(ip));
    assert.equal(ok.status, 200, JSON.stringify(await json(ok)));
    // The success cleared the record: five more failures are free again.
    for (let i = 0; i < 2; i++) {
      const res = await post(`${gw.url}/auth/login`, { email, password: "wrong again " + i }, from(ip));
      assert.equal(res.status, 401);
      await res.arrayBuffer();
    }
  }
});

test("login back-off under concurrency: 10 wrong passwords at once from 10 IPs -> exactly the 5 free checked (401), 5 wait (429)", async () => {
  // 10 logins a minute per email, so only the back-off refuses; its first
  // wait (30 s) is longer than the burst can take, however slow the machine.
  const email = randomEmail("racer");
  await signup(patient, email);
  const results = await burst(
    Array.from({ length: 10 }, (_, i) => () => post(`${patient.url}/auth/login`, { email, password: "wrong password " + i }, from(freshIp()))),
  );
  assert.deepEqual(tally(results), { 401: 5, 429: 5 });
  for (const r of results.filter((r) => r.status === 401)) assert.equal(r.body.code, "invalid_credentials");
  for (const r of results.filter((r) => r.status === 429)) assertRateLimited(r, 30);
});

test("8 concurrent logins with the right password for one account -> all 200: the refused ones wait for the checks in flight", async () => {
  // Several tabs or devices signing in at once. The back-off counts the first
  // five as failures until their checks end; the last three, refused meanwhile
  // (a 30 s first wait here, so nothing else lets them in), wait for the first
  // success to clear the record. 8 is under the per-email 10 a minute.
  const email = randomEmail("tabs");
  await signup(patient, email);
  const results = await burst(
    Array.from({ length: 8 }, () => () => post(`${patient.url}/auth/login`, { email, password: PASSWORD }, from(freshIp()))),
  );
  assert.deepEqual(tally(results), { 200: 8 }, JSON.stringify(results.filter((r) => r.status !== 200)));
  await settle(patient);
  assert.equal(exceeded(patient, (d) => d.email === email).length, 0);
});

test("guesses at the current password count towards the login back-off: then even the right one, and a login, wait", async () => {
  const email = randomEmail("changer");
  const res = await post(`${patient.url}/auth/signup`, { email, password: PASSWORD }, from(freshIp()));
  const { access_token } = await json(res);
  assert.equal(res.status, 201);
  const change = (old_password) =>
    fetch(`${patient.url}/auth/password/change`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${access_token}`, ...from(freshIp()) },
      body: JSON.stringify({ old_password, new_password: "another long passphrase" }),
    });
  const guesses = await burst(Array.from({ length: 5 }, (_, i) => () => change("not it " + i)));
  assert.deepEqual(tally(guesses), { 403: 5 });
  await settle(patient);
  const failed = patient.events().filter((e) => e.type === "login_failed" && e.data.email === email);
  assert.deepEqual(failed.map((e) => e.data.reason), Array(5).fill("invalid_current_password"));
  const [right] = await burst([() => change(PASSWORD)]);
  assertRateLimited(right, 30);
  const login = await post(`${patient.url}/auth/login`, { email, password: PASSWORD }, from(freshIp()));
  assert.equal(login.status, 429);
});

test("50 concurrent logins for one account from 50 IPs -> exactly 10 checked (401), 40 refused (429)", async () => {
  const email = randomEmail("stuffed");
  await signup(tight, email);
  const results = await burst(
    Array.from({ length: 50 }, (_, i) => () => post(`${tight.url}/auth/login`, { email, password: "guess " + i }, from(`192.0.2.${i + 1}`))),
  );
  assert.deepEqual(tally(results), { 401: 10, 429: 40 });
  for (const r of results.filter((r) => r.status === 429)) assertRateLimited(r, 3600);
  const ev = await tight.waitForEvent((e) => e.type === "rate_limit_exceeded" && e.data.email === email);
  assert.equal(ev.data.endpoint, "login");
  assert.equal(ev.data.key_type, "email");
  assert.equal(ev.data.limit, 10);
});

test("50 concurrent logins from one IP for 50 emails -> exactly 30 checked", async () => {
  const ip = "192.0.2.200";
  const results = await burst(
    Array.from({ length: 50 }, (_, i) => () => post(`${tight.url}/auth/login`, { email: randomEmail(`spray${i}`), password: "Summer2026!" }, from(ip))),
  );
  assert.deepEqual(tally(results), { 401: 30, 429: 20 });
  const ev = await tight.waitForEvent((e) => e.type === "rate_limit_exceeded" && e.data.ip_address === ip);
  assert.equal(ev.data.key_type, "ip");
  assert.equal(ev.data.limit, 30);
});

test("a window ends Retry-After seconds later and the endpoint answers again", async () => {
  const ip = freshIp();
  const statuses = [];
  let retryAfter = null;
  for (let i = 0; i < 4; i++) {
    const res = await post(`${tight.url}/auth/signup`, { email: randomEmail("win"), password: PASSWORD }, from(ip));
    statuses.push(res.status);
    if (res.status === 429) retryAfter = Number(res.headers.get("retry-after"));
    await res.arrayBuffer();
  }
  assert.deepEqual(statuses, [201, 201, 201, 429]);
  assert.ok(retryAfter >= 1 && retryAfter <= 2, `Retry-After ${retryAfter}`);
  await sleep(retryAfter * 1000 + 1000);
  const again = await post(`${tight.url}/auth/signup`, { email: randomEmail("win"), password: PASSWORD }, from(ip));
  assert.equal(again.status, 201);
});

test("IPv6: eight /64s of one /48 share its limit (5 per hour here): exactly 5 through, one ipv6_48 event; another /48 is not affected", async () => {
  const inside = (i) => `2001:db8:48:${(i + 1).toString(16)}::${i + 7}`;
  const results = await burst(
    Array.from({ length: 8 }, (_, i) => () => post(`${tight.url}/auth/password/forgot`, { email: randomEmail(`v6-${i}`) }, from(inside(i)))),
  );
  assert.deepEqual(tally(results), { 200: 5, 429: 3 });
  for (const r of results.filter((r) => r.status === 429)) assertRateLimited(r, 3600);
  const ev = await tight.waitForEvent((e) => e.type === "rate_limit_exceeded" && e.data.key_type === "ipv6_48");
  assert.equal(ev.data.endpoint, "password/forgot");
  assert.equal(ev.data.limit, 5);
  assert.ok(Array.from({ length: 8 }, (_, i) => inside(i)).includes(ev.data.ip_address), ev.data.ip_address);
  // Each /64 sent one request: their own (per-IP) limit of 100 was never the reason.
  await settle(tight);
  assert.equal(exceeded(tight, (d) => d.key_type === "ipv6_48").length, 1, "one event per window");
  assert.equal(exceeded(tight, (d) => d.endpoint === "password/forgot" && d.key_type === "ip").length, 0);
  // A ninth /64 of the same /48 is refused too; a /64 of the neighbouring /48 is not.
  const ninth = await post(`${tight.url}/auth/password/forgot`, { email: randomEmail("v6-9") }, from("2001:db8:48:ffff::1"));
  assert.equal(ninth.status, 429);
  await ninth.arrayBuffer();
  const neighbour = await post(`${tight.url}/auth/password/forgot`, { email: randomEmail("v6-n") }, from("2001:db8:49:1::1"));
  assert.equal(neighbour.status, 200);
  await neighbour.arrayBuffer();
});

test("IPv6: one /64 adds at most its own budget to its /48 (3 of 6 here): what it sends beyond leaves its neighbours their share", async () => {
  const send = (ip, tag) => () => post(`${tight.url}/auth/magic-link`, { email: randomEmail(tag) }, from(ip));
  // One /64 sends twelve at once: its 3 through, the rest refused by its own limit.
  const flood = await burst(Array.from({ length: 12 }, (_, i) => send(`2001:db8:64:1::${i + 1}`, "v6-flood")));
  assert.deepEqual(tally(flood), { 200: 3, 429: 9 });
  // Only its 3 were charged to the /48: a neighbouring /64 still gets its own 3 ...
  const next = await burst(Array.from({ length: 3 }, (_, i) => send(`2001:db8:64:2::${i + 1}`, "v6-next")));
  assert.deepEqual(tally(next), { 200: 3 });
  // ... and then the /48 is full.
  const third = await send("2001:db8:64:3::1", "v6-third")();
  assert.equal(third.status, 429);
  await third.arrayBuffer();
  await settle(tight);
  const mine = exceeded(tight, (d) => d.endpoint === "magic-link" && d.ip_address?.startsWith("2001:db8:64:"));
  assert.deepEqual(mine.map((e) => e.data.key_type).sort(), ["ip", "ipv6_48"]);
  assert.equal(mine.find((e) => e.data.key_type === "ipv6_48").data.ip_address, "2001:db8:64:3::1");
});

/** Requests a code for `email` and returns it (from the logged event). */
async function codeFor(g, email, ip) {
  const { result, event } = await withEvent(g, eventFor("email_otp_requested", email), () => post(`${g.url}/auth/otp`, { email }, from(ip)));
  assert.equal(result.status, 200);
  return event.data.code;
}
const verifyCode = (g, email, code, ip) => post(`${g.url}/auth/otp/verify`, { email, code }, from(ip));
const otherThan = (code, k = 1) => String((Number(code) + k) % 1_000_000).padStart(6, "0");

test("OTP_MAX_FAILURES_PER_DAY=3: failed codes count across new codes, exactly under concurrency; then even the right code gets 429", async () => {
  const email = randomEmail("otp-cap");
  await signup(tight, email);
  const ip = freshIp();
  const first = await codeFor(tight, email, ip);
  for (let k = 1; k <= 2; k++) {
    const res = await verifyCode(tight, email, otherThan(first, k), ip);
    assert.equal(res.status, 401);
    assert.equal((await json(res)).code, "invalid_code");
  }
  // A new code has five attempts of its own, but the address has one failure left today.
  const second = await codeFor(tight, email, ip);
  const guesses = await burst(Array.from({ length: 6 }, (_, k) => () => verifyCode(tight, email, otherThan(second, k + 1), ip)));
  assert.deepEqual(tally(guesses), { 401: 1, 429: 5 });
  for (const r of guesses.filter((r) => r.status === 429)) assertRateLimited(r, 86_400);
  const right = await verifyCode(tight, email, second, ip);
  const r = { status: right.status, body: await json(right), retryAfter: right.headers.get("retry-after"), type: right.headers.get("content-type") };
  assertRateLimited(r, 86_400);
  assert.ok(Number(r.retryAfter) > 86_000, `Retry-After ${r.retryAfter}: until the day's window ends`);
  const ev = await tight.waitForEvent((e) => e.type === "rate_limit_exceeded" && e.data.email === email);
  assert.deepEqual(ev.data, { endpoint: "otp/verify", ip_address: ip, email, limit: 3, key_type: "account" });
  // Another new code changes nothing, and the cap reports once per window.
  const third = await codeFor(tight, email, ip);
  const again = await verifyCode(tight, email, third, ip);
  assert.equal(again.status, 429);
  await again.arrayBuffer();
  await settle(tight);
  assert.equal(exceeded(tight, (d) => d.email === email).length, 1);
  assert.equal(tight.events().filter((e) => e.type === "email_otp_login" && e.data.email === email).length, 0);
});

test("the daily cap on failed codes treats an unknown address exactly like an account", async () => {
  const known = randomEmail("otp-cap-known");
  await signup(tight, known);
  for (const email of [known, randomEmail("otp-cap-ghost")]) {
    const ip = freshIp();
    const statuses = [];
    for (let i = 0; i < 4; i++) {
      const res = await verifyCode(tight, email, "000000", ip);
      statuses.push(`${res.status} ${(await json(res)).code}`);
    }
    assert.deepEqual(statuses, ["401 invalid_code", "401 invalid_code", "401 invalid_code", "429 rate_limited"], email);
  }
});

/** Signs `email` up from a fresh IP; returns the AuthResponse. */
async function signedUp(g, email) {
  const res = await post(`${g.url}/auth/signup`, { email, password: PASSWORD }, from(freshIp()));
  const body = await json(res);
  assert.equal(res.status, 201, JSON.stringify(body));
  return body;
}

test("defaults: refresh is limited per session, ten a minute; a refused refresh spends nothing", async () => {
  const email = randomEmail("refresh-loop");
  const first = await signedUp(gw, email);
  const ip = freshIp();
  const refresh = (token) => post(`${gw.url}/auth/refresh`, { refresh_token: token }, from(ip));
  let auth = first;
  for (let i = 0; i < 10; i++) {
    const res = await refresh(auth.refresh_token);
    const body = await json(res);
    assert.equal(res.status, 200, `refresh ${i + 1}: ${JSON.stringify(body)}`);
    auth = body;
  }
  const [refused] = await burst([() => refresh(auth.refresh_token)]);
  assertRateLimited(refused, 60);
  // The token was not rotated away (that would be reuse, and end the
  // session): it is refused for the rate again, and the session lives on.
  const [again] = await burst([() => refresh(auth.refresh_token)]);
  assertRateLimited(again, 60);
  const me = await fetch(`${gw.url}/auth/me`, { headers: { authorization: `Bearer ${auth.access_token}` } });
  assert.equal(me.status, 200);
  // Another session of the same account has its own budget.
  const other = await json(await post(`${gw.url}/auth/login`, { email, password: PASSWORD }, from(freshIp())));
  assert.equal((await refresh(other.refresh_token)).status, 200);
  const ev = await gw.waitForEvent((e) => e.type === "rate_limit_exceeded" && e.data.endpoint === "refresh" && e.data.email === email);
  assert.deepEqual(ev.data, { endpoint: "refresh", ip_address: ip, email, limit: 10, key_type: "session" });
  await settle(gw);
  assert.equal(exceeded(gw, (d) => d.endpoint === "refresh" && d.email === email).length, 1, "one event per window");
  assert.equal(gw.events().filter((e) => e.type === "token_refreshed" && e.data.user_id === first.user.id).length, 11);
});

test("defaults: the audit listings are limited per caller, 60 a minute, counted before the query is read", async () => {
  const email = randomEmail("audit-loop");
  const auth = await signedUp(gw, email);
  const ip = freshIp();
  const list = (q = "") => () => fetch(`${gw.url}/auth/audit${q}`, { headers: { authorization: `Bearer ${auth.access_token}`, ...from(ip) } });
  const results = await burst(Array.from({ length: 61 }, () => list()));
  assert.deepEqual(tally(results), { 200: 60, 429: 1 });
  for (const r of results.filter((r) => r.status === 429)) assertRateLimited(r, 60);
  // Counted before the query is read: a bad one is refused by the limit.
  const [bad] = await burst([list("?limit=0")]);
  assertRateLimited(bad, 60);
  // Another user is not affected.
  const other = await signedUp(gw, randomEmail("audit-other"));
  const res = await fetch(`${gw.url}/auth/audit`, { headers: { authorization: `Bearer ${other.access_token}` } });
  assert.equal(res.status, 200);
  const ev = await gw.waitForEvent((e) => e.type === "rate_limit_exceeded" && e.data.endpoint === "audit" && e.data.email === email);
  assert.equal(ev.data.key_type, "user");
  assert.equal(ev.data.limit, 60);
});

test("a malformed RATE_LIMITS refuses every request with a 503 naming the setting", async () => {
  const bad = await startGateway({ vars: { RATE_LIMITS: '{"login": {"ip": "ten per minute"}}' } });
  try {
    for (const [method, path] of [["POST", "/auth/login"], ["GET", "/api/public/x"], ["GET", "/.well-known/jwks.json"]]) {
      const res = await fetch(bad.url + path, { method, headers: { "content-type": "application/json" }, body: method === "POST" ? "{}" : undefined });
      assert.equal(res.status, 503, path);
      const body = await json(res);
      assert.equal(body.code, "misconfigured");
      assert.match(body.detail, /RATE_LIMITS/);
    }
  } finally {
    await bad.stop();
  }
});
