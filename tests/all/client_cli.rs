//! The CLI client (`warden systems|zones|drivers|modules|exec|watch`), run as the real
//! binary against a real `warden serve` process, as a deployer would: an API key from
//! `warden api-key create` in `WARDEN_API_KEY`, the host's self-signed certificate
//! trusted with `--ca`, a PJLink projector emulator as the device.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use warden_tests::serve_process::{ServeProcess, admin_api_key, scratch};
use warden_tests::{CliRun, Simulator, free_port, guests, python, warden_bin};

/// A host with an administrator's API key, and an empty working directory for the
/// client (so that no `./warden-data` certificate is trusted by default).
struct Host {
    server: ServeProcess,
    key: String,
    cwd: PathBuf,
}

impl Host {
    fn start(label: &str) -> Host {
        let root = scratch(label);
        let server = ServeProcess::start(&root.join("warden-data"), &[]);
        let key = admin_api_key(&server.data_dir);
        let cwd = root.join("client");
        std::fs::create_dir_all(&cwd).unwrap();
        Host { server, key, cwd }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.server.port)
    }

    /// `warden ARGS --url URL --ca CA` with the administrator's key.
    fn cli(&self, args: &[&str]) -> CliRun {
        let ca = self.server.ca();
        let mut argv: Vec<&str> = args.to_vec();
        let url = self.url();
        argv.extend(["--url", &url, "--ca", ca.to_str().unwrap()]);
        client(&self.cwd, &argv, &[("WARDEN_API_KEY", &self.key)])
    }

    /// [`Host::cli`] that must succeed, with its JSON output.
    fn json(&self, args: &[&str]) -> Value {
        let run = self.cli(args);
        self.assert_no_secret(&run);
        run.json()
    }

    fn assert_no_secret(&self, run: &CliRun) {
        assert!(
            !run.stdout.contains(&self.key) && !run.stderr.contains(&self.key),
            "the API key was printed: {run:#?}"
        );
    }
}

/// Run `warden ARGS` in `cwd` with only the client variables in `env` set; killed after
/// 60 s so a hanging client fails the test instead of stalling it.
fn client(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> CliRun {
    let mut command = Command::new(warden_bin());
    command.args(args).current_dir(cwd);
    for name in ["WARDEN_API_KEY", "WARDEN_TOKEN", "WARDEN_URL", "WARDEN_CA"] {
        command.env_remove(name);
    }
    // The client's own log at its most talkative, to show what it never says.
    command.env("WARDEN_LOG", "debug");
    for (name, value) in env {
        command.env(name, value);
    }
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run warden");
    let pid = child.id();
    let (done, finished) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let output = child.wait_with_output().unwrap();
        let _ = done.send(());
        output
    });
    if finished.recv_timeout(Duration::from_secs(60)).is_err() {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        panic!("warden {args:?} did not finish within 60 s");
    }
    let output = waiter.join().unwrap();
    CliRun {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The pjlink-advance emulator, class 1, switching power at once.
fn projector() -> Simulator {
    let port = free_port();
    let mut command = Command::new(python());
    command.args(["-m", "pjlink_advance.emulator", "--host", "127.0.0.1"]);
    command.args(["--pj-class", "1", "--transition-delay", "0"]);
    command.args(["--port", &port.to_string()]);
    Simulator::start_tcp(command, SocketAddr::from(([127, 0, 0, 1], port)))
}

fn id(value: &Value) -> String {
    value["id"].as_str().expect("an id").to_string()
}

/// A listener that proves nothing connected to it.
struct Silent(TcpListener);

impl Silent {
    fn new() -> Silent {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        Silent(listener)
    }

    fn url(&self) -> String {
        format!("https://{}", self.0.local_addr().unwrap())
    }

    fn assert_untouched(&self) {
        match self.0.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("something connected: {other:?}"),
        }
    }
}

