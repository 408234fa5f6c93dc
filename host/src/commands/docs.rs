//! `buslink completions SHELL` and `buslink man`: the shell completions and the man pages,
//! made from the command line's own definition (`cli::Cli`), so they never disagree with it.
//! The Debian package installs both (`packaging/deb/build`).

use crate::cli::Cli;
use crate::error::AppError;
use clap::CommandFactory;
use std::path::Path;

/// Prints the completion script of `shell` to stdout.
pub fn completions(shell: clap_complete::Shell) {
    let mut command = Cli::command();
    clap_complete::generate(shell, &mut command, "buslink", &mut std::io::stdout());
}

/// Prints the man page `buslink(1)` (roff) to stdout; with `out_dir`, writes `buslink.1` and a
/// `buslink-COMMAND.1` for every command (and subcommand) there instead (made if missing).
pub fn man(out_dir: Option<&Path>) -> Result<(), AppError> {
    let command = Cli::command();
    match out_dir {
        None => clap_mangen::Man::new(command)
            .render(&mut std::io::stdout())
            .map_err(|e| AppError::Runtime(format!("cannot write the man page: {e}"))),
        Some(dir) => std::fs::create_dir_all(dir)
            .and_then(|()| clap_mangen::generate_to(command, dir))
            .map_err(|e| {
                AppError::Runtime(format!(
                    "cannot write the man pages to {}: {e}",
                    dir.display()
                ))
            }),
    }
}
