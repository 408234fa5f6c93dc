//! `buslink completions SHELL` and `buslink man`: the shell completions and the man pages,
//! made from the command line's own definition (`cli::Cli`), so they never disagree with it.
//! The Debian package installs both (`packaging/deb/build`).

use crate::cli::Cli;
use crate::error::AppError;
use clap::CommandFactory;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Prints the completion script of `shell` to stdout.
pub fn completions(shell: clap_complete::Shell) {
    let mut command = Cli::command();
    clap_complete::generate(shell, &mut command, "buslink", &mut std::io::stdout());
}

/// The mode of the man pages written (documentation: readable by all, written by the owner).
const PAGE_MODE: u32 = 0o644;

/// Prints the man page `buslink(1)` (roff) to stdout; with `out_dir`, writes `buslink.1` and a
/// `buslink-COMMAND.1` for every command (and subcommand) there instead (made if missing, 0755;
/// the pages 0644, whatever the umask).
pub fn man(out_dir: Option<&Path>) -> Result<(), AppError> {
    let command = Cli::command();
    match out_dir {
        None => clap_mangen::Man::new(command)
            .render(&mut std::io::stdout())
            .map_err(|e| AppError::Runtime(format!("cannot write the man page: {e}"))),
        Some(dir) => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .and_then(|()| clap_mangen::generate_to(command.clone(), dir))
            .and_then(|()| help_page(command, dir))
            .and_then(|()| close_pages(dir))
            .map_err(|e| {
                AppError::Runtime(format!(
                    "cannot write the man pages to {}: {e}",
                    dir.display()
                ))
            }),
    }
}

/// Sets every page written in `dir` (`buslink*.1`) to [`PAGE_MODE`]: clap_mangen creates them
/// with the umask's leave (0666 under `umask 000`).
fn close_pages(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("buslink") && name.ends_with(".1") && entry.file_type()?.is_file() {
            std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(PAGE_MODE))?;
        }
    }
    Ok(())
}

/// `buslink-help.1`: clap's own `help` command, which `buslink(1)` lists among the commands
/// but `generate_to` writes no page for.
fn help_page(command: clap::Command, dir: &Path) -> std::io::Result<()> {
    let mut built = command;
    built.build();
    let Some(help) = built.find_subcommand("help") else {
        return Ok(());
    };
    let page = help
        .clone()
        .name("buslink-help")
        .version(env!("CARGO_PKG_VERSION"));
    let mut file = std::fs::File::create(dir.join("buslink-help.1"))?;
    clap_mangen::Man::new(page).render(&mut file)
}
