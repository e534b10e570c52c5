//! The store's test suite, run once against a temporary SQLite file and once against a
//! fresh PostgreSQL database (on 127.0.0.1:5432, or `WARDEN_TEST_POSTGRES`), created for
//! each test and dropped after it.

use std::path::PathBuf;

use serde_json::{Value, json};
use sqlx::{AnyPool, Connection};
use warden::crypto::{CryptoError, KeyId, KeyRing, MasterKey};
use warden::settings::{Audience, Level, ParentKind, Role};
use warden::store::{
    Actor, Approval, ApprovalDecision, Clock, KeySource, ListQuery, ModuleFilter, ModulePatch,
    NewDriver, NewModule, NewSystem, NewUser, NewZone, Store, StoreError, SystemPatch, UserPatch,
    ZonePatch,
};

/// The PostgreSQL server's maintenance database, where test databases are created.
fn postgres_admin_url() -> String {
    std::env::var("WARDEN_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// A database for one test: a SQLite file in a temporary directory or a PostgreSQL
/// database, removed when dropped (also when the test fails).
pub struct TestDb {
    pub url: String,
    dir: Option<PathBuf>,
    postgres: Option<String>,
}

impl TestDb {
    pub async fn sqlite() -> TestDb {
        let dir = std::env::temp_dir().join(format!(
            "warden-store-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TestDb {
            url: format!("sqlite://{}", dir.join("warden.db").display()),
            dir: Some(dir),
            postgres: None,
        }
    }

    pub async fn postgres() -> TestDb {
        sqlx::any::install_default_drivers();
        let name = format!("warden_test_{}_{}", std::process::id(), fastrand::u32(..));
        let admin = postgres_admin_url();
        let mut conn = sqlx::AnyConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| {
                panic!("PostgreSQL at {admin} (start it, or set WARDEN_TEST_POSTGRES): {e}")
            });
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        let base = admin.rsplit_once('/').unwrap().0;
        TestDb {
            url: format!("{base}/{name}"),
            dir: None,
            postgres: Some(name),
        }
    }

    /// A store on this database with `keys`.
    pub async fn store_with(&self, keys: KeySource) -> Store {
        Store::open(&self.url, keys).await.unwrap()
    }

    /// A store with a fresh single key.
    pub async fn store(&self) -> Store {
        self.store_with(KeySource::fixed(one_key(1))).await
    }

    /// A raw connection pool, to play the attacker or the crash.
    pub async fn raw(&self) -> AnyPool {
        sqlx::any::install_default_drivers();
        AnyPool::connect(&self.url).await.unwrap()
    }

    /// A directory for files beside the database (key files).
    pub fn scratch(&self) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "warden-store-keys-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some(name) = self.postgres.take() {
            // Dropped from a thread of its own: Drop cannot await, and the test's runtime
            // may be gone.
            let admin = postgres_admin_url();
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    if let Ok(mut conn) = sqlx::AnyConnection::connect(&admin).await {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&mut conn)
                                .await;
                        let _ = conn.close().await;
                    }
                });
            })
            .join();
        }
    }
}

fn one_key(id: u32) -> KeyRing {
    KeyRing::new(vec![MasterKey::generate(KeyId(id))], KeyId(id)).unwrap()
}

fn admin() -> Actor {
    Actor("user-admin".to_string())
}

fn zone(name: &str) -> NewZone {
    NewZone {
        name: name.to_string(),
        ..NewZone::default()
    }
}

fn system(name: &str) -> NewSystem {
    NewSystem {
        name: name.to_string(),
        ..NewSystem::default()
    }
}

/// A driver whose component is `bytes` and whose modules are called `generic`.
async fn driver(store: &Store, name: &str, generic: &str, defaults: Value) -> String {
    store
        .create_driver(
            &admin(),
            &NewDriver {
                name: name.to_string(),
                component: format!("component of {name}").into_bytes(),
                metadata: json!({"generic_name": generic, "default_settings": defaults}),
                source_repo: Some("https://example.invalid/drivers.git".to_string()),
                source_commit: Some("0123456789abcdef".to_string()),
                ..NewDriver::default()
            },
        )
        .await
        .unwrap()
        .id
}

async fn module(store: &Store, driver: &str, custom_name: Option<&str>) -> String {
    store
        .create_module(
            &admin(),
            &NewModule {
                driver_id: driver.to_string(),
                endpoint: Some("10.0.0.5:4352".to_string()),
                custom_name: custom_name.map(str::to_string),
                ..NewModule::default()
            },
        )
        .await
        .unwrap()
        .id
}

fn query(q: Option<&str>, limit: i64, offset: i64) -> ListQuery {
    ListQuery {
        q: q.map(str::to_string),
        limit,
        offset,
    }
}

on_both_backends!(
    migrations_run_once_and_reopen,
    zones_form_a_tree_without_cycles,
    lists_page_and_filter,
    systems_keep_zone_and_module_order,
    module_names_follow_placeos,
    home_system_follows_membership,
    drivers_store_components_once_and_track_approval,
    modules_filter_and_update,
    users_are_unique_and_validated,
    settings_are_sealed_at_rest,
    ciphertext_moved_to_another_row_or_level_fails,
    corrupt_truncated_and_wrong_key_records_name_the_record,
    settings_merge_and_visibility_level_by_level,
    settings_keep_their_history,
    rotation_reseals_everything_and_old_data_reads,
    history_uptime_and_pruning_with_controlled_time,
    audit_chain_verifies_and_detects_tampering,
    a_failed_change_leaves_nothing_behind,
    concurrent_writers_all_land,
);

async fn migrations_run_once_and_reopen(db: TestDb) {
    let store = db.store().await;
    let zone = store.create_zone(&admin(), &zone("Campus")).await.unwrap();
    store.close().await;
    // Reopening runs the migrations again: nothing changes, nothing is lost.
    let store = db.store().await;
    assert_eq!(store.zone(&zone.id).await.unwrap().name, "Campus");
}

