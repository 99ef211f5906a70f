//! The HTTP sidecar over the real engine and sequins' own test databases:
//! `healthy`, `partially_healthy`, `unhealthy`, the Sparkey fixture, and the
//! binary keys of a Hadoop-written SequenceFile fetched with `%XX` escapes.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::data::{copy_dir, read_seqfile_pairs};
use common::engine::TestEngine;
use common::{TestServer, unhex};
use sequinsfs::http::HttpOptions;

/// An engine loaded from a source root, and a sidecar over its catalog
/// (declared first so the server stops before the engine).
struct Served {
    server: TestServer,
    _engine: TestEngine,
}

fn serve(fill: impl FnOnce(&Path)) -> Served {
    let engine = TestEngine::start(fill, Duration::ZERO);
    let server = TestServer::with_metrics(
        Arc::clone(engine.engine().catalog()),
        HttpOptions::default(),
        Arc::clone(engine.engine().metrics()),
    );
    Served {
        server,
        _engine: engine,
    }
}

/// Every byte of `key` as `%XX`, except `/` kept as a path separator when
/// `keep_slash`.
fn escape(key: &[u8], keep_slash: bool) -> String {
    key.iter()
        .map(|&b| {
            if keep_slash && b == b'/' {
                "/".to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn healthy_every_key_status_and_health() {
    let Some(fixtures) = common::fixtures_dir() else {
        return;
    };
    let healthy = fixtures.join("sequins/healthy");
    let s = serve(|src| copy_dir(&healthy, src));
    let mut count = 0;
    for part in std::fs::read_dir(healthy.join("baby-names/1")).unwrap() {
        for (k, v) in read_seqfile_pairs(&part.unwrap().path()) {
            // Plain path and fully escaped: the same key.
            for target in [
                format!("/baby-names/{}", String::from_utf8(k.clone()).unwrap()),
                format!("/baby-names/{}", escape(&k, false)),
            ] {
                let r = s.server.get(&target);
                assert_eq!(r.status, 200, "{target}");
                assert_eq!(r.body, v, "{target}");
                assert_eq!(r.header("x-sequins-version"), Some("1"));
                assert_eq!(
                    r.header("content-length"),
                    Some(v.len().to_string().as_str())
                );
                assert!(r.header("last-modified").is_some());
                assert!(r.header("etag").is_some());
            }
            count += 1;
        }
    }
    assert_eq!(count, 64);

    let missing = s.server.get("/baby-names/1881/nobody");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("x-sequins-version"), Some("1"));
    assert!(missing.body.is_empty());
    let unknown = s.server.get("/no-such-db/key");
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.header("x-sequins-version"), None);
    assert_eq!(s.server.get("//key").status, 400);

    let status = s
        .server
        .request("GET", "/", &[("Accept", "application/json")])
        .json();
    let v = &status["dbs"]["baby-names"]["versions"]["1"];
    assert_eq!(v["num_partitions"], 5);
    assert!(v["path"].as_str().unwrap().ends_with("baby-names/1"), "{v}");
    let node = &v["nodes"]["localhost"];
    assert_eq!(node["state"], "ACTIVE");
    assert_eq!(node["current"], true);
    assert_eq!(node["partitions"].as_array().unwrap().len(), 5);
    assert!(node["created_at"].as_str().unwrap().ends_with('Z'));
    let db_status = s
        .server
        .request(
            "GET",
            "/baby-names/",
            &[("Accept", "text/html;q=0.5, application/json")],
        )
        .json();
    assert_eq!(db_status["versions"]["1"]["num_partitions"], 5);
    let health = s.server.get("/healthz");
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["baby-names"]["1"]["state"], "ACTIVE");

    // The engine's loads show in the metrics.
    let metrics = s.server.get("/metrics").text();
    let samples = common::parse_prometheus(&metrics).unwrap();
    let keys = common::sample(&samples, "sequinsfs_database_keys", &[("db", "baby-names")]);
    assert_eq!(keys, Some(64.0));
    let records = common::sample(
        &samples,
        "sequinsfs_loaded_records_total",
        &[("db", "baby-names")],
    );
    assert_eq!(records, Some(64.0), "{metrics}");
    let store = common::sample(&samples, "sequinsfs_local_store_bytes", &[]);
    assert!(store.unwrap() > 0.0);
}

#[test]
fn partially_healthy_and_unhealthy() {
    let Some(fixtures) = common::fixtures_dir() else {
        return;
    };
    let partial = fixtures.join("sequins/partially_healthy");
    let s = serve(|src| copy_dir(&partial, src));
    assert_eq!(s.server.get("/baby-names/1881/boy").status, 200);
    let bad = s.server.get("/baby-names-bad/1881/boy");
    assert_eq!(bad.status, 404);
    assert_eq!(bad.header("x-sequins-version"), None);
    let status = s
        .server
        .request("GET", "/", &[("Accept", "application/json")])
        .json();
    let node = &status["dbs"]["baby-names-bad"]["versions"]["1"]["nodes"]["localhost"];
    assert_eq!(node["state"], "ERROR");
    assert_eq!(node["current"], false);
    assert_eq!(s.server.get("/healthz").status, 200);
    // The HTML page names the error state too.
    let html = s.server.get("/").text();
    assert!(html.contains("ERROR"), "{html}");
    drop(s);

    let unhealthy = fixtures.join("sequins/unhealthy");
    let s = serve(|src| copy_dir(&unhealthy, src));
    assert_eq!(s.server.get("/baby-names-bad/x").status, 404);
    assert_eq!(s.server.get("/healthz").status, 404);
}

#[test]
fn sparkey_fixture_database() {
    let Some(fixtures) = common::fixtures_dir() else {
        return;
    };
    let sparkey = fixtures.join("sequins/sparkey");
    let s = serve(|src| copy_dir(&sparkey, &src.join("names/1")));
    for (k, v) in [
        ("Alice", "Practice"),
        ("Betty", "White"),
        ("Charlie", "Chaplin"),
        ("Dylan", "Thomas"),
    ] {
        let r = s.server.get(&format!("/names/{k}"));
        assert_eq!((r.status, r.text()), (200, v.to_string()));
    }
    assert_eq!(s.server.get("/names/Bob").status, 404);
    let status = s
        .server
        .request("GET", "/names", &[("Accept", "application/json")])
        .json();
    assert_eq!(status["versions"]["1"]["num_partitions"], 2);
}

#[test]
fn binary_keys_with_percent_escapes() {
    let Some(fixtures) = common::fixtures_dir() else {
        return;
    };
    let seq = fixtures.join("seqfile/bytes_bytes__none.seq");
    let expected: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fixtures.join("seqfile/bytes_bytes__none.seq.expected.json")).unwrap(),
    )
    .unwrap();
    let s = serve(|src| {
        std::fs::create_dir_all(src.join("bin/1")).unwrap();
        std::fs::copy(&seq, src.join("bin/1/part-00000")).unwrap();
    });
    let mut checked = 0;
    for record in expected["records"].as_array().unwrap() {
        // BytesWritable: drop the 4-byte length.
        let key = unhex(record[0].as_str().unwrap())[4..].to_vec();
        let value = unhex(record[1].as_str().unwrap())[4..].to_vec();
        if key.is_empty() {
            // The empty key has no URL: `/bin/` is the db's status page.
            continue;
        }
        let r = s.server.get(&format!("/bin/{}", escape(&key, false)));
        assert_eq!(r.status, 200, "key {key:?}");
        assert_eq!(r.body, value, "key {key:?}");
        checked += 1;
    }
    assert!(checked > 10, "{checked}");
}

