// Variants of a pass-through Worker, one per path, each adding one piece of what a
// gateway does on its hot path. bench/experiments/runtime-costs.mjs times them against
// each other (paired, interleaved) to price those pieces in this workerd.
const HOP = ["connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te", "trailer", "upgrade"];
const IDENTITY = ["x-auth-user-id", "x-auth-email", "x-auth-roles", "x-auth-session-id", "x-auth-assertion"];

const IDENTITY_VALUES = ["c5f23b0b-de46-4808-9f0e-1347d84316e0", "someone@example.com", "user,admin",
  "0b6b3c52-1c1f-4a53-9d0e-2f7f7f8c9a11", "e".repeat(620)];

const init = (request, headers, extra = {}) => ({ method: request.method, headers, redirect: "manual", ...extra });

const variants = {
  // new Request(url, request): copies everything, body and signal included.
  "request-clone": (request, target) => fetch(new Request(target, request)),
  // The baseline for the rest: a fresh Request from method + a copy of the headers.
  copy: (request, target) => fetch(new Request(target, init(request, new Headers(request.headers)))),
  // + a setTimeout/clearTimeout pair around the fetch (an origin timeout).
  timer: (request, target) =>
    new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error("timeout")), 30000);
      fetch(new Request(target, init(request, new Headers(request.headers)))).then(
        (r) => (clearTimeout(t), resolve(r)),
        (e) => (clearTimeout(t), reject(e)),
      );
    }),
  // + an origin timeout as Portcullis's glue had it: scheduler.wait raced against the fetch.
  "wait-race": (request, target) => {
    let settled = false;
    const answer = fetch(new Request(target, init(request, new Headers(request.headers)))).then(
      (r) => ((settled = true), r),
      (e) => ((settled = true), new Response("502", { status: 502 })),
    );
    const late = scheduler.wait(30000).then(() => (settled ? answer : new Response("504", { status: 504 })));
    return Promise.race([answer, late]);
  },
  // + a scheduler.wait nobody awaits (the timer alone: created, then cancelled with the request).
  "wait-only": (request, target) => {
    scheduler.wait(30000);
    return fetch(new Request(target, init(request, new Headers(request.headers))));
  },
  // + a setTimeout nobody clears.
  "settimeout-only": (request, target) => {
    setTimeout(() => {}, 30000);
    return fetch(new Request(target, init(request, new Headers(request.headers))));
  },
  // + the same with setTimeout resolving one Promise, never cleared.
  "settimeout-resolve": (request, target) =>
    new Promise((resolve) => {
      setTimeout(() => resolve(new Response("504", { status: 504 })), 30000);
      fetch(new Request(target, init(request, new Headers(request.headers)))).then(resolve, () =>
        resolve(new Response("502", { status: 502 })),
      );
    }),
  // + scheduler.wait resolving one Promise (no race).
  "wait-resolve": (request, target) =>
    new Promise((resolve) => {
      scheduler.wait(30000).then(() => resolve(new Response("504", { status: 504 })));
      fetch(new Request(target, init(request, new Headers(request.headers)))).then(resolve, () =>
        resolve(new Response("502", { status: 502 })),
      );
    }),
  // + one .then hop on the fetch (the 502 handler alone).
  "catch-only": (request, target) =>
    fetch(new Request(target, init(request, new Headers(request.headers)))).catch(() => new Response("502", { status: 502 })),
  // + AbortSignal.timeout on the fetch instead.
  "abort-signal-timeout": (request, target) =>
    fetch(new Request(target, init(request, new Headers(request.headers), { signal: AbortSignal.timeout(30000) }))),
  // + an AbortController's signal (no timer).
  "abort-controller": (request, target) =>
    fetch(new Request(target, init(request, new Headers(request.headers), { signal: new AbortController().signal }))),
  // + 6 microtask hops before the fetch (wasm-bindgen-futures wakes a Rust task with one).
  "6-microtasks": async (request, target) => {
    for (let i = 0; i < 6; i++) await new Promise((r) => queueMicrotask(r));
    return fetch(new Request(target, init(request, new Headers(request.headers))));
  },
  // + deleting 8 hop-by-hop headers and Authorization (all absent here).
  "9-deletes": (request, target) => {
    const h = new Headers(request.headers);
    for (const x of HOP) h.delete(x);
    h.delete("authorization");
    return fetch(new Request(target, init(request, h)));
  },
  // + scanning the header names for x-auth-*.
  "scan-x-auth": (request, target) => {
    const h = new Headers(request.headers);
    for (const k of [...h.keys()]) if (k.startsWith("x-auth-")) h.delete(k);
    return fetch(new Request(target, init(request, h)));
  },
  // + 2 forwarded and 5 identity headers (40-byte values; the real assertion is ~600 bytes).
  "7-sets": (request, target) => {
    const h = new Headers(request.headers);
    h.set("x-forwarded-host", "example.com");
    h.set("x-forwarded-proto", "https");
    for (const k of IDENTITY) h.set(k, "v".repeat(40));
    return fetch(new Request(target, init(request, h)));
  },
  // + the 5 identity headers with realistic values (the assertion ~620 bytes), by set().
  "5-identity-sets": (request, target) => {
    const h = new Headers(request.headers);
    for (let i = 0; i < 5; i++) h.set(IDENTITY[i], IDENTITY_VALUES[i]);
    return fetch(new Request(target, init(request, h)));
  },
  // The same by append() (the names were deleted before, so append is enough).
  "5-identity-appends": (request, target) => {
    const h = new Headers(request.headers);
    for (let i = 0; i < 5; i++) h.append(IDENTITY[i], IDENTITY_VALUES[i]);
    return fetch(new Request(target, init(request, h)));
  },
  // The same 5 in the Headers constructor, with the incoming pairs spread before them.
  "5-identity-in-init": (request, target) => {
    const h = new Headers([...request.headers, ...IDENTITY.map((k, i) => [k, IDENTITY_VALUES[i]])]);
    return fetch(new Request(target, init(request, h)));
  },
  // Only the 4 short ones (prices the assertion's length).
  "4-short-sets": (request, target) => {
    const h = new Headers(request.headers);
    for (let i = 0; i < 4; i++) h.set(IDENTITY[i], IDENTITY_VALUES[i]);
    return fetch(new Request(target, init(request, h)));
  },
  // The whole rewrite as Portcullis's glue does it (all of the above but timers).
  "full-rewrite": (request, target) => {
    const h = new Headers(request.headers);
    for (const x of HOP) h.delete(x);
    for (const k of [...h.keys()]) if (k.startsWith("x-auth-")) h.delete(k);
    h.delete("authorization");
    h.set("x-forwarded-host", "example.com");
    h.set("x-forwarded-proto", "https");
    for (const k of IDENTITY) h.set(k, "v".repeat(40));
    return fetch(new Request(target, init(request, h, { body: request.body })));
  },
};

