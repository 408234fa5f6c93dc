//! Command line of the `buslink-hmb-server` binary. Single-letter flags match
//! the reference server's (`-P`, `-b`, `-c`, `-t`, `-p`, `-d`, `-F`).

use std::net::IpAddr;
use std::time::Duration;

use buslink_hmb_server::{BasicAuth, Settings};
use clap::Parser;

/// HMB (httpmsgbus v0.16) test server with fault injection.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// TCP port (0 = any free port).
    #[arg(short = 'P', long, default_value_t = 8000)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// Messages held (RAM buffer) per queue.
    #[arg(short = 'b', long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub buffer_size: u32,
    /// Sessions per client IP and bus (0 = unlimited).
    #[arg(short = 'c', long, default_value_t = 10)]
    pub sessions_per_ip: usize,
    /// Session timeout in seconds (idle sessions are purged after it).
    #[arg(short = 't', long, default_value_t = 120)]
    pub session_timeout: u64,
    /// Seconds between idle-session purges.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub purge_interval: u64,
    /// Maximum size of POST data in KB.
    #[arg(short = 'p', long, default_value_t = 10240)]
    pub post_size: usize,
    /// Maximum sequence difference into the future.
    #[arg(short = 'd', long, default_value_t = 0)]
    pub delta: i64,
    /// Count sessions by the first X-Forwarded-For address.
    #[arg(short = 'F', long)]
    pub forwarded_for: bool,
    /// Raise requested non-zero heartbeats to at least this many seconds.
    #[arg(long, default_value_t = 0)]
    pub min_heartbeat: u64,
    /// Lower requested heartbeats to at most this many seconds, and give
    /// sessions without heartbeat this one.
    #[arg(long)]
    pub max_heartbeat: Option<u64>,
    /// Require HTTP basic auth with this user (needs --password).
    #[arg(long, requires = "password")]
    pub user: Option<String>,
    /// Password for --user.
    #[arg(long, requires = "user")]
    pub password: Option<String>,
    /// Exit after this many seconds (a bounded life for tests; 0 = run until stopped).
    #[arg(long, default_value_t = 0)]
    pub max_seconds: u64,
}

impl Cli {
    /// The server settings these flags describe.
    pub fn settings(&self) -> Settings {
        Settings {
            bind: self.bind,
            port: self.port,
            buffer_size: self.buffer_size as usize,
            sessions_per_ip: self.sessions_per_ip,
            session_timeout: Duration::from_secs(self.session_timeout),
            purge_interval: Duration::from_secs(self.purge_interval),
            post_size_kb: self.post_size,
            delta: self.delta,
            use_xff: self.forwarded_for,
            min_heartbeat: self.min_heartbeat,
            max_heartbeat: self.max_heartbeat,
            auth: match (&self.user, &self.password) {
                (Some(user), Some(password)) => Some(BasicAuth {
                    user: user.clone(),
                    password: password.clone(),
                }),
                _ => None,
            },
        }
    }
}
