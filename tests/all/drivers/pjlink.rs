//! Tests of the pjlink driver, through the `warden` CLI, against the PJLink emulator of
//! the `pjlink-advance` Python package (installed by scripts/setup).
//!
//! Each `warden driver run` is a new process with a new connection, so a test's sequence
//! of calls also checks that the driver reads the greeting (and authenticates) afresh on
//! every connection. The emulator keeps its state between connections.

use std::net::SocketAddr;
use std::process::Command;

use serde_json::{Value, json};
use warden_tests::{CliRun, Simulator, free_port, guests, python, warden};

/// Starts a pjlink-advance emulator with a chosen state, through the package's own
/// `PJLinkEmulator` class (its command line cannot set error status, lamps or name).
const SCRIPTED_EMULATOR: &str = r#"
import asyncio, json, sys
from pjlink_advance.emulator import EmulatorState, PJLinkEmulator
from pjlink_advance.models import ErrorLevel, ErrorStatus, Lamp

config = json.loads(sys.argv[1])
state = EmulatorState()
state.errors = ErrorStatus.ok().replace(
    **{name: ErrorLevel(level) for name, level in config.get("errors", {}).items()}
)
if "lamps" in config:
    state.lamps = [Lamp(hours, on) for hours, on in config["lamps"]]
if "name" in config:
    state.name = config["name"]

class HangingUpEmulator(PJLinkEmulator):
    """Closes the connection after every reply, as some projectors do."""

    def _respond(self, line):
        # Runs before the reply is written; the close runs once the handler yields, after
        # the reply went out and before another command can be read.
        asyncio.get_running_loop().call_soon(self.disconnect_all)
        return super()._respond(line)

async def main():
    kind = HangingUpEmulator if config.get("close_after_reply") else PJLinkEmulator
    emulator = kind(
        state,
        pj_class=1,
        password=config.get("password"),
        host="127.0.0.1",
        port=config["port"],
        udp_port=None,
        transition_delay=config.get("transition_delay", 0),
    )
    emulator.silent = config.get("silent", False)
    async with emulator:
        await asyncio.Event().wait()

asyncio.run(main())
"#;

