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
        }
    }
}

impl fmt::Display for PluginSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

/// Reads the `plugin` value as written: a non-empty string, or a table with `command` (a
/// non-empty list of strings), `env` (a table of strings) and `trace_frames` (a boolean).
/// `Err`: each problem as (the key under `plugin`, or `None` for `plugin` itself, message).
pub(crate) fn parse(
    value: toml::Value,
) -> Result<PluginSource, Vec<(Option<&'static str>, String)>> {
    const SHAPE: &str = "must name a plugin library (\"sqlite\", \"plugins/libmy_bus.so\") or \
                         an executable ({ command = [\"buslink-plugin-sqlite\"] })";
    let table = match value {
        toml::Value::String(name) if name.trim().is_empty() => {
            return Err(vec![(None, "must not be empty".into())])
        }
        toml::Value::String(name) => return Ok(PluginSource::Library(name)),
        toml::Value::Table(table) => table,
        other => return Err(vec![(None, format!("{SHAPE}, not {}", a(&other)))]),
    };
    let mut problems = Vec::new();
    for key in table.keys() {
        if !matches!(key.as_str(), "command" | "env" | "trace_frames") {
            problems.push((
                None,
                format!("unknown key '{key}' (a plugin table has command, env and trace_frames)"),
            ));
        }
    }
    let command = match table.get("command") {
        None => {
            problems.push((
                None,
                "a plugin table needs `command`, the executable and its arguments, e.g. \
                 { command = [\"buslink-plugin-sqlite\"] }"
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
    };
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
    if problems.is_empty() {
        Ok(PluginSource::Executable(PluginCommand {
            command,
            env,
            trace_frames,
        }))
    } else {
        Err(problems)
    }
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
    fn each_problem_of_a_plugin_table_names_its_key() {
        let problems = parse(value(
            "{ command = [], env = { A = 1 }, trace_frames = \"yes\", comand = 1 }",
        ))
        .unwrap_err();
        let keys: Vec<_> = problems.iter().map(|(key, _)| *key).collect();
        assert_eq!(
            keys,
            [None, Some("command"), Some("env"), Some("trace_frames")],
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
