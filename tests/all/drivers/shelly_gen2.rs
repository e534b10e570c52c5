//! Tests of the shelly_gen2 driver, through the `warden` CLI (and the runtime library for
//! polling), against tests/sims/shelly_gen2.py. No simulator of Shelly's Gen2 devices
//! exists elsewhere; that one was written from Shelly's published API documentation (RPC
//! channels, authentication, common errors, the Switch component), not from the driver.
//! Each test starts its own device, so switching in one test never shows in another.

use std::net::SocketAddr;
use std::process::Command;

use serde_json::{Value, json};
use warden::runtime::ModuleConfig;
use warden_tests::guests::SHELLY_GEN2;
use warden_tests::{CliRun, Simulator, free_port, python, repo_root, run_driver, warden};

use crate::support;

const DEVICE_ID: &str = "shellyplus1pm-a8032ab12345";

/// A simulated Plus 1PM on a fresh port of 127.0.0.1, with `extra` arguments.
fn device(extra: &[&str]) -> Simulator {
    let port = free_port();
    let mut command = Command::new(python());
    command
        .arg(repo_root().join("tests/sims/shelly_gen2.py"))
        .arg("--port")
        .arg(port.to_string())
        .args(extra);
    Simulator::start_tcp(command, SocketAddr::from(([127, 0, 0, 1], port)))
}

fn exec_at(base: &str, settings: &Value, function: &str, args: Value) -> CliRun {
    run_driver(SHELLY_GEN2, base, settings, function, &args)
}

/// Run `function` without polling (so that stderr shows only what the function did).
fn exec(device: &Simulator, settings: Value, function: &str, args: Value) -> CliRun {
    let mut settings = settings;
    settings["poll_ms"] = json!(0);
    exec_at(
        &format!("http://{}", device.addr),
        &settings,
        function,
        args,
    )
}

fn digest(password: &str) -> Value {
    json!({"http_auth": {"type": "digest", "username": "admin", "password": password}})
}

/// The last value of status `key` printed by a run.
fn status(run: &CliRun, key: &str) -> Option<Value> {
    let prefix = format!("status {key} = ");
    run.stderr
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix(&prefix))
        .map(|value| serde_json::from_str(value).unwrap())
}

