// The edge gateway end to end: route policies, token checks, identity headers,
// header hygiene, path normalisation, streaming, origin failures, CORS and
// cookie mode — the built Worker in wrangler dev, in front of a demo origin.
import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import crypto from "node:crypto";
import { startGateway, post, json, randomEmail } from "./harness.mjs";
import { grantRole, signingKey, mint, claimsFor } from "./lib/d1.mjs";
import { strippedEntries, headerSet, rng } from "./lib/stripped.mjs";

const ROUTES = [
  { path: "/api/public/*", policy: "public" },
  { path: "/api/admin/*", policy: "role:admin" },
  { path: "/api/staff/*", policy: "any_role:[editor,admin]" },
  { path: "/api/docs/*", methods: ["GET", "HEAD"], policy: "public" },
  { path: "/api/secrets/*", policy: "role:admin" },
  { path: "/api/reports/*", methods: ["GET"], policy: "role:admin" },
  { path: "/api/orders/*", methods: ["DELETE", "PUT"], policy: "role:admin" },
  // A HEAD-only rule ahead of a GET rule: the origin answers HEAD with the GET handler.
  { path: "/api/previews/*", methods: ["HEAD"], policy: "public" },
  { path: "/api/previews/*", methods: ["GET"], policy: "role:admin" },
  { path: "/api/relay/*", policy: "public", forward_authorization: true },
  // The origin behind /api/notes honours no method override: its operator says so.
  { path: "/api/notes/*", methods: ["DELETE"], policy: "role:admin", method_override: false },
  // A PHP app installed at /app (Symfony, Laravel: /app/index.php), and exact public files.
  { path: "/app/admin/*", policy: "role:admin" },
  { path: "/app/*", policy: "public" },
  { path: "/robots.txt", policy: "public" },
  { path: "/openapi.json", policy: "public" },
];
const APP = "https://app.example";

let gw;
let alice; // plain user: { email, password, auth }
let root; // admin
let key; // the gateway's signing key, for forged tokens

/**
 * The AuthResponse of a sign-in with its tokens: this suite runs in cookie
 * mode, whose bodies carry no token, so they are taken from the cookies.
 */
async function authOf(res) {
  const cookies = Object.fromEntries(res.headers.getSetCookie().map((c) => c.split(";")[0].split(/=(.*)/s)));
  const body = await res.json();
  assert.equal(body.access_token, undefined, "cookie mode puts no token in the body");
  return { ...body, access_token: cookies["__Host-portcullis_access"], refresh_token: cookies["__Host-portcullis_refresh"] };
}

async function signup(email, password = "correct horse battery") {
  const res = await post(`${gw.url}/auth/signup`, { email, password });
  assert.equal(res.status, 201, await res.clone().text());
  return { email, password, auth: await authOf(res) };
}

async function login(u) {
  const res = await post(`${gw.url}/auth/login`, { email: u.email, password: u.password });
  assert.equal(res.status, 200);
  u.auth = await authOf(res);
  return u;
}

const bearer = (u) => ({ authorization: `Bearer ${u.auth.access_token}` });

/** Raw HTTP request: the path goes on the wire exactly as given. */
function raw(method, path, headers = {}, body) {
  const { port } = new URL(gw.url);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, method, path, headers }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        let parsed = null;
        try { parsed = JSON.parse(text); } catch {}
        resolve({ status: res.statusCode, statusMessage: res.statusMessage, headers: res.headers, text, body: parsed });
      });
    });
    req.on("error", reject);
    if (body) req.write(body);
    req.end();
  });
}

before(async () => {
  gw = await startGateway({
    origin: true,
    vars: { ROUTES: JSON.stringify(ROUTES), CORS_ORIGINS: APP, COOKIE_MODE: "true", STRIP_HEADERS: "X-Tenant-Id, X_Acme_*" },
  });
  alice = await signup(randomEmail("alice"));
  root = await signup(randomEmail("root"));
  await grantRole(gw, root.email, "admin");
  await login(root);
  key = await signingKey(gw);
});

after(async () => {
  await gw?.stop();
});

