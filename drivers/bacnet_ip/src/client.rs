//! BACnet transactions: confirmed requests with invoke ids, the APDU timeout and
//! retries, and Who-Is with the I-Am answers it collects.
//!
//! The host owns the UDP socket, so the client reaches it through [`Link`]; the driver
//! passes the host transport and the unit tests a scripted device. Nothing here calls
//! the host.

use std::fmt;
use std::time::{Duration, Instant};

use warden_driver_sdk::Error;

use crate::apdu::{self, Apdu, MAX_APDU, Message, Remote};
use crate::enums;
use crate::services::{self, IAm, unconfirmed};

/// The datagrams to and from the device.
pub trait Link {
    /// Send `datagram` and wait up to `timeout` for the next datagram after it.
    fn request(&mut self, datagram: &[u8], timeout: Duration) -> Result<Vec<u8>, Error>;
    /// Wait up to `timeout` for the next datagram, sending nothing.
    fn receive(&mut self, timeout: Duration) -> Result<Vec<u8>, Error>;
    /// Send `datagram` and wait for nothing.
    fn send(&mut self, datagram: &[u8]) -> Result<(), Error>;
}

/// How requests are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// How long to wait for the answer to each attempt (the APDU timeout).
    pub timeout: Duration,
    /// How many times a request is sent again when no answer came.
    pub retries: u8,
    /// The device behind the router at the endpoint, if it is not the endpoint itself.
    pub remote: Option<Remote>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            timeout: Duration::from_secs(2),
            retries: 2,
            remote: None,
        }
    }
}

/// The answer of a confirmed request that succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ack {
    /// A SimpleACK.
    Simple,
    /// A ComplexACK's service ACK.
    Complex(Vec<u8>),
}

/// How the device refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// An Error PDU: error class and error code.
    Error {
        /// The error class.
        class: u32,
        /// The error code.
        code: u32,
    },
    /// A Reject PDU with its reason.
    Reject(u8),
    /// An Abort PDU from the device with its reason.
    Abort(u8),
}

/// The reject reason of a device that does not have the service.
pub const UNRECOGNIZED_SERVICE: u8 = 9;

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Error { class, code } => write!(
                f,
                "{}: {}",
                enums::describe(enums::ERROR_CLASSES, *class),
                enums::describe(enums::ERROR_CODES, *code)
            ),
            Refusal::Reject(reason) => write!(
                f,
                "rejected: {}",
                enums::describe(enums::REJECT_REASONS, u32::from(*reason))
            ),
            Refusal::Abort(reason) => write!(
                f,
                "aborted: {}",
                enums::describe(enums::ABORT_REASONS, u32::from(*reason))
            ),
        }
    }
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// The device answered with an Error, a Reject or an Abort.
    Refused(Refusal),
    /// No answer to any attempt.
    NoAnswer {
        /// How many times the request was sent.
        attempts: u32,
        /// How long each attempt waited.
        timeout: Duration,
    },
    /// The host could not send or receive.
    Host(Error),
    /// The answer is not a valid answer to the request.
    Malformed(String),
    /// The device sent a segmented reply, which this driver does not accept.
    Segmented,
    /// The request is larger than one APDU (nothing was sent).
    TooLong(usize),
    /// The router at the endpoint could not deliver the request (its reason code).
    NotRouted(u8),
}

/// The reasons of Reject-Message-To-Network (clause 6.4.4).
fn not_routed_reason(reason: u8) -> &'static str {
    match reason {
        1 => "the router knows no route to the network",
        2 => "the router is busy",
        3 => "unknown network layer message type",
        4 => "the message is too long for the network",
        5 => "security error",
        6 => "addressing error",
        _ => "other error",
    }
}

