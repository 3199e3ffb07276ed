/** The request header the gateway puts the assertion in (lowercase). */
export declare const ASSERTION_HEADER: "x-auth-assertion";
/** The `typ` of gateway assertions. */
export declare const ASSERTION_TYPE: "portcullis-assertion+jwt";

/** The verified identity the gateway vouched for. */
export interface PortcullisUser {
  /** User id (`sub`). */
  readonly id: string;
  /** Email (`email`). */
  readonly email: string;
  /** Whether the email is verified (`email_verified`). */
  readonly emailVerified: boolean;
  /** Role names (`roles`). */
  readonly roles: readonly string[];
  /** Session id (`sid`). */
  readonly sessionId: string;
  /** Every claim of the verified assertion, including any beyond the ones above. */
  readonly claims: Readonly<Record<string, unknown>>;
}

export interface VerifierOptions {
  /** The gateway's `ISSUER` (the `iss` of its tokens; trailing slashes dropped, as the gateway does). */
  issuer: string;
  /** This origin as the gateway sees it: the URL origin of the gateway's `ORIGIN_URL`. */
  audience: string | string[];
  /** Default `<issuer>/.well-known/jwks.json`. */
  jwksUrl?: string;
  /** Clock skew tolerated on `exp`, `iat`, `nbf` (default 30). */
  leewaySeconds?: number;
  /**
   * How long fetched keys are used before the JWKS is fetched again (default 300); if that
   * fetch fails, they are used for at most as long again. A key retired at once at the
   * gateway is trusted until then: see `clearKeyCache`.
   */
  jwksCacheSeconds?: number;
  /**
   * An unknown `kid` fetches the JWKS again at most once per this many seconds, and a failed
   * fetch is not retried sooner (default 5: the gateway's JWKS reload interval).
   */
  refetchCooldownSeconds?: number;
  /** Timeout of a JWKS fetch in milliseconds (default 5000). */
  jwksTimeoutMs?: number;
  /** The fetch used for the JWKS (default `globalThis.fetch`). */
  fetch?: typeof fetch;
  /** Current time in milliseconds (default `Date.now`). */
  clock?: () => number;
}

export type AssertionErrorCode =
  | "missing_assertion"
  | "invalid_assertion"
  | "assertion_expired"
  | "insufficient_role"
  | "jwks_unavailable";

/** A refusal: `status` and `code` say what the middleware answers. */
export declare class AssertionError extends Error {
  constructor(code: AssertionErrorCode, status: number, detail: string, options?: { cause?: unknown });
  readonly code: AssertionErrorCode;
  readonly status: number;
  readonly detail: string;
}

export interface Verifier {
  /** Verifies an `X-Auth-Assertion` header value; rejects with an {@link AssertionError}. */
  verifyAssertion(value: string | string[] | null | undefined): Promise<PortcullisUser>;
  /**
   * Forgets the cached keys: the next verification fetches the JWKS. Call it on the
   * gateway's `key_retired` webhook, and again after 5 s plus the JWKS fetch timeout.
   * Optional, so a verifier of your own still fits; `createVerifier`'s always has it.
   */
  clearKeyCache?(): void;
  readonly issuer: string;
  readonly audience: readonly string[];
  readonly jwksUrl: string;
}

export declare function createVerifier(options: VerifierOptions): Verifier;

/** The HTTP answer for a refusal (problem+json, `WWW-Authenticate`). */
export declare function problemResponse(err: AssertionError): {
  status: number;
  headers: Record<string, string>;
  body: string;
};

/** The refusal for a user lacking every one of `roles`, or null when they have one. */
export declare function checkAnyRole(user: PortcullisUser, roles: readonly string[]): AssertionError | null;
export declare function roleList(roles: unknown): readonly string[];
export declare function toVerifier(v: VerifierOptions | Verifier): Verifier;
