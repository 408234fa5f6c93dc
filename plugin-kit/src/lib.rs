//! # The conformance kit for buslink consumer plugins
//!
//! A plugin author fills a bus with known events in a test, describes them ([`Bus`]), and asks
//! the kit to check a consumer class against the contract of `buslink-plugin-api`:
//!
//! ```ignore
//! #[test]
//! fn my_bus_keeps_the_consumer_contract() {
//!     let dir = tempfile::tempdir().unwrap();
//!     let bus = fill_my_bus(dir.path()); // the test's own writer: a Bus of what it wrote
//!     buslink_plugin_kit::Kit::new(serde_json::json!({ "path": "bus.jsonl" }), dir.path(), bus)
//!         .bad_settings(serde_json::json!({}), "path")
//!         .check::<MyConsumerClass>()
//!         .assert_passed();
//! }
//! ```
//!
//! Every rule ([`Rule`]) builds a new consumer the way a plugin library's `new_consumer` does
//! (settings parsed, `validate`, `new`, the export shim with its panic containment: the same
//! boundary the host crosses), opens it in the host's one call order
//! ([`buslink_plugin_api::session`]), and checks what the calls answer against what the bus
//! holds. A failure names the rule, what was wrong and the calls made, in order. A rule whose
//! calls do not return within [`RULE_LIMIT`] fails as hung (its thread is left behind; building
//! the consumer, `new` and `validate`, is not bounded: a class that blocks there blocks the test).
//!
//! The rules: [`Rule::ReadsEveryEventInOrder`], [`Rule::SmallBatchesLoseNothing`],
//! [`Rule::SeekIsExact`], [`Rule::SeekAfterResumesAfter`], [`Rule::SeekToEndReadsOnlyNewEvents`],
//! [`Rule::OffsetsNotOnTheBusAreRefused`], [`Rule::StopWhenDrainedEndsWithEveryEvent`],
//! [`Rule::TimeoutIsHonoured`], [`Rule::FindLeavesThePositionAfterTheEvent`],
//! [`Rule::SettingsErrorsNameTheKey`], [`Rule::GapsAreReported`].
//!
//! Panics need no rule: the export shim catches every one (the call answers an `internal`
//! error naming the method, and the consumer refuses every later call), so a panicking plugin
//! fails the rule it panicked in, with that error.

#![deny(missing_docs)]

mod driven;
mod rules;

use buslink_plugin_api::{ConsumerClass, Offset};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use driven::Driven;

/// How long one rule may take before it fails as hung.
pub const RULE_LIMIT: Duration = Duration::from_secs(30);

/// One event the test put on the bus.
#[derive(Clone, Debug, PartialEq)]
pub struct Known {
    /// Where it is on the bus.
    pub offset: Offset,
    /// Its category, as the plugin reports it.
    pub category: String,
}

/// What the test put on the bus, oldest first, and what it knows is not there.
#[derive(Clone, Debug, Default)]
pub struct Bus {
    /// Every event on the bus, in bus order (at least three for every rule to apply).
    pub events: Vec<Known>,
    /// Offsets of the bus's kind that no event has: `seek` must refuse them with
    /// `ErrorKind::OffsetNotFound`.
    pub not_on_bus: Vec<Offset>,
    /// Events the test removed from the bus (purged, fell out of a buffer) just before the
    /// event at this offset, and how many when the bus can count them: a read from the
    /// beginning must report that gap there.
    pub gap_before: Option<(Offset, Option<u64>)>,
}

