//! The services the driver uses, as their request and ACK productions (clauses 15 and 16
//! of ANSI/ASHRAE 135): Who-Is and I-Am, ReadProperty, WriteProperty and
//! ReadPropertyMultiple.
//!
//! Pure code with no host calls, unit-tested natively. An ACK is accepted only when it
//! answers the request: the object and property it echoes must be the ones asked for.

use crate::tag::{Decoded, Element, ObjectId, Primitive, Reader, Writer, malformed};

/// Confirmed service choices (clause 21).
pub mod confirmed {
    /// ReadProperty.
    pub const READ_PROPERTY: u8 = 12;
    /// ReadPropertyMultiple.
    pub const READ_PROPERTY_MULTIPLE: u8 = 14;
    /// WriteProperty.
    pub const WRITE_PROPERTY: u8 = 15;
}

/// Unconfirmed service choices (clause 21).
pub mod unconfirmed {
    /// I-Am.
    pub const I_AM: u8 = 0;
    /// Who-Is.
    pub const WHO_IS: u8 = 8;
}

/// The object type of a device object.
pub const DEVICE: u16 = 8;

/// A property and, for an array, one of its elements (0 is the array's length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PropertyRef {
    /// The property identifier.
    pub property: u32,
    /// The array index, or `None` for the whole property.
    pub index: Option<u32>,
}

/// Who-Is, for every device or for the device instances `low..=high`.
pub fn who_is(range: Option<(u32, u32)>) -> Vec<u8> {
    let mut writer = Writer::new();
    if let Some((low, high)) = range {
        writer.context_unsigned(0, u64::from(low));
        writer.context_unsigned(1, u64::from(high));
    }
    writer.into_bytes()
}

/// What a device says about itself in I-Am.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IAm {
    /// The device object's identifier.
    pub device: ObjectId,
    /// The largest APDU the device accepts.
    pub max_apdu: u64,
    /// BACnetSegmentation: 0 both, 1 transmit, 2 receive, 3 none.
    pub segmentation: u32,
    /// The vendor identifier.
    pub vendor_id: u64,
}

/// The I-Am request.
pub fn parse_i_am(data: &[u8]) -> Decoded<IAm> {
    let mut reader = Reader::new(data);
    match (
        reader.primitive()?,
        reader.primitive()?,
        reader.primitive()?,
        reader.primitive()?,
    ) {
        (
            Primitive::ObjectId(device),
            Primitive::Unsigned(max_apdu),
            Primitive::Enumerated(segmentation),
            Primitive::Unsigned(vendor_id),
        ) if device.object_type == DEVICE => Ok(IAm {
            device,
            max_apdu,
            segmentation,
            vendor_id,
        }),
        other => malformed(format!("not an I-Am request: {other:?}")),
    }
}

fn object_and_property(writer: &mut Writer, object: ObjectId, property: PropertyRef) {
    writer.context_object_id(0, object);
    writer.context_unsigned(1, u64::from(property.property));
    if let Some(index) = property.index {
        writer.context_unsigned(2, u64::from(index));
    }
}

/// ReadProperty-Request.
pub fn read_property(object: ObjectId, property: PropertyRef) -> Vec<u8> {
    let mut writer = Writer::new();
    object_and_property(&mut writer, object, property);
    writer.into_bytes()
}

/// Whether an ACK's object answers a request for `asked`: the same object, or for the
/// wildcard device instance 4194303, the device that answered.
fn answers(asked: ObjectId, echoed: ObjectId) -> bool {
    asked == echoed
        || (asked.object_type == DEVICE
            && asked.instance == ObjectId::MAX_INSTANCE
            && echoed.object_type == DEVICE)
}

fn echoed_index(reader: &mut Reader<'_>, tag: u8) -> Decoded<Option<u32>> {
    reader
        .optional_context_unsigned(tag)?
        .map(|index| u32::try_from(index).or_else(|_| malformed("array index too large")))
        .transpose()
}

fn echoed_property(reader: &mut Reader<'_>, tag: u8) -> Decoded<u32> {
    let property = reader.context_unsigned(tag)?;
    u32::try_from(property).or_else(|_| malformed("property identifier too large"))
}

