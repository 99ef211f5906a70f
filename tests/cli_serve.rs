//! The `serve` subcommand as a user runs it: help text, startup errors,
//! and serving until SIGTERM.

mod common;

use std::process::Command;

fn sequinsfs() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sequinsfs"))
}

/// Writes the demo source root under `dir`, starts `serve` over it on
/// `port` with `extra` flags, and returns once it logged that it serves
/// (the port is bound before loading starts and answered once loading is
/// done, so the log line is the event to wait for).
fn serve_demo(dir: &std::path::Path, port: u16, extra: &[&str]) -> std::process::Child {
    let source = dir.join("source");
    let out = sequinsfs().arg("demo-data").arg(&source).output().unwrap();
    assert!(out.status.success());
    let mut child = sequinsfs()
        .args(["serve", "--config", "/dev/null"])
        .args(extra)
        .arg("--bind")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--local-store")
        .arg(dir.join("store"))
        .arg(&source)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read stderr to its end on a thread of its own: a closed pipe would
    // make the daemon's later log lines fail.
    let stderr = child.stderr.take().unwrap();
    let (serving_tx, serving) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            if line.contains("serving HTTP") {
                let _ = serving_tx.send(());
            }
        }
    });
    assert!(
        serving.recv().is_ok(),
        "serve never logged that it was serving"
    );
    child
}

/// Sends SIGTERM and checks that `serve` exits 0.
fn stop_serve(mut child: std::process::Child) {
    // SAFETY: kill sends a signal to the child this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    assert_eq!(child.wait().unwrap().code(), Some(0), "exit after SIGTERM");
}

#[test]
fn help_shows_every_flag_with_its_default() {
    let out = sequinsfs().args(["serve", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for expected in [
        "--bind <ADDR>",
        "127.0.0.1:9599",
        "--local-store <PATH>",
        "/var/sequins/",
        "--config <PATH>",
        "sequins.conf",
        "--refresh-period <DURATION>",
        "--require-success-file",
        "--max-parallel-loads <N>",
        "[default: 10",
        "--content-type <TYPE>",
        "application/octet-stream",
        "--request-log[=<FILE>]",
        "--log-level <LEVEL>",
        "[default: info]",
        "--http-threads <N>",
        "[default: 1]",
        "--idle-poll",
        "[default: off]",
    ] {
        assert!(help.contains(expected), "missing {expected:?} in:\n{help}");
    }
}

#[test]
fn address_in_use_is_a_one_line_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let src = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let out = sequinsfs()
        .args([
            "serve",
            "--config",
            "/dev/null",
            "--bind",
            &addr,
            "--local-store",
        ])
        .arg(store.path())
        .arg(src.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
}

#[test]
fn missing_source_is_a_one_line_error() {
    let out = sequinsfs()
        .args(["serve", "--config", "/dev/null"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with("sequinsfs: ") && stderr.contains("source"),
        "{stderr}"
    );
}

/// `serve` answers from its own HTTP threads until SIGTERM, then exits 0.
#[test]
fn serves_the_demo_data_until_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let child = serve_demo(dir.path(), port, &["--http-threads", "2"]);
    let mut conn = common::Conn::connect(([127, 0, 0, 1], port).into());
    let reply = conn.request("GET", "/colors/red", &[]).unwrap();
    assert_eq!(
        (reply.status, reply.body.as_slice()),
        (200, &b"#ff0000"[..])
    );
    stop_serve(child);
}

/// `serve --idle-poll` takes the CPU latency request once requests arrive
/// and says so in `/metrics`.
#[test]
fn idle_poll_is_taken_by_requests_and_shown_in_metrics() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !std::path::Path::new("/dev/cpu_dma_latency").exists() {
        eprintln!("skipped: --idle-poll needs root and /dev/cpu_dma_latency");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let child = serve_demo(dir.path(), port, &["--idle-poll"]);
    let mut conn = common::Conn::connect(([127, 0, 0, 1], port).into());
    assert_eq!(conn.request("GET", "/colors/red", &[]).unwrap().status, 200);
    // The manager takes the request in the background: look until it has.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let samples = common::scrape(&mut conn);
        let takes = common::sample(&samples, "sequinsfs_idle_poll_takes_total", &[]);
        if takes >= Some(1.0) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{samples:?}");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    stop_serve(child);
}

#[test]
fn an_invalid_content_type_is_a_startup_error() {
    let src = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let out = sequinsfs()
        .args(["serve", "--config", "/dev/null", "--bind", "127.0.0.1:0"])
        .args(["--content-type", "text/plain\u{7f}"])
        .arg("--local-store")
        .arg(store.path())
        .arg(src.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("invalid content type"), "{stderr}");
}

/// SIGTERM during a long first load stops the load and the process at once,
/// instead of after the load.
#[test]
fn sigterm_during_the_first_load_stops_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..5_000)
        .map(|i| (format!("k{i}").into_bytes(), b"v".to_vec()))
        .collect();
    common::data::write_seqfile_version(&source, "slow", "1", &[pairs]);
    let config = dir.path().join("sequins.conf");
    // 5,000 records at 20 ms each: a first load of 100 s.
    std::fs::write(&config, "throttle_loads = \"20ms\"\n").unwrap();
    let mut child = sequinsfs()
        .args(["serve", "--config"])
        .arg(&config)
        .arg("--bind")
        .arg(format!("127.0.0.1:{}", common::free_port()))
        .arg("--local-store")
        .arg(dir.path().join("store"))
        .arg(&source)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (loading_tx, loading) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            if line.contains("loading version") {
                let _ = loading_tx.send(());
            }
        }
    });
    loading
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("serve never started loading");
    let started = std::time::Instant::now();
    // SAFETY: kill sends a signal to the child this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    assert_eq!(child.wait().unwrap().code(), Some(0), "exit after SIGTERM");
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
    assert!(!dir.path().join("store/data/slow").exists());
}
