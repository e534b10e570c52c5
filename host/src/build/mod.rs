//! Building a driver from source at an exact commit, reproducibly, in a sandbox.
//!
//! [`build`] fetches one commit of a repository into a new, empty directory (git, run by
//! the host without any git configuration), then runs cargo only inside a bubblewrap
//! sandbox that sees nothing of the host but the system's programs, the pinned toolchain,
//! the builder's crates cache and the checkout (see [`sandbox`]):
//!
//! 1. `cargo fetch --locked` with network, the checkout read-only and the repository's
//!    `.cargo` configuration hidden (so nothing it names runs while the network is there);
//! 2. `cargo build --release --locked --offline --target wasm32-wasip2` without network,
//!    the crates cache read-only.
//!
//! What makes two builds of the same commit byte-identical wherever they run: the sandbox
//! puts the checkout, the target directory and the crates at the same paths every time
//! (`/build/src`, `/build/target`, `/cargo`); the environment is only the sandbox's own
//! plus `SOURCE_DATE_EPOCH` (the commit's time) and `WARDEN_SOURCE_COMMIT` (which the SDK
//! embeds as provenance); the toolchain is the one the repository's `rust-toolchain.toml`
//! pins (read by the host, see [`toolchain`]), and `--locked` pins every crate.
//!
//! Every step has a time limit. The result is a [`Built`]: the component, its digest, and a
//! [`BuildRecord`] saying what was built and how. Output streams to the caller as
//! [`Progress`] lines; its tail is kept for the record of a failure.

mod git;
mod process;
pub mod sandbox;
mod source;
pub mod toolchain;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use git::NewerCommits;
pub use process::{MAX_OUTPUT, OutputTail};
pub use source::{Commit, GitCredentials, PackagePath, Repository};

use process::Redactor;
use sandbox::Sandbox;

/// The target drivers are built for.
pub const TARGET: &str = "wasm32-wasip2";

/// Largest component a build may produce (as the API accepts for uploads).
const MAX_COMPONENT: u64 = 64 << 20;

/// How long fetching the source may take.
pub const CHECKOUT_LIMIT: Duration = Duration::from_secs(10 * 60);
/// How long fetching the locked crates may take.
pub const FETCH_LIMIT: Duration = Duration::from_secs(15 * 60);
/// How long compiling may take.
pub const COMPILE_LIMIT: Duration = Duration::from_secs(30 * 60);

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
    /// The toolchain the repository pins is not usable here.
    #[error("{0}")]
    Toolchain(String),
    /// cargo failed to fetch the locked crates or to compile.
    #[error("{0}")]
    Cargo(String),
    /// The machine cannot run the sandbox.
    #[error("{0}")]
    Sandbox(String),
    /// A file or process operation of the host failed.
    #[error("{0}")]
    Io(String),
    /// The build was cancelled.
    #[error("the build was cancelled")]
    Cancelled,
}

/// What a running build reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// A new stage began: `checkout`, `fetch`, `compile`, `done`.
    Stage(&'static str),
    /// One line of a tool's output (credentials and control characters blanked).
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
    /// The builder's crates cache (a cargo home of its own, not a user's): written only
    /// while fetching locked crates, read-only to the compile.
    pub cargo_home: PathBuf,
    /// Set to stop the build: the running step is terminated with everything it started.
    pub cancel: Arc<AtomicBool>,
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
    /// `rustc -vV` of the toolchain the repository pins (or the host's default).
    pub toolchain: String,
    /// The commit's time, given to the build as `SOURCE_DATE_EPOCH`.
    pub source_date_epoch: u64,
    /// The sandbox the tools ran in.
    pub sandbox: String,
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
        .and_then(|workspace| run(request, &workspace, &mut tail, progress))
        .map_err(|error| match request.cancel.load(Ordering::Relaxed) {
            true => BuildError::Cancelled,
            false => error,
        });
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
    let never = AtomicBool::new(false);
    git::Git {
        tools: &mut Tools {
            redactor: &redactor,
            tail: &mut tail,
            progress: &mut |_| {},
            cancel: &never,
        },
        credentials,
    }
    .newer_commits(repository, mirror, pinned.as_str(), branch)
}

