// E2E on bare workerd: the built Worker (build/index.js + index_bg.wasm) served
// by the workerd binary the wrangler package ships, as Cloudflare runs it,
// without wrangler dev's local proxy in front. That proxy drops the
// `Connection` header before the Worker sees it, so the headers a client
// names there can only be shown to be removed here. D1 is the bench's
// in-memory stand-in holding one signing key (bench/workers/fake-d1.js), made
// in Node in Portcullis's formats (bench/lib/keys.mjs); the origin is the demo.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { ROOT } from "./harness.mjs";
import { makeSigningKey, minter } from "../../bench/lib/keys.mjs";
import { writeConfig, portcullisPlatform } from "../../bench/lib/workerd.mjs";
import { listenSocket, start, stop, waitHttp } from "../../bench/lib/proc.mjs";
import { startOrigin } from "../../demo/origin.mjs";
import { strippedEntries, headerSet, rng } from "./lib/stripped.mjs";

const WORKERD = path.join(ROOT, "node_modules", "@cloudflare", "workerd-linux-64", "bin", "workerd");
const ISSUER = "https://portcullis.workerd.test";
let dir;
let origin;
let workerd;
let port;
let mint;
let mintRetired;
let mintSealedElsewhere;
let activeKey;
let retiredKey;

before(async () => {
  for (const f of ["index.js", "index_bg.wasm"]) {
    assert.ok(fs.existsSync(path.join(ROOT, "build", f)), `build/${f} is missing: build first (npm test does)`);
  }
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "portcullis-workerd-"));
  origin = await startOrigin({ port: 0 });
  const now = Math.floor(Date.now() / 1000);
  const key = await makeSigningKey(now);
  mint = minter(key, { issuer: ISSUER, audience: "portcullis" });
  // The key before it: retired, still published while its tokens live.
  const retired = await makeSigningKey(now - 7200, { kek: Buffer.from(key.kek, "base64") });
  Object.assign(retired.row, { status: "retired", retired_at: now - 600, publish_until: now + 3600 });
  mintRetired = minter(retired, { issuer: ISSUER, audience: "portcullis" });
  // Another retired key, sealed under another KEK: published, but its private half
  // does not unseal here, so its signatures can only be verified.
  const sealedElsewhere = await makeSigningKey(now - 3600);
  Object.assign(sealedElsewhere.row, { status: "retired", retired_at: now - 300, publish_until: now + 3600 });
  mintSealedElsewhere = minter(sealedElsewhere, { issuer: ISSUER, audience: "portcullis" });
  activeKey = key;
  retiredKey = retired;
  const socket = await listenSocket();
  port = socket.port;
  const compat = /^compatibility_date = "([^"]+)"/m.exec(fs.readFileSync(path.join(ROOT, "wrangler.toml"), "utf8"))[1];
  const cfg = writeConfig(dir, "portcullis", {
    port,
    compatibilityDate: compat,
    modules: [
      { name: "index.js", file: path.join(ROOT, "build", "index.js"), type: "esModule" },
      { name: "index_bg.wasm", file: path.join(ROOT, "build", "index_bg.wasm"), type: "wasm" },
    ],
    vars: {
      ISSUER,
      AUDIENCE: "portcullis",
      ORIGIN_URL: `http://127.0.0.1:${origin.port}`,
      ROUTES: JSON.stringify([
        { path: "/api/public/*", policy: "public" },
        { path: "/api/items/*", methods: ["DELETE"], policy: "role:admin" },
      ]),
      KEY_ENCRYPTION_KEY: key.kek,
    },
    extra: portcullisPlatform(dir, path.join(ROOT, "bench"), [key.row, retired.row, sealedElsewhere.row]),
  });
  workerd = start(WORKERD, ["serve", cfg, "--experimental", "--socket-fd", "http=3"], {
    logFile: path.join(dir, "workerd.log"),
    socket,
  });
  await waitHttp(`http://127.0.0.1:${port}/.well-known/jwks.json`, workerd);
});

