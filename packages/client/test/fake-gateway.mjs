// A fake of the gateway's auth API for the client's unit tests: a `fetch`
// that records every request and answers as the gateway does where the
// client's behaviour depends on it — refresh tokens rotate on every use and a
// rotated one presented again revokes the whole session (no grace window);
// access tokens can be made to fail; cookie mode keeps the tokens in a cookie
// jar that only `credentials: "include"` requests use, like a browser.
//
//   const gw = fakeGateway({ cookieMode: false, accessTtl: 900 });
//   const client = new PortcullisClient({ baseUrl: gw.base, fetch: gw.fetch });
//   gw.requests        // [{ method, path, query, headers, body, credentials }]
//   gw.on("GET /auth/me", (req) => gw.json(200, {...}))   // override a route
//   const release = gw.hold("POST /auth/refresh")          // hold answers until release()
export const BASE = "https://gw.example";

export function problem(status, code, { title = "Problem", detail = "", headers = {} } = {}) {
  return new Response(JSON.stringify({ type: "about:blank", title, status, detail, code }), {
    status,
    headers: { "content-type": "application/problem+json", ...headers },
  });
}

export function json(status, body, headers = {}) {
  return new Response(body === undefined ? null : JSON.stringify(body), {
    status,
    headers: body === undefined ? headers : { "content-type": "application/json", ...headers },
  });
}

const INVALID_TOKEN = 'Bearer realm="portcullis", error="invalid_token", error_description="the token has expired"';

