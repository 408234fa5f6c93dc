//! Running the real `buslink` binary with a bounded life.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a finished `buslink` printed and how it ended.
#[derive(Debug)]
pub struct RunOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl RunOutput {
    /// The exit code (`None` when killed by a signal: an abort shows here).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// The stdout lines.
    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }
}

impl std::fmt::Display for RunOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// A `buslink` command with the given arguments, logs not coloured, in a process group of
/// its own (a signal to the test's group never reaches it, and it never outlives its test:
/// [`Daemon`] kills the group).
pub fn buslink(args: &[&str]) -> Command {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(crate::buslink_bin());
    command
        .args(args)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .process_group(0);
    command
}

fn collect(mut pipe: impl Read + Send + 'static) -> (Arc<Mutex<String>>, JoinHandle<()>) {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&text);
    let handle = std::thread::spawn(move || {
        let mut buffer = [0u8; 8192];
        loop {
            match pipe.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if let Ok(mut text) = sink.lock() {
                        text.push_str(&String::from_utf8_lossy(&buffer[..n]));
                    }
                }
            }
        }
    });
    (text, handle)
}

/// A running `buslink` process, killed when dropped.
pub struct Daemon {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl Daemon {
    /// Starts `command` with piped output.
    pub fn start(command: Command) -> Daemon {
        Daemon::start_with_input(command, Stdio::null())
    }

    /// Starts `command` with piped output and `stdin` as its input.
    pub fn start_with_input(mut command: Command, stdin: Stdio) -> Daemon {
        let mut child = command
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("buslink starts");
        let (stdout, out_reader) = collect(child.stdout.take().expect("piped stdout"));
        let (stderr, err_reader) = collect(child.stderr.take().expect("piped stderr"));
        Daemon {
            child,
            stdout,
            stderr,
            readers: vec![out_reader, err_reader],
        }
    }

    /// Starts `buslink run --config CONFIG` (as a daemon: no `--once`).
    pub fn run(config: &Path) -> Daemon {
        Daemon::start(buslink(&["run", "--config", &config.to_string_lossy()]))
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// What it printed on stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Waits until `condition` holds, polling; panics with the logs after `limit`.
    pub fn wait_for(
        &mut self,
        what: &str,
        limit: Duration,
        mut condition: impl FnMut(&Daemon) -> bool,
    ) {
        let deadline = Instant::now() + limit;
        loop {
            if condition(self) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // One last look once what it wrote last has been read (its readers reach the
                // end of the pipes; bounded, in case a child of its own still holds them): the
                // condition may have become true just before the exit.
                let drained = Instant::now() + Duration::from_secs(2);
                while !self.readers.iter().all(|reader| reader.is_finished())
                    && Instant::now() < drained
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                if condition(self) {
                    return;
                }
                panic!(
                    "buslink exited ({status}) before {what}\n--- stderr ---\n{}",
                    self.stderr()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {limit:?} waiting for {what}\n--- stderr ---\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (e.g. `libc::SIGTERM`).
    pub fn signal(&self, signal: i32) {
        let pid = self.child.id() as i32;
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
    }

    /// Waits for the process to exit (killing it after `limit`) and returns its output.
    pub fn finish(mut self, limit: Duration) -> RunOutput {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "buslink did not exit within {limit:?}\n--- stderr ---\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        RunOutput {
            status,
            stdout: self.stdout(),
            stderr: self.stderr(),
        }
    }

    /// SIGTERM, then [`finish`](Self::finish).
    pub fn terminate(self, limit: Duration) -> RunOutput {
        self.signal(libc::SIGTERM);
        self.finish(limit)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // It and whatever it started (exec handlers' commands) go. SAFETY: kill(2) on the
            // process group the still unreaped child leads (its pid).
            unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `buslink` with `args` to completion (killed after `limit`).
pub fn run(args: &[&str], limit: Duration) -> RunOutput {
    Daemon::start(buslink(args)).finish(limit)
}

/// Runs another program (a tool the tests check buslink's output with: `promtool`, `tmux`)
/// to completion in a process group of its own, `stdin` its input (none: empty), killed after
/// `limit`. Panics naming the Debian package to install when the program is not on `PATH`.
pub fn run_tool(
    program: &str,
    args: &[&str],
    stdin: Option<&Path>,
    package: &str,
    limit: Duration,
) -> RunOutput {
    use std::os::unix::process::CommandExt;
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()));
    assert!(
        found,
        "{program} is not installed: `apt-get install {package}` (`bash .ci/setup` installs \
         what the tests need)"
    );
    let mut command = Command::new(program);
    command.args(args).process_group(0);
    let input = match stdin {
        Some(path) => Stdio::from(std::fs::File::open(path).expect("the tool's input file")),
        None => Stdio::null(),
    };
    Daemon::start_with_input(command, input).finish(limit)
}

/// Runs `buslink run --once --config CONFIG` to completion (killed after a minute).
pub fn run_once(config: &Path) -> RunOutput {
    run(
        &["run", "--once", "--config", &config.to_string_lossy()],
        Duration::from_secs(60),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process that writes its last line and exits at once: `wait_for` sees the line, never
    /// "exited before" (the exit can be noticed before the line is read from the pipe).
    #[test]
    fn a_line_written_just_before_the_exit_is_seen() {
        for _ in 0..200 {
            let mut command = Command::new("sh");
            command.args(["-c", "echo 'the last word' >&2"]);
            let mut process = Daemon::start(command);
            process.wait_for("the last word", Duration::from_secs(10), |p| {
                p.stderr().contains("the last word")
            });
            let _ = process.finish(Duration::from_secs(10));
        }
    }
}
