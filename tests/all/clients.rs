//! Warden driven by clients that others wrote, as a deployment's front ends drive it:
//! PlaceOS's `@placeos/ts-client` (from npm, pinned in `tests/clients/ts-client`, installed
//! by scripts/setup) in Node, against `warden serve` over HTTPS with a PJLink projector
//! emulator behind it.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use warden_tests::serve_process::{ServeProcess, admin_api_key, scratch};
use warden_tests::{Simulator, free_port, guests, python, repo_root};

/// An API request's body.
enum Body<'a> {
    None,
    Json(Value),
    Wasm(&'a str),
}

/// `method path` on `server` with curl, as the administrator whose key is `key`; the
/// status and the JSON answer. The key goes to curl on its standard input (a config
/// file), not its command line.
fn call(server: &ServeProcess, key: &str, method: &str, path: &str, body: Body) -> (u16, Value) {
    let mut command = Command::new("curl");
    command
        .args(["--silent", "--show-error", "--config", "-", "--cacert"])
        .arg(server.ca())
        .args(["--request", method, "--write-out", "\n%{http_code}"]);
    match body {
        Body::None => {}
        Body::Json(json) => {
            command.args(["--header", "content-type: application/json"]);
            command.args(["--data-binary", &json.to_string()]);
        }
        Body::Wasm(path) => {
            command.args(["--header", "content-type: application/wasm"]);
            command.args(["--data-binary", &format!("@{path}")]);
        }
    }
    let mut child = command
        .arg(server.url(path))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl (scripts/setup installs it)");
    writeln!(child.stdin.take().unwrap(), "header = \"X-API-Key: {key}\"").unwrap();
    let output = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    let json = serde_json::from_str(body).unwrap_or(Value::Null);
    (code.trim().parse().unwrap_or(0), json)
}

/// The `id` of a created resource.
fn created(reply: (u16, Value)) -> String {
    assert_eq!(reply.0, 201, "{}", reply.1);
    reply.1["id"].as_str().unwrap().to_string()
}

/// The PJLink emulator of `pjlink-advance`: class 1, off, switching power at once.
fn projector() -> Simulator {
    let port = free_port();
    let mut command = Command::new(python());
    command.args(["-m", "pjlink_advance.emulator", "--host", "127.0.0.1"]);
    command.args(["--port", &port.to_string(), "--pj-class", "1"]);
    command.args(["--transition-delay", "0"]);
    Simulator::start_tcp(command, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Where the Node client and its pinned packages are.
fn ts_client_dir() -> PathBuf {
    let dir = repo_root().join("tests/clients/ts-client");
    assert!(
        dir.join("node_modules/@placeos/ts-client").is_dir(),
        "{} has no node_modules: run scripts/setup (it runs npm ci there)",
        dir.display()
    );
    dir
}

#[test]
fn placeos_ts_client_lists_binds_and_executes() {
    let data_dir = scratch("ts-client").join("data");
    let key = admin_api_key(&data_dir);
    let server = ServeProcess::start(&data_dir, &[]);
    let projector = projector();

    // The deployer's part: the driver registered and approved, a module for the
    // projector in a room, another room so that the list has two pages, the module started.
    let driver = created(call(
        &server,
        &key,
        "POST",
        "/drivers",
        Body::Wasm(guests::PJLINK),
    ));
    let (status, approved) = call(
        &server,
        &key,
        "POST",
        &format!("/drivers/{driver}/approval"),
        Body::Json(json!({"approval": "approved", "note": "reviewed for this test"})),
    );
    assert_eq!(status, 200, "{approved}");
    let module = created(call(
        &server,
        &key,
        "POST",
        "/modules",
        Body::Json(json!({
            "driver_id": driver,
            "endpoint": projector.addr.to_string(),
            "custom_name": "Projector",
        })),
    ));
    let room = created(call(
        &server,
        &key,
        "POST",
        "/systems",
        Body::Json(json!({"name": "Conference room", "modules": [module]})),
    ));
    created(call(
        &server,
        &key,
        "POST",
        "/systems",
        Body::Json(json!({"name": "Lobby"})),
    ));
    let (status, body) = call(
        &server,
        &key,
        "POST",
        &format!("/modules/{module}/start"),
        Body::None,
    );
    assert_eq!(status, 200, "{body}");
    // The driver does not poll unless told to: asking once publishes the power state.
    let (status, power) = call(
        &server,
        &key,
        "POST",
        &format!("/modules/{module}/exec/power_state"),
        Body::Json(json!([])),
    );
    assert_eq!(
        (status, power),
        (200, json!("off")),
        "the emulator starts in standby"
    );

    // The front end's part, by PlaceOS's own client.
    let output = Command::new("node")
        .arg("drive.mjs")
        .args(["--server", &format!("https://127.0.0.1:{}", server.port)])
        .args([
            "--system",
            &room,
            "--module",
            "Projector_1",
            "--status",
            "power",
        ])
        .args(["--exec", "power", "--args", "[true]", "--timeout", "60"])
        .current_dir(ts_client_dir())
        .env("WARDEN_API_KEY", &key)
        .env("NODE_EXTRA_CA_CERTS", server.ca())
        .stderr(Stdio::inherit())
        .output()
        .expect("node (scripts/setup installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let steps: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    assert!(output.status.success(), "drive.mjs failed:\n{stdout}");
    let step = |name: &str, nth: usize| -> &Value {
        steps
            .iter()
            .filter(|s| s["step"] == name)
            .nth(nth)
            .unwrap_or_else(|| panic!("no {name} #{nth} in:\n{stdout}"))
    };

    // The authority says engine v2, so the client used /api/engine/v2 with the key.
    assert_eq!(step("setup", 0)["authority"], "v2.0.0", "{stdout}");
    assert_eq!(step("setup", 0)["api_key"], true, "{stdout}");
    // Both systems, one page each, the second found through the `Link` header.
    let systems = step("systems", 0);
    assert_eq!(systems["total"], 2, "{stdout}");
    assert_eq!(systems["pages"], 2, "{stdout}");
    assert_eq!(systems["found"], true, "{stdout}");
    // The bind's notify, the exec's result, and the notify of the change.
    assert_eq!(
        step("notify", 0),
        &json!({"step": "notify", "name": "power", "value": false})
    );
    assert_eq!(
        step("exec", 0),
        &json!({"step": "exec", "name": "power", "args": [true], "value": "on"})
    );
    assert_eq!(
        step("notify", 1),
        &json!({"step": "notify", "name": "power", "value": true})
    );
    drop(projector);
}
