// Strong authentication end to end, in the real runtime: TOTP enrolled and
// answered by an authenticator library nobody on the project wrote
// (`otpauth`, reading our `otpauth://` URI), backup codes, the second step
// on every sign-in path (password, magic link, email code, OAuth exchange,
// and the cookie-mode OAuth callback), replay and race refusals in D1, the
// gateway's `mfa` policy and `max_age` with RFC 9470 challenges, `amr` and
// `auth_time` read by jose from the access token and the origin assertion,
// turning TOTP off and an administrator's reset.
//
// Two gateways, each with a private demo origin: `gw` (tokens in bodies,
// route rules for step-up) and `cookie` (COOKIE_MODE), both with a server
// speaking GitHub's OAuth API.
import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import * as OTPAuth from "otpauth";
import { createRemoteJWKSet, jwtVerify } from "jose";
import { startGateway, post, json, sleep } from "./harness.mjs";
import { signup, login, makeAdmin, assertProblem, authed, withEvent, PASSWORD } from "./lib/accounts.mjs";
import { startFakeGithub } from "./lib/oauth-servers.mjs";
import { d1, sqlText } from "./lib/d1.mjs";

const APP = "http://app.test/done";
const GH_ID = "gh-mfa";
const GH_SECRET = "gh-mfa-secret-0123456789";
const BINDING = "__Host-portcullis_oauth";
const ROUTES = [
  { path: "/api/public/*", policy: "public" },
  { path: "/api/vault/*", policy: "mfa" },
  { path: "/api/recent/*", policy: "authenticated", max_age: 2 },
  { path: "/api/hour/*", policy: "authenticated", max_age: 3600 },
];
// Generous limits: one account signs in and tries codes many times here.
const RELAXED = Object.fromEntries(
  ["login", "signup", "magic-link", "otp", "otp/verify", "password/forgot", "oauth", "mfa/verify", "email/verify/request"].map((e) => [
    e,
    { ip: "100000/1m", ipv6_48: "100000/1m", email: "100000/1m" },
  ]),
);
const MFA_CHALLENGE =
  'Bearer realm="portcullis", error="insufficient_user_authentication", error_description="this route needs a sign-in with a second factor"';
const AGE_CHALLENGE =
  'Bearer realm="portcullis", error="insufficient_user_authentication", error_description="this route needs a sign-in within the last 2 seconds", max_age="2"';

const mail = (p) => `${p}-${crypto.randomBytes(5).toString("hex")}@example.com`;
const claimsOf = (jwt) => JSON.parse(Buffer.from(jwt.split(".")[1], "base64url").toString());

let gw, cookie, gh, jwks;

before(async () => {
  gh = await startFakeGithub({ clientId: GH_ID, clientSecret: GH_SECRET });
  const oauth = {
    OAUTH_PROVIDERS: JSON.stringify([{ id: "github", preset: "github", client_id: GH_ID, base_url: gh.base, api_url: gh.base }]),
    OAUTH_GITHUB_CLIENT_SECRET: GH_SECRET,
    REDIRECT_ALLOWLIST: APP,
    RATE_LIMITS: RELAXED,
  };
  [gw, cookie] = await Promise.all([
    startGateway({ origin: true, vars: { ...oauth, ROUTES: JSON.stringify(ROUTES), UI_NAME: "Portcullis E2E" } }),
    startGateway({ origin: true, vars: { ...oauth, COOKIE_MODE: "true" } }),
  ]);
  jwks = createRemoteJWKSet(new URL(`${gw.url}/.well-known/jwks.json`));
});

after(async () => {
  await Promise.all([gw?.stop(), cookie?.stop()]);
  await gh?.close();
});

/**
 * An authenticator app for one enrolment: codes for the steps the server
 * has not seen yet (a code is accepted once, and never one older than the
 * last), at most one step ahead of now (the skew the server allows).
 */
function authenticator(otpauthUri) {
  const totp = OTPAuth.URI.parse(otpauthUri);
  let last = -1;
  return {
    totp,
    /** A fresh code; waits for the next step when the next one is taken. */
    async next() {
      let now = Math.floor(Date.now() / 1000 / 30);
      const step = Math.max(now, last + 1);
      while (step > now + 1) {
        await sleep((step - 1) * 30_000 - Date.now() + 5);
        now = Math.floor(Date.now() / 1000 / 30);
      }
      last = step;
      return totp.generate({ timestamp: step * 30_000 });
    },
    /** The code of step `step` (for replays and wrong codes). */
    at: (step) => totp.generate({ timestamp: step * 30_000 }),
    get last() {
      return last;
    },
  };
}

