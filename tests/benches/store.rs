//! Store benchmark (issue 4): what reading a module's settings costs (every record opened
//! and merged), and how many device-history transitions the store records per second, on
//! a SQLite file and on PostgreSQL. Results and their analysis: docs/performance.md,
//! "Store (issue 4)".
//!
//! `cargo bench -p warden-tests --bench store` (add `-- --quick` for smaller counts;
//! PostgreSQL at `WARDEN_TEST_POSTGRES` or postgres://postgres@127.0.0.1:5432/postgres,
//! skipped with a note when it cannot be reached). It prints one labelled line per figure
//! and has no targets.
//!
//! 1. Settings read: a module in a system with three zones, under a driver with 20
//!    default settings. Nine sealed records lie on its path (the driver, each zone, the
//!    system at two levels, the module at three), each a JSON object of about 1 KiB with
//!    nested objects. `Store::module_settings` for the driver's audience reads the
//!    module, driver and system rows, opens all nine records and merges them. The two
//!    parts without the database are timed apart: opening one record (AES-256-GCM) and
//!    merging the nine opened layers.
//! 2. History: `record_transition` one at a time (one transaction each, as a lone event),
//!    and `record_transitions` in batches of 500 (one transaction per batch, as the
//!    recorder writes a burst), over 200 modules.

#[path = "support/stats.rs"]
mod stats;

use std::hint::black_box;
use std::time::Instant;

use anyhow::Context;
use serde_json::{Value, json};
use sqlx::Connection;
use stats::Stats;
use warden::crypto::{Binding, KeyId, KeyRing, MasterKey};
use warden::settings::{Audience, Level, ParentKind, ParentSettings, merge_layers};
use warden::store::{Actor, KeySource, NewDriver, NewModule, NewSystem, NewZone, Store};

struct Counts {
    reads: usize,
    opens: usize,
    single: usize,
    batches: usize,
}

/// A JSON object of about 1 KiB: 12 scalar keys and two nested objects, keys prefixed by
/// `tag` so that layers overlap only where meant to.
fn layer(tag: &str) -> Value {
    let mut object = serde_json::Map::new();
    for i in 0..12 {
        object.insert(
            format!("{tag}_key_{i}"),
            json!(format!("value {i} of {tag} ....")),
        );
    }
    object.insert(
        "inputs".to_string(),
        json!({ format!("{tag}_hdmi"): {"label": tag, "number": 1, "enabled": true}, "shared": tag }),
    );
    object.insert(
        "polling".to_string(),
        json!({"interval_ms": 30_000, "by": tag, "list": [1, 2, 3, 4, 5, 6, 7, 8]}),
    );
    Value::Object(object)
}

async fn building(store: &Store) -> anyhow::Result<String> {
    let actor = Actor("bench".to_string());
    let mut defaults = serde_json::Map::new();
    for i in 0..20 {
        defaults.insert(format!("default_{i}"), json!(i));
    }
    let driver = store
        .create_driver(
            &actor,
            &NewDriver {
                name: "Bench".to_string(),
                component: b"bench component".to_vec(),
                metadata: json!({"generic_name": "Display", "default_settings": defaults}),
                ..NewDriver::default()
            },
        )
        .await?
        .id;
    let module = store
        .create_module(
            &actor,
            &NewModule {
                driver_id: driver.clone(),
                endpoint: Some("10.0.0.1:4352".to_string()),
                ..NewModule::default()
            },
        )
        .await?
        .id;
    let mut zones = Vec::new();
    for name in ["Campus", "Building", "Level"] {
        let zone = store
            .create_zone(
                &actor,
                &NewZone {
                    name: name.to_string(),
                    ..NewZone::default()
                },
            )
            .await?
            .id;
        store
            .set_settings(&actor, ParentKind::Zone, &zone, Level::None, &layer(name))
            .await?;
        zones.push(zone);
    }
    let system = store
        .create_system(
            &actor,
            &NewSystem {
                name: "Room".to_string(),
                zones,
                modules: vec![module.clone()],
                ..NewSystem::default()
            },
        )
        .await?
        .id;
    let records = [
        (ParentKind::Driver, &driver, Level::None),
        (ParentKind::System, &system, Level::None),
        (ParentKind::System, &system, Level::Support),
        (ParentKind::Module, &module, Level::None),
        (ParentKind::Module, &module, Level::Admin),
        (ParentKind::Module, &module, Level::NeverDisplayed),
    ];
    for (kind, parent, level) in records {
        store
            .set_settings(&actor, kind, parent, level, &layer(level.as_str()))
            .await?;
    }
    Ok(module)
}

async fn settings_read(store: &Store, module: &str, counts: &Counts) -> anyhow::Result<Stats> {
    for _ in 0..counts.reads / 10 {
        black_box(store.module_settings(module, Audience::Driver).await?);
    }
    let mut samples = Vec::with_capacity(counts.reads);
    for _ in 0..counts.reads {
        let start = Instant::now();
        black_box(store.module_settings(module, Audience::Driver).await?);
        samples.push(start.elapsed());
    }
    Ok(Stats::of(samples))
}

