//! Parameter types whose JSON Schemas carry the specification's limits, so that a front
//! end (and a reviewer reading `warden driver inspect`) sees `1..=125` rather than any
//! `u16`. The limits are still checked when a [`crate::pdu::Request`] is built: a schema
//! is advice to the caller, not a guarantee about the JSON that arrives.

use serde::Deserialize;
use warden_driver_sdk::Schema;
use warden_driver_sdk::schema::Node;

use crate::pdu::{MAX_READ_BITS, MAX_READ_REGISTERS, MAX_WRITE_BITS, MAX_WRITE_REGISTERS};

/// How many coils or discrete inputs one read asks for.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(transparent)]
pub struct BitCount(pub u16);

impl Schema for BitCount {
    const SCHEMA: Node = Node::Seq(&[
        Node::Raw(r#"{"type":"integer","minimum":1,"maximum":"#),
        Node::Uint(MAX_READ_BITS as u64),
        Node::Raw("}"),
    ]);
}

/// How many registers one read asks for.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(transparent)]
pub struct RegisterCount(pub u16);

impl Schema for RegisterCount {
    const SCHEMA: Node = Node::Seq(&[
        Node::Raw(r#"{"type":"integer","minimum":1,"maximum":"#),
        Node::Uint(MAX_READ_REGISTERS as u64),
        Node::Raw("}"),
    ]);
}

/// The coils one write sets, first address first.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct CoilValues(pub Vec<bool>);

impl Schema for CoilValues {
    const SCHEMA: Node = Node::Seq(&[
        Node::Raw(r#"{"type":"array","items":{"type":"boolean"},"minItems":1,"maxItems":"#),
        Node::Uint(MAX_WRITE_BITS as u64),
        Node::Raw("}"),
    ]);
}

/// The registers one write sets, first address first.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct RegisterValues(pub Vec<u16>);

impl Schema for RegisterValues {
    const SCHEMA: Node = Node::Seq(&[
        Node::Raw(
            r#"{"type":"array","items":{"type":"integer","minimum":0,"maximum":65535},"minItems":1,"maxItems":"#,
        ),
        Node::Uint(MAX_WRITE_REGISTERS as u64),
        Node::Raw("}"),
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_carry_the_limits() {
        let text = |bytes: &[u8]| std::str::from_utf8(bytes).unwrap().to_string();
        assert_eq!(
            text(&warden_driver_sdk::json_bytes!(BitCount::SCHEMA)),
            r#"{"type":"integer","minimum":1,"maximum":2000}"#
        );
        assert_eq!(
            text(&warden_driver_sdk::json_bytes!(RegisterCount::SCHEMA)),
            r#"{"type":"integer","minimum":1,"maximum":125}"#
        );
        assert_eq!(
            text(&warden_driver_sdk::json_bytes!(CoilValues::SCHEMA)),
            r#"{"type":"array","items":{"type":"boolean"},"minItems":1,"maxItems":1968}"#
        );
        assert_eq!(
            text(&warden_driver_sdk::json_bytes!(RegisterValues::SCHEMA)),
            r#"{"type":"array","items":{"type":"integer","minimum":0,"maximum":65535},"minItems":1,"maxItems":123}"#
        );
    }
}
