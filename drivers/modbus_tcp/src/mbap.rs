//! The MBAP header that frames a PDU on Modbus TCP (Modbus Messaging on TCP/IP
//! Implementation Guide V1.0b, 3.1.3): transaction id, protocol id (0), length of what
//! follows the length field, unit id, then the PDU.
//!
//! Pure code with no host calls, so it is unit-tested natively.

use crate::pdu::ProtocolError;

/// Bytes before the length field. The host's length-prefixed tokenizer splits the stream
/// into frames with it.
pub const LENGTH_OFFSET: u32 = 4;
/// Width of the length field in bytes.
pub const LENGTH_WIDTH: u8 = 2;
/// Transaction id, protocol id, length and unit id.
const HEADER_LEN: usize = 7;
/// The protocol id of Modbus; anything else is another protocol on the same port.
const PROTOCOL_MODBUS: u16 = 0;
/// The longest PDU a frame may carry (the spec's 256-byte serial ADU minus address and CRC).
const MAX_PDU_LEN: usize = 253;

/// A received frame, borrowed from the bytes it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Matches a reply to its request.
    pub transaction: u16,
    /// The unit the reply comes from.
    pub unit: u8,
    /// Function code and data.
    pub pdu: &'a [u8],
}

/// `pdu` framed for unit `unit` as transaction `transaction`.
pub fn encode(transaction: u16, unit: u8, pdu: &[u8]) -> Vec<u8> {
    // The unit id counts towards the length; PDUs are at most 253 bytes, so this fits.
    let length = u16::try_from(pdu.len() + 1).unwrap_or(u16::MAX);
    let mut frame = Vec::with_capacity(HEADER_LEN + pdu.len());
    frame.extend_from_slice(&transaction.to_be_bytes());
    frame.extend_from_slice(&PROTOCOL_MODBUS.to_be_bytes());
    frame.extend_from_slice(&length.to_be_bytes());
    frame.push(unit);
    frame.extend_from_slice(pdu);
    frame
}

/// Parse one whole frame, as the host's tokenizer delivers it.
pub fn decode(bytes: &[u8]) -> Result<Frame<'_>, ProtocolError> {
    let malformed =
        |detail: String| ProtocolError::MalformedReply(format!("bad MBAP frame: {detail}"));
    let (header, pdu) = match bytes.split_first_chunk::<HEADER_LEN>() {
        Some((header, pdu)) if !pdu.is_empty() => (header, pdu),
        _ => {
            return Err(malformed(format!(
                "{} bytes, expected at least 8",
                bytes.len()
            )));
        }
    };
    let [t0, t1, p0, p1, l0, l1, unit] = *header;
    let protocol = u16::from_be_bytes([p0, p1]);
    if protocol != PROTOCOL_MODBUS {
        return Err(malformed(format!("protocol id {protocol}, expected 0")));
    }
    let length = usize::from(u16::from_be_bytes([l0, l1]));
    if length != pdu.len() + 1 {
        return Err(malformed(format!(
            "length field {length}, but {} bytes follow it",
            pdu.len() + 1
        )));
    }
    if pdu.len() > MAX_PDU_LEN {
        return Err(malformed(format!(
            "{}-byte PDU, at most {MAX_PDU_LEN}",
            pdu.len()
        )));
    }
    Ok(Frame {
        transaction: u16::from_be_bytes([t0, t1]),
        unit,
        pdu,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let pdu = [0x03, 0x00, 0x00, 0x00, 0x02];
        let frame = encode(0x1234, 7, &pdu);
        assert_eq!(
            frame,
            [
                0x12, 0x34, 0x00, 0x00, 0x00, 0x06, 0x07, 0x03, 0x00, 0x00, 0x00, 0x02
            ]
        );
        assert_eq!(
            decode(&frame).unwrap(),
            Frame {
                transaction: 0x1234,
                unit: 7,
                pdu: &pdu
            }
        );
    }

    #[test]
    fn the_length_field_is_where_the_tokenizer_looks() {
        let frame = encode(1, 1, &[0x01, 0x00, 0x00, 0x00, 0x01]);
        let offset = LENGTH_OFFSET as usize;
        let field = &frame[offset..offset + usize::from(LENGTH_WIDTH)];
        let length = usize::from(u16::from_be_bytes([field[0], field[1]]));
        assert_eq!(offset + usize::from(LENGTH_WIDTH) + length, frame.len());
    }

    #[test]
    fn bad_frames_are_refused() {
        let bad = |bytes: &[u8]| matches!(decode(bytes), Err(ProtocolError::MalformedReply(_)));
        assert!(bad(&[]));
        assert!(bad(&[0, 1, 0, 0, 0, 1, 1])); // header without a PDU
        assert!(bad(&[0, 1, 0, 1, 0, 3, 1, 0x83, 0x02])); // not Modbus
        assert!(bad(&[0, 1, 0, 0, 0, 4, 1, 0x83, 0x02])); // length disagrees
        let mut long = encode(1, 1, &[0x03; 254]);
        assert!(bad(&long));
        long.truncate(7 + 253);
        long[5] = 254;
        assert!(!bad(&long));
        assert!(!bad(&[0, 1, 0, 0, 0, 3, 1, 0x83, 0x02]));
    }
}
