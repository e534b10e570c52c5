//! Hostile guests: each limit of the sandbox contains its abuse, logs why, restarts only
//! the guilty module, and leaves a healthy neighbour answering.

use std::time::Duration;

use serde_json::{Value, json};
use warden::runtime::{
    ExecError, ExecOptions, LoadError, LogLevel, ModuleConfig, ModuleState, RuntimeEvent,
};
use warden_tests::guests;

use crate::support::{self, LinePeer, PeerBehaviour};

/// A hostile module with tight limits and a healthy echo neighbour.
async fn hostile_and_neighbour(
    runtime: &warden::runtime::Runtime,
    peer: &LinePeer,
) -> (warden::runtime::ModuleHandle, warden::runtime::ModuleHandle) {
    let hostile = support::load(runtime, guests::HOSTILE);
    let mut config = ModuleConfig::new("hostile", hostile);
    config.limits = support::tight_limits();
    let hostile = support::start(runtime, config).await;

    let echo = support::load(runtime, guests::ECHO);
    let mut config = ModuleConfig::new("neighbour", echo);
    config.endpoint = Some(peer.endpoint());
    let neighbour = support::start(runtime, config).await;
    support::wait_status(&neighbour, "connected", &json!(true)).await;
    (hostile, neighbour)
}

async fn neighbour_answers(neighbour: &warden::runtime::ModuleHandle) {
    let sum = neighbour
        .exec("add", json!([20, 22]), ExecOptions::default())
        .await
        .expect("neighbour add");
    assert_eq!(sum, json!(42));
    let reply = neighbour
        .exec("ask", json!(["still there?"]), ExecOptions::default())
        .await
        .expect("neighbour ask");
    assert_eq!(reply, json!("you said still there?"));
}

