//! The layers around a BACnet service on BACnet/IP: the BVLL header of Annex J, the
//! network layer header of clause 6 (NPDU), and the APDU headers of clause 20.1.
//!
//! Pure code with no host calls, unit-tested natively. Requests always leave as
//! Original-Unicast-NPDU to the module's endpoint; a device on another BACnet network is
//! reached through a router at the endpoint by naming its network and MAC address in the
//! NPDU ([`Remote`]).

use crate::tag::{Decoded, Primitive, Reader, malformed};

/// The largest APDU this driver accepts, and the most any request may be: 1476 octets,
/// what fits one BACnet/IP datagram (clause 20.1.2.5). Segmentation is not supported.
pub const MAX_APDU: usize = 1476;

/// BVLL type of BACnet/IP (Annex J.2).
const BVLL_TYPE: u8 = 0x81;
/// Octets of the BVLL header: type, function, two of length.
const BVLL_HEADER: usize = 4;

/// BVLC functions (Annex J.2).
pub mod bvlc {
    /// BVLC-Result: a BBMD's answer to a BVLL request.
    pub const RESULT: u8 = 0x00;
    /// Forwarded-NPDU: a broadcast relayed by a BBMD, with the originator's address.
    pub const FORWARDED_NPDU: u8 = 0x04;
    /// Original-Unicast-NPDU: an NPDU sent to one B/IP address.
    pub const ORIGINAL_UNICAST_NPDU: u8 = 0x0A;
    /// Original-Broadcast-NPDU: an NPDU sent to the local broadcast address.
    pub const ORIGINAL_BROADCAST_NPDU: u8 = 0x0B;
}

/// The protocol version of every NPDU (clause 6.2.1).
const NPDU_VERSION: u8 = 0x01;
/// NPDU control bits (clause 6.2.2).
const NETWORK_LAYER_MESSAGE: u8 = 0x80;
const DESTINATION_PRESENT: u8 = 0x20;
const SOURCE_PRESENT: u8 = 0x08;
const EXPECTING_REPLY: u8 = 0x04;
/// The hop count a routed message starts with (clause 6.2.3).
const HOP_COUNT: u8 = 0xFF;

/// The network layer message a router sends when it cannot deliver a message.
pub const REJECT_MESSAGE_TO_NETWORK: u8 = 0x03;

/// APDU types, the high nibble of the first octet (clause 20.1.1).
mod pdu_type {
    pub const CONFIRMED_REQUEST: u8 = 0;
    pub const UNCONFIRMED_REQUEST: u8 = 1;
    pub const SIMPLE_ACK: u8 = 2;
    pub const COMPLEX_ACK: u8 = 3;
    pub const SEGMENT_ACK: u8 = 4;
    pub const ERROR: u8 = 5;
    pub const REJECT: u8 = 6;
    pub const ABORT: u8 = 7;
}

/// The SEG bit of a confirmed request or complex ACK: this is one segment of several.
const SEGMENTED: u8 = 0x08;
/// The SRV bit of an abort: sent by the server.
const FROM_SERVER: u8 = 0x01;
/// Max-APDU-length-accepted code for 1476 octets, with max-segments "unspecified" and
/// no segmented response accepted (clause 20.1.2.4, 20.1.2.5).
const MAX_APDU_1476: u8 = 0x05;

/// A device on another BACnet network, reached through the router that is the module's
/// endpoint: the network number and the device's MAC address on that network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// The destination network number (1 to 65534).
    pub network: u16,
    /// The device's MAC address on that network (an MS/TP address is one octet).
    pub address: Vec<u8>,
}

/// `apdu` as one BACnet/IP datagram: BVLL Original-Unicast-NPDU, an NPDU addressed to
/// `remote` when there is one, then the APDU.
pub fn datagram(remote: Option<&Remote>, expecting_reply: bool, apdu: &[u8]) -> Vec<u8> {
    let mut npdu = vec![NPDU_VERSION, 0];
    let mut control = 0;
    if expecting_reply {
        control |= EXPECTING_REPLY;
    }
    if let Some(remote) = remote {
        control |= DESTINATION_PRESENT;
        npdu.extend_from_slice(&remote.network.to_be_bytes());
        npdu.push(u8::try_from(remote.address.len()).unwrap_or(u8::MAX));
        npdu.extend_from_slice(&remote.address);
        npdu.push(HOP_COUNT);
    }
    if let Some(slot) = npdu.get_mut(1) {
        *slot = control;
    }
    npdu.extend_from_slice(apdu);
    let length = u16::try_from(BVLL_HEADER + npdu.len()).unwrap_or(u16::MAX);
    let mut datagram = vec![BVLL_TYPE, bvlc::ORIGINAL_UNICAST_NPDU];
    datagram.extend_from_slice(&length.to_be_bytes());
    datagram.extend_from_slice(&npdu);
    datagram
}

