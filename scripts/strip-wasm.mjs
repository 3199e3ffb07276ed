// Drops the custom sections of the built module — the `name` section (every Rust
// function's name, about an eighth of the module), `producers` and
// `target_features` — which the runtime does not use: it compiles and runs the
// module the same without them, but downloads, parses and keeps less.
// worker-build's wasm-opt step always keeps the names (`--debuginfo`), so this
// runs after it.
//
// The module with its names is kept beside it, its code byte for byte the same:
// profiles (`npm run bench`) and stack traces are read against it, since without
// names a wasm frame is only `wasm-function[N]`.
//
//   node scripts/strip-wasm.mjs build/index_bg.wasm build/named/index_bg.wasm
import fs from "node:fs";
import path from "node:path";

const [file, namedCopy] = process.argv.slice(2);
if (!file || !namedCopy) {
  console.error("usage: node scripts/strip-wasm.mjs build/index_bg.wasm build/named/index_bg.wasm");
  process.exit(2);
}
const wasm = fs.readFileSync(file);
if (wasm.readUInt32LE(0) !== 0x6d736100 || wasm.readUInt32LE(4) !== 1) {
  console.error(`[strip-wasm] ${file} is not a WebAssembly module (version 1)`);
  process.exit(1);
}

let i = 8;
const leb = () => {
  let value = 0;
  for (let shift = 0; ; shift += 7) {
    const b = wasm[i++];
    value += (b & 0x7f) * 2 ** shift;
    if (b < 0x80) return value;
  }
};
const kept = [wasm.subarray(0, 8)];
const dropped = [];
while (i < wasm.length) {
  const start = i;
  const id = wasm[i++];
  const size = leb();
  const end = i + size;
  if (end > wasm.length) {
    console.error(`[strip-wasm] ${file}: a section runs past the end of the file`);
    process.exit(1);
  }
  if (id === 0) {
    const len = leb();
    dropped.push(`${wasm.subarray(i, i + len).toString()} ${end - start} B`);
  } else {
    kept.push(wasm.subarray(start, end));
  }
  i = end;
}
if (dropped.length === 0) {
  console.log(`[strip-wasm] ${file} has no custom sections (already stripped?); left as it is`);
  process.exit(0);
}
fs.mkdirSync(path.dirname(namedCopy), { recursive: true });
fs.writeFileSync(namedCopy, wasm);
const out = Buffer.concat(kept);
fs.writeFileSync(file, out);
console.log(`[strip-wasm] dropped ${dropped.join(", ")}: ${wasm.length} -> ${out.length} B (with names: ${namedCopy})`);
