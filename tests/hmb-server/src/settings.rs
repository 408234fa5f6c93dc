//! Server settings. Defaults follow the reference server (`httpmsgbus` with no
//! flags, RAM mode), except that it listens on 127.0.0.1 only.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// Credentials for optional HTTP basic auth on the HMB endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicAuth {
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
}

/// Everything that configures a server.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Address to listen on (default 127.0.0.1).
    pub bind: IpAddr,
    /// TCP port; 0 picks a free one (default 8000, like `-P`).
    pub port: u16,
    /// Messages held per queue (`-b`, default 100). Older ones are gone.
    pub buffer_size: usize,
    /// Sessions per client IP and bus (`-c`, default 10); 0 = unlimited.
    pub sessions_per_ip: usize,
    /// Idle time after which a session may be purged (`-t`, default 120 s).
    pub session_timeout: Duration,
    /// How often the purge runs (the reference server: once a minute).
    pub purge_interval: Duration,
    /// Maximum POST body in KB (`-p`, default 10240).
    pub post_size_kb: usize,
    /// How far into the future a requested seq may be (`-d`, default 0).
    pub delta: i64,
    /// Count sessions by the first `X-Forwarded-For` entry (`-F`).
    pub use_xff: bool,
    /// A requested non-zero heartbeat below this is raised to it (seconds).
    pub min_heartbeat: u64,
    /// A requested heartbeat above this, or none at all, becomes this
    /// (seconds). `None`: no upper bound, no forced heartbeat (reference).
    pub max_heartbeat: Option<u64>,
    /// Require HTTP basic auth on the HMB endpoints (not on `/_admin`).
    pub auth: Option<BasicAuth>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 8000,
            buffer_size: 100,
            sessions_per_ip: 10,
            session_timeout: Duration::from_secs(120),
            purge_interval: Duration::from_secs(60),
            post_size_kb: 10240,
            delta: 0,
            use_xff: false,
            min_heartbeat: 0,
            max_heartbeat: None,
            auth: None,
        }
    }
}

impl Settings {
    /// Settings for tests: like the defaults, but on a free port.
    pub fn for_tests() -> Settings {
        Settings {
            port: 0,
            ..Settings::default()
        }
    }

    /// The heartbeat a session gets for a requested one.
    pub fn effective_heartbeat(&self, requested: i64) -> u64 {
        let requested = u64::try_from(requested).unwrap_or(0);
        let mut hb = requested;
        if hb > 0 && hb < self.min_heartbeat {
            hb = self.min_heartbeat;
        }
        if let Some(max) = self.max_heartbeat {
            if hb == 0 || hb > max {
                hb = max;
            }
        }
        hb
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_bounds() {
        let mut s = Settings::default();
        assert_eq!(s.effective_heartbeat(0), 0);
        assert_eq!(s.effective_heartbeat(-3), 0);
        s.min_heartbeat = 2;
        s.max_heartbeat = Some(10);
        assert_eq!(s.effective_heartbeat(1), 2);
        assert_eq!(s.effective_heartbeat(0), 10);
        assert_eq!(s.effective_heartbeat(30), 10);
        assert_eq!(s.effective_heartbeat(5), 5);
    }
}
