//! Tests of the modbus_tcp driver, run through the `warden` CLI against pymodbus's own
//! Modbus TCP server (configured by tests/sims/modbus_server.py, whose docstring lists
//! the initial values asserted here). Each test starts its own simulator, so writes in
//! one test never show up in another.

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use warden_tests::guests::MODBUS_TCP;
use warden_tests::{CliRun, Simulator, free_port, python, repo_root, warden};

/// The Modbus TCP simulator on a fresh port of 127.0.0.1.
fn simulator() -> Simulator {
    let port = free_port();
    let mut command = Command::new(python());
    command
        .arg(repo_root().join("tests/sims/modbus_server.py"))
        .arg("--port")
        .arg(port.to_string());
    Simulator::start_tcp(command, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Run `function` with `args` on a module whose endpoint is `endpoint`.
fn exec(endpoint: SocketAddr, settings: Option<&str>, function: &str, args: Value) -> CliRun {
    let endpoint = endpoint.to_string();
    let args = args.to_string();
    let mut argv = vec!["driver", "run", MODBUS_TCP, "--endpoint", &endpoint];
    if let Some(settings) = settings {
        argv.extend(["--settings", settings]);
    }
    argv.extend(["--exec", function, "--args", &args]);
    warden(&argv)
}

/// A run that must fail: a non-zero exit with a message on stderr and nothing on stdout.
fn assert_failed(run: &CliRun) {
    assert!(
        run.code.is_some_and(|code| code != 0),
        "expected a non-zero exit: {run:#?}"
    );
    assert!(
        run.stdout.trim().is_empty(),
        "a failed run printed a result: {run:#?}"
    );
}

/// A TCP peer that accepts connections, counts the bytes it receives and never answers.
struct SilentPeer {
    addr: SocketAddr,
    received: Arc<AtomicUsize>,
}

impl SilentPeer {
    fn start() -> std::io::Result<SilentPeer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let received = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&received);
        // The thread ends with the test binary; it holds nothing but the listener.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let counter = Arc::clone(&counter);
                std::thread::spawn(move || {
                    let mut buffer = [0u8; 512];
                    while let Ok(read) = stream.read(&mut buffer) {
                        if read == 0 {
                            break;
                        }
                        counter.fetch_add(read, Ordering::SeqCst);
                    }
                });
            }
        });
        Ok(SilentPeer { addr, received })
    }

    fn bytes_received(&self) -> usize {
        // The CLI has exited, so its connection is closed; give the reader a moment.
        std::thread::sleep(Duration::from_millis(200));
        self.received.load(Ordering::SeqCst)
    }
}

#[test]
fn reads_return_the_simulators_initial_values() {
    let device = simulator();
    let read = |function: &str, address: u16, count: u16| {
        exec(device.addr, None, function, json!([address, count])).json()
    };
    assert_eq!(
        read("read_coils", 0, 16),
        json!([
            true, false, true, true, false, false, false, false, true, false, false, false, false,
            false, false, true
        ])
    );
    assert_eq!(read("read_coils", 3, 3), json!([true, false, false]));
    assert_eq!(
        read("read_discrete_inputs", 0, 16),
        json!([
            false, true, false, true, false, true, false, true, true, true, true, true, false,
            false, false, false
        ])
    );
    assert_eq!(
        read("read_holding_registers", 0, 10),
        json!([215, 450, 1000, 0, 65535, 1, 2, 3, 4, 5])
    );
    assert_eq!(
        read("read_holding_registers", 100, 4),
        json!([1111, 2222, 3333, 4444])
    );
    assert_eq!(
        read("read_input_registers", 0, 8),
        json!([100, 200, 300, 400, 500, 600, 700, 800])
    );
    // Arguments may also be named.
    let named = exec(
        device.addr,
        None,
        "read_input_registers",
        json!({"address": 6, "count": 2}),
    );
    assert_eq!(named.json(), json!([700, 800]));
}

