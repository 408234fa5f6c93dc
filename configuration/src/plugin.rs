//! `[consumer] plugin`: where a consumer's code comes from. Either a library loaded into the
//! daemon (`plugin = "sqlite"`, or a path to a `.so`), or an executable run as a child process
//! that speaks the subprocess protocol (docs/subprocess-protocol.md):
//!
//! ```toml
//! [consumer]
//! plugin = { command = ["buslink-plugin-sqlite"], env = { RUST_LOG = "info" } }
//! class = "SqliteConsumer"
//! ```

use crate::handler::Secret;
use std::fmt;

/// Where a consumer's plugin code comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum PluginSource {
    /// `plugin = "NAME"` or `plugin = "path/to/lib.so"`: a library loaded into the daemon
    /// through the stable ABI.
    Library(String),
    /// `plugin = { command = [...] }`: an executable run as a child process.
    Executable(PluginCommand),
    /// `plugin = { hermes_plugin = "DIR" }`: an unchanged Hermes messagebus consumer plugin (a
    /// Python directory), served by the Python side of buslink (`sdk/python`) in a child.
    Hermes(HermesPlugin),
}

/// `plugin = { hermes_plugin = "DIR", python = "python3", hermes_root = "...", class = "..." }`
/// (and `env`, `trace_frames` as for a command).
#[derive(Clone, Debug, PartialEq)]
pub struct HermesPlugin {
    /// The plugin's directory (`.../plugins/messagebus_consumers/NAME`, holding `NAME.py`),
    /// relative to the config's directory.
    pub dir: String,
    /// The Python interpreter (default `python3`; Hermes's venv's to use Hermes's `lib`).
    pub python: String,
    /// Hermes's source tree, whose `lib` the plugin then imports; without it, buslink's
    /// stand-ins serve plugins that use only what the consumer contract documents.
    pub hermes_root: Option<String>,
    /// The plugin class, when not the module's `HERMES_PLUGIN_CLASSNAME`.
    pub class: Option<String>,
    /// As for a command: added to the child's clean environment.
    pub env: Vec<(String, Secret)>,
    /// As for a command: logs every frame.
    pub trace_frames: bool,
}

/// `plugin = { command = [...], env = {...}, trace_frames = false }`.
#[derive(Clone, Debug, PartialEq)]
pub struct PluginCommand {
    /// The program and its arguments (never run through a shell). A program with a `/` is
    /// relative to the config's directory; a bare name is looked up in `plugin_dirs`, then in
    /// buslink's own `PATH`.
    pub command: Vec<String>,
    /// Added to the child's otherwise clean environment (`PATH`, `HOME`, `LANG`, `TZ`).
    pub env: Vec<(String, Secret)>,
    /// Logs every frame to and from the child (for plugin authors; off by default).
    pub trace_frames: bool,
}

impl PluginSource {
    /// What status and logs call the plugin: the library's name, or the program as written.
    pub fn label(&self) -> String {
        match self {
            PluginSource::Library(name) => name.clone(),
            PluginSource::Executable(command) => {
                command.command.first().cloned().unwrap_or_default()
            }
            PluginSource::Hermes(hermes) => format!("hermes:{}", hermes.dir),
        }
    }
}

impl fmt::Display for PluginSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

/// A problem of the `plugin` value: the key under `plugin` (`None`: `plugin` itself) and what.
type Problem = (Option<&'static str>, String);

/// Reads the `plugin` value as written: a non-empty string; a table with `command` (a
/// non-empty list of strings); or a table with `hermes_plugin` (a directory), `python`,
/// `hermes_root` and `class` (strings). Both tables take `env` (a table of strings) and
/// `trace_frames` (a boolean). `Err`: every problem.
pub(crate) fn parse(value: toml::Value) -> Result<PluginSource, Vec<Problem>> {
    const SHAPE: &str = "must name a plugin library (\"sqlite\", \"plugins/libmy_bus.so\"), \
                         an executable ({ command = [\"buslink-plugin-sqlite\"] }) or a Hermes \
                         plugin ({ hermes_plugin = \"DIR\" })";
    let table = match value {
        toml::Value::String(name) if name.trim().is_empty() => {
            return Err(vec![(None, "must not be empty".into())])
        }
        toml::Value::String(name) => return Ok(PluginSource::Library(name)),
        toml::Value::Table(table) => table,
        other => return Err(vec![(None, format!("{SHAPE}, not {}", a(&other)))]),
    };
    let mut problems = Vec::new();
    let hermes = table.contains_key("hermes_plugin");
    let allowed: &[&str] = if hermes {
        &[
            "hermes_plugin",
            "python",
            "hermes_root",
            "class",
            "env",
            "trace_frames",
        ]
    } else {
        &["command", "env", "trace_frames"]
    };
    for key in table.keys() {
        if !allowed.contains(&key.as_str()) {
            problems.push((
                None,
                format!(
                    "unknown key '{key}' (a plugin table with {} has {})",
                    if hermes { "hermes_plugin" } else { "command" },
                    allowed.join(", ")
                ),
            ));
        }
    }
    let env = parse_env(&table, &mut problems);
    let trace_frames = match table.get("trace_frames") {
        None => false,
        Some(toml::Value::Boolean(on)) => *on,
        Some(other) => {
            problems.push((
                Some("trace_frames"),
                format!("must be true or false, not {}", a(other)),
            ));
            false
        }
    };
    let source = if hermes {
        let text = |key: &'static str, problems: &mut Vec<Problem>| match table.get(key) {
            None => None,
            Some(toml::Value::String(value)) if !value.trim().is_empty() => Some(value.clone()),
            Some(other) => {
                problems.push((
                    Some(key),
                    format!("must be a non-empty string, not {}", a(other)),
                ));
                None
            }
        };
        let dir = text("hermes_plugin", &mut problems).unwrap_or_default();
        PluginSource::Hermes(HermesPlugin {
            dir,
            python: text("python", &mut problems).unwrap_or_else(|| "python3".into()),
            hermes_root: text("hermes_root", &mut problems),
            class: text("class", &mut problems),
            env,
            trace_frames,
        })
    } else {
        PluginSource::Executable(PluginCommand {
            command: parse_command(&table, &mut problems),
            env,
            trace_frames,
        })
    };
    if problems.is_empty() {
        Ok(source)
    } else {
        Err(problems)
    }
}

