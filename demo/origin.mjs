// Demo origin: the API that Portcullis protects in development and in tests.
// Every request is answered with a JSON echo of what arrived:
//
//   { method, path, query, headers, body, body_length, body_sha256,
//     identity: { user_id, email, roles, session_id, assertion } }
//
// `identity` is read from the X-Auth-* headers the gateway adds. Given a gateway
// to trust (`startOrigin({ trust: { issuer, audience } })`, or `origin.trust(...)`
// later; `npm start` does), the echo also has `verified`: the identity the signed
// X-Auth-Assertion vouches for, checked with @portcullis/origin-node (packages/
// origin-node) against the gateway's JWKS — `{ user }` (id, email, roles, session,
// every claim, the sign-in hook's included) or `{ error, status }` — and the
// sign-in hook's claims as the gateway forwarded them (`X-Auth-Claims`, with
// CLAIMS_HEADER=true) in `identity.claims`. The bare headers prove nothing: anyone
// who reaches the origin directly can send them; `verified` is what to trust.
// Special paths (matched at the END of the path, so they work under any prefix,
// e.g. /api/public/__status/404 or /api/__slow?ms=200):
//   .../__status/NNN              answers status NNN (JSON echo as the body, none for 204/304)
//   .../__redirect                302 with Location: http://127.0.0.1:1/elsewhere
//   .../__slow?ms=N               waits N ms (max 60000) before answering
//   .../__stream?chunks=N&size=S  streams N chunks of S bytes (chunked), ~10 ms apart
//   .../__duplex                  answers at once, before the request body has ended, with one
//                                 line per body chunk as it arrives ("<bytes>\n"), and ends with
//                                 the body: a client that waits for each line before sending
//                                 the next chunk proves that both bodies stream end to end
// A WebSocket handshake (any path) is accepted (with `ws`, the one dependency):
// the first message is the JSON echo of the handshake request, then every
// message is sent back as it came.
//
// Run: node demo/origin.mjs [--port N]   (or env DEMO_ORIGIN_PORT; default 8790, host 127.0.0.1)
// Import: const { port, close } = await startOrigin({ port: 0 })
import http from "node:http";
import crypto from "node:crypto";
import { fileURLToPath } from "node:url";
import fs from "node:fs";
import process from "node:process";
import { WebSocketServer } from "ws";
import { createVerifier, AssertionError } from "../packages/origin-node/src/index.js";

const DEFAULT_PORT = 8790;
// Bodies up to this size are echoed as text; bigger ones only as length + sha256.
const MAX_ECHO_BODY = 1024 * 1024;

/** What the assertion proves, with `verifier` (none: undefined). */
async function verify(verifier, req) {
  if (!verifier) return undefined;
  try {
    return { user: await verifier.verifyAssertion(req.headers["x-auth-assertion"]) };
  } catch (err) {
    if (!(err instanceof AssertionError)) throw err;
    return { error: err.code, status: err.status, detail: err.detail };
  }
}

function echoOf(req, url, buf, verified) {
  const headers = {};
  for (const [k, v] of Object.entries(req.headers)) headers[k.toLowerCase()] = v;
  // Identity headers carry UTF-8 (a non-ASCII email); Node reads header bytes as Latin-1.
  const h = (name) => (req.headers[name] === undefined ? null : Buffer.from(req.headers[name], "latin1").toString("utf8"));
  const out = {
    method: req.method,
    path: url.pathname,
    query: url.search.startsWith("?") ? url.search.slice(1) : url.search,
    headers,
    body: buf.length <= MAX_ECHO_BODY ? buf.toString("utf8") : "",
    body_length: buf.length,
    body_sha256: crypto.createHash("sha256").update(buf).digest("hex"),
    identity: {
      user_id: h("x-auth-user-id"),
      email: h("x-auth-email"),
      roles: h("x-auth-roles"),
      session_id: h("x-auth-session-id"),
      assertion: h("x-auth-assertion"),
      claims: h("x-auth-claims"),
    },
  };
  if (verified !== undefined) out.verified = verified;
  if (buf.length > MAX_ECHO_BODY) out.body_truncated = true;
  return out;
}

