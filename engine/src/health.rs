//! A consumer's state and lag, with one owner.
//!
//! The reader, the dispatcher and the supervisor report **facts** into a consumer's [`Health`]:
//! its [`Phase`] (connecting, consuming, waiting for the bus, stopping, failed), the events read
//! and handled in this run (atomic counters: no lock per event), and the bus's own lag figure
//! with the read count it was taken at. The [`Monitor`] alone derives the consumer's [`State`]
//! and lag from those facts, every [`TICK`], and publishes them: the control socket and the
//! metrics read the [`View`], systemd hears the status line, the log gets one WARN on entering
//! a bad state and one INFO on leaving it, and progress lines keep coming whatever the
//! dispatcher is doing (a handler may block for minutes).
//!
//! **Lag** is the events on the bus after the last *handled* event (committed or not): the
//! plugin's figure (events after its read position) plus the events read and not handled
//! yet. It is refreshed at least every second whatever the consumer does (reading, blocked on
//! a handler, paused), and unknown (absent, never 0) while the bus cannot be asked: connecting,
//! waiting for the bus, failed, or a plugin that cannot tell.
//!
//! **Stalled**: events wait (lag, or events read and not handled) and none was handled for
//! `stall_after_s`; a paused consumer is `paused`, not stalled.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How often the monitor looks at every consumer.
pub const TICK: Duration = Duration::from_millis(100);

/// How often the reader asks the plugin for its lag and counters (at most; also while it
/// waits on a full queue or a pause).
pub const LAG_REFRESH: Duration = Duration::from_secs(1);

/// Wakes the monitor at once when a consumer's phase changes (otherwise it looks every
/// [`TICK`]): what is shown follows a change within microseconds.
static WAKE: (Mutex<bool>, Condvar) = (Mutex::new(false), Condvar::new());

fn wake_monitor() {
    *lock(&WAKE.0) = true;
    WAKE.1.notify_all();
}

/// Waits for the next tick, or less when woken.
fn wait_for_tick() {
    let woken = lock(&WAKE.0);
    let (mut woken, _) = WAKE
        .1
        .wait_timeout_while(woken, TICK, |woken| !*woken)
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    *woken = false;
}

/// The window over which events per second are measured.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// Where a consumer's run is, as the pipeline and the supervisor know it (facts, not the
/// state shown: see [`State`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Opening and positioning the consumer.
    Connecting,
    /// Open and positioned: reading and handling.
    Consuming,
    /// The bus failed or cannot be reached; retrying (why).
    Waiting(String),
    /// A stop began.
    Stopping,
    /// Stopped on an error (why, and the restart to come).
    Failed(String),
}

/// The state shown to operators (`ctl status`, `/health`, `/ready`, systemd, the metric
/// `buslink_consumer_state`), derived by the [`Monitor`] alone.
#[derive(Clone, Debug, PartialEq)]
pub enum State {
    Connecting,
    Running,
    /// Paused through the control socket: the dispatcher stopped between two events.
    Paused,
    /// A pause was asked for and the dispatcher has not stopped yet (a pause takes effect
    /// between two events); `in_hand`: its handlers hold an event.
    Pausing {
        in_hand: bool,
    },
    /// Waiting for the bus (why).
    Waiting(String),
    /// Events wait and none was handled for `stall_after_s`.
    Stalled {
        /// The events waiting (the lag, or those read and not handled when it is unknown).
        waiting: u64,
        /// Seconds since the last event handled, or since events began to wait.
        idle_s: u64,
        stall_after_s: u64,
    },
    Stopping,
    /// Stopped on an error (why).
    Failed(String),
}

impl State {
    /// Every state's label, in the order of the metric's series.
    pub const LABELS: [&'static str; 8] = [
        "connecting",
        "running",
        "paused",
        "pausing",
        "waiting",
        "stalled",
        "stopping",
        "failed",
    ];

