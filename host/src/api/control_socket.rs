//! The WebSocket `/api/engine/v2/systems/control`, PlaceOS-compatible.
//!
//! Requests are JSON objects `{"id", "cmd", "sys", "mod", "index", "name", "args"}` with
//! `cmd` one of `bind`, `unbind`, `exec`, `debug`, `ignore`; the text `ping` is answered
//! with `pong`. Responses: `{"id", "type": "success", "meta", "value"?}`,
//! `{"type": "notify", "value", "meta"}` (a bound status: its value at bind, then each
//! change), `{"type": "debug", "mod", "klass", "level", "msg", "meta"}` (the module's log
//! lines while a debug is open) and `{"id", "type": "error", "code", "msg"}` with
//! PlaceOS's codes ([`Code`]). Modules are named as in their system: `mod` and `index`
//! (`Display`, 2 is `Display_2`).
//!
//! **Slow consumers never stall the host.** Nothing the host produces waits for a client:
//! - a bound value is kept as the latest value per binding, and the writer sends each
//!   binding's latest value when the socket can take it; a client that reads slowly sees
//!   fewer intermediate values, never stale ones, and the memory it can cost is one value
//!   per binding (at most [`MAX_BINDINGS`]);
//! - debug lines go through a queue of [`DEBUG_QUEUE`] lines; when it is full, lines are
//!   dropped and counted, and the client is told how many when the queue drains;
//! - replies to the client's own requests go through a queue of [`REPLY_QUEUE`]; when it is
//!   full, the session stops reading the client's requests until it drains, so a client
//!   that sends without reading only slows itself down; likewise at most
//!   [`MAX_EXECS_IN_FLIGHT`] execs run for one connection at a time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Notify, broadcast, mpsc};
use tokio::task::JoinHandle;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, ApiState, Principal};
use crate::runtime::RuntimeEvent;

/// Bindings one connection may hold.
pub const MAX_BINDINGS: usize = 1000;
/// Replies queued for one connection.
pub const REPLY_QUEUE: usize = 256;
/// Debug lines queued for one connection.
pub const DEBUG_QUEUE: usize = 256;
/// Execs one connection may have in flight; further requests wait to be read.
pub const MAX_EXECS_IN_FLIGHT: usize = 64;
/// The largest request accepted.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// PlaceOS's WebSocket error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    /// Not JSON.
    ParseError = 0,
    /// A required field is missing or wrong.
    BadRequest = 1,
    /// The caller may not do this.
    AccessDenied = 2,
    /// The request was made and failed.
    RequestFailed = 3,
    /// `cmd` is none of the five.
    UnknownCommand = 4,
    /// No such system.
    SystemNotFound = 5,
    /// No such module in the system.
    ModuleNotFound = 6,
    /// The host failed.
    UnexpectedFailure = 7,
}

pub(super) fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new().routes(routes!(upgrade))
}

/// The control WebSocket (PlaceOS's protocol): bind, unbind, exec, debug, ignore; see
/// docs/architecture.md. Browsers and PlaceOS clients may send the credential in the
/// query string as `bearer_token` or `api-key`.
#[utoipa::path(
    get,
    path = "/systems/control",
    tag = "systems",
    responses((status = 101, description = "Switched to the WebSocket protocol")),
)]
async fn upgrade(
    State(state): State<ApiState>,
    caller: Principal,
    socket: WebSocketUpgrade,
) -> Response {
    socket
        .max_message_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| session(state, caller, socket))
}

#[derive(Debug, Deserialize)]
struct Request {
    id: Value,
    cmd: String,
    sys: Option<String>,
    #[serde(rename = "mod")]
    module: Option<String>,
    index: Option<u32>,
    name: Option<String>,
    #[serde(default)]
    args: Option<Value>,
}

/// What a binding or debug is attached to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Target {
    sys: String,
    module: String,
    index: u32,
}

impl Target {
    fn meta(&self, name: Option<&str>) -> Value {
        let mut meta = json!({"sys": self.sys, "mod": self.module, "index": self.index});
        if let (Some(name), Some(object)) = (name, meta.as_object_mut()) {
            object.insert("name".to_string(), json!(name));
        }
        meta
    }
}

