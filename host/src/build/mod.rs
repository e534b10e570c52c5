//! Building a driver from source at an exact commit, reproducibly.
//!
//! [`build`] fetches one commit of a repository into a new, empty directory, fetches the
//! crates its `Cargo.lock` pins (`cargo fetch --locked`, the only step besides git that
//! may use the network), then compiles the package for `wasm32-wasip2` with
//! `cargo build --release --locked --offline` inside a network namespace that reaches
//! nothing. What makes two builds of the same commit byte-identical wherever they run:
//!
//! - paths: the compiler runs in its own mount namespace where the build's directory is
//!   always `/mnt` (cargo derives a path dependency's crate identity, and with it symbol
//!   names and code layout, from its directory), and the checkout, the cargo home and the
//!   target directory are remapped (`--remap-path-prefix`) to fixed names, so panic
//!   messages name `/warden/src/…` whatever directory the build ran in;
//! - environment: the tools run with a cleared environment (see
//!   `process::clean_command`) plus `SOURCE_DATE_EPOCH` (the commit's time),
//!   `WARDEN_SOURCE_COMMIT` (which the SDK embeds as provenance), `LC_ALL=C`, `TZ=UTC`;
//! - toolchain: the repository's own `rust-toolchain.toml` picks the compiler through
//!   rustup; its `rustc -vV` goes into the record.
//!
//! The result is a [`Built`]: the component, its digest, and a [`BuildRecord`] saying what
//! was built and how. Compiler output streams to the caller as [`Progress`] lines and its
//! tail is kept for the record of a failure.

mod git;
mod process;
mod source;

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

pub use git::NewerCommits;
pub use process::{Isolation, MAX_OUTPUT, OutputTail, available_isolation};
pub use source::{Commit, GitCredentials, PackagePath, Repository};

use process::{Redactor, clean_command};

/// The target drivers are built for.
pub const TARGET: &str = "wasm32-wasip2";

/// Where an isolated compile sees the build's directory (its `src` and `target`).
const MOUNTED: &str = "/mnt";

/// Largest component a build may produce (as the API accepts for uploads).
const MAX_COMPONENT: u64 = 64 << 20;

/// Why a build did not produce a component.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BuildError {
    /// The request itself is wrong: not a commit id, a path leaving the checkout.
    #[error("{0}")]
    InvalidInput(String),
    /// git could not fetch or check out the commit.
    #[error("{0}")]
    Git(String),
    /// The package is not there or not a driver package.
    #[error("{0}")]
    Package(String),
    /// cargo failed to fetch the locked crates or to compile.
    #[error("{0}")]
    Cargo(String),
    /// The machine cannot keep the compiler off the network and the deployer did not
    /// choose `danger_build_with_network`.
    #[error("{0}")]
    Isolation(String),
    /// A file or process operation of the host failed.
    #[error("{0}")]
    Io(String),
}

/// What a running build reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// A new stage began: `checkout`, `fetch`, `compile`, `done`.
    Stage(&'static str),
    /// One line of a tool's output (credentials blanked).
    Line(String),
}

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// Where the source is.
    pub repository: Repository,
    /// Credentials for an HTTPS repository, besides any the URL carried.
    pub credentials: Option<GitCredentials>,
    /// The exact commit.
    pub commit: Commit,
    /// The driver package's directory in the repository.
    pub path: PackagePath,
    /// A directory the build may create its working directory in; the working directory
    /// is removed afterwards.
    pub work_dir: PathBuf,
    /// Build with network access when the machine cannot isolate the compiler
    /// (development machines without user namespaces). Off by default; recorded.
    pub danger_build_with_network: bool,
}

/// What was built and how: kept with the build and the driver, shown to reviewers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BuildRecord {
    /// The repository, without credentials.
    pub repository: String,
    /// The commit built.
    pub commit: String,
    /// The package built.
    pub path: String,
    /// The cargo package name.
    pub package: String,
    /// The compile command, as run in the package directory.
    pub command: Vec<String>,
    /// `rustc -vV` of the toolchain the repository selected.
    pub toolchain: String,
    /// The commit's time, given to the build as `SOURCE_DATE_EPOCH`.
    pub source_date_epoch: u64,
    /// How the compiler was kept off the network.
    #[schema(value_type = String)]
    pub isolation: Isolation,
    /// `sha256:<hex>` of the component.
    pub digest: String,
    /// The component's size in bytes.
    pub size: u64,
    /// How long the build took, in milliseconds.
    pub duration_ms: u64,
}

/// A finished build.
#[derive(Debug, Clone)]
pub struct Built {
    /// The record.
    pub record: BuildRecord,
    /// The component's bytes.
    pub component: Vec<u8>,
    /// The tail of the tools' output.
    pub output: String,
}

