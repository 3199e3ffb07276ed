// Memory of one V8 isolate, read through workerd's inspector (DevTools
// protocol), and of processes, read from /proc: what bench/soak.mjs samples.
//
// - wasm linear memory: every live WebAssembly.Memory of the isolate, found
//   with Runtime.queryObjects on its prototype (nothing is added to the
//   Worker: no endpoint, no wrapper module), summed by its buffer's
//   byteLength;
// - JS heap: Runtime.getHeapUsage (usedSize, totalSize; embedder and
//   backing-store sizes where the V8 reports them), before and after the
//   full GC that Runtime.queryObjects makes: after it is what the isolate
//   retains;
// - processes: VmRSS, RssAnon and RssFile of /proc/PID/status.
import fs from "node:fs";

import { connectInspector } from "./profile.mjs";

/** The inspector targets (one per isolate) workerd lists at `base`. */
export async function inspectorTargets(base) {
  return (await fetch(`${base}/json/list`)).json();
}

/**
 * Opens the isolate whose target title or id contains `serviceName` and
 * returns `sample()`, which measures it. `origin` goes to connectInspector;
 * `shared`: the session is a proxy's that another client uses too (wrangler
 * dev's): its Runtime domain is left enabled.
 */
export async function isolateMemory(base, serviceName, { timeoutMs = 30_000, origin, shared = false } = {}) {
  const raw = await connectInspector(base, serviceName, { origin });
  // An isolate busy for longer than this (or one whose inspector never answers) fails the sample.
  const insp = {
    ...raw,
    send: (method, params) =>
      new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`${serviceName}: ${method} timed out`)), timeoutMs);
        raw.send(method, params).then(resolve, reject).finally(() => clearTimeout(t));
      }),
  };
  const group = "portcullis-soak";
  // workerd evaluates only in a named context: learn the Worker's from
  // Runtime.enable's announcement, then disable again (an enabled Runtime
  // domain would have every console call sent here).
  let context = null;
  insp.on("Runtime.executionContextCreated", (p) => (context ??= p.context.uniqueId));
  await insp.send("Runtime.enable");
  for (let i = 0; i < 100 && context === null; i++) await new Promise((r) => setTimeout(r, 20));
  // `shared`: a session that another client (wrangler) relies on stays enabled.
  if (!shared) await insp.send("Runtime.disable");
  if (context === null) throw new Error(`no execution context announced by ${serviceName}'s inspector`);
  return {
    /**
     * { heap: Runtime.getHeapUsage, heapAfterGc: the same after a full GC,
     * wasm: [bytes of each WebAssembly.Memory] }. Runtime.queryObjects
     * collects all garbage before it walks the heap: it is the GC here
     * (HeapProfiler.collectGarbage never answers in workerd).
     */
    async sample() {
      const heap = await insp.send("Runtime.getHeapUsage");
      const { result: proto } = await insp.send("Runtime.evaluate", { expression: "WebAssembly.Memory.prototype", uniqueContextId: context, objectGroup: group });
      const { objects } = await insp.send("Runtime.queryObjects", { prototypeObjectId: proto.objectId, objectGroup: group });
      const heapAfterGc = await insp.send("Runtime.getHeapUsage");
      const { result } = await insp.send("Runtime.callFunctionOn", {
        objectId: objects.objectId,
        functionDeclaration: "function () { return this.map((m) => m.buffer.byteLength); }",
        returnByValue: true,
      });
      await insp.send("Runtime.releaseObjectGroup", { objectGroup: group });
      return { wasm: result.value, heap, heapAfterGc };
    },
    /** Runtime.getHeapUsage alone: no GC. */
    usage: () => insp.send("Runtime.getHeapUsage"),
    close: () => insp.close(),
  };
}

/** VmRSS, RssAnon, RssFile of a process, in bytes (null once it is gone). */
export function rss(pid) {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
    const kb = (name) => Number(status.match(new RegExp(`^${name}:\\s+(\\d+) kB`, "m"))?.[1] ?? NaN) * 1024;
    return { rss: kb("VmRSS"), anon: kb("RssAnon"), file: kb("RssFile") };
  } catch {
    return null;
  }
}

/** `pid` and every process below it: [{ pid, ppid, name, cmd }]. */
export function processTree(pid) {
  const all = [];
  for (const d of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${d}/stat`, "utf8");
      // comm may hold spaces and parentheses: fields resume after the last ')'.
      const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const cmd = fs.readFileSync(`/proc/${d}/cmdline`, "utf8").split("\0").filter(Boolean);
      all.push({ pid: Number(d), ppid: Number(rest[1]), name: stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")")), cmd });
    } catch {
      // gone meanwhile
    }
  }
  const out = [];
  const walk = (p) => {
    for (const c of all.filter((x) => x.ppid === p)) {
      out.push(c);
      walk(c.pid);
    }
  };
  const self = all.find((x) => x.pid === pid);
  if (self) out.push(self);
  walk(pid);
  return out;
}

/** The TCP ports process `pid` listens on (from its socket inodes and /proc/net/tcp). */
export function listeningPorts(pid) {
  const inodes = new Set();
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = fs.readlinkSync(`/proc/${pid}/fd/${fd}`).match(/^socket:\[(\d+)\]$/);
      if (m) inodes.add(m[1]);
    } catch {
      // closed meanwhile
    }
  }
  const ports = [];
  for (const file of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try {
      text = fs.readFileSync(file, "utf8");
    } catch {
      continue;
    }
    for (const line of text.trim().split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      // f[1] local address HEX_IP:HEX_PORT, f[3] state (0A: LISTEN), f[9] inode
      if (f[3] === "0A" && inodes.has(f[9])) ports.push(parseInt(f[1].split(":")[1], 16));
    }
  }
  return ports;
}

export const mib = (bytes) => (bytes === null || bytes === undefined || Number.isNaN(bytes) ? "–" : (bytes / 1048576).toFixed(1));