impl Failure {
    /// The error a function returns, with `what` (the request) in front.
    pub fn into_error(self, what: &str) -> Error {
        match self {
            Failure::Refused(refusal) => Error::device(format!("{what}: {refusal}")),
            Failure::NoAnswer { attempts, timeout } => Error::Timeout(format!(
                "{what}: no answer from the device after {attempts} attempt{} of {} ms",
                if attempts == 1 { "" } else { "s" },
                timeout.as_millis()
            )),
            Failure::Host(error) => error.context(what),
            Failure::Malformed(why) => Error::device(format!("{what}: malformed answer: {why}")),
            Failure::Segmented => Error::device(format!(
                "{what}: the device sent a segmented answer, which this driver does not \
                 support; ask for less at a time"
            )),
            Failure::TooLong(length) => Error::invalid_arguments(format!(
                "{what}: the request is {length} octets, more than the {MAX_APDU} of one \
                 APDU (segmentation is not supported); ask for less at a time"
            )),
            Failure::NotRouted(reason) => Error::device(format!(
                "{what}: the router could not deliver the request: {} (reason {reason})",
                not_routed_reason(reason)
            )),
        }
    }
}

/// Requests to one device, with their invoke ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Client {
    config: Config,
    last_invoke_id: u8,
}

impl Client {
    /// A client that sends as `config` says.
    #[cfg(test)]
    pub fn new(config: Config) -> Client {
        Client {
            config,
            last_invoke_id: 0,
        }
    }

    /// Change how requests are sent; the invoke ids go on counting.
    pub fn reconfigure(&mut self, config: Config) {
        self.config = config;
    }

    fn attempts(&self) -> u32 {
        u32::from(self.config.retries) + 1
    }

    fn no_answer(&self) -> Failure {
        Failure::NoAnswer {
            attempts: self.attempts(),
            timeout: self.config.timeout,
        }
    }

    /// Send a confirmed request for `service` and wait for its answer, sending it again
    /// (with the same invoke id) after each timeout, as many times as configured.
    pub fn confirmed(
        &mut self,
        link: &mut impl Link,
        service: u8,
        request: &[u8],
    ) -> Result<Ack, Failure> {
        self.last_invoke_id = self.last_invoke_id.wrapping_add(1);
        let invoke_id = self.last_invoke_id;
        let apdu = apdu::confirmed_request(invoke_id, service, request);
        if apdu.len() > MAX_APDU {
            return Err(Failure::TooLong(apdu.len()));
        }
        let datagram = apdu::datagram(self.config.remote.as_ref(), true, &apdu);
        for _ in 0..self.attempts() {
            if let Some(ack) = self.attempt(link, &datagram, invoke_id, service)? {
                return Ok(ack);
            }
        }
        Err(self.no_answer())
    }

    /// One attempt: the answer, or `None` when none came in time.
    fn attempt(
        &self,
        link: &mut impl Link,
        datagram: &[u8],
        invoke_id: u8,
        service: u8,
    ) -> Result<Option<Ack>, Failure> {
        let deadline = Instant::now() + self.config.timeout;
        let mut received = match link.request(datagram, self.config.timeout) {
            Ok(received) => received,
            Err(Error::Timeout(_)) => return Ok(None),
            Err(error) => return Err(Failure::Host(error)),
        };
        loop {
            if let Some(outcome) = self.answer(link, &received, invoke_id, service) {
                return outcome.map(Some);
            }
            // Something else: a late answer to an earlier request, an unconfirmed
            // request, or noise. Wait on for this request's answer.
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            received = match link.receive(left) {
                Ok(received) => received,
                Err(Error::Timeout(_)) => return Ok(None),
                Err(error) => return Err(Failure::Host(error)),
            };
        }
    }

