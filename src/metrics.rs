//! Process metrics in the Prometheus text format (version 0.0.4).
//!
//! Two kinds of figures live here:
//! - counters updated on hot paths (every HTTP request), kept in plain
//!   atomics so that recording never takes a lock and never allocates;
//! - figures that describe the catalog (key counts, versions, load
//!   progress), which are read from the [`Catalog`] when `/metrics` is
//!   scraped rather than copied here, so they can never go stale.
//!
//! The engine reports loads, refreshes and the local store's disk use
//! through [`Metrics::record_load`], [`Metrics::record_refresh`] and
//! [`Metrics::set_local_store_bytes`]. Other parts of the daemon (the mount's
//! per-operation counters) plug in with [`Metrics::add_source`].
//!
//! Hand formatting rather than a registry crate: the request path is three
//! relaxed atomic adds, and the whole exposition is a few dozen lines.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::catalog::{Catalog, VersionState};

/// Upper bounds of the request latency histogram, in nanoseconds. The
/// sidecar answers from memory in tens of microseconds, so the buckets are
/// fine below a millisecond and coarse above (anything there is a stall).
const LATENCY_BUCKETS_NANOS: [u64; 13] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    1_000_000_000,
];

/// Status codes are counted in a flat table indexed by the code itself
/// (100..=599), so any code is counted exactly without a map or a lock.
const STATUS_MIN: usize = 100;
const STATUS_SLOTS: usize = 500;

/// Something else that exports metrics (for example the FUSE mount's
/// per-operation counters). It appends complete `# HELP`/`# TYPE` blocks.
pub trait MetricsSource: Send + Sync {
    fn write_prometheus(&self, out: &mut String);
}

/// Outcome of the loads of one database, as reported by the engine.
#[derive(Debug, Default, Clone)]
struct LoadStats {
    succeeded: u64,
    failed: u64,
    bytes_total: u64,
    records_total: u64,
    last_version: String,
    last_duration: Duration,
    last_bytes: u64,
    last_records: u64,
}

