// Email one-time codes end to end: enumeration-safe requests, sign-in,
// exactly-once consumption under 20 concurrent verifications, attempt
// counting under 10 concurrent wrong guesses, supersession, expiry, binding
// to the address.
import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
import { startGateway, post, json, randomEmail, sleep } from "./harness.mjs";
import { d1, sqlText } from "./lib/d1.mjs";
import { signup, withEvent, eventFor, assertNoEvent, assertProblem } from "./lib/accounts.mjs";

const requestCode = (gw, email) => post(`${gw.url}/auth/otp`, { email });
const verify = (gw, email, code) => post(`${gw.url}/auth/otp/verify`, { email, code });
/** A six-digit code that is not `code`. */
const wrong = (code, k = 1) => String((Number(code) + k) % 1_000_000).padStart(6, "0");

async function codeFor(gw, email) {
  const { result, event } = await withEvent(gw, eventFor("email_otp_requested", email), () => requestCode(gw, email));
  assert.equal(result.status, 200);
  assert.match(event.data.code, /^\d{6}$/);
  return event.data.code;
}

async function attempts(gw, email) {
  const rows = await d1(gw, `SELECT attempts, consumed_at FROM email_tokens WHERE kind = 'email_otp' AND email = ${sqlText(email)} ORDER BY created_at DESC, rowid DESC LIMIT 1`);
  return rows[0];
}

