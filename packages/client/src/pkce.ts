/**
 * PKCE (RFC 7636, S256) for the hosted pages' one-time code: the app keeps
 * the verifier (e.g. in `sessionStorage`) and passes the challenge with
 * `redirect_to`; only the browser holding the verifier can swap the code.
 */

/** A fresh PKCE pair. */
export interface CodeChallengePair {
  /** Kept by the app, sent to `POST /auth/oauth/exchange` as `code_verifier`. */
  verifier: string;
  /** Passed to the hosted pages as `code_challenge`: base64url SHA-256 of the verifier. */
  challenge: string;
}

function base64url(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** A random verifier (32 bytes, 43 characters) and its S256 challenge (Web Crypto). */
export async function createCodeChallenge(): Promise<CodeChallengePair> {
  const verifier = base64url(crypto.getRandomValues(new Uint8Array(32)));
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  return { verifier, challenge: base64url(new Uint8Array(digest)) };
}
