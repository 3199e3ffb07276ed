// The JWT attack suite: hostile tokens against the gateway and /auth/me. Forged
// tokens that need a valid signature are signed with the gateway's own key
// (decrypted from local D1), so each test isolates exactly one defence.
import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import http from "node:http";
import { startGateway, post, randomEmail } from "./harness.mjs";
import { signingKey, mint, claimsFor } from "./lib/d1.mjs";

let gw;
let user; // AuthResponse
let key;
let outbound = 0; // requests that reached our decoy key server
let decoy;

const b64 = (v) => Buffer.from(typeof v === "string" ? v : JSON.stringify(v)).toString("base64url");

before(async () => {
  // A decoy JWKS server: a token pointing jku/x5u here must never make the gateway call it.
  decoy = http.createServer((req, res) => {
    outbound++;
    res.writeHead(200, { "content-type": "application/json" });
    res.end("{}");
  });
  await new Promise((r) => decoy.listen(0, "127.0.0.1", r));
  gw = await startGateway({ origin: true });
  const res = await post(`${gw.url}/auth/signup`, { email: randomEmail("victim"), password: "correct horse battery" });
  assert.equal(res.status, 201);
  user = await res.json();
  key = await signingKey(gw);
});

after(async () => {
  await gw?.stop();
  await new Promise((r) => decoy?.close(r));
});

/** Sends `token` to the gateway and to /auth/me; both must answer 401 quickly. */
async function refused(token, code) {
  for (const path of ["/api/hello", "/auth/me"]) {
    const started = performance.now();
    const res = await fetch(`${gw.url}${path}`, { headers: { authorization: `Bearer ${token}` } });
    const elapsed = performance.now() - started;
    const body = await res.json();
    assert.equal(res.status, 401, `${path}: ${JSON.stringify(body)}`);
    assert.match(res.headers.get("content-type"), /application\/problem\+json/);
    assert.match(res.headers.get("www-authenticate") ?? "", /^Bearer/);
    if (code) assert.equal(body.code, code, path);
    assert.ok(elapsed < 2000, `${path} took ${elapsed} ms`);
  }
}

describe("algorithm attacks", () => {
  for (const alg of ["none", "None", "NONE", "nOnE"]) {
    test(`alg ${alg} with an empty signature is refused`, async () => {
      const [, payload] = user.access_token.split(".");
      await refused(`${b64({ alg, typ: "at+jwt", kid: key.kid })}.${payload}.`);
    });
  }

  test("a stripped signature is refused", async () => {
    const [h, p] = user.access_token.split(".");
    await refused(`${h}.${p}.`);
  });

  test("HS256 signed with our public key as the HMAC secret is refused", async () => {
    const [, payload] = user.access_token.split(".");
    const header = b64({ alg: "HS256", typ: "at+jwt", kid: key.kid });
    for (const secret of [Buffer.from(key.jwk.x, "base64url"), Buffer.from(JSON.stringify({ kty: "OKP", crv: "Ed25519", x: key.jwk.x }))]) {
      const sig = crypto.createHmac("sha256", secret).update(`${header}.${payload}`).digest("base64url");
      await refused(`${header}.${payload}.${sig}`);
    }
  });

  test("a header alg other than the key's (ES256) is refused even with a valid EdDSA signature", async () => {
    const claims = claimsFor(gw, user.user);
    const token = await mint(key, claims);
    const [, p, s] = token.split(".");
    await refused(`${b64({ alg: "ES256", typ: "at+jwt", kid: key.kid })}.${p}.${s}`);
  });
});

describe("claim attacks", () => {
  const now = () => Math.floor(Date.now() / 1000);

  test("a tampered payload is refused", async () => {
    const [h, p, s] = user.access_token.split(".");
    const claims = JSON.parse(Buffer.from(p, "base64url"));
    claims.sub = crypto.randomUUID();
    await refused(`${h}.${b64(claims)}.${s}`);
  });

  test("an expired token is refused", async () => {
    await refused(await mint(key, claimsFor(gw, user.user, { iat: now() - 7200, exp: now() - 3600 })), "token_expired");
  });

  test("a token without exp is refused", async () => {
    const c = claimsFor(gw, user.user);
    delete c.exp;
    await refused(await mint(key, c));
  });

  test("a token not valid before a future nbf is refused", async () => {
    await refused(await mint(key, claimsFor(gw, user.user, { nbf: now() + 3600 })));
  });

  test("a token issued in the future is refused", async () => {
    await refused(await mint(key, claimsFor(gw, user.user, { iat: now() + 3600, exp: now() + 7200 })));
  });

  test("a wrong or missing issuer is refused", async () => {
    await refused(await mint(key, claimsFor(gw, user.user, { iss: "https://evil.example" })));
    const c = claimsFor(gw, user.user);
    delete c.iss;
    await refused(await mint(key, c));
  });

  test("a wrong or missing audience is refused", async () => {
    await refused(await mint(key, claimsFor(gw, user.user, { aud: "not-portcullis" })));
    await refused(await mint(key, claimsFor(gw, user.user, { aud: ["a", "b"] })));
    const c = claimsFor(gw, user.user);
    delete c.aud;
    await refused(await mint(key, c));
  });

  test("a refresh token is not an access token", async () => {
    await refused(user.refresh_token);
  });

  test("the origin assertion is not an access token", async () => {
    const echo = await (await fetch(`${gw.url}/api/hello`, { headers: { authorization: `Bearer ${user.access_token}` } })).json();
    await refused(echo.identity.assertion);
  });

  test("a token with another typ is refused", async () => {
    await refused(await mint(key, claimsFor(gw, user.user), { typ: "JWT" }));
    await refused(await mint(key, claimsFor(gw, user.user), { typ: "portcullis-assertion+jwt" }));
  });
});

