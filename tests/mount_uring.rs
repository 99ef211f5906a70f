//! FUSE over io_uring: the mount behaviour checks of the other mount test
//! files run again here with every mount served over io_uring (the test
//! helpers switch the transport for mounts made in this binary, setting the
//! fuse module's `enable_uring` for the mount and restoring it), plus checks
//! of the transport itself: requests really travel over the rings, and
//! `auto` falls back to /dev/fuse when the kernel does not allow io_uring.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{TestMount, can_mount, publish_version, read, version};
use sequinsfs::catalog::Catalog;
use sequinsfs::fs::{FuseTransport, Op};

fn catalog() -> Arc<Catalog> {
    let catalog = Catalog::new();
    let pairs = (0..100)
        .map(|i| {
            (
                format!("key{i:03}").into_bytes(),
                format!("value {i}").into_bytes(),
            )
        })
        .collect();
    publish_version(&catalog, version("db", "1", pairs), Duration::from_secs(60));
    catalog
}

#[test]
fn requests_travel_over_the_rings() {
    if !can_mount() {
        return;
    }
    let m = TestMount::new(catalog());
    assert_eq!(m.handle().transport(), FuseTransport::Uring);
    let before = m.handle().uring_requests();
    let meta = std::fs::metadata(m.path()).unwrap();
    assert!(meta.is_dir());
    assert_eq!(read(&m.path().join("db/key042")), b"value 42");
    let counters = m.handle().counters();
    assert!(counters.get(Op::Lookup) >= 2, "{:?}", counters.snapshot());
    assert!(counters.get(Op::Read) >= 1, "{:?}", counters.snapshot());
    let served = m.handle().uring_requests() - before;
    assert!(served >= 3, "only {served} requests over io_uring");
    m.unmount();
}
