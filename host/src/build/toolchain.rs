//! Which Rust toolchain builds a repository: the channel its `rust-toolchain.toml` (or
//! `rust-toolchain`) pins, read by the host and never by rustup from inside the checkout
//! (the file's `path` key would make rustup run the repository's own programs as its
//! compiler), resolved to an installed toolchain directory that the sandbox mounts.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::BuildError;
use super::process::{self, OutputTail, Redactor};

/// The target drivers are built for.
const TARGET: &str = super::TARGET;

/// The toolchain a build uses.
#[derive(Debug, Clone)]
pub struct Toolchain {
    /// Its directory on the host (`~/.rustup/toolchains/1.95.0-x86_64-unknown-linux-gnu`).
    pub dir: PathBuf,
    /// `rustc -vV`.
    pub version: String,
}

/// The channel the repository pins for `package_dir`: the nearest toolchain file from the
/// package's directory up to the checkout's root, as rustup looks for it. `None` when
/// there is none (the host's default toolchain is used, and recorded).
pub fn pinned_channel(source: &Path, package_dir: &Path) -> Result<Option<String>, BuildError> {
    for current in super::up_to(source, package_dir) {
        for name in ["rust-toolchain.toml", "rust-toolchain"] {
            let file = current.join(name);
            // A link could name any file of the host; the file must be the repository's.
            if file.is_symlink() {
                return Err(invalid(&file, "is a symbolic link"));
            }
            if file.is_file() {
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| invalid(&file, &format!("cannot be read: {e}")))?;
                return parse(&text).map(Some).map_err(|why| invalid(&file, &why));
            }
        }
    }
    Ok(None)
}

fn invalid(file: &Path, why: &str) -> BuildError {
    BuildError::Package(format!(
        "{} {why}",
        file.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("the toolchain file")
    ))
}

/// The channel of a toolchain file: TOML with `[toolchain] channel = "…"` (and
/// `components`, `targets`, `profile`, which the host's installation answers for), or the
/// legacy one-line form. `path` is refused.
fn parse(text: &str) -> Result<String, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        toolchain: Section,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Section {
        channel: Option<String>,
        #[serde(rename = "components")]
        _components: Option<IgnoredAny>,
        #[serde(rename = "targets")]
        _targets: Option<IgnoredAny>,
        #[serde(rename = "profile")]
        _profile: Option<IgnoredAny>,
    }
    let trimmed = text.trim();
    let channel = if trimmed.contains('[') || trimmed.contains('=') {
        let file: File = toml::from_str(text).map_err(|e| {
            format!("is not a toolchain file this builder accepts (`path` is not allowed): {e}")
        })?;
        file.toolchain
            .channel
            .ok_or("names no channel (`[toolchain] channel = \"1.95.0\"`)")?
    } else {
        trimmed.to_string()
    };
    let plain = !channel.is_empty()
        && channel.len() <= 64
        && !channel.starts_with('-')
        && channel
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if !plain {
        return Err(format!(
            "names channel `{}`, which is not a plain toolchain name",
            channel.escape_debug()
        ));
    }
    Ok(channel)
}

/// The installed toolchain for `channel` (the host's default when `None`), which must
/// have the `wasm32-wasip2` target. Runs rustup and rustc of the host, outside the
/// checkout.
pub fn resolve(channel: Option<&str>, neutral_dir: &Path) -> Result<Toolchain, BuildError> {
    let limit = Duration::from_secs(60);
    let run = |program: &str, args: &[&str]| -> Result<String, BuildError> {
        let mut command = process::clean_command(program, neutral_dir, limit);
        command.args(args);
        let mut output = OutputTail::default();
        let never = AtomicBool::new(false);
        let finished = process::run(
            command,
            &Redactor::default(),
            &mut output,
            &mut |_| {},
            &never,
        )
        .map_err(|e| BuildError::Io(format!("could not run {program}: {e}")))?;
        if finished.status.success() {
            Ok(finished.stdout.trim().to_string())
        } else {
            Err(BuildError::Toolchain(format!(
                "{program} {} failed: {}",
                args.join(" "),
                output.text().trim()
            )))
        }
    };
    let name = match channel {
        Some(channel) => channel.to_string(),
        // `rustup default` prints `1.95.0-x86_64-unknown-linux-gnu (default)`.
        None => run("rustup", &["default"])?
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string(),
    };
    let rustc = run("rustup", &["which", "--toolchain", &name, "rustc"]).map_err(|e| {
        BuildError::Toolchain(format!(
            "toolchain {name} is not installed on this host ({e}); install it with \
             `rustup toolchain install {name} --profile minimal --target {TARGET}`"
        ))
    })?;
    let dir = Path::new(&rustc)
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or_else(|| BuildError::Toolchain(format!("rustup named rustc at `{rustc}`")))?;
    if !dir.join("lib/rustlib").join(TARGET).is_dir() {
        return Err(BuildError::Toolchain(format!(
            "toolchain {name} has no {TARGET} target; add it with `rustup target add \
             --toolchain {name} {TARGET}`"
        )));
    }
    let version = run(&rustc, &["-vV"])?;
    Ok(Toolchain { dir, version })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_plain_channel_is_taken() {
        assert_eq!(
            parse("[toolchain]\nchannel = \"1.95.0\"\ntargets = [\"wasm32-wasip2\"]\n").unwrap(),
            "1.95.0"
        );
        assert_eq!(parse("nightly-2026-01-01\n").unwrap(), "nightly-2026-01-01");
        for bad in [
            "[toolchain]\npath = \"/proc/self/cwd/tc\"\n",
            "[toolchain]\nchannel = \"1.95.0\"\npath = \"/x\"\n",
            "[toolchain]\ncomponents = [\"rustfmt\"]\n",
            "[toolchain]\nchannel = \"../../x\"\n",
            "--help",
            "",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
