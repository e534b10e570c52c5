//! BACnet's tagged encoding (ANSI/ASHRAE 135 clause 20.2): application tags that carry
//! their own data type, context tags numbered by their place in a service, opening and
//! closing tags around constructed data, and the extended tag numbers and lengths.
//!
//! Pure code with no host calls, unit-tested natively. Decoding never trusts a length:
//! every read is checked against the bytes that are there, and nesting is limited.

use std::fmt;

/// The application tag numbers (clause 20.2.1.4).
pub mod app {
    /// Null.
    pub const NULL: u8 = 0;
    /// Boolean; its value is in the tag itself.
    pub const BOOLEAN: u8 = 1;
    /// Unsigned integer.
    pub const UNSIGNED: u8 = 2;
    /// Signed integer.
    pub const SIGNED: u8 = 3;
    /// IEEE 754 single precision.
    pub const REAL: u8 = 4;
    /// IEEE 754 double precision.
    pub const DOUBLE: u8 = 5;
    /// Octet string.
    pub const OCTET_STRING: u8 = 6;
    /// Character string.
    pub const CHARACTER_STRING: u8 = 7;
    /// Bit string.
    pub const BIT_STRING: u8 = 8;
    /// Enumerated.
    pub const ENUMERATED: u8 = 9;
    /// Date.
    pub const DATE: u8 = 10;
    /// Time.
    pub const TIME: u8 = 11;
    /// BACnetObjectIdentifier.
    pub const OBJECT_IDENTIFIER: u8 = 12;
}

/// The class bit of a tag's first octet: set for context-specific tags.
const CONTEXT: u8 = 0x08;
/// Length/value/type: the length follows in the next octets.
const EXTENDED_LENGTH: u8 = 5;
/// Length/value/type of a context tag that opens constructed data.
const OPENING: u8 = 6;
/// Length/value/type of a context tag that closes constructed data.
const CLOSING: u8 = 7;
/// A tag number of 15 and above is written in the octet after the first.
const EXTENDED_NUMBER: u8 = 15;
/// Constructed data nested deeper than this is refused rather than followed.
const MAX_DEPTH: usize = 32;

/// The character set of a character string (clause 20.2.9).
pub mod charset {
    /// ISO 10646 UTF-8 (formerly ANSI X3.4), the one every device should use.
    pub const UTF_8: u8 = 0;
    /// ISO 10646 UCS-4, big-endian.
    pub const UCS_4: u8 = 3;
    /// ISO 10646 UCS-2, big-endian.
    pub const UCS_2: u8 = 4;
    /// ISO 8859-1.
    pub const ISO_8859_1: u8 = 5;
}

/// Why received bytes are not valid BACnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

/// The result of decoding.
pub type Decoded<T> = Result<T, DecodeError>;

/// A decoding error with `message`.
pub fn malformed<T>(message: impl Into<String>) -> Decoded<T> {
    Err(DecodeError(message.into()))
}

/// A BACnetObjectIdentifier: a 10-bit object type and a 22-bit instance number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectId {
    /// The object type (0-1023; 128 and up are proprietary).
    pub object_type: u16,
    /// The instance number (0-4194303).
    pub instance: u32,
}

impl ObjectId {
    /// The largest instance number; as a device instance it also means "this device".
    pub const MAX_INSTANCE: u32 = 0x3F_FFFF;
    /// The largest object type.
    pub const MAX_TYPE: u16 = 0x3FF;

    /// The identifier, if both parts are in range.
    pub fn new(object_type: u16, instance: u32) -> Option<ObjectId> {
        (object_type <= Self::MAX_TYPE && instance <= Self::MAX_INSTANCE).then_some(ObjectId {
            object_type,
            instance,
        })
    }

    /// The 32 bits on the wire.
    pub fn to_bits(self) -> u32 {
        (u32::from(self.object_type & Self::MAX_TYPE) << 22) | (self.instance & Self::MAX_INSTANCE)
    }

    /// The identifier in 32 bits from the wire.
    pub fn from_bits(bits: u32) -> ObjectId {
        ObjectId {
            object_type: u16::try_from(bits >> 22).unwrap_or(Self::MAX_TYPE),
            instance: bits & Self::MAX_INSTANCE,
        }
    }
}

