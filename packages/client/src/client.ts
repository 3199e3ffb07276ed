/**
 * The browser client: every flow of the auth API, the session in a token
 * storage or in the gateway's `HttpOnly` cookies, refresh before expiry with
 * one refresh in flight per session (in this page and across tabs), and a
 * `fetch` for the protected API.
 *
 * Why one refresh at a time: the gateway rotates the refresh token on every
 * use and treats a rotated token presented again as theft, revoking the whole
 * session, with no grace window. So two refreshes racing with the same token
 * end the session. This page shares one refresh promise among its callers;
 * tabs take the Web Lock `portcullis-session <gateway>` around a refresh.
 * Once a tab holds it, it reads its storage again, and asks the lock manager
 * which session state is the newest: every tab holds a second lock, named
 * after the last state it stored (`… latest <time> <session> <stamp> <tab>`), taken
 * before it lets go of the refresh lock. `navigator.locks.query()` is
 * answered by the same lock manager that granted the lock, so a tab that
 * waited for another's refresh always sees that refresh's name — unlike a
 * storage event or a channel message, which may arrive after the lock. A
 * newer state is then taken from the storage or the BroadcastChannel of the
 * same name (the tab that refreshed posts it there), never refreshed again
 * with the spent token.
 */
import { PortcullisError, SESSION_CHANGED } from "./errors.js";
import { memoryStorage, type TokenStorage } from "./storage.js";
import type {
  AuthResponse,
  AuthenticationResponseJSON,
  BackupCodes,
  CreationOptionsJSON,
  EmailVerified,
  Me,
  Message,
  MfaRequired,
  MfaVerifyRequest,
  OAuthLink,
  Passkey,
  ProfilePatch,
  PasswordChanged,
  RegistrationResponseJSON,
  RequestOptionsJSON,
  Revoked,
  SessionInfo,
  SignInResult,
  SignedIn,
  TotpEnrollment,
  User,
} from "./types.js";

/** `fetch` or anything shaped like it. */
export type FetchLike = (input: RequestInfo | URL, init?: RequestInit) => Promise<Response>;

/** The part of the Web Locks API (`navigator.locks`) the client uses. */
export interface LockManagerLike {
  request<T>(name: string, callback: (lock: unknown) => Promise<T>): Promise<T>;
  /** Without it, tabs rely on their storage and channel alone to see another's refresh. */
  query?(): Promise<{ held?: { name?: string }[] }>;
}

/** The part of `BroadcastChannel` the client uses. */
export interface BroadcastChannelLike {
  postMessage(message: unknown): void;
  close(): void;
  onmessage: ((event: MessageEvent) => void) | null;
}

/** How the session travels. */
export type Mode = "token" | "cookie";

export interface ClientOptions {
  /**
   * The gateway's origin, e.g. `"https://auth.example.com"`. Default `""`:
   * this page's origin (an app served through the gateway).
   */
  baseUrl?: string;
  /** The gateway's `AUTH_PREFIX` (default `"/auth"`). */
  authPrefix?: string;
  /**
   * `"token"` (default): the client keeps the tokens in `storage` and sends
   * `Authorization: Bearer`. `"cookie"`: the gateway runs with
   * `COOKIE_MODE=true` and keeps them in `HttpOnly` cookies; the auth calls,
   * and {@link PortcullisClient.fetch} to the gateway's origin and the
   * `tokenOrigins`, go with `credentials: "include"`, and `storage` holds
   * only the user and the expiry.
   */
  mode?: Mode;
  /** Where the session is kept (default {@link memoryStorage}). */
  storage?: TokenStorage;
  /** The `fetch` to use (default `globalThis.fetch`). */
  fetch?: FetchLike;
  /**
   * Refresh this many seconds before the access token expires (default 30;
   * never more than half the token's lifetime).
   */
  refreshMarginSeconds?: number;
  /** Web Locks (default `navigator.locks` where there is one); `null`: no lock between tabs. */
  locks?: LockManagerLike | null;
  /** Makes the BroadcastChannel between tabs (default `new BroadcastChannel(name)`); `null`: none. */
  channel?: ((name: string) => BroadcastChannelLike) | null;
  /** The clock, in milliseconds (default `Date.now`). */
  now?: () => number;
  /**
   * Origins besides the gateway's that {@link PortcullisClient.fetch} sends
   * the session to, e.g. `["https://api.example.com"]` (an API that checks
   * the gateway's tokens itself). Default none: the session goes only to the
   * gateway's origin (`baseUrl`'s, or this page's when `baseUrl` is `""`).
   */
  tokenOrigins?: string[];
}

/** The session as the app sees it (the tokens stay inside the client). */
export interface AuthState {
  user: User;
  /** When the access token expires, in milliseconds of the client's clock. */
  expiresAt: number;
}

/** Options of {@link PortcullisClient.request}. */
export interface RequestOptions {
  /** Sent as JSON. */
  body?: unknown;
  /** Appended as the query string; `undefined` and `null` values are left out. */
  query?: Record<string, string | number | boolean | null | undefined>;
  /**
   * `true`: send the session (Bearer or cookies), refresh before expiry and
   * once on a 401. `"if-signed-in"`: the same when there is a session —
   * the client has one, or, in cookie mode, a refresh through the cookie
   * finds one — and without one the request goes without; a session the
   * client has but cannot refresh fails the call instead of going without.
   * `false` (default): no session.
   */
  auth?: boolean | "if-signed-in";
  /** Override the request's `credentials`. */
  credentials?: RequestCredentials;
}

