//! `buslink plugins [DIR...]` and `buslink plugins describe NAME CLASS`.

use crate::config::Config;
use crate::error::AppError;
use crate::plugin::{
    find_executable, find_library, is_plugin_executable, LoadedPlugin, EXECUTABLE_PREFIX,
};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// One library or plugin executable found in a plugin directory.
#[derive(Debug, Serialize)]
pub struct LibraryReport {
    pub path: PathBuf,
    #[serde(flatten)]
    pub outcome: LibraryOutcome,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum LibraryOutcome {
    Plugin {
        /// `library` (loaded into the daemon) or `executable` (run as a child process).
        kind: &'static str,
        name: String,
        version: String,
        /// A library's plugin-api version (`0.5.0`), or an executable's protocol version (`1`).
        api_version: String,
        /// How it speaks to buslink: `plugin-api 0.5.0`, `subprocess protocol 1`.
        speaks: String,
        classes: Vec<ClassReport>,
    },
    Unusable {
        error: String,
    },
}

#[derive(Debug, Serialize)]
pub struct ClassReport {
    pub name: String,
    pub kind: &'static str,
    pub description: String,
}

/// A config's first consumer: the top-level keys (`plugin_dirs`, `allow_insecure_plugins`) are
/// every consumer's.
fn first_config(path: &Path) -> Result<Config, AppError> {
    Config::load_all(path)?
        .into_iter()
        .next()
        .ok_or_else(|| AppError::Usage(format!("{}: no consumer", path.display())))
}

/// The directories to look in: those given, else the config's `plugin_dirs`.
pub fn plugin_dirs(dirs: &[PathBuf], config: Option<&Path>) -> Result<Vec<PathBuf>, AppError> {
    if !dirs.is_empty() {
        return Ok(dirs.to_vec());
    }
    match config {
        Some(path) => Ok(first_config(path)?.plugin_dirs),
        None => Err(AppError::Usage(
            "name plugin directories, or a config whose plugin_dirs to list (--config FILE)".into(),
        )),
    }
}

/// Whether the config (if one is given) allows plugin libraries other users could change.
fn allow_insecure(config: Option<&Path>) -> Result<bool, AppError> {
    Ok(match config {
        Some(path) => first_config(path)?.allow_insecure_plugins,
        None => false,
    })
}

/// Every shared library and every plugin executable (`buslink-plugin-*`, executable) in
/// `dirs`, with what it is (`allow_insecure`: the config's `allow_insecure_plugins`, so the
/// listing says what `run` would do). No other file is run or loaded.
pub fn scan(dirs: &[PathBuf], allow_insecure: bool) -> Result<Vec<LibraryReport>, AppError> {
    let mut reports = Vec::new();
    for dir in dirs {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            AppError::Usage(format!(
                "cannot list plugin directory {}: {e}",
                dir.display()
            ))
        })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| is_library(path) || is_plugin_executable(path))
            .collect();
        paths.sort();
        for path in paths {
            let loaded = if is_library(&path) {
                LoadedPlugin::load(&path, allow_insecure)
            } else {
                LoadedPlugin::executable(&path, None, allow_insecure, dir)
            };
            let outcome = match loaded {
                Ok(plugin) => {
                    let info = plugin.info();
                    LibraryOutcome::Plugin {
                        kind: kind(&plugin),
                        name: info.name.clone(),
                        version: info.version.clone(),
                        api_version: info.api_version.clone(),
                        speaks: info.speaks(),
                        classes: info
                            .consumer_classes
                            .iter()
                            .map(|class| (class, "consumer"))
                            .chain(info.handler_classes.iter().map(|class| (class, "handler")))
                            .map(|(class, kind)| ClassReport {
                                name: class.name.clone(),
                                kind,
                                description: class.description.clone(),
                            })
                            .collect(),
                    }
                }
                Err(error) => LibraryOutcome::Unusable {
                    error: error.to_string(),
                },
            };
            reports.push(LibraryReport { path, outcome });
        }
    }
    Ok(reports)
}

fn is_library(path: &Path) -> bool {
    path.is_file()
        && path
            .to_string_lossy()
            .ends_with(std::env::consts::DLL_SUFFIX)
}