    /// The outcome if `datagram` answers the transaction `invoke_id`, else `None`.
    fn answer(
        &self,
        link: &mut impl Link,
        datagram: &[u8],
        invoke_id: u8,
        service: u8,
    ) -> Option<Result<Ack, Failure>> {
        let received = apdu::parse(datagram).ok()?;
        if let Message::NetworkLayer {
            message_type: apdu::REJECT_MESSAGE_TO_NETWORK,
            data,
        } = &received.message
        {
            return self
                .config
                .remote
                .is_some()
                .then(|| Err(Failure::NotRouted(data.first().copied().unwrap_or(0))));
        }
        if received.source != self.config.remote {
            return None;
        }
        let Message::Apdu(apdu) = received.message else {
            return None;
        };
        let wrong_service = |answered: u8| {
            Err(Failure::Malformed(format!(
                "the answer is for service {answered}, the request was service {service}"
            )))
        };
        Some(match apdu {
            Apdu::SimpleAck {
                invoke_id: id,
                service: answered,
            } if id == invoke_id => {
                if answered == service {
                    Ok(Ack::Simple)
                } else {
                    wrong_service(answered)
                }
            }
            Apdu::ComplexAck {
                invoke_id: id,
                service: answered,
                segmented,
                data,
            } if id == invoke_id => {
                if segmented {
                    // Tell the device to stop sending segments; the request fails anyway,
                    // so a failure to send this is not worth reporting.
                    let abort = apdu::abort(invoke_id, SEGMENTATION_NOT_SUPPORTED);
                    let _ = link.send(&apdu::datagram(self.config.remote.as_ref(), false, &abort));
                    Err(Failure::Segmented)
                } else if answered == service {
                    Ok(Ack::Complex(data))
                } else {
                    wrong_service(answered)
                }
            }
            Apdu::Error {
                invoke_id: id,
                class,
                code,
                ..
            } if id == invoke_id => Err(Failure::Refused(Refusal::Error { class, code })),
            Apdu::Reject {
                invoke_id: id,
                reason,
            } if id == invoke_id => Err(Failure::Refused(Refusal::Reject(reason))),
            Apdu::Abort {
                invoke_id: id,
                from_server: true,
                reason,
            } if id == invoke_id => Err(Failure::Refused(Refusal::Abort(reason))),
            _ => return None,
        })
    }

    /// Send Who-Is (for the device instances `range`, or every one) and return the I-Am
    /// answers with where they came from: the first within the APDU timeout, then any
    /// more until none has come for `quiet`. Without any answer the Who-Is is sent
    /// again, as many times as configured.
    pub fn who_is(
        &mut self,
        link: &mut impl Link,
        range: Option<(u32, u32)>,
        quiet: Duration,
    ) -> Result<Vec<(IAm, Option<Remote>)>, Failure> {
        let apdu = apdu::unconfirmed_request(unconfirmed::WHO_IS, &services::who_is(range));
        let datagram = apdu::datagram(self.config.remote.as_ref(), false, &apdu);
        for _ in 0..self.attempts() {
            let deadline = Instant::now() + self.config.timeout;
            let mut found: Vec<(IAm, Option<Remote>)> = Vec::new();
            let mut received = match link.request(&datagram, self.config.timeout) {
                Ok(received) => Some(received),
                Err(Error::Timeout(_)) => None,
                Err(error) => return Err(Failure::Host(error)),
            };
            while let Some(datagram) = received.take() {
                if let Some(answer) = i_am(&datagram, range)
                    && !found.contains(&answer)
                {
                    found.push(answer);
                }
                let wait = if found.is_empty() {
                    deadline.saturating_duration_since(Instant::now())
                } else {
                    quiet
                };
                if wait.is_zero() {
                    break;
                }
                received = match link.receive(wait) {
                    Ok(datagram) => Some(datagram),
                    Err(Error::Timeout(_)) => None,
                    Err(error) => return Err(Failure::Host(error)),
                };
            }
            if !found.is_empty() {
                return Ok(found);
            }
        }
        Err(self.no_answer())
    }
}

/// The abort reason telling a device that this client takes no segmented answer.
const SEGMENTATION_NOT_SUPPORTED: u8 = 4;

