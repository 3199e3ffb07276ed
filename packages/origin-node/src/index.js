// @ts-check
/**
 * Verifies the gateway's `X-Auth-Assertion` (framework-free core of the
 * Express and Hono middleware).
 *
 * The assertion is a compact JWS (`typ` `portcullis-assertion+jwt`, EdDSA or
 * ES256) signed by a key of the gateway's JWKS. Everything is pinned here,
 * never taken from the token: the algorithm must be one of the two *and* the
 * algorithm of the key its `kid` names; keys come only from the configured
 * JWKS URL (`jku`, `x5u`, `jwk` header members are ignored); `typ`, `iss`,
 * `aud`, `exp`, `iat` and `nbf` are checked after the signature. The bare
 * `X-Auth-*` headers are never read: the identity comes from the verified
 * assertion only.
 *
 * Only WebCrypto, `fetch`, `atob` and `TextDecoder` are used, so it runs on
 * Node.js >= 20, Bun, Deno and Workers alike.
 * @module
 */

/** The request header the gateway puts the assertion in (lowercase). */
export const ASSERTION_HEADER = "x-auth-assertion";
/** The `typ` of gateway assertions. */
export const ASSERTION_TYPE = "portcullis-assertion+jwt";

/** Assertions longer than this are refused before any decoding. */
const MAX_ASSERTION_LENGTH = 8192;
/** Longest `kid` looked up. */
const MAX_KID_LENGTH = 128;
/** Largest JWKS document accepted. */
const MAX_JWKS_BYTES = 256 * 1024;
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;
/**
 * The challenge of every 401 (RFC 9110 §11.6.1 requires one): no `error`.
 * A refused assertion is the gateway's credential, not the caller's access
 * token, so `error="invalid_token"` would be wrong, and harmful: the browser
 * client refreshes the token and sends the request again on it, which cures
 * nothing. RFC 6750 §3 has no code that fits: `invalid_token` is about the
 * caller's bearer token, `invalid_request` goes with 400. Its rule for a
 * request carrying no bearer credential of the scheme — a bare challenge,
 * "no error code or other error information" — is the one that applies; the
 * problem+json body says what was wrong. The realm stays the gateway's.
 */
const REALM = 'Bearer realm="portcullis"';

/**
 * The verified identity the gateway vouched for.
 * @typedef {object} PortcullisUser
 * @property {string} id                 user id (`sub`)
 * @property {string} email              email (`email`)
 * @property {boolean} emailVerified     whether the email is verified (`email_verified`)
 * @property {readonly string[]} roles   role names (`roles`)
 * @property {string} sessionId          session id (`sid`)
 * @property {Readonly<Record<string, unknown>>} claims  every claim of the
 *   verified assertion, including any the gateway adds beyond the ones above
 */

/**
 * @typedef {object} VerifierOptions
 * @property {string} issuer  the gateway's `ISSUER` (the `iss` of its tokens; trailing
 *   slashes are dropped, as the gateway does)
 * @property {string | string[]} audience  this origin as the gateway sees it: the URL
 *   origin of the gateway's `ORIGIN_URL` (e.g. `https://api.internal:8443`); URLs are
 *   compared by their origin, so a trailing slash or path does not matter
 * @property {string} [jwksUrl]  default `<issuer>/.well-known/jwks.json`
 * @property {number} [leewaySeconds]  clock skew tolerated on `exp`, `iat`, `nbf` (default 30)
 * @property {number} [jwksCacheSeconds]  how long fetched keys are used before the JWKS is
 *   fetched again (default 300); if that fetch fails, they are used for at most as long again
 *   (a key retired at once at the gateway is trusted until then: see `clearKeyCache`)
 * @property {number} [refetchCooldownSeconds]  an unknown `kid` fetches the JWKS again at most
 *   once per this many seconds, and a failed fetch is not retried sooner (default 5: the
 *   gateway's JWKS reload interval)
 * @property {number} [jwksTimeoutMs]  timeout of a JWKS fetch (default 5000)
 * @property {typeof fetch} [fetch]  the fetch used for the JWKS (default `globalThis.fetch`)
 * @property {() => number} [clock]  current time in milliseconds (default `Date.now`)
 */

/**
 * A refusal: `status` and `code` say what the middleware answers
 * (`missing_assertion`, `invalid_assertion`, `assertion_expired`: 401;
 * `insufficient_role`: 403; `jwks_unavailable`: 503).
 */