describe("email codes (default config)", () => {
  let gw;
  before(async () => {
    gw = await startGateway();
  });
  after(async () => {
    await gw?.stop();
  });

  test("the request answers identically for existing and unknown emails, and only the existing one gets a code", async () => {
    const known = randomEmail("otp-known");
    const unknown = randomEmail("otp-unknown");
    const { user } = await signup(gw, known);
    const a = await requestCode(gw, known);
    const b = await requestCode(gw, unknown);
    assert.equal(a.status, 200);
    assert.equal(b.status, 200);
    assert.equal(await a.text(), await b.text());
    const ev = await gw.waitForEvent(eventFor("email_otp_requested", known));
    assert.equal(ev.data.user_id, user.id);
    const marker = randomEmail("otp-marker");
    await signup(gw, marker);
    await assertNoEvent(gw, eventFor("email_otp_requested", unknown), () => codeFor(gw, marker));
    // The code is stored only as a keyed hash.
    const rows = await d1(gw, `SELECT hash, code_hash FROM email_tokens WHERE email = ${sqlText(known)}`);
    assert.equal(rows.length, 1);
    assert.ok(!rows[0].code_hash.includes(ev.data.code) && !rows[0].hash.includes(ev.data.code));
  });

  test("the right code signs in once and emits email_otp_login", async () => {
    const email = randomEmail("otp-ok");
    await signup(gw, email);
    const code = await codeFor(gw, email);
    const res = await verify(gw, email.toUpperCase(), code);
    const body = await json(res);
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.equal(body.user.email, email);
    assert.equal(body.user.email_verified, true);
    await gw.waitForEvent(eventFor("email_otp_login", email));
    const login = await gw.waitForEvent((e) => e.type === "login" && e.data.email === email);
    assert.equal(login.data.provider, "email_otp");
    await assertProblem(await verify(gw, email, code), 401, "invalid_code");
  });

  test("a wrong code and an unknown email get the identical 401", async () => {
    const email = randomEmail("otp-wrong");
    await signup(gw, email);
    const code = await codeFor(gw, email);
    const a = await verify(gw, email, wrong(code));
    const b = await verify(gw, randomEmail("otp-nobody"), code);
    assert.equal(a.status, 401);
    assert.equal(b.status, 401);
    assert.equal(await a.text(), await b.text());
    const failed = await gw.waitForEvent((e) => e.type === "login_failed" && e.data.email === email);
    assert.equal(failed.data.reason, "invalid_code");
  });

  test("a code is valid only for the email it was sent to", async () => {
    const ada = randomEmail("otp-ada");
    const bob = randomEmail("otp-bob");
    await signup(gw, ada);
    await signup(gw, bob);
    const adaCode = await codeFor(gw, ada);
    const bobCode = await codeFor(gw, bob);
    if (adaCode !== bobCode) await assertProblem(await verify(gw, bob, adaCode), 401, "invalid_code");
    assert.equal((await verify(gw, ada, adaCode)).status, 200);
  });

  test("a new code invalidates the previous one", async () => {
    const email = randomEmail("otp-newer");
    await signup(gw, email);
    const first = await codeFor(gw, email);
    const second = await codeFor(gw, email);
    if (first !== second) await assertProblem(await verify(gw, email, first), 401, "invalid_code");
    assert.equal((await verify(gw, email, second)).status, 200);
  });

  test("20 concurrent verifications of the right code: exactly one signs in", async () => {
    const email = randomEmail("otp-race");
    await signup(gw, email);
    const code = await codeFor(gw, email);
    const results = await Promise.all(Array.from({ length: 20 }, () => verify(gw, email, code)));
    const statuses = results.map((r) => r.status);
    assert.equal(statuses.filter((s) => s === 200).length, 1, `statuses: ${statuses}`);
    assert.equal(statuses.filter((s) => s === 401).length, 19, `statuses: ${statuses}`);
  });

  test("10 concurrent wrong guesses all count: the code is dead, even for the right digits", async () => {
    const email = randomEmail("otp-guess");
    await signup(gw, email);
    const code = await codeFor(gw, email);
    const results = await Promise.all(Array.from({ length: 10 }, (_, i) => verify(gw, email, wrong(code, i + 1))));
    for (const r of results) await assertProblem(r, 401, "invalid_code");
    const row = await attempts(gw, email);
    assert.equal(row.attempts, 5, "attempts are counted up to the limit, atomically");
    await assertProblem(await verify(gw, email, code), 401, "invalid_code");
  });

  test("four wrong guesses leave the right code usable; the fifth kills it", async () => {
    const email = randomEmail("otp-four");
    await signup(gw, email);
    let code = await codeFor(gw, email);
    for (let i = 1; i <= 4; i++) await assertProblem(await verify(gw, email, wrong(code, i)), 401, "invalid_code");
    assert.equal((await verify(gw, email, code)).status, 200);
    code = await codeFor(gw, email);
    for (let i = 1; i <= 5; i++) await assertProblem(await verify(gw, email, wrong(code, i)), 401, "invalid_code");
    await assertProblem(await verify(gw, email, code), 401, "invalid_code");
  });

  test("malformed input is a 4xx problem, never a 500", async () => {
    const email = randomEmail("otp-bad");
    await assertProblem(await verify(gw, email, "12345"), 401, "invalid_code");
    await assertProblem(await verify(gw, email, "abcdef"), 401, "invalid_code");
    await assertProblem(await verify(gw, "nope", "123456"), 422, "invalid_email");
    await assertProblem(await post(`${gw.url}/auth/otp/verify`, { email, code: 123456 }), 422, "validation_failed");
    await assertProblem(await post(`${gw.url}/auth/otp/verify`, { email }), 422, "validation_failed");
    await assertProblem(await post(`${gw.url}/auth/otp`, { email: ["a"] }), 422, "validation_failed");
    await assertProblem(await post(`${gw.url}/auth/otp/verify`, JSON.stringify([email, "123456"])), 422, "validation_failed");
    await assertProblem(await fetch(`${gw.url}/auth/otp/verify`), 405, "method_not_allowed");
  });
});

describe("email codes (OTP_TTL=8, ALLOW_PASSWORDLESS_SIGNUP=true)", () => {
  let gw;
  before(async () => {
    gw = await startGateway({ vars: { OTP_TTL: "8", ALLOW_PASSWORDLESS_SIGNUP: "true" } });
  });
  after(async () => {
    await gw?.stop();
  });

  test("a code expires after OTP_TTL", async () => {
    const email = randomEmail("otp-expiry");
    await signup(gw, email);
    const code = await codeFor(gw, email);
    await sleep(9_000);
    await assertProblem(await verify(gw, email, code), 401, "invalid_code");
  });

  test("an unknown email gets a code that creates the account", async () => {
    const email = randomEmail("otp-signup");
    const code = await codeFor(gw, email);
    const res = await verify(gw, email, code);
    const body = await json(res);
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.equal(body.user.email_verified, true);
    const created = await gw.waitForEvent(eventFor("user_created", email));
    assert.equal(created.data.provider, "email_otp");
  });
});
