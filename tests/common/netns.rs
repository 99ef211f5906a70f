//! A private network namespace for one test, and nftables rules inside it
//! to cut a link the way a network partition does.
//!
//! [`in_private_network`] runs a closure on a new thread that has moved
//! into a network namespace of its own (only a loopback interface, up):
//! every thread and process it starts lives there too, ZooKeeper and the
//! nodes included, while the other tests of the binary stay outside. FUSE
//! mounts are not affected (they belong to the mount namespace). Rules
//! added with [`Firewall`] apply to that namespace only and vanish with it.

use std::io::Write;
use std::process::{Command, Stdio};

/// Runs `body` in a private network namespace (see the module docs);
/// `None`, after saying why, when this machine cannot make one (not root,
/// no `ip`), unless `CI` is set, where it fails.
pub fn in_private_network<T: Send + 'static>(
    body: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let thread = std::thread::spawn(move || {
        // SAFETY: unshare(CLONE_NEWNET) only changes the calling thread's
        // network namespace; it touches no memory.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(format!(
                "cannot create a network namespace: {}",
                std::io::Error::last_os_error()
            ));
        }
        let lo = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status();
        if !lo.is_ok_and(|s| s.success()) {
            return Err("cannot bring up the loopback interface (`ip` from iproute2)".into());
        }
        Ok(body())
    });
    match thread.join() {
        Ok(Ok(value)) => Some(value),
        Ok(Err(why)) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{why}; CI must run this test"
            );
            eprintln!("skipped: {why}");
            None
        }
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// An nftables table of the current network namespace that drops chosen
/// TCP traffic on the loopback interface.
pub struct Firewall;

impl Firewall {
    /// The table, created empty; `None` (after saying so) without `nft`,
    /// unless `CI` is set, where it fails.
    pub fn new() -> Option<Firewall> {
        if Command::new("nft").arg("--version").output().is_err() {
            assert!(
                std::env::var_os("CI").is_none(),
                "nft (nftables) missing; CI must run this test"
            );
            eprintln!("skipped: nft (nftables) not installed");
            return None;
        }
        nft("add table inet sqfs_test\n\
             add chain inet sqfs_test output { type filter hook output priority 0; policy accept; }\n");
        Some(Firewall)
    }

    /// Drops every packet to and from `address:port` (both directions of
    /// the connections a client makes to that address): a silent link,
    /// as a partition is, not a refused one.
    pub fn cut(&self, address: &str, port: u16) {
        nft(&format!(
            "add rule inet sqfs_test output ip daddr {address} tcp dport {port} drop\n\
             add rule inet sqfs_test output ip saddr {address} tcp sport {port} drop\n"
        ));
    }

    /// Removes every rule: the links heal.
    pub fn heal(&self) {
        nft("flush chain inet sqfs_test output\n");
    }
}

fn nft(script: &str) {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("nft");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("nft script");
    assert!(
        child.wait().expect("nft").success(),
        "nft failed on:\n{script}"
    );
}
