//! The host's side of the subprocess protocol ([`wire`](crate::wire);
//! docs/subprocess-protocol.md): a plugin executable run as a child process and driven as a
//! [`Consumer`], so that everything that drives a consumer (the buslink host through
//! [`ffi::consumer_box`](crate::ffi::consumer_box), the conformance kit) drives it unchanged.
//!
//! The child runs in a process group of its own, with a clean environment (`PATH`, `HOME`,
//! `LANG`, `TZ` and the plugin's own `env`). Its standard output carries frames only; its
//! standard error is taken into the host's log (`[Level] message` lines at that level), at most
//! [`STDERR_LINES_PER_SECOND`] lines a second. A child that dies, writes something that is not
//! a frame, or does not answer within the call's time (a poll's timeout plus
//! [`CallLimits::grace`]) is killed with its group and the call fails with a transient error
//! naming the exit status or signal; the next `open` starts a new child (the host re-opens
//! after a transient error, with backoff).

use crate::error::{PluginError, PluginResult};
use crate::event::EventBatch;
use crate::log::Level;
use crate::offset::{Offset, OffsetRef};
use crate::wire::{
    read_frame_with, write_frame, Batch, FrameError, Hello, Op, Outcome, Reply, Request,
    VersionRange, PROTOCOL,
};
use crate::{Consumer, PollStatus};
use serde_json::value::RawValue;
use std::io::{BufRead, BufReader, BufWriter, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// The most lines of a child's standard error taken into the log per second; the rest are
/// counted and said in one line.
pub const STDERR_LINES_PER_SECOND: u32 = 50;

/// The size asked for the pipes to and from a child (a batch's frame in one go).
const PIPE_BYTES: libc::c_int = 1 << 20;

/// How long the host waits for answers.
#[derive(Clone, Copy, Debug)]
pub struct CallLimits {
    /// A call other than `poll` (and `poll` without a timeout is bounded by this too).
    pub call: Duration,
    /// Added to a poll's timeout.
    pub grace: Duration,
}

impl Default for CallLimits {
    fn default() -> Self {
        CallLimits {
            call: Duration::from_secs(30),
            grace: Duration::from_secs(5),
        }
    }
}

/// What to run and what to ask of it.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The program and its arguments (the program resolved already).
    pub command: Vec<String>,
    /// Extra environment variables (`[consumer.plugin] env`).
    pub env: Vec<(String, String)>,
    /// The class to build.
    pub class: String,
    /// `[consumer.settings]`.
    pub settings: serde_json::Value,
    /// The config file's directory (the child's working directory too).
    pub config_dir: PathBuf,
    /// How long calls may take.
    pub limits: CallLimits,
    /// Logs every frame to and from the child (`trace_frames = true`): the JSON part whole
    /// (up to [`TRACE_BYTES`]) and the size of the body section.
    pub trace_frames: bool,
}

/// The most bytes of a frame's JSON part a trace line shows.
pub const TRACE_BYTES: usize = 4096;

/// Starts the executable of `spec`, shakes hands and ends it: what it says it is (its name,
/// version, classes, protocol and capabilities). Its class and settings are not used.
pub fn describe(spec: &Spec) -> PluginResult<Hello> {
    let (running, hello, _) = spawn(spec)?;
    drop(running);
    Ok(hello)
}

/// A running child and the pipes to it.
struct Running {
    child: Child,
    input: BufWriter<ChildStdin>,
    replies: Receiver<Result<Answer, FrameError>>,
    next_id: u64,
}

/// A reply, with its frame (the body section is `frame[section..]`).
struct Answer {
    reply: Reply,
    frame: Vec<u8>,
    section: usize,
}

/// An answer's value and the frame's body section.
struct Answered {
    value: Box<RawValue>,
    frame: Vec<u8>,
    section: usize,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = write_frame(
            &mut self.input,
            &Request {
                id: u64::MAX,
                op: Op::Bye,
            },
        );
        // The child gets a moment to end by itself (looked at often at first: it usually
        // ends at once), then its group is killed.
        let deadline = Instant::now() + Duration::from_millis(500);
        let mut pause = Duration::from_micros(50);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(5));
        }
        kill_group(&mut self.child);
    }
}

