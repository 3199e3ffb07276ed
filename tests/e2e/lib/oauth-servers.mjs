// Providers for the OAuth e2e tests, all on loopback:
//  - a real OpenID provider (the certified `oidc-provider` package), whose
//    login and consent are finished programmatically for the account the test
//    chooses;
//  - a small hand-made OIDC server that hands out ID tokens the test forges
//    (wrong audience, bad signature, other nonce, ...), checking PKCE itself;
//  - a server speaking GitHub's documented OAuth app API.
// Plus a tiny "browser" that follows the provider's redirects with a cookie jar.
import http from "node:http";
import crypto from "node:crypto";
import Provider from "oidc-provider";
import * as jose from "jose";

function listen(server, port = 0) {
  return new Promise((resolve) => server.listen(port, "127.0.0.1", () => resolve(server.address().port)));
}

function close(server) {
  return new Promise((resolve) => {
    server.closeAllConnections?.();
    server.close(() => resolve());
  });
}

async function readForm(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return new URLSearchParams(Buffer.concat(chunks).toString("utf8"));
}

function sendJson(res, status, body) {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
}

const s256 = (verifier) => crypto.createHash("sha256").update(verifier).digest("base64url");

/**
 * A real OpenID provider, in two steps so that neither side needs a port
 * chosen in advance: `listenOidcProvider()` binds a port of the OS's choosing
 * (its issuer URL is then known), and `op.configure(...)` sets it up with one
 * confidential client whose only redirect URI is `redirectUri`, PKCE
 * required. `accounts` maps account ids to claims; set `op.nextLogin` to the
 * account the next interaction signs in as (or "deny" to refuse).
 */
export async function listenOidcProvider() {
  let handler = (req, res) => {
    res.statusCode = 503;
    res.end("not configured yet");
  };
  const server = http.createServer((req, res) => handler(req, res));
  const port = await listen(server);
  const issuer = `http://127.0.0.1:${port}`;
  const accounts = new Map();
  const op = { issuer, accounts, nextLogin: null, close: () => close(server) };
  op.configure = ({ redirectUri, clientId, clientSecret }) => {
    handler = oidcHandler(op, { redirectUri, clientId, clientSecret });
  };
  return op;
}

function oidcHandler(op, { redirectUri, clientId, clientSecret }) {
  const { issuer, accounts } = op;
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: clientId,
        client_secret: clientSecret,
        redirect_uris: [redirectUri],
        response_types: ["code"],
        grant_types: ["authorization_code"],
        token_endpoint_auth_method: "client_secret_basic",
      },
    ],
    pkce: { required: () => true },
    features: { devInteractions: { enabled: false } },
    claims: { openid: ["sub"], email: ["email", "email_verified"], profile: ["name", "locale"] },
    cookies: { keys: ["portcullis-e2e-cookie-key-0123456789"] },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    findAccount: async (ctx, id) =>
      accounts.has(id) ? { accountId: id, claims: async () => ({ sub: id, ...accounts.get(id) }) } : undefined,
  });
  const callback = provider.callback();
  return async (req, res) => {
    if (!req.url.startsWith("/interaction/")) return callback(req, res);
    try {
      const details = await provider.interactionDetails(req, res);
      const accountId = op.nextLogin;
      if (accountId === "deny") {
        await provider.interactionFinished(req, res, { error: "access_denied", error_description: "refused" }, { mergeWithLastSubmission: false });
        return;
      }
      const grant = new provider.Grant({ accountId, clientId: details.params.client_id });
      grant.addOIDCScope(details.params.scope);
      const grantId = await grant.save();
      await provider.interactionFinished(req, res, { login: { accountId }, consent: { grantId } }, { mergeWithLastSubmission: false });
    } catch (err) {
      res.statusCode = 500;
      res.end(String(err?.stack ?? err));
    }
  };
}

/**
 * A hand-made OIDC provider: discovery, a JWKS with an RS256, an ES256 and an
 * Ed25519 key, and a token endpoint that checks PKCE (S256) against the
 * challenge the browser brought to /authorize, then answers with the ID token
 * `fake.forge({nonce, ...})` returns — or with what `fake.tokenReply` says.
 */
