// `npm start -- [wrangler dev args]`: local Portcullis.
//   1. applies the D1 migrations into the local state (--persist-to DIR, default .wrangler/state)
//   2. starts the demo origin on 127.0.0.1:8790 (env DEMO_ORIGIN_PORT overrides; then
//      ORIGIN_URL is pointed at that port too, unless you pass it with --var yourself); it
//      verifies the gateway's signed assertion with packages/origin-node and echoes what
//      it proves (`verified`)
//   2b. points the emails' links at the gateway's hosted pages (/auth/ui/magic-link,
//      /auth/ui/reset, /auth/ui/verify-email), unless you pass them or UI_ENABLED:false;
//      the magic-link page only in cookie mode (COOKIE_MODE:true): in token mode it has no
//      app to hand the tokens to, so the link is the API's GET /auth/magic-link/verify
//   2c. turns passkeys on for the gateway's page at http://localhost:PORT (RP_ID localhost;
//      WebAuthn needs a secure context, which localhost is), unless you pass RP_ID
//   3. runs `wrangler dev --ip 127.0.0.1 --port PORT --persist-to DIR ...your args`
// Every argument other than --port/--ip/--persist-to is passed to `wrangler dev` as is
// (e.g. --var ACCESS_TTL:60, --test-scheduled). Runs under Node 22 (scripts/run.sh).
import { spawn } from "node:child_process";
import path from "node:path";
import fs from "node:fs";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { isMain, startOrigin } from "../demo/origin.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const WRANGLER = path.join(ROOT, "node_modules", "wrangler", "bin", "wrangler.js");

function parseArgs(argv) {
  const opts = { port: "8787", ip: "127.0.0.1", persistTo: ".wrangler/state", rest: [] };
  const take = { "--port": "port", "--ip": "ip", "--persist-to": "persistTo" };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const eq = a.indexOf("=");
    const flag = eq > 0 ? a.slice(0, eq) : a;
    if (flag in take) {
      if (eq > 0) opts[take[flag]] = a.slice(eq + 1);
      else if (i + 1 < argv.length) opts[take[flag]] = argv[++i];
      else throw new Error(`${flag} needs a value`);
    } else {
      opts.rest.push(a);
    }
  }
  return opts;
}

// The var in wrangler.toml that names the demo origin (its default port).
const DEMO_ORIGIN_DEFAULT_PORT = 8790;
// The emails' link bases: the hosted pages that take each token, on the gateway.
const PAGE_VARS = { MAGIC_LINK_URL: "/magic-link", PASSWORD_RESET_URL: "/reset", EMAIL_VERIFY_URL: "/verify-email" };

/**
 * `--var` arguments pointing ORIGIN_URL at the demo origin on `port` (when it is not the
 * default), the email links at the hosted pages of the gateway at `gateway` (unless
 * UI_ENABLED is false), and passkeys at http://localhost on the gateway's port; vars the
 * user passes stay theirs. The magic-link page signs in only where it can hand the session
 * over without an app: in cookie mode without body tokens (docs/hosted-pages.md, "Emailed
 * links"); otherwise the link is the API's `GET …/magic-link/verify`, which uses nothing and
 * says to POST the token.
 */
export function startVars(port, gateway, rest) {
  const given = (name) => givenVar(name, rest) !== undefined;
  const out = [];
  if (port !== DEMO_ORIGIN_DEFAULT_PORT && !given("ORIGIN_URL")) out.push("--var", `ORIGIN_URL:http://127.0.0.1:${port}`);
  if (givenVar("UI_ENABLED", rest) !== "false") {
    const api = `${gateway}${givenVar("AUTH_PREFIX", rest) ?? "/auth"}`;
    const pageSignsIn = givenVar("COOKIE_MODE", rest) === "true" && givenVar("COOKIE_MODE_BODY_TOKENS", rest) !== "true";
    for (const [name, p] of Object.entries(PAGE_VARS)) {
      if (given(name)) continue;
      const url = name === "MAGIC_LINK_URL" && !pageSignsIn ? `${api}/magic-link/verify` : `${api}/ui${p}`;
      out.push("--var", `${name}:${url}`);
    }
  }
  if (!given("RP_ID")) {
    out.push("--var", "RP_ID:localhost");
    if (!given("RP_ORIGINS")) out.push("--var", `RP_ORIGINS:http://localhost:${new URL(gateway).port}`);
  }
  return out;
}