function sendJson(res, status, obj, extraHeaders = {}) {
  const noBody = status === 204 || status === 304 || (status >= 100 && status < 200);
  if (noBody) {
    res.writeHead(status, extraHeaders);
    res.end();
    return;
  }
  const text = JSON.stringify(obj);
  res.writeHead(status, {
    "content-type": "application/json; charset=utf-8",
    "content-length": Buffer.byteLength(text),
    "x-demo-origin": "1",
    ...extraHeaders,
  });
  res.end(text);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function clampInt(v, def, min, max) {
  const n = Number.parseInt(v ?? "", 10);
  if (!Number.isFinite(n)) return def;
  return Math.min(max, Math.max(min, n));
}

async function handle(req, res, verifier) {
  const url = new URL(req.url ?? "/", "http://origin.local");
  if (/\/__duplex$/.test(url.pathname)) {
    res.writeHead(200, { "content-type": "text/plain; charset=utf-8", "x-demo-origin": "1" });
    res.flushHeaders();
    for await (const c of req) res.write(`${c.length}\n`);
    res.end();
    return;
  }
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const buf = Buffer.concat(chunks);
  const path = url.pathname;
  const verified = await verify(verifier, req);
  const echo = (req, url, buf) => echoOf(req, url, buf, verified);

  let m;
  if ((m = path.match(/\/__status\/(\d{3})$/))) {
    const status = Number(m[1]);
    if (status < 200 || status > 599) return sendJson(res, 400, { error: "status must be 200..599" });
    return sendJson(res, status, echo(req, url, buf));
  }
  if (/\/__redirect$/.test(path)) {
    return sendJson(res, 302, echo(req, url, buf), { location: "http://127.0.0.1:1/elsewhere" });
  }
  if (/\/__slow$/.test(path)) {
    await sleep(clampInt(url.searchParams.get("ms"), 1000, 0, 60000));
    return sendJson(res, 200, echo(req, url, buf));
  }
  if (/\/__stream$/.test(path)) {
    const n = clampInt(url.searchParams.get("chunks"), 5, 0, 10000);
    const size = clampInt(url.searchParams.get("size"), 1024, 1, 1024 * 1024);
    const delay = clampInt(url.searchParams.get("delay"), 10, 0, 10000);
    res.writeHead(200, { "content-type": "application/octet-stream", "x-demo-origin": "1" });
    // no content-length: Node uses Transfer-Encoding: chunked
    for (let i = 0; i < n; i++) {
      if (res.destroyed) return;
      const chunk = Buffer.alloc(size, 97 + (i % 26)); // 'a', 'b', ... per chunk
      if (!res.write(chunk)) await new Promise((r) => res.once("drain", r));
      if (delay > 0 && i + 1 < n) await sleep(delay);
    }
    res.end();
    return;
  }
  return sendJson(res, 200, echo(req, url, buf));
}

/**
 * Start the demo origin. `port: 0` picks a free port. `trust`: the gateway whose
 * assertions to verify (`{ issuer, audience, jwksUrl? }`, createVerifier's options);
 * `origin.trust(options)` sets it later (once the gateway's URL is known).
 * @returns {Promise<{ port: number, url: string, trust: (o: object) => void, close: () => Promise<void> }>}
 */
export async function startOrigin({ port = DEFAULT_PORT, host = "127.0.0.1", trust } = {}) {
  const sockets = new Set();
  let verifier = trust ? createVerifier(trust) : null;
  const server = http.createServer((req, res) => {
    handle(req, res, verifier).catch((err) => {
      if (!res.headersSent) sendJson(res, 500, { error: String(err?.message ?? err) });
      else res.destroy();
    });
  });
  server.keepAliveTimeout = 5000;
  const wss = new WebSocketServer({ noServer: true });
  server.on("upgrade", (req, socket, head) => {
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.send(JSON.stringify(echoOf(req, new URL(req.url ?? "/", "http://origin.local"), Buffer.alloc(0))));
      ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }));
    });
  });
  server.on("connection", (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const actual = server.address().port;
  return {
    port: actual,
    url: `http://${host}:${actual}`,
    server,
    trust: (options) => {
      verifier = createVerifier(options);
    },
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        for (const c of wss.clients) c.terminate();
        for (const s of sockets) s.destroy();
      }),
  };
}

function portFromArgs(argv) {
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--port" && argv[i + 1]) return Number(argv[i + 1]);
    if (argv[i].startsWith("--port=")) return Number(argv[i].slice(7));
  }
  if (process.env.DEMO_ORIGIN_PORT) return Number(process.env.DEMO_ORIGIN_PORT);
  return DEFAULT_PORT;
}

/** Whether the module at `moduleUrl` (its `import.meta.url`) is the program being run, not imported. */
export function isMain(moduleUrl) {
  try {
    return !!process.argv[1] && fs.realpathSync(process.argv[1]) === fs.realpathSync(fileURLToPath(moduleUrl));
  } catch {
    return false;
  }
}

if (isMain(import.meta.url)) {
  const port = portFromArgs(process.argv.slice(2));
  const origin = await startOrigin({ port });
  console.log(`[demo-origin] listening on ${origin.url}`);
  const stop = async () => {
    await origin.close();
    process.exit(0);
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}
