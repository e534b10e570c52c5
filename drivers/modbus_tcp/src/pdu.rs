//! Modbus protocol data units: the function code and data that every Modbus transport
//! carries, as in the Modbus Application Protocol Specification V1.1b3.
//!
//! Pure code with no host calls, so it is unit-tested natively. A [`Request`] can only
//! be built with quantities the specification allows, and [`Request::parse_reply`]
//! accepts only the reply that request asks for: a device that answers with the wrong
//! function, the wrong byte count or a different echo is reported, not believed.

use std::fmt;

/// The most coils or discrete inputs one read may ask for (spec 6.1, 6.2).
pub const MAX_READ_BITS: u16 = 2000;
/// The most registers one read may ask for (spec 6.3, 6.4).
pub const MAX_READ_REGISTERS: u16 = 125;
/// The most coils one write may carry (spec 6.11).
pub const MAX_WRITE_BITS: u16 = 1968;
/// The most registers one write may carry (spec 6.12).
pub const MAX_WRITE_REGISTERS: u16 = 123;

/// Set in a reply's function code when the reply is an exception (spec 7).
const EXCEPTION_FLAG: u8 = 0x80;
/// How a single coil write says "on" and "off" (spec 6.5).
const COIL_ON: u16 = 0xFF00;
const COIL_OFF: u16 = 0x0000;

/// The four data tables of a Modbus device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// Read-write bits.
    Coils,
    /// Read-only bits.
    DiscreteInputs,
    /// Read-write 16-bit registers.
    HoldingRegisters,
    /// Read-only 16-bit registers.
    InputRegisters,
}

impl Table {
    /// The table's name in messages, as the specification spells it.
    pub fn name(self) -> &'static str {
        match self {
            Table::Coils => "coils",
            Table::DiscreteInputs => "discrete inputs",
            Table::HoldingRegisters => "holding registers",
            Table::InputRegisters => "input registers",
        }
    }

    fn read_function(self) -> u8 {
        match self {
            Table::Coils => 0x01,
            Table::DiscreteInputs => 0x02,
            Table::HoldingRegisters => 0x03,
            Table::InputRegisters => 0x04,
        }
    }

    fn holds_bits(self) -> bool {
        matches!(self, Table::Coils | Table::DiscreteInputs)
    }

    fn max_read(self) -> u16 {
        if self.holds_bits() {
            MAX_READ_BITS
        } else {
            MAX_READ_REGISTERS
        }
    }
}

/// A request PDU. Build it with the constructors, which refuse quantities the
/// specification does not allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    operation: Operation,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Operation {
    Read {
        table: Table,
        address: u16,
        count: u16,
    },
    WriteSingleCoil {
        address: u16,
        value: bool,
    },
    WriteSingleRegister {
        address: u16,
        value: u16,
    },
    WriteMultipleCoils {
        address: u16,
        values: Vec<bool>,
    },
    WriteMultipleRegisters {
        address: u16,
        values: Vec<u16>,
    },
}

/// What a successful reply carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The bits read, exactly as many as asked for.
    Bits(Vec<bool>),
    /// The registers read, exactly as many as asked for.
    Registers(Vec<u16>),
    /// The device confirmed a write.
    Written,
}

/// Why a request could not be made or its reply not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// The request would break the specification's limits; nothing was sent.
    InvalidRequest(String),
    /// The device answered with an exception response.
    Exception {
        /// What was asked, for the message.
        request: String,
        /// What the device answered.
        exception: Exception,
    },
    /// The reply does not follow the specification or does not answer the request.
    MalformedReply(String),
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::InvalidRequest(message) | ProtocolError::MalformedReply(message) => {
                f.write_str(message)
            }
            ProtocolError::Exception { request, exception } => {
                write!(f, "{request}: the device answered {exception}")
            }
        }
    }
}

impl std::error::Error for ProtocolError {}

