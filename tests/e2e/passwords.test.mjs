// Password reset and change, and email verification, end to end.
import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
import { startGateway, post, json, randomEmail, sleep } from "./harness.mjs";
import { signup, login, withEvent, eventFor, assertNoEvent, assertProblem, authed, PASSWORD } from "./lib/accounts.mjs";

const forgot = (gw, email) => post(`${gw.url}/auth/password/forgot`, { email });
const reset = (gw, token, new_password) => post(`${gw.url}/auth/password/reset`, { token, new_password });

async function resetTokenFor(gw, email) {
  const { result, event } = await withEvent(gw, eventFor("password_reset_requested", email), () => forgot(gw, email));
  assert.equal(result.status, 200);
  return event.data.token;
}

describe("passwords and email verification", () => {
  let gw;
  before(async () => {
    gw = await startGateway({ vars: { PASSWORD_RESET_TTL: "8" } });
  });
  after(async () => {
    await gw?.stop();
  });

  test("forgot answers identically for existing and unknown emails; only the existing one gets a token", async () => {
    const known = randomEmail("pw-known");
    const unknown = randomEmail("pw-unknown");
    const { user } = await signup(gw, known);
    const a = await forgot(gw, known);
    const b = await forgot(gw, unknown);
    assert.equal(a.status, 200);
    assert.equal(b.status, 200);
    assert.equal(await a.text(), await b.text());
    const ev = await gw.waitForEvent(eventFor("password_reset_requested", known));
    assert.equal(ev.data.user_id, user.id);
    const marker = randomEmail("pw-marker");
    await signup(gw, marker);
    await assertNoEvent(gw, eventFor("password_reset_requested", unknown), () => resetTokenFor(gw, marker));
  });

  test("reset sets the new password, revokes every session and is single use", async () => {
    const email = randomEmail("pw-reset");
    const s1 = await signup(gw, email);
    const s2 = await json(await login(gw, email));
    const token = await resetTokenFor(gw, email);
    const res = await reset(gw, token, "a brand new password");
    const body = await json(res);
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.equal(body.revoked_sessions, 2);
    for (const s of [s1, s2]) {
      await assertProblem(await authed(`${gw.url}/auth/me`, s.access_token), 401, "session_revoked");
      await assertProblem(await post(`${gw.url}/auth/refresh`, { refresh_token: s.refresh_token }), 401, "invalid_refresh_token");
    }
    assert.equal((await login(gw, email)).status, 401);
    assert.equal((await login(gw, email, "a brand new password")).status, 200);
    await gw.waitForEvent((e) => e.type === "password_reset" && e.data.user_id === s1.user.id);
    await gw.waitForEvent((e) => e.type === "session_revoked" && e.data.user_id === s1.user.id && e.data.revoke_all === true);
    await assertProblem(await reset(gw, token, "yet another password"), 401, "invalid_link");
  });

  test("a rejected new password leaves the token usable; a newer token invalidates it", async () => {
    const email = randomEmail("pw-weak");
    await signup(gw, email);
    const first = await resetTokenFor(gw, email);
    await assertProblem(await reset(gw, first, "short"), 422, "password_too_short");
    const second = await resetTokenFor(gw, email);
    await assertProblem(await reset(gw, first, "long enough password"), 401, "invalid_link");
    assert.equal((await reset(gw, second, "long enough password")).status, 200);
  });

  test("a reset token expires after PASSWORD_RESET_TTL", async () => {
    const email = randomEmail("pw-expiry");
    await signup(gw, email);
    const token = await resetTokenFor(gw, email);
    await sleep(9_000);
    await assertProblem(await reset(gw, token, "long enough password"), 401, "invalid_link");
  });

  test("change needs the current password and revokes only the other sessions", async () => {
    const email = randomEmail("pw-change");
    const current = await signup(gw, email);
    const other = await json(await login(gw, email));
    const change = (old_password, new_password, token = current.access_token) =>
      authed(`${gw.url}/auth/password/change`, token, { method: "POST", body: { old_password, new_password } });
    await assertProblem(await change("not my password", "new password 123"), 403, "invalid_current_password");
    await assertProblem(await change(PASSWORD, "short"), 422, "password_too_short");
    await assertProblem(await post(`${gw.url}/auth/password/change`, { old_password: PASSWORD, new_password: "new password 123" }), 401, "missing_token");
    const res = await change(PASSWORD, "new password 123");
    const body = await json(res);
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.equal(body.revoked_sessions, 1);
    assert.equal((await authed(`${gw.url}/auth/me`, current.access_token)).status, 200);
    await assertProblem(await authed(`${gw.url}/auth/me`, other.access_token), 401, "session_revoked");
    assert.equal((await login(gw, email, "new password 123")).status, 200);
    assert.equal((await login(gw, email)).status, 401);
    await gw.waitForEvent((e) => e.type === "password_changed" && e.data.user_id === current.user.id);
  });

  test("email verification: request (auth) emits a token; verify (signed in) is single use and sets email_verified", async () => {
    const email = randomEmail("ev");
    const s = await signup(gw, email);
    await assertProblem(await post(`${gw.url}/auth/email/verify/request`), 401, "missing_token");
    const { result, event } = await withEvent(gw, eventFor("email_verification_requested", email), () =>
      authed(`${gw.url}/auth/email/verify/request`, s.access_token, { method: "POST" }),
    );
    assert.equal(result.status, 200);
    assert.equal(event.data.user_id, s.user.id);
    const token = event.data.token;
    // Followed signed in to the account: the holder confirms it as it stands
    // (without the session it would take the account over: takeover.test.mjs).
    const res = await authed(`${gw.url}/auth/email/verify`, s.access_token, { method: "POST", body: { token } });
    const body = await json(res);
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.deepEqual(body, { email, email_verified: true });
    const me = await json(await authed(`${gw.url}/auth/me`, s.access_token));
    assert.equal(me.email_verified, true);
    await gw.waitForEvent(eventFor("email_verified", email));
    await assertProblem(await post(`${gw.url}/auth/email/verify`, { token }), 401, "invalid_link");
    // A reset token is not a verification token.
    const resetToken = await resetTokenFor(gw, email);
    await assertProblem(await post(`${gw.url}/auth/email/verify`, { token: resetToken }), 401, "invalid_link");
  });

  test("malformed input is a 4xx problem, never a 500", async () => {
    await assertProblem(await post(`${gw.url}/auth/password/forgot`, { email: "x" }), 422, "invalid_email");
    await assertProblem(await post(`${gw.url}/auth/password/reset`, { token: "abc" }), 422, "validation_failed");
    await assertProblem(await post(`${gw.url}/auth/password/reset`, { token: "a b", new_password: "long enough password" }), 401, "invalid_link");
    await assertProblem(await post(`${gw.url}/auth/email/verify`, { token: null }), 422, "validation_failed");
    await assertProblem(await post(`${gw.url}/auth/email/verify`, "[]"), 422, "validation_failed");
    const s = await signup(gw, randomEmail("pw-bad"));
    await assertProblem(
      await authed(`${gw.url}/auth/email/verify/request`, s.access_token, { method: "POST", body: { extra: 1 } }),
      422,
      "validation_failed",
    );
    await assertProblem(await fetch(`${gw.url}/auth/password/reset`), 405, "method_not_allowed");
  });
});
