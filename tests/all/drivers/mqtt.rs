//! Tests of the mqtt driver: modules talking to each other through the real Mosquitto
//! broker on 127.0.0.1:1883 (the machine runs it; `mosquitto -d -c
//! /etc/mosquitto/mosquitto.conf` starts it), and, for what a real broker cannot be made
//! to do (refuse a connection, never acknowledge), a small fake broker in this file.
//!
//! Every topic starts with `warden-test/<pid>/<test>/`, so runs and tests never see each
//! other's (retained) messages.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use warden::runtime::{ExecError, ExecOptions, ModuleConfig, ModuleHandle, Runtime};
use warden_tests::guests::MQTT;
use warden_tests::{repo_root, warden};

use crate::support;

const BROKER: &str = "127.0.0.1:1883";

/// The topic prefix of one test in this run.
fn prefix(test: &str) -> String {
    format!("warden-test/{}/{test}", std::process::id())
}

fn require_broker() {
    let addr: SocketAddr = BROKER.parse().unwrap();
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok(),
        "no MQTT broker on {BROKER}: start it with `mosquitto -d -c /etc/mosquitto/mosquitto.conf`"
    );
}

/// Start an mqtt module on `endpoint`.
async fn start(runtime: &Runtime, id: &str, endpoint: &str, settings: Value) -> ModuleHandle {
    let mut config = ModuleConfig::new(id, support::load(runtime, MQTT));
    config.endpoint = Some(endpoint.parse().unwrap());
    config.settings = settings;
    support::start(runtime, config).await
}

/// Start an mqtt module on the real broker and wait until the broker accepted it and its
/// subscriptions.
async fn client(runtime: &Runtime, id: &str, settings: Value) -> ModuleHandle {
    require_broker();
    let module = start(runtime, id, BROKER, settings).await;
    support::wait_status(&module, "broker_connected", &json!(true)).await;
    module
}

async fn call(module: &ModuleHandle, function: &str, args: Value) -> Result<Value, ExecError> {
    module.exec(function, args, ExecOptions::default()).await
}

