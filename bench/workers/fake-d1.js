// A stand-in for the D1 binding `DB` under bare workerd (no Miniflare), loaded as
// a workerd "wrapped" binding. It is a class named D1Database because workers-rs
// checks the binding's constructor name. It serves exactly what Portcullis's key
// ring needs: the signing_keys SELECT returns the rows given in the inner binding
// ROWS (JSON); an INSERT INTO signing_keys adds a row. Any other statement returns
// no rows. Every statement is logged ("[fake-d1] ...") so the bench can count D1
// calls and show that the gateway's hot path makes none once the isolate is warm.
class D1Result {
  constructor(results, changes = 0) {
    this.success = true;
    this.results = results;
    this.meta = { changes, duration: 0, rows_read: results.length, rows_written: changes, last_row_id: 0, changed_db: changes > 0, size_after: 0 };
  }
}

class D1PreparedStatement {
  constructor(db, sql, params = []) {
    this.db = db;
    this.sql = sql;
    this.params = params;
  }
  bind(...params) {
    return new D1PreparedStatement(this.db, this.sql, params);
  }
  async all() {
    return this.db._run(this.sql, this.params);
  }
  async first(column) {
    const row = this.db._run(this.sql, this.params).results[0] ?? null;
    if (row === null) return null;
    return column === undefined ? row : (row[column] ?? null);
  }
  async run() {
    return this.db._run(this.sql, this.params);
  }
  async raw() {
    return this.db._run(this.sql, this.params).results.map((r) => Object.values(r));
  }
}

class D1Database {
  constructor(rows) {
    this.rows = rows;
  }
  prepare(sql) {
    return new D1PreparedStatement(this, sql);
  }
  async batch(statements) {
    return statements.map((s) => this._run(s.sql, s.params));
  }
  _run(sql, params) {
    const flat = sql.replace(/\s+/g, " ").trim();
    console.log(`[fake-d1] ${flat.slice(0, 72)}`);
    if (/^SELECT kid, alg, public_key, private_enc, status, created_at, retired_at, publish_until FROM signing_keys/i.test(flat)) {
      return new D1Result(this.rows.slice().sort((a, b) => b.created_at - a.created_at).map((r) => ({ ...r })));
    }
    if (/^INSERT INTO signing_keys/i.test(flat)) {
      if (this.rows.some((r) => r.status === "active")) return new D1Result([], 0);
      const [kid, alg, public_key, private_enc, created_at] = params;
      this.rows.push({ kid, alg, public_key, private_enc, status: "active", created_at, retired_at: null, publish_until: null });
      return new D1Result([], 1);
    }
    return new D1Result([], 0);
  }
}

export default function makeBinding(env) {
  const rows = typeof env.ROWS === "string" ? JSON.parse(env.ROWS) : env.ROWS;
  return new D1Database(structuredClone(rows));
}