describe("route policies", () => {
  test("a public route is forwarded without a token and without identity headers", async () => {
    const res = await fetch(`${gw.url}/api/public/ping?x=1`);
    assert.equal(res.status, 200);
    const echo = await res.json();
    assert.equal(echo.path, "/api/public/ping");
    assert.equal(echo.query, "x=1");
    assert.equal(echo.identity.user_id ?? null, null);
    assert.equal(echo.headers["cache-control"], undefined, "a public answer may be cached");
  });

  test("a user's answer on a path Cloudflare caches by default (.csv, .pdf, …) is fetched past the cache", async () => {
    // `cache: "no-store"`, which the runtime tells the origin as no-cache.
    const seen = async (path, headers = {}) => (await (await fetch(`${gw.url}${path}`, { headers })).json()).headers;
    for (const path of ["/api/files/data.csv", "/api/export/Q3.PDF?v=2"]) {
      const h = await seen(path, bearer(alice));
      assert.deepEqual([h["cache-control"], h.pragma], ["no-cache", "no-cache"], path);
    }
    for (const [path, headers] of [["/api/hello", bearer(alice)], ["/api/data.json", bearer(alice)], ["/api/public/logo.png", {}]]) {
      assert.equal((await seen(path, headers))["cache-control"], undefined, path);
    }
  });

  test("an authenticated route without a token is refused at the edge with 401 and a Bearer challenge", async () => {
    const res = await fetch(`${gw.url}/api/hello`);
    assert.equal(res.status, 401);
    assert.match(res.headers.get("content-type"), /application\/problem\+json/);
    assert.match(res.headers.get("www-authenticate"), /^Bearer/);
    assert.equal((await res.json()).code, "missing_token");
  });

  test("an authenticated route with a valid token reaches the origin with the caller's identity", async () => {
    const res = await fetch(`${gw.url}/api/hello`, { headers: bearer(alice) });
    assert.equal(res.status, 200);
    const { identity, method } = await res.json();
    assert.equal(method, "GET");
    assert.equal(identity.user_id, alice.auth.user.id);
    assert.equal(identity.email, alice.email);
    assert.equal(identity.session_id, alice.auth.user.session_id);
    assert.equal(identity.roles, "");
    assert.ok(identity.assertion.split(".").length === 3);
  });

  test("a role route refuses a user without the role with 403 insufficient_role and RFC 6750's insufficient_scope", async () => {
    const res = await fetch(`${gw.url}/api/admin/users`, { headers: bearer(alice) });
    assert.equal(res.status, 403);
    assert.equal((await res.json()).code, "insufficient_role");
    assert.match(res.headers.get("www-authenticate") ?? "", /^Bearer .*error="insufficient_scope"/);
  });

  test("a non-ASCII identity reaches the origin as UTF-8 (not a 500): sign-up with a Unicode email, then the API", async () => {
    const email = `ｊö-${crypto.randomUUID().slice(0, 8)}@bücher.example`;
    const u = await signup(email);
    const res = await fetch(`${gw.url}/api/hello`, { headers: bearer(u) });
    const echo = await res.json();
    assert.equal(res.status, 200, JSON.stringify(echo));
    assert.equal(echo.identity.email, u.auth.user.email);
    assert.match(echo.identity.email, /^ｊö-/);
    assert.equal(echo.identity.user_id, u.auth.user.id);
  });

  test("a role route admits a user holding the role, whose roles are forwarded", async () => {
    const res = await fetch(`${gw.url}/api/admin/users`, { headers: bearer(root) });
    assert.equal(res.status, 200);
    assert.equal((await res.json()).identity.roles, "admin");
  });

  test("an any_role route admits any listed role and refuses others", async () => {
    assert.equal((await fetch(`${gw.url}/api/staff/x`, { headers: bearer(root) })).status, 200);
    assert.equal((await fetch(`${gw.url}/api/staff/x`, { headers: bearer(alice) })).status, 403);
  });

  test("a rule limited to some methods does not apply to the others", async () => {
    assert.equal((await fetch(`${gw.url}/api/docs/intro`)).status, 200);
    const res = await fetch(`${gw.url}/api/docs/intro`, { method: "POST", body: "x" });
    assert.equal(res.status, 401);
  });

  test("the method, query and body are forwarded as sent", async () => {
    const res = await fetch(`${gw.url}/api/items/7?a=1&b=two%20words`, {
      method: "PUT",
      headers: { ...bearer(alice), "content-type": "application/json", "x-custom": "kept" },
      body: JSON.stringify({ hello: "world" }),
    });
    assert.equal(res.status, 200);
    const echo = await res.json();
    assert.equal(echo.method, "PUT");
    assert.equal(echo.path, "/api/items/7");
    assert.equal(echo.query, "a=1&b=two%20words");
    assert.equal(echo.body, '{"hello":"world"}');
    assert.equal(echo.headers["x-custom"], "kept");
    assert.equal(echo.headers["content-type"], "application/json");
  });
});

describe("token checks", () => {
  const expectInvalid = async (token, code = "invalid_token") => {
    const res = await fetch(`${gw.url}/api/hello`, { headers: { authorization: `Bearer ${token}` } });
    const body = await res.json();
    assert.equal(res.status, 401, JSON.stringify(body));
    assert.equal(body.code, code);
    assert.match(res.headers.get("www-authenticate"), /error="invalid_token"/);
  };

  test("an expired token is refused with token_expired", async () => {
    const now = Math.floor(Date.now() / 1000);
    await expectInvalid(await mint(key, claimsFor(gw, alice.auth.user, { iat: now - 4000, exp: now - 3600 })), "token_expired");
  });

  test("a tampered payload is refused", async () => {
    const [h, p, s] = alice.auth.access_token.split(".");
    const claims = JSON.parse(Buffer.from(p, "base64url"));
    claims.roles = ["admin"];
    await expectInvalid(`${h}.${Buffer.from(JSON.stringify(claims)).toString("base64url")}.${s}`);
  });

  test("a token for another audience is refused", async () => {
    await expectInvalid(await mint(key, claimsFor(gw, alice.auth.user, { aud: "someone-else" })));
  });

  test("a token from another issuer is refused", async () => {
    await expectInvalid(await mint(key, claimsFor(gw, alice.auth.user, { iss: "https://evil.example" })));
  });

  test("a token naming an unknown kid is refused", async () => {
    await expectInvalid(await mint(key, claimsFor(gw, alice.auth.user), { kid: "no-such-key" }));
  });

  test("a token signed by another key is refused", async () => {
    const { privateKey } = await crypto.webcrypto.subtle.generateKey({ name: "Ed25519" }, true, ["sign"]);
    await expectInvalid(await mint({ kid: key.kid, privateKey }, claimsFor(gw, alice.auth.user)));
  });

  test("the gateway's assertion is not accepted as an access token", async () => {
    const res = await fetch(`${gw.url}/api/hello`, { headers: bearer(alice) });
    const { identity } = await res.json();
    await expectInvalid(identity.assertion);
  });

  test("a token passes repeatedly (cached) and still carries its identity", async () => {
    for (let i = 0; i < 3; i++) {
      const res = await fetch(`${gw.url}/api/hello`, { headers: bearer(alice) });
      assert.equal(res.status, 200);
      assert.equal((await res.json()).identity.user_id, alice.auth.user.id);
    }
  });
});