/// A Modbus exception code (spec 7), named so that an operator can act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exception {
    /// 1: the device does not support the function.
    IllegalFunction,
    /// 2: the address range is not in the device.
    IllegalDataAddress,
    /// 3: a value in the request is not acceptable to the device.
    IllegalDataValue,
    /// 4: the device failed while handling the request.
    ServerDeviceFailure,
    /// 5: accepted, but it will take long; poll for completion.
    Acknowledge,
    /// 6: the device is busy with a long command.
    ServerDeviceBusy,
    /// 7: the device cannot perform the program function (older devices).
    NegativeAcknowledge,
    /// 8: the device found a parity error in its memory.
    MemoryParityError,
    /// 10: a gateway had no path to the target.
    GatewayPathUnavailable,
    /// 11: a gateway's target did not answer.
    GatewayTargetFailedToRespond,
    /// Any code the specification does not define.
    Other(u8),
}

impl Exception {
    /// The exception with this code.
    pub fn from_code(code: u8) -> Exception {
        match code {
            0x01 => Exception::IllegalFunction,
            0x02 => Exception::IllegalDataAddress,
            0x03 => Exception::IllegalDataValue,
            0x04 => Exception::ServerDeviceFailure,
            0x05 => Exception::Acknowledge,
            0x06 => Exception::ServerDeviceBusy,
            0x07 => Exception::NegativeAcknowledge,
            0x08 => Exception::MemoryParityError,
            0x0A => Exception::GatewayPathUnavailable,
            0x0B => Exception::GatewayTargetFailedToRespond,
            other => Exception::Other(other),
        }
    }

    /// The exception's code on the wire.
    pub fn code(self) -> u8 {
        match self {
            Exception::IllegalFunction => 0x01,
            Exception::IllegalDataAddress => 0x02,
            Exception::IllegalDataValue => 0x03,
            Exception::ServerDeviceFailure => 0x04,
            Exception::Acknowledge => 0x05,
            Exception::ServerDeviceBusy => 0x06,
            Exception::NegativeAcknowledge => 0x07,
            Exception::MemoryParityError => 0x08,
            Exception::GatewayPathUnavailable => 0x0A,
            Exception::GatewayTargetFailedToRespond => 0x0B,
            Exception::Other(code) => code,
        }
    }

    /// The specification's name of the exception.
    pub fn name(self) -> &'static str {
        match self {
            Exception::IllegalFunction => "illegal function",
            Exception::IllegalDataAddress => "illegal data address",
            Exception::IllegalDataValue => "illegal data value",
            Exception::ServerDeviceFailure => "server device failure",
            Exception::Acknowledge => "acknowledge",
            Exception::ServerDeviceBusy => "server device busy",
            Exception::NegativeAcknowledge => "negative acknowledge",
            Exception::MemoryParityError => "memory parity error",
            Exception::GatewayPathUnavailable => "gateway path unavailable",
            Exception::GatewayTargetFailedToRespond => "gateway target device failed to respond",
            Exception::Other(_) => "unknown exception",
        }
    }
}

impl fmt::Display for Exception {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exception {} ({})", self.code(), self.name())
    }
}

/// Refuse a quantity outside `1..=max` and a range that runs past address 65535.
fn check_range(what: &str, address: u16, count: usize, max: u16) -> Result<u16, ProtocolError> {
    let count = u16::try_from(count)
        .ok()
        .filter(|count| (1..=max).contains(count))
        .ok_or_else(|| {
            ProtocolError::InvalidRequest(format!(
                "{what}: count must be between 1 and {max}, got {count}"
            ))
        })?;
    if u32::from(address) + u32::from(count) > 0x1_0000 {
        return Err(ProtocolError::InvalidRequest(format!(
            "{what}: {count} item(s) from address {address} run past address 65535"
        )));
    }
    Ok(count)
}

impl Request {
    /// Read `count` items of `table` from `address`.
    pub fn read(table: Table, address: u16, count: u16) -> Result<Request, ProtocolError> {
        let what = format!("read {}", table.name());
        let count = check_range(&what, address, usize::from(count), table.max_read())?;
        Ok(Request {
            operation: Operation::Read {
                table,
                address,
                count,
            },
        })
    }

    /// Set one coil.
    pub fn write_single_coil(address: u16, value: bool) -> Request {
        Request {
            operation: Operation::WriteSingleCoil { address, value },
        }
    }

