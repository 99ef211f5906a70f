//! A TCP relay on a free loopback port that can be cut like a network
//! link: a node configured with the relay's address as its ZooKeeper
//! reaches the server through it, and [`Relay::cut`] isolates that node
//! from ZooKeeper (and only from ZooKeeper) until [`Relay::heal`].
//!
//! While cut, nothing crosses: bytes read from either side are held back,
//! and new connections are accepted but never connected onward, so the
//! client sees a silent server (as behind a dropped route) rather than a
//! reset. A connection that lived through a cut is closed when the cut
//! heals, as a real one would have timed out by then; the client then
//! connects again through the healed relay.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};

pub struct Relay {
    port: u16,
    link: Arc<Link>,
}

#[derive(Default)]
struct Link {
    state: Mutex<LinkState>,
    changed: Condvar,
}

#[derive(Default, Clone, Copy)]
struct LinkState {
    cut: bool,
    /// Counts cuts: a connection made before the latest cut is closed once
    /// it heals.
    cuts: u64,
}

impl Link {
    fn state(&self) -> LinkState {
        *self.state.lock().unwrap()
    }

    /// Waits until the link is not cut; returns the state then.
    fn wait_healed(&self) -> LinkState {
        let state = self.state.lock().unwrap();
        *self.changed.wait_while(state, |s| s.cut).unwrap()
    }
}

impl Relay {
    /// A relay to `upstream` (`host:port`), passing traffic.
    pub fn start(upstream: &str) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let link = Arc::new(Link::default());
        let upstream = upstream.to_string();
        let accepting = Arc::clone(&link);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let link = Arc::clone(&accepting);
                let upstream = upstream.clone();
                std::thread::spawn(move || connect(client, &upstream, &link));
            }
        });
        Relay { port, link }
    }

    /// The address to give clients instead of the upstream's.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Isolates the clients from the upstream.
    pub fn cut(&self) {
        let mut state = self.link.state.lock().unwrap();
        state.cut = true;
        state.cuts += 1;
    }

    /// Lets traffic through again (on new connections).
    pub fn heal(&self) {
        self.link.state.lock().unwrap().cut = false;
        self.link.changed.notify_all();
    }
}

/// Serves one accepted connection: held while the link is cut, then
/// relayed both ways.
fn connect(client: TcpStream, upstream: &str, link: &Link) {
    let born = link.state();
    if born.cut {
        // Accepted but never answered; dropped once the cut heals.
        link.wait_healed();
        return;
    }
    let Ok(server) = TcpStream::connect(upstream) else {
        return;
    };
    let (client2, server2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    std::thread::scope(|scope| {
        scope.spawn(|| pump(&client, &server, born.cuts, link));
        pump(&server2, &client2, born.cuts, link);
    });
}

/// Copies `from` to `to` while the link stays as it was when the
/// connection was made; after a cut, closes both sides once it heals.
fn pump(mut from: &TcpStream, mut to: &TcpStream, born_after: u64, link: &Link) {
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buffer).unwrap_or(0);
        let state = link.state();
        if state.cut || state.cuts != born_after {
            link.wait_healed();
            break;
        }
        if n == 0 || to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
