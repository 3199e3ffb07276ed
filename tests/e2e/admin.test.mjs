// The admin API and the first-admin command end to end: authorisation,
// listing with query and pagination, editing, deleting (with cascades), bans
// on every sign-in path, roles, session revocation.
import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
import { startGateway, post, json, randomEmail } from "./harness.mjs";
import { d1, sqlText } from "./lib/d1.mjs";
import { signup, login, adminGrant, makeAdmin, withEvent, eventFor, assertNoEvent, assertProblem, authed } from "./lib/accounts.mjs";

describe("admin API", () => {
  let gw;
  let admin; // AuthResponse of an administrator
  const api = (path, init = {}, token = admin.access_token) => authed(`${gw.url}/auth/admin${path}`, token, init);

  before(async () => {
    gw = await startGateway();
    admin = await makeAdmin(gw, randomEmail("root"));
  });
  after(async () => {
    await gw?.stop();
  });

  test("admin:grant refuses unknown emails, grants idempotently, quotes safely and can revoke", async () => {
    const unknown = await adminGrant(gw, randomEmail("ghost"));
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /no account/);
    const tricky = randomEmail("o'neil");
    const { user } = await signup(gw, tricky);
    for (let i = 0; i < 2; i++) {
      const r = await adminGrant(gw, tricky.toUpperCase());
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /roles: admin/);
    }
    const editor = await adminGrant(gw, tricky, "--role", "editor");
    assert.match(editor.stdout, /roles: admin, editor|roles: editor, admin/);
    const rows = await d1(gw, `SELECT role FROM user_roles WHERE user_id = ${sqlText(user.id)} ORDER BY role`);
    assert.deepEqual(rows.map((r) => r.role), ["admin", "editor"]);
    const revoked = await adminGrant(gw, tricky, "--revoke");
    assert.match(revoked.stdout, /roles: editor$/m);
    const bad = await adminGrant(gw, tricky, "--role", "x'; DROP TABLE users; --");
    assert.equal(bad.code, 2);
    assert.equal((await d1(gw, "SELECT COUNT(*) AS n FROM users"))[0].n > 0, true);
  });

  test("non-admins get 403 insufficient_role and anonymous callers 401 on every admin endpoint", async () => {
    const user = await signup(gw, randomEmail("plain"));
    const id = user.user.id;
    const calls = [
      ["GET", "/users"],
      ["GET", `/users/${id}`],
      ["PATCH", `/users/${id}`, { name: "x" }],
      ["DELETE", `/users/${id}`],
      ["POST", `/users/${id}/ban`],
      ["POST", `/users/${id}/unban`],
      ["POST", `/users/${id}/roles/admin`],
      ["DELETE", `/users/${id}/roles/admin`],
      ["POST", `/users/${id}/sessions/revoke`],
      ["POST", "/keys/rotate"],
    ];
    for (const [method, path, body] of calls) {
      await assertProblem(await api(path, { method, body }, user.access_token), 403, "insufficient_role");
      const anon = await fetch(`${gw.url}/auth/admin${path}`, { method });
      await assertProblem(anon, 401, "missing_token");
    }
    const me = await json(await authed(`${gw.url}/auth/me`, user.access_token));
    assert.deepEqual(me.roles, []);
    assert.equal(me.banned, false);
  });

  test("a withdrawn admin role takes effect at once, whatever the token says", async () => {
    const email = randomEmail("exadmin");
    const ex = await makeAdmin(gw, email);
    assert.equal((await api("/users?limit=1", {}, ex.access_token)).status, 200);
    assert.equal((await adminGrant(gw, email, "--revoke")).code, 0);
    await assertProblem(await api("/users?limit=1", {}, ex.access_token), 403, "insufficient_role");
  });

  test("GET /users pages through a query with limit, offset and total", async () => {
    const tag = `pg${Date.now().toString(36)}`;
    const emails = [];
    for (let i = 0; i < 5; i++) {
      const email = `${tag}-${i}@example.com`;
      emails.push(email);
      await signup(gw, email);
    }
    const page1 = await json(await api(`/users?query=${tag.toUpperCase()}&limit=2`));
    assert.equal(page1.total, 5);
    assert.equal(page1.limit, 2);
    assert.equal(page1.offset, 0);
    assert.equal(page1.users.length, 2);
    const page3 = await json(await api(`/users?query=${tag}&limit=2&offset=4`));
    assert.equal(page3.users.length, 1);
    const seen = new Set();
    for (let offset = 0; offset < 5; offset += 2) {
      const p = await json(await api(`/users?query=${tag}&limit=2&offset=${offset}`));
      for (const u of p.users) seen.add(u.email);
    }
    assert.deepEqual([...seen].sort(), emails.sort());
    const u = page1.users[0];
    for (const k of ["id", "email", "name", "email_verified", "avatar_url", "phone", "banned", "roles", "created_at", "session_id"]) {
      assert.ok(k in u, `UserResponse lacks ${k}`);
    }
    // Wildcards in the query are literal.
    assert.equal((await json(await api(`/users?query=${encodeURIComponent("%")}`))).total, 0);
    const all = await json(await api("/users?limit=1000"));
    assert.equal(all.limit, 100);
    const byName = await json(await api(`/users?query=${tag}-3`));
    assert.equal(byName.total, 1);
    for (const bad of ["limit=0", "limit=ten", "offset=-1", "sort=email", "limit=1&limit=2"]) {
      await assertProblem(await api(`/users?${bad}`), 422, "invalid_query");
    }
  });

  test("GET, PATCH and DELETE one user", async () => {
    const email = randomEmail("edit");
    const s = await signup(gw, email);
    const id = s.user.id;
    const got = await json(await api(`/users/${id}`));
    assert.equal(got.email, email);
    await assertProblem(await api("/users/00000000-0000-4000-8000-000000000000"), 404, "not_found");
    await assertProblem(await api("/users/not%20an%20id"), 404, "not_found");

    const { result, event } = await withEvent(gw, (e) => e.type === "user_updated" && e.data.user_id === id, () =>
      api(`/users/${id}`, { method: "PATCH", body: { name: "Ada", phone: "+44 20 7946 0958", avatar_url: "https://img.example/a.png", email_verified: true } }),
    );
    const patched = await json(result);
    assert.equal(result.status, 200, JSON.stringify(patched));
    assert.deepEqual(event.data.fields, ["name", "avatar_url", "phone", "email_verified"]);
    assert.equal(patched.name, "Ada");
    assert.equal(patched.email_verified, true);
    const cleared = await json(await api(`/users/${id}`, { method: "PATCH", body: { name: null } }));
    assert.equal(cleared.name, null);
    assert.equal(cleared.phone, "+44 20 7946 0958");

    await assertProblem(await api(`/users/${id}`, { method: "PATCH", body: { email: admin.user.email } }), 409, "email_taken");
    await assertProblem(await api(`/users/${id}`, { method: "PATCH", body: { name: "ok", avatar_url: "javascript:alert(1)" } }), 422, "invalid_avatar_url");
    await assertProblem(await api(`/users/${id}`, { method: "PATCH", body: { banned: true } }), 422, "validation_failed");
    await assertProblem(await api(`/users/${id}`, { method: "PATCH", body: { phone: "call me" } }), 422, "invalid_phone");
    assert.equal((await json(await api(`/users/${id}`))).name, null, "a refused patch writes nothing");
    const moved = randomEmail("moved");
    const m = await json(await api(`/users/${id}`, { method: "PATCH", body: { email: moved } }));
    assert.equal(m.email, moved);
    assert.equal(m.email_verified, false);
    assert.equal((await login(gw, moved)).status, 200);

    const { event: relocated } = await withEvent(gw, (e) => e.type === "user_updated" && e.data.user_id === id && e.data.fields.includes("locale"), () =>
      api(`/users/${id}`, { method: "PATCH", body: { locale: "de_AT" } }),
    );
    assert.deepEqual(relocated.data.fields, ["locale"]);
    await assertProblem(await api(`/users/${id}`, { method: "PATCH", body: { locale: "no tag!" } }), 422, "invalid_locale");

    // Delete: sessions, refresh tokens, roles and emailed tokens go with the user.
    await post(`${gw.url}/auth/magic-link`, { email: moved });
    const asked = await gw.waitForEvent(eventFor("magic_link_requested", moved));
    assert.equal(asked.data.locale, "de-AT", "the language the administrator set");
    await api(`/users/${id}/roles/editor`, { method: "POST" });
    const [fk] = await d1(gw, "PRAGMA foreign_keys");
    assert.equal(fk.foreign_keys, 1, "D1 enforces foreign keys");
    const del = await api(`/users/${id}`, { method: "DELETE" });
    assert.equal(del.status, 204);
    const ev = await gw.waitForEvent((e) => e.type === "user_deleted" && e.data.user_id === id);
    assert.equal(ev.data.email, moved);
    for (const [table, col] of [["sessions", "user_id"], ["user_roles", "user_id"], ["email_tokens", "user_id"]]) {
      const [row] = await d1(gw, `SELECT COUNT(*) AS n FROM ${table} WHERE ${col} = ${sqlText(id)}`);
      assert.equal(row.n, 0, `${table} rows left behind`);
    }
    const [orphans] = await d1(gw, "SELECT COUNT(*) AS n FROM refresh_tokens t LEFT JOIN sessions s ON s.id = t.session_id WHERE s.id IS NULL");
    assert.equal(orphans.n, 0);
    await assertProblem(await authed(`${gw.url}/auth/me`, s.access_token), 401, "session_revoked");
    await assertProblem(await api(`/users/${id}`, { method: "DELETE" }), 404, "not_found");
    await assertProblem(await api(`/users/${id}`, { method: "PUT" }), 405, "method_not_allowed");
    await assertProblem(await api(`/users/${id}/frobnicate`, { method: "POST" }), 404, "not_found");
  });

  test("a ban revokes every session and blocks login, refresh, magic link and OTP until unbanned", async () => {
    const email = randomEmail("banned");
    const s1 = await signup(gw, email);
    const s2 = await json(await login(gw, email));
    const id = s1.user.id;
    // Secrets issued before the ban.
    const { event: link } = await withEvent(gw, eventFor("magic_link_requested", email), () => post(`${gw.url}/auth/magic-link`, { email }));
    const { event: otp } = await withEvent(gw, eventFor("email_otp_requested", email), () => post(`${gw.url}/auth/otp`, { email }));

    const banned = await api(`/users/${id}/ban`, { method: "POST" });
    const body = await json(banned);
    assert.equal(banned.status, 200, JSON.stringify(body));
    assert.equal(body.banned, true);
    await gw.waitForEvent((e) => e.type === "user_banned" && e.data.user_id === id);
    await gw.waitForEvent((e) => e.type === "session_revoked" && e.data.user_id === id && e.data.revoke_all === true);
    const [live] = await d1(gw, `SELECT COUNT(*) AS n FROM sessions WHERE user_id = ${sqlText(id)} AND revoked_at IS NULL`);
    assert.equal(live.n, 0);

    for (const s of [s1, s2]) {
      await assertProblem(await authed(`${gw.url}/auth/me`, s.access_token), 401, "session_revoked");
      assert.equal((await post(`${gw.url}/auth/refresh`, { refresh_token: s.refresh_token })).status, 401);
    }
    await assertProblem(await login(gw, email), 403, "account_banned");
    // The ban killed the secrets issued before it (email-tokens.test.mjs covers every kind).
    await assertProblem(await post(`${gw.url}/auth/magic-link/verify`, { token: link.data.token }), 401, "invalid_link");
    await assertProblem(await post(`${gw.url}/auth/otp/verify`, { email, code: otp.data.code }), 401, "invalid_code");

    // New requests: the same answer as for anyone, but no secret is issued.
    const unknown = randomEmail("nobody");
    for (const path of ["/auth/magic-link", "/auth/otp", "/auth/password/forgot"]) {
      const a = await post(`${gw.url}${path}`, { email });
      const b = await post(`${gw.url}${path}`, { email: unknown });
      assert.equal(a.status, 200);
      assert.equal(await a.text(), await b.text(), path);
    }
    const marker = randomEmail("ban-marker");
    await signup(gw, marker);
    const secrets = (e) => ["magic_link_requested", "email_otp_requested", "password_reset_requested"].includes(e.type) && e.data.email === email;
    await assertNoEvent(gw, (e) => secrets(e) && e !== link && e !== otp && e.data.token !== link.data.token && e.data.code !== otp.data.code, () =>
      withEvent(gw, eventFor("magic_link_requested", marker), () => post(`${gw.url}/auth/magic-link`, { email: marker })),
    );

    const unbanned = await json(await api(`/users/${id}/unban`, { method: "POST" }));
    assert.equal(unbanned.banned, false);
    await gw.waitForEvent((e) => e.type === "user_unbanned" && e.data.user_id === id);
    assert.equal((await login(gw, email)).status, 200);
    await assertProblem(await post(`${gw.url}/auth/magic-link/verify`, { token: link.data.token }), 401, "invalid_link");
    const { event: fresh } = await withEvent(gw, eventFor("magic_link_requested", email), () => post(`${gw.url}/auth/magic-link`, { email }));
    assert.equal((await post(`${gw.url}/auth/magic-link/verify`, { token: fresh.data.token })).status, 200);
  });

  test("roles are granted and withdrawn, appear in /auth/me and the access token after refresh", async () => {
    const email = randomEmail("roles");
    const s = await signup(gw, email);
    const id = s.user.id;
    const granted = await json(await api(`/users/${id}/roles/billing:read`, { method: "POST" }));
    assert.deepEqual(granted.roles, ["billing:read"]);
    const ev = await gw.waitForEvent((e) => e.type === "role_added" && e.data.user_id === id);
    assert.equal(ev.data.role, "billing:read");
    const refreshed = await json(await post(`${gw.url}/auth/refresh`, { refresh_token: s.refresh_token }));
    assert.deepEqual(refreshed.user.roles, ["billing:read"]);
    const claims = JSON.parse(Buffer.from(refreshed.access_token.split(".")[1], "base64url").toString());
    assert.deepEqual(claims.roles, ["billing:read"]);
    assert.deepEqual((await json(await authed(`${gw.url}/auth/me`, refreshed.access_token))).roles, ["billing:read"]);
    const withdrawn = await json(await api(`/users/${id}/roles/billing:read`, { method: "DELETE" }));
    assert.deepEqual(withdrawn.roles, []);
    await gw.waitForEvent((e) => e.type === "role_removed" && e.data.user_id === id);
    await assertProblem(await api(`/users/${id}/roles/bad%20role`, { method: "POST" }), 422, "invalid_role");
    await assertProblem(await api(`/users/${id}/roles/x`, { method: "GET" }), 405, "method_not_allowed");
  });

  test("an admin cannot ban, delete or demote themselves", async () => {
    const id = admin.user.id;
    await assertProblem(await api(`/users/${id}/ban`, { method: "POST" }), 409, "self_lockout");
    await assertProblem(await api(`/users/${id}`, { method: "DELETE" }), 409, "self_lockout");
    await assertProblem(await api(`/users/${id}/roles/admin`, { method: "DELETE" }), 409, "self_lockout");
    const me = await json(await api(`/users/${id}`));
    assert.equal(me.banned, false);
    assert.deepEqual(me.roles, ["admin"]);
  });

  test("an admin can revoke all of a user's sessions", async () => {
    const email = randomEmail("signout");
    const s1 = await signup(gw, email);
    const s2 = await json(await login(gw, email));
    const r = await json(await api(`/users/${s1.user.id}/sessions/revoke`, { method: "POST" }));
    assert.equal(r.revoked, 2);
    for (const s of [s1, s2]) await assertProblem(await authed(`${gw.url}/auth/me`, s.access_token), 401, "session_revoked");
    await gw.waitForEvent((e) => e.type === "session_revoked" && e.data.user_id === s1.user.id && e.data.revoke_all === true);
    assert.equal((await login(gw, email)).status, 200, "not a ban: the user can sign in again");
    // That session revoked, then nothing: an event for the first, none for the second.
    const revoke = async () => (await json(await api(`/users/${s1.user.id}/sessions/revoke`, { method: "POST" }))).revoked;
    assert.deepEqual([await revoke(), await revoke()], [1, 0]);
    await withEvent(gw, eventFor("login", email), () => login(gw, email));
    const revokedAll = (e) => e.type === "session_revoked" && e.data.user_id === s1.user.id && e.data.revoke_all === true;
    assert.equal(gw.events().filter(revokedAll).length, 2, "one event per revocation that revoked a session");
  });

  test("an edit of one's own profile racing a ban: every edit answered 200 was written, every refused one was not", async () => {
    const email = randomEmail("racer");
    const s = await signup(gw, email);
    const patch = (i) =>
      authed(`${gw.url}/auth/me`, s.access_token, { method: "PATCH", body: { name: `n${i}` } });
    const answers = await Promise.all([...Array.from({ length: 10 }, (_, i) => patch(i)), api(`/users/${s.user.id}/ban`, { method: "POST" })]);
    assert.equal(answers[10].status, 200, "the ban");
    const edits = answers.slice(0, 10);
    const done = [];
    for (const [i, res] of edits.entries()) {
      const body = await json(res);
      if (res.status === 200) {
        assert.deepEqual([body.name, body.banned, body.session_id], [`n${i}`, false, s.user.session_id], "a 200 shows the edit it wrote, read before the ban");
        done.push(i);
      } else {
        // Refused before its write: signed out (401), or banned once past the session check (403).
        assert.ok(
          (res.status === 401 && body.code === "session_revoked") || (res.status === 403 && body.code === "account_banned"),
          `${res.status}: ${JSON.stringify(body)}`,
        );
      }
    }
    // Every event logged before the marker (events are queued before the answer).
    await withEvent(gw, (e) => e.type === "user_unbanned" && e.data.user_id === s.user.id, () => api(`/users/${s.user.id}/unban`, { method: "POST" }));
    const updated = gw.events().filter((e) => e.type === "user_updated" && e.data.user_id === s.user.id);
    assert.equal(updated.length, done.length, `${done.length} edits answered 200, ${updated.length} user_updated events`);
    const name = (await json(await api(`/users/${s.user.id}`))).name;
    if (done.length > 0) assert.ok(done.map((i) => `n${i}`).includes(name), `${name} is one the API said it wrote`);
    else assert.equal(name, null);
  });
});