/// Run `function` on the hostile module, expect it to crash the sandbox with a reason
/// containing `why`, then check the restart and the neighbour.
async fn contained(function: &str, args: Value, why: &str) {
    let runtime = support::runtime();
    let peer = LinePeer::start(PeerBehaviour::default()).await;
    let (hostile, neighbour) = hostile_and_neighbour(&runtime, &peer).await;
    let mut events = runtime.events();

    // The neighbour keeps working while the hostile call runs.
    let busy = {
        let hostile = hostile.clone();
        let function = function.to_string();
        tokio::spawn(async move { hostile.exec(&function, args, ExecOptions::default()).await })
    };
    neighbour_answers(&neighbour).await;

    let error = busy
        .await
        .expect("join")
        .expect_err("hostile call must fail");
    match &error {
        ExecError::Crashed(reason) => assert!(reason.contains(why), "{reason}"),
        other => panic!("expected a crash containing {why:?}, got {other:?}"),
    }
    // The crash is logged with its reason at error level, announced, and only the hostile
    // module restarts.
    let mut logged = false;
    let mut announced = false;
    support::wait_event(&mut events, |e| match e {
        RuntimeEvent::Log {
            module,
            level: LogLevel::Error,
            message,
        } if module == "hostile" => {
            logged |= message.contains(why);
            false
        }
        RuntimeEvent::Crashed { module, reason, .. } if module == "hostile" => {
            assert!(reason.contains(why), "{reason}");
            announced = true;
            false
        }
        RuntimeEvent::Crashed { module, .. } => panic!("{module} crashed too"),
        RuntimeEvent::Started { module, restarts } => module == "hostile" && *restarts == 1,
        _ => false,
    })
    .await;
    assert!(
        logged && announced,
        "logged {logged}, announced {announced}"
    );
    assert_eq!(hostile.status("connected"), Some(json!(true)));
    let printed = hostile
        .exec("print", json!(["back"]), ExecOptions::default())
        .await
        .expect("hostile answers after restart");
    assert_eq!(printed, json!(true));
    assert!(matches!(neighbour.state(), ModuleState::Running));
    neighbour_answers(&neighbour).await;
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_hits_the_cpu_deadline() {
    contained("spin", json!([]), "CPU time limit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bomb_hits_the_memory_limit() {
    contained("hoard", json!([64]), "memory limit of 16 MiB exceeded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trap_restarts_only_that_module() {
    contained("trap", json!([]), "driver trapped").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_below_the_limit_is_fine() {
    let runtime = support::runtime();
    let hostile = support::load(&runtime, guests::HOSTILE);
    let mut config = ModuleConfig::new("hoarder", hostile);
    config.limits = support::tight_limits();
    let module = support::start(&runtime, config).await;
    let held = module
        .exec("hoard", json!([4]), ExecOptions::default())
        .await
        .expect("4 MiB fits in 16 MiB");
    assert_eq!(held, json!(4));
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unoffered_import_is_refused_by_name() {
    let runtime = support::runtime();
    let error = runtime
        .load_driver_file(std::path::Path::new(guests::FORBIDDEN_IMPORT))
        .expect_err("must be refused");
    let LoadError::RefusedImports(imports) = &error else {
        panic!("expected refused imports, got {error}");
    };
    assert!(
        imports.iter().any(|i| i.starts_with("wasi:sockets/tcp@")),
        "{imports:?}"
    );
    assert!(
        imports
            .iter()
            .any(|i| i.starts_with("wasi:sockets/ip-name-lookup@"))
    );
    assert!(
        imports.iter().all(|i| i.starts_with("wasi:sockets/")),
        "{imports:?}"
    );
    let message = error.to_string();
    assert!(message.contains("wasi:sockets/tcp@0.2"), "{message}");

    // The CLI says the same and exits non-zero without running anything.
    let run = warden_tests::warden(&[
        "driver",
        "run",
        guests::FORBIDDEN_IMPORT,
        "--exec",
        "escape",
    ]);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("wasi:sockets/tcp@0.2"), "{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_and_stderr_become_log_lines() {
    let runtime = support::runtime();
    let mut events = runtime.events();
    let hostile = support::load(&runtime, guests::HOSTILE);
    let module = support::start(&runtime, ModuleConfig::new("printer", hostile)).await;
    module
        .exec(
            "print",
            json!(["hello from the guest"]),
            ExecOptions::default(),
        )
        .await
        .expect("print");
    support::wait_event(&mut events, |e| {
        matches!(e, RuntimeEvent::Log { module, level: LogLevel::Info, message }
            if module == "printer" && message == "hello from the guest")
    })
    .await;
    support::wait_event(&mut events, |e| {
        matches!(e, RuntimeEvent::Log { module, level: LogLevel::Warn, message }
            if module == "printer" && message == "err: hello from the guest")
    })
    .await;
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_environment_arguments_or_files() {
    let runtime = support::runtime();
    let hostile = support::load(&runtime, guests::HOSTILE);
    let module = support::start(&runtime, ModuleConfig::new("prober", hostile)).await;
    let seen = module
        .exec("probe", json!([]), ExecOptions::default())
        .await
        .expect("probe");
    assert_eq!(
        seen,
        json!({"env": 0, "args": 0, "read_root": false, "read_passwd": false, "write_tmp": false})
    );
    assert!(!std::path::Path::new("/tmp/warden-escape").exists());
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_host_call_ends_with_a_timeout_error_not_a_kill() {
    // A device that never answers: the driver's 60 s wait is cut at the exec deadline
    // and reaches the driver as a `timeout` error; the module is not killed.
    let runtime = support::runtime();
    let started = std::time::Instant::now();
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let _accept = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let echo = support::load(&runtime, guests::ECHO);
    let mut config = ModuleConfig::new("patient", echo);
    config.endpoint = Some(silent_addr.to_string().parse().unwrap());
    config.limits.exec_timeout = Duration::from_millis(400);
    let module = support::start(&runtime, config).await;
    support::wait_status(&module, "connected", &json!(true)).await;
    let mut events = runtime.events();
    let error = module
        .exec("ask", json!(["hello?", 60_000]), ExecOptions::default())
        .await
        .expect_err("silent device");
    match error {
        ExecError::Driver(driver) => assert_eq!(driver.kind, "timeout", "{driver:?}"),
        other => panic!("expected the driver's timeout error, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(matches!(module.state(), ModuleState::Running));
    assert!(
        events
            .try_recv()
            .map_or(true, |e| !matches!(e, RuntimeEvent::Crashed { .. })),
        "no crash expected"
    );
    runtime.shutdown().await;
}

#[test]
fn the_cli_reports_each_limit_and_exits_non_zero() {
    let spin = warden_tests::warden(&[
        "driver",
        "run",
        guests::HOSTILE,
        "--exec",
        "spin",
        "--cpu-ms-per-call",
        "100",
    ]);
    assert_eq!(spin.code, Some(1), "{spin:?}");
    assert!(
        spin.stderr
            .contains("CPU time limit of 100ms per call exceeded"),
        "{spin:?}"
    );

    let hoard = warden_tests::warden(&[
        "driver",
        "run",
        guests::HOSTILE,
        "--exec",
        "hoard",
        "--args",
        "[64]",
        "--memory-mib",
        "16",
    ]);
    assert_eq!(hoard.code, Some(1), "{hoard:?}");
    assert!(
        hoard.stderr.contains("memory limit of 16 MiB exceeded"),
        "{hoard:?}"
    );

    let trap = warden_tests::warden(&["driver", "run", guests::HOSTILE, "--exec", "trap"]);
    assert_eq!(trap.code, Some(1), "{trap:?}");
    assert!(trap.stderr.contains("driver trapped"), "{trap:?}");
    // The guest's panic message reaches the log through stderr.
    assert!(
        trap.stderr.contains("hostile driver panics on purpose"),
        "{trap:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_flood_is_capped_and_counted() {
    let runtime = support::runtime();
    let mut events = runtime.events();
    let hostile = support::load(&runtime, guests::HOSTILE);
    let module = support::start(&runtime, ModuleConfig::new("spammer", hostile)).await;
    let written = module
        .exec("spam", json!([5000]), ExecOptions::default())
        .await
        .expect("spam");
    assert_eq!(written, json!(5000));
    let mut spam_lines = 0;
    while let Ok(event) = events.try_recv() {
        if let RuntimeEvent::Log {
            module, message, ..
        } = event
            && module == "spammer"
            && message.starts_with("spam ")
        {
            spam_lines += 1;
        }
    }
    assert!(spam_lines <= 210, "{spam_lines} lines got through");
    assert!(
        spam_lines >= 100,
        "the burst itself is allowed: {spam_lines}"
    );
    // After a pause the next line says how many were dropped.
    tokio::time::sleep(Duration::from_millis(100)).await;
    module
        .exec("spam", json!([1]), ExecOptions::default())
        .await
        .unwrap();
    support::wait_event(&mut events, |e| {
        matches!(e, RuntimeEvent::Log { module, level: LogLevel::Warn, message }
            if module == "spammer" && message.contains("log lines of this module were dropped"))
    })
    .await;
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_in_host_calls_is_not_cpu_time() {
    let runtime = support::runtime();
    let hostile = support::load(&runtime, guests::HOSTILE);
    let mut config = ModuleConfig::new("napper", hostile);
    config.limits = support::tight_limits();
    let module = support::start(&runtime, config).await;
    // 600 ms asleep in a WASI clock wait, with a CPU limit of 200 ms per call.
    let slept = module
        .exec("nap", json!([600]), ExecOptions::default())
        .await
        .expect("sleeping is waiting, not computing");
    assert_eq!(slept, json!(600));
    assert!(matches!(module.state(), ModuleState::Running));

    // 600 ms waiting for a slow device in `transport.request`, whose reply (a list) the
    // host hands back through the guest's allocator: still not CPU time.
    let peer = LinePeer::start(PeerBehaviour {
        delay: Duration::from_millis(600),
        close_after_reply: false,
        ..PeerBehaviour::default()
    })
    .await;
    let echo = support::load(&runtime, guests::ECHO);
    let mut config = ModuleConfig::new("patient", echo);
    config.endpoint = Some(peer.endpoint());
    config.limits = support::tight_limits();
    let module = support::start(&runtime, config).await;
    support::wait_status(&module, "connected", &json!(true)).await;
    let reply = module
        .exec("ask", json!(["slowly", 5000]), ExecOptions::default())
        .await
        .expect("waiting for a device is not computing");
    assert_eq!(reply, json!("you said slowly"));
    runtime.shutdown().await;
}