// Responses the Worker writes itself (no origin): priced against "r-2-headers".
const SECURITY = [
  ["x-content-type-options", "nosniff"],
  ["strict-transport-security", "max-age=63072000; includeSubDomains"],
  ["content-security-policy", "default-src 'none'; frame-ancestors 'none'"],
  ["x-frame-options", "DENY"],
  ["referrer-policy", "no-referrer"],
];
const BODY = '{"type":"about:blank","title":"Unauthorized","status":401,"code":"missing_token"}';
const PAIRS_401 = [...SECURITY, ["content-type", "application/problem+json"], ["cache-control", "no-store"], ["pragma", "no-cache"], ["www-authenticate", "Bearer"]];
const CACHED_401 = new Headers(PAIRS_401);
Object.assign(variants, {
  // What a small JS gateway sends: content-type + www-authenticate.
  "r-2-headers": () =>
    new Response(BODY, { status: 401, headers: { "content-type": "application/problem+json", "www-authenticate": "Bearer" } }),
  // + 5 security headers + cache-control + pragma, Headers object then set() each.
  "r-9-headers-set": () => {
    const h = new Headers(SECURITY);
    h.set("content-type", "application/problem+json");
    h.set("cache-control", "no-store");
    h.set("pragma", "no-cache");
    h.set("www-authenticate", "Bearer");
    return new Response(BODY, { status: 401, headers: h });
  },
  // The same 9 headers from one Headers object made once per isolate and copied.
  "r-9-headers-cached": () => new Response(BODY, { status: 401, headers: CACHED_401 }),
  // The same 9 headers as one array made once per isolate.
  "r-9-headers-array-cached": () => new Response(BODY, { status: 401, headers: PAIRS_401 }),
  // The same 9 headers as one array literal, no Headers object.
  "r-9-headers-array": () =>
    new Response(BODY, {
      status: 401,
      headers: [...SECURITY, ["content-type", "application/problem+json"], ["cache-control", "no-store"], ["pragma", "no-cache"], ["www-authenticate", "Bearer"]],
    }),
});

