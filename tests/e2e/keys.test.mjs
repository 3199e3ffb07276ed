// Signing-key rotation end to end: by the admin API and by the cron trigger
// (wrangler dev --test-scheduled), with old tokens verifying — at the auth API
// and at the gateway — until they expire and not after, the JWKS keeping the
// retired key exactly as long as tokens it signed can be valid, and racing
// rotations never making two active keys. Retirement at once (a leaked key):
// out of the JWKS at once, and everything it signed — cached by the gateway
// or not, tokens and assertions — refused within KEY_CACHE_TTL; and tokens
// claiming a longer life than ACCESS_TTL refused, however validly signed.
import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
import { createRemoteJWKSet, jwtVerify } from "jose";
import { startGateway, post, json, randomEmail, sleep } from "./harness.mjs";
import { d1, sqlText, signingKey, mint, claimsFor } from "./lib/d1.mjs";
import { signup, makeAdmin, login, withEvent, assertProblem, authed } from "./lib/accounts.mjs";

const ACCESS_TTL = 4;
const KEY_CACHE_TTL = 5;
const ROTATION_INTERVAL = 8;
const ASSERTION_TTL = 60;
const LEEWAY = 30;

const header = (jwt) => JSON.parse(Buffer.from(jwt.split(".")[0], "base64url").toString());
const claims = (jwt) => JSON.parse(Buffer.from(jwt.split(".")[1], "base64url").toString());
const untilUnix = (t) => sleep(Math.max(0, t * 1000 - Date.now()));