/// A failed build: why, and the tail of the tools' output.
#[derive(Debug, Clone)]
pub struct Failed {
    /// Why.
    pub error: BuildError,
    /// The output up to the failure (the compiler's errors are at its end).
    pub output: String,
}

/// Build `request`, blocking (run it on a blocking thread), reporting to `progress`.
pub fn build(request: &BuildRequest, progress: &mut dyn FnMut(Progress)) -> Result<Built, Failed> {
    let mut tail = OutputTail::default();
    let result = Workspace::create(&request.work_dir)
        .and_then(|workspace| run(request, &workspace, &mut tail, progress));
    match result {
        Ok((record, component)) => Ok(Built {
            record,
            component,
            output: tail.text(),
        }),
        Err(error) => Err(Failed {
            error,
            output: tail.text(),
        }),
    }
}

/// Bring the bare mirror `mirror` of `repository` up to date and count the commits of
/// `branch` (the remote's default branch when `None`) that `pinned` does not contain: the
/// "update available" check. Blocking.
pub fn newer_commits(
    repository: &Repository,
    credentials: Option<&GitCredentials>,
    mirror: &Path,
    pinned: &str,
    branch: Option<&str>,
) -> Result<NewerCommits, BuildError> {
    let pinned: Commit = pinned.parse()?;
    let credentials = credentials.or(repository.embedded_credentials());
    let redactor = Redactor::new(credentials.map(GitCredentials::secrets).unwrap_or_default());
    let mut tail = OutputTail::default();
    git::Git {
        redactor: &redactor,
        credentials,
        tail: &mut tail,
        progress: &mut |_| {},
    }
    .newer_commits(repository, mirror, pinned.as_str(), branch)
}

/// The build's own directory, removed when dropped.
struct Workspace {
    root: PathBuf,
}

impl Workspace {
    fn create(parent: &Path) -> Result<Workspace, BuildError> {
        let io = |e: std::io::Error| {
            BuildError::Io(format!(
                "cannot create a build directory in {}: {e}",
                parent.display()
            ))
        };
        std::fs::create_dir_all(parent).map_err(io)?;
        let root = parent.join(format!("build-{}", random_suffix()));
        std::fs::create_dir(&root).map_err(io)?;
        std::fs::create_dir(root.join("src")).map_err(io)?;
        Ok(Workspace { root })
    }

    fn source(&self) -> PathBuf {
        self.root.join("src")
    }

    fn target(&self) -> PathBuf {
        self.root.join("target")
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.root) {
            tracing::warn!(dir = %self.root.display(), "could not remove a build directory: {e}");
        }
    }
}

fn random_suffix() -> String {
    format!("{:016x}", fastrand::u64(..))
}

