//! `warden watch`: bind one status of one module of a system over the control WebSocket
//! and print each value the host notifies, one JSON line each.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::ClientError;
use super::connection::{Credential, Server};
use super::http::{API_BASE, response_value};

/// What to watch.
#[derive(Debug, Clone)]
pub struct Binding {
    /// The system's id.
    pub sys: String,
    /// The module's name in the system without its index (`Projector`).
    pub module: String,
    /// Its index (`Projector_2` is 2).
    pub index: u32,
    /// The status key.
    pub name: String,
}

/// Why the watch ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// `--count` values were printed.
    Counted,
    /// Ctrl-c.
    Interrupted,
    /// Standard output was closed (the reader went away).
    OutputClosed,
}

/// The request id of the bind.
const BIND_ID: u64 = 1;

/// Connect, bind, and hand each notified value to `print` until `count` values were
/// printed (forever when `None`), ctrl-c, or an error.
pub async fn watch(
    server: &Server,
    credential: Credential,
    binding: &Binding,
    count: Option<u64>,
    mut print: impl FnMut(&Value) -> bool,
) -> Result<Ended, ClientError> {
    let (name, value) = credential.header()?;
    let url = format!(
        "wss://{}{}{API_BASE}/systems/control",
        server.authority, server.prefix
    );
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| ClientError::Usage(format!("{url}: {e}")))?;
    request.headers_mut().insert(name, value);
    let tls = server.connect().await?;
    let (mut socket, _) = match tokio_tungstenite::client_async(request, tls).await {
        Ok(connected) => connected,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            return Err(response_value(response.status(), &body)
                .err()
                .unwrap_or_else(|| {
                    ClientError::Protocol("the host refused the WebSocket".to_string())
                }));
        }
        Err(other) => {
            return Err(ClientError::Protocol(format!(
                "opening the control WebSocket: {other}"
            )));
        }
    };
    let bind = json!({
        "id": BIND_ID,
        "cmd": "bind",
        "sys": binding.sys,
        "mod": binding.module,
        "index": binding.index,
        "name": binding.name,
    });
    socket
        .send(Message::text(bind.to_string()))
        .await
        .map_err(|e| ClientError::Protocol(format!("sending the bind: {e}")))?;

    let mut printed = 0u64;
    if count == Some(0) {
        let _ = socket.close(None).await;
        return Ok(Ended::Counted);
    }
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let message = tokio::select! {
            _ = &mut interrupted => {
                let _ = socket.close(None).await;
                return Ok(Ended::Interrupted);
            }
            message = socket.next() => message,
        };
        let text = match message {
            None => return Err(closed()),
            Some(Err(error)) => {
                return Err(ClientError::Protocol(format!(
                    "the control WebSocket failed: {error}"
                )));
            }
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) => return Err(closed()),
            // Pings are answered by the WebSocket library as it reads; the answer goes
            // out now rather than with our next message.
            Some(Ok(Message::Ping(_))) => {
                let _ = socket.flush().await;
                continue;
            }
            Some(Ok(_)) => continue,
        };
        // PlaceOS's application-level keep-alive: the text `ping` wants `pong`.
        match text.as_str() {
            "ping" => {
                socket
                    .send(Message::text("pong"))
                    .await
                    .map_err(|e| ClientError::Protocol(format!("answering a ping: {e}")))?;
                continue;
            }
            "pong" => continue,
            _ => {}
        }
        let Ok(message) = serde_json::from_str::<Value>(text.as_str()) else {
            tracing::debug!("ignored a message that is not JSON");
            continue;
        };
        match message.get("type").and_then(Value::as_str) {
            Some("notify") => {
                let value = message.get("value").cloned().unwrap_or(Value::Null);
                if !print(&value) {
                    let _ = socket.close(None).await;
                    return Ok(Ended::OutputClosed);
                }
                printed += 1;
                if count.is_some_and(|count| printed >= count) {
                    let _ = socket.close(None).await;
                    return Ok(Ended::Counted);
                }
            }
            Some("error") => {
                let code = message
                    .get("code")
                    .and_then(Value::as_u64)
                    .unwrap_or(u64::MAX);
                let text = message
                    .get("msg")
                    .and_then(Value::as_str)
                    .unwrap_or("the host refused the request")
                    .to_string();
                let _ = socket.close(None).await;
                return Err(ClientError::Socket {
                    code,
                    message: text,
                });
            }
            // The bind's `success`, and anything else the protocol may add.
            _ => {}
        }
    }
}

fn closed() -> ClientError {
    ClientError::Protocol("the host closed the control WebSocket".to_string())
}

/// `Projector_2` as module `Projector`, index 2; a name without an index takes `index`
/// (default 1). Both given and different is a usage error.
pub fn split_module(name: &str, index: Option<u32>) -> Result<(String, u32), ClientError> {
    let suffix = name
        .rsplit_once('_')
        .and_then(|(base, n)| Some((base, n.parse::<u32>().ok()?)))
        .filter(|(base, n)| !base.is_empty() && *n > 0);
    match (suffix, index) {
        (Some((base, n)), None) => Ok((base.to_string(), n)),
        (Some((base, n)), Some(index)) if n == index => Ok((base.to_string(), n)),
        (Some(_), Some(index)) => Err(ClientError::Usage(format!(
            "{name} names its index already; --index {index} disagrees"
        ))),
        (None, Some(0)) => Err(ClientError::Usage("--index starts at 1".to_string())),
        (None, index) => Ok((name.to_string(), index.unwrap_or(1))),
    }
}

#[cfg(test)]
mod tests {
    use super::split_module;

    #[test]
    fn module_names_split_into_name_and_index() {
        assert_eq!(
            split_module("Projector_1", None).unwrap(),
            ("Projector".into(), 1)
        );
        assert_eq!(
            split_module("Room_Logic_2", None).unwrap(),
            ("Room_Logic".into(), 2)
        );
        assert_eq!(
            split_module("Projector", Some(3)).unwrap(),
            ("Projector".into(), 3)
        );
        assert_eq!(
            split_module("Room_Logic", None).unwrap(),
            ("Room_Logic".into(), 1)
        );
        assert!(split_module("Projector_1", Some(2)).is_err());
        assert!(split_module("Projector", Some(0)).is_err());
    }
}
