//! A source root the lifecycle CLI tests write to: a local directory or a
//! bucket on the moto S3 server, seen through object_store either way, with
//! the environment the `sequinsfs` binary needs to reach it.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

use super::s3::{self, MotoServer};

pub struct Root {
    /// The URI given to the commands.
    pub uri: String,
    pub store: Arc<dyn ObjectStore>,
    env: Vec<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl Root {
    pub fn local() -> Root {
        let dir = tempfile::tempdir().unwrap();
        Root {
            uri: dir.path().to_str().unwrap().to_string(),
            store: Arc::new(
                object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap(),
            ),
            env: Vec::new(),
            _dir: Some(dir),
        }
    }

    /// A fresh bucket on `server`.
    pub fn s3(server: &MotoServer, bucket: &str) -> Root {
        server.create_bucket(bucket);
        Root {
            uri: format!("s3://{bucket}/prefix"),
            store: Arc::new(object_store::prefix::PrefixStore::new(
                server.store(bucket),
                "prefix",
            )),
            env: vec![
                ("AWS_ACCESS_KEY_ID".into(), s3::ACCESS_KEY.into()),
                ("AWS_SECRET_ACCESS_KEY".into(), s3::SECRET_KEY.into()),
                ("AWS_REGION".into(), s3::REGION.into()),
                ("AWS_ENDPOINT_URL".into(), server.endpoint.clone()),
            ],
            _dir: None,
        }
    }

    pub fn is_local(&self) -> bool {
        self._dir.is_some()
    }

    /// `sequinsfs args...`, set up to reach this root.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = super::cli::sequinsfs();
        command.args(args).envs(self.env.iter().cloned());
        command.stdin(std::process::Stdio::null());
        command
    }

    /// Runs `sequinsfs args...` to its end: (exit code, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.command(args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Every object under `prefix` (relative to the root) with its bytes,
    /// keyed by the path below `prefix`. Hidden files of a local root
    /// (`.state.lock`) are not objects.
    pub async fn objects(&self, prefix: &str) -> BTreeMap<String, Vec<u8>> {
        let prefix_path = ObjectPath::from(prefix);
        let listed: Vec<_> = self
            .store
            .list(Some(&prefix_path))
            .try_collect()
            .await
            .unwrap();
        let mut objects = BTreeMap::new();
        for meta in listed {
            let name = meta
                .location
                .prefix_match(&prefix_path)
                .unwrap()
                .map(|p| p.as_ref().to_string())
                .collect::<Vec<_>>()
                .join("/");
            if name.split('/').any(|part| part.starts_with('.')) {
                continue;
            }
            let bytes = self
                .store
                .get(&meta.location)
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            objects.insert(name, bytes.to_vec());
        }
        objects
    }

    pub async fn put(&self, key: &str, data: &[u8]) {
        self.store
            .put(&ObjectPath::from(key), data.to_vec().into())
            .await
            .unwrap();
    }

    pub async fn delete(&self, key: &str) {
        self.store.delete(&ObjectPath::from(key)).await.unwrap();
    }
}

/// The last line of a command's stderr (its error, after any progress).
pub fn last_line(stderr: &str) -> &str {
    stderr.trim_end().lines().last().unwrap_or("")
}