after(async () => {
  if (workerd) await stop(workerd);
  await origin?.close();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

/** One request with exactly these headers; resolves to { status, body }. */
function send(p, headers) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, path: p, headers, agent: false }, (res) => {
      let text = "";
      res.on("data", (c) => (text += c));
      res.on("end", () => resolve({ status: res.statusCode, body: JSON.parse(text) }));
    });
    req.on("error", reject);
    req.end();
  });
}

for (const [what, p, auth] of [
  ["a public route", "/api/public/x", () => ({})],
  ["an authenticated route", "/api/x", () => ({ authorization: `Bearer ${mint()}` })],
]) {
  test(`headers named by Connection never reach the origin (${what}); other headers do`, async () => {
    const r = await send(p, {
      ...auth(),
      connection: "keep-alive, X-Secret, x-other",
      "x-secret": "s",
      "x-other": "o",
      "x-kept": "k",
      "keep-alive": "timeout=5",
    });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.headers["x-secret"], undefined);
    assert.equal(r.body.headers["x-other"], undefined);
    assert.equal(r.body.headers["keep-alive"], undefined);
    assert.equal(r.body.headers["x-kept"], "k");
  });
}

test("a Connection header naming the identity headers can neither strip nor spoof them", async () => {
  const token = mint({ roles: ["user"] });
  const claims = JSON.parse(Buffer.from(token.split(".")[1], "base64url"));
  const spoof = { "x-auth-user-id": "spoofed", "x-auth-email": "evil@example.com", "x-auth-roles": "admin", "x-auth-assertion": "forged" };
  const connection = "X-Auth-User-Id, x-auth-email, X-Auth-Roles, x-auth-session-id, X-Auth-Assertion";
  const r = await send("/api/x", { authorization: `Bearer ${token}`, connection, ...spoof });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.deepEqual(
    [r.body.identity.user_id, r.body.identity.email, r.body.identity.roles, r.body.identity.session_id],
    [claims.sub, claims.email, "user", claims.sid],
  );
  assert.notEqual(r.body.identity.assertion, "forged");
  assert.equal(r.body.identity.assertion.split(".").length, 3);
  // On a public route none of them reaches the origin at all.
  const p = await send("/api/public/x", { connection, ...spoof });
  assert.equal(p.status, 200);
  for (const h of Object.keys(spoof)) assert.equal(p.body.headers[h], undefined, h);
});

test("a Connection header cannot remove the body's type or framing, the cookies or the Origin: the origin reads the request that was judged", async () => {
  const body = JSON.stringify({ _method: "DELETE" });
  const r = await new Promise((resolve, reject) => {
    const headers = {
      "content-type": "application/json",
      "content-length": String(Buffer.byteLength(body)),
      connection: "Content-Type, content-length, transfer-encoding, host, cookie, origin, authorization, x-other",
      cookie: "theme=dark",
      origin: "https://app.example",
      "x-other": "o",
    };
    const req = http.request({ host: "127.0.0.1", port, path: "/api/public/x", method: "POST", headers, agent: false }, (res) => {
      let text = "";
      res.on("data", (c) => (text += c));
      res.on("end", () => resolve({ status: res.statusCode, body: JSON.parse(text) }));
    });
    req.on("error", reject);
    req.end(body);
  });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.body.method, "POST");
  assert.equal(r.body.headers["content-type"], "application/json");
  assert.equal(r.body.headers["content-length"], String(Buffer.byteLength(body)));
  assert.equal(r.body.body, body);
  assert.equal(r.body.headers.cookie, "theme=dark");
  assert.equal(r.body.headers.origin, "https://app.example");
  assert.equal(r.body.headers["x-other"], undefined, "what else Connection names is still removed");
});