/// A BACnet-Confirmed-Request-PDU, unsegmented, accepting replies of up to 1476 octets
/// and no segmented reply.
pub fn confirmed_request(invoke_id: u8, service: u8, data: &[u8]) -> Vec<u8> {
    let mut apdu = vec![
        pdu_type::CONFIRMED_REQUEST << 4,
        MAX_APDU_1476,
        invoke_id,
        service,
    ];
    apdu.extend_from_slice(data);
    apdu
}

/// A BACnet-Unconfirmed-Request-PDU.
pub fn unconfirmed_request(service: u8, data: &[u8]) -> Vec<u8> {
    let mut apdu = vec![pdu_type::UNCONFIRMED_REQUEST << 4, service];
    apdu.extend_from_slice(data);
    apdu
}

/// A BACnet-Abort-PDU sent by this client for transaction `invoke_id`.
pub fn abort(invoke_id: u8, reason: u8) -> Vec<u8> {
    vec![pdu_type::ABORT << 4, invoke_id, reason]
}

/// An APDU received.
#[derive(Debug, Clone, PartialEq)]
pub enum Apdu {
    /// A confirmed request from the device (a client never serves one).
    ConfirmedRequest {
        /// Its invoke id.
        invoke_id: u8,
        /// Its service choice.
        service: u8,
    },
    /// An unconfirmed request, such as I-Am.
    Unconfirmed {
        /// Its service choice.
        service: u8,
        /// The service request.
        data: Vec<u8>,
    },
    /// The success of a request that returns no data.
    SimpleAck {
        /// The request's invoke id.
        invoke_id: u8,
        /// The request's service choice.
        service: u8,
    },
    /// The success of a request that returns data.
    ComplexAck {
        /// The request's invoke id.
        invoke_id: u8,
        /// The request's service choice.
        service: u8,
        /// Whether this is one segment of a segmented reply.
        segmented: bool,
        /// The service ACK.
        data: Vec<u8>,
    },
    /// A segment acknowledgement.
    SegmentAck {
        /// The transaction's invoke id.
        invoke_id: u8,
    },
    /// The request failed: error class and error code.
    Error {
        /// The request's invoke id.
        invoke_id: u8,
        /// The request's service choice.
        service: u8,
        /// The error class.
        class: u32,
        /// The error code.
        code: u32,
    },
    /// The request was refused as malformed or unsupported.
    Reject {
        /// The request's invoke id.
        invoke_id: u8,
        /// The reject reason.
        reason: u8,
    },
    /// The transaction was aborted.
    Abort {
        /// The transaction's invoke id.
        invoke_id: u8,
        /// Whether the server (the device) sent it.
        from_server: bool,
        /// The abort reason.
        reason: u8,
    },
}

/// What a datagram carried.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// An APDU.
    Apdu(Apdu),
    /// A network layer message (from a router).
    NetworkLayer {
        /// The message type.
        message_type: u8,
        /// What follows the message type.
        data: Vec<u8>,
    },
    /// A BVLC-Result with its result code.
    BvlcResult(u16),
}

/// A datagram received: who sent it (a device on another network, when a router relayed
/// it) and what it carried.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    /// The source network and address from the NPDU; `None` for the endpoint itself.
    pub source: Option<Remote>,
    /// The message.
    pub message: Message,
}

