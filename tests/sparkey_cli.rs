//! `sequinsfs inspect` on Sparkey tables, run as the built binary.

mod common;

use std::process::Command;

use sequinsfs::format::sparkey::{Compression, LogWriter, framed};

fn inspect(args: &[&std::ffi::OsStr]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sequinsfs"))
        .arg("inspect")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn inspect_shows_headers_lookups_and_records() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("t.spl");
    let index = dir.path().join("t.spi");
    let mut writer = LogWriter::create(&log, Compression::Snappy, 512).unwrap();
    writer.put(b"alpha", b"one").unwrap();
    writer.put(b"\x00bin", b"two\n").unwrap();
    writer.put(b"gone", b"x").unwrap();
    writer.delete(b"gone").unwrap();
    writer.finish_with_index(&index).unwrap();

    let (ok, out, err) = inspect(&[
        log.as_os_str(),
        "--get".as_ref(),
        "%00bin".as_ref(),
        "--records".as_ref(),
        "5".as_ref(),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("compression:           snappy"), "{out}");
    assert!(out.contains("block size:            512"), "{out}");
    assert!(out.contains("puts:                  3"), "{out}");
    assert!(out.contains("deletes:               1"), "{out}");
    assert!(out.contains("live entries:          2"), "{out}");
    assert!(out.contains("hash size:             4"), "{out}");
    assert!(out.contains("get \\x00bin: two\\x0a"), "{out}");
    assert!(
        out.contains("  alpha\tone\n  \\x00bin\ttwo\\x0a\n"),
        "{out}"
    );

    // The framed index alone is enough, and --json is valid JSON.
    let sz = dir.path().join("t.spi.sz");
    framed::encode_file(&index, &sz).unwrap();
    std::fs::remove_file(&index).unwrap();
    let (ok, out, err) = inspect(&[
        sz.as_os_str(),
        "--json".as_ref(),
        "--get".as_ref(),
        "missing".as_ref(),
    ]);
    assert!(ok, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["num_entries"], 2);
    assert_eq!(doc["log"]["header"]["compression"], "snappy");
    assert_eq!(doc["get"]["found"], false);
}

#[test]
fn inspect_reports_a_bad_file_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("bad.spl");
    std::fs::write(
        &log,
        b"not a sparkey log at all, but long enough to hold a header.......",
    )
    .unwrap();
    std::fs::write(dir.path().join("bad.spi"), b"").unwrap();
    let (ok, out, err) = inspect(&[log.as_os_str()]);
    assert!(!ok);
    assert!(out.is_empty());
    assert!(err.contains("bad.spl: byte 0"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn inspect_reads_the_sequins_fixture() {
    let Some(fixtures) = common::fixtures_dir() else {
        return;
    };
    let log = fixtures.join("sequins/sparkey/part0-file1.spl");
    let (ok, out, err) = inspect(&[log.as_os_str(), "--get".as_ref(), "Dylan".as_ref()]);
    assert!(ok, "{err}");
    assert!(out.contains("part0-file1.spi.sz"), "{out}");
    assert!(out.contains("get Dylan: Thomas"), "{out}");
}
