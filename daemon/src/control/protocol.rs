//! The control socket's requests: one type, with its one-line wire form both ways. `buslink
//! ctl`'s arguments (clap) map onto [`Request`] and are sent as [`Request::to_line`]; the
//! server reads a line with [`Request::parse`] and answers the typed request. Scripts may write
//! the lines themselves (`echo status | socat - UNIX:STATE_DIR/buslink.sock`).
//!
//! The lines (`NAME`: one consumer; without it, every consumer of the daemon):
//! `status [--json] [NAME]`, `pause [NAME]`, `resume [NAME]`,
//! `errors list [--json] [--consumer NAME]`, `errors retry [--consumer NAME] [ID]`,
//! `errors drop [--consumer NAME] ID...|--all`, `replay JSON` (a [`ReplaySpec`] object with an
//! optional `"consumer"`), `replay-cancel [NAME]`, `reload`, `version`, `quit`.

use super::{QueueCommand, QueueReply, ReplaySpec};

/// Every command, for error messages.
pub const COMMANDS: &str = "status [--json] [CONSUMER], pause [CONSUMER], resume [CONSUMER], \
                            errors list [--json] [--consumer NAME], errors retry [--consumer \
                            NAME] [ID], errors drop [--consumer NAME] ID|--all, replay JSON, \
                            replay-cancel [CONSUMER], reload, version, quit";

/// One request to the daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// The consumers' state (human text, or JSON).
    Status {
        json: bool,
        consumer: Option<String>,
    },
    /// No more events handled (what was handled committed, the bus left open).
    Pause { consumer: Option<String> },
    /// Goes on where it paused.
    Resume { consumer: Option<String> },
    /// An error-queue command, for one consumer or all of them.
    Errors {
        consumer: Option<String>,
        command: QueueCommand,
    },
    /// Starts a replay job on one consumer (`ctl replay`).
    Replay {
        consumer: Option<String>,
        spec: ReplaySpec,
    },
    /// Cancels one consumer's running replay job (`ctl replay --cancel`).
    CancelReplay { consumer: Option<String> },
    /// Reads the config again (as SIGHUP) and answers what changed.
    Reload,
    /// The running daemon's version, process id and time up (is it the build on disk?).
    Version,
    /// Stops the daemon (as SIGTERM).
    Quit,
}

impl Request {
    /// The line sent on the socket (without its newline).
    pub fn to_line(&self) -> String {
        let mut line = String::new();
        let named = |line: &mut String, consumer: &Option<String>| {
            if let Some(name) = consumer {
                line.push(' ');
                line.push_str(name);
            }
        };
        let on = |line: &mut String, consumer: &Option<String>| {
            if let Some(name) = consumer {
                line.push_str(" --consumer ");
                line.push_str(name);
            }
        };
        match self {
            Request::Status { json, consumer } => {
                line.push_str("status");
                if *json {
                    line.push_str(" --json");
                }
                named(&mut line, consumer);
            }
            Request::Pause { consumer } => {
                line.push_str("pause");
                named(&mut line, consumer);
            }
            Request::Resume { consumer } => {
                line.push_str("resume");
                named(&mut line, consumer);
            }
            Request::Errors { consumer, command } => match command {
                QueueCommand::List { json } => {
                    line.push_str("errors list");
                    if *json {
                        line.push_str(" --json");
                    }
                    on(&mut line, consumer);
                }
                QueueCommand::Retry { id } => {
                    line.push_str("errors retry");
                    on(&mut line, consumer);
                    if let Some(id) = id {
                        line.push_str(&format!(" {id}"));
                    }
                }
                QueueCommand::Drop { ids } => {
                    line.push_str("errors drop");
                    on(&mut line, consumer);
                    match ids {
                        Some(ids) => {
                            for id in ids {
                                line.push_str(&format!(" {id}"));
                            }
                        }
                        None => line.push_str(" --all"),
                    }
                }
            },
            Request::Replay { consumer, spec } => {
                let mut object = serde_json::to_value(spec).unwrap_or_default();
                if let (Some(name), Some(map)) = (consumer, object.as_object_mut()) {
                    map.insert("consumer".into(), serde_json::Value::String(name.clone()));
                }
                line.push_str("replay ");
                line.push_str(&object.to_string());
            }
            Request::CancelReplay { consumer } => {
                line.push_str("replay-cancel");
                named(&mut line, consumer);
            }
            Request::Reload => line.push_str("reload"),
            Request::Version => line.push_str("version"),
            Request::Quit => line.push_str("quit"),
        }
        line
    }

