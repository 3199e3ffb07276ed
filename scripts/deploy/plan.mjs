// What `npm run deploy` has to do on the account, decided from what the
// deploy config wants and what the account already has. Pure: the wrangler
// calls that read the account are in wrangler.mjs, the changes in deploy.mjs.
// Running the plan and then planning again yields a plan with nothing to do.

/** A placeholder id (the committed wrangler.toml's zeros) or none: look the resource up by name. */
export const isPlaceholderId = (id) => typeof id !== "string" || id.trim() === "" || /^[0-]+$/.test(id.trim());

/** wrangler's own naming for a provisioned resource (`<worker>-<binding>`), used for the KV namespace's title. */
export const kvTitle = (worker, binding) => `${worker}-${binding.toLowerCase().replaceAll("_", "-")}`;

/**
 * The account resources a deploy config (wrangler JSON, ids possibly
 * placeholders) binds: `{d1: [{binding, name, id}], kv: [{binding, title, id}],
 * queues: [name]}`; `id` is null where it is to be looked up.
 */
export function wantedResources(config) {
  const d1 = (config.d1_databases ?? []).map((d) => ({
    binding: d.binding,
    name: d.database_name,
    id: isPlaceholderId(d.database_id) ? null : d.database_id.trim(),
  }));
  const kv = (config.kv_namespaces ?? []).map((k) => ({
    binding: k.binding,
    title: kvTitle(config.name, k.binding),
    id: isPlaceholderId(k.id) ? null : k.id.trim(),
  }));
  const queues = [];
  const addQueue = (q) => {
    if (typeof q === "string" && q !== "" && !queues.includes(q)) queues.push(q);
  };
  for (const p of config.queues?.producers ?? []) addQueue(p.queue);
  for (const c of config.queues?.consumers ?? []) {
    addQueue(c.queue);
    addQueue(c.dead_letter_queue);
  }
  return { d1, kv, queues };
}

/**
 * What to do about each resource, given the account's databases
 * (`[{name, id}]`), namespaces (`[{title, id}]`) and which queues exist
 * (`Set` of names). Every entry has `action`: `use` (it exists; `id` set) or
 * `create`. An id given in the config that the account does not have is a
 * problem, not something to create.
 */
export function planResources(wanted, existing) {
  const problems = [];
  const d1 = wanted.d1.map((w) => {
    if (w.id) {
      const found = existing.d1.find((d) => d.id === w.id);
      if (!found) problems.push(`D1 database_id ${w.id} (binding ${w.binding}) is not a database of this account`);
      return { ...w, action: "use", name: found?.name ?? w.name };
    }
    const found = existing.d1.find((d) => d.name === w.name);
    return found ? { ...w, id: found.id, action: "use" } : { ...w, action: "create" };
  });
  const kv = wanted.kv.map((w) => {
    if (w.id) {
      const found = existing.kv.find((k) => k.id === w.id);
      if (!found) problems.push(`KV namespace id ${w.id} (binding ${w.binding}) is not a namespace of this account`);
      return { ...w, action: "use", title: found?.title ?? w.title };
    }
    const found = existing.kv.find((k) => k.title === w.title);
    return found ? { ...w, id: found.id, action: "use" } : { ...w, action: "create" };
  });
  const queues = wanted.queues.map((name) => ({ name, action: existing.queues.has(name) ? "use" : "create" }));
  return { d1, kv, queues, problems };
}

/**
 * What to do about each needed secret (see secrets.mjs `neededSecrets`):
 * `keep` (already on the Worker: never overwritten), `env` (set from the
 * variable of that name in the environment of `npm run deploy`), `generate`,
 * `skip` (optional and not provided) or `missing` (required, cannot be made:
 * a problem). `existing`: the Worker's secret names, or null when unknown
 * (a dry run), in which case nothing is `keep` and nothing `missing`.
 */
export function planSecrets(needed, existing, env) {
  const has = (name) => typeof env[name] === "string" && env[name] !== "";
  return needed.map((s) => {
    if (existing?.has(s.name)) return { ...s, action: "keep", ignoredEnv: has(s.name) };
    if (has(s.name)) return { ...s, action: "env" };
    if (s.generate) return { ...s, action: "generate" };
    if (!s.required) return { ...s, action: "skip" };
    return { ...s, action: existing ? "missing" : "unknown" };
  });
}

/**
 * The deploy config with each binding's real id filled in from a resource
 * plan whose entries all exist (`action` `use`).
 */
export function withIds(config, resources) {
  const d1Id = new Map(resources.d1.map((d) => [d.binding, d.id]));
  const kvId = new Map(resources.kv.map((k) => [k.binding, k.id]));
  return {
    ...config,
    d1_databases: (config.d1_databases ?? []).map((d) => ({ ...d, database_id: d1Id.get(d.binding) ?? d.database_id })),
    kv_namespaces: (config.kv_namespaces ?? []).map((k) => ({ ...k, id: kvId.get(k.binding) ?? k.id })),
  };
}