describe("key rotation", () => {
  let gw;
  const jwksKids = async () => (await json(await fetch(`${gw.url}/.well-known/jwks.json`))).keys.map((k) => k.kid);
  const freshAdmin = async () => json(await login(gw, adminEmail));
  const rotate = async () => authed(`${gw.url}/auth/admin/keys/rotate`, (await freshAdmin()).access_token, { method: "POST" });
  const activeKid = async () => (await d1(gw, "SELECT kid FROM signing_keys WHERE status = 'active'")).map((r) => r.kid);
  let adminEmail;
  let firstKey; // { kid, publish_until } of the key retired by the first rotation

  before(async () => {
    gw = await startGateway({
      vars: { ACCESS_TTL, KEY_CACHE_TTL, ROTATION_INTERVAL },
      args: ["--test-scheduled"],
      origin: true,
    });
    adminEmail = randomEmail("keys-admin");
    await makeAdmin(gw, adminEmail);
  });
  after(async () => {
    await gw?.stop();
  });

  test("admin rotation: new key at once, old tokens valid until expiry and not after", async () => {
    const user = await signup(gw, randomEmail("keys-user"));
    const old = user.access_token;
    const k1 = header(old).kid;
    assert.deepEqual(await jwksKids(), [k1]);

    const beforeRotation = Math.floor(Date.now() / 1000);
    const { result, event } = await withEvent(gw, (e) => e.type === "key_rotated" && e.data.old_kid === k1, rotate);
    const body = await json(result);
    assert.equal(result.status, 200, JSON.stringify(body));
    assert.equal(body.old_kid, k1);
    const k2 = body.new_kid;
    assert.notEqual(k2, k1);
    assert.equal(event.data.new_kid, k2);
    const rotatedAt = Math.floor(Date.now() / 1000);
    assert.deepEqual((await jwksKids()).sort(), [k1, k2].sort());
    assert.deepEqual(await activeKid(), [k2]);
    const [retired] = await d1(gw, `SELECT retired_at, publish_until FROM signing_keys WHERE kid = ${sqlText(k1)}`);
    assert.equal(retired.publish_until - retired.retired_at, KEY_CACHE_TTL + ACCESS_TTL + ASSERTION_TTL + LEEWAY);
    firstKey = { kid: k1, publish_until: retired.publish_until };

    // The isolate that rotated signs with the new key immediately (the
    // rotation request itself loaded the keys, which then stay cached for
    // KEY_CACHE_TTL: only the invalidation explains this).
    const fresh = await json(await login(gw, user.user.email));
    assert.equal(header(fresh.access_token).kid, k2);

    // Both verify: at the auth API (with the D1 session check) and at the gateway.
    for (const t of [old, fresh.access_token]) {
      assert.equal((await authed(`${gw.url}/auth/me`, t)).status, 200);
      const proxied = await authed(`${gw.url}/api/hello`, t);
      assert.equal(proxied.status, 200, await proxied.text());
    }

    // The old token stops verifying once expired (exp + leeway), not before.
    const exp = claims(old).exp;
    await untilUnix(exp + LEEWAY - 3);
    assert.equal((await authed(`${gw.url}/api/hello`, old)).status, 200);
    await untilUnix(exp + LEEWAY + 1);
    await assertProblem(await authed(`${gw.url}/auth/me`, old), 401, "token_expired");
    const denied = await authed(`${gw.url}/api/hello`, old);
    assert.equal(denied.status, 401);
    assert.match(denied.headers.get("www-authenticate") ?? "", /invalid_token/);

    assert.ok((await jwksKids()).includes(k1), "k1 is still published before publish_until");
    // Retired by the rotation: between the request and the moment its event
    // was seen (however slowly the queue delivered it).
    assert.ok(beforeRotation <= retired.retired_at && retired.retired_at <= rotatedAt);
  });

  test("the cron trigger rotates only a key older than ROTATION_INTERVAL, and emits key_rotated", async () => {
    const r = await json(await rotate());
    const current = r.new_kid;
    const fire = () => fetch(`${gw.url}/__scheduled?cron=${encodeURIComponent("*/15 * * * *")}`);
    const early = await fire();
    assert.ok(early.status < 500, `scheduled: ${early.status}`);
    await early.text();
    await sleep(1_000);
    assert.deepEqual(await activeKid(), [current], "a young key is not rotated");

    const [{ created_at }] = await d1(gw, `SELECT created_at FROM signing_keys WHERE kid = ${sqlText(current)}`);
    await untilUnix(created_at + ROTATION_INTERVAL + 1);
    const { event } = await withEvent(gw, (e) => e.type === "key_rotated" && e.data.old_kid === current, async () => {
      const res = await fire();
      await res.text();
    });
    const next = event.data.new_kid;
    assert.deepEqual(await activeKid(), [next]);
    // Picked up for signing within KEY_CACHE_TTL (at once in the isolate that ran the cron).
    const deadline = Date.now() + (KEY_CACHE_TTL + 2) * 1000;
    let kid;
    while (Date.now() < deadline) {
      kid = header((await json(await login(gw, adminEmail))).access_token).kid;
      if (kid === next) break;
      await sleep(500);
    }
    assert.equal(kid, next);
    assert.ok((await jwksKids()).includes(current), "the retired key stays published");
  });

  test("concurrent rotations never leave two active keys, and every success is a distinct step", async () => {
    // The sign-ins one after another: the login back-off counts an attempt
    // when it is admitted, so six at once for one address can meet it
    // (SECURITY.md 41); the rotations are what race here.
    const tokens = [];
    for (let i = 0; i < 6; i++) tokens.push(await freshAdmin());
    const results = await Promise.all(
      tokens.map((t) => authed(`${gw.url}/auth/admin/keys/rotate`, t.access_token, { method: "POST" })),
    );
    const bodies = await Promise.all(results.map((r) => json(r)));
    const ok = bodies.filter((_, i) => results[i].status === 200);
    for (const [i, r] of results.entries()) {
      assert.ok(r.status === 200 || (r.status === 409 && bodies[i].code === "rotation_conflict"), JSON.stringify(bodies[i]));
    }
    assert.ok(ok.length >= 1);
    assert.equal(new Set(ok.map((b) => b.old_kid)).size, ok.length, "no key was retired twice");
    assert.equal((await activeKid()).length, 1);
    const [{ n }] = await d1(gw, "SELECT COUNT(*) AS n FROM signing_keys WHERE status = 'active'");
    assert.equal(n, 1);
    // The active key is the last successful rotation's new key, and it signs.
    const active = (await activeKid())[0];
    assert.ok(ok.some((b) => b.new_kid === active));
    assert.equal(header((await freshAdmin()).access_token).kid, active);
  });

  test("the JWKS keeps a retired key until publish_until, then drops it", async () => {
    assert.ok(firstKey, "the first test recorded the retired key");
    await untilUnix(firstKey.publish_until - 3);
    assert.ok((await jwksKids()).includes(firstKey.kid));
    await untilUnix(firstKey.publish_until + 1);
    const kids = await jwksKids();
    assert.ok(!kids.includes(firstKey.kid), `still published: ${kids}`);
    assert.ok(kids.includes((await activeKid())[0]));
  });

  test("non-admins cannot rotate", async () => {
    const user = await signup(gw, randomEmail("keys-plain"));
    const before = await activeKid();
    await assertProblem(await authed(`${gw.url}/auth/admin/keys/rotate`, user.access_token, { method: "POST" }), 403, "insufficient_role");
    await assertProblem(await post(`${gw.url}/auth/admin/keys/rotate`), 401, "missing_token");
    await assertProblem(await fetch(`${gw.url}/auth/admin/keys/rotate`), 405, "method_not_allowed");
    assert.deepEqual(await activeKid(), before);
  });
});

