//! Signed approvals, revocation and live upgrade, against a real store (a SQLite file),
//! the real runtime and three versions of one driver (`tests/fixtures/counter_*`): 100
//! modules move to a new version under exec load without losing an acknowledged command
//! while another driver's modules do not notice; a version that cannot start is rolled
//! back; revoking an approval stops the modules running that digest.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use warden::attestation::{self, PublicKey};
use warden::control::{Control, ControlConfig, ControlError, UpgradeOutcome};
use warden::runtime::{ExecOptions, Runtime, RuntimeConfig, RuntimeEvent};
use warden::settings::{Level, ParentKind};
use warden::store::{Actor, Approval, NewModule, NewUser, Store};

use crate::store::TestDb;

const MODULES: usize = 100;
const OTHERS: usize = 10;

fn admin() -> Actor {
    Actor("user-admin".to_string())
}

fn runtime() -> Runtime {
    let mut config = RuntimeConfig::new(warden_tests::cache_dir());
    // Every module, plus the spare slot an upgrade's second instance takes.
    config.max_modules = 160;
    Runtime::new(config).unwrap()
}

async fn register(control: &Control, path: &str) -> String {
    control
        .register_driver(
            &admin(),
            std::fs::read(path).unwrap(),
            Some("https://example.invalid/warden.git".into()),
            Some("0123456789abcdef0123456789abcdef01234567".into()),
        )
        .await
        .unwrap()
        .id
}

/// Every audit entry, read a page (at most 1,000) at a time.
async fn all_audit_entries(store: &Store) -> Vec<warden::store::AuditEntry> {
    let mut entries = Vec::new();
    loop {
        let after = entries
            .last()
            .map_or(0, |e: &warden::store::AuditEntry| e.seq);
        let page = store.audit_entries(after, 1_000).await.unwrap();
        if page.is_empty() {
            return entries;
        }
        entries.extend(page);
    }
}