/// Decode one BACnet/IP datagram.
pub fn parse(datagram: &[u8]) -> Decoded<Received> {
    let mut reader = Reader::new(datagram);
    if reader.byte()? != BVLL_TYPE {
        return malformed("not a BACnet/IP datagram (BVLL type is not 0x81)");
    }
    let function = reader.byte()?;
    let length = usize::from(u16::from_be_bytes([reader.byte()?, reader.byte()?]));
    if length != datagram.len() {
        return malformed(format!(
            "BVLL length {length} but the datagram has {} octets",
            datagram.len()
        ));
    }
    match function {
        bvlc::RESULT => {
            let code = u16::from_be_bytes([reader.byte()?, reader.byte()?]);
            return Ok(Received {
                source: None,
                message: Message::BvlcResult(code),
            });
        }
        bvlc::FORWARDED_NPDU => {
            // The originating B/IP address and port, which a unicast client ignores.
            reader.take(6)?;
        }
        bvlc::ORIGINAL_UNICAST_NPDU | bvlc::ORIGINAL_BROADCAST_NPDU => {}
        other => return malformed(format!("BVLC function {other:#04x} carries no NPDU")),
    }
    npdu(&mut reader)
}

fn npdu(reader: &mut Reader<'_>) -> Decoded<Received> {
    let version = reader.byte()?;
    if version != NPDU_VERSION {
        return malformed(format!("NPDU version {version}"));
    }
    let control = reader.byte()?;
    if control & DESTINATION_PRESENT != 0 {
        // A message addressed onwards (DNET, DLEN, DADR); the hop count follows the
        // source. A reply to this client carries none, but skipping it costs nothing.
        reader.take(2)?;
        let length = reader.byte()?;
        reader.take(usize::from(length))?;
    }
    let source = if control & SOURCE_PRESENT != 0 {
        let network = u16::from_be_bytes([reader.byte()?, reader.byte()?]);
        let length = reader.byte()?;
        if length == 0 {
            return malformed("NPDU source address of length 0");
        }
        let address = reader.take(usize::from(length))?.to_vec();
        Some(Remote { network, address })
    } else {
        None
    };
    if control & DESTINATION_PRESENT != 0 {
        reader.byte()?;
    }
    let message = if control & NETWORK_LAYER_MESSAGE != 0 {
        let message_type = reader.byte()?;
        if message_type >= 0x80 {
            // Proprietary messages carry a vendor id first.
            reader.take(2)?;
        }
        Message::NetworkLayer {
            message_type,
            data: reader.rest().to_vec(),
        }
    } else {
        Message::Apdu(apdu(reader)?)
    };
    Ok(Received { source, message })
}

fn apdu(reader: &mut Reader<'_>) -> Decoded<Apdu> {
    let first = reader.byte()?;
    Ok(match first >> 4 {
        pdu_type::CONFIRMED_REQUEST => {
            let segmented = first & SEGMENTED != 0;
            reader.byte()?; // max segments and max APDU
            let invoke_id = reader.byte()?;
            if segmented {
                reader.take(2)?; // sequence number and proposed window size
            }
            Apdu::ConfirmedRequest {
                invoke_id,
                service: reader.byte()?,
            }
        }
        pdu_type::UNCONFIRMED_REQUEST => Apdu::Unconfirmed {
            service: reader.byte()?,
            data: reader.rest().to_vec(),
        },
        pdu_type::SIMPLE_ACK => Apdu::SimpleAck {
            invoke_id: reader.byte()?,
            service: reader.byte()?,
        },
        pdu_type::COMPLEX_ACK => {
            let segmented = first & SEGMENTED != 0;
            let invoke_id = reader.byte()?;
            if segmented {
                reader.take(2)?; // sequence number and proposed window size
            }
            Apdu::ComplexAck {
                invoke_id,
                service: reader.byte()?,
                segmented,
                data: reader.rest().to_vec(),
            }
        }
        pdu_type::SEGMENT_ACK => Apdu::SegmentAck {
            invoke_id: reader.byte()?,
        },
        pdu_type::ERROR => {
            let invoke_id = reader.byte()?;
            let service = reader.byte()?;
            let (class, code) = error_class_and_code(reader)?;
            Apdu::Error {
                invoke_id,
                service,
                class,
                code,
            }
        }
        pdu_type::REJECT => Apdu::Reject {
            invoke_id: reader.byte()?,
            reason: reader.byte()?,
        },
        pdu_type::ABORT => Apdu::Abort {
            from_server: first & FROM_SERVER != 0,
            invoke_id: reader.byte()?,
            reason: reader.byte()?,
        },
        other => return malformed(format!("APDU type {other} is reserved")),
    })
}

