//! Tests of the bacnet_ip driver, run through the `warden` CLI against a BACnet/IP device
//! served by bacpypes3's own stack (configured by tests/sims/bacnet_device.py, whose
//! docstring lists the objects and initial values asserted here). Each test starts its
//! own device on a fresh UDP port of 127.0.0.1, so writes in one test never show up in
//! another.

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use warden::runtime::{ExecOptions, ModuleConfig};
use warden_tests::guests::BACNET_IP;
use warden_tests::{CliRun, Simulator, python, repo_root, warden};

use crate::support;

/// A UDP port on 127.0.0.1 that was free a moment ago.
fn free_udp_port() -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    socket.local_addr().expect("local addr").port()
}

/// A BACnet Who-Is as one BACnet/IP datagram (BVLL Original-Unicast-NPDU), written here
/// from the standard rather than taken from the driver.
const WHO_IS: [u8; 8] = [0x81, 0x0A, 0x00, 0x08, 0x01, 0x00, 0x10, 0x08];

/// The bacpypes3 device on a fresh port, once it answers a Who-Is.
fn device() -> Simulator {
    let port = free_udp_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut command = Command::new(python());
    command
        .arg(repo_root().join("tests/sims/bacnet_device.py"))
        .arg("--port")
        .arg(port.to_string());
    let simulator = Simulator::spawn(command, addr);
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    probe.connect(addr).unwrap();
    probe
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buffer = [0_u8; 1500];
    loop {
        // Until the device's socket is bound, the kernel answers with "port unreachable",
        // which shows up as an error of this send or receive: try again.
        let _ = probe.send(&WHO_IS);
        if let Ok(length) = probe.recv(&mut buffer)
            && buffer.get(..2) == Some(&[0x81, 0x0A][..])
            && length > 8
        {
            return simulator;
        }
        assert!(
            Instant::now() < deadline,
            "the BACnet device on {addr} did not answer a Who-Is"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Run `function` with `args` on a module whose endpoint is `endpoint`.
fn exec(endpoint: SocketAddr, settings: Option<&str>, function: &str, args: Value) -> CliRun {
    let endpoint = endpoint.to_string();
    let args = args.to_string();
    let mut argv = vec!["driver", "run", BACNET_IP, "--endpoint", &endpoint];
    if let Some(settings) = settings {
        argv.extend(["--settings", settings]);
    }
    argv.extend(["--exec", function, "--args", &args]);
    warden(&argv)
}

/// A run that must fail with `kind` (`device`, `timeout`, `invalid-arguments`) and
/// `message` on stderr, and nothing on stdout.
fn assert_failed(run: &CliRun, kind: &str, message: &str) {
    assert_eq!(run.code, Some(1), "expected exit code 1: {run:#?}");
    assert!(
        run.stdout.trim().is_empty(),
        "a failed run printed a result: {run:#?}"
    );
    assert!(
        run.stderr.contains(&format!("failed: {kind}: ")),
        "not a {kind} error: {run:#?}"
    );
    assert!(
        run.stderr.contains(message),
        "stderr lacks {message:?}: {run:#?}"
    );
}

/// A UDP peer that counts the datagrams it receives and never answers.
struct SilentPeer {
    addr: SocketAddr,
    received: Arc<AtomicUsize>,
}

impl SilentPeer {
    fn start() -> SilentPeer {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let received = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&received);
        // The thread ends with the test binary; it holds nothing but the socket.
        std::thread::spawn(move || {
            let mut buffer = [0_u8; 1500];
            while socket.recv(&mut buffer).is_ok() {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        });
        SilentPeer { addr, received }
    }

    fn datagrams(&self) -> usize {
        std::thread::sleep(Duration::from_millis(100));
        self.received.load(Ordering::SeqCst)
    }
}

#[test]
fn who_is_finds_the_device_and_publishes_its_instance() {
    let device = device();
    let run = exec(device.addr, None, "who_is", json!([]));
    assert_eq!(
        run.json(),
        json!([{
            "device_instance": 599,
            "max_apdu": 1024,
            "segmentation": "segmented-both",
            "vendor_id": 999,
        }])
    );
    assert!(
        run.stderr.contains("status device_instance = 599"),
        "{run:#?}"
    );
    assert!(run.stderr.contains("status vendor_id = 999"), "{run:#?}");

    // A range that holds the device, and one that does not: the device stays silent,
    // and after the retries that is a timeout.
    let run = exec(
        device.addr,
        None,
        "who_is",
        json!({"low": 500, "high": 599}),
    );
    assert_eq!(run.json()[0]["device_instance"], 599);
    let run = exec(
        device.addr,
        Some(r#"{"apdu_timeout_ms": 300, "retries": 1}"#),
        "who_is",
        json!([1, 10]),
    );
    assert_failed(
        &run,
        "timeout",
        "who-is: no answer from the device after 2 attempts of 300 ms",
    );
    let run = exec(device.addr, None, "who_is", json!([10]));
    assert_failed(&run, "invalid-arguments", "give both low and high");
}

#[test]
fn reads_of_each_object_kind_return_the_initial_values() {
    let device = device();
    let read = |object_type: &str, instance: u32, property: Value| {
        exec(
            device.addr,
            None,
            "read_property",
            json!([object_type, instance, property]),
        )
        .json()
    };
    // analog-value,1: commandable setpoint.
    assert_eq!(read("analog-value", 1, json!("present-value")), json!(21.5));
    assert_eq!(
        read("analog-value", 1, json!("object-name")),
        json!("zone-setpoint")
    );
    assert_eq!(
        read("analog-value", 1, json!("description")),
        json!("Zone temperature setpoint")
    );
    assert_eq!(
        read("analog-value", 1, json!("units")),
        json!("degrees-celsius")
    );
    assert_eq!(
        read("analog-value", 1, json!("relinquish-default")),
        json!(21.5)
    );
    // Property by number: 85 is present-value.
    assert_eq!(read("analog-value", 1, json!(85)), json!(21.5));
    let priorities = read("analog-value", 1, json!("priority-array"));
    assert_eq!(
        priorities.as_array().map(Vec::len),
        Some(16),
        "{priorities}"
    );

    // analog-input,1.
    assert_eq!(
        read("analog-input", 1, json!("present-value")),
        json!(22.25)
    );
    assert_eq!(
        read("analog-input", 1, json!("object-name")),
        json!("zone-temperature")
    );
    assert_eq!(
        read("analog-input", 1, json!("out-of-service")),
        json!(false)
    );
    assert_eq!(
        read("analog-input", 1, json!("status-flags")),
        json!([false, false, false, false])
    );
    assert_eq!(
        read("analog-input", 1, json!("event-state")),
        json!("normal")
    );

    // binary-value,1.
    assert_eq!(
        read("binary-value", 1, json!("present-value")),
        json!("active")
    );
    assert_eq!(
        read("binary-value", 1, json!("object-name")),
        json!("fan-enable")
    );

    // multi-state-value,1 and its state texts, whole and by index.
    assert_eq!(
        read("multi-state-value", 1, json!("present-value")),
        json!(2)
    );
    assert_eq!(
        read("multi-state-value", 1, json!("number-of-states")),
        json!(3)
    );
    assert_eq!(
        read("multi-state-value", 1, json!("state-text")),
        json!(["occupied", "unoccupied", "standby"])
    );
    let element = |index: u32| {
        exec(
            device.addr,
            None,
            "read_property",
            json!({"object_type": "multi-state-value", "instance": 1,
                   "property": "state-text", "array_index": index}),
        )
        .json()
    };
    assert_eq!(element(2), json!("unoccupied"));
    assert_eq!(element(0), json!(3));

    // device,599.
    assert_eq!(
        read("device", 599, json!("object-name")),
        json!("warden-test-device")
    );
    assert_eq!(read("device", 599, json!("vendor-identifier")), json!(999));
    assert_eq!(
        read("device", 599, json!("object-identifier")),
        json!({"object_type": "device", "instance": 599})
    );
    let objects = read("device", 599, json!("object-list"));
    for object in [
        json!({"object_type": "device", "instance": 599}),
        json!({"object_type": "analog-value", "instance": 1}),
        json!({"object_type": "analog-input", "instance": 1}),
        json!({"object_type": "binary-value", "instance": 1}),
        json!({"object_type": "multi-state-value", "instance": 1}),
    ] {
        assert!(
            objects
                .as_array()
                .is_some_and(|list| list.contains(&object)),
            "{object} not in {objects}"
        );
    }
}

#[test]
fn writes_are_read_back() {
    let device = device();
    let run = |function: &str, args: Value| exec(device.addr, None, function, args).json();
    let read = |object_type: &str, instance: u32, property: &str| {
        run("read_property", json!([object_type, instance, property]))
    };

    // Command the setpoint at priority 8, then relinquish it: back to the default.
    assert_eq!(
        run(
            "write_property",
            json!(["analog-value", 1, "present-value", 23.5, 8])
        ),
        Value::Null
    );
    assert_eq!(read("analog-value", 1, "present-value"), json!(23.5));
    let priorities = read("analog-value", 1, "priority-array");
    assert_eq!(priorities[7], json!(23.5), "{priorities}");
    assert_eq!(
        run(
            "write_property",
            json!({"object_type": "analog-value", "instance": 1,
                   "property": "present-value", "value": null, "priority": 8})
        ),
        Value::Null
    );
    assert_eq!(read("analog-value", 1, "present-value"), json!(21.5));

    // Binary, multi-state, text and enumerated properties.
    run(
        "write_property",
        json!(["binary-value", 1, "present-value", "inactive"]),
    );
    assert_eq!(read("binary-value", 1, "present-value"), json!("inactive"));
    run(
        "write_property",
        json!(["binary-value", 1, "present-value", true]),
    );
    assert_eq!(read("binary-value", 1, "present-value"), json!("active"));
    run(
        "write_property",
        json!(["multi-state-value", 1, "present-value", 3]),
    );
    assert_eq!(read("multi-state-value", 1, "present-value"), json!(3));
    run(
        "write_property",
        json!(["analog-value", 1, "description", "Lobby setpoint"]),
    );
    assert_eq!(
        read("analog-value", 1, "description"),
        json!("Lobby setpoint")
    );
    run(
        "write_property",
        json!(["analog-value", 1, "units", "degrees-fahrenheit"]),
    );
    assert_eq!(
        read("analog-value", 1, "units"),
        json!("degrees-fahrenheit")
    );
    // The analog input's present value is writable once it is out of service.
    run(
        "write_property",
        json!(["analog-input", 1, "out-of-service", true]),
    );
    run(
        "write_property",
        json!(["analog-input", 1, "present-value", 30]),
    );
    assert_eq!(read("analog-input", 1, "present-value"), json!(30.0));
}

#[test]
fn refusals_are_device_errors_that_name_the_error() {
    let device = device();
    let run = |function: &str, args: Value| exec(device.addr, None, function, args);

    // Read-only: the analog input in service, and a commandable object's priority array.
    assert_failed(
        &run(
            "write_property",
            json!(["analog-input", 1, "present-value", 30]),
        ),
        "device",
        "write analog-input 1 present-value: property: write-access-denied",
    );
    assert_failed(
        &run(
            "write_property",
            json!(["analog-value", 1, "priority-array", null, null, 1]),
        ),
        "device",
        "property: write-access-denied",
    );
    // The wrong type, sent as asked: bacpypes3 rejects it.
    assert_failed(
        &run(
            "write_property",
            json!(["analog-value", 1, "present-value",
                   {"type": "character-string", "value": "hot"}]),
        ),
        "device",
        "write analog-value 1 present-value: rejected: invalid-tag",
    );
    // No such object or property.
    assert_failed(
        &run(
            "read_property",
            json!(["analog-value", 99, "present-value"]),
        ),
        "device",
        "read analog-value 99 present-value: object: unknown-object",
    );
    assert_failed(
        &run(
            "write_property",
            json!(["analog-value", 99, "present-value", 1]),
        ),
        "device",
        "object: unknown-object",
    );
    assert_failed(
        &run(
            "read_property",
            json!(["analog-value", 1, "number-of-states"]),
        ),
        "device",
        "read analog-value 1 number-of-states: property: unknown-property",
    );

    // The driver's own refusals, before anything is sent.
    assert_failed(
        &run(
            "write_property",
            json!(["analog-value", 1, "present-value", "hot"]),
        ),
        "invalid-arguments",
        "write analog-value 1 present-value: expected a number, got \"hot\"",
    );
    assert_failed(
        &run("read_property", json!(["analog", 1, "present-value"])),
        "invalid-arguments",
        "unknown object type \"analog\"",
    );
    assert_failed(
        &run("read_property", json!(["analog-value", 1, "presentValue"])),
        "invalid-arguments",
        "unknown property \"presentValue\"",
    );
    assert_failed(
        &run(
            "write_property",
            json!(["analog-value", 1, "present-value", 20, 17]),
        ),
        "invalid-arguments",
        "priority 17 is outside 1-16",
    );

    // Nothing changed.
    assert_eq!(
        run("read_property", json!(["analog-input", 1, "present-value"])).json(),
        json!(22.25)
    );
}

#[test]
fn read_property_multiple_reads_several_objects_in_one_request() {
    let device = device();
    let run = exec(
        device.addr,
        None,
        "read_property_multiple",
        json!([[
            {"object_type": "analog-value", "instance": 1},
            {"object_type": "analog-value", "instance": 1, "property": "units"},
            {"object_type": "analog-input", "instance": 1},
            {"object_type": "binary-value", "instance": 1},
            {"object_type": "multi-state-value", "instance": 1, "property": "state-text",
             "array_index": 3},
            {"object_type": "analog-value", "instance": 99},
            {"object_type": "device", "instance": 599, "property": "object-name"},
        ]]),
    );
    assert_eq!(
        run.json(),
        json!([
            {"object_type": "analog-value", "instance": 1, "property": "present-value",
             "value": 21.5},
            {"object_type": "analog-value", "instance": 1, "property": "units",
             "value": "degrees-celsius"},
            {"object_type": "analog-input", "instance": 1, "property": "present-value",
             "value": 22.25},
            {"object_type": "binary-value", "instance": 1, "property": "present-value",
             "value": "active"},
            {"object_type": "multi-state-value", "instance": 1, "property": "state-text",
             "array_index": 3, "value": "standby"},
            {"object_type": "analog-value", "instance": 99, "property": "present-value",
             "value": null, "error": "object: unknown-object"},
            {"object_type": "device", "instance": 599, "property": "object-name",
             "value": "warden-test-device"},
        ])
    );

    // Split into requests of two reads each, the answers are the same.
    let run = exec(
        device.addr,
        Some(r#"{"points_per_request": 2}"#),
        "read_property_multiple",
        json!({"reads": [
            {"object_type": "analog-value", "instance": 1},
            {"object_type": "analog-input", "instance": 1},
            {"object_type": "multi-state-value", "instance": 1},
        ]}),
    );
    let values: Vec<Value> = run
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|result| result["value"].clone())
        .collect();
    assert_eq!(values, [json!(21.5), json!(22.25), json!(2)]);

    let run = exec(device.addr, None, "read_property_multiple", json!([[]]));
    assert_failed(&run, "invalid-arguments", "give at least one read");
}

#[test]
fn a_device_that_does_not_answer_times_out_after_the_retries() {
    let peer = SilentPeer::start();
    let run = exec(
        peer.addr,
        Some(r#"{"apdu_timeout_ms": 300, "retries": 2}"#),
        "read_property",
        json!(["analog-value", 1, "present-value"]),
    );
    assert_failed(
        &run,
        "timeout",
        "read analog-value 1 present-value: no answer from the device after 3 attempts of 300 ms",
    );
    assert_eq!(peer.datagrams(), 3, "one request and two retries");

    // A port where nothing listens at all.
    let closed = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let run = exec(
        closed,
        Some(r#"{"apdu_timeout_ms": 300, "retries": 0}"#),
        "who_is",
        json!([]),
    );
    assert_failed(&run, "timeout", "who-is: no answer from the device");
}

#[test]
fn the_readme_settings_poll_into_status() {
    let readme = std::fs::read_to_string(repo_root().join("drivers/bacnet_ip/README.md")).unwrap();
    let settings = readme
        .split("```json")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the README has a ```json settings block");
    let device = device();
    let run = exec(device.addr, Some(settings), "poll_now", json!([]));
    assert_eq!(
        run.json(),
        json!({
            "values": {
                "zone_temperature": 22.25,
                "zone_setpoint": 21.5,
                "fan_enable": "active",
                "occupancy_mode": 2,
                "occupancy_modes": ["occupied", "unoccupied", "standby"],
            },
            "errors": {},
        })
    );
    for line in [
        "status zone_temperature = 22.25",
        "status fan_enable = \"active\"",
        "status occupancy_mode = 2",
    ] {
        assert!(run.stderr.contains(line), "no `{line}`: {run:#?}");
    }

    // A point the device does not have is reported by name; the others are read.
    let settings = r#"{"points": [
        {"name": "setpoint", "object_type": "analog-value", "instance": 1},
        {"name": "missing", "object_type": "analog-value", "instance": 42}
    ]}"#;
    let run = exec(device.addr, Some(settings), "poll_now", json!([]));
    assert_eq!(
        run.json(),
        json!({
            "values": {"setpoint": 21.5},
            "errors": {"missing": "object: unknown-object"},
        })
    );

    // Settings with an unusable point are refused as a whole.
    let refused =
        r#"{"points": [{"name": "connected", "object_type": "analog-value", "instance": 1}]}"#;
    let run = exec(device.addr, Some(refused), "poll_now", json!([]));
    assert_eq!(run.code, Some(2), "{run:#?}");
    assert!(
        run.stderr
            .contains("`connected` is a status key of the driver's own"),
        "{run:#?}"
    );
    let refused = r#"{"network": 5}"#;
    let run = exec(device.addr, Some(refused), "who_is", json!([]));
    assert_eq!(run.code, Some(2), "{run:#?}");
    assert!(
        run.stderr.contains("network and mac go together"),
        "{run:#?}"
    );
}

/// Polling on the timer, through the runtime itself: a module keeps publishing its
/// points, and a write shows up in status at the next poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn points_are_polled_into_status_on_the_timer() {
    let device = device();
    let runtime = support::runtime();
    let driver = support::load(&runtime, BACNET_IP);
    let mut config = ModuleConfig::new("bacnet", driver);
    config.endpoint = Some(device.addr.to_string().parse().unwrap());
    config.settings = json!({
        "poll_every_ms": 200,
        "points": [
            {"name": "setpoint", "object_type": "analog-value", "instance": 1},
            {"name": "fan", "object_type": "binary-value", "instance": 1},
        ],
    });
    let module = support::start(&runtime, config).await;
    support::wait_status(&module, "setpoint", &json!(21.5)).await;
    support::wait_status(&module, "fan", &json!("active")).await;

    let written = module
        .exec(
            "write_property",
            json!(["analog-value", 1, "present-value", 19.5, 10]),
            ExecOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(written, Value::Null);
    support::wait_status(&module, "setpoint", &json!(19.5)).await;

    let devices = module
        .exec("who_is", json!([]), ExecOptions::default())
        .await
        .unwrap();
    assert_eq!(devices[0]["device_instance"], 599);
    support::wait_status(&module, "device_instance", &json!(599)).await;
    runtime.shutdown().await;
}

#[test]
fn inspect_shows_udp_and_the_functions() {
    let inspected = warden(&["driver", "inspect", BACNET_IP, "--json"]).json();
    assert_eq!(inspected["name"], "BACnet/IP");
    assert_eq!(inspected["generic_name"], "BACnet");
    assert_eq!(inspected["transport"], "udp");
    assert_eq!(inspected["default_port"], 47808);
    assert_eq!(inspected["refused_imports"], json!([]));
    let levels: Vec<(&str, &str)> = inspected["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["name"].as_str().unwrap(), f["level"].as_str().unwrap()))
        .collect();
    assert_eq!(
        levels,
        [
            ("who_is", "user"),
            ("read_property", "user"),
            ("write_property", "support"),
            ("read_property_multiple", "user"),
            ("poll_now", "user"),
        ]
    );
    let read = inspected["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "read_property")
        .unwrap();
    assert_eq!(
        read["params"]["required"],
        json!(["object_type", "instance", "property"])
    );
    assert_eq!(
        read["params"]["properties"]["instance"]["maximum"],
        4_194_303
    );
    assert_eq!(inspected["default_settings"]["apdu_timeout_ms"], 2000);
}
