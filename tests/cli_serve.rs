//! The `serve` subcommand as a user runs it: help text and startup errors.

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
