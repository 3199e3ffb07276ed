// Refresh: before expiry, exactly one in flight across concurrent calls and
// across tabs (a rotated refresh token is never presented twice: the fake
// gateway, like the real one, revokes the session if it is), and the
// fetch wrapper's refresh-once-and-retry-once on a 401.
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { PortcullisClient, PortcullisError, memoryStorage } from "../dist/index.js";
import { clock, fakeGateway, fakeLocks, json, problem, until } from "./fake-gateway.mjs";

const PASSWORD = "correct horse battery";
const INVALID_TOKEN = 'Bearer realm="portcullis", error="invalid_token", error_description="the token has expired"';
let gateways = 0;

/** A fake gateway of its own base URL (so that tabs of one test share a lock and a channel name, and tests do not). */
function gateway(options = {}) {
  return fakeGateway({ base: `https://gw-${++gateways}.example`, ...options });
}

function make(gw, options = {}) {
  return new PortcullisClient({ baseUrl: gw.base, fetch: gw.fetch, locks: null, channel: null, ...options });
}

const lockName = (gw) => `portcullis-session ${gw.base}/auth`;

function noReuse(gw) {
  for (const [sid, s] of gw.sessions) {
    assert.equal(s.reused, false, `session ${sid}: a rotated refresh token was presented again`);
    assert.equal(s.revoked, false, `session ${sid} was revoked`);
  }
}

describe("before expiry", () => {
  test("no refresh while the token has more than the margin (30 s) left; one refresh inside it", async () => {
    const gw = gateway();
    const now = clock();
    const client = make(gw, { now });
    await client.signIn({ email: "ada@example.com", password: PASSWORD });
    now.advance(869_000); // 31 s left
    await client.me();
    assert.equal(gw.count("POST /auth/refresh"), 0);
    assert.equal(gw.requests.at(-1).headers.authorization, "Bearer at-1");
    now.advance(2_000); // 29 s left
    await client.me();
    assert.equal(gw.count("POST /auth/refresh"), 1);
    assert.deepEqual(gw.of("POST /auth/refresh")[0].body, { refresh_token: "rt-1" });
    assert.equal(gw.requests.at(-1).headers.authorization, "Bearer at-2");
    const state = await client.getState();
    assert.equal(state.expiresAt, now() + 900_000);
    await client.me();
    assert.equal(gw.count("POST /auth/refresh"), 1, "the new token is good for a while");
    noReuse(gw);
  });

  test("a short-lived token refreshes at half its lifetime, and refreshMarginSeconds sets the margin", async () => {
    const gw = gateway({ accessTtl: 20 });
    const now = clock();
    const client = make(gw, { now });
    await client.signIn({ email: "ada@example.com", password: PASSWORD });
    now.advance(9_999);
    assert.equal(await client.getAccessToken(), "at-1");
    now.advance(1);
    assert.equal(await client.getAccessToken(), "at-2");

    const gw2 = gateway();
    const now2 = clock();
    const client2 = make(gw2, { now: now2, refreshMarginSeconds: 120 });
    await client2.signIn({ email: "ada@example.com", password: PASSWORD });
    now2.advance(779_000); // 121 s left
    assert.equal(await client2.getAccessToken(), "at-1");
    now2.advance(2_000);
    assert.equal(await client2.getAccessToken(), "at-2");
  });

  test("many concurrent calls around an expiring token: exactly one refresh, and every call uses the new token", async () => {
    const gw = gateway();
    gw.on("GET /api/items", (req) => json(200, { auth: req.headers.authorization }));
    const now = clock();
    const client = make(gw, { now });
    await client.signIn({ email: "ada@example.com", password: PASSWORD });
    now.advance(880_000);
    const release = gw.hold("POST /auth/refresh");
    const calls = [
      ...Array.from({ length: 20 }, () => client.me()),
      ...Array.from({ length: 10 }, () => client.fetch(`${gw.base}/api/items`).then((r) => r.json())),
      client.getAccessToken(),
      client.refresh(),
    ];
    await until(() => gw.count("POST /auth/refresh") === 1, "the refresh to be sent");
    release();
    const results = await Promise.all(calls);
    assert.equal(gw.count("POST /auth/refresh"), 1);
    for (const r of results.slice(20, 30)) assert.equal(r.auth, "Bearer at-2");
    for (const req of gw.of("GET /auth/me")) assert.equal(req.headers.authorization, "Bearer at-2");
    assert.equal(results[30], "at-2");
    assert.equal(results[31].user.email, "ada@example.com");
    noReuse(gw);
  });

  test("a refresh that fails for a passing reason (503) keeps the session and sends the token it has", async () => {
    const gw = gateway();
    const now = clock();
    const client = make(gw, { now });
    await client.signIn({ email: "ada@example.com", password: PASSWORD });
    now.advance(880_000);
    gw.on("POST /auth/refresh", () => problem(503, "service_unavailable", { headers: { "retry-after": "5" } }));
    await assert.rejects(client.refresh(), (e) => e.code === "service_unavailable" && e.retryAfter === 5);
    const me = await client.me();
    assert.equal(me.email, "ada@example.com");
    assert.equal(gw.requests.at(-1).headers.authorization, "Bearer at-1");
    assert.ok(await client.getState());
  });
});

