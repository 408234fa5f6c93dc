//! Reading and validating a config file into one [`Config`] per consumer: each section is
//! deserialised on its own (so one run reports every problem), each handler entry leniently,
//! and every error names the file, the line and the key.

use crate::consumer::{CommitSection, ConsumerSection, ConsumersSection};
use crate::handler::{self, HandlersPlace, LenientHandler};
use crate::raw::*;
use crate::{
    default_socket_path, same_file_key, CommitPolicy, Config, ConfigError, ConfigErrors,
    ConsumerConfig, ControlSocketConfig, HandlerConfig, HandlerKind, ProcessConfig, Source,
};
use std::path::{Path, PathBuf};
use toml::Spanned;

impl Config {
    /// Reads and validates a config file with one consumer (`[consumer]`, or `[[consumers]]`
    /// with one entry); with several, the error names them and asks for `--consumer`.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Self::load_consumer(path, None)
    }

    /// Reads and validates a config file, and picks consumer `name` (`None`: the only one).
    pub fn load_consumer(path: &Path, name: Option<&str>) -> Result<Config, ConfigErrors> {
        Self::pick(Self::load_all(path)?, name)
    }

    /// Reads and validates a config file: one [`Config`] per consumer, in file order.
    pub fn load_all(path: &Path) -> Result<Vec<Config>, ConfigErrors> {
        Self::parse_all(path, read_config(path)?)
    }

    /// Validates config text read from `path` (one consumer, as [`load`](Self::load)).
    pub fn parse(path: &Path, text: String) -> Result<Config, ConfigErrors> {
        Self::pick(Self::parse_all(path, text)?, None)
    }

    /// Validates config text read from `path`, reporting every problem found.
    pub fn parse_all(path: &Path, text: String) -> Result<Vec<Config>, ConfigErrors> {
        match Self::parse_lenient(path, text)? {
            (configs, errors) if errors.is_empty() => Ok(configs),
            (_, errors) => Err(ConfigErrors(errors)),
        }
    }

    /// Consumer `name` of `configs` (`None`: the only one).
    pub fn pick(mut configs: Vec<Config>, name: Option<&str>) -> Result<Config, ConfigErrors> {
        let names = || {
            configs
                .iter()
                .map(|c| c.consumer.name.clone())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let Some(first) = configs.first() else {
            return Err(ConfigErrors(Vec::new()));
        };
        let source = first.source.clone();
        match name {
            None if configs.len() == 1 => Ok(configs.remove(0)),
            None => Err(source
                .error_at_key(
                    &["consumers"],
                    format!(
                        "this config has {} consumers ({}): name one with --consumer NAME",
                        configs.len(),
                        names()
                    ),
                )
                .into()),
            Some(name) => match configs.iter().position(|c| c.consumer.name == name) {
                Some(index) => Ok(configs.remove(index)),
                None => Err(source
                    .error_at(
                        None,
                        None,
                        format!("no consumer named '{name}' (the config has: {})", names()),
                    )
                    .into()),
            },
        }
    }

    /// Reads and validates a config like [`load_all`](Self::load_all), but hands back the
    /// consumers as far as they could be built (invalid values replaced by their defaults,
    /// invalid handlers left out) together with every problem found, so that `check` can go
    /// on to the plugin's settings and the handlers in the same run. `Err` only when nothing
    /// could be built.
    pub fn load_lenient(path: &Path) -> Result<(Vec<Config>, Vec<ConfigError>), ConfigErrors> {
        Self::parse_lenient(path, read_config(path)?)
    }

    fn parse_lenient(
        path: &Path,
        text: String,
    ) -> Result<(Vec<Config>, Vec<ConfigError>), ConfigErrors> {
        let source = Source {
            path: path.to_path_buf(),
            text,
        };
        // Syntax first: nothing else can be checked in a file that is not TOML.
        let table =
            toml::from_str::<toml::Table>(&source.text).map_err(|e| source.error_from_toml(&e))?;
        let mut errors = Vec::new();
        // serde takes an empty array for a table whose keys all have defaults (`commit = []`):
        // a table is required where one is meant.
        let mut tables: Vec<Vec<String>> = [
            &["consumer"][..],
            &["consumer", "settings"],
            &["consumer", "hermes"],
            &["commit"],
            &["metrics"],
            &["control"],
        ]
        .iter()
        .map(|path| path.iter().map(|part| (*part).to_owned()).collect())
        .collect();
        if let Some(entries) = table.get("consumers").and_then(toml::Value::as_array) {
            for index in 0..entries.len() {
                for inner in [&[][..], &["settings"], &["hermes"], &["commit"]] {
                    let mut path = vec!["consumers".to_owned(), index.to_string()];
                    path.extend(inner.iter().map(|part| (*part).to_owned()));
                    tables.push(path);
                }
            }
        }
        for path in &tables {
            let mut value = table.get(&path[0]);
            for key in &path[1..] {
                value = value.and_then(|v| match key.parse::<usize>() {
                    Ok(index) => v.get(index),
                    Err(_) => v.get(key.as_str()),
                });
            }
            if let Some(value) = value.filter(|v| !v.is_table()) {
                let path: Vec<&str> = path.iter().map(String::as_str).collect();
                errors.push(
                    source
                        .error_at_key(&path, format!("must be a table, not {}", value.type_str())),
                );
            }
        }
        if let Some(value) = table.get("consumers").filter(|v| !v.is_array()) {
            errors.push(source.error_at_key(
                &["consumers"],
                format!(
                    "must be an array of tables ([[consumers]]), not {}",
                    value.type_str()
                ),
            ));
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let top: Option<RawTop> = section(&source, &mut errors).or_else(|| {
            // The top level's problem is reported; go on with what it says of the directories
            // (the rest of the file is still checked).
            toml::from_str::<RawTopDirs>(&source.text)
                .ok()
                .map(|dirs| RawTop {
                    state_dir: dirs.state_dir,
                    plugin_dirs: dirs.plugin_dirs,
                    stats_interval_s: default_stats_interval_s(),
                    allow_insecure_plugins: false,
                    consumer: None,
                    consumers: None,
                    handlers: None,
                    commit: None,
                    metrics: None,
                    control: None,
                })
        });
        let consumer: Option<ConsumerSection> = section(&source, &mut errors);
        let consumers: Option<ConsumersSection> = section(&source, &mut errors);
        let handlers: Option<HandlersSection> = section(&source, &mut errors);
        let commit: Option<CommitSection> = section(&source, &mut errors);
        let metrics: Option<MetricsSection> = section(&source, &mut errors);
        let control: Option<ControlSection> = section(&source, &mut errors);
        let metrics_listen =
            metrics.and_then(|section| section.metrics).and_then(|raw| {
                match raw.listen.get_ref().parse::<std::net::SocketAddr>() {
                    Ok(address) => Some(address),
                    Err(_) => {
                        errors.push(source.error_at(
                            Some(raw.listen.span()),
                            Some("metrics.listen".into()),
                            format!(
                                "{:?} is not an IP address and port (e.g. \"127.0.0.1:9464\")",
                                raw.listen.get_ref()
                            ),
                        ));
                        None
                    }
                }
            });

        let base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base_dir.join(p)
            }
        };
        let control = control.map(|section| {
            section
                .control
                .map(|raw| ControlSocketConfig::from_raw(&source, raw, &resolve, &mut errors))
                .unwrap_or_default()
        });

        if let Some(top) = &top {
            if top.state_dir.get_ref().as_os_str().is_empty() {
                errors.push(source.error_at(
                    Some(top.state_dir.span()),
                    Some("state_dir".into()),
                    "must name a directory",
                ));
            }
        }
        let commit = commit.map(|section| Self::commit(&source, &[], section.commit, &mut errors));
        let allow = top.as_ref().is_some_and(|top| top.allow_insecure_plugins);
        let handlers_of = |place: &HandlersPlace,
                           entries: Vec<Spanned<LenientHandler>>,
                           errors: &mut Vec<ConfigError>| {
            if entries.is_empty() {
                errors.push(source.error_at(
                    None,
                    Some(if place.base.is_empty() {
                        "handlers".to_owned()
                    } else {
                        format!("consumers[{}].handlers", place.base[1])
                    }),
                    if place.base.is_empty() {
                        "no [[handlers]]: events would be consumed and dropped; add at least one \
                         handler"
                    } else {
                        "no [[consumers.handlers]]: events would be consumed and dropped; add at \
                         least one handler to this consumer"
                    },
                ));
            }
            let mut handlers =
                handler::validate_handlers(&source, place, entries, &resolve, errors);
            for handler in &mut handlers {
                match &mut handler.kind {
                    HandlerKind::Plugin(plugin) => plugin.allow_insecure = allow,
                    HandlerKind::Exec(exec) => {
                        if let (crate::handler::ExecCwd::StateDir(dir), Some(top)) =
                            (&mut exec.cwd, &top)
                        {
                            *dir = resolve(top.state_dir.get_ref());
                        }
                    }
                    _ => {}
                }
            }
            handlers
        };

        // (consumer, handlers, commit, where the consumer's table is) per consumer.
        let mut built: Vec<(
            ConsumerConfig,
            Vec<HandlerConfig>,
            CommitPolicy,
            Vec<String>,
        )> = Vec::new();
        let single = consumer.and_then(|section| section.consumer);
        let several = consumers.and_then(|section| section.consumers);
        let top_handlers = handlers.map(|section| section.handlers);
        // The shape is what the file says, even where a section is broken (its problem is
        // already reported): a broken [consumer] still gets its [[handlers]] checked.
        let shape = (
            table.contains_key("consumer"),
            table.contains_key("consumers"),
        );
        match shape {
            (true, true) => errors.push(source.error_at_key(
                &["consumers"],
                "a config has either one [consumer] (with [[handlers]]) or [[consumers]] \
                 entries (each with its own [[consumers.handlers]]), not both",
            )),
            (false, false) => errors.push(source.error_at_key(
                &["consumer"],
                "no [consumer]: name the bus to consume (a [consumer] table with name, plugin \
                 and class, or several [[consumers]])",
            )),
            (true, false) => {
                let key = vec!["consumer".to_owned()];
                for misplaced in ["handlers", "commit"] {
                    if table
                        .get("consumer")
                        .and_then(|c| c.get(misplaced))
                        .is_some()
                    {
                        errors.push(source.error_at_key(
                            &["consumer", misplaced],
                            format!(
                                "with a single [consumer], {misplaced} are top-level \
                                 ([[handlers]], [commit]); consumer.{misplaced} belongs to \
                                 [[consumers]] entries"
                            ),
                        ));
                    }
                }
                let consumer = single.and_then(|raw| {
                    let (consumer, problems) = Self::consumer(&source, &key, raw);
                    errors.extend(problems);
                    consumer
                });
                let handlers = top_handlers.map(|entries| {
                    handlers_of(
                        &HandlersPlace::default(),
                        entries.unwrap_or_default(),
                        &mut errors,
                    )
                });
                if let (Some(consumer), Some(handlers), Some(commit)) = (consumer, handlers, commit)
                {
                    built.push((consumer, handlers, commit, key));
                }
            }
            (false, true) => {
                let entries = several.unwrap_or_default();
                if top_handlers.as_ref().is_some_and(Option::is_some) {
                    errors.push(source.error_at_key(
                        &["handlers"],
                        "[[handlers]] go with a single [consumer]; with [[consumers]], give each \
                         consumer its own [[consumers.handlers]]",
                    ));
                }
                if entries.is_empty() && errors.is_empty() {
                    errors
                        .push(source.error_at_key(&["consumers"], "no consumer in [[consumers]]"));
                }
                for (index, entry) in entries.into_iter().enumerate() {
                    let key = vec!["consumers".to_owned(), index.to_string()];
                    let mut raw = entry.into_inner();
                    let own_handlers = raw.handlers.take().unwrap_or_default();
                    let own_commit = raw.commit.take();
                    let (consumer, problems) = Self::consumer(&source, &key, raw);
                    errors.extend(problems);
                    let place = HandlersPlace { base: key.clone() };
                    let handlers = handlers_of(&place, own_handlers, &mut errors);
                    let commit = match own_commit {
                        Some(raw) => Some(Self::commit(&source, &key, raw, &mut errors)),
                        None => commit,
                    };
                    if let Some(consumer) = consumer {
                        if let Some((_, _, _, earlier)) =
                            built.iter().find(|(c, ..)| c.name == consumer.name)
                        {
                            errors.push(source.error_at_key(
                                &["consumers", &index.to_string(), "name"],
                                format!(
                                    "consumers[{}] and consumers[{index}] are both named '{}' \
                                     (the name keys the offset cache and the lock)",
                                    earlier[1], consumer.name
                                ),
                            ));
                        }
                        if let Some(commit) = commit {
                            built.push((consumer, handlers, commit, key));
                        }
                    }
                }
            }
        }

        let Some(top) = top else {
            return Err(ConfigErrors(errors));
        };
        let (Some(control), Some(_)) = (control, commit) else {
            return Err(ConfigErrors(errors));
        };
        if built.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let state_dir = resolve(top.state_dir.get_ref());
        let control = ControlSocketConfig {
            path: if control.path.as_os_str().is_empty() {
                default_socket_path(&state_dir)
            } else {
                control.path.clone()
            },
            ..control
        };
        // A Unix socket's path has room for 107 bytes.
        if control.path.as_os_str().len() > 107 {
            let key: &[&str] = if table.get("control").and_then(|c| c.get("path")).is_some() {
                &["control", "path"]
            } else {
                &["state_dir"]
            };
            errors.push(source.error_at_key(
                key,
                format!(
                    "the control socket {} is longer than a Unix socket path may be (107 \
                     bytes): set a shorter [control] path",
                    control.path.display()
                ),
            ));
        }
        let names: Vec<String> = built.iter().map(|(c, ..)| c.name.clone()).collect();
        let configs: Vec<Config> = built
            .into_iter()
            .map(|(consumer, handlers, commit, consumer_key)| Config {
                process: ProcessConfig {
                    state_dir: state_dir.clone(),
                    metrics_listen,
                    control: control.clone(),
                },
                plugin_dirs: top.plugin_dirs.iter().map(|d| resolve(d)).collect(),
                stats_interval_s: top.stats_interval_s,
                allow_insecure_plugins: top.allow_insecure_plugins,
                consumer,
                handlers,
                commit,
                base_dir: base_dir.clone(),
                source: source.clone(),
                consumer_key,
                consumer_names: names.clone(),
            })
            .collect();
        errors.extend(shared_outputs(&configs));
        Ok((configs, errors))
    }
}

