//! `buslink plugins [DIR...]` and `buslink plugins describe NAME CLASS`.

use crate::config::Config;
use crate::error::AppError;
use crate::plugin::{find_library, LoadedPlugin};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// One library found in a plugin directory.
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
        name: String,
        version: String,
        api_version: String,
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

/// Every shared library in `dirs`, with what it is (`allow_insecure`: the config's
/// `allow_insecure_plugins`, so the listing says what `run` would do).
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
            .filter(|path| {
                path.is_file()
                    && path
                        .to_string_lossy()
                        .ends_with(std::env::consts::DLL_SUFFIX)
            })
            .collect();
        paths.sort();
        for path in paths {
            let outcome = match LoadedPlugin::load(&path, allow_insecure) {
                Ok(plugin) => {
                    let info = plugin.info();
                    LibraryOutcome::Plugin {
                        name: info.name.clone(),
                        version: info.version.clone(),
                        api_version: info.api_version.clone(),
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
        println!("no libraries in {}", shown.join(", "));
    }
    for report in reports {
        println!("{}", report.path.display());
        match report.outcome {
            LibraryOutcome::Plugin {
                name,
                version,
                api_version,
                classes,
            } => {
                println!("  plugin {name} {version} (plugin-api {api_version})");
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
    // A path to a library needs no directories to look in.
    let is_path = name.contains('/') || Path::new(name).is_file();
    let dirs = if is_path {
        dirs.to_vec()
    } else {
        plugin_dirs(dirs, config)?
    };
    let path = if is_path {
        PathBuf::from(name)
    } else {
        find_library(name, Path::new("."), &dirs)?
    };
    let plugin = LoadedPlugin::load(&path, allow_insecure(config)?)?;
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