#[test]
fn writes_are_read_back() {
    let device = simulator();
    let run = |function: &str, args: Value| exec(device.addr, None, function, args).json();

    assert_eq!(run("write_single_coil", json!([1, true])), Value::Null);
    assert_eq!(run("write_single_coil", json!([0, false])), Value::Null);
    assert_eq!(
        run("read_coils", json!([0, 4])),
        json!([false, true, true, true])
    );

    assert_eq!(run("write_single_register", json!([3, 4242])), Value::Null);
    assert_eq!(
        run("read_holding_registers", json!([2, 3])),
        json!([1000, 4242, 65535])
    );

    assert_eq!(
        run(
            "write_multiple_coils",
            json!([4, [true, true, false, true]])
        ),
        Value::Null
    );
    assert_eq!(
        run("read_coils", json!([0, 10])),
        json!([
            false, true, true, true, true, true, false, true, true, false
        ])
    );

    assert_eq!(
        run("write_multiple_registers", json!([5, [7, 8, 9]])),
        Value::Null
    );
    assert_eq!(
        run("read_holding_registers", json!([0, 10])),
        json!([215, 450, 1000, 4242, 65535, 7, 8, 9, 4, 5])
    );
    assert_eq!(
        run("write_multiple_registers", json!([101, [0, 65535]])),
        Value::Null
    );
    assert_eq!(
        run("read_holding_registers", json!([100, 4])),
        json!([1111, 0, 65535, 4444])
    );
}

#[test]
fn an_exception_response_fails_the_run_and_names_the_exception() {
    let device = simulator();
    // Holding registers 10..99 do not exist on the simulated device.
    let run = exec(device.addr, None, "read_holding_registers", json!([10, 1]));
    assert_failed(&run);
    let stderr = run.stderr.to_lowercase();
    assert!(
        stderr.contains("illegal data address") && stderr.contains("exception 2"),
        "stderr does not name the exception: {run:#?}"
    );
    assert!(
        stderr.contains("read holding registers at 10, count 1"),
        "stderr does not say what was asked: {run:#?}"
    );

    // A range that starts on a valid address and runs off the end, and a write.
    let run = exec(device.addr, None, "read_input_registers", json!([6, 3]));
    assert_failed(&run);
    assert!(
        run.stderr.to_lowercase().contains("illegal data address"),
        "{run:#?}"
    );
    let run = exec(device.addr, None, "write_single_coil", json!([16, true]));
    assert_failed(&run);
    assert!(
        run.stderr.to_lowercase().contains("illegal data address"),
        "{run:#?}"
    );

    // The failures changed nothing.
    let run = exec(device.addr, None, "read_coils", json!([0, 16]));
    assert_eq!(run.json().as_array().map(Vec::len), Some(16));
}

#[test]
fn invalid_arguments_are_refused_before_anything_is_sent() {
    let peer = SilentPeer::start().unwrap();
    let too_many_coils = vec![true; 1969];
    let refused = [
        ("read_holding_registers", json!([0, 0]), "count"),
        ("read_input_registers", json!([0, 126]), "count"),
        ("read_coils", json!([0, 2001]), "count"),
        ("read_discrete_inputs", json!([65535, 2]), "65535"),
        ("write_multiple_registers", json!([0, []]), "count"),
        ("write_multiple_coils", json!([0, too_many_coils]), "count"),
        ("read_holding_registers", json!([0]), "count"),
        ("read_holding_registers", json!([0, -1]), "count"),
    ];
    for (function, args, mentions) in refused {
        let run = exec(peer.addr, None, function, args.clone());
        assert_failed(&run);
        let stderr = run.stderr.to_lowercase();
        assert!(
            stderr.contains("invalid arguments") || stderr.contains("invalid-arguments"),
            "{function}({args}) did not fail as invalid arguments: {run:#?}"
        );
        assert!(
            stderr.contains(mentions),
            "{function}({args}): stderr does not mention `{mentions}`: {run:#?}"
        );
    }
    assert_eq!(
        peer.bytes_received(),
        0,
        "refused requests must not reach the device"
    );
}