    /// Set one holding register.
    pub fn write_single_register(address: u16, value: u16) -> Request {
        Request {
            operation: Operation::WriteSingleRegister { address, value },
        }
    }

    /// Set consecutive coils from `address`.
    pub fn write_multiple_coils(address: u16, values: Vec<bool>) -> Result<Request, ProtocolError> {
        check_range("write coils", address, values.len(), MAX_WRITE_BITS)?;
        Ok(Request {
            operation: Operation::WriteMultipleCoils { address, values },
        })
    }

    /// Set consecutive holding registers from `address`.
    pub fn write_multiple_registers(
        address: u16,
        values: Vec<u16>,
    ) -> Result<Request, ProtocolError> {
        check_range(
            "write holding registers",
            address,
            values.len(),
            MAX_WRITE_REGISTERS,
        )?;
        Ok(Request {
            operation: Operation::WriteMultipleRegisters { address, values },
        })
    }

    /// The function code the request is sent with.
    pub fn function_code(&self) -> u8 {
        match &self.operation {
            Operation::Read { table, .. } => table.read_function(),
            Operation::WriteSingleCoil { .. } => 0x05,
            Operation::WriteSingleRegister { .. } => 0x06,
            Operation::WriteMultipleCoils { .. } => 0x0F,
            Operation::WriteMultipleRegisters { .. } => 0x10,
        }
    }

    /// What the request does, for messages: `read holding registers at 0, count 2`.
    pub fn describe(&self) -> String {
        match &self.operation {
            Operation::Read {
                table,
                address,
                count,
            } => format!("read {} at {address}, count {count}", table.name()),
            Operation::WriteSingleCoil { address, .. } => format!("write coil {address}"),
            Operation::WriteSingleRegister { address, .. } => {
                format!("write holding register {address}")
            }
            Operation::WriteMultipleCoils { address, values } => {
                format!("write coils at {address}, count {}", values.len())
            }
            Operation::WriteMultipleRegisters { address, values } => {
                format!(
                    "write holding registers at {address}, count {}",
                    values.len()
                )
            }
        }
    }

    /// The PDU bytes: function code, then the function's data.
    pub fn encode(&self) -> Vec<u8> {
        let mut pdu = vec![self.function_code()];
        match &self.operation {
            Operation::Read { address, count, .. } => {
                push_u16(&mut pdu, *address);
                push_u16(&mut pdu, *count);
            }
            Operation::WriteSingleCoil { address, value } => {
                push_u16(&mut pdu, *address);
                push_u16(&mut pdu, if *value { COIL_ON } else { COIL_OFF });
            }
            Operation::WriteSingleRegister { address, value } => {
                push_u16(&mut pdu, *address);
                push_u16(&mut pdu, *value);
            }
            Operation::WriteMultipleCoils { address, values } => {
                let packed = pack_bits(values);
                push_u16(&mut pdu, *address);
                push_u16(&mut pdu, quantity(values.len()));
                pdu.push(byte_count(packed.len()));
                pdu.extend_from_slice(&packed);
            }
            Operation::WriteMultipleRegisters { address, values } => {
                push_u16(&mut pdu, *address);
                push_u16(&mut pdu, quantity(values.len()));
                pdu.push(byte_count(values.len() * 2));
                for value in values {
                    push_u16(&mut pdu, *value);
                }
            }
        }
        pdu
    }

