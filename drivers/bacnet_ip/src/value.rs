//! Property values as JSON: what a read returns, and how a written JSON value is encoded.
//!
//! The standard gives each property a data type, and for the present value that type
//! depends on the object: a real for analog objects, BACnetBinaryPV (`inactive`,
//! `active`) for binary ones, an unsigned state number for multi-state ones. The driver
//! knows the types of the common properties and encodes plain JSON accordingly; any
//! value can also be given with an explicit type, `{"type": "real", "value": 21.5}`,
//! for proprietary properties or devices that differ.
//!
//! Pure code with no host calls, unit-tested natively.

use serde_json::{Map, Number, Value, json};

use crate::enums::{self, Table};
use crate::tag::{Date, Element, ObjectId, Primitive, Time, UNSPECIFIED, Writer};

/// Property identifiers the driver names in code.
pub mod property {
    /// present-value.
    pub const PRESENT_VALUE: u32 = 85;
}

/// What an object's present value is, by object type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Analog input, output and value: a real.
    Analog,
    /// Binary input, output and value: BACnetBinaryPV.
    Binary,
    /// Multi-state input, output and value: an unsigned state number from 1.
    MultiState,
    /// Anything else.
    Other,
}

impl Kind {
    /// The kind of objects of `object_type`.
    pub fn of(object_type: u16) -> Kind {
        match object_type {
            0..=2 => Kind::Analog,
            3..=5 => Kind::Binary,
            13 | 14 | 19 => Kind::MultiState,
            _ => Kind::Other,
        }
    }
}

/// The data type of a property (of each element, for arrays and lists).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Type {
    Real,
    Unsigned,
    Signed,
    Boolean,
    Text,
    Bits,
    Enumerated(Table),
    ObjectId,
    Date,
    Time,
    /// Not known to the driver: inferred from the JSON when written.
    Unknown,
}

fn present_value_type(object_type: u16) -> Type {
    match Kind::of(object_type) {
        Kind::Analog => Type::Real,
        Kind::Binary => Type::Enumerated(enums::BINARY_PV),
        Kind::MultiState => Type::Unsigned,
        Kind::Other => Type::Unknown,
    }
}

/// The standard's data type of `property` of an object of `object_type`.
fn property_type(object_type: u16, property: u32) -> Type {
    match property {
        // present-value, priority-array, relinquish-default
        85 | 87 | 104 => present_value_type(object_type),
        // alarm-value, feedback-value
        6 | 40 => match Kind::of(object_type) {
            Kind::Binary => Type::Enumerated(enums::BINARY_PV),
            Kind::MultiState => Type::Unsigned,
            Kind::Analog | Kind::Other => Type::Unknown,
        },
        // cov-increment, deadband, high-limit, low-limit, max-pres-value,
        // min-pres-value, resolution, setpoint
        22 | 25 | 45 | 59 | 65 | 69 | 106 | 108 => Type::Real,
        // apdu-segment-timeout, apdu-timeout, change-of-state-count, notification-class,
        // elapsed-active-time, max-apdu-length-accepted, max-info-frames, max-master,
        // minimum-off-time, minimum-on-time, number-of-apdu-retries, number-of-states,
        // protocol-version, time-delay, update-interval, vendor-identifier,
        // protocol-revision, database-revision, max-segments-accepted, time-delay-normal
        10 | 11 | 15 | 17 | 33 | 62 | 63 | 64 | 66 | 67 | 73 | 74 | 98 | 113 | 118 | 120 | 139
        | 155 | 167 | 356 => Type::Unsigned,
        // utc-offset
        119 => Type::Signed,
        // daylight-savings-status, out-of-service, event-detection-enable,
        // reliability-evaluation-inhibit
        24 | 81 | 353 | 357 => Type::Boolean,
        // action-text, active-text, application-software-version, description,
        // description-of-halt, device-type, firmware-revision, inactive-text, location,
        // model-name, object-name, state-text, vendor-name, profile-name, serial-number
        3 | 4 | 12 | 28 | 29 | 31 | 44 | 46 | 58 | 70 | 77 | 110 | 121 | 168 | 372 => Type::Text,
        // acked-transitions, ack-required, event-enable, limit-enable,
        // protocol-object-types-supported, protocol-services-supported, status-flags
        0 | 1 | 35 | 52 | 96 | 97 | 111 => Type::Bits,
        36 => Type::Enumerated(enums::EVENT_STATES),
        72 => Type::Enumerated(enums::NOTIFY_TYPES),
        79 => Type::Enumerated(enums::OBJECT_TYPES),
        84 => Type::Enumerated(enums::POLARITY),
        103 => Type::Enumerated(enums::RELIABILITY),
        107 => Type::Enumerated(enums::SEGMENTATION),
        112 => Type::Enumerated(enums::DEVICE_STATUS),
        117 => Type::Enumerated(enums::ENGINEERING_UNITS),
        // property-list
        371 => Type::Enumerated(enums::PROPERTIES),
        // object-identifier, object-list, structured-object-list
        75 | 76 | 209 => Type::ObjectId,
        56 => Type::Date,
        57 => Type::Time,
        _ => Type::Unknown,
    }
}

