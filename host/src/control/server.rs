//! The daemon's side of the control socket.

use super::Shared;
use crate::shutdown::Shutdown;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The socket server, on a thread of its own until dropped (the socket file is removed then).
pub struct ControlServer {
    path: PathBuf,
    thread: Option<JoinHandle<()>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl ControlServer {
    /// Listens on `path`, mode 0600. A file left there by an earlier daemon is replaced: the
    /// caller holds the consumer's lock, so no other daemon serves it.
    pub fn start(
        path: &Path,
        shared: Arc<Shared>,
        shutdown: Shutdown,
    ) -> Result<ControlServer, String> {
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(format!(
                    "{} is a symbolic link: not followed (remove it)",
                    path.display()
                ))
            }
            Ok(_) => std::fs::remove_file(path)
                .map_err(|e| format!("cannot remove the old socket {}: {e}", path.display()))?,
            Err(_) => {}
        }
        let listener = UnixListener::bind(path)
            .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("cannot make {} private: {e}", path.display()))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let (stop, shutdown) = (stop.clone(), shutdown.clone());
            std::thread::Builder::new()
                .name("control".into())
                .spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                        match listener.accept() {
                            Ok((stream, _)) => serve(stream, &shared, &shutdown),
                            Err(_) => std::thread::sleep(Duration::from_millis(20)),
                        }
                    }
                })
                .map_err(|e| format!("cannot start the control thread: {e}"))?
        };
        Ok(ControlServer {
            path: path.to_path_buf(),
            thread: Some(thread),
            stop,
        })
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One connection: one command line, one answer.
fn serve(stream: std::os::unix::net::UnixStream, shared: &Shared, shutdown: &Shutdown) {
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
    let answer = answer(line.trim(), shared, shutdown);
    let mut stream = &stream;
    let _ = stream.write_all(answer.as_bytes());
}

/// The answer to one command.
pub fn answer(command: &str, shared: &Shared, shutdown: &Shutdown) -> String {
    match command {
        "status" => human(&shared.status()),
        "status --json" => serde_json::to_string(&shared.status()).unwrap_or_default() + "\n",
        "pause" if !shared.pausable() => "error: this consumer's bus keeps its position (a \
            consumer group): a member that stops reading loses its partitions to the others; \
            stop it (quit) instead\n"
            .to_owned(),
        "pause" => {
            shared.set_paused(true);
            tracing::info!("paused through the control socket: no more events handled");
            "paused\n".to_owned()
        }
        "resume" => {
            shared.set_paused(false);
            tracing::info!("resumed through the control socket");
            "resumed\n".to_owned()
        }
        "quit" => {
            tracing::info!("stop asked through the control socket");
            shutdown.request();
            "stopping\n".to_owned()
        }
        other => format!(
            "error: unknown command {other:?} (status, status --json, pause, resume, quit)\n"
        ),
    }
}

fn human(status: &super::Status) -> String {
    let mut text = format!(
        "consumer {}: {} (plugin {} class {})\n",
        status.consumer, status.state, status.plugin, status.class
    );
    text.push_str(&format!(
        "  committed offset: {}{}\n",
        status.committed_offset.as_deref().unwrap_or("none"),
        status
            .committed_at
            .as_deref()
            .map(|at| format!(" at {at}"))
            .unwrap_or_default()
    ));
    text.push_str(&format!(
        "  events handled: {} ({} events/s)\n",
        status.events_handled, status.events_per_second
    ));
    if let Some(lag) = status.lag {
        text.push_str(&format!("  lag: {lag} events\n"));
    }
    text.push_str(&format!("  error queue: {} events\n", status.error_queue));
    if let Some(error) = &status.last_error {
        text.push_str(&format!("  last error: {error}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_answer_and_pause_is_refused_where_the_bus_keeps_the_position() {
        let shared = Shared::new("demo", "kafka", "KafkaConsumer");
        let shutdown = Shutdown::default();
        assert_eq!(answer("pause", &shared, &shutdown), "paused\n");
        assert!(shared.paused());
        assert_eq!(answer("resume", &shared, &shutdown), "resumed\n");
        assert!(answer("nonsense", &shared, &shutdown).starts_with("error: unknown command"));
        shared.forbid_pause();
        assert!(answer("pause", &shared, &shutdown).starts_with("error: this consumer's bus"));
        assert!(!shared.paused());
        assert_eq!(answer("quit", &shared, &shutdown), "stopping\n");
        assert!(shutdown.requested());
    }
}