/** The value of `--var NAME:value` among the user's arguments, if given. */
function givenVar(name, rest) {
  for (let i = 0; i < rest.length; i++) {
    const v = rest[i] === "--var" ? rest[i + 1] : rest[i].startsWith("--var=") ? rest[i].slice(6) : null;
    if (v && v.startsWith(`${name}:`)) return v.slice(name.length + 1);
  }
  return undefined;
}

function log(msg) {
  console.log(`[start] ${msg}`);
}

function run(cmd, args, env) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: ROOT, env, stdio: "inherit" });
    child.on("error", reject);
    child.on("exit", (code, signal) =>
      code === 0 ? resolve() : reject(new Error(`${path.basename(args[0] ?? cmd)} ${args.slice(1).join(" ")} failed (${signal ?? code})`)),
    );
  });
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const persistTo = path.resolve(ROOT, opts.persistTo);
  fs.mkdirSync(persistTo, { recursive: true });

  const env = {
    ...process.env,
    // Node 22 (the one running this script) first, for wrangler and its children.
    PATH: [path.dirname(process.execPath), path.join(ROOT, "node_modules", ".bin"), process.env.PATH].join(path.delimiter),
    WRANGLER_SEND_METRICS: "false",
  };

  log(`applying D1 migrations into ${path.relative(ROOT, persistTo) || "."}`);
  // CI=true: wrangler answers its own "apply these migrations?" prompt with yes.
  await run(process.execPath, [WRANGLER, "d1", "migrations", "apply", "DB", "--local", "--persist-to", persistTo], {
    ...env,
    CI: "true",
  });

  const requested = process.env.DEMO_ORIGIN_PORT ?? "";
  const originPort = requested.trim() === "" ? DEMO_ORIGIN_DEFAULT_PORT : Number(requested);
  if (!Number.isInteger(originPort) || originPort < 0 || originPort > 65535) {
    throw new Error(`DEMO_ORIGIN_PORT must be a port number (0 picks a free one), not "${requested}"`);
  }
  // The demo origin verifies the gateway's assertion with @portcullis/origin-node:
  // issued by the gateway (its ISSUER, else the URL it is reached at) for this origin.
  const gateway = `http://${opts.ip}:${opts.port}`;
  const issuer = givenVar("ISSUER", opts.rest) ?? gateway;
  let origin = null;
  try {
    origin = await startOrigin({ port: originPort });
    const audience = givenVar("ORIGIN_URL", opts.rest) ?? origin.url;
    origin.trust({ issuer, audience, jwksUrl: `${gateway}/.well-known/jwks.json` });
    log(`demo origin on ${origin.url}, verifying the gateway's assertions (issuer ${issuer})`);
  } catch (err) {
    log(`demo origin NOT started on 127.0.0.1:${originPort}: ${err.code ?? err.message} (is one already running?)`);
  }

  const devArgs = [WRANGLER, "dev", "--ip", opts.ip, "--port", String(opts.port), "--persist-to", persistTo,
    ...startVars(origin?.port ?? originPort, gateway, opts.rest), ...opts.rest];
  log(`wrangler dev on http://${opts.ip}:${opts.port}`);
  const child = spawn(process.execPath, devArgs, { cwd: ROOT, env, stdio: "inherit" });

  let stopping = false;
  const forward = (sig) => {
    // Ctrl-C in a terminal reaches wrangler directly (same process group); a
    // signal sent only to us is forwarded. Either way we wait for wrangler to exit.
    if (!stopping) {
      stopping = true;
      if (child.exitCode === null && child.signalCode === null) child.kill(sig);
      setTimeout(() => {
        if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      }, 10_000).unref();
    }
  };
  process.on("SIGINT", () => forward("SIGINT"));
  process.on("SIGTERM", () => forward("SIGTERM"));
  process.on("SIGHUP", () => forward("SIGHUP"));

  const [code, signal] = await new Promise((resolve) => {
    child.on("error", (err) => {
      log(`could not start wrangler: ${err.message}`);
      resolve([1, null]);
    });
    child.on("exit", (c, s) => resolve([c, s]));
  });
  if (origin) await origin.close();
  if (signal && !stopping) log(`wrangler dev ended by ${signal}`);
  process.exit(code ?? (stopping ? 0 : 1));
}

// Run, not imported (as tests do).
if (isMain(import.meta.url)) {
  main().catch((err) => {
    console.error(`[start] error: ${err.message}`);
    process.exit(1);
  });
}
