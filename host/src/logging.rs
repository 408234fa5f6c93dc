//! Logs go to stderr through tracing: human lines or JSON.

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// How log lines look.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// Sets up logging; `RUST_LOG` overrides `level` when set.
pub fn init(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Tells why a command failed, one line per problem, each naming the file, key or plugin it is
/// about: as a command-line tool does (`error: ...` on stderr, no timestamp nor level: the
/// service manager's journal adds its own) with human logs, as JSON log lines at level ERROR
/// with `--log-format json` (what reads them is a program).
pub fn command_failed(message: &str, format: LogFormat) {
    match format {
        LogFormat::Json => {
            for line in message.lines() {
                tracing::error!("{line}");
            }
        }
        LogFormat::Human => {
            use std::io::Write;
            let mut stderr = std::io::stderr().lock();
            for line in message.lines() {
                let _ = writeln!(stderr, "error: {line}");
            }
        }
    }
}