describe("a 401 from the gateway", () => {
  test("invalid_token: one refresh, the request sent once more with the new token", async () => {
    const gw = gateway();
    const client = make(gw);
    await client.signIn({ email: "ada@example.com", password: PASSWORD });
    gw.kill("at-1"); // e.g. signed by a key retired at once
    const me = await client.me();
    assert.equal(me.email, "ada@example.com");
    assert.deepEqual(
      gw.requests.slice(1).map((r) => `${r.method} ${r.path} ${r.headers.authorization ?? ""}`.trim()),
      ["GET /auth/me Bearer at-1", "POST /auth/refresh", "GET /auth/me Bearer at-2"],
    );
    noReuse(gw);
  });

  test("the fetch wrapper retries once with the same method and body, and hands back a second 401 without looping", async () => {
    const gw = gateway();
    const client = make(gw);
    await client.signIn({ email: "ada@example.com", password: PASSWORD });
    const seen = [];
    gw.on("POST /api/orders", (req) => {
      seen.push([req.headers.authorization, req.body]);
      return problem(401, "token_expired", { headers: { "www-authenticate": INVALID_TOKEN } });
    });
    const res = await client.fetch(`${gw.base}/api/orders`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ item: 7 }),
    });
    assert.equal(res.status, 401);
    assert.equal((await res.json()).code, "token_expired");
    assert.deepEqual(seen, [
      ["Bearer at-1", { item: 7 }],
      ["Bearer at-2", { item: 7 }],
    ]);
    assert.equal(gw.count("POST /auth/refresh"), 1);
  });

  test("a streamed body is sent again on the retry", async () => {
    const gw = gateway();
    const client = make(gw);
    await client.signIn({ email: "ada@example.com", password: PASSWORD });
    gw.kill("at-1");
    gw.on("PUT /api/blob", (req) =>
      req.headers.authorization === "Bearer at-1"
        ? problem(401, "token_expired", { headers: { "www-authenticate": INVALID_TOKEN } })
        : json(200, { got: req.rawBody }),
    );
    const body = new ReadableStream({
      start(c) {
        c.enqueue(new TextEncoder().encode("chunk-1 "));
        c.enqueue(new TextEncoder().encode("chunk-2"));
        c.close();
      },
    });
    const res = await client.fetch(`${gw.base}/api/blob`, { method: "PUT", body, duplex: "half" });
    assert.deepEqual(await res.json(), { got: "chunk-1 chunk-2" });
  });

  test("a 401 a refresh cannot cure is handed back without one", async () => {
    const gw = gateway();
    const client = make(gw);
    await client.signIn({ email: "ada@example.com", password: PASSWORD });
    gw.on("GET /api/admin", () =>
      problem(401, "insufficient_user_authentication", {
        headers: { "www-authenticate": 'Bearer error="insufficient_user_authentication", max_age=300' },
      }),
    );
    gw.on("GET /api/plain", () => new Response("no", { status: 401 }));
    assert.equal((await client.fetch(`${gw.base}/api/admin`)).status, 401);
    assert.equal((await client.fetch(`${gw.base}/api/plain`)).status, 401);
    assert.equal(gw.count("POST /auth/refresh"), 0);
    // A 403 is never a reason to refresh either.
    gw.on("GET /api/forbidden", () => problem(403, "insufficient_role"));
    assert.equal((await client.fetch(`${gw.base}/api/forbidden`)).status, 403);
    assert.equal(gw.count("POST /auth/refresh"), 0);
  });

  test("a 401 for a token already replaced: sent again with the new one, no second refresh", async () => {
    const gw = gateway();
    const client = make(gw);
    await client.signIn({ email: "ada@example.com", password: PASSWORD });
    gw.kill("at-1");
    let releaseSlow;
    const slowGate = new Promise((r) => (releaseSlow = r));
    gw.on("GET /api/slow", async (req) => {
      if (req.headers.authorization === "Bearer at-1") {
        await slowGate;
        return problem(401, "token_expired", { headers: { "www-authenticate": INVALID_TOKEN } });
      }
      return json(200, { ok: req.headers.authorization });
    });
    const slow = client.fetch(`${gw.base}/api/slow`); // sent with at-1, answered later
    await until(() => gw.count("GET /api/slow") === 1, "the slow call to be sent");
    await client.me(); // 401, refresh, retry
    assert.equal(gw.count("POST /auth/refresh"), 1);
    releaseSlow();
    assert.deepEqual(await (await slow).json(), { ok: "Bearer at-2" });
    assert.equal(gw.count("POST /auth/refresh"), 1);
    noReuse(gw);
  });

  test("many concurrent 401s: one refresh between them", async () => {
    const gw = gateway();
    const client = make(gw);
    await client.signIn({ email: "ada@example.com", password: PASSWORD });
    gw.kill("at-1");
    const release = gw.hold("POST /auth/refresh");
    const calls = Array.from({ length: 15 }, () => client.me());
    await until(() => gw.count("POST /auth/refresh") === 1 && gw.count("GET /auth/me") === 15, "every call's first answer");
    release();
    await Promise.all(calls);
    assert.equal(gw.count("POST /auth/refresh"), 1);
    assert.equal(gw.count("GET /auth/me"), 30);
    noReuse(gw);
  });

  test("a session the gateway ended: the refresh is refused, the session forgotten, the first 401 reported", async () => {
    const gw = gateway();
    const client = make(gw);
    await client.signIn({ email: "ada@example.com", password: PASSWORD });
    const changes = [];
    client.onChange((s) => changes.push(s));
    gw.sessions.get("s-1").revoked = true; // e.g. a ban, or a logout elsewhere
    const err = await client.me().catch((e) => e);
    assert.ok(err instanceof PortcullisError);
    assert.equal(err.code, "session_revoked");
    assert.equal(gw.count("POST /auth/refresh"), 1);
    assert.equal(await client.getState(), null);
    assert.deepEqual(changes, [null]);
    // Signed out now: the next call does not try again.
    await client.me().catch(() => undefined);
    assert.equal(gw.count("POST /auth/refresh"), 1);
  });

  test("cookie mode: a 401 without a token (the browser dropped the expired access cookie) refreshes through the cookie", async () => {
    const gw = gateway({ cookieMode: true });
    const client = make(gw, { mode: "cookie" });
    await client.signIn({ email: "ada@example.com", password: PASSWORD });
    delete gw.jar.access; // Max-Age passed
    const me = await client.me();
    assert.equal(me.email, "ada@example.com");
    assert.deepEqual(
      gw.requests.slice(1).map((r) => `${r.method} ${r.path}`),
      ["GET /auth/me", "POST /auth/refresh", "GET /auth/me"],
    );
    assert.ok(gw.jar.access);
  });

  test("cookie mode: a 401 that is not about the token (a wrong code) is answered as is, not refreshed and sent again", async () => {
    const gw = gateway({ cookieMode: true });
    const client = make(gw, { mode: "cookie" });
    await client.signIn({ email: "ada@example.com", password: PASSWORD });
    gw.on("POST /api/confirm", () => problem(401, "invalid_code", { headers: { "www-authenticate": 'Bearer realm="portcullis"' } }));
    const res = await client.fetch(`${gw.base}/api/confirm`, { method: "POST", body: "{}" });
    assert.equal(res.status, 401);
    assert.equal((await res.json()).code, "invalid_code");
    assert.equal(gw.count("POST /api/confirm"), 1, "the wrong code is sent once");
    assert.equal(gw.count("POST /auth/refresh"), 0);
  });

  test("cookie mode: a 401 to a HEAD (no body) still refreshes through the cookie", async () => {
    const gw = gateway({ cookieMode: true });
    const client = make(gw, { mode: "cookie" });
    await client.signIn({ email: "ada@example.com", password: PASSWORD });
    delete gw.jar.access;
    gw.on("HEAD /api/x", (req) =>
      req.cookies.access
        ? new Response(null, { status: 200 })
        : new Response(null, { status: 401, headers: { "www-authenticate": 'Bearer realm="portcullis"', "content-type": "application/problem+json" } }),
    );
    const res = await client.fetch(`${gw.base}/api/x`, { method: "HEAD" });
    assert.equal(res.status, 200);
    assert.equal(gw.count("POST /auth/refresh"), 1);
  });

  test("cookie mode: an origin's 401 whose body never ends does not hold the call", async () => {
    const gw = gateway({ cookieMode: true });
    const client = make(gw, { mode: "cookie" });
    await client.signIn({ email: "ada@example.com", password: PASSWORD });
    gw.on("GET /api/stream", () => {
      // One event, then the stream stays open for good.
      const endless = new ReadableStream({ start: (c) => c.enqueue(new TextEncoder().encode("data: x\n\n")) });
      return new Response(endless, { status: 401, headers: { "www-authenticate": 'Bearer realm="origin"', "content-type": "text/event-stream" } });
    });
    const res = await client.fetch(`${gw.base}/api/stream`);
    assert.equal(res.status, 401);
    assert.equal(gw.count("GET /api/stream"), 1, "an origin's own 401 is handed back");
    assert.equal(gw.count("POST /auth/refresh"), 0);
    await res.body?.cancel();
  });

  test("cookie mode: an origin's JSON 401 is not sent again, and a problem body that stalls holds the call at most 2 s", { timeout: 10_000 }, async () => {
    const gw = gateway({ cookieMode: true });
    const client = make(gw, { mode: "cookie" });
    await client.signIn({ email: "ada@example.com", password: PASSWORD });
    const bare = { "www-authenticate": 'Bearer realm="origin"' };
    gw.on("POST /api/pin", () => json(401, { code: "wrong_pin" }, bare));
    const pin = await client.fetch(`${gw.base}/api/pin`, { method: "POST", body: "{}" });
    assert.equal(pin.status, 401);
    assert.equal((await pin.json()).code, "wrong_pin", "the body handed back is whole");
    assert.equal(gw.count("POST /api/pin"), 1);
    // A bodiless 401 to a POST (a service worker's, say) is not sent again either.
    gw.on("POST /api/pay", () => new Response(null, { status: 401, headers: bare }));
    assert.equal((await client.fetch(`${gw.base}/api/pay`, { method: "POST", body: "{}" })).status, 401);
    assert.equal(gw.count("POST /api/pay"), 1);
    gw.on("GET /api/stall", () => {
      const stalled = new ReadableStream({ start: (c) => c.enqueue(new TextEncoder().encode('{"code":')) });
      return new Response(stalled, { status: 401, headers: { ...bare, "content-type": "application/problem+json" } });
    });
    const started = Date.now();
    const res = await client.fetch(`${gw.base}/api/stall`);
    assert.equal(res.status, 401);
    assert.ok(Date.now() - started < 5_000);
    const reader = res.body.getReader();
    const first = await reader.read();
    assert.equal(new TextDecoder().decode(first.value), '{"code":', "what arrived is still the caller's to read");
    assert.equal(gw.count("GET /api/stall"), 1);
    assert.equal(gw.count("POST /auth/refresh"), 0);
    await reader.cancel();
  });

  test("cookie mode on a fresh page (nothing stored): the cookies still carry the session through a refresh", async () => {
    const gw = gateway({ cookieMode: true });
    await make(gw, { mode: "cookie" }).signIn({ email: "ada@example.com", password: PASSWORD });
    delete gw.jar.access;
    const page = make(gw, { mode: "cookie" });
    assert.equal(await page.getState(), null);
    assert.equal((await page.me()).email, "ada@example.com");
    assert.equal((await page.getState()).user.email, "ada@example.com");
  });
});

