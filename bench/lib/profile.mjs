// CPU profiles of a Worker under load through workerd's V8 inspector
// (`workerd serve --inspector-addr=HOST:PORT`), using the DevTools protocol's
// Profiler domain. build/index_bg.wasm keeps its `name` section, so Rust
// functions appear by name.

/**
 * `origin`: sent as the `Origin` header (wrangler's inspector proxy refuses a
 * client without one).
 */
export async function connectInspector(inspectorBase, serviceName = "main", { origin } = {}) {
  const list = await (await fetch(`${inspectorBase}/json/list`)).json();
  const target = list.find((t) => (t.title ?? "").includes(serviceName) || (t.id ?? "").includes(serviceName)) ?? list[0];
  if (!target) throw new Error(`no inspector target at ${inspectorBase}`);
  const ws = origin ? new WebSocket(target.webSocketDebuggerUrl, { headers: { origin } }) : new WebSocket(target.webSocketDebuggerUrl);
  await new Promise((resolve, reject) => {
    ws.addEventListener("open", resolve, { once: true });
    ws.addEventListener("error", (e) => reject(new Error(`inspector: ${e.message ?? "connection failed"}`)), { once: true });
  });
  let next = 1;
  const pending = new Map();
  const listeners = new Map();
  ws.addEventListener("message", (ev) => {
    const msg = JSON.parse(typeof ev.data === "string" ? ev.data : Buffer.from(ev.data).toString());
    if (msg.method && !msg.id) for (const fn of listeners.get(msg.method) ?? []) fn(msg.params);
    if (msg.id && pending.has(msg.id)) {
      const { resolve, reject } = pending.get(msg.id);
      pending.delete(msg.id);
      if (msg.error) reject(new Error(`${msg.error.message}`));
      else resolve(msg.result);
    }
  });
  const send = (method, params = {}) =>
    new Promise((resolve, reject) => {
      const id = next++;
      pending.set(id, { resolve, reject });
      ws.send(JSON.stringify({ id, method, params }));
    });
  /** Calls fn(params) on every event `method` (e.g. "Runtime.executionContextCreated"). */
  const on = (method, fn) => listeners.set(method, [...(listeners.get(method) ?? []), fn]);
  return { send, on, close: () => ws.close() };
}

/** Runs `load()` while sampling every `intervalUs`; returns the V8 CPU profile. */
export async function profileDuring(inspector, load, intervalUs = 50) {
  await inspector.send("Profiler.enable");
  await inspector.send("Profiler.setSamplingInterval", { interval: intervalUs });
  await inspector.send("Profiler.start");
  const result = await load();
  const { profile } = await inspector.send("Profiler.stop");
  return { profile, result };
}

function shortName(frame) {
  let name = frame.functionName || "(anonymous)";
  // Rust symbols: drop the hash suffix.
  name = name.replace(/::h[0-9a-f]{16}$/, "").replace(/^\$/, "");
  const where = frame.url?.startsWith("wasm://") ? "wasm" : frame.url ? frame.url.split("/").pop() : "";
  return { name, where };
}

/**
 * Self and inclusive time per function, in µs and as a share of the busy (non-idle) time.
 */
export function summarise(profile) {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const self = new Map();
  const incl = new Map();
  // Self time by kind of code: rust (wasm), glue (the Worker's own JS: wasm-bindgen /
  // workers-rs shim, or a JS Worker's code), runtime (workerd natives and internal JS:
  // fetch, Request, Headers, crypto, timers...), gc, other ((program): V8 itself).
  const categories = { rust: 0, glue: 0, runtime: 0, gc: 0, other: 0 };
  let busy = 0;
  let total = 0;
  const samples = profile.samples ?? [];
  const deltas = profile.timeDeltas ?? [];
  for (let i = 0; i < samples.length; i++) {
    const dt = deltas[i + 1] ?? deltas[i] ?? 0;
    const node = byId.get(samples[i]);
    total += dt;
    const { name, where } = shortName(node.callFrame);
    if (name === "(idle)") continue;
    busy += dt;
    const url = node.callFrame.url ?? "";
    const cat =
      name === "(garbage collector)" ? "gc"
      : name === "(program)" || name === "(root)" ? "other"
      : name.startsWith("js-to-wasm") || name.startsWith("wasm-to-js") ? "glue"
      : url.startsWith("wasm://") ? "rust"
      : url && !url.startsWith("node-internal:") && !url.startsWith("cloudflare") && !url.startsWith("workerd") ? "glue"
      : "runtime";
    categories[cat] += dt;
    const key = where ? `${name} [${where}]` : name;
    self.set(key, (self.get(key) ?? 0) + dt);
    const seen = new Set();
    for (let id = samples[i]; id !== undefined; id = parent.get(id)) {
      const f = shortName(byId.get(id).callFrame);
      const k = f.where ? `${f.name} [${f.where}]` : f.name;
      if (seen.has(k)) continue;
      seen.add(k);
      incl.set(k, (incl.get(k) ?? 0) + dt);
    }
  }
  const rank = (m) => [...m.entries()].sort((a, b) => b[1] - a[1]).map(([name, us]) => ({ name, us, share: busy ? us / busy : 0 }));
  return { totalUs: total, busyUs: busy, categories, self: rank(self), inclusive: rank(incl) };
}
