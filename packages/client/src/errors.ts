/**
 * Errors: every answer of the gateway that is not a success becomes a
 * {@link PortcullisError}, read from its RFC 9457 `application/problem+json`
 * body and its `Retry-After` and `WWW-Authenticate` headers.
 */

/** An RFC 9457 problem as the gateway sends it (`code` is its stable, machine-readable member). */
export interface Problem {
  type?: string;
  title?: string;
  status?: number;
  detail?: string;
  code?: string;
  [member: string]: unknown;
}

/** The `code` of an error answer that is not a problem document (e.g. a proxy's HTML 502). */
export const UNEXPECTED_RESPONSE = "unexpected_response";

/**
 * The `code` of the client's own refusal (`status` 0, nothing sent): an
 * `auth: "if-signed-in"` call (`verifyEmail`) found, once it could refresh,
 * that the session had ended or was another account's (another tab signed
 * out, or in as someone else, in a shared storage).
 */
export const SESSION_CHANGED = "session_changed";

/**
 * A refusal or failure answered by the gateway. `code` is the problem's
 * `code` (`invalid_credentials`, `rate_limited`, `token_expired`, …), or
 * {@link UNEXPECTED_RESPONSE} when the answer was not a problem document, or
 * {@link SESSION_CHANGED} (`status` 0) when the client refused to send.
 */
export class PortcullisError extends Error {
  /** HTTP status (0: the client's own refusal, {@link SESSION_CHANGED}). */
  readonly status: number;
  /** The problem's stable `code`. */
  readonly code: string;
  /** The problem's `title`. */
  readonly title: string;
  /** The problem's `detail`. */
  readonly detail: string;
  /** The problem's `type` (`about:blank` from the gateway). */
  readonly type: string;
  /** `Retry-After` in seconds from when the answer arrived (429, 503), else `null`. */
  readonly retryAfter: number | null;
  /** The `WWW-Authenticate` header (401s, role refusals), else `null`. */
  readonly wwwAuthenticate: string | null;
  /** The problem body as received, `null` if the answer was not one. */
  readonly problem: Problem | null;

  constructor(init: {
    status: number;
    code: string;
    title: string;
    detail: string;
    type?: string;
    retryAfter?: number | null;
    wwwAuthenticate?: string | null;
    problem?: Problem | null;
  }) {
    super(`${init.status} ${init.code}: ${init.detail || init.title}`);
    this.name = "PortcullisError";
    this.status = init.status;
    this.code = init.code;
    this.title = init.title;
    this.detail = init.detail;
    this.type = init.type ?? "about:blank";
    this.retryAfter = init.retryAfter ?? null;
    this.wwwAuthenticate = init.wwwAuthenticate ?? null;
    this.problem = init.problem ?? null;
  }

  /** Reads an error answer (consumes its body). `now` is the clock in milliseconds, for an HTTP-date `Retry-After`. */
  static async fromResponse(res: Response, now: number = Date.now()): Promise<PortcullisError> {
    const text = await res.text().catch(() => "");
    const retryAfter = parseRetryAfter(res.headers.get("retry-after"), now);
    const wwwAuthenticate = res.headers.get("www-authenticate");
    const problem = parseProblem(text);
    if (problem && typeof problem.code === "string") {
      return new PortcullisError({
        status: res.status,
        code: problem.code,
        title: typeof problem.title === "string" ? problem.title : res.statusText,
        detail: typeof problem.detail === "string" ? problem.detail : "",
        type: typeof problem.type === "string" ? problem.type : undefined,
        retryAfter,
        wwwAuthenticate,
        problem,
      });
    }
    return new PortcullisError({
      status: res.status,
      code: UNEXPECTED_RESPONSE,
      title: res.statusText || `HTTP ${res.status}`,
      detail: text.slice(0, 200),
      retryAfter,
      wwwAuthenticate,
      problem,
    });
  }
}

/** Whether `err` is a {@link PortcullisError} (with `code` if given). */
export function isPortcullisError(err: unknown, code?: string): err is PortcullisError {
  return err instanceof PortcullisError && (code === undefined || err.code === code);
}

function parseProblem(text: string): Problem | null {
  try {
    const value: unknown = JSON.parse(text);
    return value !== null && typeof value === "object" && !Array.isArray(value) ? (value as Problem) : null;
  } catch {
    return null;
  }
}

/** `Retry-After` (RFC 9110 §10.2.3: delay-seconds or an HTTP-date) as whole seconds from `now`. */
export function parseRetryAfter(value: string | null, now: number): number | null {
  if (value === null) return null;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v);
  if (!/[a-z]/i.test(v)) return null; // an HTTP-date names its month
  const at = Date.parse(v);
  if (Number.isNaN(at)) return null;
  return Math.max(0, Math.ceil((at - now) / 1000));
}
