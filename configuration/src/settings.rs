//! A plugin's `settings` table (of a consumer, or of a `plugin` handler): what the plugin is
//! handed is JSON, which has no `nan` or `inf`; each one found is an error at its key.

use crate::{ConfigError, Source};

/// Adds an error, at its key, for every non-finite number (`nan`, `inf`) in the plugin
/// settings `table` found at `path`: JSON, what plugins are handed, has none.
pub(crate) fn refuse_non_finite(
    source: &Source,
    table: &toml::Table,
    path: &[&str],
    errors: &mut Vec<ConfigError>,
) {
    let mut found = Vec::new();
    let mut key: Vec<String> = path.iter().map(|part| (*part).to_owned()).collect();
    find_non_finite(&toml::Value::Table(table.clone()), &mut key, &mut found);
    for (key, value) in found {
        let key: Vec<&str> = key.iter().map(String::as_str).collect();
        errors.push(source.error_at_key(
            &key,
            format!("{value} is not a number a plugin can be given (JSON has no {value})"),
        ));
    }
}

/// The key paths (and values) of the non-finite floats (`nan`, `inf`) under `value`: JSON,
/// what plugins are handed, has none (serde_json would make them `null`).
fn find_non_finite(
    value: &toml::Value,
    path: &mut Vec<String>,
    found: &mut Vec<(Vec<String>, f64)>,
) {
    match value {
        toml::Value::Float(x) if !x.is_finite() => found.push((path.clone(), *x)),
        toml::Value::Table(table) => {
            for (name, inner) in table {
                path.push(name.clone());
                find_non_finite(inner, path, found);
                path.pop();
            }
        }
        toml::Value::Array(items) => {
            for (index, inner) in items.iter().enumerate() {
                path.push(index.to_string());
                find_non_finite(inner, path, found);
                path.pop();
            }
        }
        _ => {}
    }
}
