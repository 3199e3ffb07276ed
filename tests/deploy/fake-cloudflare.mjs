// A stand-in for the part of the Cloudflare API that `npm run deploy` reaches
// through wrangler (CLOUDFLARE_API_BASE_URL points wrangler at it): accounts,
// D1, KV, Queues, Worker secrets, script uploads and deployments. It keeps
// state in memory and records every request, so a test can run the real
// wrangler CLI against it and see what changed. Response shapes follow what
// wrangler 4 reads (node_modules/wrangler/wrangler-dist/cli.js) and the API
// reference's envelopes ({success, errors, messages, result}).
import http from "node:http";
import crypto from "node:crypto";

const ok = (result, extra = {}) => ({ success: true, errors: [], messages: [], result, ...extra });
const fail = (code, message) => ({ success: false, errors: [{ code, message }], messages: [], result: null });
// Ids and times are deterministic per fake, so recorded outputs diff cleanly.
let counter = 0;
const hex32 = () => crypto.createHash("sha256").update(`fake-${++counter}`).digest("hex").slice(0, 32);
const uuid = () => hex32().replace(/^(.{8})(.{4})(.{4})(.{4})(.{12})$/, "$1-$2-$3-$4-$5");
const NOW = "2026-12-01T00:00:00.000Z";

/**
 * Starts the fake on a free loopback port: `{url, state, requests, close}`.
 * `options.token`: the API token it accepts; `options.accounts`: the login's
 * accounts; `options.deny`: a function (method, path) => true to answer
 * 403 "Authentication error" [code: 10000], as the API does for a token
 * without the permission.
 */