/// A date as on the wire: year minus 1900, month, day, day of week (1 is Monday).
/// 255 in any field means "unspecified"; months 13 and 14 and days 32 to 34 are the
/// standard's odd/even/last specials, kept as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Date {
    /// Year minus 1900.
    pub year: u8,
    /// Month, 1-12.
    pub month: u8,
    /// Day of the month, 1-31.
    pub day: u8,
    /// Day of the week, 1 (Monday) to 7.
    pub weekday: u8,
}

/// A time of day as on the wire; 255 in any field means "unspecified".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Time {
    /// Hour, 0-23.
    pub hour: u8,
    /// Minute, 0-59.
    pub minute: u8,
    /// Second, 0-59.
    pub second: u8,
    /// Hundredths of a second, 0-99.
    pub hundredths: u8,
}

/// The "unspecified" value of every date and time field.
pub const UNSPECIFIED: u8 = 255;

/// One application-tagged value.
#[derive(Debug, Clone, PartialEq)]
pub enum Primitive {
    /// Null.
    Null,
    /// Boolean.
    Boolean(bool),
    /// Unsigned integer (up to 64 bits).
    Unsigned(u64),
    /// Signed integer (up to 64 bits).
    Signed(i64),
    /// Single-precision real.
    Real(f32),
    /// Double-precision real.
    Double(f64),
    /// Octet string.
    OctetString(Vec<u8>),
    /// Character string, decoded from its character set.
    CharacterString(String),
    /// Bit string, first bit first.
    BitString(Vec<bool>),
    /// Enumerated.
    Enumerated(u32),
    /// Date.
    Date(Date),
    /// Time.
    Time(Time),
    /// Object identifier.
    ObjectId(ObjectId),
}

/// One item of a property value or of any other ABSTRACT-SYNTAX.&Type: an
/// application-tagged value, a context-tagged primitive (kept raw, since its type is
/// known only to the production it belongs to), or constructed data between an opening
/// and a closing tag.
#[derive(Debug, Clone, PartialEq)]
pub enum Element {
    /// An application-tagged value.
    Value(Primitive),
    /// A context-tagged primitive: its tag number and its content octets.
    Context {
        /// The context tag number.
        tag: u8,
        /// The content octets.
        data: Vec<u8>,
    },
    /// Constructed data: the tag number of its opening and closing tags, and what is
    /// between them.
    Constructed {
        /// The context tag number.
        tag: u8,
        /// The items between the tags.
        elements: Vec<Element>,
    },
}

/// A tag as read from the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// An application tag; for a boolean `length` is the value (0 or 1) and no content
    /// follows.
    Application {
        /// The application tag number.
        number: u8,
        /// The content length (the value, for a boolean).
        length: u32,
    },
    /// A context-specific primitive tag.
    Context {
        /// The context tag number.
        number: u8,
        /// The content length.
        length: u32,
    },
    /// An opening tag.
    Opening(u8),
    /// A closing tag.
    Closing(u8),
}

