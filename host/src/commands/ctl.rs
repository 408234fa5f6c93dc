//! `buslink ctl`: one request to the running daemon's control socket, its answer printed.

use crate::error::AppError;

/// `buslink ctl --config FILE COMMAND`: sends COMMAND to the running daemon's control socket
/// and prints its answer.
pub fn ctl(config_path: &std::path::Path, command: &str) -> Result<(), AppError> {
    // Leniently: `reload` is how a fixed config reaches the daemon, and a config with a
    // problem elsewhere still says where the socket is (the daemon reports the problem).
    let (configs, _) = crate::config::Config::load_lenient(config_path)?;
    let Some(config) = configs.first() else {
        return Err(AppError::Usage(format!(
            "{}: no consumer",
            config_path.display()
        )));
    };
    if command.len() > 1000 || command.contains(['\n', '\r']) {
        return Err(AppError::Usage(
            "a consumer name is letters, digits, '-', '_' and '.': no line breaks, and a \
             command is one line of at most 1000 bytes"
                .into(),
        ));
    }
    let answer = crate::control::client::send(&config.process.control.path, command)
        .map_err(AppError::Runtime)?;
    if let Some(error) = answer.strip_prefix("error: ") {
        return Err(AppError::Usage(error.trim_end().to_owned()));
    }
    print!("{answer}");
    Ok(())
}
