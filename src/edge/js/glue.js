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

/**
 * A response written by the gateway: `extra` is "name\nvalue\nname\nvalue..."
 * (header values cannot contain newlines), appended after the security
 * headers; `cache` undefined means no-store.
 */
export function respond(status, body, contentType, cache, extra) {
  return new Response(body ?? null, { status, headers: headerSet(contentType, cache, extra) });
}

// Header sets of the gateway's own responses, built once and copied into each
// Response: building nine headers one by one costs about 30 µs in this
// runtime, copying a built set about 4 (bench/experiments/runtime-costs.mjs).
// Only sets whose extra headers hold nothing per response are kept (a
// Set-Cookie carries tokens, a Retry-After or Location varies); bounded.
const HEADER_SETS = new Map();
const MAX_HEADER_SETS = 64;
const STATIC_EXTRA = /^(?:(?:www-authenticate|allow)\n[^\n]*(?:\n|$))*$/i;

function headerSet(contentType, cache, extra) {
  const key = `${contentType ?? ""}\n${cache ?? ""}\n${extra ?? ""}`;
  const known = HEADER_SETS.get(key);
  if (known) return known;
  const headers = new Headers(SECURITY_HEADERS);
  if (contentType) headers.set("content-type", contentType);
  if (cache) {
    headers.set("cache-control", cache);
  } else {
    headers.set("cache-control", "no-store");
    headers.set("pragma", "no-cache");
  }
  if (extra) {
    // Set-Cookie may come more than once; any other extra header replaces
    // the default of its name (a hosted page's own Content-Security-Policy).
    const kv = extra.split("\n");
    for (let i = 0; i + 1 < kv.length; i += 2) {
      if (kv[i].toLowerCase() === "set-cookie") headers.append(kv[i], kv[i + 1]);
      else headers.set(kv[i], kv[i + 1]);
    }
  }
  if (HEADER_SETS.size < MAX_HEADER_SETS && (!extra || STATIC_EXTRA.test(extra))) HEADER_SETS.set(key, headers);
  return headers;
}

/**
 * The body of `request` (an auth API request), read chunk by chunk: resolves
 * to its bytes, or to null as soon as more than `limit` bytes have arrived —
 * the rest of the stream is then cancelled unread, so a body without a
 * length (chunked) is refused at the limit instead of being buffered whole.
 */
export async function readCapped(request, limit) {
  const body = request.body;
  if (body === null) return new Uint8Array(0);
  const reader = body.getReader();
  const chunks = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      reader.cancel().catch(() => {});
      return null;
    }
    chunks.push(value);
  }
  if (chunks.length === 1) return chunks[0];
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.byteLength;
  }
  return bytes;
}

/**
 * `resp` (whose headers may be immutable, e.g. the origin's) with
 * `Vary: Origin` and, when `allowOrigin` is given, the CORS headers for it.
 * With CORS configured every response varies by Origin — also those that
 * grant nothing — or a shared cache could hand one origin's variant to
 * another (Fetch standard, "CORS protocol and HTTP caches").
 */
export function withCors(resp, allowOrigin, credentials, exposed) {
  const headers = new Headers(resp.headers);
  if (allowOrigin) {
    headers.set("access-control-allow-origin", allowOrigin);
    if (credentials) headers.set("access-control-allow-credentials", "true");
    headers.set("access-control-expose-headers", exposed);
  }
  const vary = headers.get("vary");
  if (!vary || !/(^|,)\s*(origin|\*)\s*(,|$)/i.test(vary)) headers.append("vary", "Origin");
  const init = { status: resp.status, headers };
  // An empty statusText would blank the reason phrase the runtime otherwise writes.
  if (resp.statusText) init.statusText = resp.statusText;
  if (resp.webSocket) init.webSocket = resp.webSocket;
  return new Response(resp.body, init);
}

const varyOnOrigin = (resp) => withCors(resp);

// The problem+json bodies for an unreachable or slow origin and for a GET or
// HEAD with a body, set once from Rust (the one place problems are rendered)
// by `setOriginProblems`.
let PROBLEM_502 = "";
let PROBLEM_504 = "";
let PROBLEM_GET_BODY = "";

/** Stores the rendered 502, 504 and 400 (GET or HEAD with a body) problem bodies. */
export function setOriginProblems(unreachable, timeout, getBody) {
  PROBLEM_502 = unreachable;
  PROBLEM_504 = timeout;
  PROBLEM_GET_BODY = getBody;
}