/** What the client keeps in its storage (one JSON string). */
interface Stored {
  v: 1;
  /** Unique per sign-in and per refresh: tells one state from the next. */
  stamp: string;
  obtainedAt: number;
  expiresAt: number;
  /** `expires_in` of the answer, seconds. */
  lifetime: number;
  user: User;
  /** Token mode only. */
  accessToken?: string;
  refreshToken?: string;
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

/** A sign-in step: posts `body` to `path` and keeps the session it gives. */
type SignInStep = (path: string, body: unknown) => Promise<SignInResult>;

/** What tabs tell each other; `from` tells a client its own messages. */
type TabMessage = { from: string } & (
  | { kind: "state"; state: Stored }
  | { kind: "signed_out"; sessionId: string | null }
);

const DEFAULT_MARGIN_SECONDS = 30;
/** The largest problem body read to tell a 401 `missing_token` from the others. */
const MAX_PROBLEM_BYTES = 8192;
/** How long that body may take to arrive. */
const PROBLEM_READ_MS = 2000;

/**
 * The `code` of a problem document, reading at most `MAX_PROBLEM_BYTES`
 * within `PROBLEM_READ_MS`; `null` if the body is longer or slower, not
 * JSON, or has no string `code`.
 */
async function problemCode(res: Response): Promise<string | null> {
  const reader = res.body?.getReader();
  if (!reader) return null;
  const chunks: Uint8Array[] = [];
  let size = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<null>((resolve) => {
    timer = setTimeout(() => resolve(null), PROBLEM_READ_MS);
  });
  try {
    for (;;) {
      const next = await Promise.race([reader.read(), late]);
      if (next === null) return null;
      const { done, value } = next;
      if (done) break;
      size += value.byteLength;
      if (size > MAX_PROBLEM_BYTES) return null;
      chunks.push(value);
    }
  } catch {
    return null;
  } finally {
    clearTimeout(timer);
    reader.cancel().catch(() => undefined);
  }
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    bytes.set(c, at);
    at += c.byteLength;
  }
  try {
    const body: unknown = JSON.parse(new TextDecoder().decode(bytes));
    const code = (body as { code?: unknown } | null)?.code;
    return typeof code === "string" ? code : null;
  } catch {
    return null;
  }
}
/** The longest a tab waits for a newer session another tab announced to reach it (liveness only: it was posted before the lock was let go). */
const HANDOFF_TIMEOUT_MS = 3000;

/** The client of one gateway; `close()` it when the page no longer needs it (tests, an app's teardown). */
export class PortcullisClient {
  /** `"token"` or `"cookie"`. */
  readonly mode: Mode;
  /** TOTP and backup codes, and the second step of a sign-in (SPEC "Strong authentication"). */
  readonly mfa: MfaApi;
  /** Passkeys: registration, sign-in and management (SPEC "Strong authentication"). */
  readonly passkeys: PasskeysApi;

  readonly #base: string;
  readonly #prefix: string;
  readonly #storage: TokenStorage;
  readonly #fetch: FetchLike;
  readonly #marginMs: number;
  readonly #locks: LockManagerLike | null;
  readonly #now: () => number;
  readonly #name: string;
  /** The origins `fetch` sends the session to. */
  readonly #origins: ReadonlySet<string>;
  readonly #channel: BroadcastChannelLike | null;
  readonly #pinger: BroadcastChannelLike | null;
  /** Stamps of states announced by other tabs that a refresh waits for. */
  readonly #waiting = new Map<string, (state: Stored) => void>();
  /** Lets go of the lock that names this tab's last state. */
  #unmark: (() => void) | null = null;
  readonly #id = newStamp();
  readonly #listeners = new Set<(state: AuthState | null) => void>();
  #inbox: Promise<void> = Promise.resolve();
  #inflight: Promise<Stored | null> | null = null;
  #emitted: string | null | undefined = undefined;

