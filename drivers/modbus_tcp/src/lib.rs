//! A Modbus TCP client: reads and writes the coils, discrete inputs, holding registers and
//! input registers of one unit, and publishes configured ranges as status on a timer.
//!
//! The protocol lives in pure modules ([`pdu`], [`mbap`], [`client`]) that the unit tests
//! run natively; this file is the glue to the host: settings, timers, status and the
//! functions a front end can run.
//!
//! Reads are open to every user. Writes need the `support` level, because a raw register
//! write can change any setpoint or configuration of a controller, and the driver cannot
//! know which registers are harmless on a given device.

mod client;
mod mbap;
mod params;
mod pdu;
mod poll;

use std::collections::BTreeMap;

use warden_driver_sdk::prelude::*;

use crate::client::{Client, Link};
use crate::params::{BitCount, CoilValues, RegisterCount, RegisterValues};
use crate::pdu::{Reply, Request, Table};
use crate::poll::PollRange;

const DEFAULT_UNIT_ID: u8 = 1;
const DEFAULT_TIMEOUT_MS: u32 = 2000;

/// Settings of a Modbus TCP module.
#[derive(Debug, Deserialize, Schema)]
struct ModbusSettings {
    /// The unit identifier requests are addressed to: the device's address behind a
    /// gateway; devices on Ethernet themselves usually answer 1 or 255.
    #[serde(default = "default_unit_id")]
    unit_id: u8,
    /// How long to wait for each reply, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u32,
    /// Ranges read on a timer and published as status, each under its own name.
    #[serde(default)]
    poll: Vec<PollRange>,
}

fn default_unit_id() -> u8 {
    DEFAULT_UNIT_ID
}

fn default_timeout_ms() -> u32 {
    DEFAULT_TIMEOUT_MS
}

/// The driver: one client for the configured unit and the polls it runs.
#[derive(Debug, Default)]
struct ModbusTcp {
    client: Client,
    polls: Vec<PollRange>,
    poll_timers: Vec<timers::Timer>,
    /// The last error of each poll that is failing, by name.
    failing_polls: BTreeMap<String, String>,
}

/// The host-owned connection to the module's endpoint.
struct HostTransport;

impl Link for HostTransport {
    fn request(&mut self, frame: &[u8], timeout: Duration) -> Result<Vec<u8>> {
        transport::request(frame, timeout)
    }

    fn receive(&mut self, timeout: Duration) -> Result<Vec<u8>> {
        transport::receive(timeout)
    }
}

impl Driver for ModbusTcp {
    type Settings = ModbusSettings;
    const INFO: DriverInfo = DriverInfo {
        name: "Modbus TCP",
        generic_name: "Modbus",
        description: "Modbus TCP client: reads and writes coils, discrete inputs, holding and \
                      input registers of one unit, and polls configured ranges into status.",
        version: env!("CARGO_PKG_VERSION"),
        transport: TransportKind::Tcp,
        default_port: Some(502),
        default_settings: r#"{"unit_id":1,"timeout_ms":2000,"poll":[]}"#,
    };

    fn init(&mut self, settings: ModbusSettings) -> Result<()> {
        // Framing is the protocol's, not the settings': set it even if they are refused.
        transport::set_tokenizer(Tokenizer::LengthPrefixed {
            offset: mbap::LENGTH_OFFSET,
            width: mbap::LENGTH_WIDTH,
            big_endian: true,
            adjust: 0,
        })?;
        // Check the settings before changing anything: refused settings leave the module
        // running as it was.
        if settings.timeout_ms == 0 {
            return Err(Error::invalid_arguments("timeout_ms must be at least 1"));
        }
        let polls = poll::checked(settings.poll)?;
        self.client.reconfigure(
            settings.unit_id,
            Duration::from_millis(u64::from(settings.timeout_ms)),
        );
        self.stop_polling();
        self.failing_polls.clear();
        self.polls = polls;
        self.start_polling()
    }

    fn timer(&mut self, tag: &str) {
        let Some(range) = self.polls.iter().find(|range| range.timer_tag() == tag) else {
            return;
        };
        let range = range.clone();
        // A failed poll is retried on the next tick and the last good value stays. Only a
        // change is logged, so an unplugged device does not write a line every tick.
        let outcome = self.poll(&range).err().map(|error| error.to_string());
        let previous = match &outcome {
            Some(error) => self.failing_polls.insert(range.name.clone(), error.clone()),
            None => self.failing_polls.remove(&range.name),
        };
        match (outcome, previous) {
            (Some(error), previous) if previous.as_ref() != Some(&error) => {
                log::warn(&format!("poll `{}`: {error}", range.name));
            }
            (None, Some(_)) => log::info(&format!("poll `{}` recovered", range.name)),
            _ => {}
        }
    }
}

