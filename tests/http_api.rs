//! The sidecar's API over a real socket: sequins' status codes, headers and
//! JSON fields, and the HTTP features sequins lacks.

mod common;

use std::collections::BTreeMap;

use common::*;
use sequinsfs::catalog::Catalog;
use sequinsfs::http::{HttpOptions, RequestLogTarget};

const LAST_MODIFIED: &str = "Fri, 14 Jul 2017 02:40:00 GMT"; // CREATED_SECS

#[test]
fn value_has_sequins_headers() {
    let server = TestServer::start(healthy_catalog());
    let r = server.get("/baby-names/1881/boy");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"John");
    assert_eq!(r.header("content-length"), Some("4"));
    assert_eq!(r.header("x-sequins-version"), Some("1"));
    assert_eq!(r.header("last-modified"), Some(LAST_MODIFIED));
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert!(
        r.header("etag")
            .is_some_and(|e| e.len() == 18 && e.starts_with('"'))
    );
    assert!(r.header("date").is_some());
}

#[test]
fn key_path_is_percent_decoded() {
    let server = TestServer::start(healthy_catalog());
    for target in [
        "/baby-names/1881%2Fboy",
        "/baby-names/1881%2fboy",
        "/baby-names/%31881/boy",
        "/baby-names%2F1881/boy",
    ] {
        let r = server.get(target);
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, &b"John"[..]),
            "{target}"
        );
    }
}

#[test]
fn missing_key_unknown_db_and_empty_db_name() {
    let server = TestServer::start(partially_healthy_catalog());
    let r = server.get("/baby-names/1881/cat");
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-sequins-version"), Some("1"));
    assert!(r.body.is_empty());
    assert_eq!(r.header("content-length"), Some("0"));

    let r = server.get("/no-such-db/1881/boy");
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-sequins-version"), None);
    assert!(r.body.is_empty());

    // A database whose only version failed: no good version.
    let r = server.get("/baby-names-bad/1881/boy");
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-sequins-version"), None);

    assert_eq!(server.get("//1881/boy").status, 400);
    assert_eq!(server.get("//").status, 400);
    // A database name that is not UTF-8 cannot exist.
    assert_eq!(server.get("/%ff/k").status, 404);
}

#[test]
fn bad_percent_escapes_are_400() {
    let server = TestServer::start(healthy_catalog());
    for target in [
        "/baby-names/%",
        "/baby-names/%4",
        "/baby-names/%zz",
        "/%g0/x",
    ] {
        assert_eq!(server.get(target).status, 400, "{target}");
    }
}

#[test]
fn binary_keys_with_escapes() {
    let catalog = Catalog::new();
    publish(
        &catalog,
        "mydata",
        "v1",
        &[
            (b"\0\0\0*", b"forty-two"),
            (b"\xff\x00/\n", b"\x00\x01\x02"),
            (b"%", b"percent"),
            (b"a b", b"space"),
        ],
    );
    let server = TestServer::start(catalog);
    let r = server.get("/mydata/%00%00%00%2A");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"forty-two"[..]));
    let r = server.get("/mydata/%FF%00/%0A");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"\x00\x01\x02"[..]));
    assert_eq!(r.header("content-length"), Some("3"));
    let r = server.get("/mydata/%25");
    assert_eq!(r.body, b"percent");
    let r = server.get("/mydata/a%20b");
    assert_eq!(r.body, b"space");
    assert_eq!(server.get("/mydata/%00%00%00%2B").status, 404);
}

#[test]
fn head_has_headers_and_no_body() {
    let server = TestServer::start(healthy_catalog());
    let mut conn = server.connect();
    let r = conn.request("HEAD", "/baby-names/1951/girl", &[]).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("5"));
    assert_eq!(r.header("x-sequins-version"), Some("1"));
    assert!(r.body.is_empty());
    // The connection is still in sync: the next response is read whole.
    let r = conn.request("GET", "/baby-names/1951/girl", &[]).unwrap();
    assert_eq!(r.body, b"Linda");
    let r = conn.request("HEAD", "/baby-names/1951/cat", &[]).unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-sequins-version"), Some("1"));
    let r = conn
        .request("HEAD", "/", &[("Accept", "application/json")])
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(r.header("content-length").is_some_and(|l| l != "0"));
    let r = conn.request("GET", "/healthz", &[]).unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn unsupported_methods() {
    let server = TestServer::start(healthy_catalog());
    for method in ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"] {
        let r = server.request(method, "/baby-names/1881/boy", &[("Content-Length", "0")]);
        assert_eq!(r.status, 405, "{method}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"));
    }
}