  constructor(options: ClientOptions = {}) {
    this.mode = options.mode ?? "token";
    if (this.mode !== "token" && this.mode !== "cookie") throw new TypeError(`mode must be "token" or "cookie"`);
    this.#base = (options.baseUrl ?? "").replace(/\/+$/, "");
    this.#prefix = "/" + (options.authPrefix ?? "/auth").replace(/^\/+|\/+$/g, "");
    this.#storage = options.storage ?? memoryStorage();
    this.#fetch = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
    this.#marginMs = (options.refreshMarginSeconds ?? DEFAULT_MARGIN_SECONDS) * 1000;
    this.#now = options.now ?? Date.now;
    const nav = (globalThis as { navigator?: { locks?: LockManagerLike } }).navigator;
    this.#locks = options.locks === undefined ? (nav?.locks ?? null) : options.locks;
    const page = (globalThis as { location?: { origin?: string; href?: string } }).location;
    const scope = this.#base || (page?.origin ?? "");
    this.#name = `portcullis-session ${scope}${this.#prefix}`;
    this.#origins = sessionOrigins(this.#base, page?.href, options.tokenOrigins ?? []);
    const makeChannel =
      options.channel === undefined
        ? typeof BroadcastChannel === "function"
          ? (name: string) => new BroadcastChannel(name) as BroadcastChannelLike
          : null
        : options.channel;
    this.#channel = open(makeChannel, this.#name);
    this.#pinger = this.#channel && open(makeChannel, this.#name);
    if (this.#channel && this.#pinger) {
      // Two objects: a channel does not hear what it posts itself.
      this.#channel.onmessage = (event) => {
        const data: unknown = event.data;
        this.#inbox = this.#inbox.then(() => this.#receive(data)).catch(() => undefined);
      };
      unref(this.#channel);
      unref(this.#pinger);
    }
    // Handed around as a plain function (`fetch: client.fetch`) it must keep its client.
    this.fetch = this.fetch.bind(this);
    const signIn = (path: string, body: unknown) => this.#signIn(path, body);
    this.mfa = new MfaApi(this, signIn);
    this.passkeys = new PasskeysApi(this, signIn);
  }

  /** Closes the channel to other tabs. */
  close(): void {
    this.#channel?.close();
    this.#pinger?.close();
    this.#unmark?.();
    this.#unmark = null;
  }

  /** The current session, or `null` when signed out (in cookie mode: when this client has not seen a sign-in). */
  async getState(): Promise<AuthState | null> {
    const s = await this.#load();
    return s && view(s);
  }

  /**
   * Calls `listener` whenever the session changes: a sign-in, a refresh (also
   * one made by another tab), a sign-out, a session the gateway ended.
   * Returns the function that stops it.
   */
  onChange(listener: (state: AuthState | null) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * An access token valid for a while yet (refreshed first if it is about to
   * expire), for a call the client does not make itself (a WebSocket, another
   * library). `null` when signed out, and always in cookie mode.
   */
  async getAccessToken(): Promise<string | null> {
    if (this.mode === "cookie") return null;
    return (await this.#fresh())?.accessToken ?? null;
  }

  /** Refreshes the session now (one refresh at a time, see the module doc); `null` when there is none. */
  async refresh(): Promise<AuthState | null> {
    const s = await this.#refresh(await this.#load());
    return s && view(s);
  }

  // --- the protected API ------------------------------------------------------

  /**
   * `fetch` for the API behind the gateway: adds `Authorization: Bearer`
   * (token mode) or sends the cookies (cookie mode), refreshes before the
   * access token expires, and on a 401 that says the token is no good
   * refreshes once and sends the request once more. Never more than one
   * retry. Only for a URL of the gateway's origin (`baseUrl`'s, or this
   * page's when `baseUrl` is `""`) or of one in the `tokenOrigins` option:
   * a request to any other origin, and one that already has an
   * `Authorization` header, is sent as is.
   */
  async fetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response> {
    const original = new Request(input, init);
    if (original.headers.has("authorization") || !this.#origins.has(new URL(original.url).origin)) {
      return this.#fetch(original);
    }
    const credentials = init?.credentials ?? (this.mode === "cookie" ? "include" : undefined);
    return this.#withSession(original.method, (state) => {
      const headers = new Headers(original.headers);
      if (this.mode === "token" && state?.accessToken) headers.set("authorization", `Bearer ${state.accessToken}`);
      const req = new Request(original.clone(), credentials ? { headers, credentials } : { headers });
      return this.#fetch(req);
    });
  }

  // --- the auth API -----------------------------------------------------------

  /**
   * Calls the auth API: `path` is below the prefix (`"/me"`). Resolves with
   * the parsed JSON (`undefined` for 204), rejects with a
   * {@link PortcullisError} for any answer that is not a success.
   */
  async request<T>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
    const { body, auth = false } = options;
    const url = this.#url(path, options.query);
    const credentials = options.credentials ?? (this.mode === "cookie" ? "include" : "same-origin");
    const send = (state: Stored | null) => {
      const headers: Record<string, string> = { accept: "application/json" };
      if (body !== undefined) headers["content-type"] = "application/json";
      if (auth !== false && this.mode === "token" && state?.accessToken) {
        headers.authorization = `Bearer ${state.accessToken}`;
      }
      return this.#fetch(url, {
        method,
        headers,
        credentials,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    };
    const res = auth === false ? await send(null) : await this.#withSession(method, send, auth === "if-signed-in");
    return this.#read<T>(res);
  }