/// The error class and code of an Error PDU. Most services send the plain `Error`
/// sequence (two enumerated values); a few wrap it in a context tag, whose opening tag
/// is skipped here.
pub fn error_class_and_code(reader: &mut Reader<'_>) -> Decoded<(u32, u32)> {
    if reader.at_opening(0) {
        reader.opening(0)?;
    }
    match (reader.primitive()?, reader.primitive()?) {
        (Primitive::Enumerated(class), Primitive::Enumerated(code)) => Ok((class, code)),
        other => malformed(format!("error class and code expected, found {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_original_unicast_npdus() {
        // ReadProperty of analog-value 1, present-value, invoke id 1.
        let apdu = confirmed_request(1, 12, &[0x0C, 0x00, 0x80, 0x00, 0x01, 0x19, 0x55]);
        assert_eq!(
            datagram(None, true, &apdu),
            [
                0x81, 0x0A, 0x00, 0x11, 0x01, 0x04, 0x00, 0x05, 0x01, 0x0C, 0x0C, 0x00, 0x80, 0x00,
                0x01, 0x19, 0x55
            ]
        );
        // Who-Is, expecting no reply.
        assert_eq!(
            datagram(None, false, &unconfirmed_request(8, &[])),
            [0x81, 0x0A, 0x00, 0x08, 0x01, 0x00, 0x10, 0x08]
        );
    }

    #[test]
    fn a_remote_device_is_addressed_through_the_router() {
        let remote = Remote {
            network: 2001,
            address: vec![0x17],
        };
        let bytes = datagram(Some(&remote), true, &[0x00, 0x05, 0x07, 0x0C]);
        assert_eq!(
            bytes,
            [
                0x81, 0x0A, 0x00, 0x0F, 0x01, 0x24, 0x07, 0xD1, 0x01, 0x17, 0xFF, 0x00, 0x05, 0x07,
                0x0C
            ]
        );
    }

    #[test]
    fn replies_of_every_kind() {
        let parsed = |hex: &[u8]| parse(hex).unwrap();
        // I-Am from bacpypes3, as captured.
        let i_am = [
            0x81, 0x0A, 0x00, 0x15, 0x01, 0x00, 0x10, 0x00, 0xC4, 0x02, 0x00, 0x02, 0x57, 0x22,
            0x04, 0x00, 0x91, 0x00, 0x22, 0x03, 0xE7,
        ];
        assert_eq!(
            parsed(&i_am),
            Received {
                source: None,
                message: Message::Apdu(Apdu::Unconfirmed {
                    service: 0,
                    data: vec![
                        0xC4, 0x02, 0x00, 0x02, 0x57, 0x22, 0x04, 0x00, 0x91, 0x00, 0x22, 0x03,
                        0xE7
                    ]
                })
            }
        );
        assert_eq!(
            parsed(&[0x81, 0x0A, 0x00, 0x09, 0x01, 0x00, 0x20, 0x05, 0x0F]).message,
            Message::Apdu(Apdu::SimpleAck {
                invoke_id: 5,
                service: 15
            })
        );
        assert_eq!(
            parsed(&[0x81, 0x0A, 0x00, 0x0A, 0x01, 0x00, 0x30, 0x02, 0x0C, 0xAB]).message,
            Message::Apdu(Apdu::ComplexAck {
                invoke_id: 2,
                service: 12,
                segmented: false,
                data: vec![0xAB]
            })
        );
        assert_eq!(
            parsed(&[
                0x81, 0x0A, 0x00, 0x0C, 0x01, 0x00, 0x38, 0x02, 0x00, 0x04, 0x0E, 0xAB
            ])
            .message,
            Message::Apdu(Apdu::ComplexAck {
                invoke_id: 2,
                service: 14,
                segmented: true,
                data: vec![0xAB]
            })
        );
        // Error: object, unknown-object, as bacpypes3 answers.
        assert_eq!(
            parsed(&[
                0x81, 0x0A, 0x00, 0x0D, 0x01, 0x00, 0x50, 0x04, 0x0C, 0x91, 0x01, 0x91, 0x1F
            ])
            .message,
            Message::Apdu(Apdu::Error {
                invoke_id: 4,
                service: 12,
                class: 1,
                code: 31
            })
        );
        // The same error wrapped in context tag 0, as some services send it.
        assert_eq!(
            parsed(&[
                0x81, 0x0A, 0x00, 0x0F, 0x01, 0x00, 0x50, 0x04, 0x10, 0x0E, 0x91, 0x02, 0x91, 0x28,
                0x0F
            ])
            .message,
            Message::Apdu(Apdu::Error {
                invoke_id: 4,
                service: 16,
                class: 2,
                code: 40
            })
        );
        assert_eq!(
            parsed(&[0x81, 0x0A, 0x00, 0x09, 0x01, 0x00, 0x60, 0x09, 0x09]).message,
            Message::Apdu(Apdu::Reject {
                invoke_id: 9,
                reason: 9
            })
        );
        assert_eq!(
            parsed(&[0x81, 0x0A, 0x00, 0x09, 0x01, 0x00, 0x71, 0x03, 0x04]).message,
            Message::Apdu(Apdu::Abort {
                invoke_id: 3,
                from_server: true,
                reason: 4
            })
        );
        assert_eq!(
            parsed(&[0x81, 0x00, 0x00, 0x06, 0x00, 0x30]).message,
            Message::BvlcResult(0x30)
        );
    }

    #[test]
    fn routed_replies_name_their_source() {
        // From network 2001, MAC 0x17, through the router: SNET, SLEN, SADR.
        let bytes = [
            0x81, 0x0A, 0x00, 0x0D, 0x01, 0x08, 0x07, 0xD1, 0x01, 0x17, 0x20, 0x07, 0x0F,
        ];
        assert_eq!(
            parse(&bytes).unwrap(),
            Received {
                source: Some(Remote {
                    network: 2001,
                    address: vec![0x17]
                }),
                message: Message::Apdu(Apdu::SimpleAck {
                    invoke_id: 7,
                    service: 15
                })
            }
        );
        // Reject-Message-To-Network from the router: reason 1, network 2001.
        let bytes = [0x81, 0x0A, 0x00, 0x0A, 0x01, 0x80, 0x03, 0x01, 0x07, 0xD1];
        assert_eq!(
            parse(&bytes).unwrap().message,
            Message::NetworkLayer {
                message_type: REJECT_MESSAGE_TO_NETWORK,
                data: vec![0x01, 0x07, 0xD1]
            }
        );
        // Forwarded by a BBMD: the originator's address is skipped.
        let bytes = [
            0x81, 0x04, 0x00, 0x0F, 127, 0, 0, 1, 0xBA, 0xC0, 0x01, 0x00, 0x20, 0x01, 0x0F,
        ];
        assert_eq!(
            parse(&bytes).unwrap().message,
            Message::Apdu(Apdu::SimpleAck {
                invoke_id: 1,
                service: 15
            })
        );
    }

    #[test]
    fn malformed_datagrams_are_refused() {
        let refused: &[&[u8]] = &[
            &[],
            b"hello",
            &[0x82, 0x0A, 0x00, 0x06, 0x01, 0x00],
            &[0x81, 0x0A, 0x00, 0x07, 0x01, 0x00], // length says 7, 6 there
            &[0x81, 0x0A, 0x00, 0x06, 0x02, 0x00], // NPDU version 2
            &[0x81, 0x0A, 0x00, 0x07, 0x01, 0x00, 0x80], // APDU type 8
            &[0x81, 0x0A, 0x00, 0x07, 0x01, 0x00, 0x20], // simple ACK cut short
            &[0x81, 0x05, 0x00, 0x04],             // Register-Foreign-Device
            &[0x81, 0x0A, 0x00, 0x08, 0x01, 0x08, 0x00, 0x01], // source cut short
            &[0x81, 0x0A, 0x00, 0x0A, 0x01, 0x00, 0x50, 0x01, 0x0C, 0x91], // error cut short
        ];
        for bytes in refused {
            assert!(parse(bytes).is_err(), "accepted {bytes:02X?}");
        }
    }

    #[test]
    fn client_aborts() {
        assert_eq!(abort(7, 4), [0x70, 0x07, 0x04]);
    }
}
