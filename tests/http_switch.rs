//! Version switches under concurrent HTTP load: no request fails, every
//! response is internally consistent (the value belongs to the version named
//! in `X-Sequins-Version`) and no client ever sees the version go backwards.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::*;
use sequinsfs::catalog::Catalog;

const SWITCHES: u32 = 30;
const CLIENTS: usize = 6;
/// Requests that must complete (over all clients) between two switches, so
/// that every switch happens under load.
const REQUESTS_PER_SWITCH: u64 = 40;

fn publish_version(catalog: &Catalog, n: u32) {
    let name = format!("{n:03}");
    let value = format!("value-of-{name}");
    publish(
        catalog,
        "db",
        &name,
        &[(b"hot", value.as_bytes()), (b"other/key", b"x")],
    );
}

#[test]
fn thirty_switches_under_load() {
    let catalog = Catalog::new();
    publish_version(&catalog, 0);
    let server = TestServer::start(Arc::clone(&catalog));
    let done = Arc::new(AtomicBool::new(false));
    let completed = Arc::new(AtomicU64::new(0));

    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (addr, done, completed) = (server.addr, done.clone(), completed.clone());
            std::thread::spawn(move || {
                let mut conn = Conn::connect(addr);
                let mut last_seen = 0u32;
                let mut seen_versions = 0u32;
                while !done.load(Ordering::Relaxed) {
                    // Half the clients keep one connection, half reconnect.
                    if i % 2 == 1 {
                        conn = Conn::connect(addr);
                    }
                    let r = conn
                        .request("GET", "/db/hot", &[])
                        .unwrap_or_else(|e| panic!("client {i}: request failed: {e}"));
                    assert_eq!(r.status, 200, "client {i}");
                    let version = r.header("x-sequins-version").expect("version header");
                    assert_eq!(r.text(), format!("value-of-{version}"), "client {i}");
                    let n: u32 = version.parse().unwrap();
                    assert!(
                        n >= last_seen,
                        "client {i}: version went from {last_seen} to {n}"
                    );
                    if n > last_seen {
                        seen_versions += 1;
                    }
                    last_seen = n;
                    completed.fetch_add(1, Ordering::Relaxed);
                }
                (last_seen, seen_versions)
            })
        })
        .collect();

    for n in 1..=SWITCHES {
        let target = completed.load(Ordering::Relaxed) + REQUESTS_PER_SWITCH;
        while completed.load(Ordering::Relaxed) < target {
            assert!(!clients.iter().any(|c| c.is_finished()), "a client failed");
            std::thread::yield_now();
        }
        publish_version(&catalog, n);
    }
    let target = completed.load(Ordering::Relaxed) + REQUESTS_PER_SWITCH;
    while completed.load(Ordering::Relaxed) < target {
        assert!(!clients.iter().any(|c| c.is_finished()), "a client failed");
        std::thread::yield_now();
    }
    done.store(true, Ordering::Relaxed);
    let mut total_switches_seen = 0;
    for c in clients {
        let (last, seen) = c.join().expect("client panicked");
        assert_eq!(last, SWITCHES, "every client ends on the last version");
        total_switches_seen += seen;
    }
    // Clients really observed switches happening, not just the final state.
    assert!(total_switches_seen > SWITCHES, "{total_switches_seen}");
    assert_eq!(server.metrics.requests_with_status(500), 0);
    assert_eq!(server.metrics.requests_with_status(404), 0);
}
