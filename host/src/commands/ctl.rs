//! `buslink ctl`: one request to the running daemon's control socket, its answer printed.

use crate::error::AppError;

/// The control socket of the daemon running `config_path` (read leniently: `reload` is how a
/// fixed config reaches the daemon, and a config with a problem elsewhere still says where
/// the socket is).
fn socket_of(config_path: &std::path::Path) -> Result<std::path::PathBuf, AppError> {
    let (configs, _) = crate::config::Config::load_lenient(config_path)?;
    configs
        .first()
        .map(|config| config.process.control.path.clone())
        .ok_or_else(|| AppError::Usage(format!("{}: no consumer", config_path.display())))
}

/// `buslink ctl --config FILE COMMAND`: sends COMMAND to the running daemon's control socket
/// and prints its answer.
pub fn ctl(config_path: &std::path::Path, command: &str) -> Result<(), AppError> {
    let socket = socket_of(config_path)?;
    if command.len() > 1000 || command.contains(['\n', '\r']) {
        return Err(AppError::Usage(
            "a consumer name is letters, digits, '-', '_' and '.': no line breaks, and a \
             command is one line of at most 1000 bytes"
                .into(),
        ));
    }
    let answer = crate::control::client::send(&socket, command).map_err(AppError::Runtime)?;
    if let Some(error) = answer.strip_prefix("error: ") {
        return Err(AppError::Usage(error.trim_end().to_owned()));
    }
    print!("{answer}");
    Ok(())
}

/// `buslink ctl replay ...`: starts the job (`command`, the socket's `replay` line), then
/// follows it through `status --json` until it ends: a progress line a second on stderr (JSON
/// when stderr is no terminal, as `buslink replay`'s), the job's line at the end. Exit 0 when
/// it is done; an error when it failed or was cancelled, or the daemon went away (the job's
/// outcome is then unknown). Interrupting this command leaves the job running.
pub fn replay(config_path: &std::path::Path, command: &str) -> Result<(), AppError> {
    let socket = socket_of(config_path)?;
    let answer = crate::control::client::send(&socket, command).map_err(AppError::Runtime)?;
    if let Some(error) = answer.strip_prefix("error: ") {
        return Err(AppError::Usage(error.trim_end().to_owned()));
    }
    eprint!("{answer}");
    // "consumer 'NAME': replay #ID ...": the job to follow.
    let started = answer
        .strip_prefix("consumer '")
        .and_then(|rest| rest.split_once("': replay #"))
        .and_then(|(name, rest)| {
            let id: String = rest.chars().take_while(char::is_ascii_digit).collect();
            Some((name.to_owned(), id.parse::<u64>().ok()?))
        });
    let Some((consumer, id)) = started else {
        return Err(AppError::Runtime(format!(
            "an answer that names no replay job: {}",
            answer.trim_end()
        )));
    };
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut shown = std::time::Instant::now();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let text = crate::control::client::send(&socket, &format!("status --json {consumer}"))
            .map_err(|e| {
                AppError::Runtime(format!(
                    "the daemon went away during replay #{id}: its outcome is unknown ({e})"
                ))
            })?;
        let status: crate::control::Status = serde_json::from_str(&text).map_err(|e| {
            AppError::Runtime(format!("an answer that is not the status ({e}): {text}"))
        })?;
        let Some(job) = status.replay.filter(|job| job.id == id) else {
            return Err(AppError::Runtime(format!(
                "replay #{id} of consumer '{consumer}' is no longer the consumer's job (it \
                 restarted?): its outcome is unknown"
            )));
        };
        let line = |kind: &str| {
            serde_json::json!({
                "replay": kind,
                "events": job.events,
                if job.dry_run { "would_deliver" } else { "delivered" }: job.delivered,
                "offset": job.offset,
            })
            .to_string()
        };
        if job.running() {
            if shown.elapsed() >= std::time::Duration::from_secs(1) {
                shown = std::time::Instant::now();
                if terminal {
                    eprintln!(
                        "replay #{id}: {} events read, {} delivered, at offset {}",
                        job.events, job.delivered, job.offset
                    );
                } else {
                    eprintln!("{}", line("progress"));
                }
            }
            continue;
        }
        if !terminal {
            eprintln!("{}", line(&job.state));
        }
        let summary = crate::control::protocol::replay_line(&job);
        return match job.state.as_str() {
            "done" => {
                eprintln!("consumer '{consumer}': replay {summary}");
                Ok(())
            }
            _ => Err(AppError::Runtime(format!(
                "consumer '{consumer}': replay {summary}"
            ))),
        };
    }
}
