// Paired, interleaved latency sampling: one keep-alive connection per target, one request
// at a time, the variants in a fresh random order in every cycle, so every variant sees the
// same machine at the same moments. With one request in flight, the Worker's extra work
// for a variant (all of it synchronous CPU on the request's critical path: WebCrypto
// Ed25519 in workerd completes inline) shows up one-for-one in that variant's latency;
// the median difference between two variants is robust against the background noise of
// a shared machine, where per-run CPU totals drift by ±10 %.
//
// The client is a minimal HTTP/1.1 implementation over net.Socket (pre-built request
// bytes, Content-Length or chunked bodies), so its own cost is small and the same for
// every variant.
import net from "node:net";

class Conn {
  constructor(port) {
    this.port = port;
    this.buf = Buffer.alloc(0);
    this.waiter = null;
    this.socket = null;
  }

  async open() {
    this.buf = Buffer.alloc(0);
    this.socket = net.connect(this.port, "127.0.0.1");
    this.socket.setNoDelay(true);
    this.socket.on("data", (d) => {
      this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
      this.pump();
    });
    this.socket.on("close", () => {
      this.closed = true;
      if (this.waiter) this.waiter.reject(new Error("connection closed"));
    });
    this.socket.on("error", () => {});
    this.closed = false;
    await new Promise((resolve, reject) => {
      this.socket.once("connect", resolve);
      this.socket.once("error", reject);
    });
  }

  /** Tries to take one complete response off the buffer. */
  pump() {
    if (!this.waiter) return;
    const head = this.buf.indexOf("\r\n\r\n");
    if (head < 0) return;
    const lines = this.buf.subarray(0, head).toString("latin1").split("\r\n");
    const status = Number(lines[0].split(" ")[1]);
    let length = null;
    let chunked = false;
    let close = false;
    for (const l of lines.slice(1)) {
      const i = l.indexOf(":");
      const k = l.slice(0, i).trim().toLowerCase();
      const v = l.slice(i + 1).trim().toLowerCase();
      if (k === "content-length") length = Number(v);
      else if (k === "transfer-encoding" && v.includes("chunked")) chunked = true;
      else if (k === "connection" && v === "close") close = true;
    }
    let end;
    if (chunked) {
      let p = head + 4;
      for (;;) {
        const eol = this.buf.indexOf("\r\n", p);
        if (eol < 0) return;
        const size = parseInt(this.buf.subarray(p, eol).toString("latin1"), 16);
        if (size === 0) {
          end = eol + 4; // "0\r\n\r\n": no trailers from workerd or Node
          if (this.buf.length < end) return;
          break;
        }
        p = eol + 2 + size + 2;
        if (p > this.buf.length) return;
      }
    } else {
      end = head + 4 + (length ?? 0);
      if (this.buf.length < end) return;
    }
    this.buf = this.buf.subarray(end);
    const w = this.waiter;
    this.waiter = null;
    w.resolve({ status, close });
  }

  async request(bytes) {
    if (!this.socket || this.closed) await this.open();
    const t0 = process.hrtime.bigint();
    const res = await new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
      this.socket.write(bytes);
    });
    const us = Number(process.hrtime.bigint() - t0) / 1000;
    if (res.close) {
      this.socket.destroy();
      this.closed = true;
    }
    return { status: res.status, us };
  }

  close() {
    this.socket?.destroy();
  }
}

/** Thrown by build() when a variant's header() returns undefined (no tokens left). */
const OUT_OF_TOKENS = Symbol("out of tokens");

const median = (a) => {
  const s = Float64Array.from(a).sort();
  const n = s.length;
  return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
};

/**
 * variants: [{ key, port, path, header: () => string | null | undefined, status }]
 * (header() returning undefined ends the run: a fresh-token pool is empty.)
 * Runs for `seconds`; returns { samples: {key: [µs...]}, medians, diff(a, b) }.
 */
export async function pairedLatency(variants, seconds, { warmupCycles = 200 } = {}) {
  const conns = new Map();
  for (const v of variants) if (!conns.has(v.port)) conns.set(v.port, new Conn(v.port));
  const build = (v) => {
    const h = v.header?.();
    if (h === undefined) throw OUT_OF_TOKENS;
    return Buffer.from(`GET ${v.path} HTTP/1.1\r\nHost: 127.0.0.1:${v.port}\r\n${h ? `Authorization: ${h}\r\n` : ""}\r\n`, "latin1");
  };
  const samples = Object.fromEntries(variants.map((v) => [v.key, []]));
  const order = variants.slice();
  const deadline = Date.now() + seconds * 1000;
  let cycle = 0;
  let stoppedEarly = false;
  try {
    outer: while (Date.now() < deadline || cycle < warmupCycles + 10) {
      for (let i = order.length - 1; i > 0; i--) {
        const j = Math.floor(Math.random() * (i + 1));
        [order[i], order[j]] = [order[j], order[i]];
      }
      for (const v of order) {
        let bytes;
        try {
          bytes = build(v);
        } catch (e) {
          if (e !== OUT_OF_TOKENS) throw e;
          // A fresh-token pool ran dry: end here, dropping this incomplete cycle.
          if (cycle >= warmupCycles) for (const k of Object.keys(samples)) samples[k].length = Math.min(...Object.values(samples).map((x) => x.length));
          stoppedEarly = true;
          break outer;
        }
        const { status, us } = await conns.get(v.port).request(bytes);
        if (status !== v.status) throw new Error(`${v.key}: expected ${v.status}, got ${status}`);
        if (cycle >= warmupCycles) samples[v.key].push(us);
      }
      cycle++;
    }
  } finally {
    for (const c of conns.values()) c.close();
  }
  const medians = Object.fromEntries(Object.entries(samples).map(([k, s]) => [k, median(s)]));
  /** Median difference a − b with a bootstrap 95 % interval. */
  const diff = (a, b, resamples = 300) => {
    const A = samples[a];
    const B = samples[b];
    const ds = [];
    for (let r = 0; r < resamples; r++) {
      const ra = new Float64Array(A.length);
      const rb = new Float64Array(B.length);
      for (let i = 0; i < A.length; i++) ra[i] = A[(Math.random() * A.length) | 0];
      for (let i = 0; i < B.length; i++) rb[i] = B[(Math.random() * B.length) | 0];
      ds.push(median(ra) - median(rb));
    }
    ds.sort((x, y) => x - y);
    return { median: medians[a] - medians[b], lo: ds[Math.floor(resamples * 0.025)], hi: ds[Math.ceil(resamples * 0.975) - 1] };
  };
  return { samples: Object.fromEntries(Object.entries(samples).map(([k, s]) => [k, s.length])), medians, cycles: cycle, stoppedEarly, diff };
}
