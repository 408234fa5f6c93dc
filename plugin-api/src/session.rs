//! The order in which a host calls a consumer: written once, here, and used by the buslink
//! host (its reader, `replay`, `offsets set`, Hermes mode, `check --connect`, `query`) and by
//! the conformance kit alike, whatever carries the calls (the consumer itself, the FFI shim of
//! a plugin library).
//!
//! A session is:
//!
//! 1. [`set_timeout`](Calls::set_timeout): how long `poll` may wait for a first event. It comes
//!    **before** `open`: a plugin may read it in `open` (Hermes's own Kafka plugin does, and
//!    hermes-client calls it first).
//! 2. [`open`](Calls::open).
//! 3. [`set_stop_when_drained`](Calls::set_stop_when_drained): `true` for `buslink run --once`
//!    and `replay` (a bus that knows it is drained says so at once).
//! 4. One positioning call ([`Position`]): `seek_to_beginning`, `seek_to_end`, `seek` or
//!    `seek_after`, none for a consumer whose bus keeps the position without a hint (a Kafka
//!    consumer group), or none at all for a command that only asks the plugin something.
//! 5. After `seek_after` of a resumed run, [`check_position`](Calls::check_position) with the
//!    last event's timestamp (is the event at that offset still the one that was handled?).
//!
//! Then `poll` repeatedly; between two polls the host may call `lag`, `counters`,
//! `acknowledge` (a bus that keeps the position: what was committed) and `serve` (while a
//! batch is handled). Hermes mode's bootstrap opens with no position and then calls
//! `seek_to_beginning` and `find_next_event_of_category` in a loop. `close` ends every
//! session, also after an error; after a transient error the host closes and begins a new
//! session from step 1.

use crate::offset::Offset;
use chrono::{DateTime, Utc};
use std::time::Duration;

/// The calls [`open_at`] makes, implemented by whatever carries them to a consumer.
pub trait Calls {
    /// What a refused call gives.
    type Error;
    /// [`Consumer::set_timeout`](crate::Consumer::set_timeout).
    fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<(), Self::Error>;
    /// [`Consumer::open`](crate::Consumer::open).
    fn open(&mut self) -> Result<(), Self::Error>;
    /// [`Consumer::set_stop_when_drained`](crate::Consumer::set_stop_when_drained).
    fn set_stop_when_drained(&mut self, stop: bool) -> Result<(), Self::Error>;
    /// [`Consumer::seek_to_beginning`](crate::Consumer::seek_to_beginning).
    fn seek_to_beginning(&mut self) -> Result<(), Self::Error>;
    /// [`Consumer::seek_to_end`](crate::Consumer::seek_to_end).
    fn seek_to_end(&mut self) -> Result<(), Self::Error>;
    /// [`Consumer::seek`](crate::Consumer::seek).
    fn seek(&mut self, offset: &Offset) -> Result<(), Self::Error>;
    /// [`Consumer::seek_after`](crate::Consumer::seek_after).
    fn seek_after(&mut self, offset: &Offset) -> Result<(), Self::Error>;
    /// [`Consumer::check_position`](crate::Consumer::check_position).
    fn check_position(
        &mut self,
        last: &Offset,
        timestamp: DateTime<Utc>,
    ) -> Result<(), Self::Error>;
}

