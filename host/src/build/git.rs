//! Getting exactly one commit of a repository into an empty directory with the `git`
//! command line.

use std::path::Path;
use std::process::Command;

use super::process::{self, Finished};
use super::source::{Commit, GitCredentials, Repository};
use super::{BuildError, CHECKOUT_LIMIT, Tools};

/// What git needs besides the arguments: what runs it (and keeps its output), whom to log
/// in as.
pub(super) struct Git<'a, 't> {
    pub tools: &'a mut Tools<'t>,
    pub credentials: Option<&'a GitCredentials>,
}

impl Git<'_, '_> {
    /// A git command in `dir` that reads no configuration of the machine or the user: a
    /// user's `core.autocrlf`, `url.*.insteadOf` or a filter driver would change what is
    /// checked out, or from where. Never prompts (SSH in batch mode too); gives up on a
    /// connection slower than 1 KB/s for a minute, and on the whole step after
    /// [`CHECKOUT_LIMIT`]. Credentials, when given, travel as an `http.extraHeader` in the
    /// environment (`GIT_CONFIG_COUNT`), where other users of the machine cannot read
    /// them, and redirects are then not followed, so the header goes nowhere else.
    fn command(&self, dir: &Path, network: bool) -> Command {
        let mut command = process::clean_command("git", dir, CHECKOUT_LIMIT);
        command
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", "true")
            .env("SSH_ASKPASS", "true")
            .env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
            .env("GIT_HTTP_LOW_SPEED_LIMIT", "1000")
            .env("GIT_HTTP_LOW_SPEED_TIME", "60")
            .args([
                "-c",
                "core.autocrlf=false",
                "-c",
                "core.eol=lf",
                "-c",
                "advice.detachedHead=false",
                "-c",
                "init.defaultBranch=build",
            ]);
        if network {
            command.envs(process::network_variables());
            if let Some(credentials) = self.credentials {
                command
                    .args(["-c", "http.followRedirects=false"])
                    .env("GIT_CONFIG_COUNT", "1")
                    .env("GIT_CONFIG_KEY_0", "http.extraHeader")
                    .env("GIT_CONFIG_VALUE_0", credentials.header().as_str());
            }
        }
        command
    }

    fn run(&mut self, command: Command, what: &str) -> Result<Finished, BuildError> {
        self.tools
            .run(command, "git", what, CHECKOUT_LIMIT, BuildError::Git)
    }

    /// Fetch `commit` from `repository` into the new repository `dir` and check it out
    /// detached; returns the commit time (seconds since 1970) for `SOURCE_DATE_EPOCH`.
    pub fn checkout(
        &mut self,
        repository: &Repository,
        commit: &Commit,
        dir: &Path,
    ) -> Result<u64, BuildError> {
        let mut init = self.command(dir, false);
        init.args(["init", "--quiet", object_format(commit.as_str()), "."]);
        self.run(init, "create the checkout")?;

        // One commit, no history: enough to build, and servers answer it quickly. A
        // server that refuses requests for a commit by id (old protocol, no
        // `allowReachableSHA1InWant`) gets a full fetch instead.
        let mut shallow = self.command(dir, true);
        shallow
            .args(["fetch", "--quiet", "--no-tags", "--depth=1", "--"])
            .arg(repository.location())
            .arg(commit.as_str());
        if self.run(shallow, "fetch the commit").is_err() {
            let mut full = self.command(dir, true);
            full.args(["fetch", "--quiet", "--tags", "--"])
                .arg(repository.location())
                .arg("+refs/heads/*:refs/remotes/source/*");
            self.run(full, "fetch the repository")?;
        }

        let mut checkout = self.command(dir, false);
        checkout
            .args(["checkout", "--quiet", "--detach"])
            .arg(format!("{commit}^{{commit}}"));
        self.run(checkout, &format!("check out {commit}"))
            .map_err(|_| {
                BuildError::Git(format!(
                    "commit {commit} is not in {}",
                    repository.location()
                ))
            })?;

        let mut head = self.command(dir, false);
        head.args(["rev-parse", "--verify", "HEAD"]);
        let head = self.run(head, "read the checked-out commit")?;
        let head = head.stdout.trim();
        if head != commit.as_str() {
            return Err(BuildError::Git(format!(
                "asked for {commit} but the checkout is at {head}"
            )));
        }

        let mut time = self.command(dir, false);
        time.args(["show", "--no-patch", "--format=%ct", "HEAD"]);
        let time = self.run(time, "read the commit time")?;
        time.stdout.trim().parse::<u64>().map_err(|e| {
            BuildError::Git(format!(
                "commit time `{}` is not a number: {e}",
                time.stdout.trim()
            ))
        })
    }
}

