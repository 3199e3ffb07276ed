// The bad-input suite: every auth endpoint that takes a body, hit with
// invalid JSON, wrong content types, missing, extra and mistyped fields, huge
// strings and bodies, NUL bytes, non-UTF-8 bytes, and SQL / HTML
// metacharacters. Every answer is a 4xx application/problem+json with a
// stable `code`; none is a 5xx; and none of it writes anything (the users,
// sessions, roles and emailed-token tables are compared before and after).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import zlib from "node:zlib";
import { startGateway, post, json, randomEmail } from "./harness.mjs";
import { d1, grantRole } from "./lib/d1.mjs";

const PASSWORD = "correct horse battery staple";
const BODY_LIMIT = 16 * 1024;
let gw;
let user; // AuthResponse of a plain user
let admin; // AuthResponse of an administrator
let victimId; // a user the admin endpoints are pointed at

async function signup(email) {
  const res = await post(`${gw.url}/auth/signup`, { email, password: PASSWORD });
  const body = await json(res);
  assert.equal(res.status, 201, JSON.stringify(body));
  return body;
}

before(async () => {
  gw = await startGateway();
  user = await signup(randomEmail("bad-user"));
  const adminEmail = randomEmail("bad-admin");
  await signup(adminEmail);
  await grantRole(gw, adminEmail, "admin");
  const res = await post(`${gw.url}/auth/login`, { email: adminEmail, password: PASSWORD });
  admin = await json(res);
  victimId = (await signup(randomEmail("bad-victim"))).user.id;
});

after(async () => {
  await gw?.stop();
});

/** Every endpoint with a JSON body: a valid body, its string and required fields, and who calls it. */
const ENDPOINTS = [
  { path: "/auth/signup", body: () => ({ email: randomEmail("b"), password: PASSWORD, name: "Ada" }), strings: ["email", "password", "name"], required: ["email", "password"] },
  { path: "/auth/login", body: () => ({ email: randomEmail("b"), password: PASSWORD }), strings: ["email", "password"], required: ["email", "password"] },
  { path: "/auth/refresh", body: () => ({ refresh_token: "A".repeat(43) }), strings: ["refresh_token"], required: [] },
  { path: "/auth/logout", body: () => ({ refresh_token: "A".repeat(43) }), strings: ["refresh_token"], required: [], auth: "user" },
  { path: "/auth/magic-link", body: () => ({ email: randomEmail("b") }), strings: ["email"], required: ["email"] },
  { path: "/auth/magic-link/verify", body: () => ({ token: "A".repeat(43) }), strings: ["token"], required: ["token"] },
  { path: "/auth/otp", body: () => ({ email: randomEmail("b") }), strings: ["email"], required: ["email"] },
  { path: "/auth/otp/verify", body: () => ({ email: randomEmail("b"), code: "123456" }), strings: ["email", "code"], required: ["email", "code"] },
  { path: "/auth/password/forgot", body: () => ({ email: randomEmail("b") }), strings: ["email"], required: ["email"] },
  { path: "/auth/password/reset", body: () => ({ token: "A".repeat(43), new_password: "a new long passphrase" }), strings: ["token", "new_password"], required: ["token", "new_password"] },
  { path: "/auth/password/change", body: () => ({ old_password: "not the password!", new_password: "a new long passphrase" }), strings: ["old_password", "new_password"], required: ["old_password", "new_password"], auth: "user" },
  { path: "/auth/email/verify", body: () => ({ token: "A".repeat(43) }), strings: ["token"], required: ["token"] },
  { path: "/auth/email/verify/request", body: () => ({}), strings: [], required: [], auth: "user" },
  { path: "/auth/sessions/revoke-others", body: () => ({}), strings: [], required: [], auth: "user" },
  { path: () => `/auth/admin/users/${victimId}`, method: "PATCH", body: () => ({ name: "Renamed" }), strings: ["name", "email", "avatar_url", "phone"], required: [], auth: "admin", noop: true },
  { path: () => `/auth/admin/users/${victimId}/roles/editor`, body: () => ({}), strings: [], required: [], auth: "admin" },
];

function send(ep, body, { contentType = "application/json", raw = false, encoding } = {}) {
  const headers = {};
  if (contentType) headers["content-type"] = contentType;
  if (encoding) headers["content-encoding"] = encoding;
  if (ep.auth === "user") headers.authorization = `Bearer ${user.access_token}`;
  if (ep.auth === "admin") headers.authorization = `Bearer ${admin.access_token}`;
  const path = typeof ep.path === "function" ? ep.path() : ep.path;
  return fetch(gw.url + path, {
    method: ep.method ?? "POST",
    headers,
    body: raw ? body : typeof body === "string" ? body : JSON.stringify(body),
  });
}

async function assert4xx(res, what, status) {
  const text = await res.text();
  assert.ok(res.status >= 400 && res.status < 500, `${what}: ${res.status} ${text.slice(0, 300)}`);
  if (status) assert.equal(res.status, status, `${what}: ${text.slice(0, 300)}`);
  assert.match(res.headers.get("content-type") ?? "", /^application\/problem\+json/, what);
  const body = JSON.parse(text);
  assert.equal(typeof body.code, "string", what);
  assert.match(body.code, /^[a-z_]+$/, what);
  assert.equal(body.status, res.status, what);
  return body;
}