export class AssertionError extends Error {
  /**
   * @param {string} code
   * @param {number} status
   * @param {string} detail
   * @param {{ cause?: unknown }} [options]
   */
  constructor(code, status, detail, options) {
    super(detail, options);
    this.name = "AssertionError";
    /** Stable machine-readable code. */
    this.code = code;
    /** HTTP status to answer with. */
    this.status = status;
    /** Human-readable explanation (safe to show). */
    this.detail = detail;
  }
}

/** The `title` of a problem with `type` "about:blank": its status phrase (RFC 9457 §4.2.1). */
const TITLES = /** @type {Record<number, string>} */ ({
  401: "Unauthorized",
  403: "Forbidden",
  503: "Service Unavailable",
});

const missing = () => new AssertionError("missing_assertion", 401, "no X-Auth-Assertion header: requests must come through the gateway");
/** @param {string} detail */
const invalid = (detail) => new AssertionError("invalid_assertion", 401, detail);

/**
 * The HTTP answer for a refusal: RFC 9457 problem+json with a stable `code`,
 * and a `WWW-Authenticate` challenge on 401 (bare, see {@link REALM}) and 403
 * (RFC 6750 `insufficient_scope`).
 * @param {AssertionError} err
 * @returns {{ status: number, headers: Record<string, string>, body: string }}
 */