test("JWKS requests in a burst share one key load from D1", async () => {
  const keyLoads = (text) => (text.match(/\[fake-d1\] SELECT kid, alg/g) ?? []).length;
  const start = workerd.output().length;
  for (let i = 0; i < 20; i++) {
    const res = await fetch(`http://127.0.0.1:${port}/.well-known/jwks.json`);
    assert.equal(res.status, 200);
    assert.ok((await res.json()).keys.some((k) => k.kid === activeKey.kid));
  }
  // A sign-in attempt reads other tables: its statements are logged after
  // those of the JWKS requests, so once one is in, the count is complete
  // (the revocation log, read in the background after earlier gateway
  // requests, is not a sign-in's).
  const signIn = await fetch(`http://127.0.0.1:${port}/auth/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ email: "nobody@example.com", password: "not the password" }),
  });
  await signIn.arrayBuffer();
  let upTo = -1;
  for (let polls = 0; upTo < 0; polls++) {
    const m = /\[fake-d1\] (?!SELECT kid, alg|SELECT seq, kind|SELECT MAX\(seq\))/.exec(workerd.output().slice(start));
    if (m) upTo = m.index;
    else if (polls > 100) assert.fail("the sign-in's D1 statements never reached the log");
    else await new Promise((r) => setTimeout(r, 50));
  }
  const loads = keyLoads(workerd.output().slice(start, start + upTo));
  // At most a load when the burst began and one more if it straddled the
  // few seconds the loaded keys answer for; 20 before, one per request.
  assert.ok(loads <= 2, `${loads} key loads for 20 JWKS requests`);
});

/** One raw GET (the target's bytes exactly as given); resolves to { status, body, text }. */
function rawBytes(target, headers = {}) {
  return rawRequest("GET", target, headers);
}

/**
 * One raw HTTP/1.1 request: the method, target, headers and body bytes exactly as given, with
 * no header added but `host` and `connection: close` (no framing header unless given).
 */
function rawRequest(method, target, headers = {}, body = "") {
  const head = Buffer.concat([
    Buffer.from(`${method} `),
    Buffer.from(target, "utf8"),
    Buffer.from(` HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n${Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join("")}\r\n`),
    Buffer.from(body),
  ]);
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, "127.0.0.1", () => sock.end(head));
    let out = "";
    sock.on("data", (d) => (out += d));
    sock.on("end", () => {
      const status = Number(/^HTTP\/1\.1 (\d+)/.exec(out)?.[1]);
      const text = out.slice(out.indexOf("\r\n\r\n") + 4);
      let body = null;
      try { body = JSON.parse(text); } catch {}
      resolve({ status, body, text });
    });
    sock.on("error", reject);
  });
}

test("a path an origin would read as another is refused however it is sent: percent-encoded or as raw UTF-8", async () => {
  const auth = { authorization: `Bearer ${mint()}` };
  for (const target of ["/api/%C5%BFecrets/x", "/api/ſecrets/x", "/api/ｓecrets/x", "/api/secrets./x", "/api/secrets%3F/x", "/api/Kelvin-\u212A/x"]) {
    const r = await rawBytes(target, auth);
    assert.equal(r.status, 422, `${target}: ${r.status} ${r.text}`);
    assert.equal(r.body.code, "invalid_path", target);
  }
  const ok = await rawBytes("/api/public/Müller/日本", {});
  assert.equal(ok.status, 200, ok.text);
  assert.equal(decodeURIComponent(ok.body.path), "/api/public/Müller/日本");
});

test("a POST with neither a body nor a Content-Length (curl -X POST) is judged as the POST it is; with a body, as every method it may become", async () => {
  // /api/items/*: DELETE needs role:admin; a POST with a body may carry `_method=DELETE`.
  const user = { authorization: `Bearer ${mint({ roles: ["user"] })}` };
  const bare = await rawRequest("POST", "/api/items/7", user);
  assert.equal(bare.status, 200, bare.text);
  assert.equal(bare.body.method, "POST");
  assert.equal(bare.body.body_length, 0);
  for (const [what, headers, body] of [
    ["a body with its length", { "content-type": "application/json", "content-length": "21" }, '{"_method": "DELETE"}'],
    ["a chunked body", { "content-type": "application/x-www-form-urlencoded", "transfer-encoding": "chunked" }, "e\r\n_method=DELETE\r\n0\r\n\r\n"],
    ["an empty chunked body", { "transfer-encoding": "chunked" }, "0\r\n\r\n"],
  ]) {
    const refused = await rawRequest("POST", "/api/items/7", { ...user, ...headers }, body);
    assert.equal(refused.status, 403, `${what}: ${refused.text}`);
    assert.equal(refused.body.code, "insufficient_role", what);
    const admin = await rawRequest("POST", "/api/items/7", { authorization: `Bearer ${mint({ roles: ["admin"] })}`, ...headers }, body);
    assert.equal(admin.status, 200, `${what}: ${admin.text}`);
  }
  const empty = await rawRequest("POST", "/api/items/7", { ...user, "content-length": "0" });
  assert.equal(empty.status, 200, empty.text);
  assert.equal((await rawRequest("DELETE", "/api/items/7", user)).status, 403);
});

test("no identity, client-address, routing or override header reaches the origin, in any spelling; every other header does", async () => {
  const entries = strippedEntries();
  const rand = rng(7);
  for (let round = 0; round < 4; round++) {
    const { headers, stripped, kept } = headerSet(entries, rand);
    for (const [p, auth] of [["/api/public/x", {}], ["/api/x", { authorization: `Bearer ${mint()}` }]]) {
      const r = await send(p, { ...auth, ...headers });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      const through = stripped.filter((n) => r.body.headers[n.toLowerCase()] !== undefined && !/^x[-_]auth[-_](user[-_]id|email|roles|session[-_]id|assertion)$/i.test(n));
      assert.deepEqual(through, [], `round ${round} ${p}`);
      for (const n of kept) assert.equal(r.body.headers[n.toLowerCase()], headers[n], `round ${round} ${p}: ${n}`);
      assert.equal(r.body.headers.authorization, undefined, p);
    }
  }
});

test("the gateway's own cookies never reach the origin, also from a second Cookie header line", async () => {
  // Raw bytes: two Cookie lines, which the runtime joins with ", ". The echo carries a
  // Content-Length (passed through unchanged), so its body is everything after the head.
  const head = (p) =>
    `GET ${p} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncookie: theme=dark; __Host-portcullis_refresh=r1\r\ncookie: __Host-portcullis_access=a1, lang=en\r\ncookie: __Host-portcullis_oauth=o1\r\n\r\n`;
  const text = await new Promise((resolve, reject) => {
    const sock = net.connect(port, "127.0.0.1", () => sock.end(head("/api/public/x")));
    let out = "";
    sock.on("data", (d) => (out += d));
    sock.on("end", () => resolve(out));
    sock.on("error", reject);
  });
  assert.match(text, /^HTTP\/1\.1 200/);
  const body = text.slice(text.indexOf("\r\n\r\n") + 4);
  const echo = JSON.parse(body);
  const forwarded = echo.headers.cookie ?? "";
  for (const secret of ["r1", "a1", "o1", "__Host-portcullis"]) assert.ok(!forwarded.includes(secret), `${secret} in ${forwarded}`);
  for (const kept of ["theme=dark", "lang=en"]) assert.ok(forwarded.includes(kept), `${kept} missing from ${forwarded}`);
});

test("request and response bodies stream through the gateway: the origin answers each chunk before the next is sent", async () => {
  const token = mint();
  const lines = [];
  const chunks = [1000, 70000, 5, 300000];
  let sentCount = 1;
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      req.destroy();
      reject(new Error(`stalled after ${lines.length} of ${chunks.length} chunks: a body is buffered, not streamed`));
    }, 10000);
    const req = http.request(
      { host: "127.0.0.1", port, path: "/api/__duplex", method: "POST", headers: { authorization: `Bearer ${token}`, "content-type": "application/octet-stream" }, agent: false },
      (res) => {
        assert.equal(res.statusCode, 200);
        let pending = "";
        res.on("data", (d) => {
          pending += d;
          let i;
          while ((i = pending.indexOf("\n")) >= 0) {
            lines.push(Number(pending.slice(0, i)));
            pending = pending.slice(i + 1);
          }
          // The next chunk only once the origin has answered for everything sent so far.
          const got = lines.reduce((a, b) => a + b, 0);
          const sent = chunks.slice(0, sentCount).reduce((a, b) => a + b, 0);
          if (got === sent && !req.writableEnded) {
            if (sentCount < chunks.length) req.write(crypto.randomBytes(chunks[sentCount++]));
            else req.end();
          }
        });
        res.on("end", () => {
          clearTimeout(timer);
          resolve();
        });
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.write(crypto.randomBytes(chunks[0]));
  });
  assert.equal(lines.reduce((a, b) => a + b, 0), chunks.reduce((a, b) => a + b, 0));
});

test("tokens naming unknown kids reload the keys from D1 at most once per interval, and never fetch a URL they name", async () => {
  let fetched = 0;
  const trap = http.createServer((req, res) => {
    fetched++;
    res.end("{}");
  });
  await new Promise((r) => trap.listen(0, "127.0.0.1", r));
  const keyLoads = () => (fs.readFileSync(path.join(dir, "workerd.log"), "utf8").match(/\[fake-d1\] SELECT kid, alg/g) ?? []).length;
  try {
    const before = keyLoads();
    const claims = JSON.parse(Buffer.from(mint().split(".")[1], "base64url"));
    const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
    const url = `http://127.0.0.1:${trap.address().port}/jwks.json`;
    for (let i = 0; i < 20; i++) {
      const header = b64({ alg: "EdDSA", typ: "at+jwt", kid: `unknown-${i}`, jku: url, x5u: url });
      const signing = `${header}.${b64(claims)}`;
      const token = `${signing}.${crypto.sign(null, Buffer.from(signing), activeKey.privateKey).toString("base64url")}`;
      const r = await send("/api/x", { authorization: `Bearer ${token}` });
      assert.equal(r.status, 401);
      assert.equal(r.body.code, "invalid_token");
    }
    await new Promise((r) => setTimeout(r, 300)); // the log is written asynchronously
    const reloads = keyLoads() - before;
    // One reload (the kid might be a key made since the last load), then none for 30 s.
    assert.equal(reloads, 1, `${reloads} key loads for 20 unknown kids`);
    assert.equal(fetched, 0, "nothing fetched from jku / x5u");
  } finally {
    trap.close();
  }
});

