//! `buslink check --config FILE [--connect]`: validates everything `run` would need, without
//! consuming, and lists every problem found.

use crate::config::{Config, EventFilter, HandlerConfig};
use crate::engine::{build_consumer, load_consumer_plugin, settings_refusal};
use crate::error::AppError;
use crate::plugin::PluginInfo;
use buslink_plugin_api::session::{open_at, Position};
use std::path::Path;

use crate::error::Problems;

/// Runs every check, of every consumer or of consumer `only`; prints the summary when all pass.
pub fn check(config_path: &Path, connect: bool, only: Option<&str>) -> Result<(), AppError> {
    // Every problem in one run: the config's own, then the plugin's view of its settings and
    // the handlers', on the config as far as it could be built.
    let (mut configs, config_problems) = Config::load_lenient(config_path)?;
    let mut problems: Vec<String> = config_problems.iter().map(ToString::to_string).collect();
    if let Some(name) = only {
        if !configs.iter().any(|c| c.consumer.name == name) {
            problems.push(format!(
                "{}: no consumer named '{name}' (the config has: {})",
                config_path.display(),
                configs
                    .iter()
                    .map(|c| c.consumer.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        configs.retain(|c| c.consumer.name == name);
    }
    let mut plugins = Vec::new();
    for config in &configs {
        plugins.push(check_plugin(config, &mut problems));
        for handler in &config.handlers {
            if let Err(problem) =
                crate::handlers::check_handler(handler, &config.base_dir, &config.plugin_dirs)
            {
                let message = format!("handler '{}': {problem}", handler.name);
                problems.push(
                    config
                        .handler_error_at(&handler.name, problem.key, message)
                        .to_string(),
                );
            }
        }
    }
    if let Some(config) = configs.first() {
        if let Err(problem) =
            crate::handlers::preflight::check_writable_dir(&config.process.state_dir)
        {
            problems.push(format!(
                "{}: state_dir {}: {problem}",
                config.source.path.display(),
                config.process.state_dir.display()
            ));
        }
        warn_if_world_writable(&config.process.state_dir);
        // A socket elsewhere than the state dir needs its directory (the daemon makes none).
        if let Some(dir) = config
            .process
            .control
            .path
            .parent()
            .filter(|dir| *dir != config.process.state_dir)
        {
            if !dir.is_dir() {
                problems.push(
                    config
                        .source
                        .error_at_key(
                            &["control", "path"],
                            format!(
                                "{} is not a directory: the socket cannot be made",
                                dir.display()
                            ),
                        )
                        .to_string(),
                );
            }
        }
    }
    let mut connected = vec![None; configs.len()];
    if connect && problems.is_empty() {
        for (config, connected) in configs.iter().zip(&mut connected) {
            match try_connect(config) {
                Ok(()) => *connected = Some("opened and closed the bus"),
                Err(problem) => problems.push(problem),
            }
        }
    }
    if !problems.is_empty() {
        return Err(AppError::Check(Problems { problems }));
    }
    if let Some(config) = configs.first() {
        println!("config {}: OK", config.source.path.display());
    }
    for ((config, plugin), connected) in configs.iter().zip(&plugins).zip(connected) {
        print_summary(config, plugin.as_ref(), connected);
    }
    Ok(())
}

fn check_plugin(config: &Config, problems: &mut Vec<String>) -> Option<(PluginInfo, String)> {
    let consumer = &config.consumer;
    let (plugin, path) = match load_consumer_plugin(config) {
        Ok(found) => found,
        Err(AppError::Load(error)) => {
            problems.push(
                config
                    .consumer_error("plugin", error.to_string())
                    .to_string(),
            );
            return None;
        }
        Err(error) => {
            problems.push(error.to_string());
            return None;
        }
    };
    let info = plugin.info().clone();
    if let Err(error) =
        plugin.validate_settings(&consumer.class, &consumer.settings_json, &config.base_dir)
    {
        problems.push(settings_refusal(config, &info.name, &error).to_string());
    }
    Some((info, path.display().to_string()))
}

/// A state directory others may write to lets them plant files buslink reads (its own are
/// never opened through links): worth a warning.
fn warn_if_world_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(dir) {
        let mode = meta.permissions().mode();
        if mode & 0o002 != 0 {
            tracing::warn!(
                "state_dir {} is writable by every user (mode {:o}): make it 0700 or 0750",
                dir.display(),
                mode & 0o7777
            );
        }
    }
}

fn try_connect(config: &Config) -> Result<(), String> {
    let (_plugin, mut consumer) = build_consumer(config).map_err(|e| e.to_string())?;
    let timeout = Some(std::time::Duration::from_millis(config.consumer.timeout_ms));
    open_at(&mut consumer, timeout, false, Position::Unpositioned).map_err(|e| e.to_string())?;
    consumer.close().map_err(|e| e.to_string())
}

fn describe_filter(filter: &EventFilter) -> String {
    let mut parts = Vec::new();
    for (field, patterns) in [
        ("category", &filter.category),
        ("eventtype", &filter.eventtype),
        ("objtype", &filter.objtype),
    ] {
        if !patterns.is_empty() {
            parts.push(format!("{field}={}", patterns.join("|")));
        }
    }
    if parts.is_empty() {
        "every event".into()
    } else {
        parts.join(" ")
    }
}

fn describe_handler(handler: &HandlerConfig) -> String {
    let what = handler.kind.summary();
    format!(
        "{}: {what}; match {}; retry {} attempt(s) {}..{} ms; on failure {}",
        handler.name,
        describe_filter(&handler.filter),
        handler.retry.attempts,
        handler.retry.base.as_millis(),
        handler.retry.max.as_millis(),
        match handler.on_failure {
            crate::config::FailurePolicy::Stop => "stop",
            crate::config::FailurePolicy::DeadLetter => "dead-letter",
            crate::config::FailurePolicy::ErrorQueue => "error-queue",
        }
    )
}

fn print_summary(config: &Config, plugin: Option<&(PluginInfo, String)>, connected: Option<&str>) {
    if let Some((info, path)) = plugin {
        println!(
            "plugin: {} {} ({}) from {path}",
            info.name,
            info.version,
            info.speaks()
        );
        let description = info
            .consumer_classes
            .iter()
            .find(|c| c.name == config.consumer.class)
            .map(|c| c.description.as_str())
            .unwrap_or_default();
        println!(
            "consumer: '{}', class {} ({description})",
            config.consumer.name, config.consumer.class
        );
    }
    println!("handlers:");
    for handler in &config.handlers {
        println!("  {}", describe_handler(handler));
    }
    println!(
        "state: {} (offset cache {}, commit every {} events or {} ms, fsync {})",
        config.process.state_dir.display(),
        crate::offsets::OffsetCache::new(&config.process.state_dir, &config.consumer.name)
            .path()
            .display(),
        config.commit.every_events,
        config.commit.every_ms,
        match config.commit.fsync {
            crate::offsets::FsyncMode::Background => "in the background",
            crate::offsets::FsyncMode::Each => "at each commit",
        }
    );
    if let Some(connected) = connected {
        println!("connect: {connected}");
    }
}
