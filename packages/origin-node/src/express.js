// @ts-check
/**
 * Express (4 and 5; also Connect and plain `node:http` handlers) middleware
 * over the framework-free verifier: `requireUser()`, `requireRole(role)` and
 * `requireAnyRole(roles)` verify `X-Auth-Assertion`, set `req.user`, and
 * answer refusals themselves (401 / 403 / 503 problem+json).
 *
 * ```js
 * import { portcullis } from "@portcullis/origin-node/express";
 * const auth = portcullis({ issuer: "https://auth.example.com", audience: "https://api.example.com" });
 * app.get("/api/me", auth.requireUser(), (req, res) => res.json(req.user));
 * app.delete("/api/users/:id", auth.requireRole("admin"), handler);
 * ```
 * @module
 */
import { ASSERTION_HEADER, AssertionError, checkAnyRole, problemResponse, roleList, toVerifier } from "./index.js";

export { AssertionError, createVerifier } from "./index.js";

/**
 * @typedef {import("./index.js").PortcullisUser} PortcullisUser
 * @typedef {import("node:http").IncomingMessage & { user?: PortcullisUser }} Req
 * @typedef {import("node:http").ServerResponse} Res
 * @typedef {(err?: unknown) => void} Next
 * @typedef {(req: Req, res: Res, next: Next) => void} Middleware
 */

/**
 * @param {Res} res
 * @param {AssertionError} err
 * @param {Next} next
 */
function refuse(res, err, next) {
  if (res.headersSent) return next(err);
  const p = problemResponse(err);
  res.statusCode = p.status;
  for (const [k, v] of Object.entries(p.headers)) res.setHeader(k, v);
  res.end(p.body);
}

/**
 * Middleware factories for one gateway and origin.
 * @param {import("./index.js").VerifierOptions | import("./index.js").Verifier} options
 *   the verifier's options, or a verifier from `createVerifier`
 */
export function portcullis(options) {
  const verifier = toVerifier(options);
  // One verification per request, however many of these run on it.
  /** @type {WeakMap<object, Promise<PortcullisUser>>} */
  const verified = new WeakMap();
  /** @param {Req} req */
  const userOf = (req) => {
    let p = verified.get(req);
    if (!p) {
      p = verifier.verifyAssertion(req.headers[ASSERTION_HEADER]);
      verified.set(req, p);
    }
    return p;
  };

  /**
   * @param {readonly string[] | null} roles  null: any verified user
   * @returns {Middleware}
   */
  const guard = (roles) => (req, res, next) => {
    userOf(req).then(
      (user) => {
        const denied = roles && checkAnyRole(user, roles);
        if (denied) return refuse(res, denied, next);
        req.user = user;
        next();
      },
      (err) => (err instanceof AssertionError ? refuse(res, err, next) : next(err)),
    );
  };

  return Object.freeze({
    verifier,
    /** Any user the gateway vouched for; sets `req.user`. */
    requireUser: () => guard(null),
    /** @param {string} role  a user with this role (else 403); sets `req.user`. */
    requireRole: (role) => guard(roleList([role])),
    /** @param {readonly string[]} roles  a user with at least one of these roles (else 403); sets `req.user`. */
    requireAnyRole: (roles) => guard(roleList(roles)),
  });
}