describe("header hygiene", () => {
  test("spoofed X-Auth headers are replaced by the verified identity", async () => {
    const res = await fetch(`${gw.url}/api/hello`, {
      headers: { ...bearer(alice), "x-auth-user-id": "evil", "X-Auth-Roles": "admin", "x-auth-extra": "1" },
    });
    const echo = await res.json();
    assert.equal(echo.identity.user_id, alice.auth.user.id);
    assert.equal(echo.identity.roles, "");
    assert.equal(echo.headers["x-auth-extra"], undefined);
  });

  test("X-Auth headers sent to a public route never reach the origin", async () => {
    const echo = await (await fetch(`${gw.url}/api/public/x`, { headers: { "x-auth-user-id": "evil", "x-auth-email": "e@x.io" } })).json();
    assert.equal(echo.headers["x-auth-user-id"], undefined);
    assert.equal(echo.headers["x-auth-email"], undefined);
  });

  test("identity headers spelt with underscores (read as X-Auth-* by WSGI, PHP, Rack) never reach the origin", async () => {
    const spoofs = { X_Auth_User_Id: "evil", X_Auth_Roles: "admin", "X-Auth_Email": "e@x.io", "X_Auth-Session-Id": "s", x_auth_assertion: "a" };
    for (const path of ["/api/hello", "/api/public/x"]) {
      const res = await raw("GET", path, { ...bearer(alice), ...spoofs, "x_other_header": "kept" });
      assert.equal(res.status, 200);
      const names = Object.keys(res.body.headers).filter((k) => /^x[-_]auth[-_]/.test(k));
      const expected = path === "/api/hello" ? ["x-auth-assertion", "x-auth-email", "x-auth-roles", "x-auth-session-id", "x-auth-user-id"] : [];
      assert.deepEqual(names.sort(), expected, path);
      assert.equal(res.body.headers.x_other_header, "kept");
    }
  });

  test("a GET or HEAD with a body is refused with 400 body_not_allowed, not blamed on the origin", async () => {
    const res = await raw("GET", "/api/public/x", { "content-type": "text/plain", "content-length": "5" }, "hello");
    assert.equal(res.status, 400, res.text);
    assert.equal(res.body.code, "body_not_allowed");
    assert.match(res.headers["content-type"], /application\/problem\+json/);
  });

  test("a Connection header naming the identity headers cannot strip or spoof them", async () => {
    const res = await raw("GET", "/api/hello", {
      ...bearer(alice),
      connection: "keep-alive, X-Auth-User-Id, X-Auth-Roles",
      "x-auth-user-id": "evil",
      "x-auth-roles": "admin",
      "x-kept": "2",
    });
    assert.equal(res.status, 200);
    assert.equal(res.body.identity.user_id, alice.auth.user.id);
    assert.equal(res.body.identity.roles, "");
    assert.equal(res.body.headers["x-kept"], "2");
    assert.equal(res.body.headers.connection, undefined);
  });

  test("the consumed Authorization header is not forwarded", async () => {
    const echo = await (await fetch(`${gw.url}/api/hello`, { headers: bearer(alice) })).json();
    assert.equal(echo.headers.authorization, undefined);
  });
});

describe("path normalisation", () => {
  for (const trick of [
    "/api/public/../admin/users",
    "/api/public/%2e%2e/admin/users",
    "/api/public/%2E%2e/admin/users",
    "/api/public/.%2e/admin/users",
    "//api//admin//users",
    "/api/admin/users/",
    "/API/Admin/users",
    "/api/./admin/users",
  ]) {
    test(`${trick} is still under the admin rule`, async () => {
      const res = await raw("GET", trick, bearer(alice));
      assert.equal(res.status, 403, `${trick}: ${res.text}`);
    });
  }

  test("the origin receives the normalised path", async () => {
    const res = await raw("GET", "/api//public/./a/../b/", {});
    assert.equal(res.status, 200);
    assert.equal(res.body.path, "/api/public/b");
  });

  test("encoded slashes, NULs and path parameters (`;`, stripped by Tomcat, Jetty and Spring: `/api/admin;x/users` is their `/api/admin/users`) are refused with a 4xx problem", async () => {
    for (const bad of [
      "/api/public%2f..%2fadmin/users",
      "/api/public/%00",
      "/api/public/%5c..%5cadmin",
      "/api/public/..;/admin/users",
      "/api/public/.;x/..;/admin/users",
      "/api/public/%2e%2e;jsessionid=x/admin",
      "/api/admin;x/users",
      "/api/admin%3Bx/users",
      "/api/admin;/users",
      "/api/hello;jsessionid=abc",
    ]) {
      const res = await raw("GET", bad, bearer(alice));
      assert.ok(res.status >= 400 && res.status < 500, `${bad}: ${res.status}`);
      assert.equal(res.body.code, "invalid_path");
    }
  });
});

