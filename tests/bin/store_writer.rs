//! A process that writes to a store until it is killed, for the crash test
//! (`tests/all/store_crash.rs`): `store-writer DATABASE_URL KEY_FILE`. It creates a system,
//! then sets its settings and records a transition over and over, printing
//! `SYSTEM_ID N` after write N is acknowledged (committed).

use std::io::Write;

use serde_json::json;
use warden::settings::{Level, ParentKind};
use warden::store::{Actor, KeySource, NewSystem, Store};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(key_file)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: store-writer DATABASE_URL KEY_FILE");
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let keys = KeySource::file(std::path::Path::new(&key_file), false)?;
        let store = Store::open(&url, keys).await?;
        let actor = Actor("store-writer".to_string());
        let system = store
            .create_system(
                &actor,
                &NewSystem {
                    name: "Crash".to_string(),
                    ..NewSystem::default()
                },
            )
            .await?
            .id;
        let mut stdout = std::io::stdout();
        for n in 1_u64.. {
            store
                .set_settings(
                    &actor,
                    ParentKind::System,
                    &system,
                    Level::Admin,
                    &json!({"n": n, "pad": "x".repeat(2000)}),
                )
                .await?;
            store
                .record_transition(&system, n % 2 == 1, "crash test")
                .await?;
            writeln!(stdout, "{system} {n}")?;
            stdout.flush()?;
        }
        anyhow::Ok(())
    })
}
