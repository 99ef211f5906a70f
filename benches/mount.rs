//! Mount benchmark: open+read+close per second on a sequinsfs mount versus
//! the same files on tmpfs, measured in the same run.
//!
//! Run (as root, with /dev/fuse): `cargo bench --bench mount`
//! Knobs: `SEQUINSFS_BENCH_KEYS` (default 100000 keys of 100 bytes).
//!
//! Passes: cold (first read of every key after mounting), warm (second),
//! cold and warm again on a fresh mount with `--idle-poll` (idle CPUs poll
//! while requests arrive, see `sequinsfs::wakeup`),
//! warm misses (names that are not keys, after one pass), and `ls -l` of the
//! database directory. Each is printed with the tmpfs figure and the ratio.
//! Targets from the design: warm >= 0.5 of tmpfs, cold >= 0.1, misses >=
//! 1.0, `ls -l` within 2x. The daemon's request counters are printed per
//! pass, and its RSS, which must stay flat however many keys were read.
//!
//! Then the FUSE transports side by side: fresh mounts over /dev/fuse and
//! over io_uring (the fuse module's `enable_uring` is set for the io_uring
//! mounts and restored), alternated for `SEQUINSFS_BENCH_ROUNDS` rounds
//! (default 2), each with a cold and a warm pass and tmpfs measured just
//! before; besides files/s, the latency of each open+read+close (p50, p99),
//! which is what one client reading one key at a time (one HTTP connection's
//! worth of work) waits. `SEQUINSFS_BENCH_ONLY=transports` runs only this.

use std::ffi::CString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sequinsfs::catalog::{Catalog, InMemoryVersionData, Version};
use sequinsfs::fs::Op;
use sequinsfs::fs::{FuseTransport, MountOptions, mount};
use sequinsfs::wakeup::IdlePoll;

