//! Compiled components cached on disk as precompiled artifacts, keyed by the component's
//! SHA-256 and the engine's compatibility hash, so a second load skips compilation.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use anyhow::Context;
use wasmtime::Engine;
use wasmtime::component::Component;

/// A directory of precompiled components.
#[derive(Debug, Clone)]
pub struct ComponentCache {
    dir: PathBuf,
}

/// How a component was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Compiled now and stored.
    Compiled,
    /// Loaded from the cache without compiling.
    Hit,
}

impl ComponentCache {
    /// A cache in `dir` (created on first store).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ComponentCache { dir: dir.into() }
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_for(&self, engine: &Engine, digest: &str) -> PathBuf {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = hasher.finish();
        let digest = digest.trim_start_matches("sha256:");
        self.dir.join(format!("{digest}-{engine_key:016x}.cwasm"))
    }

    /// The compiled form of `bytes` (whose digest is `digest`), from the cache when present.
    pub fn load(
        &self,
        engine: &Engine,
        digest: &str,
        bytes: &[u8],
    ) -> anyhow::Result<(Component, CacheOutcome)> {
        let path = self.path_for(engine, digest);
        if path.is_file() {
            // SAFETY of deserialize_file: the artifact was written by this process's
            // engine configuration into a directory only the host writes; wasmtime still
            // checks the engine compatibility header. A corrupt file fails here and is
            // recompiled below.
            match deserialize(engine, &path) {
                Ok(component) => return Ok((component, CacheOutcome::Hit)),
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "discarding unusable cached component");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let artifact = engine
            .precompile_component(bytes)
            .map_err(anyhow::Error::from)
            .context("compiling the component")?;
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating cache directory {}", self.dir.display()))?;
        // Write to a temporary name and rename, so a reader never sees half a file.
        let temporary = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&temporary, &artifact)
            .with_context(|| format!("writing {}", temporary.display()))?;
        std::fs::rename(&temporary, &path)
            .with_context(|| format!("storing {}", path.display()))?;
        // SAFETY: the artifact was just produced by this engine.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(engine, &artifact) }
            .map_err(anyhow::Error::from)
            .context("loading the compiled component")?;
        Ok((component, CacheOutcome::Compiled))
    }
}

/// Read the artifact into memory rather than mapping the file: a mapped file that is
/// replaced or truncated under a running process would crash it (SIGBUS).
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, path: &Path) -> anyhow::Result<Component> {
    let artifact = std::fs::read(path)
        .with_context(|| format!("reading precompiled component {}", path.display()))?;
    // SAFETY: see `ComponentCache::load`; the bytes are a wasmtime artifact produced by
    // `precompile_component` with a compatible engine, which wasmtime verifies.
    unsafe { Component::deserialize(engine, &artifact) }
        .map_err(anyhow::Error::from)
        .with_context(|| format!("loading precompiled component {}", path.display()))
}