#[test]
fn ranges() {
    let server = TestServer::start(healthy_catalog());
    let get = |range: &str| server.request("GET", "/baby-names/1992/girl", &[("Range", range)]);
    // "Ashley"
    let r = get("bytes=1-3");
    assert_eq!(r.status, 206);
    assert_eq!(r.body, b"shl");
    assert_eq!(r.header("content-range"), Some("bytes 1-3/6"));
    assert_eq!(r.header("content-length"), Some("3"));
    assert_eq!(r.header("x-sequins-version"), Some("1"));
    let r = get("bytes=-2");
    assert_eq!((r.status, r.body.as_slice()), (206, &b"ey"[..]));
    assert_eq!(r.header("content-range"), Some("bytes 4-5/6"));
    let r = get("bytes=4-");
    assert_eq!((r.status, r.body.as_slice()), (206, &b"ey"[..]));
    let r = get("bytes=2-1000");
    assert_eq!((r.status, r.body.as_slice()), (206, &b"hley"[..]));

    let r = get("bytes=6-");
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */6"));
    assert!(r.body.is_empty());

    // Several ranges: the whole value (documented choice).
    let r = get("bytes=0-0,2-3");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"Ashley"[..]));
    // Malformed: ignored.
    let r = get("bytes=x-y");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"Ashley"[..]));

    // If-Range with the current ETag honours the range, a stale one doesn't.
    let etag = server
        .get("/baby-names/1992/girl")
        .header("etag")
        .unwrap()
        .to_string();
    let r = server.request(
        "GET",
        "/baby-names/1992/girl",
        &[("Range", "bytes=0-1"), ("If-Range", &etag)],
    );
    assert_eq!((r.status, r.body.as_slice()), (206, &b"As"[..]));
    let r = server.request(
        "GET",
        "/baby-names/1992/girl",
        &[("Range", "bytes=0-1"), ("If-Range", "\"stale\"")],
    );
    assert_eq!((r.status, r.body.as_slice()), (200, &b"Ashley"[..]));
    // A range on a missing key is still a 404.
    let r = server.request("GET", "/baby-names/1992/cat", &[("Range", "bytes=0-1")]);
    assert_eq!(r.status, 404);
}

