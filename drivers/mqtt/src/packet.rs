//! MQTT 3.1.1 control packets: the ones a client sends, encoded to bytes, and the ones a
//! broker sends, decoded from a [`RawPacket`]. Nothing here calls the host.

use std::fmt;

use crate::frame::{self, RawPacket};
use crate::topic::Qos;

/// The most a string field can hold (its length is two bytes).
pub const MAX_STRING: usize = u16::MAX as usize;

/// What CONNECT carries.
#[derive(Debug, Clone, Copy)]
pub struct Connect<'a> {
    /// The client identifier (at most [`MAX_STRING`] bytes).
    pub client_id: &'a str,
    /// The user name, if any.
    pub username: Option<&'a str>,
    /// The password, if any.
    pub password: Option<&'a str>,
    /// Seconds; 0 turns keep-alive off.
    pub keep_alive_s: u16,
    /// Start without the broker's stored session.
    pub clean_session: bool,
}

fn string(out: &mut Vec<u8>, value: &[u8]) {
    // Callers keep strings within MAX_STRING; longer ones are cut rather than mis-framed.
    let value = value.get(..MAX_STRING).unwrap_or(value);
    let length = u16::try_from(value.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(value);
}

fn packet(header: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(header);
    frame::encode_length(body.len(), &mut out);
    out.extend_from_slice(body);
    out
}

/// CONNECT.
pub fn connect(options: &Connect<'_>) -> Vec<u8> {
    let mut body = Vec::new();
    string(&mut body, b"MQTT");
    body.push(4); // protocol level 4: MQTT 3.1.1
    let mut flags = 0u8;
    if options.username.is_some() {
        flags |= 0x80;
    }
    if options.password.is_some() {
        flags |= 0x40;
    }
    if options.clean_session {
        flags |= 0x02;
    }
    body.push(flags);
    body.extend_from_slice(&options.keep_alive_s.to_be_bytes());
    string(&mut body, options.client_id.as_bytes());
    if let Some(username) = options.username {
        string(&mut body, username.as_bytes());
    }
    if let Some(password) = options.password {
        string(&mut body, password.as_bytes());
    }
    packet(0x10, &body)
}

/// The size of the PUBLISH packet for `topic` and `payload`, to refuse one that is too
/// large before encoding it.
pub fn publish_size(topic: &str, payload: &[u8], qos: Qos) -> usize {
    let id = if qos == Qos::AtMostOnce { 0 } else { 2 };
    let body = 2 + topic.len() + id + payload.len();
    let mut length = Vec::new();
    frame::encode_length(body, &mut length);
    1 + length.len() + body
}

/// PUBLISH. `packet_id` is sent only for QoS 1.
pub fn publish(topic: &str, payload: &[u8], qos: Qos, retain: bool, packet_id: u16) -> Vec<u8> {
    let mut body = Vec::with_capacity(topic.len() + payload.len() + 4);
    string(&mut body, topic.as_bytes());
    if qos != Qos::AtMostOnce {
        body.extend_from_slice(&packet_id.to_be_bytes());
    }
    body.extend_from_slice(payload);
    packet(0x30 | (qos.bits() << 1) | u8::from(retain), &body)
}

/// PUBACK for a received QoS 1 PUBLISH.
pub fn puback(packet_id: u16) -> Vec<u8> {
    packet(0x40, &packet_id.to_be_bytes())
}

/// SUBSCRIBE to `filters`.
pub fn subscribe(packet_id: u16, filters: &[(&str, Qos)]) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    for (filter, qos) in filters {
        string(&mut body, filter.as_bytes());
        body.push(qos.bits());
    }
    packet(0x82, &body)
}

/// UNSUBSCRIBE from `filters`.
pub fn unsubscribe(packet_id: u16, filters: &[&str]) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    for filter in filters {
        string(&mut body, filter.as_bytes());
    }
    packet(0xa2, &body)
}

/// PINGREQ.
pub fn pingreq() -> Vec<u8> {
    vec![0xc0, 0x00]
}

/// DISCONNECT.
pub fn disconnect() -> Vec<u8> {
    vec![0xe0, 0x00]
}

/// A received application message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Its topic.
    pub topic: String,
    /// 0 or 1 (2 is refused when decoding: this client never asks for it).
    pub qos: Qos,
    /// The broker sent it because it was retained, not because it was just published.
    pub retain: bool,
    /// Set for QoS 1: the id to acknowledge.
    pub packet_id: Option<u16>,
    /// The message.
    pub payload: Vec<u8>,
}

