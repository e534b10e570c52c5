//! Reading properties: one with ReadProperty, several with ReadPropertyMultiple in
//! requests of a configured size, and ReadProperty again where ReadPropertyMultiple does
//! not work (a device without the service, or an answer too large for one APDU).
//!
//! Nothing here calls the host: the client reaches the device through a [`Link`].

use crate::client::{Ack, Client, Failure, Link, Refusal, UNRECOGNIZED_SERVICE};
use crate::services::{self, PropertyRef, confirmed};
use crate::tag::{Element, ObjectId};

/// The value of one read, or why the device refused it (`object: unknown-object`).
pub type ReadResult = Result<Vec<Element>, String>;

/// Abort reasons of an answer too large for one unsegmented APDU: buffer-overflow,
/// segmentation-not-supported, apdu-too-long.
const TOO_LARGE: [u8; 3] = [1, 4, 11];

/// How several properties are read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reads {
    per_request: usize,
    /// The device rejected ReadPropertyMultiple: read with ReadProperty from now on.
    no_read_multiple: bool,
}

/// Read one property with ReadProperty. A refusal of the device is the inner error.
pub fn read_one(
    client: &mut Client,
    link: &mut impl Link,
    object: ObjectId,
    property: PropertyRef,
) -> Result<Result<Vec<Element>, Refusal>, Failure> {
    let request = services::read_property(object, property);
    match client.confirmed(link, confirmed::READ_PROPERTY, &request) {
        Ok(Ack::Complex(data)) => services::parse_read_property_ack(&data, object, property)
            .map(Ok)
            .map_err(|error| Failure::Malformed(error.to_string())),
        Ok(Ack::Simple) => Err(Failure::Malformed(
            "a SimpleACK where the property value belongs".into(),
        )),
        Err(Failure::Refused(refusal)) => Ok(Err(refusal)),
        Err(failure) => Err(failure),
    }
}

impl Reads {
    /// Reads of up to `per_request` properties per ReadPropertyMultiple request.
    pub fn new(per_request: usize) -> Reads {
        Reads {
            per_request: per_request.max(1),
            no_read_multiple: false,
        }
    }

    /// Whether ReadPropertyMultiple is still used (the device has not rejected it).
    pub fn has_read_multiple(&self) -> bool {
        !self.no_read_multiple
    }

    /// Read `wanted`, returning one result per read in order. A failure of the device or
    /// the link as a whole (no answer, a malformed answer) fails every read.
    pub fn read(
        &mut self,
        client: &mut Client,
        link: &mut impl Link,
        wanted: &[(ObjectId, PropertyRef)],
    ) -> Result<Vec<ReadResult>, Failure> {
        let mut results = Vec::with_capacity(wanted.len());
        for chunk in wanted.chunks(self.per_request.max(1)) {
            let batch = if chunk.len() > 1 && !self.no_read_multiple {
                self.read_multiple(client, link, chunk)?
            } else {
                None
            };
            match batch {
                Some(batch) => results.extend(batch),
                None => {
                    for (object, property) in chunk {
                        let result = read_one(client, link, *object, *property)?;
                        results.push(result.map_err(|refusal| refusal.to_string()));
                    }
                }
            }
        }
        Ok(results)
    }

