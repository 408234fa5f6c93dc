//! The daemon's side of the control socket.

use super::protocol::{Reply, Request};
use super::{Command, QueueCommand, Registry, Shared};
use crate::config::{accounts, ControlSocketConfig};
use crate::shutdown::Shutdown;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The socket server, on a thread of its own until dropped (the socket file is removed then).
pub struct ControlServer {
    /// Written to at the stop: wakes the thread from its wait for a connection.
    wake: Option<std::os::unix::net::UnixStream>,
    path: PathBuf,
    thread: Option<JoinHandle<()>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl ControlServer {
    /// Listens on `config.path`, with the configured mode, owner and group. A socket file left
    /// there by an earlier daemon is replaced; one a running daemon answers on is not.
    pub fn start(
        config: &ControlSocketConfig,
        registry: Arc<Registry>,
        shutdown: Shutdown,
    ) -> Result<ControlServer, String> {
        STARTED.get_or_init(std::time::Instant::now);
        let path = config.path.as_path();
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(format!(
                    "{} is a symbolic link: not followed (remove it)",
                    path.display()
                ))
            }
            Ok(_) => {
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    return Err(format!(
                        "another buslink daemon answers on {}: two daemons with one state_dir \
                         need their own [control] path",
                        path.display()
                    ));
                }
                std::fs::remove_file(path)
                    .map_err(|e| format!("cannot remove the old socket {}: {e}", path.display()))?
            }
            Err(_) => {}
        }
        let listener = bind_private(path, config)?;
        let (wake, woken) = std::os::unix::net::UnixStream::pair()
            .map_err(|e| format!("cannot make the control thread's wake-up pair: {e}"))?;
        let server_guard = ControlServer {
            wake: Some(wake),
            path: path.to_path_buf(),
            thread: None,
            stop: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        };
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let mut server = server_guard;
        let thread = {
            let (stop, shutdown) = (server.stop.clone(), shutdown.clone());
            let busy = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            std::thread::Builder::new()
                .name("control".into())
                .spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                        // Woken at once by a connection or by the stop.
                        if !readable(&listener, &woken) {
                            continue;
                        }
                        if let Ok((stream, _)) = listener.accept() {
                            // A thread per connection: a client that says nothing (it has
                            // 2 s) or a reload that waits does not hold the others up.
                            if busy.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                                busy.fetch_sub(1, Ordering::SeqCst);
                                // The request is read first (briefly): closing with it unread
                                // would reset the connection before the client reads why.
                                let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
                                let mut request = [0u8; 1024];
                                let _ = std::io::Read::read(&mut &stream, &mut request);
                                let mut stream = &stream;
                                let _ = stream.write_all(
                                    b"error: the control socket is busy (too many connections \
                                      at once); try again\n",
                                );
                                continue;
                            }
                            let (registry, shutdown, busy) =
                                (registry.clone(), shutdown.clone(), busy.clone());
                            let spawned = std::thread::Builder::new()
                                .name("control-client".into())
                                .spawn(move || {
                                    serve(stream, &registry, &shutdown);
                                    busy.fetch_sub(1, Ordering::SeqCst);
                                });
                            if spawned.is_err() {
                                tracing::warn!(
                                    "control socket: cannot start a thread for a client"
                                );
                            }
                        }
                    }
                })
                .map_err(|e| format!("cannot start the control thread: {e}"))?
        };
        server.thread = Some(thread);
        Ok(server)
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Waits until `listener` has a connection (`true`) or `woken` is written to or closed
/// (`false`; also every second, to look at the stop flag).
/// Binds the socket at `path` with its configured mode, owner and group already set before it
/// appears there: it is made in a private directory (0700) beside `path` and renamed into
/// place, so no umask ever leaves it open to others, even for an instant.
fn bind_private(path: &Path, config: &ControlSocketConfig) -> Result<UnixListener, String> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let private = dir.join(format!(".buslink-sock.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(|e| format!("cannot create {}: {e}", private.display()))?;
    let inside = private.join("sock");
    let bound = (|| {
        let listener = UnixListener::bind(&inside)
            .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
        std::fs::set_permissions(&inside, std::fs::Permissions::from_mode(config.mode))
            .map_err(|e| format!("cannot set the mode of {}: {e}", path.display()))?;
        if config.owner.is_some() || config.group.is_some() {
            let uid = config.owner.as_deref().map(accounts::user_id).transpose()?;
            let gid = config
                .group
                .as_deref()
                .map(accounts::group_id)
                .transpose()?;
            std::os::unix::fs::chown(&inside, uid, gid)
                .map_err(|e| format!("cannot give {} its owner and group: {e}", path.display()))?;
        }
        std::fs::rename(&inside, path)
            .map_err(|e| format!("cannot move the socket to {}: {e}", path.display()))?;
        Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&private);
    bound
}

fn readable(listener: &UnixListener, woken: &std::os::unix::net::UnixStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut entries = [
        libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: woken.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // SAFETY: two valid pollfds, for the duration of the call.
    let ready = unsafe { libc::poll(entries.as_mut_ptr(), 2, 1000) };
    ready > 0 && entries[0].revents & libc::POLLIN != 0 && entries[1].revents == 0
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Closing our end wakes the thread's poll (its end becomes readable).
        drop(self.wake.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One connection: one command line, one answer.
fn serve(stream: std::os::unix::net::UnixStream, registry: &Registry, shutdown: &Shutdown) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    // One line of at most 1 KiB within 2 s in all: a client that trickles cannot hold the
    // socket (nor the daemon's stop, which waits for this thread).
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 1024 && !line.ends_with(b"\n") {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match std::io::Read::read(&mut &stream, &mut byte) {
            Ok(1) => line.push(byte[0]),
            _ => break,
        }
    }
    let line = String::from_utf8_lossy(&line).into_owned();
    let answer = answer(line.trim(), registry, shutdown);
    let mut stream = &stream;
    let _ = stream.write_all(answer.as_bytes());
}

/// Clients served at once; more are told the socket is busy.
const MAX_CONNECTIONS: usize = 16;

/// When the control socket opened (the daemon's start, give or take its consumers' checks):
/// what `version` counts its time up from.
static STARTED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// The answer to one command line: what the request asks, carried out ([`reply`]), worded by
/// [`Reply::to_text`].
pub fn answer(line: &str, registry: &Registry, shutdown: &Shutdown) -> String {
    match Request::parse(line) {
        Ok(request) => reply(request, registry, shutdown).to_text(),
        Err(answer) => answer,
    }
}

/// Carries out `request` and says how it went.
pub fn reply(request: Request, registry: &Registry, shutdown: &Shutdown) -> Reply {
    let chosen = |named: &Option<String>| choose(registry, named.as_deref());
    match request {
        Request::Errors { consumer, command } => errors(consumer.as_deref(), command, registry),
        Request::Replay { consumer, spec } => {
            replay(consumer.as_deref(), Command::Replay(spec), registry)
        }
        Request::CancelReplay { consumer } => {
            replay(consumer.as_deref(), Command::CancelReplay, registry)
        }
        Request::Status { json, consumer } => match chosen(&consumer) {
            Err(error) => Reply::Refused(error),
            Ok(chosen) => Reply::Status {
                statuses: chosen.iter().map(|s| s.status()).collect(),
                json,
                named: consumer.is_some(),
            },
        },
        Request::Pause { consumer } => match chosen(&consumer) {
            Err(error) => Reply::Refused(error),
            Ok(chosen) => {
                let refused: Vec<String> = chosen
                    .iter()
                    .filter(|s| !s.pausable())
                    .map(|s| s.name())
                    .collect();
                if !refused.is_empty() {
                    return Reply::PauseRefused {
                        consumers: refused,
                        nothing_paused: consumer.is_none() && chosen.len() > 1,
                    };
                }
                for shared in &chosen {
                    shared.set_paused(true);
                    tracing::info!(
                        "consumer '{}': pause asked for through the control socket: no event \
                         after the one in hand is handled",
                        shared.name()
                    );
                }
                // Answered once the pause holds (the dispatcher stopped between two events),
                // or after a bounded wait with those whose handlers still hold an event.
                let until = std::time::Instant::now() + super::PAUSE_WAIT;
                let pausing = loop {
                    let pausing: Vec<(String, bool)> = chosen
                        .iter()
                        .filter(|s| s.paused() && !s.health().pause_in_effect())
                        .map(|s| (s.name(), s.health().in_hand()))
                        .collect();
                    if pausing.is_empty() || std::time::Instant::now() >= until {
                        break pausing;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                };
                Reply::Paused { pausing }
            }
        },
        Request::Resume { consumer } => match chosen(&consumer) {
            Err(error) => Reply::Refused(error),
            Ok(chosen) => {
                for shared in &chosen {
                    shared.set_paused(false);
                    tracing::info!(
                        "consumer '{}': resumed through the control socket",
                        shared.name()
                    );
                }
                Reply::Resumed
            }
        },
        Request::Reload => {
            tracing::info!("reload asked through the control socket");
            match registry.reload_and_wait(super::RELOAD_WAIT) {
                Ok(summary) => Reply::Reloaded(summary),
                Err(why) => Reply::ReloadRefused(why),
            }
        }
        Request::Version => Reply::Version {
            version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
            up_s: STARTED.get().map(|at| at.elapsed().as_secs()),
        },
        Request::Quit => {
            tracing::info!("stop asked through the control socket");
            shutdown.request();
            Reply::Stopping
        }
    }
}

/// The consumer named `name`, or every consumer of the daemon; `Err` is the answer naming the
/// ones it runs.
fn choose(registry: &Registry, name: Option<&str>) -> Result<Vec<Arc<Shared>>, String> {
    let all = registry.consumers();
    match name {
        None => Ok(all),
        Some(name) => all
            .iter()
            .find(|shared| shared.name() == name)
            .map(|shared| vec![shared.clone()])
            .ok_or_else(|| {
                format!(
                    "error: no consumer named {name:?} in this daemon (it runs: {})\n",
                    all.iter().map(|s| s.name()).collect::<Vec<_>>().join(", ")
                )
            }),
    }
}

/// `replay` and `replay-cancel`: one consumer's dispatcher starts or cancels its job (the job
/// runs on; `status` follows it).
fn replay(consumer: Option<&str>, command: Command, registry: &Registry) -> Reply {
    let chosen = match choose(registry, consumer) {
        Ok(chosen) => chosen,
        Err(error) => return Reply::Refused(error),
    };
    let [shared] = chosen.as_slice() else {
        return Reply::Refused(
            "error: this daemon runs several consumers: name one with --consumer NAME\n".into(),
        );
    };
    if !shared.serving() {
        return Reply::Refused(format!(
            "error: consumer '{}' is not consuming now ({}): a replay is taken only while it \
             runs; try again once it does\n",
            shared.name(),
            shared.status().state
        ));
    }
    let pending = shared.submit(command);
    let deadline = std::time::Instant::now() + super::QUEUE_ANSWER_WAIT;
    let name = shared.name();
    Reply::Queue(match shared.wait(pending, deadline) {
        Ok(reply) => super::protocol::queue_answer(&name, &reply, false),
        Err(why) => Err(format!("consumer '{name}': {why}\n")),
    })
}

/// `errors list|retry|drop`, carried out by the consumers' dispatchers.
fn errors(consumer: Option<&str>, command: QueueCommand, registry: &Registry) -> Reply {
    let json = matches!(command, QueueCommand::List { json: true });
    let chosen = match choose(registry, consumer) {
        Ok(chosen) => chosen,
        Err(error) => return Reply::Refused(error),
    };
    // An event id, or dropping, is about one consumer's queue.
    if chosen.len() > 1
        && !matches!(
            command,
            QueueCommand::List { .. } | QueueCommand::Retry { id: None }
        )
    {
        return Reply::Refused(
            "error: this daemon runs several consumers: name one with --consumer NAME\n".into(),
        );
    }
    if let Some(idle) = chosen.iter().find(|shared| !shared.serving()) {
        return Reply::Refused(format!(
            "error: consumer '{}' is not consuming now ({}): its queue is taken only between \
             two events; try again once it runs\n",
            idle.name(),
            idle.status().state
        ));
    }
    // Every consumer gets the command at once; one deadline for all of them.
    let pending: Vec<_> = chosen
        .iter()
        .map(|shared| shared.submit(command.clone()))
        .collect();
    let deadline = std::time::Instant::now() + super::QUEUE_ANSWER_WAIT;
    let answers: Vec<(String, Result<String, String>)> = chosen
        .iter()
        .zip(pending)
        .map(|(shared, pending)| {
            let name = shared.name();
            let answer = match shared.wait(pending, deadline) {
                Ok(reply) => super::protocol::queue_answer(&name, &reply, json),
                Err(why) => Err(format!("consumer '{name}': {why}\n")),
            };
            (name, answer)
        })
        .collect();
    // Each consumer's outcome is told, the failures too (ctl then exits 2).
    if answers.iter().any(|(_, answer)| answer.is_err()) {
        let mut text = String::new();
        for (_, answer) in &answers {
            match answer {
                Ok(answer) | Err(answer) => text.push_str(answer),
            }
        }
        return Reply::Queue(Err(text));
    }
    let answers: Vec<(String, String)> = answers
        .into_iter()
        .filter_map(|(name, answer)| answer.ok().map(|text| (name, text)))
        .collect();
    if json {
        // One JSON document: the array of one consumer, or an object of arrays by name.
        if let [(_, one)] = answers.as_slice() {
            return Reply::Queue(Ok(one.clone()));
        }
        let by_name: serde_json::Map<String, serde_json::Value> = answers
            .into_iter()
            .map(|(name, text)| (name, serde_json::from_str(&text).unwrap_or_default()))
            .collect();
        return Reply::Queue(Ok(serde_json::to_string_pretty(&by_name)
            .unwrap_or_default()
            + "\n"));
    }
    Reply::Queue(Ok(answers.into_iter().map(|(_, text)| text).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_answer_and_pause_is_refused_where_the_bus_keeps_the_position() {
        let shared = Arc::new(Shared::new("demo", "kafka", "KafkaConsumer"));
        let other = Arc::new(Shared::new("other", "sqlite", "SqliteConsumer"));
        let registry = Registry::new(vec![shared.clone(), other.clone()]);
        let shutdown = Shutdown::default();
        // `other`'s dispatcher stops between two events, `demo`'s handlers hold their event.
        other.health().pause_taken(true);
        shared.health().started();
        assert_eq!(
            answer("pause", &registry, &shutdown),
            "pausing: consumer 'demo': its handlers still hold the event in hand; no event \
             after it is handled, and `status` shows `paused` once they give it back\n"
        );
        assert!(shared.paused() && other.paused());
        shared.health().pause_taken(true);
        assert_eq!(answer("pause", &registry, &shutdown), "paused\n");
        assert_eq!(answer("resume demo", &registry, &shutdown), "resumed\n");
        assert!(!shared.paused() && other.paused());
        assert!(answer("resume nobody", &registry, &shutdown).starts_with("error: no consumer"));
        assert!(answer("nonsense", &registry, &shutdown).starts_with("error: unknown command"));
        assert!(answer("quit now", &registry, &shutdown).starts_with("error: unknown command"));
        let status: serde_json::Value =
            serde_json::from_str(&answer("status --json", &registry, &shutdown)).expect("JSON");
        assert_eq!(status["consumers"][1]["consumer"], "other");
        assert_eq!(status["consumers"][1]["state"], "connecting");
        let one: serde_json::Value =
            serde_json::from_str(&answer("status --json demo", &registry, &shutdown))
                .expect("JSON");
        assert_eq!(one["consumer"], "demo");
        shared.forbid_pause();
        assert!(answer("pause demo", &registry, &shutdown)
            .starts_with("error: demo: this consumer's bus"));
        assert!(!shared.paused());
        // A reload's outcome reaches whoever waits for it.
        let reloads = Arc::new(Registry::new(Vec::new()));
        let asker = reloads.clone();
        let waiting = std::thread::spawn(move || asker.reload_and_wait(Duration::from_secs(5)));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !reloads.take_reload() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        reloads.reloaded(Err("bad key".into()));
        assert_eq!(waiting.join().expect("thread"), Err("bad key".to_owned()));
        assert_eq!(answer("quit", &registry, &shutdown), "stopping\n");
        assert!(shutdown.requested());
    }

    #[test]
    fn a_queue_command_not_taken_in_time_is_withdrawn_never_run_later() {
        let shared = Shared::new("demo", "sqlite", "SqliteConsumer");
        let pending = shared.submit(QueueCommand::Drop { ids: None });
        assert!(shared.has_requests());
        let deadline = std::time::Instant::now() + Duration::from_millis(20);
        let outcome = shared.wait(pending, deadline);
        assert!(
            outcome
                .as_ref()
                .is_err_and(|why| why.contains("it was not carried out")),
            "{outcome:?}"
        );
        // The dispatcher, coming late, finds nothing to do.
        assert!(shared.take_requests().is_empty());
        // One taken in time is answered.
        let pending = shared.submit(QueueCommand::List { json: false });
        let taken = shared.take_requests();
        assert_eq!(taken.len(), 1);
        let _ = taken[0]
            .reply
            .send(super::super::QueueReply::Listed(Vec::new()));
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        assert_eq!(
            shared.wait(pending, deadline),
            Ok(super::super::QueueReply::Listed(Vec::new()))
        );
    }
}