/// What the writer sends, and what the producers leave for it.
struct Outbox {
    replies: mpsc::Sender<Utf8Bytes>,
    execs: Arc<tokio::sync::Semaphore>,
    debug: mpsc::Sender<Utf8Bytes>,
    debug_dropped: AtomicU64,
    /// The latest unsent value of each binding: `(target, name) -> notify message`.
    latest: Mutex<HashMap<(Target, String), Value>>,
    wake: Notify,
}

impl Outbox {
    fn notify(&self, target: &Target, name: &str, value: Value) {
        let message = json!({"type": "notify", "value": value, "meta": target.meta(Some(name))});
        self.latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((target.clone(), name.to_string()), message);
        self.wake.notify_one();
    }

    fn forget(&self, target: &Target, name: &str) {
        self.latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(target.clone(), name.to_string()));
    }

    fn debug(&self, message: &Value) {
        if self.debug.try_send(message.to_string().into()).is_err() {
            self.debug_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn reply(outbox: &Outbox, message: Value) {
    let _ = outbox.replies.send(message.to_string().into()).await;
}

async fn error(outbox: &Outbox, id: &Value, code: Code, message: impl Into<String>) {
    reply(
        outbox,
        json!({"id": id, "type": "error", "code": code as u8, "msg": message.into()}),
    )
    .await;
}

async fn session(state: ApiState, caller: Principal, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (replies, mut reply_queue) = mpsc::channel::<Utf8Bytes>(REPLY_QUEUE);
    let (debug, mut debug_queue) = mpsc::channel::<Utf8Bytes>(DEBUG_QUEUE);
    let outbox = Arc::new(Outbox {
        replies,
        execs: Arc::new(tokio::sync::Semaphore::new(MAX_EXECS_IN_FLIGHT)),
        debug,
        debug_dropped: AtomicU64::new(0),
        latest: Mutex::new(HashMap::new()),
        wake: Notify::new(),
    });
    let writer_outbox = Arc::clone(&outbox);
    let (close, mut closing) = tokio::sync::oneshot::channel::<()>();
    let mut writer = tokio::spawn(async move {
        let outbox = writer_outbox;
        loop {
            let message: Vec<Utf8Bytes> = tokio::select! {
                biased;
                Some(message) = reply_queue.recv() => vec![message],
                _ = &mut closing => {
                    // The session ends: what it still had to say goes out, then the close.
                    while let Ok(message) = reply_queue.try_recv() {
                        if sink.send(Message::Text(message)).await.is_err() {
                            return;
                        }
                    }
                    let _ = sink.close().await;
                    return;
                }
                _ = outbox.wake.notified() => {
                    let drained: Vec<Value> = outbox
                        .latest
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .drain()
                        .map(|(_, message)| message)
                        .collect();
                    drained.into_iter().map(|m| m.to_string().into()).collect()
                }
                Some(line) = debug_queue.recv() => {
                    let mut lines = vec![line];
                    let dropped = outbox.debug_dropped.swap(0, Ordering::Relaxed);
                    if dropped > 0 && debug_queue.is_empty() {
                        lines.push(json!({"type": "debug", "level": "warn", "msg":
                            format!("{dropped} debug lines were dropped: this connection reads too slowly")}).to_string().into());
                    } else if dropped > 0 {
                        outbox.debug_dropped.fetch_add(dropped, Ordering::Relaxed);
                    }
                    lines
                }
                else => return,
            };
            for text in message {
                if sink.send(Message::Text(text)).await.is_err() {
                    return;
                }
            }
        }
    });

    let mut bindings: HashMap<(Target, String), JoinHandle<()>> = HashMap::new();
    let mut debugs: HashMap<Target, JoinHandle<()>> = HashMap::new();
    while let Some(Ok(message)) = stream.next().await {
        let text = match message {
            Message::Text(text) => text,
            Message::Close(_) => break,
            Message::Binary(_) => {
                error(&outbox, &Value::Null, Code::ParseError, "send JSON text").await;
                continue;
            }
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        if text.as_str() == "ping" {
            let _ = outbox.replies.send("pong".into()).await;
            continue;
        }
        let request: Request = match serde_json::from_str::<Value>(text.as_str()) {
            Err(_) => {
                error(&outbox, &Value::Null, Code::ParseError, "not JSON").await;
                continue;
            }
            Ok(value) => {
                let id = value.get("id").cloned().unwrap_or(Value::Null);
                match serde_json::from_value(value) {
                    Ok(request) => request,
                    Err(why) => {
                        error(&outbox, &id, Code::BadRequest, why.to_string()).await;
                        continue;
                    }
                }
            }
        };
        // The credential is checked again on every request, so an expired or revoked
        // token stops working at once; the client reconnects with a fresh one.
        let current = match state.auth.recheck(&caller, state.auth.now()).await {
            Ok(current) => current,
            Err(why) => {
                error(&outbox, &request.id, Code::AccessDenied, why.to_string()).await;
                break;
            }
        };
        handle(
            &state,
            &current,
            &outbox,
            &mut bindings,
            &mut debugs,
            request,
        )
        .await;
    }
    for (_, task) in bindings.drain() {
        task.abort();
    }
    for (_, task) in debugs.drain() {
        task.abort();
    }
    drop(outbox);
    let _ = close.send(());
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), &mut writer).await;
    writer.abort();
}

async fn handle(
    state: &ApiState,
    caller: &Principal,
    outbox: &Arc<Outbox>,
    bindings: &mut HashMap<(Target, String), JoinHandle<()>>,
    debugs: &mut HashMap<Target, JoinHandle<()>>,
    request: Request,
) {
    let id = request.id.clone();
    if !matches!(
        request.cmd.as_str(),
        "bind" | "unbind" | "exec" | "debug" | "ignore"
    ) {
        tracing::warn!(user = %caller.user_id, cmd = %request.cmd, "unknown WebSocket command");
        return error(outbox, &id, Code::UnknownCommand, "unknown command").await;
    }
    let (Some(sys), Some(module)) = (request.sys.clone(), request.module.clone()) else {
        return error(outbox, &id, Code::BadRequest, "sys and mod are required").await;
    };
    let target = Target {
        sys,
        module,
        index: request.index.unwrap_or(1).max(1),
    };
    let name = request.name.clone().unwrap_or_default();
    let needs_name = matches!(request.cmd.as_str(), "bind" | "unbind" | "exec");
    if needs_name && name.is_empty() {
        return error(outbox, &id, Code::BadRequest, "name is required").await;
    }
    let module_id = match resolve(state, &target).await {
        Ok(module_id) => module_id,
        Err((code, message)) => return error(outbox, &id, code, message).await,
    };
    let success = |value: Option<Value>| {
        let mut message = json!({"id": id, "type": "success", "meta": target.meta(needs_name.then_some(name.as_str()))});
        if let (Some(value), Some(object)) = (value, message.as_object_mut()) {
            object.insert("value".to_string(), value);
        }
        message
    };
    match request.cmd.as_str() {
        "bind" => {
            let key = (target.clone(), name.clone());
            if !bindings.contains_key(&key) {
                if bindings.len() >= MAX_BINDINGS {
                    return error(
                        outbox,
                        &id,
                        Code::BadRequest,
                        format!("at most {MAX_BINDINGS} bindings per connection"),
                    )
                    .await;
                }
                let task = tokio::spawn(watch_status(
                    state.clone(),
                    Arc::clone(outbox),
                    target.clone(),
                    module_id,
                    name.clone(),
                ));
                bindings.insert(key, task);
            }
            reply(outbox, success(None)).await;
        }
        "unbind" => {
            let key = (target.clone(), name.clone());
            if let Some(task) = bindings.remove(&key) {
                task.abort();
            }
            outbox.forget(&target, &name);
            reply(outbox, success(None)).await;
        }
        "debug" => {
            // A module's log can say more than its status: the back office's level.
            if caller.require(crate::settings::Role::Support).is_err() {
                return error(
                    outbox,
                    &id,
                    Code::AccessDenied,
                    "debug needs the support role",
                )
                .await;
            }
            if !debugs.contains_key(&target) {
                let task = tokio::spawn(watch_log(
                    state.clone(),
                    Arc::clone(outbox),
                    target.clone(),
                    module_id.clone(),
                ));
                debugs.insert(target.clone(), task);
            }
            let mut message = success(None);
            if let Some(object) = message.as_object_mut() {
                object.insert("mod_id".to_string(), json!(module_id));
            }
            reply(outbox, message).await;
        }
        "ignore" => {
            if let Some(task) = debugs.remove(&target) {
                task.abort();
            }
            reply(outbox, success(None)).await;
        }
        _ => {
            let args = request.args.unwrap_or_else(|| json!([]));
            if !matches!(args, Value::Array(_) | Value::Object(_)) {
                return error(
                    outbox,
                    &id,
                    Code::BadRequest,
                    "args must be an array or object",
                )
                .await;
            }
            // The exec runs beside the session so a slow device never holds up the
            // connection's other requests.
            let Ok(permit) = Arc::clone(&outbox.execs).acquire_owned().await else {
                return;
            };
            let state = state.clone();
            let caller = caller.clone();
            let outbox = Arc::clone(outbox);
            let success = success(None);
            tokio::spawn(async move {
                let _permit = permit;
                match super::modules::call(&state, &caller, &module_id, &name, args).await {
                    Ok(value) => {
                        let mut message = success;
                        if let Some(object) = message.as_object_mut() {
                            object.insert("value".to_string(), value);
                        }
                        reply(&outbox, message).await;
                    }
                    Err(failure) => {
                        let (code, text) = exec_failure(&failure);
                        error(&outbox, &id, code, text).await;
                    }
                }
            });
        }
    }
}

fn exec_failure(failure: &ApiError) -> (Code, String) {
    let code = match failure.code {
        "forbidden" => Code::AccessDenied,
        "internal" => Code::UnexpectedFailure,
        _ => Code::RequestFailed,
    };
    (code, format!("{}: {}", failure.code, failure.message))
}

/// The module `target` names, or the PlaceOS error for why there is none.
async fn resolve(state: &ApiState, target: &Target) -> Result<String, (Code, String)> {
    let wanted = format!("{}_{}", target.module, target.index);
    match state.control.system_module(&target.sys, &wanted).await {
        Ok(Some(module)) => Ok(module),
        Ok(None) => Err((
            Code::ModuleNotFound,
            format!("system {} has no module {wanted}", target.sys),
        )),
        Err(crate::control::ControlError::Store(crate::store::StoreError::NotFound { .. })) => {
            Err((Code::SystemNotFound, format!("no system {}", target.sys)))
        }
        Err(other) => Err((Code::UnexpectedFailure, ApiError::internal(&other).message)),
    }
}

/// Send status `name` of `module` at once, then every change, for as long as the
/// binding lasts, across the module's stops and starts.
async fn watch_status(
    state: ApiState,
    outbox: Arc<Outbox>,
    target: Target,
    module: String,
    name: String,
) {
    let runtime = state.control.runtime().clone();
    let current = || {
        runtime
            .module(&module)
            .and_then(|handle| handle.status(&name))
            .unwrap_or(Value::Null)
    };
    let mut last = current();
    outbox.notify(&target, &name, last.clone());
    let mut send_if_changed = |value: Value| {
        if value != last {
            last = value.clone();
            outbox.notify(&target, &name, value);
        }
    };
    loop {
        let mut events = runtime.events();
        let Some(handle) = runtime.module(&module) else {
            // Not running: wait for it to start.
            loop {
                match events.recv().await {
                    Ok(RuntimeEvent::Started {
                        module: started, ..
                    }) if started == module => break,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        if runtime.module(&module).is_some() {
                            break;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
            continue;
        };
        let mut changes = handle.subscribe();
        drop(handle);
        send_if_changed(current());
        loop {
            tokio::select! {
                change = changes.recv() => match change {
                    Ok(change) if change.key == name => send_if_changed(change.value),
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => send_if_changed(current()),
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                event = events.recv() => match event {
                    Ok(RuntimeEvent::Stopped { module: stopped }) if stopped == module => break,
                    Err(broadcast::error::RecvError::Closed) => return,
                    _ => {}
                },
            }
        }
    }
}

/// Forward `module`'s log lines while the debug lasts.
async fn watch_log(state: ApiState, outbox: Arc<Outbox>, target: Target, module: String) {
    let runtime = state.control.runtime().clone();
    let klass = runtime
        .module(&module)
        .map(|handle| handle.driver().metadata().name.clone())
        .unwrap_or_default();
    let mut events = runtime.events();
    loop {
        match events.recv().await {
            Ok(RuntimeEvent::Log {
                module: from,
                level,
                message,
            }) if from == module => outbox.debug(&json!({
                "type": "debug",
                "mod": module,
                "klass": klass,
                "level": level,
                "msg": message,
                "meta": target.meta(None),
            })),
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                outbox.debug_dropped.fetch_add(missed, Ordering::Relaxed);
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
