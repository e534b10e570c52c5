//! Register ranges that the driver reads on a timer and publishes as status.
//!
//! The settings are checked as a whole when they arrive, so that a bad entry is refused
//! by `init` (and the previous polls keep running) instead of failing on every tick.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Deserialize;
use warden_driver_sdk::{Error, Result, Schema};

use crate::pdu::{Request, Table};

/// Polling faster than this loads the device and the host for no gain in a building.
pub const MIN_PERIOD_MS: u32 = 100;

/// Which data table a poll reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Schema)]
#[serde(rename_all = "snake_case")]
pub enum PollKind {
    /// Coils (function 1).
    Coil,
    /// Discrete inputs (function 2).
    DiscreteInput,
    /// Holding registers (function 3).
    Holding,
    /// Input registers (function 4).
    Input,
}

impl PollKind {
    /// The table this kind reads.
    pub fn table(self) -> Table {
        match self {
            PollKind::Coil => Table::Coils,
            PollKind::DiscreteInput => Table::DiscreteInputs,
            PollKind::Holding => Table::HoldingRegisters,
            PollKind::Input => Table::InputRegisters,
        }
    }
}

/// A range read every `every_ms` milliseconds and published under `name`: one value when
/// `count` is 1, an array otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Schema)]
pub struct PollRange {
    /// The status key the values are published under.
    pub name: String,
    /// The data table to read: `coil`, `discrete_input`, `holding` or `input`.
    pub kind: PollKind,
    /// The first address, 0-based as on the wire.
    pub address: u16,
    /// How many coils (up to 2000) or registers (up to 125) to read.
    #[serde(default = "one")]
    pub count: u16,
    /// The period in milliseconds, at least 100.
    pub every_ms: u32,
}

fn one() -> u16 {
    1
}

impl PollRange {
    /// The request one poll sends.
    pub fn request(&self) -> Result<Request> {
        Ok(Request::read(self.kind.table(), self.address, self.count)?)
    }

    /// The tag of this range's timer.
    pub fn timer_tag(&self) -> String {
        format!("poll:{}", self.name)
    }

    /// How often the range is read.
    pub fn period(&self) -> Duration {
        Duration::from_millis(u64::from(self.every_ms))
    }
}

/// `ranges` if every one of them can be polled, or why not.
pub fn checked(ranges: Vec<PollRange>) -> Result<Vec<PollRange>> {
    let mut names = BTreeSet::new();
    for range in &ranges {
        let refuse =
            |why: String| Error::invalid_arguments(format!("poll `{}`: {why}", range.name));
        if range.name.is_empty() {
            return Err(Error::invalid_arguments("poll: every range needs a name"));
        }
        if !names.insert(range.name.as_str()) {
            return Err(refuse("the name is used twice".to_string()));
        }
        if range.every_ms < MIN_PERIOD_MS {
            return Err(refuse(format!(
                "every_ms is {}, at least {MIN_PERIOD_MS}",
                range.every_ms
            )));
        }
        range
            .request()
            .map_err(|error| refuse(error.message().to_string()))?;
    }
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use warden_driver_sdk::prelude::{Value, json};

    use super::*;

    fn range(value: Value) -> PollRange {
        PollRange::deserialize(value).unwrap()
    }

    #[test]
    fn ranges_parse_with_a_default_count() {
        let parsed = range(
            json!({"name": "temperature", "kind": "holding", "address": 0, "every_ms": 1000}),
        );
        assert_eq!(
            parsed,
            PollRange {
                name: "temperature".into(),
                kind: PollKind::Holding,
                address: 0,
                count: 1,
                every_ms: 1000,
            }
        );
        assert_eq!(parsed.timer_tag(), "poll:temperature");
        assert_eq!(parsed.period(), Duration::from_secs(1));
        let kinds = ["coil", "discrete_input", "holding", "input"].map(|kind| {
            range(json!({"name": "x", "kind": kind, "address": 0, "every_ms": 100}))
                .kind
                .table()
        });
        assert_eq!(
            kinds,
            [
                Table::Coils,
                Table::DiscreteInputs,
                Table::HoldingRegisters,
                Table::InputRegisters
            ]
        );
    }

    #[test]
    fn unusable_ranges_are_refused_by_name() {
        let good =
            range(json!({"name": "a", "kind": "coil", "address": 0, "count": 16, "every_ms": 100}));
        assert_eq!(checked(vec![good.clone()]).unwrap(), vec![good.clone()]);

        let message = |ranges: Vec<PollRange>| match checked(ranges) {
            Err(Error::InvalidArguments(message)) => message,
            other => panic!("expected invalid arguments, got {other:?}"),
        };
        assert_eq!(
            message(vec![good.clone(), good.clone()]),
            "poll `a`: the name is used twice"
        );
        let fast = PollRange {
            every_ms: 99,
            ..good.clone()
        };
        assert_eq!(
            message(vec![fast]),
            "poll `a`: every_ms is 99, at least 100"
        );
        let big = PollRange {
            kind: PollKind::Input,
            count: 126,
            ..good.clone()
        };
        assert_eq!(
            message(vec![big]),
            "poll `a`: read input registers: count must be between 1 and 125, got 126"
        );
        let unnamed = PollRange {
            name: String::new(),
            ..good
        };
        assert!(message(vec![unnamed]).contains("needs a name"));
    }
}
