//! Running the build's tools: a clean environment, a time limit, output streamed line by
//! line to the caller and kept (its tail) for the record, credentials and terminal control
//! characters blanked out of both.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process_group};
use zeroize::Zeroizing;

/// Output kept of a build: the tail, where the compiler's errors are.
pub const MAX_OUTPUT: usize = 1 << 20;

/// A line longer than this is cut (a minified file in an error message, say).
const MAX_LINE: usize = 16 << 10;

/// The tail of a tool's combined output, at most [`MAX_OUTPUT`] bytes.
#[derive(Debug, Default)]
pub struct OutputTail {
    lines: VecDeque<String>,
    bytes: usize,
    dropped: usize,
}

impl OutputTail {
    /// Add one line (without its newline).
    pub fn push(&mut self, line: String) {
        self.bytes += line.len() + 1;
        self.lines.push_back(line);
        while self.bytes > MAX_OUTPUT {
            match self.lines.pop_front() {
                Some(old) => {
                    self.bytes -= old.len() + 1;
                    self.dropped += 1;
                }
                None => break,
            }
        }
    }

    /// The kept text, with a first line saying how many lines were dropped.
    pub fn text(&self) -> String {
        let mut text = String::with_capacity(self.bytes + 64);
        if self.dropped > 0 {
            text.push_str(&format!("[{} earlier lines not kept]\n", self.dropped));
        }
        for line in &self.lines {
            text.push_str(line);
            text.push('\n');
        }
        text
    }
}

/// What the tools' output passes through before anyone sees it: credentials blanked.
#[derive(Debug, Default)]
pub struct Redactor {
    secrets: Vec<Zeroizing<String>>,
}

impl Redactor {
    /// Blank out each of `secrets` wherever it appears.
    pub fn new(secrets: Vec<Zeroizing<String>>) -> Redactor {
        Redactor { secrets }
    }

    /// `text` with every secret replaced by `<redacted>` and control characters (terminal
    /// escape sequences a repository could print) replaced by `?`.
    pub fn clean(&self, text: &str) -> String {
        let mut text: String = text
            .chars()
            .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
            .collect();
        for secret in &self.secrets {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "<redacted>");
            }
        }
        text
    }
}

/// A finished tool run.
#[derive(Debug)]
pub struct Finished {
    /// How it exited.
    pub status: ExitStatus,
    /// Its standard output alone (for tools whose answer is printed there).
    pub stdout: String,
}

/// Run `command` to the end: every line of its standard output and error goes to
/// `on_line` (credentials blanked) and to `tail`. When `cancel` becomes true, the command's
/// process group (a [`clean_command`] leads its own) is terminated.
pub fn run(
    mut command: Command,
    redactor: &Redactor,
    tail: &mut OutputTail,
    on_line: &mut dyn FnMut(&str),
    cancel: &AtomicBool,
) -> std::io::Result<Finished> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn()?;
    let (sender, lines) = mpsc::channel::<(bool, String)>();
    let mut readers = Vec::new();
    for (is_stdout, stream) in [
        (
            true,
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ),
        (
            false,
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ),
    ] {
        let Some(stream) = stream else { continue };
        let sender = sender.clone();
        readers.push(std::thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut buffer = Vec::new();
            loop {
                buffer.clear();
                match reader
                    .by_ref()
                    .take(MAX_LINE as u64)
                    .read_until(b'\n', &mut buffer)
                {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buffer);
                        let line = line.trim_end_matches(['\n', '\r']).to_string();
                        if sender.send((is_stdout, line)).is_err() {
                            break;
                        }
                    }
                }
            }
        }));
    }
    drop(sender);
    let mut stdout = String::new();
    let mut stopping = false;
    loop {
        let (is_stdout, line) = match lines.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                if !stopping && cancel.load(Ordering::Relaxed) {
                    stopping = true;
                    // `timeout` leads the tool's process group: the whole group goes.
                    if let Some(pid) = Pid::from_raw(i32::try_from(child.id()).unwrap_or(0)) {
                        let _ = kill_process_group(pid, Signal::TERM);
                    }
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let line = redactor.clean(&line);
        if is_stdout && stdout.len() < MAX_OUTPUT {
            stdout.push_str(&line);
            stdout.push('\n');
        }
        on_line(&line);
        tail.push(line);
    }
    for reader in readers {
        let _ = reader.join();
    }
    let status = child.wait()?;
    Ok(Finished { status, stdout })
}