/// Where a session positions the consumer (step 4 of the module's order).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Position<'a> {
    /// `seek_to_beginning`: the oldest event still on the bus.
    Beginning,
    /// `seek_to_end`: only events produced from now on.
    End,
    /// `seek`: the event at this offset (a start point, `offsets set`, `replay --from`).
    At(&'a Offset),
    /// `seek_after`: resuming after the last event handled; with its timestamp,
    /// `check_position` follows.
    After {
        /// The last event handled.
        offset: &'a Offset,
        /// Its timestamp, when the host kept it.
        timestamp: Option<DateTime<Utc>>,
    },
    /// A bus that keeps the position (a consumer group): `seek` to where this member last was
    /// when the host knows it (a hint for what the bus has no position for), else nothing.
    BusKept(Option<&'a Offset>),
    /// No positioning: the session only asks the plugin something (`query`, `check
    /// --connect`), or positions by itself (Hermes mode's bootstrap).
    Unpositioned,
}

/// Opens a session on `consumer` in the one order (the module's steps 1 to 5): `timeout` for
/// `poll`, `stop_when_drained`, then `position`. The first refused call ends it with its error
/// (the caller closes the consumer).
pub fn open_at<C: Calls + ?Sized>(
    consumer: &mut C,
    timeout: Option<Duration>,
    stop_when_drained: bool,
    position: Position<'_>,
) -> Result<(), C::Error> {
    consumer.set_timeout(timeout)?;
    consumer.open()?;
    consumer.set_stop_when_drained(stop_when_drained)?;
    match position {
        Position::Beginning => consumer.seek_to_beginning(),
        Position::End => consumer.seek_to_end(),
        Position::At(offset) => consumer.seek(offset),
        Position::After { offset, timestamp } => {
            consumer.seek_after(offset)?;
            match timestamp {
                Some(timestamp) => consumer.check_position(offset, timestamp),
                None => Ok(()),
            }
        }
        Position::BusKept(Some(hint)) => consumer.seek(hint),
        Position::BusKept(None) | Position::Unpositioned => Ok(()),
    }
}

impl<T: crate::Consumer> Calls for T {
    type Error = crate::PluginError;
    fn set_timeout(&mut self, timeout: Option<Duration>) -> crate::PluginResult<()> {
        crate::Consumer::set_timeout(self, timeout)
    }
    fn open(&mut self) -> crate::PluginResult<()> {
        crate::Consumer::open(self)
    }
    fn set_stop_when_drained(&mut self, stop: bool) -> crate::PluginResult<()> {
        crate::Consumer::set_stop_when_drained(self, stop)
    }
    fn seek_to_beginning(&mut self) -> crate::PluginResult<()> {
        crate::Consumer::seek_to_beginning(self)
    }
    fn seek_to_end(&mut self) -> crate::PluginResult<()> {
        crate::Consumer::seek_to_end(self)
    }
    fn seek(&mut self, offset: &Offset) -> crate::PluginResult<()> {
        crate::Consumer::seek(self, offset)
    }
    fn seek_after(&mut self, offset: &Offset) -> crate::PluginResult<()> {
        crate::Consumer::seek_after(self, offset)
    }
    fn check_position(
        &mut self,
        last: &Offset,
        timestamp: DateTime<Utc>,
    ) -> crate::PluginResult<()> {
        crate::Consumer::check_position(self, last, timestamp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the calls.
    #[derive(Default)]
    struct Recorder(Vec<String>);

    impl Calls for Recorder {
        type Error = ();
        fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<(), ()> {
            self.0.push(format!("set_timeout({timeout:?})"));
            Ok(())
        }
        fn open(&mut self) -> Result<(), ()> {
            self.0.push("open".into());
            Ok(())
        }
        fn set_stop_when_drained(&mut self, stop: bool) -> Result<(), ()> {
            self.0.push(format!("set_stop_when_drained({stop})"));
            Ok(())
        }
        fn seek_to_beginning(&mut self) -> Result<(), ()> {
            self.0.push("seek_to_beginning".into());
            Ok(())
        }
        fn seek_to_end(&mut self) -> Result<(), ()> {
            self.0.push("seek_to_end".into());
            Ok(())
        }
        fn seek(&mut self, offset: &Offset) -> Result<(), ()> {
            self.0.push(format!("seek({offset})"));
            Ok(())
        }
        fn seek_after(&mut self, offset: &Offset) -> Result<(), ()> {
            self.0.push(format!("seek_after({offset})"));
            Ok(())
        }
        fn check_position(&mut self, last: &Offset, _: DateTime<Utc>) -> Result<(), ()> {
            self.0.push(format!("check_position({last})"));
            Ok(())
        }
    }

    #[test]
    fn the_timeout_comes_before_open_and_a_resume_is_checked() {
        let mut calls = Recorder::default();
        let last = Offset::Int(41);
        open_at(
            &mut calls,
            Some(Duration::from_millis(200)),
            true,
            Position::After {
                offset: &last,
                timestamp: Some(DateTime::default()),
            },
        )
        .expect("every call accepted");
        assert_eq!(
            calls.0,
            [
                "set_timeout(Some(200ms))",
                "open",
                "set_stop_when_drained(true)",
                "seek_after(41)",
                "check_position(41)"
            ]
        );
        let mut calls = Recorder::default();
        open_at(&mut calls, None, false, Position::BusKept(None)).expect("accepted");
        assert_eq!(
            calls.0,
            ["set_timeout(None)", "open", "set_stop_when_drained(false)"]
        );
    }
}
