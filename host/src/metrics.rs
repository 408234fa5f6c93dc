//! Metrics and health over HTTP, opt-in (`[metrics] listen = "127.0.0.1:9464"`):
//!
//! - `GET /metrics`: Prometheus / OpenMetrics text (the `prometheus-client` crate), per
//!   consumer: events by category, handler outcomes, commits and the last commit's time, gaps
//!   and events lost, reconnects, lag, and the plugin's own counters.
//! - `GET /health`: 200 while the consumer runs, is paused or waits for its bus; 503 with the
//!   reason when it is stalled, stopping or failed. `/health/NAME`: one consumer's (a stalled
//!   consumer must not make a liveness probe restart the others).
//! - `GET /ready`: 200 while the consumer runs (or is paused); 503 with the reason while it
//!   connects, waits for its bus, is stalled, stops or failed. `/ready/NAME`: one consumer's.
//!
//! The state and the lag are the [`health`](crate::health) monitor's, published here (and in
//! `buslink_consumer_state`) every tick.
//!
//! Names follow Prometheus conventions: `buslink_` prefix, `_total` for counters, seconds.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

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
    counter: String,
}

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
    /// Put in the error queue.
    Queued,
}

impl Outcome {
    /// Every outcome, in the order of their series.
    const ALL: [Outcome; 5] = [
        Outcome::Success,
        Outcome::Retry,
        Outcome::Failure,
        Outcome::DeadLettered,
        Outcome::Queued,
    ];

    fn index(self) -> usize {
        self as usize
    }

    fn label(self) -> &'static str {
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

use crate::health::{State, View};

/// The series every consumer reports into, labelled with its name.
#[derive(Clone, Default)]
struct Families {
    events: Family<CategoryLabels, Counter>,
    handler: Family<HandlerLabels, Counter>,
    commits: Family<ConsumerLabel, Counter>,
    last_commit: Family<ConsumerLabel, Gauge<f64, AtomicU64>>,
    gaps: Family<ConsumerLabel, Counter>,
    events_lost: Family<ConsumerLabel, Counter>,
    skipped: Family<ConsumerLabel, Counter>,
    reconnects: Family<ConsumerLabel, Counter>,
    lag: Family<ConsumerLabel, Gauge>,
    state: Family<StateLabels, Gauge>,
    plugin: Family<PluginLabels, Gauge>,
}

/// The process's metrics: one registry that every consumer's [`Metrics`] reports into, and the
/// health of them all.
pub struct MetricsRegistry {
    registry: Registry,
    families: Families,
    consumers: Mutex<Vec<Arc<Metrics>>>,
}

impl Default for MetricsRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl MetricsRegistry {
    /// The registry, with no consumer yet.
    pub fn new() -> MetricsRegistry {
        let mut registry = Registry::default();
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
            "buslink_lag_events",
            "Events on the bus after the last handled event (committed or not); absent while \
             unknown (the bus cannot be asked)",
            families.lag.clone(),
        );
        registry.register(
            "buslink_consumer_state",
            "1 for the consumer's current state (connecting, running, paused, waiting, \
             stalled, stopping, failed), 0 for the others",
            families.state.clone(),
        );
        registry.register(
            "buslink_plugin_counter",
            "The consumer plugin's own counters, by name",
            families.plugin.clone(),
        );
        MetricsRegistry {
            registry,
            families,
            consumers: Mutex::new(Vec::new()),
        }
    }

    /// The metrics of consumer `name`, all at zero (the same ones when asked again: a
    /// restarted consumer goes on counting).
    pub fn consumer(&self, name: &str) -> Arc<Metrics> {
        let mut consumers = self
            .consumers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(known) = consumers.iter().find(|m| m.consumer.consumer == name) {
            return known.clone();
        }
        let families = &self.families;
        let consumer = ConsumerLabel {
            consumer: name.to_owned(),
        };
        let metrics = Arc::new(Metrics {
            commits: families.commits.get_or_create_owned(&consumer),
            last_commit: families.last_commit.get_or_create_owned(&consumer),
            gaps: families.gaps.get_or_create_owned(&consumer),
            events_lost: families.events_lost.get_or_create_owned(&consumer),
            skipped: families.skipped.get_or_create_owned(&consumer),
            reconnects: families.reconnects.get_or_create_owned(&consumer),
            lag: families.lag.clone(),
            state_series: families.state.clone(),
            consumer,
            events: families.events.clone(),
            handler: families.handler.clone(),
            plugin: families.plugin.clone(),
            state: Mutex::new(State::Connecting),
            shown: Mutex::new(None),
            categories: Mutex::new(std::collections::HashMap::new()),
            handlers: Mutex::new(std::collections::HashMap::new()),
            plugin_counters: Mutex::new(std::collections::HashSet::new()),
        });
        consumers.push(metrics.clone());
        metrics
    }

