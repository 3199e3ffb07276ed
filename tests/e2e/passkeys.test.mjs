// Passkeys end to end: Chromium's own WebAuthn client and its virtual
// authenticator (the DevTools protocol's WebAuthn domain, through
// playwright-core: CTAP2, internal transport, resident keys, user
// verification) against the built Worker under `wrangler dev`.
//
// The ceremonies run in a page on http://localhost:P (a secure context, so
// WebAuthn works without TLS; RP_ID=localhost, RP_ORIGINS that page's
// origin); the page only runs navigator.credentials and hands the JSON back,
// and the test posts it to the gateway itself. One gateway, one browser.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import crypto from "node:crypto";
import { chromium } from "playwright-core";
import { decodeJwt } from "jose";
import * as OTPAuth from "otpauth";
import { startGateway, post, json, randomEmail } from "./harness.mjs";
import { signup, login, makeAdmin, assertProblem, authed, withEvent } from "./lib/accounts.mjs";

const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const ROUTES = [{ path: "/api/vault/*", policy: "mfa" }];

let gw;
let browser;
let server;
let page;
let PAGE;

before(async () => {
  // Every interface: Chromium may reach "localhost" over ::1 or 127.0.0.1.
  server = http.createServer((req, res) => {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end("<!doctype html><title>passkeys</title><p>passkeys</p>");
  });
  await new Promise((resolve) => server.listen(0, resolve));
  PAGE = `http://localhost:${server.address().port}`;
  gw = await startGateway({
    origin: true,
    vars: { RP_ID: "localhost", RP_ORIGINS: PAGE, RP_NAME: "Portcullis E2E", ROUTES: JSON.stringify(ROUTES) },
  });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-sync"],
  });
  const context = await browser.newContext();
  page = await context.newPage();
  await page.goto(`${PAGE}/`);
  const cdp = await context.newCDPSession(page);
  await cdp.send("WebAuthn.enable");
  await cdp.send("WebAuthn.addVirtualAuthenticator", {
    options: {
      protocol: "ctap2",
      transport: "internal",
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });
});

after(async () => {
  await browser?.close();
  await gw?.stop();
  server?.close();
});

/** navigator.credentials.create in the page for the gateway's options; the credential's toJSON(). */
const create = (options) =>
  page.evaluate(async (o) => {
    const publicKey = PublicKeyCredential.parseCreationOptionsFromJSON(o);
    return (await navigator.credentials.create({ publicKey })).toJSON();
  }, options);

/** navigator.credentials.get in the page; the credential's toJSON(). */
const get = (options) =>
  page.evaluate(async (o) => {
    const { challenge_id, ...rest } = o;
    const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(rest);
    return (await navigator.credentials.get({ publicKey })).toJSON();
  }, options);

const b64 = (s) => Buffer.from(s).toString("base64url");
const unb64 = (s) => Buffer.from(s, "base64url").toString();

let email;
let session;
let passkeyId;
let credentialId;

test("a signed-in user registers a passkey made by Chromium's authenticator", async (t) => {
  email = randomEmail("passkey");
  session = await signup(gw, email);
  const res = await authed(`${gw.url}/auth/passkeys/register/options`, session.access_token, {
    method: "POST",
    body: { name: "Virtual" },
  });
  const options = await json(res);
  assert.equal(res.status, 200, JSON.stringify(options));
  assert.equal(options.rp.id, "localhost");
  assert.notEqual(unb64(options.user.id), email);
  const credential = await create(options);
  credentialId = credential.rawId;
  const { result, event } = await withEvent(
    gw,
    (e) => e.type === "passkey_added" && e.data.user_id === session.user.id,
    () => authed(`${gw.url}/auth/passkeys/register/verify`, session.access_token, { method: "POST", body: { credential } }),
  );
  const created = await json(result);
  assert.equal(result.status, 201, JSON.stringify(created));
  assert.equal(created.name, "Virtual");
  assert.equal(event.data.passkey_id, created.id);
  passkeyId = created.id;
  const list = await json(await authed(`${gw.url}/auth/passkeys`, session.access_token));
  assert.equal(list.passkeys.length, 1);
  assert.equal(list.passkeys[0].credential_id, credentialId);
  assert.deepEqual(list.passkeys[0].transports, ["internal"]);
  assert.ok(["ES256", "EdDSA"].includes(list.passkeys[0].alg));
  t.diagnostic(`the virtual authenticator chose ${list.passkeys[0].alg}`);
});

