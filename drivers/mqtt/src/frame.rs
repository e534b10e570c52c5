//! Cutting MQTT control packets out of the byte stream. The host's tokenizers cannot split
//! MQTT (its remaining-length field is a variable-length integer), so the driver reads
//! with `Tokenizer::Raw` and keeps the bytes here until a whole packet has arrived.
//!
//! A packet is a fixed header byte (type and flags), the remaining length as 1 to 4
//! bytes of 7 bits each (least significant first, the top bit saying "more follows"),
//! then that many bytes.

use std::fmt;

/// The largest remaining length MQTT can express (four bytes of seven bits).
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// Packets larger than this are refused: the host closes connections whose messages pass
/// 1 MiB, and a broker that announces more is not one this driver can follow.
pub const MAX_PACKET: usize = 1 << 20;

/// One whole control packet: its fixed header byte and the bytes after the remaining
/// length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawPacket {
    /// Packet type (high nibble) and flags (low nibble).
    pub header: u8,
    /// Variable header and payload.
    pub body: Vec<u8>,
}

/// Why the stream cannot be followed any further. The connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// A remaining length with a fifth byte.
    MalformedLength,
    /// A packet larger than [`MAX_PACKET`].
    TooLarge(usize),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::MalformedLength => f.write_str("malformed remaining length"),
            FrameError::TooLarge(size) => {
                write!(f, "a packet of {size} bytes is larger than {MAX_PACKET}")
            }
        }
    }
}

/// The bytes received on the current connection that are not yet a whole packet.
#[derive(Debug, Default)]
pub struct Framer {
    buffer: Vec<u8>,
}

impl Framer {
    /// Forget everything (a new connection starts a new stream).
    pub fn clear(&mut self) {
        self.buffer.clear();
    }

    /// Append `chunk` and return every packet it completes, in order. The bytes of an
    /// incomplete packet stay for the next chunk.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<RawPacket>, FrameError> {
        self.buffer.extend_from_slice(chunk);
        let mut packets = Vec::new();
        let mut start = 0;
        let outcome = loop {
            let rest = self.buffer.get(start..).unwrap_or_default();
            match split(rest) {
                Ok(Some((packet, used))) => {
                    packets.push(packet);
                    start += used;
                }
                Ok(None) => break Ok(()),
                Err(error) => break Err(error),
            }
        };
        self.buffer.drain(..start.min(self.buffer.len()));
        match outcome {
            Ok(()) => Ok(packets),
            Err(error) => {
                self.buffer.clear();
                Err(error)
            }
        }
    }
}

/// The first packet of `bytes` and how many bytes it took, or `None` when it is not all
/// there yet.
fn split(bytes: &[u8]) -> Result<Option<(RawPacket, usize)>, FrameError> {
    let Some((&header, rest)) = bytes.split_first() else {
        return Ok(None);
    };
    let Some((length, width)) = decode_length(rest)? else {
        return Ok(None);
    };
    let total = 1 + width + length;
    if total > MAX_PACKET {
        return Err(FrameError::TooLarge(total));
    }
    match bytes.get(1 + width..total) {
        Some(body) => Ok(Some((
            RawPacket {
                header,
                body: body.to_vec(),
            },
            total,
        ))),
        None => Ok(None),
    }
}

/// A remaining length and the number of bytes it took, or `None` when incomplete.
pub fn decode_length(bytes: &[u8]) -> Result<Option<(usize, usize)>, FrameError> {
    let mut value = 0usize;
    for (index, &byte) in bytes.iter().enumerate() {
        if index == 4 {
            return Err(FrameError::MalformedLength);
        }
        value |= usize::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Ok(Some((value, index + 1)));
        }
    }
    if bytes.len() >= 4 {
        return Err(FrameError::MalformedLength);
    }
    Ok(None)
}