#[test]
fn a_deployer_session_from_upload_to_watched_status() {
    let host = Host::start("client-session");
    let projector = projector();

    // The driver: uploaded, pending, approved.
    let driver = host.json(&["drivers", "add", guests::PJLINK]);
    let driver_id = id(&driver);
    assert!(
        driver["digest"].as_str().unwrap().starts_with("sha256:"),
        "{driver}"
    );
    assert_eq!(driver["approval"], "pending", "{driver}");
    let approved = host.json(&["drivers", "approve", &driver_id, "--note", "read it"]);
    assert_eq!(approved["approval"], "approved", "{approved}");
    let drivers = host.json(&["drivers", "list"]);
    assert!(
        drivers
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["id"] == driver_id),
        "{drivers}"
    );

    // A zone, a module pointing at the projector, a system holding both.
    let zone = host.json(&["zones", "create", "--name", "Level 3"]);
    let zone_id = id(&zone);
    let endpoint = projector.addr.to_string();
    let module = host.json(&[
        "modules",
        "create",
        "--driver",
        &driver_id,
        "--endpoint",
        &endpoint,
    ]);
    let module_id = id(&module);
    assert_eq!(module["running"], false, "{module}");
    let system = host.json(&[
        "systems", "create", "--name", "Room 301", "--zone", &zone_id, "--module", &module_id,
    ]);
    let system_id = id(&system);
    assert_eq!(system["zones"], json!([zone_id]), "{system}");
    assert_eq!(system["modules"], json!([module_id]), "{system}");
    let found = host.json(&["systems", "list", "--q", "room 30", "--limit", "5"]);
    assert_eq!(found.as_array().unwrap().len(), 1, "{found}");
    assert_eq!(found[0]["id"], system_id.as_str());
    // Search: a typo, a type filter; the zone is found by its name.
    let found = host.json(&["search", "rom 301", "--types", "system"]);
    assert_eq!(found[0]["id"], system_id.as_str(), "{found}");
    assert_eq!(
        found[0]["highlights"]["name"], "<b>Room</b> <b>301</b>",
        "{found}"
    );
    let found = host.json(&["search", "level", "--types", "zone,system"]);
    assert_eq!(found[0]["id"], zone_id.as_str(), "{found}");
    assert_eq!(
        host.json(&["systems", "show", &system_id])["name"],
        "Room 301"
    );
    assert_eq!(host.json(&["zones", "show", &zone_id])["name"], "Level 3");

    // Started, the projector switched on by its name in the room, the status read back.
    let started = host.json(&["modules", "start", &module_id]);
    assert_eq!(started["running"], true, "{started}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let power = loop {
        let run = host.cli(&[
            "exec",
            &system_id,
            "Projector_1",
            "power",
            "[true]",
            "--compact",
        ]);
        // The first call may arrive while the module still connects to the projector.
        if run.code == Some(0) || Instant::now() > deadline {
            break run;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(power.json(), json!("on"), "{power:#?}");
    assert_eq!(power.stdout, "\"on\"\n", "--compact prints one line");

    let watched = host.cli(&["watch", &system_id, "Projector_1", "power", "--count", "1"]);
    host.assert_no_secret(&watched);
    assert_eq!(watched.code, Some(0), "{watched:#?}");
    assert_eq!(watched.stdout, "true\n", "{watched:#?}");

    let state = host.json(&["modules", "state", &module_id]);
    assert_eq!(state["power"], true, "{state}");
    assert_eq!(state["power_state"], "on", "{state}");
    assert_eq!(state["connected"], true, "{state}");
    assert_eq!(
        host.json(&["modules", "state", &module_id, "power_state"]),
        json!("on")
    );
    assert_eq!(
        host.json(&["modules", "exec", &module_id, "power_state"]),
        json!("on")
    );
    let listed = host.json(&["modules", "list", "--system", &system_id]);
    assert_eq!(listed[0]["id"], module_id.as_str(), "{listed}");

    // A refusal by the driver: its error kind and the device's answer, exit 1.
    let refused = host.cli(&["exec", &system_id, "Projector_1", "switch_to", "[\"59\"]"]);
    host.assert_no_secret(&refused);
    assert_eq!(refused.code, Some(1), "{refused:#?}");
    assert!(refused.stdout.is_empty(), "{refused:#?}");
    assert!(
        refused.stderr.contains("driver_error")
            && refused.stderr.contains("HTTP 422")
            && refused.stderr.contains("ERR2"),
        "{refused:#?}"
    );
    // An API refusal: the message and code, exit 1.
    let missing = host.cli(&["modules", "state", &module_id, "no_such_key"]);
    assert_eq!(missing.code, Some(1), "{missing:#?}");
    assert!(
        missing.stderr.contains("not_found") && missing.stderr.contains("no_such_key"),
        "{missing:#?}"
    );

    let stopped = host.json(&["modules", "stop", &module_id]);
    assert_eq!(stopped["running"], false, "{stopped}");
}

#[test]
fn watch_follows_changes_until_interrupted() {
    let host = Host::start("client-watch");
    let projector = projector();
    let driver_id = id(&host.json(&["drivers", "add", guests::PJLINK]));
    host.json(&["drivers", "approve", &driver_id]);
    let system_id = id(&host.json(&["systems", "create", "--name", "Lab"]));
    let endpoint = projector.addr.to_string();
    let module = host.json(&[
        "modules",
        "create",
        "--driver",
        &driver_id,
        "--endpoint",
        &endpoint,
        "--name",
        "Beamer",
        "--system",
        &system_id,
    ]);
    let module_id = id(&module);
    assert_eq!(module["system_id"], system_id.as_str(), "{module}");
    host.json(&["modules", "start", &module_id]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while host
        .cli(&["modules", "exec", &module_id, "power", "[true]"])
        .code
        != Some(0)
    {
        assert!(Instant::now() < deadline, "the projector never switched on");
        std::thread::sleep(Duration::from_millis(200));
    }

    let ca = host.server.ca();
    let url = host.url();
    let mut watch: Child = Command::new(warden_bin())
        .args(["watch", &system_id, "Beamer", "power", "--index", "1"])
        .args(["--url", &url, "--ca", ca.to_str().unwrap()])
        .env("WARDEN_API_KEY", &host.key)
        .current_dir(&host.cwd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (send, lines) = std::sync::mpsc::channel();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if send.send(line).is_err() {
                return;
            }
        }
    });
    let next = || lines.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(next(), "true");
    host.json(&["modules", "exec", &module_id, "power", "[false]"]);
    assert_eq!(next(), "false");

    let pid = watch.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = watch.wait().unwrap();
    assert_eq!(status.code(), Some(0), "ctrl-c ends a watch cleanly");
}