/** Signs in through the page: options (with `email` or none), get, verify; returns [status, body, verify request]. */
async function signIn(body) {
  const options = await json(await post(`${gw.url}/auth/passkeys/login/options`, body));
  assert.ok(options.challenge_id, JSON.stringify(options));
  const credential = await get(options);
  const request = { challenge_id: options.challenge_id, credential };
  const res = await post(`${gw.url}/auth/passkeys/login/verify`, request);
  return [res.status, await json(res), request, options];
}

/**
 * A sign-in whose genuine assertion is altered before it is sent — `flip`: one bit of the
 * signature changed; `cut`: its first byte dropped — and the response.
 */
async function forgedSignIn(body, how) {
  const options = await json(await post(`${gw.url}/auth/passkeys/login/options`, body));
  const credential = await get(options);
  const signature = Buffer.from(credential.response.signature, "base64url");
  if (how === "flip") signature[signature.length >> 1] ^= 0x01;
  credential.response.signature = (how === "cut" ? signature.subarray(1) : signature).toString("base64url");
  return post(`${gw.url}/auth/passkeys/login/verify`, { challenge_id: options.challenge_id, credential });
}

test("signing in with an email (allowCredentials) gives a two-factor token the gateway's mfa route accepts", async () => {
  const [status, body, , options] = await signIn({ email });
  assert.equal(status, 200, JSON.stringify(body));
  assert.deepEqual(options.allowCredentials.map((c) => c.id), [credentialId]);
  assert.equal(body.user.email, email);
  const claims = decodeJwt(body.access_token);
  assert.ok(claims.amr.includes("mfa") && claims.amr.includes("user"), JSON.stringify(claims.amr));
  assert.ok(claims.amr.includes("hwk") || claims.amr.includes("swk"), JSON.stringify(claims.amr));
  const vault = await authed(`${gw.url}/api/vault/x`, body.access_token);
  assert.equal(vault.status, 200, await vault.text());
  // A password-only token is refused there.
  const pwd = await json(await login(gw, email));
  const refused = await authed(`${gw.url}/api/vault/x`, pwd.access_token);
  assert.equal(refused.status, 401);
  assert.match(refused.headers.get("www-authenticate"), /insufficient_user_authentication/);
});

test("signing in without an email uses the discoverable credential; a replayed or concurrent answer is refused", async () => {
  const [status, body, request, options] = await signIn({});
  assert.equal(status, 200, JSON.stringify(body));
  assert.deepEqual(options.allowCredentials, []);
  assert.equal(body.user.id, session.user.id);
  assert.ok(request.credential.response.userHandle, "a discoverable credential returns its user handle");
  await assertProblem(await post(`${gw.url}/auth/passkeys/login/verify`, request), 401, "invalid_challenge");
  // One answer sent twice at once: the challenge is consumed once.
  const fresh = await json(await post(`${gw.url}/auth/passkeys/login/options`, {}));
  const again = { challenge_id: fresh.challenge_id, credential: await get(fresh) };
  const raced = await Promise.all([1, 2].map(() => post(`${gw.url}/auth/passkeys/login/verify`, again)));
  const bodies = await Promise.all(raced.map(json));
  assert.deepEqual(raced.map((r) => r.status).sort(), [200, 401], JSON.stringify(bodies));
  assert.equal(bodies.find((b) => b.code)?.code, "invalid_challenge");
});