fn kill_group(child: &mut Child) {
    // SAFETY: kill(2) on the process group the child leads (it was started in its own group).
    unsafe {
        libc::kill(-(child.id() as i32), libc::SIGKILL);
    }
    let _ = child.wait();
}

/// A plugin executable driven as a [`Consumer`].
pub struct SubprocessConsumer {
    spec: Spec,
    running: Option<Running>,
    hello: Hello,
    timeout: Option<Duration>,
    /// The child's pid, and how many children were started (for status and metrics).
    pid: u32,
    starts: u64,
    /// The class's answer to `bus_owns_position`, asked once it is built.
    bus_owns_position: bool,
    /// The plugin's own counters, as it answered last (asked with the lag: `counters` is a
    /// `&self` call, which cannot wait on the child).
    plugin_counters: Vec<(String, u64)>,
    /// The polls sent ahead of the caller's (read-ahead), or their replies kept, in order.
    ahead: std::collections::VecDeque<Ahead>,
    /// The offset of the last event handed to the caller (where a dropped read-ahead puts
    /// the child back).
    handed_over: Option<Offset>,
}

/// The most polls sent ahead of the caller's: two, so that the child always has the next
/// request waiting when it finishes a batch.
const READ_AHEAD: usize = 2;

/// A poll's `(max_events, max_bytes)`.
type Limits = (usize, usize);

/// Read-ahead: while the caller handles a full batch, the child reads the next ones (at most
/// [`READ_AHEAD`] polls in flight). Only when a poll filled its batch (a backlog: the next poll
/// answers at once), never for a bus that keeps the position (its acknowledgements follow the
/// caller's pace).
enum Ahead {
    /// The poll is sent, its reply not yet received.
    Sent { id: u64, limits: Limits },
    /// Its reply, kept for the next poll.
    Received {
        limits: Limits,
        result: PluginResult<(Batch, Answered)>,
    },
}

/// What another request does with a read-ahead.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// Kept for the next poll (the call does not move the position).
    Kept,
    /// Dropped: the call positions the consumer anew, or closes it.
    Dropped,
    /// Dropped, and the child put back after the last event handed over (the call reads).
    PutBack,
}

/// What a request `op` does with a read-ahead.
fn op_keeps_read_ahead(op: &Op) -> Keep {
    match op {
        Op::Open
        | Op::Close
        | Op::SeekToBeginning
        | Op::SeekToEnd
        | Op::Seek { .. }
        | Op::SeekAfter { .. }
        | Op::NewConsumer { .. }
        | Op::Hello { .. }
        | Op::Bye => Keep::Dropped,
        Op::FindNextEventOfCategory { .. } | Op::Poll { .. } => Keep::PutBack,
        _ => Keep::Kept,
    }
}

/// Parses a batch reply (`label`: the child, for errors).
fn parse_batch_of(label: &str) -> impl Fn(Answered) -> PluginResult<(Batch, Answered)> + '_ {
    move |answered| {
        let batch = serde_json::from_str(answered.value.get()).map_err(|e| {
            PluginError::protocol(format!("{label}: a batch of the wrong shape: {e}"))
        })?;
        Ok((batch, answered))
    }
}

impl SubprocessConsumer {
    /// How long a `poll` may take before the child counts as frozen: the timeout plus the
    /// grace; none without a timeout. `set_timeout` tells the child the same limit.
    fn poll_limit(&self) -> Option<Duration> {
        self.timeout
            .map(|timeout| timeout.saturating_add(self.spec.limits.grace))
    }

    /// Starts the child, agrees on a protocol version and builds the consumer (the class
    /// checks its settings).
    pub fn start(spec: Spec) -> PluginResult<SubprocessConsumer> {
        let (running, hello, pid) = spawn(&spec)?;
        let mut consumer = SubprocessConsumer {
            spec,
            running: Some(running),
            hello,
            timeout: None,
            pid,
            starts: 1,
            bus_owns_position: false,
            plugin_counters: Vec::new(),
            ahead: std::collections::VecDeque::new(),
            handed_over: None,
        };
        consumer.new_consumer()?;
        Ok(consumer)
    }

    /// What the child said at the handshake: its name, version, classes, protocol and
    /// capabilities.
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// The current child's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// How many children were started (1 until one died and was replaced).
    pub fn starts(&self) -> u64 {
        self.starts
    }