  /** `POST /auth/signup`: creates the account and signs in. */
  async signUp(input: { email: string; password: string; name?: string }): Promise<SignedIn> {
    return (await this.#signIn("/signup", input)) as SignedIn;
  }

  /** `POST /auth/login`. */
  signIn(input: { email: string; password: string }): Promise<SignInResult> {
    return this.#signIn("/login", input);
  }

  /**
   * `POST /auth/logout`: ends the session at the gateway and forgets it here
   * (also when the gateway cannot be reached: then the error is rethrown
   * after). A session that had already ended is not an error.
   */
  async signOut(): Promise<void> {
    // Not while a refresh is under way: it would make the token sent here stale.
    await this.#inflight?.catch(() => undefined);
    await this.#exclusive(async () => {
      const state = await this.#load();
      try {
        if (this.mode === "cookie") await this.request<void>("POST", "/logout");
        else if (state?.refreshToken) {
          await this.request<void>("POST", "/logout", { body: { refresh_token: state.refreshToken } });
        }
      } catch (err) {
        if (!(err instanceof PortcullisError && err.status === 401)) {
          await this.#clear(state);
          throw err;
        }
      }
      await this.#clear(state);
    });
  }

  /** `GET /auth/me`: the account, with its linked OAuth identities. */
  me(): Promise<Me> {
    return this.request<Me>("GET", "/me", { auth: true });
  }

  /** `PATCH /auth/me`: edits the user's own name, avatar or language; answers as {@link me}. */
  updateProfile(patch: ProfilePatch): Promise<Me> {
    return this.request<Me>("PATCH", "/me", { auth: true, body: patch });
  }

  /** `POST /auth/magic-link`: emails a sign-in link (the same answer for every address). */
  requestMagicLink(email: string): Promise<Message> {
    return this.request<Message>("POST", "/magic-link", { body: { email } });
  }

  /**
   * `POST /auth/magic-link/verify` with the link's `token`. The first proof
   * of an address: it takes an unverified account over (docs/auth-api.md,
   * "Takeover").
   */
  verifyMagicLink(token: string): Promise<SignInResult> {
    return this.#signIn("/magic-link/verify", { token });
  }

  /** `POST /auth/otp`: emails a six-digit code (the same answer for every address). */
  requestEmailCode(email: string): Promise<Message> {
    return this.request<Message>("POST", "/otp", { body: { email } });
  }

  /** `POST /auth/otp/verify`. A proof of the address, as {@link verifyMagicLink}: it takes an unverified account over. */
  verifyEmailCode(email: string, code: string): Promise<SignInResult> {
    return this.#signIn("/otp/verify", { email, code });
  }

  /** `POST /auth/password/forgot`: emails a reset link (the same answer for every address). */
  forgotPassword(email: string): Promise<Message> {
    return this.request<Message>("POST", "/password/forgot", { body: { email } });
  }

  /**
   * `POST /auth/password/reset` with the link's `token`: every session of the
   * account ends. A proof of the address, as {@link verifyMagicLink}: it takes
   * an unverified account over (the new password is the only one left).
   */
  resetPassword(token: string, newPassword: string): Promise<PasswordChanged> {
    return this.request<PasswordChanged>("POST", "/password/reset", { body: { token, new_password: newPassword } });
  }

  /** `POST /auth/password/change`: the other sessions end, this one stays. */
  changePassword(oldPassword: string, newPassword: string): Promise<PasswordChanged> {
    return this.request<PasswordChanged>("POST", "/password/change", {
      auth: true,
      body: { old_password: oldPassword, new_password: newPassword },
    });
  }

  /** `POST /auth/email/verify/request`: emails a verification link to the signed-in account. */
  requestEmailVerification(): Promise<Message> {
    return this.request<Message>("POST", "/email/verify/request", { auth: true });
  }

  /**
   * `POST /auth/email/verify` with the link's `token`, sent with the session
   * when there is one (`auth: "if-signed-in"`): a signed-in holder of the
   * account confirms it as it stands. Without a session the link is a proof
   * of the address that takes an unverified account over (its password,
   * sessions and second factors go: docs/auth-api.md, "Takeover"). A session
   * this client has but cannot refresh (the gateway ended it) rejects, the
   * link unspent; the client is then signed out, and a second call goes
   * without a session. A session that ended or became another account's
   * while the call waited for its refresh (another tab, a shared storage)
   * rejects with {@link SESSION_CHANGED}, nothing sent. The gateway confirms
   * only for a session of the link's own account: signed in as another
   * account, the link takes its (unverified) account over as well.
   */
  verifyEmail(token: string): Promise<EmailVerified> {
    return this.request<EmailVerified>("POST", "/email/verify", { auth: "if-signed-in", body: { token } });
  }

  /** `GET /auth/sessions`: the account's sessions. */
  async listSessions(): Promise<SessionInfo[]> {
    return (await this.request<{ sessions: SessionInfo[] }>("GET", "/sessions", { auth: true })).sessions;
  }

  /** `DELETE /auth/sessions/{id}`; revoking this client's own session signs it out here too. */
  async revokeSession(id: string): Promise<void> {
    await this.request<void>("DELETE", `/sessions/${encodeURIComponent(id)}`, { auth: true });
    const state = await this.#load();
    if (state && state.user.session_id === id) await this.#clear(state);
  }

  /** `POST /auth/sessions/revoke-others`: ends every session of the account but this one. */
  revokeOtherSessions(): Promise<Revoked> {
    return this.request<Revoked>("POST", "/sessions/revoke-others", { auth: true });
  }

  /**
   * The URL to send the browser to for an OAuth sign-in
   * (`GET /auth/oauth/{provider}/authorize`): `location.assign(url)`. The
   * gateway returns the browser to `redirectTo` (on its
   * `REDIRECT_ALLOWLIST`) with `?code=` for {@link exchangeOAuthCode}, or `?error=`.
   * In token mode pass `codeChallenge` from {@link createCodeChallenge}
   * (required there) and keep its verifier: the code is swapped only for it.
   */
  oauthAuthorizeUrl(provider: string, options: { redirectTo?: string; codeChallenge?: string } = {}): string {
    return this.#url(`/oauth/${encodeURIComponent(provider)}/authorize`, {
      redirect_to: options.redirectTo,
      code_challenge: options.codeChallenge,
    });
  }

  /**
   * The URL of hosted page `page` (`GET /auth/ui/{page}`, e.g. `login`)
   * returning to `redirectTo`. In token mode pass `codeChallenge` from
   * {@link createCodeChallenge} and keep its verifier for
   * {@link exchangeOAuthCode}: the gateway then swaps the code only for it.
   */
  hostedPageUrl(page: string, options: { redirectTo?: string; codeChallenge?: string } = {}): string {
    return this.#url(`/ui/${page}`, { redirect_to: options.redirectTo, code_challenge: options.codeChallenge });
  }

  /**
   * `POST /auth/oauth/exchange`: the one-time `code` of a browser sign-in's
   * redirect for the session. A hosted-page sign-in's code needs the
   * `codeVerifier` of the `code_challenge` it was started with.
   */
  exchangeOAuthCode(code: string, codeVerifier?: string): Promise<SignInResult> {
    return this.#signIn("/oauth/exchange", codeVerifier === undefined ? { code } : { code, code_verifier: codeVerifier });
  }

  /**
   * `POST /auth/oauth/{provider}/link`: where to send the browser to link
   * another identity to the signed-in account. Sent with credentials, since
   * the answer sets the cookie that binds the sign-in to this browser.
   */
  linkOAuth(provider: string, options: { redirectTo?: string } = {}): Promise<OAuthLink> {
    return this.request<OAuthLink>("POST", `/oauth/${encodeURIComponent(provider)}/link`, {
      auth: true,
      credentials: "include",
      body: options.redirectTo === undefined ? undefined : { redirect_to: options.redirectTo },
    });
  }

  /** `DELETE /auth/oauth/{provider}`: unlinks an identity (409 `last_sign_in_method` if it is the only way in). */
  unlinkOAuth(provider: string): Promise<void> {
    return this.request<void>("DELETE", `/oauth/${encodeURIComponent(provider)}`, { auth: true });
  }

  // --- internals --------------------------------------------------------------

  async #signIn(path: string, body: unknown): Promise<SignInResult> {
    const answer = await this.request<AuthResponse | MfaRequired>("POST", path, { body });
    if (isMfaRequired(answer)) return answer;
    const state = await this.#keep(answer);
    return { mfa_required: false, user: state.user, expires_in: state.lifetime };
  }

  #url(path: string, query?: RequestOptions["query"]): string {
    let url = `${this.#base}${this.#prefix}${path}`;
    if (query) {
      const params = new URLSearchParams();
      for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null) params.append(k, String(v));
      const qs = params.toString();
      if (qs) url += `?${qs}`;
    }
    return url;
  }

  async #read<T>(res: Response): Promise<T> {
    if (!res.ok) throw await PortcullisError.fromResponse(res, this.#now());
    const text = await res.text();
    if (res.status === 204 || text === "") return undefined as T;
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new PortcullisError({
        status: res.status,
        code: "unexpected_response",
        title: "Unexpected response",
        detail: `expected JSON, got: ${text.slice(0, 200)}`,
      });
    }
  }

  async #load(): Promise<Stored | null> {
    return parseStored(await this.#storage.get());
  }

  /**
   * The session to send: refreshed first when its access token is about to
   * expire. If the gateway refuses that refresh, what there is (a session it
   * ended is forgotten already) — or, `strict`, the refusal. `strict` also
   * rejects with {@link SESSION_CHANGED} when the refresh finds no session
   * or another account's (another tab signed out, or in as someone else,
   * while this one waited for the lock): the call was meant for the account
   * loaded here, and must not go without it or as someone else.
   */
  async #fresh(strict = false): Promise<Stored | null> {
    const state = await this.#load();
    if (state === null || this.#now() < state.expiresAt - Math.min(this.#marginMs, (state.lifetime * 1000) / 2)) {
      return state;
    }
    let next: Stored | null;
    try {
      next = await this.#refresh(state);
    } catch (err) {
      if (err instanceof PortcullisError && !strict) return this.#load();
      throw err;
    }
    if (strict && next?.user.id !== state.user.id) throw sessionChanged();
    return next;
  }

  /**
   * The session of an `auth: "if-signed-in"` call, or `null` when there is
   * none. A session the client has is refreshed as for any call, but a
   * refresh that fails fails the call: sending nothing instead would make a
   * different request (a proof of an address from nobody takes an account
   * over). In cookie mode, a page that knows of no session asks the gateway
   * with a refresh through the cookie (an access cookie the browser dropped
   * on expiry would otherwise leave the request without the session the
   * browser holds); a 400 (no refresh cookie) or 401 (its session is over)
   * says there is none.
   */
  async #ifSignedIn(): Promise<Stored | null> {
    if ((await this.#load()) !== null || this.mode === "token") return this.#fresh(true);
    try {
      return await this.#refresh(null);
    } catch (err) {
      if (err instanceof PortcullisError && (err.status === 400 || err.status === 401)) return null;
      throw err;
    }
  }

  /**
   * Sends with the session; on a 401 that a refresh can cure, refreshes once
   * and sends once more. `optional`: the session of an `auth: "if-signed-in"`
   * call, never retried without one nor as another account (that rejects
   * with {@link SESSION_CHANGED}).
   */
  async #withSession(
    method: string,
    send: (state: Stored | null) => Promise<Response>,
    optional = false,
  ): Promise<Response> {
    const state = optional ? await this.#ifSignedIn() : await this.#fresh();
    const res = await send(state);
    if (res.status !== 401 || !(await this.#curable(res, state, method))) return res;
    let next: Stored | null;
    try {
      next = await this.#refresh(state);
    } catch (err) {
      if (err instanceof PortcullisError) return res;
      throw err;
    }
    if ((this.mode === "token" && !next?.accessToken) || (optional && next === null)) return res;
    await res.body?.cancel().catch(() => undefined);
    if (optional && next?.user.id !== state?.user.id) throw sessionChanged();
    return send(next);
  }

  /**
   * Whether a 401 is one a refresh may cure: the gateway says the token is
   * no good (RFC 6750 `error="invalid_token"`: expired, revoked, signed by a
   * retired key). In cookie mode also a 401 `missing_token`: the browser
   * drops the access cookie when it expires, and then sends none: that
   * answer is always a small JSON problem document, or no body at all when
   * the request was a HEAD. Every other 401 with a bare challenge (a wrong code, link or
   * password; an origin's own) is handed back: no refresh cures those, and
   * sending them again would count twice. The body is read only when it is
   * JSON, at most `MAX_PROBLEM_BYTES` of it and for at most
   * `PROBLEM_READ_MS`.
   */
  async #curable(res: Response, sent: Stored | null, method: string): Promise<boolean> {
    const challenge = res.headers.get("www-authenticate") ?? "";
    if (!/^\s*bearer\b/i.test(challenge)) return false;
    const invalid = /\berror\s*=\s*"?invalid_token\b/i.test(challenge);
    if (this.mode === "token") return invalid && sent?.accessToken !== undefined;
    if (invalid) return true;
    if (/\berror\s*=/i.test(challenge)) return false;
    if (res.body === null) return method.toUpperCase() === "HEAD";
    const isJson = /^\s*application\/(?:[\w.-]+\+)?json\b/i.test(res.headers.get("content-type") ?? "");
    const stated = Number(res.headers.get("content-length") ?? 0);
    if (!isJson || stated > MAX_PROBLEM_BYTES) return false;
    return (await problemCode(res.clone())) === "missing_token";
  }

  /**
   * One refresh at a time, see the module doc. `seen` is the state the
   * caller found wanting: if the session has moved on since (another call,
   * another tab), the new one is the answer and nothing is sent.
   */
  #refresh(seen: Stored | null): Promise<Stored | null> {
    if (this.#inflight) return this.#inflight;
    const run = this.#exclusive(async () => {
      const current = await this.#load();
      if (current?.stamp !== seen?.stamp) return current;
      const newer = await this.#newest(current);
      if (newer !== null) {
        const handed = await this.#handoff(newer);
        if (handed) return handed;
        // It never came. In token mode our refresh token is spent: presenting it would end
        // the session. In cookie mode the browser sends the cookie the other tab got.
        if (this.mode === "token") return current;
      }
      return this.#rotate(current);
    });
    this.#inflight = run;
    const done = () => {
      if (this.#inflight === run) this.#inflight = null;
    };
    run.then(done, done);
    return run;
  }

  /** Runs `fn` holding the tabs' lock (where there are Web Locks). */
  #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    return this.#locks ? this.#locks.request(this.#name, () => fn()) : fn();
  }

  /** `POST /auth/refresh` (holding the lock). */
  async #rotate(current: Stored | null): Promise<Stored | null> {
    if (this.mode === "token" && !current?.refreshToken) return null;
    const res =
      this.mode === "token"
        ? await this.#fetch(this.#url("/refresh"), {
            method: "POST",
            headers: { accept: "application/json", "content-type": "application/json" },
            body: JSON.stringify({ refresh_token: current?.refreshToken }),
          })
        : await this.#fetch(this.#url("/refresh"), {
            method: "POST",
            headers: { accept: "application/json" },
            credentials: "include",
          });
    if (!res.ok) {
      const err = await PortcullisError.fromResponse(res, this.#now());
      if (endsSession(err) && (await this.#load())?.stamp === current?.stamp) await this.#clear(current);
      throw err;
    }
    const answer = await this.#read<AuthResponse>(res);
    return this.#keep(answer);
  }

  /** Stores the session of a sign-in or refresh answer and tells the other tabs. */
  async #keep(answer: AuthResponse): Promise<Stored> {
    if (!answer || typeof answer !== "object" || !answer.user || typeof answer.expires_in !== "number") {
      throw new TypeError("the gateway's sign-in answer is not an AuthResponse");
    }
    const now = this.#now();
    const state: Stored = {
      v: 1,
      stamp: newStamp(),
      obtainedAt: now,
      expiresAt: now + answer.expires_in * 1000,
      lifetime: answer.expires_in,
      user: answer.user,
    };
    if (this.mode === "token") {
      if (typeof answer.access_token !== "string" || typeof answer.refresh_token !== "string") {
        throw new TypeError(
          'the gateway sent no tokens: it runs in cookie mode (COOKIE_MODE=true); create the client with mode: "cookie"',
        );
      }
      state.accessToken = answer.access_token;
      state.refreshToken = answer.refresh_token;
    }
    await this.#storage.set(JSON.stringify(state));
    this.#post({ kind: "state", state });
    await this.#mark(state);
    await this.#emit();
    return state;
  }

  /**
   * Holds the lock named after `state` (releasing the one of the state before):
   * how other tabs learn, consistently with the refresh lock, that it exists.
   */
  async #mark(state: Stored): Promise<void> {
    const locks = this.#locks;
    if (!locks?.query) return;
    // The tab's own id last: a name of its own (an exclusive lock), even for a state another tab marks too.
    const name = `${this.#name} latest ${state.obtainedAt} ${state.user.session_id ?? "-"} ${state.stamp} ${this.#id}`;
    const previous = this.#unmark;
    await new Promise<void>((granted) => {
      void locks
        .request(name, () => new Promise<void>((release) => {
          this.#unmark = release;
          granted();
        }))
        .catch(() => granted());
    });
    previous?.();
  }

  /**
   * The stamp of the newest state a tab holds a mark for, if it is newer than
   * `current` (and, in token mode, of the same session: a tab signed in on its
   * own keeps its own); else `null`.
   */
  async #newest(current: Stored | null): Promise<string | null> {
    if (!this.#locks?.query) return null;
    // In cookie mode a page that knows of no session yet refreshes through the cookie: safe, and
    // what another tab's sign-in before this page existed would otherwise wait for in vain.
    if (current === null) return null;
    const prefix = `${this.#name} latest `;
    let best: { at: number; stamp: string } | null = null;
    const held = (await this.#locks.query().catch(() => ({ held: [] }))).held ?? [];
    for (const lock of held) {
      if (!lock.name?.startsWith(prefix)) continue;
      const [at, sid, stamp] = lock.name.slice(prefix.length).split(" ");
      const time = Number(at);
      if (!stamp || !Number.isFinite(time) || time <= current.obtainedAt || stamp === current.stamp) continue;
      if (this.mode === "token" && sid !== current.user.session_id) continue;
      if (best === null || time > best.at) best = { at: time, stamp };
    }
    return best?.stamp ?? null;
  }

  /** The state `stamp` another tab announced, once this tab has it (storage or channel), or `null` if it does not come. */
  async #handoff(stamp: string): Promise<Stored | null> {
    const now = await this.#load();
    if (now?.stamp === stamp) return now;
    if (!this.#channel) return null;
    return new Promise<Stored | null>((resolve) => {
      const done = (state: Stored | null) => {
        clearTimeout(timer);
        this.#waiting.delete(stamp);
        resolve(state);
      };
      // Not unref'd (Node): while a refresh waits, the process must not exit.
      const timer = setTimeout(() => done(null), HANDOFF_TIMEOUT_MS);
      this.#waiting.set(stamp, done);
    });
  }

  /** Forgets the session and tells the other tabs. */
  async #clear(state: Stored | null): Promise<void> {
    await this.#storage.remove();
    this.#unmark?.();
    this.#unmark = null;
    this.#post({ kind: "signed_out", sessionId: state?.user.session_id ?? null });
    await this.#emit();
  }

  #post(message: DistributiveOmit<TabMessage, "from">): void {
    try {
      this.#pinger?.postMessage({ ...message, from: this.#id });
    } catch {
      // A closed channel: other tabs find out from the storage or the gateway.
    }
  }

  /** A message from another tab. */
  async #receive(data: unknown): Promise<void> {
    if (!data || typeof data !== "object") return;
    const message = data as TabMessage;
    if (message.from === this.#id) return;
    const current = await this.#load();
    if (message.kind === "state") {
      const next = parseStored(JSON.stringify(message.state));
      if (next && next.stamp !== current?.stamp && this.#adopts(current, next)) {
        await this.#storage.set(JSON.stringify(next));
        // Holding its mark too, the state stays known to the tabs after the one that made it closes.
        await this.#mark(next);
      }
      const waiter = next && this.#waiting.get(next.stamp);
      if (waiter) {
        const now = await this.#load();
        if (now?.stamp === next?.stamp) waiter(now);
      }
    } else if (message.kind === "signed_out" && current) {
      const same = current.user.session_id !== null && current.user.session_id === message.sessionId;
      if (this.mode === "cookie" || same) {
        await this.#storage.remove();
        this.#unmark?.();
        this.#unmark = null;
      }
    }
    await this.#emit();
  }

  /**
   * Whether another tab's new session replaces ours. In token mode only a
   * newer state of the same session (a refresh of a session the tabs
   * share): a tab signed in on its own keeps its own. In cookie mode the
   * browser has one session per gateway, the cookies': any newer state.
   */
  #adopts(current: Stored | null, next: Stored): boolean {
    if (current && next.obtainedAt < current.obtainedAt) return false;
    if (this.mode === "cookie") return true;
    return current !== null && current.user.session_id !== null && current.user.session_id === next.user.session_id;
  }

  async #emit(): Promise<void> {
    const state = await this.#load();
    const stamp = state?.stamp ?? null;
    if (stamp === this.#emitted) return;
    this.#emitted = stamp;
    const v = state && view(state);
    for (const listener of [...this.#listeners]) {
      try {
        listener(v);
      } catch (err) {
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }
}

/** TOTP, backup codes and the second step of a sign-in (SPEC "Strong authentication"). */
export class MfaApi {
  readonly #client: PortcullisClient;
  readonly #signIn: SignInStep;
  /** Made by the client (`client.mfa`). */
  constructor(client: PortcullisClient, signIn: SignInStep) {
    this.#client = client;
    this.#signIn = signIn;
  }

  /** `POST /auth/mfa/totp/enroll`: a secret to show as a QR code (`otpauth_uri`); confirm it with a code. */
  enrollTotp(): Promise<TotpEnrollment> {
    return this.#client.request<TotpEnrollment>("POST", "/mfa/totp/enroll", { auth: true });
  }

  /** `POST /auth/mfa/totp/confirm`: turns TOTP on; answers the backup codes (show them once). */
  confirmTotp(code: string): Promise<BackupCodes> {
    return this.#client.request<BackupCodes>("POST", "/mfa/totp/confirm", { auth: true, body: { code } });
  }

  /** `DELETE /auth/mfa/totp` with a current code: turns TOTP off. */
  disableTotp(code: string): Promise<void> {
    return this.#client.request<void>("DELETE", "/mfa/totp", { auth: true, body: { code } });
  }

  /** `POST /auth/mfa/backup-codes`: new backup codes; the old ones die. */
  regenerateBackupCodes(code: string): Promise<BackupCodes> {
    return this.#client.request<BackupCodes>("POST", "/mfa/backup-codes", { auth: true, body: { code } });
  }

  /** `POST /auth/mfa/verify`: the second step after an {@link MfaRequired} answer. */
  verify(request: MfaVerifyRequest): Promise<SignInResult> {
    return this.#signIn("/mfa/verify", request);
  }
}

/**
 * Passkeys (SPEC "Strong authentication"). The WebAuthn ceremony is the
 * browser's: `PublicKeyCredential.parseCreationOptionsFromJSON(options)` /
 * `parseRequestOptionsFromJSON`, `navigator.credentials.create` / `get`,
 * then `credential.toJSON()` back here.
 */
export class PasskeysApi {
  readonly #client: PortcullisClient;
  readonly #signIn: SignInStep;
  /** Made by the client (`client.passkeys`). */
  constructor(client: PortcullisClient, signIn: SignInStep) {
    this.#client = client;
    this.#signIn = signIn;
  }

  /** `POST /auth/passkeys/register/options`. */
  registrationOptions(name?: string): Promise<CreationOptionsJSON> {
    return this.#client.request<CreationOptionsJSON>("POST", "/passkeys/register/options", {
      auth: true,
      body: name === undefined ? undefined : { name },
    });
  }

  /** `POST /auth/passkeys/register/verify` with the new credential. */
  register(credential: RegistrationResponseJSON): Promise<Passkey> {
    return this.#client.request<Passkey>("POST", "/passkeys/register/verify", { auth: true, body: { credential } });
  }

  /** `GET /auth/passkeys`: the account's passkeys. */
  async list(): Promise<Passkey[]> {
    return (await this.#client.request<{ passkeys: Passkey[] }>("GET", "/passkeys", { auth: true })).passkeys;
  }

  /** `PATCH /auth/passkeys/{id}`. */
  rename(id: string, name: string): Promise<Passkey> {
    return this.#client.request<Passkey>("PATCH", `/passkeys/${encodeURIComponent(id)}`, { auth: true, body: { name } });
  }

  /** `DELETE /auth/passkeys/{id}`. */
  remove(id: string): Promise<void> {
    return this.#client.request<void>("DELETE", `/passkeys/${encodeURIComponent(id)}`, { auth: true });
  }

  /** `POST /auth/passkeys/login/options` (an `email` narrows `allowCredentials`; without one, discoverable credentials). */
  loginOptions(email?: string): Promise<RequestOptionsJSON> {
    return this.#client.request<RequestOptionsJSON>("POST", "/passkeys/login/options", {
      body: email === undefined ? {} : { email },
    });
  }

  /** `POST /auth/passkeys/login/verify`: signs in with the assertion for `challengeId`. */
  signIn(challengeId: string, credential: AuthenticationResponseJSON): Promise<SignInResult> {
    return this.#signIn("/passkeys/login/verify", { challenge_id: challengeId, credential });
  }
}