/// The build's own directory (mode 0700), removed when dropped.
struct Workspace {
    root: PathBuf,
}

impl Workspace {
    fn create(parent: &Path) -> Result<Workspace, BuildError> {
        use std::os::unix::fs::DirBuilderExt as _;
        let io = |e: std::io::Error| {
            BuildError::Io(format!(
                "cannot create a build directory in {}: {e}",
                parent.display()
            ))
        };
        std::fs::create_dir_all(parent).map_err(io)?;
        let root = parent.join(format!("build-{}", random_suffix()));
        let mut private = std::fs::DirBuilder::new();
        private.mode(0o700);
        private.create(&root).map_err(io)?;
        for dir in ["src", "target"] {
            private.create(root.join(dir)).map_err(io)?;
        }
        Ok(Workspace { root })
    }

    fn source(&self) -> PathBuf {
        self.root.join("src")
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        remove_tree(&self.root);
    }
}

/// Remove a build directory, also where a build made parts of it read-only.
pub fn remove_tree(dir: &Path) {
    if std::fs::remove_dir_all(dir).is_ok() || !dir.exists() {
        return;
    }
    let _ = std::process::Command::new("chmod")
        .args(["-R", "u+rwx", "--"])
        .arg(dir)
        .status();
    if let Err(e) = std::fs::remove_dir_all(dir) {
        tracing::warn!(dir = %dir.display(), "could not remove a build directory: {e}");
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
    if !sandbox::available() {
        return Err(BuildError::Sandbox(
            "bubblewrap (`bwrap`) cannot create a sandbox on this machine: install it (Debian: \
             `apt-get install bubblewrap`) and allow user namespaces; drivers are never \
             compiled outside it"
                .into(),
        ));
    }
    let credentials = request
        .credentials
        .as_ref()
        .or(request.repository.embedded_credentials());
    let redactor = Redactor::new(credentials.map(GitCredentials::secrets).unwrap_or_default());

    let mut tools = Tools {
        redactor: &redactor,
        tail,
        progress,
        cancel: &request.cancel,
    };

    (tools.progress)(Progress::Stage("checkout"));
    let source = workspace.source();
    let source_date_epoch = git::Git {
        tools: &mut tools,
        credentials,
    }
    .checkout(&request.repository, &request.commit, &source)?;

    let package_dir = contained(&source, &request.path)?;
    let toolchain = toolchain::resolve(
        toolchain::pinned_channel(&source, &package_dir)?.as_deref(),
        &workspace.root,
    )?;
    std::fs::create_dir_all(&request.cargo_home).map_err(|e| {
        BuildError::Io(format!(
            "cannot create the crates cache {}: {e}",
            request.cargo_home.display()
        ))
    })?;
    let inside_package = sandbox::inside(&source, &package_dir)
        .ok_or_else(|| BuildError::Package("the package path is not UTF-8".into()))?;
    let environment = [
        ("SOURCE_DATE_EPOCH", source_date_epoch.to_string()),
        ("WARDEN_SOURCE_COMMIT", request.commit.to_string()),
    ];

    (tools.progress)(Progress::Stage("fetch"));
    let fetching = Sandbox {
        build_root: &workspace.root,
        toolchain: &toolchain.dir,
        cargo_home: &request.cargo_home,
        fetching: true,
        hidden: cargo_configuration(&source, &package_dir),
    };
    let mut fetch = fetching.command(&inside_package, FETCH_LIMIT, &environment, "cargo");
    fetch.args(["fetch", "--locked", "--target", TARGET]);
    tools.run(
        fetch,
        "cargo",
        "fetch the locked crates",
        FETCH_LIMIT,
        BuildError::Cargo,
    )?;

    let compiling = Sandbox {
        fetching: false,
        hidden: Vec::new(),
        ..fetching
    };
    let package = tools.package_of(&compiling, &inside_package, &environment)?;

    (tools.progress)(Progress::Stage("compile"));
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
    let mut compile = compiling.command(&inside_package, COMPILE_LIMIT, &environment, "cargo");
    compile.args(command.get(1..).unwrap_or(&[]));
    tools.run(
        compile,
        "cargo",
        "compile the driver",
        COMPILE_LIMIT,
        BuildError::Cargo,
    )?;

    let artifact = workspace
        .root
        .join("target")
        .join(TARGET)
        .join("release")
        .join(format!("{}.wasm", package.library));
    // The build wrote this directory: the component must be a plain file in it.
    let metadata = std::fs::symlink_metadata(&artifact).map_err(|e| {
        BuildError::Package(format!(
            "the build made no component {TARGET}/release/{}.wasm ({e}); is {} a driver \
             package (crate-type cdylib)?",
            package.library, request.path
        ))
    })?;
    if !metadata.is_file() || metadata.len() > MAX_COMPONENT {
        return Err(BuildError::Package(format!(
            "the component is not a plain file of at most {MAX_COMPONENT} bytes"
        )));
    }
    let component = std::fs::read(&artifact)
        .map_err(|e| BuildError::Io(format!("cannot read the built component: {e}")))?;
    (tools.progress)(Progress::Stage("done"));
    Ok((
        BuildRecord {
            repository: request.repository.location().to_string(),
            commit: request.commit.to_string(),
            path: request.path.to_string(),
            package: package.name,
            command,
            toolchain: toolchain.version,
            source_date_epoch,
            sandbox: "bubblewrap: no network while compiling; checkout, target directory, \
                      crates cache and toolchain at fixed paths"
                .to_string(),
            digest: crate::component::digest(&component),
            size: metadata.len(),
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        },
        component,
    ))
}

/// The package directory `path` inside `source`, checked to be a real directory there
/// (no component of it a symbolic link out of the checkout) with a `Cargo.toml` that is a
/// plain file.
fn contained(source: &Path, path: &PackagePath) -> Result<PathBuf, BuildError> {
    let package_dir = path.join_to(source);
    let missing = || BuildError::Package(format!("{path} is not a directory of the commit"));
    let real_source = std::fs::canonicalize(source)
        .map_err(|e| BuildError::Io(format!("cannot resolve the checkout: {e}")))?;
    let real_package = std::fs::canonicalize(&package_dir).map_err(|_| missing())?;
    if real_package != real_source.join(path.as_str()) || !real_package.is_dir() {
        return Err(BuildError::Package(format!(
            "{path} is, or passes through, a symbolic link; give the package's real directory"
        )));
    }
    let manifest = std::fs::symlink_metadata(package_dir.join("Cargo.toml"))
        .map_err(|_| BuildError::Package(format!("{path} has no Cargo.toml")))?;
    if !manifest.is_file() {
        return Err(BuildError::Package(format!(
            "{path}/Cargo.toml is not a plain file"
        )));
    }
    Ok(package_dir)
}

/// The sandbox paths of the repository's `.cargo` directories that cargo would read for
/// `package_dir` (it reads one in every directory from there up): hidden while fetching.
fn cargo_configuration(source: &Path, package_dir: &Path) -> Vec<String> {
    up_to(source, package_dir)
        .map(|dir| dir.join(".cargo"))
        .filter(|config| config.exists())
        .filter_map(|config| sandbox::inside(source, &config))
        .collect()
}

/// `dir` and its parents up to `source` (which contains it), nearest first: where cargo
/// and rustup look for their configuration.
fn up_to<'a>(source: &'a Path, dir: &'a Path) -> impl Iterator<Item = &'a Path> {
    dir.ancestors()
        .take_while(move |ancestor| ancestor.starts_with(source))
}

/// The package being built.
struct Package {
    name: String,
    /// The library target's file stem (`pjlink`, `modbus_tcp`).
    library: String,
}

/// Runs one build's tools: their output goes to the progress and the tail (credentials
/// blanked), and a cancellation stops them.
struct Tools<'a> {
    redactor: &'a Redactor,
    tail: &'a mut OutputTail,
    progress: &'a mut dyn FnMut(Progress),
    cancel: &'a AtomicBool,
}