const enroll = (g, token) => authed(`${g.url}/auth/mfa/totp/enroll`, token, { method: "POST" });
const confirm = (g, token, code) => authed(`${g.url}/auth/mfa/totp/confirm`, token, { method: "POST", body: { code } });
const verify = (g, body) => post(`${g.url}/auth/mfa/verify`, body);

/** Signs `email` up, verifies the address (as its signed-in holder), turns TOTP on. */
async function accountWithTotp(g, email) {
  const session = await signup(g, email);
  const asked = await withEvent(
    g,
    (e) => e.type === "email_verification_requested" && e.data.email === email,
    () => authed(`${g.url}/auth/email/verify/request`, session.access_token, { method: "POST" }),
  );
  const verified = await authed(`${g.url}/auth/email/verify`, session.access_token, {
    method: "POST",
    body: { token: asked.event.data.token },
  });
  assert.equal(verified.status, 200, await verified.text());
  const e = await json(await enroll(g, session.access_token));
  const app = authenticator(e.otpauth_uri);
  const res = await confirm(g, session.access_token, await app.next());
  const body = await json(res);
  assert.equal(res.status, 200, JSON.stringify(body));
  return { session, app, backupCodes: body.backup_codes, enrolment: e };
}

/** Asserts a first step that asks for the second one and issues nothing; returns its body. */
async function assertSecondStep(res) {
  const body = await json(res);
  assert.equal(res.status, 200, JSON.stringify(body));
  assert.deepEqual(Object.keys(body).sort(), ["expires_in", "methods", "mfa_required", "mfa_token"]);
  assert.equal(body.mfa_required, true);
  assert.match(body.mfa_token, /^[A-Za-z0-9_-]{43}$/);
  assert.deepEqual(body.methods, ["totp", "backup_code"]);
  assert.equal(body.expires_in, 300);
  assert.deepEqual(res.headers.getSetCookie(), [], "no cookies");
  // The mfa_token is no credential.
  await assertProblem(await authed(`${gw.url}/auth/me`, body.mfa_token), 401, "invalid_token");
  return body;
}

/** The app's PKCE verifier for its OAuth sign-ins. */
const APP_VERIFIER = crypto.randomBytes(32).toString("base64url");

/** A GitHub sign-in as `email` on `g`; returns the callback's answer. */
async function githubSignIn(g, email, id) {
  // The app's challenge (token mode requires one); its second-step codes are bound to it too.
  const challenge = crypto.createHash("sha256").update(APP_VERIFIER).digest("base64url");
  const res = await fetch(`${g.url}/auth/oauth/github/authorize?redirect_to=${encodeURIComponent(APP)}&code_challenge=${challenge}`, { redirect: "manual" });
  assert.equal(res.status, 302);
  const binding = res.headers.getSetCookie().find((c) => c.startsWith(`${BINDING}=`)).split(";")[0];
  const { code, state } = gh.approve(res.headers.get("location"), {
    id,
    login: "ada",
    emails: [{ email, primary: true, verified: true }],
  });
  return fetch(`${g.url}/auth/oauth/github/callback?code=${code}&state=${state}`, { redirect: "manual", headers: { cookie: binding } });
}

