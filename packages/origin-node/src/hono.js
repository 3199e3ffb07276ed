// @ts-check
/**
 * Hono middleware over the framework-free verifier: `requireUser()`,
 * `requireRole(role)` and `requireAnyRole(roles)` verify `X-Auth-Assertion`,
 * set `c.get("user")`, and answer refusals themselves (401 / 403 / 503
 * problem+json). Runs wherever Hono and WebCrypto do.
 *
 * ```js
 * import { portcullis } from "@portcullis/origin-node/hono";
 * const auth = portcullis({ issuer: "https://auth.example.com", audience: "https://api.example.com" });
 * app.get("/api/me", auth.requireUser(), (c) => c.json(c.get("user")));
 * ```
 * @module
 */
import { ASSERTION_HEADER, AssertionError, checkAnyRole, problemResponse, roleList, toVerifier } from "./index.js";

export { AssertionError, createVerifier } from "./index.js";

/**
 * @typedef {import("./index.js").PortcullisUser} PortcullisUser
 * @typedef {{ req: { raw: Request, header(name: string): string | undefined }, set(key: "user", value: PortcullisUser): void }} Context
 * @typedef {(c: Context, next: () => Promise<void>) => Promise<Response | void>} Middleware
 */

/** @param {AssertionError} err */
function refusal(err) {
  const p = problemResponse(err);
  return new Response(p.body, { status: p.status, headers: p.headers });
}

/**
 * Middleware factories for one gateway and origin.
 * @param {import("./index.js").VerifierOptions | import("./index.js").Verifier} options
 *   the verifier's options, or a verifier from `createVerifier`
 */
export function portcullis(options) {
  const verifier = toVerifier(options);
  // One verification per request, however many of these run on it.
  /** @type {WeakMap<Request, Promise<PortcullisUser>>} */
  const verified = new WeakMap();
  /** @param {Context} c */
  const userOf = (c) => {
    let p = verified.get(c.req.raw);
    if (!p) {
      // Fetch's Headers join repeated headers with ", ": never a valid JWT.
      p = verifier.verifyAssertion(c.req.raw.headers.get(ASSERTION_HEADER));
      verified.set(c.req.raw, p);
    }
    return p;
  };

  /**
   * @param {readonly string[] | null} roles  null: any verified user
   * @returns {Middleware}
   */
  const guard = (roles) => async (c, next) => {
    /** @type {PortcullisUser} */
    let user;
    try {
      user = await userOf(c);
    } catch (err) {
      if (err instanceof AssertionError) return refusal(err);
      throw err;
    }
    const denied = roles && checkAnyRole(user, roles);
    if (denied) return refusal(denied);
    c.set("user", user);
    await next();
  };

  return Object.freeze({
    verifier,
    /** Any user the gateway vouched for; sets `c.get("user")`. */
    requireUser: () => guard(null),
    /** @param {string} role  a user with this role (else 403); sets `c.get("user")`. */
    requireRole: (role) => guard(roleList([role])),
    /** @param {readonly string[]} roles  a user with at least one of these roles (else 403); sets `c.get("user")`. */
    requireAnyRole: (roles) => guard(roleList(roles)),
  });
}