const TABLES = ["users", "sessions", "user_roles", "email_tokens"];
async function snapshot() {
  const rows = await d1(gw, TABLES.map((t) => `SELECT '${t}' AS t, count(*) AS n FROM ${t}`).join(" UNION ALL "));
  return Object.fromEntries(rows.map((r) => [r.t, r.n]));
}

const NON_UTF8 = Buffer.concat([Buffer.from('{"email": "'), Buffer.from([0xff, 0xfe, 0xc3, 0x28]), Buffer.from('@example.com"}')]);
const HOSTILE_STRINGS = [
  "x".repeat(15_000),
  "a\u0000b",
  "\u0000",
  "' OR '1'='1",
  "'); DROP TABLE users; --",
  "<script>alert(1)</script>",
  "\"><img src=x onerror=alert(1)>",
  "${7*7}{{7*7}}",
  "\ud83d\ude00".repeat(2000),
  "\u202e\u0301\ufeff",
  "",
];

for (const ep of ENDPOINTS) {
  const name = `${ep.method ?? "POST"} ${typeof ep.path === "function" ? ep.path.toString().match(/`(.*)`/)[1] : ep.path}`;

  test(`${name}: hostile input is a 4xx problem+json and writes nothing`, async () => {
    const before = await snapshot();

    for (const text of ['{"a": ', "not json", "{'a': 1}", '{"a": 1}}', "\u0000", "{\"a\": \"\\x41\"}"]) {
      await assert4xx(await send(ep, text), `invalid JSON ${JSON.stringify(text)}`, 400);
    }
    await assert4xx(await send(ep, NON_UTF8, { raw: true }), "non-UTF-8 body", 400);
    for (const ct of ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/jsonp"]) {
      await assert4xx(await send(ep, ep.body(), { contentType: ct }), `content type ${ct}`, 415);
    }
    const gzipped = zlib.gzipSync(JSON.stringify(ep.body()));
    const codedRes = await send(ep, gzipped, { raw: true, encoding: "gzip" });
    assert.equal(codedRes.headers.get("accept-encoding"), "identity", "a gzip body: the codings accepted");
    const coded = await assert4xx(codedRes, "a gzip body", 415);
    assert.equal(coded.code, "unsupported_content_encoding");
    await assert4xx(await send(ep, "x".repeat(BODY_LIMIT + 1)), "oversized body", 413);
    await assert4xx(await send(ep, { ...ep.body(), pad: "y".repeat(BODY_LIMIT) }), "oversized JSON body", 413);
    for (const scalar of ["42", '"text"', "true", "[]", '[{"email": "a@b.c"}]']) {
      await assert4xx(await send(ep, scalar), `JSON ${scalar} instead of an object`);
    }
    await assert4xx(await send(ep, { ...ep.body(), is_admin: true }), "unknown extra field", 422);
    for (const field of ep.required) {
      const body = ep.body();
      delete body[field];
      await assert4xx(await send(ep, body), `missing ${field}`, 422);
    }
    for (const field of ep.strings) {
      for (const wrong of [12345, true, null, ["a"], { a: 1 }]) {
        if (wrong === null && !ep.required.includes(field)) continue; // an optional field may be null
        await assert4xx(await send(ep, { ...ep.body(), [field]: wrong }), `${field}: ${JSON.stringify(wrong)}`);
      }
    }
    for (const field of ep.strings) {
      for (const hostile of ["x".repeat(15_000), "a\u0000b"]) {
        const res = await send(ep, { ...ep.body(), [field]: hostile });
        if (ep.noop && res.status === 200) continue;
        await assert4xx(res, `${field}: ${hostile.slice(0, 10)}...`);
      }
    }

    assert.deepEqual(await snapshot(), before, "nothing was written");
  });

  test(`${name}: SQL, HTML and Unicode metacharacters never cause a 5xx`, async () => {
    for (const field of ep.strings) {
      for (const hostile of HOSTILE_STRINGS) {
        const res = await send(ep, { ...ep.body(), [field]: hostile });
        const text = await res.text();
        assert.ok(res.status < 500, `${field}=${JSON.stringify(hostile.slice(0, 20))}: ${res.status} ${text.slice(0, 200)}`);
        if (res.status >= 400) assert.match(res.headers.get("content-type") ?? "", /^application\/problem\+json/);
      }
    }
    // The tables are all still there.
    const counts = await snapshot();
    for (const t of TABLES) assert.equal(typeof counts[t], "number", t);
  });
}

