//! Plugin executables (`plugin = { command = [...] }`): finding the program, and what a
//! consumer of it is started with. The protocol and the child's care are plugin-api's
//! ([`buslink_plugin_api::subprocess`]).

use super::loader::LoadError;
use crate::config::{HermesPlugin, PluginCommand};
use buslink_plugin_api::subprocess::{CallLimits, Spec};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The prefix of plugin executables' file names: `buslink plugins DIR` lists those (and runs
/// no other file to find out what it is).
pub const EXECUTABLE_PREFIX: &str = "buslink-plugin-";

/// Finds a plugin's program: a path with a `/` is relative to `base_dir`; a bare name is looked
/// up in `plugin_dirs`, then in buslink's own `PATH`. It must be an executable file.
pub fn find_executable(
    program: &str,
    base_dir: &Path,
    plugin_dirs: &[PathBuf],
) -> Result<PathBuf, LoadError> {
    let found = if program.contains('/') {
        let path = Path::new(program);
        let path = if path.is_absolute() {
            path.to_path_buf()
        } else {
            base_dir.join(path)
        };
        if !path.exists() {
            return Err(LoadError::MissingFile { path });
        }
        path
    } else {
        let path_dirs: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).collect())
            .unwrap_or_default();
        let mut tried = Vec::new();
        let mut found = None;
        for dir in plugin_dirs.iter().chain(&path_dirs) {
            let candidate = dir.join(program);
            if candidate.is_file() {
                found = Some(candidate);
                break;
            }
            tried.push(candidate);
        }
        match found {
            Some(path) => path,
            None => {
                return Err(LoadError::NotFound {
                    name: program.to_owned(),
                    tried,
                })
            }
        }
    };
    let metadata = std::fs::metadata(&found).map_err(|e| LoadError::NotAnExecutable {
        path: found.clone(),
        reason: e.to_string(),
    })?;
    if metadata.is_dir() {
        return Err(LoadError::Directory { path: found });
    }
    if metadata.permissions().mode() & 0o111 == 0 {
        return Err(LoadError::NotAnExecutable {
            path: found,
            reason: "it is not executable (chmod +x)".into(),
        });
    }
    Ok(found)
}

/// Whether `path` looks like a plugin executable by its name and mode (nothing is run).
pub fn is_plugin_executable(path: &Path) -> bool {
    let named = path
        .file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.starts_with(EXECUTABLE_PREFIX));
    named
        && std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The `env` table's variables with their values in the clear (for the child only).
fn plain_env(env: &[(String, crate::config::Secret)]) -> Vec<(String, String)> {
    env.iter()
        .map(|(name, value)| (name.clone(), value.expose().to_owned()))
        .collect()
}

/// A found plugin executable: the program, its arguments and its environment.
#[derive(Clone, Debug)]
pub(super) struct Executable {
    /// The program (found) and its arguments.
    pub(super) command: Vec<String>,
    pub(super) env: Vec<(String, String)>,
    pub(super) trace_frames: bool,
}

impl Executable {
    /// `config` with its program found at `program`.
    pub(super) fn new(program: &Path, config: &PluginCommand) -> Executable {
        let mut command = vec![program.display().to_string()];
        command.extend(config.command.iter().skip(1).cloned());
        Executable {
            command,
            env: plain_env(&config.env),
            trace_frames: config.trace_frames,
        }
    }

    /// The Python side of buslink serving the Hermes plugin in `plugin_dir` with `python`
    /// (found), from the package in `sdk` (the directory holding `buslink_plugin/`).
    pub(super) fn hermes(
        python: &Path,
        sdk: &Path,
        plugin_dir: &Path,
        hermes_root: Option<&Path>,
        config: &HermesPlugin,
        serve_as: &str,
    ) -> Executable {
        let mut command: Vec<String> = vec![
            python.display().to_string(),
            "-I".into(),
            "-B".into(),
            "-c".into(),
            super::python_sdk::BOOTSTRAP.into(),
            sdk.display().to_string(),
            "--plugin-dir".into(),
            plugin_dir.display().to_string(),
            "--serve-as".into(),
            serve_as.to_owned(),
        ];
        if let Some(root) = hermes_root {
            command.extend(["--hermes-root".into(), root.display().to_string()]);
        }
        if let Some(class) = &config.class {
            command.extend(["--class".into(), class.clone()]);
        }
        Executable {
            command,
            env: plain_env(&config.env),
            trace_frames: config.trace_frames,
        }
    }

    /// The program alone, without arguments or environment (`buslink plugins DIR`).
    pub(super) fn bare(program: &Path) -> Executable {
        Executable {
            command: vec![program.display().to_string()],
            env: Vec::new(),
            trace_frames: false,
        }
    }

    /// What a consumer of `class` is started with.
    pub(super) fn spec(&self, class: &str, settings: serde_json::Value, config_dir: &Path) -> Spec {
        Spec {
            command: self.command.clone(),
            env: self.env.clone(),
            class: class.to_owned(),
            settings,
            config_dir: config_dir.to_path_buf(),
            limits: CallLimits::default(),
            trace_frames: self.trace_frames,
        }
    }
}