/// Reads tags and values from the front of a byte slice.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `bytes`.
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// What is left.
    pub fn rest(&self) -> &'a [u8] {
        self.bytes
    }

    /// Read one octet.
    pub fn byte(&mut self) -> Decoded<u8> {
        let (first, rest) = self
            .bytes
            .split_first()
            .ok_or_else(|| DecodeError("the data ends too early".to_string()))?;
        self.bytes = rest;
        Ok(*first)
    }

    /// Read `count` octets.
    pub fn take(&mut self, count: usize) -> Decoded<&'a [u8]> {
        if count > self.bytes.len() {
            return malformed(format!(
                "{count} octets announced, {} left",
                self.bytes.len()
            ));
        }
        let (taken, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Ok(taken)
    }

    fn u16(&mut self) -> Decoded<u16> {
        let octets = self.take(2)?;
        Ok(octets
            .iter()
            .fold(0_u16, |value, octet| (value << 8) | u16::from(*octet)))
    }

    fn u32(&mut self) -> Decoded<u32> {
        let octets = self.take(4)?;
        Ok(octets
            .iter()
            .fold(0_u32, |value, octet| (value << 8) | u32::from(*octet)))
    }

    /// The next tag, without reading it.
    pub fn peek(&self) -> Decoded<Header> {
        self.clone().header()
    }

    /// Read a tag.
    pub fn header(&mut self) -> Decoded<Header> {
        let first = self.byte()?;
        let mut number = first >> 4;
        if number == EXTENDED_NUMBER {
            number = self.byte()?;
            if number == 0xFF {
                return malformed("tag number 255 is reserved");
            }
        }
        let lvt = first & 0x07;
        let context = first & CONTEXT != 0;
        if context && lvt == OPENING {
            return Ok(Header::Opening(number));
        }
        if context && lvt == CLOSING {
            return Ok(Header::Closing(number));
        }
        if !context && number == app::BOOLEAN {
            if lvt > 1 {
                return malformed(format!("boolean with value {lvt}"));
            }
            return Ok(Header::Application {
                number,
                length: u32::from(lvt),
            });
        }
        let length = match lvt {
            EXTENDED_LENGTH => match self.byte()? {
                254 => u32::from(self.u16()?),
                255 => self.u32()?,
                length => u32::from(length),
            },
            length if length < EXTENDED_LENGTH => u32::from(length),
            _ => return malformed(format!("application tag {number} with L/V/T {lvt}")),
        };
        Ok(if context {
            Header::Context { number, length }
        } else {
            Header::Application { number, length }
        })
    }

    fn content(&mut self, length: u32) -> Decoded<&'a [u8]> {
        self.take(usize::try_from(length).unwrap_or(usize::MAX))
    }

    /// Whether the next tag is the opening tag `number`.
    pub fn at_opening(&self, number: u8) -> bool {
        self.peek() == Ok(Header::Opening(number))
    }

    /// Whether the next tag is the closing tag `number`.
    pub fn at_closing(&self, number: u8) -> bool {
        self.peek() == Ok(Header::Closing(number))
    }

    /// Whether the next tag is the context tag `number` (primitive).
    pub fn at_context(&self, number: u8) -> bool {
        matches!(self.peek(), Ok(Header::Context { number: n, .. }) if n == number)
    }

    /// Read the opening tag `number`.
    pub fn opening(&mut self, number: u8) -> Decoded<()> {
        match self.header()? {
            Header::Opening(n) if n == number => Ok(()),
            other => malformed(format!("expected opening tag {number}, found {other:?}")),
        }
    }

    /// Read the closing tag `number`.
    pub fn closing(&mut self, number: u8) -> Decoded<()> {
        match self.header()? {
            Header::Closing(n) if n == number => Ok(()),
            other => malformed(format!("expected closing tag {number}, found {other:?}")),
        }
    }

    /// The content of the context tag `number`.
    pub fn context(&mut self, number: u8) -> Decoded<&'a [u8]> {
        match self.header()? {
            Header::Context { number: n, length } if n == number => self.content(length),
            other => malformed(format!("expected context tag {number}, found {other:?}")),
        }
    }

    /// An unsigned integer in the context tag `number`.
    pub fn context_unsigned(&mut self, number: u8) -> Decoded<u64> {
        unsigned(self.context(number)?)
    }

    /// An unsigned integer in the context tag `number`, if that tag is next.
    pub fn optional_context_unsigned(&mut self, number: u8) -> Decoded<Option<u64>> {
        if self.at_context(number) {
            self.context_unsigned(number).map(Some)
        } else {
            Ok(None)
        }
    }

    /// An object identifier in the context tag `number`.
    pub fn context_object_id(&mut self, number: u8) -> Decoded<ObjectId> {
        object_id(self.context(number)?)
    }

    /// One application-tagged value.
    pub fn primitive(&mut self) -> Decoded<Primitive> {
        match self.header()? {
            Header::Application { number, length } => self.application(number, length),
            other => malformed(format!("expected an application tag, found {other:?}")),
        }
    }

    fn application(&mut self, number: u8, length: u32) -> Decoded<Primitive> {
        if number == app::BOOLEAN {
            return Ok(Primitive::Boolean(length == 1));
        }
        let data = self.content(length)?;
        primitive(number, data)
    }

    /// Items up to the closing tag `number`, which is read too.
    pub fn elements_until(&mut self, number: u8) -> Decoded<Vec<Element>> {
        self.elements(Some(number), 0)
    }

    /// Every item up to the end of the data.
    #[cfg(test)]
    pub fn elements_to_end(&mut self) -> Decoded<Vec<Element>> {
        self.elements(None, 0)
    }

    fn elements(&mut self, closing: Option<u8>, depth: usize) -> Decoded<Vec<Element>> {
        if depth > MAX_DEPTH {
            return malformed(format!("constructed data nested deeper than {MAX_DEPTH}"));
        }
        let mut elements = Vec::new();
        loop {
            if self.is_empty() {
                return match closing {
                    None => Ok(elements),
                    Some(number) => malformed(format!("closing tag {number} missing")),
                };
            }
            match self.header()? {
                Header::Closing(number) if Some(number) == closing => return Ok(elements),
                Header::Closing(number) => {
                    return malformed(format!("unexpected closing tag {number}"));
                }
                Header::Opening(tag) => {
                    let inner = self.elements(Some(tag), depth + 1)?;
                    elements.push(Element::Constructed {
                        tag,
                        elements: inner,
                    });
                }
                Header::Context { number, length } => elements.push(Element::Context {
                    tag: number,
                    data: self.content(length)?.to_vec(),
                }),
                Header::Application { number, length } => {
                    elements.push(Element::Value(self.application(number, length)?));
                }
            }
        }
    }
}

