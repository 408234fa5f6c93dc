//! The kit against an in-memory bus that keeps every rule, and against one deliberately broken
//! fixture per rule: each broken one fails exactly its rule, and the correct one none.

use buslink_plugin_api::{
    Body, Consumer, ConsumerClass, Context, Event, EventBatch, Offset, OffsetRef, PluginError,
    PluginResult, PollStatus,
};
use buslink_plugin_kit::{Bus, Kit, Rule};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// Which rule the fixture breaks (none: it keeps them all).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
enum Broken {
    None,
    /// The first poll after `seek_to_beginning`, with a batch of more than two events and not
    /// stopping when drained, leaves out the first event.
    SkipsTheFirstEvent,
    /// Drops the event that did not fit in a full batch.
    DropsWhatDoesNotFit,
    /// `seek` lands one event further.
    SeekOneTooFar,
    /// `seek_after` lands on the event itself.
    SeekAfterLandsOnIt,
    /// `seek_to_end` does nothing.
    SeekToEndIgnored,
    /// `seek` accepts any offset.
    AcceptsAnyOffset,
    /// Says `Drained` one event early when stopping when drained.
    DrainedEarly,
    /// Waits five times the timeout at the end.
    IgnoresTheTimeout,
    /// `find_next_event_of_category` leaves the position on the event found.
    FindStaysOnTheEvent,
    /// Refuses bad settings without naming the key.
    ErrorsWithoutKey,
    /// Says nothing of the events lost before event 6.
    HidesTheGap,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    events: i64,
    broken: Broken,
}

const CATEGORIES: [&str; 3] = ["base", "initsync", "base"];

struct MemoryBus {
    events: i64,
    next: i64,
    broken: Broken,
    timeout: Option<Duration>,
    stop_when_drained: bool,
    /// `seek_to_beginning` was the last positioning call, and no poll came since.
    from_beginning: bool,
    bodies: Vec<String>,
}

impl MemoryBus {
    fn category(at: i64) -> &'static str {
        CATEGORIES[(at as usize) % CATEGORIES.len()]
    }
}

impl Consumer for MemoryBus {
    fn seek_to_beginning(&mut self) -> PluginResult<()> {
        self.next = 0;
        self.from_beginning = true;
        Ok(())
    }

    fn seek_to_end(&mut self) -> PluginResult<()> {
        if self.broken != Broken::SeekToEndIgnored {
            self.next = self.events;
        }
        Ok(())
    }

    fn seek(&mut self, offset: &Offset) -> PluginResult<()> {
        self.from_beginning = false;
        match offset {
            Offset::Int(at) if (0..self.events).contains(at) => {
                self.next = if self.broken == Broken::SeekOneTooFar {
                    at + 1
                } else {
                    *at
                };
                Ok(())
            }
            Offset::Int(at) if self.broken == Broken::AcceptsAnyOffset => {
                self.next = *at;
                Ok(())
            }
            other => Err(PluginError::offset_not_found(format!(
                "no event at {other}"
            ))),
        }
    }

    fn seek_after(&mut self, offset: &Offset) -> PluginResult<()> {
        match offset {
            Offset::Int(at) if (0..self.events).contains(at) => {
                self.next = if self.broken == Broken::SeekAfterLandsOnIt {
                    *at
                } else {
                    at + 1
                };
                Ok(())
            }
            other => Err(PluginError::offset_not_found(format!(
                "no event at {other}"
            ))),
        }
    }

    fn set_timeout(&mut self, timeout: Option<Duration>) -> PluginResult<()> {
        self.timeout = timeout;
        Ok(())
    }

    fn set_stop_when_drained(&mut self, stop: bool) -> PluginResult<()> {
        self.stop_when_drained = stop;
        Ok(())
    }

    fn poll(&mut self, batch: &mut EventBatch) -> PluginResult<PollStatus> {
        if std::mem::take(&mut self.from_beginning)
            && self.broken == Broken::SkipsTheFirstEvent
            && batch.max_events() > 2
            && !self.stop_when_drained
        {
            self.next = 1;
        }
        let end = if self.broken == Broken::DrainedEarly && self.stop_when_drained {
            self.events - 1
        } else {
            self.events
        };
        if self.next >= end {
            if self.stop_when_drained {
                return Ok(PollStatus::Drained);
            }
            let wait = self.timeout.unwrap_or(Duration::ZERO);
            let wait = if self.broken == Broken::IgnoresTheTimeout {
                wait * 5 + Duration::from_secs(1)
            } else {
                wait
            };
            let until = Instant::now() + wait;
            while Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
            return Ok(PollStatus::Idle);
        }
        loop {
            if self.next >= end {
                break;
            }
            if batch.is_full() {
                if self.broken == Broken::DropsWhatDoesNotFit {
                    self.next += 1;
                }
                break;
            }
            let at = self.next;
            if at == GAP_BEFORE && self.broken != Broken::HidesTheGap {
                batch.report_gap("two events before 6", Some(2));
            }
            batch.push(Event {
                offset: OffsetRef::Int(at),
                timestamp: chrono::DateTime::default(),
                category: MemoryBus::category(at),
                body: Body::Json(&self.bodies[at as usize]),
            });
            self.next += 1;
        }
        Ok(PollStatus::Ready)
    }