describe("validly signed tokens the gateway must still refuse", () => {
  test("a header naming critical extensions (crit, b64) is refused: we implement none (RFC 7515 §4.1.11)", async () => {
    // Signed by hand: jose will not sign a header naming an extension it does not know.
    const signRaw = (header) => {
      const input = `${b64({ alg: "EdDSA", typ: "at+jwt", kid: key.kid, ...header })}.${b64(claimsFor(gw, user.user))}`;
      const sig = crypto.sign(null, Buffer.from(input), crypto.createPrivateKey({ key: key.jwk, format: "jwk" }));
      return `${input}.${sig.toString("base64url")}`;
    };
    const plain = signRaw({});
    const ok = await fetch(`${gw.url}/auth/me`, { headers: { authorization: `Bearer ${plain}` } });
    assert.equal(ok.status, 200, "the same token without the extension is accepted");
    await refused(signRaw({ crit: ["exp2"], exp2: 1 }), "invalid_token");
    await refused(signRaw({ crit: [] }), "invalid_token");
    await refused(signRaw({ b64: false, crit: ["b64"] }), "invalid_token");
    await refused(signRaw({ b64: true }), "invalid_token");
  });

  test("identity claims that cannot be header values (CR/LF, NUL, a comma in a role) are a 401, never a 500 or an injected header", async () => {
    for (const over of [
      { sub: "u\r\nX-Auth-Roles: admin" },
      { email: "e@x.io\r\nX-Injected: 1" },
      { sid: "s\u0000" },
      { roles: ["user,admin"] },
    ]) {
      await refused(await mint(key, claimsFor(gw, user.user, over)), "invalid_token");
    }
  });
});

describe("key selection attacks", () => {
  for (const [name, kid] of [
    ["unknown", "no-such-kid"],
    ["path traversal", "../../../../etc/passwd"],
    ["SQL", "' OR '1'='1' --"],
    ["NUL", "abc\u0000def"],
    ["10 KB", "k".repeat(10 * 1024)],
    ["empty", ""],
  ]) {
    test(`a ${name} kid is refused`, async () => {
      await refused(await mint(key, claimsFor(gw, user.user), { kid }));
    });
  }

  test("jku, x5u and jwk headers are ignored: no outbound fetch, and a foreign embedded key is not trusted", async () => {
    const { publicKey, privateKey } = crypto.generateKeyPairSync("ed25519");
    const foreignJwk = publicKey.export({ format: "jwk" });
    const decoyUrl = `http://127.0.0.1:${decoy.address().port}/jwks.json`;
    const before = outbound;
    const token = await mint(
      { kid: key.kid, privateKey },
      claimsFor(gw, user.user),
      { jku: decoyUrl, x5u: decoyUrl, jwk: foreignJwk },
    );
    await refused(token);
    assert.equal(outbound, before, "the gateway fetched a URL named by the token");
  });

  test("our own valid token with extra jku/x5u headers still needs our key, and fetches nothing", async () => {
    const before = outbound;
    const decoyUrl = `http://127.0.0.1:${decoy.address().port}/x`;
    const token = await mint(key, claimsFor(gw, user.user), { jku: decoyUrl, x5u: decoyUrl });
    const res = await fetch(`${gw.url}/api/hello`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(res.status, 200);
    assert.equal(outbound, before);
  });
});

describe("malformed compact forms", () => {
  for (const [name, make] of [
    ["two segments", () => user.access_token.split(".").slice(0, 2).join(".")],
    ["four segments", () => `${user.access_token}.AAAA`],
    ["bad base64url", () => user.access_token.replace(/^[^.]+/, "e30*!")],
    ["padding", () => user.access_token.split(".").map((x) => x + "==").join(".")],
    ["inner whitespace", () => user.access_token.replace(".", ". ")],
    ["header not JSON", () => `${b64("not json")}.${user.access_token.split(".")[1]}.${user.access_token.split(".")[2]}`],
    ["payload not JSON", () => `${user.access_token.split(".")[0]}.${b64("not json")}.${user.access_token.split(".")[2]}`],
    ["a 64 KB token", () => `${user.access_token.split(".")[0]}.${"A".repeat(64 * 1024)}.${user.access_token.split(".")[2]}`],
    ["only dots", () => ".."],
    ["random bytes", () => crypto.randomBytes(300).toString("base64url")],
  ]) {
    test(`${name} is refused`, async () => {
      await refused(make());
    });
  }

  test("a 64 KB Authorization header is refused without a 5xx", async () => {
    const res = await fetch(`${gw.url}/api/hello`, { headers: { authorization: `Bearer ${"x".repeat(64 * 1024)}` } });
    assert.ok(res.status === 401 || res.status === 431 || res.status === 400, String(res.status));
  });

  test("a non-Bearer scheme is not a token", async () => {
    const res = await fetch(`${gw.url}/api/hello`, { headers: { authorization: `Basic ${Buffer.from("a:b").toString("base64")}` } });
    assert.equal(res.status, 401);
    assert.equal((await res.json()).code, "missing_token");
  });
});