describe("TOTP with an authenticator library", () => {
  test("the otpauth URI enrols in otpauth; only a right code turns TOTP on, with ten backup codes", async () => {
    const email = mail("enrol");
    const s = await signup(gw, email);
    const e = await json(await enroll(gw, s.access_token));
    const app = authenticator(e.otpauth_uri);
    assert.equal(app.totp.issuer, "Portcullis E2E");
    assert.equal(app.totp.label, email);
    assert.equal(app.totp.algorithm, "SHA1");
    assert.equal(app.totp.digits, 6);
    assert.equal(app.totp.period, 30);
    assert.equal(app.totp.secret.base32, e.secret);
    // Not on yet: a login signs in directly.
    const direct = await json(await login(gw, email));
    assert.ok(direct.access_token, "no second step before the confirmation");
    // A wrong code (one from a step long past) is refused and reported.
    const wrong = app.at(Math.floor(Date.now() / 30_000) - 10);
    const failed = await withEvent(
      gw,
      (ev) => ev.type === "mfa_failed" && ev.data.user_id === s.user.id,
      () => confirm(gw, s.access_token, wrong),
    );
    await assertProblem(failed.result, 401, "invalid_code");
    assert.deepEqual(Object.keys(failed.event.data).sort(), ["ip_address", "method", "user_id"]);
    assert.equal(failed.event.data.method, "totp");
    const on = await withEvent(
      gw,
      (ev) => ev.type === "mfa_enabled" && ev.data.user_id === s.user.id,
      async () => json(await confirm(gw, s.access_token, await app.next())),
    );
    assert.deepEqual(on.event.data, { user_id: s.user.id, method: "totp" });
    assert.equal(on.result.backup_codes.length, 10);
    assert.ok(on.result.backup_codes.every((c) => /^[0-9a-z]{5}-[0-9a-z]{5}$/.test(c)));
    const me = await json(await authed(`${gw.url}/auth/me`, s.access_token));
    assert.deepEqual(me.mfa, { totp: true, backup_codes_left: 10, passkeys: 0 });
    assert.deepEqual(me.amr, ["pwd"]);
    // The session that logged in with one factor meanwhile is over.
    await assertProblem(await authed(`${gw.url}/auth/me`, direct.access_token), 401, "session_revoked");
  });

  test("a session that signed in more than five minutes ago cannot turn TOTP on (a stolen one would lock the owner out)", async () => {
    const s = await signup(gw, mail("stale"));
    const fresh = await json(await login(gw, s.user.email));
    // The auth API takes the sign-in's time from the session in D1, not from the token:
    // move this session's sign-in six minutes back.
    await d1(gw, `UPDATE sessions SET created_at = created_at - 360 WHERE id = ${sqlText(s.user.session_id)}`);
    await assertProblem(await enroll(gw, s.access_token), 403, "reauthentication_required");
    const me = await json(await authed(`${gw.url}/auth/me`, s.access_token));
    assert.deepEqual(me.mfa, { totp: false, backup_codes_left: 0, passkeys: 0 }, "nothing enrolled");
    assert.equal((await enroll(gw, fresh.access_token)).status, 200, "the sign-in of a moment ago can");
  });
});

