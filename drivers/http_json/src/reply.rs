//! What a function returns for a response, and the device error for a refusal. Nothing
//! here calls the host.

use serde::Serialize;
use serde_json::Value;
use warden_driver_sdk::Schema;

/// Most characters of a refused response's body quoted in the error message.
const EXCERPT_CHARS: usize = 200;

/// A response as the functions return it.
#[derive(Debug, Clone, PartialEq, Serialize, Schema)]
pub struct Reply {
    /// The HTTP status code.
    pub status: u16,
    /// The `content-type` header, if the service sent one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The body: parsed when it is JSON, else the text; `null` when empty or binary.
    pub body: Value,
    /// A body that is not UTF-8 text, in base64 (standard alphabet, padded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
}

impl Reply {
    /// Decode a response: JSON if the body parses as JSON (whatever its content type),
    /// else UTF-8 text, else base64.
    pub fn decode(status: u16, headers: &[(String, String)], body: &[u8]) -> Reply {
        let content_type = headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
            .map(|(_, value)| value.clone());
        let (body, body_base64) = if body.is_empty() {
            (Value::Null, None)
        } else if let Ok(json) = serde_json::from_slice::<Value>(body) {
            (json, None)
        } else if let Ok(text) = std::str::from_utf8(body) {
            (Value::String(text.to_string()), None)
        } else {
            (Value::Null, Some(base64(body)))
        };
        Reply {
            status,
            content_type,
            body,
            body_base64,
        }
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// The message of the device error for a response that is not 2xx: the request, the
/// status with its reason, and the start of the body.
pub fn refusal(request: &str, status: u16, body: &[u8]) -> String {
    let mut message = format!("{request}: HTTP {status}");
    if let Some(reason) = reason(status) {
        message.push(' ');
        message.push_str(reason);
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if !text.is_empty() {
        let mut excerpt: String = text
            .chars()
            .take(EXCERPT_CHARS)
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        if text.chars().nth(EXCERPT_CHARS).is_some() {
            excerpt.push('…');
        }
        message.push_str(": ");
        message.push_str(&excerpt);
    }
    message
}

/// The reason phrase of common status codes (the host does not pass the server's own).
pub fn reason(status: u16) -> Option<&'static str> {
    Some(match status {
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        418 => "I'm a teapot",
        422 => "Unprocessable Content",
        423 => "Locked",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => return None,
    })
}

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let symbol =
        |index: u32| char::from(ALPHABET.get(index as usize & 63).copied().unwrap_or(b'='));
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let mut group = [0u8; 3];
        for (slot, byte) in group.iter_mut().zip(chunk) {
            *slot = *byte;
        }
        let [a, b, c] = group;
        let n = (u32::from(a) << 16) | (u32::from(b) << 8) | u32::from(c);
        out.push(symbol(n >> 18));
        out.push(symbol(n >> 12));
        out.push(if chunk.len() > 1 { symbol(n >> 6) } else { '=' });
        out.push(if chunk.len() > 2 { symbol(n) } else { '=' });
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ct(value: &str) -> Vec<(String, String)> {
        vec![("content-type".to_string(), value.to_string())]
    }

    #[test]
    fn json_text_binary_and_empty_bodies() {
        let reply = Reply::decode(200, &ct("application/json"), br#"{"a": [1, 2]}"#);
        assert_eq!(reply.body, json!({"a": [1, 2]}));
        assert_eq!(reply.content_type.as_deref(), Some("application/json"));
        assert_eq!(
            serde_json::to_value(&reply).unwrap(),
            json!({"status": 200, "content_type": "application/json", "body": {"a": [1, 2]}})
        );
        let reply = Reply::decode(200, &ct("text/html"), b"<p>hi</p>");
        assert_eq!(reply.body, json!("<p>hi</p>"));
        let reply = Reply::decode(201, &[], b"42");
        assert_eq!(reply.body, json!(42));
        assert_eq!(
            serde_json::to_value(&reply).unwrap(),
            json!({"status": 201, "body": 42})
        );
        let reply = Reply::decode(204, &[], b"");
        assert_eq!(reply.body, Value::Null);
        let reply = Reply::decode(200, &ct("application/octet-stream"), &[0xff, 0x00, 0x10]);
        assert_eq!(reply.body, Value::Null);
        assert_eq!(reply.body_base64.as_deref(), Some("/wAQ"));
        assert!(Reply::decode(204, &[], b"").is_success());
        assert!(!Reply::decode(302, &[], b"").is_success());
    }

    #[test]
    fn refusals_name_the_request_status_and_body() {
        assert_eq!(
            refusal("GET /basic-auth/user/passwd", 401, b""),
            "GET /basic-auth/user/passwd: HTTP 401 Unauthorized"
        );
        assert_eq!(
            refusal("POST /x", 422, b"{\"error\":\n\"bad level\"}\n"),
            "POST /x: HTTP 422 Unprocessable Content: {\"error\": \"bad level\"}"
        );
        assert_eq!(refusal("GET /x", 599, b"odd"), "GET /x: HTTP 599: odd");
        let long = "x".repeat(500);
        let message = refusal("GET /x", 500, long.as_bytes());
        assert!(message.ends_with('…'), "{message}");
        assert!(message.len() < 300, "{message}");
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected, "{input}");
        }
    }
}
