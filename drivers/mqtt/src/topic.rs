//! Topic names (what a message is published to) and topic filters (what a subscription
//! matches), checked as MQTT 3.1.1 section 4.7 requires before anything is sent: a broker
//! answers a bad topic by closing the connection, which would take every other
//! subscription of the module down with it.

use std::fmt;

use serde::{Deserialize, Serialize};
use warden_driver_sdk::Schema;
use warden_driver_sdk::schema::Node;

/// The longest topic MQTT can carry: its length is a two-byte field.
pub const MAX_TOPIC_BYTES: usize = 65_535;

/// Why a topic or filter was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicError {
    /// Empty.
    Empty,
    /// Longer than [`MAX_TOPIC_BYTES`] in UTF-8.
    TooLong(usize),
    /// Contains U+0000.
    Null,
    /// A topic name with `+` or `#`.
    Wildcard,
    /// A filter whose `+` or `#` is not a whole level, or whose `#` is not the last one.
    MisplacedWildcard,
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopicError::Empty => f.write_str("it is empty"),
            TopicError::TooLong(bytes) => {
                write!(f, "it is {bytes} bytes long, more than {MAX_TOPIC_BYTES}")
            }
            TopicError::Null => f.write_str("it contains the null character"),
            TopicError::Wildcard => {
                f.write_str("a topic to publish to cannot contain the wildcards `+` or `#`")
            }
            TopicError::MisplacedWildcard => f.write_str(
                "`+` and `#` must each be a whole level, and `#` must be the last level",
            ),
        }
    }
}

fn common(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.len() > MAX_TOPIC_BYTES {
        return Err(TopicError::TooLong(topic.len()));
    }
    if topic.contains('\0') {
        return Err(TopicError::Null);
    }
    Ok(())
}

/// Check a topic name to publish to.
pub fn check_name(topic: &str) -> Result<(), TopicError> {
    common(topic)?;
    if topic.contains(['+', '#']) {
        return Err(TopicError::Wildcard);
    }
    Ok(())
}

/// Check a topic filter to subscribe to.
pub fn check_filter(filter: &str) -> Result<(), TopicError> {
    common(filter)?;
    let levels: Vec<&str> = filter.split('/').collect();
    let last = levels.len().saturating_sub(1);
    for (index, level) in levels.iter().enumerate() {
        let whole_wildcard = *level == "+" || (*level == "#" && index == last);
        if level.contains(['+', '#']) && !whole_wildcard {
            return Err(TopicError::MisplacedWildcard);
        }
    }
    Ok(())
}

/// A quality of service this driver speaks: 0 (at most once) or 1 (at least once). QoS 2
/// is not implemented; deserialising refuses it, so a function never sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum Qos {
    /// At most once: no acknowledgement.
    #[default]
    AtMostOnce,
    /// At least once: acknowledged with PUBACK.
    AtLeastOnce,
}

impl Qos {
    /// The two bits on the wire.
    pub fn bits(self) -> u8 {
        match self {
            Qos::AtMostOnce => 0,
            Qos::AtLeastOnce => 1,
        }
    }
}

impl TryFrom<u8> for Qos {
    type Error = String;

    fn try_from(value: u8) -> Result<Self, String> {
        match value {
            0 => Ok(Qos::AtMostOnce),
            1 => Ok(Qos::AtLeastOnce),
            other => Err(format!("QoS {other} is not supported (0 or 1)")),
        }
    }
}

impl From<Qos> for u8 {
    fn from(qos: Qos) -> u8 {
        qos.bits()
    }
}

impl Schema for Qos {
    const SCHEMA: Node = Node::Raw(r#"{"type":"integer","enum":[0,1]}"#);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert_eq!(check_name("building/1/room/2/temp"), Ok(()));
        assert_eq!(check_name("/leading/slash"), Ok(()));
        assert_eq!(check_name("ünïcode/тема"), Ok(()));
        assert_eq!(check_name(""), Err(TopicError::Empty));
        assert_eq!(check_name("a/+/b"), Err(TopicError::Wildcard));
        assert_eq!(check_name("a/#"), Err(TopicError::Wildcard));
        assert_eq!(check_name("a\0b"), Err(TopicError::Null));
        let long = "x".repeat(MAX_TOPIC_BYTES + 1);
        assert_eq!(
            check_name(&long),
            Err(TopicError::TooLong(MAX_TOPIC_BYTES + 1))
        );
        assert_eq!(check_name(&long[1..]), Ok(()));
    }

    #[test]
    fn topic_filters() {
        for good in ["#", "+", "a/+/c", "a/#", "+/+", "/+", "a/b"] {
            assert_eq!(check_filter(good), Ok(()), "{good}");
        }
        for bad in ["a/#/c", "a#", "a/b+", "+a", "##"] {
            assert_eq!(
                check_filter(bad),
                Err(TopicError::MisplacedWildcard),
                "{bad}"
            );
        }
        assert_eq!(check_filter(""), Err(TopicError::Empty));
    }

    #[test]
    fn qos_two_is_refused_when_deserialising() {
        assert_eq!(serde_json::from_str::<Qos>("1").unwrap(), Qos::AtLeastOnce);
        let error = serde_json::from_str::<Qos>("2").unwrap_err();
        assert!(
            error.to_string().contains("QoS 2 is not supported"),
            "{error}"
        );
        assert_eq!(serde_json::to_string(&Qos::AtMostOnce).unwrap(), "0");
    }
}