const VALUE_LEN: usize = 100;

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !Path::new("/dev/fuse").exists() {
        println!("mount bench skipped: needs root and /dev/fuse");
        return;
    }
    let keys: usize = std::env::var("SEQUINSFS_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let names: Vec<String> = (0..keys).map(|i| format!("k{i:07}")).collect();
    let missing: Vec<String> = (0..keys).map(|i| format!("m{i:07}")).collect();
    let value = |i: usize| {
        let mut v = format!("value of key {i} ").into_bytes();
        v.resize(VALUE_LEN, b'.');
        v
    };

    // tmpfs with the same tree.
    let tmpfs_dir = tempfile::tempdir().unwrap();
    mount_tmpfs(tmpfs_dir.path());
    let _tmpfs_guard = Unmount(tmpfs_dir.path().to_path_buf());
    let tmpfs_db = tmpfs_dir.path().join("db");
    std::fs::create_dir(&tmpfs_db).unwrap();
    for (i, name) in names.iter().enumerate() {
        std::fs::write(tmpfs_db.join(name), value(i)).unwrap();
    }

    // sequinsfs over an in-memory version with the same keys.
    let catalog = Catalog::new();
    let data = InMemoryVersionData::new(
        names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone().into_bytes(), value(i))),
    );
    let version = Version::new("db", "1", SystemTime::now(), "bench", 1, Box::new(data));
    catalog.publish(version, "bench".into(), Duration::from_secs(60));
    if std::env::var("SEQUINSFS_BENCH_ONLY").as_deref() == Ok("transports") {
        compare_transports(&catalog, &tmpfs_db, &names);
        return;
    }
    let fuse_dir = tempfile::tempdir().unwrap();
    let handle = mount(
        Arc::clone(&catalog),
        || {},
        fuse_dir.path(),
        MountOptions {
            // SEQUINSFS_BENCH_THREADS tries other session thread counts.
            threads: std::env::var("SEQUINSFS_BENCH_THREADS")
                .ok()
                .and_then(|t| t.parse().ok())
                .unwrap_or(MountOptions::default().threads),
            ..MountOptions::default()
        },
    )
    .unwrap();
    let fuse_db = fuse_dir.path().join("db");
    let rss_mounted = rss_kib();

    println!(
        "sequinsfs mount bench: {keys} keys of {VALUE_LEN} bytes, reader = open+read(4096)+close"
    );
    let counters = handle.counters();
    let last = std::cell::RefCell::new(counters.snapshot());
    // Requests the daemon received since the previous call.
    let requests_since_last = || {
        let now = counters.snapshot();
        let mut last = last.borrow_mut();
        let delta: Vec<String> = now
            .iter()
            .filter_map(|(op, n)| {
                let d = n - last.get(op).copied().unwrap_or(0);
                (d > 0).then(|| format!("{op}={d}"))
            })
            .collect();
        *last = now;
        if delta.is_empty() {
            "none".to_string()
        } else {
            delta.join(" ")
        }
    };
    let report = |label: &str, fuse: f64, tmpfs: f64, unit: &str, higher_is_better: bool| {
        let ratio = if higher_is_better {
            fuse / tmpfs
        } else {
            tmpfs / fuse
        };
        println!(
            "{label:<22} sequinsfs {fuse:>12.3} {unit:<8} tmpfs {tmpfs:>12.3} {unit:<8} ratio {ratio:>5.2}   requests: {}",
            requests_since_last()
        );
    };

    let tmpfs_warm = read_pass(&tmpfs_db, &names, true);
    let cold = read_pass(&fuse_db, &names, true);
    report("cold open+read+close", cold, tmpfs_warm, "files/s", true);
    let rss_after_cold = rss_kib();
    let warm = read_pass(&fuse_db, &names, true);
    let tmpfs_warm2 = read_pass(&tmpfs_db, &names, true);
    report("warm open+read+close", warm, tmpfs_warm2, "files/s", true);
    let warm2 = read_pass(&fuse_db, &names, true);
    let tmpfs_warm3 = read_pass(&tmpfs_db, &names, true);
    report("warm again", warm2, tmpfs_warm3, "files/s", true);

    let _ = read_pass(&fuse_db, &missing, false);
    let _ = requests_since_last();
    let miss = read_pass(&fuse_db, &missing, false);
    let tmpfs_miss = read_pass(&tmpfs_db, &missing, false);
    report("warm missing keys", miss, tmpfs_miss, "opens/s", true);

    let tmpfs_ls = ls_l(&tmpfs_db);
    let fuse_ls_first = ls_l(&fuse_db);
    report("ls -l (first)", fuse_ls_first, tmpfs_ls, "s", false);
    let fuse_ls = ls_l(&fuse_db);
    let tmpfs_ls2 = ls_l(&tmpfs_db);
    report("ls -l (again)", fuse_ls, tmpfs_ls2, "s", false);
    let rss_end = rss_kib();
    println!(
        "daemon (this process) RSS: {rss_mounted} KiB after mount, {rss_after_cold} KiB after the cold pass, {rss_end} KiB at the end (includes the in-memory data set)"
    );
    handle.unmount().unwrap();

    // A fresh mount of the same catalog (so every key is cold again) with
    // `--idle-poll`, tmpfs measured beside it.
    match IdlePoll::start() {
        Err(err) => println!("no --idle-poll pass: {err}"),
        Ok(idle_poll) => {
            let polled_dir = tempfile::tempdir().unwrap();
            let polled = mount(
                Arc::clone(&catalog),
                || {},
                polled_dir.path(),
                MountOptions {
                    activity: Some(idle_poll.activity()),
                    ..MountOptions::default()
                },
            )
            .unwrap();
            let polled_db = polled_dir.path().join("db");
            let tmpfs = read_pass(&tmpfs_db, &names, true);
            let cold = read_pass(&polled_db, &names, true);
            let requests = polled.counters();
            println!(
                "{:<22} sequinsfs {cold:>12.3} files/s  tmpfs {tmpfs:>12.3} files/s  ratio {:>5.2}   requests: lookup={} read={}",
                "cold, --idle-poll",
                cold / tmpfs,
                requests.get(Op::Lookup),
                requests.get(Op::Read),
            );
            let warm = read_pass(&polled_db, &names, true);
            let tmpfs = read_pass(&tmpfs_db, &names, true);
            println!(
                "{:<22} sequinsfs {warm:>12.3} files/s  tmpfs {tmpfs:>12.3} files/s  ratio {:>5.2}",
                "warm, --idle-poll",
                warm / tmpfs,
            );
            polled.unmount().unwrap();
        }
    }

    compare_transports(&catalog, &tmpfs_db, &names);

    if let Some(keys) = std::env::var("SEQUINSFS_BENCH_RSS_KEYS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        rss_with_many_keys(keys);
    }
}

