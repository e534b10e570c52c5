//! The sandbox cargo and the compiler run in: bubblewrap (`bwrap`), with new user, PID,
//! network, IPC, UTS and cgroup namespaces, and a filesystem made only of what a build
//! needs, at fixed paths:
//!
//! | inside        | what                                   | writable                    |
//! |---------------|----------------------------------------|-----------------------------|
//! | `/usr` (and `/bin`, `/lib`, … as links) | the system's programs and libraries (the C linker for build scripts) | no |
//! | `/etc/…`      | `alternatives`, `ld.so.cache`; for a fetch also the resolver and CA certificates | no |
//! | `/toolchain`  | the Rust toolchain the repository pins  | no                          |
//! | `/cargo`      | the builder's own cargo home (the crates cache) | only while fetching |
//! | `/build/src`  | the checkout                            | only while compiling        |
//! | `/build/target` | cargo's target directory              | only while compiling        |
//! | `/tmp`, `/home/build` | empty, in memory                | yes                         |
//!
//! Nothing else of the host is there: not its data directory (master key, database), not
//! the user's home, git credentials or SSH keys, not other users' files or local sockets.
//! The network is there only while fetching the locked crates. Every process in the
//! sandbox dies with it (`--die-with-parent`, PID namespace), and the sandbox with its
//! time limit (`timeout`). Because the paths are fixed, the compiler sees the same paths
//! in every build, wherever the build's directory is on the host: cargo derives crate
//! identities (and so symbol names and code layout) of path dependencies from their
//! directories, which is why this is what makes builds reproducible across directories.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use super::process;

/// Where the sandbox sees the checkout.
pub const SOURCE: &str = "/build/src";
/// Where the sandbox sees the target directory.
pub const TARGET_DIR: &str = "/build/target";
/// Where the sandbox sees the cargo home.
pub const CARGO_HOME: &str = "/cargo";
/// Where the sandbox sees the toolchain.
pub const TOOLCHAIN: &str = "/toolchain";

/// What one sandboxed command may see and do.
#[derive(Debug, Clone)]
pub struct Sandbox<'a> {
    /// The host directory holding `src/` and `target/`.
    pub build_root: &'a Path,
    /// The toolchain's directory on the host (`…/toolchains/1.95.0-x86_64-…`).
    pub toolchain: &'a Path,
    /// The builder's cargo home on the host.
    pub cargo_home: &'a Path,
    /// Fetching: network, the resolver and CA certificates, a writable cargo home, a
    /// read-only checkout. Otherwise: no network, a read-only cargo home, a writable
    /// checkout and target directory.
    pub fetching: bool,
    /// Directories inside the sandbox to cover with an empty one (the repository's
    /// `.cargo` configuration while fetching).
    pub hidden: Vec<String>,
}

impl Sandbox<'_> {
    /// `program args…` in the sandbox, in `dir` (a path inside it), stopped after `limit`.
    /// Its environment is only `env` and the sandbox's own (`PATH`, `HOME`, locale).
    pub fn command(
        &self,
        dir: &str,
        limit: Duration,
        env: &[(&str, String)],
        program: &str,
    ) -> Command {
        let mut command = process::clean_command("bwrap", self.build_root, limit);
        command.args(["--clearenv", "--new-session"]);
        system(&mut command);
        let mut etc = vec!["/etc/alternatives", "/etc/ld.so.cache"];
        if self.fetching {
            command.arg("--share-net");
            etc.extend([
                "/etc/resolv.conf",
                "/etc/hosts",
                "/etc/nsswitch.conf",
                "/etc/ssl",
                "/etc/ca-certificates",
                "/etc/pki",
            ]);
        }
        for path in etc {
            command.args(["--ro-bind-try", path, path]);
        }
        command
            .args(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"])
            .args(["--tmpfs", "/home/build"])
            .arg("--ro-bind")
            .arg(self.toolchain)
            .arg(TOOLCHAIN);
        let (cargo_home, tree) = if self.fetching {
            ("--bind", "--ro-bind")
        } else {
            ("--ro-bind", "--bind")
        };
        command
            .arg(cargo_home)
            .arg(self.cargo_home)
            .arg(CARGO_HOME)
            .arg(tree)
            .arg(self.build_root.join("src"))
            .arg(SOURCE);
        if !self.fetching {
            command
                .arg("--bind")
                .arg(self.build_root.join("target"))
                .arg(TARGET_DIR);
        }
        for hidden in &self.hidden {
            command.args(["--tmpfs", hidden]);
        }
        let mut environment: Vec<(&str, String)> = vec![
            ("PATH", format!("{TOOLCHAIN}/bin:/usr/bin")),
            ("HOME", "/home/build".to_string()),
            ("LC_ALL", "C".to_string()),
            ("TZ", "UTC".to_string()),
            ("CARGO_HOME", CARGO_HOME.to_string()),
            ("CARGO_TARGET_DIR", TARGET_DIR.to_string()),
            ("CARGO_TERM_COLOR", "never".to_string()),
            ("CARGO_INCREMENTAL", "0".to_string()),
            // The toolchain itself, not whatever a repository's configuration names:
            // these variables override `build.rustc`, `build.rustdoc` and the wrappers
            // of `.cargo/config.toml` (an empty wrapper means none).
            ("RUSTC", format!("{TOOLCHAIN}/bin/rustc")),
            ("RUSTDOC", format!("{TOOLCHAIN}/bin/rustdoc")),
            ("RUSTC_WRAPPER", String::new()),
            ("RUSTC_WORKSPACE_WRAPPER", String::new()),
        ];
        environment.extend(env.iter().cloned());
        if self.fetching {
            for (key, value) in process::network_variables() {
                if let (Some(key), Some(value)) = (key.to_str(), value.to_str()) {
                    // Only the proxy; CA files of the host are not in the sandbox.
                    if key.to_ascii_lowercase().ends_with("_proxy") {
                        command.args(["--setenv", key, value]);
                    }
                }
            }
        }
        for (key, value) in environment {
            command.args(["--setenv", key, &value]);
        }
        command.args(["--chdir", dir, "--", program]);
        command
    }
}

/// The namespaces and the system's programs and libraries (`/usr`, and `/bin`, `/lib`, …
/// as the host has them: links into `/usr` or directories).
fn system(command: &mut Command) {
    command.args([
        "--unshare-all",
        "--die-with-parent",
        "--ro-bind",
        "/usr",
        "/usr",
    ]);
    for (link, target) in [
        ("/bin", "usr/bin"),
        ("/sbin", "usr/sbin"),
        ("/lib", "usr/lib"),
        ("/lib64", "usr/lib64"),
        ("/lib32", "usr/lib32"),
    ] {
        if Path::new(link).is_symlink() {
            command.args(["--symlink", target, link]);
        } else if Path::new(link).is_dir() {
            command.args(["--ro-bind", link, link]);
        }
    }
}

/// Whether bubblewrap works on this machine (found once per process by trying it).
pub fn available() -> bool {
    static FOUND: OnceLock<bool> = OnceLock::new();
    *FOUND.get_or_init(|| {
        let mut command = Command::new("bwrap");
        system(&mut command);
        command
            .args(["--", "/usr/bin/true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    })
}

/// The sandbox path of `path`, a directory inside the checkout `source` on the host.
pub fn inside(source: &Path, path: &Path) -> Option<String> {
    let relative = path.strip_prefix(source).ok()?;
    let mut inside = PathBuf::from(SOURCE);
    inside.push(relative);
    inside.to_str().map(str::to_string)
}