test("an answer from an origin not in RP_ORIGINS is refused, and an unknown address gets options of the same shape", async () => {
  const options = await json(await post(`${gw.url}/auth/passkeys/login/options`, {}));
  const credential = await get(options);
  const client = JSON.parse(unb64(credential.response.clientDataJSON));
  credential.response.clientDataJSON = b64(JSON.stringify({ ...client, origin: "http://localhost:1" }));
  const res = await post(`${gw.url}/auth/passkeys/login/verify`, { challenge_id: options.challenge_id, credential });
  await assertProblem(res, 401, "origin_not_allowed");
  const unknown = await json(await post(`${gw.url}/auth/passkeys/login/options`, { email: randomEmail("nobody") }));
  assert.deepEqual(Object.keys(unknown).sort(), Object.keys(options).sort());
  assert.equal(unknown.allowCredentials.length, 1);
  // Malformed: a credential id that is not base64url, CBOR that is cut short.
  const bad = { challenge_id: options.challenge_id, credential: { ...credential, rawId: "***" } };
  await assertProblem(await post(`${gw.url}/auth/passkeys/login/verify`, bad), 400, "invalid_credential");
  const cut = structuredClone(credential);
  cut.response.clientDataJSON = b64(JSON.stringify(client));
  cut.response.authenticatorData = cut.response.authenticatorData.slice(0, 20);
  await assertProblem(
    await post(`${gw.url}/auth/passkeys/login/verify`, { challenge_id: options.challenge_id, credential: cut }),
    400,
    "invalid_credential",
  );
  await assertProblem(await post(`${gw.url}/auth/passkeys/login/verify`, { challenge_id: "x", credential: {} }), 422, "validation_failed");
});

test("a passkey is renamed and removed; removal ends the other sessions and the passkey no longer signs in", async () => {
  const renamed = await authed(`${gw.url}/auth/passkeys/${passkeyId}`, session.access_token, {
    method: "PATCH",
    body: { name: "Work laptop" },
  });
  assert.equal(renamed.status, 200);
  assert.equal((await json(renamed)).name, "Work laptop");
  const other = await json(await login(gw, email));
  const { result } = await withEvent(
    gw,
    (e) => e.type === "passkey_removed" && e.data.passkey_id === passkeyId,
    () => authed(`${gw.url}/auth/passkeys/${passkeyId}`, session.access_token, { method: "DELETE" }),
  );
  assert.equal(result.status, 204);
  await assertProblem(await authed(`${gw.url}/auth/me`, other.access_token), 401, "session_revoked");
  assert.equal((await authed(`${gw.url}/auth/me`, session.access_token)).status, 200);
  const [status, body] = await signIn({});
  assert.equal(status, 401, JSON.stringify(body));
  assert.equal(body.code, "unknown_credential");
  await assertProblem(
    await authed(`${gw.url}/auth/passkeys/${passkeyId}`, session.access_token, { method: "DELETE" }),
    404,
    "passkey_not_found",
  );
});

test("a passkey planted on an unverified account goes when the address's owner takes it over", async () => {
  const victim = randomEmail("victim");
  const planter = await signup(gw, victim);
  const options = await json(
    await authed(`${gw.url}/auth/passkeys/register/options`, planter.access_token, { method: "POST" }),
  );
  const created = await authed(`${gw.url}/auth/passkeys/register/verify`, planter.access_token, {
    method: "POST",
    body: { credential: await create(options) },
  });
  assert.equal(created.status, 201);
  const planted = await json(created);
  // The planter holds sign-in options for it from before the takeover.
  const login = await json(await post(`${gw.url}/auth/passkeys/login/options`, { email: victim }));
  const credential = await get(login);
  // The owner proves the address with a magic link.
  const { event } = await withEvent(
    gw,
    (e) => e.type === "magic_link_requested" && e.data.email === victim,
    () => post(`${gw.url}/auth/magic-link`, { email: victim }),
  );
  const { result } = await withEvent(
    gw,
    (e) => e.type === "passkey_removed" && e.data.passkey_id === planted.id,
    () => post(`${gw.url}/auth/magic-link/verify`, { token: event.data.token }),
  );
  const owner = await json(result);
  assert.equal(result.status, 200, JSON.stringify(owner));
  assert.deepEqual((await json(await authed(`${gw.url}/auth/passkeys`, owner.access_token))).passkeys, []);
  const res = await post(`${gw.url}/auth/passkeys/login/verify`, { challenge_id: login.challenge_id, credential });
  await assertProblem(res, 401, "unknown_credential");
});

