//! The API over HTTPS: one HTTP/1.1 connection per command, JSON in and out, the API's
//! error body turned into [`ClientError::Api`].

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::ClientError;
use super::connection::{Credential, Server};

/// Where the API lives under the host's URL.
pub const API_BASE: &str = "/api/engine/v2";
/// The largest response body read.
pub const MAX_RESPONSE_BYTES: usize = 64 << 20;
/// Time allowed for one request and its response (an exec waits for the device).
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// A connection to the API, signed in with a credential.
#[derive(Debug)]
pub struct Api {
    server: Server,
    credential: Credential,
    sender: SendRequest<Full<Bytes>>,
}

/// A request body.
#[derive(Debug)]
pub enum Body<'a> {
    /// None.
    Empty,
    /// JSON.
    Json(&'a Value),
    /// Bytes of a content type.
    Bytes(&'static str, Vec<u8>),
}

impl Api {
    /// Connect to `server` (TCP, verified TLS, HTTP/1.1) to send requests with
    /// `credential`.
    pub async fn connect(server: &Server, credential: Credential) -> Result<Api, ClientError> {
        // A credential the header cannot carry is refused before anything is sent.
        credential.header()?;
        let tls = server.connect().await?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| ClientError::Protocol(format!("HTTP handshake: {e}")))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "the API connection ended");
            }
        });
        Ok(Api {
            server: server.clone(),
            credential,
            sender,
        })
    }

    /// `GET path` (under the API base).
    pub async fn get(&mut self, path: &str) -> Result<Value, ClientError> {
        self.send(Method::GET, path, Body::Empty).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&mut self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.send(Method::POST, path, Body::Json(body)).await
    }

    /// Send a request; the response's JSON (`null` for an empty body) when it succeeded.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Body<'_>,
    ) -> Result<Value, ClientError> {
        let (name, credential) = self.credential.header()?;
        let uri = format!("{}{API_BASE}{path}", self.server.prefix);
        let builder = Request::builder()
            .method(method.clone())
            .uri(&uri)
            .header(header::HOST, &self.server.authority)
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("warden/", env!("CARGO_PKG_VERSION")),
            )
            .header(name, credential);
        let request = match body {
            Body::Empty => builder.body(Full::new(Bytes::new())),
            Body::Json(value) => builder
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(value.to_string()))),
            Body::Bytes(content_type, bytes) => builder
                .header(header::CONTENT_TYPE, content_type)
                .body(Full::new(Bytes::from(bytes))),
        }
        .map_err(|e| ClientError::Usage(format!("{method} {uri}: {e}")))?;
        let exchange = async {
            self.sender
                .ready()
                .await
                .map_err(|e| ClientError::Protocol(format!("the connection closed: {e}")))?;
            let response = self
                .sender
                .send_request(request)
                .await
                .map_err(|e| ClientError::Protocol(format!("{method} {uri}: {e}")))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| ClientError::Protocol(format!("reading the response: {e}")))?
                .to_bytes();
            Ok::<_, ClientError>((status, body))
        };
        let (status, body) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| {
                ClientError::Protocol(format!("no response within {REQUEST_TIMEOUT:?}"))
            })??;
        response_value(status, &body)
    }
}

/// The JSON of a response, or the API's error.
pub fn response_value(status: StatusCode, body: &[u8]) -> Result<Value, ClientError> {
    let json = if body.iter().all(u8::is_ascii_whitespace) {
        Ok(Value::Null)
    } else {
        serde_json::from_slice::<Value>(body)
    };
    if status.is_success() {
        return json.map_err(|e| ClientError::Protocol(format!("the response is not JSON: {e}")));
    }
    let error = json.ok();
    let error = error.as_ref().and_then(|body| body.get("error"));
    let text = |key: &str| {
        error
            .and_then(|e| e.get(key))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    Err(ClientError::Api {
        status: status.as_u16(),
        code: text("code").unwrap_or_else(|| "http_error".to_string()),
        message: text("message").unwrap_or_else(|| {
            status
                .canonical_reason()
                .unwrap_or("the host refused the request")
                .to_string()
        }),
        field: text("field"),
    })
}

/// `text` as one path segment: everything but unreserved characters percent-encoded, so
/// an id or a name can never step into another path.
pub fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `?name=value&…` for the pairs whose value is set (empty when none is).
pub fn query<'a>(pairs: impl IntoIterator<Item = (&'a str, Option<String>)>) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for (name, value) in pairs {
        if let Some(value) = value {
            serializer.append_pair(name, &value);
            any = true;
        }
    }
    if any {
        format!("?{}", serializer.finish())
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_cannot_escape_their_place() {
        assert_eq!(segment("sys-abc_1"), "sys-abc_1");
        assert_eq!(segment("../drivers"), "%2E%2E%2Fdrivers");
        assert_eq!(segment("a b?c"), "a%20b%3Fc");
    }

    #[test]
    fn api_errors_carry_code_message_and_field() {
        let body = br#"{"error": {"code": "invalid", "message": "bad", "field": "name"}}"#;
        match response_value(StatusCode::BAD_REQUEST, body) {
            Err(ClientError::Api {
                status,
                code,
                message,
                field,
            }) => {
                assert_eq!(
                    (status, code.as_str(), message.as_str()),
                    (400, "invalid", "bad")
                );
                assert_eq!(field.as_deref(), Some("name"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(response_value(StatusCode::OK, b"").unwrap(), Value::Null);
        assert!(matches!(
            response_value(StatusCode::BAD_GATEWAY, b"<html>"),
            Err(ClientError::Api { status: 502, .. })
        ));
    }

    #[test]
    fn queries_leave_out_what_is_unset() {
        assert_eq!(query([("q", None)]), "");
        assert_eq!(
            query([
                ("q", Some("a b&c".to_string())),
                ("limit", Some("5".to_string()))
            ]),
            "?q=a+b%26c&limit=5"
        );
    }
}