/// Values larger than a chunk are streamed, from logs stored compressed
/// too: whole, and in ranges that cross chunk and block boundaries.
#[test]
fn large_values_stream_whole_and_in_ranges() {
    let big: Vec<u8> = (0..(3usize << 20) + 12345)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    for compression in [
        sequinsfs::config::StorageCompression::None,
        sequinsfs::config::StorageCompression::Snappy,
    ] {
        let pairs = vec![
            (b"big".to_vec(), big.clone()),
            (b"small".to_vec(), b"s".to_vec()),
        ];
        let engine = TestEngine::start_with(
            |root| common::data::write_seqfile_version(root, "db", "1", &[pairs]),
            Duration::ZERO,
            |config| config.storage.compression = compression,
        );
        let server = TestServer::start(Arc::clone(engine.engine().catalog()));
        let whole = server.get("/db/big");
        assert_eq!(whole.status, 200);
        assert_eq!(
            whole.header("content-length"),
            Some(big.len().to_string().as_str())
        );
        assert!(whole.body == big, "{compression:?}: whole value differs");
        for (start, end) in [
            (0usize, 10usize),
            (262_100, 262_200),
            (1 << 20, (2 << 20) + 7),
            (big.len() - 5, big.len() - 1),
        ] {
            let range = format!("bytes={start}-{end}");
            let part = server.request("GET", "/db/big", &[("range", &range)]);
            assert_eq!(part.status, 206, "{range}");
            assert!(part.body == big[start..=end], "{compression:?}: {range}");
        }
        let head = server.request("HEAD", "/db/big", &[]);
        assert_eq!(
            head.header("content-length"),
            Some(big.len().to_string().as_str())
        );
        assert_eq!(server.get("/db/small").body, b"s");
    }
}