    fn new_consumer(&mut self) -> PluginResult<()> {
        let op = Op::NewConsumer {
            class: self.spec.class.clone(),
            settings: self.spec.settings.clone(),
            config_dir: self.spec.config_dir.display().to_string(),
        };
        self.call(op, Some(self.spec.limits.call))?;
        if self.has("bus_owns_position") {
            self.bus_owns_position = self.value(Op::BusOwnsPosition)?;
        }
        Ok(())
    }

    fn has(&self, capability: &str) -> bool {
        self.hello.capabilities.iter().any(|c| c == capability)
    }

    fn name(&self) -> String {
        format!(
            "plugin process '{}' (pid {})",
            self.spec.command.first().map(String::as_str).unwrap_or(""),
            self.pid
        )
    }

    /// Sends `op` and waits for its answer until `limit` (`None`: for ever).
    fn call(&mut self, op: Op, limit: Option<Duration>) -> PluginResult<Answered> {
        self.settle_ahead(op_keeps_read_ahead(&op))?;
        let what = op_name(&op);
        let id = self.send(op)?;
        self.receive(id, &what, limit)
    }

    /// Sends `op`: its request id.
    fn send(&mut self, op: Op) -> PluginResult<u64> {
        let name = self.name();
        let Some(running) = self.running.as_mut() else {
            return Err(PluginError::connect(format!(
                "{name} is not running (it is started again at the next open)"
            )));
        };
        let id = running.next_id;
        running.next_id += 1;
        let what = op_name(&op);
        let request = Request { id, op };
        if self.spec.trace_frames {
            trace_request(&name, &request);
        }
        if let Err(error) = write_frame(&mut running.input, &request) {
            return Err(self.ended(format!("cannot send {what}: {error}")));
        }
        Ok(id)
    }

    /// Waits for the answer to request `id` (`what`) until `limit` (`None`: for ever).
    fn receive(&mut self, id: u64, what: &str, limit: Option<Duration>) -> PluginResult<Answered> {
        let name = self.name();
        let Some(running) = self.running.as_mut() else {
            return Err(PluginError::connect(format!(
                "{name} is not running (it is started again at the next open)"
            )));
        };
        let received = match limit {
            Some(limit) => running.replies.recv_timeout(limit),
            None => running
                .replies
                .recv()
                .map_err(|_| RecvTimeoutError::Disconnected),
        };
        if self.spec.trace_frames {
            if let Ok(Ok(answer)) = &received {
                trace_reply(&name, &answer.frame, answer.section);
            }
        }
        match received {
            Ok(Ok(Answer {
                reply,
                frame,
                section,
            })) if reply.id == id => match reply.outcome() {
                Outcome::Ok(value) => Ok(Answered {
                    value,
                    frame,
                    section,
                }),
                Outcome::Error(error) => Err(from_wire(error)),
            },
            Ok(Ok(answer)) => Err(self.lost(format!(
                "answered request {} while {what} (request {id}) waited: out of step",
                answer.reply.id
            ))),
            Ok(Err(FrameError::Closed)) | Err(RecvTimeoutError::Disconnected) => {
                Err(self.ended(format!("ended during {what}")))
            }
            Ok(Err(error @ FrameError::Truncated { .. })) => {
                Err(self.ended(format!("ended during {what}: {error}")))
            }
            Ok(Err(error)) => Err(self.lost(format!("during {what}: {error}"))),
            Err(RecvTimeoutError::Timeout) => {
                let waited = limit.unwrap_or_default();
                let error = self.lost(format!(
                    "did not answer {what} within {} ms",
                    waited.as_millis()
                ));
                Err(PluginError::timeout(error.message().to_owned()))
            }
        }
    }

    /// Before another request: the poll read ahead is received (the pipe stays in step) and
    /// kept for the next `poll` (`keep`), or dropped, and the child put back after the last
    /// event handed over when it must read on from there (`keep` false for a call that reads:
    /// `find_next_event_of_category`; a positioning call or `close` needs no putting back).
    fn settle_ahead(&mut self, keep: Keep) -> PluginResult<()> {
        if self.ahead.is_empty() {
            return Ok(());
        }
        let mut settled = std::collections::VecDeque::new();
        while let Some(ahead) = self.ahead.pop_front() {
            settled.push_back(match ahead {
                Ahead::Sent { id, limits } => {
                    let limit = self.poll_limit();
                    Ahead::Received {
                        limits,
                        result: self
                            .receive(id, "poll", limit)
                            .and_then(parse_batch_of(&self.name())),
                    }
                }
                received => received,
            });
            if self.running.is_none() {
                // The child died: the polls still in flight died with it.
                self.ahead.clear();
                break;
            }
        }
        match keep {
            Keep::Kept => {
                self.ahead = settled;
                Ok(())
            }
            Keep::Dropped => Ok(()),
            // A dead child is started again at the next open, positioned by the host.
            Keep::PutBack => match self.handed_over.clone() {
                Some(last) if self.running.is_some() => self.seek_after(&last),
                _ => Ok(()),
            },
        }
    }