/// The I-Am in `datagram`, if it is one and its device is in `range`.
fn i_am(datagram: &[u8], range: Option<(u32, u32)>) -> Option<(IAm, Option<Remote>)> {
    let received = apdu::parse(datagram).ok()?;
    let Message::Apdu(Apdu::Unconfirmed {
        service: unconfirmed::I_AM,
        data,
    }) = received.message
    else {
        return None;
    };
    let i_am = services::parse_i_am(&data).ok()?;
    let instance = i_am.device.instance;
    range
        .is_none_or(|(low, high)| (low..=high).contains(&instance))
        .then_some((i_am, received.source))
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::services::confirmed;
    use crate::tag::ObjectId;

    /// A device that answers with prepared datagrams and records what it was sent.
    #[derive(Default)]
    struct Scripted {
        sent: Vec<Vec<u8>>,
        replies: VecDeque<Result<Vec<u8>, Error>>,
        receives: usize,
    }

    impl Scripted {
        fn answering(replies: Vec<Result<Vec<u8>, Error>>) -> Scripted {
            Scripted {
                replies: replies.into(),
                ..Scripted::default()
            }
        }

        fn next(&mut self) -> Result<Vec<u8>, Error> {
            self.replies
                .pop_front()
                .unwrap_or_else(|| Err(Error::Timeout("no reply".into())))
        }
    }

    impl Link for Scripted {
        fn request(&mut self, datagram: &[u8], _timeout: Duration) -> Result<Vec<u8>, Error> {
            self.sent.push(datagram.to_vec());
            self.next()
        }

        fn receive(&mut self, _timeout: Duration) -> Result<Vec<u8>, Error> {
            self.receives += 1;
            self.next()
        }

        fn send(&mut self, datagram: &[u8]) -> Result<(), Error> {
            self.sent.push(datagram.to_vec());
            Ok(())
        }
    }

    /// A datagram carrying `apdu` from the endpoint itself.
    fn from_device(apdu: &[u8]) -> Result<Vec<u8>, Error> {
        let mut datagram = vec![0x81, 0x0A, 0x00, 0x00, 0x01, 0x00];
        datagram.extend_from_slice(apdu);
        let length = u16::try_from(datagram.len()).unwrap().to_be_bytes();
        datagram.splice(2..4, length);
        Ok(datagram)
    }

    fn client(retries: u8) -> Client {
        Client::new(Config {
            timeout: Duration::from_millis(50),
            retries,
            remote: None,
        })
    }

    const READ: u8 = confirmed::READ_PROPERTY;

    #[test]
    fn a_request_carries_an_invoke_id_and_gets_its_answer() {
        let mut client = client(0);
        let mut link = Scripted::answering(vec![from_device(&[0x30, 0x01, READ, 0xAB])]);
        assert_eq!(
            client.confirmed(&mut link, READ, &[0x0C]).unwrap(),
            Ack::Complex(vec![0xAB])
        );
        assert_eq!(
            link.sent,
            [vec![
                0x81, 0x0A, 0x00, 0x0B, 0x01, 0x04, 0x00, 0x05, 0x01, READ, 0x0C
            ]]
        );
        let mut link = Scripted::answering(vec![from_device(&[0x20, 0x02, 15])]);
        assert_eq!(client.confirmed(&mut link, 15, &[]).unwrap(), Ack::Simple);
    }

    #[test]
    fn invoke_ids_count_up_and_wrap() {
        let mut client = client(0);
        client.last_invoke_id = 254;
        for expected in [255_u8, 0, 1] {
            let mut link = Scripted::answering(vec![from_device(&[0x20, expected, 15])]);
            client.confirmed(&mut link, 15, &[]).unwrap();
            assert_eq!(link.sent[0][8], expected);
        }
    }

    #[test]
    fn answers_to_other_transactions_and_noise_are_skipped() {
        let mut client = client(0);
        client.last_invoke_id = 9;
        let mut link = Scripted::answering(vec![
            from_device(&[0x30, 0x09, READ, 0x01]), // late answer to the previous request
            Ok(b"not bacnet".to_vec()),
            from_device(&[0x10, 0x00, 0xC4]), // an unconfirmed request
            from_device(&[0x30, 0x0A, READ, 0x02]),
        ]);
        assert_eq!(
            client.confirmed(&mut link, READ, &[]).unwrap(),
            Ack::Complex(vec![0x02])
        );
        assert_eq!(link.receives, 3);
    }

    #[test]
    fn a_request_without_answer_is_sent_again_then_times_out() {
        let mut client = client(2);
        let mut link = Scripted::default();
        let failure = client.confirmed(&mut link, READ, &[0x0C]).unwrap_err();
        assert_eq!(
            failure,
            Failure::NoAnswer {
                attempts: 3,
                timeout: Duration::from_millis(50)
            }
        );
        assert_eq!(link.sent.len(), 3);
        assert!(
            link.sent.iter().all(|sent| sent == &link.sent[0]),
            "same invoke id"
        );
        assert_eq!(
            failure.into_error("read x"),
            Error::Timeout("read x: no answer from the device after 3 attempts of 50 ms".into())
        );

        // The answer to the second attempt is taken.
        let mut link = Scripted::answering(vec![
            Err(Error::Timeout("no reply".into())),
            from_device(&[0x20, 0x02, 15]),
        ]);
        assert_eq!(client.confirmed(&mut link, 15, &[]).unwrap(), Ack::Simple);
        assert_eq!(link.sent.len(), 2);
    }

    #[test]
    fn errors_rejects_and_aborts_are_refusals() {
        let mut client = client(0);
        let refusal = |apdu: &[u8]| {
            let mut client = client.clone();
            let mut link = Scripted::answering(vec![from_device(apdu)]);
            client.confirmed(&mut link, 15, &[]).unwrap_err()
        };
        let failure = refusal(&[0x50, 0x01, 15, 0x91, 0x02, 0x91, 0x28]);
        assert_eq!(
            failure,
            Failure::Refused(Refusal::Error { class: 2, code: 40 })
        );
        assert_eq!(
            failure.into_error("write analog-input 1 present-value"),
            Error::Device(
                "write analog-input 1 present-value: property: write-access-denied".into()
            )
        );
        assert_eq!(
            refusal(&[0x60, 0x01, 0x09]).into_error("x"),
            Error::Device("x: rejected: unrecognized-service".into())
        );
        assert_eq!(
            refusal(&[0x71, 0x01, 0x04]).into_error("x"),
            Error::Device("x: aborted: segmentation-not-supported".into())
        );
        assert_eq!(
            refusal(&[0x50, 0x01, 15, 0x91, 0x40, 0x92, 0x01, 0x00]).into_error("x"),
            Error::Device("x: 64: 256".into())
        );
        // An abort this client would have sent (SRV clear) is not the device's answer.
        let mut link = Scripted::answering(vec![from_device(&[0x70, 0x01, 0x04])]);
        assert!(matches!(
            client.confirmed(&mut link, 15, &[]),
            Err(Failure::NoAnswer { .. })
        ));
    }

    #[test]
    fn segmented_answers_are_aborted() {
        let mut client = client(0);
        let mut link =
            Scripted::answering(vec![from_device(&[0x3C, 0x01, 0x00, 0x04, READ, 0xAB])]);
        assert_eq!(
            client.confirmed(&mut link, READ, &[]).unwrap_err(),
            Failure::Segmented
        );
        assert_eq!(
            link.sent.last().unwrap(),
            &vec![0x81, 0x0A, 0x00, 0x09, 0x01, 0x00, 0x70, 0x01, 0x04]
        );
    }

    #[test]
    fn host_failures_and_oversized_requests() {
        let mut client = client(3);
        let mut link = Scripted::answering(vec![Err(Error::NotConnected("no socket".into()))]);
        let failure = client.confirmed(&mut link, READ, &[]).unwrap_err();
        assert_eq!(
            failure,
            Failure::Host(Error::NotConnected("no socket".into()))
        );
        assert_eq!(link.sent.len(), 1, "only a timeout is retried");
        assert_eq!(
            failure.into_error("read x"),
            Error::NotConnected("read x: no socket".into())
        );

        let mut link = Scripted::default();
        let failure = client.confirmed(&mut link, 15, &[0; MAX_APDU]).unwrap_err();
        assert_eq!(failure, Failure::TooLong(MAX_APDU + 4));
        assert!(link.sent.is_empty());
        assert!(matches!(
            failure.into_error("x"),
            Error::InvalidArguments(_)
        ));

        let mut link = Scripted::answering(vec![from_device(&[0x20, 0x01, 12])]);
        client.last_invoke_id = 0;
        assert!(matches!(
            client.confirmed(&mut link, 15, &[]),
            Err(Failure::Malformed(_))
        ));
    }

    #[test]
    fn a_remote_device_answers_through_its_router() {
        let remote = Remote {
            network: 5,
            address: vec![0x17],
        };
        let mut client = Client::new(Config {
            timeout: Duration::from_millis(50),
            retries: 0,
            remote: Some(remote.clone()),
        });
        // The endpoint's own answer does not count; the remote device's does.
        let own = from_device(&[0x20, 0x01, 15]);
        let routed = Ok(vec![
            0x81, 0x0A, 0x00, 0x0D, 0x01, 0x08, 0x00, 0x05, 0x01, 0x17, 0x20, 0x01, 15,
        ]);
        let mut link = Scripted::answering(vec![own, routed]);
        assert_eq!(client.confirmed(&mut link, 15, &[]).unwrap(), Ack::Simple);
        assert_eq!(
            link.sent[0].get(4..11).unwrap(),
            [0x01, 0x24, 0x00, 0x05, 0x01, 0x17, 0xFF]
        );

        let rejected = Ok(vec![
            0x81, 0x0A, 0x00, 0x0A, 0x01, 0x80, 0x03, 0x01, 0x00, 0x05,
        ]);
        let mut link = Scripted::answering(vec![rejected]);
        let failure = client.confirmed(&mut link, 15, &[]).unwrap_err();
        assert_eq!(failure, Failure::NotRouted(1));
        assert!(failure.into_error("x").message().contains("no route"));
    }

    fn i_am_from(instance: u32) -> Result<Vec<u8>, Error> {
        let id = ObjectId::new(8, instance).unwrap().to_bits().to_be_bytes();
        from_device(&[
            0x10, 0x00, 0xC4, id[0], id[1], id[2], id[3], 0x22, 0x05, 0xC4, 0x91, 0x03, 0x21, 0x07,
        ])
    }

    #[test]
    fn who_is_collects_i_am_answers() {
        let mut client = client(1);
        let mut link = Scripted::answering(vec![
            from_device(&[0x20, 0x01, 15]),
            i_am_from(599),
            i_am_from(599),
            i_am_from(600),
        ]);
        let found = client
            .who_is(&mut link, None, Duration::from_millis(10))
            .unwrap();
        assert_eq!(
            found,
            [
                (
                    IAm {
                        device: ObjectId::new(8, 599).unwrap(),
                        max_apdu: 1476,
                        segmentation: 3,
                        vendor_id: 7
                    },
                    None
                ),
                (
                    IAm {
                        device: ObjectId::new(8, 600).unwrap(),
                        max_apdu: 1476,
                        segmentation: 3,
                        vendor_id: 7
                    },
                    None
                )
            ]
        );
        assert_eq!(
            link.sent,
            [vec![0x81, 0x0A, 0x00, 0x08, 0x01, 0x00, 0x10, 0x08]]
        );

        // Devices outside the range are not counted; the Who-Is is sent again.
        let mut link = Scripted::answering(vec![
            i_am_from(5),
            Err(Error::Timeout("no reply".into())),
            i_am_from(10),
        ]);
        let found = client
            .who_is(&mut link, Some((10, 20)), Duration::from_millis(10))
            .unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(link.sent.len(), 2);
        assert_eq!(
            link.sent[0],
            [
                0x81, 0x0A, 0x00, 0x0C, 0x01, 0x00, 0x10, 0x08, 0x09, 0x0A, 0x19, 0x14
            ]
        );

        let mut link = Scripted::default();
        assert!(matches!(
            client.who_is(&mut link, None, Duration::from_millis(10)),
            Err(Failure::NoAnswer { attempts: 2, .. })
        ));
    }
}
