//! The runtime with a well-behaved driver: queue, status, timers, settings, systems,
//! connections and the component cache.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Mutex;
use warden::runtime::{CacheOutcome, ExecError, ExecOptions, ModuleConfig, ModuleHandle};
use warden::transport::ConnectionOptions;
use warden_tests::guests;

use crate::support::{self, LinePeer, PeerBehaviour};

async fn echo_module(
    runtime: &warden::runtime::Runtime,
    id: &str,
    peer: &LinePeer,
) -> ModuleHandle {
    let driver = support::load(runtime, guests::ECHO);
    let mut config = ModuleConfig::new(id, driver);
    config.endpoint = Some(peer.endpoint());
    let module = support::start(runtime, config).await;
    support::wait_status(&module, "connected", &json!(true)).await;
    module
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_load_comes_from_the_precompiled_cache() {
    let cache = std::env::temp_dir().join(format!("warden-cache-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let runtime =
        warden::runtime::Runtime::new(warden::runtime::RuntimeConfig::new(&cache)).unwrap();
    let bytes = std::fs::read(guests::ECHO).unwrap();
    let first = runtime.load_driver(&bytes).unwrap();
    assert_eq!(first.cache, CacheOutcome::Compiled);
    let second = runtime.load_driver(&bytes).unwrap();
    assert_eq!(second.cache, CacheOutcome::Hit);
    assert_eq!(first.digest(), second.digest());
    let artifacts: Vec<_> = std::fs::read_dir(&cache).unwrap().collect();
    assert_eq!(artifacts.len(), 1);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&cache).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "the cache directory is private");

    // A corrupt artifact is discarded and recompiled, not trusted.
    let artifact = artifacts.into_iter().next().unwrap().unwrap().path();
    std::fs::write(&artifact, b"garbage").unwrap();
    let third = runtime.load_driver(&bytes).unwrap();
    assert_eq!(third.cache, CacheOutcome::Compiled);
    let _ = std::fs::remove_dir_all(&cache);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_others_can_write_is_not_trusted() {
    use std::os::unix::fs::PermissionsExt;
    let cache = std::env::temp_dir().join(format!("warden-open-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let runtime =
        warden::runtime::Runtime::new(warden::runtime::RuntimeConfig::new(&cache)).unwrap();
    let bytes = std::fs::read(guests::ECHO).unwrap();
    assert_eq!(
        runtime.load_driver(&bytes).unwrap().cache,
        CacheOutcome::Compiled
    );
    assert_eq!(
        runtime.load_driver(&bytes).unwrap().cache,
        CacheOutcome::Compiled
    );
    assert_eq!(
        std::fs::read_dir(&cache).unwrap().count(),
        0,
        "nothing stored"
    );
    let _ = std::fs::remove_dir_all(&cache);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_results_and_errors_are_typed() {
    let runtime = support::runtime();
    let peer = LinePeer::start(PeerBehaviour::default()).await;
    let module = echo_module(&runtime, "typed", &peer).await;
    let opts = ExecOptions::default;
    assert_eq!(
        module
            .exec("add", json!({"a": 1, "b": 2}), opts())
            .await
            .unwrap(),
        json!(3)
    );
    assert_eq!(
        module
            .exec("echo", json!([{"x": [1, 2]}]), opts())
            .await
            .unwrap(),
        json!({"x": [1, 2]})
    );
    assert_eq!(
        module.exec("ask", json!(["ping"]), opts()).await.unwrap(),
        json!("you said ping")
    );
    match module.exec("fail", json!(["lamp failure"]), opts()).await {
        Err(ExecError::Driver(e)) => {
            assert_eq!((e.kind, e.message.as_str()), ("device", "lamp failure"));
        }
        other => panic!("{other:?}"),
    }
    match module.exec("add", json!([1]), opts()).await {
        Err(ExecError::Driver(e)) => {
            assert_eq!(e.kind, "invalid-arguments");
            assert!(e.message.contains("missing argument `b`"), "{e:?}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        module.exec("self_destruct", json!([]), opts()).await,
        Err(ExecError::UnknownFunction(_))
    ));
    assert!(matches!(
        module.exec("add", json!("1, 2"), opts()).await,
        Err(ExecError::InvalidArguments(_))
    ));
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_orders_by_priority_and_replaces_named_twins() {
    let runtime = support::runtime();
    let peer = LinePeer::start(PeerBehaviour {
        delay: Duration::from_millis(300),
        close_after_reply: false,
        ..PeerBehaviour::default()
    })
    .await;
    let module = echo_module(&runtime, "queue", &peer).await;
    let finished = Arc::new(Mutex::new(Vec::new()));
    let run = |line: &str, options: ExecOptions| {
        let module = module.clone();
        let finished = finished.clone();
        let line = line.to_string();
        tokio::spawn(async move {
            let result = module.exec("ask", json!([line.clone()]), options).await;
            finished.lock().await.push(line.clone());
            result
        })
    };
    // The first call occupies the module (the peer takes 300 ms to answer)…
    let blocker = run("first", ExecOptions::default());
    tokio::time::sleep(Duration::from_millis(100)).await;
    // …while these queue up behind it.
    let low = run(
        "low",
        ExecOptions {
            priority: 10,
            ..ExecOptions::default()
        },
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let high = run(
        "high",
        ExecOptions {
            priority: 90,
            ..ExecOptions::default()
        },
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let volume_a = run(
        "volume 10",
        ExecOptions {
            name: Some("volume".into()),
            ..ExecOptions::default()
        },
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let volume_b = run(
        "volume 20",
        ExecOptions {
            name: Some("volume".into()),
            ..ExecOptions::default()
        },
    );
    assert_eq!(module.queued(), 3, "low, high and one volume command wait");

    assert_eq!(blocker.await.unwrap().unwrap(), json!("you said first"));
    assert_eq!(high.await.unwrap().unwrap(), json!("you said high"));
    assert_eq!(
        volume_a.await.unwrap(),
        Err(ExecError::Replaced("volume".into()))
    );
    assert_eq!(
        volume_b.await.unwrap().unwrap(),
        json!("you said volume 20")
    );
    assert_eq!(low.await.unwrap().unwrap(), json!("you said low"));
    let order = finished.lock().await.clone();
    assert_eq!(order, ["volume 10", "first", "high", "volume 20", "low"]);
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_commands_time_out_and_retries_happen() {
    let runtime = support::runtime();
    let peer = LinePeer::start(PeerBehaviour {
        delay: Duration::from_millis(400),
        close_after_reply: false,
        ..PeerBehaviour::default()
    })
    .await;
    let module = echo_module(&runtime, "timeouts", &peer).await;
    let busy = {
        let module = module.clone();
        tokio::spawn(async move {
            module
                .exec("ask", json!(["slow"]), ExecOptions::default())
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Waiting 100 ms in the queue behind a 400 ms call: a timeout, never run.
    let waited = module
        .exec(
            "add",
            json!([1, 1]),
            ExecOptions {
                timeout: Some(Duration::from_millis(100)),
                ..ExecOptions::default()
            },
        )
        .await;
    assert!(matches!(waited, Err(ExecError::Timeout(_))), "{waited:?}");
    assert_eq!(busy.await.unwrap().unwrap(), json!("you said slow"));

    // The driver's own 50 ms wait for a 400 ms device times out each attempt; with two
    // retries the command is attempted three times (three lines reach the peer).
    let before = std::time::Instant::now();
    let retried = module
        .exec(
            "ask",
            json!(["again", 50]),
            ExecOptions {
                retries: 2,
                ..ExecOptions::default()
            },
        )
        .await;
    match retried {
        Err(ExecError::Driver(e)) => assert_eq!(e.kind, "timeout"),
        other => panic!("{other:?}"),
    }
    assert!(before.elapsed() >= Duration::from_millis(150));
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_changed_status_fans_out() {
    let runtime = support::runtime();
    let peer = LinePeer::start(PeerBehaviour::default()).await;
    let module = echo_module(&runtime, "fanout", &peer).await;
    let mut changes = module.subscribe();
    for value in [
        json!(1),
        json!(1),
        json!(2),
        json!(2),
        json!({"a": 1}),
        json!({"a": 1}),
    ] {
        module
            .exec("publish", json!(["level", value]), ExecOptions::default())
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    while let Ok(change) = changes.try_recv() {
        if change.key == "level" {
            seen.push(change.value);
        }
    }
    assert_eq!(seen, vec![json!(1), json!(2), json!({"a": 1})]);
    assert_eq!(module.status("level"), Some(json!({"a": 1})));
    // A driver cannot forge the host-maintained `connected` key.
    let forged = module
        .exec(
            "publish",
            json!(["connected", false]),
            ExecOptions::default(),
        )
        .await;
    assert!(
        matches!(forged, Err(ExecError::Driver(ref e)) if e.kind == "invalid-arguments"),
        "{forged:?}"
    );
    assert_eq!(module.status("connected"), Some(json!(true)));
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_fire_and_stop_with_the_module() {
    let runtime = support::runtime();
    let peer = LinePeer::start(PeerBehaviour::default()).await;
    let module = echo_module(&runtime, "timers", &peer).await;
    module
        .exec("tick_every", json!([20]), ExecOptions::default())
        .await
        .unwrap();
    support::wait_status(&module, "ticks", &json!(3)).await;
    assert_eq!(module.status("last_timer"), Some(json!("tick")));
    let too_fast = module
        .exec("tick_every", json!([1]), ExecOptions::default())
        .await;
    assert!(matches!(too_fast, Err(ExecError::Driver(ref e)) if e.kind == "invalid-arguments"));
    runtime.stop_module("timers").await;
    let ticks = module.status("ticks");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(module.status("ticks"), ticks, "no timer fires after stop");
    assert!(matches!(
        module
            .exec("add", json!([1, 2]), ExecOptions::default())
            .await,
        Err(ExecError::Stopped)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_change_reaches_init_without_restart() {
    let runtime = support::runtime();
    let peer = LinePeer::start(PeerBehaviour::default()).await;
    let module = echo_module(&runtime, "settings", &peer).await;
    assert_eq!(
        module.status("greeting"),
        Some(json!("hello")),
        "driver default"
    );
    assert_eq!(module.status("inits"), Some(json!(1)));
    module
        .update_settings(json!({"greeting": "bonjour", "extra": {"a": 1}}))
        .await
        .unwrap();
    assert_eq!(module.status("greeting"), Some(json!("bonjour")));
    assert_eq!(
        module.status("inits"),
        Some(json!(2)),
        "same instance, init ran again"
    );
    let seen = module
        .exec("settings", json!([]), ExecOptions::default())
        .await
        .unwrap();
    assert_eq!(seen, json!({"greeting": "bonjour", "extra": {"a": 1}}));
    // Settings the driver cannot parse: init reports it, the module keeps running.
    let bad = module.update_settings(json!({"greeting": 42})).await;
    assert!(
        matches!(bad, Err(ExecError::Driver(ref e)) if e.kind == "invalid-arguments"),
        "{bad:?}"
    );
    assert!(
        module
            .init_error()
            .is_some_and(|e| e.kind == "invalid-arguments")
    );
    assert_eq!(
        module
            .exec("add", json!([1, 2]), ExecOptions::default())
            .await
            .unwrap(),
        json!(3)
    );
    module
        .update_settings(json!({"greeting": "hej"}))
        .await
        .unwrap();
    assert_eq!(module.init_error(), None);
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_calls_reach_only_the_same_system() {
    let runtime = support::runtime();
    let peer = LinePeer::start(PeerBehaviour::default()).await;
    let driver = support::load(&runtime, guests::ECHO);
    let start = |id: &str, system: Option<&str>, name: Option<&str>| {
        let mut config = ModuleConfig::new(id, driver.clone());
        config.endpoint = Some(peer.endpoint());
        config.system = system.map(str::to_string);
        config.custom_name = name.map(str::to_string);
        support::start(&runtime, config)
    };
    runtime.set_system("room-1", vec!["a".into(), "b".into(), "c".into()]);
    runtime.set_system("room-2", vec!["other".into()]);
    let a = start("a", Some("room-1"), None).await;
    let _b = start("b", Some("room-1"), None).await;
    let _c = start("c", Some("room-1"), Some("Display")).await;
    let other = start("other", Some("room-2"), None).await;

    let names = a
        .exec("modules", json!([]), ExecOptions::default())
        .await
        .unwrap();
    assert_eq!(names, json!(["Echo_1", "Echo_2", "Display_1"]));
    let relayed = a
        .exec(
            "relay",
            json!(["Display_1", "add", [2, 3]]),
            ExecOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(relayed, json!(5));
    // `Echo` means `Echo_1`, which is `a` itself: refused (it would deadlock its queue).
    let itself = a
        .exec(
            "relay",
            json!(["Echo", "add", [1, 1]]),
            ExecOptions::default(),
        )
        .await;
    assert!(
        matches!(itself, Err(ExecError::Driver(ref e)) if e.kind == "denied"),
        "{itself:?}"
    );
    // room-2's module is not reachable by any name (or id) from room-1.
    for target in ["Echo_4", "other"] {
        let outside = a
            .exec(
                "relay",
                json!([target, "add", [1, 1]]),
                ExecOptions::default(),
            )
            .await;
        assert!(
            matches!(outside, Err(ExecError::Driver(ref e)) if e.kind == "denied"),
            "{target}: {outside:?}"
        );
    }
    // …and a module without a system reaches nothing.
    let lonely = start("lonely", None, None).await;
    let denied = lonely
        .exec("modules", json!([]), ExecOptions::default())
        .await;
    assert!(
        matches!(denied, Err(ExecError::Driver(ref e)) if e.kind == "denied"),
        "{denied:?}"
    );

    // Watching another module: the current value first, then changes.
    a.exec(
        "watch",
        json!(["Display_1", "level"]),
        ExecOptions::default(),
    )
    .await
    .unwrap();
    let display = runtime.module("c").unwrap();
    display
        .exec("publish", json!(["level", 7]), ExecOptions::default())
        .await
        .unwrap();
    support::wait_status(&a, "notified", &json!(7)).await;
    display
        .exec("publish", json!(["level", 8]), ExecOptions::default())
        .await
        .unwrap();
    support::wait_status(&a, "notified", &json!(8)).await;
    assert_eq!(other.status("notified"), None);
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_drops_reconnect_and_reach_the_hooks() {
    let runtime = support::runtime();
    let peer = LinePeer::start(PeerBehaviour {
        delay: Duration::ZERO,
        close_after_reply: true,
        ..PeerBehaviour::default()
    })
    .await;
    let driver = support::load(&runtime, guests::ECHO);
    let mut config = ModuleConfig::new("flaky", driver);
    config.endpoint = Some(peer.endpoint());
    config.connection = ConnectionOptions {
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        ..ConnectionOptions::default()
    };
    let module = support::start(&runtime, config).await;
    support::wait_status(&module, "connected", &json!(true)).await;
    let reply = module
        .exec("ask", json!(["one"]), ExecOptions::default())
        .await
        .unwrap();
    assert_eq!(reply, json!("you said one"));
    // The peer closed after replying: the driver hears it, and the host reconnects.
    support::wait_status(&module, "hook", &json!("disconnected")).await;
    support::wait_status(&module, "hook", &json!("connected")).await;
    let reply = module
        .exec("ask", json!(["two"]), ExecOptions::default())
        .await
        .unwrap();
    assert_eq!(reply, json!("you said two"));
    assert!(peer.connection_count() >= 2);
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_and_break_connects_per_command() {
    let runtime = support::runtime();
    let peer = LinePeer::start(PeerBehaviour::default()).await;
    let driver = support::load(&runtime, guests::ECHO);
    let mut config = ModuleConfig::new("mab", driver);
    config.endpoint = Some(peer.endpoint());
    config.connection = ConnectionOptions {
        make_break: true,
        idle_close: Duration::from_millis(100),
        ..ConnectionOptions::default()
    };
    let module = support::start(&runtime, config).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        peer.connection_count(),
        0,
        "nothing opened before a command"
    );
    for (round, line) in ["a", "b"].into_iter().enumerate() {
        let reply = module
            .exec("ask", json!([line]), ExecOptions::default())
            .await
            .unwrap();
        assert_eq!(reply, json!(format!("you said {line}")));
        assert_eq!(peer.connection_count(), round + 1);
        // Closed again once idle.
        support::wait_status(&module, "hook", &json!("disconnected")).await;
    }
    runtime.shutdown().await;
}

#[test]
fn every_driver_is_inspectable_from_the_cli() {
    for (name, path) in guests::DRIVERS {
        let run = warden_tests::warden(&["driver", "inspect", path, "--json"]);
        let json: Value = run.json();
        assert!(
            json["digest"].as_str().unwrap().starts_with("sha256:"),
            "{name}"
        );
        assert_eq!(json["refused_imports"], json!([]), "{name}");
        for key in [
            "name",
            "version",
            "transport",
            "functions",
            "settings_schema",
            "imports",
        ] {
            assert!(!json[key].is_null(), "{name}: missing {key}");
        }
        for function in json["functions"].as_array().unwrap() {
            for key in ["name", "params", "returns", "level"] {
                assert!(!function[key].is_null(), "{name}: function without {key}");
            }
        }
        let text = warden_tests::warden(&["driver", "inspect", path]);
        assert_eq!(text.code, Some(0), "{text:?}");
        assert!(text.stdout.contains("digest     sha256:"), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_greeting_sent_on_connect_is_split_with_the_tokenizer_from_init() {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _device = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut socket, _)) = listener.accept().await {
            // Greets at once, before the driver could ask for anything.
            let _ = socket.write_all(b"HELLO\nREADY\n").await;
            held.push(socket);
        }
    });
    let runtime = support::runtime();
    let driver = support::load(&runtime, guests::ECHO);
    let mut config = ModuleConfig::new("greeted", driver);
    config.endpoint = Some(addr.to_string().parse().unwrap());
    let module = support::start(&runtime, config).await;
    // Two messages, split on the delimiter the driver chose in `init`.
    support::wait_status(&module, "last_received", &json!("READY")).await;
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_refused_at_start_leave_the_driver_on_its_defaults() {
    let runtime = support::runtime();
    let peer = LinePeer::start(PeerBehaviour::default()).await;
    let driver = support::load(&runtime, guests::ECHO);
    let mut config = ModuleConfig::new("refused", driver);
    config.endpoint = Some(peer.endpoint());
    config.settings = json!({"greeting": 42});
    let module = support::start(&runtime, config).await;
    assert!(
        module
            .init_error()
            .is_some_and(|e| e.kind == "invalid-arguments")
    );
    // `init` ran with the driver's defaults: its status and its tokenizer are in place.
    assert_eq!(module.status("greeting"), Some(json!("hello")));
    support::wait_status(&module, "connected", &json!(true)).await;
    let reply = module
        .exec("ask", json!(["split?"]), ExecOptions::default())
        .await
        .unwrap();
    assert_eq!(
        reply,
        json!("you said split?"),
        "the reply was split on its newline"
    );
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_is_the_first_message_after_the_request() {
    let runtime = support::runtime();
    let peer = LinePeer::start(PeerBehaviour {
        chatty: true,
        ..PeerBehaviour::default()
    })
    .await;
    let module = echo_module(&runtime, "chatty", &peer).await;
    // The device answers each line twice in one write. The second line of the first
    // answer is already waiting when the second request goes out: it is not the reply.
    let replies = module
        .exec("ask_twice", json!(["one", "two"]), ExecOptions::default())
        .await
        .unwrap();
    assert_eq!(replies, json!(["you said one", "you said two"]));
    // The lines nobody asked for reach `received`, in order.
    support::wait_status(&module, "last_received", &json!("and again two")).await;
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_driver_talks_datagrams_to_its_endpoint() {
    let device = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = device.local_addr().unwrap();
    let _device = tokio::spawn(async move {
        let mut buffer = vec![0_u8; 2048];
        while let Ok((count, from)) = device.recv_from(&mut buffer).await {
            let reply = format!("echo {}", String::from_utf8_lossy(&buffer[..count]));
            let _ = device.send_to(reply.as_bytes(), from).await;
        }
    });
    let runtime = support::runtime();
    let driver = support::load(&runtime, guests::UDP_ECHO);
    let mut config = ModuleConfig::new("udp", driver);
    config.endpoint = Some(addr.to_string().parse().unwrap());
    let module = support::start(&runtime, config).await;
    // Connected means the host holds a socket aimed at the device.
    support::wait_status(&module, "connected", &json!(true)).await;
    support::wait_status(&module, "hook", &json!("connected")).await;
    for text in ["one", "two"] {
        let reply = module
            .exec("ask", json!([text]), ExecOptions::default())
            .await
            .unwrap();
        assert_eq!(reply, json!(format!("echo {text}")));
    }
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_for_an_offline_device_wait_or_fail_as_asked() {
    use warden::runtime::OfflinePolicy;
    // Nothing listens on this port: the device is offline.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let runtime = support::runtime();
    let driver = support::load(&runtime, guests::ECHO);
    let mut config = ModuleConfig::new("offline", driver);
    config.endpoint = Some(addr.to_string().parse().unwrap());
    let module = support::start(&runtime, config).await;
    support::wait_status(&module, "connected", &json!(false)).await;

    let started = std::time::Instant::now();
    let failed = module
        .exec(
            "ask",
            json!(["now or never"]),
            ExecOptions {
                offline: OfflinePolicy::Fail,
                ..ExecOptions::default()
            },
        )
        .await;
    assert!(matches!(failed, Err(ExecError::Offline(_))), "{failed:?}");
    assert!(started.elapsed() < Duration::from_millis(500));

    // Kept: it waits for the device until its own deadline, then reports why.
    let started = std::time::Instant::now();
    let kept = module
        .exec(
            "ask",
            json!(["when you can", 5000]),
            ExecOptions {
                timeout: Some(Duration::from_millis(800)),
                ..ExecOptions::default()
            },
        )
        .await;
    assert!(started.elapsed() >= Duration::from_millis(700), "{kept:?}");
    assert!(
        matches!(&kept, Err(ExecError::Driver(e)) if e.kind == "not-connected" || e.kind == "timeout")
            || matches!(kept, Err(ExecError::Timeout(_))),
        "{kept:?}"
    );
    runtime.shutdown().await;
}
