//! `buslink query --config FILE [COMMAND [ARGS...]]`: runs an operator command of the consumer
//! class (e.g. HMB's `features`), or lists them.

use crate::engine::build_consumer;
use crate::error::AppError;
use buslink_plugin_api::session::{open_at, Position};

pub fn query(
    target: &crate::cli::Target,
    command: Option<&str>,
    args: &[String],
) -> Result<(), AppError> {
    let config = target.load()?;
    let (plugin, mut consumer) = build_consumer(&config)?;
    let info = plugin.info();
    let commands = info
        .consumer_classes
        .iter()
        .find(|class| class.name == config.consumer.class)
        .map(|class| class.commands.clone())
        .unwrap_or_default();
    let Some(command) = command else {
        if commands.is_empty() {
            println!(
                "class {} of plugin '{}' has no commands",
                config.consumer.class, info.name
            );
        } else {
            println!(
                "commands of class {} (plugin '{}'):",
                config.consumer.class, info.name
            );
            for (name, usage, help) in &commands {
                println!("  {name} {usage}\n      {help}");
            }
        }
        return Ok(());
    };
    if !commands.iter().any(|(name, _, _)| name == command) {
        let known: Vec<_> = commands.iter().map(|(name, _, _)| name.as_str()).collect();
        return Err(AppError::Usage(format!(
            "class {} of plugin '{}' has no command '{command}' (it has: {})",
            config.consumer.class,
            info.name,
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        )));
    }
    let timeout = Some(std::time::Duration::from_millis(config.consumer.timeout_ms));
    open_at(&mut consumer, timeout, false, Position::Unpositioned)
        .map_err(|e| AppError::Runtime(e.to_string()))?;
    let output = consumer.query(command, args);
    if let Err(error) = consumer.close() {
        tracing::warn!("{error}");
    }
    let output = output.map_err(|e| AppError::Runtime(e.to_string()))?;
    print!("{output}");
    if !output.is_empty() && !output.ends_with('\n') {
        println!();
    }
    Ok(())
}
