import type { IncomingMessage, ServerResponse } from "node:http";
import type { PortcullisUser, Verifier, VerifierOptions } from "./index.js";

export { AssertionError, createVerifier } from "./index.js";
export type { PortcullisUser } from "./index.js";

/** Express / Connect middleware; sets `req.user` to the verified identity. */
export type PortcullisMiddleware = (
  req: IncomingMessage & { user?: PortcullisUser },
  res: ServerResponse,
  next: (err?: unknown) => void,
) => void;

export interface ExpressPortcullis {
  readonly verifier: Verifier;
  /** Any user the gateway vouched for (else 401). */
  requireUser(): PortcullisMiddleware;
  /** A user with this role (else 403). */
  requireRole(role: string): PortcullisMiddleware;
  /** A user with at least one of these roles (else 403). */
  requireAnyRole(roles: readonly string[]): PortcullisMiddleware;
}

export declare function portcullis(options: VerifierOptions | Verifier): ExpressPortcullis;
