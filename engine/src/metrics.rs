//! One consumer's series in the Prometheus registry: what its run counts (events by
//! category, handler outcomes, commits and the last commit's time, gaps and events lost,
//! events skipped, reconnects, restarts) and what the health monitor publishes (state, lag, the plugin's
//! own counts, the pid of a plugin executable's child). The daemon owns the registry and serves it (`daemon/src/metrics.rs`); the
//! series, their names and help texts live here, so a new metric is one file.
//!
//! Names follow Prometheus conventions: `buslink_` prefix, `_total` for counters, seconds.

use crate::health::{State, View};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsumerLabel {
    consumer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CategoryLabels {
    consumer: String,
    category: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandlerLabels {
    consumer: String,
    handler: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    consumer: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    consumer: String,
    name: String,
}

/// The plugin counter that is no count: a plugin executable's child's pid (it has a gauge of
/// its own, `buslink_plugin_process_pid`).
const PLUGIN_PID: &str = "plugin_process_pid";

/// How a handler's delivery of one event ended, for `buslink_handler_events_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted.
    Success,
    /// A failed attempt that is retried.
    Retry,
    /// Failed after its last attempt (then stopped, dead-lettered or queued).
    Failure,
    /// Written to the dead-letter file.
    DeadLettered,
    /// Put in the error queue: after its last attempt failed, or without an attempt behind an
    /// earlier event of the same object waiting there.
    Queued,
}

impl Outcome {
    /// Every outcome, in the order of their series.
    pub const ALL: [Outcome; 5] = [
        Outcome::Success,
        Outcome::Retry,
        Outcome::Failure,
        Outcome::DeadLettered,
        Outcome::Queued,
    ];

    fn index(self) -> usize {
        self as usize
    }

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Retry => "retry",
            Outcome::Failure => "failure",
            Outcome::DeadLettered => "dead_lettered",
            Outcome::Queued => "queued",
        }
    }
}

/// A lock, taken over when poisoned.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One handler's counters by [`Outcome`]: counting is one atomic add.
#[derive(Clone, Debug)]
pub struct HandlerCounters([Counter; 5]);

impl HandlerCounters {
    /// One delivery ended so.
    pub fn count(&self, outcome: Outcome) {
        self.0[outcome.index()].inc();
    }
}

/// The counter of one category's handled events in `buslink_events_total`: counting is one
/// atomic add.
#[derive(Clone, Debug)]
pub struct CategoryCounter(Counter);

impl CategoryCounter {
    /// One more event of this category was handled.
    pub fn count(&self) {
        self.0.inc();
    }
}

/// The series every consumer reports into, labelled with its name: made once per process
/// ([`Families::register`]), shared by every consumer's [`Metrics`].
#[derive(Clone, Default)]
pub struct Families {
    events: Family<CategoryLabels, Counter>,
    handler: Family<HandlerLabels, Counter>,
    commits: Family<ConsumerLabel, Counter>,
    last_commit: Family<ConsumerLabel, Gauge<f64, AtomicU64>>,
    gaps: Family<ConsumerLabel, Counter>,
    events_lost: Family<ConsumerLabel, Counter>,
    skipped: Family<ConsumerLabel, Counter>,
    reconnects: Family<ConsumerLabel, Counter>,
    restarts: Family<ConsumerLabel, Counter>,
    lag: Family<ConsumerLabel, Gauge>,
    error_queue: Family<ConsumerLabel, Gauge>,
    state: Family<StateLabels, Gauge>,
    plugin: Family<PluginLabels, Counter>,
    plugin_pid: Family<ConsumerLabel, Gauge>,
}