async fn zones_form_a_tree_without_cycles(db: TestDb) {
    let store = db.store().await;
    let campus = store.create_zone(&admin(), &zone("Campus")).await.unwrap();
    let building = store
        .create_zone(
            &admin(),
            &NewZone {
                name: "  Building 1 ".to_string(),
                description: "North".to_string(),
                tags: vec!["building".to_string()],
                parent_id: Some(campus.id.clone()),
            },
        )
        .await
        .unwrap();
    assert_eq!(building.name, "Building 1", "names are trimmed");
    assert_eq!(building.tags, ["building"]);
    let level = store
        .create_zone(
            &admin(),
            &NewZone {
                parent_id: Some(building.id.clone()),
                ..zone("Level 3")
            },
        )
        .await
        .unwrap();

    // A zone cannot be moved under itself or its own descendant.
    for parent in [&level.id, &campus.id] {
        let error = store
            .update_zone(
                &admin(),
                &campus.id,
                &ZonePatch {
                    parent_id: Some(Some(parent.clone())),
                    ..ZonePatch::default()
                },
            )
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                StoreError::Invalid {
                    field: "parent_id",
                    ..
                }
            ),
            "{error}"
        );
    }
    let error = store
        .create_zone(
            &admin(),
            &NewZone {
                parent_id: Some("zone-missing".to_string()),
                ..zone("Orphan")
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::Invalid {
                field: "parent_id",
                ..
            }
        ),
        "{error}"
    );
    let error = store.create_zone(&admin(), &zone("   ")).await.unwrap_err();
    assert!(
        matches!(error, StoreError::Invalid { field: "name", .. }),
        "{error}"
    );

    // Children by parent; a zone with children cannot be deleted.
    let children = store
        .list_zones(&ListQuery::default(), Some(&building.id))
        .await
        .unwrap();
    assert_eq!(children.total, 1);
    assert_eq!(children.items[0].id, level.id);
    let error = store.delete_zone(&admin(), &building.id).await.unwrap_err();
    assert!(matches!(error, StoreError::Conflict(_)), "{error}");
    store.delete_zone(&admin(), &level.id).await.unwrap();
    store.delete_zone(&admin(), &building.id).await.unwrap();
    assert!(matches!(
        store.zone(&building.id).await.unwrap_err(),
        StoreError::NotFound { kind: "zone", .. }
    ));
}

async fn lists_page_and_filter(db: TestDb) {
    let store = db.store().await;
    for i in 0..25 {
        store
            .create_system(&admin(), &system(&format!("Room {i:02}")))
            .await
            .unwrap();
    }
    store
        .create_system(&admin(), &system("Boardroom 100%_off"))
        .await
        .unwrap();

    let first = store.list_systems(&query(None, 10, 0), None).await.unwrap();
    assert_eq!(first.total, 26);
    assert_eq!(first.items.len(), 10);
    let last = store
        .list_systems(&query(None, 10, 20), None)
        .await
        .unwrap();
    assert_eq!(last.items.len(), 6);
    let mut seen: Vec<String> = Vec::new();
    for offset in [0, 10, 20] {
        let page = store
            .list_systems(&query(None, 10, offset), None)
            .await
            .unwrap();
        seen.extend(page.items.into_iter().map(|s| s.id));
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 26, "pages neither overlap nor skip");

    // `q` matches anywhere, ignoring case; `%` and `_` are literal.
    let rooms = store
        .list_systems(&query(Some("ROOM 1"), 100, 0), None)
        .await
        .unwrap();
    assert_eq!(
        rooms.total, 11,
        "Room 10 to Room 19, and Boardroom 100%_off"
    );
    let percent = store
        .list_systems(&query(Some("100%_"), 100, 0), None)
        .await
        .unwrap();
    assert_eq!(percent.total, 1);
    let none = store
        .list_systems(&query(Some("m%1"), 100, 0), None)
        .await
        .unwrap();
    assert_eq!(none.total, 0, "% is not a wildcard");
    // Limits are bounded.
    let huge = store
        .list_systems(&query(None, 1_000_000, -5), None)
        .await
        .unwrap();
    assert_eq!(huge.items.len(), 26);
}

