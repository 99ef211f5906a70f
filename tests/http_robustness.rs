//! Malformed and hostile clients get a 4xx or a closed connection, and the
//! server keeps serving everyone else meanwhile.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;
use sequinsfs::http::HttpOptions;

/// A well-behaved request still works.
fn assert_serving(server: &TestServer) {
    let r = server.get("/baby-names/1881/boy");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"John"[..]));
}

#[test]
fn huge_headers_get_431_and_others_are_served() {
    let options = HttpOptions {
        max_header_bytes: 16 * 1024,
        ..HttpOptions::default()
    };
    let server = TestServer::with_options(healthy_catalog(), options);
    let big = "x".repeat(64 * 1024);
    let mut conn = server.connect();
    // Write may fail once the server has answered and closed: that is fine.
    let _ = conn.send_raw(
        format!("GET /baby-names/1881/boy HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\n\r\n").as_bytes(),
    );
    match conn.read_reply(false) {
        Ok(r) => assert_eq!(r.status, 431),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
            ),
            "{e}"
        ),
    }
    assert!(conn.is_closed_by_server());
    assert_serving(&server);

    // A huge request target likewise.
    let mut conn = server.connect();
    let _ = conn.send_raw(format!("GET /baby-names/{big} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    if let Ok(r) = conn.read_reply(false) {
        assert!((400..500).contains(&r.status), "{}", r.status);
    }
    assert!(conn.is_closed_by_server());
    assert_serving(&server);

    // Headers up to the limit are fine.
    let ok = "y".repeat(8 * 1024);
    let r = server.request("GET", "/baby-names/1881/boy", &[("X-Ok", &ok)]);
    assert_eq!(r.status, 200);
}

#[test]
fn slowloris_partial_requests_are_closed() {
    let options = HttpOptions {
        header_read_timeout: Duration::from_millis(300),
        ..HttpOptions::default()
    };
    let server = TestServer::with_options(healthy_catalog(), options);
    // Several clients that start a request and never finish it.
    let mut slow: Vec<Conn> = (0..20)
        .map(|_| {
            let mut c = server.connect();
            c.send_raw(b"GET /baby-names/1881/boy HTTP/1.1\r\nHost: t\r\nX-A: ")
                .unwrap();
            c
        })
        .collect();
    // Meanwhile others are served, on new and on kept-alive connections.
    let mut keep = server.connect();
    for _ in 0..10 {
        assert_serving(&server);
        assert_eq!(
            keep.request("GET", "/baby-names/1881/girl", &[])
                .unwrap()
                .status,
            200
        );
    }
    // Every slow client is cut off by the header timeout (the read blocks
    // until the server closes; the client's 10 s read timeout would fail
    // the test if it never did).
    for c in &mut slow {
        if let Ok(r) = c.read_reply(false) {
            assert!((400..500).contains(&r.status), "{}", r.status);
        }
        assert!(c.is_closed_by_server());
    }
    // An idle keep-alive connection is closed after the same timeout.
    assert!(keep.is_closed_by_server());
    assert_serving(&server);
}

/// Writing a response counts as progress: a client downloading a large value
/// slowly, for many request timeouts, gets all of it.
#[test]
fn slow_download_of_a_large_value_is_not_cut_off() {
    // Long enough that a test thread descheduled for a few hundred
    // milliseconds on a loaded machine still reads within two timeouts
    // (the server closes a connection that took nothing for that long).
    let timeout = Duration::from_millis(400);
    let options = HttpOptions {
        header_read_timeout: timeout,
        ..HttpOptions::default()
    };
    let server = TestServer::with_options(healthy_catalog(), options);
    // More than the kernel buffers on both sides hold, so the server keeps
    // writing for as long as the client takes to read.
    let value: Vec<u8> = (0..24u32 << 20).map(|i| (i % 251) as u8).collect();
    publish(&server.catalog, "big", "1", &[(b"k", &value)]);

    let mut conn = server.connect();
    conn.send_raw(b"GET /big/k HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let started = std::time::Instant::now();
    let mut received = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut body_start = None;
    while body_start.is_none_or(|start| received.len() < start + value.len()) {
        // The slow client: a pause before every read (about 400 of them).
        std::thread::sleep(Duration::from_millis(12));
        let n = conn.stream().read(&mut chunk).unwrap();
        assert!(n > 0, "closed after {} bytes", received.len());
        received.extend_from_slice(&chunk[..n]);
        if body_start.is_none() {
            body_start = received
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|end| end + 4);
        }
    }
    assert!(started.elapsed() > timeout * 3, "{:?}", started.elapsed());
    assert!(received.starts_with(b"HTTP/1.1 200 "));
    let body_start = body_start.unwrap_or_default();
    assert!(received[body_start..] == value[..]);
    // Whether the connection stays open afterwards depends on how long the
    // client took to drain what the kernel buffered after the server's last
    // write: that time counts as idle.
}