fn parse_command(table: &toml::Table, problems: &mut Vec<Problem>) -> Vec<String> {
    match table.get("command") {
        None => {
            problems.push((
                None,
                "a plugin table needs `command`, the executable and its arguments, e.g. \
                 { command = [\"buslink-plugin-sqlite\"] } (or `hermes_plugin`, a Hermes \
                 plugin's directory)"
                    .into(),
            ));
            Vec::new()
        }
        Some(toml::Value::Array(items)) => {
            let strings: Option<Vec<String>> = items
                .iter()
                .map(|item| item.as_str().map(str::to_owned))
                .collect();
            match strings {
                Some(list) if list.first().is_some_and(|p| !p.trim().is_empty()) => list,
                Some(_) => {
                    problems.push((
                        Some("command"),
                        "must list the program first, e.g. [\"buslink-plugin-sqlite\"]".into(),
                    ));
                    Vec::new()
                }
                None => {
                    problems.push((Some("command"), "must be a list of strings".into()));
                    Vec::new()
                }
            }
        }
        Some(other) => {
            problems.push((
                Some("command"),
                format!(
                    "must be a list of strings (the program and its arguments), not {}",
                    a(other)
                ),
            ));
            Vec::new()
        }
    }
}

fn parse_env(table: &toml::Table, problems: &mut Vec<Problem>) -> Vec<(String, Secret)> {
    let mut env = Vec::new();
    match table.get("env") {
        None => {}
        Some(toml::Value::Table(vars)) => {
            for (name, value) in vars {
                match value.as_str() {
                    Some(text) if !name.is_empty() && !name.contains('=') => {
                        env.push((name.clone(), Secret::new(text.to_owned())))
                    }
                    Some(_) => problems.push((
                        Some("env"),
                        format!("'{name}' is not a usable environment variable name"),
                    )),
                    None => problems.push((
                        Some("env"),
                        format!("{name}: must be a string, not {}", a(value)),
                    )),
                }
            }
        }
        Some(other) => problems.push((
            Some("env"),
            format!(
                "must be a table of strings ({{ NAME = \"value\" }}), not {}",
                a(other)
            ),
        )),
    }
    env
}

/// "a string", "an integer": the kind of a TOML value, for messages.
fn a(value: &toml::Value) -> String {
    let kind = value.type_str();
    let article = if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {kind}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> toml::Value {
        let table: toml::Table = toml::from_str(&format!("plugin = {text}")).unwrap();
        table["plugin"].clone()
    }

    #[test]
    fn a_string_names_a_library_and_a_table_an_executable() {
        assert_eq!(
            parse(value("\"sqlite\"")).unwrap(),
            PluginSource::Library("sqlite".into())
        );
        let PluginSource::Executable(command) = parse(value(
            "{ command = [\"bin/my-bus\", \"--fast\"], env = { A = \"1\" }, trace_frames = true }",
        ))
        .unwrap() else {
            panic!("not an executable")
        };
        assert_eq!(command.command, ["bin/my-bus", "--fast"]);
        assert_eq!(command.env, [("A".to_owned(), Secret::new("1"))]);
        assert!(command.trace_frames);
    }

    #[test]
    fn a_table_with_hermes_plugin_names_a_hermes_plugin_directory() {
        let PluginSource::Hermes(hermes) = parse(value(
            "{ hermes_plugin = \"plugins/sqlite\", hermes_root = \"/opt/hermes\" }",
        ))
        .unwrap() else {
            panic!("not a Hermes plugin")
        };
        assert_eq!(hermes.dir, "plugins/sqlite");
        assert_eq!(hermes.python, "python3");
        assert_eq!(hermes.hermes_root.as_deref(), Some("/opt/hermes"));
        assert_eq!(hermes.class, None);
        let problems = parse(value(
            "{ hermes_plugin = \"\", command = [\"x\"], python = 3 }",
        ))
        .unwrap_err();
        let keys: Vec<_> = problems.iter().map(|(key, _)| *key).collect();
        assert_eq!(
            keys,
            [None, Some("hermes_plugin"), Some("python")],
            "{problems:?}"
        );
    }

    #[test]
    fn each_problem_of_a_plugin_table_names_its_key() {
        let problems = parse(value(
            "{ command = [], env = { A = 1 }, trace_frames = \"yes\", comand = 1 }",
        ))
        .unwrap_err();
        let keys: Vec<_> = problems.iter().map(|(key, _)| *key).collect();
        assert_eq!(
            keys,
            [None, Some("env"), Some("trace_frames"), Some("command")],
            "{problems:?}"
        );
        assert!(
            problems[0].1.contains("unknown key 'comand'"),
            "{problems:?}"
        );
        assert!(parse(value("{ env = {} }")).unwrap_err()[0]
            .1
            .contains("needs `command`"));
        assert!(parse(value("3")).unwrap_err()[0]
            .1
            .contains("not an integer"));
        assert!(parse(value("\" \"")).unwrap_err()[0].1.contains("empty"));
    }
}