    /// Check that `reply` (a PDU) answers this request, and return what it carried.
    pub fn parse_reply(&self, reply: &[u8]) -> Result<Reply, ProtocolError> {
        let malformed = |detail: String| {
            ProtocolError::MalformedReply(format!("{}: malformed reply: {detail}", self.describe()))
        };
        let (&function, data) = reply
            .split_first()
            .ok_or_else(|| malformed("empty PDU".to_string()))?;
        if function == self.function_code() | EXCEPTION_FLAG {
            return match data {
                [code] => Err(ProtocolError::Exception {
                    request: self.describe(),
                    exception: Exception::from_code(*code),
                }),
                _ => Err(malformed(format!(
                    "exception response with {} data bytes, expected 1",
                    data.len()
                ))),
            };
        }
        if function != self.function_code() {
            return Err(malformed(format!(
                "function code {function:#04x}, expected {:#04x}",
                self.function_code()
            )));
        }
        match &self.operation {
            Operation::Read { table, count, .. } => {
                let (&declared, values) = data
                    .split_first()
                    .ok_or_else(|| malformed("no byte count".to_string()))?;
                let expected = if table.holds_bits() {
                    usize::from(*count).div_ceil(8)
                } else {
                    usize::from(*count) * 2
                };
                if usize::from(declared) != expected || values.len() != expected {
                    return Err(malformed(format!(
                        "byte count {declared} with {} data bytes, expected {expected}",
                        values.len()
                    )));
                }
                if table.holds_bits() {
                    Ok(Reply::Bits(unpack_bits(values, usize::from(*count))))
                } else {
                    Ok(Reply::Registers(registers(values)))
                }
            }
            Operation::WriteSingleCoil { .. } | Operation::WriteSingleRegister { .. } => {
                // The device echoes the request (spec 6.5, 6.6).
                if reply == self.encode() {
                    Ok(Reply::Written)
                } else {
                    Err(malformed(format!(
                        "echo {reply:02x?} differs from the request"
                    )))
                }
            }
            Operation::WriteMultipleCoils { address, values } => {
                check_write_echo(data, *address, values.len()).map_err(malformed)
            }
            Operation::WriteMultipleRegisters { address, values } => {
                check_write_echo(data, *address, values.len()).map_err(malformed)
            }
        }
    }
}

/// A multiple write is confirmed with its address and quantity (spec 6.11, 6.12).
fn check_write_echo(data: &[u8], address: u16, count: usize) -> Result<Reply, String> {
    let echoed = match data {
        [a, b, c, d] => (u16::from_be_bytes([*a, *b]), u16::from_be_bytes([*c, *d])),
        _ => return Err(format!("{} data bytes, expected 4", data.len())),
    };
    let expected = (address, quantity(count));
    if echoed == expected {
        Ok(Reply::Written)
    } else {
        Err(format!(
            "confirmed address {} count {}, expected address {} count {}",
            echoed.0, echoed.1, expected.0, expected.1
        ))
    }
}

fn push_u16(out: &mut Vec<u8>, value: u16) {
    out.extend_from_slice(&value.to_be_bytes());
}

/// A quantity the constructors have already limited to the specification's maximum.
fn quantity(count: usize) -> u16 {
    u16::try_from(count).unwrap_or(u16::MAX)
}

/// A byte count the constructors have already limited (at most 246 bytes).
fn byte_count(bytes: usize) -> u8 {
    u8::try_from(bytes).unwrap_or(u8::MAX)
}

/// Coils go eight to a byte, the first in the least significant bit (spec 6.1, 6.11).
pub fn pack_bits(bits: &[bool]) -> Vec<u8> {
    bits.chunks(8)
        .map(|chunk| {
            chunk
                .iter()
                .enumerate()
                .fold(0u8, |byte, (bit, &on)| byte | (u8::from(on) << bit))
        })
        .collect()
}

/// The first `count` bits of `bytes`, least significant bit first.
pub fn unpack_bits(bytes: &[u8], count: usize) -> Vec<bool> {
    bytes
        .iter()
        .flat_map(|byte| (0..8).map(move |bit| byte & (1 << bit) != 0))
        .take(count)
        .collect()
}

