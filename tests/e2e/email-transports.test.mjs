// E2E email transports in the real runtime. Each HTTP provider (resend,
// postmark, sendgrid) is pointed at a local stand-in that speaks its
// documented send API — endpoint, authentication header, JSON shape, and its
// success and error answers — and each case is an address whose prefix says
// how the stand-in answers:
//   ok-        accepted at once
//   throttled- 429 once, then accepted            → retried, delivered once
//   refused-   the provider's 4xx refusal          → dead-lettered at once
//   down-      the provider's 5xx, every time      → retried, then dead-lettered
//   slow-      no answer within EMAIL_TIMEOUT_MS   → retried, then dead-lettered
// The `cloudflare` transport goes through wrangler's local `send_email`
// binding, which checks and stores the MIME message as a .eml file.
import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { startGateway, post, json, randomEmail, sleep, ROOT } from "./harness.mjs";
import { d1, sqlText } from "./lib/d1.mjs";
import { faultyConfig } from "./lib/faults.mjs";

/** max_retries of the portcullis-events consumer in wrangler.toml. */
const MAX_RETRIES = Number(fs.readFileSync(path.join(ROOT, "wrangler.toml"), "utf8").match(/^max_retries = (\d+)$/m)[1]);
const KEY = `key_${crypto.randomBytes(12).toString("hex")}`;
const TIMEOUT_MS = 2_000;
const LINKS = {
  MAGIC_LINK_URL: "https://acme.example/magic?lang=x",
  PASSWORD_RESET_URL: "https://acme.example/reset",
  EMAIL_VERIFY_URL: "https://acme.example/verify",
};

async function until(what, fn, timeoutMs = 30_000, everyMs = 100) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

// ---------------------------------------------------------------------------
// The stand-ins: one server, each provider at its own path.
// ---------------------------------------------------------------------------

/** What each provider's API checks and answers, from its documentation. */
const PROVIDERS = {
  // https://resend.com/docs/api-reference/emails/send-email, …/errors
  resend: {
    path: "/emails",
    authorised: (h) => h.authorization === `Bearer ${KEY}`,
    unauthorised: { status: 401, body: { statusCode: 401, name: "missing_api_key", message: "Missing API key in the authorization header" } },
    recipient: (b) => (Array.isArray(b.to) ? b.to[0] : undefined),
    valid: (b) => typeof b.from === "string" && typeof b.subject === "string" && (b.html || b.text),
    invalid: { status: 422, body: { statusCode: 422, name: "missing_required_field", message: "Missing `from`, `to` or `subject`" } },
    accepted: () => ({ status: 200, body: { id: crypto.randomUUID() } }),
    throttled: { status: 429, body: { statusCode: 429, name: "rate_limit_exceeded", message: "Too many requests" } },
    refused: { status: 403, body: { statusCode: 403, name: "validation_error", message: "You can only send testing emails to your own email address" } },
    down: { status: 500, body: { statusCode: 500, name: "application_error", message: "An unexpected error occurred" } },
  },
  // https://postmarkapp.com/developer/api/email-api, …/api/overview#error-codes
  postmark: {
    path: "/email",
    authorised: (h) => h["x-postmark-server-token"] === KEY && /json/.test(h.accept ?? ""),
    unauthorised: { status: 401, body: { ErrorCode: 10, Message: "Request does not contain a valid Server token." } },
    recipient: (b) => b.To,
    valid: (b) => typeof b.From === "string" && typeof b.Subject === "string" && (b.HtmlBody || b.TextBody),
    invalid: { status: 422, body: { ErrorCode: 300, Message: "Invalid email request" } },
    accepted: (b) => ({ status: 200, body: { To: b.To, SubmittedAt: new Date().toISOString(), MessageID: crypto.randomUUID(), ErrorCode: 0, Message: "OK" } }),
    throttled: { status: 429, body: { ErrorCode: 429, Message: "Rate limit exceeded" } },
    refused: { status: 422, body: { ErrorCode: 406, Message: "You tried to send to recipient(s) that have been marked as inactive." } },
    down: { status: 503, body: { ErrorCode: 100, Message: "Maintenance" } },
  },
  // https://www.twilio.com/docs/sendgrid/api-reference/mail-send/mail-send, …/errors
  sendgrid: {
    path: "/v3/mail/send",
    authorised: (h) => h.authorization === `Bearer ${KEY}`,
    unauthorised: { status: 401, body: { errors: [{ field: null, message: "The provided authorization grant is invalid, expired, or revoked" }] } },
    recipient: (b) => b.personalizations?.[0]?.to?.[0]?.email,
    valid: (b) =>
      typeof b.from?.email === "string" &&
      typeof b.subject === "string" &&
      Array.isArray(b.content) &&
      b.content[0]?.type === "text/plain", // text/plain must come first
    invalid: { status: 400, body: { errors: [{ field: "content", message: "The content value must be a string at least one character in length." }] } },
    accepted: () => ({ status: 202, body: "" }),
    throttled: { status: 429, body: { errors: [{ field: null, message: "too many requests" }] } },
    refused: { status: 400, body: { errors: [{ field: "personalizations.0.to.0.email", message: "Does not contain a valid address." }] } },
    down: { status: 500, body: { errors: [{ field: null, message: "internal error" }] } },
  },
};