describe("the second step", () => {
  let ada;
  const email = mail("ada");
  const githubId = 300000 + Math.floor(Math.random() * 1e5);

  before(async () => {
    ada = await accountWithTotp(gw, email);
  });

  test("a password login answers the second step; a TOTP code finishes it, once; jose reads amr and auth_time", async () => {
    const step = await assertSecondStep(await login(gw, email));
    const code = await ada.app.next();
    const t0 = Math.floor(Date.now() / 1000);
    const signedIn = await withEvent(
      gw,
      (e) => e.type === "login" && e.data.email === email,
      () => verify(gw, { mfa_token: step.mfa_token, code }),
    );
    const body = await json(signedIn.result);
    assert.equal(signedIn.result.status, 200, JSON.stringify(body));
    assert.equal(signedIn.event.data.provider, "email");
    const { payload } = await jwtVerify(body.access_token, jwks, {
      issuer: gw.url,
      audience: "portcullis",
      typ: "at+jwt",
      algorithms: ["EdDSA"],
    });
    assert.deepEqual(payload.amr, ["pwd", "otp", "mfa"]);
    assert.ok(payload.auth_time >= t0 && payload.auth_time <= payload.iat, JSON.stringify(payload));
    // The token is single-use.
    await assertProblem(await verify(gw, { mfa_token: step.mfa_token, code }), 401, "invalid_mfa_token");
    // The same code again, on a new sign-in: a replay, refused and reported.
    const again = await assertSecondStep(await login(gw, email));
    const replay = await withEvent(
      gw,
      (e) => e.type === "mfa_failed" && e.data.user_id === ada.session.user.id,
      () => verify(gw, { mfa_token: again.mfa_token, code }),
    );
    await assertProblem(replay.result, 401, "invalid_code");
    // A refresh keeps how and when.
    const refreshed = await json(await post(`${gw.url}/auth/refresh`, { refresh_token: body.refresh_token }));
    const c = claimsOf(refreshed.access_token);
    assert.deepEqual([c.amr, c.auth_time], [payload.amr, payload.auth_time]);
    const me = await json(await authed(`${gw.url}/auth/me`, refreshed.access_token));
    assert.deepEqual([me.amr, me.auth_time], [payload.amr, payload.auth_time]);
    // The origin's assertion says the same, as jose reads it.
    const res = await authed(`${gw.url}/api/vault/k`, refreshed.access_token);
    const echo = await json(res);
    assert.equal(res.status, 200, JSON.stringify(echo));
    const asserted = await jwtVerify(echo.identity.assertion, jwks, {
      issuer: gw.url,
      audience: gw.origin.url,
      typ: "portcullis-assertion+jwt",
      algorithms: ["EdDSA"],
    });
    assert.deepEqual([asserted.payload.amr, asserted.payload.auth_time], [payload.amr, payload.auth_time]);
  });

  test("magic links, email codes and the OAuth exchange answer the second step too; backup codes finish them once", async () => {
    // Magic link.
    const link = await withEvent(
      gw,
      (e) => e.type === "magic_link_requested" && e.data.email === email,
      () => post(`${gw.url}/auth/magic-link`, { email }),
    );
    const viaLink = await assertSecondStep(await post(`${gw.url}/auth/magic-link/verify`, { token: link.event.data.token }));
    const finished = await withEvent(
      gw,
      (e) => e.type === "magic_link_login" && e.data.email === email,
      () => verify(gw, { mfa_token: viaLink.mfa_token, backup_code: ada.backupCodes[0] }),
    );
    const a = await json(finished.result);
    assert.equal(finished.result.status, 200, JSON.stringify(a));
    assert.deepEqual(claimsOf(a.access_token).amr, ["otp", "mfa"]);
    // Email code; a used backup code is refused.
    const sent = await withEvent(
      gw,
      (e) => e.type === "email_otp_requested" && e.data.email === email,
      () => post(`${gw.url}/auth/otp`, { email }),
    );
    const viaCode = await assertSecondStep(await post(`${gw.url}/auth/otp/verify`, { email, code: sent.event.data.code }));
    await assertProblem(await verify(gw, { mfa_token: viaCode.mfa_token, backup_code: ada.backupCodes[0] }), 401, "invalid_code");
    const b = await json(await verify(gw, { mfa_token: viaCode.mfa_token, code: ada.backupCodes[1] }));
    assert.deepEqual(claimsOf(b.access_token).amr, ["otp", "mfa"]);
    // OAuth: the first sign-in links the verified address, and answers the second step.
    const cb = await githubSignIn(gw, email, githubId);
    assert.equal(cb.status, 302);
    const location = new URL(cb.headers.get("location"));
    const exchanged = await assertSecondStep(await post(`${gw.url}/auth/oauth/exchange`, { code: location.searchParams.get("code"), code_verifier: APP_VERIFIER }));
    const viaGithub = await withEvent(
      gw,
      (e) => e.type === "login" && e.data.provider === "github" && e.data.email === email,
      () => verify(gw, { mfa_token: exchanged.mfa_token, backup_code: ada.backupCodes[2].toUpperCase() }),
    );
    const g = await json(viaGithub.result);
    assert.equal(viaGithub.result.status, 200, JSON.stringify(g));
    assert.deepEqual(claimsOf(g.access_token).amr, ["otp", "fed", "mfa"]);
    const me = await json(await authed(`${gw.url}/auth/me`, g.access_token));
    assert.deepEqual(me.mfa, { totp: true, backup_codes_left: 7, passkeys: 0 });
  });

  /** Five verifications at once, of these tokens: exactly one signs in. */
  async function race(tokens, proofs) {
    const answers = await Promise.all(tokens.map((t, i) => verify(gw, { mfa_token: t, ...proofs[i] })));
    const statuses = answers.map((r) => r.status).sort();
    assert.deepEqual(statuses, [200, 401, 401, 401, 401], statuses.join(","));
    const codes = [];
    for (const r of answers.filter((r) => r.status === 401)) codes.push((await json(r)).code);
    return codes.sort();
  }

  const fiveSteps = async (who) => Promise.all(Array.from({ length: 5 }, async () => (await assertSecondStep(await login(gw, who))).mfa_token));

  test("racing uses of one TOTP code, or one backup code, on five sign-ins: exactly one session", async () => {
    const racer = mail("racer");
    const { app } = await accountWithTotp(gw, racer);
    const code = await app.next();
    const same = (proof) => Array(5).fill(proof);
    assert.deepEqual(await race(await fiveSteps(racer), same({ code })), Array(4).fill("invalid_code"));
    const backup = { backup_code: ada.backupCodes[3] };
    assert.deepEqual(await race(await fiveSteps(email), same(backup)), Array(4).fill("invalid_code"));
  });

  test("racing verifications of one mfa_token with five right codes: exactly one session", async () => {
    const token = (await assertSecondStep(await login(gw, email))).mfa_token;
    const codes = await race(Array(5).fill(token), [5, 6, 7, 8, 9].map((i) => ({ backup_code: ada.backupCodes[i] })));
    assert.ok(codes.every((c) => c === "invalid_mfa_token"), codes.join(","));
  });

  test("bad input is a clear problem, and five wrong codes kill the mfa_token", async () => {
    const step = await assertSecondStep(await login(gw, email));
    await assertProblem(await verify(gw, { mfa_token: "not-a-token", code: "123456" }), 401, "invalid_mfa_token");
    await assertProblem(await verify(gw, { mfa_token: "A".repeat(43), code: "123456" }), 401, "invalid_mfa_token");
    await assertProblem(await verify(gw, { mfa_token: step.mfa_token, code: "12345" }), 401, "invalid_code");
    await assertProblem(await verify(gw, { mfa_token: step.mfa_token, code: "1234567" }), 401, "invalid_code");
    await assertProblem(await verify(gw, { mfa_token: step.mfa_token, code: "123456", backup_code: "abcde-fgh12" }), 422, "validation_failed");
    await assertProblem(await verify(gw, { mfa_token: step.mfa_token }), 422, "validation_failed");
    await assertProblem(await verify(gw, { mfa_token: step.mfa_token, code: "123456", extra: 1 }), 422, "validation_failed");
    const old = ada.app.at(Math.floor(Date.now() / 30_000) - 10);
    for (let i = 0; i < 5; i++) {
      await assertProblem(await verify(gw, { mfa_token: step.mfa_token, code: old }), 401, "invalid_code");
    }
    // Dead even for a right code.
    await assertProblem(await verify(gw, { mfa_token: step.mfa_token, backup_code: ada.backupCodes[4] }), 401, "invalid_mfa_token");
  });
});