describe("paths as origins read them", () => {
  // Each is read as /api/secrets/x (role:admin) by some origin framework, and
  // missed that rule before: it fell to DEFAULT_POLICY, which lets any user in.
  const readings = [
    ["/api/%C5%BFecrets/x", "ſ: Java's equalsIgnoreCase, .NET's OrdinalIgnoreCase, case folding"],
    ["/api/secret%C5%BF/x", "ſ at the end"],
    ["/api/%EF%BD%93%EF%BD%85%EF%BD%83%EF%BD%92%EF%BD%85%EF%BD%94%EF%BD%93/x", "fullwidth letters: NFKC"],
    ["/api/secre%E2%93%A3s/x", "circled letter: NFKC"],
    ["/api/sec%C2%ADrets/x", "soft hyphen: dropped by NFKC_Casefold"],
    ["/api/secrets%E2%80%8B/x", "zero-width space: dropped by NFKC_Casefold"],
    ["/api/secrets./x", "trailing dot: trimmed by Windows and IIS"],
    ["/api/secrets%20/x", "trailing space: trimmed by Windows, IIS and Spring's path matcher"],
    ["/api/%20secrets/x", "leading space: trimmed by Spring's path matcher"],
    ["/api/secrets%C2%A0/x", "no-break space: trimmed by .NET, a space after NFKC"],
    ["/api/secrets%3F/x", "encoded ?: the end of the path to whoever parses it again"],
    ["/api/secrets%23/x", "encoded #: the same"],
    ["/api/%E2%84%AAeys/x", "Kelvin sign: k to Java, .NET and NFKC"],
    ["/api/%C4%B1tems/x", "dotless ı: i to Java and .NET"],
    ["/api/(S(x))/secrets/x", "ASP.NET cookieless session: removed before routing"],
    ["/(S(x))/api/secrets/x", "ASP.NET cookieless session, first segment"],
    ["/api/(A(x)F(y))/secrets/x", "ASP.NET cookieless anonymous id and forms ticket"],
    ["/api/%28S%28x%29%29/secrets/x", "ASP.NET cookieless session, percent-encoded"],
  ];
  for (const [path, why] of readings) {
    test(`${path} (${why}) is refused with 422 invalid_path`, async () => {
      const res = await raw("GET", path, bearer(alice));
      assert.equal(res.status, 422, `${path}: ${res.status} ${res.text}`);
      assert.equal(res.body.code, "invalid_path");
    });
  }

  test("ASCII case still matches the rule, and names in other scripts reach the origin unchanged", async () => {
    assert.equal((await raw("GET", "/API/Secrets/x", bearer(alice))).status, 403);
    assert.equal((await raw("GET", "/API/Secrets/x", bearer(root))).status, 200);
    const res = await raw("GET", "/api/public/M%C3%BCller/%E6%97%A5%E6%9C%AC/%CE%BB%CF%8C%CE%B3%CE%BF%CF%82/caf%C3%A9", {});
    assert.equal(res.status, 200, res.text);
    assert.equal(decodeURIComponent(res.body.path), "/api/public/Müller/日本/λόγος/café");
  });

  test("a PHP front controller's path info is judged as the path it routes from the script's directory: /index.php/api/secrets/x is /api/secrets/x", async () => {
    for (const path of ["/index.php/api/secrets/x", "/INDEX.PHP/api/secrets/x", "/api/index.phtml/secrets", "/index.php/api/secrets.json"]) {
      const refused = await raw("GET", path, bearer(alice));
      assert.equal(refused.status, 403, `${path}: ${refused.text}`);
      assert.equal(refused.body.code, "insufficient_role");
      const admitted = await raw("GET", path, bearer(root));
      assert.equal(admitted.status, 200, path);
      assert.equal(admitted.body.path, path, "the origin receives the path as judged");
    }
    // A script as the last segment has no path info; other paths after a script follow their own rules.
    assert.equal((await raw("GET", "/api/public/index.php", {})).status, 200);
    assert.equal((await raw("GET", "/api/public/index.php/api/public/x", {})).status, 200);
  });

  test("a PHP app installed below the root is judged by the rules of its own URLs: /app/index.php/admin/x is /app/admin/x", async () => {
    for (const path of ["/app/index.php/admin/x", "/app/Index.PHTML/admin/users.json"]) {
      const anonymous = await raw("GET", path, {});
      assert.equal(anonymous.status, 401, `${path}: ${anonymous.text}`);
      const refused = await raw("GET", path, bearer(alice));
      assert.equal(refused.status, 403, `${path}: ${refused.text}`);
      assert.equal(refused.body.code, "insufficient_role");
      const admitted = await raw("GET", path, bearer(root));
      assert.equal(admitted.status, 200, path);
      assert.equal(admitted.body.path, path, "the origin receives the path as judged");
    }
    // The rest of the app stays public, through its script or not.
    assert.equal((await raw("GET", "/app/index.php/blog/post", {})).status, 200);
    assert.equal((await raw("GET", "/app/blog/post", {})).status, 200);
  });

  test("an exact public rule for a dotted name stays public under an authenticated default", async () => {
    for (const path of ["/robots.txt", "/openapi.json"]) {
      const res = await raw("GET", path, {});
      assert.equal(res.status, 200, `${path}: ${res.text}`);
      assert.equal(res.body.path, path);
    }
    // What no rule names still needs a token.
    assert.equal((await raw("GET", "/robots", {})).status, 401);
    assert.equal((await raw("GET", "/favicon.ico", {})).status, 401);
  });

  test("a format suffix is judged as the path without it too: /api/secrets.json is /api/secrets to Rails, DRF and Spring", async () => {
    for (const path of ["/api/secrets.json", "/api/Secrets.XML", "/api/secrets.tar.gz"]) {
      const refused = await raw("GET", path, bearer(alice));
      assert.equal(refused.status, 403, `${path}: ${refused.text}`);
      const admitted = await raw("GET", path, bearer(root));
      assert.equal(admitted.status, 200, path);
      assert.equal(admitted.body.path, path);
    }
    // A public path with a suffix stays public; dots elsewhere change nothing.
    assert.equal((await raw("GET", "/api/public/app.js", {})).status, 200);
    assert.equal((await raw("GET", "/api/public/v1.2/x", {})).status, 200);
    assert.equal((await raw("GET", "/api/.secrets", bearer(alice))).status, 200, "a leading dot is a name, not a suffix");
  });

  test("a HEAD must pass the GET policy of its path, even behind a HEAD-only public rule", async () => {
    const refused = await raw("HEAD", "/api/previews/q3", {});
    assert.equal(refused.status, 401);
    assert.equal((await raw("HEAD", "/api/previews/q3", bearer(alice))).status, 403);
    assert.equal((await raw("HEAD", "/api/previews/q3", bearer(root))).status, 200);
    assert.equal((await raw("GET", "/api/previews/q3", bearer(alice))).status, 403);
  });

  test("a rule listing GET also covers HEAD, which origins answer with their GET handler", async () => {
    const head = await raw("HEAD", "/api/reports/q3", bearer(alice));
    assert.equal(head.status, 403);
    assert.equal((await raw("GET", "/api/reports/q3", bearer(alice))).status, 403);
    assert.equal((await raw("HEAD", "/api/reports/q3", bearer(root))).status, 200);
    // Other methods are not under the rule (a POST without a body cannot become a GET).
    assert.equal((await raw("POST", "/api/reports/q3", { ...bearer(alice), "content-length": "0" })).status, 200);
    assert.equal((await raw("DELETE", "/api/reports/q3", bearer(alice))).status, 200);
  });
});

