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
    // A reload may wait for consumers to stop (25 s at most on the daemon's side); any other
    // answer comes at once, or within 10 s for an error-queue command.
    let wait = if command == "reload" { 30 } else { 12 };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(wait)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    stream
        .write_all(format!("{command}\n").as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => format!(
                "{}: no answer within {wait} s (is the daemon stopped or stuck?)",
                path.display()
            ),
            _ => format!("{}: {e}", path.display()),
        })?;
    Ok(answer)
}
