// The headers the gateway never forwards, read from their one source
// (`STRIPPED` in src/core/gateway/headers.rs), and generated header sets for the
// e2e tests: every listed name (a prefix with something after it) in a random
// spelling — case, `-` or `_` — and names that are not on the list, several
// of them near misses. Seeded, so a failure replays.
import fs from "node:fs";
import path from "node:path";
import { ROOT } from "../harness.mjs";

/** The entries of `STRIPPED`: { name, prefix } with `name` lowercase and dashed. */
export function strippedEntries() {
  const src = fs.readFileSync(path.join(ROOT, "src", "core", "gateway", "headers.rs"), "utf8");
  const start = src.indexOf("pub const STRIPPED: &[&str] = &[");
  const end = src.indexOf("];", start);
  if (start < 0 || end < 0) throw new Error("STRIPPED not found in src/core/gateway/headers.rs");
  const body = src
    .slice(start, end)
    .split("\n")
    .map((l) => l.replace(/\/\/.*$/, ""))
    .join("\n");
  const entries = [...body.matchAll(/"([^"]+)"/g)].map((m) => {
    const raw = m[1];
    return raw.endsWith("*") ? { name: raw.slice(0, -1), prefix: true } : { name: raw, prefix: false };
  });
  if (entries.length < 40) throw new Error(`only ${entries.length} STRIPPED entries read`);
  return entries;
}

/** Whether the gateway strips `name` (the rule of core::gateway::headers, restated). */
export function isStripped(entries, name) {
  const n = name.toLowerCase().replaceAll("_", "-");
  return entries.some((e) => (e.prefix ? n.startsWith(e.name) : n === e.name));
}

/** A small seeded PRNG (mulberry32). */
export function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function respell(name, rand) {
  let out = "";
  for (const c of name) {
    if (c === "-") out += rand() < 0.5 ? "_" : "-";
    else out += rand() < 0.5 ? c.toUpperCase() : c;
  }
  return out;
}

// Hop-by-hop and other names the runtime or wrangler dev's proxy handle themselves.
const RESERVED = new Set(["connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade", "host", "content-length", "transfer-encoding", "authorization", "cookie"]);

/**
 * One generated header set: { headers, stripped: [names], kept: [names] }.
 * Every listed entry appears once, in a random spelling (a prefix with a random
 * tail); about as many other names are added, from near misses of listed names
 * and random ones, kept only if the list does not cover them.
 */
export function headerSet(entries, rand) {
  const headers = {};
  const stripped = [];
  const kept = [];
  const word = () => Array.from({ length: 2 + Math.floor(rand() * 6) }, () => "abcdefghijklmnopqrstuvwxyz0123456789"[Math.floor(rand() * 36)]).join("");
  for (const e of entries) {
    const name = respell(e.prefix ? `${e.name}${e.name.endsWith("-") ? "" : "-"}${word()}` : e.name, rand);
    headers[name] = `v-${word()}`;
    stripped.push(name);
  }
  const misses = [];
  for (const e of entries) {
    // Near misses: a character more or less, another word after an exact name.
    if (!e.prefix) misses.push(`${e.name}s`, `${e.name}-${word()}`, e.name.slice(0, -1));
    else misses.push(e.name.replace(/-$/, "").slice(0, -1));
  }
  misses.push("x-user-agent", "forwarded-by", "x-request-id", "x-app-version", "x-forwarde", "cf-connecting-ip");
  for (let i = 0; i < 20; i++) misses.push(`x-${word()}-${word()}`);
  for (const m of misses) {
    if (rand() < 0.5 || RESERVED.has(m) || !/^[a-z0-9-]+$/.test(m) || !m) continue;
    const name = respell(m, rand);
    if (isStripped(entries, name) || Object.keys(headers).some((k) => k.toLowerCase() === name.toLowerCase())) continue;
    headers[name] = `k-${word()}`;
    kept.push(name);
  }
  return { headers, stripped, kept };
}