export function fakeGateway({ cookieMode = false, accessTtl = 900, prefix = "/auth", base = BASE } = {}) {
  let n = 0; // tokens: at-<n>, rt-<n>
  let sessionCount = 0; // sessions: s-<k>
  const sessions = new Map(); // sid -> { user, refresh, revoked, reused }
  const byRefresh = new Map(); // refresh token (current or spent) -> sid
  const byAccess = new Map(); // access token -> sid
  const dead = new Set(); // access tokens the gateway refuses (expired, retired key)
  const jar = {}; // cookie mode: access, refresh
  const routes = new Map();
  const holds = new Map(); // "METHOD path" -> promise
  const counts = new Map();
  const requests = [];

  const user = (sid, email = "ada@example.com") => ({
    id: "u-1",
    email,
    name: "Ada",
    email_verified: false,
    avatar_url: null,
    phone: null,
    banned: false,
    roles: [],
    created_at: "2026-01-01T00:00:00Z",
    session_id: sid,
  });

  function issue(sid) {
    const s = sessions.get(sid);
    const access = `at-${++n}`;
    const refresh = `rt-${n}`;
    s.refresh = refresh;
    byRefresh.set(refresh, sid);
    byAccess.set(access, sid);
    const body = { token_type: "Bearer", expires_in: accessTtl, user: s.user };
    if (cookieMode) {
      jar.access = access;
      jar.refresh = refresh;
      return body;
    }
    return { access_token: access, refresh_token: refresh, ...body };
  }

  function signIn(email) {
    const sid = `s-${++sessionCount}`;
    sessions.set(sid, { user: user(sid, email), refresh: null, revoked: false, reused: false });
    return issue(sid);
  }

  /** The session of a request's access token (Bearer, or the cookie it was sent with). */
  function principal(req) {
    const auth = req.headers.authorization ?? "";
    const token = auth.startsWith("Bearer ") ? auth.slice(7) : req.cookies.access;
    if (!token) return { error: problem(401, "missing_token", { headers: { "www-authenticate": 'Bearer realm="portcullis"' } }) };
    const sid = byAccess.get(token);
    if (!sid || dead.has(token)) {
      return { error: problem(401, "token_expired", { headers: { "www-authenticate": INVALID_TOKEN } }) };
    }
    const s = sessions.get(sid);
    if (s.revoked) {
      return { error: problem(401, "session_revoked", { headers: { "www-authenticate": INVALID_TOKEN.replace("has expired", "session revoked") } }) };
    }
    return { sid, session: s };
  }

  const defaults = {
    [`POST ${prefix}/signup`]: (req) => json(201, signIn(req.body.email)),
    [`POST ${prefix}/login`]: (req) => json(200, signIn(req.body.email)),
    [`POST ${prefix}/magic-link/verify`]: () => json(200, signIn("ada@example.com")),
    [`POST ${prefix}/otp/verify`]: (req) => json(200, signIn(req.body.email)),
    [`POST ${prefix}/oauth/exchange`]: () => json(200, signIn("ada@example.com")),
    [`POST ${prefix}/mfa/verify`]: () => json(200, signIn("ada@example.com")),
    [`POST ${prefix}/passkeys/login/verify`]: () => json(200, signIn("ada@example.com")),
    [`POST ${prefix}/refresh`]: (req) => {
      const token = req.body?.refresh_token ?? req.cookies.refresh;
      if (!token) return problem(400, "invalid_json");
      const sid = byRefresh.get(token);
      const s = sid && sessions.get(sid);
      if (!s || s.revoked) return problem(401, "invalid_refresh_token");
      if (s.refresh !== token) {
        // A rotated token presented again: theft, the whole session ends.
        s.revoked = true;
        s.reused = true;
        return problem(401, "invalid_refresh_token");
      }
      return json(200, issue(sid));
    },
    [`POST ${prefix}/logout`]: (req) => {
      let sid;
      const token = req.body?.refresh_token ?? (req.headers.authorization ? undefined : req.cookies.refresh);
      if (token) {
        sid = byRefresh.get(token);
        if (!sid || sessions.get(sid).refresh !== token || sessions.get(sid).revoked) return problem(401, "invalid_refresh_token");
      } else {
        const p = principal(req);
        if (p.error) return p.error;
        sid = p.sid;
      }
      sessions.get(sid).revoked = true;
      if (cookieMode) {
        delete jar.access;
        delete jar.refresh;
      }
      return new Response(null, { status: 204 });
    },
    [`GET ${prefix}/me`]: (req) => {
      const p = principal(req);
      return p.error ?? json(200, { ...p.session.user, providers: [] });
    },
  };

  async function fetch(input, init) {
    const r = new Request(input, init);
    const url = new URL(r.url);
    const text = r.method === "GET" || r.method === "HEAD" ? "" : await r.text();
    let body;
    try {
      body = text === "" ? undefined : JSON.parse(text);
    } catch {
      body = text;
    }
    const req = {
      method: r.method,
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      url: r.url,
      headers: Object.fromEntries(r.headers),
      body,
      rawBody: text,
      credentials: r.credentials,
      cookies: r.credentials === "include" ? { ...jar } : {},
    };
    requests.push(req);
    const key = `${req.method} ${req.path}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
    const held = holds.get(key);
    if (held) await held.promise;
    const handler = routes.get(key) ?? defaults[key] ?? (() => json(200, {}));
    return handler(req);
  }

  return {
    base,
    fetch,
    requests,
    sessions,
    jar,
    json,
    problem,
    /** Replace a route's handler ("METHOD /path"). */
    on(key, handler) {
      routes.set(key, handler);
    },
    /** How many requests went to "METHOD /path". */
    count(key) {
      return counts.get(key) ?? 0;
    },
    /** Answers to "METHOD /path" wait until the returned function is called. */
    hold(key) {
      let release;
      const promise = new Promise((r) => (release = r));
      holds.set(key, { promise });
      return () => {
        holds.delete(key);
        release();
      };
    },
    /** Sign someone in behind the client's back; returns the AuthResponse body. */
    signIn,
    /** The gateway refuses this access token from now on (expired, retired key). */
    kill(accessToken) {
      dead.add(accessToken);
    },
    /** Requests of "METHOD /path". */
    of(key) {
      return requests.filter((r) => `${r.method} ${r.path}` === key);
    },
  };
}

/** An in-process Web Locks stand-in: one holder per name, the others queue in order; `query()` lists the held. */
export function fakeLocks() {
  const tails = new Map();
  const waiting = new Map();
  const held = [];
  return {
    request(name, callback) {
      const prev = tails.get(name) ?? Promise.resolve();
      waiting.set(name, (waiting.get(name) ?? 0) + 1);
      const run = prev.then(async () => {
        waiting.set(name, waiting.get(name) - 1);
        const lock = { name, mode: "exclusive" };
        held.push(lock);
        try {
          return await callback(lock);
        } finally {
          held.splice(held.indexOf(lock), 1);
        }
      });
      tails.set(name, run.catch(() => undefined));
      return run;
    },
    async query() {
      return { held: held.map((l) => ({ ...l })), pending: [] };
    },
    /** Requests for `name` not yet granted. */
    waiting(name) {
      return waiting.get(name) ?? 0;
    },
    /** Names of the locks held now. */
    heldNames() {
      return held.map((l) => l.name);
    },
  };
}

/** A controllable clock in milliseconds. */
export function clock(start = Date.UTC(2026, 0, 1)) {
  let t = start;
  const now = () => t;
  now.advance = (ms) => {
    t += ms;
  };
  return now;
}

/** Resolves once `predicate()` is true, checking after each turn of the event loop. */
export async function until(predicate, what = "condition") {
  for (let i = 0; i < 10_000; i++) {
    if (await predicate()) return;
    await new Promise((r) => setImmediate(r));
  }
  throw new Error(`gave up waiting for ${what}`);
}
