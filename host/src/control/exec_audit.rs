//! The audit trail of execs, written in groups.
//!
//! Every exec is recorded (who, which module, which method, the argument names or count),
//! stamped when it is made. Configuration changes commit their audit entry in their own
//! transaction; execs are far more frequent and change nothing stored, so their entries
//! go through a queue to one writer that commits whatever has gathered in one
//! transaction: one disk flush for many execs instead of one each, which keeps an exec off
//! the disk's latency. The queue holds [`QUEUE`] entries; when it is full an exec waits
//! for room, so entries are never dropped. A stop flushes the queue before the store
//! closes. What a power cut can lose is the last few milliseconds of exec entries, never
//! a configuration change.

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::store::{NewAuditEntry, Store};

/// Exec entries waiting to be written.
pub const QUEUE: usize = 4096;
/// Most entries committed in one transaction.
const BATCH: usize = 512;

pub(super) enum Item {
    Entry(i64, NewAuditEntry),
    Flush(oneshot::Sender<()>),
}

pub(super) fn spawn_writer(store: Store) -> (mpsc::Sender<Item>, JoinHandle<()>) {
    let (sender, mut queue) = mpsc::channel::<Item>(QUEUE);
    let writer = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(BATCH);
        let mut flushed = Vec::new();
        while let Some(first) = queue.recv().await {
            let mut next = Some(first);
            while let Some(item) = next.take() {
                match item {
                    Item::Entry(at, entry) => batch.push((at, entry)),
                    Item::Flush(done) => flushed.push(done),
                }
                if batch.len() < BATCH {
                    next = queue.try_recv().ok();
                }
            }
            if let Err(error) = store.audit_all(&batch).await {
                tracing::error!("{} exec audit entries not recorded: {error}", batch.len());
            }
            batch.clear();
            for done in flushed.drain(..) {
                let _ = done.send(());
            }
        }
    });
    (sender, writer)
}
