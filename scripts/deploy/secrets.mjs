// The Worker's secrets, as `npm run deploy` sees them: which ones a
// configuration needs, which ones it generates, and how.
//
// This mirrors what src/core reads as secrets (config.rs, mail.rs,
// oauth/config.rs); tests/deploy/secrets.test.mjs fails when a secret-like
// name appears in src/core that this table does not know.
import crypto from "node:crypto";

/** `KEY_ENCRYPTION_KEY`: base64 of 32 random bytes. */
export const newKek = () => crypto.randomBytes(32).toString("base64");
/** A Standard Webhooks secret: `whsec_` + base64 of 32 random bytes. */
export const newWhsec = () => `whsec_${crypto.randomBytes(32).toString("base64")}`;

/** The secret name of OAuth provider `id` (src/core/oauth/config.rs `secret_name`). */
export const oauthSecretName = (id) => `OAUTH_${String(id).toUpperCase().replaceAll("-", "_")}_CLIENT_SECRET`;

/** Names the Worker reads as secrets whatever the configuration. */
export const FIXED_SECRETS = ["KEY_ENCRYPTION_KEY", "WEBHOOK_SECRET", "HOOK_SECRET", "EMAIL_API_KEY", "INTROSPECTION_SECRET"];

/** Whether `name` is one of the Worker's secrets (so it must never sit in [vars]). */
export function isSecretName(name) {
  return FIXED_SECRETS.includes(name) || /^OAUTH_[A-Z0-9_]+_CLIENT_SECRET$/.test(name);
}

/** Email transports that need no API key (`log` prints, `cloudflare` uses the `send_email` binding). */
const KEYLESS_TRANSPORTS = new Set(["log", "cloudflare"]);

const set = (vars, name) => typeof vars[name] === "string" && vars[name].trim() !== "";

/**
 * The secrets configuration `vars` asks for, in a stable order:
 * `[{name, generate, required, why}]`. `generate` names the generator
 * (`kek`, `whsec`) for secrets `npm run deploy` makes itself, or is null for
 * the operator's own (API keys, client secrets). `required`: the Worker
 * refuses to start without it; an optional one is set when it is provided.
 * `available(name)` says whether a secret will exist anyway (already on the
 * Worker, or provided): HOOK_URL needs WEBHOOK_SECRET only without HOOK_SECRET.
 */
export function neededSecrets(vars, available = () => false) {
  const out = [{ name: "KEY_ENCRYPTION_KEY", generate: "kek", required: true, why: "encrypts the signing keys at rest" }];
  const hookWithoutOwnSecret = set(vars, "HOOK_URL") && !available("HOOK_SECRET");
  if (set(vars, "WEBHOOK_URLS") || hookWithoutOwnSecret) {
    out.push({
      name: "WEBHOOK_SECRET",
      generate: "whsec",
      required: true,
      why: set(vars, "WEBHOOK_URLS") ? "signs the deliveries to WEBHOOK_URLS" : "signs the sign-in hook's requests to HOOK_URL",
    });
  }
  if (set(vars, "HOOK_URL")) {
    out.push({ name: "HOOK_SECRET", generate: null, required: false, why: "signs the sign-in hook's requests instead of WEBHOOK_SECRET" });
  }
  const transport = set(vars, "EMAIL_TRANSPORT") ? vars.EMAIL_TRANSPORT.trim() : "log";
  if (!KEYLESS_TRANSPORTS.has(transport)) {
    out.push({ name: "EMAIL_API_KEY", generate: null, required: true, why: `the key of the ${transport} email API` });
  }
  // Optional, and asked for by no var: set when given (introspection stays disabled without it).
  if (available("INTROSPECTION_SECRET")) {
    out.push({ name: "INTROSPECTION_SECRET", generate: null, required: false, why: "enables POST /auth/introspect for callers that present it" });
  }
  for (const p of oauthProviders(vars.OAUTH_PROVIDERS)) {
    out.push({
      name: oauthSecretName(p.id),
      generate: null,
      required: p.preset === "github",
      why: `the client secret of OAuth provider ${p.id}${p.preset === "github" ? ", which GitHub requires" : ""}`,
    });
  }
  return out;
}

/** `OAUTH_PROVIDERS`' entries with a string id; anything unparsable is left to the Worker's own check. */
function oauthProviders(raw) {
  if (typeof raw !== "string" || raw.trim() === "") return [];
  try {
    const list = JSON.parse(raw);
    return Array.isArray(list) ? list.filter((p) => p && typeof p.id === "string" && p.id.trim() !== "").map((p) => ({ id: p.id.trim(), preset: p.preset })) : [];
  } catch {
    return [];
  }
}

/** A fresh value for generator `kind`. */
export function generate(kind) {
  if (kind === "kek") return newKek();
  if (kind === "whsec") return newWhsec();
  throw new Error(`unknown secret generator ${kind}`);
}

/**
 * A stand-in value of the right shape, for running the Worker locally to
 * check a configuration (never deployed).
 */
export function placeholder(name, kind) {
  if (kind) return generate(kind);
  if (name === "HOOK_SECRET") return newWhsec();
  return `placeholder-${crypto.randomBytes(12).toString("hex")}`;
}
