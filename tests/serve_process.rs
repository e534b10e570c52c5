//! `warden serve` as a real child process, for the tests and benchmarks that talk to it
//! from outside as any client would: over HTTPS on 127.0.0.1, verifying the certificate
//! it generated in its data directory.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

/// A running `warden serve`. Dropping it kills the process; [`ServeProcess::terminate`]
/// stops it with SIGTERM as an operator would.
#[derive(Debug)]
pub struct ServeProcess {
    child: Child,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    /// The certificate fingerprint it printed at start.
    pub fingerprint: String,
    /// What it prints after it started listening: its standard output, and its standard
    /// error (also echoed to this process's) as `stderr: …` lines.
    pub lines: Receiver<String>,
    /// Its data directory.
    pub data_dir: PathBuf,
}

impl ServeProcess {
    /// Start `warden serve --data-dir DATA_DIR --listen 127.0.0.1:<free port> EXTRA…`,
    /// with the host's log at `debug`, and wait until it listens.
    pub fn start(data_dir: &Path, extra: &[&str]) -> ServeProcess {
        ServeProcess::start_on(data_dir, crate::free_port(), extra, &[])
    }

    /// [`ServeProcess::start`] on `port`, with environment variables `env` set.
    pub fn start_on(
        data_dir: &Path,
        port: u16,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> ServeProcess {
        let mut child = Command::new(crate::warden_bin())
            .args(["serve", "--data-dir"])
            .arg(data_dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .env_remove("WARDEN_MASTER_KEYS")
            .env_remove("WARDEN_DATABASE_URL")
            // The host's own log at its most talkative, to show what it never says.
            .env("WARDEN_LOG", "debug")
            .envs(env.iter().copied())
            .current_dir(data_dir.parent().unwrap())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start warden serve");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (send, lines) = std::sync::mpsc::channel();
        let errors = send.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if send.send(line).is_err() {
                    return;
                }
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                eprintln!("{line}");
                if errors.send(format!("stderr: {line}")).is_err() {
                    return;
                }
            }
        });
        let mut fingerprint = String::new();
        loop {
            let line = lines
                .recv_timeout(Duration::from_secs(60))
                .expect("warden serve printed nothing for 60 s");
            if let Some(value) = line.strip_prefix("warden: TLS certificate SHA-256 fingerprint ") {
                fingerprint = value.to_string();
            }
            if line.starts_with("warden: listening on https://") {
                break;
            }
        }
        ServeProcess {
            child,
            port,
            fingerprint,
            lines,
            data_dir: data_dir.to_path_buf(),
        }
    }

    /// The URL of `path` under the API base.
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}/api/engine/v2{path}", self.port)
    }

    /// The certificate it serves (generated in its data directory), to verify it with.
    pub fn ca(&self) -> PathBuf {
        self.data_dir.join("tls/self-signed.crt")
    }

    /// SIGTERM, then the exit status and the rest of its output.
    pub fn terminate(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        let status = self.child.wait().unwrap();
        (status, self.lines.try_iter().collect())
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A new empty directory under the system's temporary directory, named after `label`.
pub fn scratch(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "warden-{label}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An administrator (`admin@example.org`) and an API key for them, made on `data_dir`
/// with the operator's commands (`warden user create --admin`, `warden api-key
/// create`), as a deployer gets a first credential. Returns the key.
pub fn admin_api_key(data_dir: &Path) -> String {
    let mut user = Command::new(crate::warden_bin())
        .args(["user", "create", "--admin", "--email", "admin@example.org"])
        .arg("--password-stdin")
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("WARDEN_MASTER_KEYS")
        .env_remove("WARDEN_DATABASE_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("warden user create");
    user.stdin
        .take()
        .unwrap()
        .write_all(b"an administrator's long passphrase\n")
        .unwrap();
    let output = user.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "warden user create: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = Command::new(crate::warden_bin())
        .args(["api-key", "create", "--user", "admin@example.org"])
        .args(["--name", "tests", "--data-dir"])
        .arg(data_dir)
        .env_remove("WARDEN_MASTER_KEYS")
        .env_remove("WARDEN_DATABASE_URL")
        .output()
        .expect("warden api-key create");
    assert!(
        output.status.success(),
        "warden api-key create: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let key = String::from_utf8_lossy(&output.stdout).trim().to_string();
    assert!(key.starts_with("wdn_ak_"), "not a key: {key}");
    key
}
