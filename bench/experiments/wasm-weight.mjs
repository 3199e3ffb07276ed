// What the wasm module is made of: code per crate, and data, from the `name` section of
// build/named/index_bg.wasm (the deployed module without its names is the same code).
//
//   node bench/experiments/wasm-weight.mjs [build/named/index_bg.wasm] [--top N] [--functions N]
//
// A function is counted for the crate its demangled name starts with: for a trait
// method, `<portcullis::x::Y as serde::Serialize>::serialize` counts for portcullis (the
// type's crate; for a primitive or a generic parameter, `<f64 as core::fmt::Display>`,
// the trait's), a generic instantiated for our types counts for the crate that defines
// the generic (`serde_json::de::from_str<…>` is serde_json's, although we asked for it),
// and `{closure}`s for the crate of the function around them. "gzip" is each group's code
// gzipped on its own (gzip -9), an upper bound of what it adds to the gzipped module.
import fs from "node:fs";
import zlib from "node:zlib";

const args = process.argv.slice(2);
const opt = { file: "build/named/index_bg.wasm", top: 30, functions: 0 };
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--top") opt.top = Number(args[++i]);
  else if (args[i] === "--functions") opt.functions = Number(args[++i]);
  else opt.file = args[i];
}
const wasm = fs.readFileSync(opt.file);
let i = 8;
const leb = () => {
  let v = 0;
  for (let shift = 0; ; shift += 7) {
    const b = wasm[i++];
    v += (b & 0x7f) * 2 ** shift;
    if (b < 0x80) return v;
  }
};
const skipLimits = () => {
  const flags = leb();
  leb();
  if (flags & 1) leb();
};

let imported = 0;
const bodies = [];
const names = new Map();
const sections = [];
let data = [];
while (i < wasm.length) {
  const id = wasm[i++];
  const size = leb();
  const start = i;
  sections.push({ id, size });
  if (id === 2) {
    // imports: count the functions, whose indices come before the module's own
    for (let n = leb(); n > 0; n--) {
      for (let field = 0; field < 2; field++) {
        const len = leb(); // (not `i += leb()`: that adds to the `i` from before the read)
        i += len;
      }
      const kind = wasm[i++];
      if (kind === 0) {
        leb();
        imported++;
      } else if (kind === 1) {
        i++;
        skipLimits();
      } else if (kind === 2) skipLimits();
      else if (kind === 3) i += 2;
      else if (kind === 4) {
        i++;
        leb();
      }
    }
  } else if (id === 10) {
    for (let n = leb(), k = 0; k < n; k++) {
      const len = leb();
      bodies.push({ index: imported + k, bytes: wasm.subarray(i, i + len) });
      i += len;
    }
  } else if (id === 11) {
    for (let n = leb(); n > 0; n--) {
      const flags = leb();
      if (flags === 2) leb();
      if (flags !== 1) {
        while (wasm[i] !== 0x0b) i++;
        i++;
      }
      const len = leb();
      data.push(wasm.subarray(i, i + len));
      i += len;
    }
  } else if (id === 0) {
    const len = leb();
    const name = wasm.subarray(i, i + len).toString();
    i += len;
    if (name === "name") {
      while (i < start + size) {
        const sub = wasm[i++];
        const subSize = leb();
        const subStart = i;
        if (sub === 1) {
          for (let n = leb(); n > 0; n--) {
            const index = leb();
            const l = leb();
            names.set(index, wasm.subarray(i, i + l).toString());
            i += l;
          }
        }
        i = subStart + subSize;
      }
    }
  }
  i = start + size;
}
if (names.size === 0) {
  console.error(`${opt.file} has no name section: use build/named/index_bg.wasm`);
  process.exit(1);
}

/** The crate a demangled function name belongs to (see the header). */
function crateOf(name) {
  // `<T as serde::Serialize>`, `<f64 as core::fmt::Display>`, `<&mut W as …>`: a generic
  // parameter or a primitive has no crate; the trait's crate has the code.
  const impl = name.match(/^<([^<>]*?) as ([A-Za-z_]\w*)(\[[0-9a-f]+\])?::/);
  if (impl && !impl[1].includes("::")) return impl[2];
  let s = name;
  for (let t = s.replace(/^([<&(\[]|mut |dyn )/, ""); t !== s; t = s.replace(/^([<&(\[]|mut |dyn )/, "")) s = t;
  const head = s.match(/^[A-Za-z_][A-Za-z0-9_]*/)?.[0] ?? "?";
  return head.replace(/\[[0-9a-f]+\]$/, "");
}
const gz = (parts) => zlib.gzipSync(Buffer.concat(parts), { level: 9 }).length;
const groups = new Map();
let code = 0;
for (const b of bodies) {
  const name = names.get(b.index) ?? `func${b.index}`;
  const g = groups.get(crateOf(name)) ?? { bytes: 0, parts: [], functions: 0 };
  g.bytes += b.bytes.length;
  g.parts.push(b.bytes);
  g.functions++;
  groups.set(crateOf(name), g);
  code += b.bytes.length;
}
const dataBytes = data.reduce((a, d) => a + d.length, 0);
const fmt = (n) => n.toLocaleString("en-US");
const custom = sections.filter((s) => s.id === 0).reduce((a, s) => a + s.size, 0);
console.log(`${opt.file}: ${fmt(wasm.length)} B (custom sections ${fmt(custom)} B); code ${fmt(code)} B in ${fmt(bodies.length)} functions; data ${fmt(dataBytes)} B (gzip ${fmt(gz(data))} B)`);
console.log("| crate | code B | gzip B | functions |");
console.log("|---|---:|---:|---:|");
const rows = [...groups].sort((a, b) => b[1].bytes - a[1].bytes);
for (const [crate, g] of rows.slice(0, opt.top)) console.log(`| ${crate} | ${fmt(g.bytes)} | ${fmt(gz(g.parts))} | ${fmt(g.functions)} |`);
const rest = rows.slice(opt.top);
if (rest.length) console.log(`| ${rest.length} others | ${fmt(rest.reduce((a, [, g]) => a + g.bytes, 0))} | ${fmt(gz(rest.flatMap(([, g]) => g.parts)))} | ${fmt(rest.reduce((a, [, g]) => a + g.functions, 0))} |`);
console.log(`| data (strings, tables, the password list) | ${fmt(dataBytes)} | ${fmt(gz(data))} | |`);
if (opt.functions) {
  console.log("\nlargest functions:");
  const all = bodies.map((b) => ({ name: names.get(b.index) ?? `func${b.index}`, size: b.bytes.length })).sort((a, b) => b.size - a.size);
  for (const f of all.slice(0, opt.functions)) console.log(`${String(f.size).padStart(8)} ${f.name.slice(0, 160)}`);
}
