//! A terminal program under test, in a tmux of its own: `send-keys` to type, `capture-pane`
//! to read the screen (Debian's `tmux`). The tmux server lives in the test's directory
//! (`-S`), so tests never share one, and is killed when the [`Tmux`] is dropped.

use crate::process::run_tool;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(20);

/// One tmux server and its one window, running a shell command.
pub struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    /// Starts `command` (run by `sh -c`) in a `columns` x `rows` window; its tmux server's
    /// socket is made in `dir`.
    pub fn start(dir: &Path, columns: u16, rows: u16, command: &str) -> Tmux {
        let tmux = Tmux {
            socket: dir.join("tmux.sock"),
        };
        let (columns, rows) = (columns.to_string(), rows.to_string());
        let out = tmux.run(&[
            "new-session",
            "-d",
            "-x",
            &columns,
            "-y",
            &rows,
            "-s",
            "test",
            command,
        ]);
        assert_eq!(out.code(), Some(0), "tmux new-session: {out}");
        tmux
    }

    fn run(&self, args: &[&str]) -> crate::RunOutput {
        let mut all = vec![
            "-S",
            self.socket.to_str().expect("a UTF-8 path"),
            "-f",
            "/dev/null",
        ];
        all.extend_from_slice(args);
        run_tool("tmux", &all, None, "tmux", LIMIT)
    }

    /// The window's text now, a line per row.
    pub fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "test"]).stdout
    }

    /// Types `keys` (tmux key names: `p`, `Down`, `C-c`, `End`).
    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "test"];
        args.extend_from_slice(keys);
        let out = self.run(&args);
        assert_eq!(out.code(), Some(0), "tmux send-keys: {out}");
    }

    /// Waits until the screen satisfies `wanted`, and returns it; panics with the screen after
    /// `limit`.
    pub fn wait_for(&self, what: &str, limit: Duration, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let screen = self.screen();
            if wanted(&screen) {
                return screen;
            }
            if Instant::now() > deadline {
                panic!("timed out after {limit:?} waiting for {what}; the screen:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}