impl Families {
    /// Every series, registered in `registry` with its name and help text.
    pub fn register(registry: &mut Registry) -> Families {
        let families = Families::default();
        registry.register(
            "buslink_events",
            "Events handled (every matching handler accepted them), by category",
            families.events.clone(),
        );
        registry.register(
            "buslink_handler_events",
            "Deliveries to a handler by outcome: success, retry, failure, dead_lettered, queued",
            families.handler.clone(),
        );
        registry.register(
            "buslink_commits",
            "Offset commits",
            families.commits.clone(),
        );
        registry.register(
            "buslink_last_commit_timestamp_seconds",
            "When the offset was last committed (Unix time); the commit's age is time() minus it",
            families.last_commit.clone(),
        );
        registry.register(
            "buslink_gaps",
            "Gaps: events gone from the bus before this consumer read them",
            families.gaps.clone(),
        );
        registry.register(
            "buslink_events_lost",
            "Events in the gaps, where the bus could count them",
            families.events_lost.clone(),
        );
        registry.register(
            "buslink_events_skipped",
            "Events read and committed without reaching a handler on purpose: Hermes mode's \
             initsync events outside the replayed sequence",
            families.skipped.clone(),
        );
        registry.register(
            "buslink_reconnects",
            "Re-opens of the consumer after a bus error",
            families.reconnects.clone(),
        );
        registry.register(
            "buslink_restarts",
            "Restarts of the consumer by the daemon after it failed ([[consumers]]; a single \
             [consumer]'s failure ends the process)",
            families.restarts.clone(),
        );
        registry.register(
            "buslink_lag_events",
            "Events on the bus after the last handled event (committed or not); absent while \
             unknown (the bus cannot be asked)",
            families.lag.clone(),
        );
        registry.register(
            "buslink_error_queue_events",
            "Events waiting in the consumer's error queue (handlers with on_failure = \
             \"error-queue\"), retried in the background",
            families.error_queue.clone(),
        );
        registry.register(
            "buslink_consumer_state",
            "1 for the consumer's current state (connecting, running, paused, pausing, \
             waiting, stalled, stopping, failed), 0 for the others",
            families.state.clone(),
        );
        registry.register(
            "buslink_plugin_counts",
            "The consumer plugin's own counts (gaps, reconnects, client_errors, ...), by name, \
             added up over the plugin's restarts",
            families.plugin.clone(),
        );
        registry.register(
            "buslink_plugin_process_pid",
            "The pid of the consumer's plugin executable's child (plugins run as a subprocess)",
            families.plugin_pid.clone(),
        );
        families
    }
}