    /// The label of the metric `buslink_consumer_state{state=...}`.
    pub fn label(&self) -> &'static str {
        match self {
            State::Connecting => "connecting",
            State::Running => "running",
            State::Paused => "paused",
            State::Pausing { .. } => "pausing",
            State::Waiting(_) => "waiting",
            State::Stalled { .. } => "stalled",
            State::Stopping => "stopping",
            State::Failed(_) => "failed",
        }
    }

    /// What `ctl status` and systemd show: `running`, `waiting for the bus: WHY`, ...
    pub fn text(&self) -> String {
        match self {
            State::Waiting(why) => format!("waiting for the bus: {why}"),
            State::Stalled {
                waiting,
                idle_s,
                stall_after_s,
            } => format!(
                "stalled: {waiting} events wait and none was handled for {idle_s} s \
                 (stall_after_s = {stall_after_s})"
            ),
            State::Failed(why) => format!("failed: {why}"),
            State::Pausing { in_hand: true } => "pausing: the handlers hold the event in hand; \
                                                 no event after it is handled"
                .to_owned(),
            other => other.label().to_owned(),
        }
    }

    /// A state an operator must hear about (one WARN on entering, one INFO on leaving).
    fn is_trouble(&self) -> bool {
        matches!(
            self,
            State::Waiting(_) | State::Stalled { .. } | State::Failed(_)
        )
    }
}

/// What the monitor last derived for a consumer.
#[derive(Clone, Debug)]
pub struct View {
    pub state: State,
    /// Events on the bus after the last handled event; `None`: unknown.
    pub lag: Option<u64>,
    /// Events handled per second over the last ten seconds.
    pub events_per_second: f64,
}

impl Default for View {
    fn default() -> Self {
        View {
            state: State::Connecting,
            lag: None,
            events_per_second: 0.0,
        }
    }
}

/// The bus's own lag figure and the read count it was taken at.
#[derive(Clone, Copy, Debug)]
struct BusLag {
    /// Events after the plugin's read position.
    after_read: u64,
    /// Events read (handed to the dispatcher) in this run when it was asked.
    read_then: u64,
}