describe("methods as origins read them", () => {
  // /api/orders/*: DELETE and PUT need role:admin, other methods DEFAULT_POLICY (authenticated).
  const json = { "content-type": "application/json" };

  test("override headers never reach the origin, which acts on the method that was judged", async () => {
    const overrides = {
      "X-HTTP-Method-Override": "DELETE",
      "X-HTTP-Method": "DELETE",
      "X-Method-Override": "PUT",
      X_HTTP_Method_Override: "DELETE",
      "x-original-url": "/api/orders/7/delete",
      "X-Rewrite-URL": "/api/admin/x",
    };
    // Without a body, a plain user's POST is judged as a POST: only the headers could make it a DELETE.
    for (const path of ["/api/orders/7", "/api/public/x"]) {
      const res = await raw("POST", path, { ...bearer(alice), "content-length": "0", ...overrides });
      assert.equal(res.status, 200, `${path}: ${res.text}`);
      assert.equal(res.body.method, "POST");
      const arrived = Object.keys(res.body.headers).filter((k) => /method|original|rewrite/i.test(k));
      assert.deepEqual(arrived, [], path);
    }
  });

  test("a _method query parameter makes the request pass the policy of every method of the path", async () => {
    // As PHP reads names: leading spaces dropped, then ` ` and `.` as `_`, a NUL ends the name.
    for (const q of ["_method=DELETE", "%5Fmethod=PUT", "_method[]=DELETE", "+_method=DELETE", "%20_method=DELETE", "%20%20.method=DELETE", "+.method=PUT", "_method%00x=DELETE"]) {
      const refused = await raw("POST", `/api/orders/7?${q}`, { ...bearer(alice), ...json }, "{}");
      assert.equal(refused.status, 403, `${q}: ${refused.text}`);
      assert.equal(refused.body.code, "insufficient_role");
      const admitted = await raw("POST", `/api/orders/7?${q}`, { ...bearer(root), ...json }, "{}");
      assert.equal(admitted.status, 200, q);
      assert.equal(admitted.body.method, "POST");
      assert.equal(admitted.body.query, q);
    }
  });

  test("TRACE is refused with 405 before the origin could echo the identity back", async () => {
    // (TRACK, refused alike by the Worker, meets the local HTTP layer's 501 first.)
    for (const method of ["TRACE"]) {
      for (const path of ["/api/public/x", "/api/orders/7"]) {
        const res = await raw(method, path, bearer(root));
        assert.equal(res.status, 405, `${method} ${path}: ${res.text}`);
        assert.equal(res.body.code, "method_not_allowed");
        assert.match(res.headers["content-type"], /^application\/problem\+json/);
        assert.equal(res.headers.allow, "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS");
      }
    }
  });

  test("a POST with a body to a method-restricted rule must pass the policy of the methods it may become, whatever the body's type", async () => {
    const bodies = [
      ["application/x-www-form-urlencoded", "_method=DELETE"],
      ["multipart/form-data; boundary=b", '--b\r\ncontent-disposition: form-data; name="_method"\r\n\r\nDELETE\r\n--b--\r\n'],
      ["multipart/mixed; boundary=b", '--b\r\ncontent-disposition: form-data; name="_method"\r\n\r\nDELETE\r\n--b--\r\n'], // Rack
      ["application/json", '{"_method": "DELETE"}'], // Laravel
      ["application/vnd.api+json", '{"_method": "DELETE"}'], // Laravel: any +json
      ["text/plain", "_method=DELETE"],
    ];
    for (const [type, body] of bodies) {
      const refused = await raw("POST", "/api/orders/7", { ...bearer(alice), "content-type": type }, body);
      assert.equal(refused.status, 403, `${type}: ${refused.text}`);
      assert.equal(refused.body.code, "insufficient_role");
      const admin = await raw("POST", "/api/orders/7", { ...bearer(root), "content-type": type }, body);
      assert.equal(admin.status, 200, type);
      assert.equal(admin.body.method, "POST");
      assert.equal(admin.body.body, body, "the body reaches the origin as sent");
    }
    // Only a POST without a body cannot become another method: it is judged as the POST it is.
    const empty = await raw("POST", "/api/orders/7", { ...bearer(alice), "content-length": "0" });
    assert.equal(empty.status, 200, empty.text);
    assert.equal(empty.body.method, "POST");
    // And the rule itself still holds for the methods it lists.
    assert.equal((await raw("DELETE", "/api/orders/7", bearer(alice))).status, 403);
  });

  test("a rule saying method_override: false is not reached by an override: a create needs what a POST needs", async () => {
    for (const [type, body] of [["application/json", '{"title": "a note"}'], ["application/x-www-form-urlencoded", "_method=DELETE"]]) {
      const res = await raw("POST", "/api/notes/7", { ...bearer(alice), "content-type": type }, body);
      assert.equal(res.status, 200, `${type}: ${res.text}`);
      assert.equal(res.body.method, "POST");
      assert.equal(res.body.body, body);
    }
    assert.equal((await raw("POST", "/api/notes/7?_method=DELETE", { ...bearer(alice), ...json }, "{}")).status, 200);
    // The rule holds for DELETE itself, and a POST still needs a token.
    const del = await raw("DELETE", "/api/notes/7", bearer(alice));
    assert.equal(del.status, 403);
    assert.equal(del.body.code, "insufficient_role");
    assert.equal((await raw("DELETE", "/api/notes/7", bearer(root))).status, 200);
    assert.equal((await raw("POST", "/api/notes/7", json, "{}")).status, 401);
  });
});

