// Runs tests/interop/pyjwt_verify.py (PyJWT with `cryptography`, in the
// virtualenv scripts/setup-python.sh makes) on a list of checks.
import path from "node:path";
import { spawn } from "node:child_process";
import { ROOT } from "../harness.mjs";

export const PYTHON = path.join(ROOT, ".venv-interop", "bin", "python");
const VERIFY = path.join(ROOT, "tests", "interop", "pyjwt_verify.py");

/**
 * PyJWT's verdict on each check ({token, issuer, audience, typ, algorithms?})
 * against the JWKS at `jwksUrl`, fetched by its PyJWKClient: one result per check.
 */
export function pyjwt(jwksUrl, checks) {
  return new Promise((resolve, reject) => {
    const child = spawn(PYTHON, [VERIFY, jwksUrl], { stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (c) => (out += c));
    child.stderr.on("data", (c) => (err += c));
    child.on("error", reject);
    child.on("close", (code) => {
      if (code !== 0) return reject(new Error(`pyjwt_verify.py exited ${code}: ${err}`));
      const results = out.trim().split("\n").filter(Boolean).map((l) => JSON.parse(l));
      if (results.length !== checks.length) return reject(new Error(`expected ${checks.length} results, got: ${out} ${err}`));
      resolve(results);
    });
    child.stdin.end(checks.map((c) => JSON.stringify(c)).join("\n") + "\n");
  });
}