    /// Reads a line. `Err` is the answer to send back (`error: ...`, with its newline).
    pub fn parse(line: &str) -> Result<Request, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let unknown = || format!("error: unknown command {line:?} ({COMMANDS})\n");
        let Some((&command, rest)) = words.split_first() else {
            return Err(unknown());
        };
        if command == "replay" {
            let json = line
                .trim_start()
                .strip_prefix("replay")
                .unwrap_or("")
                .trim();
            let mut object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json)
                .map_err(|e| {
                    format!("error: replay takes a JSON object (from, to, handlers, ...): {e}\n")
                })?;
            let consumer = match object.remove("consumer") {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(name)) => Some(name),
                Some(other) => {
                    return Err(format!(
                        "error: replay: \"consumer\" is a name, not {other}\n"
                    ))
                }
            };
            let spec: ReplaySpec = serde_json::from_value(serde_json::Value::Object(object))
                .map_err(|e| format!("error: replay: {e}\n"))?;
            if spec.from.is_empty() {
                return Err(
                    "error: replay: \"from\" is required (beginning or an offset)\n".into(),
                );
            }
            return Ok(Request::Replay { consumer, spec });
        }
        if command == "errors" {
            return parse_errors(rest)
                .ok_or_else(|| format!("error: unknown command (errors: {COMMANDS})\n"));
        }
        let json = rest.first() == Some(&"--json");
        let takes_args = matches!(command, "status" | "pause" | "resume" | "replay-cancel");
        if !takes_args && !rest.is_empty() || (json && command != "status") {
            return Err(unknown());
        }
        let named: Vec<&str> = rest.iter().filter(|w| **w != "--json").copied().collect();
        let consumer = match named.as_slice() {
            [] => None,
            [name] => Some((*name).to_owned()),
            _ if takes_args => return Err(format!("error: one consumer at most ({COMMANDS})\n")),
            _ => return Err(unknown()),
        };
        match command {
            "status" => Ok(Request::Status { json, consumer }),
            "pause" => Ok(Request::Pause { consumer }),
            "resume" => Ok(Request::Resume { consumer }),
            "replay-cancel" => Ok(Request::CancelReplay { consumer }),
            "reload" => Ok(Request::Reload),
            "version" => Ok(Request::Version),
            "quit" => Ok(Request::Quit),
            _ => Err(unknown()),
        }
    }
}

/// `errors list|retry|drop ...` after the word `errors`; `None` when it is not one.
fn parse_errors(words: &[&str]) -> Option<Request> {
    let (&action, mut rest) = words.split_first()?;
    let mut consumer = None;
    let mut json = false;
    let mut all = false;
    let mut ids = Vec::new();
    while let Some((&word, tail)) = rest.split_first() {
        rest = tail;
        match word {
            "--consumer" => {
                let (&name, tail) = rest.split_first()?;
                consumer = Some(name.to_owned());
                rest = tail;
            }
            "--json" if action == "list" => json = true,
            "--all" if action == "drop" => all = true,
            id => match id.parse::<u64>() {
                Ok(id) if action != "list" => ids.push(id),
                _ => return None,
            },
        }
    }
    let command = match (action, ids.as_slice(), all) {
        ("list", [], false) => QueueCommand::List { json },
        ("retry", [], false) => QueueCommand::Retry { id: None },
        ("retry", [id], false) => QueueCommand::Retry { id: Some(*id) },
        ("drop", [], true) => QueueCommand::Drop { ids: None },
        ("drop", ids, false) if !ids.is_empty() => QueueCommand::Drop {
            ids: Some(ids.to_vec()),
        },
        _ => return None,
    };
    Some(Request::Errors { consumer, command })
}