test("a token minted outside the project is verified with the key from D1, and the identity reaches the origin", async () => {
  const token = mint({ roles: ["user", "ops"] });
  const claims = JSON.parse(Buffer.from(token.split(".")[1], "base64url"));
  const r = await send("/api/hello?x=1", { authorization: `Bearer ${token}`, "x-auth-user-id": "spoofed" });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.body.identity.user_id, claims.sub);
  assert.equal(r.body.identity.email, claims.email);
  assert.equal(r.body.identity.roles, "user,ops");
  assert.equal(r.body.identity.session_id, claims.sid);
  assert.equal(r.body.query, "x=1");
  const bad = await send("/api/hello", { authorization: `Bearer ${token.slice(0, -4)}AAAA` });
  assert.equal(bad.status, 401);
  assert.equal(bad.body.code, "invalid_token");
});

/** `token` with its signature replaced by `f(signature bytes)`. */
function resigned(token, f) {
  const [h, c, s] = token.split(".");
  return `${h}.${c}.${Buffer.from(f(Buffer.from(s, "base64url"))).toString("base64url")}`;
}

// Ed25519 arithmetic modulo the group order L (little-endian integers): S + L is the
// classic malleated twin of a signature, accepted by lax verifiers; a signature with a
// random nonce is built further down.
const ORDER = (1n << 252n) + 27742317777372353535851937790883648493n;
const le = (buf) => BigInt(`0x${Buffer.from(buf).reverse().toString("hex") || "0"}`);
const le32 = (n) => Buffer.from(n.toString(16).padStart(64, "0"), "hex").reverse();
const plusL = (sig) => Buffer.concat([sig.subarray(0, 32), le32(le(sig.subarray(32)) + ORDER)]);