#[test]
fn etag_and_conditional_requests() {
    let catalog = healthy_catalog();
    let server = TestServer::start(catalog.clone());
    let first = server.get("/baby-names/1881/boy");
    let etag = first.header("etag").unwrap().to_string();
    // Stable, and different for another key.
    assert_eq!(
        server.get("/baby-names/1881/boy").header("etag"),
        Some(etag.as_str())
    );
    assert_ne!(
        server.get("/baby-names/1881/girl").header("etag"),
        Some(etag.as_str())
    );

    let r = server.request("GET", "/baby-names/1881/boy", &[("If-None-Match", &etag)]);
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert_eq!(r.header("x-sequins-version"), Some("1"));
    let weak = format!("\"other\", W/{etag}");
    let r = server.request("GET", "/baby-names/1881/boy", &[("If-None-Match", &weak)]);
    assert_eq!(r.status, 304);
    let r = server.request(
        "GET",
        "/baby-names/1881/boy",
        &[("If-None-Match", "\"other\"")],
    );
    assert_eq!(r.status, 200);

    let r = server.request(
        "GET",
        "/baby-names/1881/boy",
        &[("If-Modified-Since", LAST_MODIFIED)],
    );
    assert_eq!(r.status, 304);
    let r = server.request(
        "GET",
        "/baby-names/1881/boy",
        &[("If-Modified-Since", "Thu, 13 Jul 2017 02:40:00 GMT")],
    );
    assert_eq!(r.status, 200);
    // If-None-Match wins over If-Modified-Since.
    let r = server.request(
        "GET",
        "/baby-names/1881/boy",
        &[
            ("If-None-Match", "\"other\""),
            ("If-Modified-Since", LAST_MODIFIED),
        ],
    );
    assert_eq!(r.status, 200);

    // A new version changes the ETag: the old one no longer matches.
    publish(&catalog, "baby-names", "2", BABY_NAMES);
    let r = server.request("GET", "/baby-names/1881/boy", &[("If-None-Match", &etag)]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-sequins-version"), Some("2"));
    assert_ne!(r.header("etag"), Some(etag.as_str()));
}

#[test]
fn content_type_global_and_per_database() {
    let catalog = healthy_catalog();
    publish(&catalog, "json-db", "1", &[(b"k", b"{}")]);
    let options = HttpOptions {
        content_type: "text/plain; charset=utf-8".into(),
        content_types: BTreeMap::from([("json-db".to_string(), "application/json".to_string())]),
        ..HttpOptions::default()
    };
    let server = TestServer::with_options(catalog, options);
    assert_eq!(
        server.get("/baby-names/1881/boy").header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(
        server.get("/json-db/k").header("content-type"),
        Some("application/json")
    );
}

#[test]
fn invalid_content_type_is_refused_at_start() {
    let options = HttpOptions {
        content_type: "text/plain\n".into(),
        ..HttpOptions::default()
    };
    let server = TestServer::with_options(Catalog::new(), options);
    let err = server.stop().unwrap_err();
    assert!(err.to_string().contains("content type"), "{err}");
}

#[test]
fn proxy_parameter_pins_a_held_version() {
    let catalog = healthy_catalog();
    publish(&catalog, "baby-names", "2", &[(b"1881/boy", b"Johnny")]);
    let server = TestServer::start(catalog);
    let r = server.get("/baby-names/1881/boy?proxy=1");
    assert_eq!(
        (r.header("x-sequins-version"), r.body.as_slice()),
        (Some("1"), &b"John"[..])
    );
    let r = server.get("/baby-names/1881/boy?proxy=9");
    assert_eq!(
        (r.header("x-sequins-version"), r.body.as_slice()),
        (Some("2"), &b"Johnny"[..])
    );
    let r = server.get("/baby-names/1881/boy");
    assert_eq!(r.header("x-sequins-version"), Some("2"));
    // Unknown database with proxy: 501 (sequins' peer protocol).
    assert_eq!(server.get("/nope/k?proxy=1").status, 501);
    assert_eq!(server.get("/nope/k?other=1").status, 404);
}

#[test]
fn global_status_json() {
    let server = TestServer::start(partially_healthy_catalog());
    let r = server.request("GET", "/", &[("Accept", "application/json")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let doc = r.json();
    assert_eq!(doc["shard_id"], "");
    let v = &doc["dbs"]["baby-names"]["versions"]["1"];
    assert_eq!(v["path"], "/src/baby-names/1");
    assert_eq!(v["num_partitions"], 5);
    assert_eq!(v["target_replication"], 1);
    assert_eq!(v["replication_histogram"]["1"], 5);
    assert_eq!(v["average_replication"], 1.0);
    assert_eq!(v["missing_partitions"], 0);
    assert_eq!(v["underreplicated_partitions"], 0);
    assert_eq!(v["overreplicated_partitions"], 0);
    let node = &v["nodes"]["localhost"];
    assert_eq!(node["name"], "localhost");
    assert_eq!(node["state"], "ACTIVE");
    assert_eq!(node["current"], true);
    assert_eq!(node["created_at"], "2017-07-14T02:40:00Z");
    assert!(node["active_at"].as_str().unwrap().ends_with('Z'));
    assert_ne!(node["active_at"], "0001-01-01T00:00:00Z");
    assert_eq!(node["partitions"], serde_json::json!([0, 1, 2, 3, 4]));
    assert_eq!(node["shard_id"], "");
    assert_eq!(node["num_keys"], BABY_NAMES.len());

    let bad = &doc["dbs"]["baby-names-bad"]["versions"]["1"];
    let node = &bad["nodes"]["localhost"];
    assert_eq!(node["state"], "ERROR");
    assert_eq!(node["current"], false);
    assert_eq!(node["active_at"], "0001-01-01T00:00:00Z");
    assert!(
        node["error"]
            .as_str()
            .unwrap()
            .contains("not a SequenceFile")
    );
    // A failed load never learnt its partition count.
    assert_eq!(bad["missing_partitions"], 0);
    assert_eq!(bad["replication_histogram"], serde_json::json!({}));
}

#[test]
fn database_status_json_and_unknown_database() {
    let server = TestServer::start(partially_healthy_catalog());
    for target in ["/baby-names", "/baby-names/"] {
        let r = server.request("GET", target, &[("Accept", "application/json")]);
        assert_eq!(r.status, 200, "{target}");
        let doc = r.json();
        assert_eq!(
            doc.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["versions"]
        );
        assert_eq!(
            doc["versions"]["1"]["nodes"]["localhost"]["state"],
            "ACTIVE"
        );
    }
    let r = server.request("GET", "/baby-names-bad", &[("Accept", "application/json")]);
    assert_eq!(
        r.json()["versions"]["1"]["nodes"]["localhost"]["state"],
        "ERROR"
    );
    assert_eq!(server.get("/no-such-db").status, 404);
    assert_eq!(server.get("/no-such-db/").status, 404);
}

#[test]
fn status_negotiates_json_or_html() {
    let server = TestServer::start(healthy_catalog());
    let is_json = |accept: Option<&str>| {
        let headers: Vec<(&str, &str)> = accept.map(|a| ("Accept", a)).into_iter().collect();
        let r = server.request("GET", "/", &headers);
        assert_eq!(r.status, 200);
        match r.header("content-type") {
            Some("application/json") => true,
            Some("text/html; charset=utf-8") => {
                assert!(r.text().contains("<td>1 (current)</td>"), "{}", r.text());
                false
            }
            other => panic!("content type {other:?}"),
        }
    };
    assert!(is_json(Some("application/json")));
    assert!(is_json(Some("application/json, text/plain")));
    assert!(is_json(Some("text/html;q=0.5, application/json;q=0.9")));
    assert!(!is_json(None));
    assert!(!is_json(Some("*/*")));
    assert!(!is_json(Some("text/html,application/xhtml+xml,*/*;q=0.8")));
}

#[test]
fn html_escapes_names() {
    let catalog = Catalog::new();
    publish(&catalog, "<script>", "1", &[(b"k", b"v")]);
    let server = TestServer::start(catalog);
    let page = server.get("/").text();
    assert!(page.contains("&lt;script&gt;"));
    assert!(!page.contains("<script>"));
}

#[test]
fn empty_catalog() {
    let server = TestServer::start(Catalog::new());
    let r = server.request("GET", "/", &[("Accept", "application/json")]);
    assert_eq!(r.json(), serde_json::json!({"dbs": {}, "shard_id": ""}));
    let r = server.get("/healthz");
    assert_eq!(r.status, 404);
    assert_eq!(r.json(), serde_json::json!({}));
    assert_eq!(server.get("/x/y").status, 404);
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn healthz_follows_version_states() {
    let server = TestServer::start(partially_healthy_catalog());
    let r = server.get("/healthz");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let doc = r.json();
    assert_eq!(doc["baby-names"]["1"]["state"], "ACTIVE");
    assert_eq!(doc["baby-names"]["1"]["name"], "localhost");
    assert_eq!(doc["baby-names-bad"]["1"]["state"], "ERROR");

    let server = TestServer::start(unhealthy_catalog());
    let r = server.get("/healthz");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["baby-names-bad"]["1"]["state"], "ERROR");

    // BUILDING counts as healthy, as in sequins.
    let catalog = unhealthy_catalog();
    catalog.start_load("new-db", "1", "/src/new-db/1".into(), Default::default());
    let server = TestServer::start(catalog);
    assert_eq!(server.get("/healthz").status, 200);
}

#[test]
fn metrics_parse_and_count_requests() {
    let server = TestServer::start(partially_healthy_catalog());
    for _ in 0..3 {
        assert_eq!(server.get("/baby-names/1881/boy").status, 200);
    }
    assert_eq!(server.get("/baby-names/1881/cat").status, 404);
    let r = server.get("/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let samples = parse_prometheus(&r.text()).unwrap_or_else(|e| panic!("{e}\n{}", r.text()));
    assert_eq!(
        sample(
            &samples,
            "sequinsfs_http_requests_total",
            &[("code", "200")]
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &samples,
            "sequinsfs_http_requests_total",
            &[("code", "404")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &samples,
            "sequinsfs_http_request_duration_seconds_count",
            &[]
        ),
        Some(4.0)
    );
    assert_eq!(
        sample(&samples, "sequinsfs_http_response_bytes_total", &[]),
        Some(12.0)
    );
    assert_eq!(
        sample(&samples, "sequinsfs_database_keys", &[("db", "baby-names")]),
        Some(BABY_NAMES.len() as f64)
    );
    assert_eq!(
        sample(
            &samples,
            "sequinsfs_database_versions",
            &[("db", "baby-names-bad"), ("state", "ERROR")]
        ),
        Some(1.0)
    );
    // The scrape itself is counted by the next one.
    let samples = parse_prometheus(&server.get("/metrics").text()).unwrap();
    assert_eq!(
        sample(
            &samples,
            "sequinsfs_http_requests_total",
            &[("code", "200")]
        ),
        Some(4.0)
    );
}

#[test]
fn request_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("requests.log");
    let options = HttpOptions {
        request_log: Some(RequestLogTarget::File(log.clone())),
        ..HttpOptions::default()
    };
    let catalog = healthy_catalog();
    publish(&catalog, "bin", "1", &[(b"\0\"", b"x")]);
    let server = TestServer::with_options(catalog, options);
    server.get("/baby-names/1881/boy");
    server.get("/baby-names/1881%2Fcat");
    server.get("/bin/%00%22");
    server.get("/"); // not logged, as in sequins
    server.get("/healthz"); // not logged
    server.get("/baby-names/1881/boy?proxy=1"); // not logged
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let tails: Vec<&str> = lines
        .iter()
        .map(|l| {
            // "YYYY/MM/DD HH:MM:SS " is 20 bytes.
            let (time, tail) = l.split_at(20);
            assert!(
                chrono::NaiveDateTime::parse_from_str(time.trim_end(), "%Y/%m/%d %H:%M:%S").is_ok(),
                "{l}"
            );
            tail
        })
        .collect();
    assert_eq!(
        tails,
        [
            r#"CANONICAL-SEQUINS-REQUEST-LINE "baby-names/1881/boy" 200"#,
            r#"CANONICAL-SEQUINS-REQUEST-LINE "baby-names/1881/cat" 404"#,
            r#"CANONICAL-SEQUINS-REQUEST-LINE "bin/\x00\"" 200"#,
        ]
    );
}

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let server = TestServer::start(healthy_catalog());
    let mut conn = server.connect();
    for (key, value) in BABY_NAMES.iter().cycle().take(50) {
        let target = format!("/baby-names/{}", String::from_utf8_lossy(key));
        let r = conn.request("GET", &target, &[]).unwrap();
        assert_eq!(r.body, *value);
        assert_ne!(r.header("connection"), Some("close"));
    }
    // Pipelined: two requests in one write, two answers in order.
    conn.send_raw(
        b"GET /baby-names/1881/boy HTTP/1.1\r\nHost: t\r\n\r\nGET /baby-names/1881/girl HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .unwrap();
    assert_eq!(conn.read_reply(false).unwrap().body, b"John");
    assert_eq!(conn.read_reply(false).unwrap().body, b"Mary");
}