fn is_executable_file(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn kind(plugin: &LoadedPlugin) -> &'static str {
    if plugin.is_executable() {
        "executable"
    } else {
        "library"
    }
}

/// `buslink plugins`: prints what `scan` found, as text or JSON.
pub fn list(dirs: &[PathBuf], config: Option<&Path>, json: bool) -> Result<(), AppError> {
    let dirs = plugin_dirs(dirs, config)?;
    let reports = scan(&dirs, allow_insecure(config)?)?;
    if json {
        let text =
            serde_json::to_string_pretty(&reports).map_err(|e| AppError::Runtime(e.to_string()))?;
        println!("{text}");
        return Ok(());
    }
    if reports.is_empty() {
        let shown: Vec<_> = dirs.iter().map(|d| d.display().to_string()).collect();
        println!("no plugins in {}", shown.join(", "));
    }
    for report in reports {
        println!("{}", report.path.display());
        match report.outcome {
            LibraryOutcome::Plugin {
                kind,
                name,
                version,
                speaks,
                classes,
                ..
            } => {
                if kind == "executable" {
                    println!("  plugin {name} {version} (executable, {speaks})");
                } else {
                    println!("  plugin {name} {version} ({speaks})");
                }
                for class in classes {
                    println!("    {} ({}): {}", class.name, class.kind, class.description);
                }
            }
            LibraryOutcome::Unusable { error } => println!("  not usable: {error}"),
        }
    }
    Ok(())
}

/// `buslink plugins describe NAME CLASS`: the class's settings documentation.
pub fn describe(
    name: &str,
    class: &str,
    dirs: &[PathBuf],
    config: Option<&Path>,
) -> Result<(), AppError> {
    // A path to a library or an executable needs no directories to look in.
    let is_path = name.contains('/') || Path::new(name).is_file();
    let dirs = if is_path {
        dirs.to_vec()
    } else {
        plugin_dirs(dirs, config)?
    };
    let path = if is_path {
        PathBuf::from(name)
    } else {
        // A library by its name, else the executable `buslink-plugin-NAME` (or `NAME`).
        find_library(name, Path::new("."), &dirs).or_else(|not_found| {
            let program = if name.starts_with(EXECUTABLE_PREFIX) {
                name.to_owned()
            } else {
                format!("{EXECUTABLE_PREFIX}{name}")
            };
            find_executable(&program, Path::new("."), &dirs).map_err(|_| not_found)
        })?
    };
    let allow = allow_insecure(config)?;
    // A `.so` is a library (cdylibs are executable files too); another executable file is
    // run as a plugin executable.
    // A directory is a Hermes plugin's (`NAME/NAME.py`), served under `class`.
    let plugin = if path.is_dir() {
        let hermes = crate::config::HermesPlugin {
            dir: path.display().to_string(),
            python: "python3".into(),
            hermes_root: None,
            class: None,
            env: Vec::new(),
            trace_frames: false,
        };
        LoadedPlugin::hermes(&hermes, class, Path::new("."), allow)?
    } else if is_library(&path) || !is_executable_file(&path) {
        LoadedPlugin::load(&path, allow)?
    } else {
        let dir = path.parent().unwrap_or(Path::new("."));
        LoadedPlugin::executable(&path, None, allow, dir)?
    };
    let info = plugin.info();
    let all = || {
        info.consumer_classes
            .iter()
            .map(|c| (c, "consumer"))
            .chain(info.handler_classes.iter().map(|c| (c, "handler")))
    };
    let (found, kind) = all().find(|(c, _)| c.name == class).ok_or_else(|| {
        let known: Vec<_> = all().map(|(c, _)| c.name.as_str()).collect();
        AppError::Usage(format!(
            "plugin '{}' has no class '{class}'; it has: {}",
            info.name,
            known.join(", ")
        ))
    })?;
    println!(
        "{} ({kind} class of plugin {} {}, {})",
        found.name,
        info.name,
        info.version,
        path.display()
    );
    println!("{}\n", found.description);
    println!(
        "Settings ({}):",
        if kind == "consumer" {
            "[consumer.settings]"
        } else {
            "the handler's `settings` table"
        }
    );
    println!("{}", found.settings_doc);
    Ok(())
}
