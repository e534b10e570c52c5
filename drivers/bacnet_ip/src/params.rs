//! Parameter and result types: object types and properties by name or number, instance
//! numbers and priorities with their ranges, and the reads of ReadPropertyMultiple.
//! Their JSON Schemas carry the standard's limits, which deserializing checks again.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use warden_driver_sdk::Schema;
use warden_driver_sdk::schema::Node;

use crate::enums;
use crate::services::PropertyRef;
use crate::tag::ObjectId;
use crate::value::property;

/// A name of `table` or a number up to `max`.
fn name_or_number<'de, D: Deserializer<'de>>(
    deserializer: D,
    table: enums::Table,
    what: &str,
    max: u32,
) -> Result<u32, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::String(name) => enums::value(table, &name)
            .ok_or_else(|| D::Error::custom(format!("unknown {what} {name:?}"))),
        Value::Number(number) => number
            .as_u64()
            .and_then(|value| u32::try_from(value).ok())
            .filter(|value| *value <= max)
            .ok_or_else(|| D::Error::custom(format!("{what} {number} is not 0-{max}"))),
        other => Err(D::Error::custom(format!(
            "a {what} is a name or a number, not {other}"
        ))),
    }
}

fn name_or_value<S: Serializer>(
    serializer: S,
    table: enums::Table,
    value: u32,
) -> Result<S::Ok, S::Error> {
    match enums::name(table, value) {
        Some(name) => serializer.serialize_str(name),
        None => serializer.serialize_u32(value),
    }
}

/// An object type: its name (`analog-value`, `device`) or its number (128 to 1023 are
/// proprietary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectType(pub u16);

impl<'de> Deserialize<'de> for ObjectType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = name_or_number(
            deserializer,
            enums::OBJECT_TYPES,
            "object type",
            u32::from(ObjectId::MAX_TYPE),
        )?;
        u16::try_from(value)
            .map(ObjectType)
            .map_err(|_| D::Error::custom("object type out of range"))
    }
}

impl Serialize for ObjectType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        name_or_value(serializer, enums::OBJECT_TYPES, u32::from(self.0))
    }
}

impl Schema for ObjectType {
    const SCHEMA: Node = Node::Raw(enums::OBJECT_TYPE_SCHEMA);
}

/// A property identifier: its name (`present-value`, `object-name`) or its number (512
/// and up are proprietary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PropertyId(pub u32);

impl PropertyId {
    /// The largest property identifier (22 bits).
    pub const MAX: u32 = 0x3F_FFFF;
}

impl Default for PropertyId {
    fn default() -> Self {
        PropertyId(property::PRESENT_VALUE)
    }
}

impl<'de> Deserialize<'de> for PropertyId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        name_or_number(deserializer, enums::PROPERTIES, "property", PropertyId::MAX).map(PropertyId)
    }
}

impl Serialize for PropertyId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        name_or_value(serializer, enums::PROPERTIES, self.0)
    }
}

impl Schema for PropertyId {
    const SCHEMA: Node = Node::Raw(
        r#"{"anyOf":[{"type":"string","description":"the property's name in the standard, such as present-value, object-name, description, units, status-flags, out-of-service, number-of-states, state-text or priority-array"},{"type":"integer","minimum":0,"maximum":4194303}]}"#,
    );
}

/// An object's instance number, 0 to 4194303.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Instance(pub u32);

impl TryFrom<u32> for Instance {
    type Error = String;

    fn try_from(instance: u32) -> Result<Self, String> {
        if instance <= ObjectId::MAX_INSTANCE {
            Ok(Instance(instance))
        } else {
            Err(format!("instance {instance} is above 4194303"))
        }
    }
}

impl From<Instance> for u32 {
    fn from(instance: Instance) -> u32 {
        instance.0
    }
}

impl Schema for Instance {
    const SCHEMA: Node = Node::Raw(r#"{"type":"integer","minimum":0,"maximum":4194303}"#);
}

/// A write priority, 1 (highest, manual life safety) to 16 (lowest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "u8")]
pub struct Priority(pub u8);

impl TryFrom<u8> for Priority {
    type Error = String;