test("an ES256 passkey (DER signatures) registers and signs in too", async () => {
  const address = randomEmail("es256");
  const s = await signup(gw, address);
  const options = await json(await authed(`${gw.url}/auth/passkeys/register/options`, s.access_token, { method: "POST" }));
  // The browser is offered ES256 only.
  options.pubKeyCredParams = options.pubKeyCredParams.filter((p) => p.alg === -7);
  const res = await authed(`${gw.url}/auth/passkeys/register/verify`, s.access_token, {
    method: "POST",
    body: { credential: await create(options) },
  });
  assert.equal(res.status, 201);
  const list = await json(await authed(`${gw.url}/auth/passkeys`, s.access_token));
  assert.equal(list.passkeys[0].alg, "ES256");
  // The runtime's verification refuses an altered signature.
  await assertProblem(await forgedSignIn({ email: address }, "flip"), 401, "invalid_signature");
  const [status, body] = await signIn({ email: address });
  assert.equal(status, 200, JSON.stringify(body));
  assert.equal(body.user.email, address);
});

test("an RS256 passkey (Windows Hello's TPM keys) registers and signs in too", async () => {
  const address = randomEmail("rs256");
  const s = await signup(gw, address);
  const options = await json(await authed(`${gw.url}/auth/passkeys/register/options`, s.access_token, { method: "POST" }));
  assert.ok(options.pubKeyCredParams.some((p) => p.alg === -257), "RS256 is offered");
  // The browser is offered RS256 only: Chromium's virtual authenticator makes an RSA key.
  options.pubKeyCredParams = options.pubKeyCredParams.filter((p) => p.alg === -257);
  const res = await authed(`${gw.url}/auth/passkeys/register/verify`, s.access_token, {
    method: "POST",
    body: { credential: await create(options) },
  });
  assert.equal(res.status, 201, await res.text());
  const list = await json(await authed(`${gw.url}/auth/passkeys`, s.access_token));
  assert.equal(list.passkeys[0].alg, "RS256");
  // The runtime's verification refuses an altered signature, and one a byte short.
  for (const how of ["flip", "cut"]) {
    await assertProblem(await forgedSignIn({ email: address }, how), 401, "invalid_signature");
  }
  const [status, body] = await signIn({ email: address });
  assert.equal(status, 200, JSON.stringify(body));
  assert.equal(body.user.email, address);
});

test("an Ed25519 key that is a small-order point is refused: anyone could forge its signatures", async () => {
  const s = await signup(gw, randomEmail("weak"));
  const options = await json(await authed(`${gw.url}/auth/passkeys/register/options`, s.access_token, { method: "POST" }));
  // A credential as an authenticator would make it, by hand: "none" attestation, UP, UV and AT,
  // and the COSE key {1: 1, 3: -8, -1: 6, -2: x} with x the identity point's encoding.
  const x = Buffer.alloc(32);
  x[0] = 1;
  const id = crypto.randomBytes(16);
  const cose = Buffer.concat([Buffer.from([0xa4, 0x01, 0x01, 0x03, 0x27, 0x20, 0x06, 0x21, 0x58, 0x20]), x]);
  const authData = Buffer.concat([
    crypto.createHash("sha256").update("localhost").digest(),
    Buffer.from([0x45, 0, 0, 0, 0]),
    Buffer.alloc(16),
    Buffer.from([0, id.length]),
    id,
    cose,
  ]);
  const text = (t) => Buffer.concat([Buffer.from([0x60 + t.length]), Buffer.from(t)]);
  const attestationObject = Buffer.concat([
    Buffer.from([0xa3]), text("fmt"), text("none"), text("attStmt"), Buffer.from([0xa0]),
    text("authData"), Buffer.from([0x58, authData.length]), authData,
  ]);
  const clientData = { type: "webauthn.create", challenge: options.challenge, origin: PAGE, crossOrigin: false };
  const credential = {
    id: id.toString("base64url"),
    rawId: id.toString("base64url"),
    type: "public-key",
    response: { clientDataJSON: b64(JSON.stringify(clientData)), attestationObject: attestationObject.toString("base64url"), transports: ["internal"] },
  };
  const res = await authed(`${gw.url}/auth/passkeys/register/verify`, s.access_token, { method: "POST", body: { credential } });
  await assertProblem(res, 400, "invalid_credential");
  assert.deepEqual((await json(await authed(`${gw.url}/auth/passkeys`, s.access_token))).passkeys, []);
});

