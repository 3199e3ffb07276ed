// Cold start: how long a fresh workerd process takes from its start to the answer of its
// first request, and the CPU it used until then — config, compiling the Worker's modules
// (for Portcullis, the wasm), the Worker's global scope, and the first request itself.
//
// The listening socket is made here and handed to workerd (`--socket-fd`), so the first
// request is sent the moment the process starts and waits in the socket's backlog: no
// polling, nothing measured but the process. Targets alternate, each start a new process.
import path from "node:path";
import { cpuNs, listenSocket, start, stop } from "./proc.mjs";

/**
 * `targets`: { key: { config, path, status } } — a workerd config whose socket is named
 * `http`, the path of the first request and the status it must answer. Resolves to
 * { key: [{ wallMs, cpuMs }] }, `rounds` starts per target.
 */
export async function coldStarts({ workerd, out, targets, rounds }) {
  const result = Object.fromEntries(Object.keys(targets).map((k) => [k, []]));
  for (let i = 0; i < rounds; i++) {
    for (const [key, t] of Object.entries(targets)) {
      const socket = await listenSocket();
      const t0 = process.hrtime.bigint();
      const child = start(workerd, ["serve", t.config, "--experimental", "--socket-fd", "http=3"], {
        socket,
        cwd: out,
        logFile: path.join(out, `startup-${key}.log`),
      });
      try {
        const r = await fetch(`http://127.0.0.1:${socket.port}${t.path}`);
        await r.arrayBuffer();
        const wallMs = Number(process.hrtime.bigint() - t0) / 1e6;
        const cpuMs = cpuNs(child.pid) / 1e6;
        if (r.status !== t.status) throw new Error(`cold start ${key}: ${t.path} answered ${r.status}, expected ${t.status}\n${child.output().slice(-2000)}`);
        result[key].push({ wallMs, cpuMs });
      } finally {
        await stop(child);
      }
    }
  }
  return result;
}

/** Median milliseconds to compile `bytes` with this Node's V8 (`WebAssembly.compile`), over `times` runs. */
export async function compileMs(bytes, times = 5) {
  const ms = [];
  for (let i = 0; i < times; i++) {
    const t0 = process.hrtime.bigint();
    await WebAssembly.compile(bytes);
    ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  ms.sort((a, b) => a - b);
  return ms[Math.floor(ms.length / 2)];
}