/// The daemon's answer to one [`Request`], before it is worded: the server decides it, and
/// [`Reply::to_text`] alone writes the socket's text (one line or more, ending in a newline;
/// an answer that did nothing begins with `error: `, and `buslink ctl` exits 2 on it).
#[derive(Clone, Debug)]
pub enum Reply {
    /// `status`: every consumer's (or the one named), as text or JSON.
    Status {
        statuses: Vec<super::Status>,
        json: bool,
        /// One consumer was named: its JSON object alone.
        named: bool,
    },
    /// `pause` taken: in effect for every consumer but those in `pausing`, whose dispatchers
    /// had not stopped between two events after the server's wait
    /// ([`PAUSE_WAIT`](super::PAUSE_WAIT)): (name, whether its handlers hold an event).
    Paused { pausing: Vec<(String, bool)> },
    /// `pause` refused: these consumers' buses keep the position; `nothing_paused` when none of
    /// several was paused for it.
    PauseRefused {
        consumers: Vec<String>,
        nothing_paused: bool,
    },
    /// `resume` done.
    Resumed,
    /// `errors ...`: the consumers' answers, worded already by [`queue_answer`] (each
    /// consumer's part), `Err` when one of them did nothing.
    Queue(Result<String, String>),
    /// `reload` done: what changed.
    Reloaded(String),
    /// `reload` refused: why; the running config stays.
    ReloadRefused(String),
    /// `version`.
    Version {
        version: String,
        pid: u32,
        /// Seconds since the control socket opened, when known.
        up_s: Option<u64>,
    },
    /// `quit`: the stop began.
    Stopping,
    /// The request named no consumer the daemon runs, or could not be read: why.
    Refused(String),
}

impl Reply {
    /// The socket's text.
    pub fn to_text(&self) -> String {
        match self {
            Reply::Status {
                statuses,
                json: true,
                named: true,
            } => statuses
                .first()
                .map(|status| serde_json::to_string(status).unwrap_or_default() + "\n")
                .unwrap_or_default(),
            Reply::Status {
                statuses,
                json: true,
                named: false,
            } => {
                serde_json::to_string(&serde_json::json!({ "consumers": statuses }))
                    .unwrap_or_default()
                    + "\n"
            }
            Reply::Status { statuses, .. } => statuses.iter().map(human).collect(),
            Reply::Paused { pausing } if pausing.is_empty() => "paused\n".into(),
            Reply::Paused { pausing } => pausing
                .iter()
                .map(|(name, in_hand)| {
                    if *in_hand {
                        format!(
                            "pausing: consumer '{name}': its handlers still hold the event in \
                             hand; no event after it is handled, and `status` shows `paused` \
                             once they give it back\n"
                        )
                    } else {
                        format!(
                            "pausing: consumer '{name}': not in effect yet (it is not between \
                             two events of a run: see `status`); no event is handled until \
                             `resume`\n"
                        )
                    }
                })
                .collect(),
            Reply::PauseRefused {
                consumers,
                nothing_paused,
            } => format!(
                "error: {}: this consumer's bus keeps its position (a consumer group): a member \
                 that stops reading loses its partitions to the others; stop it (quit) \
                 instead{}\n",
                consumers.join(", "),
                if *nothing_paused {
                    " (nothing was paused; name the consumers to pause)"
                } else {
                    ""
                }
            ),
            Reply::Resumed => "resumed\n".into(),
            Reply::Queue(Ok(text)) => text.clone(),
            Reply::Queue(Err(text)) => format!("error: {text}"),
            Reply::Reloaded(summary) => format!("{summary}\n"),
            Reply::ReloadRefused(why) => {
                format!("error: reload refused, the running config stays: {why}\n")
            }
            Reply::Version { version, pid, up_s } => format!(
                "buslink {version} (pid {pid}, up {})\n",
                up_s.map_or_else(|| "for a time unknown".to_owned(), |s| format!("{s} s"))
            ),
            Reply::Stopping => "stopping\n".into(),
            Reply::Refused(text) => text.clone(),
        }
    }
}

