//! [`KeyStore`] on D1: the `signing_keys` table, with at most one active key.

use serde::Deserialize;

use super::{changes, text, time, D1Store};
use crate::core::error::Error;
use crate::core::ports::{KeyStore, Result};
use crate::core::signing_keys::{KeyStatus, Kid, StoredKey};
use crate::core::time::UnixTime;
use crate::edge::error::Dependency::D1;

#[derive(Deserialize)]
struct KeyRow {
    kid: String,
    alg: String,
    public_key: String,
    private_enc: String,
    status: String,
    created_at: i64,
    retired_at: Option<i64>,
    publish_until: Option<i64>,
}

impl TryFrom<KeyRow> for StoredKey {
    type Error = Error;
    fn try_from(r: KeyRow) -> std::result::Result<Self, Error> {
        let status = match r.status.as_str() {
            "active" => KeyStatus::Active,
            "retired" => KeyStatus::Retired,
            other => return Err(Error::Internal(format!("signing key {}: unknown status {other}", r.kid))),
        };
        Ok(StoredKey {
            kid: Kid::new(r.kid),
            alg: r.alg,
            public_key: r.public_key,
            private_enc: r.private_enc,
            status,
            created_at: UnixTime(r.created_at),
            retired_at: r.retired_at.map(UnixTime),
            publish_until: r.publish_until.map(UnixTime),
        })
    }
}

impl KeyStore for D1Store {
    async fn load_keys(&self) -> Result<Vec<StoredKey>> {
        self.all::<KeyRow>(
            "SELECT kid, alg, public_key, private_enc, status, created_at, retired_at, publish_until \
             FROM signing_keys ORDER BY created_at DESC",
            &[],
        )
        .await?
        .into_iter()
        .map(StoredKey::try_from)
        .collect()
    }

    async fn insert_first_key(&self, k: &StoredKey) -> Result<bool> {
        let n = self
            .run(
                "INSERT INTO signing_keys (kid, alg, public_key, private_enc, status, created_at) \
                 VALUES (?1, ?2, ?3, ?4, 'active', ?5) ON CONFLICT DO NOTHING",
                &[text(&k.kid), text(&k.alg), text(&k.public_key), text(&k.private_enc), time(k.created_at)],
            )
            .await?;
        Ok(n == 1)
    }

    async fn rotate_key(&self, old_kid: &Kid, k: &StoredKey, now: UnixTime, publish_until: UnixTime) -> Result<bool> {
        // One transaction: the old key is retired only if it is still the
        // active one, and the new key goes in only if no key is active after
        // that — so a rotation that lost a race writes nothing, and the
        // one-active-key index is never even tested.
        let retire = self.stmt(
            "UPDATE signing_keys SET status = 'retired', retired_at = ?2, publish_until = ?3 \
             WHERE kid = ?1 AND status = 'active'",
            &[text(old_kid), time(now), time(publish_until)],
        )?;
        let insert = self.stmt(
            "INSERT INTO signing_keys (kid, alg, public_key, private_enc, status, created_at) \
             SELECT ?1, ?2, ?3, ?4, 'active', ?5 \
             WHERE NOT EXISTS (SELECT 1 FROM signing_keys WHERE status = 'active')",
            &[text(&k.kid), text(&k.alg), text(&k.public_key), text(&k.private_enc), time(k.created_at)],
        )?;
        let prune =
            self.stmt("DELETE FROM signing_keys WHERE status = 'retired' AND publish_until <= ?1", &[time(now)])?;
        let results = self.batch(vec![retire, insert, prune]).await?;
        match results.get(1) {
            Some(r) => Ok(changes(r)? == 1),
            None => Err(D1.failed("short batch result")),
        }
    }

    async fn withdraw_key(&self, kid: &Kid, now: UnixTime) -> Result<bool> {
        let n = self
            .run(
                "DELETE FROM signing_keys WHERE kid = ?1 AND status = 'retired' AND publish_until > ?2",
                &[text(kid), time(now)],
            )
            .await?;
        Ok(n == 1)
    }
}