test("signatures by the active key and by a retired one (both recognised as our own) pass; any other signature is refused", async () => {
  for (const [which, make] of [["active", mint], ["retired", mintRetired]]) {
    const token = make();
    const ok = await send("/api/x", { authorization: `Bearer ${token}` });
    assert.equal(ok.status, 200, `${which}: ${JSON.stringify(ok.body)}`);
    assert.equal(ok.body.identity.user_id, JSON.parse(Buffer.from(token.split(".")[1], "base64url")).sub);
    // Never-seen variants of a fresh token: each byte of R and S counts, and the
    // malleated S + L is not the signature.
    const fresh = make();
    const variants = [0, 31, 32, 63].map((i) => resigned(fresh, (s) => { s[i] ^= 0x01; return s; }));
    variants.push(resigned(fresh, plusL), resigned(fresh, () => Buffer.alloc(64)));
    for (const bad of variants) {
      const r = await send("/api/x", { authorization: `Bearer ${bad}` });
      assert.equal(r.status, 401, `${which}: ${bad}`);
      assert.equal(r.body.code, "invalid_token");
    }
    // The genuine one still passes after its twins were refused.
    assert.equal((await send("/api/x", { authorization: `Bearer ${fresh}` })).status, 200, which);
  }
  // A signature by the active key over another token's content is not that token's.
  const [a, b] = [mint(), mint()];
  const swapped = `${a.split(".").slice(0, 2).join(".")}.${b.split(".")[2]}`;
  assert.equal((await send("/api/x", { authorization: `Bearer ${swapped}` })).status, 401);
});

