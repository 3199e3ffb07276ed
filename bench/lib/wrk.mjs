// The load generator: wrk from Debian (`apt-get install wrk`), driven with
// bench/wrk/auth.lua, which sends one Authorization header per request from a token
// list and prints exact figures at the end.
import { execFileSync, spawn } from "node:child_process";
import path from "node:path";

function which(cmd) {
  try {
    return execFileSync("sh", ["-c", `command -v ${cmd}`], { encoding: "utf8" }).trim() || null;
  } catch {
    return null;
  }
}

/** Path of wrk, installing the Debian package if it is missing. */
export function ensureWrk(log) {
  let wrk = which("wrk");
  if (wrk) return wrk;
  if (!which("apt-get")) throw new Error("wrk is missing and apt-get is not available: install wrk (Debian package `wrk`)");
  log("wrk not found: apt-get install -y wrk");
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  const sudo = process.getuid && process.getuid() !== 0 ? ["sudo"] : [];
  const apt = (args) => execFileSync(sudo[0] ?? "apt-get", [...(sudo.length ? ["apt-get"] : []), ...args], { env, stdio: "ignore" });
  try {
    apt(["install", "-y", "wrk"]);
  } catch {
    apt(["update"]);
    apt(["install", "-y", "wrk"]);
  }
  wrk = which("wrk");
  if (!wrk) throw new Error("apt-get install wrk did not provide wrk");
  return wrk;
}

/**
 * One wrk run. Returns { rps, requests, mean_us, p50_us, p90_us, p99_us, non2xx, errors, ... }.
 * tokensFile: one token per line (request i uses line i, wrapping); scheme "Bearer" | "Basic".
 */
export function runWrk(wrkBin, benchDir, { base, path: urlPath, tokensFile, scheme = "Bearer", connections = 16, seconds = 10, timeoutS = 5 }) {
  const args = [
    "-t1",
    `-c${connections}`,
    `-d${seconds}s`,
    `--timeout`,
    `${timeoutS}s`,
    "--latency",
    "-s",
    path.join(benchDir, "wrk", "auth.lua"),
    base + urlPath,
  ];
  const env = { ...process.env, BENCH_PATH: urlPath, BENCH_SCHEME: scheme };
  if (tokensFile) env.BENCH_TOKENS = tokensFile;
  else delete env.BENCH_TOKENS;
  return new Promise((resolve, reject) => {
    const child = spawn(wrkBin, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (out += d));
    child.on("error", reject);
    child.on("exit", (code) => {
      const m = out.match(/BENCHJSON (\{.*\})/);
      if (code !== 0 || !m) return reject(new Error(`wrk failed (${code}):\n${out}`));
      const r = JSON.parse(m[1]);
      r.rps = r.requests / (r.duration_us / 1e6);
      r.errors = r.connect_errors + r.read_errors + r.write_errors + r.timeouts;
      r.raw = out;
      resolve(r);
    });
  });
}