export async function startFakeCloudflare({ token = "test-token", accounts = [{ id: "a1b2c3d4e5f60718293a4b5c6d7e8f90", name: "Example" }], deny = () => false } = {}) {
  counter = 0;
  const state = {
    d1: [], // {uuid, name, created_at, tables: Set, migrations: []}
    kv: [], // {id, title}
    queues: [], // {queue_id, queue_name, consumers: []}
    scripts: new Map(), // name -> {secrets: Map, versions: [], deployments: [], content, schedules, subdomain}
    subdomain: "example-sub",
    domains: [], // {id, hostname, service, zone_name}
  };
  const requests = [];

  const script = (name) => state.scripts.get(name);
  const route = (method, pattern) => ({ method, re: new RegExp(`^${pattern.replace(/:(\w+)/g, "(?<$1>[^/]+)")}$`) });
  const handlers = [];
  const on = (method, pattern, fn) => handlers.push({ ...route(method, pattern), fn });

  on("GET", "/user/tokens/verify", () => [200, ok({ id: hex32(), status: "active" })]);
  on("GET", "/user", () => [200, ok({ id: hex32(), email: "ops@example.com" })]);
  on("GET", "/accounts", () => [200, ok(accounts, { result_info: { page: 1, per_page: 50, count: accounts.length, total_count: accounts.length } })]);
  on("GET", "/memberships", () => [200, ok(accounts.map((a) => ({ id: hex32(), account: a, status: "accepted" })))]);

  // D1
  on("GET", "/accounts/:a/d1/database", (_m, q) => {
    const per = Number(q.get("per_page") ?? 10);
    const page = Number(q.get("page") ?? 1);
    const list = state.d1.map((d) => ({ uuid: d.uuid, name: d.name, created_at: d.created_at, version: "production", num_tables: d.tables.size, file_size: 12288 }));
    return [200, ok(list.slice((page - 1) * per, page * per))];
  });
  on("POST", "/accounts/:a/d1/database", (_m, _q, body) => {
    const { name } = JSON.parse(body);
    if (state.d1.some((d) => d.name === name)) return [400, fail(7502, `A database with that name already exists`)];
    const db = { uuid: uuid(), name, created_at: NOW, tables: new Set(), migrations: [] };
    state.d1.push(db);
    return [200, ok({ uuid: db.uuid, name: db.name, created_in_region: "WEUR" })];
  });
  on("GET", "/accounts/:a/d1/database/:id", (m) => {
    const db = state.d1.find((d) => d.uuid === m.id);
    return db ? [200, ok({ uuid: db.uuid, name: db.name, version: "production", num_tables: db.tables.size, file_size: 12288, running_in_region: "WEUR" })] : [404, fail(7404, "The database could not be found")];
  });
  on("POST", "/accounts/:a/d1/database/:id/query", (m, _q, body) => {
    const db = state.d1.find((d) => d.uuid === m.id);
    if (!db) return [404, fail(7404, "The database could not be found")];
    const { sql } = JSON.parse(body);
    return [200, ok(runSql(db, sql))];
  });
  on("POST", "/accounts/:a/d1/database/:id/raw", (m, _q, body) => {
    const db = state.d1.find((d) => d.uuid === m.id);
    if (!db) return [404, fail(7404, "The database could not be found")];
    const { sql } = JSON.parse(body);
    return [200, ok(runSql(db, sql).map((r) => ({ ...r, results: { columns: Object.keys(r.results[0] ?? {}), rows: r.results.map((x) => Object.values(x)) } })))];
  });
  on("GET", "/accounts/:a/d1/database/:id/time_travel/bookmark", () => [200, ok({ bookmark: "00000001-00000000-00004e5e-0000000000000000000000000000000" })]);

  // KV
  on("GET", "/accounts/:a/storage/kv/namespaces", (_m, q) => {
    const per = Number(q.get("per_page") ?? 20);
    const page = Number(q.get("page") ?? 1);
    const list = [...state.kv].sort((x, y) => x.title.localeCompare(y.title)).map((n) => ({ id: n.id, title: n.title, supports_url_encoding: true }));
    return [200, ok(list.slice((page - 1) * per, page * per), { result_info: { page, per_page: per, count: Math.min(per, Math.max(0, list.length - (page - 1) * per)), total_count: list.length } })];
  });
  on("POST", "/accounts/:a/storage/kv/namespaces", (_m, _q, body) => {
    const { title } = JSON.parse(body);
    if (state.kv.some((n) => n.title === title)) return [400, fail(10014, "a namespace with this account ID and title already exists")];
    const ns = { id: hex32(), title };
    state.kv.push(ns);
    return [200, ok({ id: ns.id, title, supports_url_encoding: true })];
  });

  // Queues
  const queueView = (q) => ({
    queue_id: q.queue_id,
    queue_name: q.queue_name,
    created_on: "2026-12-01T00:00:00Z",
    modified_on: "2026-12-01T00:00:00Z",
    producers_total_count: 0,
    producers: [],
    consumers_total_count: q.consumers.length,
    consumers: q.consumers,
    settings: { delivery_delay: 0, message_retention_period: 345600 },
  });
  on("GET", "/accounts/:a/queues", (_m, q) => {
    const name = q.get("name");
    const list = state.queues.filter((x) => !name || x.queue_name === name).map(queueView);
    return [200, ok(list)];
  });
  on("POST", "/accounts/:a/queues", (_m, _q, body) => {
    const { queue_name } = JSON.parse(body);
    if (state.queues.some((x) => x.queue_name === queue_name)) return [409, fail(11009, "A queue with this name already exists")];
    const q = { queue_id: hex32(), queue_name, consumers: [] };
    state.queues.push(q);
    return [200, ok(queueView(q))];
  });
  on("GET", "/accounts/:a/queues/:id", (m) => {
    const q = state.queues.find((x) => x.queue_id === m.id);
    return q ? [200, ok(queueView(q))] : [404, fail(11000, "Queue does not exist")];
  });
  on("GET", "/accounts/:a/queues/:id/consumers", (m) => {
    const q = state.queues.find((x) => x.queue_id === m.id);
    return q ? [200, ok(q.consumers)] : [404, fail(11000, "Queue does not exist")];
  });
  on("POST", "/accounts/:a/queues/:id/consumers", (m, _q, body) => {
    const q = state.queues.find((x) => x.queue_id === m.id);
    if (!q) return [404, fail(11000, "Queue does not exist")];
    const c = { consumer_id: hex32(), type: "worker", ...JSON.parse(body) };
    q.consumers.push(c);
    return [200, ok(c)];
  });
  on("PUT", "/accounts/:a/queues/:id/consumers/:cid", (m, _q, body) => {
    const q = state.queues.find((x) => x.queue_id === m.id);
    const i = q?.consumers.findIndex((c) => c.consumer_id === m.cid) ?? -1;
    if (i < 0) return [404, fail(11000, "Consumer does not exist")];
    q.consumers[i] = { ...q.consumers[i], ...JSON.parse(body) };
    return [200, ok(q.consumers[i])];
  });

  // Workers: secrets
  const notFound = () => [404, fail(10007, "This Worker does not exist on your account.")];
  on("GET", "/accounts/:a/workers/scripts/:name/secrets", (m) => {
    const s = script(m.name);
    return s ? [200, ok([...s.secrets.keys()].map((name) => ({ name, type: "secret_text" })))] : notFound();
  });
  on("PATCH", "/accounts/:a/workers/scripts/:name/secrets-bulk", (m, _q, body) => {
    const s = script(m.name);
    if (!s) return notFound();
    for (const [k, v] of Object.entries(JSON.parse(body).secrets ?? {})) {
      if (v === null) s.secrets.delete(k);
      else s.secrets.set(k, v.text);
    }
    // A secrets change makes a new version (without the previous one's tag) and deploys it.
    const version = newVersion(s, null);
    s.deployments.unshift(newDeployment(version.id));
    return [200, ok(null)];
  });

  // Workers: scripts, versions, deployments
  const newVersion = (s, tag) => {
    const v = { id: uuid(), number: s.versions.length + 1, annotations: tag ? { "workers/tag": tag } : {}, metadata: { created_on: NOW, author_email: "ops@example.com", source: "wrangler" } };
    s.versions.unshift(v);
    return v;
  };
  const newDeployment = (versionId) => ({ id: uuid(), source: "wrangler", strategy: "percentage", author_email: "ops@example.com", created_on: NOW, annotations: {}, versions: [{ version_id: versionId, percentage: 100 }] });
  const upload = (m, req, body) => {
    const existing = script(m.name);
    const s = existing ?? { secrets: new Map(), versions: [], deployments: [], schedules: [], subdomain: { enabled: false, previews_enabled: false } };
    state.scripts.set(m.name, s);
    const metadata = multipartPart(req.headers["content-type"], body, "metadata");
    const meta = metadata ? JSON.parse(metadata) : {};
    s.lastMetadata = meta;
    const v = newVersion(s, meta.annotations?.["workers/tag"] ?? null);
    s.deployments.unshift(newDeployment(v.id));
    return [200, ok({ id: m.name, etag: hex32(), deployment_id: v.id.replaceAll("-", ""), startup_time_ms: 12, handlers: ["fetch", "queue", "scheduled"], modified_on: NOW, created_on: NOW })];
  };
  on("PUT", "/accounts/:a/workers/scripts/:name", (m, _q, body, req) => upload(m, req, body));
  on("POST", "/accounts/:a/workers/scripts/:name/versions", (m, _q, body, req) => {
    const s = script(m.name);
    if (!s) return notFound();
    const metadata = multipartPart(req.headers["content-type"], body, "metadata");
    const meta = metadata ? JSON.parse(metadata) : {};
    s.lastMetadata = meta;
    const v = newVersion(s, meta.annotations?.["workers/tag"] ?? null);
    return [200, ok({ id: v.id, number: v.number, metadata: v.metadata, annotations: v.annotations, resources: { script: { etag: hex32(), handlers: ["fetch", "queue", "scheduled"] }, bindings: [] }, startup_time_ms: 12 })];
  });
  on("POST", "/accounts/:a/workers/scripts/:name/deployments", (m, _q, body) => {
    const s = script(m.name);
    if (!s) return notFound();
    const req = JSON.parse(body);
    const d = { ...newDeployment(null), versions: req.versions, annotations: req.annotations ?? {} };
    s.deployments.unshift(d);
    return [200, ok(d)];
  });
  on("GET", "/accounts/:a/workers/services/:name", (m) => (script(m.name) ? [200, ok({ id: m.name, default_environment: { environment: "production", script: { id: m.name, tag: hex32(), last_deployed_from: "wrangler" } } })] : notFound()));
  on("GET", "/accounts/:a/workers/scripts/:name/settings", (m) => (script(m.name) ? [200, ok({ bindings: [], tags: [], logpush: false, observability: { enabled: true } })] : notFound()));
  on("PATCH", "/accounts/:a/workers/scripts/:name/script-settings", (m) => (script(m.name) ? [200, ok({})] : notFound()));
  on("GET", "/accounts/:a/workers/scripts/:name/script-settings", (m) => (script(m.name) ? [200, ok({ tags: [], logpush: false, observability: { enabled: true } })] : notFound()));
  on("GET", "/accounts/:a/workers/scripts/:name/deployments", (m) => {
    const s = script(m.name);
    return s ? [200, ok({ deployments: s.deployments })] : notFound();
  });
  on("GET", "/accounts/:a/workers/scripts/:name/versions/:vid", (m) => {
    const v = script(m.name)?.versions.find((x) => x.id === m.vid);
    return v ? [200, ok({ ...v, resources: { script: { etag: hex32(), handlers: ["fetch"] }, script_runtime: { compatibility_date: "2026-11-01" }, bindings: [] } })] : [404, fail(10220, "version not found")];
  });
  on("POST", "/accounts/:a/workers/scripts/:name/domains/changeset", (m, _q, body) => {
    const wanted = JSON.parse(body);
    const mine = state.domains.filter((d) => d.service === m.name);
    return [200, ok({
      added: wanted.filter((w) => !state.domains.some((d) => d.hostname === w.hostname)),
      removed: mine.filter((d) => !wanted.some((w) => w.hostname === d.hostname)),
      updated: wanted.filter((w) => state.domains.some((d) => d.hostname === w.hostname)).map((w) => ({ ...w, id: state.domains.find((d) => d.hostname === w.hostname).id, modified: state.domains.find((d) => d.hostname === w.hostname).service !== m.name })),
      conflicting: [],
    })];
  });
  on("PUT", "/accounts/:a/workers/scripts/:name/domains/records", (m, _q, body) => {
    const { origins } = JSON.parse(body);
    state.domains = state.domains.filter((d) => d.service !== m.name && !origins.some((o) => o.hostname === d.hostname));
    for (const o of origins) state.domains.push({ id: hex32(), hostname: o.hostname, service: m.name, zone_name: o.zone_name ?? null });
    return [200, ok(state.domains.filter((d) => d.service === m.name))];
  });
  on("GET", "/accounts/:a/workers/workers/:name", (m) => (script(m.name) ? [200, ok({ id: hex32(), name: m.name, subdomain: script(m.name).subdomain })] : notFound()));
  on("GET", "/accounts/:a/workers/subdomain", () => [200, ok({ subdomain: state.subdomain })]);
  on("GET", "/accounts/:a/workers/scripts/:name/subdomain", (m) => (script(m.name) ? [200, ok(script(m.name).subdomain)] : notFound()));
  on("POST", "/accounts/:a/workers/scripts/:name/subdomain", (m, _q, body) => {
    const s = script(m.name);
    if (!s) return notFound();
    s.subdomain = { previews_enabled: false, ...JSON.parse(body) };
    return [200, ok(s.subdomain)];
  });
  on("PUT", "/accounts/:a/workers/scripts/:name/schedules", (m, _q, body) => {
    const s = script(m.name);
    if (!s) return notFound();
    s.schedules = JSON.parse(body);
    return [200, ok({ schedules: s.schedules })];
  });
  on("GET", "/accounts/:a/workers/scripts/:name/schedules", (m) => (script(m.name) ? [200, ok({ schedules: script(m.name).schedules })] : notFound()));

  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      const url = new URL(req.url, "http://x");
      const p = url.pathname.replace(/^\/client\/v4/, "");
      const auth = req.headers.authorization ?? "";
      const entry = { method: req.method, path: p, query: url.search };
      requests.push(entry);
      const send = (status, json) => {
        entry.status = status;
        res.writeHead(status, { "content-type": "application/json" });
        res.end(JSON.stringify(json));
      };
      if (auth !== `Bearer ${token}`) return send(400, fail(6003, "Invalid request headers"));
      if (deny(req.method, p)) return send(403, fail(10000, "Authentication error"));
      for (const h of handlers) {
        if (h.method !== req.method) continue;
        const m = h.re.exec(p);
        if (!m) continue;
        const before = snapshot(state);
        const [status, json] = h.fn(m.groups ?? {}, url.searchParams, body.toString("utf8"), req);
        entry.changed = snapshot(state) !== before;
        return send(status, json);
      }
      entry.unknown = true;
      return send(404, fail(7003, `No route for that URI (fake: ${req.method} ${p})`));
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}/client/v4`,
    state,
    requests,
    /** The requests that changed the account's state. */
    changes: () => requests.filter((r) => r.changed),
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

/** The state as text, to tell whether a request changed it. */
function snapshot(state) {
  return JSON.stringify(state, (_k, v) => (v instanceof Set ? [...v] : v instanceof Map ? [...v.entries()] : v));
}

/** The text of one part of a multipart/form-data body. */
function multipartPart(contentType, body, name) {
  const m = /boundary=(?:"([^"]+)"|([^;]+))/.exec(contentType ?? "");
  if (!m) return null;
  const boundary = `--${m[1] ?? m[2]}`;
  for (const part of body.toString("latin1").split(boundary)) {
    const [head, ...rest] = part.split("\r\n\r\n");
    if (new RegExp(`name="${name}"`).test(head)) return rest.join("\r\n\r\n").replace(/\r\n$/, "");
  }
  return null;
}

/**
 * Just enough SQL for `wrangler d1 migrations apply`: its migrations table,
 * the list of applied names, and the migration files (recorded, not run).
 */
function runSql(db, sql) {
  const results = [];
  const meta = { changed_db: false, changes: 0, duration: 1, last_row_id: 0, rows_read: 0, rows_written: 0, size_after: 12288 };
  if (/CREATE TABLE IF NOT EXISTS\s+"?d1_migrations"?/i.test(sql)) db.tables.add("d1_migrations");
  if (/^\s*SELECT\s+\*\s+FROM\s+"?d1_migrations"?/i.test(sql)) {
    results.push({ results: db.migrations.map((name, i) => ({ id: i + 1, name, applied_at: "2026-12-01 00:00:00" })), success: true, meta });
    return results;
  }
  for (const m of sql.matchAll(/INSERT INTO\s+"?d1_migrations"?\s*\(name\)\s*values\s*\('([^']+)'\)/gi)) db.migrations.push(m[1]);
  results.push({ results: [], success: true, meta });
  return results;
}