// One Ed25519 sign (or verify) of a token-sized input per request, on top of
// r-2-headers: through node:crypto with the key as a KeyObject or as a CryptoKey,
// and through WebCrypto (asynchronous) — to price node:crypto's wrapper against
// WebCrypto's. Keys are made once per isolate.
const SEED_JWK = {
  kty: "OKP", crv: "Ed25519",
  d: "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A", x: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
};
const DATA = new TextEncoder().encode("e".repeat(520));
// The same bytes as a view on a 16 MiB buffer (how wasm memory is passed).
const BIG = new Uint8Array(16 << 20);
BIG.set(DATA, 1 << 20);
const BIG_VIEW = BIG.subarray(1 << 20, (1 << 20) + DATA.length);
const nodeCrypto = () => process.getBuiltinModule("node:crypto");
const once = (make) => {
  let value;
  return () => (value ??= make());
};
const keyObject = once(() => nodeCrypto().createPrivateKey({ key: SEED_JWK, format: "jwk" }));
const publicKeyObject = once(() => nodeCrypto().createPublicKey(keyObject()));
const nodeSignature = once(() => nodeCrypto().sign(null, DATA, keyObject()));
// A CryptoKey made synchronously by node:crypto, and one by WebCrypto's importKey (a Promise).
const toCryptoKey = once(() => keyObject().toCryptoKey({ name: "Ed25519" }, false, ["sign"]));
const importedKey = once(() => crypto.subtle.importKey("jwk", SEED_JWK, { name: "Ed25519" }, false, ["sign"]));
const importedPublic = once(() =>
  crypto.subtle.importKey("jwk", { kty: "OKP", crv: "Ed25519", x: SEED_JWK.x }, { name: "Ed25519" }, false, ["verify"]));
// r-2-headers plus a header that uses the result (so nothing is optimised away).
const answer = (used) =>
  new Response(BODY, { status: 401, headers: { "content-type": "application/problem+json", "www-authenticate": "Bearer", "x-s": String(used) } });
let IMPORTED = null; // importedKey(), once resolved: r-sign-cryptokey stays synchronous after its first request
Object.assign(variants, {
  "r-sign-keyobject": () => answer(nodeCrypto().sign(null, DATA, keyObject())[0]),
  "r-sign-cryptokey": () => {
    if (!IMPORTED) return importedKey().then((k) => ((IMPORTED = k), variants["r-sign-cryptokey"]()));
    return answer(nodeCrypto().sign(null, DATA, IMPORTED)[0]);
  },
  // No sign, but the Response after one resolved-promise hop (what an asynchronous sign adds besides the signing).
  "r-then": () => Promise.resolve(1).then(() => answer(1)),
  "r-sign-subtle": async () => answer(new Uint8Array(await crypto.subtle.sign("Ed25519", await importedKey(), DATA))[0]),
  "r-sign-subtle-view": async () => answer(new Uint8Array(await crypto.subtle.sign("Ed25519", await importedKey(), BIG_VIEW))[0]),
  "r-sign-subtle-tocryptokey": async () => answer(new Uint8Array(await crypto.subtle.sign("Ed25519", toCryptoKey(), DATA))[0]),
  "r-verify-node": () => answer(nodeCrypto().verify(null, DATA, publicKeyObject(), nodeSignature())),
  "r-verify-subtle": async () =>
    answer(await crypto.subtle.verify("Ed25519", await importedPublic(), nodeSignature(), DATA)),
});

export default {
  fetch(request, env) {
    const name = new URL(request.url).pathname.slice(1);
    const v = variants[name];
    if (!v) return new Response(JSON.stringify(Object.keys(variants)), { status: 404 });
    return v(request, `${env.ORIGIN_URL}/api/data`);
  },
};