#[test]
fn a_device_that_does_not_answer_times_out() {
    let peer = SilentPeer::start().unwrap();
    let run = exec(
        peer.addr,
        Some(r#"{"timeout_ms": 300}"#),
        "read_holding_registers",
        json!([0, 1]),
    );
    assert_failed(&run);
    assert!(
        run.stderr.to_lowercase().contains("timeout"),
        "stderr does not report a timeout: {run:#?}"
    );
    // The request did go out: 12 bytes of MBAP header and PDU.
    assert_eq!(peer.bytes_received(), 12);
}

#[test]
fn the_readme_settings_poll_into_status() {
    let readme = std::fs::read_to_string(repo_root().join("drivers/modbus_tcp/README.md")).unwrap();
    let settings = readme
        .split("```json")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the README has a ```json settings block");
    let device = simulator();
    let run = exec(device.addr, Some(settings), "poll_now", json!([]));
    assert_eq!(
        run.json(),
        json!({
            "temperature": 215,
            "setpoints": [450, 1000],
            "alarms": [false, true, false, true],
        })
    );
    // Status changes are reported on stderr.
    assert!(
        run.stderr.contains("temperature") && run.stderr.contains("setpoints"),
        "status changes are not on stderr: {run:#?}"
    );

    // Settings with an unusable range are refused as a whole: init fails with a message
    // naming the range, and the CLI (the author's test bench) exits with a usage error.
    let refused = r#"{"poll": [{"name": "x", "kind": "input", "address": 0, "count": 126, "every_ms": 1000}]}"#;
    let run = exec(device.addr, Some(refused), "poll_now", json!([]));
    assert_eq!(run.code, Some(2), "{run:#?}");
    assert!(
        run.stderr.contains("the driver refused the settings"),
        "{run:#?}"
    );
    assert!(
        run.stderr
            .contains("poll `x`: read input registers: count must be between 1 and 125, got 126"),
        "the refused range is not named: {run:#?}"
    );
}

#[test]
fn inspect_lists_the_functions() {
    let inspected = warden(&["driver", "inspect", MODBUS_TCP, "--json"]).json();
    assert_eq!(inspected["name"], "Modbus TCP");
    assert_eq!(inspected["transport"], "tcp");
    assert!(inspected["digest"].as_str().is_some_and(|d| !d.is_empty()));
    assert!(inspected["version"].is_string());

    let functions = inspected["functions"].as_array().unwrap();
    let levels: Vec<(&str, &str)> = functions
        .iter()
        .map(|f| (f["name"].as_str().unwrap(), f["level"].as_str().unwrap()))
        .collect();
    assert_eq!(
        levels,
        [
            ("read_coils", "user"),
            ("read_discrete_inputs", "user"),
            ("read_holding_registers", "user"),
            ("read_input_registers", "user"),
            ("write_single_coil", "support"),
            ("write_single_register", "support"),
            ("write_multiple_coils", "support"),
            ("write_multiple_registers", "support"),
            ("poll_now", "user"),
        ]
    );
    let function = |name: &str| {
        functions
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("no function {name}"))
    };
    let read = function("read_holding_registers");
    assert_eq!(read["params"]["required"], json!(["address", "count"]));
    assert_eq!(read["params"]["properties"]["count"]["minimum"], 1);
    assert_eq!(read["params"]["properties"]["count"]["maximum"], 125);
    assert_eq!(read["returns"]["items"]["maximum"], 65535);
    assert_eq!(
        function("read_coils")["params"]["properties"]["count"]["maximum"],
        2000
    );
    assert_eq!(
        function("write_multiple_coils")["params"]["properties"]["values"]["maxItems"],
        1968
    );

    let settings = &inspected["settings_schema"]["properties"];
    for key in ["unit_id", "timeout_ms", "poll"] {
        assert!(
            settings.get(key).is_some(),
            "settings schema lacks `{key}`: {inspected:#}"
        );
    }
    assert_eq!(
        settings["poll"]["items"]["properties"]["kind"]["enum"],
        json!(["coil", "discrete_input", "holding", "input"])
    );
}
