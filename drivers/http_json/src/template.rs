//! `{{name}}` placeholders in configured commands: in the path (percent-encoded), in header
//! values (as text) and in the body template (typed). Nothing here calls the host, so all of
//! it is unit-tested natively.
//!
//! A placeholder is `{{` + a name of ASCII letters, digits and `_` (spaces around it are
//! allowed) + `}}`. Anything else between braces is copied as it is. In the body template,
//! a string that is exactly one placeholder becomes the argument's JSON value (a number
//! stays a number, an object stays an object); a placeholder inside a longer string is
//! replaced by the argument as text.

use std::collections::BTreeSet;
use std::fmt;

use serde_json::{Map, Value};

/// Why a command could not be filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateError {
    /// The template names an argument the call did not give.
    Missing(String),
    /// The call gave an argument no placeholder names (most likely a typo).
    Unused(String),
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TemplateError::Missing(name) => write!(f, "missing argument `{name}`"),
            TemplateError::Unused(name) => {
                write!(f, "argument `{name}` is not used by the command")
            }
        }
    }
}

/// One piece of a template text.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece<'a> {
    Text(&'a str),
    Placeholder(&'a str),
}

fn is_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Split `text` into literal text and placeholders.
fn pieces(text: &str) -> Vec<Piece<'_>> {
    let mut result = Vec::new();
    let mut rest = text;
    let mut literal_start = 0usize;
    let mut offset = 0usize;
    while let Some(open) = rest.find("{{") {
        let after_open = rest.get(open + 2..).unwrap_or("");
        let Some(close) = after_open.find("}}") else {
            break;
        };
        let inner = after_open.get(..close).unwrap_or("");
        let name = inner.trim();
        if is_name(name) {
            let start = offset + open;
            if start > literal_start
                && let Some(literal) = text.get(literal_start..start)
            {
                result.push(Piece::Text(literal));
            }
            result.push(Piece::Placeholder(name));
            let consumed = open + 2 + close + 2;
            offset += consumed;
            literal_start = offset;
            rest = rest.get(consumed..).unwrap_or("");
        } else {
            // Not a placeholder: keep the first brace as text and look again after it.
            offset += open + 1;
            rest = rest.get(open + 1..).unwrap_or("");
        }
    }
    if let Some(literal) = text.get(literal_start..)
        && !literal.is_empty()
    {
        result.push(Piece::Text(literal));
    }
    result
}

/// The names of the placeholders in `text`.
pub fn names_in_text(text: &str, names: &mut BTreeSet<String>) {
    for piece in pieces(text) {
        if let Piece::Placeholder(name) = piece {
            names.insert(name.to_string());
        }
    }
}

/// The names of the placeholders in every string of `template` (object keys are literal).
pub fn names_in_value(template: &Value, names: &mut BTreeSet<String>) {
    match template {
        Value::String(text) => names_in_text(text, names),
        Value::Array(items) => items.iter().for_each(|item| names_in_value(item, names)),
        Value::Object(fields) => fields
            .values()
            .for_each(|field| names_in_value(field, names)),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// An argument as text: a string as it is, anything else as JSON.
fn as_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn lookup<'a>(args: &'a Map<String, Value>, name: &str) -> Result<&'a Value, TemplateError> {
    args.get(name)
        .ok_or_else(|| TemplateError::Missing(name.to_string()))
}

/// `text` with every placeholder replaced by its argument as text, passed through `encode`.
pub fn render_text(
    text: &str,
    args: &Map<String, Value>,
    encode: impl Fn(&str) -> String,
) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(text.len());
    for piece in pieces(text) {
        match piece {
            Piece::Text(literal) => out.push_str(literal),
            Piece::Placeholder(name) => out.push_str(&encode(&as_text(lookup(args, name)?))),
        }
    }
    Ok(out)
}

/// `template` with its placeholders filled in (see the module documentation).
pub fn render_value(template: &Value, args: &Map<String, Value>) -> Result<Value, TemplateError> {
    Ok(match template {
        Value::String(text) => match pieces(text).as_slice() {
            [Piece::Placeholder(name)] => lookup(args, name)?.clone(),
            _ => Value::String(render_text(text, args, str::to_string)?),
        },
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| render_value(item, args))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(key, field)| Ok((key.clone(), render_value(field, args)?)))
                .collect::<Result<_, TemplateError>>()?,
        ),
        other => other.clone(),
    })
}