impl Tools<'_> {
    /// Run `command` (`tool`, to do `what`, within `limit`); a failure is `failed` with a
    /// message, the reason being in the output.
    fn run(
        &mut self,
        command: std::process::Command,
        tool: &str,
        what: &str,
        limit: Duration,
        failed: fn(String) -> BuildError,
    ) -> Result<process::Finished, BuildError> {
        let progress = &mut *self.progress;
        let finished = process::run(
            command,
            self.redactor,
            self.tail,
            &mut |line| progress(Progress::Line(line.to_string())),
            self.cancel,
        )
        .map_err(|e| BuildError::Io(format!("could not start {tool} to {what}: {e}")))?;
        if finished.status.success() {
            Ok(finished)
        } else if process::timed_out(&finished.status) {
            Err(failed(format!(
                "{tool} could not {what} within {} minutes",
                limit.as_secs() / 60
            )))
        } else {
            Err(failed(format!(
                "{tool} could not {what} ({}); the output says why",
                finished.status
            )))
        }
    }

    /// The package in the sandbox directory `dir`, from `cargo metadata` (offline: the
    /// crates are fetched by now).
    fn package_of(
        &mut self,
        sandbox: &Sandbox<'_>,
        dir: &str,
        environment: &[(&str, String)],
    ) -> Result<Package, BuildError> {
        let limit = Duration::from_secs(120);
        let mut metadata = sandbox.command(dir, limit, environment, "cargo");
        metadata.args([
            "metadata",
            "--format-version=1",
            "--no-deps",
            "--locked",
            "--offline",
        ]);
        // The JSON is one long line; it is not build output worth keeping.
        let mut scratch = OutputTail::default();
        let finished = process::run(
            metadata,
            self.redactor,
            &mut scratch,
            &mut |_| {},
            self.cancel,
        )
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
        let json = finished.stdout.lines().find(|line| line.starts_with('{'));
        let metadata: Metadata = json
            .and_then(|line| serde_json::from_str(line).ok())
            .ok_or_else(|| BuildError::Package("cargo metadata printed no JSON".into()))?;
        let wanted = Path::new(dir).join("Cargo.toml");
        let package = metadata
            .packages
            .into_iter()
            .find(|package| package.manifest_path == wanted)
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_package_path_through_a_link_is_refused() {
        let root = std::env::temp_dir().join(format!("warden-contained-{}", random_suffix()));
        let source = root.join("src");
        std::fs::create_dir_all(source.join("drivers/real")).unwrap();
        std::fs::write(source.join("drivers/real/Cargo.toml"), "[package]").unwrap();
        std::os::unix::fs::symlink(root.join("elsewhere"), source.join("drivers/out")).unwrap();
        std::fs::create_dir_all(root.join("elsewhere")).unwrap();
        std::fs::write(root.join("elsewhere/Cargo.toml"), "[package]").unwrap();
        std::fs::create_dir_all(source.join("drivers/linked")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", source.join("drivers/linked/Cargo.toml"))
            .unwrap();
        let path = |text: &str| text.parse::<PackagePath>().unwrap();
        assert!(contained(&source, &path("drivers/real")).is_ok());
        for bad in ["drivers/out", "drivers/linked", "drivers/missing"] {
            assert!(contained(&source, &path(bad)).is_err(), "{bad}");
        }
        remove_tree(&root);
    }

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