/// What [`newer_commits`](super::newer_commits) found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewerCommits {
    /// The branch looked at.
    pub branch: String,
    /// Its newest commit.
    pub latest: String,
    /// Commits on it that the pinned commit does not contain.
    pub count: u64,
}

impl Git<'_, '_> {
    /// Bring the bare mirror `mirror` of `repository` up to date and count the commits
    /// of `branch` (the remote's default branch when `None`) that `pinned` does not
    /// contain.
    pub fn newer_commits(
        &mut self,
        repository: &Repository,
        mirror: &Path,
        pinned: &str,
        branch: Option<&str>,
    ) -> Result<NewerCommits, BuildError> {
        if !mirror.join("HEAD").is_file() {
            std::fs::create_dir_all(mirror)
                .map_err(|e| BuildError::Io(format!("cannot create {}: {e}", mirror.display())))?;
            let mut init = self.command(mirror, false);
            init.args(["init", "--quiet", "--bare", object_format(pinned), "."]);
            self.run(init, "create the mirror")?;
        }
        let mut fetch = self.command(mirror, true);
        fetch
            .args(["fetch", "--quiet", "--prune", "--no-tags", "--"])
            .arg(repository.location())
            .arg("+refs/heads/*:refs/heads/*");
        self.run(fetch, "fetch the repository")?;
        let branch = match branch {
            Some(branch) => branch.to_string(),
            None => {
                let mut remote_head = self.command(mirror, true);
                remote_head
                    .args(["ls-remote", "--symref", "--"])
                    .arg(repository.location())
                    .arg("HEAD");
                let listed = self.run(remote_head, "ask for the default branch")?;
                listed
                    .stdout
                    .lines()
                    .find_map(|line| {
                        line.strip_prefix("ref: refs/heads/")
                            .and_then(|rest| rest.split_whitespace().next())
                    })
                    .map(str::to_string)
                    .ok_or_else(|| {
                        BuildError::Git(
                            "the repository names no default branch; set the repository's \
                             branch"
                                .into(),
                        )
                    })?
            }
        };
        let mut latest = self.command(mirror, false);
        latest
            .args(["rev-parse", "--verify", "--end-of-options"])
            .arg(format!("refs/heads/{branch}^{{commit}}"));
        let latest = self
            .run(latest, &format!("find branch {branch}"))?
            .stdout
            .trim()
            .to_string();
        let mut count = self.command(mirror, false);
        count
            .args(["rev-list", "--count", "--end-of-options"])
            .arg(format!("{pinned}..refs/heads/{branch}"));
        let count = self.run(count, &format!("compare {pinned} with {branch}"))?;
        let count = count.stdout.trim().parse::<u64>().map_err(|e| {
            BuildError::Git(format!(
                "git rev-list printed `{}`: {e}",
                count.stdout.trim()
            ))
        })?;
        Ok(NewerCommits {
            branch,
            latest,
            count,
        })
    }
}

/// The `git init` option for the object format of `commit`: SHA-256 for a 64-digit id.
fn object_format(commit: &str) -> &'static str {
    if commit.len() == 64 {
        "--object-format=sha256"
    } else {
        "--object-format=sha1"
    }
}