    /// Forgets the consumers not in `names` (a reload removed them): their series go from
    /// `/metrics` (an alert on a commit's age must not fire for a consumer that is gone) and
    /// they leave `/health` and `/ready`.
    pub fn keep_only(&self, names: &[String]) {
        let mut consumers = self
            .consumers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for gone in consumers
            .iter()
            .filter(|m| !names.contains(&m.consumer.consumer))
        {
            self.remove_series(gone);
        }
        consumers.retain(|m| names.contains(&m.consumer.consumer));
    }

    fn remove_series(&self, gone: &Metrics) {
        let families = &self.families;
        let label = &gone.consumer;
        families.commits.remove(label);
        families.last_commit.remove(label);
        families.gaps.remove(label);
        families.events_lost.remove(label);
        families.skipped.remove(label);
        families.reconnects.remove(label);
        families.lag.remove(label);
        let consumer = || label.consumer.clone();
        for state in State::LABELS {
            families.state.remove(&StateLabels {
                consumer: consumer(),
                state: state.to_owned(),
            });
        }
        for category in lock(&gone.categories).keys() {
            families.events.remove(&CategoryLabels {
                consumer: consumer(),
                category: category.clone(),
            });
        }
        for handler in lock(&gone.handlers).keys() {
            for outcome in Outcome::ALL {
                families.handler.remove(&HandlerLabels {
                    consumer: consumer(),
                    handler: handler.clone(),
                    outcome: outcome.label().to_owned(),
                });
            }
        }
        for counter in lock(&gone.plugin_counters).iter() {
            families.plugin.remove(&PluginLabels {
                consumer: consumer(),
                counter: counter.clone(),
            });
        }
    }

    /// The text for `GET /metrics`.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }

    /// The metrics of consumer `name`, if it has some.
    pub fn get(&self, name: &str) -> Option<Arc<Metrics>> {
        lock(&self.consumers)
            .iter()
            .find(|m| m.consumer.consumer == name)
            .cloned()
    }

    /// (status, body) for a path. With several consumers, `/health` and `/ready` answer 200
    /// only when each would alone, and the body has a line per consumer; `/health/NAME` and
    /// `/ready/NAME` answer for one.
    fn answer(&self, path: &str) -> (u16, String) {
        if path == "/metrics" {
            return (200, self.encode());
        }
        let consumers = self
            .consumers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let (path, only) = match path
            .strip_prefix("/health/")
            .or(path.strip_prefix("/ready/"))
        {
            Some(name) => (&path[..path.len() - name.len() - 1], Some(name)),
            None => (path, None),
        };
        if let Some(name) = only {
            return match consumers.iter().find(|m| m.consumer.consumer == name) {
                Some(m) => health_answer(&m.state(), path),
                None => (404, format!("no consumer '{name}'\n")),
            };
        }
        let answers: Vec<(String, (u16, String))> = consumers
            .iter()
            .map(|m| (m.consumer.consumer.clone(), health_answer(&m.state(), path)))
            .collect();
        match answers.as_slice() {
            [] => (503, "no consumer yet\n".into()),
            [(_, one)] => one.clone(),
            several => {
                let status = several
                    .iter()
                    .map(|(_, (status, _))| *status)
                    .max()
                    .unwrap_or(503);
                let body = several
                    .iter()
                    .map(|(name, (_, body))| format!("{name}: {body}"))
                    .collect();
                (status, body)
            }
        }
    }
}

