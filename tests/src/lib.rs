//! Support for buslink's end-to-end tests, benchmarks and demo: find the built binary and
//! plugins, give each test a fresh directory, run `buslink` with a bounded life, and write
//! Hermes sqlite buses like the real Hermes server does.

pub mod bus;
pub mod hmb_process;
pub mod http_sink;
pub mod kafka;
pub mod process;
pub mod tmux;
pub mod workspace;

pub use bus::{hermes_events, HermesBusWriter};
pub use kafka::KafkaMock;
pub use process::{Daemon, RunOutput};
pub use workspace::{build_dir, buslink_bin, fixture, workspace_root, TestDir};
