//! The per-module command queue: one call at a time into a module, highest priority
//! first and in order of arrival within a priority; a named command replaces its queued
//! twin; commands whose deadline passes while queued are answered with a timeout.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use super::ExecError;

/// How one exec is queued and run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOptions {
    /// Higher runs first; default 50 (as PlaceOS).
    pub priority: u8,
    /// A queued command with the same name is replaced by this one (it takes its place,
    /// and the replaced caller is told so).
    pub name: Option<String>,
    /// Time allowed from queueing to result; default: the module's exec timeout.
    pub timeout: Option<Duration>,
    /// Further attempts after a timeout, a lost connection or a crash.
    pub retries: u32,
    /// What happens to the command while the module's device is offline.
    pub offline: OfflinePolicy,
}

/// What a queued command does while the module's device is offline (its `connected`
/// status is `false`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OfflinePolicy {
    /// Stay queued and wait for the device until the command's own timeout: for commands
    /// that should still happen when the device comes back (a scheduled power-on).
    #[default]
    Keep,
    /// Fail at once when queued while the device is offline, and when the device goes
    /// offline while it waits: for commands whose moment has passed if not run now (a
    /// button press).
    Fail,
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            priority: 50,
            name: None,
            timeout: None,
            retries: 0,
            offline: OfflinePolicy::Keep,
        }
    }
}

/// One queued exec.
#[derive(Debug)]
pub struct QueuedExec {
    /// Function to run.
    pub function: String,
    /// Arguments as JSON text.
    pub args: String,
    /// Options it was queued with.
    pub options: ExecOptions,
    /// When the caller stops waiting.
    pub deadline: Instant,
    /// Attempts made so far.
    pub attempts: u32,
    /// Where the result goes.
    pub reply: oneshot::Sender<Result<Value, ExecError>>,
}

/// Key ordering: priority descending, then arrival.
/// Key ordering: priority descending, then sequence ascending. New commands count up from
/// zero; retried ones count down from -1, so they run before everything else queued at
/// their priority.
type Key = (std::cmp::Reverse<u8>, i64);

#[derive(Debug, Default)]
struct Inner {
    items: BTreeMap<Key, QueuedExec>,
    next_seq: i64,
    next_retry_seq: i64,
    closed: bool,
}

/// The queue of one module.
#[derive(Debug)]
pub struct CommandQueue {
    inner: Mutex<Inner>,
    ready: Notify,
    capacity: usize,
}

