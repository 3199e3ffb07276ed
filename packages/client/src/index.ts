/**
 * `@portcullis/client`: the browser client of the Portcullis auth gateway.
 * The admin API is in `@portcullis/client/admin`.
 */
export {
  PortcullisClient,
  MfaApi,
  PasskeysApi,
  type AuthState,
  type BroadcastChannelLike,
  type ClientOptions,
  type FetchLike,
  type LockManagerLike,
  type Mode,
  type RequestOptions,
} from "./client.js";
export { PortcullisError, isPortcullisError, parseRetryAfter, SESSION_CHANGED, UNEXPECTED_RESPONSE, type Problem } from "./errors.js";
export { createCodeChallenge, type CodeChallengePair } from "./pkce.js";
export { memoryStorage, webStorage, type TokenStorage, type WebStorageLike } from "./storage.js";
export type * from "./types.js";
