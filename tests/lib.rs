//! Support for Warden's end-to-end tests: the built guests, the `warden` binary, device
//! simulators started as child processes, and free ports on 127.0.0.1.
//!
//! This is test code: failing loudly with a clear message is its job, so the workspace's
//! no-panic lints are lifted here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod browser;
pub mod serve_process;

/// Paths of every built driver and fixture component.
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

/// The workspace's root directory.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// The `warden` binary built next to this test binary (`cargo build -p warden` first; the
/// project's test script does).
pub fn warden_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/all-<hash> -> target/<profile>/warden
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(PathBuf::from)
        .unwrap_or_default();
    let bin = profile_dir.join("warden");
    assert!(
        bin.is_file(),
        "{} not found: build it with `cargo build -p warden` (scripts/test does)",
        bin.display()
    );
    bin
}

/// The Python (3.13, in the project's virtual environment) that runs the device
/// simulators: `$WARDEN_PYTHON`, or the one `scripts/setup` creates.
pub fn python() -> PathBuf {
    let path = match std::env::var_os("WARDEN_PYTHON") {
        Some(path) => PathBuf::from(path),
        None => {
            let cache = std::env::var_os("WARDEN_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                        .join(".cache/warden")
                });
            cache.join("venv/bin/python")
        }
    };
    assert!(
        path.is_file(),
        "{} not found: run scripts/setup to install the device simulators",
        path.display()
    );
    path
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// A child process (a device simulator) that is killed when dropped.
#[derive(Debug)]
pub struct Simulator {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Simulator {
    /// Start `command` and wait until it accepts TCP connections on `addr`.
    pub fn start_tcp(command: Command, addr: SocketAddr) -> Simulator {
        let description = format!("{command:?}");
        let mut simulator = Simulator::spawn(command, addr);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return simulator;
            }
            if let Ok(Some(status)) = simulator.child.try_wait() {
                panic!("simulator {description} exited early: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "simulator {description} did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Start a simulator process whose readiness the caller checks itself.
    pub fn spawn(mut command: Command, addr: SocketAddr) -> Simulator {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
        Simulator { child, addr }
    }

    /// Stop it now.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The outcome of one `warden` CLI run.
#[derive(Debug)]
pub struct CliRun {
    /// Exit status code.
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl CliRun {
    /// Stdout parsed as JSON, panicking with the whole run on failure.
    pub fn json(&self) -> serde_json::Value {
        assert_eq!(self.code, Some(0), "warden failed: {self:#?}");
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }
}

/// `warden driver run FILE --endpoint TARGET --settings SETTINGS --exec FUNCTION --args
/// ARGS`: one function of a module of the driver in `file`.
pub fn run_driver(
    file: &str,
    target: &str,
    settings: &serde_json::Value,
    function: &str,
    args: &serde_json::Value,
) -> CliRun {
    let (settings, args) = (settings.to_string(), args.to_string());
    warden(&[
        "driver",
        "run",
        file,
        "--endpoint",
        target,
        "--settings",
        &settings,
        "--exec",
        function,
        "--args",
        &args,
    ])
}

/// Run `warden` with `args` and collect its output.
pub fn warden(args: &[&str]) -> CliRun {
    let output = Command::new(warden_bin())
        .args(args)
        .env("WARDEN_CACHE_DIR", cache_dir())
        .output()
        .expect("run warden");
    CliRun {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A compiled-component cache shared by the test run.
pub fn cache_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .map(|p| p.join("warden-test-cache"))
        .unwrap_or_default()
}