/// Percent-encode everything but RFC 3986's unreserved characters, so that an argument
/// fills exactly one path segment or query value.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Refuse arguments that no placeholder in `used` names.
pub fn check_unused(
    args: &Map<String, Value>,
    used: &BTreeSet<String>,
) -> Result<(), TemplateError> {
    match args.keys().find(|name| !used.contains(*name)) {
        Some(name) => Err(TemplateError::Unused(name.clone())),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn args(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn pieces_split_text_and_placeholders() {
        assert_eq!(
            pieces("/lights/{{id}}/level?to={{ level }}"),
            vec![
                Piece::Text("/lights/"),
                Piece::Placeholder("id"),
                Piece::Text("/level?to="),
                Piece::Placeholder("level"),
            ]
        );
        assert_eq!(
            pieces("{{a}}{{b}}"),
            vec![Piece::Placeholder("a"), Piece::Placeholder("b")]
        );
        assert_eq!(pieces(""), vec![]);
    }

    #[test]
    fn things_that_are_not_placeholders_stay_text() {
        for text in ["{{}}", "{{not a name}}", "{{open", "}}", "{a}", "{{{x"] {
            let rendered = render_text(text, &Map::new(), str::to_string).unwrap();
            assert_eq!(rendered, text);
        }
        // A brace before a real placeholder is literal.
        assert_eq!(
            render_text("{{{x}}", &args(json!({"x": 1})), str::to_string).unwrap(),
            "{1"
        );
    }

    #[test]
    fn text_rendering_uses_plain_strings_and_json_for_the_rest() {
        let args = args(json!({"s": "on air", "n": 42, "b": true, "o": {"a": 1}}));
        assert_eq!(
            render_text("{{s}}|{{n}}|{{b}}|{{o}}", &args, str::to_string).unwrap(),
            r#"on air|42|true|{"a":1}"#
        );
        assert_eq!(
            render_text("/x/{{s}}?q={{o}}", &args, percent_encode).unwrap(),
            "/x/on%20air?q=%7B%22a%22%3A1%7D"
        );
    }

    #[test]
    fn whole_string_placeholders_keep_their_type() {
        let template = json!({
            "level": "{{level}}",
            "on": "{{on}}",
            "label": "Level {{level}}",
            "nested": [{"scene": "{{scene}}"}, 7, null],
        });
        let rendered = render_value(
            &template,
            &args(json!({"level": 35, "on": false, "scene": {"id": 2}})),
        )
        .unwrap();
        assert_eq!(
            rendered,
            json!({
                "level": 35,
                "on": false,
                "label": "Level 35",
                "nested": [{"scene": {"id": 2}}, 7, null],
            })
        );
    }

    #[test]
    fn missing_and_unused_arguments() {
        assert_eq!(
            render_value(&json!({"a": "{{a}}"}), &Map::new()),
            Err(TemplateError::Missing("a".into()))
        );
        let mut used = BTreeSet::new();
        names_in_text("/x/{{a}}", &mut used);
        names_in_value(&json!({"k": ["{{b}}"], "{{key}}": 1}), &mut used);
        assert_eq!(
            used.iter().map(String::as_str).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(check_unused(&args(json!({"a": 1, "b": 2})), &used), Ok(()));
        assert_eq!(
            check_unused(&args(json!({"a": 1, "c": 2})), &used),
            Err(TemplateError::Unused("c".into()))
        );
        assert_eq!(
            TemplateError::Missing("a".into()).to_string(),
            "missing argument `a`"
        );
    }

    #[test]
    fn percent_encoding_keeps_only_unreserved_characters() {
        assert_eq!(percent_encode("AZaz09-._~"), "AZaz09-._~");
        assert_eq!(percent_encode("a/b?c&d=e f"), "a%2Fb%3Fc%26d%3De%20f");
        assert_eq!(percent_encode("é"), "%C3%A9");
    }
}
