//! Migration benchmark: how long a store written by an older release takes
//! to migrate in place, beside loading the same version again from the
//! source, in one run.
//!
//! ```text
//! cargo bench --bench migrate                     # 10 million keys
//! MIGRATE_BENCH_RECORDS=1000000 cargo bench --bench migrate
//! ```
//!
//! The source (24-byte keys, 100-byte values, 8 BLOCK snappy SequenceFiles)
//! is generated once into `target/bench-data/migrate-<records>/`. Then:
//!
//! 1. **reload**: an engine loads it into an empty store, from start to
//!    ACTIVE: what an upgrade that re-downloads would cost;
//! 2. that store is turned into one of the oldest format (no `store.json`,
//!    format-1 manifests, format-1 key indexes without value locations), as
//!    the first releases left it;
//! 3. **migrate**: an engine starts on it: the start-up steps run before it
//!    serves (time to serving), and the key index conversion in the
//!    background (time until it is swapped in).

use std::path::{Path, PathBuf};
use std::time::Instant;

use sequinsfs::config::Config;
use sequinsfs::engine::Engine;
use sequinsfs::format::sequencefile::{Codec, Compression, Writer, WriterOptions};

const FILES: u64 = 8;

fn main() {
    let n: u64 = std::env::var("MIGRATE_BENCH_RECORDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000_000);
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("bench-data").join(format!("migrate-{n}"));
    let source = dir.join("source");
    if !dir.join("ready").exists() {
        eprintln!("generating {n} records into {}", source.display());
        let _ = std::fs::remove_dir_all(&dir);
        generate(&source.join("db/1"), n);
        std::fs::write(dir.join("ready"), b"").unwrap();
    }
    let store = dir.join("store");
    let _ = std::fs::remove_dir_all(&store);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = Config {
        source: source.display().to_string(),
        local_store: store.clone(),
        ..Config::default()
    };

    let reload = runtime.block_on(async {
        let started = Instant::now();
        let engine = Engine::start(config.clone()).await.unwrap();
        engine.ready().await;
        let seconds = started.elapsed().as_secs_f64();
        assert_eq!(
            engine.catalog().current("db").unwrap().keys().key_count(),
            n
        );
        engine.shutdown().await;
        seconds
    });

    make_first_release_store(&store);
    sync_all();

    let (serving, converted) = runtime.block_on(async {
        let started = Instant::now();
        let engine = Engine::start(config.clone()).await.unwrap();
        let serving = started.elapsed().as_secs_f64();
        assert!(engine.catalog().current("db").is_some());
        engine.migrated().await;
        let converted = started.elapsed().as_secs_f64();
        engine.shutdown().await;
        (serving, converted)
    });
    let idx =
        sequinsfs::store::keyindex::KeyIndex::open(&store.join("data/db/1/keys.idx")).unwrap();
    assert!(idx.has_locations(), "the key index was not converted");

    println!("migration benchmark: {n} keys in {FILES} BLOCK snappy SequenceFiles");
    println!("reload from the source (start to ACTIVE): {reload:.2} s");
    println!(
        "migrate in place: serving after {serving:.3} s ({:.3} of a reload), \
         key index converted after {converted:.2} s ({:.2} of a reload)",
        serving / reload,
        converted / reload
    );
}

fn generate(dir: &Path, n: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let per_file = n.div_ceil(FILES);
    let mut value = Vec::with_capacity(100);
    for f in 0..FILES {
        let path = dir.join(format!("part-{f:05}"));
        let file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        let options = WriterOptions::bytes_writable().compressed(Compression::Block, Codec::Snappy);
        let mut writer = Writer::new(file, options).unwrap();
        for i in (f * per_file)..((f + 1) * per_file).min(n) {
            value.clear();
            let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            while value.len() < 100 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                value.push(b'a' + (x % 16) as u8);
            }
            writer
                .append_bytes_writable(format!("key-{i:020}").as_bytes(), &value)
                .unwrap();
        }
        writer.finish().unwrap();
    }
}

/// Turns a store of this release into one as the first releases wrote it:
/// no format file, manifests of format 1, key indexes of format 1 (the same
/// sections without value locations).
fn make_first_release_store(store: &Path) {
    std::fs::remove_file(store.join("store.json")).unwrap();
    let version = store.join("data/db/1");
    let manifest = version.join("manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replacen("\"format\": 2", "\"format\": 1", 1),
    )
    .unwrap();

    let path = version.join("keys.idx");
    let new = std::fs::read(&path).unwrap();
    let count = u64::from_le_bytes(new[16..24].try_into().unwrap());
    let lens_end = 32 + (count as usize + 1) * 8 + count as usize * 8;
    let keys_at = lens_end + count as usize * 12;
    let mut old = Vec::with_capacity(new.len() - count as usize * 12);
    old.extend_from_slice(&new[..8]);
    old.extend_from_slice(&1u32.to_le_bytes());
    old.extend_from_slice(&0u32.to_le_bytes());
    old.extend_from_slice(&new[16..lens_end]);
    old.extend_from_slice(&new[keys_at..]);
    drop(new);
    std::fs::write(&path, old).unwrap();
}

fn sync_all() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}
