// A local D1 for the bench's sign-in measurements, run in a workerd process of its own
// so that the SQL work is not counted in Portcullis's CPU time (on Cloudflare, D1 runs
// elsewhere too). It answers the HTTP protocol of workerd's own D1 binding
// (`cloudflare-internal:d1-api`, which Portcullis's process uses as its `DB`):
// `POST /query` or `/execute`, `?resultsFormat=ROWS_AND_COLUMNS|ARRAY_OF_OBJECTS|NONE`, a body
// `{sql, params}` or a list of them (a batch: one transaction), answered with a list of
// `{success, results, meta}`. The database is one SQLite-backed Durable Object (stored where the config says),
// with the migrations (the MIGRATIONS binding: a JSON list of SQL texts) applied at start.
import { DurableObject } from "cloudflare:workers";

export class Database extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    ctx.blockConcurrencyWhile(async () => {
      for (const migration of JSON.parse(env.MIGRATIONS)) this.sql.exec(migration);
    });
  }

  async fetch(request) {
    const url = new URL(request.url);
    if (request.method !== "POST" || !["/query", "/execute"].includes(url.pathname)) return new Response("not found", { status: 404 });
    const format = url.searchParams.get("resultsFormat") ?? "ARRAY_OF_OBJECTS";
    const body = await request.json();
    const statements = Array.isArray(body) ? body : [body];
    try {
      const results = this.ctx.storage.transactionSync(() => statements.map((s) => this.run(s, format)));
      return Response.json(results);
    } catch (e) {
      return Response.json([{ success: false, error: String(e?.message ?? e), meta: {} }], { status: 500 });
    }
  }

  totalChanges() {
    return this.sql.exec("SELECT total_changes() AS n").one().n;
  }

  run({ sql, params = [] }, format) {
    const t0 = Date.now();
    const before = this.totalChanges();
    const args = params.map((p) => (Array.isArray(p) ? new Uint8Array(p) : p));
    const cursor = this.sql.exec(sql, ...args);
    const columns = cursor.columnNames;
    const rows = [...cursor.raw()].map((row) => row.map((v) => (v instanceof ArrayBuffer ? [...new Uint8Array(v)] : v)));
    const changes = this.totalChanges() - before;
    const last_row_id = this.sql.exec("SELECT last_insert_rowid() AS id").one().id;
    const results =
      format === "NONE" ? undefined : format === "ROWS_AND_COLUMNS" ? { columns, rows } : rows.map((r) => Object.fromEntries(columns.map((c, i) => [c, r[i]])));
    return {
      success: true,
      ...(results === undefined ? {} : { results }),
      meta: {
        duration: Date.now() - t0,
        changes,
        last_row_id,
        changed_db: changes > 0,
        size_after: this.sql.databaseSize,
        rows_read: cursor.rowsRead,
        rows_written: cursor.rowsWritten,
      },
    };
  }
}

export default {
  async fetch(request, env) {
    return env.DATABASE.get(env.DATABASE.idFromName("portcullis")).fetch(request);
  },
};
