// Fail closed: the Worker in wrangler dev with a broken D1, KV or Queue
// binding (see lib/faults.mjs). Requests that need the broken piece get a
// 503 problem+json, never a 500; the gateway never forwards a request it
// could not verify; an event the queue refused is kept in the D1 outbox and
// delivered by the cron trigger once the queue is back.
import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import fsp from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { generateKeyPair, SignJWT } from "jose";
import { startGateway, post, json, randomEmail } from "./harness.mjs";
import { faultyConfig } from "./lib/faults.mjs";
import { d1 } from "./lib/d1.mjs";

const PASSWORD = "correct horse battery staple";

async function assertUnavailable(res, what) {
  const body = await json(res);
  assert.equal(res.status, 503, `${what}: ${JSON.stringify(body)}`);
  assert.match(res.headers.get("content-type"), /^application\/problem\+json/, what);
  assert.equal(body.code, "service_unavailable", what);
  assert.ok(Number(res.headers.get("retry-after")) >= 1, `${what}: Retry-After`);
  assert.doesNotMatch(JSON.stringify(body), /SQLITE|no such table|binding/i, `${what}: the cause stays in the log`);
}

/** A loopback origin that counts what reaches it. */
async function countingOrigin() {
  const seen = [];
  const server = http.createServer((req, res) => {
    seen.push(`${req.method} ${req.url}`);
    res.writeHead(200, { "content-type": "application/json" });
    res.end('{"ok":true}');
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return { url: `http://127.0.0.1:${server.address().port}`, seen, close: () => new Promise((r) => server.close(r)) };
}

test("D1 down: auth endpoints answer 503 and the gateway forwards nothing it cannot verify", async () => {
  const fault = await faultyConfig({ emptyD1: true });
  const origin = await countingOrigin();
  const gw = await startGateway({ args: fault.args, vars: { ORIGIN_URL: origin.url } });
  try {
    const email = randomEmail("d1down");
    await assertUnavailable(await post(`${gw.url}/auth/signup`, { email, password: PASSWORD }), "signup");
    await assertUnavailable(await post(`${gw.url}/auth/login`, { email, password: PASSWORD }), "login");
    await assertUnavailable(await post(`${gw.url}/auth/magic-link`, { email }), "magic-link");
    await assertUnavailable(await post(`${gw.url}/auth/refresh`, { refresh_token: "a".repeat(43) }), "refresh");
    await assertUnavailable(await fetch(`${gw.url}/.well-known/jwks.json`), "jwks");

    // A well-formed token whose key the gateway cannot load: never forwarded.
    const { privateKey } = await generateKeyPair("EdDSA", { crv: "Ed25519" });
    const token = await new SignJWT({ sid: "s", roles: [], email })
      .setProtectedHeader({ alg: "EdDSA", typ: "at+jwt", kid: "k1" })
      .setSubject("u").setIssuer(gw.url).setAudience("portcullis").setIssuedAt().setExpirationTime("5m")
      .sign(privateKey);
    const res = await fetch(`${gw.url}/api/hello`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(res.status, 503, "the key set could not be loaded: unavailable, not forwarded");
    assert.match(res.headers.get("content-type"), /^application\/problem\+json/);
    await res.arrayBuffer();
    assert.deepEqual(origin.seen, [], "nothing reached the origin");
    // Public routes need no D1 and still work.
    const pub = await fetch(`${gw.url}/api/public/ping`);
    assert.equal(pub.status, 200);
    await pub.arrayBuffer();
    assert.deepEqual(origin.seen, ["GET /api/public/ping"]);
  } finally {
    await gw.stop();
    await origin.close();
    await fault.cleanup();
  }
});

test("KV down: link tokens fail closed — none is issued (the log says why), links cannot be used; what does not need KV still works", async () => {
  const fault = await faultyConfig({ noKv: true });
  const gw = await startGateway({ args: fault.args });
  try {
    const email = randomEmail("kvdown");
    const signup = await post(`${gw.url}/auth/signup`, { email, password: PASSWORD });
    assert.equal(signup.status, 201);
    const { access_token } = await json(signup);
    // Magic link and reset requests answer before the address is even looked up (the
    // same answer, in the same time, for any address); the link is issued after the
    // answer, and without KV it is not: nothing is written, the log says why.
    for (const p of ["/auth/magic-link", "/auth/password/forgot"]) {
      const res = await post(`${gw.url}${p}`, { email });
      assert.equal(res.status, 200, p);
      await res.arrayBuffer();
    }
    const failures = () => gw.logs().filter((l) => l.includes("portcullis.error sending an email token"));
    for (let waited = 0; failures().length < 2 && waited < 10_000; waited += 100) await new Promise((r) => setTimeout(r, 100));
    assert.equal(failures().length, 2, gw.logs().join("\n"));
    assert.deepEqual(await d1(gw, "SELECT hash FROM email_tokens"), [], "nothing written when the hint could not be");
    assert.equal(gw.events().filter((e) => e.type === "magic_link_requested" || e.type === "password_reset_requested").length, 0);
    await assertUnavailable(await post(`${gw.url}/auth/magic-link/verify`, { token: "A".repeat(43) }), "magic-link/verify");
    await assertUnavailable(
      await post(`${gw.url}/auth/email/verify/request`, undefined, { authorization: `Bearer ${access_token}` }),
      "email/verify/request",
    );
    // Codes are decided in D1 alone.
    const otp = await post(`${gw.url}/auth/otp`, { email });
    assert.equal(otp.status, 200);
    const login = await post(`${gw.url}/auth/login`, { email, password: PASSWORD });
    assert.equal(login.status, 200);
  } finally {
    await gw.stop();
    await fault.cleanup();
  }
});

test("Queue down: the action succeeds, its events wait in the outbox and are delivered by the cron trigger", async () => {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "portcullis-e2e-outbox-"));
  const fault = await faultyConfig({ noQueue: true });
  const email = randomEmail("queuedown");
  try {
    const down = await startGateway({ args: fault.args, persistDir: dir });
    try {
      const signup = await post(`${down.url}/auth/signup`, { email, password: PASSWORD });
      assert.equal(signup.status, 201, JSON.stringify(await json(signup)));
      const login = await post(`${down.url}/auth/login`, { email, password: PASSWORD });
      assert.equal(login.status, 200);
      await login.arrayBuffer();
      await down.waitForLog("portcullis.outbox_queued");
      assert.equal(down.events().length, 0, "no event was delivered while the queue was down");
    } finally {
      await down.stop();
    }
    const waiting = await d1({ persistDir: dir }, "SELECT id, body FROM event_outbox ORDER BY created_at, id");
    const types = waiting.map((r) => JSON.parse(r.body).type).sort();
    assert.deepEqual(types, ["login", "user_created"]);

    const up = await startGateway({ persistDir: dir, args: ["--test-scheduled"] });
    try {
      const res = await fetch(`${up.url}/__scheduled?cron=${encodeURIComponent("* * * * *")}`);
      await res.arrayBuffer();
      const created = await up.waitForEvent((e) => e.type === "user_created" && e.data.email === email, 20_000);
      const login = await up.waitForEvent((e) => e.type === "login" && e.data.email === email, 20_000);
      const ids = new Set(waiting.map((r) => r.id));
      assert.ok(ids.has(created.id) && ids.has(login.id), "the very events that were kept are delivered");
      assert.deepEqual(await d1(up, "SELECT id FROM event_outbox"), [], "the outbox is empty again");
    } finally {
      await up.stop();
    }
  } finally {
    await fault.cleanup();
    await fsp.rm(dir, { recursive: true, force: true });
  }
});
