//! The in-repo HMB server as a process of its own (`buslink-hmb-server`), for tests that
//! freeze it (SIGSTOP: the port still accepts, nothing answers) or kill it, as operators see a
//! real server hang. It runs in a process group of its own with a bounded life and is killed
//! with its test.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

/// A running `buslink-hmb-server`.
pub struct HmbServerProcess {
    child: Child,
    address: String,
}

impl HmbServerProcess {
    /// Starts the server on a free loopback port, holding `buffer_size` messages per queue,
    /// with `extra` flags; it exits by itself after five minutes at the latest.
    pub fn start(buffer_size: u32, extra: &[&str]) -> HmbServerProcess {
        let (child, address) = spawn("0", buffer_size, extra);
        HmbServerProcess { child, address }
    }

    /// Kills the process (SIGKILL: no word to its clients); [`start_again`](Self::start_again)
    /// brings a new one up on the same port.
    pub fn kill(&mut self) {
        // Not once it was reaped: its pid may belong to another process by now.
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on the process group the server leads (SIGKILL ends a frozen
            // one).
            unsafe {
                libc::kill(-(self.child.id() as i32), libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
    }

    /// After [`kill`](Self::kill): starts a new, empty server on the same port, as an
    /// operator's restart of a crashed server does.
    pub fn start_again(&mut self, buffer_size: u32, extra: &[&str]) {
        let port = self
            .address
            .rsplit(':')
            .next()
            .expect("host:port")
            .to_owned();
        (self.child, self.address) = spawn(&port, buffer_size, extra);
    }

    /// The URL of bus `bus` (`http://127.0.0.1:PORT/bus`).
    pub fn bus_url(&self, bus: &str) -> String {
        format!("http://{}/{bus}", self.address)
    }

    /// Freezes the process (SIGSTOP): connections are still accepted by the kernel, nothing
    /// is answered.
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets a frozen process go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "kill({}, {signal})", self.child.id());
    }
}

impl Drop for HmbServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `buslink-hmb-server` on `port` ("0": a free one): the child and its address.
fn spawn(port: &str, buffer_size: u32, extra: &[&str]) -> (Child, String) {
    let path = crate::build_dir().join("buslink-hmb-server");
    assert!(
        path.is_file(),
        "{} does not exist: build the workspace first (`cargo build --workspace`)",
        path.display()
    );
    let mut child = Command::new(path)
        .args(["--port", port, "--max-seconds", "300"])
        .args(["--buffer-size", &buffer_size.to_string()])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("buslink-hmb-server starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout"))
        .read_line(&mut line)
        .expect("the listening line");
    let address = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("buslink-hmb-server said {line:?}"))
        .to_owned();
    (child, address)
}
