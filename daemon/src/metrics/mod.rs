//! Metrics and health over HTTP, opt-in (`[metrics] listen = "127.0.0.1:9464"`):
//!
//! - `GET /metrics`: the classic Prometheus text format, or OpenMetrics when the scraper asks
//!   for it ([`exposition`]); per consumer: events by category, handler outcomes, commits and
//!   the last commit's time, gaps and events lost, reconnects, lag, state and the plugin's own
//!   counts; per process: `buslink_build_info` and the usual `process_*` series ([`process`]).
//! - `GET /health`: 200 while the consumer runs, is paused or waits for its bus; 503 with the
//!   reason when it is stalled, stopping or failed. `/health/NAME`: one consumer's (a stalled
//!   consumer must not make a liveness probe restart the others).
//! - `GET /ready`: 200 while the consumer runs (or is paused); 503 with the reason while it
//!   connects, waits for its bus, is stalled, stops or failed. `/ready/NAME`: one consumer's.
//!
//! The state and the lag are the [`health`](crate::health) monitor's, published here (and in
//! `buslink_consumer_state`) every tick. The series themselves (names, help, labels) are the
//! engine's (`engine/src/metrics.rs`); this module owns the registry and its HTTP server.

pub mod exposition;
pub mod process;

use crate::health::State;
pub use buslink_engine::metrics::{Families, HandlerCounters, Metrics, Outcome};
use exposition::Format;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

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
        let families = Families::register(&mut registry);
        registry.register(
            "buslink_build",
            "The version of buslink and of the plugin API it loads plugins of",
            prometheus_client::metrics::info::Info::new(vec![
                ("version", env!("CARGO_PKG_VERSION")),
                ("plugin_api", buslink_plugin_api::API_VERSION),
            ]),
        );
        registry.register_collector(Box::new(process::ProcessCollector));
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
        if let Some(known) = consumers.iter().find(|m| m.name() == name) {
            return known.clone();
        }
        let metrics = Arc::new(Metrics::new(&self.families, name));
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
            .filter(|m| !names.iter().any(|n| n == m.name()))
        {
            gone.remove_from(&self.families);
        }
        consumers.retain(|m| names.iter().any(|n| n == m.name()));
    }

    /// The OpenMetrics text of every series (`GET /metrics` in the format asked for: see
    /// [`encode_as`](Self::encode_as)).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }

    /// The text for `GET /metrics` in `format`.
    pub fn encode_as(&self, format: Format) -> String {
        match format {
            Format::OpenMetrics => self.encode(),
            Format::Classic => exposition::to_classic(&self.encode()),
        }
    }

    /// The metrics of consumer `name`, if it has some.
    pub fn get(&self, name: &str) -> Option<Arc<Metrics>> {
        self.consumers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .find(|m| m.name() == name)
            .cloned()
    }

    /// (status, body) for a path. With several consumers, `/health` and `/ready` answer 200
    /// only when each would alone, and the body has a line per consumer; `/health/NAME` and
    /// `/ready/NAME` answer for one.
    fn answer(&self, path: &str, format: Format) -> (u16, String) {
        if path == "/metrics" {
            return (200, self.encode_as(format));
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
            return match consumers.iter().find(|m| m.name() == name) {
                Some(m) => health_answer(&m.state(), path),
                None => (404, format!("no consumer '{name}'\n")),
            };
        }
        let answers: Vec<(String, (u16, String))> = consumers
            .iter()
            .map(|m| (m.name().to_owned(), health_answer(&m.state(), path)))
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

#[cfg(test)]
impl MetricsRegistry {
    fn answer_plain(&self, path: &str) -> (u16, String) {
        self.answer(path, Format::Classic)
    }
}

/// One consumer's answer to `/health` or `/ready`.
fn health_answer(state: &State, path: &str) -> (u16, String) {
    match path {
        "/health" => match state {
            State::Stalled { .. } | State::Stopping | State::Failed(_) => {
                (503, format!("{}\n", state.text()))
            }
            State::Waiting(_) | State::Paused | State::Pausing { .. } => {
                (200, format!("ok ({})\n", state.text()))
            }
            State::Connecting | State::Running => (200, "ok\n".into()),
        },
        "/ready" => match state {
            State::Running => (200, "ready\n".into()),
            State::Paused => (200, "ready (paused)\n".into()),
            State::Pausing { .. } => (200, "ready (pausing)\n".into()),
            State::Connecting => (503, "connecting to the bus\n".into()),
            other => (503, format!("{}\n", other.text())),
        },
        _ => (
            404,
            "not found: /metrics, /health[/NAME], /ready[/NAME]\n".into(),
        ),
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
                        let format = exposition::negotiate(
                            request
                                .headers()
                                .iter()
                                .find(|h| h.field.equiv("Accept"))
                                .map(|h| h.value.as_str()),
                        );
                        let (status, body) = if request.method() == &tiny_http::Method::Get || head
                        {
                            metrics.answer(&path, format)
                        } else {
                            (405, "GET or HEAD only\n".into())
                        };
                        // HEAD: the status alone (load balancers' health checks).
                        let body = if head { String::new() } else { body };
                        let content_type = if path == "/metrics" {
                            format.content_type()
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
    use crate::health::View;
    use buslink_engine::metrics::MAX_CATEGORIES;

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
        metrics.restarted();
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
            "buslink_restarts_total{consumer=\"demo\"} 1",
            "buslink_lag_events{consumer=\"demo\"} 7",
            "buslink_consumer_state{consumer=\"demo\",state=\"running\"} 1",
            "buslink_consumer_state{consumer=\"demo\",state=\"stalled\"} 0",
            "buslink_plugin_counts_total{consumer=\"demo\",name=\"reconnects\"} 2",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        let build = format!(
            "buslink_build_info{{version=\"{}\",plugin_api=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION"),
            buslink_plugin_api::API_VERSION
        );
        assert!(text.contains(&build), "{build} in\n{text}");
        // The classic format names each family by its samples.
        let classic = registry.encode_as(Format::Classic);
        for line in [
            "# TYPE buslink_events_total counter",
            "# TYPE buslink_build_info gauge",
            "# TYPE process_cpu_seconds_total counter",
            "# TYPE buslink_plugin_counts_total counter",
        ] {
            assert!(classic.contains(line), "{line} in\n{classic}");
        }
        assert!(!classic.contains("# EOF"), "{classic}");
        // A plugin counter adds its increases, and a restarted plugin's count from 0.
        metrics.plugin_counters(&[("reconnects".into(), 5)]);
        metrics.plugin_counters(&[("reconnects".into(), 1), ("plugin_process_pid".into(), 42)]);
        let text = registry.encode();
        for line in [
            "buslink_plugin_counts_total{consumer=\"demo\",name=\"reconnects\"} 6",
            "buslink_plugin_process_pid{consumer=\"demo\"} 42",
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
        assert_eq!(registry.answer_plain("/ready").0, 503);
        // An unknown lag is absent, not 0.
        assert!(!registry.encode().contains("buslink_lag_events{"));
        metrics.set_view(&view(State::Running, Some(0)));
        assert_eq!(registry.answer_plain("/ready").0, 200);
        metrics.set_view(&view(State::Failed("the bus is gone".into()), None));
        assert_eq!(
            registry.answer_plain("/health"),
            (503, "failed: the bus is gone\n".into())
        );
        assert_eq!(registry.answer_plain("/health/demo").0, 503);
        assert_eq!(registry.answer_plain("/health/other").0, 404);
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
        assert_eq!(registry.answer_plain("/health").0, 200);
    }
}
