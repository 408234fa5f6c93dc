//! The daemon's side of the control socket.

use super::Shared;
use crate::shutdown::Shutdown;
use std::io::{BufRead, BufReader, Write};
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
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    // One line, and not an endless one.
    let mut reader = BufReader::new(std::io::Read::take(&stream, 1024));
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let answer = answer(line.trim(), shared, shutdown);
    let mut stream = &stream;
    let _ = stream.write_all(answer.as_bytes());
}

/// The answer to one command.
pub fn answer(command: &str, shared: &Shared, shutdown: &Shutdown) -> String {
    match command {
        "status" => human(&shared.status()),
        "status --json" => serde_json::to_string(&shared.status()).unwrap_or_default() + "\n",
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
