//! The control layer against a real store (a SQLite file) and the real runtime: modules
//! start from stored configuration, settings changes reach `init` without a restart,
//! systems' names follow the store, history records transitions, execs are audited.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::TcpListener;
use warden::control::{Control, ControlConfig, ControlError};
use warden::runtime::{ExecOptions, ModuleState};
use warden::settings::{Audience, Level, ParentKind, Role};
use warden::store::{
    Actor, Approval, KeySource, NewModule, NewSystem, NewZone, Store, SystemPatch,
};

use crate::store::TestDb;
use crate::support::{self, wait_state, wait_status};

fn admin() -> Actor {
    Actor("user-admin".to_string())
}

fn config() -> ControlConfig {
    ControlConfig {
        limits: support::tight_limits(),
        ..ControlConfig::default()
    }
}

async fn echo_driver(control: &Control) -> String {
    let bytes = std::fs::read(warden_tests::guests::ECHO).unwrap();
    let driver = control
        .register_driver(
            &admin(),
            bytes,
            Some("https://example.invalid/warden.git".into()),
            None,
        )
        .await
        .unwrap();
    assert_eq!(driver.approval, Approval::Pending);
    assert_eq!(driver.module_name, "Echo");
    driver.id
}

async fn approve(control: &Control, driver: &str) {
    control
        .set_approval(
            &Actor("user-reviewer".into()),
            driver,
            Approval::Approved,
            None,
        )
        .await
        .unwrap();
}

async fn echo_module(store: &Store, driver: &str, endpoint: &str, running: bool) -> String {
    store
        .create_module(
            &admin(),
            &NewModule {
                driver_id: driver.to_string(),
                endpoint: Some(endpoint.to_string()),
                running,
                ..NewModule::default()
            },
        )
        .await
        .unwrap()
        .id
}

