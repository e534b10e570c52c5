//! How a polled state document becomes status keys. Nothing here calls the host.
//!
//! Without a `state_key`, the document must be a JSON object and each of its top-level
//! keys becomes a status key of the same name; keys that were published by the previous
//! poll and are gone from this one are cleared. With a `state_key`, the whole document
//! (any JSON) is published under that one key.

use std::collections::BTreeSet;

use serde_json::Value;

/// The status key the host maintains; a document's key of that name is not published.
pub const RESERVED: &str = "connected";

/// One change to the module's status.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// Publish a value.
    Set(String, Value),
    /// Remove a key published before.
    Clear(String),
}

/// What publishing a document takes.
#[derive(Debug, Clone, PartialEq)]
pub struct Publication {
    /// The changes to make, in order.
    pub changes: Vec<Update>,
    /// The keys published once they are made.
    pub published: BTreeSet<String>,
    /// Keys of the document that cannot be published (`connected`, the empty key), to
    /// be logged.
    pub skipped: Vec<String>,
}

/// What publishes `doc`, given the keys published last time.
pub fn updates(
    previous: &BTreeSet<String>,
    doc: &Value,
    state_key: Option<&str>,
) -> Result<Publication, String> {
    let mut changes = Vec::new();
    let mut published = BTreeSet::new();
    let mut skipped = Vec::new();
    match (state_key, doc) {
        (Some(key), _) => {
            changes.push(Update::Set(key.to_string(), doc.clone()));
            published.insert(key.to_string());
        }
        (None, Value::Object(fields)) => {
            for (key, value) in fields {
                if key.is_empty() || key == RESERVED {
                    skipped.push(key.clone());
                    continue;
                }
                changes.push(Update::Set(key.clone(), value.clone()));
                published.insert(key.clone());
            }
        }
        (None, other) => {
            return Err(format!(
                "the state document is {}, not a JSON object; set `state_key` to publish \
                 it under one status key",
                kind(other)
            ));
        }
    }
    for gone in previous.difference(&published) {
        changes.push(Update::Clear(gone.clone()));
    }
    Ok(Publication {
        changes,
        published,
        skipped,
    })
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn keys(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    #[test]
    fn top_level_keys_become_status_keys() {
        let Publication {
            changes,
            published,
            skipped,
        } = updates(
            &BTreeSet::new(),
            &json!({"temp": 21.5, "mode": "eco", "zones": {"a": 1}}),
            None,
        )
        .unwrap();
        assert_eq!(
            changes,
            vec![
                Update::Set("mode".into(), json!("eco")),
                Update::Set("temp".into(), json!(21.5)),
                Update::Set("zones".into(), json!({"a": 1})),
            ]
        );
        assert_eq!(published, keys(&["mode", "temp", "zones"]));
        assert!(skipped.is_empty());
    }

    #[test]
    fn keys_that_disappear_are_cleared() {
        let Publication {
            changes, published, ..
        } = updates(&keys(&["mode", "temp"]), &json!({"temp": 22}), None).unwrap();
        assert_eq!(
            changes,
            vec![
                Update::Set("temp".into(), json!(22)),
                Update::Clear("mode".into()),
            ]
        );
        assert_eq!(published, keys(&["temp"]));
    }

    #[test]
    fn the_hosts_key_and_the_empty_key_are_skipped() {
        let Publication {
            changes,
            published,
            skipped,
        } = updates(
            &BTreeSet::new(),
            &json!({"connected": false, "": 1, "ok": true}),
            None,
        )
        .unwrap();
        assert_eq!(changes, vec![Update::Set("ok".into(), json!(true))]);
        assert_eq!(published, keys(&["ok"]));
        assert_eq!(skipped, vec!["".to_string(), "connected".to_string()]);
    }

    #[test]
    fn a_state_key_takes_the_whole_document() {
        let Publication {
            changes, published, ..
        } = updates(&keys(&["old"]), &json!([1, 2]), Some("state")).unwrap();
        assert_eq!(
            changes,
            vec![
                Update::Set("state".into(), json!([1, 2])),
                Update::Clear("old".into()),
            ]
        );
        assert_eq!(published, keys(&["state"]));
    }

    #[test]
    fn other_documents_need_a_state_key() {
        let error = updates(&BTreeSet::new(), &json!("up"), None).unwrap_err();
        assert!(error.contains("a string, not a JSON object"), "{error}");
        assert!(updates(&BTreeSet::new(), &Value::Null, None).is_err());
    }
}
