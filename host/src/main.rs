//! The `buslink` daemon. See ARCHITECTURE.md for the map.

use buslink::cli::{Cli, Command, CtlAction, ErrorsAction, OffsetsAction, PluginsCommand};
use buslink::commands::{check, errors, offsets, plugins, query, run, AppError};
use buslink::logging;
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(&cli.log_level, cli.log_format);
    if !matches!(cli.command, Command::Run { .. }) {
        // The listing commands end quietly when their reader goes (`buslink offsets show |
        // head`), as command-line tools do. `run` keeps the broken pipe as an error its stdout
        // handler reports (and its policy handles), never a silent death before a commit.
        // SAFETY: restoring the default action of a signal, before any thread is started.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One error line per problem, each with the file, key or plugin it is about.
            for line in error.to_string().lines() {
                tracing::error!("{line}");
            }
            ExitCode::from(error.exit_code())
        }
    }
}

fn dispatch(command: Command) -> Result<(), AppError> {
    match command {
        Command::Run { config, once } => run::run(&config, once),
        Command::Check { config, connect } => check::check(&config, connect),
        Command::Plugins(args) => match args.command {
            Some(PluginsCommand::Describe {
                name,
                class,
                dirs,
                config,
            }) => plugins::describe(&name, &class, &dirs, config.as_deref()),
            None => plugins::list(&args.dirs, args.config.as_deref(), args.json),
        },
        Command::Query {
            config,
            command,
            args,
        } => query::query(&config, command.as_deref(), &args),
        Command::Errors { action } => match action {
            ErrorsAction::List { config, json } => errors::list(&config, json),
            ErrorsAction::Retry { config, id } => errors::retry(&config, id),
            ErrorsAction::Drop { config, id, all } => errors::drop_events(&config, id, all),
        },
        Command::Offsets { action } => match action {
            OffsetsAction::Show { config, json } => offsets::show(&config, json),
            OffsetsAction::Set {
                config,
                offset,
                string,
                force,
            } => offsets::set(&config, &offset, string, force),
            OffsetsAction::ImportHermes {
                config,
                path,
                force,
            } => offsets::import_hermes(&config, &path, force),
            OffsetsAction::Reset { config } => offsets::reset(&config),
        },
        Command::Ctl { config, action } => {
            let command = match action {
                CtlAction::Status { json: false } => "status",
                CtlAction::Status { json: true } => "status --json",
                CtlAction::Pause => "pause",
                CtlAction::Resume => "resume",
                CtlAction::Quit => "quit",
            };
            buslink::commands::ctl(&config, command)
        }
    }
}