async fn exec(control: &Control, module: &str, method: &str, args: Value) -> Value {
    control
        .exec(&admin(), module, method, args, ExecOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{method}: {e}"))
}

/// Poll `check` (up to 20 s) until it holds.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..400 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_start_from_stored_configuration_and_take_settings_changes() {
    let db = TestDb::sqlite().await;
    // A key file, so the second host below reads what the first sealed.
    let key_file = db.scratch().join("master.key");
    let store = db
        .store_with(KeySource::file(&key_file, true).unwrap())
        .await;
    let control = Control::new(store.clone(), support::runtime(), config());
    let peer = support::LinePeer::start(support::PeerBehaviour::default()).await;
    let driver = echo_driver(&control).await;
    let module = echo_module(&store, &driver, &peer.addr.to_string(), false).await;
    let building = store
        .create_zone(
            &admin(),
            &NewZone {
                name: "Building".into(),
                ..NewZone::default()
            },
        )
        .await
        .unwrap()
        .id;
    let room = store
        .create_system(
            &admin(),
            &NewSystem {
                name: "Room".into(),
                zones: vec![building.clone()],
                modules: vec![module.clone()],
                ..NewSystem::default()
            },
        )
        .await
        .unwrap()
        .id;
    store
        .set_settings(
            &admin(),
            ParentKind::Zone,
            &building,
            Level::None,
            &json!({"greeting": "from the zone"}),
        )
        .await
        .unwrap();
    store
        .set_settings(
            &admin(),
            ParentKind::Module,
            &module,
            Level::NeverDisplayed,
            &json!({"password": "s3cret"}),
        )
        .await
        .unwrap();

    // Default deny: a driver nobody approved does not start.
    let refused = control.start_module(&admin(), &module).await.unwrap_err();
    assert!(
        matches!(refused, ControlError::NotApproved { .. }),
        "{refused}"
    );
    assert!(
        !store.module(&module).await.unwrap().running,
        "nothing changed"
    );
    approve(&control, &driver).await;

    let handle = control.start_module(&admin(), &module).await.unwrap();
    wait_state(&handle, |s| matches!(s, ModuleState::Running)).await;
    assert!(store.module(&module).await.unwrap().running);
    wait_status(&handle, "greeting", &json!("from the zone")).await;
    // The driver receives every level, decrypted and merged over its defaults.
    let seen = exec(&control, &module, "settings", json!([])).await;
    assert_eq!(
        seen,
        json!({"greeting": "from the zone", "password": "s3cret"})
    );
    // It reaches its device from the stored endpoint.
    assert_eq!(
        exec(&control, &module, "ask", json!(["hi"])).await,
        json!("you said hi")
    );

    // A settings change reaches init without a restart (init counts, the sandbox stays).
    assert_eq!(handle.status("inits"), Some(json!(1)));
    control
        .set_settings(
            &admin(),
            ParentKind::System,
            &room,
            Level::Support,
            &json!({"greeting": "from the room"}),
        )
        .await
        .unwrap();
    wait_status(&handle, "greeting", &json!("from the room")).await;
    assert_eq!(handle.status("inits"), Some(json!(2)));
    // A zone change reaches it too, through the system; the system's value still wins.
    control
        .set_settings(
            &admin(),
            ParentKind::Zone,
            &building,
            Level::None,
            &json!({"greeting": "zone again", "extra": 1}),
        )
        .await
        .unwrap();
    wait_status(&handle, "inits", &json!(3)).await;
    assert_eq!(handle.status("greeting"), Some(json!("from the room")));
    // People see what their role allows; the password never.
    let support_view = store
        .module_settings(&module, Audience::Person(Role::Support))
        .await
        .unwrap();
    assert_eq!(
        support_view,
        json!({"greeting": "from the room", "extra": 1})
    );

    // Every exec is in the audit log, with who and what, never the argument values.
    control.flush_audit().await;
    let entries = store.audit_entries(0, 1000).await.unwrap();
    let execs: Vec<_> = entries
        .iter()
        .filter(|e| e.action == "module.exec")
        .collect();
    assert_eq!(execs.len(), 2);
    assert_eq!(
        execs[1].details,
        json!({"method": "ask", "args": {"count": 1}})
    );
    assert_eq!(execs[1].actor, "user-admin");
    assert!(
        !entries
            .iter()
            .any(|e| e.details.to_string().contains("you said"))
    );
    assert_eq!(store.verify_audit().await.unwrap().broken, None);

    // Stopping keeps that in the store: a new host over the same database leaves it stopped.
    control.stop_module(&admin(), &module).await.unwrap();
    assert!(control.runtime().module(&module).is_none());
    assert!(!store.module(&module).await.unwrap().running);
    control.start_module(&admin(), &module).await.unwrap();
    control.shutdown().await;

    // The next host starts what was running, from the store alone.
    let store = db
        .store_with(KeySource::file(&key_file, false).unwrap())
        .await;
    let control = Control::new(store.clone(), support::runtime(), config());
    let failures = control.start_running().await.unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    let handle = control
        .runtime()
        .module(&module)
        .expect("started from the store");
    wait_status(&handle, "greeting", &json!("from the room")).await;
    control.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_module_does_not_stop_the_others() {
    let db = TestDb::sqlite().await;
    let store = db.store().await;
    let control = Control::new(store.clone(), support::runtime(), config());
    let peer = support::LinePeer::start(support::PeerBehaviour::default()).await;
    let driver = echo_driver(&control).await;
    approve(&control, &driver).await;
    let good = echo_module(&store, &driver, &peer.addr.to_string(), true).await;
    // No endpoint: the runtime refuses it.
    let bad = store
        .create_module(
            &admin(),
            &NewModule {
                driver_id: driver.clone(),
                running: true,
                ..NewModule::default()
            },
        )
        .await
        .unwrap()
        .id;
    // A revoked driver's modules do not start either. (Another component: revoking a
    // digest revokes every driver record of it, the echo driver above included.)
    let revoked = control
        .register_driver(
            &admin(),
            std::fs::read(warden_tests::guests::COUNTER_V1).unwrap(),
            None,
            None,
        )
        .await
        .unwrap()
        .id;
    control
        .set_approval(
            &admin(),
            &revoked,
            Approval::Revoked,
            Some("found a bug".into()),
        )
        .await
        .unwrap();
    let stale = echo_module(&store, &revoked, &peer.addr.to_string(), true).await;

    let failures = control.start_running().await.unwrap();
    let failed: Vec<&str> = failures.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(failed.len(), 2, "{failures:?}");
    assert!(failed.contains(&bad.as_str()) && failed.contains(&stale.as_str()));
    assert!(
        failures
            .iter()
            .any(|(_, e)| matches!(e, ControlError::Start { .. }))
    );
    assert!(failures.iter().any(|(_, e)| matches!(
        e,
        ControlError::NotApproved {
            state: "revoked",
            ..
        }
    )));
    assert!(control.runtime().module(&good).is_some());

    // A component the host cannot run is refused at registration and nothing is stored.
    let forbidden = std::fs::read(warden_tests::guests::FORBIDDEN_IMPORT).unwrap();
    let error = control
        .register_driver(&admin(), forbidden, None, None)
        .await
        .unwrap_err();
    assert!(matches!(error, ControlError::Invalid(_)), "{error}");
    let error = control
        .register_driver(&admin(), b"not a component".to_vec(), None, None)
        .await
        .unwrap_err();
    assert!(matches!(error, ControlError::Invalid(_)), "{error}");
    let drivers = store.list_drivers(&Default::default()).await.unwrap();
    assert_eq!(drivers.total, 2);
    control.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_names_follow_the_store_even_for_stopped_modules() {
    let db = TestDb::sqlite().await;
    let store = db.store().await;
    let control = Control::new(store.clone(), support::runtime(), config());
    let peer = support::LinePeer::start(support::PeerBehaviour::default()).await;
    let driver = echo_driver(&control).await;
    approve(&control, &driver).await;
    let stopped = echo_module(&store, &driver, &peer.addr.to_string(), false).await;
    let running = echo_module(&store, &driver, &peer.addr.to_string(), true).await;
    let room = store
        .create_system(
            &admin(),
            &NewSystem {
                name: "Room".into(),
                modules: vec![stopped.clone(), running.clone()],
                ..NewSystem::default()
            },
        )
        .await
        .unwrap()
        .id;
    control.start_running().await.unwrap();
    let handle = control.runtime().module(&running).unwrap();
    wait_state(&handle, |s| matches!(s, ModuleState::Running)).await;
    // The running module is Echo_2 because a stopped Echo_1 comes first.
    assert_eq!(
        exec(&control, &running, "modules", json!([])).await,
        json!(["Echo_1", "Echo_2"])
    );
    assert_eq!(
        control.runtime().system_modules(&room),
        [
            ("Echo_1".to_string(), stopped.clone()),
            ("Echo_2".to_string(), running.clone())
        ]
    );
    // Reordering in the store, then refreshing, renames.
    store
        .update_system(
            &admin(),
            &room,
            &SystemPatch {
                modules: Some(vec![running.clone(), stopped.clone()]),
                ..SystemPatch::default()
            },
        )
        .await
        .unwrap();
    control.refresh_system(&room).await.unwrap();
    assert_eq!(
        control.runtime().system_modules(&room),
        [
            ("Echo_1".to_string(), running.clone()),
            ("Echo_2".to_string(), stopped)
        ]
    );
    control.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_history_records_each_transition() {
    let db = TestDb::sqlite().await;
    let store = db.store().await;
    let control = Control::new(store.clone(), support::runtime(), config());
    // A device we can unplug: holds the first connection until told, then goes away
    // (later connection attempts are refused).
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (unplug, mut unplugged) = tokio::sync::watch::channel(false);
    let device = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let _ = unplugged.changed().await;
        drop(socket);
        drop(listener);
    });
    let driver = echo_driver(&control).await;
    approve(&control, &driver).await;
    let module = echo_module(&store, &driver, &addr.to_string(), false).await;
    let started = store.now();
    let handle = control.start_module(&admin(), &module).await.unwrap();
    wait_status(&handle, "connected", &json!(true)).await;
    eventually("the online transition", || async {
        store
            .module_history(&module, 0, i64::MAX)
            .await
            .unwrap()
            .transitions
            .len()
            == 2
    })
    .await;
    unplug.send(true).unwrap();
    wait_status(&handle, "connected", &json!(false)).await;
    eventually("the offline transition", || async {
        store
            .module_history(&module, 0, i64::MAX)
            .await
            .unwrap()
            .transitions
            .len()
            == 3
    })
    .await;
    control.stop_module(&admin(), &module).await.unwrap();
    let report = store
        .module_history(&module, started - 1, store.now() + 1)
        .await
        .unwrap();
    let seen: Vec<(bool, &str)> = report
        .transitions
        .iter()
        .map(|t| (t.online, t.reason.as_str()))
        .collect();
    // Offline as it starts, online, offline when unplugged; reconnect attempts fail, so no
    // further transitions; the stop records nothing because the module was offline.
    assert_eq!(
        seen,
        [
            (false, "not connected yet"),
            (true, "connected"),
            (false, "disconnected")
        ]
    );
    assert!(report.uptime_percent.unwrap() > 0.0 && report.uptime_percent.unwrap() < 100.0);
    device.abort();
    control.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_audit_entries_are_written_by_shutdown_at_the_latest() {
    let db = TestDb::sqlite().await;
    let store = db.store().await;
    let control = Control::new(store.clone(), support::runtime(), config());
    let peer = support::LinePeer::start(support::PeerBehaviour::default()).await;
    let driver = echo_driver(&control).await;
    approve(&control, &driver).await;
    let module = echo_module(&store, &driver, &peer.addr.to_string(), true).await;
    control.start_running().await.unwrap();
    let handle = control.runtime().module(&module).unwrap();
    wait_state(&handle, |s| matches!(s, ModuleState::Running)).await;
    for i in 0..100 {
        exec(&control, &module, "add", json!([i, 1])).await;
    }
    control.shutdown().await;
    let execs: Vec<_> = store
        .audit_entries(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "module.exec")
        .collect();
    assert_eq!(execs.len(), 100);
    // In the order made, each stamped no later than the next.
    assert!(
        execs
            .windows(2)
            .all(|w| w[0].at <= w[1].at && w[0].seq < w[1].seq)
    );
    assert_eq!(store.verify_audit().await.unwrap().broken, None);
}