/// A packet from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// The answer to CONNECT: return code 0 is accepted.
    ConnAck {
        /// The broker kept a session for this client.
        session_present: bool,
        /// 0 accepted; see [`connack_refusal`].
        code: u8,
    },
    /// An application message.
    Publish(Publish),
    /// Acknowledges our QoS 1 PUBLISH.
    PubAck(u16),
    /// Answers SUBSCRIBE: one granted QoS (or 0x80, failure) per filter.
    SubAck {
        /// The SUBSCRIBE's packet id.
        packet_id: u16,
        /// One per filter, in order.
        codes: Vec<u8>,
    },
    /// Answers UNSUBSCRIBE.
    UnsubAck(u16),
    /// Answers PINGREQ.
    PingResp,
    /// A packet type a client does not expect (the number is the type).
    Unexpected(u8),
}

/// A packet that does not follow MQTT 3.1.1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed packet from the broker: {}", self.0)
    }
}

fn u16_at(body: &[u8], at: usize) -> Option<u16> {
    match body.get(at..at + 2) {
        Some(&[high, low]) => Some(u16::from_be_bytes([high, low])),
        _ => None,
    }
}

fn id_only(body: &[u8], what: &'static str) -> Result<u16, Malformed> {
    match body.len() {
        2 => u16_at(body, 0).ok_or(Malformed(what)),
        _ => Err(Malformed(what)),
    }
}

impl Packet {
    /// Decode one packet.
    pub fn parse(raw: &RawPacket) -> Result<Packet, Malformed> {
        let body = raw.body.as_slice();
        match raw.header >> 4 {
            2 => match body {
                &[flags, code] => Ok(Packet::ConnAck {
                    session_present: flags & 1 == 1,
                    code,
                }),
                _ => Err(Malformed("CONNACK is not two bytes")),
            },
            3 => parse_publish(raw.header, body).map(Packet::Publish),
            4 => id_only(body, "PUBACK is not two bytes").map(Packet::PubAck),
            9 => {
                let packet_id = u16_at(body, 0).ok_or(Malformed("SUBACK without a packet id"))?;
                let codes = body.get(2..).unwrap_or_default().to_vec();
                Ok(Packet::SubAck { packet_id, codes })
            }
            11 => id_only(body, "UNSUBACK is not two bytes").map(Packet::UnsubAck),
            13 => Ok(Packet::PingResp),
            other => Ok(Packet::Unexpected(other)),
        }
    }
}

fn parse_publish(header: u8, body: &[u8]) -> Result<Publish, Malformed> {
    let qos = match (header >> 1) & 0x03 {
        0 => Qos::AtMostOnce,
        1 => Qos::AtLeastOnce,
        _ => {
            return Err(Malformed(
                "PUBLISH with QoS 2 or 3, which this client never asks for",
            ));
        }
    };
    let length = usize::from(u16_at(body, 0).ok_or(Malformed("PUBLISH without a topic"))?);
    let topic = body
        .get(2..2 + length)
        .ok_or(Malformed("PUBLISH topic longer than the packet"))?;
    let topic = std::str::from_utf8(topic)
        .map_err(|_| Malformed("PUBLISH topic is not UTF-8"))?
        .to_string();
    let mut at = 2 + length;
    let packet_id = if qos == Qos::AtMostOnce {
        None
    } else {
        let id = u16_at(body, at).ok_or(Malformed("PUBLISH without its packet id"))?;
        at += 2;
        Some(id)
    };
    Ok(Publish {
        topic,
        qos,
        retain: header & 0x01 == 1,
        packet_id,
        payload: body.get(at..).unwrap_or_default().to_vec(),
    })
}

