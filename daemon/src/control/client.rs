//! `buslink ctl`: the client side of the control socket.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Sends `command` to the daemon listening on `path` and returns its answer.
pub fn send(path: &Path, command: &str) -> Result<String, String> {
    let mut stream = UnixStream::connect(path).map_err(|e| {
        format!(
            "no daemon answers on {} ({e}): is `buslink run` running for this config?",
            path.display()
        )
    })?;
    // The daemon's own bounds, and a margin: a reload waits for consumers to stop, an
    // error-queue command for the dispatchers; anything else answers at once.
    let wait = match command.split_whitespace().next() {
        Some("reload") => super::RELOAD_WAIT + Duration::from_secs(5),
        Some("errors") => super::QUEUE_ANSWER_WAIT * 2 + Duration::from_secs(3),
        _ => Duration::from_secs(10),
    };
    let _ = stream.set_read_timeout(Some(wait));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    stream
        .write_all(format!("{command}\n").as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => format!(
                "{}: no answer within {} s (is the daemon stopped or stuck?)",
                path.display(),
                wait.as_secs()
            ),
            _ => format!("{}: {e}", path.display()),
        })?;
    Ok(answer)
}
