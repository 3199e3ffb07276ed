// E2E event delivery in the real runtime: the Worker's queue consumer POSTs
// every event to the WEBHOOK_URLS, signed per Standard Webhooks — a local
// receiver verifies each delivery with the `standardwebhooks` npm library —
// retries failed targets with a growing delay (only the targets that failed),
// and dead-letters what still fails after max_retries (wrangler.toml), where
// the dead-letter consumer logs and records it in D1. Also the sign-in hook
// (HOOK_URL): deny, extra claims, and timeouts in both failure modes.
import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { Webhook } from "standardwebhooks";
import { startGateway, post, json, randomEmail, sleep, ROOT } from "./harness.mjs";
import { d1, d1Script, sqlText } from "./lib/d1.mjs";

const PASSWORD = "correct horse battery";
const CLIENT = { "cf-connecting-ip": "198.51.100.42", "user-agent": "portcullis-e2e-delivery/1.0" };
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** max_retries of the portcullis-events consumer in wrangler.toml. */
const MAX_RETRIES = Number(fs.readFileSync(path.join(ROOT, "wrangler.toml"), "utf8").match(/^max_retries = (\d+)$/m)[1]);

function devVar(name) {
  const m = fs.readFileSync(path.join(ROOT, ".dev.vars"), "utf8").match(new RegExp(`^${name}=(.*)$`, "m"));
  if (!m) throw new Error(`${name} not in .dev.vars`);
  return m[1].trim().replace(/^"|"$/g, "");
}
const SECRET = devVar("WEBHOOK_SECRET");
const verifier = new Webhook(SECRET);

// ---------------------------------------------------------------------------
// A local receiver: webhook endpoints and the sign-in hook, on one loopback port.
// ---------------------------------------------------------------------------

/**
 * Starts an HTTP server on a free loopback port. `routes[path](req, body)`
 * returns {status, body, delayMs}. Every request is recorded with the result
 * of verifying its Standard Webhooks signature.
 */