impl Bus {
    /// A bus of `events` (offset, category) pairs.
    pub fn of(events: impl IntoIterator<Item = (Offset, &'static str)>) -> Bus {
        Bus {
            events: events
                .into_iter()
                .map(|(offset, category)| Known {
                    offset,
                    category: category.to_owned(),
                })
                .collect(),
            not_on_bus: Vec::new(),
            gap_before: None,
        }
    }

    /// Adds an offset that no event has.
    pub fn not_on_bus(mut self, offset: impl Into<Offset>) -> Bus {
        self.not_on_bus.push(offset.into());
        self
    }
}

/// A rule of the consumer contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rule {
    /// From `seek_to_beginning`, polls give every event, in bus order, once, then an empty poll
    /// (`Drained` or `Idle`) within the timeout. Here and in every rule that reads to the end,
    /// an `Idle` poll while `held_up` says the bus holds the consumer up (a group member not
    /// yet given a partition) is not the end: the kit polls again for up to 15 s.
    ReadsEveryEventInOrder,
    /// A batch of two events is never overfilled, and reading the bus two events at a time
    /// gives the same events as reading it whole.
    SmallBatchesLoseNothing,
    /// `seek(offset)` positions on that event: the next poll starts with it.
    SeekIsExact,
    /// `seek_after(offset)` positions right after that event (how the host resumes).
    SeekAfterResumesAfter,
    /// `seek_to_end` positions after the newest event: a poll gives nothing (a class that
    /// cannot start at the end refuses it with a config error instead).
    SeekToEndReadsOnlyNewEvents,
    /// `seek` to an offset not on the bus fails with `ErrorKind::OffsetNotFound`.
    OffsetsNotOnTheBusAreRefused,
    /// With `set_stop_when_drained(true)`, every event comes before the first empty poll
    /// (never `Drained` while events remain), and that poll returns within the timeout (at once
    /// when the plugin knows its bus is drained).
    StopWhenDrainedEndsWithEveryEvent,
    /// With nothing to read and not stopping when drained, a poll returns (`Idle` or
    /// `Drained`) within the timeout set by `set_timeout`, with a grace of a second.
    TimeoutIsHonoured,
    /// `find_next_event_of_category` returns the first event of that category and leaves the
    /// position right after it; a category not on the bus gives `false`.
    FindLeavesThePositionAfterTheEvent,
    /// Settings the class must refuse are refused by `new` with a config error naming the key.
    SettingsErrorsNameTheKey,
    /// Events gone from the bus before they were read are reported as a gap
    /// (`EventBatch::report_gap`) right before the first event after them, never skipped
    /// silently (checked when the test made one: [`Bus::gap_before`]).
    GapsAreReported,
}

impl Rule {
    /// Every rule, in the order the kit checks them.
    pub const ALL: [Rule; 11] = [
        Rule::ReadsEveryEventInOrder,
        Rule::SmallBatchesLoseNothing,
        Rule::SeekIsExact,
        Rule::SeekAfterResumesAfter,
        Rule::SeekToEndReadsOnlyNewEvents,
        Rule::OffsetsNotOnTheBusAreRefused,
        Rule::StopWhenDrainedEndsWithEveryEvent,
        Rule::TimeoutIsHonoured,
        Rule::FindLeavesThePositionAfterTheEvent,
        Rule::SettingsErrorsNameTheKey,
        Rule::GapsAreReported,
    ];
}

/// A rule the plugin broke: what was wrong, and the calls that showed it.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The rule.
    pub rule: Rule,
    /// What the calls answered, against what the bus holds.
    pub what: String,
    /// The calls made to the consumer, in order.
    pub calls: Vec<String>,
}

/// What the kit found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The rules kept.
    pub passed: Vec<Rule>,
    /// The rules broken.
    pub failures: Vec<Failure>,
    /// The rules not checked, and why (exempted by the test, or nothing to check them with).
    pub skipped: Vec<(Rule, String)>,
}

impl Report {
    /// The rules broken, in the kit's order.
    pub fn failed_rules(&self) -> Vec<Rule> {
        self.failures.iter().map(|failure| failure.rule).collect()
    }

    /// Panics with every failure (rule, what, calls) unless every checked rule was kept.
    pub fn assert_passed(&self) {
        if self.failures.is_empty() {
            return;
        }
        let mut text = format!(
            "{} rule(s) of the consumer contract broken:\n",
            self.failures.len()
        );
        for failure in &self.failures {
            text.push_str(&format!(
                "\n{:?}: {}\n  calls: {}\n",
                failure.rule,
                failure.what,
                failure.calls.join(", ")
            ));
        }
        panic!("{text}");
    }
}

/// A check of one consumer class against a bus the test filled.
#[derive(Clone, Debug)]
pub struct Kit {
    settings: serde_json::Value,
    config_dir: PathBuf,
    bus: Bus,
    timeout: Duration,
    bad_settings: Vec<(serde_json::Value, String)>,
    exempt: Vec<(Rule, String)>,
    /// The bus keeps the position (a consumer group): reads start where the bus says.
    bus_keeps_the_position: bool,
}

