// Emailed tokens that outlive their reason, end to end: a reset link, a magic
// link, an email code and a verification link issued to an account all die
// with a password change, a password reset, a ban (and stay dead after the
// unban), a new address (and stay dead when the old one comes back), the
// account's deletion, and the takeover of the unverified account; and a link
// or code mailed before the account existed does not come back once no
// account has its address.
import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
import { startGateway, post, json, randomEmail } from "./harness.mjs";
import { signup, makeAdmin, withEvent, eventFor, authed, PASSWORD } from "./lib/accounts.mjs";

const KINDS = ["verification", "code", "magic_link", "reset"];

describe("emailed tokens die with what they were issued under", () => {
  let gw, admin;

  before(async () => {
    gw = await startGateway();
    admin = await makeAdmin(gw, randomEmail("tok-admin"));
  });

  after(async () => {
    await gw?.stop();
  });

  async function token(type, field, email, request) {
    const { result, event } = await withEvent(gw, eventFor(type, email), request);
    assert.equal(result.status, 200, await result.text());
    return event.data[field];
  }

  /** Signs `email` up and has one token of every kind mailed to it. */
  async function mailAll(email) {
    const user = await signup(gw, email);
    return {
      user,
      reset: await token("password_reset_requested", "token", email, () => post(`${gw.url}/auth/password/forgot`, { email })),
      magic_link: await token("magic_link_requested", "token", email, () => post(`${gw.url}/auth/magic-link`, { email })),
      code: await token("email_otp_requested", "code", email, () => post(`${gw.url}/auth/otp`, { email })),
      verification: await token("email_verification_requested", "token", email, () =>
        authed(`${gw.url}/auth/email/verify/request`, user.access_token, { method: "POST" }),
      ),
    };
  }

  /** The verification link, followed signed in as `m.user` while that session lives (then it takes nothing over). */
  async function followVerification(m) {
    const url = `${gw.url}/auth/email/verify`;
    const signedIn = (await authed(`${gw.url}/auth/me`, m.user.access_token)).status === 200;
    return signedIn ? authed(url, m.user.access_token, { method: "POST", body: { token: m.verification } }) : post(url, { token: m.verification });
  }

  /**
   * Tries every token but the `spent` ones, in an order where a working one
   * does not kill the next (the verification link first, followed signed in
   * while the account's session lives, the reset last); returns the kinds
   * that still worked. A dead one must be refused with its flow's 401.
   */
  async function stillWorking(email, m, spent = []) {
    const attempts = {
      verification: [() => followVerification(m), "invalid_link"],
      code: [() => post(`${gw.url}/auth/otp/verify`, { email, code: m.code }), "invalid_code"],
      magic_link: [() => post(`${gw.url}/auth/magic-link/verify`, { token: m.magic_link }), "invalid_link"],
      reset: [() => post(`${gw.url}/auth/password/reset`, { token: m.reset, new_password: "a password from the past" }), "invalid_link"],
    };
    const working = [];
    for (const kind of KINDS.filter((k) => !spent.includes(k))) {
      const [attempt, refusal] = attempts[kind];
      const res = await attempt();
      const body = await json(res);
      if (res.status === 200) {
        working.push(kind);
      } else {
        assert.equal(res.status, 401, `${kind}: ${JSON.stringify(body)}`);
        assert.equal(body.code, refusal, kind);
      }
    }
    return working;
  }

  const asAdmin = (path, init) => authed(`${gw.url}/auth/admin/users/${path}`, admin.access_token, init);

  test("a password change kills every emailed token", async () => {
    const email = randomEmail("tok-change");
    const m = await mailAll(email);
    const res = await authed(`${gw.url}/auth/password/change`, m.user.access_token, {
      method: "POST",
      body: { old_password: PASSWORD, new_password: "a brand new password" },
    });
    assert.equal(res.status, 200, await res.text());
    assert.deepEqual(await stillWorking(email, m), []);
  });

  test("a password reset kills every other emailed token", async () => {
    const email = randomEmail("tok-reset");
    const m = await mailAll(email);
    const res = await post(`${gw.url}/auth/password/reset`, { token: m.reset, new_password: "a brand new password" });
    assert.equal(res.status, 200, await res.text());
    assert.deepEqual(await stillWorking(email, m, ["reset"]), []);
  });

  test("a ban kills every emailed token, and the unban does not bring them back", async () => {
    const email = randomEmail("tok-ban");
    const m = await mailAll(email);
    assert.equal((await asAdmin(`${m.user.user.id}/ban`, { method: "POST" })).status, 200);
    assert.deepEqual(await stillWorking(email, m), [], "while banned");
    assert.equal((await asAdmin(`${m.user.user.id}/unban`, { method: "POST" })).status, 200);
    assert.deepEqual(await stillWorking(email, m), [], "after the unban");
  });

  test("a new address kills every emailed token, and changing back does not bring them back", async () => {
    const email = randomEmail("tok-move");
    const m = await mailAll(email);
    const moveTo = (address) => asAdmin(m.user.user.id, { method: "PATCH", body: { email: address } });
    assert.equal((await moveTo(randomEmail("tok-moved"))).status, 200);
    assert.equal((await moveTo(email)).status, 200);
    assert.deepEqual(await stillWorking(email, m), []);
  });

  test("deleting the account kills every emailed token", async () => {
    const email = randomEmail("tok-delete");
    const m = await mailAll(email);
    assert.equal((await asAdmin(m.user.user.id, { method: "DELETE" })).status, 204);
    assert.deepEqual(await stillWorking(email, m), []);
  });

  test("taking the unverified account over kills every other emailed token", async () => {
    const email = randomEmail("tok-takeover");
    const m = await mailAll(email);
    const res = await post(`${gw.url}/auth/magic-link/verify`, { token: m.magic_link });
    assert.equal(res.status, 200, await res.text());
    assert.deepEqual(await stillWorking(email, m, ["magic_link"]), []);
  });

  test("tokens issued after the change work", async () => {
    const email = randomEmail("tok-after");
    const user = await signup(gw, email);
    const res = await authed(`${gw.url}/auth/password/change`, user.access_token, {
      method: "POST",
      body: { old_password: PASSWORD, new_password: "a brand new password" },
    });
    assert.equal(res.status, 200);
    const m = {
      user,
      verification: await token("email_verification_requested", "token", email, () =>
        authed(`${gw.url}/auth/email/verify/request`, user.access_token, { method: "POST" }),
      ),
      code: await token("email_otp_requested", "code", email, () => post(`${gw.url}/auth/otp`, { email })),
      magic_link: await token("magic_link_requested", "token", email, () => post(`${gw.url}/auth/magic-link`, { email })),
      reset: await token("password_reset_requested", "token", email, () => post(`${gw.url}/auth/password/forgot`, { email })),
    };
    assert.deepEqual(await stillWorking(email, m), KINDS);
  });
});