#[test]
fn garbage_gets_400_or_close() {
    let server = TestServer::start(healthy_catalog());
    let inputs: &[&[u8]] = &[
        b"HELLO\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET /baby-names/1881/boy HTTP/9.9\r\n\r\n",
        b"GET /baby-names/1881/boy HTTP/1.1\r\nBad Header\r\n\r\n",
        b"GET /baby-names/1881/boy HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n",
        b"GET /baby names HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /baby-names/\x00\xff HTTP/1.1\r\nHost: t\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", // a TLS ClientHello
        b"\0\0\0\0\0\0\0\0\r\n\r\n",
    ];
    for input in inputs {
        let mut conn = server.connect();
        let _ = conn.stream().write_all(input);
        let _ = conn.stream().shutdown(std::net::Shutdown::Write);
        if let Ok(r) = conn.read_reply(false) {
            assert!(
                (400..500).contains(&r.status),
                "{:?}: {}",
                String::from_utf8_lossy(input),
                r.status
            );
        }
        assert!(conn.is_closed_by_server());
        assert_serving(&server);
    }
}

#[test]
fn bad_escape_keeps_the_connection_usable() {
    let server = TestServer::start(healthy_catalog());
    let mut conn = server.connect();
    assert_eq!(
        conn.request("GET", "/baby-names/%zz", &[]).unwrap().status,
        400
    );
    assert_eq!(
        conn.request("DELETE", "/baby-names/x", &[]).unwrap().status,
        405
    );
    let r = conn.request("GET", "/baby-names/1881/boy", &[]).unwrap();
    assert_eq!(r.body, b"John");
}

#[test]
fn many_connections_at_once() {
    let server = TestServer::start(healthy_catalog());
    let mut conns: Vec<Conn> = (0..200).map(|_| server.connect()).collect();
    for c in &mut conns {
        assert_eq!(
            c.request("GET", "/baby-names/1881/boy", &[])
                .unwrap()
                .status,
            200
        );
    }
    drop(conns);
    assert_serving(&server);
}

#[test]
fn http_1_0_without_host() {
    let server = TestServer::start(healthy_catalog());
    let mut conn = server.connect();
    conn.send_raw(b"GET /baby-names/1881/boy HTTP/1.0\r\n\r\n")
        .unwrap();
    let r = conn.read_reply(false).unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"John"[..]));
    assert!(conn.is_closed_by_server());
}

#[test]
fn shutdown_stops_accepting() {
    let server = TestServer::start(healthy_catalog());
    assert_serving(&server);
    let addr = server.addr;
    server.stop().unwrap();
    assert!(std::net::TcpStream::connect(addr).is_err());
}

#[test]
fn half_closed_clients_still_get_their_answer() {
    let server = TestServer::start(healthy_catalog());
    for _ in 0..300 {
        let mut conn = server.connect();
        conn.send_raw(b"GET /baby-names/1881/boy HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        conn.stream().shutdown(std::net::Shutdown::Write).unwrap();
        let r = conn
            .read_reply(false)
            .expect("an answer despite the half-close");
        assert_eq!(r.body, b"John");
    }
}