/// An unsigned integer from its content octets (1 to 8 of them).
pub fn unsigned(data: &[u8]) -> Decoded<u64> {
    if data.is_empty() || data.len() > 8 {
        return malformed(format!("unsigned integer of {} octets", data.len()));
    }
    Ok(data
        .iter()
        .fold(0_u64, |value, octet| (value << 8) | u64::from(*octet)))
}

fn signed(data: &[u8]) -> Decoded<i64> {
    let Some(first) = data.first() else {
        return malformed("signed integer of 0 octets");
    };
    if data.len() > 8 {
        return malformed(format!("signed integer of {} octets", data.len()));
    }
    let start: i64 = if first & 0x80 != 0 { -1 } else { 0 };
    Ok(data
        .iter()
        .fold(start, |value, octet| (value << 8) | i64::from(*octet)))
}

fn enumerated(data: &[u8]) -> Decoded<u32> {
    let value = unsigned(data)?;
    u32::try_from(value).or_else(|_| malformed(format!("enumerated value {value} too large")))
}

fn object_id(data: &[u8]) -> Decoded<ObjectId> {
    match <[u8; 4]>::try_from(data) {
        Ok(octets) => Ok(ObjectId::from_bits(u32::from_be_bytes(octets))),
        Err(_) => malformed(format!("object identifier of {} octets", data.len())),
    }
}

fn four(data: &[u8], what: &str) -> Decoded<[u8; 4]> {
    <[u8; 4]>::try_from(data).or_else(|_| malformed(format!("{what} of {} octets", data.len())))
}

/// The value of application tag `number` from its content octets.
pub fn primitive(number: u8, data: &[u8]) -> Decoded<Primitive> {
    Ok(match number {
        app::NULL if data.is_empty() => Primitive::Null,
        app::NULL => return malformed("null with content"),
        app::UNSIGNED => Primitive::Unsigned(unsigned(data)?),
        app::SIGNED => Primitive::Signed(signed(data)?),
        app::REAL => Primitive::Real(f32::from_be_bytes(four(data, "real")?)),
        app::DOUBLE => match <[u8; 8]>::try_from(data) {
            Ok(octets) => Primitive::Double(f64::from_be_bytes(octets)),
            Err(_) => return malformed(format!("double of {} octets", data.len())),
        },
        app::OCTET_STRING => Primitive::OctetString(data.to_vec()),
        app::CHARACTER_STRING => Primitive::CharacterString(character_string(data)?),
        app::BIT_STRING => Primitive::BitString(bit_string(data)?),
        app::ENUMERATED => Primitive::Enumerated(enumerated(data)?),
        app::DATE => {
            let [year, month, day, weekday] = four(data, "date")?;
            Primitive::Date(Date {
                year,
                month,
                day,
                weekday,
            })
        }
        app::TIME => {
            let [hour, minute, second, hundredths] = four(data, "time")?;
            Primitive::Time(Time {
                hour,
                minute,
                second,
                hundredths,
            })
        }
        app::OBJECT_IDENTIFIER => Primitive::ObjectId(object_id(data)?),
        other => return malformed(format!("application tag {other} is reserved")),
    })
}