    /// One ReadPropertyMultiple; `None` when it should be done with ReadProperty.
    fn read_multiple(
        &mut self,
        client: &mut Client,
        link: &mut impl Link,
        chunk: &[(ObjectId, PropertyRef)],
    ) -> Result<Option<Vec<ReadResult>>, Failure> {
        let request = services::read_property_multiple(chunk);
        match client.confirmed(link, confirmed::READ_PROPERTY_MULTIPLE, &request) {
            Ok(Ack::Complex(data)) => {
                let results = services::parse_read_property_multiple_ack(&data)
                    .and_then(|results| services::match_results(chunk, results))
                    .map_err(|error| Failure::Malformed(error.to_string()))?;
                Ok(Some(
                    results
                        .into_iter()
                        .map(|result| {
                            result
                                .map_err(|(class, code)| Refusal::Error { class, code }.to_string())
                        })
                        .collect(),
                ))
            }
            Ok(Ack::Simple) => Err(Failure::Malformed(
                "a SimpleACK where the property values belong".into(),
            )),
            Err(Failure::Refused(Refusal::Reject(UNRECOGNIZED_SERVICE))) => {
                self.no_read_multiple = true;
                Ok(None)
            }
            Err(Failure::Refused(Refusal::Abort(reason))) if TOO_LARGE.contains(&reason) => {
                Ok(None)
            }
            Err(Failure::Segmented) => Ok(None),
            Err(failure) => Err(failure),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::time::Duration;

    use warden_driver_sdk::Error;

    use super::*;
    use crate::client::Config;
    use crate::tag::Primitive;

    /// A device that answers each request by its service choice and invoke id, and
    /// records which services it was asked for.
    struct Device {
        /// Answer ReadPropertyMultiple with this APDU type and reason, if set: a Reject
        /// (0x60) or an Abort (0x71).
        refuse_read_multiple: Option<(u8, u8)>,
        /// Answers to ReadProperty, in order: a real, or an error code of class object.
        read_property: VecDeque<Result<f32, u8>>,
        /// The ACK data of ReadPropertyMultiple.
        read_multiple_ack: Vec<u8>,
        services: Vec<u8>,
    }

    impl Device {
        fn datagram(apdu: &[u8]) -> Vec<u8> {
            let mut datagram = vec![0x81, 0x0A, 0x00, 0x00, 0x01, 0x00];
            datagram.extend_from_slice(apdu);
            let length = u16::try_from(datagram.len()).unwrap().to_be_bytes();
            datagram.splice(2..4, length);
            datagram
        }
    }

    impl Link for Device {
        fn request(&mut self, datagram: &[u8], _timeout: Duration) -> Result<Vec<u8>, Error> {
            // BVLL (4), NPDU (2), then type, max APDU, invoke id, service.
            let invoke_id = datagram[8];
            let service = datagram[9];
            let request = &datagram[10..];
            self.services.push(service);
            Ok(Device::datagram(&match service {
                confirmed::READ_PROPERTY_MULTIPLE => match self.refuse_read_multiple {
                    Some((kind, reason)) => vec![kind, invoke_id, reason],
                    None => [&[0x30, invoke_id, service][..], &self.read_multiple_ack].concat(),
                },
                confirmed::READ_PROPERTY => match self.read_property.pop_front().unwrap() {
                    Ok(value) => {
                        let mut ack = vec![0x30, invoke_id, service];
                        ack.extend_from_slice(request);
                        ack.push(0x3E);
                        ack.push(0x44);
                        ack.extend_from_slice(&value.to_be_bytes());
                        ack.push(0x3F);
                        ack
                    }
                    Err(code) => vec![0x50, invoke_id, service, 0x91, 0x01, 0x91, code],
                },
                other => panic!("unexpected service {other}"),
            }))
        }

        fn receive(&mut self, _timeout: Duration) -> Result<Vec<u8>, Error> {
            Err(Error::Timeout("nothing more".into()))
        }

        fn send(&mut self, _datagram: &[u8]) -> Result<(), Error> {
            Ok(())
        }
    }

    fn present_value(instance: u32) -> (ObjectId, PropertyRef) {
        (
            ObjectId::new(2, instance).unwrap(),
            PropertyRef {
                property: 85,
                index: None,
            },
        )
    }

    fn client() -> Client {
        Client::new(Config {
            timeout: Duration::from_millis(50),
            retries: 0,
            remote: None,
        })
    }

    fn real(value: f32) -> ReadResult {
        Ok(vec![Element::Value(Primitive::Real(value))])
    }

    /// The ACK of ReadPropertyMultiple for analog-value 1 and 2, present-value.
    const ACK_1_2: [u8; 30] = [
        0x0C, 0x00, 0x80, 0x00, 0x01, 0x1E, 0x29, 0x55, 0x4E, 0x44, 0x41, 0xAC, 0x00, 0x00, 0x4F,
        0x1F, 0x0C, 0x00, 0x80, 0x00, 0x02, 0x1E, 0x29, 0x55, 0x5E, 0x91, 0x01, 0x91, 0x1F, 0x5F,
    ];

    fn simulated() -> Device {
        let mut ack = ACK_1_2.to_vec();
        ack.push(0x1F);
        Device {
            refuse_read_multiple: None,
            read_property: VecDeque::new(),
            read_multiple_ack: ack,
            services: Vec::new(),
        }
    }

    #[test]
    fn several_reads_go_in_one_request() {
        let mut device = simulated();
        let mut reads = Reads::new(16);
        let results = reads
            .read(
                &mut client(),
                &mut device,
                &[present_value(1), present_value(2)],
            )
            .unwrap();
        assert_eq!(
            results,
            [real(21.5), Err("object: unknown-object".to_string())]
        );
        assert_eq!(device.services, [confirmed::READ_PROPERTY_MULTIPLE]);
    }

    #[test]
    fn one_read_per_request_uses_read_property() {
        let mut device = simulated();
        device.read_property = VecDeque::from([Ok(1.0), Err(31), Ok(3.0)]);
        let mut reads = Reads::new(1);
        let results = reads
            .read(
                &mut client(),
                &mut device,
                &[present_value(1), present_value(2), present_value(3)],
            )
            .unwrap();
        assert_eq!(
            results,
            [
                real(1.0),
                Err("object: unknown-object".to_string()),
                real(3.0)
            ]
        );
        assert_eq!(device.services, [confirmed::READ_PROPERTY; 3]);
    }

    #[test]
    fn a_device_without_read_property_multiple_is_read_with_read_property() {
        let mut device = simulated();
        device.refuse_read_multiple = Some((0x60, UNRECOGNIZED_SERVICE));
        device.read_property = VecDeque::from([Ok(1.0), Ok(2.0), Ok(3.0), Ok(4.0)]);
        let mut reads = Reads::new(16);
        let mut client = client();
        let wanted = [present_value(1), present_value(2)];
        assert_eq!(
            reads.read(&mut client, &mut device, &wanted).unwrap(),
            [real(1.0), real(2.0)]
        );
        assert!(!reads.has_read_multiple());
        // From then on, no more ReadPropertyMultiple.
        assert_eq!(
            reads.read(&mut client, &mut device, &wanted).unwrap(),
            [real(3.0), real(4.0)]
        );
        assert_eq!(
            device.services,
            [
                confirmed::READ_PROPERTY_MULTIPLE,
                confirmed::READ_PROPERTY,
                confirmed::READ_PROPERTY,
                confirmed::READ_PROPERTY,
                confirmed::READ_PROPERTY
            ]
        );
    }

    #[test]
    fn an_answer_too_large_is_read_one_property_at_a_time() {
        let mut device = simulated();
        device.refuse_read_multiple = Some((0x71, 4)); // segmentation-not-supported
        device.read_property = VecDeque::from([Ok(1.0), Ok(2.0)]);
        let mut reads = Reads::new(16);
        let results = reads
            .read(
                &mut client(),
                &mut device,
                &[present_value(1), present_value(2)],
            )
            .unwrap();
        assert_eq!(results, [real(1.0), real(2.0)]);
        assert!(reads.has_read_multiple(), "the next poll tries again");

        // Any other refusal of the whole request fails it.
        let mut device = simulated();
        device.refuse_read_multiple = Some((0x71, 9)); // out-of-resources
        let failure = Reads::new(16)
            .read(
                &mut client(),
                &mut device,
                &[present_value(1), present_value(2)],
            )
            .unwrap_err();
        assert_eq!(failure, Failure::Refused(Refusal::Abort(9)));
    }

    #[test]
    fn reads_are_split_into_requests_of_the_configured_size() {
        let mut device = simulated();
        device.read_property = VecDeque::from([Ok(3.0)]);
        let mut reads = Reads::new(2);
        let wanted = [present_value(1), present_value(2), present_value(3)];
        let results = reads.read(&mut client(), &mut device, &wanted).unwrap();
        assert_eq!(results.len(), 3);
        assert_eq!(results[2], real(3.0));
        // Two reads in one ReadPropertyMultiple, the one left over with ReadProperty.
        assert_eq!(
            device.services,
            [confirmed::READ_PROPERTY_MULTIPLE, confirmed::READ_PROPERTY]
        );
    }
}
