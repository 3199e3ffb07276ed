// A local D1 for bare workerd (bench/soak.mjs): the runtime's own D1 client
// (`cloudflare-internal:d1-api`, the module behind every D1 binding, wrapped
// around a service binding `fetcher`) talks to this Worker over D1's HTTP
// protocol, the one Miniflare's D1 speaks: POST /query or /execute with
// `{sql, params}` or an array of them and `?resultsFormat=`, answered with one
// `{success, results, meta}` per statement. The statements run in one
// SQLite-backed Durable Object, all of a request's statements in one
// transaction, as D1 runs a batch. Blobs travel as arrays of bytes, as D1's
// client sends and expects them.
//
// Its own service, so its own isolate: nothing here is counted in the memory
// of Portcullis's isolate. The schema comes from the inner text binding
// MIGRATIONS (migrations/*.sql in order) and SEED (rows the bench needs),
// applied when the object first starts.
import { DurableObject, WorkerEntrypoint } from "cloudflare:workers";

const bytes = (v) => (Array.isArray(v) ? new Uint8Array(v).buffer : v);
const plain = (v) => (v instanceof ArrayBuffer ? Array.from(new Uint8Array(v)) : v);

export class Database extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    ctx.blockConcurrencyWhile(async () => {
      const done = this.sql.exec("SELECT name FROM sqlite_master WHERE name = '_soak_migrated'").toArray().length > 0;
      if (done) return;
      for (const script of [env.MIGRATIONS, env.SEED ?? ""]) if (script.trim()) this.sql.exec(script);
      this.sql.exec("CREATE TABLE _soak_migrated (at INTEGER)");
    });
  }

  #one(query, format) {
    const before = this.sql.exec("SELECT total_changes() AS c, last_insert_rowid() AS r").one();
    const cursor = this.sql.exec(query.sql, ...(query.params ?? []).map(bytes));
    const columns = cursor.columnNames;
    const rows = Array.from(cursor.raw(), (row) => row.map(plain));
    const after = this.sql.exec("SELECT total_changes() AS c, last_insert_rowid() AS r").one();
    const changes = after.c - before.c;
    const results = format === "ROWS_AND_COLUMNS" ? { columns, rows } : format === "NONE" ? null : rows.map((r) => Object.fromEntries(columns.map((c, i) => [c, r[i]])));
    return {
      success: true,
      results,
      meta: {
        served_by: "portcullis-soak.d1",
        served_by_primary: true,
        duration: 0,
        changes,
        last_row_id: after.r,
        changed_db: changes > 0,
        size_after: this.sql.databaseSize,
        rows_read: cursor.rowsRead,
        rows_written: cursor.rowsWritten,
      },
    };
  }

  /** Runs `queries` in one transaction; a failure rolls all of them back. */
  run(queries, format) {
    try {
      return this.ctx.storage.transactionSync(() => queries.map((q) => this.#one(q, format)));
    } catch (e) {
      return { success: false, error: e?.message ?? String(e) };
    }
  }
}

export default class extends WorkerEntrypoint {
  async fetch(request) {
    const url = new URL(request.url);
    if (request.method !== "POST" || !["/query", "/execute"].includes(url.pathname)) return new Response("not found", { status: 404 });
    const body = await request.json();
    const queries = (Array.isArray(body) ? body : [body]).filter((q) => q.sql.replace(/^\s*--.*/gm, "").trim());
    const stub = this.env.DATABASE.get(this.env.DATABASE.idFromName("DB"));
    const answer = await stub.run(queries, url.searchParams.get("resultsFormat") ?? "ARRAY_OF_OBJECTS");
    const headers = { "content-type": "application/json" };
    // A session (withSession) reads its bookmark from every answer: there is one primary.
    if (request.headers.has("x-cf-d1-session-commit-token")) headers["x-cf-d1-session-commit-token"] = "0";
    return new Response(JSON.stringify(answer), { headers });
  }
}
