//! What a new user sees when something is wrong: one line that names the
//! problem and the path, exit code 1, and nothing created on disk.

mod common;

use common::cli::{run, sequinsfs};

#[test]
fn a_missing_source_says_so_and_creates_no_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let missing = dir.path().join("no-such-source");
    for command in ["sync", "serve"] {
        let (code, _, err) = run(&[
            command,
            missing.to_str().unwrap(),
            "--local-store",
            store.to_str().unwrap(),
            "--config",
            "/dev/null",
        ]);
        assert_eq!(code, 1, "{command}: {err}");
        assert_eq!(
            err,
            format!("sequinsfs: source {} does not exist\n", missing.display()),
            "{command}"
        );
        assert!(!store.exists(), "{command} created the local store");
    }
}

#[test]
fn a_file_as_the_source_is_not_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("part-00000");
    std::fs::write(&file, b"SEQ").unwrap();
    let store = dir.path().join("store");
    let (code, _, err) = run(&[
        "sync",
        file.to_str().unwrap(),
        "--local-store",
        store.to_str().unwrap(),
        "--config",
        "/dev/null",
    ]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!("sequinsfs: source {} is not a directory\n", file.display())
    );
    assert!(!store.exists());
}

#[test]
fn a_missing_config_file_names_it_and_its_cause_once() {
    let (code, _, err) = run(&["sync", "/tmp", "--config", "/nonexistent/sequins.conf"]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "sequinsfs: /nonexistent/sequins.conf: No such file or directory (os error 2)\n"
    );
}

#[test]
fn a_toml_error_is_one_line_with_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sequins.conf");
    std::fs::write(
        &config,
        "source = \"/tmp\"\n\n[storage]\ncompresion = \"none\"\n",
    )
    .unwrap();
    let (code, _, err) = run(&["sync", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "sequinsfs: {}: line 4, column 1: unknown field `compresion`",
            config.display()
        )),
        "{err}"
    );
}

#[test]
fn serve_help_does_not_offer_touching_refresh() {
    let (code, out, _) = run(&["serve", "--help"]);
    assert_eq!(code, 0);
    assert!(!out.contains(".refresh"), "{out}");
    let (_, out, _) = run(&["mount", "--help"]);
    assert!(out.contains(".refresh"), "{out}");
}

/// Logs written to a pipe (as here) carry no colour escape codes.
#[test]
fn logs_to_a_pipe_are_plain_text() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    let store = dir.path().join("store");
    assert!(
        sequinsfs()
            .arg("demo-data")
            .arg(&source)
            .status()
            .unwrap()
            .success()
    );
    // An address that is taken makes `serve` log and exit at once.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = sequinsfs()
        .args(["serve", "--log-level", "debug", "--config", "/dev/null"])
        .arg(&source)
        .arg("--local-store")
        .arg(&store)
        .args(["--bind", &addr])
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.is_empty());
    assert!(!stderr.contains('\u{1b}'), "escape codes in {stderr:?}");
}

/// A source root with nothing that looks like `<db>/<version>/` is served
/// (it may fill later), with a warning in the log and the status page.
#[test]
fn an_empty_source_root_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("stray-file"), b"x").unwrap();
    let store = dir.path().join("store");
    let (code, out, err) = run(&[
        "sync",
        source.to_str().unwrap(),
        "--local-store",
        store.to_str().unwrap(),
        "--config",
        "/dev/null",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains(&format!(
            "the source root {} holds nothing that looks like <db>/<version>/",
            source.display()
        )),
        "{err}"
    );
}
