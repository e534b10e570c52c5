//! A process killed (SIGKILL) in the middle of writing loses nothing it had acknowledged,
//! and leaves the store consistent: the settings, their versions, the history and the
//! audit chain all agree. On SQLite and PostgreSQL.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use warden::crypto::KeyRing;
use warden::settings::{Level, ParentKind};
use warden::store::KeySource;

use crate::store::TestDb;

async fn killed_mid_write_loses_nothing(db: TestDb) {
    let keys_dir = db.scratch();
    let key_file = keys_dir.join("master.key");
    KeyRing::create_file(&key_file).unwrap();
    // Create the schema first, so the writer is killed while writing data.
    db.store_with(KeySource::file(&key_file, false).unwrap())
        .await
        .close()
        .await;

    let mut writer = Command::new(env!("CARGO_BIN_EXE_store-writer"))
        .args([&db.url, &key_file.display().to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(writer.stdout.take().unwrap()).lines();
    let mut acknowledged = (String::new(), 0_i64);
    while acknowledged.1 < 150 {
        let line = lines.next().expect("the writer stopped early").unwrap();
        let (system, n) = line.split_once(' ').unwrap();
        acknowledged = (system.to_string(), n.parse().unwrap());
    }
    writer.kill().unwrap(); // SIGKILL: no destructor, no flush, no close.
    writer.wait().unwrap();
    let (system, acked) = acknowledged;

    let store = db
        .store_with(KeySource::file(&key_file, false).unwrap())
        .await;
    let (record, value) = store
        .settings(ParentKind::System, &system, Level::Admin)
        .await
        .unwrap()
        .expect("the settings survive");
    let n = value["n"].as_i64().unwrap();
    // Everything acknowledged is there; at most the write in flight went further.
    assert!(
        n == acked || n == acked + 1,
        "acknowledged {acked}, found {n}"
    );
    assert_eq!(record.revision, n);
    let versions = store.settings_history(&record.id).await.unwrap();
    assert_eq!(versions[0].revision, n);
    assert_eq!(versions[0].value["n"], n);
    let history = store.module_history(&system, 0, i64::MAX).await.unwrap();
    assert!(history.transitions.len() as i64 >= acked);
    // Every committed change has its audit entry and the chain is whole.
    let verified = store.verify_audit().await.unwrap();
    assert_eq!(verified.broken, None);
    assert_eq!(
        verified.entries,
        1 + n,
        "the system's creation and each settings change"
    );
    let _ = std::fs::remove_dir_all(keys_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_killed_mid_write_loses_nothing() {
    killed_mid_write_loses_nothing(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_killed_mid_write_loses_nothing() {
    killed_mid_write_loses_nothing(TestDb::postgres().await).await;
}