fn character_string(data: &[u8]) -> Decoded<String> {
    let Some((set, text)) = data.split_first() else {
        return malformed("character string without a character set");
    };
    match *set {
        charset::UTF_8 => String::from_utf8(text.to_vec())
            .or_else(|_| malformed("character string is not valid UTF-8")),
        charset::UCS_2 => {
            if text.len() % 2 != 0 {
                return malformed("UCS-2 string of an odd length");
            }
            let units: Vec<u16> = text
                .chunks_exact(2)
                .map(|pair| pair.iter().fold(0, |v, o| (v << 8) | u16::from(*o)))
                .collect();
            String::from_utf16(&units).or_else(|_| malformed("UCS-2 string is not valid"))
        }
        charset::UCS_4 => {
            if text.len() % 4 != 0 {
                return malformed("UCS-4 string of a length not divisible by 4");
            }
            text.chunks_exact(4)
                .map(|quad| {
                    let code = quad.iter().fold(0, |v, o| (v << 8) | u32::from(*o));
                    char::from_u32(code)
                        .ok_or_else(|| DecodeError(format!("UCS-4 code {code:#x} is not valid")))
                })
                .collect()
        }
        charset::ISO_8859_1 => Ok(text.iter().map(|octet| char::from(*octet)).collect()),
        other => malformed(format!("character set {other} is not supported")),
    }
}

fn bit_string(data: &[u8]) -> Decoded<Vec<bool>> {
    let Some((unused, octets)) = data.split_first() else {
        return malformed("bit string without its unused-bits octet");
    };
    let unused = usize::from(*unused);
    if unused > 7 || (octets.is_empty() && unused != 0) {
        return malformed(format!(
            "bit string of {} octets with {unused} unused bits",
            octets.len()
        ));
    }
    let count = octets.len() * 8 - unused;
    Ok(octets
        .iter()
        .flat_map(|octet| (0..8_u8).rev().map(move |bit| octet & (1_u8 << bit) != 0))
        .take(count)
        .collect())
}

/// Builds tagged data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Writer {
    bytes: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Writer {
        Writer::default()
    }

    /// The data written.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// Append octets as they are.
    pub fn raw(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }

    fn tag(&mut self, number: u8, context: bool, lvt: u8) {
        let class = if context { CONTEXT } else { 0 };
        if number < EXTENDED_NUMBER {
            self.bytes.push((number << 4) | class | lvt);
        } else {
            self.bytes.push((EXTENDED_NUMBER << 4) | class | lvt);
            self.bytes.push(number);
        }
    }

    fn header(&mut self, number: u8, context: bool, length: usize) {
        match u8::try_from(length) {
            Ok(short) if short < EXTENDED_LENGTH => self.tag(number, context, short),
            Ok(medium) if medium <= 253 => {
                self.tag(number, context, EXTENDED_LENGTH);
                self.bytes.push(medium);
            }
            _ => {
                self.tag(number, context, EXTENDED_LENGTH);
                match u16::try_from(length) {
                    Ok(long) => {
                        self.bytes.push(254);
                        self.bytes.extend_from_slice(&long.to_be_bytes());
                    }
                    Err(_) => {
                        self.bytes.push(255);
                        let huge = u32::try_from(length).unwrap_or(u32::MAX);
                        self.bytes.extend_from_slice(&huge.to_be_bytes());
                    }
                }
            }
        }
    }

    fn tagged(&mut self, number: u8, context: bool, data: &[u8]) {
        self.header(number, context, data.len());
        self.bytes.extend_from_slice(data);
    }

    /// The opening tag `number`.
    pub fn opening(&mut self, number: u8) {
        self.tag(number, true, OPENING);
    }

    /// The closing tag `number`.
    pub fn closing(&mut self, number: u8) {
        self.tag(number, true, CLOSING);
    }

    /// An unsigned integer (or enumerated value) in the context tag `number`.
    pub fn context_unsigned(&mut self, number: u8, value: u64) {
        self.tagged(number, true, &unsigned_octets(value));
    }

    /// An object identifier in the context tag `number`.
    pub fn context_object_id(&mut self, number: u8, id: ObjectId) {
        self.tagged(number, true, &id.to_bits().to_be_bytes());
    }

    /// An application-tagged value.
    pub fn primitive(&mut self, value: &Primitive) {
        match value {
            Primitive::Null => self.tag(app::NULL, false, 0),
            Primitive::Boolean(value) => self.tag(app::BOOLEAN, false, u8::from(*value)),
            Primitive::Unsigned(value) => {
                self.tagged(app::UNSIGNED, false, &unsigned_octets(*value));
            }
            Primitive::Signed(value) => self.tagged(app::SIGNED, false, &signed_octets(*value)),
            Primitive::Real(value) => self.tagged(app::REAL, false, &value.to_be_bytes()),
            Primitive::Double(value) => self.tagged(app::DOUBLE, false, &value.to_be_bytes()),
            Primitive::OctetString(octets) => self.tagged(app::OCTET_STRING, false, octets),
            Primitive::CharacterString(text) => {
                let mut data = Vec::with_capacity(text.len() + 1);
                data.push(charset::UTF_8);
                data.extend_from_slice(text.as_bytes());
                self.tagged(app::CHARACTER_STRING, false, &data);
            }
            Primitive::BitString(bits) => {
                self.tagged(app::BIT_STRING, false, &bit_string_octets(bits));
            }
            Primitive::Enumerated(value) => {
                self.tagged(app::ENUMERATED, false, &unsigned_octets(u64::from(*value)));
            }
            Primitive::Date(date) => {
                self.tagged(
                    app::DATE,
                    false,
                    &[date.year, date.month, date.day, date.weekday],
                );
            }
            Primitive::Time(time) => self.tagged(
                app::TIME,
                false,
                &[time.hour, time.minute, time.second, time.hundredths],
            ),
            Primitive::ObjectId(id) => {
                self.tagged(app::OBJECT_IDENTIFIER, false, &id.to_bits().to_be_bytes());
            }
        }
    }
}