/// One consumer's `status`, for people.
fn human(status: &super::Status) -> String {
    let mut text = format!(
        "consumer {}: {} (plugin {} class {})\n",
        status.consumer, status.state, status.plugin, status.class
    );
    text.push_str(&format!(
        "  committed offset: {}{}\n",
        status.committed_offset.as_deref().unwrap_or("none"),
        match (&status.committed_at, status.committed_age_seconds) {
            (Some(at), Some(age)) => format!(" at {at} ({age} s ago)"),
            (Some(at), None) => format!(" at {at}"),
            _ => String::new(),
        }
    ));
    text.push_str(&format!(
        "  events handled: {} ({} events/s)\n",
        status.events_handled, status.events_per_second
    ));
    match status.lag {
        Some(lag) => text.push_str(&format!("  lag: {lag} events\n")),
        None => text.push_str("  lag: unknown (the bus cannot be asked now)\n"),
    }
    if let Some(process) = &status.plugin_process {
        text.push_str(&format!(
            "  plugin process: {}, {} restart(s)\n",
            process
                .pid
                .map_or_else(|| "none running".to_owned(), |pid| format!("pid {pid}")),
            process.restarts
        ));
    }
    text.push_str(&format!("  error queue: {} events\n", status.error_queue));
    if let Some(error) = &status.last_error {
        match &status.last_error_at {
            Some(at) => text.push_str(&format!("  last error (at {at}): {error}\n")),
            None => text.push_str(&format!("  last error: {error}\n")),
        }
    }
    if let Some(job) = &status.replay {
        text.push_str(&format!("  replay: {}\n", replay_line(job)));
    }
    text
}

/// A replay job in one line: `#2 running, from 1 to 500 to archive: 120 events read, 60
/// delivered, at offset 120`.
pub fn replay_line(job: &super::ReplayJob) -> String {
    format!(
        "#{} {}{}, from {} to {} to {}: {} events read, {} {}{}{}",
        job.id,
        job.state,
        if job.dry_run { " (dry run)" } else { "" },
        job.from,
        job.to.as_deref().unwrap_or("the end"),
        job.handlers.join(", "),
        job.events,
        job.delivered,
        if job.dry_run {
            "deliveries it would make"
        } else {
            "delivered"
        },
        if job.offset.is_empty() {
            String::new()
        } else {
            format!(", at offset {}", job.offset)
        },
        job.error
            .as_deref()
            .map_or_else(String::new, |why| format!(" ({why})"))
    )
}