// Keys are reloaded in the background from half of KEY_CACHE_TTL while the
// gateway keeps using them, so D1 being slow or down does not stall token
// checks; at KEY_CACHE_TTL they are not used any more: it fails closed.
describe("an ageing key cache while D1 is down", () => {
  const TTL = 12; // background reloads from 6 s, fail closed from 12 s
  let gw;
  before(async () => {
    gw = await startGateway({ vars: { KEY_CACHE_TTL: String(TTL) }, origin: true });
  });
  after(async () => {
    await d1(gw, "ALTER TABLE signing_keys_offline RENAME TO signing_keys").catch(() => {});
    await gw?.stop();
  });

  test("fresh tokens still pass on the cached keys, then are refused with 503 once KEY_CACHE_TTL is over", async () => {
    const email = randomEmail("keys-outage");
    const auth = await signup(gw, email);
    const key = await signingKey(gw);
    const [b, c] = [await mint(key, claimsFor(gw, auth.user)), await mint(key, claimsFor(gw, auth.user))];
    const call = (token) => fetch(`${gw.url}/api/hello`, { headers: { authorization: `Bearer ${token}` } });
    // Reading the JWKS (re)loads the keys.
    assert.equal((await fetch(`${gw.url}/.well-known/jwks.json`)).status, 200);
    const loadedBy = Date.now();
    assert.equal((await call(auth.access_token)).status, 200);

    // D1 loses the key table (no request meanwhile); then the keys are due for a background reload.
    await d1(gw, "ALTER TABLE signing_keys RENAME TO signing_keys_offline");
    await sleep(Math.max(0, loadedBy + (TTL / 2) * 1000 + 500 - Date.now()));

    // A never-seen token is verified with the cached keys (their background reload fails).
    const res = await call(b);
    assert.equal(res.status, 200);
    const { identity } = await res.json();
    assert.equal(identity.user_id, auth.user.id);
    assert.equal(identity.assertion.split(".").length, 3);
    // The auth API, which needs D1 anyway, fails closed meanwhile.
    await assertProblem(await login(gw, email), 503, "service_unavailable");
    await gw.waitForLog((l) => l.includes("background key reload"));

    // At KEY_CACHE_TTL the cached keys are not used any more: fail closed.
    await sleep(Math.max(0, loadedBy + TTL * 1000 + 500 - Date.now()));
    const refused = await call(c);
    assert.equal(refused.status, 503);
    assert.match(refused.headers.get("content-type"), /problem\+json/);

    // D1 is back: the next request loads the keys and passes.
    await d1(gw, "ALTER TABLE signing_keys_offline RENAME TO signing_keys");
    assert.equal((await call(c)).status, 200);
  });
});