fn driver_error(outcome: Result<Value, ExecError>) -> (&'static str, String) {
    match outcome {
        Err(ExecError::Driver(error)) => (error.kind, error.message),
        other => panic!("expected a driver error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_message_reaches_a_subscribed_module() {
    let topics = prefix("relay");
    let runtime = support::runtime();
    let subscriber = client(
        &runtime,
        "subscriber",
        json!({"subscriptions": [{"filter": format!("{topics}/#"), "qos": 1}]}),
    )
    .await;
    let publisher = client(&runtime, "publisher", json!({})).await;

    let temperature = format!("{topics}/room1/temperature");
    let published = call(
        &publisher,
        "publish",
        json!([temperature, {"celsius": 21.5, "ok": true}]),
    )
    .await
    .unwrap();
    assert_eq!(published, Value::Null);
    support::wait_status(
        &subscriber,
        &temperature,
        &json!({"celsius": 21.5, "ok": true}),
    )
    .await;

    // Text that is not JSON arrives as a string; QoS 1 both ways (the subscriber acks).
    let mode = format!("{topics}/room1/mode");
    call(
        &publisher,
        "publish",
        json!({"topic": mode, "payload": "eco mode", "qos": 1}),
    )
    .await
    .unwrap();
    support::wait_status(&subscriber, &mode, &json!("eco mode")).await;
    assert_eq!(
        call(&subscriber, "last", json!([mode])).await.unwrap(),
        json!("eco mode")
    );
    assert_eq!(
        call(&subscriber, "last", json!([format!("{topics}/never")]))
            .await
            .unwrap(),
        Value::Null
    );
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_1_publish_returns_once_the_broker_acknowledged_it() {
    let runtime = support::runtime();
    let publisher = client(&runtime, "publisher", json!({})).await;
    let topic = format!("{}/acked", prefix("qos1"));
    for n in 0..3 {
        let done = call(&publisher, "publish", json!([topic, n, 1])).await;
        assert_eq!(done.unwrap(), Value::Null);
    }
    // QoS 2 is refused with the arguments, before the driver runs.
    let (kind, message) = driver_error(call(&publisher, "publish", json!([topic, 1, 2])).await);
    assert_eq!(kind, "invalid-arguments");
    assert!(message.contains("QoS 2 is not supported"), "{message}");
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retained_message_reaches_a_module_started_afterwards() {
    let topics = prefix("retained");
    let topic = format!("{topics}/setpoint");
    let runtime = support::runtime();
    let publisher = client(&runtime, "publisher", json!({})).await;
    call(&publisher, "publish", json!([topic, 19.5, 1, true]))
        .await
        .unwrap();

    let late = client(
        &runtime,
        "late",
        json!({"subscriptions": [{"filter": format!("{topics}/#")}]}),
    )
    .await;
    support::wait_status(&late, &topic, &json!(19.5)).await;

    // An empty retained message deletes it on the broker, leaving nothing behind.
    call(&publisher, "publish", json!([topic, "", 1, true]))
        .await
        .unwrap();
    support::wait_status(&late, &topic, &json!("")).await;
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_and_unsubscribe_while_running() {
    let topics = prefix("dynamic");
    let (watched, sentinel) = (format!("{topics}/watched"), format!("{topics}/sentinel"));
    let runtime = support::runtime();
    let subscriber = client(&runtime, "subscriber", json!({})).await;
    let publisher = client(&runtime, "publisher", json!({})).await;

    let granted = call(&subscriber, "subscribe", json!([watched, 1])).await;
    assert_eq!(granted.unwrap(), json!(1));
    let granted = call(&subscriber, "subscribe", json!({"filter": sentinel})).await;
    assert_eq!(granted.unwrap(), json!(0));
    call(&publisher, "publish", json!([watched, "before"]))
        .await
        .unwrap();
    support::wait_status(&subscriber, &watched, &json!("before")).await;

    call(&subscriber, "unsubscribe", json!([watched]))
        .await
        .unwrap();
    call(&publisher, "publish", json!([watched, "after"]))
        .await
        .unwrap();
    call(&publisher, "publish", json!([sentinel, "done"]))
        .await
        .unwrap();
    // The broker keeps one publisher's order: once the sentinel is in, "after" was not sent.
    support::wait_status(&subscriber, &sentinel, &json!("done")).await;
    assert_eq!(subscriber.status(&watched), Some(json!("before")));

    let (kind, _) = driver_error(call(&subscriber, "subscribe", json!(["a/#/b"])).await);
    assert_eq!(kind, "invalid-arguments");
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_settings_start_a_new_session_with_their_subscriptions() {
    let topics = prefix("resettle");
    let (first, second) = (format!("{topics}/first"), format!("{topics}/second"));
    let runtime = support::runtime();
    let subscriber = client(
        &runtime,
        "subscriber",
        json!({"subscriptions": [{"filter": first}]}),
    )
    .await;
    let publisher = client(&runtime, "publisher", json!({})).await;
    call(&publisher, "publish", json!([first, 1]))
        .await
        .unwrap();
    support::wait_status(&subscriber, &first, &json!(1)).await;

    let mut changes = subscriber.subscribe();
    subscriber
        .update_settings(json!({"subscriptions": [{"filter": second}]}))
        .await
        .unwrap();
    // The old session ends and a new one starts (the status flips too fast to poll).
    let mut sessions = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        while sessions != [json!(false), json!(true)] {
            let change = changes.recv().await.unwrap();
            if change.module == "subscriber" && change.key == "broker_connected" {
                sessions.push(change.value);
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no new session: {sessions:?}"));
    call(&publisher, "publish", json!([first, 2]))
        .await
        .unwrap();
    call(&publisher, "publish", json!([second, 2]))
        .await
        .unwrap();
    support::wait_status(&subscriber, &second, &json!(2)).await;
    assert_eq!(
        subscriber.status(&first),
        Some(json!(1)),
        "no longer subscribed"
    );
    runtime.shutdown().await;
}

/// A fake broker: accepts connections, answers CONNECT with `connack` and then never
/// answers anything, counting the bytes it receives after CONNECT.
struct FakeBroker {
    addr: SocketAddr,
    after_connect: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
}

impl FakeBroker {
    fn start(connack: [u8; 4]) -> FakeBroker {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let after_connect = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&after_connect);
        let accepted = Arc::clone(&connections);
        // The threads end with the test binary; they hold nothing but sockets.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                accepted.fetch_add(1, Ordering::SeqCst);
                let counter = Arc::clone(&counter);
                std::thread::spawn(move || {
                    // CONNECT: the fixed header, a one-byte remaining length (enough for
                    // the driver's own CONNECT), the rest.
                    let mut header = [0u8; 2];
                    if stream.read_exact(&mut header).is_err() || header[0] != 0x10 {
                        return;
                    }
                    let mut rest = vec![0u8; usize::from(header[1])];
                    if stream.read_exact(&mut rest).is_err() || stream.write_all(&connack).is_err()
                    {
                        return;
                    }
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
        FakeBroker {
            addr,
            after_connect,
            connections,
        }
    }

    fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    fn bytes_after_connect(&self) -> usize {
        std::thread::sleep(Duration::from_millis(200));
        self.after_connect.load(Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_topics_are_refused_before_anything_is_sent() {
    let broker = FakeBroker::start([0x20, 2, 0, 0]);
    let runtime = support::runtime();
    let module = start(
        &runtime,
        "mqtt",
        &broker.endpoint(),
        json!({"keep_alive_s": 0}),
    )
    .await;
    support::wait_status(&module, "broker_connected", &json!(true)).await;

    for topic in ["warden-test/+/x", "warden-test/#", "", "nul\0here"] {
        let (kind, message) = driver_error(call(&module, "publish", json!([topic, 1])).await);
        assert_eq!(kind, "invalid-arguments", "{topic:?}: {message}");
        assert!(message.starts_with("cannot publish to"), "{message}");
    }
    let long = "x".repeat(65_536);
    let (kind, _) = driver_error(call(&module, "publish", json!([long, 1])).await);
    assert_eq!(kind, "invalid-arguments");
    assert_eq!(
        broker.bytes_after_connect(),
        0,
        "nothing reached the broker"
    );

    // A good topic does reach it, so the count above means something.
    call(&module, "publish", json!(["ok", 1])).await.unwrap();
    assert!(broker.bytes_after_connect() > 0);
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_puback_is_a_timeout() {
    let broker = FakeBroker::start([0x20, 2, 0, 0]);
    let runtime = support::runtime();
    let settings = json!({"keep_alive_s": 0, "reply_timeout_ms": 300});
    let module = start(&runtime, "mqtt", &broker.endpoint(), settings).await;
    support::wait_status(&module, "broker_connected", &json!(true)).await;
    let (kind, message) = driver_error(call(&module, "publish", json!(["t", 1, 1])).await);
    assert_eq!(
        (kind, message.as_str()),
        ("timeout", "no PUBACK from the broker within 300 ms")
    );
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_names_the_reason() {
    // CONNACK return code 5: not authorized.
    let broker = FakeBroker::start([0x20, 2, 0, 5]);
    let runtime = support::runtime();
    let module = start(&runtime, "mqtt", &broker.endpoint(), json!({})).await;
    let (kind, message) = driver_error(call(&module, "publish", json!(["t", 1])).await);
    assert_eq!(kind, "device", "{message}");
    assert_eq!(
        message,
        "the broker refused the connection: not authorized (CONNACK return code 5)"
    );
    assert_ne!(module.status("broker_connected"), Some(json!(true)));
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_pings_hold_the_session_and_a_silent_broker_is_left() {
    // Mosquitto answers every PINGREQ: one connection, still up after three keep-alives.
    let runtime = support::runtime();
    let module = client(&runtime, "pinging", json!({"keep_alive_s": 1})).await;
    let mut changes = module.subscribe();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(module.status("broker_connected"), Some(json!(true)));
    assert!(
        changes.try_recv().is_err(),
        "no status changed (no reconnect) while pinging"
    );

    // A broker that never answers PINGREQ is disconnected from, and connected to again.
    let broker = FakeBroker::start([0x20, 2, 0, 0]);
    let module = start(
        &runtime,
        "silent",
        &broker.endpoint(),
        json!({"keep_alive_s": 1}),
    )
    .await;
    support::wait_status(&module, "broker_connected", &json!(true)).await;
    tokio::time::timeout(Duration::from_secs(15), async {
        while broker.connections.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the driver reconnects after a missing PINGRESP");
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_settings_example_is_accepted() {
    let readme = std::fs::read_to_string(repo_root().join("drivers/mqtt/README.md")).unwrap();
    let settings = readme
        .split("```json")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the README has a ```json settings block");
    let settings: Value = serde_json::from_str(settings).unwrap();
    let runtime = support::runtime();
    let module = client(&runtime, "readme", settings).await;
    assert!(module.init_error().is_none(), "{:?}", module.init_error());

    // And settings that are refused leave the module on its defaults, connected.
    let refused = client(&runtime, "refused", json!({"clean_session": false})).await;
    let error = refused
        .init_error()
        .expect("clean_session false without client_id");
    assert_eq!(error.kind, "invalid-arguments");
    assert!(error.message.contains("needs a client_id"), "{error:?}");
    runtime.shutdown().await;
}

#[test]
fn inspect_lists_the_functions() {
    let inspected = warden(&["driver", "inspect", MQTT, "--json"]).json();
    assert_eq!(inspected["name"], "MQTT");
    assert_eq!(inspected["generic_name"], "MQTT");
    assert_eq!(inspected["default_port"], 1883);
    assert_eq!(inspected["refused_imports"], json!([]));
    let functions: Vec<(&str, &str)> = inspected["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["name"].as_str().unwrap(), f["level"].as_str().unwrap()))
        .collect();
    assert_eq!(
        functions,
        [
            ("publish", "user"),
            ("subscribe", "user"),
            ("unsubscribe", "user"),
            ("last", "user")
        ]
    );
    assert_eq!(inspected["default_settings"]["keep_alive_s"], 60);
    assert_eq!(inspected["default_settings"]["clean_session"], true);
}
