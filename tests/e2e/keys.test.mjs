// Signing-key rotation end to end: by the admin API and by the cron trigger
// (wrangler dev --test-scheduled), with old tokens verifying — at the auth API
// and at the gateway — until they expire and not after, the JWKS keeping the
// retired key exactly as long as tokens it signed can be valid, and racing
// rotations never making two active keys.
import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
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
    assert.equal(retired.publish_until - retired.retired_at, 2 * KEY_CACHE_TTL + ACCESS_TTL + ASSERTION_TTL + LEEWAY);
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
    assert.ok(rotatedAt <= retired.retired_at + 1);
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
    const tokens = await Promise.all(Array.from({ length: 6 }, () => freshAdmin()));
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

// An expired key cache is reloaded in the background while the gateway keeps
// using it (for at most another KEY_CACHE_TTL), so D1 being slow or down does
// not stall token checks every KEY_CACHE_TTL; past that grace it fails closed.
describe("an expired key cache while D1 is down", () => {
  const TTL = 8; // grace: another 8 s
  let gw;
  before(async () => {
    gw = await startGateway({ vars: { KEY_CACHE_TTL: String(TTL) }, origin: true });
  });
  after(async () => {
    await d1(gw, "ALTER TABLE signing_keys_offline RENAME TO signing_keys").catch(() => {});
    await gw?.stop();
  });

  test("fresh tokens still pass on the cached keys, then are refused with 503 once the grace is over", async () => {
    const email = randomEmail("keys-outage");
    const auth = await signup(gw, email); // loads the keys (or they were loaded at start-up, earlier)
    const loadedBy = Date.now();
    const key = await signingKey(gw);
    const [b, c] = [await mint(key, claimsFor(gw, auth.user)), await mint(key, claimsFor(gw, auth.user))];
    const call = (token) => fetch(`${gw.url}/api/hello`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal((await call(auth.access_token)).status, 200);

    // D1 loses the key table; the cache expires.
    await d1(gw, "ALTER TABLE signing_keys RENAME TO signing_keys_offline");
    await sleep(Math.max(0, loadedBy + TTL * 1000 + 500 - Date.now()));

    // A never-seen token is verified with the expired cache (its background reload fails).
    const res = await call(b);
    assert.equal(res.status, 200);
    const { identity } = await res.json();
    assert.equal(identity.user_id, auth.user.id);
    assert.equal(identity.assertion.split(".").length, 3);
    // The auth API, which needs D1 anyway, fails closed meanwhile.
    await assertProblem(await login(gw, email), 503, "service_unavailable");
    await gw.waitForLog((l) => l.includes("background key reload"));

    // Past the grace the cached keys are not used any more: fail closed.
    await sleep(Math.max(0, loadedBy + 2 * TTL * 1000 + 500 - Date.now()));
    const refused = await call(c);
    assert.equal(refused.status, 503);
    assert.match(refused.headers.get("content-type"), /problem\+json/);

    // D1 is back: the next request loads the keys and passes.
    await d1(gw, "ALTER TABLE signing_keys_offline RENAME TO signing_keys");
    assert.equal((await call(c)).status, 200);
  });
});
