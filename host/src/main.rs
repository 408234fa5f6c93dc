//! The `buslink` daemon. See ARCHITECTURE.md for the map.

use buslink::{cli, logging, run};
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    logging::init(&cli.log_level, cli.log_format);
    let result = match &cli.command {
        cli::Command::Run { config, once } => run::run(config, *once),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            ExitCode::from(error.exit_code())
        }
    }
}