describe("the gateway asks for a second factor and a recent sign-in", () => {
  test("a password-only token is refused on an mfa route with RFC 9470's challenge; max_age likewise", async () => {
    const plain = await signup(gw, mail("plain"));
    assert.deepEqual(claimsOf(plain.access_token).amr, ["pwd"]);
    const refused = await authed(`${gw.url}/api/vault/k`, plain.access_token);
    assert.equal(refused.headers.get("www-authenticate"), MFA_CHALLENGE);
    await assertProblem(refused, 401, "insufficient_user_authentication");
    const fresh = await authed(`${gw.url}/api/hour/x`, plain.access_token);
    assert.equal(fresh.status, 200, await fresh.text());
    // Wait until the sign-in is more than two seconds old, then ask again.
    const authTime = claimsOf(plain.access_token).auth_time;
    while (Math.floor(Date.now() / 1000) < authTime + 3) await sleep(200);
    const stale = await authed(`${gw.url}/api/recent/x`, plain.access_token);
    assert.equal(stale.headers.get("www-authenticate"), AGE_CHALLENGE);
    await assertProblem(stale, 401, "insufficient_user_authentication");
    assert.equal((await authed(`${gw.url}/api/hour/x`, plain.access_token)).status, 200);
  });

  test("after the second step the same account passes the mfa route", async () => {
    const email = mail("vault");
    const { app } = await accountWithTotp(gw, email);
    const step = await assertSecondStep(await login(gw, email));
    const body = await json(await verify(gw, { mfa_token: step.mfa_token, code: await app.next() }));
    const res = await authed(`${gw.url}/api/vault/k`, body.access_token);
    const echo = await json(res);
    assert.equal(res.status, 200, JSON.stringify(echo));
    assert.equal(echo.identity.email, email);
  });
});