#[test]
fn refusals_say_why_and_send_nothing_they_should_not() {
    let host = Host::start("client-refusals");
    let ca = host.server.ca();
    let ca = ca.to_str().unwrap();
    let url = host.url();

    // No credential: a usage error before any connection (exit 2).
    let silent = Silent::new();
    let none = client(
        &host.cwd,
        &["systems", "list", "--url", &silent.url(), "--ca", ca],
        &[],
    );
    assert_eq!(none.code, Some(2), "{none:#?}");
    assert!(
        none.stderr.contains("WARDEN_API_KEY") && none.stderr.contains("WARDEN_TOKEN"),
        "{none:#?}"
    );
    silent.assert_untouched();
    // Both set is ambiguous: refused too.
    let both = client(
        &host.cwd,
        &["systems", "list", "--url", &silent.url(), "--ca", ca],
        &[("WARDEN_API_KEY", &host.key), ("WARDEN_TOKEN", "wdn_at_x")],
    );
    assert_eq!(both.code, Some(2), "{both:#?}");
    silent.assert_untouched();

    // Bad ARGS_JSON: exit 2 before any request.
    for bad in ["[true", "true", "\"on\""] {
        for argv in [
            &["exec", "sys-x", "Projector_1", "power", bad][..],
            &["modules", "exec", "mod-x", "power", bad],
        ] {
            let mut argv = argv.to_vec();
            let silent_url = silent.url();
            argv.extend(["--url", &silent_url, "--ca", ca]);
            let run = client(&host.cwd, &argv, &[("WARDEN_API_KEY", &host.key)]);
            assert_eq!(run.code, Some(2), "{bad}: {run:#?}");
            assert!(run.stderr.contains("ARGS_JSON"), "{run:#?}");
            silent.assert_untouched();
        }
    }

    // A wrong key: the host's 401, exit 1, over HTTP and at the WebSocket's upgrade.
    let wrong = client(
        &host.cwd,
        &["systems", "list", "--url", &url, "--ca", ca],
        &[("WARDEN_API_KEY", "wdn_ak_not-a-key-anyone-made")],
    );
    assert_eq!(wrong.code, Some(1), "{wrong:#?}");
    assert!(
        wrong.stderr.contains("unauthenticated") && wrong.stderr.contains("HTTP 401"),
        "{wrong:#?}"
    );
    assert!(
        !wrong.stderr.contains("not-a-key-anyone-made"),
        "{wrong:#?}"
    );
    let wrong_token = client(
        &host.cwd,
        &[
            "watch",
            "sys-x",
            "Projector_1",
            "power",
            "--url",
            &url,
            "--ca",
            ca,
        ],
        &[("WARDEN_TOKEN", "wdn_at_not-a-token")],
    );
    assert_eq!(wrong_token.code, Some(1), "{wrong_token:#?}");
    assert!(wrong_token.stderr.contains("HTTP 401"), "{wrong_token:#?}");

    // An untrusted certificate (no --ca, nothing in ./warden-data, the system's roots):
    // the handshake fails, exit 1, and the request never reached the host.
    let untrusted = client(
        &host.cwd,
        &["systems", "create", "--name", "Leaked", "--url", &url],
        &[("WARDEN_API_KEY", &host.key)],
    );
    assert_eq!(untrusted.code, Some(1), "{untrusted:#?}");
    assert!(
        untrusted.stderr.contains("TLS") && untrusted.stderr.contains("certificate"),
        "{untrusted:#?}"
    );
    assert!(untrusted.stdout.is_empty(), "{untrusted:#?}");
    let systems = host.json(&["systems", "list"]);
    assert_eq!(systems, json!([]), "nothing was created: {systems}");
    // Plain HTTP is refused outright.
    let plain = client(
        &host.cwd,
        &[
            "systems",
            "list",
            "--url",
            &format!("http://127.0.0.1:{}", host.server.port),
        ],
        &[("WARDEN_API_KEY", &host.key)],
    );
    assert_eq!(plain.code, Some(2), "{plain:#?}");

    // The default certificate: ./warden-data/tls/self-signed.crt, when it exists.
    let root = host.server.data_dir.parent().unwrap();
    let by_default = client(
        root,
        &["zones", "list", "--url", &url, "--compact"],
        &[("WARDEN_API_KEY", &host.key)],
    );
    assert_eq!(by_default.code, Some(0), "{by_default:#?}");
    assert_eq!(by_default.stdout, "[]\n");

    // The control socket's own refusals end a watch with its message, exit 1.
    let no_system = host.cli(&["watch", "sys-nowhere", "Projector_1", "power"]);
    assert_eq!(no_system.code, Some(1), "{no_system:#?}");
    assert!(
        no_system.stderr.contains("no system sys-nowhere"),
        "{no_system:#?}"
    );
    // An unknown id: the API's 404, exit 1.
    let api_error = host.cli(&["modules", "show", "mod-missing"]);
    assert_eq!(api_error.code, Some(1), "{api_error:#?}");
    assert!(api_error.stderr.contains("not_found"), "{api_error:#?}");
}