    fn find_next_event_of_category(
        &mut self,
        category: &str,
        found: &mut EventBatch,
    ) -> PluginResult<bool> {
        while self.next < self.events {
            let at = self.next;
            self.next += 1;
            if MemoryBus::category(at) == category {
                found.push(Event {
                    offset: OffsetRef::Int(at),
                    timestamp: chrono::DateTime::default(),
                    category: MemoryBus::category(at),
                    body: Body::Json(&self.bodies[at as usize]),
                });
                if self.broken == Broken::FindStaysOnTheEvent {
                    self.next = at;
                }
                return Ok(true);
            }
        }
        Ok(false)
    }
}

impl ConsumerClass for MemoryBus {
    const NAME: &'static str = "MemoryBus";
    const DESCRIPTION: &'static str = "an in-memory bus, correct or broken on demand";
    const SETTINGS_DOC: &'static str = "`events`: how many; `broken`: which rule to break";
    type Settings = Settings;

    fn validate(settings: &Settings) -> PluginResult<()> {
        if settings.events < 0 {
            let error = PluginError::config("events must not be negative");
            return Err(if settings.broken == Broken::ErrorsWithoutKey {
                error
            } else {
                error.with_key("events")
            });
        }
        Ok(())
    }

    fn new(settings: Settings, _context: &Context) -> PluginResult<MemoryBus> {
        Ok(MemoryBus {
            events: settings.events,
            next: 0,
            broken: settings.broken,
            timeout: None,
            stop_when_drained: false,
            from_beginning: false,
            bodies: (0..settings.events)
                .map(|i| format!("{{\"n\":{i}}}"))
                .collect(),
        })
    }
}

const EVENTS: i64 = 9;
/// The bus lost two events (of its own numbering) before this one.
const GAP_BEFORE: i64 = 6;

fn kit(broken: Broken, dir: &std::path::Path) -> Kit {
    let name = serde_json::to_value(broken).unwrap_or_default();
    let mut bus = Bus::of((0..EVENTS).map(|i| (Offset::Int(i), MemoryBus::category(i))))
        .not_on_bus(EVENTS + 5);
    bus.gap_before = Some((Offset::Int(GAP_BEFORE), Some(2)));
    Kit::new(
        serde_json::json!({ "events": EVENTS, "broken": name }),
        dir,
        bus,
    )
    .timeout(Duration::from_millis(100))
    .bad_settings(
        serde_json::json!({ "events": -1, "broken": name }),
        "events",
    )
}

#[test]
fn a_bus_that_keeps_the_contract_passes_every_rule() {
    let report = kit(Broken::None, std::path::Path::new(".")).check::<MemoryBus>();
    report.assert_passed();
    assert_eq!(report.passed, Rule::ALL.to_vec());
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
}

#[test]
fn each_broken_fixture_fails_exactly_its_rule() {
    let cases = [
        (
            Broken::SkipsTheFirstEvent,
            vec![Rule::ReadsEveryEventInOrder],
        ),
        (
            Broken::DropsWhatDoesNotFit,
            vec![Rule::SmallBatchesLoseNothing],
        ),
        (Broken::SeekOneTooFar, vec![Rule::SeekIsExact]),
        (
            Broken::SeekAfterLandsOnIt,
            vec![Rule::SeekAfterResumesAfter],
        ),
        (
            Broken::SeekToEndIgnored,
            vec![Rule::SeekToEndReadsOnlyNewEvents],
        ),
        (
            Broken::AcceptsAnyOffset,
            vec![Rule::OffsetsNotOnTheBusAreRefused],
        ),
        (
            Broken::DrainedEarly,
            vec![Rule::StopWhenDrainedEndsWithEveryEvent],
        ),
        (Broken::IgnoresTheTimeout, vec![Rule::TimeoutIsHonoured]),
        (
            Broken::FindStaysOnTheEvent,
            vec![Rule::FindLeavesThePositionAfterTheEvent],
        ),
        (
            Broken::ErrorsWithoutKey,
            vec![Rule::SettingsErrorsNameTheKey],
        ),
    ];
    for (broken, rules) in cases {
        let report = kit(broken, std::path::Path::new(".")).check::<MemoryBus>();
        assert_eq!(report.failed_rules(), rules, "{broken:?}: {report:#?}");
        for failure in &report.failures {
            assert!(
                failure
                    .calls
                    .first()
                    .is_some_and(|c| c.starts_with("set_timeout") || c == "new"),
                "the calls begin in the host's order: {failure:?}"
            );
        }
    }
}

#[test]
fn a_failure_names_the_rule_what_was_wrong_and_the_calls() {
    let report = kit(Broken::SeekOneTooFar, std::path::Path::new(".")).check::<MemoryBus>();
    let failure = &report.failures[0];
    assert_eq!(failure.rule, Rule::SeekIsExact);
    assert_eq!(
        failure.what,
        "event 0 read is 5 (base), the bus has 4 (initsync) there"
    );
    assert_eq!(
        failure.calls[..5],
        [
            "set_timeout(Some(100ms))",
            "open",
            "set_stop_when_drained(false)",
            "seek(4)",
            "poll(max 512)"
        ]
    );
    let panicked = std::panic::catch_unwind(|| report.assert_passed());
    assert!(panicked.is_err(), "assert_passed panics on a broken rule");
}