impl ModbusTcp {
    fn start_polling(&mut self) -> Result<()> {
        for range in &self.polls {
            match timers::every(&range.timer_tag(), range.period()) {
                Ok(timer) => self.poll_timers.push(timer),
                Err(error) => {
                    self.stop_polling();
                    return Err(error);
                }
            }
        }
        Ok(())
    }

    fn stop_polling(&mut self) {
        for timer in self.poll_timers.drain(..) {
            timers::cancel(timer);
        }
    }

    fn call(&mut self, request: &Request) -> Result<Reply> {
        self.client.call(&mut HostTransport, request)
    }

    fn read_bits(&mut self, table: Table, address: u16, count: u16) -> Result<Vec<bool>> {
        match self.call(&Request::read(table, address, count)?)? {
            Reply::Bits(bits) => Ok(bits),
            other => Err(Error::failed(format!("expected bits, got {other:?}"))),
        }
    }

    fn read_registers(&mut self, table: Table, address: u16, count: u16) -> Result<Vec<u16>> {
        match self.call(&Request::read(table, address, count)?)? {
            Reply::Registers(registers) => Ok(registers),
            other => Err(Error::failed(format!("expected registers, got {other:?}"))),
        }
    }

    fn write(&mut self, request: &Request) -> Result<()> {
        match self.call(request)? {
            Reply::Written => Ok(()),
            other => Err(Error::failed(format!(
                "expected a confirmation, got {other:?}"
            ))),
        }
    }

    /// Read `range` and publish it: one value when it has one item, else an array.
    fn poll(&mut self, range: &PollRange) -> Result<Value> {
        let value = match self.call(&range.request()?)? {
            Reply::Bits(bits) => one_or_all(&bits),
            Reply::Registers(registers) => one_or_all(&registers),
            Reply::Written => Value::Null,
        };
        status::set(&range.name, &value)?;
        Ok(value)
    }
}

fn one_or_all<T: Serialize>(items: &[T]) -> Value {
    match items {
        [one] => json!(one),
        all => json!(all),
    }
}

#[functions]
impl ModbusTcp {
    /// Read `count` coils (1 to 2000) from `address` (0-based, as on the wire).
    pub fn read_coils(&mut self, address: u16, count: BitCount) -> Result<Vec<bool>> {
        self.read_bits(Table::Coils, address, count.0)
    }

    /// Read `count` discrete inputs (1 to 2000) from `address`.
    pub fn read_discrete_inputs(&mut self, address: u16, count: BitCount) -> Result<Vec<bool>> {
        self.read_bits(Table::DiscreteInputs, address, count.0)
    }

    /// Read `count` holding registers (1 to 125) from `address`.
    pub fn read_holding_registers(
        &mut self,
        address: u16,
        count: RegisterCount,
    ) -> Result<Vec<u16>> {
        self.read_registers(Table::HoldingRegisters, address, count.0)
    }

    /// Read `count` input registers (1 to 125) from `address`.
    pub fn read_input_registers(&mut self, address: u16, count: RegisterCount) -> Result<Vec<u16>> {
        self.read_registers(Table::InputRegisters, address, count.0)
    }

    /// Switch the coil at `address` on or off.
    #[level(support)]
    pub fn write_single_coil(&mut self, address: u16, value: bool) -> Result<()> {
        self.write(&Request::write_single_coil(address, value))
    }

    /// Set the holding register at `address`.
    #[level(support)]
    pub fn write_single_register(&mut self, address: u16, value: u16) -> Result<()> {
        self.write(&Request::write_single_register(address, value))
    }

    /// Set consecutive coils from `address` (1 to 1968 values).
    #[level(support)]
    pub fn write_multiple_coils(&mut self, address: u16, values: CoilValues) -> Result<()> {
        self.write(&Request::write_multiple_coils(address, values.0)?)
    }

    /// Set consecutive holding registers from `address` (1 to 123 values).
    #[level(support)]
    pub fn write_multiple_registers(&mut self, address: u16, values: RegisterValues) -> Result<()> {
        self.write(&Request::write_multiple_registers(address, values.0)?)
    }

    /// Read every range of the `poll` setting now, publish each as status, and return
    /// them by name. Stops at the first range that fails.
    pub fn poll_now(&mut self) -> Result<BTreeMap<String, Value>> {
        let mut published = BTreeMap::new();
        for range in self.polls.clone() {
            let value = self
                .poll(&range)
                .map_err(|error| error.context(format!("poll `{}`", range.name)))?;
            published.insert(range.name, value);
        }
        Ok(published)
    }
}

export_driver!(ModbusTcp);