describe("headers an origin may trust", () => {
  const entries = strippedEntries();

  test("no identity, client-address, routing or override header reaches the origin, in any spelling; every other header does", async () => {
    const rand = rng(20);
    for (let round = 0; round < 6; round++) {
      const { headers, stripped, kept } = headerSet(entries, rand);
      for (const [path, auth] of [["/api/public/x", {}], ["/api/hello", bearer(alice)]]) {
        const res = await raw("GET", path, { ...auth, ...headers });
        assert.equal(res.status, 200, `${path}: ${res.text}`);
        const arrived = res.body.headers;
        const through = stripped.filter((n) => arrived[n.toLowerCase()] !== undefined && !/^x[-_]auth[-_](user[-_]id|email|roles|session[-_]id|assertion)$/i.test(n));
        assert.deepEqual(through, [], `round ${round} ${path}`);
        for (const n of kept) assert.equal(arrived[n.toLowerCase()], headers[n], `round ${round} ${path}: ${n} did not arrive`);
      }
    }
  });

  test("STRIP_HEADERS adds names and prefixes to the list", async () => {
    const res = await raw("GET", "/api/public/x", { "x-tenant-id": "t1", "X_Tenant_Id": "t2", "x-acme-user": "u", "x-acme": "kept", "x-tenant": "kept" });
    assert.equal(res.status, 200);
    const names = Object.keys(res.body.headers).filter((k) => /tenant|acme/i.test(k)).sort();
    assert.deepEqual(names, ["x-acme", "x-tenant"]);
  });

  test("Authorization never reaches the origin on a public route, unless its rule says forward_authorization", async () => {
    for (const authorization of ["Bearer not-for-the-origin", "Basic dXNlcjpwYXNz", `Bearer ${alice.auth.access_token}`]) {
      const pub = await raw("GET", "/api/public/x", { authorization });
      assert.equal(pub.status, 200);
      assert.equal(pub.body.headers.authorization, undefined, authorization);
      const relay = await raw("GET", "/api/relay/x", { authorization });
      assert.equal(relay.status, 200);
      assert.equal(relay.body.headers.authorization, authorization);
    }
    // Nor the token a protected route consumed.
    assert.equal((await raw("GET", "/api/hello", bearer(alice))).body.headers.authorization, undefined);
  });
});

