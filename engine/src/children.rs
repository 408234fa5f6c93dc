//! The process groups of the commands buslink runs for an event (`exec` handlers): each is
//! registered while it runs, so that a forced exit (a second SIGTERM or SIGINT,
//! [`crate::shutdown`]) kills them before the process ends instead of leaving them running
//! with init as their parent. One owner: the [`Running`] guard registers a group and forgets
//! it when dropped.

use std::collections::BTreeSet;
use std::sync::Mutex;

static GROUPS: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

fn groups() -> std::sync::MutexGuard<'static, BTreeSet<i32>> {
    GROUPS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A process group buslink started and waits for (its leader's pid), registered until
/// dropped.
#[must_use = "the group is forgotten when the guard is dropped"]
pub struct Running(i32);

impl Running {
    /// Registers the group led by `leader` (a child started with `process_group(0)`).
    pub fn register(leader: i32) -> Running {
        groups().insert(leader);
        Running(leader)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        groups().remove(&self.0);
    }
}

/// Sends SIGKILL to every registered group; returns how many there were.
pub fn kill_all() -> usize {
    let groups = groups();
    for &group in groups.iter() {
        kill_group(group);
    }
    groups.len()
}

/// SIGKILL to the process group `group` leads (a command and what it started); a group
/// already empty is no error.
pub fn kill_group(group: i32) {
    // SAFETY: kill(2) with a negative pid signals the process group the command leads; it
    // touches no memory.
    unsafe {
        libc::kill(-group, libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn a_group_is_killed_while_registered_and_forgotten_after() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .expect("sleep starts");
        let leader = child.id() as i32;
        {
            let _running = Running::register(leader);
            assert!(groups().contains(&leader));
            assert!(kill_all() >= 1);
            let status = child.wait().expect("waited");
            assert_eq!(
                std::os::unix::process::ExitStatusExt::signal(&status),
                Some(libc::SIGKILL)
            );
        }
        assert!(!groups().contains(&leader));
    }
}
