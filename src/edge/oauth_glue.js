// OAuth / OIDC plumbing in JavaScript for the same reason as glue.js: one
// boundary crossing per provider call or signature check. Rust decides what
// to send and what the answer means; these functions only move bytes.

/**
 * Sends one request to a provider and resolves to {status, body} with at most
 * `maxBytes` of body text; rejects on a network error, a larger body, or no
 * complete answer within `timeoutMs` (message "timed out"). `headers` is
 * "name\nvalue\nname\nvalue..."; redirects are returned, not followed.
 */
export async function providerFetch(method, url, headers, body, timeoutMs, maxBytes) {
  const h = new Headers();
  if (headers) {
    const kv = headers.split("\n");
    for (let i = 0; i + 1 < kv.length; i += 2) h.append(kv[i], kv[i + 1]);
  }
  if (body !== undefined && body !== null) h.set("content-type", "application/x-www-form-urlencoded");
  const controller = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort();
  }, timeoutMs);
  try {
    const resp = await fetch(url, { method, headers: h, body: body ?? undefined, redirect: "manual", signal: controller.signal });
    const chunks = [];
    let size = 0;
    if (resp.body) {
      const reader = resp.body.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        size += value.byteLength;
        if (size > maxBytes) {
          controller.abort();
          throw new Error(`reply larger than ${maxBytes} bytes`);
        }
        chunks.push(value);
      }
    }
    const all = new Uint8Array(size);
    let at = 0;
    for (const c of chunks) {
      all.set(c, at);
      at += c.byteLength;
    }
    return { status: resp.status, body: new TextDecoder().decode(all) };
  } catch (err) {
    throw new Error(timedOut ? "timed out" : (err && err.message) || String(err));
  } finally {
    clearTimeout(timer);
  }
}

// WebCrypto parameters per JOSE alg: [importKey algorithm, verify algorithm].
const ALGS = {
  RS256: [{ name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" }, { name: "RSASSA-PKCS1-v1_5" }],
  ES256: [{ name: "ECDSA", namedCurve: "P-256" }, { name: "ECDSA", hash: "SHA-256" }],
  EdDSA: [{ name: "Ed25519" }, { name: "Ed25519" }],
};

/**
 * Verifies a JWS signature with a public JWK through WebCrypto. Only the
 * public members of the JWK are imported. Resolves to false for a bad
 * signature or a key WebCrypto will not import.
 */
export async function verifyJws(alg, jwkJson, signed, signature) {
  const params = ALGS[alg];
  if (!params) return false;
  const jwk = JSON.parse(jwkJson);
  const pub = { kty: jwk.kty };
  for (const k of ["n", "e", "crv", "x", "y"]) if (typeof jwk[k] === "string") pub[k] = jwk[k];
  let key;
  try {
    key = await crypto.subtle.importKey("jwk", pub, params[0], false, ["verify"]);
  } catch (err) {
    console.error(`portcullis.oauth unusable provider key: ${err && err.message}`);
    return false;
  }
  return crypto.subtle.verify(params[1], key, signature, signed);
}
