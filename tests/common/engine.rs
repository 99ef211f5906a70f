//! A real engine over a source root the test fills, on a runtime of its own
//! (so tests can drive it from plain threads); shut down on drop.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sequinsfs::config::Config;
use sequinsfs::engine::Engine;

pub struct TestEngine {
    pub source: PathBuf,
    engine: Option<Engine>,
    pub runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl TestEngine {
    /// Fills a fresh source root with `fill`, starts an engine on it with
    /// the given grace period, and waits until everything is loaded.
    pub fn start(fill: impl FnOnce(&Path), grace: Duration) -> TestEngine {
        Self::start_with(fill, grace, |_| {})
    }

    /// [`TestEngine::start`] with the config adjusted by `adjust`.
    pub fn start_with(
        fill: impl FnOnce(&Path),
        grace: Duration,
        adjust: impl FnOnce(&mut Config),
    ) -> TestEngine {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source");
        std::fs::create_dir_all(&source).unwrap();
        fill(&source);
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let mut config = Config {
            source: source.display().to_string(),
            local_store: dir.path().join("store"),
            version_grace_period: grace,
            ..Config::default()
        };
        adjust(&mut config);
        let engine = runtime.block_on(async {
            let engine = Engine::start(config).await.unwrap();
            engine.refresh_now().await;
            engine
        });
        TestEngine {
            source,
            engine: Some(engine),
            runtime,
            _dir: dir,
        }
    }

    pub fn engine(&self) -> &Engine {
        self.engine.as_ref().expect("running")
    }
}

impl Drop for TestEngine {
    fn drop(&mut self) {
        if let Some(engine) = self.engine.take() {
            self.runtime.block_on(engine.shutdown());
        }
    }
}