// What the forward removes and adds, set once per isolate from Rust
// (`core::gateway::headers`, `core::gateway::credential`) by `setForwardRules`:
// - STRIPPED: header names never forwarded (identity, client address, routing
//   and method overrides, with STRIP_HEADERS), also spelt with underscores,
//   which WSGI, PHP and Rack read as dashes. One regular expression, built
//   once per isolate as a trie, so a name is decided in a character or two
//   (one test per incoming name).
// - HOP_BY_HOP: hop-by-hop headers (RFC 9110 §7.6.1), never forwarded.
// - NEVER_CONNECTION_NAMED: headers a `Connection` value may not remove (the
//   body's framing and type, the target, what the decision read).
// - OWN_COOKIES: the gateway's own cookies, never forwarded.
// - IDENTITY: the names of the identity headers added, in the order of the
//   `identity` array.
let STRIPPED = null;
let HOP_BY_HOP = new Set();
let NEVER_CONNECTION_NAMED = new Set();
let OWN_COOKIES = [];
let IDENTITY = [];

/**
 * Stores the forward's header rules: the source of the stripped-name pattern
 * (`core::gateway::headers::StrippedHeaders::js_pattern`), then lists of
 * names, each "name\nname...": hop-by-hop, never `Connection`-named, our
 * cookies, the identity headers.
 */
export function setForwardRules(stripped, hopByHop, neverConnectionNamed, ownCookies, identity) {
  STRIPPED = new RegExp(stripped);
  HOP_BY_HOP = new Set(hopByHop.split("\n"));
  NEVER_CONNECTION_NAMED = new Set(neverConnectionNamed.split("\n"));
  OWN_COOKIES = ownCookies.split("\n");
  IDENTITY = identity.split("\n");
}

/**
 * Sends `request` to `target` (the normalised URL Rust chose) with its method,
 * headers and body stream, minus hop-by-hop headers, headers named by
 * `Connection` (but never the body's framing and type, `Host`, or the
 * credentials and `Origin` the decision read), every stripped name (X-Auth-*, X-Forwarded-*, … in any
 * spelling: `setForwardRules`), the gateway's cookies and (if `dropAuth`) the
 * Authorization header; plus the identity headers when `identity` — the
 * array [user id, email, roles, session id, assertion] and, with
 * CLAIMS_HEADER and hook claims, the X-Auth-Claims value, built once per
 * token by Rust and cached with it — is given.
 * With `vary` (CORS configured, no grant to add), the answer gets
 * `Vary: Origin`. Redirects are returned, not followed. Resolves to the origin's Response, or
 * to a 502 problem if it cannot be reached, or — when `timeoutMs` > 0 — a 504
 * problem if no response head arrived in time; a body that is already
 * streaming is never cut. A timed-out origin request is left behind rather
 * than aborted: the runtime cancels it when the 504 has been sent, and
 * leaving out the AbortController signal makes every other request cheaper
 * (about 15 µs of CPU, by `npm run bench`).
 */
export function forward(request, target, identity, dropAuth, timeoutMs, fetcher, vary) {
  const answer = forwardRaw(request, target, identity, dropAuth, timeoutMs, fetcher);
  return vary ? answer.then(varyOnOrigin) : answer;
}

// The extensions whose answers Cloudflare's cache stores by default
// (developers.cloudflare.com/cache/concepts/default-cache-behavior/).
const CACHED_EXTENSIONS = new Set(
  ("7z avi avif apk bin bmp bz2 class css csv doc docx dmg ejs eot eps exe flac gif gz ico iso jar jpeg jpg js " +
    "mid midi mkv mp3 mp4 ogg otf pdf pict pls png ppt pptx ps rar svg svgz swf tar tif tiff ttf webm webp woff " +
    "woff2 xls xlsx zip zst").split(" "),
);

/** Whether the path of URL `target` ends in one of CACHED_EXTENSIONS (in any case). */
function cachedByDefault(target) {
  let end = target.indexOf("?");
  if (end < 0) end = target.length;
  const dot = target.lastIndexOf(".", end - 1);
  if (dot < 0 || end - dot > 6 || target.lastIndexOf("/", end - 1) > dot) return false;
  return CACHED_EXTENSIONS.has(target.slice(dot + 1, end).toLowerCase());
}

