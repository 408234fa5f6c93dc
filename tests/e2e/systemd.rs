//! The service manager (systemd `Type=notify`): READY, STATUS lines, watchdog pings, STOPPING.

use crate::common::*;
use buslink_testkit::{Daemon, TestDir};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn systemd_hears_ready_status_watchdog_pings_and_stopping() {
    let dir = TestDir::new("sd-notify");
    let config = sqlite_config(&dir, &fixture_bus(), "", &jsonl_handler("all", ""));
    let socket_path = dir.join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).expect("socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut command =
        buslink_testkit::process::buslink(&["run", "--config", &config.to_string_lossy()]);
    command
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000");
    let daemon = Daemon::start(command);
    let mut seen = Vec::new();
    notifications_until(&socket, &mut seen, "READY=1", LIMIT);
    notifications_until(&socket, &mut seen, "STATUS=running", LIMIT);
    // WatchdogSec=0.4 s: pings every 0.2 s, again and again.
    let pings = |seen: &[String]| {
        seen.iter()
            .filter(|m| m.lines().any(|line| line == "WATCHDOG=1"))
            .count()
    };
    let deadline = std::time::Instant::now() + LIMIT;
    let mut buffer = [0u8; 4096];
    while pings(&seen) < 3 {
        assert!(std::time::Instant::now() < deadline, "pings: {seen:?}");
        if let Ok(n) = socket.recv(&mut buffer) {
            seen.push(String::from_utf8_lossy(&buffer[..n]).into_owned());
        }
    }
    let run = daemon.terminate(LIMIT);
    assert_eq!(run.code(), Some(0), "{run}");
    notifications_until(&socket, &mut seen, "STOPPING=1", LIMIT);
}

#[test]
fn with_several_consumers_the_service_manager_hears_which_one_and_stopping_only_at_the_stop() {
    let dir = TestDir::new("notify-several");
    let bus_b = bus(&dir, "b.sqlite", 5);
    let config = broken_and_steady(&dir, "", &bus_b);
    let socket_path = dir.join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).expect("socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut command =
        buslink_testkit::process::buslink(&["run", "--config", &config.to_string_lossy()]);
    command.env("NOTIFY_SOCKET", &socket_path);
    let mut daemon = Daemon::start(command);
    let mut seen = Vec::new();
    notifications_until(&socket, &mut seen, "READY=1", LIMIT);
    notifications_until(&socket, &mut seen, "STATUS=steady: running", LIMIT);
    daemon.wait_for("a second restart of broken", LIMIT, |d| {
        d.stderr().contains("restart 2 in 2 s")
    });
    let failed = |seen: &[String]| {
        seen.iter().any(|m| {
            m.lines().any(|l| {
                l.starts_with("STATUS=broken: failed:")
                    && l.contains("(restart 1 at ")
                    && l.contains(" UTC, 1 s after the failure)")
            })
        })
    };
    let deadline = std::time::Instant::now() + LIMIT;
    let mut buffer = [0u8; 4096];
    while !failed(&seen) {
        assert!(std::time::Instant::now() < deadline, "{seen:?}");
        if let Ok(n) = socket.recv(&mut buffer) {
            seen.push(String::from_utf8_lossy(&buffer[..n]).into_owned());
        }
    }
    assert!(
        !seen.iter().any(|m| m.contains("STOPPING=1")),
        "a consumer's restart is no stop of the service: {seen:?}"
    );
    // (Its exit code depends on whether `broken` was failing or just restarted at the stop.)
    let run = daemon.terminate(LIMIT);
    assert!(run.code().is_some(), "{run}");
    notifications_until(&socket, &mut seen, "STOPPING=1", LIMIT);
    assert_eq!(
        seen.iter().filter(|m| m.contains("STOPPING=1")).count(),
        1,
        "{seen:?}"
    );
}
