import type { MiddlewareHandler } from "hono";
import type { PortcullisUser, Verifier, VerifierOptions } from "./index.js";

export { AssertionError, createVerifier } from "./index.js";
export type { PortcullisUser } from "./index.js";

/** Hono middleware; sets `c.get("user")` to the verified identity. */
export type PortcullisMiddleware = MiddlewareHandler<{ Variables: { user: PortcullisUser } }>;

export interface HonoPortcullis {
  readonly verifier: Verifier;
  /** Any user the gateway vouched for (else 401). */
  requireUser(): PortcullisMiddleware;
  /** A user with this role (else 403). */
  requireRole(role: string): PortcullisMiddleware;
  /** A user with at least one of these roles (else 403). */
  requireAnyRole(roles: readonly string[]): PortcullisMiddleware;
}

export declare function portcullis(options: VerifierOptions | Verifier): HonoPortcullis;