function forwardRaw(request, target, identity, dropAuth, timeoutMs, fetcher) {
  const method = request.method;
  // The runtime's fetch refuses to send these (a 502 would blame the origin).
  if ((method === "GET" || method === "HEAD") && request.body !== null) {
    return Promise.resolve(respond(400, PROBLEM_GET_BODY, "application/problem+json"));
  }
  // Set once per isolate before the first forward; fail closed without them.
  if (STRIPPED === null) throw new Error("forward: the header rules are not set");
  // One native copy, then one pass over the incoming names (not the values:
  // the Authorization value alone is ~600 bytes); deletes only for what must
  // not pass (usually nothing).
  const incoming = request.headers;
  const headers = new Headers(incoming);
  let named = null;
  let cookies = null;
  let upgrade = null;
  for (const k of incoming.keys()) {
    if (STRIPPED.test(k) || HOP_BY_HOP.has(k)) {
      headers.delete(k);
      if (k === "connection") named = incoming.get(k);
      else if (k === "upgrade") upgrade = incoming.get(k);
    } else if (k === "cookie") cookies = incoming.get(k);
    else if (k === "authorization" && dropAuth) headers.delete(k);
  }
  if (named) {
    // Only names actually present: a Connection value may list anything.
    const drop = new Set(named.toLowerCase().split(",").map((h) => h.trim()));
    for (const k of incoming.keys()) if (drop.has(k) && !NEVER_CONNECTION_NAMED.has(k)) headers.delete(k);
  }
  // A WebSocket handshake keeps its `Upgrade: websocket` (hop-by-hop, so
  // deleted above): the runtime then opens the socket to the origin and the
  // 101 answer carries it back to the client.
  if (upgrade && upgrade.toLowerCase() === "websocket") headers.set("upgrade", "websocket");
  if (cookies && OWN_COOKIES.some((c) => cookies.includes(c))) {
    const own = (pair) => OWN_COOKIES.includes(pair.trim().split("=", 1)[0]);
    const kept = [];
    for (const piece of cookies.split(";")) {
      // Several Cookie header lines reach us joined with ", ": a pair may
      // also follow a comma. Other pieces are kept exactly as they came.
      const parts = piece.split(",");
      const rest = parts.some(own) ? parts.filter((p) => !own(p)).join(",") : piece;
      if (rest.trim()) kept.push(rest.trim());
    }
    if (kept.length) headers.set("cookie", kept.join("; "));
    else headers.delete("cookie");
  }
  if (identity !== undefined) {
    headers.set(IDENTITY[0], identity[0]);
    headers.set(IDENTITY[1], identity[1]);
    headers.set(IDENTITY[2], identity[2]);
    headers.set(IDENTITY[3], identity[3]);
    headers.set(IDENTITY[4], identity[4]);
    // CLAIMS_HEADER=true and the token carries the sign-in hook's claims.
    if (identity.length > 5) headers.set(IDENTITY[5], identity[5]);
  }
  // A response to a request that carries an identity is that user's: never
  // from nor into Cloudflare's cache, which keys on the URL alone and by
  // default stores answers to paths with a static file's extension (a `.csv`
  // or `.pdf` without Cache-Control would be served to the next caller the
  // policy lets through). Only those paths pay for the option (about 10 µs a
  // forward here, bench/README.md); others are not cached by default.
  const init = identity !== undefined && cachedByDefault(target)
    ? { method, headers, body: request.body, redirect: "manual", cache: "no-store" }
    : { method, headers, body: request.body, redirect: "manual" };
  const failed = (err) => {
    console.error(`portcullis.origin_error ${err && err.message ? err.message : err}`);
    return respond(502, PROBLEM_502, "application/problem+json");
  };
  // fetch(url, init) rather than fetch(new Request(url, init)): the runtime
  // builds its Request once instead of copying ours (about 3 % more requests/s
  // by `npm run bench`).
  if (!(timeoutMs > 0)) {
    return (fetcher ?? globalThis).fetch(target, init).catch(failed);
  }
  let settled = false;
  const answer = (fetcher ?? globalThis).fetch(target, init).then(
    (resp) => { settled = true; return resp; },
    (err) => { settled = true; return failed(err); },
  );
  const late = scheduler.wait(timeoutMs).then(() => {
    if (settled) return answer;
    console.error(`portcullis.origin_timeout after ${timeoutMs} ms`);
    return respond(504, PROBLEM_504, "application/problem+json");
  });
  return Promise.race([answer, late]);
}
