// ID-token signatures for OAuth / OIDC, in JavaScript for the same reason as
// glue.js: one boundary crossing per check. Provider calls go through
// outbound.js like every other outbound request.

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