describe("retiring a key at once", () => {
  const TTL = 6; // KEY_CACHE_TTL: how long another isolate may still count on a retired key
  let gw;
  let adminEmail;
  const jwksKids = async () => (await json(await fetch(`${gw.url}/.well-known/jwks.json`))).keys.map((k) => k.kid);
  const activeKid = async () => (await d1(gw, "SELECT kid FROM signing_keys WHERE status = 'active'")).map((r) => r.kid);
  const adminToken = async () => (await json(await login(gw, adminEmail))).access_token;
  const retire = async (kid, token) => authed(`${gw.url}/auth/admin/keys/${kid}/retire`, token ?? (await adminToken()), { method: "POST" });
  const rotate = async () => json(await authed(`${gw.url}/auth/admin/keys/rotate`, await adminToken(), { method: "POST" }));
  const hello = (token) => authed(`${gw.url}/api/hello`, token);
  const origin = (token) => hello(token).then(async (r) => ({ status: r.status, body: await json(r) }));
  /** Resolves once `token` is refused at the gateway (401 invalid_token); fails after `deadline`. */
  async function refusedBy(token, deadline) {
    for (;;) {
      const res = await hello(token);
      const body = await json(res);
      if (res.status === 401) {
        assert.equal(body.code, "invalid_token", JSON.stringify(body));
        assert.match(res.headers.get("www-authenticate") ?? "", /error="invalid_token"/);
        return Date.now();
      }
      assert.equal(res.status, 200, JSON.stringify(body));
      assert.ok(Date.now() < deadline, `still accepted ${Date.now() - deadline} ms past the deadline`);
      await sleep(200);
    }
  }

  before(async () => {
    gw = await startGateway({ vars: { KEY_CACHE_TTL: String(TTL) }, origin: true });
    adminEmail = randomEmail("retire-admin");
    await makeAdmin(gw, adminEmail);
  });
  after(async () => {
    await gw?.stop();
  });

  test("only administrators retire keys; unknown and malformed kids are refused and nothing changes", async () => {
    const user = await signup(gw, randomEmail("retire-plain"));
    const [kid] = await activeKid();
    const keys = await d1(gw, "SELECT kid, status, publish_until FROM signing_keys ORDER BY kid");
    await assertProblem(await retire(kid, user.access_token), 403, "insufficient_role");
    await assertProblem(await post(`${gw.url}/auth/admin/keys/${kid}/retire`), 401, "missing_token");
    const get = await authed(`${gw.url}/auth/admin/keys/${kid}/retire`, await adminToken());
    await assertProblem(get, 405, "method_not_allowed");
    assert.equal(get.headers.get("allow"), "POST");
    await assertProblem(await retire("kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"), 404, "key_not_found");
    for (const bad of ["short", `${kid}x`, `${kid.slice(0, 42)}=`, "%27%20OR%201%3D1"]) {
      await assertProblem(await retire(bad), 422, "invalid_kid");
    }
    assert.deepEqual(await d1(gw, "SELECT kid, status, publish_until FROM signing_keys ORDER BY kid"), keys);
    assert.ok(!gw.events().some((e) => e.type === "key_retired"));
  });

  test("a retired key: out of the JWKS at once, its tokens refused though the gateway had cached them", async () => {
    const user = await signup(gw, randomEmail("retire-old"));
    const token = user.access_token;
    const [k1] = await activeKid();
    assert.equal((await hello(token)).status, 200);
    const { new_kid: k2 } = await rotate();
    assert.equal((await hello(token)).status, 200, "k1 stays published for its tokens");
    assert.deepEqual((await jwksKids()).sort(), [k1, k2].sort());

    const { result, event } = await withEvent(gw, (e) => e.type === "key_retired" && e.data.kid === k1, () => retire(k1));
    const retiredAt = Date.now();
    const body = await json(result);
    assert.equal(result.status, 200, JSON.stringify(body));
    assert.deepEqual(body, { kid: k1, new_kid: null });
    assert.deepEqual(event.data, { kid: k1, new_kid: null });
    assert.deepEqual(await jwksKids(), [k2], "gone from the JWKS at once");
    assert.deepEqual(await d1(gw, `SELECT kid FROM signing_keys WHERE kid = ${sqlText(k1)}`), []);
    assert.deepEqual(await activeKid(), [k2], "the active key is untouched");

    await refusedBy(token, retiredAt + TTL * 1000);
    await assertProblem(await authed(`${gw.url}/auth/me`, token), 401, "invalid_token");
    await assertProblem(await retire(k1), 404, "key_not_found");
  });

  test("the active key: a fresh key signs at once; its tokens and its assertions stop counting", async () => {
    // kA: retired by a rotation, still published; kB: active.
    const { old_kid: kA, new_kid: kB } = await rotate();
    const user = await signup(gw, randomEmail("retire-active"));
    // A token of kA, never seen: verified by the gateway, which signs its assertion with kB.
    const keyA = await signingKey(gw, { kid: kA });
    const tokenA = await mint(keyA, claimsFor(gw, user.user));
    const tokenB = user.access_token;
    const first = await origin(tokenA);
    assert.equal(first.status, 200, JSON.stringify(first.body));
    assert.equal(JSON.parse(Buffer.from(first.body.identity.assertion.split(".")[0], "base64url")).kid, kB);
    assert.equal((await hello(tokenB)).status, 200);

    const { result, event } = await withEvent(gw, (e) => e.type === "key_retired" && e.data.kid === kB, () => retire(kB));
    const retiredAt = Date.now();
    const body = await json(result);
    assert.equal(result.status, 200, JSON.stringify(body));
    const kC = body.new_kid;
    assert.ok(kC && kC !== kB && kC !== kA, JSON.stringify(body));
    assert.deepEqual(event.data, { kid: kB, new_kid: kC });
    assert.deepEqual(await activeKid(), [kC]);
    assert.deepEqual((await jwksKids()).sort(), [kA, kC].sort());

    // kB's cached token is refused...
    await refusedBy(tokenB, retiredAt + TTL * 1000);
    await assertProblem(await authed(`${gw.url}/auth/me`, tokenB), 401, "invalid_token");
    // ...kA's is not, but its assertion (signed by kB, and cached with it) is
    // signed anew by kC, and the origin can verify it against the JWKS.
    const again = await origin(tokenA);
    assert.equal(again.status, 200, JSON.stringify(again.body));
    const { payload, protectedHeader } = await jwtVerify(
      again.body.identity.assertion,
      createRemoteJWKSet(new URL(`${gw.url}/.well-known/jwks.json`)),
      { issuer: gw.url, audience: gw.origin.url, typ: "portcullis-assertion+jwt" },
    );
    assert.equal(protectedHeader.kid, kC);
    assert.equal(payload.sub, user.user.id);
    // Signing never stopped: new tokens carry kC and pass.
    const fresh = await json(await login(gw, user.user.email));
    assert.equal(header(fresh.access_token).kid, kC);
    assert.equal((await hello(fresh.access_token)).status, 200);
  });

  test("a key retired by another isolate stops counting here within KEY_CACHE_TTL, cached tokens included", async () => {
    // kX signs a token this isolate caches; a rotation leaves kX published.
    const user = await signup(gw, randomEmail("retire-elsewhere"));
    const kX = header(user.access_token).kid;
    const keyX = await signingKey(gw, { kid: kX });
    const neverSeen = await mint(keyX, claimsFor(gw, user.user));
    await rotate();
    assert.equal((await hello(user.access_token)).status, 200);
    // Another isolate's retirement, as this one sees it: the row is gone from
    // D1 and nobody told this isolate (it did not invalidate its keys).
    // (Nothing here reads the JWKS before the refusal: that reloads the keys.)
    await d1(gw, `DELETE FROM signing_keys WHERE kid = ${sqlText(kX)}`);
    const deletedAt = Date.now();
    await refusedBy(user.access_token, deletedAt + TTL * 1000 + 1_000);
    // Refused from then on, cached or never seen (no own-signature shortcut for a withdrawn key).
    for (const token of [user.access_token, neverSeen]) {
      await assertProblem(await hello(token), 401, "invalid_token");
    }
    assert.ok(!(await jwksKids()).includes(kX));
  });

  test("a token claiming a longer life than ACCESS_TTL plus 30 s is refused, though validly signed by our key", async () => {
    const user = await signup(gw, randomEmail("retire-lifetime"));
    const key = await signingKey(gw);
    const now = Math.floor(Date.now() / 1000);
    const atLimit = await mint(key, claimsFor(gw, user.user, { iat: now, exp: now + 900 + LEEWAY }));
    assert.equal((await hello(atLimit)).status, 200);
    assert.equal((await authed(`${gw.url}/auth/me`, atLimit)).status, 200);
    for (const exp of [now + 900 + LEEWAY + 1, now + 365 * 86_400]) {
      const long = await mint(key, claimsFor(gw, user.user, { iat: now, exp }));
      await assertProblem(await hello(long), 401, "invalid_token");
      await assertProblem(await authed(`${gw.url}/auth/me`, long), 401, "invalid_token");
    }
  });
});
