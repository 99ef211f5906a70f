//! `sequinsfs publish` against a local root and a real S3 server (moto):
//! every object arrives bit-exact, `_SUCCESS` only once every file is
//! there, nothing is ever overwritten, an interrupted publish resumes with
//! verification, racing publishers leave exactly the winner's files, and a
//! version that would not become the newest is refused.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::data::{SeqfileOptions, write_seqfile};
use common::roots::{Root, last_line};
use common::s3::MotoServer;

/// A version directory of `n` SequenceFiles (seeded so two directories
/// differ), plus a `_SUCCESS` and a hidden file, which are not published.
fn version_dir(parent: &Path, name: &str, n: usize, seed: u8) -> PathBuf {
    let dir = parent.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..n {
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..200u32)
            .map(|k| {
                (
                    format!("key-{seed}-{i}-{k}").into_bytes(),
                    vec![seed.wrapping_add(k as u8); (k % 50) as usize],
                )
            })
            .collect();
        write_seqfile(
            &dir.join(format!("part-{i:05}")),
            &pairs,
            &SeqfileOptions::snappy_block(),
        );
    }
    std::fs::write(dir.join("_SUCCESS"), b"the job's marker").unwrap();
    std::fs::write(dir.join(".part-00000.crc"), b"hidden").unwrap();
    dir
}

/// What a complete publish of `dir` leaves in the version: its data files,
/// an empty `_SUCCESS` and the claim.
fn expected_objects(dir: &Path, got: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, Vec<u8>> {
    let mut expected = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if name.starts_with('_') || name.starts_with('.') {
            continue;
        }
        expected.insert(name, std::fs::read(entry.path()).unwrap());
    }
    expected.insert("_SUCCESS".into(), Vec::new());
    if let Some(claim) = got.get("_PUBLISHED_BY") {
        let claim: serde_json::Value = serde_json::from_slice(claim).unwrap();
        assert!(claim["by"].as_str().unwrap().contains('@'), "{claim}");
        expected.insert("_PUBLISHED_BY".into(), got["_PUBLISHED_BY"].clone());
    }
    expected
}

async fn publish_interrupt_and_resume(root: &Root) {
    let work = tempfile::tempdir().unwrap();
    let dir = version_dir(work.path(), "v1", 3, 1);
    let dir_arg = dir.to_str().unwrap();
    let target = format!("{}/words/1", root.uri);

    // Something else already wrote the last file: the publish uploads the
    // first two, refuses to overwrite the third and stops before _SUCCESS.
    root.put("words/1/part-00002", b"somebody else's bytes")
        .await;
    let (code, _, stderr) = root.run(&["publish", dir_arg, &target]);
    assert_eq!(code, 1, "{stderr}");
    let error = last_line(&stderr);
    assert!(
        error.starts_with("sequinsfs: ")
            && error.contains("/words/1/part-00002: already exists")
            && error.contains("--resume"),
        "{stderr}"
    );
    let objects = root.objects("words/1").await;
    assert!(!objects.contains_key("_SUCCESS"), "{:?}", objects.keys());
    assert!(objects.contains_key("_PUBLISHED_BY"));
    assert_eq!(
        objects["part-00000"],
        std::fs::read(dir.join("part-00000")).unwrap()
    );
    assert_eq!(
        objects["part-00001"],
        std::fs::read(dir.join("part-00001")).unwrap()
    );
    assert_eq!(
        objects["part-00002"], b"somebody else's bytes",
        "not overwritten"
    );

    // Resuming verifies what is there: the foreign file does not match.
    let (code, _, stderr) = root.run(&["publish", "--resume", dir_arg, &target]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        last_line(&stderr).contains("/words/1/part-00002: already in the source with"),
        "{stderr}"
    );
    assert!(!root.objects("words/1").await.contains_key("_SUCCESS"));

    // Without the foreign file, --resume verifies the first two and
    // completes.
    root.delete("words/1/part-00002").await;
    let (code, _, stderr) = root.run(&["publish", "--resume", dir_arg, &target]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("part-00000 verified"), "{stderr}");
    assert!(stderr.contains("1 file(s) uploaded"), "{stderr}");
    let objects = root.objects("words/1").await;
    assert_eq!(objects, expected_objects(&dir, &objects));

    // Publishing it again is refused, naming who published it.
    let (code, _, stderr) = root.run(&["publish", dir_arg, &target]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        last_line(&stderr).contains("/words/1: already published by "),
        "{stderr}"
    );
    assert_eq!(root.objects("words/1").await, objects);
}