async fn systems_keep_zone_and_module_order(db: TestDb) {
    let store = db.store().await;
    let a = store.create_zone(&admin(), &zone("A")).await.unwrap().id;
    let b = store.create_zone(&admin(), &zone("B")).await.unwrap().id;
    let c = store.create_zone(&admin(), &zone("C")).await.unwrap().id;
    let room = store
        .create_system(
            &admin(),
            &NewSystem {
                name: "Room".to_string(),
                email: Some("room@example.com".to_string()),
                zones: vec![c.clone(), a.clone(), b.clone()],
                ..NewSystem::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(room.zones, [c.clone(), a.clone(), b.clone()]);
    assert_eq!(room.email.as_deref(), Some("room@example.com"));
    let updated = store
        .update_system(
            &admin(),
            &room.id,
            &SystemPatch {
                zones: Some(vec![b.clone(), c.clone()]),
                email: Some(None),
                ..SystemPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.zones, [b.clone(), c.clone()]);
    assert_eq!(updated.email, None);
    assert_eq!(store.system(&room.id).await.unwrap(), updated);

    for (patch, field) in [
        (
            SystemPatch {
                zones: Some(vec![a.clone(), a.clone()]),
                ..SystemPatch::default()
            },
            "zones",
        ),
        (
            SystemPatch {
                zones: Some(vec!["zone-nope".to_string()]),
                ..SystemPatch::default()
            },
            "zones",
        ),
        (
            SystemPatch {
                email: Some(Some("not an email".to_string())),
                ..SystemPatch::default()
            },
            "email",
        ),
    ] {
        let error = store
            .update_system(&admin(), &room.id, &patch)
            .await
            .unwrap_err();
        assert!(
            matches!(&error, StoreError::Invalid { field: f, .. } if *f == field),
            "{error}"
        );
    }
    assert_eq!(
        store.system(&room.id).await.unwrap(),
        updated,
        "a refused change changes nothing"
    );

    let in_zone = store
        .list_systems(&ListQuery::default(), Some(&c))
        .await
        .unwrap();
    assert_eq!(in_zone.total, 1);
    let in_a = store
        .list_systems(&ListQuery::default(), Some(&a))
        .await
        .unwrap();
    assert_eq!(in_a.total, 0);

    assert_eq!(
        store.systems_in_zone(&b).await.unwrap(),
        vec![room.id.clone()]
    );
    assert!(store.systems_in_zone(&a).await.unwrap().is_empty());
    // Deleting a zone takes it out of the systems that listed it.
    store.delete_zone(&admin(), &b).await.unwrap();
    assert_eq!(store.system(&room.id).await.unwrap().zones, [c]);
}

async fn module_names_follow_placeos(db: TestDb) {
    let store = db.store().await;
    let display = driver(&store, "Sony Bravia", "Display", json!({})).await;
    let switcher = driver(&store, "Extron DXP", "Switcher", json!({})).await;
    let left = module(&store, &display, None).await;
    let matrix = module(&store, &switcher, None).await;
    let right = module(&store, &display, None).await;
    let camera = module(&store, &display, Some("Camera")).await;
    let room = store
        .create_system(
            &admin(),
            &NewSystem {
                modules: vec![left.clone(), matrix.clone(), right.clone(), camera.clone()],
                ..system("Room")
            },
        )
        .await
        .unwrap();
    let names = store.system_module_names(&room.id).await.unwrap();
    assert_eq!(
        names,
        [
            ("Display_1".to_string(), left.clone()),
            ("Switcher_1".to_string(), matrix.clone()),
            ("Display_2".to_string(), right.clone()),
            ("Camera_1".to_string(), camera.clone()),
        ]
    );
    // Reordering renumbers.
    store
        .update_system(
            &admin(),
            &room.id,
            &SystemPatch {
                modules: Some(vec![right.clone(), left.clone()]),
                ..SystemPatch::default()
            },
        )
        .await
        .unwrap();
    let names = store.system_module_names(&room.id).await.unwrap();
    assert_eq!(
        names,
        [
            ("Display_1".to_string(), right.clone()),
            ("Display_2".to_string(), left.clone())
        ]
    );
    // Adding appends; removing closes the gap.
    store
        .add_system_module(&admin(), &room.id, &camera)
        .await
        .unwrap();
    store
        .remove_system_module(&admin(), &room.id, &right)
        .await
        .unwrap();
    let names = store.system_module_names(&room.id).await.unwrap();
    assert_eq!(
        names,
        [
            ("Display_1".to_string(), left),
            ("Camera_1".to_string(), camera)
        ]
    );
}

async fn home_system_follows_membership(db: TestDb) {
    let store = db.store().await;
    let display = driver(&store, "Display", "Display", json!({})).await;
    let shared = module(&store, &display, None).await;
    assert_eq!(store.module(&shared).await.unwrap().system_id, None);
    let first = store
        .create_system(&admin(), &system("First"))
        .await
        .unwrap()
        .id;
    let second = store
        .create_system(&admin(), &system("Second"))
        .await
        .unwrap()
        .id;
    store
        .add_system_module(&admin(), &first, &shared)
        .await
        .unwrap();
    store
        .add_system_module(&admin(), &second, &shared)
        .await
        .unwrap();
    assert_eq!(
        store.module(&shared).await.unwrap().system_id.as_deref(),
        Some(first.as_str())
    );
    // Leaving its home moves it to the system it is still in.
    store
        .remove_system_module(&admin(), &first, &shared)
        .await
        .unwrap();
    assert_eq!(
        store.module(&shared).await.unwrap().system_id.as_deref(),
        Some(second.as_str())
    );
    store.delete_system(&admin(), &second).await.unwrap();
    assert_eq!(store.module(&shared).await.unwrap().system_id, None);
    // Deleting a module takes it out of its systems.
    store
        .add_system_module(&admin(), &first, &shared)
        .await
        .unwrap();
    store.delete_module(&admin(), &shared).await.unwrap();
    assert!(store.system(&first).await.unwrap().modules.is_empty());
}

async fn drivers_store_components_once_and_track_approval(db: TestDb) {
    let store = db.store().await;
    let bytes = b"\0asm component bytes".to_vec();
    let new = NewDriver {
        name: "PJLink".to_string(),
        component: bytes.clone(),
        metadata: json!({"generic_name": "Projector"}),
        ..NewDriver::default()
    };
    let one = store.create_driver(&admin(), &new).await.unwrap();
    let two = store.create_driver(&admin(), &new).await.unwrap();
    assert_ne!(one.id, two.id);
    assert_eq!(one.digest, warden::component::digest(&bytes));
    assert_eq!(one.module_name, "Projector");
    assert_eq!(one.approval, Approval::Pending);
    assert_eq!(store.component(&one.digest).await.unwrap(), bytes);
    let raw = db.raw().await;
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM components")
        .fetch_one(&raw)
        .await
        .unwrap();
    assert_eq!(count, 1, "one copy per digest");

    // An approval must carry its signed statement; the store keeps it.
    let reviewer = Actor("user-reviewer".to_string());
    let unsigned = ApprovalDecision {
        approval: Approval::Approved,
        note: Some("read it".into()),
        at: 1_000,
        attestation: None,
    };
    assert!(matches!(
        store
            .set_driver_approval(&reviewer, &one.id, &unsigned)
            .await,
        Err(StoreError::Invalid {
            field: "attestation",
            ..
        })
    ));
    let key = store.signing_key().await.unwrap();
    assert_eq!(
        store.signing_key().await.unwrap().public_key(),
        key.public_key(),
        "one signing key, made once"
    );
    let statement = warden::attestation::Statement {
        kind: warden::attestation::STATEMENT_TYPE.into(),
        digest: one.digest.clone(),
        driver: warden::attestation::StatementDriver {
            id: one.id.clone(),
            name: one.name.clone(),
            version: "1".into(),
        },
        source: warden::attestation::StatementSource {
            repository: None,
            commit: None,
            path: None,
        },
        reviewer: warden::attestation::StatementReviewer {
            id: reviewer.0.clone(),
            email: None,
            name: None,
        },
        approved_at: warden::attestation::rfc3339(1_000),
        note: Some("read it".into()),
    };
    let envelope = key.sign(&statement).unwrap();
    let approved = store
        .set_driver_approval(
            &reviewer,
            &one.id,
            &ApprovalDecision {
                attestation: Some(envelope.clone()),
                ..unsigned
            },
        )
        .await
        .unwrap();
    assert_eq!(approved.approval, Approval::Approved);
    assert_eq!(approved.approved_by.as_deref(), Some("user-reviewer"));
    assert_eq!(approved.approval_note.as_deref(), Some("read it"));
    assert_eq!(approved.approved_at, Some(1_000));
    let stored = store.driver(&one.id).await.unwrap().attestation.unwrap();
    let published = store.signing_keys().await.unwrap();
    assert_eq!(published.len(), 1);
    let trusted = warden::attestation::PublicKey::parse(&published[0].public_key).unwrap();
    assert_eq!(
        warden::attestation::verify(&stored, &[trusted]).unwrap(),
        statement
    );
    // The private key is sealed, never stored in the clear.
    let sealed: Vec<u8> = sqlx::query_scalar("SELECT private_key FROM signing_keys")
        .fetch_one(&db.raw().await)
        .await
        .unwrap();
    assert!(
        !sealed
            .windows(32)
            .any(|w| key.pkcs8().windows(32).any(|k| k == w))
    );

    // A revocation withdraws every driver with the digest; its attestation goes.
    store
        .set_driver_approval(
            &reviewer,
            &one.id,
            &ApprovalDecision {
                approval: Approval::Revoked,
                note: Some("found a bug".into()),
                at: 2_000,
                attestation: None,
            },
        )
        .await
        .unwrap();
    for id in [&one.id, &two.id] {
        let driver = store.driver(id).await.unwrap();
        assert_eq!(driver.approval, Approval::Revoked, "{id}");
        assert!(driver.attestation.is_none());
    }
    assert_eq!(
        store.drivers_with_digest(&one.digest).await.unwrap().len(),
        2
    );

    // A component altered in the database is refused, naming it.
    sqlx::query("UPDATE components SET bytes = $1 WHERE digest = $2")
        .bind(b"\0asm something else".to_vec())
        .bind(&one.digest)
        .execute(&raw)
        .await
        .unwrap();
    let error = store.component(&one.digest).await.unwrap_err();
    assert!(
        matches!(&error, StoreError::Corrupt { record, .. } if record.contains(&one.digest)),
        "{error}"
    );

    // A driver in use cannot be deleted.
    let used = module(&store, &one.id, None).await;
    assert!(matches!(
        store.delete_driver(&admin(), &one.id).await.unwrap_err(),
        StoreError::Conflict(_)
    ));
    store.delete_module(&admin(), &used).await.unwrap();
    store.delete_driver(&admin(), &one.id).await.unwrap();
    store.delete_driver(&admin(), &two.id).await.unwrap();
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM components")
        .fetch_one(&raw)
        .await
        .unwrap();
    assert_eq!(count, 0, "the component goes with its last driver");
}

async fn modules_filter_and_update(db: TestDb) {
    let store = db.store().await;
    let display = driver(&store, "Display", "Display", json!({})).await;
    let lights = driver(&store, "Lights", "Lighting", json!({})).await;
    let a = module(&store, &display, None).await;
    let b = module(&store, &lights, None).await;
    store
        .update_module(
            &admin(),
            &b,
            &ModulePatch {
                running: Some(true),
                notes: Some("ceiling".to_string()),
                ..ModulePatch::default()
            },
        )
        .await
        .unwrap();
    let running = store
        .list_modules(
            &ListQuery::default(),
            &ModuleFilter {
                running: Some(true),
                ..ModuleFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(running.total, 1);
    assert_eq!(running.items[0].id, b);
    assert_eq!(running.items[0].notes, "ceiling");
    let of_display = store
        .list_modules(
            &ListQuery::default(),
            &ModuleFilter {
                driver_id: Some(display.clone()),
                ..ModuleFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        of_display.items.iter().map(|m| &m.id).collect::<Vec<_>>(),
        [&a]
    );

    // Bad endpoints and drivers are refused by field.
    for (patch, field) in [
        (
            ModulePatch {
                endpoint: Some(Some("no port".to_string())),
                ..ModulePatch::default()
            },
            "endpoint",
        ),
        (
            ModulePatch {
                driver_id: Some("driver-nope".to_string()),
                ..ModulePatch::default()
            },
            "driver_id",
        ),
    ] {
        let error = store.update_module(&admin(), &a, &patch).await.unwrap_err();
        assert!(
            matches!(&error, StoreError::Invalid { field: f, .. } if *f == field),
            "{error}"
        );
    }
    let error = store
        .create_module(
            &admin(),
            &NewModule {
                driver_id: display.clone(),
                uri: Some("ftp://device".to_string()),
                ..NewModule::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::Invalid { field: "uri", .. }),
        "{error}"
    );
}

async fn users_are_unique_and_validated(db: TestDb) {
    let store = db.store().await;
    let ada = store
        .create_user(
            &admin(),
            &NewUser {
                email: "Ada@Example.com".to_string(),
                first_name: "Ada".to_string(),
                last_name: "Lovelace".to_string(),
                roles: vec!["admin".to_string()],
                auth_source: "local".to_string(),
                ..NewUser::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(ada.email, "ada@example.com");
    assert_eq!(ada.username, "ada@example.com");
    assert_eq!(
        store
            .user_by_email("ADA@example.com")
            .await
            .unwrap()
            .unwrap()
            .id,
        ada.id
    );
    let duplicate = store
        .create_user(
            &admin(),
            &NewUser {
                email: "ada@example.COM".to_string(),
                username: Some("other".to_string()),
                auth_source: "local".to_string(),
                ..NewUser::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(duplicate, StoreError::Conflict(_)), "{duplicate}");
    let bad_role = store
        .update_user(
            &admin(),
            &ada.id,
            &UserPatch {
                roles: Some(vec!["root".to_string()]),
                ..UserPatch::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(bad_role, StoreError::Invalid { field: "roles", .. }),
        "{bad_role}"
    );
    let renamed = store
        .update_user(
            &admin(),
            &ada.id,
            &UserPatch {
                roles: Some(vec!["support".to_string(), "reviewer".to_string()]),
                last_name: Some("King".to_string()),
                ..UserPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(renamed.roles, ["support", "reviewer"]);
    assert_eq!(
        store
            .list_users(&query(Some("king"), 10, 0))
            .await
            .unwrap()
            .total,
        1
    );
    store.delete_user(&admin(), &ada.id).await.unwrap();
    assert_eq!(store.user_by_email("ada@example.com").await.unwrap(), None);
}

async fn settings_are_sealed_at_rest(db: TestDb) {
    let store = db.store().await;
    let display = driver(&store, "Display", "Display", json!({})).await;
    let projector = module(&store, &display, None).await;
    let secret = "correct-horse-battery-staple";
    store
        .set_settings(
            &admin(),
            ParentKind::Module,
            &projector,
            Level::NeverDisplayed,
            &json!({"password": secret}),
        )
        .await
        .unwrap();
    // Neither the current record nor its history holds the plaintext.
    let raw = db.raw().await;
    for table in ["settings", "settings_history"] {
        let values: Vec<Vec<u8>> = sqlx::query_scalar(&format!("SELECT value FROM {table}"))
            .fetch_all(&raw)
            .await
            .unwrap();
        assert!(!values.is_empty());
        for value in values {
            assert!(
                !value.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{table} holds the secret in clear"
            );
        }
    }
    if let Some(dir) = &db.dir {
        // Nor does any byte of the SQLite files (the WAL included).
        for entry in std::fs::read_dir(dir).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()));
        }
    }
    // Non-objects and oversized values are refused.
    for bad in [
        json!([1, 2]),
        json!("text"),
        json!({"big": "x".repeat(2 << 20)}),
    ] {
        let error = store
            .set_settings(&admin(), ParentKind::Module, &projector, Level::None, &bad)
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                StoreError::Invalid {
                    field: "settings",
                    ..
                }
            ),
            "{error}"
        );
    }
    let error = store
        .set_settings(
            &admin(),
            ParentKind::Zone,
            "zone-nope",
            Level::None,
            &json!({}),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::Invalid {
                field: "parent_id",
                ..
            }
        ),
        "{error}"
    );
}

async fn ciphertext_moved_to_another_row_or_level_fails(db: TestDb) {
    let store = db.store().await;
    let display = driver(&store, "Display", "Display", json!({})).await;
    let a = module(&store, &display, None).await;
    let b = module(&store, &display, None).await;
    let secret = store
        .set_settings(
            &admin(),
            ParentKind::Module,
            &a,
            Level::NeverDisplayed,
            &json!({"password": "a-secret"}),
        )
        .await
        .unwrap();
    let other_row = store
        .set_settings(
            &admin(),
            ParentKind::Module,
            &b,
            Level::None,
            &json!({"password": ""}),
        )
        .await
        .unwrap();
    let other_level = store
        .set_settings(
            &admin(),
            ParentKind::Module,
            &a,
            Level::None,
            &json!({"input": "hdmi"}),
        )
        .await
        .unwrap();
    let raw = db.raw().await;
    for target in [&other_row, &other_level] {
        sqlx::query(
            "UPDATE settings SET value = (SELECT value FROM settings WHERE id = $1) WHERE id = $2",
        )
        .bind(&secret.id)
        .bind(&target.id)
        .execute(&raw)
        .await
        .unwrap();
        let error = store
            .settings(target.parent_kind, &target.parent_id, target.level)
            .await
            .unwrap_err();
        match error {
            StoreError::Crypto(CryptoError::Forged(record)) => {
                assert!(record.contains(&target.id), "{record} names the record")
            }
            other => panic!("expected an authentication failure, got {other}"),
        }
        // The module's merged settings fail too: never silently empty.
        let merged = store
            .module_settings(&target.parent_id, Audience::Driver)
            .await;
        assert!(
            merged.is_err(),
            "merged settings must not hide a forged record"
        );
    }
    // A history version moved onto another revision fails too.
    store
        .set_settings(
            &admin(),
            ParentKind::Module,
            &a,
            Level::NeverDisplayed,
            &json!({"password": "newer"}),
        )
        .await
        .unwrap();
    sqlx::query(
        "UPDATE settings_history SET value = (SELECT value FROM settings_history \
         WHERE settings_id = $1 AND revision = 1) WHERE settings_id = $1 AND revision = 2",
    )
    .bind(&secret.id)
    .execute(&raw)
    .await
    .unwrap();
    let error = store.settings_history(&secret.id).await.unwrap_err();
    assert!(
        matches!(error, StoreError::Crypto(CryptoError::Forged(_))),
        "{error}"
    );
}

async fn corrupt_truncated_and_wrong_key_records_name_the_record(db: TestDb) {
    let store = db.store().await;
    let display = driver(&store, "Display", "Display", json!({})).await;
    let device = module(&store, &display, None).await;
    let record = store
        .set_settings(
            &admin(),
            ParentKind::Module,
            &device,
            Level::Admin,
            &json!({"username": "admin"}),
        )
        .await
        .unwrap();
    let raw = db.raw().await;
    let sealed: Vec<u8> = sqlx::query_scalar("SELECT value FROM settings WHERE id = $1")
        .bind(&record.id)
        .fetch_one(&raw)
        .await
        .unwrap();
    let read = || store.settings(ParentKind::Module, &device, Level::Admin);

    // Another installation's key with the same id: authentication fails.
    let stranger = db.store_with(KeySource::fixed(one_key(1))).await;
    let error = stranger
        .settings(ParentKind::Module, &device, Level::Admin)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::Crypto(CryptoError::Forged(r)) if r.contains(&record.id)),
        "{error}"
    );
    // A key id this host does not hold: named.
    let other = db.store_with(KeySource::fixed(one_key(7))).await;
    let error = other
        .settings(ParentKind::Module, &device, Level::Admin)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::Crypto(CryptoError::UnknownKey { record: r, key }) if r.contains(&record.id) && key.0 == 1),
        "{error}"
    );

    let mut flipped = sealed.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    let mut unknown_version = sealed.clone();
    unknown_version[0] = 0xee;
    for (bad, expect) in [
        (flipped, "forged"),
        (sealed[..10].to_vec(), "truncated"),
        (Vec::new(), "truncated"),
        (unknown_version, "version"),
    ] {
        sqlx::query("UPDATE settings SET value = $1 WHERE id = $2")
            .bind(bad)
            .bind(&record.id)
            .execute(&raw)
            .await
            .unwrap();
        let error = read().await.unwrap_err();
        let ok = match (&error, expect) {
            (StoreError::Crypto(CryptoError::Forged(r)), "forged") => r.contains(&record.id),
            (StoreError::Crypto(CryptoError::Truncated(r)), "truncated") => r.contains(&record.id),
            (
                StoreError::Crypto(CryptoError::UnknownVersion {
                    record: r,
                    version: 0xee,
                }),
                "version",
            ) => r.contains(&record.id),
            _ => false,
        };
        assert!(ok, "expected {expect}, got {error}");
        // The message names the record for the operator.
        assert!(error.to_string().contains(&record.id), "{error}");
        // Writing over a broken record is refused too (its history would be lost).
        assert!(
            store
                .set_settings(
                    &admin(),
                    ParentKind::Module,
                    &device,
                    Level::Admin,
                    &json!({})
                )
                .await
                .is_err()
        );
    }
    // Restoring the sealed bytes restores the settings: nothing was lost on the way.
    sqlx::query("UPDATE settings SET value = $1 WHERE id = $2")
        .bind(sealed)
        .bind(&record.id)
        .execute(&raw)
        .await
        .unwrap();
    assert_eq!(
        read().await.unwrap().unwrap().1,
        json!({"username": "admin"})
    );
}

async fn settings_merge_and_visibility_level_by_level(db: TestDb) {
    let store = db.store().await;
    let display = driver(
        &store,
        "Display",
        "Display",
        json!({"volume": 10, "inputs": {"hdmi": 1, "vga": 2}, "poll": 30}),
    )
    .await;
    let device = module(&store, &display, None).await;
    let building = store
        .create_zone(&admin(), &zone("Building"))
        .await
        .unwrap()
        .id;
    let level = store
        .create_zone(&admin(), &zone("Level"))
        .await
        .unwrap()
        .id;
    let room = store
        .create_system(
            &admin(),
            &NewSystem {
                zones: vec![building.clone(), level.clone()],
                modules: vec![device.clone()],
                ..system("Room")
            },
        )
        .await
        .unwrap()
        .id;
    let set = |kind, parent: String, level, value: Value| {
        let store = store.clone();
        async move {
            store
                .set_settings(&admin(), kind, &parent, level, &value)
                .await
                .unwrap();
        }
    };
    set(
        ParentKind::Driver,
        display.clone(),
        Level::None,
        json!({"poll": 60, "driver": true}),
    )
    .await;
    set(
        ParentKind::Zone,
        building.clone(),
        Level::None,
        json!({"volume": 20, "site": "north"}),
    )
    .await;
    set(
        ParentKind::Zone,
        level.clone(),
        Level::None,
        json!({"volume": 25, "inputs": {"usb": 3}}),
    )
    .await;
    set(
        ParentKind::System,
        room.clone(),
        Level::None,
        json!({"volume": 30}),
    )
    .await;
    set(
        ParentKind::Module,
        device.clone(),
        Level::None,
        json!({"inputs": {"vga": null}}),
    )
    .await;
    // The same key at every level of the module: the highest level readable wins.
    set(
        ParentKind::Module,
        device.clone(),
        Level::Support,
        json!({"secret_level": "support", "support_only": 1}),
    )
    .await;
    set(
        ParentKind::Module,
        device.clone(),
        Level::Admin,
        json!({"secret_level": "admin", "admin_only": 2}),
    )
    .await;
    set(
        ParentKind::Module,
        device.clone(),
        Level::NeverDisplayed,
        json!({"secret_level": "never", "password": "p4ss"}),
    )
    .await;
    // A lower level set later does not win over a higher one.
    set(
        ParentKind::Module,
        device.clone(),
        Level::None,
        json!({"inputs": {"vga": null}, "secret_level": "none"}),
    )
    .await;

    let base = json!({
        "volume": 30,                                    // system over zones over defaults
        "inputs": {"hdmi": 1, "vga": null, "usb": 3},    // objects merged deeply
        "poll": 60,                                      // driver settings over defaults
        "driver": true,
        "site": "north",
    });
    let with = |extra: Value| {
        let mut value = base.clone();
        for (k, v) in extra.as_object().unwrap() {
            value[k] = v.clone();
        }
        value
    };
    let expect = [
        (
            Audience::Driver,
            with(
                json!({"secret_level": "never", "support_only": 1, "admin_only": 2, "password": "p4ss"}),
            ),
        ),
        (
            Audience::Person(Role::User),
            with(json!({"secret_level": "none"})),
        ),
        (
            Audience::Person(Role::Support),
            with(json!({"secret_level": "support", "support_only": 1})),
        ),
        (
            Audience::Person(Role::Admin),
            with(json!({"secret_level": "admin", "support_only": 1, "admin_only": 2})),
        ),
    ];
    for (audience, expected) in expect {
        let merged = store.module_settings(&device, audience).await.unwrap();
        assert_eq!(merged, expected, "{audience:?}");
    }
    // Nobody reads never_displayed back, not even an admin.
    let admin_view = store
        .module_settings(&device, Audience::Person(Role::Admin))
        .await
        .unwrap();
    assert!(!admin_view.to_string().contains("p4ss"));

    // Zone order matters: swapping the zones swaps which volume wins below the system.
    store
        .delete_settings(&admin(), ParentKind::System, &room, Level::None)
        .await
        .unwrap();
    let before = store
        .module_settings(&device, Audience::Driver)
        .await
        .unwrap();
    assert_eq!(before["volume"], 25);
    store
        .update_system(
            &admin(),
            &room,
            &SystemPatch {
                zones: Some(vec![level.clone(), building.clone()]),
                ..SystemPatch::default()
            },
        )
        .await
        .unwrap();
    let after = store
        .module_settings(&device, Audience::Driver)
        .await
        .unwrap();
    assert_eq!(after["volume"], 20);

    // Which modules a change reaches.
    let mut reached = store
        .modules_under(ParentKind::Zone, &building)
        .await
        .unwrap();
    reached.sort();
    assert_eq!(reached, vec![device.clone()]);
    assert_eq!(
        store
            .modules_under(ParentKind::Driver, &display)
            .await
            .unwrap(),
        vec![device.clone()]
    );
    assert_eq!(
        store
            .modules_under(ParentKind::System, &room)
            .await
            .unwrap(),
        [device]
    );
}

async fn settings_keep_their_history(db: TestDb) {
    let store = db.store().await;
    let room = store
        .create_system(&admin(), &system("Room"))
        .await
        .unwrap()
        .id;
    let mut id = String::new();
    for revision in 1..=60 {
        let record = store
            .set_settings(
                &admin(),
                ParentKind::System,
                &room,
                Level::Support,
                &json!({"revision": revision}),
            )
            .await
            .unwrap();
        assert_eq!(record.revision, revision);
        id = record.id;
    }
    let history = store.settings_history(&id).await.unwrap();
    assert!(history.len() >= 20, "{} versions kept", history.len());
    assert_eq!(history.len() as i64, warden::store::SETTINGS_VERSIONS_KEPT);
    // Newest first, each with its value.
    assert_eq!(history[0].revision, 60);
    assert_eq!(history[0].value, json!({"revision": 60}));
    let oldest = history.last().unwrap();
    assert_eq!(oldest.value, json!({"revision": oldest.revision}));
    assert_eq!(store.settings_record(&id).await.unwrap().revision, 60);
    // Deleting a record deletes its versions too: a removed credential does not linger.
    store
        .delete_settings(&admin(), ParentKind::System, &room, Level::Support)
        .await
        .unwrap();
    assert_eq!(
        store
            .settings(ParentKind::System, &room, Level::Support)
            .await
            .unwrap(),
        None
    );
    assert!(matches!(
        store.settings_history(&id).await.unwrap_err(),
        StoreError::NotFound { .. }
    ));
    let raw = db.raw().await;
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM settings_history")
        .fetch_one(&raw)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

async fn rotation_reseals_everything_and_old_data_reads(db: TestDb) {
    let keys_dir = db.scratch();
    let key_file = keys_dir.join("master.key");
    let store = db
        .store_with(KeySource::file(&key_file, true).unwrap())
        .await;
    let room = store
        .create_system(&admin(), &system("Room"))
        .await
        .unwrap()
        .id;
    let display = driver(&store, "Display", "Display", json!({})).await;
    let mut devices = Vec::new();
    // More records than one reseal batch, each with some history.
    for i in 0..120 {
        let device = module(&store, &display, None).await;
        for revision in 0..2 {
            store
                .set_settings(
                    &admin(),
                    ParentKind::Module,
                    &device,
                    Level::Admin,
                    &json!({"i": i, "r": revision}),
                )
                .await
                .unwrap();
        }
        devices.push(device);
    }
    store
        .set_settings(
            &admin(),
            ParentKind::System,
            &room,
            Level::None,
            &json!({"room": true}),
        )
        .await
        .unwrap();
    // A local password's hash is sealed like a setting.
    let user = store
        .create_user(
            &admin(),
            &NewUser {
                email: "ann@example.org".into(),
                auth_source: "local".into(),
                ..NewUser::default()
            },
        )
        .await
        .unwrap();
    let phc = "$scrypt$ln=10,r=8,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo";
    store.set_password(&admin(), &user.id, phc).await.unwrap();
    let raw = db.raw().await;
    let sealed: Vec<u8> = sqlx::query_scalar("SELECT phc FROM user_passwords")
        .fetch_one(&raw)
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&sealed).contains("scrypt"));
    let before = store.records_by_key().await.unwrap();
    assert_eq!(before, [(1, 120 + 240 + 2 + 1)]);

    // A second process (the `warden keys rotate` command) rotates while this one runs.
    let rotator = db
        .store_with(KeySource::file(&key_file, false).unwrap())
        .await;
    let report = rotator.rotate_keys().await.unwrap();
    assert_eq!(report.active, 2);
    assert_eq!(report.resealed, 363);
    assert_eq!(report.records_by_key, [(2, 363)]);
    assert_eq!(
        store
            .password_hash(&user.id)
            .await
            .unwrap()
            .unwrap()
            .as_str(),
        phc
    );

    // The running store reads everything, and seals new writes under the new key.
    for (i, device) in devices.iter().enumerate() {
        let (_, value) = store
            .settings(ParentKind::Module, device, Level::Admin)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(value, json!({"i": i, "r": 1}));
    }
    let history = store
        .settings_history(
            &store
                .settings(ParentKind::Module, &devices[0], Level::Admin)
                .await
                .unwrap()
                .unwrap()
                .0
                .id,
        )
        .await
        .unwrap();
    assert_eq!(history.len(), 2);
    store
        .set_settings(
            &admin(),
            ParentKind::System,
            &room,
            Level::Support,
            &json!({"new": 1}),
        )
        .await
        .unwrap();
    assert_eq!(store.records_by_key().await.unwrap(), [(2, 365)]);

    // The old key can now be retired; a record under it would have stopped that.
    let old_record: Vec<u8> = {
        // Put a record back under key 1 by hand to show retirement is refused while used.
        let raw = db.raw().await;
        sqlx::query_scalar("SELECT value FROM settings LIMIT 1")
            .fetch_one(&raw)
            .await
            .unwrap()
    };
    assert!(!old_record.is_empty());
    let raw = db.raw().await;
    sqlx::query("UPDATE settings_history SET key_id = 1 WHERE revision = 1 AND settings_id = (SELECT MIN(settings_id) FROM settings_history)")
        .execute(&raw)
        .await
        .unwrap();
    let refused = rotator.retire_key(KeyId(1)).await.unwrap_err();
    assert!(matches!(refused, StoreError::Conflict(_)), "{refused}");
    sqlx::query("UPDATE settings_history SET key_id = 2 WHERE key_id = 1")
        .execute(&raw)
        .await
        .unwrap();
    rotator.retire_key(KeyId(1)).await.unwrap();
    assert_eq!(store.keys().current().unwrap().ids(), [KeyId(2)]);
    let text = std::fs::read_to_string(&key_file).unwrap();
    assert!(
        !text.contains("key 1 "),
        "the retired key is gone from the file"
    );
    // Everything still reads after retirement.
    assert_eq!(
        store
            .module_settings(&devices[119], Audience::Driver)
            .await
            .unwrap()["i"],
        119
    );
    let _ = std::fs::remove_dir_all(keys_dir);
}

async fn history_uptime_and_pruning_with_controlled_time(db: TestDb) {
    const DAY: i64 = 24 * 60 * 60 * 1000;
    let clock = Clock::manual(100 * DAY);
    let store = db.store().await.with_clock(clock.clone());
    let display = driver(&store, "Display", "Display", json!({})).await;
    let device = module(&store, &display, None).await;
    let other = module(&store, &display, None).await;
    // Day 0 online, day 10 offline, day 11 online, day 40 offline, day 40.5 online.
    let start = 0;
    for (at, online) in [
        (0, true),
        (10 * DAY, false),
        (11 * DAY, true),
        (40 * DAY, false),
        (40 * DAY + DAY / 2, true),
    ] {
        clock.set(start + at);
        store
            .record_transition(
                &device,
                online,
                if online { "connected" } else { "timeout" },
            )
            .await
            .unwrap();
    }
    store
        .record_transitions(&[(other.clone(), true, "connected".to_string(), 5 * DAY)])
        .await
        .unwrap();

    let report = store.module_history(&device, 0, 50 * DAY).await.unwrap();
    assert_eq!(report.transitions.len(), 5);
    assert_eq!(report.transitions[1].reason, "timeout");
    assert_eq!(report.known_ms, 50 * DAY);
    assert_eq!(report.online_ms, 50 * DAY - DAY - DAY / 2);
    assert!((report.uptime_percent.unwrap() - 97.0).abs() < 1e-9);
    // A range that starts mid-outage carries the state in.
    let window = store
        .module_history(&device, 10 * DAY + DAY / 2, 11 * DAY + DAY / 2)
        .await
        .unwrap();
    assert_eq!(window.initial, Some(false));
    assert_eq!(window.transitions.len(), 1);
    assert!((window.uptime_percent.unwrap() - 50.0).abs() < 1e-9);
    // Nothing known: no percentage.
    let unknown = store.module_history("mod-never", 0, DAY).await.unwrap();
    assert_eq!(unknown.uptime_percent, None);

    // One month's retention at day 45: keeps day 40 on, plus the last row before the cutoff
    // (day 11) so day 14 onwards is still known.
    let retention = warden::store::DEFAULT_HISTORY_RETENTION.as_millis() as i64;
    let deleted = store.prune_history(45 * DAY, retention).await.unwrap();
    assert_eq!(deleted, 2, "day 0 and day 10 go");
    let after = store.module_history(&device, 0, 50 * DAY).await.unwrap();
    assert_eq!(
        after.transitions.iter().map(|t| t.at).collect::<Vec<_>>(),
        [11 * DAY, 40 * DAY, 40 * DAY + DAY / 2]
    );
    let kept = store.module_history(&other, 0, 50 * DAY).await.unwrap();
    assert_eq!(
        kept.transitions.len(),
        1,
        "each module keeps its last known state"
    );
    // Pruning again removes nothing more.
    assert_eq!(store.prune_history(45 * DAY, retention).await.unwrap(), 0);

    // A burst larger than one INSERT statement lands whole and in order.
    let burst: Vec<(String, bool, String, i64)> = (0..601)
        .map(|i| {
            (
                "mod-burst".to_string(),
                i % 2 == 0,
                format!("#{i}"),
                46 * DAY + i,
            )
        })
        .collect();
    store.record_transitions(&burst).await.unwrap();
    let report = store
        .module_history("mod-burst", 46 * DAY, 47 * DAY)
        .await
        .unwrap();
    assert_eq!(report.transitions.len(), 601);
    assert_eq!(report.transitions[600].reason, "#600");
    assert!(report.transitions[600].online);
}

async fn audit_chain_verifies_and_detects_tampering(db: TestDb) {
    let store = db.store().await;
    let zone_id = store
        .create_zone(&admin(), &zone("Campus"))
        .await
        .unwrap()
        .id;
    let room = store
        .create_system(&admin(), &system("Room"))
        .await
        .unwrap()
        .id;
    store
        .set_settings(
            &Actor("user-support".to_string()),
            ParentKind::System,
            &room,
            Level::Admin,
            &json!({"pin": "1234"}),
        )
        .await
        .unwrap();
    store
        .audit(
            &warden::store::NewAuditEntry::new(&admin(), "module.exec", "module", "mod-x")
                .details(json!({"method": "power", "args": [true]})),
        )
        .await
        .unwrap();
    let entries = store.audit_entries(0, 100).await.unwrap();
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "zone.create",
            "system.create",
            "settings.set",
            "module.exec"
        ]
    );
    assert_eq!(entries[0].target_id, zone_id);
    assert_eq!(entries[2].actor, "user-support");
    // Settings changes name the keys, never the values.
    assert_eq!(entries[2].details["changed_keys"], json!(["pin"]));
    assert!(!entries[2].details.to_string().contains("1234"));
    let verified = store.verify_audit().await.unwrap();
    assert_eq!(verified.entries, 4);
    assert_eq!(verified.broken, None);

    // The log is append-only at the database.
    let raw = db.raw().await;
    for statement in [
        "UPDATE audit_log SET actor = 'someone' WHERE seq = 2",
        "DELETE FROM audit_log WHERE seq = 4",
    ] {
        let error = sqlx::query(statement).execute(&raw).await.unwrap_err();
        assert!(error.to_string().contains("append-only"), "{error}");
    }

    // Someone with the database owner's rights drops the guard and rewrites history.
    let drop_guards: &[&str] = match store.backend() {
        warden::store::Backend::Sqlite => &[
            "DROP TRIGGER audit_log_no_update",
            "DROP TRIGGER audit_log_no_delete",
        ],
        warden::store::Backend::Postgres => &["ALTER TABLE audit_log DISABLE TRIGGER USER"],
    };
    for statement in drop_guards {
        sqlx::query(statement).execute(&raw).await.unwrap();
    }
    sqlx::query("UPDATE audit_log SET actor = 'someone-else' WHERE seq = 2")
        .execute(&raw)
        .await
        .unwrap();
    let broken = store.verify_audit().await.unwrap();
    assert_eq!(broken.broken.as_ref().map(|b| b.0), Some(2), "{broken:?}");
    sqlx::query("UPDATE audit_log SET actor = 'user-admin' WHERE seq = 2")
        .execute(&raw)
        .await
        .unwrap();
    assert_eq!(store.verify_audit().await.unwrap().broken, None);
    // Removing an entry in the middle, or the newest one, is found too.
    sqlx::query("DELETE FROM audit_log WHERE seq = 4")
        .execute(&raw)
        .await
        .unwrap();
    let tail = store.verify_audit().await.unwrap();
    assert!(
        tail.broken.is_some(),
        "a removed newest entry is detected by the head"
    );
    sqlx::query("DELETE FROM audit_log WHERE seq = 2")
        .execute(&raw)
        .await
        .unwrap();
    let middle = store.verify_audit().await.unwrap();
    assert_eq!(middle.broken.as_ref().map(|b| b.0), Some(2), "{middle:?}");
}