/// Daemon RSS with `keys` keys mounted, before and after reading a sample of
/// them through the mount. The keys are computed, not stored, so what grows
/// is the mount's own state (and the kernel's, which is not in our RSS).
fn rss_with_many_keys(keys: u64) {
    let mut all_keys = Vec::with_capacity(usize::try_from(keys).unwrap_or(0) * 10);
    for i in 0..keys {
        all_keys.extend_from_slice(format!("k{i:09}").as_bytes());
    }
    /// Fixed-width keys `k000000000`.. in one buffer (10 bytes each), values
    /// computed on the fly.
    struct Computed(u64, Vec<u8>);
    use sequinsfs::catalog::{LookupError, ValueRef};
    impl sequinsfs::catalog::VersionData for Computed {
        fn locate(&self, key: &[u8]) -> Result<Option<ValueRef>, LookupError> {
            let ordinal = std::str::from_utf8(key)
                .ok()
                .and_then(|k| k.strip_prefix('k'))
                .and_then(|n| n.parse::<u64>().ok())
                .filter(|&n| n < self.0 && key.len() == 10);
            ordinal.map(|o| self.locate_ordinal(o)).transpose()
        }
        fn locate_ordinal(&self, ordinal: u64) -> Result<ValueRef, LookupError> {
            Ok(ValueRef {
                table: 0,
                address: ordinal,
                len: VALUE_LEN as u64,
            })
        }
        fn read_value<'a>(
            &'a self,
            value: &ValueRef,
            offset: u64,
            len: usize,
            scratch: &mut Vec<u8>,
        ) -> Result<Option<&'a [u8]>, LookupError> {
            let n = (value.len.saturating_sub(offset) as usize).min(len);
            scratch.clear();
            scratch.resize(n, b'v');
            Ok(None)
        }
        fn key_count(&self) -> u64 {
            self.0
        }
        fn key_at(&self, ordinal: u64) -> Result<&[u8], LookupError> {
            let start = usize::try_from(ordinal)
                .unwrap_or(usize::MAX)
                .saturating_mul(10);
            self.1
                .get(start..start.saturating_add(10))
                .ok_or_else(|| LookupError::new("ordinal out of range"))
        }
        fn value_len_at(&self, _ordinal: u64) -> Result<u64, LookupError> {
            Ok(VALUE_LEN as u64)
        }
        fn lower_bound(&self, key: &[u8]) -> Result<u64, LookupError> {
            let (mut lo, mut hi) = (0, self.0);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if format!("k{mid:09}").as_bytes() < key {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            Ok(lo)
        }
    }
    let catalog = Catalog::new();
    let data = Box::new(Computed(keys, all_keys));
    let version = Version::new("many", "1", SystemTime::now(), "bench", 1, data);
    catalog.publish(version, "bench".into(), Duration::from_secs(60));
    let dir = tempfile::tempdir().unwrap();
    let handle = mount(catalog, || {}, dir.path(), MountOptions::default()).unwrap();
    let sample = 200_000u64;
    let step = (keys / sample).max(1);
    let names: Vec<String> = (0..sample)
        .map(|i| format!("k{:09}", (i * step) % keys))
        .collect();
    let before = rss_kib();
    let other: Vec<String> = (0..sample)
        .map(|i| format!("k{:09}", (i * step + 1) % keys))
        .collect();
    let rate = read_pass(&dir.path().join("many"), &names, true);
    let after = rss_kib();
    let _ = read_pass(&dir.path().join("many"), &other, true);
    let after_more = rss_kib();
    println!(
        "{keys} keys mounted: daemon RSS {before} KiB; after reading {sample} of them \
         ({rate:.0} files/s cold): {after} KiB; after {sample} more: {after_more} KiB"
    );
    handle.unmount().unwrap();
}

