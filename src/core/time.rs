//! Instants as passed into core: Unix seconds, and their RFC 3339 rendering.

use serde::{Deserialize, Serialize};

/// A point in time, in whole Unix seconds. The edge reads the clock; core only
/// receives these.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnixTime(pub i64);

impl UnixTime {
    /// From milliseconds since the epoch (what `Date.now()` gives).
    pub fn from_millis(ms: f64) -> Self {
        Self((ms / 1000.0).floor() as i64)
    }

    /// This instant plus `secs` seconds (saturating).
    pub fn plus_secs(self, secs: u64) -> Self {
        Self(self.0.saturating_add(i64::try_from(secs).unwrap_or(i64::MAX)))
    }

    /// This instant minus `secs` seconds (saturating).
    pub fn minus_secs(self, secs: u64) -> Self {
        Self(self.0.saturating_sub(i64::try_from(secs).unwrap_or(i64::MAX)))
    }

    /// RFC 3339 in UTC with a `Z` suffix, e.g. `2026-11-23T11:33:56Z`.
    pub fn rfc3339(self) -> String {
        match chrono::DateTime::from_timestamp(self.0, 0) {
            Some(dt) => dt.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            None => "1970-01-01T00:00:00Z".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rfc3339_utc() {
        assert_eq!(UnixTime(0).rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(UnixTime(1_795_433_636).rfc3339(), "2026-11-23T11:33:56Z");
    }

    #[test]
    fn from_millis_floors() {
        assert_eq!(UnixTime::from_millis(1_999.9), UnixTime(1));
    }
}
