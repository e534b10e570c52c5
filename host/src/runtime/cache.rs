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
    ///
    /// A precompiled artifact is native code, so the cache is used only when its directory
    /// is private to the user running the host (created with mode 0700; not writable by
    /// group or others). Otherwise the component is compiled in memory every time and a
    /// warning says why.
    pub fn load(
        &self,
        engine: &Engine,
        digest: &str,
        bytes: &[u8],
    ) -> anyhow::Result<(Component, CacheOutcome)> {
        let trusted = self.prepare_dir();
        let path = self.path_for(engine, digest);
        if trusted && path.is_file() {
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
        if trusted {
            // Write to a temporary name and rename, so a reader never sees half a file.
            let temporary = path.with_extension(format!("tmp{}", std::process::id()));
            let stored = std::fs::write(&temporary, &artifact)
                .and_then(|()| std::fs::rename(&temporary, &path));
            if let Err(error) = stored {
                let _ = std::fs::remove_file(&temporary);
                tracing::warn!(path = %path.display(), %error, "could not cache the compiled component");
            }
        }
        // SAFETY: the artifact was just produced by this engine.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(engine, &artifact) }
            .map_err(anyhow::Error::from)
            .context("loading the compiled component")?;
        Ok((component, CacheOutcome::Compiled))
    }

    /// Create the cache directory (mode 0700) if needed; whether it is safe to use.
    fn prepare_dir(&self) -> bool {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        if !self.dir.exists() {
            let created = std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir);
            if let Err(error) = created {
                tracing::warn!(dir = %self.dir.display(), %error, "cannot create the component cache; compiling without it");
                return false;
            }
        }
        let owner = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
        match std::fs::metadata(&self.dir) {
            Ok(meta) if meta.permissions().mode() & 0o022 == 0 && Some(meta.uid()) == owner => true,
            Ok(_) => {
                tracing::warn!(
                    dir = %self.dir.display(),
                    "the component cache is writable by others or owned by another user; compiling without it"
                );
                false
            }
            Err(error) => {
                tracing::warn!(dir = %self.dir.display(), %error, "cannot read the component cache; compiling without it");
                false
            }
        }
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