test("an endpoint for a signed-in caller refuses a missing or invalid token with 401 before it reads the body", async () => {
  const [header, claims, signature] = user.access_token.split(".");
  const tampered = `${header}.${claims}.${signature.slice(0, -4)}AAAA`;
  const endpoints = [
    ["POST", "/auth/password/change"],
    ["POST", "/auth/email/verify/request"],
    ["POST", "/auth/sessions/revoke-others"],
    ["PATCH", "/auth/me"],
    ["POST", "/auth/mfa/totp/enroll"],
    ["POST", "/auth/mfa/totp/confirm"],
    ["DELETE", "/auth/mfa/totp"],
    ["POST", "/auth/mfa/backup-codes"],
    ["POST", "/auth/passkeys/register/options"],
    ["POST", "/auth/passkeys/register/verify"],
    ["PATCH", "/auth/passkeys/some-id"],
    ["DELETE", "/auth/passkeys/some-id"],
    ["POST", "/auth/oauth/github/link"],
  ];
  const before = await snapshot();
  for (const [method, path] of endpoints) {
    for (const [token, code] of [[null, "missing_token"], ["not-a-jwt", "invalid_token"], [tampered, "invalid_token"]]) {
      for (const body of ['{"a": ', "not json", '{"unknown_field": 1}']) {
        const headers = { "content-type": "application/json" };
        if (token) headers.authorization = `Bearer ${token}`;
        const res = await fetch(gw.url + path, { method, headers, body });
        const problem = await assert4xx(res, `${method} ${path} token=${token?.slice(0, 10)} body=${body}`, 401);
        assert.equal(problem.code, code, `${method} ${path}`);
        const challenge = res.headers.get("www-authenticate") ?? "";
        assert.match(challenge, /^Bearer/, `${method} ${path}: a challenge`);
        if (token) assert.match(challenge, /error="invalid_token"/, `${method} ${path}: RFC 6750's error`);
        else assert.doesNotMatch(challenge, /error=/, `${method} ${path}: no error without a token (RFC 6750 3.1)`);
      }
    }
  }
  assert.deepEqual(await snapshot(), before, "nothing was written");
});

test("markup in a name is stored and returned exactly as text, never interpreted", async () => {
  const name = "<script>alert('x')</script> & \"Ada\" '; DROP TABLE users; --";
  const res = await post(`${gw.url}/auth/signup`, { email: randomEmail("markup"), password: PASSWORD, name });
  const body = await json(res);
  assert.equal(res.status, 201, JSON.stringify(body));
  assert.equal(body.user.name, name);
  assert.match(res.headers.get("content-type"), /^application\/json/);
  const me = await fetch(`${gw.url}/auth/me`, { headers: { authorization: `Bearer ${body.access_token}` } });
  assert.equal((await me.json()).name, name);
});

test("a password with spaces, emoji and combining characters round-trips exactly; common ones are refused", async () => {
  const email = randomEmail("unicode-pw");
  const password = "  пароль 🐎 ﬁx e\u0301té  tab-less  ";
  const res = await post(`${gw.url}/auth/signup`, { email, password });
  assert.equal(res.status, 201);
  await res.arrayBuffer();
  const ok = await post(`${gw.url}/auth/login`, { email, password });
  assert.equal(ok.status, 200);
  await ok.arrayBuffer();
  // The composed form is the same password (NFC); a trimmed one is not.
  const composed = await post(`${gw.url}/auth/login`, { email, password: password.normalize("NFC") });
  assert.equal(composed.status, 200);
  await composed.arrayBuffer();
  const trimmed = await post(`${gw.url}/auth/login`, { email, password: password.trim() });
  assert.equal(trimmed.status, 401);
  await trimmed.arrayBuffer();

  for (const common of ["password", "Password1", "iloveyou", "12345678", "qwertyuiop"]) {
    const r = await post(`${gw.url}/auth/signup`, { email: randomEmail("common"), password: common });
    const body = await assert4xx(r, common, 422);
    assert.equal(body.code, "password_too_common", common);
  }
  const change = await fetch(`${gw.url}/auth/password/change`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${user.access_token}` },
    body: JSON.stringify({ old_password: PASSWORD, new_password: "sunshine" }),
  });
  assert.equal((await assert4xx(change, "change to a common password", 422)).code, "password_too_common");
});

test("an empty chunked body is an empty body on endpoints whose body is optional, whatever its content type; a non-empty one is 415", async () => {
  const { default: http } = await import("node:http");
  const { port } = new URL(gw.url);
  const chunked = (path, token, body, contentType) =>
    new Promise((resolve, reject) => {
      const headers = { authorization: `Bearer ${token}`, "transfer-encoding": "chunked" };
      if (contentType) headers["content-type"] = contentType;
      const req = http.request({ host: "127.0.0.1", port, method: "POST", path, headers }, (res) => {
        let text = "";
        res.on("data", (c) => (text += c));
        res.on("end", () => resolve({ status: res.statusCode, text }));
      });
      req.on("error", reject);
      req.end(body);
    });
  const session = await json(await post(`${gw.url}/auth/login`, { email: user.user.email, password: PASSWORD }));
  const typed = await chunked("/auth/logout", session.access_token, "x", "text/plain");
  assert.equal(typed.status, 415, typed.text);
  const empty = await chunked("/auth/logout", session.access_token, "", "text/plain");
  assert.equal(empty.status, 204, empty.text);
  const bare = await chunked("/auth/sessions/revoke-others", user.access_token, "");
  assert.equal(bare.status, 200, bare.text);
});