/// The fewest octets that hold `value`, at least one.
fn unsigned_octets(value: u64) -> Vec<u8> {
    let octets = value.to_be_bytes();
    let skip = (value.leading_zeros() / 8).min(7);
    octets
        .get(usize::try_from(skip).unwrap_or(0)..)
        .unwrap_or(&octets)
        .to_vec()
}

/// The fewest octets of two's complement that hold `value`, at least one.
fn signed_octets(value: i64) -> Vec<u8> {
    let octets = value.to_be_bytes();
    let width = (1..=8_u32)
        .find(|width| {
            let bits = width * 8;
            bits == 64 || (value >= -(1_i64 << (bits - 1)) && value < (1_i64 << (bits - 1)))
        })
        .unwrap_or(8);
    let skip = usize::try_from(8 - width).unwrap_or(0);
    octets.get(skip..).unwrap_or(&octets).to_vec()
}

fn bit_string_octets(bits: &[bool]) -> Vec<u8> {
    let unused = (8 - bits.len() % 8) % 8;
    let mut data = vec![u8::try_from(unused).unwrap_or(0)];
    for chunk in bits.chunks(8) {
        let octet =
            chunk.iter().enumerate().fold(
                0_u8,
                |octet, (i, bit)| if *bit { octet | (0x80 >> i) } else { octet },
            );
        data.push(octet);
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(value: &Primitive) -> Vec<u8> {
        let mut writer = Writer::new();
        writer.primitive(value);
        writer.into_bytes()
    }

    fn decoded(bytes: &[u8]) -> Primitive {
        let mut reader = Reader::new(bytes);
        let value = reader.primitive().unwrap();
        assert!(reader.is_empty(), "left over: {:?}", reader.rest());
        value
    }

    /// The encoding examples of clause 20.2 (and ANNEX F), each both ways.
    #[test]
    fn application_values_match_the_standards_examples() {
        let examples: Vec<(Primitive, Vec<u8>)> = vec![
            (Primitive::Null, vec![0x00]),
            (Primitive::Boolean(false), vec![0x10]),
            (Primitive::Boolean(true), vec![0x11]),
            (Primitive::Unsigned(72), vec![0x21, 0x48]),
            (Primitive::Signed(72), vec![0x31, 0x48]),
            (Primitive::Real(72.0), vec![0x44, 0x42, 0x90, 0x00, 0x00]),
            (
                Primitive::Double(72.0),
                vec![0x55, 0x08, 0x40, 0x52, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00],
            ),
            (
                Primitive::OctetString(vec![0x12, 0x34, 0xFF]),
                vec![0x63, 0x12, 0x34, 0xFF],
            ),
            (
                Primitive::CharacterString("This is a BACnet string!".into()),
                [&[0x75, 0x19, 0x00][..], b"This is a BACnet string!"].concat(),
            ),
            (
                Primitive::BitString(vec![true, false, true, false, true]),
                vec![0x82, 0x03, 0xA8],
            ),
            (Primitive::Enumerated(0), vec![0x91, 0x00]),
            (
                Primitive::Date(Date {
                    year: 91,
                    month: 1,
                    day: 24,
                    weekday: 4,
                }),
                vec![0xA4, 0x5B, 0x01, 0x18, 0x04],
            ),
            (
                Primitive::Time(Time {
                    hour: 17,
                    minute: 35,
                    second: 45,
                    hundredths: 17,
                }),
                vec![0xB4, 0x11, 0x23, 0x2D, 0x11],
            ),
            (
                Primitive::ObjectId(ObjectId::new(5, 15).unwrap()),
                vec![0xC4, 0x01, 0x40, 0x00, 0x0F],
            ),
        ];
        for (value, bytes) in examples {
            assert_eq!(encoded(&value), bytes, "encoding {value:?}");
            assert_eq!(decoded(&bytes), value, "decoding {bytes:02X?}");
        }
    }

    #[test]
    fn integers_take_the_fewest_octets() {
        assert_eq!(encoded(&Primitive::Unsigned(0)), [0x21, 0x00]);
        assert_eq!(encoded(&Primitive::Unsigned(256)), [0x22, 0x01, 0x00]);
        assert_eq!(
            encoded(&Primitive::Unsigned(4_194_303)),
            [0x23, 0x3F, 0xFF, 0xFF]
        );
        assert_eq!(
            encoded(&Primitive::Unsigned(u64::MAX)),
            [&[0x25, 0x08][..], &[0xFF; 8]].concat()
        );
        assert_eq!(encoded(&Primitive::Signed(-1)), [0x31, 0xFF]);
        assert_eq!(encoded(&Primitive::Signed(-128)), [0x31, 0x80]);
        assert_eq!(encoded(&Primitive::Signed(-129)), [0x32, 0xFF, 0x7F]);
        assert_eq!(encoded(&Primitive::Signed(128)), [0x32, 0x00, 0x80]);
        assert_eq!(decoded(&[0x32, 0xFF, 0x7F]), Primitive::Signed(-129));
        assert_eq!(
            decoded(&encoded(&Primitive::Signed(i64::MIN))),
            Primitive::Signed(i64::MIN)
        );
        assert_eq!(
            decoded(&[0x93, 0x01, 0x00, 0x00]),
            Primitive::Enumerated(65536)
        );
    }

    #[test]
    fn lengths_over_four_are_extended() {
        let text = "x".repeat(300);
        let bytes = encoded(&Primitive::CharacterString(text.clone()));
        // 301 content octets (character set + text): L/V/T 5, then 254 and two octets.
        assert_eq!(bytes.get(..4), Some(&[0x75, 254, 0x01, 0x2D][..]));
        assert_eq!(decoded(&bytes), Primitive::CharacterString(text));

        let octets = vec![7_u8; 20];
        let bytes = encoded(&Primitive::OctetString(octets.clone()));
        assert_eq!(bytes.get(..2), Some(&[0x65, 20][..]));
        assert_eq!(decoded(&bytes), Primitive::OctetString(octets));

        // A four-octet length, as a decoder must accept.
        let mut long = vec![0x65, 255, 0, 0, 0, 3];
        long.extend_from_slice(&[1, 2, 3]);
        assert_eq!(decoded(&long), Primitive::OctetString(vec![1, 2, 3]));
    }

    #[test]
    fn context_tags_and_extended_tag_numbers() {
        let mut writer = Writer::new();
        writer.context_object_id(0, ObjectId::new(2, 1).unwrap());
        writer.context_unsigned(1, 85);
        writer.opening(3);
        writer.primitive(&Primitive::Real(21.5));
        writer.closing(3);
        writer.context_unsigned(20, 1);
        let bytes = writer.into_bytes();
        assert_eq!(
            bytes,
            [
                0x0C, 0x00, 0x80, 0x00, 0x01, 0x19, 0x55, 0x3E, 0x44, 0x41, 0xAC, 0x00, 0x00, 0x3F,
                0xF9, 20, 0x01
            ]
        );
        let mut reader = Reader::new(&bytes);
        assert_eq!(
            reader.context_object_id(0).unwrap(),
            ObjectId::new(2, 1).unwrap()
        );
        assert_eq!(reader.context_unsigned(1).unwrap(), 85);
        assert_eq!(reader.optional_context_unsigned(2).unwrap(), None);
        assert!(reader.at_opening(3));
        reader.opening(3).unwrap();
        assert_eq!(
            reader.elements_until(3).unwrap(),
            [Element::Value(Primitive::Real(21.5))]
        );
        assert_eq!(
            reader.peek().unwrap(),
            Header::Context {
                number: 20,
                length: 1
            }
        );
        assert_eq!(reader.optional_context_unsigned(20).unwrap(), Some(1));
        assert!(reader.is_empty());
    }

    #[test]
    fn constructed_data_is_kept_as_a_tree() {
        // A BACnetDateRange-like value: [0] { date } then a context primitive and a
        // nested constructed item.
        let bytes = [
            0x0E, 0xA4, 0x7C, 0x01, 0x01, 0xFF, 0x1E, 0x09, 0x05, 0x1F, 0x0F, 0x19, 0x02,
        ];
        let elements = Reader::new(&bytes).elements_to_end().unwrap();
        assert_eq!(
            elements,
            [
                Element::Constructed {
                    tag: 0,
                    elements: vec![
                        Element::Value(Primitive::Date(Date {
                            year: 124,
                            month: 1,
                            day: 1,
                            weekday: UNSPECIFIED
                        })),
                        Element::Constructed {
                            tag: 1,
                            elements: vec![Element::Context {
                                tag: 0,
                                data: vec![5]
                            }]
                        }
                    ]
                },
                Element::Context {
                    tag: 1,
                    data: vec![2]
                }
            ]
        );
    }

    #[test]
    fn character_sets() {
        assert_eq!(
            decoded(&[0x75, 0x05, 0x04, 0x00, 0x48, 0x00, 0xE9]),
            Primitive::CharacterString("Hé".into())
        );
        assert_eq!(
            decoded(&[0x73, 0x05, 0xE9, 0x74]),
            Primitive::CharacterString("ét".into())
        );
        assert_eq!(
            decoded(&[0x75, 0x05, 0x03, 0x00, 0x01, 0xF6, 0x00]),
            Primitive::CharacterString("\u{1F600}".into())
        );
        assert_eq!(
            decoded(&[0x74, 0x00, 0xC3, 0xA9, 0x21]),
            Primitive::CharacterString("é!".into())
        );
        let mut reader = Reader::new(&[0x73, 0x01, 0x41, 0x42]);
        assert!(
            reader
                .primitive()
                .unwrap_err()
                .0
                .contains("character set 1")
        );
        assert!(Reader::new(&[0x72, 0x00, 0xFF]).primitive().is_err());
    }

    #[test]
    fn malformed_data_is_refused_not_trusted() {
        let refused: &[&[u8]] = &[
            &[],
            &[0x44, 0x41, 0xAC],                      // real cut short
            &[0x21],                                  // unsigned without content
            &[0x20],                                  // unsigned of zero octets
            &[0x25, 0x09, 1, 2, 3, 4, 5, 6, 7, 8, 9], // unsigned of nine octets
            &[0x12],                                  // boolean 2
            &[0x82, 0x08, 0xFF],                      // eight unused bits
            &[0x81, 0x03],                            // unused bits and no octets
            &[0xD1, 0x00],                            // reserved application tag 13
            &[0x0E],                                  // opening tag where a value belongs
            &[0x65, 255, 0xFF, 0xFF, 0xFF, 0xFF],     // four-gigabyte length
            &[0x01, 0x00],                            // null with content
        ];
        for bytes in refused {
            assert!(
                Reader::new(bytes).primitive().is_err(),
                "accepted {bytes:02X?}"
            );
        }
        assert!(Reader::new(&[0x0E, 0x21, 0x01]).elements_to_end().is_err());
        assert!(Reader::new(&[0x0F]).elements_to_end().is_err());
        let mut deep = vec![0x0E; MAX_DEPTH + 2];
        deep.extend(vec![0x0F; MAX_DEPTH + 2]);
        assert!(Reader::new(&deep).elements_to_end().is_err());
    }

    #[test]
    fn object_identifiers_pack_type_and_instance() {
        let id = ObjectId::new(8, 599).unwrap();
        assert_eq!(id.to_bits(), 0x0200_0257);
        assert_eq!(ObjectId::from_bits(0x0200_0257), id);
        assert_eq!(
            ObjectId::from_bits(u32::MAX),
            ObjectId::new(1023, 4_194_303).unwrap()
        );
        assert_eq!(ObjectId::new(1024, 0), None);
        assert_eq!(ObjectId::new(0, 4_194_304), None);
    }

    #[test]
    fn bit_strings_of_every_length() {
        for length in 0..20 {
            let bits: Vec<bool> = (0..length).map(|i| i % 3 == 0).collect();
            let bytes = encoded(&Primitive::BitString(bits.clone()));
            assert_eq!(decoded(&bytes), Primitive::BitString(bits));
        }
        assert_eq!(
            encoded(&Primitive::BitString(vec![false; 4])),
            [0x82, 0x04, 0x00]
        );
        assert_eq!(encoded(&Primitive::BitString(vec![])), [0x81, 0x00]);
    }
}