/// Whether a property is an array or a list, read whole as a JSON array even when it
/// has one element or none.
fn is_collection(property: u32) -> bool {
    matches!(
        property,
        // action-text, alarm-values, date-list, device-address-binding,
        // exception-schedule, fault-values, list-of-group-members,
        // list-of-object-property-references, object-list, priority-array,
        // recipient-list, state-text, time-synchronization-recipients, weekly-schedule,
        // event-time-stamps, log-buffer, active-cov-subscriptions, configuration-files,
        // restart-notification-recipients, utc-time-synchronization-recipients,
        // structured-object-list, subordinate-annotations, subordinate-list,
        // event-message-texts, event-message-texts-config, property-list
        3 | 7
            | 23
            | 30
            | 38
            | 39
            | 53
            | 54
            | 76
            | 87
            | 102
            | 110
            | 116
            | 123
            | 130
            | 131
            | 152
            | 154
            | 202
            | 206
            | 209
            | 210
            | 211
            | 351
            | 352
            | 371
    )
}

/// A property value read from the device as JSON. `index` is the array index that was
/// read, if any: index 0 is an array's length, any other index one element.
pub fn to_json(object_type: u16, property: u32, index: Option<u32>, elements: &[Element]) -> Value {
    let element_type = match index {
        Some(0) => Type::Unsigned,
        _ => property_type(object_type, property),
    };
    let mut values: Vec<Value> = elements
        .iter()
        .map(|element| element_json(element, element_type))
        .collect();
    if index.is_none() && is_collection(property) {
        return Value::Array(values);
    }
    match values.len() {
        1 => values.pop().unwrap_or(Value::Null),
        _ => Value::Array(values),
    }
}

fn element_json(element: &Element, element_type: Type) -> Value {
    match element {
        Element::Value(primitive) => primitive_json(primitive, element_type),
        Element::Context { tag, data } => json!({"context_tag": tag, "data": hex(data)}),
        Element::Constructed { tag, elements } => json!({
            "context_tag": tag,
            "value": elements
                .iter()
                .map(|element| element_json(element, Type::Unknown))
                .collect::<Vec<_>>(),
        }),
    }
}

fn primitive_json(primitive: &Primitive, element_type: Type) -> Value {
    match primitive {
        Primitive::Null => Value::Null,
        Primitive::Boolean(value) => Value::Bool(*value),
        Primitive::Unsigned(value) => Value::from(*value),
        Primitive::Signed(value) => Value::from(*value),
        Primitive::Real(value) => real_json(*value),
        Primitive::Double(value) => Number::from_f64(*value).map_or(Value::Null, Value::Number),
        Primitive::OctetString(octets) => Value::String(hex(octets)),
        Primitive::CharacterString(text) => Value::String(text.clone()),
        Primitive::BitString(bits) => Value::from(bits.clone()),
        Primitive::Enumerated(value) => match element_type {
            Type::Enumerated(table) => {
                enums::name(table, *value).map_or_else(|| Value::from(*value), Value::from)
            }
            _ => Value::from(*value),
        },
        Primitive::Date(date) => Value::String(date_text(date)),
        Primitive::Time(time) => Value::String(time_text(time)),
        Primitive::ObjectId(id) => object_id_json(*id),
    }
}

