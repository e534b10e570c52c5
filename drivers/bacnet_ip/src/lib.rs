//! A BACnet/IP client: asks one device who it is, reads and writes the properties of its
//! objects (ReadProperty, WriteProperty, ReadPropertyMultiple), and polls configured
//! points into status on a timer.
//!
//! The protocol lives in pure modules that the unit tests run natively: [`tag`] (the
//! tagged encoding), [`apdu`] (BVLL, NPDU and APDU headers), [`services`] (the service
//! requests and ACKs), [`value`] (property values as JSON), [`client`] (invoke ids,
//! timeouts, retries, Who-Is). This file is the glue to the host: settings, timers,
//! status and the functions a front end can run.
//!
//! The host's UDP transport aims one socket at the module's endpoint, so every request
//! is a unicast datagram to the device (or to the router in front of it) and every
//! answer is one datagram. Broadcasts are neither sent nor received: Who-Is goes to the
//! device itself.
//!
//! Reads are open to every user. Writes need the `support` level: a generic driver
//! cannot tell a setpoint from a device's configuration.

mod apdu;
mod client;
mod enums;
mod params;
mod poll;
mod reads;
mod services;
mod tag;
mod value;

use std::collections::BTreeMap;

use warden_driver_sdk::prelude::*;
use warden_driver_sdk::timers::Timer;

use crate::apdu::Remote;
use crate::client::{Ack, Client, Config, Failure, Link, Refusal};
use crate::params::{Device, Instance, ObjectType, Priority, PropertyId, Read, ReadOutcome};
use crate::poll::Point;
use crate::reads::{ReadResult, Reads};
use crate::services::{PropertyRef, confirmed};
use crate::tag::{Element, ObjectId};

/// The defaults a deployer sees; a unit test checks that they agree with serde's.
const DEFAULT_SETTINGS: &str = r#"{"apdu_timeout_ms":2000,"retries":2,"points":[],"poll_every_ms":10000,"points_per_request":16}"#;

/// Polling faster than this loads the device and the network for no gain in a building.
const MIN_POLL_MS: u32 = 100;
/// The most reads one ReadPropertyMultiple request may carry.
const MAX_POINTS_PER_REQUEST: u8 = 100;
/// The most retries: more only holds up the module's queue behind a dead device.
const MAX_RETRIES: u8 = 10;
/// After the first I-Am, further answers to a Who-Is are awaited until none has come
/// for this long (a router may answer for several devices).
const I_AM_QUIET: Duration = Duration::from_millis(300);
/// The tag of the polling timer.
const POLL: &str = "poll";

/// Settings of a BACnet/IP module.
#[derive(Debug, PartialEq, Deserialize, Schema)]
struct BacnetSettings {
    /// How long to wait for the answer to each request, in milliseconds (BACnet's APDU
    /// timeout).
    #[serde(default = "default_apdu_timeout_ms")]
    apdu_timeout_ms: u32,
    /// How many times a request is sent again when no answer came in `apdu_timeout_ms`
    /// (BACnet's number of APDU retries), 0 to 10.
    #[serde(default = "default_retries")]
    retries: u8,
    /// For a device behind a BACnet router (such as an MS/TP controller behind a
    /// BACnet/IP router that is the module's endpoint): the device's network number,
    /// 1 to 65534. Needs `mac`.
    #[serde(default)]
    network: Option<u16>,
    /// For a device behind a BACnet router: its MAC address on `network`, in hex (`"17"`
    /// for MS/TP address 23), 1 to 7 octets. Needs `network`.
    #[serde(default)]
    mac: Option<String>,
    /// Properties read every `poll_every_ms` and published as status, each under its
    /// own name.
    #[serde(default)]
    points: Vec<Point>,
    /// How often the `points` are read, in milliseconds (at least 100); 0 turns polling
    /// off.
    #[serde(default = "default_poll_every_ms")]
    poll_every_ms: u32,
    /// How many reads go into one ReadPropertyMultiple request, 1 to 100; 1 reads every
    /// property with its own ReadProperty request.
    #[serde(default = "default_points_per_request")]
    points_per_request: u8,
}

fn default_apdu_timeout_ms() -> u32 {
    2000
}

fn default_retries() -> u8 {
    2
}

fn default_poll_every_ms() -> u32 {
    10_000
}

fn default_points_per_request() -> u8 {
    16
}