/// One consumer's answer to `/health` or `/ready`.
fn health_answer(state: &State, path: &str) -> (u16, String) {
    match path {
        "/health" => match state {
            State::Stalled { .. } | State::Stopping | State::Failed(_) => {
                (503, format!("{}\n", state.text()))
            }
            State::Waiting(_) | State::Paused => (200, format!("ok ({})\n", state.text())),
            State::Connecting | State::Running => (200, "ok\n".into()),
        },
        "/ready" => match state {
            State::Running => (200, "ready\n".into()),
            State::Paused => (200, "ready (paused)\n".into()),
            State::Connecting => (503, "connecting to the bus\n".into()),
            other => (503, format!("{}\n", other.text())),
        },
        _ => (
            404,
            "not found: /metrics, /health[/NAME], /ready[/NAME]\n".into(),
        ),
    }
}

/// The metrics of one consumer (made by [`MetricsRegistry::consumer`]).
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
    lag: Family<ConsumerLabel, Gauge>,
    state_series: Family<StateLabels, Gauge>,
    plugin: Family<PluginLabels, Gauge>,
    state: Mutex<State>,
    /// The state label and lag last published (series change only when they do).
    shown: Mutex<Option<(&'static str, Option<u64>)>>,
    /// The counter of each category met (at most [`MAX_CATEGORIES`], then `other`): found by
    /// the event's `&str`, so that counting an event allocates nothing.
    categories: Mutex<std::collections::HashMap<String, Counter>>,
    /// Each handler's counters, by [`Outcome`] (in the order of [`Outcome::ALL`]).
    handlers: Mutex<std::collections::HashMap<String, HandlerCounters>>,
    /// The names of the plugin's counters met (to remove their series with the consumer).
    plugin_counters: Mutex<std::collections::HashSet<String>>,
}

/// Distinct categories counted apart; the rest are counted as `other` (a bus whose categories
/// are free text, Kafka keys for example, must not grow the metrics without bound).
const MAX_CATEGORIES: usize = 100;

impl Metrics {
    /// An event of `category` was handled.
    pub fn event(&self, category: &str) {
        self.events_by(category, 1);
    }

