//! `warden keys` and `warden audit`, run as the real binary against a data directory a
//! store created, and a PostgreSQL database.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::json;
use warden::data_dir::DataDir;
use warden::settings::{Level, ParentKind};
use warden::store::{Actor, NewSystem, Store};

use crate::store::TestDb;

fn warden(args: &[&str]) -> Output {
    Command::new(warden_tests::warden_bin())
        .args(args)
        .env_remove("WARDEN_MASTER_KEYS")
        .env_remove("WARDEN_DATA_DIR")
        .env_remove("WARDEN_DATABASE_URL")
        .output()
        .expect("run warden")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A store with a few sealed settings in it.
async fn populate(store: &Store) {
    let actor = Actor("cli-test".to_string());
    for i in 0..3 {
        let room = store
            .create_system(
                &actor,
                &NewSystem {
                    name: format!("Room {i}"),
                    ..NewSystem::default()
                },
            )
            .await
            .unwrap()
            .id;
        store
            .set_settings(
                &actor,
                ParentKind::System,
                &room,
                Level::Admin,
                &json!({"pin": i}),
            )
            .await
            .unwrap();
    }
}

async fn keys_and_audit_commands(data_dir: &Path, database_url: Option<String>) {
    let dir = DataDir::new(data_dir, database_url.clone());
    let store = dir.open_store(true).await.unwrap();
    populate(&store).await;
    let mut common = vec!["--data-dir".to_string(), data_dir.display().to_string()];
    if let Some(url) = &database_url {
        common.extend(["--database-url".to_string(), url.clone()]);
    }
    let run = |command: &[&str]| {
        let mut args: Vec<&str> = command.to_vec();
        args.extend(common.iter().map(String::as_str));
        warden(&args)
    };

    let status = run(&["keys", "status"]);
    assert!(status.status.success(), "{}", text(&status));
    assert!(
        text(&status).contains("key 1: 6 records  active"),
        "{}",
        text(&status)
    );

    let rotated = run(&["keys", "rotate"]);
    assert!(rotated.status.success(), "{}", text(&rotated));
    let out = text(&rotated);
    assert!(
        out.contains("key 2 is now active; 6 sealed records re-encrypted"),
        "{out}"
    );
    assert!(
        out.contains("key 1: 0 records") && out.contains("key 2: 6 records  active"),
        "{out}"
    );
    // The key material never reaches the output.
    let key_file = std::fs::read_to_string(dir.key_file()).unwrap();
    for line in key_file.lines().filter(|l| l.starts_with("key ")) {
        let material = line.rsplit(' ').next().unwrap();
        assert!(!out.contains(material));
    }

    // The store that was open all along still reads everything.
    for room in store
        .list_systems(&Default::default(), None)
        .await
        .unwrap()
        .items
    {
        store
            .settings(ParentKind::System, &room.id, Level::Admin)
            .await
            .unwrap()
            .unwrap();
    }

    let active = run(&["keys", "retire", "2"]);
    assert_eq!(active.status.code(), Some(2));
    assert!(text(&active).contains("active key"), "{}", text(&active));
    let retired = run(&["keys", "retire", "1"]);
    assert!(retired.status.success(), "{}", text(&retired));
    assert!(
        !std::fs::read_to_string(dir.key_file())
            .unwrap()
            .contains("key 1 ")
    );

    let verified = run(&["audit", "verify"]);
    assert!(verified.status.success(), "{}", text(&verified));
    assert!(
        text(&verified).contains("audit log intact: 6 entries"),
        "{}",
        text(&verified)
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_retire_and_audit_verify_on_sqlite() {
    let db = TestDb::sqlite().await;
    let data_dir = db.scratch();
    keys_and_audit_commands(&data_dir, None).await;
    // Tampering is reported with the entry, and a non-zero exit.
    let raw = sqlx::AnyPool::connect(&format!(
        "sqlite://{}",
        data_dir.join("warden.db").display()
    ))
    .await
    .unwrap();
    sqlx::query("DROP TRIGGER audit_log_no_update")
        .execute(&raw)
        .await
        .unwrap();
    sqlx::query("UPDATE audit_log SET details = '{}' WHERE seq = 4")
        .execute(&raw)
        .await
        .unwrap();
    raw.close().await;
    let broken = warden(&[
        "audit",
        "verify",
        "--data-dir",
        &data_dir.display().to_string(),
    ]);
    assert_eq!(broken.status.code(), Some(1), "{}", text(&broken));
    assert!(
        text(&broken).contains("BROKEN at entry 4"),
        "{}",
        text(&broken)
    );
    let _ = std::fs::remove_dir_all(data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_retire_and_audit_verify_on_postgres() {
    let db = TestDb::postgres().await;
    let data_dir = db.scratch();
    keys_and_audit_commands(&data_dir, Some(db.url.clone())).await;
    let _ = std::fs::remove_dir_all(data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_exposed_key_file_is_refused() {
    let db = TestDb::sqlite().await;
    let data_dir = db.scratch();
    let dir_arg = data_dir.display().to_string();
    // Nothing there yet: no database, nothing created.
    let empty = warden(&["audit", "verify", "--data-dir", &dir_arg]);
    assert_eq!(empty.status.code(), Some(2));
    assert!(text(&empty).contains("does not exist"), "{}", text(&empty));
    assert!(!data_dir.join("master.key").exists() && !data_dir.join("warden.db").exists());

    let dir = DataDir::new(&data_dir, None);
    let store = dir.open_store(true).await.unwrap();
    populate(&store).await;
    store.close().await;
    let mode = std::fs::metadata(dir.key_file())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "created readable by its owner only");

    std::fs::set_permissions(dir.key_file(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let exposed = warden(&["keys", "status", "--data-dir", &dir_arg]);
    assert_eq!(exposed.status.code(), Some(2));
    assert!(
        text(&exposed).contains("others can read it; refusing"),
        "{}",
        text(&exposed)
    );
    // The library refuses the same way: a host would not start.
    let error = dir.open_store(false).await.unwrap_err();
    assert!(error.to_string().contains("refusing"), "{error}");

    std::fs::remove_file(dir.key_file()).unwrap();
    let missing = warden(&["keys", "rotate", "--data-dir", &dir_arg]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        text(&missing).contains("master key file") && text(&missing).contains("does not exist")
    );
    // Without its key the data stays sealed: no new key is made behind the operator's back.
    assert!(!dir.key_file().exists());
    let _ = std::fs::remove_dir_all(data_dir);
}