async fn version_order(root: &Root) {
    let work = tempfile::tempdir().unwrap();
    let dir = version_dir(work.path(), "v", 2, 2);
    let dir_arg = dir.to_str().unwrap();
    let (code, _, stderr) = root.run(&["publish", dir_arg, &format!("{}/order/5", root.uri)]);
    assert_eq!(code, 0, "{stderr}");
    // "40" sorts before "5" (byte order), as does "5" itself.
    for older in ["40", "05"] {
        let (code, _, stderr) =
            root.run(&["publish", dir_arg, &format!("{}/order/{older}", root.uri)]);
        assert_eq!(code, 1, "{stderr}");
        assert!(
            last_line(&stderr).contains("does not sort after the newest version \"5\"")
                && last_line(&stderr).contains("--force"),
            "{stderr}"
        );
        assert!(root.objects(&format!("order/{older}")).await.is_empty());
    }
    let (code, _, stderr) = root.run(&[
        "publish",
        "--force",
        dir_arg,
        &format!("{}/order/40", root.uri),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let objects = root.objects("order/40").await;
    assert_eq!(objects, expected_objects(&dir, &objects));
    // Invalid names are refused before anything is written.
    let (code, _, stderr) = root.run(&["publish", dir_arg, &format!("{}/order/6.0", root.uri)]);
    assert_eq!(code, 1);
    assert!(
        last_line(&stderr).contains("invalid version name \"6.0\""),
        "{stderr}"
    );
}

/// Two publishers of different data race for one version, several times:
/// exactly one wins each time, and the version holds exactly its files.
async fn racing_publishers(root: &Root) {
    let work = tempfile::tempdir().unwrap();
    let a = version_dir(work.path(), "a", 2, 10);
    let b = version_dir(work.path(), "b", 4, 20);
    for round in 0..5 {
        let target = format!("{}/race/{round}", root.uri);
        let mut first = root.command(&["publish", a.to_str().unwrap(), &target]);
        let mut second = root.command(&["publish", b.to_str().unwrap(), &target]);
        let first = first.stderr(std::process::Stdio::piped()).spawn().unwrap();
        let second = second.stderr(std::process::Stdio::piped()).spawn().unwrap();
        let first = first.wait_with_output().unwrap();
        let second = second.wait_with_output().unwrap();
        let outcomes = [(&a, first), (&b, second)];
        let winners: Vec<_> = outcomes
            .iter()
            .filter(|(_, o)| o.status.success())
            .collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one publisher wins"
        );
        let (winner_dir, _) = winners[0];
        let (_, loser) = outcomes.iter().find(|(_, o)| !o.status.success()).unwrap();
        let loser_err = String::from_utf8_lossy(&loser.stderr);
        assert_eq!(loser.status.code(), Some(1), "{loser_err}");
        assert!(
            last_line(&loser_err).contains(&format!("/race/{round}: already")),
            "round {round}: {loser_err}"
        );
        let objects = root.objects(&format!("race/{round}")).await;
        assert_eq!(
            objects,
            expected_objects(winner_dir, &objects),
            "round {round}: the winner's files, only"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_to_a_local_root() {
    let root = Root::local();
    publish_interrupt_and_resume(&root).await;
    version_order(&root).await;
    racing_publishers(&root).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_to_s3() {
    let Some(server) = MotoServer::start() else {
        return;
    };
    publish_interrupt_and_resume(&Root::s3(&server, "resume")).await;
    version_order(&Root::s3(&server, "order")).await;
    racing_publishers(&Root::s3(&server, "race")).await;
    large_files_in_parts(&Root::s3(&server, "large")).await;
}

/// A file above the multipart threshold goes up in parts, arrives intact
/// and is verified on resume like any other.
async fn large_files_in_parts(root: &Root) {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("big");
    std::fs::create_dir_all(&dir).unwrap();
    let big: Vec<u8> = (0..9 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(dir.join("part-00000"), &big).unwrap();
    std::fs::write(dir.join("part-00001"), b"small").unwrap();
    let target = format!("{}/big/1", root.uri);
    let dir_arg = dir.to_str().unwrap();
    let (code, _, stderr) = root.run(&[
        "publish",
        "--multipart-threshold",
        "1048576",
        dir_arg,
        &target,
    ]);
    assert_eq!(code, 0, "{stderr}");
    let objects = root.objects("big/1").await;
    assert_eq!(objects, expected_objects(&dir, &objects));
    // Multipart ETags are not content hashes; resume verifies by content.
    root.delete("big/1/_SUCCESS").await;
    let (code, _, stderr) = root.run(&["publish", "--resume", dir_arg, &target]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("part-00000 verified"), "{stderr}");
    assert_eq!(root.objects("big/1").await, objects);
}