/// A run that failed with exit code 1 and an error of `kind` mentioning `words`.
fn assert_error(run: &CliRun, kind: &str, words: &str) {
    assert_eq!(run.code, Some(1), "{run:#?}");
    let line = run
        .stderr
        .lines()
        .find(|line| line.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {run:#?}"));
    assert!(line.contains(&format!(" failed: {kind}: ")), "{line}");
    assert!(line.contains(words), "{line}");
}

#[test]
fn info_identifies_the_device() {
    let device = device(&[]);
    let run = exec(&device, json!({}), "info", json!([]));
    assert_eq!(
        run.json(),
        json!({
            "id": DEVICE_ID,
            "model": "SNSW-001P16EU",
            "generation": 2,
            "firmware": "1.4.4",
            "firmware_id": "20241011-114455/1.4.4-g6d2a586",
            "app": "Plus1PM",
            "mac": "A8032AB12345",
            "name": null,
            "auth_enabled": false,
        })
    );
    assert_eq!(status(&run, "device_id"), Some(json!(DEVICE_ID)));
    assert_eq!(status(&run, "model"), Some(json!("SNSW-001P16EU")));
    assert_eq!(status(&run, "firmware"), Some(json!("1.4.4")));
}

#[test]
fn on_off_and_toggle_are_reflected_in_status() {
    let device = device(&[]);
    let state = exec(&device, json!({}), "state", json!([])).json();
    assert_eq!(state["power"], false);
    assert_eq!(state["apower"], 0.0);
    assert_eq!(state["source"], "init");

    let run = exec(&device, json!({}), "power", json!([true]));
    let state = run.json();
    assert_eq!(state["power"], true);
    assert_eq!(state["apower"], 60.5);
    assert_eq!(state["voltage"], 230.1);
    assert_eq!(state["current"], 0.263);
    assert_eq!(state["freq"], 50.0);
    assert_eq!(state["temperature"], 45.7);
    assert_eq!(state["source"], "http");
    assert_eq!(state["errors"], json!([]));
    assert!(state["energy"].is_number(), "{state}");
    assert_eq!(status(&run, "power"), Some(json!(true)));
    assert_eq!(status(&run, "apower"), Some(json!(60.5)));
    assert_eq!(status(&run, "voltage"), Some(json!(230.1)));
    assert_eq!(status(&run, "temperature"), Some(json!(45.7)));

    let run = exec(&device, json!({}), "toggle", json!([]));
    assert_eq!(run.json()["power"], false);
    assert_eq!(status(&run, "power"), Some(json!(false)));
    assert_eq!(status(&run, "apower"), Some(json!(0.0)));

    let run = exec(&device, json!({}), "toggle", json!([]));
    assert_eq!(run.json()["power"], true);
    assert_eq!(status(&run, "power"), Some(json!(true)));

    let run = exec(&device, json!({}), "power", json!({"on": false}));
    assert_eq!(run.json()["power"], false);
    assert_eq!(status(&run, "power"), Some(json!(false)));
    // The device kept the state between modules; the energy counter ran while on.
    let state = exec(&device, json!({}), "state", json!([])).json();
    assert_eq!(state["power"], false);
    assert!(state["energy"].as_f64().unwrap() > 0.0, "{state}");
}

#[test]
fn each_module_controls_its_own_channel() {
    let device = device(&[
        "--switches",
        "2",
        "--device-id",
        "shellypro4pm-f008d1d8b8b8",
    ]);
    let second = json!({"switch_id": 1});
    assert_eq!(
        exec(&device, second.clone(), "power", json!([true])).json()["power"],
        true
    );
    assert_eq!(
        exec(&device, json!({}), "state", json!([])).json()["power"],
        false
    );
    assert_eq!(
        exec(&device, second, "state", json!([])).json()["power"],
        true
    );

    let run = exec(&device, json!({"switch_id": 4}), "power", json!([true]));
    assert_error(
        &run,
        "device",
        "Switch.Set: the device refused: Argument 'id', value 4 not found! (error -105",
    );
}

#[test]
fn digest_authentication_with_the_device_password() {
    let device = device(&["--password", "s3cret"]);
    let run = exec(&device, digest("s3cret"), "power", json!([true]));
    assert_eq!(run.json()["power"], true);
    assert!(
        !run.stderr.contains("s3cret"),
        "the password leaked: {run:#?}"
    );
    let info = exec(&device, digest("s3cret"), "info", json!([])).json();
    assert_eq!(info["auth_enabled"], true);
    assert_eq!(
        exec(&device, digest("s3cret"), "toggle", json!([])).json()["power"],
        false
    );
}

#[test]
fn wrong_or_missing_credentials_are_device_errors() {
    let device = device(&["--password", "s3cret"]);
    for settings in [digest("wrong"), json!({})] {
        let run = exec(&device, settings, "power", json!([true]));
        assert_error(
            &run,
            "device",
            "Switch.Set: the device refused the credentials (HTTP 401)",
        );
        assert!(run.stderr.contains("http_auth"), "{run:#?}");
    }
    // Nothing was switched; the device's identity needs no credentials.
    assert_eq!(
        exec(&device, digest("s3cret"), "state", json!([])).json()["power"],
        false
    );
    assert_eq!(
        exec(&device, json!({}), "info", json!([])).json()["id"],
        DEVICE_ID
    );
}

#[test]
fn a_device_that_is_off_is_not_connected() {
    let nobody = format!("http://127.0.0.1:{}", free_port());
    for function in ["state", "power", "info"] {
        let args = if function == "power" {
            json!([true])
        } else {
            json!([])
        };
        let run = exec_at(&nobody, &json!({"poll_ms": 0}), function, args);
        assert_error(&run, "not-connected", "");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_publishes_the_state_and_identity() {
    let device = device(&["--password", "s3cret"]);
    let runtime = support::runtime();
    let driver = support::load(&runtime, SHELLY_GEN2);
    let mut config = ModuleConfig::new("relay", driver);
    config.base_uri = Some(format!("http://{}", device.addr).parse().unwrap());
    let mut settings = digest("s3cret");
    settings["poll_ms"] = json!(1000);
    config.settings = settings;
    let module = support::start(&runtime, config).await;
    support::wait_status(&module, "model", &json!("SNSW-001P16EU")).await;
    support::wait_status(&module, "power", &json!(false)).await;
    support::wait_status(&module, "voltage", &json!(230.1)).await;

    // Switched by someone else (another client of the device): the next poll shows it.
    let other = exec(&device, digest("s3cret"), "power", json!([true]));
    assert_eq!(other.json()["power"], true);
    support::wait_status(&module, "power", &json!(true)).await;
    support::wait_status(&module, "apower", &json!(60.5)).await;
    runtime.shutdown().await;
}

#[test]
fn settings_are_checked() {
    let device = device(&[]);
    let run = exec_at(
        &format!("http://{}", device.addr),
        &json!({"poll_ms": 200}),
        "state",
        json!([]),
    );
    assert_eq!(run.code, Some(2), "{run:#?}");
    assert!(
        run.stderr.contains("poll_ms must be 0 or at least 1000"),
        "{run:#?}"
    );
}

#[test]
fn inspect_shows_an_http_relay_driver() {
    let inspected = warden(&["driver", "inspect", SHELLY_GEN2, "--json"]).json();
    assert_eq!(inspected["transport"], "http");
    assert_eq!(inspected["default_port"], 80);
    assert_eq!(inspected["generic_name"], "Relay");
    assert_eq!(inspected["refused_imports"], json!([]));
    let names: Vec<&str> = inspected["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["power", "toggle", "state", "info"]);
}
