//! The JSON pieces both status documents share: `.status` on the mount and
//! the HTTP status page (whose shape is sequins'). The catalog holds plain
//! data; how it is spelled in JSON is decided here and by the two front
//! ends.

use std::time::SystemTime;

use serde::Serialize;

use crate::catalog::Progress;

/// `t` as sequins prints times: RFC 3339 in UTC, truncated to seconds
/// (`2017-07-14T02:40:00Z`).
pub fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t)
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A load's progress.
#[derive(Debug, Serialize)]
pub struct ProgressJson {
    pub files_done: u64,
    pub files_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub records_done: u64,
}

impl From<&Progress> for ProgressJson {
    fn from(p: &Progress) -> Self {
        ProgressJson {
            files_done: p.files_done,
            files_total: p.files_total,
            bytes_done: p.bytes_done,
            bytes_total: p.bytes_total,
            records_done: p.records_done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn utc_to_the_second() {
        let t = UNIX_EPOCH + Duration::from_millis(1_500_000_000_999);
        assert_eq!(rfc3339(t), "2017-07-14T02:40:00Z");
    }
}