/// The registry; share it as `Arc<Metrics>`.
pub struct Metrics {
    requests_by_status: Box<[AtomicU64]>,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_NANOS.len() + 1],
    latency_sum_nanos: AtomicU64,
    response_bytes: AtomicU64,
    refreshes_succeeded: AtomicU64,
    refreshes_failed: AtomicU64,
    local_store_bytes: AtomicU64,
    loads: Mutex<BTreeMap<String, LoadStats>>,
    sources: RwLock<Vec<Arc<dyn MetricsSource>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests_by_status: (0..STATUS_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            latency_buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            latency_sum_nanos: AtomicU64::new(0),
            response_bytes: AtomicU64::new(0),
            refreshes_succeeded: AtomicU64::new(0),
            refreshes_failed: AtomicU64::new(0),
            local_store_bytes: AtomicU64::new(0),
            loads: Mutex::new(BTreeMap::new()),
            sources: RwLock::new(Vec::new()),
        }
    }
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        Arc::new(Metrics::default())
    }

    /// Counts one answered HTTP request: its status, how long it took from
    /// parsed request to response, and the body bytes sent. Lock-free.
    pub fn record_request(&self, status: u16, latency: Duration, body_bytes: u64) {
        // Not an HTTP status (hyper never produces one): not a request.
        let Some(slot) = usize::from(status)
            .checked_sub(STATUS_MIN)
            .and_then(|i| self.requests_by_status.get(i))
        else {
            return;
        };
        slot.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BUCKETS_NANOS
            .iter()
            .position(|&bound| nanos <= bound)
            .unwrap_or(LATENCY_BUCKETS_NANOS.len());
        if let Some(b) = self.latency_buckets.get(bucket) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.latency_sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.response_bytes.fetch_add(body_bytes, Ordering::Relaxed);
    }

    /// Number of requests answered with `status` so far.
    pub fn requests_with_status(&self, status: u16) -> u64 {
        usize::from(status)
            .checked_sub(STATUS_MIN)
            .and_then(|i| self.requests_by_status.get(i))
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// The engine reports a finished load of `db`/`version` (successful or
    /// not) with its duration and the bytes and records it read.
    pub fn record_load(
        &self,
        db: &str,
        version: &str,
        duration: Duration,
        bytes: u64,
        records: u64,
        ok: bool,
    ) {
        let mut loads = self.loads.lock().unwrap_or_else(|e| e.into_inner());
        let stats = loads.entry(db.to_string()).or_default();
        if ok {
            stats.succeeded += 1;
        } else {
            stats.failed += 1;
        }
        stats.bytes_total = stats.bytes_total.saturating_add(bytes);
        stats.records_total = stats.records_total.saturating_add(records);
        stats.last_version = version.to_string();
        stats.last_duration = duration;
        stats.last_bytes = bytes;
        stats.last_records = records;
    }

    /// The engine reports the outcome of a refresh (listing the source and
    /// planning; individual loads are reported by [`Metrics::record_load`]).
    pub fn record_refresh(&self, ok: bool) {
        let counter = if ok {
            &self.refreshes_succeeded
        } else {
            &self.refreshes_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The engine sets the bytes used by the local store.
    pub fn set_local_store_bytes(&self, bytes: u64) {
        self.local_store_bytes.store(bytes, Ordering::Relaxed);
    }

    /// Adds another exporter, rendered after the built-in metrics.
    pub fn add_source(&self, source: Arc<dyn MetricsSource>) {
        self.sources
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(source);
    }

    /// The whole exposition, with the catalog's figures read now.
    pub fn render(&self, catalog: &Catalog) -> String {
        let mut out = String::with_capacity(4096);
        self.render_http(&mut out);
        render_catalog(&mut out, catalog);
        self.render_loads(&mut out);
        let sources = self.sources.read().unwrap_or_else(|e| e.into_inner());
        for source in sources.iter() {
            source.write_prometheus(&mut out);
        }
        out
    }

    fn render_http(&self, out: &mut String) {
        header(
            out,
            "sequinsfs_http_requests_total",
            "counter",
            "HTTP requests answered, by status code.",
        );
        for (i, counter) in self.requests_by_status.iter().enumerate() {
            let n = counter.load(Ordering::Relaxed);
            if n > 0 {
                let code = i + STATUS_MIN;
                let _ = writeln!(out, "sequinsfs_http_requests_total{{code=\"{code}\"}} {n}");
            }
        }

        header(
            out,
            "sequinsfs_http_request_duration_seconds",
            "histogram",
            "Time from a parsed request to its response being handed to the connection.",
        );
        let mut cumulative = 0u64;
        for (bound, bucket) in LATENCY_BUCKETS_NANOS.iter().zip(&self.latency_buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let le = *bound as f64 / 1e9;
            let _ = writeln!(
                out,
                "sequinsfs_http_request_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
            );
        }
        if let Some(overflow) = self.latency_buckets.last() {
            cumulative += overflow.load(Ordering::Relaxed);
        }
        let _ = writeln!(
            out,
            "sequinsfs_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let sum = self.latency_sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "sequinsfs_http_request_duration_seconds_sum {sum}");
        let _ = writeln!(
            out,
            "sequinsfs_http_request_duration_seconds_count {cumulative}"
        );

        header(
            out,
            "sequinsfs_http_response_bytes_total",
            "counter",
            "Body bytes sent in HTTP responses.",
        );
        let _ = writeln!(
            out,
            "sequinsfs_http_response_bytes_total {}",
            self.response_bytes.load(Ordering::Relaxed)
        );
    }

    fn render_loads(&self, out: &mut String) {
        let loads = self.loads.lock().unwrap_or_else(|e| e.into_inner()).clone();
        header(
            out,
            "sequinsfs_loads_total",
            "counter",
            "Finished version loads, by database and outcome.",
        );
        for (db, s) in &loads {
            let db = escape_label(db);
            let _ = writeln!(
                out,
                "sequinsfs_loads_total{{db=\"{db}\",outcome=\"ok\"}} {}",
                s.succeeded
            );
            let _ = writeln!(
                out,
                "sequinsfs_loads_total{{db=\"{db}\",outcome=\"error\"}} {}",
                s.failed
            );
        }
        header(
            out,
            "sequinsfs_loaded_bytes_total",
            "counter",
            "Source bytes read by loads.",
        );
        for (db, s) in &loads {
            let _ = writeln!(
                out,
                "sequinsfs_loaded_bytes_total{{db=\"{}\"}} {}",
                escape_label(db),
                s.bytes_total
            );
        }
        header(
            out,
            "sequinsfs_loaded_records_total",
            "counter",
            "Records read by loads.",
        );
        for (db, s) in &loads {
            let _ = writeln!(
                out,
                "sequinsfs_loaded_records_total{{db=\"{}\"}} {}",
                escape_label(db),
                s.records_total
            );
        }
        header(
            out,
            "sequinsfs_last_load_duration_seconds",
            "gauge",
            "Duration of the most recent load of each database.",
        );
        for (db, s) in &loads {
            let _ = writeln!(
                out,
                "sequinsfs_last_load_duration_seconds{{db=\"{}\",version=\"{}\"}} {}",
                escape_label(db),
                escape_label(&s.last_version),
                s.last_duration.as_secs_f64()
            );
        }
        header(
            out,
            "sequinsfs_last_load_bytes",
            "gauge",
            "Source bytes read by the most recent load of each database.",
        );
        for (db, s) in &loads {
            let _ = writeln!(
                out,
                "sequinsfs_last_load_bytes{{db=\"{}\",version=\"{}\"}} {}",
                escape_label(db),
                escape_label(&s.last_version),
                s.last_bytes
            );
        }
        header(
            out,
            "sequinsfs_last_load_records",
            "gauge",
            "Records read by the most recent load of each database.",
        );
        for (db, s) in &loads {
            let _ = writeln!(
                out,
                "sequinsfs_last_load_records{{db=\"{}\",version=\"{}\"}} {}",
                escape_label(db),
                escape_label(&s.last_version),
                s.last_records
            );
        }

        header(
            out,
            "sequinsfs_refreshes_total",
            "counter",
            "Refreshes of the source root, by outcome.",
        );
        let _ = writeln!(
            out,
            "sequinsfs_refreshes_total{{outcome=\"ok\"}} {}",
            self.refreshes_succeeded.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "sequinsfs_refreshes_total{{outcome=\"error\"}} {}",
            self.refreshes_failed.load(Ordering::Relaxed)
        );
        header(
            out,
            "sequinsfs_local_store_bytes",
            "gauge",
            "Bytes used on disk by the local store.",
        );
        let _ = writeln!(
            out,
            "sequinsfs_local_store_bytes {}",
            self.local_store_bytes.load(Ordering::Relaxed)
        );
    }
}

/// Figures read from the catalog at scrape time.
fn render_catalog(out: &mut String, catalog: &Catalog) {
    let status = catalog.status();

    header(
        out,
        "sequinsfs_database_keys",
        "gauge",
        "Keys in the version being served, by database.",
    );
    for version in catalog.served() {
        let _ = writeln!(
            out,
            "sequinsfs_database_keys{{db=\"{}\",version=\"{}\"}} {}",
            escape_label(version.db()),
            escape_label(version.name()),
            version.local_keys().key_count()
        );
    }

    header(
        out,
        "sequinsfs_database_version_info",
        "gauge",
        "One series per version the daemon knows, labelled with its state; 1 always.",
    );
    for db in &status {
        for v in &db.versions {
            let _ = writeln!(
                out,
                "sequinsfs_database_version_info{{db=\"{}\",version=\"{}\",state=\"{}\",current=\"{}\"}} 1",
                escape_label(&db.name),
                escape_label(&v.version),
                state_name(v.state),
                v.current
            );
        }
    }

    header(
        out,
        "sequinsfs_database_versions",
        "gauge",
        "Versions the daemon knows per database, by state.",
    );
    for db in &status {
        for state in [
            VersionState::Building,
            VersionState::Available,
            VersionState::Active,
            VersionState::Removing,
            VersionState::Error,
        ] {
            let n = db.versions.iter().filter(|v| v.state == state).count();
            let _ = writeln!(
                out,
                "sequinsfs_database_versions{{db=\"{}\",state=\"{}\"}} {n}",
                escape_label(&db.name),
                state_name(state)
            );
        }
    }

    // Progress of builds in flight: bytes, records and files done, and the
    // totals once the source was listed.
    let building: Vec<_> = status
        .iter()
        .flat_map(|db| {
            db.versions
                .iter()
                .filter(|v| v.state == VersionState::Building)
                .map(move |v| (db.name.as_str(), v))
        })
        .collect();
    type Field = fn(&crate::catalog::Progress) -> u64;
    let progress_fields: [(&str, &str, Field); 5] = [
        (
            "sequinsfs_load_progress_bytes_done",
            "Bytes loaded so far by versions being built.",
            |p| p.bytes_done,
        ),
        (
            "sequinsfs_load_progress_bytes_total",
            "Bytes to load for versions being built (0 until listed).",
            |p| p.bytes_total,
        ),
        (
            "sequinsfs_load_progress_records_done",
            "Records loaded so far by versions being built.",
            |p| p.records_done,
        ),
        (
            "sequinsfs_load_progress_files_done",
            "Files loaded so far by versions being built.",
            |p| p.files_done,
        ),
        (
            "sequinsfs_load_progress_files_total",
            "Files to load for versions being built (0 until listed).",
            |p| p.files_total,
        ),
    ];
    for (name, help, field) in progress_fields {
        header(out, name, "gauge", help);
        for (db, v) in &building {
            let _ = writeln!(
                out,
                "{name}{{db=\"{}\",version=\"{}\"}} {}",
                escape_label(db),
                escape_label(&v.version),
                field(&v.progress)
            );
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn state_name(state: VersionState) -> &'static str {
    match state {
        VersionState::Building => "BUILDING",
        VersionState::Available => "AVAILABLE",
        VersionState::Active => "ACTIVE",
        VersionState::Removing => "REMOVING",
        VersionState::Error => "ERROR",
    }
}

/// Escapes a label value as the text format requires (`\`, `"`, newline).
pub fn escape_label(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{InMemoryVersionData, LoadCounters, Version};
    use std::sync::atomic::Ordering;
    use std::time::SystemTime;

    #[test]
    fn counts_requests_by_status_and_latency_bucket() {
        let m = Metrics::default();
        m.record_request(200, Duration::from_micros(40), 4);
        m.record_request(200, Duration::from_millis(3), 6);
        m.record_request(404, Duration::from_secs(5), 0);
        m.record_request(42, Duration::ZERO, 9); // not a status: ignored, no panic
        assert_eq!(m.requests_with_status(200), 2);
        assert_eq!(m.requests_with_status(404), 1);
        let text = m.render(&Catalog::default());
        assert!(text.contains("sequinsfs_http_requests_total{code=\"200\"} 2\n"));
        assert!(text.contains("sequinsfs_http_requests_total{code=\"404\"} 1\n"));
        assert!(
            text.contains("sequinsfs_http_request_duration_seconds_bucket{le=\"0.00005\"} 1\n")
        );
        assert!(text.contains("sequinsfs_http_request_duration_seconds_bucket{le=\"0.005\"} 2\n"));
        assert!(text.contains("sequinsfs_http_request_duration_seconds_bucket{le=\"1\"} 2\n"));
        assert!(text.contains("sequinsfs_http_request_duration_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("sequinsfs_http_request_duration_seconds_count 3\n"));
        assert!(text.contains("sequinsfs_http_response_bytes_total 10\n"));
    }

    #[test]
    fn reads_catalog_figures_at_scrape_time() {
        let catalog = Catalog::new();
        let m = Metrics::default();
        let data = InMemoryVersionData::new([(b"a".to_vec(), b"1".to_vec())]);
        catalog.publish(
            Version::new(
                "db\"x",
                "7",
                SystemTime::now(),
                "/src/db/7",
                1,
                Box::new(data),
            ),
            "/src/db/7".into(),
            Duration::from_secs(60),
        );
        let counters = Arc::new(LoadCounters::default());
        counters.bytes_total.store(100, Ordering::Relaxed);
        catalog.start_load("db\"x", "8", "/src/db/8".into(), Arc::clone(&counters));
        // Read at scrape time, not when the load started.
        counters.bytes_done.store(10, Ordering::Relaxed);
        m.record_load("db\"x", "7", Duration::from_millis(1500), 100, 1, true);
        m.record_refresh(true);
        m.record_refresh(false);
        m.set_local_store_bytes(12345);
        let text = m.render(&catalog);
        assert!(text.contains("sequinsfs_database_keys{db=\"db\\\"x\",version=\"7\"} 1\n"));
        assert!(text.contains(
            "sequinsfs_database_version_info{db=\"db\\\"x\",version=\"8\",state=\"BUILDING\",current=\"false\"} 1\n"
        ));
        assert!(text.contains("sequinsfs_database_versions{db=\"db\\\"x\",state=\"ACTIVE\"} 1\n"));
        assert!(
            text.contains("sequinsfs_load_progress_bytes_done{db=\"db\\\"x\",version=\"8\"} 10\n")
        );
        assert!(text.contains("sequinsfs_loads_total{db=\"db\\\"x\",outcome=\"ok\"} 1\n"));
        assert!(
            text.contains(
                "sequinsfs_last_load_duration_seconds{db=\"db\\\"x\",version=\"7\"} 1.5\n"
            )
        );
        assert!(text.contains("sequinsfs_refreshes_total{outcome=\"error\"} 1\n"));
        assert!(text.contains("sequinsfs_local_store_bytes 12345\n"));
    }

    #[test]
    fn renders_added_sources() {
        struct Fuse;
        impl MetricsSource for Fuse {
            fn write_prometheus(&self, out: &mut String) {
                out.push_str(
                    "# TYPE sequinsfs_fuse_ops_total counter\nsequinsfs_fuse_ops_total 3\n",
                );
            }
        }
        let m = Metrics::default();
        m.add_source(Arc::new(Fuse));
        assert!(
            m.render(&Catalog::default())
                .ends_with("sequinsfs_fuse_ops_total 3\n")
        );
    }
}
