//! One Modbus TCP exchange: frame a request, send it, and accept only the reply that
//! answers it.
//!
//! The host owns the connection, so the client reaches it through [`Link`]; the driver
//! passes the host transport and the unit tests a scripted device. Nothing here calls
//! the host.

use std::time::Duration;

use warden_driver_sdk::{Error, Result};

use crate::mbap;
use crate::pdu::{ProtocolError, Reply, Request};

/// How many replies to earlier transactions are skipped before giving up. A reply that
/// comes after its request timed out arrives in front of the next request's reply.
const MAX_STALE_REPLIES: usize = 8;

/// The connection to the device, one whole MBAP frame per message.
pub trait Link {
    /// Send `frame` and wait up to `timeout` for the next frame that arrives after it.
    fn request(&mut self, frame: &[u8], timeout: Duration) -> Result<Vec<u8>>;
    /// Wait up to `timeout` for the next frame, sending nothing.
    fn receive(&mut self, timeout: Duration) -> Result<Vec<u8>>;
}

/// Requests to one unit, with their transaction ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    unit_id: u8,
    timeout: Duration,
    last_transaction: u16,
}

impl Default for Client {
    fn default() -> Self {
        Client::new(1, Duration::from_secs(2))
    }
}

impl From<ProtocolError> for Error {
    fn from(error: ProtocolError) -> Self {
        match error {
            ProtocolError::InvalidRequest(_) => Error::invalid_arguments(error.to_string()),
            ProtocolError::Exception { .. } | ProtocolError::MalformedReply(_) => {
                Error::device(error.to_string())
            }
        }
    }
}

impl Client {
    /// A client for unit `unit_id` that waits `timeout` for each reply.
    pub fn new(unit_id: u8, timeout: Duration) -> Client {
        Client {
            unit_id,
            timeout,
            last_transaction: 0,
        }
    }

    /// Keep the transaction counter, change where and how long requests go.
    pub fn reconfigure(&mut self, unit_id: u8, timeout: Duration) {
        self.unit_id = unit_id;
        self.timeout = timeout;
    }

