// Command-line options for the bench scripts: `--name value` numbers,
// `--flag` switches, `--help` printing the script's leading `//` comment.

import fs from "node:fs";

/**
 * Parses `argv` into a copy of `defaults`. `spec` maps each option to what
 * it does: `["num", key]` (a positive number), `["set", key, value]` (a
 * switch), `["with", fn]` (fn(options, nextValue) for anything else) or
 * `["all", object]` (assigns a preset). `script` is the calling script's
 * path, whose leading comment block `--help` prints.
 */
export function parseOptions(argv, defaults, spec, script) {
  const o = structuredClone(defaults);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--help" || a === "-h") {
      const lines = fs.readFileSync(script, "utf8").split("\n");
      console.log(lines.slice(0, lines.findIndex((l) => !l.startsWith("//"))).join("\n"));
      process.exit(0);
    }
    const rule = spec[a];
    if (!rule) throw new Error(`unknown option ${a} (try --help)`);
    const [kind, x, y] = rule;
    if (kind === "num") {
      const v = Number(argv[++i]);
      if (!Number.isFinite(v) || v <= 0) throw new Error(`${a} needs a positive number`);
      o[x] = v;
    } else if (kind === "set") o[x] = y;
    else if (kind === "all") Object.assign(o, x);
    else if (kind === "with") x(o, argv[++i]);
  }
  return o;
}