/// One consumer's facts and derived view (kept across its restarts).
#[derive(Debug)]
pub struct Health {
    phase: Mutex<Phase>,
    /// Events the reader handed to the dispatcher in this run.
    read: AtomicU64,
    /// Events handled in this run (every matching handler accepted them, or passed over on
    /// purpose).
    handled: AtomicU64,
    /// Events the dispatcher began to hand to the handlers in this run: one more than
    /// `handled` while an event is in the handlers' hands.
    started: AtomicU64,
    /// Events handled since the cache was created, before this run.
    handled_before: AtomicU64,
    bus_lag: Mutex<Option<BusLag>>,
    /// Why the bus holds the consumer up though it answers, as the plugin last said (a
    /// group's long rebalance): shown as waiting for the bus while consuming.
    held_up: Mutex<Option<String>>,
    /// A stop of this run was asked for (a signal, `ctl quit`, a reload restarting it): shown
    /// as stopping at once, also while a handler still holds the event in hand.
    stop_asked: AtomicBool,
    /// The dispatcher stopped between two events for a pause (the pipeline's own word: the
    /// pause flag is the operator's wish, this is its effect).
    pause_in_effect: AtomicBool,
    /// Since when the reader has been inside the plugin's `poll`, and how long a poll may take
    /// (the consumer's timeout and a second): past that, what the bus said last is no longer
    /// news (the lag is unknown), and past max(that, 5 s) the consumer is shown waiting for
    /// the bus (a plugin or plugin process that does not answer).
    polling: Mutex<Option<(Instant, Duration)>>,
    /// Set by the monitor every tick; the dispatcher takes it between two events to do what
    /// is due by the clock (a commit by `every_ms`).
    tick: AtomicBool,
    stall_after_s: AtomicU64,
    /// Seconds between progress lines (0: none).
    stats_interval_s: AtomicU64,
    /// The plugin's counters, as the reader last read them.
    counters: Mutex<Vec<(String, u64)>>,
    gaps: AtomicU64,
    events_lost: AtomicU64,
    view: Mutex<View>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            phase: Mutex::new(Phase::Connecting),
            read: AtomicU64::new(0),
            handled: AtomicU64::new(0),
            started: AtomicU64::new(0),
            handled_before: AtomicU64::new(0),
            bus_lag: Mutex::new(None),
            held_up: Mutex::new(None),
            stop_asked: AtomicBool::new(false),
            pause_in_effect: AtomicBool::new(false),
            polling: Mutex::new(None),
            tick: AtomicBool::new(false),
            stall_after_s: AtomicU64::new(60),
            stats_interval_s: AtomicU64::new(0),
            counters: Mutex::new(Vec::new()),
            gaps: AtomicU64::new(0),
            events_lost: AtomicU64::new(0),
            view: Mutex::new(View::default()),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Health {
    /// A run begins: the counters start from zero; `handled_before` events were handled
    /// since the cache was created.
    pub fn begin_run(&self, handled_before: u64, stall_after_s: u64, stats_interval_s: u64) {
        self.read.store(0, Ordering::SeqCst);
        self.handled.store(0, Ordering::SeqCst);
        self.started.store(0, Ordering::SeqCst);
        self.handled_before.store(handled_before, Ordering::SeqCst);
        self.gaps.store(0, Ordering::SeqCst);
        self.events_lost.store(0, Ordering::SeqCst);
        *lock(&self.bus_lag) = None;
        *lock(&self.held_up) = None;
        self.stop_asked.store(false, Ordering::SeqCst);
        self.pause_in_effect.store(false, Ordering::SeqCst);
        self.stall_after_s
            .store(stall_after_s.max(1), Ordering::SeqCst);
        self.stats_interval_s
            .store(stats_interval_s, Ordering::SeqCst);
    }

    /// The run is in `phase` now.
    pub fn set_phase(&self, phase: Phase) {
        if !matches!(phase, Phase::Consuming) {
            // Whatever the bus said before does not hold while it cannot be asked.
            *lock(&self.bus_lag) = None;
            *lock(&self.held_up) = None;
        }
        *lock(&self.phase) = phase;
        wake_monitor();
    }

    /// A stop of this run was asked for: the consumer shows `stopping` from now on (until a
    /// new run begins), whatever its threads are doing.
    pub fn stop_asked(&self) {
        if !self.stop_asked.swap(true, Ordering::SeqCst) {
            wake_monitor();
        }
    }

    /// The dispatcher stopped for a pause (`true`, between two events, what it handled
    /// committed) or goes on (`false`). The dispatcher's alone.
    pub fn pause_taken(&self, taken: bool) {
        if self.pause_in_effect.load(Ordering::Relaxed) != taken {
            self.pause_in_effect.store(taken, Ordering::SeqCst);
            wake_monitor();
        }
    }

    /// Whether the handlers hold an event now (the dispatcher began to hand it over and it is
    /// not handled yet).
    pub fn in_hand(&self) -> bool {
        let handled = self.handled.load(Ordering::Relaxed);
        self.started.load(Ordering::Relaxed) > handled
    }

    /// Whether a pause holds every event now: the dispatcher stopped for it, or no run
    /// dispatches (a failed consumer waiting for its restart; the next run pauses first).
    pub fn pause_in_effect(&self) -> bool {
        self.pause_in_effect.load(Ordering::SeqCst)
            || matches!(*lock(&self.phase), Phase::Failed(_))
    }

    /// The reader calls the plugin's `poll`, which should answer within `timeout`.
    pub fn poll_began(&self, timeout: Duration) {
        *lock(&self.polling) = Some((Instant::now(), timeout + Duration::from_secs(1)));
    }

    /// The plugin's `poll` answered.
    pub fn poll_ended(&self) {
        *lock(&self.polling) = None;
    }

    /// How long the current `poll` has run past what it may take (`None`: not overdue).
    fn poll_overdue(&self, now: Instant) -> Option<(Duration, Duration)> {
        let (since, patience) = (*lock(&self.polling))?;
        let running = now.saturating_duration_since(since);
        (running > patience).then_some((running, patience))
    }

    /// The reader handed `count` events to the dispatcher.
    pub fn read(&self, count: u64) {
        self.read.fetch_add(count, Ordering::Relaxed);
    }

    /// The dispatcher begins to hand an event to the handlers.
    ///
    /// Only the dispatcher writes `started` and `handled` (one thread): a load and a store,
    /// no locked read-modify-write on the path of every event.
    pub fn started(&self) {
        self.started
            .store(self.handled.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// One event was handled (or passed over on purpose). The dispatcher's alone (see
    /// [`started`](Self::started)).
    pub fn handled(&self) {
        self.handled
            .store(self.handled.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// Events handled in this run.
    pub fn handled_this_run(&self) -> u64 {
        self.handled.load(Ordering::Relaxed)
    }

    /// The plugin's lag (events after its read position; `None`: it cannot tell), why the
    /// bus holds it up (`None`: it does not, or the plugin cannot tell) and its counters, read
    /// now by the reader.
    pub fn bus_answered(
        &self,
        lag: Option<u64>,
        held_up: Option<String>,
        counters: Vec<(String, u64)>,
    ) {
        let read_then = self.read.load(Ordering::Relaxed);
        *lock(&self.bus_lag) = lag.map(|after_read| BusLag {
            after_read,
            read_then,
        });
        let changed = {
            let mut was = lock(&self.held_up);
            let changed = *was != held_up;
            *was = held_up;
            changed
        };
        *lock(&self.counters) = counters;
        if changed {
            wake_monitor();
        }
    }

    /// A gap of `lost` events (0: unknown) was passed.
    pub fn gap(&self, lost: u64) {
        self.gaps.fetch_add(1, Ordering::Relaxed);
        self.events_lost.fetch_add(lost, Ordering::Relaxed);
    }

    /// Whether a tick passed since the last call (the dispatcher asks between two events:
    /// one atomic load).
    pub fn take_tick(&self) -> bool {
        self.tick.load(Ordering::Relaxed) && self.tick.swap(false, Ordering::Relaxed)
    }

    /// What the monitor last derived.
    pub fn view(&self) -> View {
        lock(&self.view).clone()
    }

    /// The plugin's counters as last read.
    pub fn counters(&self) -> Vec<(String, u64)> {
        lock(&self.counters).clone()
    }

    /// The lag now: the bus's figure plus what was read and not handled since, or `None`.
    /// `poll_overdue`: the plugin's poll runs past its time, so the bus was not asked since.
    fn lag(&self, phase: &Phase, poll_overdue: bool) -> Option<u64> {
        if !matches!(phase, Phase::Consuming) || poll_overdue {
            return None;
        }
        let known = (*lock(&self.bus_lag))?;
        let handled = self.handled.load(Ordering::Relaxed);
        Some((known.after_read + known.read_then).saturating_sub(handled))
    }

    /// Events read and not handled yet.
    fn in_flight(&self) -> u64 {
        self.read
            .load(Ordering::Relaxed)
            .saturating_sub(self.handled.load(Ordering::Relaxed))
    }
}

/// What the monitor keeps of one consumer between two ticks.
struct Track {
    handled: u64,
    /// When the last event was handled, or when events began to wait.
    progress_at: Instant,
    waiting: bool,
    /// (when, events handled) over the last [`RATE_WINDOW`].
    samples: VecDeque<(Instant, u64)>,
    state: State,
    last_progress_line: Instant,
}

/// Where a consumer's derived state goes besides its [`Health`]'s view: the metrics, systemd.
pub trait Publish: Send + Sync {
    /// The consumers to look at now: (name, health, paused, last committed offset).
    fn consumers(&self) -> Vec<Watched>;
    /// A consumer's state or lag changed (or a tick passed: called every tick).
    fn publish(&self, name: &str, view: &View, counters: &[(String, u64)]);
}

/// Who hears that a consumer's run is up (the daemon tells the service manager `READY=1` with
/// the status line): called with (consumer name, status line) once the pipeline's reader runs,
/// and before a Hermes-mode bootstrap that may wait long. The engine knows nothing of systemd.
#[derive(Clone)]
pub struct Ready(Arc<Hear>);

/// What [`Ready`] calls: (consumer name, status line).
type Hear = dyn Fn(&str, &str) + Send + Sync;

impl Ready {
    /// Calls `hear(consumer, status)` at each announcement.
    pub fn new(hear: impl Fn(&str, &str) + Send + Sync + 'static) -> Ready {
        Ready(Arc::new(hear))
    }

    /// Consumer `name`'s run is up, `status` says how.
    pub fn announce(&self, name: &str, status: &str) {
        (self.0)(name, status)
    }
}

impl std::fmt::Debug for Ready {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ready")
    }
}

/// One consumer as the monitor sees it.
pub struct Watched {
    pub name: String,
    pub health: Arc<Health>,
    pub paused: bool,
    pub committed: Option<String>,
}

/// The thread that derives every consumer's state (see the module's doc); stopped when
/// dropped.
pub struct Monitor {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Monitor {
    /// Starts the monitor over what `publish` lists, calling `alive` at every tick while it
    /// runs (the daemon pings the service manager's watchdog there: liveness of the daemon,
    /// not the speed of its handlers).
    pub fn start(
        publish: Arc<dyn Publish>,
        alive: impl Fn() + Send + 'static,
    ) -> std::io::Result<Monitor> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("monitor".into())
                .spawn(move || {
                    let mut tracks: HashMap<String, Track> = HashMap::new();
                    while !stop.load(Ordering::SeqCst) {
                        alive();
                        let watched = publish.consumers();
                        tracks.retain(|name, _| watched.iter().any(|w| &w.name == name));
                        for consumer in &watched {
                            let view = observe(&mut tracks, consumer, Instant::now());
                            let counters = consumer.health.counters();
                            publish.publish(&consumer.name, &view, &counters);
                        }
                        wait_for_tick();
                    }
                })?
        };
        Ok(Monitor {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        wake_monitor();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One tick for one consumer: derives its view, logs transitions and progress lines, and
/// stores the view in its health.
fn observe(tracks: &mut HashMap<String, Track>, consumer: &Watched, now: Instant) -> View {
    // Log lines carry the consumer's span, as its own threads' do.
    let _span = tracing::info_span!("consumer", name = %consumer.name).entered();
    let health = &consumer.health;
    health.tick.store(true, Ordering::Relaxed);
    let phase = lock(&health.phase).clone();
    let handled = health.handled.load(Ordering::Relaxed);
    let overdue = health.poll_overdue(now);
    let lag = health.lag(&phase, overdue.is_some());
    // Why the bus holds the consumer up while it consumes: as the plugin says, or a poll far
    // past its time (the plugin, or its process, does not answer).
    let held_up = lock(&health.held_up).clone().or_else(|| {
        overdue
            .filter(|(running, _)| *running >= Duration::from_secs(5))
            .map(|(running, patience)| {
                format!(
                    "the plugin's poll has not answered for {} s (it should within {} ms)",
                    running.as_secs(),
                    patience.saturating_sub(Duration::from_secs(1)).as_millis()
                )
            })
    });
    let track = tracks
        .entry(consumer.name.clone())
        .or_insert_with(|| Track {
            handled,
            progress_at: now,
            waiting: false,
            samples: VecDeque::new(),
            state: State::Connecting,
            last_progress_line: now,
        });
    if handled < track.handled {
        // A new run counts from zero.
        track.samples.clear();
        track.progress_at = now;
    }
    let waiting_events = lag.unwrap_or_else(|| health.in_flight());
    // An event in the handlers' hands (read after `handled`: `started` only grows first).
    let started = health.started.load(Ordering::Relaxed);
    let in_call = started > handled;
    if handled != track.handled
        || (!in_call
            && (consumer.paused || held_up.is_some() || !matches!(phase, Phase::Consuming)))
    {
        // Progress, or a time the consumer was not expected to make any (paused, connecting,
        // waiting for the bus): the stall clock starts again from here. Not while an event
        // stays in the handlers' hands: a handler blocked through a pause, an outage or a
        // hold-up of the bus is what stalls the consumer, whatever the bus does.
        track.progress_at = now;
    } else if waiting_events > 0 && !track.waiting {
        // Events begin to wait now: the stall clock starts here, not at the last event
        // handled hours ago.
        track.progress_at = now;
    }
    track.waiting = waiting_events > 0;
    track.handled = handled;
    track.samples.push_back((now, handled));
    while track
        .samples
        .front()
        .is_some_and(|(at, _)| now.duration_since(*at) > RATE_WINDOW)
    {
        track.samples.pop_front();
    }
    let events_per_second = match (track.samples.front(), track.samples.back()) {
        (Some((first, from)), Some((last, to))) if last > first => {
            let rate = (to - from) as f64 / last.duration_since(*first).as_secs_f64();
            (rate * 10.0).round() / 10.0
        }
        _ => 0.0,
    };
    let stall_after_s = health.stall_after_s.load(Ordering::Relaxed);
    let idle_s = now.duration_since(track.progress_at).as_secs();
    let stalled = waiting_events > 0 && idle_s >= stall_after_s;
    let stopping = health.stop_asked.load(Ordering::SeqCst);
    let state = match phase {
        // A stop asked for shows at once (the event in hand may take long to finish; a failed
        // consumer's restart will not come).
        _ if stopping => State::Stopping,
        Phase::Connecting => State::Connecting,
        Phase::Waiting(why) => State::Waiting(why),
        Phase::Stopping => State::Stopping,
        Phase::Failed(why) => State::Failed(why),
        // A pause takes effect between two events: one stuck in a handler stalls it still.
        Phase::Consuming if consumer.paused && !(in_call && stalled) => {
            if health.pause_in_effect.load(Ordering::SeqCst) {
                State::Paused
            } else {
                State::Pausing { in_hand: in_call }
            }
        }
        Phase::Consuming if held_up.is_some() => State::Waiting(held_up.unwrap_or_default()),
        Phase::Consuming if stalled => State::Stalled {
            waiting: waiting_events,
            idle_s,
            stall_after_s,
        },
        Phase::Consuming => State::Running,
    };
    if state.label() != track.state.label() {
        if state.is_trouble() {
            tracing::warn!("consumer now {}", state.text());
        } else if track.state.is_trouble() {
            // "running again"; a stop that ends the trouble is no return to anything.
            let again = if state == State::Running {
                " again"
            } else {
                ""
            };
            tracing::info!(
                "consumer {}{again} (was {})",
                state.text(),
                track.state.label()
            );
        }
    }
    track.state = state.clone();
    let view = View {
        state,
        lag,
        events_per_second,
    };
    let interval = health.stats_interval_s.load(Ordering::Relaxed);
    if interval > 0 && now.duration_since(track.last_progress_line).as_secs() >= interval {
        track.last_progress_line = now;
        progress_line(consumer, &view);
    }
    *lock(&health.view) = view.clone();
    view
}

/// `, gaps 1 (80 events known lost), reconnects 2, ...`: the gaps (when there were any) and
/// the plugin's counters, for the progress and stop lines.
pub fn counters_text(gaps: u64, events_lost: u64, counters: &[(String, u64)]) -> String {
    let mut text = match gaps {
        0 => String::new(),
        n => format!(", gaps {n} ({events_lost} events known lost)"),
    };
    for (name, value) in counters {
        // The plugin's own `gaps` is the figure just written (every plugin reports one).
        if gaps > 0 && name == "gaps" {
            continue;
        }
        text.push_str(&format!(", {name} {value}"));
    }
    text
}

/// The periodic progress line: state, events/s, totals, lag, last committed offset, gaps and
/// the plugin's counters.
fn progress_line(consumer: &Watched, view: &View) {
    let health = &consumer.health;
    let handled = health.handled.load(Ordering::Relaxed);
    let total = health.handled_before.load(Ordering::Relaxed) + handled;
    let lag = view
        .lag
        .map_or_else(|| "unknown".to_owned(), |lag| lag.to_string());
    let counters = counters_text(
        health.gaps.load(Ordering::Relaxed),
        health.events_lost.load(Ordering::Relaxed),
        &health.counters(),
    );
    tracing::info!(
        "progress: {:.1} events/s, {total} events in total, last committed offset {}, lag \
         {lag}, {handled} in this run{counters}; {}",
        view.events_per_second,
        consumer.committed.as_deref().unwrap_or("none"),
        view.state.text(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A consumer in a run (`stall_after_s`), consuming, the reader having handed over `read`
    /// events.
    fn consuming(stall_after_s: u64, read: u64) -> Arc<Health> {
        let health = Arc::new(Health::default());
        health.begin_run(0, stall_after_s, 0);
        health.set_phase(Phase::Consuming);
        health.read(read);
        health
    }

    fn watched(health: &Arc<Health>, paused: bool) -> Watched {
        Watched {
            name: "demo".into(),
            health: health.clone(),
            paused,
            committed: None,
        }
    }

    #[test]
    fn lag_counts_what_was_read_and_not_handled_and_is_unknown_while_the_bus_cannot_be_asked() {
        let health = Arc::new(Health::default());
        health.begin_run(0, 60, 0);
        health.set_phase(Phase::Consuming);
        // 50 events on the bus; the reader pulled all 50 into its queue: the plugin says 0.
        health.read(50);
        health.bus_answered(Some(0), None, Vec::new());
        let mut tracks = HashMap::new();
        let view = observe(&mut tracks, &watched(&health, false), Instant::now());
        assert_eq!(view.lag, Some(50));
        for _ in 0..20 {
            health.handled();
        }
        let view = observe(&mut tracks, &watched(&health, false), Instant::now());
        assert_eq!(view.lag, Some(30));
        health.set_phase(Phase::Waiting("the broker is down".into()));
        let view = observe(&mut tracks, &watched(&health, false), Instant::now());
        assert_eq!(view.lag, None);
        assert_eq!(view.state.text(), "waiting for the bus: the broker is down");
    }

    #[test]
    fn the_counters_text_names_the_gaps_once() {
        let counters = [("gaps".to_owned(), 1), ("reconnects".to_owned(), 2)];
        assert_eq!(
            counters_text(1, 0, &counters),
            ", gaps 1 (0 events known lost), reconnects 2"
        );
        assert_eq!(counters_text(0, 0, &[("gaps".to_owned(), 0)]), ", gaps 0");
    }

    #[test]
    fn waiting_events_with_no_progress_for_stall_after_is_stalled_and_paused_is_not() {
        let health = Arc::new(Health::default());
        health.begin_run(0, 2, 0);
        health.set_phase(Phase::Consuming);
        let mut tracks = HashMap::new();
        let start = Instant::now();
        // Idle for a long time: no events wait, so not stalled.
        let view = observe(&mut tracks, &watched(&health, false), start);
        assert_eq!(view.state, State::Running);
        let later = start + Duration::from_secs(100);
        assert_eq!(
            observe(&mut tracks, &watched(&health, false), later).state,
            State::Running
        );
        // Events arrive: the clock starts now.
        health.read(5);
        health.bus_answered(Some(0), None, Vec::new());
        assert_eq!(
            observe(&mut tracks, &watched(&health, false), later).state,
            State::Running
        );
        let paused = later + Duration::from_secs(3);
        // Asked for, not yet taken by the dispatcher: pausing; then paused.
        assert_eq!(
            observe(&mut tracks, &watched(&health, true), paused).state,
            State::Pausing { in_hand: false }
        );
        health.pause_taken(true);
        assert_eq!(
            observe(&mut tracks, &watched(&health, true), paused).state,
            State::Paused
        );
        health.pause_taken(false);
        // Resumed: the stall clock starts again at the resume, not at the pause.
        assert_eq!(
            observe(&mut tracks, &watched(&health, false), paused).state,
            State::Running
        );
        let stuck = paused + Duration::from_secs(3);
        let view = observe(&mut tracks, &watched(&health, false), stuck);
        assert_eq!(
            view.state,
            State::Stalled {
                waiting: 5,
                idle_s: 3,
                stall_after_s: 2
            }
        );
        // One event handled: running again.
        health.handled();
        let view = observe(&mut tracks, &watched(&health, false), stuck);
        assert_eq!(view.state, State::Running);
        assert_eq!(view.lag, Some(4));
    }

    #[test]
    fn a_handler_blocked_through_a_pause_and_an_outage_stalls_with_the_true_idle_time() {
        let health = consuming(2, 5);
        let mut tracks = HashMap::new();
        let start = Instant::now();
        health.bus_answered(Some(0), None, Vec::new());
        // The first event goes into a handler, which blocks.
        health.started();
        let at = |s: u64| start + Duration::from_secs(s);
        assert_eq!(
            observe(&mut tracks, &watched(&health, false), at(0)).state,
            State::Running
        );
        // Paused meanwhile: the pause waits for the event in hand, the handler stalls it.
        let view = observe(&mut tracks, &watched(&health, true), at(3));
        assert_eq!(view.state.label(), "stalled", "{view:?}");
        // The bus goes away and comes back: the stall clock does not start again.
        health.set_phase(Phase::Waiting("the bus is down".into()));
        let view = observe(&mut tracks, &watched(&health, false), at(4));
        assert_eq!(view.state.label(), "waiting");
        health.set_phase(Phase::Consuming);
        health.bus_answered(Some(0), None, Vec::new());
        let view = observe(&mut tracks, &watched(&health, false), at(5));
        assert_eq!(
            view.state,
            State::Stalled {
                waiting: 5,
                idle_s: 5,
                stall_after_s: 2
            }
        );
        // The handler returns: running.
        health.handled();
        let view = observe(&mut tracks, &watched(&health, false), at(5));
        assert_eq!(view.state, State::Running);
        // With nothing in hand, a pause and an outage start the clock again.
        health.pause_taken(true);
        let view = observe(&mut tracks, &watched(&health, true), at(9));
        assert_eq!(view.state, State::Paused);
        health.pause_taken(false);
        let view = observe(&mut tracks, &watched(&health, false), at(10));
        assert_eq!(view.state, State::Running);
    }

    #[test]
    fn a_poll_far_past_its_timeout_makes_the_lag_unknown_then_the_consumer_waiting() {
        let health = Arc::new(Health::default());
        health.begin_run(0, 60, 0);
        health.set_phase(Phase::Consuming);
        health.bus_answered(Some(0), None, Vec::new());
        let mut tracks = HashMap::new();
        health.poll_began(Duration::from_secs(1));
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        // Within the timeout and its second: what the bus said last holds.
        let view = observe(&mut tracks, &watched(&health, false), at(1500));
        assert_eq!((view.lag, view.state.clone()), (Some(0), State::Running));
        // Past it: the bus could not be asked since, the lag is unknown.
        let view = observe(&mut tracks, &watched(&health, false), at(2500));
        assert_eq!((view.lag, view.state.clone()), (None, State::Running));
        // Five seconds: the plugin does not answer.
        let view = observe(&mut tracks, &watched(&health, false), at(6200));
        assert_eq!(
            view.state.text(),
            "waiting for the bus: the plugin's poll has not answered for 6 s (it should \
             within 1000 ms)"
        );
        health.poll_ended();
        let view = observe(&mut tracks, &watched(&health, false), at(6300));
        assert_eq!((view.lag, view.state), (Some(0), State::Running));
    }

    #[test]
    fn a_consumer_the_bus_holds_up_is_waiting_for_the_bus_until_it_is_not_and_never_stalled() {
        let health = consuming(2, 5);
        let mut tracks = HashMap::new();
        let start = Instant::now();
        health.bus_answered(None, Some("a rebalance for 6 s".into()), Vec::new());
        let view = observe(&mut tracks, &watched(&health, false), start);
        assert_eq!(
            view.state.text(),
            "waiting for the bus: a rebalance for 6 s"
        );
        assert_eq!(view.state.label(), "waiting");
        // However long the hold-up, 5 events read and none handled: not stalled.
        let later = start + Duration::from_secs(30);
        let view = observe(&mut tracks, &watched(&health, false), later);
        assert_eq!(view.state.label(), "waiting");
        // Paused by the operator: paused wins.
        health.pause_taken(true);
        let view = observe(&mut tracks, &watched(&health, true), later);
        assert_eq!(view.state, State::Paused);
        health.pause_taken(false);
        // The hold-up ends: running, and the stall clock starts there.
        health.bus_answered(Some(0), None, Vec::new());
        let view = observe(&mut tracks, &watched(&health, false), later);
        assert_eq!(view.state, State::Running);
        assert_eq!(view.lag, Some(5));
        let view = observe(
            &mut tracks,
            &watched(&health, false),
            later + Duration::from_secs(2),
        );
        assert_eq!(view.state.label(), "stalled");
        // A new phase forgets what the plugin said before.
        health.bus_answered(None, Some("a rebalance for 6 s".into()), Vec::new());
        health.set_phase(Phase::Connecting);
        health.set_phase(Phase::Consuming);
        let view = observe(&mut tracks, &watched(&health, false), later);
        assert_eq!(view.state, State::Running);
    }
}