/// Why the broker refused a connection, by CONNACK return code.
pub fn connack_refusal(code: u8) -> String {
    let reason = match code {
        1 => "unacceptable protocol version",
        2 => "client identifier rejected",
        3 => "server unavailable",
        4 => "bad user name or password",
        5 => "not authorized",
        _ => "unknown reason",
    };
    format!("the broker refused the connection: {reason} (CONNACK return code {code})")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Framer;

    fn decode(bytes: &[u8]) -> Packet {
        let mut packets = Framer::default().push(bytes).unwrap();
        assert_eq!(packets.len(), 1, "{bytes:?}");
        Packet::parse(&packets.remove(0)).unwrap()
    }

    #[test]
    fn connect_with_credentials() {
        let bytes = connect(&Connect {
            client_id: "c1",
            username: Some("u"),
            password: Some("pw"),
            keep_alive_s: 60,
            clean_session: true,
        });
        assert_eq!(
            bytes,
            [
                0x10, 21, 0, 4, b'M', b'Q', b'T', b'T', 4, 0xc2, 0, 60, 0, 2, b'c', b'1', 0, 1,
                b'u', 0, 2, b'p', b'w'
            ]
        );
    }

    #[test]
    fn connect_without_credentials_keeps_the_session() {
        let bytes = connect(&Connect {
            client_id: "",
            username: None,
            password: None,
            keep_alive_s: 0,
            clean_session: false,
        });
        assert_eq!(
            bytes,
            [0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x00, 0, 0, 0, 0]
        );
    }

    #[test]
    fn publish_round_trips() {
        let bytes = publish("a/b", b"{\"x\":1}", Qos::AtLeastOnce, true, 7);
        assert_eq!(bytes.first(), Some(&0x33));
        assert_eq!(
            bytes.len(),
            publish_size("a/b", b"{\"x\":1}", Qos::AtLeastOnce)
        );
        assert_eq!(
            decode(&bytes),
            Packet::Publish(Publish {
                topic: "a/b".into(),
                qos: Qos::AtLeastOnce,
                retain: true,
                packet_id: Some(7),
                payload: b"{\"x\":1}".to_vec(),
            })
        );
        let bytes = publish("t", b"", Qos::AtMostOnce, false, 7);
        assert_eq!(bytes, [0x30, 3, 0, 1, b't']);
        assert_eq!(bytes.len(), publish_size("t", b"", Qos::AtMostOnce));
    }

    #[test]
    fn large_publish_uses_a_multi_byte_length() {
        let payload = vec![b'x'; 300];
        let bytes = publish("t", &payload, Qos::AtMostOnce, false, 0);
        assert_eq!(&bytes[..3], &[0x30, 0xaf, 0x02]); // 303 = 0x2f + 2 * 128
        match decode(&bytes) {
            Packet::Publish(publish) => assert_eq!(publish.payload, payload),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn subscribe_unsubscribe_ping_disconnect() {
        assert_eq!(
            subscribe(1, &[("a/#", Qos::AtLeastOnce), ("b", Qos::AtMostOnce)]),
            [0x82, 12, 0, 1, 0, 3, b'a', b'/', b'#', 1, 0, 1, b'b', 0]
        );
        assert_eq!(
            unsubscribe(2, &["a/#"]),
            [0xa2, 7, 0, 2, 0, 3, b'a', b'/', b'#']
        );
        assert_eq!(pingreq(), [0xc0, 0]);
        assert_eq!(disconnect(), [0xe0, 0]);
        assert_eq!(puback(0x0102), [0x40, 2, 1, 2]);
    }

    #[test]
    fn broker_packets() {
        assert_eq!(
            decode(&[0x20, 2, 1, 0]),
            Packet::ConnAck {
                session_present: true,
                code: 0
            }
        );
        assert_eq!(decode(&[0x40, 2, 0, 9]), Packet::PubAck(9));
        assert_eq!(
            decode(&[0x90, 4, 0, 3, 1, 0x80]),
            Packet::SubAck {
                packet_id: 3,
                codes: vec![1, 0x80]
            }
        );
        assert_eq!(decode(&[0xb0, 2, 0, 4]), Packet::UnsubAck(4));
        assert_eq!(decode(&[0xd0, 0]), Packet::PingResp);
        assert_eq!(decode(&[0x50, 2, 0, 1]), Packet::Unexpected(5));
    }

    #[test]
    fn malformed_packets_are_refused() {
        let parse = |header: u8, body: &[u8]| {
            Packet::parse(&RawPacket {
                header,
                body: body.to_vec(),
            })
        };
        assert!(parse(0x20, &[0]).is_err());
        assert!(parse(0x40, &[0, 1, 2]).is_err());
        assert!(parse(0x30, &[0, 5, b'a']).is_err());
        assert!(
            parse(0x32, &[0, 1, b'a', 0]).is_err(),
            "QoS 1 without an id"
        );
        assert!(parse(0x34, &[0, 1, b'a']).is_err(), "QoS 2");
        assert!(parse(0x30, &[0, 1, 0xff]).is_err(), "not UTF-8");
    }

    #[test]
    fn refusals_are_named() {
        assert_eq!(
            connack_refusal(5),
            "the broker refused the connection: not authorized (CONNACK return code 5)"
        );
        assert!(connack_refusal(4).contains("bad user name or password"));
        assert!(connack_refusal(42).contains("unknown reason"));
    }
}