    /// The child is gone or no use: killed with its group, its end said, and a transient
    /// error naming `what` (the next `open` starts another).
    fn lost(&mut self, what: String) -> PluginError {
        self.lost_child(what, false)
    }

    /// [`lost`](Self::lost) for a child whose pipe ended: its exit status is waited for a
    /// moment before it is killed.
    fn ended(&mut self, what: String) -> PluginError {
        self.lost_child(what, true)
    }

    fn lost_child(&mut self, what: String, ending: bool) -> PluginError {
        let name = self.name();
        // What the child read ahead goes with it (the host positions the next one).
        self.ahead.clear();
        let end = match self.running.take() {
            Some(mut running) => {
                // A child whose pipe closed is ending: its status comes a moment later.
                let deadline = Instant::now() + Duration::from_millis(500);
                let status = loop {
                    match running.child.try_wait() {
                        Ok(Some(status)) => break Some(status),
                        Ok(None) if ending && Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        _ => {
                            kill_group(&mut running.child);
                            break None;
                        }
                    }
                };
                // Dropping `running` now only finds the child ended.
                match status {
                    Some(status) => match (status.code(), status.signal()) {
                        (Some(code), _) => format!("; it exited with status {code}"),
                        (None, Some(signal)) => format!("; it was killed by signal {signal}"),
                        _ => String::new(),
                    },
                    None => "; killed".to_owned(),
                }
            }
            None => String::new(),
        };
        PluginError::connect(format!(
            "{name} {what}{end}; it is started again at the next open"
        ))
    }

    fn unit(&mut self, op: Op) -> PluginResult<()> {
        let limit = self.spec.limits.call;
        self.call(op, Some(limit)).map(|_| ())
    }

    fn value<T: serde::de::DeserializeOwned>(&mut self, op: Op) -> PluginResult<T> {
        let limit = self.spec.limits.call;
        let answered = self.call(op, Some(limit))?;
        serde_json::from_str(answered.value.get()).map_err(|e| {
            PluginError::protocol(format!(
                "{}: an answer of the wrong shape: {e}",
                self.name()
            ))
        })
    }

    /// A batch and the frame holding its bodies (`frame[section..]`).
    fn batch(&mut self, op: Op, limit: Option<Duration>) -> PluginResult<(Batch, Answered)> {
        let answered = self.call(op, limit)?;
        parse_batch_of(&self.name())(answered)
    }
}

/// A trace line for a request sent (`trace_frames`).
fn trace_request(name: &str, request: &Request) {
    let json = serde_json::to_string(request).unwrap_or_default();
    crate::log::info(format!("{name} <- {}", shorten(&json)));
}

/// A trace line for a reply received (`trace_frames`): its JSON part, and the size of its
/// body section.
fn trace_reply(name: &str, frame: &[u8], section: usize) {
    let json = String::from_utf8_lossy(frame.get(4..section).unwrap_or_default());
    let bodies = frame.len().saturating_sub(section);
    crate::log::info(format!(
        "{name} -> {}{}",
        shorten(&json),
        if bodies > 0 {
            format!(" + {bodies} bytes of bodies")
        } else {
            String::new()
        }
    ));
}

/// `text`, cut at [`TRACE_BYTES`] (on a character boundary) with the size left out said.
fn shorten(text: &str) -> String {
    if text.len() <= TRACE_BYTES {
        return text.to_owned();
    }
    let mut end = TRACE_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} more bytes)", &text[..end], text.len() - end)
}