async fn a_failed_change_leaves_nothing_behind(db: TestDb) {
    let store = db.store().await;
    let room = store
        .create_system(&admin(), &system("Room"))
        .await
        .unwrap()
        .id;
    let entries_before = store.audit_entries(0, 1000).await.unwrap().len();
    // A change that fails half-way (an unknown module after valid zone changes) is undone whole.
    let campus = store
        .create_zone(&admin(), &zone("Campus"))
        .await
        .unwrap()
        .id;
    let error = store
        .update_system(
            &admin(),
            &room,
            &SystemPatch {
                name: Some("Renamed".to_string()),
                zones: Some(vec![campus.clone()]),
                modules: Some(vec!["mod-missing".to_string()]),
                ..SystemPatch::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::Invalid {
                field: "modules",
                ..
            }
        ),
        "{error}"
    );
    let unchanged = store.system(&room).await.unwrap();
    assert_eq!(unchanged.name, "Room");
    assert!(unchanged.zones.is_empty());
    assert_eq!(
        store.audit_entries(0, 1000).await.unwrap().len(),
        entries_before + 1
    );
    assert_eq!(store.verify_audit().await.unwrap().broken, None);

    // What was acknowledged survives the process going away without closing anything.
    let acknowledged = store
        .set_settings(
            &admin(),
            ParentKind::System,
            &room,
            Level::None,
            &json!({"kept": true}),
        )
        .await
        .unwrap();
    drop(store);
    let reopened = db.store_with(KeySource::fixed(one_key(1))).await;
    // A fresh key cannot read it, but the record is there, intact.
    assert_eq!(
        reopened
            .settings_record(&acknowledged.id)
            .await
            .unwrap()
            .revision,
        1
    );
}

async fn concurrent_writers_all_land(db: TestDb) {
    let store = db.store().await;
    let display = driver(&store, "Display", "Display", json!({})).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        let display = display.clone();
        tasks.push(tokio::spawn(async move {
            for j in 0..10 {
                let device = module(&store, &display, None).await;
                store
                    .set_settings(
                        &admin(),
                        ParentKind::Module,
                        &device,
                        Level::None,
                        &json!({"i": i, "j": j}),
                    )
                    .await
                    .unwrap();
                store
                    .record_transition(&device, true, "connected")
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let modules = store
        .list_modules(&ListQuery::default(), &ModuleFilter::default())
        .await
        .unwrap();
    assert_eq!(modules.total, 80);
    let verified = store.verify_audit().await.unwrap();
    assert_eq!(verified.broken, None);
    assert_eq!(verified.entries, 1 + 160);
}