    /// Send `request` and return what its reply carried.
    pub fn call(&mut self, link: &mut impl Link, request: &Request) -> Result<Reply> {
        self.last_transaction = self.last_transaction.wrapping_add(1);
        let transaction = self.last_transaction;
        let frame = mbap::encode(transaction, self.unit_id, &request.encode());
        let mut received = link
            .request(&frame, self.timeout)
            .map_err(|error| error.context(request.describe()))?;
        let mut skipped = 0;
        loop {
            let reply = mbap::decode(&received)
                .map_err(|error| Error::device(format!("{}: {error}", request.describe())))?;
            if reply.transaction == transaction {
                if reply.unit != self.unit_id {
                    return Err(Error::device(format!(
                        "{}: reply from unit {}, expected unit {}",
                        request.describe(),
                        reply.unit,
                        self.unit_id
                    )));
                }
                return Ok(request.parse_reply(reply.pdu)?);
            }
            if skipped == MAX_STALE_REPLIES {
                return Err(Error::device(format!(
                    "{}: {MAX_STALE_REPLIES} replies in a row answered other transactions",
                    request.describe()
                )));
            }
            skipped += 1;
            received = link
                .receive(self.timeout)
                .map_err(|error| error.context(request.describe()))?;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::pdu::Table;

    /// A device that answers with prepared frames and records what it was sent.
    #[derive(Default)]
    struct Scripted {
        sent: Vec<Vec<u8>>,
        replies: VecDeque<Result<Vec<u8>>>,
        receives: usize,
    }

    impl Scripted {
        fn answering(replies: Vec<Result<Vec<u8>>>) -> Scripted {
            Scripted {
                replies: replies.into(),
                ..Scripted::default()
            }
        }

        fn next(&mut self) -> Result<Vec<u8>> {
            self.replies
                .pop_front()
                .unwrap_or_else(|| Err(Error::Timeout("no reply".into())))
        }
    }

    impl Link for Scripted {
        fn request(&mut self, frame: &[u8], _timeout: Duration) -> Result<Vec<u8>> {
            self.sent.push(frame.to_vec());
            self.next()
        }

        fn receive(&mut self, _timeout: Duration) -> Result<Vec<u8>> {
            self.receives += 1;
            self.next()
        }
    }

    fn read_two() -> Request {
        Request::read(Table::HoldingRegisters, 0, 2).unwrap()
    }

    #[test]
    fn a_request_is_framed_and_its_reply_read() {
        let mut client = Client::new(9, Duration::from_millis(100));
        let mut link = Scripted::answering(vec![Ok(mbap::encode(
            1,
            9,
            &[0x03, 0x04, 0x00, 0xD7, 0x01, 0xC2],
        ))]);
        let reply = client.call(&mut link, &read_two()).unwrap();
        assert_eq!(reply, Reply::Registers(vec![215, 450]));
        assert_eq!(link.sent, [vec![0, 1, 0, 0, 0, 6, 9, 0x03, 0, 0, 0, 2]]);
    }

    #[test]
    fn transaction_ids_count_up_and_wrap() {
        let mut client = Client::new(1, Duration::from_millis(100));
        client.last_transaction = u16::MAX - 1;
        let answer = |transaction| Ok(mbap::encode(transaction, 1, &[0x03, 0x04, 0, 1, 0, 2]));
        let mut link = Scripted::answering(vec![answer(u16::MAX), answer(0), answer(1)]);
        for _ in 0..3 {
            client.call(&mut link, &read_two()).unwrap();
        }
        let ids: Vec<[u8; 2]> = link.sent.iter().map(|frame| [frame[0], frame[1]]).collect();
        assert_eq!(ids, [[0xFF, 0xFF], [0, 0], [0, 1]]);
    }

    #[test]
    fn late_replies_to_earlier_transactions_are_skipped() {
        let mut client = Client::new(1, Duration::from_millis(100));
        client.last_transaction = 4;
        let mut link = Scripted::answering(vec![
            Ok(mbap::encode(3, 1, &[0x03, 0x04, 9, 9, 9, 9])),
            Ok(mbap::encode(4, 1, &[0x03, 0x04, 8, 8, 8, 8])),
            Ok(mbap::encode(5, 1, &[0x03, 0x04, 0, 1, 0, 2])),
        ]);
        let reply = client.call(&mut link, &read_two()).unwrap();
        assert_eq!(reply, Reply::Registers(vec![1, 2]));
        assert_eq!(link.receives, 2);

        let stale = (0..=MAX_STALE_REPLIES)
            .map(|_| Ok(mbap::encode(1, 1, &[0x03, 0x04, 0, 1, 0, 2])))
            .collect();
        let mut link = Scripted::answering(stale);
        let error = client.call(&mut link, &read_two()).unwrap_err();
        assert!(matches!(error, Error::Device(m) if m.contains("other transactions")));
    }

    #[test]
    fn failures_name_the_request_and_keep_their_kind() {
        let mut client = Client::new(1, Duration::from_millis(100));
        let mut link = Scripted::default();
        let error = client.call(&mut link, &read_two()).unwrap_err();
        assert_eq!(
            error,
            Error::Timeout("read holding registers at 0, count 2: no reply".into())
        );

        let mut link = Scripted::answering(vec![Ok(mbap::encode(2, 1, &[0x83, 0x02]))]);
        let error = client.call(&mut link, &read_two()).unwrap_err();
        assert_eq!(
            error,
            Error::Device(
                "read holding registers at 0, count 2: the device answered exception 2 (illegal data address)"
                    .into()
            )
        );

        let mut link = Scripted::answering(vec![Ok(mbap::encode(3, 2, &[0x03, 0x04, 0, 1, 0, 2]))]);
        let error = client.call(&mut link, &read_two()).unwrap_err();
        assert!(matches!(error, Error::Device(m) if m.contains("unit 2, expected unit 1")));

        let mut link = Scripted::answering(vec![Ok(vec![0, 4, 0, 0])]);
        let error = client.call(&mut link, &read_two()).unwrap_err();
        assert!(matches!(error, Error::Device(m) if m.contains("bad MBAP frame")));
    }
}