describe("across tabs", () => {
  test("a shared storage (localStorage): two tabs racing make one refresh; the second reads the storage again under the lock", async () => {
    const gw = gateway();
    const storage = memoryStorage(); // one storage for both tabs, as localStorage is
    const locks = fakeLocks();
    const now = clock();
    const tabA = make(gw, { storage, locks, now });
    const tabB = make(gw, { storage, locks, now });
    await tabA.signIn({ email: "ada@example.com", password: PASSWORD });
    now.advance(880_000);
    const release = gw.hold("POST /auth/refresh");
    const a = tabA.me();
    await until(() => gw.count("POST /auth/refresh") === 1, "tab A's refresh");
    const b = tabB.me(); // decides to refresh with rt-1 too, and waits for the lock
    await until(() => locks.waiting(lockName(gw)) === 1, "tab B to wait for the lock");
    release();
    await Promise.all([a, b]);
    assert.equal(gw.count("POST /auth/refresh"), 1);
    for (const req of gw.of("GET /auth/me")) assert.equal(req.headers.authorization, "Bearer at-2");
    noReuse(gw);
  });

  test("per-tab storage holding one session (a duplicated tab): the new tokens come over the BroadcastChannel, never a second refresh", async () => {
    const gw = gateway();
    const locks = fakeLocks();
    const now = clock();
    const storageA = memoryStorage();
    const tabA = make(gw, { storage: storageA, locks, now, channel: undefined });
    await tabA.signIn({ email: "ada@example.com", password: PASSWORD });
    const storageB = memoryStorage();
    storageB.set(storageA.get()); // sessionStorage is copied into a duplicated tab
    const tabB = make(gw, { storage: storageB, locks, now, channel: undefined });
    const seenByB = [];
    tabB.onChange((s) => seenByB.push(s?.user.email ?? null));
    try {
      now.advance(880_000);
      const release = gw.hold("POST /auth/refresh");
      const a = tabA.me();
      await until(() => gw.count("POST /auth/refresh") === 1, "tab A's refresh");
      const b = tabB.me();
      await until(() => locks.waiting(lockName(gw)) === 1, "tab B to wait for the lock");
      release();
      await Promise.all([a, b]);
      assert.equal(gw.count("POST /auth/refresh"), 1);
      assert.equal(JSON.parse(storageB.get()).refreshToken, "rt-2");
      for (const req of gw.of("GET /auth/me")) assert.equal(req.headers.authorization, "Bearer at-2");
      assert.deepEqual(seenByB, ["ada@example.com"]);
      noReuse(gw);
      // A sign-out in one tab signs the other out of that session too.
      await tabA.signOut();
      await until(async () => (await tabB.getState()) === null, "tab B to hear of the sign-out");
      assert.deepEqual(seenByB, ["ada@example.com", null]);
    } finally {
      tabA.close();
      tabB.close();
    }
  });

  test("cookie mode, per-tab storage: two tabs racing make one refresh; the second takes the first's over the channel", async () => {
    const gw = gateway({ cookieMode: true });
    const locks = fakeLocks();
    const now = clock();
    const tabA = make(gw, { mode: "cookie", locks, now, channel: undefined });
    const tabB = make(gw, { mode: "cookie", locks, now, channel: undefined });
    try {
      await tabA.signIn({ email: "ada@example.com", password: PASSWORD });
      await until(async () => (await tabB.getState()) !== null, "tab B to hear of the sign-in");
      now.advance(880_000);
      const release = gw.hold("POST /auth/refresh");
      const a = tabA.me();
      await until(() => gw.count("POST /auth/refresh") === 1, "tab A's refresh");
      const b = tabB.me();
      await until(() => locks.waiting(lockName(gw)) === 1, "tab B to wait for the lock");
      release();
      await Promise.all([a, b]);
      assert.equal(gw.count("POST /auth/refresh"), 1);
      assert.equal((await tabB.getState()).expiresAt, now() + 900_000);
      // Each tab holds one mark, naming its last state.
      const marks = locks.heldNames().filter((n) => n.startsWith(`${lockName(gw)} latest `));
      assert.equal(marks.length, 2, marks.join("\n"));
      assert.equal(new Set(marks.map((n) => n.split(" ").slice(-4, -1).join(" "))).size, 1, "both name the refreshed state");
    } finally {
      tabA.close();
      tabB.close();
    }
    await until(() => locks.heldNames().length === 0, "close() to let go of the marks");
  });

  test("token mode: a tab signed in on its own keeps its session when another tab signs in or refreshes", async () => {
    const gw = gateway();
    const locks = fakeLocks();
    const tabA = make(gw, { locks, channel: undefined });
    const tabB = make(gw, { locks, channel: undefined });
    const heardByB = [];
    tabB.onChange((s) => heardByB.push(s?.user.session_id ?? null));
    try {
      await tabB.signIn({ email: "bob@example.com", password: PASSWORD });
      await tabA.signIn({ email: "ada@example.com", password: PASSWORD });
      await tabA.refresh();
      await tabA.signOut();
      // Tab B's refresh first drains the messages A sent before it.
      await tabB.refresh();
      assert.equal((await tabB.getState()).user.email, "bob@example.com");
      assert.deepEqual(heardByB, ["s-1", "s-1"], "B heard only its own sign-in and refresh");
      noReuseOf(gw, "s-1");
    } finally {
      tabA.close();
      tabB.close();
    }
  });

  test("cookie mode: the cookies are the browser's one session; tabs adopt each other's sign-in, refresh and sign-out", async () => {
    const gw = gateway({ cookieMode: true });
    const locks = fakeLocks();
    const tabA = make(gw, { mode: "cookie", locks, channel: undefined });
    const tabB = make(gw, { mode: "cookie", locks, channel: undefined });
    const heardByB = [];
    tabB.onChange((state) => heardByB.push(state && state.user.email));
    try {
      await tabA.signIn({ email: "ada@example.com", password: PASSWORD });
      await until(() => heardByB.length === 1, "tab B to hear of the sign-in");
      assert.equal((await tabB.getState()).user.email, "ada@example.com");
      await tabA.refresh();
      await until(() => heardByB.length === 2, "tab B to hear of the refresh");
      await tabA.signOut();
      await until(() => heardByB.length === 3, "tab B to hear of the sign-out");
      assert.deepEqual(heardByB, ["ada@example.com", "ada@example.com", null]);
      assert.equal(await tabB.getState(), null);
      assert.equal(gw.count("POST /auth/refresh"), 1);
    } finally {
      tabA.close();
      tabB.close();
    }
  });
});

test("signOut waits for a refresh in flight and ends the session with the token it gave", async () => {
  const gw = gateway();
  const client = make(gw);
  await client.signIn({ email: "ada@example.com", password: PASSWORD });
  const release = gw.hold("POST /auth/refresh");
  const refreshing = client.refresh();
  await until(() => gw.count("POST /auth/refresh") === 1, "the refresh");
  const out = client.signOut();
  release();
  await Promise.all([refreshing, out]);
  assert.deepEqual(gw.of("POST /auth/logout")[0].body, { refresh_token: "rt-2" });
  assert.equal(gw.sessions.get("s-1").revoked, true);
  assert.equal(gw.sessions.get("s-1").reused, false);
});

function noReuseOf(gw, sid) {
  assert.equal(gw.sessions.get(sid).reused, false);
  assert.equal(gw.sessions.get(sid).revoked, false);
}
