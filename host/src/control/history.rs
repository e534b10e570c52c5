//! Device history from runtime events: each module's online/offline transitions, written
//! in batches, and the timer that prunes what is older than the retention period.
//!
//! A module is online while its `connected` status is true. It goes offline when the
//! connection drops, when its sandbox crashes and when it stops; only changes are
//! recorded. Events arriving together (a network outage takes a floor offline at once)
//! are written in one transaction. If the recorder falls so far behind that the runtime's
//! event channel drops events, it reads every running module's state and records the
//! differences, so a missed event costs precision in time, never a wrong state.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::task::JoinHandle;

use crate::runtime::{Runtime, RuntimeEvent};
use crate::store::Store;

/// How long a shutdown waits for the last transitions to be written.
pub(super) const FLUSH_WAIT: Duration = Duration::from_millis(200);

/// The most transitions written in one transaction.
const BATCH: usize = 500;

/// A transition to record: module, online, reason, time.
type Pending = (String, bool, String, i64);

pub(super) fn spawn_recorder(store: Store, runtime: Runtime) -> JoinHandle<()> {
    let mut events = runtime.events();
    tokio::spawn(async move {
        let mut online: HashMap<String, bool> = HashMap::new();
        loop {
            let mut batch: Vec<Pending> = Vec::new();
            match events.recv().await {
                Ok(event) => note(&store, &mut online, &mut batch, event),
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!("device history missed {missed} runtime events; resyncing");
                    resync(&store, &runtime, &mut online, &mut batch);
                }
                Err(RecvError::Closed) => return,
            }
            while batch.len() < BATCH {
                match events.try_recv() {
                    Ok(event) => note(&store, &mut online, &mut batch, event),
                    Err(TryRecvError::Lagged(_)) => {
                        resync(&store, &runtime, &mut online, &mut batch)
                    }
                    Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                }
            }
            if batch.is_empty() {
                continue;
            }
            if let Err(error) = store.record_transitions(&batch).await {
                tracing::error!(
                    "device history: {} transitions not recorded: {error}",
                    batch.len()
                );
            }
        }
    })
}

/// Add the transition `event` causes, if any.
fn note(
    store: &Store,
    online: &mut HashMap<String, bool>,
    batch: &mut Vec<Pending>,
    event: RuntimeEvent,
) {
    let (module, now_online, reason) = match event {
        RuntimeEvent::Connection { module, connected } => {
            let reason = match (connected, online.contains_key(&module)) {
                (true, _) => "connected",
                (false, true) => "disconnected",
                // A module reports itself offline as it starts, before it connects.
                (false, false) => "not connected yet",
            };
            (module, connected, reason.to_string())
        }
        RuntimeEvent::Crashed { module, reason, .. } => {
            (module, false, format!("crashed: {reason}"))
        }
        RuntimeEvent::Stopped { module } => {
            let was = online.remove(&module);
            if was == Some(true) {
                batch.push((module, false, "stopped".to_string(), store.now()));
            }
            return;
        }
        RuntimeEvent::Log { .. } | RuntimeEvent::Started { .. } => return,
    };
    change(store, online, batch, module, now_online, reason);
}

fn change(
    store: &Store,
    online: &mut HashMap<String, bool>,
    batch: &mut Vec<Pending>,
    module: String,
    now_online: bool,
    reason: String,
) {
    let was = online.insert(module.clone(), now_online);
    // A module's first report is recorded whatever it says; after that, changes only.
    if was != Some(now_online) {
        batch.push((module, now_online, reason, store.now()));
    }
}

/// Record the state of every running module where it differs from what was last seen.
fn resync(
    store: &Store,
    runtime: &Runtime,
    online: &mut HashMap<String, bool>,
    batch: &mut Vec<Pending>,
) {
    for id in runtime.module_ids() {
        if let Some(handle) = runtime.module(&id) {
            let connected = handle.status("connected") == Some(Value::Bool(true));
            change(store, online, batch, id, connected, "resync".to_string());
        }
    }
}

pub(super) fn spawn_pruner(store: Store, retention: Duration, every: Duration) -> JoinHandle<()> {
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    tokio::spawn(async move {
        let mut timer = tokio::time::interval(every.max(Duration::from_secs(1)));
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            timer.tick().await;
            match store.prune_history(store.now(), retention_ms).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!("device history: pruned {deleted} transitions"),
                Err(error) => tracing::error!("device history: pruning failed: {error}"),
            }
        }
    })
}