/// The property value of a ReadProperty-ACK that answers `object` and `property`.
pub fn parse_read_property_ack(
    data: &[u8],
    object: ObjectId,
    property: PropertyRef,
) -> Decoded<Vec<Element>> {
    let mut reader = Reader::new(data);
    let echoed_object = reader.context_object_id(0)?;
    let echoed = PropertyRef {
        property: echoed_property(&mut reader, 1)?,
        index: echoed_index(&mut reader, 2)?,
    };
    if !answers(object, echoed_object) || echoed != property {
        return malformed(format!(
            "the ACK is for {echoed_object:?} {echoed:?}, not the {object:?} {property:?} asked for"
        ));
    }
    reader.opening(3)?;
    let value = reader.elements_until(3)?;
    if !reader.is_empty() {
        return malformed("data after the property value");
    }
    Ok(value)
}

/// WriteProperty-Request: `value` is the property value's encoding (one or more
/// application-tagged values), `priority` 1-16 for commandable properties.
pub fn write_property(
    object: ObjectId,
    property: PropertyRef,
    value: &[u8],
    priority: Option<u8>,
) -> Vec<u8> {
    let mut writer = Writer::new();
    object_and_property(&mut writer, object, property);
    writer.opening(3);
    writer.raw(value);
    writer.closing(3);
    if let Some(priority) = priority {
        writer.context_unsigned(4, u64::from(priority));
    }
    writer.into_bytes()
}

/// ReadPropertyMultiple-Request for `reads`, in that order. Consecutive reads of one
/// object share its ReadAccessSpecification.
pub fn read_property_multiple(reads: &[(ObjectId, PropertyRef)]) -> Vec<u8> {
    let mut writer = Writer::new();
    let mut open: Option<ObjectId> = None;
    for (object, property) in reads {
        if open != Some(*object) {
            if open.is_some() {
                writer.closing(1);
            }
            writer.context_object_id(0, *object);
            writer.opening(1);
            open = Some(*object);
        }
        writer.context_unsigned(0, u64::from(property.property));
        if let Some(index) = property.index {
            writer.context_unsigned(1, u64::from(index));
        }
    }
    if open.is_some() {
        writer.closing(1);
    }
    writer.into_bytes()
}

/// A property value, or the error class and code the device gave instead.
pub type PropertyValue = Result<Vec<Element>, (u32, u32)>;

/// One result of a ReadPropertyMultiple-ACK.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadResult {
    /// The object.
    pub object: ObjectId,
    /// The property.
    pub property: PropertyRef,
    /// The value, or the error class and code the device gave for this property.
    pub value: PropertyValue,
}

/// Every result of a ReadPropertyMultiple-ACK, in the order the device sent them.
pub fn parse_read_property_multiple_ack(data: &[u8]) -> Decoded<Vec<ReadResult>> {
    let mut reader = Reader::new(data);
    let mut results = Vec::new();
    while !reader.is_empty() {
        let object = reader.context_object_id(0)?;
        reader.opening(1)?;
        while !reader.at_closing(1) {
            let property = PropertyRef {
                property: echoed_property(&mut reader, 2)?,
                index: echoed_index(&mut reader, 3)?,
            };
            let value = if reader.at_opening(4) {
                reader.opening(4)?;
                Ok(reader.elements_until(4)?)
            } else {
                reader.opening(5)?;
                let error = crate::apdu::error_class_and_code(&mut reader)?;
                reader.closing(5)?;
                Err(error)
            };
            results.push(ReadResult {
                object,
                property,
                value,
            });
        }
        reader.closing(1)?;
    }
    Ok(results)
}