fn op_name(op: &Op) -> String {
    serde_json::to_value(op)
        .ok()
        .and_then(|value| value["op"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "a call".into())
}

fn from_wire(error: crate::wire::WireError) -> PluginError {
    let plugin_error = PluginError::new(crate::wire::kind_of(&error.kind), error.message);
    match error.key {
        Some(key) => plugin_error.with_key(key),
        None => plugin_error,
    }
}

/// Starts the child and shakes hands.
fn spawn(spec: &Spec) -> PluginResult<(Running, Hello, u32)> {
    let Some((program, args)) = spec.command.split_first() else {
        return Err(PluginError::config("the plugin's command is empty").with_key("plugin"));
    };
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(&spec.config_dir)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for kept in ["PATH", "HOME", "LANG", "TZ"] {
        if let Some(value) = std::env::var_os(kept) {
            command.env(kept, value);
        }
    }
    for (name, value) in &spec.env {
        command.env(name, value);
    }
    let mut child = command
        .spawn()
        .map_err(|e| PluginError::connect(format!("cannot start {program}: {e}")))?;
    let pid = child.id();
    let (Some(input), Some(output), Some(errors)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        kill_group(&mut child);
        return Err(PluginError::internal("the child's pipes were not set up"));
    };
    let label = format!("{program} (pid {pid})");
    // A batch's frame fits the pipe whole (fewer switches between the two processes); a
    // kernel that refuses keeps its default.
    for fd in [
        std::os::fd::AsRawFd::as_raw_fd(&output),
        std::os::fd::AsRawFd::as_raw_fd(&input),
    ] {
        // SAFETY: fcntl(2) on a pipe descriptor this process owns.
        unsafe {
            libc::fcntl(fd, libc::F_SETPIPE_SZ, PIPE_BYTES);
        }
    }
    forward_stderr(errors, label.clone());
    let (tx, replies) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("plugin-frames".into())
        .spawn(move || {
            let mut output = BufReader::new(output);
            loop {
                let mut frame = Vec::new();
                let read =
                    read_frame_with::<Reply>(&mut output, &mut frame).map(|(reply, section)| {
                        Answer {
                            reply,
                            frame,
                            section,
                        }
                    });
                let end = read.is_err();
                if tx.send(read).is_err() || end {
                    return;
                }
            }
        });
    if spawned.is_err() {
        kill_group(&mut child);
        return Err(PluginError::internal(
            "cannot start the thread reading the child",
        ));
    }
    let mut running = Running {
        child,
        input: BufWriter::new(input),
        replies,
        next_id: 1,
    };
    let hello_request = Request {
        id: 0,
        op: Op::Hello {
            protocol: PROTOCOL,
            host: concat!("buslink-plugin-api ", env!("CARGO_PKG_VERSION")).into(),
        },
    };
    if let Err(error) = write_frame(&mut running.input, &hello_request) {
        return Err(PluginError::connect(format!(
            "{label}: cannot send the handshake: {error}"
        )));
    }
    let reply = match running.replies.recv_timeout(spec.limits.call) {
        Ok(Ok(answer)) => answer.reply,
        Ok(Err(error)) => {
            return Err(PluginError::protocol(format!(
                "{label}: no handshake: {error}"
            )))
        }
        Err(_) => {
            return Err(PluginError::timeout(format!(
                "{label}: no handshake within {} ms",
                spec.limits.call.as_millis()
            )))
        }
    };
    if reply.id != 0 {
        return Err(PluginError::protocol(format!(
            "{label}: answered the handshake (request 0) as request {}",
            reply.id
        )));
    }
    let hello: Hello = match reply.outcome() {
        Outcome::Ok(value) => serde_json::from_str(value.get()).map_err(|e| {
            PluginError::protocol(format!("{label}: a handshake of the wrong shape: {e}"))
        })?,
        // A plugin that refuses the handshake (versions without overlap, most likely) is
        // refused in turn: another build of it is needed, a restart would not help.
        Outcome::Error(error) => {
            return Err(PluginError::config(format!(
                "{label} refused the handshake: {}",
                error.message
            ))
            .with_key("plugin"))
        }
    };
    refuse_versions(&label, hello.protocol, hello.chosen)?;
    Ok((running, hello, pid))
}

/// A plugin whose versions do not overlap the host's, or that chose one the host does not
/// speak, is refused naming both ranges (a config error: another build of the plugin is
/// needed, retrying does not help).
fn refuse_versions(label: &str, plugin: VersionRange, chosen: u32) -> PluginResult<()> {
    match PROTOCOL.highest_common(plugin) {
        Some(common) if common == chosen => Ok(()),
        Some(common) => Err(PluginError::config(format!(
            "{label} chose protocol version {chosen}, not {common}, the highest both speak \
             (host {PROTOCOL}, plugin {plugin})"
        ))
        .with_key("plugin")),
        None => Err(PluginError::config(format!(
            "{label} speaks subprocess protocol {plugin}, this host {PROTOCOL}: no version in \
             common; use a build of the plugin that speaks one of the host's"
        ))
        .with_key("plugin")),
    }
}

/// The longest line of a child's standard error taken whole; the rest of it is cut off.
const STDERR_LINE_BYTES: usize = 8 << 10;

/// Takes the child's standard error into the log, at most [`STDERR_LINES_PER_SECOND`] lines
/// a second, until the child closes it: bytes that are not UTF-8 are replaced, a line longer
/// than [`STDERR_LINE_BYTES`] is cut, and the pipe is always drained (a child never blocks
/// or dies writing its log).
fn forward_stderr(errors: std::process::ChildStderr, label: String) {
    let _ = std::thread::Builder::new()
        .name("plugin-stderr".into())
        .spawn(move || {
            let mut reader = BufReader::new(errors);
            let mut second = Instant::now();
            let (mut shown, mut dropped) = (0u32, 0u64);
            let mut line = Vec::new();
            loop {
                line.clear();
                // At most a line's worth at a time; the rest of a longer line is skipped.
                let read = (&mut reader)
                    .take(STDERR_LINE_BYTES as u64)
                    .read_until(b'\n', &mut line);
                match read {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if line.last() != Some(&b'\n') && line.len() >= STDERR_LINE_BYTES {
                    let mut rest = Vec::new();
                    if matches!(reader.read_until(b'\n', &mut rest), Ok(0) | Err(_)) {
                        return;
                    }
                }
                if second.elapsed() >= Duration::from_secs(1) {
                    if dropped > 0 {
                        crate::log::warn(format!(
                            "{label}: {dropped} more line(s) of standard error not logged"
                        ));
                    }
                    second = Instant::now();
                    (shown, dropped) = (0, 0);
                }
                if shown >= STDERR_LINES_PER_SECOND {
                    dropped += 1;
                    continue;
                }
                shown += 1;
                let text = String::from_utf8_lossy(&line);
                let (level, text) = split_level(text.trim_end_matches(['\n', '\r']));
                crate::log::log(level, format!("{label}: {text}"));
            }
        });
}

/// `[Warn] text` as (level, text); other lines are warnings as they are.
fn split_level(line: &str) -> (Level, &str) {
    for (tag, level) in [
        ("[Error] ", Level::Error),
        ("[Warn] ", Level::Warn),
        ("[Info] ", Level::Info),
        ("[Debug] ", Level::Debug),
    ] {
        if let Some(text) = line.strip_prefix(tag) {
            return (level, text);
        }
    }
    (Level::Warn, line)
}

/// Adds the wire batch's events and gaps to `batch`, from the frame's body `section`.
fn fill(batch: &mut EventBatch, wire: &Batch, section: &[u8], label: &str) -> PluginResult<()> {
    let bad = |what: String| PluginError::protocol(format!("{label}: a batch: {what}"));
    let mut gaps = wire.gaps.iter().peekable();
    for (index, event) in crate::wire::decode_batch(wire, section)
        .map_err(bad)?
        .enumerate()
    {
        while let Some(gap) = gaps.next_if(|gap| gap.before <= index) {
            batch.report_gap(&gap.range, gap.count);
        }
        batch.push(event.map_err(bad)?);
    }
    for gap in gaps {
        batch.report_gap(&gap.range, gap.count);
    }
    Ok(())
}

impl Consumer for SubprocessConsumer {
    fn open(&mut self) -> PluginResult<()> {
        if self.running.is_none() {
            let (running, hello, pid) = spawn(&self.spec)?;
            self.running = Some(running);
            self.hello = hello;
            self.pid = pid;
            self.starts += 1;
            // A child that cannot build its consumer is no use: it goes, and the next open
            // starts another (never a child left without a consumer).
            let built = self
                .new_consumer()
                .and_then(|()| self.set_timeout(self.timeout));
            if let Err(error) = built {
                self.running = None;
                return Err(error);
            }
        }
        self.unit(Op::Open)
    }

    fn close(&mut self) -> PluginResult<()> {
        if self.running.is_none() {
            return Ok(());
        }
        self.unit(Op::Close)
    }

    fn seek_to_beginning(&mut self) -> PluginResult<()> {
        self.unit(Op::SeekToBeginning)
    }

    fn seek_to_end(&mut self) -> PluginResult<()> {
        if !self.has("seek_to_end") {
            return Err(PluginError::config(
                "this consumer cannot start at the end of the bus; use start = \"beginning\" or an offset",
            ));
        }
        self.unit(Op::SeekToEnd)
    }

    fn seek(&mut self, offset: &Offset) -> PluginResult<()> {
        self.unit(Op::Seek {
            offset: offset.clone(),
        })
    }

    fn seek_after(&mut self, offset: &Offset) -> PluginResult<()> {
        if !self.has("seek_after") {
            return match offset {
                Offset::Int(i) => self.seek(&Offset::Int(i.saturating_add(1))),
                other => Err(PluginError::offset_not_found(format!(
                    "this consumer cannot resume after a {} offset ({other})",
                    other.type_name()
                ))),
            };
        }
        self.unit(Op::SeekAfter {
            offset: offset.clone(),
        })
    }

    fn next_offset(&self, offset: OffsetRef<'_>) -> Option<Offset> {
        // A `&self` call cannot wait on the child: the trait's default (integers + 1) for
        // every plugin; one whose offsets have no successor says so in `next_offset` of its
        // cdylib form only.
        match offset {
            OffsetRef::Int(i) => Some(Offset::Int(i.saturating_add(1))),
            _ => None,
        }
    }

    fn set_timeout(&mut self, timeout: Option<Duration>) -> PluginResult<()> {
        self.timeout = timeout;
        if self.running.is_none() {
            return Ok(());
        }
        let millis = |t: Duration| u64::try_from(t.as_millis()).unwrap_or(u64::MAX);
        self.unit(Op::SetTimeout {
            timeout_ms: timeout.map(millis),
            poll_limit_ms: self.poll_limit().map(millis),
        })
    }

    fn set_stop_when_drained(&mut self, stop: bool) -> PluginResult<()> {
        if !self.has("set_stop_when_drained") {
            return Ok(());
        }
        self.unit(Op::SetStopWhenDrained { stop })
    }

    fn poll(&mut self, batch: &mut EventBatch) -> PluginResult<PollStatus> {
        // No timeout (`set_timeout(None)`): the poll may wait for ever, as the trait says.
        let limit = self.poll_limit();
        let limits = (batch.remaining(), batch.max_bytes());
        // The poll read ahead answers this one when it asked no more than this one may take.
        let read_ahead = match self.ahead.pop_front() {
            Some(Ahead::Sent { id, limits: asked }) if asked == limits => Some(
                self.receive(id, "poll", limit)
                    .and_then(parse_batch_of(&self.name())),
            ),
            Some(Ahead::Received {
                limits: asked,
                result,
            }) if asked == limits => Some(result),
            Some(other) => {
                self.ahead.push_front(other);
                None
            }
            None => None,
        };
        let (wire, answered) = match read_ahead {
            Some(result) => result?,
            None => self.batch(
                Op::Poll {
                    max_events: limits.0,
                    max_bytes: limits.1,
                },
                limit,
            )?,
        };
        let label = self.name();
        if wire.count > batch.remaining() {
            return Err(PluginError::protocol(format!(
                "{label}: {} events for a batch of {} more",
                wire.count,
                batch.remaining()
            )));
        }
        let status = crate::wire::status_of(&wire.status).ok_or_else(|| {
            PluginError::protocol(format!(
                "{label}: a poll status {:?} (ready, idle, ended or drained)",
                wire.status
            ))
        })?;
        // A full batch: more is waiting; the child reads it while this one is unpacked and
        // handled (asked first, so that the child never waits for the host's work).
        if status == PollStatus::Ready
            && wire.count == limits.0
            && !self.bus_owns_position
            && self.running.is_some()
        {
            let ahead = (batch.max_events(), limits.1);
            while self.ahead.len() < READ_AHEAD {
                let Ok(id) = self.send(Op::Poll {
                    max_events: ahead.0,
                    max_bytes: ahead.1,
                }) else {
                    break;
                };
                self.ahead.push_back(Ahead::Sent { id, limits: ahead });
            }
        }
        fill(batch, &wire, &answered.frame[answered.section..], &label)?;
        if wire.count > 0 {
            self.handed_over = batch.last().map(|event| event.offset.to_owned());
        }
        Ok(status)
    }

    fn find_next_event_of_category(
        &mut self,
        category: &str,
        found: &mut EventBatch,
    ) -> PluginResult<bool> {
        if !self.has("find_next_event_of_category") {
            // The trait's default: one event at a time until one of `category`.
            let mut one = EventBatch::new(1, usize::MAX);
            loop {
                one.clear();
                if self.poll(&mut one)? != PollStatus::Ready {
                    return Ok(false);
                }
                if let Some(event) = one.iter().find(|e| e.category == category) {
                    found.push(event);
                    return Ok(true);
                }
            }
        }
        let limit = Some(self.timeout.unwrap_or_default() + self.spec.limits.call);
        let (wire, answered) = self.batch(
            Op::FindNextEventOfCategory {
                category: category.to_owned(),
            },
            limit,
        )?;
        let label = self.name();
        fill(found, &wire, &answered.frame[answered.section..], &label)?;
        Ok(wire.status == "ready" && wire.count > 0)
    }

    fn check_position(
        &mut self,
        last: &Offset,
        timestamp: chrono::DateTime<chrono::Utc>,
    ) -> PluginResult<()> {
        if !self.has("check_position") {
            return Ok(());
        }
        self.unit(Op::CheckPosition {
            offset: last.clone(),
            timestamp_us: timestamp.timestamp_micros(),
        })
    }

    fn lag(&mut self) -> Option<u64> {
        self.running.as_ref()?;
        // The host asks the lag and then the counters, between polls: the plugin's counters
        // are fetched here, for `counters` (a `&self` call) to give.
        if self.has("counters") {
            if let Ok(counters) = self.value::<Vec<(String, u64)>>(Op::Counters) {
                self.plugin_counters = counters;
            }
        }
        if !self.has("lag") || self.running.is_none() {
            return None;
        }
        let lag = self.value::<Option<u64>>(Op::Lag).ok().flatten()?;
        // Events read ahead are behind the child's position but not yet handed over.
        let kept: u64 = self
            .ahead
            .iter()
            .map(|ahead| match ahead {
                Ahead::Received {
                    result: Ok((batch, _)),
                    ..
                } => batch.count as u64,
                _ => 0,
            })
            .sum();
        Some(lag + kept)
    }

    fn held_up(&mut self) -> Option<String> {
        if !self.has("held_up") || self.running.is_none() {
            return None;
        }
        self.value::<Option<String>>(Op::HeldUp).ok().flatten()
    }

    fn counters(&self) -> Vec<(String, u64)> {
        // The plugin's own (as of the last `lag`), then the host's own counters of the child:
        // its pid (0 while none runs), how many were started and how many of those replaced
        // one that died.
        let mut counters: Vec<(String, u64)> = self
            .plugin_counters
            .iter()
            .filter(|(name, _)| !name.starts_with("plugin_process_"))
            .cloned()
            .collect();
        counters.extend([
            (
                "plugin_process_pid".into(),
                if self.running.is_some() {
                    u64::from(self.pid)
                } else {
                    0
                },
            ),
            ("plugin_process_starts".into(), self.starts),
            (
                "plugin_process_restarts".into(),
                self.starts.saturating_sub(1),
            ),
        ]);
        counters
    }

    fn query(&mut self, command: &str, args: &[String]) -> PluginResult<String> {
        if !self.has("query") {
            return Err(PluginError::config(format!("no command '{command}'")));
        }
        self.value(Op::Query {
            command: command.to_owned(),
            args: args.to_vec(),
        })
    }

    fn bus_owns_position(&self) -> bool {
        self.bus_owns_position
    }

    fn acknowledge(&mut self, offset: &Offset) -> PluginResult<()> {
        if !self.has("acknowledge") {
            return Ok(());
        }
        self.unit(Op::Acknowledge {
            offset: offset.clone(),
        })
    }

    fn serve(&mut self) -> PluginResult<()> {
        if !self.has("serve") {
            return Ok(());
        }
        self.unit(Op::Serve)
    }
}