async fn modules_of(store: &Store, driver: &str, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for n in 0..count {
        let id = store
            .create_module(
                &admin(),
                &NewModule {
                    driver_id: driver.to_string(),
                    running: true,
                    ..NewModule::default()
                },
            )
            .await
            .unwrap()
            .id;
        store
            .set_settings(
                &admin(),
                ParentKind::Module,
                &id,
                Level::None,
                &json!({"label": format!("room {n}")}),
            )
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

async fn exec(control: &Control, module: &str, method: &str, args: Value) -> Value {
    control
        .exec(&admin(), module, method, args, ExecOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{module} {method}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_are_signed_and_checkable_offline() {
    let db = TestDb::sqlite().await;
    let store = db.store().await;
    let control = Control::new(store.clone(), runtime(), ControlConfig::default());
    let reviewer = store
        .create_user(
            &admin(),
            &NewUser {
                email: "rev@example.com".into(),
                username: Some("rev".into()),
                first_name: "Ada".into(),
                last_name: "Reviewer".into(),
                roles: vec!["reviewer".into()],
                auth_source: "local".into(),
            },
        )
        .await
        .unwrap();
    let driver = register(&control, warden_tests::guests::COUNTER_V1).await;
    let approved = control
        .set_approval(
            &Actor(reviewer.id.clone()),
            &driver,
            Approval::Approved,
            Some("read every line".into()),
        )
        .await
        .unwrap();
    let envelope = approved.attestation.clone().unwrap();
    let keys = store.signing_keys().await.unwrap();
    let key = PublicKey::parse(&keys[0].public_key).unwrap();
    let statement = attestation::verify(&envelope, std::slice::from_ref(&key)).unwrap();
    assert_eq!(statement.digest, approved.digest);
    assert_eq!(statement.driver.name, "Counter");
    assert_eq!(statement.driver.version, "1.0.0");
    assert_eq!(
        statement.source.commit.as_deref(),
        Some("0123456789abcdef0123456789abcdef01234567")
    );
    assert_eq!(statement.reviewer.email.as_deref(), Some("rev@example.com"));
    assert_eq!(statement.reviewer.name.as_deref(), Some("Ada Reviewer"));
    assert_eq!(statement.note.as_deref(), Some("read every line"));

    // Offline, with the command line: the attestation, the key and the component.
    let dir = db.scratch();
    let file = dir.join("approval.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&envelope).unwrap()).unwrap();
    let tampered = dir.join("tampered.wasm");
    let mut bytes = std::fs::read(warden_tests::guests::COUNTER_V1).unwrap();
    bytes.extend_from_slice(b"\0");
    std::fs::write(&tampered, &bytes).unwrap();
    let verify = |key: &str, component: &str| {
        std::process::Command::new(warden_tests::warden_bin())
            .args(["driver", "verify-attestation"])
            .arg(&file)
            .args(["--public-key", key, "--component", component])
            .output()
            .unwrap()
    };
    let good = verify(&keys[0].public_key, warden_tests::guests::COUNTER_V1);
    let out = String::from_utf8_lossy(&good.stdout);
    assert_eq!(good.status.code(), Some(0), "{out}");
    assert!(
        out.contains(&approved.digest) && out.contains("rev@example.com"),
        "{out}"
    );
    assert!(out.contains("is the approved component"), "{out}");
    let wrong_bytes = verify(&keys[0].public_key, tampered.to_str().unwrap());
    let out = String::from_utf8_lossy(&wrong_bytes.stdout);
    assert_eq!(wrong_bytes.status.code(), Some(1), "{out}");
    assert!(out.contains("MISMATCH"), "{out}");
    let other_key = attestation::SigningKey::generate().unwrap().public_key();
    let wrong_key = verify(&other_key.to_base64(), warden_tests::guests::COUNTER_V1);
    assert_eq!(wrong_key.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wrong_key.stdout).contains("INVALID"));
    // An edited statement (another digest) under the real signature is refused.
    let mut edited: Value = serde_json::to_value(&envelope).unwrap();
    let mut forged = statement.clone();
    forged.digest = warden::component::digest(&bytes);
    edited["payload"] = json!(base64_encode(&serde_json::to_vec(&forged).unwrap()));
    std::fs::write(&file, edited.to_string()).unwrap();
    let forged_run = verify(&keys[0].public_key, tampered.to_str().unwrap());
    let out = String::from_utf8_lossy(&forged_run.stdout);
    assert_eq!(forged_run.status.code(), Some(1), "{out}");
    assert!(out.contains("INVALID"), "{out}");

    // Withdrawn: the attestation goes with the approval.
    let revoked = control
        .set_approval(&admin(), &driver, Approval::Revoked, None)
        .await
        .unwrap();
    assert!(revoked.attestation.is_none());
    control.shutdown().await;
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_upgrades_live_under_load_and_a_broken_version_rolls_back() {
    let db = TestDb::sqlite().await;
    let store = db.store().await;
    let control = Control::new(store.clone(), runtime(), ControlConfig::default());
    let v1 = register(&control, warden_tests::guests::COUNTER_V1).await;
    let v2 = register(&control, warden_tests::guests::COUNTER_V2).await;
    let broken = register(&control, warden_tests::guests::COUNTER_BROKEN).await;
    let other = register(&control, warden_tests::guests::BENCH_LOGIC).await;

    // Only approved versions: an upgrade to a pending one is refused, nothing moves.
    for driver in [&v1, &other] {
        control
            .set_approval(&admin(), driver, Approval::Approved, None)
            .await
            .unwrap();
    }
    let counters = modules_of(&store, &v1, MODULES).await;
    let others = modules_of(&store, &other, OTHERS).await;
    assert!(control.start_running().await.unwrap().is_empty());
    assert!(matches!(
        control.upgrade_driver(&admin(), &v1, &v2).await,
        Err(ControlError::NotApproved { .. })
    ));
    assert_eq!(
        exec(&control, &counters[0], "version", json!([])).await,
        "1.0.0"
    );
    control
        .set_approval(&admin(), &v2, Approval::Approved, None)
        .await
        .unwrap();
    // An upgrade to another driver's transport is refused too.
    let http = register(&control, warden_tests::guests::HTTP_JSON).await;
    control
        .set_approval(&admin(), &http, Approval::Approved, None)
        .await
        .unwrap();
    assert!(matches!(
        control.upgrade_driver(&admin(), &v1, &http).await,
        Err(ControlError::Upgrade(_))
    ));

    // Exec load on every module of both drivers while the upgrade runs: each command's
    // result is kept, and every one must be acknowledged.
    let mut events = control.runtime().events();
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for worker in 0..4usize {
        let control = control.clone();
        let stop = Arc::clone(&stop);
        let counters = counters.clone();
        let others = others.clone();
        load.push(tokio::spawn(async move {
            let mut seen: HashMap<String, Vec<(u64, String)>> = HashMap::new();
            let mut n = 0u64;
            let mut other_calls = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for (i, module) in counters.iter().enumerate() {
                    if i % 4 != worker {
                        continue;
                    }
                    n += 1;
                    let result = exec(&control, module, "tick", json!([n])).await;
                    assert_eq!(result["n"], n);
                    let version = result["version"].as_str().unwrap().to_string();
                    seen.entry(module.clone()).or_default().push((n, version));
                }
                let module = &others[worker % others.len()];
                assert_eq!(exec(&control, module, "add", json!([2, 3])).await, 5);
                other_calls += 1;
            }
            (seen, n, other_calls)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = control.upgrade_driver(&admin(), &v1, &v2).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acknowledged = 0u64;
    let mut switched = 0;
    for task in load {
        let (seen, _, other_calls) = task.await.unwrap();
        assert!(other_calls > 0);
        for (module, calls) in seen {
            acknowledged += calls.len() as u64;
            // Each module answers from 1.0.0, then from 2.0.0, never back.
            let first_v2 = calls.iter().position(|(_, v)| v == "2.0.0");
            if let Some(at) = first_v2 {
                switched += 1;
                assert!(
                    calls[at..].iter().all(|(_, v)| v == "2.0.0"),
                    "{module} went back to 1.0.0"
                );
            }
            assert!(calls.iter().all(|(_, v)| v == "1.0.0" || v == "2.0.0"));
        }
    }
    assert!(report.complete, "{report:?}");
    assert_eq!(report.modules.len(), MODULES);
    assert!(
        report
            .modules
            .iter()
            .all(|m| m.outcome == UpgradeOutcome::Upgraded)
    );
    assert!(
        acknowledged > MODULES as u64,
        "the load ran: {acknowledged}"
    );
    assert!(
        switched > 0,
        "some module answered from both versions under load"
    );
    // No module of either driver restarted, stopped or crashed: an upgrade is not a
    // restart, and the other driver's modules did not notice.
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(
                event,
                RuntimeEvent::Started { .. }
                    | RuntimeEvent::Stopped { .. }
                    | RuntimeEvent::Crashed { .. }
            ),
            "{event:?}"
        );
    }
    for module in &counters {
        assert_eq!(store.module(module).await.unwrap().driver_id, v2);
    }
    // Settings and status carried over: the label from the module's settings, with
    // 2.0.0's suffix; the last tick 1.0.0 or 2.0.0 counted is still in the status.
    assert_eq!(
        exec(&control, &counters[7], "label", json!([])).await,
        "room 7 (v2)"
    );
    let handle = control.runtime().module(&counters[7]).unwrap();
    assert_eq!(handle.status("version"), Some(json!("2.0.0")));
    assert!(handle.status("last").is_some());

    // A version that cannot start: the first module rolls back and keeps running 2.0.0,
    // the others are not tried; the reason is recorded.
    control
        .set_approval(&admin(), &broken, Approval::Approved, None)
        .await
        .unwrap();
    let report = control
        .upgrade_driver(&admin(), &v2, &broken)
        .await
        .unwrap();
    assert!(!report.complete);
    let first = &report.modules[0];
    assert_eq!(first.outcome, UpgradeOutcome::RolledBack, "{report:?}");
    let reason = first.reason.clone().unwrap();
    assert!(
        reason.contains("trapped") || reason.contains("unreachable"),
        "{reason}"
    );
    assert!(
        report.modules[1..]
            .iter()
            .all(|m| m.outcome == UpgradeOutcome::NotAttempted)
    );
    for module in &counters {
        assert_eq!(store.module(module).await.unwrap().driver_id, v2);
        assert_eq!(exec(&control, module, "version", json!([])).await, "2.0.0");
    }
    let audit = all_audit_entries(&store).await;
    let rolled_back = audit
        .iter()
        .find(|e| e.action == "module.upgrade_rolled_back")
        .unwrap();
    assert_eq!(rolled_back.target_id, first.module);
    assert!(audit.iter().any(|e| e.action == "driver.upgrade"));

    // Revoking 2.0.0's approval stops every module running it, and only those.
    control
        .set_approval(
            &Actor("user-reviewer".into()),
            &v2,
            Approval::Revoked,
            Some("found a bug".into()),
        )
        .await
        .unwrap();
    for module in &counters {
        assert!(
            control.runtime().module(module).is_none(),
            "{module} still runs"
        );
    }
    for module in &others {
        assert_eq!(exec(&control, module, "add", json!([1, 1])).await, 2);
    }
    assert!(matches!(
        control.start_module(&admin(), &counters[0]).await,
        Err(ControlError::NotApproved {
            state: "revoked",
            ..
        })
    ));
    control.shutdown().await;
}