    /// `count` events of `category` were handled (a batch's tally).
    pub fn events_by(&self, category: &str, count: u64) {
        let mut known = self
            .categories
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(counter) = known.get(category) {
            counter.inc_by(count);
            return;
        }
        let counted = if known.len() < MAX_CATEGORIES {
            category
        } else {
            "other"
        };
        known
            .entry(counted.to_owned())
            .or_insert_with(|| {
                self.events.get_or_create_owned(&CategoryLabels {
                    consumer: self.consumer.consumer.clone(),
                    category: counted.to_owned(),
                })
            })
            .inc_by(count);
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

    /// The plugin's counters, as the reader last read them.
    pub fn plugin_counters(&self, counters: &[(String, u64)]) {
        let mut known = lock(&self.plugin_counters);
        for (name, value) in counters {
            if !known.contains(name) {
                known.insert(name.clone());
            }
            self.plugin
                .get_or_create(&PluginLabels {
                    consumer: self.consumer.consumer.clone(),
                    counter: name.clone(),
                })
                .set(i64::try_from(*value).unwrap_or(i64::MAX));
        }
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

    fn state(&self) -> State {
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

/// The HTTP server of the metrics, on its own thread until dropped.
pub struct MetricsServer {
    /// Kept to wake its thread at the stop (`unblock`).
    server: Arc<tiny_http::Server>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    address: SocketAddr,
}

impl MetricsServer {
    /// Listens on `listen` (port 0: any free port, see [`address`](Self::address)).
    pub fn start(
        listen: SocketAddr,
        metrics: Arc<MetricsRegistry>,
    ) -> Result<MetricsServer, String> {
        let server = tiny_http::Server::http(listen)
            .map_err(|e| format!("[metrics] listen = \"{listen}\": cannot listen: {e}"))?;
        let server = Arc::new(server);
        let address = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| format!("[metrics] listen = \"{listen}\": not an IP address"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            let server = server.clone();
            std::thread::Builder::new()
                .name("metrics".into())
                .spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let Ok(Some(request)) = server.recv_timeout(Duration::from_millis(200))
                        else {
                            continue;
                        };
                        let path = request.url().split('?').next().unwrap_or("").to_owned();
                        let head = request.method() == &tiny_http::Method::Head;
                        let (status, body) = if request.method() == &tiny_http::Method::Get || head
                        {
                            metrics.answer(&path)
                        } else {
                            (405, "GET or HEAD only\n".into())
                        };
                        // HEAD: the status alone (load balancers' health checks).
                        let body = if head { String::new() } else { body };
                        let content_type = if path == "/metrics" {
                            "application/openmetrics-text; version=1.0.0; charset=utf-8"
                        } else {
                            "text/plain; charset=utf-8"
                        };
                        let mut response =
                            tiny_http::Response::from_string(body).with_status_code(status);
                        if let Ok(header) =
                            tiny_http::Header::from_bytes("Content-Type", content_type)
                        {
                            response = response.with_header(header);
                        }
                        let _ = request.respond(response);
                    }
                })
                .map_err(|e| format!("cannot start the metrics thread: {e}"))?
        };
        Ok(MetricsServer {
            stop,
            thread: Some(thread),
            address,
            server,
        })
    }

    /// The address it listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let registry = MetricsRegistry::new();
        let metrics = registry.consumer("demo");
        metrics.event("base");
        metrics.event("base");
        metrics.handler("archive", Outcome::Success);
        metrics.committed();
        metrics.gap(34);
        metrics.skipped(3);
        metrics.plugin_counters(&[("reconnects".into(), 2)]);
        metrics.set_view(&View {
            state: State::Running,
            lag: Some(7),
            events_per_second: 0.0,
        });
        let text = registry.encode();
        for line in [
            "buslink_events_total{consumer=\"demo\",category=\"base\"} 2",
            "buslink_handler_events_total{consumer=\"demo\",handler=\"archive\",outcome=\"success\"} 1",
            "buslink_commits_total{consumer=\"demo\"} 1",
            "buslink_gaps_total{consumer=\"demo\"} 1",
            "buslink_events_lost_total{consumer=\"demo\"} 34",
            "buslink_events_skipped_total{consumer=\"demo\"} 3",
            "buslink_lag_events{consumer=\"demo\"} 7",
            "buslink_consumer_state{consumer=\"demo\",state=\"running\"} 1",
            "buslink_consumer_state{consumer=\"demo\",state=\"stalled\"} 0",
            "buslink_plugin_counter{consumer=\"demo\",counter=\"reconnects\"} 2",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        for n in 0..150 {
            metrics.event(&format!("key-{n}"));
        }
        let text = registry.encode();
        assert_eq!(
            text.matches("buslink_events_total{").count(),
            MAX_CATEGORIES + 1
        );
        assert!(text.contains("category=\"other\"} 51"), "{text}");
        let view = |state, lag| View {
            state,
            lag,
            events_per_second: 0.0,
        };
        metrics.set_view(&view(State::Connecting, None));
        assert_eq!(registry.answer("/ready").0, 503);
        // An unknown lag is absent, not 0.
        assert!(!registry.encode().contains("buslink_lag_events{"));
        metrics.set_view(&view(State::Running, Some(0)));
        assert_eq!(registry.answer("/ready").0, 200);
        metrics.set_view(&view(State::Failed("the bus is gone".into()), None));
        assert_eq!(
            registry.answer("/health"),
            (503, "failed: the bus is gone\n".into())
        );
        assert_eq!(registry.answer("/health/demo").0, 503);
        assert_eq!(registry.answer("/health/other").0, 404);
    }

    #[test]
    fn a_consumer_removed_by_a_reload_leaves_no_series_behind() {
        let registry = MetricsRegistry::new();
        let gone = registry.consumer("gone");
        let kept = registry.consumer("kept");
        for metrics in [&gone, &kept] {
            metrics.event("base");
            metrics.handler("archive", Outcome::Success);
            metrics.committed();
            metrics.plugin_counters(&[("reconnects".into(), 2)]);
            metrics.set_view(&View {
                state: State::Running,
                lag: Some(1),
                events_per_second: 0.0,
            });
        }
        registry.keep_only(&["kept".to_owned()]);
        let text = registry.encode();
        assert!(!text.contains("consumer=\"gone\""), "{text}");
        assert!(
            text.contains("buslink_commits_total{consumer=\"kept\"} 1"),
            "{text}"
        );
        assert_eq!(registry.answer("/health").0, 200);
    }
}