describe("streaming and origin behaviour", () => {
  test("a large request body is streamed to the origin intact", async () => {
    const big = crypto.randomBytes(3 * 1024 * 1024);
    const res = await fetch(`${gw.url}/api/upload`, {
      method: "POST",
      headers: { ...bearer(alice), "content-type": "application/octet-stream" },
      body: big,
    });
    assert.equal(res.status, 200);
    const echo = await res.json();
    assert.equal(echo.body_length, big.length);
    assert.equal(echo.body_sha256, crypto.createHash("sha256").update(big).digest("hex"));
  });

  test("a chunked origin response streams back complete", async () => {
    const res = await fetch(`${gw.url}/api/__stream?chunks=8&size=4096`, { headers: bearer(alice) });
    assert.equal(res.status, 200);
    let total = 0;
    let reads = 0;
    for await (const chunk of res.body) {
      total += chunk.length;
      reads++;
    }
    assert.equal(total, 8 * 4096);
    assert.ok(reads >= 1);
  });

  test("the origin's status and redirects are passed back, never followed", async () => {
    const teapot = await fetch(`${gw.url}/api/__status/418`, { headers: bearer(alice) });
    assert.equal(teapot.status, 418);
    const redirect = await fetch(`${gw.url}/api/__redirect`, { headers: bearer(alice), redirect: "manual" });
    assert.equal(redirect.status, 302);
    assert.equal(redirect.headers.get("location"), "http://127.0.0.1:1/elsewhere");
  });

  test("an unreachable origin gives 502 problem+json", async () => {
    // Port 1: nothing listens there (privileged, unassigned on loopback).
    const down = await startGateway({ vars: { ORIGIN_URL: "http://127.0.0.1:1" } });
    try {
      const res = await fetch(`${down.url}/api/public/x`);
      assert.equal(res.status, 502);
      assert.match(res.headers.get("content-type"), /application\/problem\+json/);
      assert.equal((await res.json()).code, "origin_unreachable");
    } finally {
      await down.stop();
    }
  });
});

describe("misconfiguration and timeouts", () => {
  test("an origin slower than ORIGIN_TIMEOUT_MS gives 504 problem+json, not a hang", async () => {
    const slow = await startGateway({ origin: true, vars: { ORIGIN_TIMEOUT_MS: "1000" } });
    try {
      const started = Date.now();
      const res = await fetch(`${slow.url}/api/public/__slow?ms=5000`);
      assert.equal(res.status, 504);
      assert.equal((await res.json()).code, "origin_timeout");
      assert.ok(Date.now() - started < 4500, "the gateway waited for the slow origin");
    } finally {
      await slow.stop();
    }
  });

  test("a malformed ROUTES fails closed: every request is refused with a problem naming it", async () => {
    const bad = await startGateway({ origin: true, vars: { ROUTES: '[{"path": "api/*", "policy": "public"}]' } });
    try {
      for (const path of ["/api/public/x", "/api/hello", "/auth/me"]) {
        const res = await fetch(`${bad.url}${path}`);
        assert.equal(res.status, 503, path);
        const body = await res.json();
        assert.equal(body.code, "misconfigured");
        assert.match(body.detail, /ROUTES\[0\]/);
      }
    } finally {
      await bad.stop();
    }
  });
});

describe("CORS", () => {
  test("a preflight from an allowed origin is answered at the edge with credentials", async () => {
    const res = await fetch(`${gw.url}/api/hello`, {
      method: "OPTIONS",
      headers: { origin: APP, "access-control-request-method": "POST", "access-control-request-headers": "authorization, content-type" },
    });
    assert.equal(res.status, 204);
    assert.equal(res.headers.get("access-control-allow-origin"), APP);
    assert.equal(res.headers.get("access-control-allow-credentials"), "true");
    assert.match(res.headers.get("access-control-allow-methods"), /POST/);
    assert.match(res.headers.get("access-control-allow-headers"), /authorization/i);
  });

  test("a preflight from another origin is refused and nothing is reflected", async () => {
    const res = await fetch(`${gw.url}/api/hello`, {
      method: "OPTIONS",
      headers: { origin: "https://evil.example", "access-control-request-method": "GET" },
    });
    assert.equal(res.status, 403);
    assert.equal(res.headers.get("access-control-allow-origin"), null);
  });

  test("responses carry CORS headers only for allowed origins", async () => {
    const ok = await fetch(`${gw.url}/api/hello`, { headers: { ...bearer(alice), origin: APP } });
    assert.equal(ok.status, 200);
    assert.equal(ok.headers.get("access-control-allow-origin"), APP);
    const evil = await fetch(`${gw.url}/api/hello`, { headers: { ...bearer(alice), origin: "https://evil.example" } });
    assert.equal(evil.headers.get("access-control-allow-origin"), null);
    assert.equal(evil.headers.get("access-control-allow-credentials"), null);
    const auth = await fetch(`${gw.url}/auth/me`, { headers: { ...bearer(alice), origin: APP } });
    assert.equal(auth.headers.get("access-control-allow-origin"), APP);
  });

  test("with CORS configured every response varies by Origin, granted or not (a shared cache must not mix them)", async () => {
    const cases = [
      ["/api/hello", { ...bearer(alice) }],
      ["/api/hello", { ...bearer(alice), origin: "https://evil.example" }],
      ["/api/hello", { ...bearer(alice), origin: APP }],
      ["/api/public/x", {}],
      ["/api/admin/x", { ...bearer(alice) }], // a refusal answered in the fast path
      ["/api/hello", {}], // 401
      ["/.well-known/jwks.json", {}],
      ["/.well-known/jwks.json", { origin: "https://evil.example" }],
      ["/auth/me", { ...bearer(alice) }],
    ];
    for (const [p, headers] of cases) {
      const res = await raw("GET", p, headers);
      const vary = String(res.headers.vary ?? "");
      assert.match(vary, /(^|,)\s*origin\s*(,|$)/i, `${p} ${JSON.stringify(Object.keys(headers))}: vary ${vary}`);
      assert.notEqual(res.statusMessage, "", `${p}: the reason phrase is kept`);
    }
    const preflightRefused = await raw("OPTIONS", "/api/hello", { origin: "https://evil.example", "access-control-request-method": "GET" });
    assert.equal(preflightRefused.status, 403);
    assert.match(String(preflightRefused.headers.vary ?? ""), /origin/i);
  });
});