/// The text of a config file; bytes that are not UTF-8 are an error at their line and column.
fn read_config(path: &Path) -> Result<String, ConfigError> {
    let error = |location, message: String| ConfigError {
        path: path.to_path_buf(),
        location,
        key: None,
        message,
    };
    let bytes =
        std::fs::read(path).map_err(|e| error(None, format!("cannot read config file: {e}")))?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = valid
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |at| at + 1);
        let column = String::from_utf8_lossy(&valid[line_start..])
            .chars()
            .count()
            + 1;
        error(
            Some((line, column)),
            "a byte that is not UTF-8: a config file is UTF-8 text".into(),
        )
    })
}

/// Deserialises one section of the file; its problem, if any, joins `errors`.
fn section<T: serde::de::DeserializeOwned>(
    source: &Source,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    toml::from_str(&source.text)
        .map_err(|e| errors.push(source.error_from_toml(&e)))
        .ok()
}

/// An error for every `jsonl` file that a second handler (of any consumer) also writes: an
/// exactly-once file has one writer, whose committed length is the truth about it.
fn shared_outputs(configs: &[Config]) -> Vec<ConfigError> {
    let mut seen: Vec<(PathBuf, String, String)> = Vec::new();
    let mut errors = Vec::new();
    for config in configs {
        for handler in &config.handlers {
            let Some(path) = handler.kind.exactly_once_file() else {
                continue;
            };
            let key = same_file_key(path);
            match seen.iter().find(|(known, ..)| *known == key) {
                Some((_, consumer, other)) => errors.push(config.handler_error(
                    &handler.name,
                    format!(
                        "handler '{}' writes {}, which handler '{other}' of consumer \
                         '{consumer}' writes too: an exactly-once file has one writer (its \
                         committed length says what it holds)",
                        handler.name,
                        path.display()
                    ),
                )),
                None => seen.push((key, config.consumer.name.clone(), handler.name.clone())),
            }
        }
    }
    errors
}
