// Runs the built Worker once, locally (wrangler dev: workerd with local D1,
// KV and Queues, nothing remote), with the production vars and stand-in
// secrets, and reads its answer: the Worker's own configuration check
// (src/core/config.rs) is the one that decides. A misconfigured Worker
// answers every request 503 `misconfigured` naming the setting.
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { stripAnsi } from "./wrangler.mjs";

const READY_LINE = /Ready on http:\/\/127\.0\.0\.1:(\d+)/;
const PROBE_PATH = "/.well-known/openid-configuration";

/**
 * The Worker's verdict on a configuration: `{ok: true, issuer}` when it
 * starts and serves discovery, `{ok: false, detail}` otherwise (`detail` is
 * its problem's detail, e.g. "configuration error: ROUTES: …").
 * `config`: a wrangler config for local use (no routes); `secrets`: stand-in
 * values, passed as --var (they are never real secrets).
 */
export async function probeWorker({ root, node, config, secrets, env = {}, timeoutMs = 90_000 }) {
  const state = fs.mkdtempSync(path.join(os.tmpdir(), "portcullis-probe-"));
  const args = [
    path.join(root, "node_modules", "wrangler", "bin", "wrangler.js"),
    "dev",
    "--config", config,
    "--ip", "127.0.0.1",
    "--port", "0",
    "--inspector-port", "0",
    "--persist-to", state,
    "--show-interactive-dev-session=false",
  ];
  for (const [k, v] of Object.entries(secrets)) args.push("--var", `${k}:${v}`);
  const child = spawn(node, args, {
    cwd: root,
    env: { ...env, WRANGLER_SEND_METRICS: "false", WRANGLER_HIDE_BANNER: "true", NO_COLOR: "1" },
    stdio: ["ignore", "pipe", "pipe"],
    detached: true, // its own process group: wrangler and workerd end together
  });
  const kill = () => {
    try {
      process.kill(-child.pid, "SIGKILL");
    } catch {
      // already gone
    }
  };
  // Its own process group does not get the terminal's Ctrl-C: pass it on.
  const onSignal = (signal) => {
    kill();
    process.exit(signal === "SIGINT" ? 130 : 143);
  };
  process.on("exit", kill);
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  let output = "";
  try {
    const port = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`wrangler dev did not start within ${timeoutMs / 1000} s`)), timeoutMs);
      const onData = (d) => {
        output += d;
        const m = READY_LINE.exec(stripAnsi(output));
        if (m) {
          clearTimeout(timer);
          resolve(Number(m[1]));
        }
      };
      child.stdout.on("data", onData);
      child.stderr.on("data", onData);
      child.on("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`wrangler dev exited (${code}) before it was ready:\n${stripAnsi(output).trim().split("\n").slice(-15).join("\n")}`));
      });
    });
    const res = await fetch(`http://127.0.0.1:${port}${PROBE_PATH}`, { signal: AbortSignal.timeout(30_000) });
    const body = await res.text();
    let json = null;
    try {
      json = JSON.parse(body);
    } catch {
      // not JSON: reported below
    }
    if (res.status === 200 && json && typeof json.issuer === "string") return { ok: true, issuer: json.issuer };
    if (json && json.code === "misconfigured") return { ok: false, detail: String(json.detail ?? "").replace(/^configuration error:\s*/, "") };
    return { ok: false, detail: `unexpected answer ${res.status} to GET ${PROBE_PATH}: ${body.slice(0, 300)}` };
  } finally {
    kill();
    process.removeListener("exit", kill);
    process.removeListener("SIGINT", onSignal);
    process.removeListener("SIGTERM", onSignal);
    fs.rmSync(state, { recursive: true, force: true });
  }
}
