//! The command line.

use crate::logging::LogFormat;
use buslink_daemon::control::protocol::Request;
use buslink_daemon::control::{QueueCommand, ReplaySpec};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// buslink: consume a message bus through a plugin and replay its events to handlers.
#[derive(Debug, Parser)]
#[command(name = "buslink", version, about)]
pub struct Cli {
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume the configured bus and hand its events to the handlers.
    Run {
        /// The config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Drain what is on the bus now, commit, and exit.
        #[arg(long)]
        once: bool,
    },
    /// Validate a config and everything it names, without consuming; list every problem.
    Check {
        #[command(flatten)]
        target: Target,
        /// Also open the bus and close it.
        #[arg(long)]
        connect: bool,
    },
    /// List the plugin libraries in directories (default: the config's plugin_dirs).
    Plugins(PluginsArgs),
    /// Run an operator command of the consumer's plugin (e.g. HMB's `status`), or, without
    /// one, list the commands the plugin has.
    Query {
        #[command(flatten)]
        target: Target,
        /// The command (none: list the commands).
        command: Option<String>,
        /// Its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The error queue: list, retry now, or drop queued events (changes refused while the
    /// consumer's daemon runs).
    Errors {
        #[command(subcommand)]
        action: ErrorsAction,
    },
    /// Show or move a consumer's committed offset (refused while its daemon runs).
    Offsets {
        #[command(subcommand)]
        action: OffsetsAction,
    },
    /// Re-deliver a past range of the bus to chosen handlers; the committed offset stays
    /// where it is (a running daemon goes on beside it).
    Replay {
        #[command(flatten)]
        target: Target,
        /// Where to start: `beginning`, or an offset (included).
        #[arg(long)]
        from: String,
        /// The last offset to deliver (included); default: the end of the bus when met.
        #[arg(long)]
        to: Option<String>,
        /// Take --from and --to as strings even if they look like numbers.
        #[arg(long)]
        string: bool,
        /// Only this handler of the consumer (repeatable; default: all of them).
        #[arg(long = "handler", value_name = "NAME")]
        handlers: Vec<String>,
        /// Only events matching FIELD=GLOB, FIELD one of category, eventtype, objtype
        /// (repeatable; the handlers' own matches apply too).
        #[arg(long = "match", value_name = "FIELD=GLOB")]
        matches: Vec<String>,
        /// Read the range and count what each handler would get; deliver nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// A live view of the running daemon in the terminal: one row per consumer (state,
    /// events/s, lag, committed offset and its age, error queue, last error); p pauses and r
    /// resumes the selected consumer, q quits.
    Top {
        /// The config file (its control socket is the daemon's).
        #[arg(long, short)]
        config: PathBuf,
        /// How often the view is refreshed, in milliseconds.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..))]
        interval_ms: u64,
    },
    /// Print a shell completion script for buslink (bash: save it as
    /// /usr/share/bash-completion/completions/buslink; the package installs them).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print buslink's man page (roff: `buslink man | man -l -`), or write one page per
    /// command into a directory.
    Man {
        /// Write buslink.1 and buslink-COMMAND.1 for every command into this directory.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Talk to the running daemon through its control socket (STATE_DIR/buslink.sock, or
    /// `[control] path`).
    Ctl {
        /// The config file (required; before or after the action: `ctl --config F status`
        /// or `ctl status --config F`).
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: CtlAction,
    },
}

/// `--config FILE [--consumer NAME]`: the consumer a command is about.
#[derive(Debug, Args)]
pub struct Target {
    /// The config file.
    #[arg(long, short)]
    pub config: PathBuf,
    /// The consumer, where the config has several (`[[consumers]]`).
    #[arg(long)]
    pub consumer: Option<String>,
}

impl Target {
    /// The config of the chosen consumer (`--consumer`, or the config's only one).
    pub fn load(&self) -> Result<crate::config::Config, crate::config::ConfigErrors> {
        crate::config::Config::load_consumer(&self.config, self.consumer.as_deref())
    }
}

#[derive(Debug, Subcommand)]
pub enum CtlAction {
    /// State, plugin, committed offset and its time, events/s, lag, error queue, last error.
    Status {
        /// Print JSON: `{"consumers": [...]}`, or one consumer's object when CONSUMER is named.
        #[arg(long)]
        json: bool,
        /// One consumer (default: every consumer of the daemon).
        consumer: Option<String>,
    },
    /// Handle no more events (the offset of what was handled is committed; the bus stays open).
    Pause {
        /// One consumer (default: every consumer of the daemon).
        consumer: Option<String>,
    },
    /// Go on exactly where the pause stopped.
    Resume {
        /// One consumer (default: every consumer of the daemon).
        consumer: Option<String>,
    },
    /// The error queue through the running daemon: list, retry now, or drop queued events.
    Errors {
        #[command(subcommand)]
        action: CtlErrorsAction,
    },
    /// Re-deliver a past range through the running daemon, jsonl outputs included: its
    /// dispatcher appends the range between live batches and commits the new file lengths
    /// with the offset unchanged. Shows the progress and returns when the job ends (the job
    /// goes on if this command is interrupted; --cancel stops it).
    Replay {
        /// The consumer (needed where the daemon runs several).
        #[arg(long)]
        consumer: Option<String>,
        /// Where to start: `beginning`, or an offset (included).
        #[arg(long, required_unless_present = "cancel")]
        from: Option<String>,
        /// The last offset to deliver (included); default: the end of the bus when met.
        #[arg(long)]
        to: Option<String>,
        /// Take --from and --to as strings even if they look like numbers.
        #[arg(long)]
        string: bool,
        /// Only this handler of the consumer (repeatable; default: all of them).
        #[arg(long = "handler")]
        handlers: Vec<String>,
        /// Only events matching FIELD=GLOB, FIELD one of category, eventtype, objtype
        /// (repeatable; the handlers' own matches apply too).
        #[arg(long = "match")]
        matches: Vec<String>,
        /// Read the range and count what each handler would get; deliver nothing.
        #[arg(long)]
        dry_run: bool,
        /// Cancel the consumer's running replay job instead.
        #[arg(long, conflicts_with_all = ["from", "to", "string", "handlers", "matches", "dry_run"])]
        cancel: bool,
    },
    /// Re-read the config, as SIGHUP does.
    Reload,
    /// The running daemon's version, process id and time up.
    Version,
    /// Stop the daemon, as SIGTERM does.
    Quit,
}

#[derive(Debug, Subcommand)]
pub enum CtlErrorsAction {
    /// List the queued events.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// One consumer (default: every consumer of the daemon).
        #[arg(long)]
        consumer: Option<String>,
    },
    /// Try queued events now: every object, or the object of event ID.
    Retry {
        /// A queued event's id (then --consumer is needed where the daemon runs several).
        id: Option<u64>,
        /// One consumer (default: every consumer of the daemon).
        #[arg(long)]
        consumer: Option<String>,
    },
    /// Remove queued events without handling them.
    Drop {
        /// A queued event's id.
        id: Option<u64>,
        /// Every queued event.
        #[arg(long, conflicts_with = "id")]
        all: bool,
        /// The consumer (needed where the daemon runs several).
        #[arg(long)]
        consumer: Option<String>,
    },
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct PluginsArgs {
    #[command(subcommand)]
    pub command: Option<PluginsCommand>,
    /// Directories to list.
    pub dirs: Vec<PathBuf>,
    /// List the plugin_dirs of this config.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// Print the settings documentation of a plugin's class.
    Describe {
        /// The plugin (a name looked up in the directories, or a path).
        name: String,
        /// The class.
        class: String,
        /// Directories to look in.
        #[arg(long = "dir")]
        dirs: Vec<PathBuf>,
        /// Look in the plugin_dirs of this config.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum OffsetsAction {
    /// Print the committed offset.
    Show {
        #[command(flatten)]
        target: Target,
        /// Print the cache record as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make the next start begin at OFFSET.
    Set {
        #[command(flatten)]
        target: Target,
        /// An integer, a float or a string offset.
        offset: String,
        /// Take OFFSET as a string even if it looks like a number.
        #[arg(long)]
        string: bool,
        /// Set it even if the bus says it has no such offset (or cannot be reached).
        #[arg(long)]
        force: bool,
    },
    /// Take over a hermes-client's place: its cache file (`_hermes-client-NAME.json` or
    /// `.json.gz`) gives the next offset and, for Hermes mode, the initsync sequence, so the
    /// client is replaced without replaying the bus or re-running initsync.
    ImportHermes {
        #[command(flatten)]
        target: Target,
        /// hermes-client's cache file.
        path: PathBuf,
        /// Import even if the client's error queue holds events (they are not imported) or
        /// the bus does not hold the offset.
        #[arg(long)]
        force: bool,
    },
    /// Forget the committed offset: the next start uses the config's `start`.
    Reset {
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Debug, Subcommand)]
pub enum ErrorsAction {
    /// List the queued events.
    List {
        #[command(flatten)]
        target: Target,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Try queued events now: every object, or the object of event ID.
    Retry {
        #[command(flatten)]
        target: Target,
        /// A queued event's id.
        id: Option<u64>,
    },
    /// Remove queued events without handling them.
    Drop {
        #[command(flatten)]
        target: Target,
        /// A queued event's id.
        id: Option<u64>,
        /// Every queued event.
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
}

impl CtlAction {
    /// The control socket's request these arguments ask for (`Err`: arguments that name none).
    pub fn request(self) -> Result<Request, String> {
        Ok(match self {
            CtlAction::Status { json, consumer } => Request::Status { json, consumer },
            CtlAction::Pause { consumer } => Request::Pause { consumer },
            CtlAction::Resume { consumer } => Request::Resume { consumer },
            CtlAction::Errors { action } => match action {
                CtlErrorsAction::List { json, consumer } => Request::Errors {
                    consumer,
                    command: QueueCommand::List { json },
                },
                CtlErrorsAction::Retry { id, consumer } => Request::Errors {
                    consumer,
                    command: QueueCommand::Retry { id },
                },
                CtlErrorsAction::Drop { id, all, consumer } => Request::Errors {
                    consumer,
                    command: QueueCommand::Drop {
                        // As the offline `errors drop`: one event, or every one on request.
                        ids: match (id, all) {
                            (Some(id), false) => Some(vec![id]),
                            (None, true) => None,
                            _ => return Err("name one queued event ID, or --all".into()),
                        },
                    },
                },
            },
            CtlAction::Replay {
                consumer,
                cancel: true,
                ..
            } => Request::CancelReplay { consumer },
            CtlAction::Replay {
                consumer,
                from,
                to,
                string,
                handlers,
                matches,
                dry_run,
                cancel: false,
            } => Request::Replay {
                consumer,
                spec: ReplaySpec {
                    from: from.ok_or("--from is required (beginning or an offset)")?,
                    to,
                    string,
                    handlers,
                    matches,
                    dry_run,
                },
            },
            CtlAction::Reload => Request::Reload,
            CtlAction::Version => Request::Version,
            CtlAction::Quit => Request::Quit,
        })
    }
}
