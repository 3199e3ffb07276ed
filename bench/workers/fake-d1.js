// A stand-in for the D1 binding `DB` under bare workerd (no Miniflare), loaded as
// a workerd "wrapped" binding. It is a class named D1Database because workers-rs
// checks the binding's constructor name. It serves exactly what Portcullis's
// gateway needs:
// - the key ring: the signing_keys SELECT returns the rows given in the inner
//   binding ROWS (JSON); an INSERT INTO signing_keys adds a row;
// - the revocation log (migrations/0008_revocations.sql): the inner binding
//   REVOCATIONS (JSON, optional) {sessions: N, users: M} seeds it with N revoked
//   sessions (`bench-revoked-session-<i>`) and M users whose roles changed to none
//   (`bench-revoked-user-<i>`), all recorded at the first read; the
//   gateway's reads of it (rows after a sequence number, and the last one) are
//   answered from that;
// - the `"fresh": true` check: any session id names a live session whose user id
//   is the session id itself (the bench mints such tokens for fresh rules), holding
//   the role `user`.
// Any other statement returns no rows. Every statement is logged ("[fake-d1] ...")
// so the bench can count D1 calls and show what the gateway's hot path makes once
// the isolate is warm.
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
  constructor(rows, revocations) {
    this.rows = rows;
    this.revocations = revocations;
  }
  /** The seeded revocation log, recorded at its first read (outside a request the clock reads 0). */
  revocationLog() {
    if (this.log) return this.log;
    const at = Math.floor(Date.now() / 1000);
    this.log = [];
    for (let i = 0; i < (this.revocations?.sessions ?? 0); i++) {
      this.log.push({ seq: this.log.length + 1, kind: "session", subject: `bench-revoked-session-${i}`, roles: null, at });
    }
    for (let i = 0; i < (this.revocations?.users ?? 0); i++) {
      this.log.push({ seq: this.log.length + 1, kind: "roles", subject: `bench-revoked-user-${i}`, roles: null, at });
    }
    return this.log;
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
    if (/^SELECT seq, kind, subject, roles, at FROM revocations WHERE seq > \?1 AND at > \?2 ORDER BY seq LIMIT \?3/i.test(flat)) {
      const [after, liveAfter, limit] = params;
      return new D1Result(this.revocationLog().filter((r) => r.seq > after && r.at > liveAfter).slice(0, limit).map((r) => ({ ...r })));
    }
    if (/^SELECT MAX\(seq\) AS last_seq FROM revocations/i.test(flat)) {
      return new D1Result([{ last_seq: this.revocationLog().at(-1)?.seq ?? null }]);
    }
    // The fresh rule's session read (src/edge/d1/sessions.rs SESSION_COLUMNS,
    // whatever columns it names): a live session of the user `id`.
    if (/^SELECT id, user_id, [a-z_, ]+ FROM sessions WHERE id = \?1/i.test(flat)) {
      const now = Math.floor(Date.now() / 1000);
      const [id] = params;
      return new D1Result([{ id, user_id: id, created_at: now - 60, last_used_at: now - 60, expires_at: now + 86400, revoked_at: null, ip_address: null, user_agent: null, extra_claims: null, amr: null }]);
    }
    if (/^SELECT group_concat\(role, ','\) AS held_roles FROM user_roles/i.test(flat)) {
      return new D1Result([{ held_roles: "user" }]);
    }
    return new D1Result([], 0);
  }
}

export default function makeBinding(env) {
  const json = (v) => (typeof v === "string" ? JSON.parse(v) : v);
  return new D1Database(structuredClone(json(env.ROWS)), env.REVOCATIONS === undefined ? undefined : json(env.REVOCATIONS));
}
