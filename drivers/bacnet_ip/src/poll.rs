//! The points the driver reads on a timer and publishes as status.
//!
//! The settings are checked as a whole when they arrive, so that a bad entry is refused
//! by `init` (and the previous polls keep running) instead of failing on every tick.

use std::collections::BTreeSet;

use serde::Deserialize;
use warden_driver_sdk::{Error, Result, Schema};

use crate::params::{Instance, ObjectType, PropertyId};
use crate::services::PropertyRef;

/// Status keys that are not the points': the host's and the driver's own.
pub const RESERVED_KEYS: [&str; 3] = ["connected", "device_instance", "vendor_id"];

/// A property read on every poll and published as status under `name`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Schema)]
pub struct Point {
    /// The status key the value is published under.
    pub name: String,
    /// The object type, such as `analog-input`.
    pub object_type: ObjectType,
    /// The object's instance number.
    pub instance: Instance,
    /// The property; `present-value` when left out.
    #[serde(default)]
    pub property: PropertyId,
    /// One element of an array property; the whole property when left out.
    #[serde(default)]
    pub array_index: Option<u32>,
}

impl Point {
    /// The property read.
    pub fn property_ref(&self) -> PropertyRef {
        PropertyRef {
            property: self.property.0,
            index: self.array_index,
        }
    }
}

/// `points` if every one of them can be polled, or why not.
pub fn checked(points: Vec<Point>) -> Result<Vec<Point>> {
    let mut names = BTreeSet::new();
    for point in &points {
        if point.name.is_empty() {
            return Err(Error::invalid_arguments("points: every point needs a name"));
        }
        if RESERVED_KEYS.contains(&point.name.as_str()) {
            return Err(Error::invalid_arguments(format!(
                "points: `{}` is a status key of the driver's own; choose another name",
                point.name
            )));
        }
        if !names.insert(point.name.as_str()) {
            return Err(Error::invalid_arguments(format!(
                "points: the name `{}` is used twice",
                point.name
            )));
        }
    }
    Ok(points)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn point(value: Value) -> Point {
        Point::deserialize(value).unwrap()
    }

    #[test]
    fn points_parse_with_defaults() {
        let parsed =
            point(json!({"name": "zone_temp", "object_type": "analog-input", "instance": 1}));
        assert_eq!(
            parsed,
            Point {
                name: "zone_temp".into(),
                object_type: ObjectType(0),
                instance: Instance(1),
                property: PropertyId(85),
                array_index: None,
            }
        );
        let texts = point(json!({
            "name": "modes", "object_type": "multi-state-value", "instance": 1,
            "property": "state-text", "array_index": 2
        }));
        assert_eq!(
            texts.property_ref(),
            PropertyRef {
                property: 110,
                index: Some(2)
            }
        );
    }

    #[test]
    fn unusable_points_are_refused_by_name() {
        let good = point(json!({"name": "a", "object_type": "analog-value", "instance": 1}));
        assert_eq!(checked(vec![good.clone()]).unwrap(), vec![good.clone()]);
        let message = |points: Vec<Point>| match checked(points) {
            Err(Error::InvalidArguments(message)) => message,
            other => panic!("expected invalid arguments, got {other:?}"),
        };
        assert_eq!(
            message(vec![good.clone(), good.clone()]),
            "points: the name `a` is used twice"
        );
        let unnamed = Point {
            name: String::new(),
            ..good.clone()
        };
        assert!(message(vec![unnamed]).contains("needs a name"));
        let reserved = Point {
            name: "connected".into(),
            ..good
        };
        assert!(message(vec![reserved]).contains("status key of the driver's own"));
        assert!(
            serde_json::from_value::<Point>(
                json!({"name": "x", "object_type": "analog-value", "instance": 4_194_304})
            )
            .is_err()
        );
    }
}
