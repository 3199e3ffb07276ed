// Mints many distinct access tokens quickly, on every core (worker threads): the
// "fresh token" load needs one never-seen token per request.
import os from "node:os";
import crypto from "node:crypto";
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";
import { minter } from "./keys.mjs";

/** n fresh tokens for `key` (from makeSigningKey), claims as minter() makes them. */
export async function mintMany(key, opts, n, roles = ["user"]) {
  const threads = Math.max(1, Math.min(os.availableParallelism?.() ?? os.cpus().length, 8));
  const jwk = key.privateKey.export({ format: "jwk" });
  const per = Math.ceil(n / threads);
  const parts = await Promise.all(
    Array.from({ length: threads }, (_, i) => {
      const count = Math.max(0, Math.min(per, n - i * per));
      return new Promise((resolve, reject) => {
        const w = new Worker(new URL(import.meta.url), { workerData: { jwk, kid: key.kid, opts, count, roles } });
        w.once("message", resolve);
        w.once("error", reject);
      });
    }),
  );
  return parts.flat();
}

if (!isMainThread && workerData?.jwk) {
  const { jwk, kid, opts, count, roles } = workerData;
  const mint = minter({ kid, privateKey: crypto.createPrivateKey({ key: jwk, format: "jwk" }) }, opts);
  const out = new Array(count);
  for (let i = 0; i < count; i++) out[i] = mint({ roles });
  parentPort.postMessage(out);
}