/// The results of an ACK matched to the reads asked for, in their order: a device must
/// answer every read, in order (clause 15.7.1.3.1).
pub fn match_results(
    reads: &[(ObjectId, PropertyRef)],
    results: Vec<ReadResult>,
) -> Decoded<Vec<PropertyValue>> {
    if results.len() != reads.len() {
        return malformed(format!(
            "{} results for {} reads",
            results.len(),
            reads.len()
        ));
    }
    reads
        .iter()
        .zip(results)
        .map(|((object, property), result)| {
            if answers(*object, result.object) && result.property == *property {
                Ok(result.value)
            } else {
                malformed(format!(
                    "result for {:?} {:?} where {object:?} {property:?} was asked",
                    result.object, result.property
                ))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn av(instance: u32) -> ObjectId {
        ObjectId::new(2, instance).unwrap()
    }

    fn prop(property: u32) -> PropertyRef {
        PropertyRef {
            property,
            index: None,
        }
    }

    #[test]
    fn who_is_with_and_without_a_range() {
        assert_eq!(who_is(None), Vec::<u8>::new());
        assert_eq!(who_is(Some((3, 3))), [0x09, 0x03, 0x19, 0x03]);
        assert_eq!(
            who_is(Some((0, 4_194_303))),
            [0x09, 0x00, 0x1B, 0x3F, 0xFF, 0xFF]
        );
    }

    #[test]
    fn i_am_as_bacpypes3_sends_it() {
        let data = [
            0xC4, 0x02, 0x00, 0x02, 0x57, 0x22, 0x04, 0x00, 0x91, 0x00, 0x22, 0x03, 0xE7,
        ];
        assert_eq!(
            parse_i_am(&data).unwrap(),
            IAm {
                device: ObjectId::new(8, 599).unwrap(),
                max_apdu: 1024,
                segmentation: 0,
                vendor_id: 999
            }
        );
        // Not from a device object, and cut short.
        assert!(
            parse_i_am(&[
                0xC4, 0x00, 0x80, 0x00, 0x01, 0x21, 0x01, 0x91, 0x00, 0x21, 0x01
            ])
            .is_err()
        );
        assert!(parse_i_am(data.get(..12).unwrap()).is_err());
    }

    /// Clause F.3.5's example: ReadProperty of analog-input 5, present-value.
    #[test]
    fn read_property_as_in_annex_f() {
        let object = ObjectId::new(0, 5).unwrap();
        assert_eq!(
            read_property(object, prop(85)),
            [0x0C, 0x00, 0x00, 0x00, 0x05, 0x19, 0x55]
        );
        let ack = [
            0x0C, 0x00, 0x00, 0x00, 0x05, 0x19, 0x55, 0x3E, 0x44, 0x42, 0x90, 0x00, 0x00, 0x3F,
        ];
        assert_eq!(
            parse_read_property_ack(&ack, object, prop(85)).unwrap(),
            [Element::Value(Primitive::Real(72.0))]
        );
        // The ACK of another object or property is not believed.
        assert!(parse_read_property_ack(&ack, av(5), prop(85)).is_err());
        assert!(parse_read_property_ack(&ack, object, prop(77)).is_err());
        let indexed = PropertyRef {
            property: 85,
            index: Some(1),
        };
        assert!(parse_read_property_ack(&ack, object, indexed).is_err());
        // Cut short.
        assert!(parse_read_property_ack(ack.get(..13).unwrap(), object, prop(85)).is_err());
    }

    #[test]
    fn array_elements_and_the_device_wildcard() {
        let state_text = PropertyRef {
            property: 110,
            index: Some(2),
        };
        let msv = ObjectId::new(19, 1).unwrap();
        assert_eq!(
            read_property(msv, state_text),
            [0x0C, 0x04, 0xC0, 0x00, 0x01, 0x19, 0x6E, 0x29, 0x02]
        );
        let ack = [
            0x0C, 0x04, 0xC0, 0x00, 0x01, 0x19, 0x6E, 0x29, 0x02, 0x3E, 0x75, 0x03, 0x00, 0x6F,
            0x6E, 0x3F,
        ];
        assert_eq!(
            parse_read_property_ack(&ack, msv, state_text).unwrap(),
            [Element::Value(Primitive::CharacterString("on".into()))]
        );

        let wildcard = ObjectId::new(DEVICE, ObjectId::MAX_INSTANCE).unwrap();
        let ack = [
            0x0C, 0x02, 0x00, 0x02, 0x57, 0x19, 0x4B, 0x3E, 0xC4, 0x02, 0x00, 0x02, 0x57, 0x3F,
        ];
        assert_eq!(
            parse_read_property_ack(&ack, wildcard, prop(75)).unwrap(),
            [Element::Value(Primitive::ObjectId(
                ObjectId::new(8, 599).unwrap()
            ))]
        );
    }

    /// Clause F.3.7's example: WriteProperty of analog-value 1, present-value 180.0,
    /// and the same at priority 8.
    #[test]
    fn write_property_as_in_annex_f() {
        let mut value = Writer::new();
        value.primitive(&Primitive::Real(180.0));
        let value = value.into_bytes();
        assert_eq!(
            write_property(av(1), prop(85), &value, None),
            [
                0x0C, 0x00, 0x80, 0x00, 0x01, 0x19, 0x55, 0x3E, 0x44, 0x43, 0x34, 0x00, 0x00, 0x3F
            ]
        );
        assert_eq!(
            write_property(av(1), prop(85), &value, Some(8)),
            [
                0x0C, 0x00, 0x80, 0x00, 0x01, 0x19, 0x55, 0x3E, 0x44, 0x43, 0x34, 0x00, 0x00, 0x3F,
                0x49, 0x08
            ]
        );
    }

    /// Clause F.3.8's example: two properties of analog-input 16 and one of 17.
    #[test]
    fn read_property_multiple_as_in_annex_f() {
        let ai16 = ObjectId::new(0, 16).unwrap();
        let ai17 = ObjectId::new(0, 17).unwrap();
        let reads = [(ai16, prop(85)), (ai16, prop(103)), (ai17, prop(85))];
        assert_eq!(
            read_property_multiple(&reads),
            [
                0x0C, 0x00, 0x00, 0x00, 0x10, 0x1E, 0x09, 0x55, 0x09, 0x67, 0x1F, 0x0C, 0x00, 0x00,
                0x00, 0x11, 0x1E, 0x09, 0x55, 0x1F
            ]
        );
        // The ACK: 72.3 and no-fault-detected for 16; unknown-object for 17.
        let ack = [
            0x0C, 0x00, 0x00, 0x00, 0x10, 0x1E, 0x29, 0x55, 0x4E, 0x44, 0x42, 0x90, 0x99, 0x9A,
            0x4F, 0x29, 0x67, 0x4E, 0x91, 0x00, 0x4F, 0x1F, 0x0C, 0x00, 0x00, 0x00, 0x11, 0x1E,
            0x29, 0x55, 0x5E, 0x91, 0x01, 0x91, 0x1F, 0x5F, 0x1F,
        ];
        let results = parse_read_property_multiple_ack(&ack).unwrap();
        assert_eq!(
            results,
            [
                ReadResult {
                    object: ai16,
                    property: prop(85),
                    value: Ok(vec![Element::Value(Primitive::Real(72.3))])
                },
                ReadResult {
                    object: ai16,
                    property: prop(103),
                    value: Ok(vec![Element::Value(Primitive::Enumerated(0))])
                },
                ReadResult {
                    object: ai17,
                    property: prop(85),
                    value: Err((1, 31))
                },
            ]
        );
        let matched = match_results(&reads, results.clone()).unwrap();
        assert_eq!(matched.len(), 3);
        assert_eq!(matched.get(2), Some(&Err((1, 31))));
        // Results in another order, or too few, are not believed.
        let mut swapped = results.clone();
        swapped.swap(0, 1);
        assert!(match_results(&reads, swapped).is_err());
        assert!(match_results(reads.get(..2).unwrap(), results).is_err());
        assert!(parse_read_property_multiple_ack(ack.get(..30).unwrap()).is_err());
    }

    #[test]
    fn read_property_multiple_with_an_array_index() {
        let msv = ObjectId::new(19, 1).unwrap();
        let reads = [(
            msv,
            PropertyRef {
                property: 110,
                index: Some(0),
            },
        )];
        assert_eq!(
            read_property_multiple(&reads),
            [
                0x0C, 0x04, 0xC0, 0x00, 0x01, 0x1E, 0x09, 0x6E, 0x19, 0x00, 0x1F
            ]
        );
        let ack = [
            0x0C, 0x04, 0xC0, 0x00, 0x01, 0x1E, 0x29, 0x6E, 0x39, 0x00, 0x4E, 0x21, 0x03, 0x4F,
            0x1F,
        ];
        let results = parse_read_property_multiple_ack(&ack).unwrap();
        assert_eq!(
            match_results(&reads, results).unwrap(),
            [Ok(vec![Element::Value(Primitive::Unsigned(3))])]
        );
    }
}