async fn history(store: &Store, counts: &Counts) -> anyhow::Result<(f64, f64)> {
    let module = |i: usize| format!("mod-bench{:04}", i % 200);
    let start = Instant::now();
    for i in 0..counts.single {
        store
            .record_transition(&module(i), i % 2 == 0, "bench")
            .await?;
    }
    let single = counts.single as f64 / start.elapsed().as_secs_f64();
    let now = store.now();
    let start = Instant::now();
    for b in 0..counts.batches {
        let batch: Vec<(String, bool, String, i64)> = (0..500)
            .map(|i| {
                (
                    module(i),
                    (b + i) % 2 == 0,
                    "bench".to_string(),
                    now + i as i64,
                )
            })
            .collect();
        store.record_transitions(&batch).await?;
    }
    let batched = (counts.batches * 500) as f64 / start.elapsed().as_secs_f64();
    Ok((single, batched))
}

async fn run_backend(label: &str, url: &str, counts: &Counts) -> anyhow::Result<()> {
    let ring = KeyRing::new(vec![MasterKey::generate(KeyId(1))], KeyId(1))?;
    let store = Store::open(url, KeySource::fixed(ring)).await?;
    let module = building(&store).await?;
    let read = settings_read(&store, &module, counts).await?;
    println!("{label}: settings read (9 sealed records, decrypt + merge): {read}");
    let (single, batched) = history(&store, counts).await?;
    println!(
        "{label}: history inserts: {single:.0} transitions/s one per transaction, \
         {batched:.0}/s in batches of 500"
    );
    store.close().await;
    Ok(())
}

/// Opening one ~1 KiB record and merging nine opened layers, without the database.
fn pure_parts(counts: &Counts) -> anyhow::Result<()> {
    let ring = KeyRing::new(vec![MasterKey::generate(KeyId(1))], KeyId(1))?;
    let binding = Binding {
        table: "settings",
        row: "setting-0123456789ab",
        field: "value",
        level: "admin",
    };
    let plaintext = layer("admin").to_string();
    let sealed = ring.seal(&binding, plaintext.as_bytes())?;
    let mut samples = Vec::with_capacity(counts.opens / 1000);
    for _ in 0..counts.opens / 1000 {
        let start = Instant::now();
        for _ in 0..1000 {
            black_box(ring.open(black_box(&binding), black_box(&sealed))?);
        }
        samples.push(start.elapsed() / 1000);
    }
    println!(
        "open one sealed record ({} bytes of JSON): {}",
        plaintext.len(),
        Stats::of(samples)
    );

    let mut defaults = serde_json::Map::new();
    for i in 0..20 {
        defaults.insert(format!("default_{i}"), json!(i));
    }
    let defaults = Value::Object(defaults);
    let mut layers: Vec<ParentSettings> = Vec::new();
    for tag in ["driver", "Campus", "Building", "Level"] {
        layers.push([(Level::None, layer(tag))].into_iter().collect());
    }
    layers.push(
        [Level::None, Level::Support]
            .into_iter()
            .map(|l| (l, layer(l.as_str())))
            .collect(),
    );
    layers.push(
        [Level::None, Level::Admin, Level::NeverDisplayed]
            .into_iter()
            .map(|l| (l, layer(l.as_str())))
            .collect(),
    );
    let mut samples = Vec::with_capacity(counts.opens / 1000);
    for _ in 0..counts.opens / 1000 {
        let start = Instant::now();
        for _ in 0..100 {
            black_box(merge_layers(
                &defaults,
                black_box(&layers),
                Audience::Driver,
            ));
        }
        samples.push(start.elapsed() / 100);
    }
    println!(
        "merge nine opened layers over the defaults: {}",
        Stats::of(samples)
    );
    Ok(())
}

async fn postgres_database() -> anyhow::Result<(String, String, String)> {
    let admin = std::env::var("WARDEN_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string());
    let name = format!("warden_bench_{}", std::process::id());
    let mut conn = sqlx::AnyConnection::connect(&admin).await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    let base = admin.rsplit_once('/').context("admin URL")?.0;
    Ok((admin.clone(), name.clone(), format!("{base}/{name}")))
}

async fn drop_postgres(admin: &str, name: &str) -> anyhow::Result<()> {
    let mut conn = sqlx::AnyConnection::connect(admin).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let counts = if quick {
        Counts {
            reads: 300,
            opens: 20_000,
            single: 300,
            batches: 4,
        }
    } else {
        Counts {
            reads: 3_000,
            opens: 200_000,
            single: 3_000,
            batches: 40,
        }
    };
    sqlx::any::install_default_drivers();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    pure_parts(&counts)?;
    runtime.block_on(async {
        let dir = std::env::temp_dir().join(format!("warden-bench-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let sqlite = format!("sqlite://{}", dir.join("bench.db").display());
        let result = run_backend("sqlite", &sqlite, &counts).await;
        let _ = std::fs::remove_dir_all(&dir);
        result?;
        match postgres_database().await {
            Ok((admin, name, url)) => {
                let result = run_backend("postgres", &url, &counts).await;
                drop_postgres(&admin, &name).await?;
                result?;
            }
            Err(error) => println!("postgres: skipped, cannot create a database: {error}"),
        }
        anyhow::Ok(())
    })?;
    Ok(())
}
