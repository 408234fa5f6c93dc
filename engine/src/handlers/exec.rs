//! `type = "exec"`: runs a command per event, never through a shell, with the event line on
//! stdin and `BUSLINK_*` variables in an otherwise clean environment, in its `cwd` (default:
//! the state dir).

use super::{DispatchedEvent, Handler, HandlerError};
use crate::config::ExecConfig;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use wait_timeout::ChildExt;

/// At most this much of a command's stderr and stdout is kept for the log.
const OUTPUT_LIMIT: usize = 16 * 1024;

pub(super) struct ExecHandler {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    timeout: Duration,
    cwd: PathBuf,
}

/// Finds the program: a path with a `/` (relative to the config's directory), or a name looked
/// up in buslink's own `PATH` (the command itself runs with a clean environment).
pub fn resolve_program(program: &str, base_dir: &Path) -> Result<PathBuf, String> {
    let candidate = Path::new(program);
    let found = if program.contains('/') {
        let path = if candidate.is_absolute() {
            candidate.to_path_buf()
        } else {
            base_dir.join(candidate)
        };
        path.is_file().then_some(path)
    } else {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(program))
                .find(|path| path.is_file())
        })
    };
    let path = found.ok_or_else(|| format!("command '{program}' not found"))?;
    let executable = std::fs::metadata(&path)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0)
        .unwrap_or(false);
    if !executable {
        return Err(format!("command {} is not executable", path.display()));
    }
    Ok(path)
}

/// The command's working directory: a `cwd` that is no directory is refused; the state dir,
/// the default, is checked only (`check`) or made where missing (`make_state_dir`: a run, a
/// replay or a retry before the daemon ever ran), as the daemon makes it.
pub(super) fn checked_cwd(
    cwd: &crate::config::ExecCwd,
    make_state_dir: bool,
) -> Result<PathBuf, String> {
    match cwd {
        crate::config::ExecCwd::Set(dir) if !dir.is_dir() => Err(format!(
            "cwd {} is not a directory{}",
            dir.display(),
            if dir.exists() {
                ""
            } else {
                " (it does not exist)"
            }
        )),
        crate::config::ExecCwd::StateDir(dir) if make_state_dir && !dir.is_dir() => {
            crate::state_file::create_dir_all(dir)
                .map_err(|e| format!("cannot make the state dir {}: {e}", dir.display()))?;
            Ok(dir.clone())
        }
        other => Ok(other.path().to_path_buf()),
    }
}

impl ExecHandler {
    pub(super) fn new(name: &str, config: &ExecConfig, base_dir: &Path) -> Result<Self, String> {
        let (program, args) = config
            .command
            .split_first()
            .ok_or_else(|| "`command` is empty".to_owned())?;
        Ok(ExecHandler {
            name: name.to_owned(),
            program: resolve_program(program, base_dir)?,
            args: args.to_vec(),
            env: config
                .env
                .iter()
                .map(|(key, value)| (key.clone(), value.expose().to_owned()))
                .collect(),
            timeout: config.timeout,
            cwd: checked_cwd(&config.cwd, true)?,
        })
    }

    fn log_output(&self, stream: &str, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        for line in text.lines().filter(|line| !line.trim().is_empty()) {
            if stream == "stderr" {
                tracing::warn!("handler '{}' {stream}: {line}", self.name);
            } else {
                tracing::debug!("handler '{}' {stream}: {line}", self.name);
            }
        }
    }
}

fn read_limited(mut pipe: impl Read) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buffer = [0u8; 4096];
    while let Ok(n) = pipe.read(&mut buffer) {
        if n == 0 {
            break;
        }
        let room = OUTPUT_LIMIT.saturating_sub(kept.len());
        kept.extend_from_slice(&buffer[..n.min(room)]);
    }
    kept
}

impl Handler for ExecHandler {
    fn handle(&mut self, event: &DispatchedEvent<'_>) -> Result<(), HandlerError> {
        let header = event.header();
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("BUSLINK_OFFSET", event.offset_text())
            .env("BUSLINK_CATEGORY", event.event.category)
            .env(
                "BUSLINK_EVENTTYPE",
                header.eventtype.as_deref().unwrap_or(""),
            )
            .env("BUSLINK_OBJTYPE", header.objtype.as_deref().unwrap_or(""))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .current_dir(&self.cwd)
            // Its own process group: a timeout kills whatever it started too.
            .process_group(0)
            .spawn()
            .map_err(|e| {
                let place = if self.cwd.is_dir() {
                    String::new()
                } else {
                    format!(" (its cwd {} is not a directory)", self.cwd.display())
                };
                HandlerError::new(format!("cannot run {}{place}: {e}", self.program.display()))
            })?;
        let line = event.line();
        let (stdin, stdout, stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let (status, out, err) = std::thread::scope(|scope| {
            // The command may not read its stdin, or exit early: write from a thread of its own.
            scope.spawn(move || {
                if let Some(mut stdin) = stdin {
                    let _ = stdin.write_all(line);
                }
            });
            let out = scope.spawn(move || stdout.map(read_limited).unwrap_or_default());
            let err = scope.spawn(move || stderr.map(read_limited).unwrap_or_default());
            let group = child.id() as i32;
            // Killed by a forced exit of the daemon too (`crate::children`).
            let _running = crate::children::Running::register(group);
            let status = child.wait_timeout(self.timeout);
            let status = match status {
                Ok(Some(status)) => Ok(status),
                Ok(None) => {
                    crate::children::kill_group(group);
                    let _ = child.kill();
                    let _ = child.wait();
                    Err(format!(
                        "{} timed out after {} ms and was killed with its process group",
                        self.program.display(),
                        self.timeout.as_millis()
                    ))
                }
                Err(e) => Err(format!("waiting for {}: {e}", self.program.display())),
            };
            // What the command left running (a background child holding its pipes) goes too:
            // nothing outlives the event, and the pipes close so the readers end.
            crate::children::kill_group(group);
            (
                status,
                out.join().unwrap_or_default(),
                err.join().unwrap_or_default(),
            )
        });
        self.log_output("stdout", &out);
        self.log_output("stderr", &err);
        let status = status.map_err(HandlerError::new)?;
        if status.success() {
            Ok(())
        } else {
            Err(HandlerError::new(format!(
                "{} exited with {status}",
                self.program.display()
            )))
        }
    }
}