/// The metrics of one consumer (made by [`Metrics::new`]; the daemon keeps one per consumer
/// name, so a restarted consumer goes on counting).
pub struct Metrics {
    consumer: ConsumerLabel,
    events: Family<CategoryLabels, Counter>,
    handler: Family<HandlerLabels, Counter>,
    commits: Counter,
    last_commit: Gauge<f64, AtomicU64>,
    gaps: Counter,
    events_lost: Counter,
    skipped: Counter,
    reconnects: Counter,
    restarts: Counter,
    lag: Family<ConsumerLabel, Gauge>,
    error_queue: Gauge,
    state_series: Family<StateLabels, Gauge>,
    plugin: Family<PluginLabels, Counter>,
    plugin_pid: Family<ConsumerLabel, Gauge>,
    state: Mutex<State>,
    /// The state label and lag last published (series change only when they do).
    shown: Mutex<Option<(&'static str, Option<u64>)>>,
    /// The counter of each category met (at most [`MAX_CATEGORIES`], then `other`): found by
    /// the event's `&str`, so that counting an event allocates nothing.
    categories: Mutex<std::collections::HashMap<String, Counter>>,
    /// Each handler's counters, by [`Outcome`] (in the order of [`Outcome::ALL`]).
    handlers: Mutex<std::collections::HashMap<String, HandlerCounters>>,
    /// Each plugin counter met: its series and the plugin's value last read (the series adds
    /// the increase; a value below the last one is a restarted plugin counting from 0).
    plugin_counters: Mutex<std::collections::HashMap<String, (Counter, u64)>>,
}

/// Distinct categories counted apart; the rest are counted as `other` (a bus whose categories
/// are free text, Kafka keys for example, must not grow the metrics without bound).
pub const MAX_CATEGORIES: usize = 100;

impl Metrics {
    /// Consumer `name`'s series, all at zero.
    pub fn new(families: &Families, name: &str) -> Metrics {
        let consumer = ConsumerLabel {
            consumer: name.to_owned(),
        };
        Metrics {
            commits: families.commits.get_or_create_owned(&consumer),
            last_commit: families.last_commit.get_or_create_owned(&consumer),
            gaps: families.gaps.get_or_create_owned(&consumer),
            events_lost: families.events_lost.get_or_create_owned(&consumer),
            skipped: families.skipped.get_or_create_owned(&consumer),
            reconnects: families.reconnects.get_or_create_owned(&consumer),
            restarts: families.restarts.get_or_create_owned(&consumer),
            lag: families.lag.clone(),
            error_queue: families.error_queue.get_or_create_owned(&consumer),
            state_series: families.state.clone(),
            consumer,
            events: families.events.clone(),
            handler: families.handler.clone(),
            plugin: families.plugin.clone(),
            plugin_pid: families.plugin_pid.clone(),
            state: Mutex::new(State::Connecting),
            shown: Mutex::new(None),
            categories: Mutex::new(std::collections::HashMap::new()),
            handlers: Mutex::new(std::collections::HashMap::new()),
            plugin_counters: Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// The consumer's name (its `consumer` label).
    pub fn name(&self) -> &str {
        &self.consumer.consumer
    }

    /// Takes this consumer's series out of `families` (a reload removed it): they go from
    /// `/metrics`.
    pub fn remove_from(&self, families: &Families) {
        let label = &self.consumer;
        families.commits.remove(label);
        families.last_commit.remove(label);
        families.gaps.remove(label);
        families.events_lost.remove(label);
        families.skipped.remove(label);
        families.reconnects.remove(label);
        families.restarts.remove(label);
        families.lag.remove(label);
        families.plugin_pid.remove(label);
        families.error_queue.remove(label);
        let consumer = || label.consumer.clone();
        for state in State::LABELS {
            families.state.remove(&StateLabels {
                consumer: consumer(),
                state: state.to_owned(),
            });
        }
        for category in lock(&self.categories).keys() {
            families.events.remove(&CategoryLabels {
                consumer: consumer(),
                category: category.clone(),
            });
        }
        for handler in lock(&self.handlers).keys() {
            for outcome in Outcome::ALL {
                families.handler.remove(&HandlerLabels {
                    consumer: consumer(),
                    handler: handler.clone(),
                    outcome: outcome.label().to_owned(),
                });
            }
        }
        for name in lock(&self.plugin_counters).keys() {
            families.plugin.remove(&PluginLabels {
                consumer: consumer(),
                name: name.clone(),
            });
        }
    }

    /// An event of `category` was handled.
    pub fn event(&self, category: &str) {
        self.category_counter(category).count();
    }

    /// The counter of `category`'s events (`other` past [`MAX_CATEGORIES`]), to count with no
    /// lookup: the dispatcher keeps the ones it meets for its run, so what was handled shows
    /// at the next scrape even while a handler holds the next event.
    pub fn category_counter(&self, category: &str) -> CategoryCounter {
        let mut known = self
            .categories
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(counter) = known.get(category) {
            return CategoryCounter(counter.clone());
        }
        let counted = if known.len() < MAX_CATEGORIES {
            category
        } else {
            "other"
        };
        CategoryCounter(
            known
                .entry(counted.to_owned())
                .or_insert_with(|| {
                    self.events.get_or_create_owned(&CategoryLabels {
                        consumer: self.consumer.consumer.clone(),
                        category: counted.to_owned(),
                    })
                })
                .clone(),
        )
    }

    /// A handler's delivery ended so.
    pub fn handler(&self, handler: &str, outcome: Outcome) {
        self.handler_counters(handler).count(outcome);
    }

    /// The outcome counters of `handler`, to count with no lookup (the dispatcher takes them
    /// once per run).
    pub fn handler_counters(&self, handler: &str) -> HandlerCounters {
        let mut known = self
            .handlers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(counters) = known.get(handler) {
            return counters.clone();
        }
        let counters = HandlerCounters(Outcome::ALL.map(|outcome| {
            self.handler.get_or_create_owned(&HandlerLabels {
                consumer: self.consumer.consumer.clone(),
                handler: handler.to_owned(),
                outcome: outcome.label().to_owned(),
            })
        }));
        known.insert(handler.to_owned(), counters.clone());
        counters
    }

    /// The offset was committed now.
    pub fn committed(&self) {
        self.commits.inc();
        self.set_last_commit(chrono::Utc::now());
    }

    /// When the committed offset was committed (at start: the cache's time).
    pub fn set_last_commit(&self, at: chrono::DateTime<chrono::Utc>) {
        self.last_commit
            .set(at.timestamp() as f64 + f64::from(at.timestamp_subsec_millis()) / 1000.0);
    }

    /// A gap of `lost` events (0 when unknown).
    pub fn gap(&self, lost: u64) {
        self.gaps.inc();
        self.events_lost.inc_by(lost);
    }

    /// `count` events were skipped on purpose (Hermes mode).
    pub fn skipped(&self, count: u64) {
        self.skipped.inc_by(count);
    }

    /// The consumer was re-opened after a bus error.
    pub fn reconnected(&self) {
        self.reconnects.inc();
    }

    /// The daemon restarts the consumer after a failure.
    pub fn restarted(&self) {
        self.restarts.inc();
    }

    /// The plugin's counters, as the reader last read them: each adds its increase since the
    /// last read to `buslink_plugin_counts_total` (all of it when it went down: the plugin was
    /// restarted and counts from 0); `plugin_process_pid` sets `buslink_plugin_process_pid`.
    pub fn plugin_counters(&self, counters: &[(String, u64)]) {
        let mut known = lock(&self.plugin_counters);
        for (name, value) in counters {
            if name == PLUGIN_PID {
                self.plugin_pid
                    .get_or_create(&self.consumer)
                    .set(i64::try_from(*value).unwrap_or(i64::MAX));
                continue;
            }
            let (series, last) = known.entry(name.clone()).or_insert_with(|| {
                let series = self.plugin.get_or_create_owned(&PluginLabels {
                    consumer: self.consumer.consumer.clone(),
                    name: name.clone(),
                });
                (series, 0)
            });
            series.inc_by(if *value >= *last {
                *value - *last
            } else {
                *value
            });
            *last = *value;
        }
    }

    /// `events` wait in the error queue (as the status shows it).
    pub fn set_error_queue(&self, events: usize) {
        self.error_queue
            .set(i64::try_from(events).unwrap_or(i64::MAX));
    }

    /// The monitor's view of the consumer: its state (`/health`, `/ready`,
    /// `buslink_consumer_state`) and lag (`buslink_lag_events`, absent while unknown).
    pub fn set_view(&self, view: &View) {
        *lock(&self.state) = view.state.clone();
        let now = (view.state.label(), view.lag);
        let mut shown = lock(&self.shown);
        if *shown == Some(now) {
            return;
        }
        *shown = Some(now);
        for label in State::LABELS {
            self.state_series
                .get_or_create(&StateLabels {
                    consumer: self.consumer.consumer.clone(),
                    state: label.to_owned(),
                })
                .set(i64::from(label == now.0));
        }
        match view.lag {
            Some(lag) => {
                self.lag
                    .get_or_create(&self.consumer)
                    .set(i64::try_from(lag).unwrap_or(i64::MAX));
            }
            None => {
                self.lag.remove(&self.consumer);
            }
        }
    }

    /// The state last published by the monitor (`/health`, `/ready`).
    pub fn state(&self) -> State {
        self.state
            .lock()
            .map(|s| s.clone())
            .unwrap_or(State::Failed("state unknown".into()))
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Metrics({})", self.consumer.consumer)
    }
}