impl Default for BacnetSettings {
    fn default() -> Self {
        BacnetSettings {
            apdu_timeout_ms: default_apdu_timeout_ms(),
            retries: default_retries(),
            network: None,
            mac: None,
            points: Vec::new(),
            poll_every_ms: default_poll_every_ms(),
            points_per_request: default_points_per_request(),
        }
    }
}

/// The device behind a router that `network` and `mac` name, if they do.
fn remote(network: Option<u16>, mac: Option<&str>) -> Result<Option<Remote>> {
    match (network, mac) {
        (None, None) => Ok(None),
        (Some(network), Some(mac)) => {
            if network == 0 || network == u16::MAX {
                return Err(Error::invalid_arguments(format!(
                    "network must be 1-65534, got {network}"
                )));
            }
            let address = hex(mac).filter(|octets| (1..=7).contains(&octets.len()));
            match address {
                Some(address) => Ok(Some(Remote { network, address })),
                None => Err(Error::invalid_arguments(format!(
                    "mac must be 1 to 7 octets in hex, such as \"17\", got {mac:?}"
                ))),
            }
        }
        _ => Err(Error::invalid_arguments(
            "network and mac go together: both for a device behind a router, neither for \
             the endpoint itself",
        )),
    }
}

fn hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| {
            text.get(at..at + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect()
}

/// What `poll_now` read: the values by point name, and the points that failed.
#[derive(Debug, Default, Serialize, Schema)]
struct PollReport {
    /// The value of each point that was read.
    values: BTreeMap<String, Value>,
    /// Why each other point failed, as the device said (`object: unknown-object`).
    errors: BTreeMap<String, String>,
}

/// The driver: one client for the device and the points it polls.
#[derive(Debug, Default)]
struct BacnetIp {
    client: Client,
    points: Vec<Point>,
    reads: Reads,
    poll_timer: Option<Timer>,
    /// The last error of each failing point, by name, and of the poll as a whole.
    failing: BTreeMap<String, String>,
}

/// The host-owned UDP socket aimed at the module's endpoint.
struct HostLink;

impl Link for HostLink {
    fn request(&mut self, datagram: &[u8], timeout: Duration) -> Result<Vec<u8>> {
        transport::request(datagram, timeout)
    }

    fn receive(&mut self, timeout: Duration) -> Result<Vec<u8>> {
        transport::receive(timeout)
    }

    fn send(&mut self, datagram: &[u8]) -> Result<()> {
        transport::send(datagram)
    }
}

impl Driver for BacnetIp {
    type Settings = BacnetSettings;
    const INFO: DriverInfo = DriverInfo {
        name: "BACnet/IP",
        generic_name: "BACnet",
        description: "BACnet/IP client: Who-Is, ReadProperty, WriteProperty and \
                      ReadPropertyMultiple on the objects of one device (or of one device \
                      behind a BACnet router), and configured points polled into status.",
        version: env!("CARGO_PKG_VERSION"),
        transport: TransportKind::Udp,
        default_port: Some(47808),
        default_settings: DEFAULT_SETTINGS,
    };

    fn init(&mut self, settings: BacnetSettings) -> Result<()> {
        // Check everything before changing anything: refused settings leave the module
        // running as it was.
        if settings.apdu_timeout_ms == 0 {
            return Err(Error::invalid_arguments(
                "apdu_timeout_ms must be at least 1",
            ));
        }
        if settings.retries > MAX_RETRIES {
            return Err(Error::invalid_arguments(format!(
                "retries must be 0-{MAX_RETRIES}, got {}",
                settings.retries
            )));
        }
        if settings.poll_every_ms != 0 && settings.poll_every_ms < MIN_POLL_MS {
            return Err(Error::invalid_arguments(format!(
                "poll_every_ms must be 0 (off) or at least {MIN_POLL_MS}, got {}",
                settings.poll_every_ms
            )));
        }
        if !(1..=MAX_POINTS_PER_REQUEST).contains(&settings.points_per_request) {
            return Err(Error::invalid_arguments(format!(
                "points_per_request must be 1-{MAX_POINTS_PER_REQUEST}, got {}",
                settings.points_per_request
            )));
        }
        let remote = remote(settings.network, settings.mac.as_deref())?;
        let points = poll::checked(settings.points)?;

        self.client.reconfigure(Config {
            timeout: Duration::from_millis(u64::from(settings.apdu_timeout_ms)),
            retries: settings.retries,
            remote,
        });
        self.reads = Reads::new(usize::from(settings.points_per_request));
        self.failing.clear();
        // `init` runs again on every settings change: replace the timer, never add one.
        if let Some(timer) = self.poll_timer.take() {
            timers::cancel(timer);
        }
        self.points = points;
        if settings.poll_every_ms > 0 && !self.points.is_empty() {
            let period = Duration::from_millis(u64::from(settings.poll_every_ms));
            self.poll_timer = Some(timers::every(POLL, period)?);
        }
        Ok(())
    }

    fn timer(&mut self, tag: &str) {
        if tag != POLL || !transport::is_connected() {
            return;
        }
        // A failed poll is retried on the next tick and the last good values stay. Only
        // a change is logged, so an unplugged device does not write a line every tick.
        let outcome = self.poll().err().map(|error| error.to_string());
        self.note("the poll", outcome);
    }
}

impl BacnetIp {
    fn confirmed(&mut self, service: u8, request: &[u8]) -> Result<Ack, Failure> {
        self.client.confirmed(&mut HostLink, service, request)
    }

    /// Read one property with ReadProperty. A refusal of the device is the inner error.
    fn read_one(
        &mut self,
        object: ObjectId,
        property: PropertyRef,
    ) -> Result<Result<Vec<Element>, Refusal>, Failure> {
        reads::read_one(&mut self.client, &mut HostLink, object, property)
    }

    /// Read several properties, `points_per_request` at a time.
    fn read_several(
        &mut self,
        wanted: &[(ObjectId, PropertyRef)],
    ) -> Result<Vec<ReadResult>, Failure> {
        let had_read_multiple = self.reads.has_read_multiple();
        let results = self.reads.read(&mut self.client, &mut HostLink, wanted);
        if had_read_multiple && !self.reads.has_read_multiple() {
            log::info("the device does not support ReadPropertyMultiple; using ReadProperty");
        }
        results
    }

    /// Read every point, publish each value, and report them.
    fn poll(&mut self) -> Result<PollReport> {
        let points = self.points.clone();
        let reads = points
            .iter()
            .map(|point| {
                Ok((
                    object_id(point.object_type, point.instance)?,
                    point.property_ref(),
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let results = self
            .read_several(&reads)
            .map_err(|failure| failure.into_error("poll"))?;
        let mut report = PollReport::default();
        for (point, result) in points.iter().zip(results) {
            let outcome = match result {
                Ok(elements) => {
                    let value = value::to_json(
                        point.object_type.0,
                        point.property.0,
                        point.array_index,
                        &elements,
                    );
                    publish(&point.name, &value);
                    report.values.insert(point.name.clone(), value);
                    None
                }
                Err(error) => {
                    report.errors.insert(point.name.clone(), error.clone());
                    Some(error)
                }
            };
            self.note(&format!("point `{}`", point.name), outcome);
        }
        Ok(report)
    }

    /// Log a failure of `what` when it starts or changes, and its recovery.
    fn note(&mut self, what: &str, outcome: Option<String>) {
        let previous = match &outcome {
            Some(error) => self.failing.insert(what.to_string(), error.clone()),
            None => self.failing.remove(what),
        };
        match (outcome, previous) {
            (Some(error), previous) if previous.as_ref() != Some(&error) => {
                log::warn(&format!("{what}: {error}"));
            }
            (None, Some(_)) => log::info(&format!("{what} recovered")),
            _ => {}
        }
    }
}

/// The object identifier of `object_type` and `instance`.
fn object_id(object_type: ObjectType, instance: Instance) -> Result<ObjectId> {
    ObjectId::new(object_type.0, instance.0).ok_or_else(|| {
        Error::invalid_arguments(format!(
            "object type {} or instance {} is out of range",
            object_type.0, instance.0
        ))
    })
}

/// `analog-value 1 present-value`, `multi-state-value 1 state-text[2]`.
fn describe(object: ObjectId, property: PropertyRef) -> String {
    let index = property
        .index
        .map(|index| format!("[{index}]"))
        .unwrap_or_default();
    format!(
        "{} {} {}{index}",
        enums::describe(enums::OBJECT_TYPES, u32::from(object.object_type)),
        object.instance,
        enums::describe(enums::PROPERTIES, property.property)
    )
}

/// Publish a status value. A failure is logged, not returned: the device answered, and
/// the caller should hear what it said.
fn publish<T: Serialize + ?Sized>(key: &str, value: &T) {
    if let Err(error) = status::set(key, value) {
        log::warn(&format!("publishing `{key}`: {error}"));
    }
}

#[functions]
impl BacnetIp {
    /// Send Who-Is to the device (for the device instances `low` to `high`, or any) and
    /// return the I-Am answers: device instance, max APDU, segmentation and vendor id.
    /// The first answer's device instance and vendor id are published as status.
    pub fn who_is(&mut self, low: Option<Instance>, high: Option<Instance>) -> Result<Vec<Device>> {
        let range = match (low, high) {
            (None, None) => None,
            (Some(low), Some(high)) if low.0 <= high.0 => Some((low.0, high.0)),
            (Some(low), Some(high)) => {
                return Err(Error::invalid_arguments(format!(
                    "low ({}) is above high ({})",
                    low.0, high.0
                )));
            }
            _ => {
                return Err(Error::invalid_arguments(
                    "give both low and high, or neither",
                ));
            }
        };
        let found = self
            .client
            .who_is(&mut HostLink, range, I_AM_QUIET)
            .map_err(|failure| failure.into_error("who-is"))?;
        let devices: Vec<Device> = found
            .into_iter()
            .map(|(i_am, source)| Device {
                device_instance: i_am.device.instance,
                max_apdu: i_am.max_apdu,
                segmentation: enums::name(enums::SEGMENTATION, i_am.segmentation)
                    .map_or_else(|| Value::from(i_am.segmentation), Value::from),
                vendor_id: i_am.vendor_id,
                network: source.as_ref().map(|remote| remote.network),
                mac: source.map(|remote| {
                    remote
                        .address
                        .iter()
                        .map(|octet| format!("{octet:02x}"))
                        .collect()
                }),
            })
            .collect();
        if let Some(first) = devices.first() {
            publish("device_instance", &first.device_instance);
            publish("vendor_id", &first.vendor_id);
        }
        Ok(devices)
    }

    /// Read one property of one object (ReadProperty): `property` by name such as
    /// `present-value`, `object-name`, `units` or `state-text`, or by number;
    /// `array_index` reads one element of an array (0 is its length). Returns the value
    /// as JSON: reals as numbers, binary states as `active`/`inactive`, enumerations by
    /// name where the driver knows them, bit strings as arrays of booleans, arrays as
    /// arrays.
    pub fn read_property(
        &mut self,
        object_type: ObjectType,
        instance: Instance,
        property: PropertyId,
        array_index: Option<u32>,
    ) -> Result<Value> {
        let object = object_id(object_type, instance)?;
        let property = PropertyRef {
            property: property.0,
            index: array_index,
        };
        let what = format!("read {}", describe(object, property));
        match self.read_one(object, property) {
            Ok(Ok(elements)) => Ok(value::to_json(
                object.object_type,
                property.property,
                property.index,
                &elements,
            )),
            Ok(Err(refusal)) => Err(Failure::Refused(refusal).into_error(&what)),
            Err(failure) => Err(failure.into_error(&what)),
        }
    }

    /// Write one property of one object (WriteProperty). `value` is plain JSON, encoded
    /// as the standard types the property (a number for an analog present value,
    /// `active`/`inactive` for a binary one, `null` to relinquish a priority), or
    /// `{"type": "real", "value": 21.5}` to choose the type. `priority` (1-16) is for
    /// commandable properties; `array_index` writes one element of an array.
    #[level(support)]
    pub fn write_property(
        &mut self,
        object_type: ObjectType,
        instance: Instance,
        property: PropertyId,
        value: Value,
        priority: Option<Priority>,
        array_index: Option<u32>,
    ) -> Result<()> {
        let object = object_id(object_type, instance)?;
        let property = PropertyRef {
            property: property.0,
            index: array_index,
        };
        let what = format!("write {}", describe(object, property));
        let encoded = value::encode(
            object.object_type,
            property.property,
            property.index,
            &value,
        )
        .map_err(|why| Error::invalid_arguments(format!("{what}: {why}")))?;
        let request = services::write_property(
            object,
            property,
            &encoded,
            priority.map(|priority| priority.0),
        );
        match self.confirmed(confirmed::WRITE_PROPERTY, &request) {
            Ok(Ack::Simple) => Ok(()),
            Ok(Ack::Complex(_)) => Err(Failure::Malformed(
                "a ComplexACK where a SimpleACK belongs".into(),
            )
            .into_error(&what)),
            Err(failure) => Err(failure.into_error(&what)),
        }
    }

    /// Read several properties in one request (ReadPropertyMultiple; split into requests
    /// of `points_per_request`, and done with ReadProperty for a device without it).
    /// Each read is `{"object_type", "instance", "property", "array_index"}`, `property`
    /// defaulting to `present-value`. Returns one result per read, in order, with its
    /// `value` or the device's `error` for that property.
    pub fn read_property_multiple(&mut self, reads: Vec<Read>) -> Result<Vec<ReadOutcome>> {
        if reads.is_empty() {
            return Err(Error::invalid_arguments("give at least one read"));
        }
        let wanted = reads
            .iter()
            .map(|read| {
                Ok((
                    object_id(read.object_type, read.instance)?,
                    read.property_ref(),
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let results = self.read_several(&wanted).map_err(|failure| {
            failure.into_error(&format!("read-property-multiple of {} reads", wanted.len()))
        })?;
        Ok(reads
            .into_iter()
            .zip(results)
            .map(|(read, result)| {
                let (value, error) = match result {
                    Ok(elements) => (
                        value::to_json(
                            read.object_type.0,
                            read.property.0,
                            read.array_index,
                            &elements,
                        ),
                        None,
                    ),
                    Err(error) => (Value::Null, Some(error)),
                };
                ReadOutcome {
                    object_type: read.object_type,
                    instance: read.instance,
                    property: read.property,
                    array_index: read.array_index,
                    value,
                    error,
                }
            })
            .collect())
    }

    /// Read every point of the `points` setting now, publish each as status, and return
    /// the values by name with the errors of the points that failed.
    pub fn poll_now(&mut self) -> Result<PollReport> {
        self.poll()
    }
}

export_driver!(BacnetIp);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_settings_agree_with_the_serde_defaults() {
        let declared: BacnetSettings = serde_json::from_str(DEFAULT_SETTINGS).unwrap();
        assert_eq!(declared, BacnetSettings::default());
        let empty: BacnetSettings = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, BacnetSettings::default());
    }

    #[test]
    fn settings_schema_describes_every_setting() {
        const SCHEMA: &[u8] = &warden_driver_sdk::json_bytes!(<BacnetSettings as Schema>::SCHEMA);
        let schema: Value = serde_json::from_slice(SCHEMA).unwrap();
        for key in [
            "apdu_timeout_ms",
            "retries",
            "network",
            "mac",
            "points",
            "poll_every_ms",
            "points_per_request",
        ] {
            assert!(
                schema["properties"][key]["description"].is_string(),
                "{key}: {schema}"
            );
        }
        assert_eq!(schema["required"], json!([]), "every setting has a default");
        let metadata: Value =
            serde_json::from_str(&warden_driver_sdk::metadata_json::<BacnetIp>()).unwrap();
        assert!(metadata.is_object(), "{metadata}");
    }

    #[test]
    fn a_remote_device_needs_network_and_mac() {
        assert_eq!(remote(None, None).unwrap(), None);
        assert_eq!(
            remote(Some(5), Some("17")).unwrap(),
            Some(Remote {
                network: 5,
                address: vec![0x17]
            })
        );
        assert_eq!(
            remote(Some(5), Some("c0a8000abac0"))
                .unwrap()
                .unwrap()
                .address,
            [0xC0, 0xA8, 0x00, 0x0A, 0xBA, 0xC0]
        );
        for (network, mac) in [
            (Some(5), None),
            (None, Some("17")),
            (Some(0), Some("17")),
            (Some(65535), Some("17")),
            (Some(5), Some("")),
            (Some(5), Some("1")),
            (Some(5), Some("zz")),
            (Some(5), Some("0102030405060708")),
        ] {
            assert!(
                matches!(remote(network, mac), Err(Error::InvalidArguments(_))),
                "{network:?} {mac:?}"
            );
        }
    }

    #[test]
    fn requests_are_described_by_name() {
        let msv = ObjectId::new(19, 1).unwrap();
        assert_eq!(
            describe(
                msv,
                PropertyRef {
                    property: 110,
                    index: Some(2)
                }
            ),
            "multi-state-value 1 state-text[2]"
        );
        assert_eq!(
            describe(
                ObjectId::new(700, 3).unwrap(),
                PropertyRef {
                    property: 9000,
                    index: None
                }
            ),
            "700 3 9000"
        );
    }
}