    fn try_from(priority: u8) -> Result<Self, String> {
        if (1..=16).contains(&priority) {
            Ok(Priority(priority))
        } else {
            Err(format!("priority {priority} is outside 1-16"))
        }
    }
}

impl Schema for Priority {
    const SCHEMA: Node = Node::Raw(r#"{"type":"integer","minimum":1,"maximum":16}"#);
}

/// One read of `read_property_multiple`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Schema)]
pub struct Read {
    /// The object type, such as `analog-value`.
    pub object_type: ObjectType,
    /// The object's instance number.
    pub instance: Instance,
    /// The property; `present-value` when left out.
    #[serde(default)]
    pub property: PropertyId,
    /// One element of an array property (0 is its length); the whole property when
    /// left out.
    #[serde(default)]
    pub array_index: Option<u32>,
}

impl Read {
    /// The property read.
    pub fn property_ref(&self) -> PropertyRef {
        PropertyRef {
            property: self.property.0,
            index: self.array_index,
        }
    }
}

/// The outcome of one read of `read_property_multiple`.
#[derive(Debug, Clone, PartialEq, Serialize, Schema)]
pub struct ReadOutcome {
    /// The object type.
    pub object_type: ObjectType,
    /// The instance number.
    pub instance: Instance,
    /// The property.
    pub property: PropertyId,
    /// The array index, when one was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub array_index: Option<u32>,
    /// The value read (`null` when the read failed).
    pub value: Value,
    /// Why this read failed, as the device said (`object: unknown-object`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A device that answered Who-Is.
#[derive(Debug, Clone, PartialEq, Serialize, Schema)]
pub struct Device {
    /// The device object's instance number.
    pub device_instance: u32,
    /// The largest APDU it accepts, in octets.
    pub max_apdu: u64,
    /// What segmentation it supports: `segmented-both`, `segmented-transmit`,
    /// `segmented-receive` or `no-segmentation`.
    pub segmentation: Value,
    /// Its vendor identifier.
    pub vendor_id: u64,
    /// For a device behind a router: its network number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<u16>,
    /// For a device behind a router: its MAC address on that network, in hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn names_and_numbers() {
        let object_type = |value: Value| serde_json::from_value::<ObjectType>(value);
        assert_eq!(object_type(json!("analog-value")).unwrap(), ObjectType(2));
        assert_eq!(
            object_type(json!("multi-state-value")).unwrap(),
            ObjectType(19)
        );
        assert_eq!(object_type(json!(600)).unwrap(), ObjectType(600));
        assert!(
            object_type(json!("analog"))
                .unwrap_err()
                .to_string()
                .contains("unknown object type \"analog\"")
        );
        assert!(object_type(json!(1024)).is_err());
        assert!(object_type(json!(true)).is_err());
        assert_eq!(
            serde_json::to_value(ObjectType(8)).unwrap(),
            json!("device")
        );
        assert_eq!(serde_json::to_value(ObjectType(600)).unwrap(), json!(600));

        let property = |value: Value| serde_json::from_value::<PropertyId>(value);
        assert_eq!(property(json!("present-value")).unwrap(), PropertyId(85));
        assert_eq!(property(json!("state-text")).unwrap(), PropertyId(110));
        assert_eq!(property(json!(5000)).unwrap(), PropertyId(5000));
        assert!(property(json!("presentValue")).is_err());
        assert!(property(json!(4_194_304)).is_err());
        assert_eq!(
            serde_json::to_value(PropertyId(117)).unwrap(),
            json!("units")
        );
    }

    #[test]
    fn ranges_are_checked_when_deserialized() {
        assert_eq!(
            serde_json::from_value::<Instance>(json!(4_194_303))
                .unwrap()
                .0,
            4_194_303
        );
        assert!(serde_json::from_value::<Instance>(json!(4_194_304)).is_err());
        assert_eq!(serde_json::from_value::<Priority>(json!(16)).unwrap().0, 16);
        assert!(serde_json::from_value::<Priority>(json!(0)).is_err());
        assert!(serde_json::from_value::<Priority>(json!(17)).is_err());
    }

    #[test]
    fn a_read_defaults_to_the_present_value() {
        let read: Read =
            serde_json::from_value(json!({"object_type": "analog-input", "instance": 1})).unwrap();
        assert_eq!(
            read.property_ref(),
            PropertyRef {
                property: 85,
                index: None
            }
        );
    }

    #[test]
    fn the_object_type_schema_lists_every_name() {
        let schema: Value = serde_json::from_str(enums::OBJECT_TYPE_SCHEMA).unwrap();
        let names: Vec<Value> = enums::OBJECT_TYPES
            .iter()
            .map(|(_, name)| json!(name))
            .collect();
        assert_eq!(schema["anyOf"][0]["enum"], Value::from(names));
        let rendered = warden_driver_sdk::json_bytes!(PropertyId::SCHEMA);
        assert!(serde_json::from_slice::<Value>(&rendered).is_ok());
    }
}
