//! The `buslink` daemon. See ARCHITECTURE.md for the map.

use buslink::cli::{Cli, Command, ErrorsAction, OffsetsAction, PluginsCommand};
use buslink::commands::{check, errors, offsets, plugins, query, replay, run};
use buslink::error::AppError;
use buslink::logging;
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(&cli.log_level, cli.log_format);
    let log_format = cli.log_format;
    // `run`, `replay` and `errors retry` deliver to handlers: a handler's closed pipe (an `exec` command that
    // exits without reading) is its failure, handled by its policy, never a silent death.
    let delivers = matches!(
        cli.command,
        Command::Run { .. }
            | Command::Replay { .. }
            | Command::Errors {
                action: ErrorsAction::Retry { .. }
            }
    );
    if !delivers {
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
            logging::command_failed(&error.to_string(), log_format);
            ExitCode::from(error.exit_code())
        }
    }
}

fn dispatch(command: Command) -> Result<(), AppError> {
    match command {
        Command::Run { config, once } => run::run(&config, once),
        Command::Check { target, connect } => {
            check::check(&target.config, connect, target.consumer.as_deref())
        }
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
            target,
            command,
            args,
        } => query::query(&target, command.as_deref(), &args),
        Command::Errors { action } => match action {
            ErrorsAction::List { target, json } => errors::list(&target, json),
            ErrorsAction::Retry { target, id } => errors::retry(&target, id),
            ErrorsAction::Drop { target, id, all } => errors::drop_events(&target, id, all),
        },
        Command::Offsets { action } => match action {
            OffsetsAction::Show { target, json } => offsets::show(&target, json),
            OffsetsAction::Set {
                target,
                offset,
                string,
                force,
            } => offsets::set(&target, &offset, string, force),
            OffsetsAction::ImportHermes {
                target,
                path,
                force,
            } => offsets::import_hermes(&target, &path, force),
            OffsetsAction::Reset { target } => offsets::reset(&target),
        },
        Command::Replay {
            target,
            from,
            to,
            string,
            handlers,
            matches,
            dry_run,
        } => replay::replay(
            &target,
            &replay::ReplayRequest {
                from,
                to,
                string,
                handlers,
                matches,
                dry_run,
            },
        ),
        Command::Top {
            config,
            interval_ms,
        } => buslink::commands::top::top(&config, std::time::Duration::from_millis(interval_ms)),
        Command::Completions { shell } => {
            buslink::commands::docs::completions(shell);
            Ok(())
        }
        Command::Man { out_dir } => buslink::commands::docs::man(out_dir.as_deref()),
        Command::Ctl { config, action } => {
            // Optional to clap only so that it may follow the action (a global argument).
            let config = config.ok_or_else(|| {
                AppError::Usage("ctl needs the daemon's config: --config FILE".to_owned())
            })?;
            let request = action.request().map_err(AppError::Usage)?;
            if let buslink_daemon::control::protocol::Request::Replay { .. } = &request {
                return buslink::commands::ctl::replay(&config, &request.to_line());
            }
            buslink::commands::ctl::ctl(&config, &request.to_line())
        }
    }
}