fn run(
    request: &BuildRequest,
    workspace: &Workspace,
    tail: &mut OutputTail,
    progress: &mut dyn FnMut(Progress),
) -> Result<(BuildRecord, Vec<u8>), BuildError> {
    let started = Instant::now();
    let isolation = match (available_isolation(), request.danger_build_with_network) {
        (Some(isolation), _) => isolation,
        (None, true) => {
            tracing::warn!(
                "danger_build_with_network: compiling a driver with network access, because \
                 this machine cannot run the compiler in its own network namespace"
            );
            Isolation::None
        }
        (None, false) => {
            return Err(BuildError::Isolation(
                "this machine cannot keep the compiler off the network (`unshare --net` and \
                 `unshare --user --net` both fail); allow user namespaces, run the host with \
                 CAP_SYS_ADMIN, or set danger_build_with_network"
                    .into(),
            ));
        }
    };
    let credentials = request
        .credentials
        .as_ref()
        .or(request.repository.embedded_credentials());
    let redactor = Redactor::new(credentials.map(GitCredentials::secrets).unwrap_or_default());

    progress(Progress::Stage("checkout"));
    let source = workspace.source();
    let source_date_epoch = git::Git {
        redactor: &redactor,
        credentials,
        tail: &mut *tail,
        progress: &mut *progress,
    }
    .checkout(&request.repository, &request.commit, &source)?;

    let package_dir = request.path.join_to(&source);
    let manifest = package_dir.join("Cargo.toml");
    if !manifest.is_file() {
        return Err(BuildError::Package(format!(
            "{} has no Cargo.toml at commit {}",
            request.path, request.commit
        )));
    }
    let cargo_home = cargo_home();
    let target = workspace.target();
    let mut tools = Tools {
        redactor: &redactor,
        tail,
        progress,
        root: &workspace.root,
        source: &source,
        target: &target,
        cargo_home: &cargo_home,
        source_date_epoch,
        commit: &request.commit,
    };

    progress_stage(&mut tools, "fetch");
    let mut fetch = tools.cargo(&package_dir);
    fetch
        .args(["fetch", "--locked", "--target", TARGET])
        .envs(process::network_variables());
    tools.run(fetch, "fetch the locked crates")?;

    let package = tools.package_of(&package_dir, &manifest)?;
    let toolchain = tools.toolchain(&package_dir)?;

    progress_stage(&mut tools, "compile");
    let command: Vec<String> = [
        "cargo",
        "build",
        "--release",
        "--locked",
        "--offline",
        "--target",
        TARGET,
    ]
    .map(String::from)
    .to_vec();
    let compile = tools.compile(&request.path, isolation, command.get(1..).unwrap_or(&[]));
    tools.run(compile, "compile the driver")?;

    let artifact = target
        .join(TARGET)
        .join("release")
        .join(format!("{}.wasm", package.library));
    let size = std::fs::metadata(&artifact)
        .map_err(|e| {
            BuildError::Package(format!(
                "the build made no component at {} ({e}); is {} a driver package (crate-type \
                 cdylib)?",
                artifact
                    .strip_prefix(&target)
                    .unwrap_or(&artifact)
                    .display(),
                request.path
            ))
        })?
        .len();
    if size > MAX_COMPONENT {
        return Err(BuildError::Package(format!(
            "the component is {size} bytes, more than the {MAX_COMPONENT} allowed"
        )));
    }
    let component = std::fs::read(&artifact)
        .map_err(|e| BuildError::Io(format!("cannot read the built component: {e}")))?;
    progress_stage(&mut tools, "done");
    Ok((
        BuildRecord {
            repository: request.repository.location().to_string(),
            commit: request.commit.to_string(),
            path: request.path.to_string(),
            package: package.name,
            command,
            toolchain,
            source_date_epoch,
            isolation,
            digest: crate::component::digest(&component),
            size,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        },
        component,
    ))
}

fn progress_stage(tools: &mut Tools<'_>, stage: &'static str) {
    (tools.progress)(Progress::Stage(stage));
}

/// Cargo's home: where fetched crates are cached between builds.
fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from(".cargo"))
}

/// The package being built.
struct Package {
    name: String,
    /// The library target's file stem (`pjlink`, `modbus_tcp`).
    library: String,
}

/// Runs cargo and rustc for one build.
struct Tools<'a> {
    redactor: &'a Redactor,
    tail: &'a mut OutputTail,
    progress: &'a mut dyn FnMut(Progress),
    root: &'a Path,
    source: &'a Path,
    target: &'a Path,
    cargo_home: &'a Path,
    source_date_epoch: u64,
    commit: &'a Commit,
}

