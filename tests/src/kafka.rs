//! A Kafka cluster for a test: `buslink-kafka-mock` (librdkafka's mock cluster) in a process
//! group of its own, killed with its test.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// A running mock cluster and the pipe that drives it.
pub struct KafkaMock {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
    bootstrap: String,
}

impl KafkaMock {
    /// Starts `brokers` brokers with `topics` (`(name, partitions)`).
    pub fn start(brokers: u32, topics: &[(&str, u32)]) -> KafkaMock {
        let path = crate::build_dir().join("buslink-kafka-mock");
        assert!(
            path.is_file(),
            "{} does not exist: build the workspace first (`cargo build --workspace`)",
            path.display()
        );
        let mut command = Command::new(path);
        command
            .arg("--brokers")
            .arg(brokers.to_string())
            .arg("--max-seconds")
            .arg("300")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0);
        for (name, partitions) in topics {
            command.arg("--topic").arg(format!("{name}:{partitions}"));
        }
        let mut child = command.spawn().expect("buslink-kafka-mock starts");
        let input = child.stdin.take().expect("piped stdin");
        let mut output = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        output.read_line(&mut line).expect("the bootstrap line");
        let bootstrap = line
            .trim()
            .strip_prefix("bootstrap ")
            .unwrap_or_else(|| panic!("buslink-kafka-mock said {line:?}"))
            .to_owned();
        KafkaMock {
            child,
            input,
            output,
            bootstrap,
        }
    }

    /// The brokers' addresses, for `servers`.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Sends one command and returns its `ok ...` answer (panics on an `error` answer).
    pub fn command(&mut self, command: &str) -> String {
        writeln!(self.input, "{command}").expect("the mock reads commands");
        self.input.flush().expect("flush");
        let mut line = String::new();
        self.output.read_line(&mut line).expect("an answer");
        assert!(line.starts_with("ok"), "`{command}`: {line}");
        line.trim().to_owned()
    }
}

impl Drop for KafkaMock {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group the mock leads.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}