async function startStandIn(name) {
  const api = PROVIDERS[name];
  const requests = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", async () => {
      const text = Buffer.concat(chunks).toString("utf8");
      let body = null;
      try { body = JSON.parse(text); } catch {}
      const entry = { method: req.method, path: req.url, headers: req.headers, body, at: Date.now() };
      requests.push(entry);
      const to = body ? api.recipient(body) : undefined;
      const seen = requests.filter((r) => r.to === to).length;
      entry.to = to;
      let answer;
      if (req.method !== "POST" || req.url !== api.path) answer = { status: 404, body: {} };
      else if (!/^application\/json/.test(req.headers["content-type"] ?? "")) answer = api.invalid;
      else if (!api.authorised(req.headers)) answer = api.unauthorised;
      else if (!body || !to || !api.valid(body)) answer = api.invalid;
      else if (to.startsWith("refused-")) answer = api.refused;
      else if (to.startsWith("down-")) answer = api.down;
      else if (to.startsWith("throttled-") && seen === 0) answer = api.throttled;
      else if (to.startsWith("slow-")) {
        await sleep(TIMEOUT_MS + 3_000);
        answer = api.accepted(body);
      } else answer = api.accepted(body);
      entry.status = answer.status;
      if (res.destroyed) return;
      res.writeHead(answer.status, { "content-type": "application/json" });
      res.end(typeof answer.body === "string" ? answer.body : JSON.stringify(answer.body));
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}${api.path}`,
    requests,
    to: (address) => requests.filter((r) => r.to === address),
    close: () => new Promise((resolve) => { server.closeAllConnections?.(); server.close(resolve); }),
  };
}

// ---------------------------------------------------------------------------
// What the gateway logs and records.
// ---------------------------------------------------------------------------

const lineJson = (line) => JSON.parse(line.slice(line.indexOf("{")));

/** The id of the email event sent to `address`. */
async function eventFor(gw, type, address) {
  return (await gw.waitForEvent((e) => e.type === type && e.data.email === address, 15_000)).id;
}

/** The dead letter of event `id`: its log line and its D1 row. */
async function deadLetter(gw, id, timeoutMs = 45_000) {
  const line = lineJson(await gw.waitForLog((l) => l.includes("portcullis.dead_letter") && l.includes(id), timeoutMs));
  const row = await until("the dead_letters row", async () => (await d1(gw, `SELECT * FROM dead_letters WHERE id = ${sqlText(id)}`))[0]);
  return { line, row };
}

function delivered(gw, id, address) {
  return gw.waitForLog((l) => l.includes("portcullis.delivered") && l.includes(id) && l.includes(`email:${address}`), 20_000);
}

/** The email a provider's request carries, in one shape for the assertions. */
function emailOf(name, body) {
  switch (name) {
    case "resend":
      return { from: body.from, to: body.to, subject: body.subject, text: body.text, html: body.html };
    case "postmark":
      return { from: body.From, to: [body.To], subject: body.Subject, text: body.TextBody, html: body.HtmlBody };
    case "sendgrid":
      return {
        from: `${body.from.name} <${body.from.email}>`,
        to: body.personalizations[0].to.map((t) => t.email),
        subject: body.subject,
        text: body.content.find((c) => c.type === "text/plain").value,
        html: body.content.find((c) => c.type === "text/html").value,
      };
  }
}

// ---------------------------------------------------------------------------
// The HTTP providers.
// ---------------------------------------------------------------------------

for (const name of Object.keys(PROVIDERS)) {
  describe(`EMAIL_TRANSPORT=${name}`, () => {
    let gw;
    let api;
    const to = Object.fromEntries(["ok", "throttled", "refused", "down", "slow"].map((k) => [k, randomEmail(k)]));

    before(async () => {
      api = await startStandIn(name);
      gw = await startGateway({
        vars: {
          EMAIL_TRANSPORT: name,
          EMAIL_API_URL: api.url,
          EMAIL_API_KEY: KEY,
          EMAIL_FROM: "Acme Auth <auth@acme.example>",
          EMAIL_TIMEOUT_MS: String(TIMEOUT_MS),
          ...LINKS,
          UI_NAME: "Acme & <Co>",
          ALLOW_PASSWORDLESS_SIGNUP: "true",
          RETRY_BASE_DELAY_SECS: "1",
        },
      });
      // Every case at once: the slow ones run side by side.
      for (const address of Object.values(to)) {
        const res = await post(`${gw.url}/auth/magic-link`, { email: address });
        assert.equal(res.status, 200, await res.text());
      }
    });

    after(async () => {
      await gw?.stop();
      await api?.close();
    });

    test("an accepted email is sent once, in the API's shape, with both parts and the link", async () => {
      const id = await eventFor(gw, "magic_link_requested", to.ok);
      await delivered(gw, id, to.ok);
      const sent = api.to(to.ok);
      assert.equal(sent.length, 1);
      assert.ok(sent[0].status < 300, `status ${sent[0].status}`);
      const mail = emailOf(name, sent[0].body);
      assert.equal(mail.from, "Acme Auth <auth@acme.example>");
      assert.deepEqual(mail.to, [to.ok]);
      assert.equal(mail.subject, "Your sign-in link");
      const link = mail.text.match(/https:\/\/acme\.example\/magic\?lang=x&token=([A-Za-z0-9_-]+)/);
      assert.ok(link, mail.text);
      // The HTML part: the same link, escaped in the attribute; the brand escaped.
      assert.match(mail.html, /^<!DOCTYPE html>/);
      assert.ok(mail.html.includes(`href="https://acme.example/magic?lang=x&amp;token=${link[1]}"`), mail.html);
      assert.ok(mail.html.includes("Acme &amp; &lt;Co&gt;") && !mail.html.includes("<Co>"));
      // Neither the token nor the API key is ever logged.
      const logs = gw.logs().join("\n");
      assert.ok(!logs.includes(link[1]), "the token is in the log");
      assert.ok(!logs.includes(KEY), "the API key is in the log");
    });

    test("a throttled email (429) is retried and then delivered once", async () => {
      const id = await eventFor(gw, "magic_link_requested", to.throttled);
      await delivered(gw, id, to.throttled);
      const sent = api.to(to.throttled);
      assert.deepEqual(sent.map((r) => r.status), [429, PROVIDERS[name].accepted({}).status]);
      assert.ok(sent[1].at - sent[0].at >= 900, `retried after ${sent[1].at - sent[0].at} ms`);
    });

    test("a refused email (4xx) goes to the dead-letter queue at once, still sealed, with the provider's reason", async () => {
      const id = await eventFor(gw, "magic_link_requested", to.refused);
      const { line, row } = await deadLetter(gw, id, 20_000);
      const status = PROVIDERS[name].refused.status;
      assert.equal(api.to(to.refused).length, 1, "tried once, not retried");
      assert.ok(line.reason.startsWith(`rejected: email:${to.refused}: HTTP ${status}: `), line.reason);
      assert.equal(row.reason, line.reason);
      assert.equal(row.event_type, "magic_link_requested");
      const body = JSON.parse(row.body);
      assert.equal(body.id, id);
      assert.equal(typeof body.data.token.sealed, "string", "stored as queued: can be sent again");
      const failed = JSON.parse(row.failed);
      assert.deepEqual(failed.map((f) => [f.target, f.attempts]), [[`email:${to.refused}`, 1]]);
      await gw.waitForLog((l) => l.includes("portcullis.rejected_event") && l.includes(line.reason.slice(10, 60)));
    });

    test("a provider that is down (5xx) is retried with backoff, then the email is dead-lettered", async () => {
      const id = await eventFor(gw, "magic_link_requested", to.down);
      const { line, row } = await deadLetter(gw, id);
      const sent = api.to(to.down);
      assert.equal(sent.length, MAX_RETRIES + 1, "one attempt plus max_retries retries");
      assert.ok(sent.every((r) => r.status === PROVIDERS[name].down.status));
      assert.ok(sent[2].at - sent[1].at >= 1_900, "the delay doubles");
      assert.equal(line.reason, "retries_exhausted");
      const failed = JSON.parse(row.failed);
      assert.equal(failed[0].attempts, MAX_RETRIES + 1);
      assert.match(failed[0].last_error, new RegExp(`^HTTP ${PROVIDERS[name].down.status}: `));
    });

    test("a provider that does not answer in time is retried, then the email is dead-lettered", async () => {
      const id = await eventFor(gw, "magic_link_requested", to.slow);
      const { line, row } = await deadLetter(gw, id);
      assert.equal(api.to(to.slow).length, MAX_RETRIES + 1);
      assert.equal(line.reason, "retries_exhausted");
      assert.equal(JSON.parse(row.failed)[0].last_error, `no answer within ${TIMEOUT_MS} ms`);
    });

    if (name === "postmark") {
      test("emails are written in the user's language: stored at sign-up, or asked for in the request", async () => {
        const french = randomEmail("ok-fr");
        const signup = await post(`${gw.url}/auth/signup`, { email: french, password: "correct horse battery", locale: "fr" });
        assert.equal(signup.status, 201, await signup.text());
        await post(`${gw.url}/auth/password/forgot`, { email: french });
        const german = randomEmail("ok-de");
        await post(`${gw.url}/auth/otp`, { email: german, locale: "de-AT" });
        const reset = await until("the French email", () => api.to(french)[0]);
        assert.equal(reset.body.Subject, "Réinitialisez votre mot de passe");
        assert.match(reset.body.TextBody, /^Bonjour,/);
        assert.match(reset.body.HtmlBody, /<html lang="fr">/);
        const code = await until("the German email", () => api.to(german)[0]);
        assert.match(code.body.Subject, /^Ihr Anmeldecode: \d{6}$/);
        // The address had no account: the one its code creates takes the language its
        // verification asks for (whoever asked for the code does not choose it).
        const digits = code.body.Subject.match(/\d{6}$/)[0];
        const signedIn = await post(`${gw.url}/auth/otp/verify`, { email: german, code: digits, locale: "de-AT" });
        assert.equal(signedIn.status, 200, await signedIn.text());
        await post(`${gw.url}/auth/magic-link`, { email: german });
        const link = await until("the German link", () => api.to(german)[1]);
        assert.equal(link.body.Subject, "Ihr Anmeldelink");
        const bad = await post(`${gw.url}/auth/magic-link`, { email: german, locale: "not a language" });
        assert.equal(bad.status, 422);
        assert.equal((await json(bad)).code, "invalid_locale");
      });
    }
  });
}

// ---------------------------------------------------------------------------
// Cloudflare's send_email binding, as wrangler dev runs it locally.
// ---------------------------------------------------------------------------

/** The headers and decoded parts of a MIME message. */
function parseMime(raw) {
  const [head, ...rest] = raw.split("\r\n\r\n");
  const headers = {};
  for (const line of head.replace(/\r\n[ \t]/g, " ").split("\r\n")) {
    const i = line.indexOf(":");
    headers[line.slice(0, i).toLowerCase()] = line.slice(i + 1).trim();
  }
  const boundary = headers["content-type"].match(/boundary="([^"]+)"/)[1];
  const parts = rest
    .join("\r\n\r\n")
    .split(`--${boundary}`)
    .slice(1, -1)
    .map((section) => {
      const [h, b] = section.replace(/^\r\n/, "").split("\r\n\r\n");
      return { type: h.match(/Content-Type: ([^;\r]+)/i)[1], body: Buffer.from(b.replace(/\r\n/g, ""), "base64").toString("utf8") };
    });
  return { headers, parts };
}

/** RFC 2047 encoded words (B encoding) decoded; only the space between two of them goes. */
const decodeWords = (s) =>
  s.replace(/(\?=)\s+(?==\?)/g, "$1").replace(/=\?UTF-8\?B\?([^?]*)\?=/gi, (_, b) => Buffer.from(b, "base64").toString("utf8"));

describe("EMAIL_TRANSPORT=cloudflare (the send_email binding)", () => {
  let gw;
  let bare;
  let config;
  const vars = {
    EMAIL_TRANSPORT: "cloudflare",
    EMAIL_FROM: "Équipe Acme <auth@acme.example>",
    ...LINKS,
    ALLOW_PASSWORDLESS_SIGNUP: "true",
    RETRY_BASE_DELAY_SECS: "1",
  };

  before(async () => {
    // The binding may send to these two only: any other address is refused.
    config = await faultyConfig({
      extraToml: '[[send_email]]\nname = "EMAIL"\nallowed_destination_addresses = ["ada@example.com", "bob@example.com"]',
    });
    // And one without the binding, started alongside.
    [gw, bare] = await Promise.all([startGateway({ vars, args: config.args }), startGateway({ vars })]);
  });

  after(async () => {
    await gw?.stop();
    await bare?.stop();
    await config?.cleanup();
  });

  test("an email goes through the binding as a multipart/alternative MIME message in the user's language", async () => {
    const res = await post(`${gw.url}/auth/magic-link`, { email: "ada@example.com", locale: "fr" });
    assert.equal(res.status, 200);
    const id = await eventFor(gw, "magic_link_requested", "ada@example.com");
    await delivered(gw, id, "ada@example.com");
    const line = await gw.waitForLog((l) => /Email: \S+\.eml/.test(l), 15_000);
    const file = line.match(/Email: (\S+\.eml)/)[1];
    const { headers, parts } = parseMime(fs.readFileSync(file, "utf8"));
    assert.equal(decodeWords(headers.from), "Équipe Acme <auth@acme.example>");
    assert.equal(headers.to, "ada@example.com");
    assert.equal(decodeWords(headers.subject), "Votre lien de connexion");
    assert.ok(headers["message-id"] && headers.date, "Message-ID and Date");
    assert.equal(headers["mime-version"], "1.0");
    assert.match(headers["content-type"], /^multipart\/alternative;/);
    assert.deepEqual(parts.map((p) => p.type), ["text/plain", "text/html"]);
    const token = parts[0].body.match(/token=([A-Za-z0-9_-]+)/)[1];
    assert.match(parts[0].body, /^Bonjour,\r\n/);
    assert.ok(parts[1].body.includes(`href="https://acme.example/magic?lang=x&amp;token=${token}"`));
    assert.ok(!gw.logs().some((l) => l.includes(token)), "the token is in the log");
  });

  test("an address the binding refuses is dead-lettered at once with its reason", async () => {
    await post(`${gw.url}/auth/magic-link`, { email: "eve@example.com" });
    const id = await eventFor(gw, "magic_link_requested", "eve@example.com");
    const { line, row } = await deadLetter(gw, id, 20_000);
    assert.equal(line.reason, "rejected: email:eve@example.com: send_email refused it: email to eve@example.com not allowed");
    assert.deepEqual(JSON.parse(row.failed).map((f) => f.attempts), [1]);
  });

  test("without the binding, EMAIL_TRANSPORT=cloudflare is a configuration error, not silence", async () => {
    const res = await fetch(`${bare.url}/.well-known/openid-configuration`);
    const problem = await json(res);
    assert.equal(res.status, 503);
    assert.equal(problem.code, "misconfigured");
    assert.match(problem.detail, /EMAIL_TRANSPORT: cloudflare sends through the send_email binding EMAIL/);
  });
});
