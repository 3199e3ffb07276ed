// (c) A JavaScript gateway written the way a user would write one without
// Portcullis: `jose` verifies the Ed25519 access token against the JWKS (the
// same public key Portcullis publishes), pinning alg EdDSA, typ at+jwt, iss and
// aud, on every request (no verification cache); then the request is forwarded to
// the origin with identity headers, incoming X-Auth-* headers removed.
// Route rules as in Portcullis's bench config: /api/public/* public,
// /api/admin/* needs role "admin", everything else needs a valid token.
// It does NOT sign a per-request assertion for the origin (Portcullis does).
// Bundled with esbuild by bench/run.mjs (jose is an npm package).
import { createLocalJWKSet, jwtVerify } from "jose";

let jwks = null;
let calib = null;

// Calibration for the bench (not part of the gateway): GET /__bench/crypto?op=verify|sign&n=N
// runs N sequential WebCrypto Ed25519 operations on a 600-byte message, so the bench can
// measure what one native verify or sign costs in this runtime on this machine.
async function calibrate(url) {
  calib ??= (async () => {
    const keys = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
    const data = new Uint8Array(600).fill(97);
    const sig = await crypto.subtle.sign("Ed25519", keys.privateKey, data);
    return { keys, data, sig };
  })();
  const { keys, data, sig } = await calib;
  const n = Number(url.searchParams.get("n") ?? 1);
  const sign = url.searchParams.get("op") === "sign";
  let ok = true;
  for (let i = 0; i < n; i++) {
    if (sign) await crypto.subtle.sign("Ed25519", keys.privateKey, data);
    else ok = ok && (await crypto.subtle.verify("Ed25519", keys.publicKey, sig, data));
  }
  return new Response(JSON.stringify({ n, ok }), { headers: { "content-type": "application/json" } });
}

function problem(status, code, extra = {}) {
  return new Response(JSON.stringify({ type: "about:blank", status, code }), {
    status,
    headers: { "content-type": "application/problem+json", ...extra },
  });
}

function policyFor(path) {
  if (path === "/api/public" || path.startsWith("/api/public/")) return "public";
  if (path === "/api/admin" || path.startsWith("/api/admin/")) return "admin";
  return "authenticated";
}

export default {
  async fetch(request, env) {
    jwks ??= createLocalJWKSet(JSON.parse(env.JWKS));
    const url = new URL(request.url);
    if (url.pathname === "/__bench/crypto") return calibrate(url);
    const policy = policyFor(url.pathname);
    const headers = new Headers(request.headers);
    for (const name of [...headers.keys()]) {
      if (name.startsWith("x-auth-")) headers.delete(name);
    }
    if (policy !== "public") {
      const m = /^Bearer\s+(\S+)\s*$/i.exec(request.headers.get("authorization") ?? "");
      if (!m) return problem(401, "missing_token", { "www-authenticate": 'Bearer realm="api"' });
      let payload;
      try {
        ({ payload } = await jwtVerify(m[1], jwks, {
          algorithms: ["EdDSA"],
          issuer: env.ISSUER,
          audience: env.AUDIENCE,
          typ: "at+jwt",
        }));
      } catch {
        return problem(401, "invalid_token", { "www-authenticate": 'Bearer error="invalid_token"' });
      }
      const roles = Array.isArray(payload.roles) ? payload.roles : [];
      if (policy === "admin" && !roles.includes("admin")) return problem(403, "forbidden");
      headers.delete("authorization");
      headers.set("x-auth-user-id", String(payload.sub));
      headers.set("x-auth-email", String(payload.email ?? ""));
      headers.set("x-auth-roles", roles.join(","));
      headers.set("x-auth-session-id", String(payload.sid ?? ""));
    }
    return fetch(
      new Request(env.ORIGIN_URL + url.pathname + url.search, {
        method: request.method,
        headers,
        body: request.body,
        redirect: "manual",
      }),
    );
  },
};
