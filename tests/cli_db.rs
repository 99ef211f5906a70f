//! `sequinsfs db ...` against a local root and a real S3 server (moto):
//! offline/online/pin/unpin/delete and the state document they write, and
//! concurrent commands on one database losing no update.

mod common;

use common::roots::{Root, last_line};
use common::s3::MotoServer;
use sequinsfs::lifecycle::DatabaseState;

/// Versions 1 and 2 of `words`, and a second database.
async fn layout(root: &Root) {
    for key in [
        "words/1/part-00000",
        "words/1/_SUCCESS",
        "words/2/part-00000",
        "other/7/part-00000",
    ] {
        root.put(key, b"data").await;
    }
}

async fn state(root: &Root, db: &str) -> Option<DatabaseState> {
    root.objects(db)
        .await
        .get("_state.json")
        .map(|bytes| DatabaseState::parse(bytes, "test").unwrap())
}

fn ok(root: &Root, args: &[&str]) -> String {
    let (code, stdout, stderr) = root.run(args);
    assert_eq!(code, 0, "{args:?}: {stderr}");
    stdout
}

fn fails(root: &Root, args: &[&str]) -> String {
    let (code, _, stderr) = root.run(args);
    assert_eq!(code, 1, "{args:?} should fail: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    last_line(&stderr).to_string()
}

async fn lifecycle(root: &Root) {
    layout(root).await;
    let db = format!("{}/words", root.uri);

    let status = ok(root, &["db", "status", &db]);
    assert!(
        status.contains("  1 (complete)\n  2 (no _SUCCESS)\n"),
        "{status}"
    );
    assert!(status.contains("newest: 2\n"), "{status}");
    assert!(
        status.contains("state: online, unpinned (no _state.json)"),
        "{status}"
    );
    assert!(state(root, "words").await.is_none());

    let out = ok(root, &["db", "offline", &db]);
    assert!(
        out.starts_with(&format!("{db}: offline, unpinned (change 1: offline by ")),
        "{out}"
    );
    assert_eq!(out.lines().count(), 1);
    let s = state(root, "words").await.unwrap();
    assert!(!s.online);
    assert_eq!(s.pinned, None);
    assert_eq!(s.changes, 1);
    assert_eq!(s.last_change.as_deref(), Some("offline"));
    assert!(s.changed_by.as_deref().unwrap().contains('@'));
    chrono::DateTime::parse_from_rfc3339(s.changed_at.as_deref().unwrap()).unwrap();

    let out = ok(root, &["db", "pin", "1", &db]);
    assert!(
        out.contains(": offline, pinned 1 (change 2: pin 1 by "),
        "{out}"
    );
    // A version that is not in the source cannot be pinned; nothing changes.
    let err = fails(root, &["db", "pin", "9", &db]);
    assert!(
        err.contains("/words/9: no such version to pin (versions: 1, 2)"),
        "{err}"
    );
    assert_eq!(state(root, "words").await.unwrap().changes, 2);

    let out = ok(root, &["db", "unpin", &db]);
    assert!(
        out.contains(": offline, unpinned (change 3: unpin"),
        "{out}"
    );
    let out = ok(root, &["db", "online", &db]);
    assert!(
        out.contains(": online, unpinned (change 4: online"),
        "{out}"
    );
    let s = state(root, "words").await.unwrap();
    assert!(s.online && s.pinned.is_none() && s.changes == 4);

    let status = ok(root, &["db", "status", &db]);
    assert!(status.contains("\"changes\": 4"), "{status}");
    let list = ok(root, &["db", "list", &root.uri]);
    assert!(
        list.contains("other: 1 version(s) [7]; online, unpinned\n"),
        "{list}"
    );
    assert!(
        list.contains("words: 2 version(s) [1, 2]; online, unpinned (change 4: online by "),
        "{list}"
    );

    let err = fails(root, &["db", "offline", &format!("{}/missing", root.uri)]);
    assert!(err.ends_with("/missing: no such database"), "{err}");
    let err = fails(root, &["db", "offline", &format!("{}/bad.name", root.uri)]);
    assert!(err.contains("invalid db name"), "{err}");

    // Deleting asks for confirmation; with stdin not a terminal it refuses.
    let err = fails(root, &["db", "delete", &db]);
    assert!(err.contains("stdin is not a terminal"), "{err}");
    assert_eq!(root.objects("words").await.len(), 4);
    let out = ok(root, &["db", "delete", "--force", &db]);
    assert!(out.contains("/words: deleted (4 object(s))"), "{out}");
    assert!(root.objects("words").await.is_empty());
    let list = ok(root, &["db", "list", &root.uri]);
    assert!(!list.contains("words"), "{list}");
    assert_eq!(
        root.objects("other").await.len(),
        1,
        "other databases untouched"
    );
}

/// Fifty rounds of `db offline` racing `db pin 1`, then `db online` racing
/// `db pin 2`, each pair as two processes started together. Both changes of
/// every round must be in the state afterwards (a lost update would leave
/// the previous round's value in one field), and `changes` counts them all.
async fn racing_commands(root: &Root) {
    layout(root).await;
    let db = format!("{}/words", root.uri);
    let rounds = 50;
    for round in 0..rounds {
        let (state_cmd, pin) = if round % 2 == 0 {
            ("offline", "1")
        } else {
            ("online", "2")
        };
        let a = root
            .command(&["db", state_cmd, &db])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let b = root
            .command(&["db", "pin", pin, &db])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        for out in [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()] {
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let s = state(root, "words").await.unwrap();
        assert_eq!(s.online, round % 2 == 1, "round {round}: {s:?}");
        assert_eq!(s.pinned.as_deref(), Some(pin), "round {round}: {s:?}");
        assert_eq!(s.changes, 2 * (round + 1), "round {round}: {s:?}");
        let last = s.last_change.as_deref().unwrap();
        assert!(last == state_cmd || last == format!("pin {pin}"), "{last}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_commands_on_a_local_root() {
    lifecycle(&Root::local()).await;
    racing_commands(&Root::local()).await;
}

/// The S3 test server honours conditional PUTs, which the race test
/// relies on: a write conditional on a stale ETag fails, and a create of an
/// existing object fails.
async fn server_honours_conditional_puts(root: &Root) {
    use object_store::{ObjectStoreExt, PutMode, PutOptions, UpdateVersion};
    let path = object_store::path::Path::from("probe");
    let first = root.store.put(&path, b"1".to_vec().into()).await.unwrap();
    root.store.put(&path, b"2".to_vec().into()).await.unwrap();
    let stale = PutMode::Update(UpdateVersion::from(first));
    let err = root
        .store
        .put_opts(&path, b"3".to_vec().into(), PutOptions::from(stale))
        .await
        .unwrap_err();
    assert!(
        matches!(err, object_store::Error::Precondition { .. }),
        "{err}"
    );
    let err = root
        .store
        .put_opts(
            &path,
            b"4".to_vec().into(),
            PutOptions::from(PutMode::Create),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, object_store::Error::AlreadyExists { .. }),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_commands_on_s3() {
    let Some(server) = MotoServer::start() else {
        return;
    };
    server_honours_conditional_puts(&Root::s3(&server, "probe")).await;
    lifecycle(&Root::s3(&server, "lifecycle")).await;
    racing_commands(&Root::s3(&server, "race")).await;
}
