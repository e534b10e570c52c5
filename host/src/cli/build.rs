//! `warden driver build` and `warden driver verify`: the host's reproducible builder on
//! the command line, so a reviewer can rebuild a driver on their own machine and compare.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use serde_json::json;
use zeroize::Zeroizing;

use crate::build::{self, BuildRequest, Built, GitCredentials, Progress};

/// Where the source is.
#[derive(Debug, Args)]
pub(super) struct SourceArgs {
    /// The git repository: a URL git can reach or a local path. HTTPS credentials come
    /// from WARDEN_GIT_USERNAME and WARDEN_GIT_PASSWORD (or a token as the password).
    #[arg(long)]
    repo: String,
    /// The exact commit (40 hex digits); branches and tags are refused.
    #[arg(long)]
    commit: String,
    /// The driver package's directory in the repository, such as drivers/pjlink.
    #[arg(long)]
    path: String,
    /// Where the build may make its (temporary) working directory.
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    work_dir: PathBuf,
    /// The crates cache the build fetches into (a cargo home of the builder's own).
    #[arg(long, default_value_os_t = default_cargo_home())]
    cargo_home: PathBuf,
    /// Print the compiler's output as it comes.
    #[arg(long, short)]
    verbose: bool,
}

#[derive(Debug, Args)]
pub(super) struct BuildArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// Write the component here (default: <package>.wasm in the current directory); the
    /// build record goes next to it as <file>.build.json.
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// Print the build record as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(super) struct VerifyArgs {
    /// The components to check (.wasm), for example one downloaded from a host
    /// (`GET /drivers/{id}/component`) and one a vendor shipped.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    #[command(flatten)]
    source: SourceArgs,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// `~/.cache/warden/build-cargo-home`: not the user's own cargo home, which the sandbox
/// must not write to.
fn default_cargo_home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(".cache/warden/build-cargo-home")
}

/// Run the builder for `source`, printing stages (and with --verbose, output) to stderr.
fn run_build(source: &SourceArgs) -> anyhow::Result<Result<Built, build::Failed>> {
    let credentials = match (
        std::env::var("WARDEN_GIT_USERNAME").ok(),
        std::env::var("WARDEN_GIT_PASSWORD").ok(),
    ) {
        (Some(username), Some(password)) => Some(GitCredentials::Basic {
            username,
            password: Zeroizing::new(password),
        }),
        (None, Some(token)) => Some(GitCredentials::Bearer(Zeroizing::new(token))),
        _ => None,
    };
    let request = BuildRequest {
        repository: source.repo.parse().context("--repo")?,
        credentials,
        commit: source.commit.parse().context("--commit")?,
        path: source.path.parse().context("--path")?,
        work_dir: source.work_dir.clone(),
        cargo_home: source.cargo_home.clone(),
        cancel: Default::default(),
    };
    let verbose = source.verbose;
    Ok(build::build(&request, &mut |progress| match progress {
        Progress::Stage(stage) => eprintln!("warden: build: {stage}"),
        Progress::Line(line) if verbose => eprintln!("{line}"),
        Progress::Line(_) => {}
    }))
}

/// The failure, with the end of the tools' output, on stderr.
fn report_failure(failed: &build::Failed) {
    let output = failed.output.trim_end();
    let lines: Vec<&str> = output.lines().collect();
    let shown = lines.get(lines.len().saturating_sub(60)..).unwrap_or(&[]);
    if !shown.is_empty() {
        eprintln!("{}", shown.join("\n"));
    }
    eprintln!("error: the build failed: {}", failed.error);
}

/// Exit 0 when built, 1 when the build failed (the source does not build), 2 when the
/// input is unusable.
pub(super) fn build(args: &BuildArgs) -> anyhow::Result<ExitCode> {
    let built = match run_build(&args.source)? {
        Ok(built) => built,
        Err(failed) => {
            report_failure(&failed);
            return Ok(ExitCode::FAILURE);
        }
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.wasm", built.record.package)));
    std::fs::write(&out, &built.component).with_context(|| format!("writing {}", out.display()))?;
    let mut record_path = out.clone().into_os_string();
    record_path.push(".build.json");
    let record_path = PathBuf::from(record_path);
    std::fs::write(
        &record_path,
        serde_json::to_string_pretty(&built.record)? + "\n",
    )
    .with_context(|| format!("writing {}", record_path.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&built.record)?);
    } else {
        let record = &built.record;
        println!("built {} ({} bytes)", out.display(), record.size);
        println!("  digest     {}", record.digest);
        println!(
            "  source     {} at {}, {}",
            record.repository, record.commit, record.path
        );
        println!("  command    {}", record.command.join(" "));
        println!(
            "  toolchain  {}",
            record.toolchain.lines().next().unwrap_or("")
        );
        println!("  record     {}", record_path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Exit 0 when every file is the build's output byte for byte, 1 when one differs or the
/// source does not build, 2 when the input is unusable.
pub(super) fn verify(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let mut files = Vec::new();
    for path in &args.files {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        files.push((path, crate::component::digest(&bytes)));
    }
    let built = match run_build(&args.source)? {
        Ok(built) => built,
        Err(failed) => {
            report_failure(&failed);
            return Ok(ExitCode::FAILURE);
        }
    };
    let rebuilt = &built.record.digest;
    let all_match = files.iter().all(|(_, digest)| digest == rebuilt);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "rebuilt": built.record,
                "files": files.iter().map(|(path, digest)| json!({
                    "file": path.display().to_string(),
                    "digest": digest,
                    "matches": digest == rebuilt,
                })).collect::<Vec<_>>(),
                "all_match": all_match,
            }))?
        );
    } else {
        println!(
            "rebuilt {} at {}: {rebuilt}",
            built.record.path, built.record.commit
        );
        for (path, digest) in &files {
            if digest == rebuilt {
                println!("MATCH     {} ({digest})", path.display());
            } else {
                println!(
                    "MISMATCH  {} ({digest}): not what this commit builds",
                    path.display()
                );
            }
        }
    }
    Ok(if all_match {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
