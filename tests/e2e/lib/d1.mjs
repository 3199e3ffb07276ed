// Test-side access to a gateway's local state: run SQL against its D1 (the
// SQLite file under its --persist-to directory), and mint tokens with its real signing key (decrypted with the
// KEY_ENCRYPTION_KEY from .dev.vars, exactly as the Worker does), so tests can
// forge expired, mis-addressed or otherwise hostile tokens that still carry a
// valid signature.
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { DatabaseSync } from "node:sqlite";
import { SignJWT, importJWK } from "jose";
import { ROOT } from "../harness.mjs";

/** Where wrangler keeps the local D1 database under a `--persist-to` directory. */
const D1_DIR = path.join("v3", "d1", "miniflare-D1DatabaseObject");

/** How long a statement waits for the running Worker's write to finish. */
const BUSY_TIMEOUT_MS = 10_000;

/** The gateway's local D1 file (the one database besides the metadata). */
function databaseFile(gw) {
  const dir = path.join(gw.persistDir, D1_DIR);
  const files = fs.readdirSync(dir).filter((f) => f.endsWith(".sqlite") && f !== "metadata.sqlite");
  if (files.length !== 1) throw new Error(`expected one D1 database in ${dir}, found ${files.length}`);
  return path.join(dir, files[0]);
}

/**
 * The statements of `sql`, split at semicolons outside quotes (the test
 * SQL here has no triggers or other nested semicolons).
 */
function statements(sql) {
  const out = [];
  let start = 0;
  let quote = null;
  for (let i = 0; i < sql.length; i++) {
    const c = sql[i];
    if (quote) {
      if (c === quote) quote = null;
    } else if (c === "'" || c === '"') {
      quote = c;
    } else if (c === ";") {
      out.push(sql.slice(start, i));
      start = i + 1;
    }
  }
  out.push(sql.slice(start));
  return out.map((s) => s.trim()).filter(Boolean);
}

/**
 * Runs `sql` against the gateway's local D1 and returns the rows of every
 * statement. It opens the same SQLite file the running Worker uses (WAL mode:
 * reads never wait; a write waits up to BUSY_TIMEOUT_MS for the Worker's own
 * write to finish, where a second runtime process would fail at once with
 * SQLITE_BUSY). Foreign keys are enforced, as D1 does.
 */
export async function d1(gw, sql) {
  const db = new DatabaseSync(databaseFile(gw), { timeout: BUSY_TIMEOUT_MS, enableForeignKeyConstraints: true });
  try {
    return statements(sql).flatMap((stmt) => db.prepare(stmt).all().map((row) => ({ ...row })));
  } finally {
    db.close();
  }
}

/**
 * Runs `sql` against the gateway's local D1 as one script, returning
 * nothing: for DDL whose statements hold semicolons of their own (a
 * trigger's `BEGIN … END`), which `d1` would split.
 */
export async function d1Script(gw, sql) {
  const db = new DatabaseSync(databaseFile(gw), { timeout: BUSY_TIMEOUT_MS, enableForeignKeyConstraints: true });
  try {
    db.exec(sql);
  } finally {
    db.close();
  }
}

/** Single-quotes a SQL string literal. */
export const sqlText = (s) => `'${String(s).replaceAll("'", "''")}'`;

/** Gives `email` the role `role` (takes effect at the user's next sign-in). */
export async function grantRole(gw, email, role) {
  await d1(gw, `INSERT OR IGNORE INTO user_roles (user_id, role, created_at) SELECT id, ${sqlText(role)}, 0 FROM users WHERE email = ${sqlText(email)}`);
}

function devVar(name) {
  const text = fs.readFileSync(path.join(ROOT, ".dev.vars"), "utf8");
  const m = text.match(new RegExp(`^${name}=(.*)$`, "m"));
  if (!m) throw new Error(`${name} not in .dev.vars`);
  return m[1].trim().replace(/^"|"$/g, "");
}

/**
 * The gateway's active signing key — or, with `kid`, that stored key (say a retired
 * one) — as { kid, alg, privateKey (jose KeyLike), jwk }: Ed25519 or P-256.
 */
export async function signingKey(gw, { kid } = {}) {
  const where = kid === undefined ? "status = 'active'" : `kid = ${sqlText(kid)}`;
  const [row] = await d1(gw, `SELECT kid, alg, public_key, private_enc FROM signing_keys WHERE ${where}`);
  if (!row) throw new Error(kid === undefined ? "no active signing key yet (sign somebody up first)" : `no key ${kid}`);
  const kek = Buffer.from(devVar("KEY_ENCRYPTION_KEY"), "base64");
  const blob = Buffer.from(row.private_enc, "base64url");
  const nonce = blob.subarray(0, 12);
  const tag = blob.subarray(blob.length - 16);
  const ct = blob.subarray(12, blob.length - 16);
  const decipher = crypto.createDecipheriv("aes-256-gcm", kek, nonce);
  decipher.setAAD(Buffer.from(row.kid));
  decipher.setAuthTag(tag);
  const secret = Buffer.concat([decipher.update(ct), decipher.final()]).toString("base64url");
  // P-256's public key is stored as the uncompressed SEC1 point 04 ‖ x ‖ y.
  const point = Buffer.from(row.public_key, "base64url");
  const jwk = row.alg === "ES256"
    ? { kty: "EC", crv: "P-256", x: point.subarray(1, 33).toString("base64url"), y: point.subarray(33).toString("base64url"), d: secret }
    : { kty: "OKP", crv: "Ed25519", x: row.public_key, d: secret };
  return { kid: row.kid, alg: row.alg, privateKey: await importJWK(jwk, row.alg), jwk };
}

/**
 * Signs `claims` with the gateway's key. `header` overrides the protected header
 * (default: the key's alg, typ at+jwt, kid = the key's).
 */
export async function mint(key, claims, header = {}) {
  return new SignJWT(claims).setProtectedHeader({ alg: key.alg ?? "EdDSA", typ: "at+jwt", kid: key.kid, ...header }).sign(key.privateKey);
}

/** Claims like the gateway's own for `user` (an AuthResponse.user), valid now. */
export function claimsFor(gw, user, overrides = {}) {
  const now = Math.floor(Date.now() / 1000);
  return {
    iss: gw.url, aud: "portcullis", sub: user.id, sid: user.session_id, roles: user.roles ?? [],
    email: user.email, email_verified: !!user.email_verified, iat: now, exp: now + 600, jti: crypto.randomUUID(),
    ...overrides,
  };
}