test("new registration options replace the earlier challenge, which is then a 400, not a token challenge", async () => {
  const s = await signup(gw, randomEmail("reopen"));
  const options = () => authed(`${gw.url}/auth/passkeys/register/options`, s.access_token, { method: "POST" }).then(json);
  const first = await options();
  const second = await options();
  const verify = async (o) =>
    authed(`${gw.url}/auth/passkeys/register/verify`, s.access_token, {
      method: "POST",
      body: { credential: await create(o) },
    });
  const stale = await verify(first);
  await assertProblem(stale, 400, "invalid_challenge");
  assert.equal(stale.headers.get("www-authenticate"), null);
  assert.equal((await verify(second)).status, 201);
});

/** A new account (`prefix`) with TOTP on and a passkey from the page's authenticator. */
async function accountWithTotpAndPasskey(prefix) {
  const address = randomEmail(prefix);
  const s = await signup(gw, address);
  const enrolment = await json(await authed(`${gw.url}/auth/mfa/totp/enroll`, s.access_token, { method: "POST" }));
  const confirmed = await authed(`${gw.url}/auth/mfa/totp/confirm`, s.access_token, {
    method: "POST",
    body: { code: OTPAuth.URI.parse(enrolment.otpauth_uri).generate() },
  });
  const { backup_codes: backupCodes } = await json(confirmed);
  assert.equal(confirmed.status, 200);
  const regOptions = await json(await authed(`${gw.url}/auth/passkeys/register/options`, s.access_token, { method: "POST" }));
  const created = await authed(`${gw.url}/auth/passkeys/register/verify`, s.access_token, {
    method: "POST",
    body: { credential: await create(regOptions) },
  });
  const { id } = await json(created);
  assert.equal(created.status, 201);
  return { address, s, backupCodes, id };
}

test("a passkey's second step dies with the passkey: removed before it, no session", async () => {
  const { address, s, backupCodes, id } = await accountWithTotpAndPasskey("pk2nd");
  // Without user verification the passkey is one factor: the second step.
  const options = await json(await post(`${gw.url}/auth/passkeys/login/options`, { email: address }));
  const credential = await get({ ...options, userVerification: "discouraged" });
  const first = await json(await post(`${gw.url}/auth/passkeys/login/verify`, { challenge_id: options.challenge_id, credential }));
  assert.equal(first.mfa_required, true, JSON.stringify(first));
  const removed = await authed(`${gw.url}/auth/passkeys/${id}`, s.access_token, { method: "DELETE" });
  assert.equal(removed.status, 204);
  const res = await post(`${gw.url}/auth/mfa/verify`, { mfa_token: first.mfa_token, backup_code: backupCodes[0] });
  await assertProblem(res, 409, "account_changed");
});

test("an administrator's reset removes TOTP, backup codes and passkeys in one write and ends the sessions", async () => {
  const { address, s, id } = await accountWithTotpAndPasskey("pkreset");
  // An assertion made before the reset, sent after it.
  const options = await json(await post(`${gw.url}/auth/passkeys/login/options`, { email: address }));
  const credential = await get(options);
  const admin = await makeAdmin(gw, randomEmail("pkroot"));
  const asAdmin = (init) => authed(`${gw.url}/auth/admin/users/${s.user.id}${init ? "/mfa" : ""}`, admin.access_token, init);
  assert.deepEqual((await json(await asAdmin())).mfa, { totp: true, backup_codes_left: 10, passkeys: 1 });
  const mine = (type) => (e) => e.type === type && e.data.user_id === s.user.id;
  const { result } = await withEvent(gw, mine("passkey_removed"), () => asAdmin({ method: "DELETE" }));
  assert.equal(result.status, 204);
  await gw.waitForEvent(mine("mfa_disabled"));
  await gw.waitForEvent(mine("session_revoked"));
  assert.deepEqual(gw.events().filter(mine("passkey_removed")).map((e) => e.data.passkey_id), [id]);
  assert.deepEqual(gw.events().filter(mine("mfa_disabled")).map((e) => e.data.method), ["totp"]);
  assert.deepEqual((await json(await asAdmin())).mfa, { totp: false, backup_codes_left: 0, passkeys: 0 });
  await assertProblem(await authed(`${gw.url}/auth/me`, s.access_token), 401, "session_revoked");
  const res = await post(`${gw.url}/auth/passkeys/login/verify`, { challenge_id: options.challenge_id, credential });
  await assertProblem(res, 401, "unknown_credential");
  assert.ok((await json(await login(gw, address))).access_token, "signs in with the password alone");
});