export async function startFakeOidc({ clientId }) {
  const server = http.createServer();
  const port = await listen(server);
  const issuer = `http://127.0.0.1:${port}`;
  const keys = {};
  for (const [alg, opts] of [["RS256", {}], ["ES256", {}], ["EdDSA", { crv: "Ed25519" }]]) {
    const { publicKey, privateKey } = await jose.generateKeyPair(alg, { ...opts, extractable: true });
    const jwk = await jose.exportJWK(publicKey);
    keys[alg] = { kid: `k-${alg.toLowerCase()}`, privateKey, jwk: { ...jwk, kid: `k-${alg.toLowerCase()}`, use: "sig" } };
  }
  const other = await jose.generateKeyPair("RS256", { extractable: true }); // never published
  const codes = new Map(); // code -> { challenge, nonce }
  const fake = {
    issuer,
    clientId,
    keys,
    otherKey: other.privateKey,
    tokenRequests: [],
    tokenReply: null, // null: normal; {status, body}: forced reply
    forge: null, // async ({nonce, issuer, clientId, keys}) => id_token
    /** Registers the authorization the test "approved": returns a code. */
    approve(authorizeUrl) {
      const u = new URL(authorizeUrl);
      const code = crypto.randomBytes(16).toString("hex");
      codes.set(code, { challenge: u.searchParams.get("code_challenge"), nonce: u.searchParams.get("nonce") });
      return { code, state: u.searchParams.get("state"), nonce: u.searchParams.get("nonce") };
    },
    /** A signed ID token with sensible claims, overridden by `claims`. */
    async sign({ alg = "RS256", nonce, claims = {}, header = {}, key }) {
      const now = Math.floor(Date.now() / 1000);
      return new jose.SignJWT({ sub: "rogue-subject", email: "rogue@example.com", email_verified: true, nonce, ...claims })
        .setProtectedHeader({ alg, kid: keys[alg]?.kid, ...header })
        .setIssuer(claims.iss ?? issuer)
        .setAudience(claims.aud ?? clientId)
        .setIssuedAt(claims.iat ?? now)
        .setExpirationTime(claims.exp ?? now + 300)
        .sign(key ?? keys[alg].privateKey);
    },
    close: () => close(server),
  };
  server.on("request", async (req, res) => {
    const url = new URL(req.url, issuer);
    if (url.pathname === "/.well-known/openid-configuration") {
      return sendJson(res, 200, {
        issuer,
        authorization_endpoint: `${issuer}/authorize`,
        token_endpoint: `${issuer}/token`,
        jwks_uri: `${issuer}/jwks`,
        response_types_supported: ["code"],
        subject_types_supported: ["public"],
        id_token_signing_alg_values_supported: ["RS256", "ES256", "EdDSA"],
      });
    }
    if (url.pathname === "/jwks") return sendJson(res, 200, { keys: Object.values(keys).map((k) => k.jwk) });
    if (url.pathname === "/token" && req.method === "POST") {
      const form = await readForm(req);
      fake.tokenRequests.push(Object.fromEntries(form));
      if (fake.tokenReply) return sendJson(res, fake.tokenReply.status, fake.tokenReply.body);
      const grant = codes.get(form.get("code"));
      codes.delete(form.get("code"));
      if (!grant || form.get("client_id") !== clientId) return sendJson(res, 400, { error: "invalid_grant" });
      if (s256(form.get("code_verifier") ?? "") !== grant.challenge) {
        return sendJson(res, 400, { error: "invalid_grant", error_description: "PKCE verification failed" });
      }
      const idToken = await fake.forge({ nonce: grant.nonce });
      return sendJson(res, 200, { access_token: "rogue-at", token_type: "Bearer", id_token: idToken });
    }
    sendJson(res, 404, { error: "not_found" });
  });
  return fake;
}

/**
 * GitHub's OAuth app endpoints (`/login/oauth/access_token` with
 * `Accept: application/json`, `GET /user`, `GET /user/emails`), serving the
 * user that `gh.approve(authorizeUrl, user)` registered. Checks the client
 * secret and PKCE; a bad code gets GitHub's 200 `{"error": "bad_verification_code"}`.
 */
export async function startFakeGithub({ clientId, clientSecret }) {
  const server = http.createServer();
  const port = await listen(server);
  const base = `http://127.0.0.1:${port}`;
  const codes = new Map();
  const tokens = new Map();
  const gh = {
    base,
    requests: [],
    approve(authorizeUrl, user) {
      const u = new URL(authorizeUrl);
      const code = crypto.randomBytes(10).toString("hex");
      codes.set(code, { user, challenge: u.searchParams.get("code_challenge") });
      return { code, state: u.searchParams.get("state") };
    },
    close: () => close(server),
  };
  server.on("request", async (req, res) => {
    const url = new URL(req.url, base);
    gh.requests.push(`${req.method} ${url.pathname}`);
    if (url.pathname === "/login/oauth/access_token" && req.method === "POST") {
      const form = await readForm(req);
      const grant = codes.get(form.get("code"));
      codes.delete(form.get("code"));
      if (form.get("client_id") !== clientId || form.get("client_secret") !== clientSecret) {
        return sendJson(res, 200, { error: "incorrect_client_credentials" });
      }
      if (!grant || s256(form.get("code_verifier") ?? "") !== grant.challenge) {
        return sendJson(res, 200, { error: "bad_verification_code" });
      }
      const at = `gho_${crypto.randomBytes(12).toString("hex")}`;
      tokens.set(at, grant.user);
      return sendJson(res, 200, { access_token: at, token_type: "bearer", scope: "read:user,user:email" });
    }
    const user = tokens.get((req.headers.authorization ?? "").replace(/^Bearer /, ""));
    if (!user) return sendJson(res, 401, { message: "Bad credentials" });
    if (!req.headers["user-agent"]) return sendJson(res, 403, { message: "User-Agent required" });
    if (url.pathname === "/user") return sendJson(res, 200, { id: user.id, login: user.login, name: user.name, avatar_url: null });
    if (url.pathname === "/user/emails") return sendJson(res, 200, user.emails);
    sendJson(res, 404, { message: "Not Found" });
  });
  return gh;
}

/**
 * Follows redirects from `url` with a cookie jar until one points at
 * `stopPrefix` (our callback); returns that URL.
 */
export async function browse(url, stopPrefix, jar = new Map()) {
  for (let i = 0; i < 20; i++) {
    if (url.startsWith(stopPrefix)) return url;
    const cookie = [...jar].map(([k, v]) => `${k}=${v}`).join("; ");
    const res = await fetch(url, { redirect: "manual", headers: cookie ? { cookie } : {} });
    for (const sc of res.headers.getSetCookie()) {
      const [pair] = sc.split(";");
      const eq = pair.indexOf("=");
      jar.set(pair.slice(0, eq).trim(), pair.slice(eq + 1));
    }
    const loc = res.headers.get("location");
    if (!loc || res.status < 300 || res.status >= 400) {
      throw new Error(`browse: ${url} answered ${res.status} without a redirect: ${(await res.text()).slice(0, 500)}`);
    }
    await res.arrayBuffer().catch(() => {});
    url = new URL(loc, url).toString();
  }
  throw new Error("browse: too many redirects");
}