/// Big-endian 16-bit registers; an odd trailing byte is ignored (callers check lengths).
fn registers(bytes: &[u8]) -> Vec<u16> {
    bytes
        .chunks_exact(2)
        .filter_map(|pair| <[u8; 2]>::try_from(pair).ok())
        .map(u16::from_be_bytes)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_requests_encode_as_in_the_specification() {
        // Spec 6.3 example: read holding registers 108-110 (address 107, count 3).
        let request = Request::read(Table::HoldingRegisters, 107, 3).unwrap();
        assert_eq!(request.encode(), [0x03, 0x00, 0x6B, 0x00, 0x03]);
        // Spec 6.1: read coils 20-38 (address 19, count 19).
        let request = Request::read(Table::Coils, 19, 19).unwrap();
        assert_eq!(request.encode(), [0x01, 0x00, 0x13, 0x00, 0x13]);
        assert_eq!(
            Request::read(Table::DiscreteInputs, 196, 22)
                .unwrap()
                .encode(),
            [0x02, 0x00, 0xC4, 0x00, 0x16]
        );
        assert_eq!(
            Request::read(Table::InputRegisters, 8, 1).unwrap().encode(),
            [0x04, 0x00, 0x08, 0x00, 0x01]
        );
    }

    #[test]
    fn read_replies_decode_as_in_the_specification() {
        let request = Request::read(Table::HoldingRegisters, 107, 3).unwrap();
        let reply = [0x03, 0x06, 0x02, 0x2B, 0x00, 0x00, 0x00, 0x64];
        assert_eq!(
            request.parse_reply(&reply).unwrap(),
            Reply::Registers(vec![555, 0, 100])
        );
        // Spec 6.1: coils 27-20 = 0xCD, 35-28 = 0x6B, 38-36 = 0x05.
        let request = Request::read(Table::Coils, 19, 19).unwrap();
        let reply = [0x01, 0x03, 0xCD, 0x6B, 0x05];
        let expected = [
            1, 0, 1, 1, 0, 0, 1, 1, /* 0xCD */ 1, 1, 0, 1, 0, 1, 1, 0, /* 0x6B */ 1, 0, 1,
        ]
        .map(|bit| bit == 1);
        assert_eq!(
            request.parse_reply(&reply).unwrap(),
            Reply::Bits(expected.to_vec())
        );
    }

    #[test]
    fn writes_encode_and_accept_their_echo() {
        let coil = Request::write_single_coil(172, true);
        assert_eq!(coil.encode(), [0x05, 0x00, 0xAC, 0xFF, 0x00]);
        assert_eq!(coil.parse_reply(&coil.encode()).unwrap(), Reply::Written);
        assert_eq!(
            Request::write_single_coil(172, false).encode(),
            [0x05, 0x00, 0xAC, 0x00, 0x00]
        );

        let register = Request::write_single_register(1, 3);
        assert_eq!(register.encode(), [0x06, 0x00, 0x01, 0x00, 0x03]);
        assert_eq!(
            register.parse_reply(&register.encode()).unwrap(),
            Reply::Written
        );

        // Spec 6.11: coils 20-29 (address 19) set to CD 01.
        let bits = [1, 0, 1, 1, 0, 0, 1, 1, 1, 0].map(|bit| bit == 1).to_vec();
        let coils = Request::write_multiple_coils(19, bits).unwrap();
        assert_eq!(
            coils.encode(),
            [0x0F, 0x00, 0x13, 0x00, 0x0A, 0x02, 0xCD, 0x01]
        );
        assert_eq!(
            coils.parse_reply(&[0x0F, 0x00, 0x13, 0x00, 0x0A]).unwrap(),
            Reply::Written
        );

        // Spec 6.12: registers 2-3 (address 1) set to 000A 0102.
        let registers = Request::write_multiple_registers(1, vec![0x000A, 0x0102]).unwrap();
        assert_eq!(
            registers.encode(),
            [0x10, 0x00, 0x01, 0x00, 0x02, 0x04, 0x00, 0x0A, 0x01, 0x02]
        );
        assert_eq!(
            registers
                .parse_reply(&[0x10, 0x00, 0x01, 0x00, 0x02])
                .unwrap(),
            Reply::Written
        );
    }

    #[test]
    fn exceptions_are_named() {
        let request = Request::read(Table::HoldingRegisters, 200, 1).unwrap();
        let error = request.parse_reply(&[0x83, 0x02]).unwrap_err();
        assert_eq!(
            error,
            ProtocolError::Exception {
                request: "read holding registers at 200, count 1".to_string(),
                exception: Exception::IllegalDataAddress,
            }
        );
        assert_eq!(
            error.to_string(),
            "read holding registers at 200, count 1: the device answered exception 2 (illegal data address)"
        );
        let write = Request::write_single_coil(1, true);
        assert!(matches!(
            write.parse_reply(&[0x85, 0x04]),
            Err(ProtocolError::Exception {
                exception: Exception::ServerDeviceFailure,
                ..
            })
        ));
        for code in 0..=u8::MAX {
            assert_eq!(Exception::from_code(code).code(), code);
        }
        assert_eq!(
            Exception::from_code(0x0B).name(),
            "gateway target device failed to respond"
        );
        assert_eq!(
            Exception::from_code(0x42).to_string(),
            "exception 66 (unknown exception)"
        );
    }

    #[test]
    fn quantities_outside_the_specification_are_refused() {
        let refused = |result: Result<Request, ProtocolError>| {
            matches!(result, Err(ProtocolError::InvalidRequest(_)))
        };
        assert!(refused(Request::read(Table::HoldingRegisters, 0, 0)));
        assert!(refused(Request::read(Table::HoldingRegisters, 0, 126)));
        assert!(!refused(Request::read(Table::InputRegisters, 0, 125)));
        assert!(refused(Request::read(Table::Coils, 0, 2001)));
        assert!(!refused(Request::read(Table::DiscreteInputs, 0, 2000)));
        assert!(refused(Request::read(Table::Coils, 65535, 2)));
        assert!(!refused(Request::read(Table::Coils, 65535, 1)));
        assert!(refused(Request::write_multiple_coils(0, vec![])));
        assert!(refused(Request::write_multiple_coils(0, vec![true; 1969])));
        assert!(!refused(Request::write_multiple_coils(0, vec![true; 1968])));
        assert!(refused(Request::write_multiple_registers(0, vec![])));
        assert!(refused(Request::write_multiple_registers(0, vec![1; 124])));
        assert!(!refused(Request::write_multiple_registers(
            65413,
            vec![1; 123]
        )));
        assert!(refused(Request::write_multiple_registers(
            65414,
            vec![1; 123]
        )));
        let message = Request::read(Table::HoldingRegisters, 0, 0)
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "read holding registers: count must be between 1 and 125, got 0"
        );
    }

    #[test]
    fn replies_that_do_not_answer_the_request_are_refused() {
        let read = Request::read(Table::HoldingRegisters, 0, 2).unwrap();
        let malformed = |reply: &[u8]| {
            matches!(
                read.parse_reply(reply),
                Err(ProtocolError::MalformedReply(_))
            )
        };
        assert!(malformed(&[]));
        assert!(malformed(&[0x04, 0x04, 0, 1, 0, 2])); // another function
        assert!(malformed(&[0x03, 0x02, 0, 1])); // one register short
        assert!(malformed(&[0x03, 0x04, 0, 1, 0])); // byte count disagrees with the data
        assert!(malformed(&[0x03, 0x04, 0, 1, 0, 2, 0])); // a byte too many
        assert!(malformed(&[0x83])); // exception without a code
        assert!(malformed(&[0x83, 0x02, 0x00]));
        assert!(!malformed(&[0x03, 0x04, 0, 1, 0, 2]));

        let coils = Request::read(Table::Coils, 0, 9).unwrap();
        assert!(coils.parse_reply(&[0x01, 0x01, 0xFF]).is_err());
        assert_eq!(
            coils.parse_reply(&[0x01, 0x02, 0xFF, 0x01]).unwrap(),
            Reply::Bits(vec![true; 9])
        );

        let write = Request::write_single_register(5, 7);
        assert!(write.parse_reply(&[0x06, 0x00, 0x05, 0x00, 0x08]).is_err());
        let writes = Request::write_multiple_registers(5, vec![1, 2]).unwrap();
        assert!(writes.parse_reply(&[0x10, 0x00, 0x05, 0x00, 0x03]).is_err());
        assert!(writes.parse_reply(&[0x10, 0x00, 0x05, 0x00]).is_err());
    }

    #[test]
    fn bits_round_trip() {
        let bits: Vec<bool> = (0..19).map(|i| i % 3 == 0).collect();
        let packed = pack_bits(&bits);
        assert_eq!(packed.len(), 3);
        assert_eq!(unpack_bits(&packed, bits.len()), bits);
        assert_eq!(pack_bits(&[]), Vec::<u8>::new());
    }
}