test("a signature by one of our keys under another of our kids is refused, both ways", async () => {
  for (const [signer, kid] of [[retiredKey, activeKey.kid], [activeKey, retiredKey.kid]]) {
    const token = minter({ ...signer, kid }, { issuer: ISSUER, audience: "portcullis" })();
    const r = await send("/api/x", { authorization: `Bearer ${token}` });
    assert.equal(r.status, 401, `${signer.kid} as ${kid}`);
    assert.equal(r.body.code, "invalid_token");
  }
});

const sha512 = (...parts) => crypto.createHash("sha512").update(Buffer.concat(parts)).digest();
const clamped = (seed) => {
  const h = sha512(seed).subarray(0, 32);
  h[0] &= 248;
  h[31] &= 127;
  h[31] |= 64;
  return le(h);
};
const publicOf = (seed) =>
  Buffer.from(
    crypto
      .createPublicKey(crypto.createPrivateKey({ key: Buffer.concat([Buffer.from("302e020100300506032b657004220420", "hex"), seed]), format: "der", type: "pkcs8" }))
      .export({ format: "jwk" }).x,
    "base64url",
  );

/**
 * A valid Ed25519 signature by `key` over `data` whose nonce is random instead of RFC
 * 8032's hash of key and message: what a hedged signer (ed25519-compact with noise) makes.
 * The nonce point r·B is the public key Node derives from a random seed whose scalar is r.
 */
function hedgedSignature(key, data) {
  const seed = Buffer.from(key.privateKey.export({ format: "jwk" }).d, "base64url");
  const nonceSeed = crypto.randomBytes(32);
  const [r, R, A] = [clamped(nonceSeed), publicOf(nonceSeed), publicOf(seed)];
  const k = le(sha512(R, A, Buffer.from(data))) % ORDER;
  return Buffer.concat([R, le32((r + k * clamped(seed)) % ORDER)]);
}

test("valid signatures the check does not recognise as its own are verified and pass: a hedged signature by the active key, a retired key this isolate cannot unseal", async () => {
  const token = mint();
  const signing = token.split(".").slice(0, 2).join(".");
  const hedged = `${signing}.${hedgedSignature(activeKey, signing).toString("base64url")}`;
  assert.notEqual(hedged, token, "another signature than RFC 8032's");
  assert.ok(crypto.verify(null, Buffer.from(signing), activeKey.publicKey, Buffer.from(hedged.split(".")[2], "base64url")), "a valid signature");
  const r = await send("/api/x", { authorization: `Bearer ${hedged}` });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.body.identity.user_id, JSON.parse(Buffer.from(token.split(".")[1], "base64url")).sub);
  // Its twins are refused like any other: a flipped bit of R or S.
  for (const i of [0, 40]) {
    const bad = resigned(hedged, (s) => { s[i] ^= 0x01; return s; });
    assert.equal((await send("/api/x", { authorization: `Bearer ${bad}` })).status, 401);
  }
  const elsewhere = mintSealedElsewhere();
  assert.equal((await send("/api/x", { authorization: `Bearer ${elsewhere}` })).status, 200);
  assert.equal((await send("/api/x", { authorization: `Bearer ${resigned(elsewhere, (s) => { s[63] ^= 0x01; return s; })}` })).status, 401);
});