/// Cold and warm passes over fresh mounts of `catalog`, /dev/fuse and
/// io_uring alternately, tmpfs measured before each pass.
fn compare_transports(catalog: &Arc<Catalog>, tmpfs_db: &Path, names: &[String]) {
    let param = sequinsfs::fs::fuse::uring::ENABLE_URING_PARAM;
    let Ok(previous) = std::fs::read_to_string(param) else {
        println!("no transport comparison: this kernel has no FUSE over io_uring");
        return;
    };
    let rounds: usize = std::env::var("SEQUINSFS_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    println!(
        "transports: {rounds} rounds, fresh mount per transport and round; latency = one open+read+close"
    );
    let row = |label: String, pass: &Pass, tmpfs: &Pass| {
        println!(
            "{label:<22} sequinsfs {:>10.0} files/s  p50 {:>6.1} us  p99 {:>6.1} us   tmpfs {:>10.0} files/s  p50 {:>5.1} us   ratio {:>5.2}",
            pass.rate,
            pass.p50_us,
            pass.p99_us,
            tmpfs.rate,
            tmpfs.p50_us,
            pass.rate / tmpfs.rate
        );
    };
    for round in 1..=rounds {
        for transport in [FuseTransport::Dev, FuseTransport::Uring] {
            if transport == FuseTransport::Uring {
                std::fs::write(param, "Y").expect("enable io_uring for FUSE");
            }
            let dir = tempfile::tempdir().unwrap();
            let mounted = mount(
                Arc::clone(catalog),
                || {},
                dir.path(),
                MountOptions {
                    transport,
                    ..MountOptions::default()
                },
            );
            // Put back what was there as soon as INIT is done.
            let _ = std::fs::write(param, previous.trim());
            let handle = mounted.unwrap();
            assert_eq!(handle.transport(), transport);
            let db = dir.path().join("db");
            let tmpfs = timed_pass(tmpfs_db, names);
            let cold = timed_pass(&db, names);
            row(format!("cold {transport} #{round}"), &cold, &tmpfs);
            let tmpfs = timed_pass(tmpfs_db, names);
            let warm = timed_pass(&db, names);
            row(format!("warm {transport} #{round}"), &warm, &tmpfs);
            if transport == FuseTransport::Uring {
                println!(
                    "{:<22} {} requests over io_uring, {} counted",
                    "",
                    handle.uring_requests(),
                    handle.counters().total()
                );
            }
            handle.unmount().unwrap();
        }
    }
}

/// One pass over `names` (all present): rate and per-file latency.
struct Pass {
    rate: f64,
    p50_us: f64,
    p99_us: f64,
}

fn timed_pass(dir: &Path, names: &[String]) -> Pass {
    let mut buf = vec![0u8; 4096];
    let mut latencies = Vec::with_capacity(names.len());
    let start = Instant::now();
    for name in names {
        let one = Instant::now();
        let mut f = std::fs::File::open(dir.join(name)).unwrap();
        let n = f.read(&mut buf).unwrap();
        drop(f);
        latencies.push(one.elapsed());
        assert_eq!(n, VALUE_LEN, "{name}");
    }
    let rate = names.len() as f64 / start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let at = |q: f64| {
        let i = ((latencies.len() as f64 * q) as usize).min(latencies.len() - 1);
        latencies[i].as_secs_f64() * 1e6
    };
    Pass {
        rate,
        p50_us: at(0.50),
        p99_us: at(0.99),
    }
}

/// Files (or failed opens) per second over `names` in order.
fn read_pass(dir: &Path, names: &[String], expect_found: bool) -> f64 {
    let mut buf = vec![0u8; 4096];
    let start = Instant::now();
    for name in names {
        match std::fs::File::open(dir.join(name)) {
            Ok(mut f) => {
                let n = f.read(&mut buf).unwrap();
                assert!(expect_found && n == VALUE_LEN, "{name}: read {n}");
            }
            Err(e) => assert!(!expect_found, "{name}: {e}"),
        }
    }
    names.len() as f64 / start.elapsed().as_secs_f64()
}

/// Seconds for `ls -l DIR > /dev/null`.
fn ls_l(dir: &Path) -> f64 {
    let start = Instant::now();
    let status = std::process::Command::new("ls")
        .arg("-l")
        // The trailing slash lists the directory behind the symlink.
        .arg(dir.join(""))
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    start.elapsed().as_secs_f64()
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn mount_tmpfs(path: &Path) {
    let target = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: all pointers are valid NUL-terminated strings for the call.
    let rc = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            c"size=1g".as_ptr().cast(),
        )
    };
    assert_eq!(rc, 0, "mount tmpfs: {}", std::io::Error::last_os_error());
}

/// Unmounts the tmpfs at the end (also on panic).
struct Unmount(PathBuf);
impl Drop for Unmount {
    fn drop(&mut self) {
        let target = CString::new(self.0.as_os_str().as_bytes()).unwrap();
        // SAFETY: target is a valid NUL-terminated path.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}