export function problemResponse(err) {
  /** @type {Record<string, string>} */
  const headers = { "content-type": "application/problem+json", "cache-control": "no-store" };
  if (err.status === 401) headers["www-authenticate"] = REALM;
  else if (err.status === 403) {
    const description = err.detail.replace(/["\\]/g, "");
    headers["www-authenticate"] = `${REALM}, error="insufficient_scope", error_description="${description}"`;
  }
  const body = JSON.stringify({
    type: "about:blank",
    title: TITLES[err.status] ?? "Error",
    status: err.status,
    detail: err.detail,
    code: err.code,
  });
  return { status: err.status, headers, body };
}

/**
 * The refusal for a user lacking every one of `roles`, or null when they have one.
 * @param {PortcullisUser} user
 * @param {readonly string[]} roles
 * @returns {AssertionError | null}
 */
export function checkAnyRole(user, roles) {
  if (roles.some((r) => user.roles.includes(r))) return null;
  const need = roles.length === 1 ? `the role ${roles[0]}` : `one of the roles ${roles.join(", ")}`;
  return new AssertionError("insufficient_role", 403, `this needs ${need}`);
}

/**
 * The role list a `requireRole` / `requireAnyRole` call was given, checked once.
 * @param {unknown} roles
 * @returns {readonly string[]}
 */
export function roleList(roles) {
  if (!Array.isArray(roles) || roles.length === 0 || !roles.every((r) => typeof r === "string" && r !== "")) {
    throw new TypeError("roles must be a non-empty array of non-empty strings");
  }
  return Object.freeze([...roles]);
}

/** @param {string} segment */
function base64urlBytes(segment) {
  const bin = atob(segment.replace(/-/g, "+").replace(/_/g, "/"));
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** @param {string} segment */
function signatureBytes(segment) {
  try {
    return base64urlBytes(segment);
  } catch {
    throw invalid("the assertion is not a compact JWT");
  }
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * @param {string} segment
 * @returns {Record<string, unknown> | null}
 */
function jsonObject(segment) {
  try {
    const v = JSON.parse(utf8.decode(base64urlBytes(segment)));
    return v !== null && typeof v === "object" && !Array.isArray(v) ? v : null;
  } catch {
    return null;
  }
}

/** @param {string} value */
function audienceKey(value) {
  try {
    const u = new URL(value);
    if (u.protocol === "http:" || u.protocol === "https:") return u.origin;
  } catch {
    // not a URL: compared as is
  }
  return value;
}

/**
 * @typedef {{ alg: "EdDSA" | "ES256", key: CryptoKey }} PinnedKey
 */

const VERIFY_PARAMS = {
  EdDSA: { name: "Ed25519" },
  ES256: { name: "ECDSA", hash: "SHA-256" },
};

/**
 * A public key of the JWKS with the one algorithm it may verify, or null for
 * a key that is not an Ed25519 / P-256 signing key (or says another `alg`).
 * @param {any} jwk
 * @returns {Promise<PinnedKey | null>}
 */
async function importJwk(jwk) {
  if (jwk === null || typeof jwk !== "object" || typeof jwk.kid !== "string" || jwk.kid === "") return null;
  if (jwk.use !== undefined && jwk.use !== "sig") return null;
  if (jwk.key_ops !== undefined && !(Array.isArray(jwk.key_ops) && jwk.key_ops.includes("verify"))) return null;
  /** @type {"EdDSA" | "ES256"} */
  let alg;
  /** @type {JsonWebKey} */
  let material;
  /** @type {any} */
  let params;
  if (jwk.kty === "OKP" && jwk.crv === "Ed25519") {
    alg = "EdDSA";
    material = { kty: "OKP", crv: "Ed25519", x: jwk.x };
    params = { name: "Ed25519" };
  } else if (jwk.kty === "EC" && jwk.crv === "P-256") {
    alg = "ES256";
    material = { kty: "EC", crv: "P-256", x: jwk.x, y: jwk.y };
    params = { name: "ECDSA", namedCurve: "P-256" };
  } else {
    return null;
  }
  if (jwk.alg !== undefined && jwk.alg !== alg) return null;
  try {
    return { alg, key: await crypto.subtle.importKey("jwk", material, params, false, ["verify"]) };
  } catch {
    return null;
  }
}

/**
 * The gateway's keys, fetched on first use, kept for `cacheMs`, fetched again
 * when stale and — at most once per `cooldownMs` — when a `kid` is unknown (a
 * rotation), one fetch at a time. A failed fetch is not retried for
 * `cooldownMs` either: during a JWKS outage requests answer at once (from the
 * cached keys while they may be used, else 503) instead of each waiting for a
 * fetch that is likely to fail again. `clear` starts a new generation: a fetch
 * begun before it neither stores its keys nor is joined by later requests.
 */
class KeySet {
  /** @type {Map<string, PinnedKey>} */
  #keys = new Map();
  #fetchedAt = -Infinity;
  #lastUnknownKidFetch = -Infinity;
  #failedAt = -Infinity;
  /** @type {unknown} */
  #lastError = undefined;
  /** Bumped by `clear`. */
  #generation = 0;
  /** @type {{ generation: number, promise: Promise<void> } | null} */
  #inflight = null;

  /**
   * @param {{ url: string, fetch: typeof fetch, clock: () => number, cacheMs: number, cooldownMs: number, timeoutMs: number }} o
   */
  constructor(o) {
    this.o = o;
  }

  /**
   * The key named `kid`, or null when the JWKS does not have it. Answers from
   * one generation: when `clear` runs meanwhile, it starts over (a few times).
   * @param {string} kid
   * @returns {Promise<PinnedKey | null>}
   */
  async get(kid) {
    for (let attempt = 0; attempt < 3; attempt++) {
      const generation = this.#generation;
      let key;
      try {
        key = await this.#getOnce(kid);
      } catch (err) {
        if (generation === this.#generation) throw err;
        continue;
      }
      if (generation === this.#generation) return key;
    }
    throw unavailable(new Error("the key cache was cleared during each fetch"));
  }

  /**
   * @param {string} kid
   * @returns {Promise<PinnedKey | null>}
   */
  async #getOnce(kid) {
    let fetched = false;
    if (this.o.clock() - this.#fetchedAt >= this.o.cacheMs) {
      try {
        this.#notBackingOff();
        await this.#refresh();
        fetched = true;
      } catch (cause) {
        // A failed refresh keeps the previous keys for at most as long again.
        if (this.#keys.size === 0 || this.o.clock() - this.#fetchedAt >= 2 * this.o.cacheMs) throw unavailable(cause);
      }
    }
    const known = this.#keys.get(kid);
    if (known || fetched) return known ?? null;
    const running = this.#current();
    if (running) {
      await running.catch(() => {});
      const k = this.#keys.get(kid);
      if (k) return k;
    }
    try {
      // Before the cooldown: an unknown kid whose own fetch failed gets 503, not 401.
      this.#notBackingOff();
    } catch (cause) {
      throw unavailable(cause);
    }
    const now = this.o.clock();
    if (now - this.#lastUnknownKidFetch < this.o.cooldownMs) return null;
    try {
      this.#lastUnknownKidFetch = now;
      await this.#refresh();
    } catch (cause) {
      throw unavailable(cause);
    }
    return this.#keys.get(kid) ?? null;
  }

  /** The fetch under way for the current generation, if any. */
  #current() {
    return this.#inflight && this.#inflight.generation === this.#generation ? this.#inflight.promise : null;
  }

  /** Throws the last fetch's error while a new fetch would start within `cooldownMs` of it failing. */
  #notBackingOff() {
    if (!this.#current() && this.o.clock() - this.#failedAt < this.o.cooldownMs) throw this.#lastError;
  }

  /** Joins the current generation's fetch, or starts one. */
  #refresh() {
    const running = this.#current();
    if (running) return running;
    const generation = this.#generation;
    /** @type {Promise<void>} */
    const promise = this.#load(generation)
      .then(
        () => {
          if (generation === this.#generation) this.#failedAt = -Infinity;
        },
        (err) => {
          if (generation === this.#generation) {
            this.#failedAt = this.o.clock();
            this.#lastError = err;
          }
          throw err;
        },
      )
      .finally(() => {
        if (this.#inflight?.promise === promise) this.#inflight = null;
      });
    this.#inflight = { generation, promise };
    return promise;
  }

  /** Forgets the keys (and any back-off): the next `get` fetches the JWKS. */
  clear() {
    this.#generation += 1;
    this.#keys = new Map();
    this.#fetchedAt = -Infinity;
    this.#lastUnknownKidFetch = -Infinity;
    this.#failedAt = -Infinity;
  }

  /** @param {number} generation the generation the fetch belongs to: its keys are dropped after a `clear` */
  async #load(generation) {
    const res = await this.o.fetch(this.o.url, {
      headers: { accept: "application/json" },
      signal: AbortSignal.timeout(this.o.timeoutMs),
    });
    if (!res.ok) throw new Error(`the JWKS answered ${res.status}`);
    const text = await res.text();
    if (text.length > MAX_JWKS_BYTES) throw new Error("the JWKS is too large");
    const doc = JSON.parse(text);
    if (doc === null || typeof doc !== "object" || !Array.isArray(doc.keys)) throw new Error("the JWKS has no keys array");
    /** @type {Map<string, PinnedKey>} */
    const keys = new Map();
    const ambiguous = new Set();
    for (const jwk of doc.keys) {
      const k = await importJwk(jwk);
      if (!k) continue;
      if (keys.has(jwk.kid)) ambiguous.add(jwk.kid);
      keys.set(jwk.kid, k);
    }
    // Two keys under one kid: neither is trusted.
    for (const kid of ambiguous) keys.delete(kid);
    if (generation !== this.#generation) return;
    this.#keys = keys;
    this.#fetchedAt = this.o.clock();
  }
}

/** @param {unknown} cause */
const unavailable = (cause) =>
  new AssertionError("jwks_unavailable", 503, "the gateway's signing keys could not be fetched", { cause });

/**
 * @param {Record<string, unknown>} header
 * @returns {string | null} why the header is refused, or null
 */
function headerProblem(header) {
  if (header.typ !== ASSERTION_TYPE) return `typ must be ${ASSERTION_TYPE}`;
  if (header.alg !== "EdDSA" && header.alg !== "ES256") return "alg must be EdDSA or ES256";
  if (header.crit !== undefined) return "crit is not supported";
  const kid = header.kid;
  if (typeof kid !== "string" || kid === "" || kid.length > MAX_KID_LENGTH) return "kid missing or malformed";
  return null;
}

const isStringArray = (/** @type {unknown} */ v) => Array.isArray(v) && v.every((x) => typeof x === "string");

/**
 * Makes a verifier for one gateway and one origin.
 *
 * ```js
 * const verifier = createVerifier({ issuer: "https://auth.example.com", audience: "https://api.example.com" });
 * const user = await verifier.verifyAssertion(req.headers["x-auth-assertion"]);
 * ```
 * @param {VerifierOptions} options
 */
export function createVerifier(options) {
  if (options === null || typeof options !== "object") throw new TypeError("options are required");
  if (typeof options.issuer !== "string") throw new TypeError("options.issuer is required (the gateway's ISSUER)");
  // The gateway drops trailing slashes from its ISSUER (`https://auth.example/` signs
  // `iss` `https://auth.example`): so does this, so ISSUER can be copied as it is.
  const issuer = options.issuer.replace(/\/+$/, "");
  if (issuer === "") throw new TypeError("options.issuer is required (the gateway's ISSUER)");
  const audiences = (Array.isArray(options.audience) ? options.audience : [options.audience]).map((a) => {
    if (typeof a !== "string" || a === "") throw new TypeError("options.audience is required (this origin as the gateway sees it)");
    return audienceKey(a);
  });
  const seconds = (/** @type {unknown} */ v, /** @type {number} */ d, /** @type {string} */ name) => {
    if (v === undefined) return d;
    if (typeof v !== "number" || !Number.isFinite(v) || v < 0) throw new TypeError(`options.${name} must be a non-negative number`);
    return v;
  };
  const leeway = seconds(options.leewaySeconds, 30, "leewaySeconds");
  const clock = options.clock ?? Date.now;
  const doFetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  const jwksUrl = options.jwksUrl ?? `${issuer}/.well-known/jwks.json`;
  new URL(jwksUrl); // throws on a malformed URL, at start rather than on the first request
  const keys = new KeySet({
    url: jwksUrl,
    fetch: doFetch,
    clock,
    cacheMs: seconds(options.jwksCacheSeconds, 300, "jwksCacheSeconds") * 1000,
    cooldownMs: seconds(options.refetchCooldownSeconds, 5, "refetchCooldownSeconds") * 1000,
    timeoutMs: seconds(options.jwksTimeoutMs, 5000, "jwksTimeoutMs"),
  });

  /**
   * Verifies an `X-Auth-Assertion` header value; resolves to the identity or
   * rejects with an {@link AssertionError}.
   * @param {string | string[] | null | undefined} value
   * @returns {Promise<PortcullisUser>}
   */
  async function verifyAssertion(value) {
    if (value === undefined || value === null || value === "") throw missing();
    if (typeof value !== "string") throw invalid("more than one X-Auth-Assertion header");
    if (value.length > MAX_ASSERTION_LENGTH || !COMPACT_JWS.test(value)) throw invalid("the assertion is not a compact JWT");
    const [h, p, s] = value.split(".");
    const header = jsonObject(h);
    const payload = jsonObject(p);
    if (!header || !payload) throw invalid("the assertion is not a compact JWT");
    const refused = headerProblem(header);
    if (refused) throw invalid(refused);

    const key = await keys.get(/** @type {string} */ (header.kid));
    if (!key) throw invalid("the assertion's key is not in the gateway's JWKS");
    if (key.alg !== header.alg) throw invalid("alg does not match the key");
    const signature = signatureBytes(s);
    const input = new TextEncoder().encode(`${h}.${p}`);
    const ok = signature.length === 64 && (await crypto.subtle.verify(VERIFY_PARAMS[key.alg], key.key, signature, input));
    if (!ok) throw invalid("bad signature");

    if (payload.iss !== issuer) throw invalid("wrong issuer");
    const aud = payload.aud;
    const auds = typeof aud === "string" ? [aud] : isStringArray(aud) ? /** @type {string[]} */ (aud) : [];
    if (!auds.some((a) => audiences.includes(a))) throw invalid("the assertion is for another audience");
    const now = clock() / 1000;
    const { exp, iat, nbf } = payload;
    if (typeof exp !== "number" || !Number.isFinite(exp) || typeof iat !== "number" || !Number.isFinite(iat)) {
      throw invalid("exp and iat are required");
    }
    if (nbf !== undefined && (typeof nbf !== "number" || !Number.isFinite(nbf))) throw invalid("malformed nbf");
    if (now > exp + leeway) throw new AssertionError("assertion_expired", 401, "the assertion has expired");
    if (iat > now + leeway) throw invalid("the assertion is issued in the future");
    if (typeof nbf === "number" && nbf > now + leeway) throw invalid("the assertion is not valid yet");

    const { sub, sid, email, roles } = payload;
    if (typeof sub !== "string" || sub === "" || typeof sid !== "string" || typeof email !== "string" || !isStringArray(roles)) {
      throw invalid("the assertion lacks sub, sid, email or roles");
    }
    return Object.freeze({
      id: sub,
      email,
      emailVerified: payload.email_verified === true,
      roles: Object.freeze([.../** @type {string[]} */ (roles)]),
      sessionId: sid,
      claims: Object.freeze({ ...payload }),
    });
  }

  /**
   * Forgets the cached keys, so the next verification fetches the JWKS. For a
   * key retired at once at the gateway (the `key_retired` webhook), which an
   * origin otherwise trusts until its cache expires. A fetch under way is
   * neither joined nor stored afterwards. Call it again after 5 s plus the
   * fetch timeout: the gateway's isolates drop the key from their JWKS within
   * 5 s, and a fetch begun after the first call may have been answered by one
   * that still had it.
   */
  function clearKeyCache() {
    keys.clear();
  }

  return Object.freeze({ verifyAssertion, clearKeyCache, issuer, audience: Object.freeze(audiences), jwksUrl });
}

/**
 * @typedef {ReturnType<typeof createVerifier>} Verifier
 */

/**
 * The verifier a middleware factory was given: a ready verifier, or options for one.
 * @param {VerifierOptions | Verifier} v
 * @returns {Verifier}
 */
export function toVerifier(v) {
  return v && typeof (/** @type {any} */ (v).verifyAssertion) === "function" ? /** @type {Verifier} */ (v) : createVerifier(/** @type {VerifierOptions} */ (v));
}