impl CommandQueue {
    /// An empty queue holding at most `capacity` commands.
    pub fn new(capacity: usize) -> Self {
        CommandQueue {
            inner: Mutex::new(Inner::default()),
            ready: Notify::new(),
            capacity,
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue `exec`. Fails when the queue is closed or full.
    pub fn push(&self, exec: QueuedExec) -> Result<(), ExecError> {
        let mut inner = self.inner();
        if inner.closed {
            return Err(ExecError::Stopped);
        }
        if let Some(name) = exec.options.name.clone() {
            let twin = inner
                .items
                .iter()
                .find(|(_, queued)| queued.options.name.as_ref() == Some(&name))
                .map(|(key, _)| *key);
            if let Some(key) = twin {
                if let Some(old) = inner.items.insert(key, exec) {
                    let _ = old.reply.send(Err(ExecError::Replaced(name)));
                }
                drop(inner);
                self.ready.notify_one();
                return Ok(());
            }
        }
        if inner.items.len() >= self.capacity {
            return Err(ExecError::QueueFull(self.capacity));
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner
            .items
            .insert((std::cmp::Reverse(exec.options.priority), seq), exec);
        drop(inner);
        self.ready.notify_one();
        Ok(())
    }

    /// Put a command being retried back at the front of its priority.
    pub fn retry(&self, exec: QueuedExec) {
        let mut inner = self.inner();
        if inner.closed {
            let _ = exec.reply.send(Err(ExecError::Stopped));
            return;
        }
        inner.next_retry_seq -= 1;
        let seq = inner.next_retry_seq;
        inner
            .items
            .insert((std::cmp::Reverse(exec.options.priority), seq), exec);
        drop(inner);
        self.ready.notify_one();
    }

    /// Take the next command whose caller still waits; expired ones are answered.
    pub fn pop(&self) -> Option<QueuedExec> {
        let now = Instant::now();
        let mut inner = self.inner();
        while let Some((_, exec)) = inner.items.pop_first() {
            if exec.reply.is_closed() {
                continue;
            }
            if exec.deadline <= now {
                let _ = exec.reply.send(Err(ExecError::Timeout(
                    exec.options.timeout.unwrap_or_default(),
                )));
                continue;
            }
            return Some(exec);
        }
        None
    }

    /// Wait for the next command. Cancel-safe: a command is taken only when returned.
    pub async fn next(&self) -> QueuedExec {
        loop {
            let notified = self.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(exec) = self.pop() {
                return exec;
            }
            notified.await;
        }
    }

    /// Refuse new commands and answer queued ones with `error`.
    pub fn close(&self, error: ExecError) {
        let mut inner = self.inner();
        inner.closed = true;
        for (_, exec) in std::mem::take(&mut inner.items) {
            let _ = exec.reply.send(Err(error.clone()));
        }
    }

    /// Answer every queued command whose policy is [`OfflinePolicy::Fail`] with
    /// [`ExecError::Offline`]; the others stay. Returns how many failed.
    pub fn fail_offline(&self, reason: &str) -> usize {
        let mut inner = self.inner();
        let failing: Vec<Key> = inner
            .items
            .iter()
            .filter(|(_, exec)| exec.options.offline == OfflinePolicy::Fail)
            .map(|(key, _)| *key)
            .collect();
        for key in &failing {
            if let Some(exec) = inner.items.remove(key) {
                let _ = exec.reply.send(Err(ExecError::Offline(reason.to_string())));
            }
        }
        failing.len()
    }

    /// Commands waiting.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.inner().items.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn going_offline_fails_only_the_commands_that_asked_for_it() {
        let queue = CommandQueue::new(8);
        let (mut keep, keep_rx) = exec("keep", 50, None);
        keep.options.offline = OfflinePolicy::Keep;
        let (mut fail, fail_rx) = exec("fail", 50, None);
        fail.options.offline = OfflinePolicy::Fail;
        queue.push(keep).unwrap();
        queue.push(fail).unwrap();
        assert_eq!(queue.fail_offline("connection lost"), 1);
        assert_eq!(
            fail_rx.await.unwrap(),
            Err(ExecError::Offline("connection lost".to_string()))
        );
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.pop().unwrap().function, "keep");
        drop(keep_rx);
    }

    fn exec(
        function: &str,
        priority: u8,
        name: Option<&str>,
    ) -> (QueuedExec, oneshot::Receiver<Result<Value, ExecError>>) {
        let (reply, rx) = oneshot::channel();
        (
            QueuedExec {
                function: function.into(),
                args: "[]".into(),
                options: ExecOptions {
                    priority,
                    name: name.map(str::to_string),
                    ..ExecOptions::default()
                },
                deadline: Instant::now() + Duration::from_secs(60),
                attempts: 0,
                reply,
            },
            rx,
        )
    }

    #[tokio::test]
    async fn priority_then_arrival() {
        let queue = CommandQueue::new(10);
        let mut keep = Vec::new();
        for (f, p) in [("a", 50), ("b", 90), ("c", 50), ("d", 10), ("e", 90)] {
            let (e, rx) = exec(f, p, None);
            keep.push(rx);
            queue.push(e).unwrap();
        }
        let order: Vec<String> = std::iter::from_fn(|| queue.pop())
            .map(|e| e.function)
            .collect();
        assert_eq!(order, ["b", "e", "a", "c", "d"]);
    }

    #[tokio::test]
    async fn named_command_replaces_its_twin_in_place() {
        let queue = CommandQueue::new(10);
        let (first, first_rx) = exec("volume-10", 50, Some("volume"));
        let (other, _other_rx) = exec("power", 50, None);
        let (second, _second_rx) = exec("volume-20", 50, Some("volume"));
        queue.push(first).unwrap();
        queue.push(other).unwrap();
        queue.push(second).unwrap();
        assert_eq!(
            first_rx.await.unwrap(),
            Err(ExecError::Replaced("volume".into()))
        );
        let order: Vec<String> = std::iter::from_fn(|| queue.pop())
            .map(|e| e.function)
            .collect();
        assert_eq!(order, ["volume-20", "power"]);
    }

    #[tokio::test]
    async fn full_closed_expired_and_retried() {
        let queue = CommandQueue::new(2);
        let (a, _a) = exec("a", 50, None);
        let (b, _b) = exec("b", 50, None);
        let (c, _c) = exec("c", 50, None);
        queue.push(a).unwrap();
        queue.push(b).unwrap();
        assert!(matches!(queue.push(c), Err(ExecError::QueueFull(2))));

        let taken = queue.pop().unwrap();
        assert_eq!(taken.function, "a");
        queue.retry(taken);
        assert_eq!(queue.pop().unwrap().function, "a");

        let (mut late, late_rx) = exec("late", 50, None);
        late.deadline = Instant::now();
        queue.push(late).unwrap();
        assert_eq!(queue.pop().unwrap().function, "b");
        assert!(queue.pop().is_none());
        assert!(matches!(late_rx.await.unwrap(), Err(ExecError::Timeout(_))));

        let (d, d_rx) = exec("d", 50, None);
        queue.push(d).unwrap();
        queue.close(ExecError::Stopped);
        assert_eq!(d_rx.await.unwrap(), Err(ExecError::Stopped));
        let (e, _e) = exec("e", 50, None);
        assert!(matches!(queue.push(e), Err(ExecError::Stopped)));
    }
}