async function startReceiver(routes) {
  const requests = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", async () => {
      const body = Buffer.concat(chunks).toString("utf8");
      let verified = false;
      let verifyError = null;
      try {
        verifier.verify(body, req.headers);
        verified = true;
      } catch (e) {
        verifyError = e.message;
      }
      let parsed = null;
      try { parsed = JSON.parse(body); } catch {}
      const entry = { path: req.url, method: req.method, headers: req.headers, body, json: parsed, verified, verifyError, at: Date.now() };
      requests.push(entry);
      const route = routes[req.url];
      const answer = route ? route(entry, requests) : { status: 404 };
      entry.status = answer.status;
      if (answer.delayMs) await sleep(answer.delayMs);
      if (res.destroyed) return;
      res.writeHead(answer.status, { "content-type": "application/json" });
      res.end(answer.body === undefined ? "{}" : typeof answer.body === "string" ? answer.body : JSON.stringify(answer.body));
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${server.address().port}`;
  return {
    url,
    requests,
    /** Requests to `p` for event `id`. */
    for: (p, id) => requests.filter((r) => r.path === p && r.json?.id === id),
    close: () => new Promise((resolve) => { server.closeAllConnections?.(); server.close(resolve); }),
  };
}

async function until(what, fn, timeoutMs = 30_000, everyMs = 200) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

async function call(res, status, what) {
  const body = res.status === 204 ? null : await json(res);
  assert.equal(res.status, status, `${what}: ${res.status} ${JSON.stringify(body)}`);
  return body;
}

const claimsOf = (jwt) => JSON.parse(Buffer.from(jwt.split(".")[1], "base64url").toString("utf8"));

// ---------------------------------------------------------------------------
// Webhooks: /a and /b both subscribed to every event.
//   /a fails every attempt for events about "doomed-" addresses;
//   /b fails the first two attempts for events about "flaky-" addresses.
// ---------------------------------------------------------------------------

describe("webhook delivery", () => {
  let gw;
  let rx;
  const about = (entry, tag) => String(entry.json?.data?.email ?? "").startsWith(tag);

  before(async () => {
    rx = await startReceiver({
      "/a": (e) => (about(e, "doomed-") ? { status: 500, body: { error: "always down" } } : { status: 200 }),
      "/b": (e, all) => {
        if (!about(e, "flaky-")) return { status: 204 };
        const n = all.filter((r) => r.path === "/b" && r.json?.id === e.json?.id).length;
        return n <= 2 ? { status: 503 } : { status: 200 };
      },
    });
    gw = await startGateway({
      vars: { WEBHOOK_URLS: `${rx.url}/a,${rx.url}/b`, RETRY_BASE_DELAY_SECS: "1", WEBHOOK_TIMEOUT_MS: "5000" },
    });
  });

  after(async () => {
    await gw?.stop();
    await rx?.close();
  });

  const signup = (email, extra = {}) =>
    post(`${gw.url}/auth/signup`, { email, password: PASSWORD, ...extra }, CLIENT).then((r) => call(r, 201, "signup"));
  const login = (email, password = PASSWORD) => post(`${gw.url}/auth/login`, { email, password }, CLIENT);
  const authed = (method, p, token) => fetch(`${gw.url}${p}`, { method, headers: { authorization: `Bearer ${token}`, ...CLIENT } });

  /** The one successful, verified delivery to `p` of the event matching `type` and `match(data)`. */
  async function delivered(p, type, match, timeoutMs = 20_000) {
    const hit = await until(`${type} at ${p}`, () =>
      rx.requests.find((r) => r.path === p && r.json?.type === type && r.status < 300 && match(r.json.data)), timeoutMs);
    assert.ok(hit.verified, `signature did not verify: ${hit.verifyError}`);
    assert.equal(hit.method, "POST");
    assert.match(hit.headers["content-type"], /^application\/json/);
    assert.equal(hit.headers["webhook-id"], hit.json.id);
    assert.match(hit.json.id, UUID);
    const ts = Number(hit.headers["webhook-timestamp"]);
    assert.ok(Math.abs(ts * 1000 - Date.now()) < 120_000, `webhook-timestamp ${ts}`);
    assert.match(hit.headers["webhook-signature"], /^v1,[A-Za-z0-9+/]+=*$/);
    assert.equal(hit.json.type, type);
    assert.ok(!Number.isNaN(Date.parse(hit.json.timestamp)), `timestamp ${hit.json.timestamp}`);
    return hit;
  }

  test("every event of the password flows reaches each webhook once, verified by standardwebhooks, with exactly the documented fields", async () => {
    const email = randomEmail("hooked");
    const auth = await signup(email, { name: "Ada" });
    const uid = auth.user.id;
    const second = await call(await login(email), 200, "login");
    await call(await login(email, "wrong password"), 401, "wrong password");
    const refreshed = await call(await post(`${gw.url}/auth/refresh`, { refresh_token: auth.refresh_token }, CLIENT), 200, "refresh");
    await call(await authed("DELETE", `/auth/sessions/${second.user.session_id}`, refreshed.access_token), 204, "revoke one");
    await call(await login(email), 200, "a third session, for revoke-others to revoke");
    await call(await authed("POST", "/auth/sessions/revoke-others", refreshed.access_token), 200, "revoke others");
    await call(await authed("POST", "/auth/logout", refreshed.access_token), 204, "logout");

    const ip = CLIENT["cf-connecting-ip"];
    const ua = CLIENT["user-agent"];
    const expected = [
      ["user_created", (d) => d.user_id === uid, { user_id: uid, email, name: "Ada", provider: "email" }],
      ["login", (d) => d.user_id === uid, { user_id: uid, email, provider: "email", ip_address: ip, user_agent: ua }],
      ["login_failed", (d) => d.email === email, null],
      ["token_refreshed", (d) => d.user_id === uid, { user_id: uid, ip_address: ip, user_agent: ua }],
      ["session_revoked", (d) => d.user_id === uid && !d.revoke_all, { user_id: uid, session_id: second.user.session_id, revoke_all: false }],
      ["session_revoked", (d) => d.user_id === uid && d.revoke_all, { user_id: uid, session_id: null, revoke_all: true }],
      ["logout", (d) => d.user_id === uid, { user_id: uid }],
    ];
    for (const p of ["/a", "/b"]) {
      for (const [type, match, data] of expected) {
        const hit = await delivered(p, type, match);
        if (data) {
          assert.deepEqual(hit.json.data, data, `${type} at ${p}`);
        } else {
          assert.deepEqual(Object.keys(hit.json.data).sort(), ["email", "ip_address", "reason", "user_agent"]);
          assert.equal(hit.json.data.reason, "invalid_password");
        }
        assert.deepEqual(Object.keys(hit.json).sort(), ["data", "id", "timestamp", "type", "v"]);
        assert.equal(rx.for(p, hit.json.id).length, 1, `${type} sent to ${p} more than once`);
        // The body is exactly the envelope the queue carried.
        const logged = await gw.waitForEvent((e) => e.id === hit.json.id);
        assert.deepEqual(hit.json, logged);
      }
    }
  });

  test("a tampered delivery fails verification (the receiver's check is real)", async () => {
    const hit = rx.requests.find((r) => r.verified);
    assert.ok(hit, "no verified delivery yet");
    assert.throws(() => verifier.verify(hit.body.replace(/"v":1/, '"v":2'), hit.headers));
    assert.throws(() => new Webhook(Buffer.alloc(32, 1).toString("base64")).verify(hit.body, hit.headers));
  });

  test("a receiver that fails twice then succeeds gets the event exactly once; the healthy one is not sent it again", async () => {
    const email = randomEmail("flaky");
    const t0 = Date.now();
    await call(await login(email, "no such account"), 401, "login_failed");
    const ok = await delivered("/b", "login_failed", (d) => d.email === email, 30_000);
    const attempts = rx.for("/b", ok.json.id);
    assert.deepEqual(attempts.map((r) => r.status), [503, 503, 200]);
    assert.ok(attempts.every((r) => r.verified), "every attempt is signed");
    assert.ok(attempts.every((r) => r.body === attempts[0].body), "every attempt carries the same body");
    // Growing delay: base 1 s, then 2 s.
    const gap1 = attempts[1].at - attempts[0].at;
    const gap2 = attempts[2].at - attempts[1].at;
    assert.ok(gap1 >= 900, `first retry after ${gap1} ms`);
    assert.ok(gap2 >= 1_900, `second retry after ${gap2} ms`);
    assert.ok(Date.now() - t0 < 30_000);
    // /a had it at the first attempt and was never sent it again.
    await sleep(500);
    assert.equal(rx.for("/a", ok.json.id).length, 1);
    const rows = await d1(gw, `SELECT target, attempts, delivered_at FROM event_deliveries WHERE event_id = ${sqlText(ok.json.id)} ORDER BY target`);
    assert.deepEqual(rows.map((r) => [r.target.replace(rx.url, ""), r.attempts, r.delivered_at !== null]), [
      ["webhook:/a", 1, true],
      ["webhook:/b", 3, true],
    ]);
  });

  test("a receiver that always fails: after max_retries the event is dead-lettered, logged and recorded in D1", async () => {
    const email = randomEmail("doomed");
    await call(await login(email, "no such account"), 401, "login_failed");
    const first = await until("first attempt at /a", () =>
      rx.requests.find((r) => r.path === "/a" && r.json?.data?.email === email));
    const id = first.json.id;
    const line = await gw.waitForLog((l) => l.includes("portcullis.dead_letter") && l.includes(id), 60_000);
    const logged = JSON.parse(line.slice(line.indexOf("{")));
    assert.equal(logged.id, id);
    assert.equal(logged.type, "login_failed");
    assert.equal(logged.reason, "retries_exhausted");
    assert.equal(logged.event.data.email, email);
    assert.equal(logged.failed.length, 1);
    assert.equal(logged.failed[0].target, `webhook:${rx.url}/a`);
    assert.equal(logged.failed[0].attempts, MAX_RETRIES + 1);
    assert.match(logged.failed[0].last_error, /^HTTP 500/);
    assert.equal(rx.for("/a", id).length, MAX_RETRIES + 1, "one attempt plus max_retries retries");
    assert.equal(rx.for("/b", id).length, 1, "the healthy target got it once");
    const rows = await until("dead_letters row", () => d1(gw, `SELECT * FROM dead_letters WHERE id = ${sqlText(id)}`).then((r) => r.length && r));
    assert.equal(rows[0].event_type, "login_failed");
    assert.equal(rows[0].reason, "retries_exhausted");
    assert.equal(JSON.parse(rows[0].body).data.email, email);
    assert.equal(JSON.parse(rows[0].failed)[0].attempts, MAX_RETRIES + 1);
  });

  test("the dead-letter consumer writes the audit entry every earlier attempt failed to write", async () => {
    const email = randomEmail("doomed-audit");
    // Until the event is a dead letter, its audit entry cannot be written:
    // every attempt of the main consumer fails; the dead-letter consumer
    // records the letter first, then writes the entry.
    await d1Script(gw, `CREATE TRIGGER audit_until_dead BEFORE INSERT ON audit_log
      WHEN NEW.data LIKE ${sqlText(`%${email}%`)} AND NOT EXISTS (SELECT 1 FROM dead_letters WHERE id = NEW.id)
      BEGIN SELECT RAISE(ABORT, 'held until dead-lettered'); END`);
    try {
      await call(await login(email, "no such account"), 401, "login_failed");
      const first = await until("first attempt at /a", () => rx.requests.find((r) => r.path === "/a" && r.json?.data?.email === email));
      const id = first.json.id;
      await gw.waitForLog((l) => l.includes("portcullis.dead_letter") && l.includes(id), 60_000);
      const failures = gw.logs().filter((l) => l.includes("portcullis.audit_failed") && l.includes(`id=${id}`));
      assert.equal(failures.length, MAX_RETRIES + 1, "every attempt of the main consumer failed to write it");
      const rows = await until("the audit entry", () => d1(gw, `SELECT * FROM audit_log WHERE id = ${sqlText(id)}`).then((r) => r.length && r));
      assert.equal(rows[0].type, "login_failed");
      assert.equal(rows[0].outcome, "failure");
      assert.equal(rows[0].ip_address, CLIENT["cf-connecting-ip"]);
      assert.equal(rows[0].user_agent, CLIENT["user-agent"]);
      assert.equal(JSON.parse(rows[0].data).email, email);
    } finally {
      await d1Script(gw, "DROP TRIGGER IF EXISTS audit_until_dead");
    }
  });

  test("webhook bodies are the documented envelope: the queued context never reaches them", async () => {
    const email = randomEmail("ctx");
    await signup(email);
    const hit = await delivered("/b", "user_created", (d) => d.email === email);
    assert.deepEqual(Object.keys(hit.json).sort(), ["data", "id", "timestamp", "type", "v"]);
    assert.ok(!hit.body.includes(CLIENT["user-agent"]) && !hit.body.includes(CLIENT["cf-connecting-ip"]), hit.body);
    assert.ok(rx.requests.every((r) => r.json === undefined || !("ctx" in r.json)), "no delivery carries ctx");
  });

  test("the log transport prints each *_requested email with its link or code", async (t) => {
    const email = randomEmail("mail");
    const auth = await signup(email);
    const probe = await post(`${gw.url}/auth/magic-link`, { email }, CLIENT);
    if (probe.status === 404) {
      t.skip("POST /auth/magic-link is not served yet: the account flows emit these events");
      return;
    }
    await call(probe, 200, "magic-link");
    await call(await post(`${gw.url}/auth/otp`, { email }, CLIENT), 200, "otp");
    await call(await post(`${gw.url}/auth/password/forgot`, { email }, CLIENT), 200, "password/forgot");
    await call(await authed("POST", "/auth/email/verify/request", auth.access_token), 200, "email/verify/request");
    const printed = async (type) => {
      const line = await gw.waitForLog((l) => l.includes("portcullis.email ") && l.includes(`"${type}"`) && l.includes(email), 15_000);
      return JSON.parse(line.slice(line.indexOf("{")));
    };
    const toml = fs.readFileSync(path.join(ROOT, "wrangler.toml"), "utf8");
    const base = (name) => toml.match(new RegExp(`^${name} = "(.*)"$`, "m"))[1];
    for (const [type, setting] of [
      ["magic_link_requested", "MAGIC_LINK_URL"],
      ["password_reset_requested", "PASSWORD_RESET_URL"],
      ["email_verification_requested", "EMAIL_VERIFY_URL"],
    ]) {
      const m = await printed(type);
      const event = await gw.waitForEvent((e) => e.id === m.event_id);
      assert.equal(event.type, type);
      assert.equal(m.to, email);
      assert.ok(m.subject.length > 0);
      assert.ok(m.text.includes(`${base(setting)}?token=${event.data.token}`), `${type}: ${m.text}`);
    }
    const otp = await printed("email_otp_requested");
    const code = (await gw.waitForEvent((e) => e.id === otp.event_id)).data.code;
    assert.match(code, /^\d{6}$/);
    assert.ok(otp.subject.includes(code) && otp.text.includes(code));
  });

  test("nothing is lost or doubled: every emitted event was delivered to every target or dead-lettered", async () => {
    const marker = randomEmail("final");
    await call(await login(marker, "x-wrong-password"), 401, "marker");
    await delivered("/a", "login_failed", (d) => d.email === marker);
    await delivered("/b", "login_failed", (d) => d.email === marker);
    const emitted = gw.events().map((e) => e.id);
    assert.equal(new Set(emitted).size, emitted.length, "each event is announced once");
    const settled = async () => {
      const dead = new Set((await d1(gw, "SELECT id FROM dead_letters")).map((r) => r.id));
      const ok = (p, id) => rx.for(p, id).some((r) => r.status < 300);
      const delivered = emitted.filter((id) => ok("/a", id) && ok("/b", id));
      return { dead, delivered, done: delivered.length + emitted.filter((id) => dead.has(id)).length === emitted.length };
    };
    const { dead, delivered: deliveredIds } = await until("every event settled", async () => {
      const s = await settled();
      return s.done && s;
    }, 30_000, 1_000);
    assert.equal(deliveredIds.length + dead.size, emitted.length, `${emitted.length} emitted`);
    assert.ok(dead.size >= 1 && deliveredIds.length >= 8, `${deliveredIds.length} delivered, ${dead.size} dead`);
    for (const p of ["/a", "/b"]) {
      for (const id of emitted) {
        const successes = rx.for(p, id).filter((r) => r.status < 300).length;
        assert.ok(successes <= 1, `${id} delivered ${successes} times to ${p}`);
      }
    }
    assert.ok(rx.requests.every((r) => r.verified), "every request was signed with the secret");
    assert.deepEqual(gw.logs().filter((l) => l.includes("portcullis.malformed_event")), []);
  });
});

// ---------------------------------------------------------------------------
// The sign-in hook. Its answer depends on the address's prefix:
//   deny-  → {"allow": false, "reason": "waitlisted"}
//   claims-→ {"allow": true, "claims": {plan, org, and reserved sub/roles/exp}}
//   slow-  → answers after 1.5 s (past HOOK_TIMEOUT_MS = 500)
//   junk-  → 200 with a body that is not the protocol
//   huge-  → 200 with a 200 KB allow answer (read only up to the 16 KiB reply cap)
//   else   → {"allow": true}
// ---------------------------------------------------------------------------

function gateRoutes() {
  return {
    "/gate": (e) => {
      const email = String(e.json?.user?.email ?? "");
      if (email.startsWith("deny-")) return { status: 200, body: { allow: false, reason: "waitlisted" } };
      if (email.startsWith("claims-")) {
        return { status: 200, body: { allow: true, claims: { plan: "pro", org: { id: 7 }, sub: "evil", roles: ["admin"], exp: 1 } } };
      }
      if (email.startsWith("slow-")) return { status: 200, body: { allow: true, claims: { plan: "slow" } }, delayMs: 1_500 };
      if (email.startsWith("junk-")) return { status: 200, body: "<html>maintenance</html>" };
      if (email.startsWith("huge-")) return { status: 200, body: JSON.stringify({ allow: true, pad: "x".repeat(200_000) }) };
      return { status: 200, body: { allow: true } };
    },
    "/only-logins": () => ({ status: 200 }),
    // A Resend-like email API that is rate limited at the first try of each email.
    "/emails": (e, all) => {
      const tries = all.filter((r) => r.path === "/emails" && r.headers["idempotency-key"] === e.headers["idempotency-key"]).length;
      return tries === 1 ? { status: 429, body: { message: "slow down" } } : { status: 200, body: { id: `em_${tries}` } };
    },
  };
}

describe("sign-in hook, failing closed", () => {
  let gw;
  let rx;
  before(async () => {
    rx = await startReceiver(gateRoutes());
    gw = await startGateway({ vars: { HOOK_URL: `${rx.url}/gate`, HOOK_TIMEOUT_MS: "500", HOOK_FAILURE_MODE: "closed" }, origin: true });
  });
  after(async () => {
    await gw?.stop();
    await rx?.close();
  });

  const signup = (email) => post(`${gw.url}/auth/signup`, { email, password: PASSWORD }, CLIENT);
  const login = (email) => post(`${gw.url}/auth/login`, { email, password: PASSWORD }, CLIENT);

  test("the hook gets a signed allow_signin request with the user and provider", async () => {
    const email = randomEmail("plain");
    const auth = await call(await signup(email), 201, "signup");
    const req = rx.requests.find((r) => r.path === "/gate" && r.json?.user?.email === email);
    assert.ok(req.verified, `gate request signature: ${req.verifyError}`);
    assert.deepEqual(req.json, {
      type: "allow_signin",
      provider: "email",
      user: { id: auth.user.id, email, name: null, roles: [], email_verified: false },
    });
    assert.equal(claimsOf(auth.access_token).plan, undefined);
  });

  test("a denying hook: 403 signin_denied with its reason, at signup and at login, and a login_failed event", async () => {
    const email = randomEmail("deny");
    const res = await signup(email);
    const body = await call(res, 403, "denied signup");
    assert.equal(body.code, "signin_denied");
    assert.equal(body.detail, "waitlisted");
    assert.match(res.headers.get("content-type"), /application\/problem\+json/);
    // The account exists (a retry is a conflict), and signing in is refused too.
    assert.equal((await call(await signup(email), 409, "second signup")).code, "email_taken");
    assert.equal((await call(await login(email), 403, "denied login")).code, "signin_denied");
    const failed = await gw.waitForEvent((e) => e.type === "login_failed" && e.data.email === email, 15_000);
    assert.equal(failed.data.reason, "signin_denied");
    await gw.waitForEvent((e) => e.type === "user_created" && e.data.email === email, 15_000);
    const [{ n }] = await d1(gw, `SELECT count(*) AS n FROM sessions s JOIN users u ON u.id = s.user_id WHERE u.email = ${sqlText(email)}`);
    assert.equal(n, 0, "no session for a denied sign-in");
  });

  test("claims from the hook are in the access token, reserved ones untouched, kept across refresh, and the token works at the gateway", async () => {
    const email = randomEmail("claims");
    const auth = await call(await signup(email), 201, "signup");
    const c = claimsOf(auth.access_token);
    assert.equal(c.plan, "pro");
    assert.deepEqual(c.org, { id: 7 });
    assert.equal(c.sub, auth.user.id);
    assert.deepEqual(c.roles, []);
    assert.equal(c.exp - c.iat, 900);
    await gw.waitForLog((l) => l.includes("portcullis.hook") && l.includes("reserved claims"), 10_000);
    const refreshed = await call(await post(`${gw.url}/auth/refresh`, { refresh_token: auth.refresh_token }), 200, "refresh");
    assert.equal(claimsOf(refreshed.access_token).plan, "pro");
    await call(await fetch(`${gw.url}/auth/me`, { headers: { authorization: `Bearer ${refreshed.access_token}` } }), 200, "me");
    const res = await fetch(`${gw.url}/api/hello`, { headers: { authorization: `Bearer ${refreshed.access_token}` } });
    assert.equal(res.status, 200, await res.text());
  });

  test("magic-link sign-ins ask the hook too (provider magic_link): denied, or signed in with its claims", async () => {
    const signIn = async (email) => {
      await post(`${gw.url}/auth/magic-link`, { email }, CLIENT).then((r) => call(r, 200, "magic-link"));
      const ev = await gw.waitForEvent((e) => e.type === "magic_link_requested" && e.data.email === email, 15_000);
      return post(`${gw.url}/auth/magic-link/verify`, { token: ev.data.token }, CLIENT);
    };
    const denied = randomEmail("deny");
    await call(await signup(denied), 403, "denied signup");
    assert.equal((await call(await signIn(denied), 403, "denied magic link")).code, "signin_denied");
    const gateReq = rx.requests.filter((r) => r.path === "/gate" && r.json?.user?.email === denied).at(-1);
    assert.equal(gateReq.json.provider, "magic_link");
    assert.ok(gateReq.verified);

    const allowed = randomEmail("claims");
    await call(await signup(allowed), 201, "signup");
    const auth = await call(await signIn(allowed), 200, "magic link sign-in");
    assert.equal(claimsOf(auth.access_token).plan, "pro");
  });

  test("a hook that times out, answers garbage or answers too much: 503 hook_unavailable, no session", async () => {
    for (const prefix of ["slow", "junk", "huge"]) {
      const email = randomEmail(prefix);
      const t0 = Date.now();
      const res = await signup(email);
      const body = await call(res, 503, `${prefix} signup`);
      assert.equal(body.code, "hook_unavailable");
      assert.ok(res.headers.get("retry-after"), "Retry-After on 503");
      assert.ok(!JSON.stringify(body).includes("maintenance"), "the hook's answer is not leaked");
      if (prefix === "slow") assert.ok(Date.now() - t0 < 1_400, `answered after ${Date.now() - t0} ms: the timeout applies`);
      assert.equal((await call(await login(email), 503, `${prefix} login`)).code, "hook_unavailable");
    }
    await gw.waitForLog((l) => l.includes("portcullis.hook") && l.includes("failing closed"));
  });
});

describe("sign-in hook, failing open; webhooks filtered by WEBHOOK_EVENTS", () => {
  let gw;
  let rx;
  before(async () => {
    rx = await startReceiver(gateRoutes());
    gw = await startGateway({
      vars: {
        HOOK_URL: `${rx.url}/gate`,
        HOOK_TIMEOUT_MS: "500",
        HOOK_FAILURE_MODE: "open",
        WEBHOOK_URLS: `${rx.url}/only-logins`,
        WEBHOOK_EVENTS: "login",
        EMAIL_TRANSPORT: "resend",
        EMAIL_API_URL: `${rx.url}/emails`,
        EMAIL_API_KEY: "re_e2e_key",
        EMAIL_FROM: "Acme <auth@acme.example>",
        MAGIC_LINK_URL: "https://acme.example/magic?lang=en",
        PASSWORD_RESET_URL: "https://acme.example/reset",
        EMAIL_VERIFY_URL: "https://acme.example/verify",
        RETRY_BASE_DELAY_SECS: "1",
      },
    });
  });
  after(async () => {
    await gw?.stop();
    await rx?.close();
  });

  test("a hook that times out lets the sign-in through without extra claims; a denial still denies", async () => {
    const email = randomEmail("slow");
    const t0 = Date.now();
    const auth = await call(await post(`${gw.url}/auth/signup`, { email, password: PASSWORD }), 201, "slow signup");
    assert.ok(Date.now() - t0 < 1_400, `answered after ${Date.now() - t0} ms`);
    assert.equal(claimsOf(auth.access_token).plan, undefined);
    await call(await post(`${gw.url}/auth/login`, { email, password: PASSWORD }), 200, "slow login");
    const junk = randomEmail("junk");
    await call(await post(`${gw.url}/auth/signup`, { email: junk, password: PASSWORD }), 201, "junk signup");
    await gw.waitForLog((l) => l.includes("portcullis.hook") && l.includes("failing open"));
    const denied = randomEmail("deny");
    assert.equal((await call(await post(`${gw.url}/auth/signup`, { email: denied, password: PASSWORD }), 403, "deny")).code, "signin_denied");
  });

  test("WEBHOOK_EVENTS=login: only login events reach the webhook", async () => {
    const email = randomEmail("filter");
    await call(await post(`${gw.url}/auth/signup`, { email, password: PASSWORD }), 201, "signup");
    await call(await post(`${gw.url}/auth/login`, { email, password: PASSWORD }), 200, "login");
    const hit = await until("login webhook", () =>
      rx.requests.find((r) => r.path === "/only-logins" && r.json?.data?.email === email));
    assert.equal(hit.json.type, "login");
    assert.ok(hit.verified);
    await gw.waitForEvent((e) => e.type === "user_created" && e.data.email === email, 10_000);
    await sleep(1_500);
    const types = new Set(rx.requests.filter((r) => r.path === "/only-logins").map((r) => r.json.type));
    assert.deepEqual([...types], ["login"]);
  });

  test("the resend transport POSTs each email to the API, authorised, idempotent, retried after a failure", async (t) => {
    const email = randomEmail("resend");
    await call(await post(`${gw.url}/auth/signup`, { email, password: PASSWORD }), 201, "signup");
    const probe = await post(`${gw.url}/auth/magic-link`, { email });
    if (probe.status === 404) {
      t.skip("POST /auth/magic-link is not served yet: the account flows emit these events");
      return;
    }
    await call(probe, 200, "magic-link");
    const sent = await until("the email, accepted", () => {
      const calls = rx.requests.filter((r) => r.path === "/emails" && r.json?.to?.[0] === email);
      return calls.length >= 2 && calls;
    });
    assert.deepEqual(sent.map((r) => r.status), [429, 200]);
    for (const r of sent) {
      assert.equal(r.headers.authorization, "Bearer re_e2e_key");
      assert.equal(r.headers["idempotency-key"], sent[0].headers["idempotency-key"]);
    }
    const body = sent[1].json;
    assert.equal(body.from, "Acme <auth@acme.example>");
    assert.deepEqual(body.to, [email]);
    assert.equal(typeof body.subject, "string");
    assert.match(body.text, /https:\/\/acme\.example\/magic\?lang=en&token=[A-Za-z0-9_-]+/);
    // Production logs mask the one-time token.
    const token = body.text.match(/token=([A-Za-z0-9_-]+)/)[1];
    assert.ok(!gw.logs().some((l) => l.includes(token)), "the magic-link token is in the log");
  });
});