fn localhost(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The emulator as its command line starts it: class 1, power changes after
/// `transition_delay` seconds (its own default is 10), optionally with a password.
fn emulator(password: Option<&str>, transition_delay: u32) -> Simulator {
    let port = free_port();
    let mut command = Command::new(python());
    command.args([
        "-m",
        "pjlink_advance.emulator",
        "--host",
        "127.0.0.1",
        "--pj-class",
        "1",
    ]);
    command.args(["--port", &port.to_string()]);
    command.args(["--transition-delay", &transition_delay.to_string()]);
    if let Some(password) = password {
        command.args(["--password", password]);
    }
    Simulator::start_tcp(command, localhost(port))
}

/// The emulator with the state `config` describes (see [`SCRIPTED_EMULATOR`]).
fn scripted_emulator(config: Value) -> Simulator {
    let port = free_port();
    let mut config = config.as_object().cloned().unwrap_or_default();
    config.insert("port".to_string(), json!(port));
    let mut command = Command::new(python());
    command.args(["-c", SCRIPTED_EMULATOR, &Value::Object(config).to_string()]);
    Simulator::start_tcp(command, localhost(port))
}

/// Run `function` of the pjlink driver once against `projector`.
fn run(projector: &Simulator, settings: Option<Value>, function: &str, args: Value) -> CliRun {
    run_with(projector, &[], settings, function, args)
}

/// [`run`] with more `warden driver run` options, such as `--make-break`.
fn run_with(
    projector: &Simulator,
    options: &[&str],
    settings: Option<Value>,
    function: &str,
    args: Value,
) -> CliRun {
    let endpoint = projector.addr.to_string();
    let args = args.to_string();
    let settings = settings.map(|settings| settings.to_string());
    let mut argv = vec![
        "driver",
        "run",
        guests::PJLINK,
        "--endpoint",
        &endpoint,
        "--exec",
        function,
        "--args",
        &args,
    ];
    if let Some(settings) = &settings {
        argv.extend(["--settings", settings.as_str()]);
    }
    argv.extend(options);
    warden(&argv)
}

/// The result of a call that must succeed.
fn call(projector: &Simulator, function: &str, args: Value) -> Value {
    run(projector, None, function, args).json()
}

/// Whether the run published status `key` with `value` (as JSON) on stderr. Only "status
/// goes to stderr" is the CLI's contract, so any line naming both counts.
fn published(run: &CliRun, key: &str, value: Value) -> bool {
    let value = value.to_string();
    run.stderr
        .lines()
        .any(|line| line.contains(key) && line.contains(&value))
}

/// The stderr of a call that must fail, after checking that it failed cleanly.
fn failure(run: CliRun) -> String {
    assert_ne!(run.code, Some(0), "expected a failure: {run:#?}");
    assert!(
        run.code.is_some(),
        "warden was killed by a signal: {run:#?}"
    );
    assert!(
        !run.stderr.contains("panicked"),
        "warden panicked instead of reporting the error: {run:#?}"
    );
    run.stderr
}

#[test]
fn power_on_off_and_query() {
    let projector = emulator(None, 0);
    assert_eq!(call(&projector, "power_state", json!([])), "off");
    assert_eq!(call(&projector, "power", json!([true])), "on");
    assert_eq!(call(&projector, "power_state", json!([])), "on");
    // Named arguments work as well as positional ones.
    assert_eq!(call(&projector, "power", json!({"state": false})), "off");
    assert_eq!(call(&projector, "power_state", json!([])), "off");

    let run = run(&projector, None, "power_state", json!([]));
    assert_eq!(run.json(), "off");
    assert!(published(&run, "power", json!(false)), "{run:#?}");
    assert!(published(&run, "power_state", json!("off")), "{run:#?}");
}

#[test]
fn warming_up_is_reported_and_blocks_input_changes() {
    // Power changes take a minute here, so the projector stays warming up.
    let projector = emulator(None, 60);
    assert_eq!(call(&projector, "power", json!([true])), "warming");
    assert_eq!(call(&projector, "power_state", json!([])), "warming");
    let stderr = failure(run(&projector, None, "switch_to", json!(["31"])));
    assert!(stderr.contains("ERR3"), "{stderr}");
    assert!(stderr.contains("warming up"), "{stderr}");
}

#[test]
fn input_switching() {
    let projector = emulator(None, 0);
    // Projectors refuse input changes in standby: a device error, not a crash.
    let stderr = failure(run(&projector, None, "switch_to", json!(["31"])));
    assert!(stderr.contains("ERR3"), "{stderr}");

    call(&projector, "power", json!([true]));
    assert_eq!(call(&projector, "switch_to", json!(["32"])), "32");
    assert_eq!(call(&projector, "current_input", json!([])), "32");
    let switched = run(&projector, None, "switch_to", json!(["digital1"]));
    assert_eq!(switched.json(), "31");
    assert!(published(&switched, "input", json!("31")), "{switched:#?}");
    assert_eq!(call(&projector, "current_input", json!([])), "31");

    // Well-formed, but not an input this projector has: the projector refuses it.
    let stderr = failure(run(&projector, None, "switch_to", json!(["59"])));
    assert!(stderr.contains("ERR2") && stderr.contains("59"), "{stderr}");
    // Not a PJLink input code at all: refused before anything is sent.
    for bad in ["hdmi1", "99", "3", ""] {
        let stderr = failure(run(&projector, None, "switch_to", json!([bad])));
        assert!(stderr.contains("not a PJLink input"), "{bad:?}: {stderr}");
    }
    let stderr = failure(run(&projector, None, "switch_to", json!([31])));
    assert!(stderr.contains("input"), "{stderr}");
    // The failures changed nothing.
    assert_eq!(call(&projector, "current_input", json!([])), "31");
}

#[test]
fn mute() {
    let projector = emulator(None, 0);
    assert_eq!(
        call(&projector, "mute_state", json!([])),
        json!({"video": false, "audio": false})
    );
    call(&projector, "power", json!([true]));
    let muted = run(&projector, None, "mute", json!([true]));
    assert_eq!(muted.json(), json!({"video": true, "audio": true}));
    for key in ["mute", "video_mute", "audio_mute"] {
        assert!(published(&muted, key, json!(true)), "{key}: {muted:#?}");
    }
    assert_eq!(
        call(&projector, "mute", json!([false, "audio"])),
        json!({"video": true, "audio": false})
    );
    assert_eq!(
        call(&projector, "mute_state", json!([])),
        json!({"video": true, "audio": false})
    );
    assert_eq!(
        call(&projector, "mute", json!({"state": false, "kind": "video"})),
        json!({"video": false, "audio": false})
    );
    assert_eq!(
        call(&projector, "mute", json!([true, "both"])),
        json!({"video": true, "audio": true})
    );
    assert_eq!(
        call(&projector, "mute", json!([false])),
        json!({"video": false, "audio": false})
    );
    let stderr = failure(run(&projector, None, "mute", json!([true, "sideways"])));
    assert!(stderr.contains("kind"), "{stderr}");
}

#[test]
fn error_status() {
    let projector = emulator(None, 0);
    assert_eq!(
        call(&projector, "errors", json!([])),
        json!({"fan": "ok", "lamp": "ok", "temperature": "ok", "cover": "ok", "filter": "ok", "other": "ok"})
    );

    let projector = scripted_emulator(json!({"errors": {"lamp": "warning", "filter": "error"}}));
    let errors = run(&projector, None, "errors", json!([]));
    assert_eq!(
        errors.json(),
        json!({"fan": "ok", "lamp": "warning", "temperature": "ok", "cover": "ok", "filter": "error", "other": "ok"})
    );
    assert!(
        published(&errors, "errors", json!("warning")),
        "{errors:#?}"
    );
}

#[test]
fn lamp_hours() {
    let projector = emulator(None, 0);
    assert_eq!(
        call(&projector, "lamp_hours", json!([])),
        json!([{"hours": 1200, "on": false}])
    );
    call(&projector, "power", json!([true]));
    assert_eq!(
        call(&projector, "lamp_hours", json!([])),
        json!([{"hours": 1200, "on": true}])
    );

    let projector = scripted_emulator(json!({"lamps": [[3000, false], [12, false]]}));
    let lamps = run(&projector, None, "lamp_hours", json!([]));
    assert_eq!(
        lamps.json(),
        json!([{"hours": 3000, "on": false}, {"hours": 12, "on": false}])
    );
    assert!(published(&lamps, "lamp_hours", json!(3000)), "{lamps:#?}");
}

#[test]
fn info() {
    let projector = emulator(None, 0);
    assert_eq!(
        call(&projector, "info", json!([])),
        json!({
            "name": "EB-L735U",
            "manufacturer": "EPSON",
            "product": "EB-L735U",
            "class": 1,
            "inputs": [
                {"code": "11", "kind": "rgb"},
                {"code": "31", "kind": "digital"},
                {"code": "32", "kind": "digital"},
                {"code": "51", "kind": "network"},
            ],
        })
    );
    let projector = scripted_emulator(json!({"name": "Lecture Hall"}));
    let info = run(&projector, None, "info", json!([]));
    assert_eq!(info.json()["name"], "Lecture Hall");
    assert!(published(&info, "name", json!("Lecture Hall")), "{info:#?}");
}

#[test]
fn raw_commands() {
    let projector = emulator(None, 0);
    assert_eq!(
        call(&projector, "raw_command", json!(["INF1", "?"])),
        "EPSON"
    );
    let stderr = failure(run(&projector, None, "raw_command", json!(["XXXX", "?"])));
    assert!(stderr.contains("ERR1"), "{stderr}");
    let stderr = failure(run(
        &projector,
        None,
        "raw_command",
        json!(["POWR", "1\r%1POWR 0"]),
    ));
    assert!(stderr.contains("not a PJLink parameter"), "{stderr}");
}

#[test]
fn md5_authentication() {
    let projector = emulator(Some("JBMIA-secret"), 0);
    let right = Some(json!({"password": "JBMIA-secret"}));

    assert_eq!(
        run(&projector, right.clone(), "power_state", json!([])).json(),
        "off"
    );
    assert_eq!(
        run(&projector, right.clone(), "power", json!([true])).json(),
        "on"
    );
    // Several commands on one connection: only the first carries the digest.
    let info = run(&projector, right.clone(), "info", json!([])).json();
    assert_eq!(info["manufacturer"], "EPSON");
    assert_eq!(
        run(&projector, right, "mute", json!([true, "video"])).json(),
        json!({"video": true, "audio": false})
    );

    let wrong = Some(json!({"password": "guess"}));
    let stderr = failure(run(&projector, wrong, "power_state", json!([])));
    assert!(stderr.contains("authentication failed"), "{stderr}");
    assert!(stderr.contains("ERRA"), "{stderr}");
    assert!(
        !stderr.contains("guess"),
        "the password must not be logged: {stderr}"
    );

    let stderr = failure(run(&projector, None, "power_state", json!([])));
    assert!(stderr.contains("requires a PJLink password"), "{stderr}");
}

#[test]
fn make_break_connections() {
    // The connection opens for the command (whose greeting the driver reads first) and
    // closes when idle.
    let projector = emulator(Some("secret"), 0);
    let settings = Some(json!({"password": "secret"}));
    let make_break = ["--make-break"];
    let run = |function, args| run_with(&projector, &make_break, settings.clone(), function, args);
    assert_eq!(run("power_state", json!([])).json(), "off");
    assert_eq!(run("power", json!([true])).json(), "on");
    assert_eq!(run("info", json!([])).json()["class"], 1);
}

#[test]
fn projector_that_hangs_up_after_every_reply() {
    // Every command after the first finds its connection closed, and is sent again on the
    // next connection, authenticated afresh.
    for password in [None, Some("secret")] {
        let projector = scripted_emulator(json!({"close_after_reply": true, "password": password}));
        let settings = password.map(|password| json!({"password": password}));
        let info = run(&projector, settings.clone(), "info", json!([])).json();
        assert_eq!(info["manufacturer"], "EPSON", "{password:?}");
        assert_eq!(
            info["inputs"].as_array().map(Vec::len),
            Some(4),
            "{password:?}"
        );
        assert_eq!(
            run(&projector, settings, "power", json!([true])).json(),
            "on",
            "{password:?}"
        );
    }
}

#[test]
fn silent_projector_times_out() {
    let projector = scripted_emulator(json!({"silent": true}));
    let settings = Some(json!({"request_timeout_ms": 300}));
    let stderr = failure(run(&projector, settings, "power_state", json!([])));
    assert!(stderr.contains("POWR"), "{stderr}");
}

#[test]
fn inspect_shows_functions_and_schemas() {
    let inspect = warden(&["driver", "inspect", guests::PJLINK, "--json"]).json();
    assert_eq!(inspect["name"], "PJLink projector");
    assert_eq!(inspect["transport"], "tcp");
    assert!(
        inspect["digest"].as_str().is_some_and(|d| !d.is_empty()),
        "{inspect:#}"
    );
    assert!(inspect["version"].is_string(), "{inspect:#}");
    // The driver reaches the device only through the host's transport.
    let imports = inspect["imports"].as_array().expect("imports");
    assert!(
        imports.iter().any(|i| i
            .as_str()
            .is_some_and(|i| i.starts_with("warden:driver/transport"))),
        "{inspect:#}"
    );
    for import in imports.iter().filter_map(Value::as_str) {
        assert!(
            !["wasi:sockets", "wasi:filesystem", "wasi:http"]
                .iter()
                .any(|p| import.starts_with(p)),
            "unexpected import {import}"
        );
    }

    let functions = inspect["functions"].as_array().expect("functions");
    let function = |name: &str| {
        functions
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("no function {name} in {inspect:#}"))
    };
    for name in [
        "power",
        "power_state",
        "switch_to",
        "current_input",
        "mute",
        "mute_state",
        "errors",
        "lamp_hours",
        "info",
        "raw_command",
    ] {
        function(name);
    }

    let power = function("power");
    assert_eq!(power["level"], "user");
    assert_eq!(power["params"]["properties"]["state"]["type"], "boolean");
    assert_eq!(power["params"]["required"], json!(["state"]));
    assert_eq!(
        power["returns"]["enum"],
        json!(["off", "on", "cooling", "warming"])
    );

    let mute = function("mute");
    assert_eq!(mute["params"]["required"], json!(["state"]));
    assert_eq!(
        mute["params"]["properties"]["kind"]["anyOf"][0]["enum"],
        json!(["video", "audio", "both"])
    );
    assert_eq!(mute["returns"]["required"], json!(["video", "audio"]));

    let errors = function("errors");
    assert_eq!(
        errors["returns"]["properties"]["filter"]["enum"],
        json!(["ok", "warning", "error"])
    );
    assert_eq!(function("lamp_hours")["returns"]["type"], "array");
    assert_eq!(
        function("info")["returns"]["properties"]["inputs"]["type"],
        "array"
    );
    assert_eq!(
        function("switch_to")["params"]["properties"]["input"]["type"],
        "string"
    );
    assert_eq!(function("raw_command")["level"], "support");

    let settings = &inspect["settings_schema"]["properties"];
    for key in ["password", "poll_every_ms", "request_timeout_ms"] {
        assert!(settings[key].is_object(), "no setting {key}: {inspect:#}");
    }
}
