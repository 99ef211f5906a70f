//! The `serve` subcommand as a user runs it: help text, startup errors,
//! and serving until SIGTERM.

mod common;

use std::process::Command;

fn sequinsfs() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sequinsfs"))
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
    let source = dir.path().join("source");
    let out = sequinsfs().arg("demo-data").arg(&source).output().unwrap();
    assert!(out.status.success());
    let port = common::free_port();
    let mut child = sequinsfs()
        .args(["serve", "--config", "/dev/null", "--http-threads", "2"])
        .arg("--bind")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--local-store")
        .arg(dir.path().join("store"))
        .arg(&source)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The port is bound before loading starts and answered once loading
    // is done; wait for the "serving" log line rather than polling.
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let serving = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("serving HTTP"));
    assert!(serving, "serve never logged that it was serving");
    let mut conn = common::Conn::connect(([127, 0, 0, 1], port).into());
    let reply = conn.request("GET", "/colors/red", &[]).unwrap();
    assert_eq!(
        (reply.status, reply.body.as_slice()),
        (200, &b"#ff0000"[..])
    );
    // SAFETY: kill sends a signal to the child this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "exit after SIGTERM");
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
    let source = dir.path().join("source");
    let out = sequinsfs().arg("demo-data").arg(&source).output().unwrap();
    assert!(out.status.success());
    let port = common::free_port();
    let mut child = sequinsfs()
        .args(["serve", "--config", "/dev/null", "--idle-poll"])
        .arg("--bind")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--local-store")
        .arg(dir.path().join("store"))
        .arg(&source)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let serving = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("serving HTTP"));
    assert!(serving, "serve never logged that it was serving");
    let mut conn = common::Conn::connect(([127, 0, 0, 1], port).into());
    assert_eq!(conn.request("GET", "/colors/red", &[]).unwrap().status, 200);
    // The manager takes the request in the background: look until it has.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let metrics = conn.request("GET", "/metrics", &[]).unwrap().text();
        let takes: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("sequinsfs_idle_poll_takes_total "))
            .expect("idle poll metrics")
            .parse()
            .unwrap();
        if takes >= 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{metrics}");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // SAFETY: kill sends a signal to the child this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    assert_eq!(child.wait().unwrap().code(), Some(0), "exit after SIGTERM");
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