/// A command for one of the host's own tools (git, rustup), killed with its whole process
/// group after `limit` (`timeout`), with a clean environment: `PATH`, `HOME`, the rustup
/// settings and a C locale, and nothing else of the caller's. Cargo variables,
/// `RUSTFLAGS`, `RUSTC_WRAPPER`, compiler and linker variables, or a `RUSTUP_TOOLCHAIN`
/// would make the output depend on who ran the build.
pub fn clean_command(program: &str, dir: &Path, limit: Duration) -> Command {
    let mut command = Command::new("timeout");
    command
        .args(["--kill-after=10", &format!("{}s", limit.as_secs().max(1))])
        .arg(program)
        .env_clear()
        .current_dir(dir);
    for (key, value) in std::env::vars_os() {
        if keep_variable(&key) {
            command.env(key, value);
        }
    }
    command.env("LC_ALL", "C").env("TZ", "UTC");
    command
}

/// The exit status `timeout` reports when it stopped the command.
pub fn timed_out(status: &ExitStatus) -> bool {
    matches!(status.code(), Some(124 | 137))
}

/// Whether a variable of the caller's environment is passed to the build's tools.
fn keep_variable(key: &OsString) -> bool {
    let Some(key) = key.to_str() else {
        return false;
    };
    matches!(key, "PATH" | "HOME" | "USER" | "LOGNAME" | "TMPDIR")
        || (key.starts_with("RUSTUP_") && key != "RUSTUP_TOOLCHAIN")
}

/// The variables that let git and cargo through a proxy and trust a private CA, passed
/// only to the steps that use the network (fetching sources and crates).
pub fn network_variables() -> Vec<(OsString, OsString)> {
    std::env::vars_os()
        .filter(|(key, _)| {
            key.to_str().is_some_and(|key| {
                matches!(
                    key.to_ascii_lowercase().as_str(),
                    "http_proxy" | "https_proxy" | "all_proxy" | "no_proxy"
                ) || matches!(
                    key,
                    "SSL_CERT_FILE" | "SSL_CERT_DIR" | "GIT_SSL_CAINFO" | "SSH_AUTH_SOCK"
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_is_kept() {
        let mut tail = OutputTail::default();
        let line = "x".repeat(1023);
        for _ in 0..2048 {
            tail.push(line.clone());
        }
        let text = tail.text();
        assert!(
            text.starts_with("[1024 earlier lines not kept]\n"),
            "{}",
            &text[..40]
        );
        assert!(text.len() <= MAX_OUTPUT + 64);
    }

    #[test]
    fn secrets_are_blanked() {
        let redactor = Redactor::new(vec![Zeroizing::new("hunter2".to_string())]);
        assert_eq!(
            redactor.clean("auth hunter2 failed"),
            "auth <redacted> failed"
        );
        assert_eq!(redactor.clean("\u{1b}[2Jgone\tok"), "?[2Jgone\tok");
    }

    #[test]
    fn the_environment_is_clean() {
        for kept in ["PATH", "HOME", "RUSTUP_HOME"] {
            assert!(keep_variable(&OsString::from(kept)), "{kept}");
        }
        for dropped in [
            "RUSTFLAGS",
            "CARGO_ENCODED_RUSTFLAGS",
            "CARGO_TARGET_DIR",
            "RUSTC_WRAPPER",
            "RUSTUP_TOOLCHAIN",
            "CC",
            "CFLAGS",
        ] {
            assert!(!keep_variable(&OsString::from(dropped)), "{dropped}");
        }
    }

    #[test]
    fn a_cancelled_command_is_stopped_with_its_children() {
        // `sh` starts a `sleep` that holds the output pipe: unless the whole process
        // group goes, `run` would wait for it.
        let mut command = clean_command("sh", Path::new("/"), Duration::from_secs(600));
        command.args(["-c", "echo started; sleep 600; echo never"]);
        let finished = run(
            command,
            &Redactor::default(),
            &mut OutputTail::default(),
            &mut |_| {},
            &AtomicBool::new(true),
        )
        .unwrap();
        assert!(!finished.status.success());
        assert!(!finished.stdout.contains("never"));
    }

    #[test]
    fn output_is_streamed_and_kept() {
        let mut command = clean_command("sh", Path::new("/"), Duration::from_secs(10));
        command.args(["-c", "echo out; echo err >&2; echo hunter2; exit 3"]);
        let redactor = Redactor::new(vec![Zeroizing::new("hunter2".to_string())]);
        let mut tail = OutputTail::default();
        let mut seen = Vec::new();
        let finished = run(
            command,
            &redactor,
            &mut tail,
            &mut |line| seen.push(line.to_string()),
            &AtomicBool::new(false),
        )
        .unwrap();
        assert_eq!(finished.status.code(), Some(3));
        seen.sort();
        assert_eq!(seen, ["<redacted>", "err", "out"]);
        assert!(finished.stdout.contains("out\n") && !finished.stdout.contains("err"));
        assert!(!tail.text().contains("hunter2"));
    }
}