describe("turning TOTP off and resetting it", () => {
  test("DELETE /auth/mfa/totp with a code turns it off: mfa_disabled, and logins sign in directly", async () => {
    const email = mail("off");
    const { session, app } = await accountWithTotp(gw, email);
    const off = await withEvent(
      gw,
      (e) => e.type === "mfa_disabled" && e.data.user_id === session.user.id,
      async () => authed(`${gw.url}/auth/mfa/totp`, session.access_token, { method: "DELETE", body: { code: await app.next() } }),
    );
    assert.equal(off.result.status, 204, await off.result.text());
    assert.deepEqual(off.event.data, { user_id: session.user.id, method: "totp" });
    assert.ok((await json(await login(gw, email))).access_token);
    await assertProblem(await authed(`${gw.url}/auth/mfa/totp`, session.access_token, { method: "DELETE" }), 409, "mfa_not_enabled");
  });

  test("an administrator sees a user's factors and resets them", async () => {
    const email = mail("lost");
    const { session } = await accountWithTotp(gw, email);
    const admin = await makeAdmin(gw, mail("root"));
    const view = await json(await authed(`${gw.url}/auth/admin/users/${session.user.id}`, admin.access_token));
    assert.deepEqual(view.mfa, { totp: true, backup_codes_left: 10, passkeys: 0 });
    const reset = await withEvent(
      gw,
      (e) => e.type === "mfa_disabled" && e.data.user_id === session.user.id,
      () => authed(`${gw.url}/auth/admin/users/${session.user.id}/mfa`, admin.access_token, { method: "DELETE" }),
    );
    assert.equal(reset.result.status, 204, await reset.result.text());
    await assertProblem(await authed(`${gw.url}/auth/me`, session.access_token), 401, "session_revoked");
    assert.ok((await json(await login(gw, email))).access_token, "signs in with the password alone");
    await assertProblem(
      await authed(`${gw.url}/auth/admin/users/${session.user.id}/mfa`, session.access_token, { method: "DELETE" }),
      401,
      "session_revoked",
    );
  });
});