/// The words of one consumer's answer to an error-queue command (`ctl errors`): `Err` for an
/// answer that did nothing (`ctl` then exits 2).
pub fn queue_answer(consumer: &str, reply: &QueueReply, json: bool) -> Result<String, String> {
    match reply {
        QueueReply::Listed(events) => Ok(buslink_engine::error_queue::describe(
            consumer, events, json,
        )),
        QueueReply::Retried { handled, left } => Ok(format!(
            "consumer '{consumer}': {handled} queued event(s) handled, {left} left\n"
        )),
        QueueReply::Dropped { dropped, left } => Ok(format!(
            "consumer '{consumer}': dropped {dropped} event(s), {left} left\n"
        )),
        QueueReply::NoSuchEvent(id) => {
            Err(format!("consumer '{consumer}' has no queued event #{id}\n"))
        }
        QueueReply::ReplayStarted(job) => Ok(format!(
            "consumer '{consumer}': replay {}\n",
            replay_line(job)
        )),
        QueueReply::ReplayRefused(why) => {
            Err(format!("consumer '{consumer}': no replay started: {why}\n"))
        }
        QueueReply::ReplayCancelled(Some(job)) => Ok(format!(
            "consumer '{consumer}': replay {}\n",
            replay_line(job)
        )),
        QueueReply::ReplayCancelled(None) => Err(format!(
            "consumer '{consumer}' runs no replay: nothing cancelled\n"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_that_did_nothing_begins_with_error_and_no_other_does() {
        let done = [
            Reply::Paused { pausing: vec![] },
            Reply::Paused {
                pausing: vec![("demo".into(), true), ("other".into(), false)],
            },
            Reply::Resumed,
            Reply::Stopping,
            Reply::Reloaded("reloaded: 1 consumer(s) unchanged".into()),
            Reply::Queue(Ok("consumer 'a': dropped 1 event(s), 0 left\n".into())),
            Reply::Version {
                version: "0.1.0".into(),
                pid: 42,
                up_s: Some(7),
            },
            Reply::Status {
                statuses: Vec::new(),
                json: true,
                named: false,
            },
        ];
        for reply in &done {
            let text = reply.to_text();
            assert!(
                !text.starts_with("error: ") && text.ends_with('\n'),
                "{reply:?}: {text:?}"
            );
        }
        let refused = [
            Reply::PauseRefused {
                consumers: vec!["group".into()],
                nothing_paused: true,
            },
            Reply::ReloadRefused("bad key".into()),
            Reply::Queue(Err("consumer 'a' has no queued event #9\n".into())),
            Reply::Refused("error: no consumer named \"x\" in this daemon (it runs: a)\n".into()),
        ];
        for reply in &refused {
            let text = reply.to_text();
            assert!(
                text.starts_with("error: ") && text.ends_with('\n'),
                "{reply:?}: {text:?}"
            );
        }
        assert_eq!(
            done[6].to_text(),
            "buslink 0.1.0 (pid 42, up 7 s)\n",
            "the version's words"
        );
    }

    fn every_request() -> Vec<Request> {
        let consumers = [None, Some("billing".to_owned())];
        let mut all = vec![Request::Reload, Request::Version, Request::Quit];
        for consumer in consumers {
            for json in [false, true] {
                all.push(Request::Status {
                    json,
                    consumer: consumer.clone(),
                });
                all.push(Request::Errors {
                    consumer: consumer.clone(),
                    command: QueueCommand::List { json },
                });
            }
            all.push(Request::Pause {
                consumer: consumer.clone(),
            });
            all.push(Request::Resume {
                consumer: consumer.clone(),
            });
            for command in [
                QueueCommand::Retry { id: None },
                QueueCommand::Retry { id: Some(7) },
                QueueCommand::Drop { ids: None },
                QueueCommand::Drop { ids: Some(vec![3]) },
                QueueCommand::Drop {
                    ids: Some(vec![3, 4]),
                },
            ] {
                all.push(Request::Errors {
                    consumer: consumer.clone(),
                    command,
                });
            }
        }
        all
    }

    #[test]
    fn every_request_reads_back_from_its_line() {
        for request in every_request() {
            let line = request.to_line();
            assert_eq!(Request::parse(&line), Ok(request), "{line:?}");
        }
    }

    #[test]
    fn the_lines_are_the_documented_ones() {
        let status = Request::Status {
            json: true,
            consumer: Some("a".into()),
        };
        assert_eq!(status.to_line(), "status --json a");
        let drop = Request::Errors {
            consumer: Some("a".into()),
            command: QueueCommand::Drop { ids: None },
        };
        assert_eq!(drop.to_line(), "errors drop --consumer a --all");
    }

    #[test]
    fn bad_lines_are_refused_with_the_commands() {
        for line in [
            "",
            "stop",
            "reload now",
            "pause --json",
            "errors",
            "errors list 3",
            "errors retry 1 2",
            "errors drop",
            "errors drop 1 --all",
            "errors list --consumer",
        ] {
            let error = Request::parse(line).expect_err(line);
            assert!(
                error.starts_with("error: unknown command"),
                "{line:?}: {error}"
            );
            assert!(error.contains("errors drop [--consumer NAME]"), "{error}");
        }
        let error = Request::parse("status a b").expect_err("two consumers");
        assert!(error.starts_with("error: one consumer at most"), "{error}");
    }
}