describe("links and codes mailed before the account existed", () => {
  let gw, admin;

  before(async () => {
    gw = await startGateway({ vars: { ALLOW_PASSWORDLESS_SIGNUP: "true" } });
    admin = await makeAdmin(gw, randomEmail("pre-admin"));
  });

  after(async () => {
    await gw?.stop();
  });

  async function token(type, field, email, path) {
    const { result, event } = await withEvent(gw, eventFor(type, email), () => post(`${gw.url}${path}`, { email }));
    assert.equal(result.status, 200, await result.text());
    assert.equal(event.data.user_id ?? null, null, "mailed while the address had no account");
    return event.data[field];
  }

  /** A link and a code mailed to `email` while it has no account, then the account made for it. */
  async function mailThenSignUp(email) {
    const link = await token("magic_link_requested", "token", email, "/auth/magic-link");
    const code = await token("email_otp_requested", "code", email, "/auth/otp");
    return { link, code, user: await signup(gw, email) };
  }

  async function assertDead(email, m) {
    const link = await post(`${gw.url}/auth/magic-link/verify`, { token: m.link });
    assert.equal(link.status, 401, `the link signed in: ${await link.clone().text()}`);
    assert.equal((await json(link)).code, "invalid_link");
    const code = await post(`${gw.url}/auth/otp/verify`, { email, code: m.code });
    assert.equal(code.status, 401, `the code signed in: ${await code.clone().text()}`);
    assert.equal((await json(code)).code, "invalid_code");
  }

  const asAdmin = (path, init) => authed(`${gw.url}/auth/admin/users/${path}`, admin.access_token, init);

  test("deleting the account kills them: they sign no fresh account up", async () => {
    const email = randomEmail("pre-delete");
    const m = await mailThenSignUp(email);
    assert.equal((await asAdmin(m.user.user.id, { method: "DELETE" })).status, 204);
    await assertDead(email, m);
  });

  test("a new address kills them: they sign nobody in at the old one", async () => {
    const email = randomEmail("pre-move");
    const m = await mailThenSignUp(email);
    const moved = await asAdmin(m.user.user.id, { method: "PATCH", body: { email: randomEmail("pre-moved") } });
    assert.equal(moved.status, 200, await moved.text());
    await assertDead(email, m);
  });

  test("a new address refused as taken leaves them as they were", async () => {
    const email = randomEmail("pre-taken");
    const m = await mailThenSignUp(email);
    const other = await signup(gw, randomEmail("pre-other"));
    const refused = await asAdmin(m.user.user.id, { method: "PATCH", body: { email: other.user.email } });
    assert.equal(refused.status, 409, await refused.text());
    const link = await post(`${gw.url}/auth/magic-link/verify`, { token: m.link });
    const body = await json(link);
    assert.equal(link.status, 200, JSON.stringify(body));
    assert.equal(body.user.id, m.user.user.id, "the link still proves the address, to its account");
  });
});