describe("backup codes and takeovers", () => {
  test("racing regenerations: each answer is a set or a refusal, and exactly one set handed out works", async (t) => {
    const email = mail("race");
    const { session, backupCodes } = await accountWithTotp(gw, email);
    const answers = await Promise.all(
      backupCodes.slice(0, 4).map((backup_code) =>
        authed(`${gw.url}/auth/mfa/backup-codes`, session.access_token, { method: "POST", body: { backup_code } }),
      ),
    );
    const sets = [];
    const refused = [];
    for (const res of answers) {
      if (res.status === 200) sets.push((await json(res)).backup_codes);
      // Lost the race after reading the same set (409), or its backup code went with the set a winner replaced (401).
      else if (res.status === 409) refused.push((await assertProblem(res, 409, "backup_codes_changed")).code);
      else refused.push((await assertProblem(res, 401, "invalid_code")).code);
    }
    t.diagnostic(`${sets.length} of 4 racing regenerations handed out codes; refused: ${refused.join(", ") || "none"}`);
    assert.ok(sets.length >= 1);
    const me = await json(await authed(`${gw.url}/auth/me`, session.access_token));
    assert.equal(me.mfa.backup_codes_left, 10, "one whole set stored");
    // Exactly one of the sets handed out works: the one stored (any other was replaced after it was shown).
    let working = 0;
    for (const set of sets) {
      const step = await assertSecondStep(await login(gw, email));
      if ((await verify(gw, { mfa_token: step.mfa_token, backup_code: set[0] })).status === 200) working += 1;
    }
    assert.equal(working, 1);
  });

  test("new backup codes for a current code: the old ones die, the new ones work once", async () => {
    const email = mail("codes");
    const { session, app, backupCodes } = await accountWithTotp(gw, email);
    const fresh = await authed(`${gw.url}/auth/mfa/backup-codes`, session.access_token, {
      method: "POST",
      body: { code: await app.next() },
    });
    const { backup_codes } = await json(fresh);
    assert.equal(fresh.status, 200);
    assert.equal(backup_codes.length, 10);
    assert.ok(backup_codes.every((c) => !backupCodes.includes(c)));
    const step = await assertSecondStep(await login(gw, email));
    await assertProblem(await verify(gw, { mfa_token: step.mfa_token, backup_code: backupCodes[0] }), 401, "invalid_code");
    assert.equal((await verify(gw, { mfa_token: step.mfa_token, backup_code: backup_codes[0] })).status, 200);
    await assertProblem(
      await authed(`${gw.url}/auth/mfa/backup-codes`, session.access_token, { method: "POST", body: {} }),
      422,
      "validation_failed",
    );
  });

  test("the first proof of an unverified account's address removes the planter's TOTP in the same write", async () => {
    const email = mail("planted");
    const planter = await signup(gw, email);
    const e = await json(await enroll(gw, planter.access_token));
    const app = authenticator(e.otpauth_uri);
    assert.equal((await confirm(gw, planter.access_token, await app.next())).status, 200);
    assert.ok((await assertSecondStep(await login(gw, email))).mfa_token, "on for the planter");
    const link = await withEvent(
      gw,
      (ev) => ev.type === "magic_link_requested" && ev.data.email === email,
      () => post(`${gw.url}/auth/magic-link`, { email }),
    );
    const owner = await withEvent(
      gw,
      (ev) => ev.type === "mfa_disabled" && ev.data.user_id === planter.user.id,
      () => post(`${gw.url}/auth/magic-link/verify`, { token: link.event.data.token }),
    );
    const body = await json(owner.result);
    assert.equal(owner.result.status, 200, JSON.stringify(body));
    assert.ok(body.access_token, "signed in at once: the planter's factor is gone");
    const me = await json(await authed(`${gw.url}/auth/me`, body.access_token));
    assert.deepEqual(me.mfa, { totp: false, backup_codes_left: 0, passkeys: 0 });
  });
});

describe("cookie mode", () => {
  test("the OAuth callback sets no session cookies and hands the mfa_token in the fragment; verify sets them", async () => {
    const email = mail("cookie");
    const id = 500000 + Math.floor(Math.random() * 1e5);
    const first = await githubSignIn(cookie, email, id);
    const access = first.headers.getSetCookie().find((c) => c.startsWith("__Host-portcullis_access=")).split(";")[0];
    const e = await json(await fetch(`${cookie.url}/auth/mfa/totp/enroll`, { method: "POST", headers: { cookie: access } }));
    const app = authenticator(e.otpauth_uri);
    const on = await fetch(`${cookie.url}/auth/mfa/totp/confirm`, {
      method: "POST",
      headers: { cookie: access, "content-type": "application/json" },
      body: JSON.stringify({ code: await app.next() }),
    });
    assert.equal(on.status, 200, await on.text());

    const second = await githubSignIn(cookie, email, id);
    assert.equal(second.status, 302);
    const cookies = second.headers.getSetCookie();
    assert.ok(!cookies.some((c) => c.startsWith("__Host-portcullis_access") || c.startsWith("__Host-portcullis_refresh")), cookies.join(" | "));
    const location = second.headers.get("location");
    const [base, fragment] = location.split("#");
    assert.equal(base, APP, "nothing in the query");
    const params = new URLSearchParams(fragment);
    assert.match(params.get("mfa_token"), /^[A-Za-z0-9_-]{43}$/);
    assert.equal(params.get("methods"), "totp,backup_code");
    const done = await verify(cookie, { mfa_token: params.get("mfa_token"), code: await app.next() });
    const body = await json(done);
    assert.equal(done.status, 200, JSON.stringify(body));
    assert.equal(body.access_token, undefined, "tokens only in cookies");
    const set = done.headers.getSetCookie();
    const at = set.find((c) => c.startsWith("__Host-portcullis_access=")).split(";")[0];
    assert.ok(set.some((c) => c.startsWith("__Host-portcullis_refresh=")));
    const me = await json(await fetch(`${cookie.url}/auth/me`, { headers: { cookie: at } }));
    assert.deepEqual(me.amr, ["otp", "fed", "mfa"]);
  });
});
