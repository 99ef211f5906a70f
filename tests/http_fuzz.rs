//! Mutation fuzzing of the HTTP front end: well-formed requests covering
//! every route and header the sidecar reads are mutated (bit flips,
//! truncations, inserted and overwritten bytes, numbers replaced by huge
//! ones) and sent to a live server. Every answer must be a well-formed
//! response with a status the API can legitimately produce (never a 500,
//! never a hang), and the server must keep answering a good request.
//!
//! The default case count keeps this to a few seconds; raise it with
//! `PROPTEST_CASES=20000 cargo test --release --test http_fuzz`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Requests that exercise every parser: path decoding, the proxy query,
/// Accept negotiation, conditional headers, ranges, bodies.
const SEEDS: &[&str] = &[
    "GET /baby-names/1881/boy HTTP/1.1\r\nHost: t\r\n\r\n",
    "HEAD /baby-names/1881%2Fgirl HTTP/1.1\r\nHost: t\r\n\r\n",
    "GET /bin/%00%FF%2F%0a HTTP/1.1\r\nHost: t\r\n\r\n",
    "GET /baby-names/1992/girl HTTP/1.1\r\nHost: t\r\nRange: bytes=1-3\r\n\r\n",
    "GET /baby-names/1992/girl HTTP/1.1\r\nHost: t\r\nRange: bytes=-2\r\nIf-Range: \"00000000\"\r\n\r\n",
    "GET /baby-names/1992/girl HTTP/1.1\r\nHost: t\r\nRange: bytes=0-0,2-3\r\n\r\n",
    "GET /baby-names/1881/boy HTTP/1.1\r\nHost: t\r\nIf-None-Match: \"a\", W/\"b\", *\r\n\r\n",
    "GET /baby-names/1881/boy HTTP/1.1\r\nHost: t\r\nIf-Modified-Since: Fri, 14 Jul 2017 02:40:00 GMT\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: t\r\nAccept: text/html;q=0.5, application/json;q=0.9\r\n\r\n",
    "GET /baby-names/ HTTP/1.1\r\nHost: t\r\nAccept: application/*\r\n\r\n",
    "GET /baby-names-bad HTTP/1.1\r\nHost: t\r\nAccept: application/json\r\n\r\n",
    "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
    "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n",
    "GET /baby-names/1881/boy?proxy=1&x=%20 HTTP/1.1\r\nHost: t\r\n\r\n",
    "POST /baby-names/1881/boy HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
    "GET /baby-names/1881/boy HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "GET /baby-names/1881/boy HTTP/1.1\r\nHost: t\r\n\r\nGET /baby-names/1881/girl HTTP/1.1\r\nHost: t\r\n\r\n",
];

/// Statuses the sidecar or hyper may answer with. 500 is not among them:
/// the in-memory data never fails, so a 500 would be a bug.
const ALLOWED: &[u16] = &[200, 206, 304, 400, 404, 405, 414, 416, 431, 501, 505];

/// Bytes that mean something in a request head.
fn request_alphabet() -> Vec<u8> {
    b"%/\r\n,-;\"\0".to_vec()
}

/// Sends `input`, half-closes, and reads until the server closes. Returns
/// the statuses of the responses received.
fn exchange(addr: std::net::SocketAddr, input: &[u8]) -> Result<Vec<u16>, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    // A hang is a failure: no mutated request may keep the server silent
    // longer than the header timeout configured below.
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    // The server may answer and close before reading everything.
    let _ = stream.write_all(input);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    if let Err(e) = stream.read_to_end(&mut out)
        && e.kind() != std::io::ErrorKind::ConnectionReset
    {
        return Err(format!("read: {e} after {} bytes", out.len()));
    }
    let text = String::from_utf8_lossy(&out);
    Ok(text
        .match_indices("HTTP/1.")
        .filter_map(|(i, _)| {
            let line = &text[i..];
            // A status line, not "HTTP/1." inside a body.
            (i == 0 || text[..i].ends_with('\n'))
                .then(|| line.get(9..12)?.parse().ok())
                .flatten()
        })
        .collect())
}

#[test]
fn mutated_requests_never_break_the_server() {
    let catalog = healthy_catalog();
    publish(&catalog, "bin", "1", &[(b"\0\xff/\n", b"\x01\x02")]);
    set_error(&catalog, "baby-names-bad", "1", "not a SequenceFile");
    let options = sequinsfs::http::HttpOptions {
        header_read_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let server = TestServer::with_options(catalog, options);
    let addr = server.addr;

    let mut config = Config::with_cases(common::mutate::cases(300));
    config.failure_persistence = None;
    let mut runner = TestRunner::new(config);
    let strategy = (
        0..SEEDS.len(),
        prop::collection::vec(common::mutate::text(request_alphabet()), 1..4),
    );
    let result = runner.run(&strategy, |(seed, mutations)| {
        let mut input = SEEDS[seed].as_bytes().to_vec();
        common::mutate::apply_all(&mut input, &mutations);
        let statuses = exchange(addr, &input).map_err(TestCaseError::fail)?;
        for status in statuses {
            prop_assert!(
                ALLOWED.contains(&status),
                "status {status} for {:?}",
                String::from_utf8_lossy(&input)
            );
        }
        let good = exchange(addr, SEEDS[0].as_bytes()).map_err(TestCaseError::fail)?;
        prop_assert_eq!(good, vec![200]);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    assert_eq!(server.metrics.requests_with_status(500), 0);
}

proptest! {
    /// The path decoder takes any string without panicking, and decodes
    /// what an encoder produced back to the original bytes.
    #[test]
    fn percent_decoding_round_trips(key in prop::collection::vec(any::<u8>(), 0..64), junk in ".{0,32}") {
        let encoded: String = key.iter().map(|b| format!("%{b:02x}")).collect();
        prop_assert_eq!(sequinsfs::http::path::percent_decode(&encoded).unwrap(), key);
        let _ = sequinsfs::http::path::percent_decode(&junk);
    }
}
