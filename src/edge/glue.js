// Platform plumbing for the edge, in JavaScript on purpose: each function does
// in one call what would otherwise take a dozen wasm<->JS boundary crossings
// (one per header get/set/delete, per RequestInit field, per timer). Every
// decision — routing, token checks, policies, identity — is made in Rust; these
// functions only assemble Requests and Responses from what Rust decided.

// Headers on every response the gateway writes itself.
const SECURITY_HEADERS = [
  ["x-content-type-options", "nosniff"],
  ["strict-transport-security", "max-age=63072000; includeSubDomains"],
  ["content-security-policy", "default-src 'none'; frame-ancestors 'none'"],
  ["x-frame-options", "DENY"],
  ["referrer-policy", "no-referrer"],
];

// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded.
const HOP_BY_HOP = ["connection", "keep-alive", "proxy-connection", "proxy-authenticate",
  "proxy-authorization", "te", "trailer", "upgrade"];

// The gateway's own credentials, never forwarded.
const OWN_COOKIES = ["__Host-portcullis_access", "__Host-portcullis_refresh"];

/**
 * A response written by the gateway: `extra` is "name\nvalue\nname\nvalue..."
 * (header values cannot contain newlines), appended after the security
 * headers; `cache` undefined means no-store.
 */
export function respond(status, body, contentType, cache, extra) {
  const headers = new Headers(SECURITY_HEADERS);
  if (contentType) headers.set("content-type", contentType);
  if (cache) {
    headers.set("cache-control", cache);
  } else {
    headers.set("cache-control", "no-store");
    headers.set("pragma", "no-cache");
  }
  if (extra) {
    const kv = extra.split("\n");
    for (let i = 0; i + 1 < kv.length; i += 2) headers.append(kv[i], kv[i + 1]);
  }
  return new Response(body ?? null, { status, headers });
}

/** `resp` with CORS headers for an allowed origin (copying immutable headers). */
export function withCors(resp, allowOrigin, credentials, exposed) {
  const headers = new Headers(resp.headers);
  headers.set("access-control-allow-origin", allowOrigin);
  if (credentials) headers.set("access-control-allow-credentials", "true");
  headers.set("access-control-expose-headers", exposed);
  headers.append("vary", "Origin");
  return new Response(resp.body, { status: resp.status, statusText: resp.statusText, headers });
}

/**
 * Sends `request` to `target` (the normalised URL Rust chose) with its method,
 * headers and body stream, minus hop-by-hop headers, headers named by
 * `Connection`, every X-Auth-*, the gateway's cookies and (if `dropAuth`) the
 * Authorization header; plus the identity headers when `userId` is set.
 * Redirects are returned, not followed. Resolves to the origin's Response, or
 * to the string "timeout" if no response head arrived within `timeoutMs` (the
 * request is then aborted), or "error: ..." if the origin could not be reached.
 */
export function forward(request, target, forwardedHost, forwardedProto, userId, email, roles, sessionId, assertion, dropAuth, timeoutMs, fetcher) {
  const incoming = request.headers;
  const headers = new Headers(incoming);
  const named = incoming.get("connection");
  if (named) for (const h of named.split(",")) { const n = h.trim(); if (n) headers.delete(n); }
  for (const h of HOP_BY_HOP) headers.delete(h);
  for (const k of [...headers.keys()]) if (k.startsWith("x-auth-")) headers.delete(k);
  if (dropAuth) headers.delete("authorization");
  const cookie = incoming.get("cookie");
  if (cookie) {
    const parts = cookie.split(";").map((c) => c.trim()).filter((c) => c && !OWN_COOKIES.includes(c.split("=", 1)[0]));
    if (parts.length) headers.set("cookie", parts.join("; "));
    else headers.delete("cookie");
  }
  headers.set("x-forwarded-host", forwardedHost);
  headers.set("x-forwarded-proto", forwardedProto);
  if (userId !== undefined) {
    headers.set("x-auth-user-id", userId);
    headers.set("x-auth-email", email);
    headers.set("x-auth-roles", roles);
    headers.set("x-auth-session-id", sessionId);
    headers.set("x-auth-assertion", assertion);
  }
  const controller = new AbortController();
  const outbound = new Request(target, {
    method: request.method,
    headers,
    body: request.body,
    redirect: "manual",
    signal: controller.signal,
  });
  return new Promise((resolve) => {
    // The timer covers the response head only: a long streamed body is never cut.
    const timer = setTimeout(() => {
      controller.abort();
      resolve("timeout");
    }, timeoutMs);
    (fetcher ?? globalThis).fetch(outbound).then(
      (resp) => { clearTimeout(timer); resolve(resp); },
      (err) => { clearTimeout(timer); resolve(`error: ${err && err.message ? err.message : err}`); },
    );
  });
}
