//! Helpers shared by the runtime tests: a runtime with a per-run cache, waiting for
//! conditions, collecting log lines, and a line-based TCP peer.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use warden::runtime::{
    Driver, ModuleConfig, ModuleHandle, ModuleLimits, ModuleState, Runtime, RuntimeConfig,
    RuntimeEvent,
};

/// A runtime for tests, sharing the run's component cache.
pub fn runtime() -> Runtime {
    let mut config = RuntimeConfig::new(warden_tests::cache_dir());
    config.max_modules = 64;
    Runtime::new(config).expect("runtime")
}

/// Load a built guest.
pub fn load(runtime: &Runtime, path: &str) -> Arc<Driver> {
    runtime
        .load_driver_file(std::path::Path::new(path))
        .unwrap_or_else(|e| panic!("loading {path}: {e}"))
}

/// Limits small enough that hostile guests are caught quickly.
pub fn tight_limits() -> ModuleLimits {
    ModuleLimits {
        memory_bytes: 16 << 20,
        cpu_per_call: Duration::from_millis(200),
        exec_timeout: Duration::from_secs(5),
        hook_timeout: Duration::from_secs(5),
        restart_min: Duration::from_millis(50),
        restart_max: Duration::from_millis(400),
        queue_capacity: 64,
    }
}

/// Start a module and wait until it runs.
pub async fn start(runtime: &Runtime, config: ModuleConfig) -> ModuleHandle {
    let handle = runtime.start_module(config).expect("start module");
    wait_state(&handle, |s| matches!(s, ModuleState::Running)).await;
    handle
}

/// Wait (up to 20 s) until the module's state satisfies `done`.
pub async fn wait_state(handle: &ModuleHandle, done: impl Fn(&ModuleState) -> bool) {
    let mut state = handle.watch_state();
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if done(&state.borrow_and_update()) {
                return;
            }
            state.changed().await.expect("module state");
        }
    })
    .await
    .unwrap_or_else(|_| panic!("module {} stuck in {:?}", handle.id(), handle.state()));
}

/// Wait (up to 20 s) until `status(key)` of the module equals `value`.
pub async fn wait_status(handle: &ModuleHandle, key: &str, value: &Value) {
    let mut changes = handle.subscribe();
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if handle.status(key).as_ref() == Some(value) {
                return;
            }
            let _ = changes.recv().await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "{}: status {key} is {:?}, expected {value}",
            handle.id(),
            handle.status(key)
        )
    });
}

/// Wait (up to 20 s) for an event matching `wanted`, returning it.
pub async fn wait_event(
    events: &mut broadcast::Receiver<RuntimeEvent>,
    mut wanted: impl FnMut(&RuntimeEvent) -> bool,
) -> RuntimeEvent {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match events.recv().await {
                Ok(event) if wanted(&event) => return event,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("event bus closed"),
            }
        }
    })
    .await
    .expect("expected event did not arrive")
}

/// How a [`LinePeer`] answers.
#[derive(Debug, Clone, Copy, Default)]
pub struct PeerBehaviour {
    /// Delay before each reply.
    pub delay: Duration,
    /// Close the connection after each reply.
    pub close_after_reply: bool,
    /// Follow each reply with a second, unasked-for line `and again x`, in the same write.
    pub chatty: bool,
}

/// A TCP peer on 127.0.0.1 that answers each line `x` with `you said x`.
#[derive(Debug)]
pub struct LinePeer {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// Connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl LinePeer {
    /// Start one.
    pub async fn start(behaviour: PeerBehaviour) -> LinePeer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let (read, mut write) = socket.into_split();
                    let mut lines = BufReader::new(read).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        tokio::time::sleep(behaviour.delay).await;
                        let reply = if behaviour.chatty {
                            format!("you said {line}\nand again {line}\n")
                        } else {
                            format!("you said {line}\n")
                        };
                        if write.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                        if behaviour.close_after_reply {
                            return;
                        }
                    }
                });
            }
        });
        LinePeer {
            addr,
            connections,
            task,
        }
    }

    /// The endpoint string.
    pub fn endpoint(&self) -> warden::capability::Endpoint {
        self.addr.to_string().parse().expect("endpoint")
    }

    /// Connections accepted so far.
    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for LinePeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sign-in over `store` with a cheap password hash (tests hash many passwords).
pub fn auth(store: &warden::store::Store) -> warden::auth::Auth {
    let config = warden::auth::AuthConfig {
        scrypt: warden::auth::password::ScryptCost {
            log_n: 10,
            r: 8,
            p: 1,
        },
        ..Default::default()
    };
    warden::auth::Auth::new(store.clone(), &config, "https://warden.test").unwrap()
}

/// Each test, instantiated for both back ends: `name(db: TestDb)` in the calling module,
/// which must have `TestDb` in scope.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(super::TestDb::sqlite().await).await
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(super::TestDb::postgres().await).await
            })*
        }
    };
}

/// Send `request` with a JSON `body` (if any) to the whole API service in process: the
/// status, the headers and the JSON answer (`null` when the body is empty).
pub async fn call_json(
    router: &mut axum::Router,
    mut request: axum::http::request::Builder,
    body: Option<Value>,
) -> (axum::http::StatusCode, axum::http::HeaderMap, Value) {
    use http_body_util::BodyExt;
    use tower_service::Service;
    let body = match body {
        Some(body) => {
            request = request.header("content-type", "application/json");
            axum::body::Body::from(body.to_string())
        }
        None => axum::body::Body::empty(),
    };
    let response = router.call(request.body(body).unwrap()).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)))
    };
    (status, headers, body)
}