function isMfaRequired(answer: AuthResponse | MfaRequired): answer is MfaRequired {
  return (answer as MfaRequired)?.mfa_required === true;
}

/** A refusal after which the session cannot be refreshed: forget it. */
function endsSession(err: PortcullisError): boolean {
  return err.status === 400 || err.status === 401 || err.status === 422 || (err.status === 403 && err.code === "account_banned");
}

function view(s: Stored): AuthState {
  return { user: s.user, expiresAt: s.expiresAt };
}

function parseStored(text: string | null): Stored | null {
  if (text === null) return null;
  try {
    const s = JSON.parse(text) as Partial<Stored>;
    const ok =
      s?.v === 1 &&
      typeof s.stamp === "string" &&
      typeof s.obtainedAt === "number" &&
      typeof s.expiresAt === "number" &&
      typeof s.lifetime === "number" &&
      !!s.user &&
      typeof s.user === "object" &&
      (s.accessToken === undefined || typeof s.accessToken === "string") &&
      (s.refreshToken === undefined || typeof s.refreshToken === "string");
    return ok ? (s as Stored) : null;
  } catch {
    return null;
  }
}

function newStamp(): string {
  const c = (globalThis as { crypto?: { randomUUID?: () => string } }).crypto;
  return c?.randomUUID ? c.randomUUID() : `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

/**
 * The origins `fetch` sends the session to: the gateway's — `base`'s, or
 * the page's (`pageHref`) for a relative `base`; none if neither gives one —
 * and `extra`, each of which must be an origin (`scheme://host[:port]`).
 */
function sessionOrigins(base: string, pageHref: string | undefined, extra: readonly string[]): Set<string> {
  const origins = new Set<string>();
  try {
    const gateway = new URL(base || "/", pageHref).origin;
    if (gateway !== "null") origins.add(gateway);
  } catch {
    // A relative base and no page (not a browser): only the listed origins.
  }
  if (!Array.isArray(extra)) throw new TypeError("tokenOrigins must be an array of origins");
  for (const entry of extra) {
    let url: URL | null = null;
    try {
      url = new URL(String(entry));
    } catch {
      url = null;
    }
    const bare = url !== null && url.pathname === "/" && !url.search && !url.hash && !url.username && !url.password;
    const web = url !== null && (url.protocol === "https:" || url.protocol === "http:");
    // A wildcard is no pattern here: `https://*.example.com` would be taken as a host of that name.
    if (url === null || url.origin === "null" || !bare || !web || String(entry).includes("*")) {
      throw new TypeError(`tokenOrigins: ${JSON.stringify(entry)} is not an origin (http(s)://host[:port], no wildcard)`);
    }
    origins.add(url.origin);
  }
  return origins;
}

/** The client's refusal to send an `auth: "if-signed-in"` call once its session is gone or another's. */
function sessionChanged(): PortcullisError {
  return new PortcullisError({
    status: 0,
    code: SESSION_CHANGED,
    title: "Session changed",
    detail: "the session ended or became another account's while the call waited; nothing was sent",
  });
}

/** A channel, or `null` where none can be made (no BroadcastChannel, an opaque origin). */
function open(make: ((name: string) => BroadcastChannelLike) | null, name: string): BroadcastChannelLike | null {
  try {
    return make ? make(name) : null;
  } catch {
    return null;
  }
}

/** Node's channels would keep a process alive; browsers have no `unref`. */
function unref(handle: unknown): void {
  (handle as { unref?: () => void } | null)?.unref?.();
}