/// Append `length` as a remaining length. Callers keep it at most
/// [`MAX_REMAINING_LENGTH`]; larger values are cut to it.
pub fn encode_length(length: usize, out: &mut Vec<u8>) {
    let mut value = length.min(MAX_REMAINING_LENGTH);
    loop {
        // `value % 128` fits in seven bits.
        let mut byte = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if value == 0 {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(length: usize) -> Vec<u8> {
        let mut out = Vec::new();
        encode_length(length, &mut out);
        out
    }

    #[test]
    fn remaining_lengths_round_trip_at_every_width() {
        for (length, bytes) in [
            (0, vec![0x00]),
            (127, vec![0x7f]),
            (128, vec![0x80, 0x01]),
            (16_383, vec![0xff, 0x7f]),
            (16_384, vec![0x80, 0x80, 0x01]),
            (2_097_151, vec![0xff, 0xff, 0x7f]),
            (2_097_152, vec![0x80, 0x80, 0x80, 0x01]),
            (MAX_REMAINING_LENGTH, vec![0xff, 0xff, 0xff, 0x7f]),
        ] {
            assert_eq!(encoded(length), bytes, "{length}");
            assert_eq!(
                decode_length(&bytes),
                Ok(Some((length, bytes.len()))),
                "{length}"
            );
        }
    }

    #[test]
    fn incomplete_and_malformed_lengths() {
        assert_eq!(decode_length(&[]), Ok(None));
        assert_eq!(decode_length(&[0x80]), Ok(None));
        assert_eq!(decode_length(&[0x80, 0x80, 0x80]), Ok(None));
        assert_eq!(
            decode_length(&[0x80, 0x80, 0x80, 0x80]),
            Err(FrameError::MalformedLength)
        );
        assert_eq!(
            decode_length(&[0x80, 0x80, 0x80, 0x80, 0x01]),
            Err(FrameError::MalformedLength)
        );
    }

    #[test]
    fn several_packets_in_one_chunk() {
        let mut framer = Framer::default();
        // CONNACK, PINGRESP, and the first byte of a SUBACK.
        let packets = framer
            .push(&[0x20, 0x02, 0x00, 0x00, 0xd0, 0x00, 0x90])
            .unwrap();
        assert_eq!(
            packets,
            vec![
                RawPacket {
                    header: 0x20,
                    body: vec![0, 0]
                },
                RawPacket {
                    header: 0xd0,
                    body: vec![]
                },
            ]
        );
        let packets = framer.push(&[0x03, 0x00, 0x01, 0x01]).unwrap();
        assert_eq!(
            packets,
            vec![RawPacket {
                header: 0x90,
                body: vec![0, 1, 1]
            }]
        );
        assert!(framer.push(&[]).unwrap().is_empty());
    }

    #[test]
    fn a_packet_split_across_chunks_byte_by_byte() {
        let mut whole = vec![0x30];
        encode_length(200, &mut whole);
        whole.extend((0..200).map(|i| i as u8));
        let mut framer = Framer::default();
        let mut packets = Vec::new();
        for byte in &whole {
            packets.extend(framer.push(&[*byte]).unwrap());
        }
        assert_eq!(packets.len(), 1);
        assert_eq!(packets[0].header, 0x30);
        assert_eq!(packets[0].body.len(), 200);
        assert_eq!(packets[0].body[199], 199);
    }

    #[test]
    fn oversized_and_malformed_packets_are_refused_and_forgotten() {
        let mut framer = Framer::default();
        let mut huge = vec![0x30];
        encode_length(MAX_PACKET, &mut huge);
        assert!(matches!(framer.push(&huge), Err(FrameError::TooLarge(_))));
        assert_eq!(
            framer.push(&[0x30, 0xff, 0xff, 0xff, 0xff]),
            Err(FrameError::MalformedLength)
        );
        // The buffer was dropped: the next packet parses on its own.
        assert_eq!(framer.push(&[0xd0, 0x00]).unwrap().len(), 1);
    }

    #[test]
    fn clear_drops_a_partial_packet() {
        let mut framer = Framer::default();
        assert!(framer.push(&[0x30, 0x05, 0x00]).unwrap().is_empty());
        framer.clear();
        assert_eq!(framer.push(&[0xd0, 0x00]).unwrap().len(), 1);
    }
}