impl Kit {
    /// The class will be built from `settings` (as `[consumer.settings]` would give them, with
    /// relative paths resolved against `config_dir`) and read `bus`.
    pub fn new(settings: serde_json::Value, config_dir: &Path, bus: Bus) -> Kit {
        Kit {
            settings,
            config_dir: config_dir.to_path_buf(),
            bus,
            timeout: Duration::from_millis(500),
            bad_settings: Vec::new(),
            exempt: Vec::new(),
            bus_keeps_the_position: false,
        }
    }

    /// The timeout set with `set_timeout` (default 500 ms).
    pub fn timeout(mut self, timeout: Duration) -> Kit {
        self.timeout = timeout;
        self
    }

    /// Settings the class must refuse, with the key its error must name.
    pub fn bad_settings(mut self, settings: serde_json::Value, key: &str) -> Kit {
        self.bad_settings.push((settings, key.to_owned()));
        self
    }

    /// A rule that does not apply to this class, and why (said in the report): a Kafka
    /// consumer group keeps its position on the bus, so the seek rules do not apply to it.
    pub fn exempt(mut self, rule: Rule, why: &str) -> Kit {
        self.exempt.push((rule, why.to_owned()));
        self
    }

    /// Checks `rule` alone (the others are skipped, saying so): for a bus whose consumers need
    /// something of their own per rule (a consumer group per rule, so that one rule's member
    /// does not wait for the group to forget the last one's).
    pub fn only(mut self, rule: Rule) -> Kit {
        for other in Rule::ALL.into_iter().filter(|other| *other != rule) {
            if !self.exempt.iter().any(|(exempt, _)| *exempt == other) {
                self.exempt
                    .push((other, format!("checked alone: {rule:?}")));
            }
        }
        self
    }

    /// The class keeps its position on the bus (`bus_owns_position`: a Kafka consumer group):
    /// the host never positions it, so the reads start where the bus says (a new group: the
    /// oldest event), and the positioning rules (`seek`, `seek_after`, `seek_to_end`, offsets
    /// not on the bus, `find_next_event_of_category`, which Hermes mode alone calls and refuses
    /// such a consumer for) are exempt, saying why.
    pub fn bus_keeps_the_position(mut self) -> Kit {
        self.bus_keeps_the_position = true;
        let why = "the bus keeps the position (a consumer group): the host never positions it";
        for rule in [
            Rule::SeekIsExact,
            Rule::SeekAfterResumesAfter,
            Rule::SeekToEndReadsOnlyNewEvents,
            Rule::OffsetsNotOnTheBusAreRefused,
            Rule::FindLeavesThePositionAfterTheEvent,
        ] {
            self.exempt.push((rule, why.to_owned()));
        }
        self
    }

    /// Checks class `C`, built in-process through the export shim (the boundary a plugin
    /// library's `new_consumer` crosses).
    pub fn check<C: ConsumerClass>(&self) -> Report {
        let config_dir = self.config_dir.clone();
        let build = move |settings: &str| {
            buslink_plugin_api::ffi::class_consumer::<C>(settings, &config_dir, "kit")
                .map(Driven::new)
        };
        rules::check_all(self, &build)
    }

    /// Checks class `class` of a plugin executable (`command`: the program and its
    /// arguments), driven over the subprocess protocol exactly as the host drives it: a child
    /// per rule, the handshake, the class built from the settings, every call a frame.
    pub fn check_executable(&self, command: &[String], class: &str) -> Report {
        let config_dir = self.config_dir.clone();
        let command = command.to_vec();
        let class = class.to_owned();
        let build = move |settings: &str| {
            let settings = serde_json::from_str(settings).map_err(|e| {
                buslink_plugin_api::PluginError::internal(format!("the kit's settings: {e}"))
            })?;
            let consumer = buslink_plugin_api::subprocess::SubprocessConsumer::start(
                buslink_plugin_api::subprocess::Spec {
                    command: command.clone(),
                    env: Vec::new(),
                    class: class.clone(),
                    settings,
                    config_dir: config_dir.clone(),
                    limits: Default::default(),
                    trace_frames: false,
                },
            )?;
            Ok(Driven::new(buslink_plugin_api::ffi::consumer_box(
                consumer,
                "executable",
                "subprocess",
            )))
        };
        rules::check_all(self, &build)
    }
}