describe("cookie mode", () => {
  test("login sets __Host- cookies that are HttpOnly, Secure, SameSite and Path=/", async () => {
    const res = await post(`${gw.url}/auth/login`, { email: alice.email, password: alice.password });
    const cookies = res.headers.getSetCookie();
    assert.equal(cookies.length, 2);
    for (const c of cookies) {
      assert.match(c, /^__Host-portcullis_(access|refresh)=/);
      for (const attr of ["HttpOnly", "Secure", "SameSite=", "Path=/"]) assert.ok(c.includes(attr), `${c} lacks ${attr}`);
      assert.ok(!/Domain=/i.test(c));
    }
  });

  test("the access cookie authenticates at the gateway and is not forwarded", async () => {
    const cookie = `__Host-portcullis_access=${alice.auth.access_token}; theme=dark`;
    const res = await fetch(`${gw.url}/api/hello`, { headers: { cookie } });
    assert.equal(res.status, 200);
    const echo = await res.json();
    assert.equal(echo.identity.user_id, alice.auth.user.id);
    assert.equal(echo.headers.cookie, "theme=dark");
  });

  test("a cookie-authenticated state change from a foreign site is refused", async () => {
    const cookie = `__Host-portcullis_access=${alice.auth.access_token}`;
    const res = await fetch(`${gw.url}/api/items`, {
      method: "POST",
      headers: { cookie, origin: "https://evil.example", "content-type": "text/plain" },
      body: "x",
    });
    assert.equal(res.status, 403);
    assert.equal((await res.json()).code, "csrf_refused");
    const site = await fetch(`${gw.url}/api/items`, {
      method: "POST",
      headers: { cookie, "sec-fetch-site": "cross-site" },
      body: "x",
    });
    assert.equal(site.status, 403);
  });

  test("a cookie-authenticated cross-site GET whose query names a method override is a state change too", async () => {
    const cookie = `__Host-portcullis_access=${root.auth.access_token}`;
    for (const q of ["_method=DELETE", "%5Fmethod=PUT"]) {
      const res = await raw("GET", `/api/orders/7?${q}`, { cookie, "sec-fetch-site": "cross-site" });
      assert.equal(res.status, 403, `${q}: ${res.text}`);
      assert.equal(res.body.code, "csrf_refused");
      const sibling = await raw("GET", `/api/orders/7?${q}`, { cookie, "sec-fetch-site": "same-site" });
      assert.equal(sibling.status, 403, `a link from a sibling subdomain: ${sibling.text}`);
      const own = await raw("GET", `/api/orders/7?${q}`, { cookie, "sec-fetch-site": "same-origin" });
      assert.equal(own.status, 200, `${q}: ${own.text}`);
    }
    const plain = await raw("GET", "/api/orders/7?method=DELETE", { cookie, "sec-fetch-site": "cross-site" });
    assert.equal(plain.status, 200, "a top-level cross-site navigation still reads");
  });

  test("the refresh cookie alone is held to the same rule: no cross-site logout or refresh", async () => {
    const session = await post(`${gw.url}/auth/login`, { email: alice.email, password: alice.password }).then(authOf);
    const cookie = `__Host-portcullis_refresh=${session.refresh_token}`;
    for (const path of ["/auth/logout", "/auth/refresh"]) {
      for (const headers of [{ origin: "https://evil.example" }, { "sec-fetch-site": "cross-site" }]) {
        const res = await fetch(`${gw.url}${path}`, { method: "POST", headers: { cookie, ...headers } });
        assert.equal(res.status, 403, `${path} ${JSON.stringify(headers)}`);
        assert.equal((await res.json()).code, "csrf_refused");
      }
    }
    // Still alive: the same cookie from the gateway's own site refreshes.
    const own = await fetch(`${gw.url}/auth/refresh`, { method: "POST", headers: { cookie, origin: gw.url } });
    assert.equal(own.status, 200, await own.text());
  });
});