impl Tools<'_> {
    /// cargo in `dir`, outside any namespace, with the build's environment.
    fn cargo(&self, dir: &Path) -> std::process::Command {
        let mut command = clean_command("cargo", dir, Isolation::None);
        self.environment(&mut command, self.source, self.target);
        command
    }

    /// The compile: `cargo <args>` in the package directory, in `isolation`. Isolated, the
    /// build's directory is mounted at [`MOUNTED`] in the compiler's own mount namespace,
    /// so the compiler sees the same paths in every build: the crate identities cargo
    /// derives from a path dependency's directory, and with them the code, do not depend
    /// on where the build ran.
    fn compile(
        &self,
        package: &PackagePath,
        isolation: Isolation,
        args: &[String],
    ) -> std::process::Command {
        if isolation == Isolation::None {
            let mut command = self.cargo(&package.join_to(self.source));
            command.args(args);
            return command;
        }
        let mut command = clean_command("sh", self.root, isolation);
        command
            .args([
                "-c",
                &format!(r#"mount --bind "$1" {MOUNTED} && cd "{MOUNTED}/src/$2" && shift 2 && exec "$@""#),
                "sh",
            ])
            .arg(self.root)
            .arg(package.as_str())
            .arg("cargo")
            .args(args);
        let mounted = Path::new(MOUNTED);
        self.environment(&mut command, &mounted.join("src"), &mounted.join("target"));
        command
    }

    /// The build's environment for cargo, with the checkout and target directory at
    /// `source` and `target` as the compiler sees them: the paths remapped, the commit
    /// for the SDK's provenance.
    fn environment(&self, command: &mut std::process::Command, source: &Path, target: &Path) {
        let remap = |from: &Path, to: &str| format!("--remap-path-prefix={}={to}", from.display());
        let flags = [
            remap(source, "/warden/src"),
            remap(target, "/warden/target"),
            remap(self.cargo_home, "/cargo"),
        ];
        command
            .env("CARGO_HOME", self.cargo_home)
            .env("CARGO_TARGET_DIR", target)
            .env("CARGO_ENCODED_RUSTFLAGS", flags.join("\x1f"))
            .env("CARGO_TERM_COLOR", "never")
            .env("CARGO_INCREMENTAL", "0")
            .env("SOURCE_DATE_EPOCH", self.source_date_epoch.to_string())
            .env("WARDEN_SOURCE_COMMIT", self.commit.as_str());
    }

    fn run(&mut self, command: std::process::Command, what: &str) -> Result<String, BuildError> {
        let progress = &mut *self.progress;
        let finished = process::run(command, self.redactor, self.tail, &mut |line| {
            progress(Progress::Line(line.to_string()))
        })
        .map_err(|e| BuildError::Io(format!("could not run cargo to {what}: {e}")))?;
        if finished.status.success() {
            Ok(finished.stdout)
        } else {
            Err(BuildError::Cargo(format!(
                "cargo could not {what} ({}); the output's end says why",
                finished.status
            )))
        }
    }

    /// The package whose manifest is `manifest`, from `cargo metadata` (offline: the
    /// crates are fetched by now).
    fn package_of(&mut self, dir: &Path, manifest: &Path) -> Result<Package, BuildError> {
        let mut metadata = self.cargo(dir);
        metadata.args([
            "metadata",
            "--format-version=1",
            "--no-deps",
            "--locked",
            "--offline",
        ]);
        // The JSON is one long line; it is not build output worth keeping.
        let mut scratch = OutputTail::default();
        let finished = process::run(metadata, self.redactor, &mut scratch, &mut |_| {})
            .map_err(|e| BuildError::Io(format!("could not run cargo metadata: {e}")))?;
        if !finished.status.success() {
            for line in scratch.text().lines() {
                self.tail.push(line.to_string());
            }
            return Err(BuildError::Package(format!(
                "cargo could not read the package's manifest ({})",
                finished.status
            )));
        }
        let json = finished.stdout.lines().find(|line| line.starts_with('{'));
        /// What is read of `cargo metadata`.
        #[derive(Deserialize)]
        struct Metadata {
            packages: Vec<MetadataPackage>,
        }
        #[derive(Deserialize)]
        struct MetadataPackage {
            name: String,
            manifest_path: PathBuf,
            targets: Vec<MetadataTarget>,
        }
        #[derive(Deserialize)]
        struct MetadataTarget {
            name: String,
            kind: Vec<String>,
        }
        let metadata: Metadata = json
            .and_then(|line| serde_json::from_str(line).ok())
            .ok_or_else(|| BuildError::Package("cargo metadata printed no JSON".into()))?;
        let wanted = std::fs::canonicalize(manifest)
            .map_err(|e| BuildError::Io(format!("cannot resolve {}: {e}", manifest.display())))?;
        let package = metadata
            .packages
            .into_iter()
            .find(|package| {
                std::fs::canonicalize(&package.manifest_path).is_ok_and(|path| path == wanted)
            })
            .ok_or_else(|| BuildError::Package("the manifest declares no package".into()))?;
        let library = package
            .targets
            .iter()
            .find(|target| target.kind.iter().any(|kind| kind == "cdylib"))
            .ok_or_else(|| {
                BuildError::Package(
                    "the package has no cdylib library target, so it builds no component".into(),
                )
            })?;
        Ok(Package {
            library: library.name.replace('-', "_"),
            name: package.name,
        })
    }

    /// `rustc -vV` as the repository's toolchain file selects it.
    fn toolchain(&mut self, dir: &Path) -> Result<String, BuildError> {
        let mut rustc = clean_command("rustc", dir, Isolation::None);
        rustc.arg("-vV");
        let mut scratch = OutputTail::default();
        let finished = process::run(rustc, self.redactor, &mut scratch, &mut |_| {})
            .map_err(|e| BuildError::Io(format!("could not run rustc: {e}")))?;
        if !finished.status.success() {
            return Err(BuildError::Cargo(format!(
                "rustc -vV failed ({}): {}",
                finished.status,
                scratch.text()
            )));
        }
        Ok(finished.stdout.trim_end().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workspace_is_removed_after_use() {
        let parent = std::env::temp_dir().join(format!("warden-build-test-{}", random_suffix()));
        let root = {
            let workspace = Workspace::create(&parent).unwrap();
            assert!(workspace.source().is_dir());
            workspace.root.clone()
        };
        assert!(!root.exists());
        std::fs::remove_dir(&parent).unwrap();
    }
}