/// A real as the shortest decimal that reads back as the same `f32` (21.5, 0.1), not
/// the `f64` it widens to (0.10000000149011612). NaN and infinities, which JSON cannot
/// carry, are `null`.
fn real_json(value: f32) -> Value {
    value
        .to_string()
        .parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

/// An object identifier as JSON: `{"object_type": "analog-value", "instance": 1}`.
pub fn object_id_json(id: ObjectId) -> Value {
    json!({
        "object_type": object_type_json(id.object_type),
        "instance": id.instance,
    })
}

/// An object type's name, or its number when it has none (proprietary types).
pub fn object_type_json(object_type: u16) -> Value {
    enums::name(enums::OBJECT_TYPES, u32::from(object_type))
        .map_or_else(|| Value::from(object_type), Value::from)
}

fn hex(octets: &[u8]) -> String {
    octets.iter().map(|octet| format!("{octet:02x}")).collect()
}

fn field(value: u8, width: usize) -> String {
    if value == UNSPECIFIED {
        "*".to_string()
    } else {
        format!("{value:0width$}")
    }
}

fn date_text(date: &Date) -> String {
    let year = if date.year == UNSPECIFIED {
        "*".to_string()
    } else {
        (1900 + u32::from(date.year)).to_string()
    };
    format!("{year}-{}-{}", field(date.month, 2), field(date.day, 2))
}

fn time_text(time: &Time) -> String {
    format!(
        "{}:{}:{}.{}",
        field(time.hour, 2),
        field(time.minute, 2),
        field(time.second, 2),
        field(time.hundredths, 2)
    )
}

/// The encoding of `value` as the value of `property` (element `index`, if given) of an
/// object of `object_type`, or why it cannot be one.
pub fn encode(
    object_type: u16,
    property: u32,
    index: Option<u32>,
    value: &Value,
) -> Result<Vec<u8>, String> {
    let element_type = match index {
        Some(0) => Type::Unsigned,
        _ => property_type(object_type, property),
    };
    let mut writer = Writer::new();
    match value {
        // An array is the elements of an array or list property, except that a bit
        // string is itself an array of booleans.
        Value::Array(items) if index.is_none() && element_type != Type::Bits => {
            for item in items {
                writer.primitive(&primitive(item, element_type)?);
            }
        }
        single => writer.primitive(&primitive(single, element_type)?),
    }
    Ok(writer.into_bytes())
}

fn primitive(value: &Value, element_type: Type) -> Result<Primitive, String> {
    if let Value::Object(explicit) = value
        && (explicit.contains_key("type") || element_type != Type::ObjectId)
    {
        return explicit_primitive(explicit);
    }
    if value.is_null() {
        return Ok(Primitive::Null);
    }
    let expected = |what: &str| format!("expected {what}, got {value}");
    Ok(match element_type {
        Type::Real => Primitive::Real(real(value).ok_or_else(|| expected("a number"))?),
        Type::Unsigned => Primitive::Unsigned(
            value
                .as_u64()
                .ok_or_else(|| expected("an unsigned integer"))?,
        ),
        Type::Signed => Primitive::Signed(value.as_i64().ok_or_else(|| expected("an integer"))?),
        Type::Boolean => {
            Primitive::Boolean(value.as_bool().ok_or_else(|| expected("true or false"))?)
        }
        Type::Text => Primitive::CharacterString(
            value
                .as_str()
                .ok_or_else(|| expected("a string"))?
                .to_string(),
        ),
        Type::Bits => {
            Primitive::BitString(bits(value).ok_or_else(|| expected("an array of booleans"))?)
        }
        Type::Enumerated(table) => Primitive::Enumerated(enumerated(value, table)?),
        Type::ObjectId => Primitive::ObjectId(object_id(value)?),
        Type::Date => Primitive::Date(date(value.as_str().ok_or_else(|| expected("a date"))?)?),
        Type::Time => Primitive::Time(time(value.as_str().ok_or_else(|| expected("a time"))?)?),
        Type::Unknown => inferred(value)?,
    })
}

/// A value whose type is not known, by its JSON type: a boolean, an unsigned or signed
/// integer, a real, or a character string.
fn inferred(value: &Value) -> Result<Primitive, String> {
    match value {
        Value::Bool(value) => Ok(Primitive::Boolean(*value)),
        Value::Number(number) => {
            if let Some(unsigned) = number.as_u64() {
                Ok(Primitive::Unsigned(unsigned))
            } else if let Some(signed) = number.as_i64() {
                Ok(Primitive::Signed(signed))
            } else {
                real(value)
                    .map(Primitive::Real)
                    .ok_or_else(|| format!("{value} does not fit a real"))
            }
        }
        Value::String(text) => Ok(Primitive::CharacterString(text.clone())),
        other => Err(format!(
            "cannot tell the BACnet type of {other}: give it as {{\"type\": ..., \"value\": ...}}"
        )),
    }
}

/// The explicit form, `{"type": "real", "value": 21.5}`.
fn explicit_primitive(explicit: &Map<String, Value>) -> Result<Primitive, String> {
    let Some(Value::String(kind)) = explicit.get("type") else {
        return Err("an object value needs a \"type\" (such as \"real\") and a \"value\"".into());
    };
    if let Some(extra) = explicit
        .keys()
        .find(|key| *key != "type" && *key != "value")
    {
        return Err(format!("unknown key {extra:?} in a typed value"));
    }
    let value = explicit.get("value").unwrap_or(&Value::Null);
    let element_type = match kind.as_str() {
        "null" => return Ok(Primitive::Null),
        "real" => Type::Real,
        "unsigned" => Type::Unsigned,
        "signed" => Type::Signed,
        "boolean" => Type::Boolean,
        "character-string" => Type::Text,
        "bit-string" => Type::Bits,
        "enumerated" => {
            return value
                .as_u64()
                .and_then(|value| u32::try_from(value).ok())
                .map(Primitive::Enumerated)
                .ok_or_else(|| format!("an enumerated value is a number, got {value}"));
        }
        "object-identifier" => Type::ObjectId,
        "date" => Type::Date,
        "time" => Type::Time,
        "double" => {
            return value
                .as_f64()
                .map(Primitive::Double)
                .ok_or_else(|| format!("a double is a number, got {value}"));
        }
        "octet-string" => {
            return value
                .as_str()
                .and_then(unhex)
                .map(Primitive::OctetString)
                .ok_or_else(|| format!("an octet string is given in hex, got {value}"));
        }
        other => {
            return Err(format!(
                "unknown type {other:?}: null, boolean, unsigned, signed, real, double, \
                 octet-string, character-string, bit-string, enumerated, date, time or \
                 object-identifier"
            ));
        }
    };
    if value.is_null() {
        return Err(format!("a typed value of type {kind:?} needs a \"value\""));
    }
    primitive(value, element_type)
}

fn real(value: &Value) -> Option<f32> {
    let number = value.as_f64()?;
    // `as` rounds to the nearest f32; only values beyond its range are refused.
    (number.is_finite() && number.abs() <= f64::from(f32::MAX)).then_some(number as f32)
}

fn bits(value: &Value) -> Option<Vec<bool>> {
    value.as_array()?.iter().map(Value::as_bool).collect()
}

fn enumerated(value: &Value, table: Table) -> Result<u32, String> {
    match value {
        Value::String(name) => enums::value(table, name).ok_or_else(|| {
            let examples: Vec<&str> = table.iter().take(4).map(|(_, name)| *name).collect();
            format!(
                "unknown name {name:?} (expected one like {}, or a number)",
                examples.join(", ")
            )
        }),
        // Binary values are also written as booleans: true is active.
        Value::Bool(active) if table == enums::BINARY_PV => Ok(u32::from(*active)),
        other => other
            .as_u64()
            .and_then(|value| u32::try_from(value).ok())
            .ok_or_else(|| format!("expected a name or a number, got {other}")),
    }
}

/// An object identifier from `{"object_type": ..., "instance": ...}`.
fn object_id(value: &Value) -> Result<ObjectId, String> {
    let object_type = match value.get("object_type") {
        Some(Value::String(name)) => enums::value(enums::OBJECT_TYPES, name)
            .and_then(|value| u16::try_from(value).ok())
            .ok_or_else(|| format!("unknown object type {name:?}"))?,
        Some(number) => number
            .as_u64()
            .and_then(|value| u16::try_from(value).ok())
            .ok_or_else(|| format!("object type {number} is not a name or a number"))?,
        None => {
            return Err(format!(
                "an object identifier is {{\"object_type\": ..., \"instance\": ...}}, got {value}"
            ));
        }
    };
    let instance = value
        .get("instance")
        .and_then(Value::as_u64)
        .and_then(|instance| u32::try_from(instance).ok())
        .ok_or_else(|| format!("an object identifier needs an instance, got {value}"))?;
    ObjectId::new(object_type, instance)
        .ok_or_else(|| format!("object type {object_type} or instance {instance} is out of range"))
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| {
            text.get(at..at + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect()
}

/// One field of a date or time: a number up to `max`, or `*` for unspecified.
fn date_field(text: &str, max: u32) -> Option<u8> {
    if text == "*" {
        return Some(UNSPECIFIED);
    }
    let value: u32 = text.parse().ok()?;
    (value <= max).then(|| u8::try_from(value).ok()).flatten()
}

/// `YYYY-MM-DD`, any part `*` for unspecified; the day of the week is unspecified.
fn date(text: &str) -> Result<Date, String> {
    let refuse = || format!("a date is YYYY-MM-DD (a part may be *), got {text:?}");
    let mut parts = text.split('-');
    let (Some(year), Some(month), Some(day), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(refuse());
    };
    let year = if year == "*" {
        UNSPECIFIED
    } else {
        year.parse::<u32>()
            .ok()
            .and_then(|year| year.checked_sub(1900))
            .and_then(|since| u8::try_from(since).ok())
            .filter(|since| *since != UNSPECIFIED)
            .ok_or_else(refuse)?
    };
    Ok(Date {
        year,
        month: date_field(month, 14).ok_or_else(refuse)?,
        day: date_field(day, 34).ok_or_else(refuse)?,
        weekday: UNSPECIFIED,
    })
}

/// `HH:MM:SS.hh` (seconds and hundredths optional), any part `*` for unspecified.
fn time(text: &str) -> Result<Time, String> {
    let refuse = || format!("a time is HH:MM:SS.hh (a part may be *), got {text:?}");
    let (clock, hundredths) = text.split_once('.').unwrap_or((text, "0"));
    let mut parts = clock.split(':');
    let (Some(hour), Some(minute), second, None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(refuse());
    };
    Ok(Time {
        hour: date_field(hour, 23).ok_or_else(refuse)?,
        minute: date_field(minute, 59).ok_or_else(refuse)?,
        second: date_field(second.unwrap_or("0"), 59).ok_or_else(refuse)?,
        hundredths: date_field(hundredths, 99).ok_or_else(refuse)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tag::Reader;

    const AV: u16 = 2;
    const BV: u16 = 5;
    const MSV: u16 = 19;
    const DEVICE: u16 = 8;

    fn elements(values: &[Primitive]) -> Vec<Element> {
        values.iter().cloned().map(Element::Value).collect()
    }

    fn decoded_back(bytes: &[u8]) -> Vec<Element> {
        Reader::new(bytes).elements_to_end().unwrap()
    }

    #[test]
    fn reads_become_plain_json() {
        let read = |object_type, property, value: Primitive| {
            to_json(object_type, property, None, &elements(&[value]))
        };
        assert_eq!(read(AV, 85, Primitive::Real(21.5)), json!(21.5));
        assert_eq!(read(AV, 85, Primitive::Real(0.1)), json!(0.1));
        assert_eq!(read(AV, 85, Primitive::Real(f32::NAN)), Value::Null);
        assert_eq!(read(BV, 85, Primitive::Enumerated(1)), json!("active"));
        assert_eq!(read(BV, 85, Primitive::Enumerated(0)), json!("inactive"));
        assert_eq!(read(BV, 85, Primitive::Enumerated(7)), json!(7));
        assert_eq!(read(MSV, 85, Primitive::Unsigned(2)), json!(2));
        assert_eq!(
            read(AV, 117, Primitive::Enumerated(62)),
            json!("degrees-celsius")
        );
        assert_eq!(read(AV, 117, Primitive::Enumerated(60000)), json!(60000));
        assert_eq!(read(AV, 36, Primitive::Enumerated(0)), json!("normal"));
        assert_eq!(
            read(AV, 103, Primitive::Enumerated(0)),
            json!("no-fault-detected")
        );
        assert_eq!(
            read(DEVICE, 107, Primitive::Enumerated(3)),
            json!("no-segmentation")
        );
        assert_eq!(
            read(DEVICE, 112, Primitive::Enumerated(0)),
            json!("operational")
        );
        assert_eq!(read(AV, 1000, Primitive::Enumerated(3)), json!(3));
        assert_eq!(read(AV, 81, Primitive::Boolean(false)), json!(false));
        assert_eq!(
            read(AV, 77, Primitive::CharacterString("zone".into())),
            json!("zone")
        );
        assert_eq!(
            read(
                AV,
                111,
                Primitive::BitString(vec![false, true, false, false])
            ),
            json!([false, true, false, false])
        );
        assert_eq!(
            read(AV, 75, Primitive::ObjectId(ObjectId::new(2, 1).unwrap())),
            json!({"object_type": "analog-value", "instance": 1})
        );
        assert_eq!(
            read(AV, 75, Primitive::ObjectId(ObjectId::new(600, 3).unwrap())),
            json!({"object_type": 600, "instance": 3})
        );
        assert_eq!(
            read(AV, 5000, Primitive::OctetString(vec![0x0A, 0xFF])),
            json!("0aff")
        );
        assert_eq!(read(AV, 5000, Primitive::Signed(-4)), json!(-4));
        assert_eq!(read(AV, 5000, Primitive::Double(1.25)), json!(1.25));
        assert_eq!(
            read(
                DEVICE,
                56,
                Primitive::Date(Date {
                    year: 124,
                    month: 5,
                    day: 1,
                    weekday: 3
                })
            ),
            json!("2024-05-01")
        );
        assert_eq!(
            read(
                DEVICE,
                57,
                Primitive::Time(Time {
                    hour: 7,
                    minute: 5,
                    second: UNSPECIFIED,
                    hundredths: 0
                })
            ),
            json!("07:05:*.00")
        );
    }

    #[test]
    fn arrays_and_lists_stay_arrays() {
        let texts = elements(&[
            Primitive::CharacterString("occupied".into()),
            Primitive::CharacterString("unoccupied".into()),
        ]);
        assert_eq!(
            to_json(MSV, 110, None, &texts),
            json!(["occupied", "unoccupied"])
        );
        let one = elements(&[Primitive::CharacterString("only".into())]);
        assert_eq!(to_json(MSV, 110, None, &one), json!(["only"]));
        assert_eq!(to_json(MSV, 110, Some(1), &one), json!("only"));
        assert_eq!(to_json(MSV, 110, None, &[]), json!([]));
        assert_eq!(
            to_json(MSV, 110, Some(0), &elements(&[Primitive::Unsigned(3)])),
            json!(3)
        );
        let mut priorities = vec![Primitive::Null; 16];
        if let Some(slot) = priorities.get_mut(7) {
            *slot = Primitive::Enumerated(1);
        }
        let read = to_json(BV, 87, None, &elements(&priorities));
        assert_eq!(read.as_array().map(Vec::len), Some(16));
        assert_eq!(read[7], json!("active"));
        assert_eq!(read[0], Value::Null);
        let list = elements(&[Primitive::Enumerated(85), Primitive::Enumerated(77)]);
        assert_eq!(
            to_json(AV, 371, None, &list),
            json!(["present-value", "object-name"])
        );
        // An unknown property with several values is an array, with one a value.
        let several = elements(&[Primitive::Unsigned(1), Primitive::Unsigned(2)]);
        assert_eq!(to_json(AV, 4000, None, &several), json!([1, 2]));
    }

    #[test]
    fn constructed_values_keep_their_tags() {
        let value = [
            Element::Context {
                tag: 0,
                data: vec![1, 2],
            },
            Element::Constructed {
                tag: 1,
                elements: elements(&[Primitive::Real(1.5)]),
            },
        ];
        assert_eq!(
            to_json(DEVICE, 4000, None, &value),
            json!([
                {"context_tag": 0, "data": "0102"},
                {"context_tag": 1, "value": [1.5]},
            ])
        );
    }

    #[test]
    fn writes_take_the_propertys_type() {
        let write = |object_type, property, index, value: Value| {
            decoded_back(&encode(object_type, property, index, &value).unwrap())
        };
        assert_eq!(
            write(AV, 85, None, json!(23)),
            elements(&[Primitive::Real(23.0)])
        );
        assert_eq!(
            write(AV, 85, None, json!(21.5)),
            elements(&[Primitive::Real(21.5)])
        );
        assert_eq!(
            write(AV, 85, None, Value::Null),
            elements(&[Primitive::Null])
        );
        assert_eq!(
            write(BV, 85, None, json!("active")),
            elements(&[Primitive::Enumerated(1)])
        );
        assert_eq!(
            write(BV, 85, None, json!(false)),
            elements(&[Primitive::Enumerated(0)])
        );
        assert_eq!(
            write(BV, 85, None, json!(1)),
            elements(&[Primitive::Enumerated(1)])
        );
        assert_eq!(
            write(MSV, 85, None, json!(3)),
            elements(&[Primitive::Unsigned(3)])
        );
        assert_eq!(
            write(AV, 77, None, json!("zone")),
            elements(&[Primitive::CharacterString("zone".into())])
        );
        assert_eq!(
            write(AV, 117, None, json!("degrees-fahrenheit")),
            elements(&[Primitive::Enumerated(64)])
        );
        assert_eq!(
            write(AV, 117, None, json!(62)),
            elements(&[Primitive::Enumerated(62)])
        );
        assert_eq!(
            write(AV, 81, None, json!(true)),
            elements(&[Primitive::Boolean(true)])
        );
        assert_eq!(
            write(AV, 111, None, json!([false, true, false, false])),
            elements(&[Primitive::BitString(vec![false, true, false, false])])
        );
        assert_eq!(
            write(DEVICE, 119, None, json!(-60)),
            elements(&[Primitive::Signed(-60)])
        );
        assert_eq!(
            write(MSV, 110, None, json!(["a", "b"])),
            elements(&[
                Primitive::CharacterString("a".into()),
                Primitive::CharacterString("b".into())
            ])
        );
        assert_eq!(
            write(MSV, 110, Some(2), json!("b")),
            elements(&[Primitive::CharacterString("b".into())])
        );
        assert_eq!(
            write(MSV, 110, Some(0), json!(2)),
            elements(&[Primitive::Unsigned(2)])
        );
        assert_eq!(
            write(DEVICE, 56, None, json!("2024-05-01")),
            elements(&[Primitive::Date(Date {
                year: 124,
                month: 5,
                day: 1,
                weekday: UNSPECIFIED
            })])
        );
        assert_eq!(
            write(DEVICE, 57, None, json!("13:30")),
            elements(&[Primitive::Time(Time {
                hour: 13,
                minute: 30,
                second: 0,
                hundredths: 0
            })])
        );
        // Unknown properties: by the JSON type.
        assert_eq!(
            write(AV, 4000, None, json!(5)),
            elements(&[Primitive::Unsigned(5)])
        );
        assert_eq!(
            write(AV, 4000, None, json!(-5)),
            elements(&[Primitive::Signed(-5)])
        );
        assert_eq!(
            write(AV, 4000, None, json!(0.5)),
            elements(&[Primitive::Real(0.5)])
        );
        assert_eq!(
            write(AV, 4000, None, json!("x")),
            elements(&[Primitive::CharacterString("x".into())])
        );
    }

    #[test]
    fn explicit_types_override() {
        let write =
            |property, value: Value| decoded_back(&encode(AV, property, None, &value).unwrap());
        assert_eq!(
            write(85, json!({"type": "character-string", "value": "hot"})),
            elements(&[Primitive::CharacterString("hot".into())])
        );
        assert_eq!(
            write(4000, json!({"type": "enumerated", "value": 3})),
            elements(&[Primitive::Enumerated(3)])
        );
        assert_eq!(
            write(4000, json!({"type": "double", "value": 2.5})),
            elements(&[Primitive::Double(2.5)])
        );
        assert_eq!(
            write(4000, json!({"type": "octet-string", "value": "c0a80001"})),
            elements(&[Primitive::OctetString(vec![0xC0, 0xA8, 0, 1])])
        );
        assert_eq!(
            write(4000, json!({"type": "signed", "value": 7})),
            elements(&[Primitive::Signed(7)])
        );
        assert_eq!(
            write(4000, json!({"type": "null"})),
            elements(&[Primitive::Null])
        );
        assert_eq!(
            write(
                4000,
                json!({"type": "object-identifier", "value": {"object_type": "device", "instance": 9}})
            ),
            elements(&[Primitive::ObjectId(ObjectId::new(8, 9).unwrap())])
        );
        assert_eq!(
            write(
                4000,
                json!([{"type": "unsigned", "value": 1}, {"type": "real", "value": 2}])
            ),
            elements(&[Primitive::Unsigned(1), Primitive::Real(2.0)])
        );
    }

    #[test]
    fn values_that_do_not_fit_are_refused() {
        let refused = |object_type, property, value: Value| {
            encode(object_type, property, None, &value).unwrap_err()
        };
        assert_eq!(
            refused(AV, 85, json!("hot")),
            "expected a number, got \"hot\""
        );
        assert_eq!(refused(AV, 85, json!(1e39)), "expected a number, got 1e+39");
        assert!(refused(BV, 85, json!("on")).contains("unknown name \"on\""));
        assert_eq!(
            refused(MSV, 85, json!(-1)),
            "expected an unsigned integer, got -1"
        );
        assert_eq!(
            refused(AV, 81, json!("yes")),
            "expected true or false, got \"yes\""
        );
        assert_eq!(refused(AV, 77, json!(5)), "expected a string, got 5");
        assert!(refused(AV, 4000, json!({"value": 1})).contains("needs a \"type\""));
        assert!(refused(AV, 4000, json!({"type": "float", "value": 1})).contains("unknown type"));
        assert!(refused(AV, 4000, json!({"type": "real"})).contains("needs a \"value\""));
        assert!(refused(AV, 4000, json!({"type": "real", "value": 1, "x": 2})).contains("\"x\""));
        assert!(refused(AV, 4000, json!({"type": "octet-string", "value": "abc"})).contains("hex"));
        assert!(refused(AV, 4000, json!([[1]])).contains("cannot tell"));
        assert!(refused(DEVICE, 56, json!("2024-13-45")).contains("YYYY-MM-DD"));
        assert!(refused(DEVICE, 57, json!("25:00")).contains("HH:MM"));
        assert!(
            refused(AV, 75, json!({"object_type": "room", "instance": 1}))
                .contains("unknown object type")
        );
    }

    #[test]
    fn dates_and_times_round_trip_through_text() {
        for text in ["2024-05-01", "*-12-*", "1900-01-31"] {
            assert_eq!(date_text(&date(text).unwrap()), text);
        }
        for text in ["00:00:00.00", "23:59:59.99", "*:30:*.*"] {
            assert_eq!(time_text(&time(text).unwrap()), text);
        }
        assert!(
            date("2155-01-01").is_err(),
            "year 2155 is the unspecified 255"
        );
        assert!(date("1899-01-01").is_err());
    }
}
