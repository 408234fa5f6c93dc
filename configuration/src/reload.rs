//! What a reload (SIGHUP, `buslink ctl reload`) does, decided from the old and the new
//! *effective* config alone: pure, no threads, files or plugins.
//!
//! Every field of [`Config`] is given its scope once, in [`field_changes`], by destructuring
//! both configs without `..`: a field added to `Config` is a compile error there until someone
//! decides what its change does. Values are compared as the config means them (defaults filled
//! in, paths resolved, plugin settings as sorted JSON), so a comment, a reordered table or a
//! default written out changes nothing.
//!
//! The daemon applies the plan; what the config cannot see (a plugin library replaced on disk,
//! a consumer still stopping, an exactly-once file in use by another consumer) it checks
//! itself.

use crate::{Config, ProcessConfig};

/// What changes of one consumer's config make the daemon do, from least to most.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Nothing: the change cannot be seen at run time (the file's text, where a table sits).
    Nothing,
    /// Its handlers are replaced between two batches; the consumer keeps its position and
    /// connection.
    Handlers,
    /// The consumer stops (committing what it handled) and a new one starts on the new config.
    Restart,
    /// A process-wide setting: the whole reload is refused (a service restart applies it).
    Process,
}

/// What a reload does with one consumer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsumerPlan {
    /// Present before and after, no change the daemon can see.
    Unchanged,
    /// Only its handlers change.
    HandlersOnly,
    /// Restarted on its new config.
    Restart,
    /// New in the file: started.
    Add,
    /// Gone from the file: stopped.
    Remove,
}

/// The plan of a reload: what happens to each consumer (by name, old ones first), or why the
/// reload is refused (the first process-wide key that changed).
pub fn plan(old: &[Config], new: &[Config]) -> Result<Vec<(String, ConsumerPlan)>, String> {
    if let (Some(before), Some(after)) = (old.first(), new.first()) {
        if let Some(why) = process_refusal(before, after) {
            return Err(why);
        }
    }
    let mut plans = Vec::new();
    for before in old {
        let name = &before.consumer.name;
        let plan = match new.iter().find(|after| &after.consumer.name == name) {
            None => ConsumerPlan::Remove,
            Some(after) => consumer_plan(before, after),
        };
        plans.push((name.clone(), plan));
    }
    for after in new {
        if !old
            .iter()
            .any(|before| before.consumer.name == after.consumer.name)
        {
            plans.push((after.consumer.name.clone(), ConsumerPlan::Add));
        }
    }
    Ok(plans)
}

/// Why a reload from `old` to `new` is refused: the first process-wide key that changed
/// (`None`: none did). The daemon checks it against the config it was started with.
pub fn process_refusal(old: &Config, new: &Config) -> Option<String> {
    field_changes(old, new)
        .into_iter()
        .find(|(_, scope)| *scope == Scope::Process)
        .map(|(key, _)| {
            format!(
                "`{key}` changed: process-wide settings (state_dir, [metrics], [control], the \
                 file's shape) need a restart (systemctl restart), not a reload"
            )
        })
}

/// What a reload does with a consumer present in both configs (process-wide keys aside).
pub fn consumer_plan(old: &Config, new: &Config) -> ConsumerPlan {
    let widest = field_changes(old, new)
        .into_iter()
        .map(|(_, scope)| scope)
        .filter(|scope| *scope != Scope::Process)
        .max()
        .unwrap_or(Scope::Nothing);
    match widest {
        Scope::Nothing => ConsumerPlan::Unchanged,
        Scope::Handlers => ConsumerPlan::HandlersOnly,
        Scope::Restart | Scope::Process => ConsumerPlan::Restart,
    }
}

/// The keys whose effective value differs between `old` and `new`, each with its scope.
pub fn field_changes(old: &Config, new: &Config) -> Vec<(&'static str, Scope)> {
    // No `..`: a new field of `Config` does not compile until it is given a scope here.
    let Config {
        source: _,
        base_dir,
        process,
        plugin_dirs,
        consumer,
        handlers,
        commit,
        stats_interval_s,
        allow_insecure_plugins,
        consumer_key,
        consumer_names: _,
    } = old;
    let ProcessConfig {
        state_dir,
        metrics_listen,
        control,
    } = process;
    let fields: [(&'static str, Scope, bool); 11] = [
        // Relative paths of the plugin's settings are read from it (`Context::config_dir`).
        ("base_dir", Scope::Restart, *base_dir != new.base_dir),
        // Where the offsets and locks are: running consumers cannot move.
        (
            "state_dir",
            Scope::Process,
            *state_dir != new.process.state_dir,
        ),
        (
            "plugin_dirs",
            Scope::Restart,
            *plugin_dirs != new.plugin_dirs,
        ),
        ("consumer", Scope::Restart, *consumer != new.consumer),
        ("handlers", Scope::Handlers, *handlers != new.handlers),
        ("commit", Scope::Restart, *commit != new.commit),
        (
            "stats_interval_s",
            Scope::Restart,
            *stats_interval_s != new.stats_interval_s,
        ),
        (
            "allow_insecure_plugins",
            Scope::Restart,
            *allow_insecure_plugins != new.allow_insecure_plugins,
        ),
        // The metrics server and the control socket are the process's.
        (
            "metrics",
            Scope::Process,
            *metrics_listen != new.process.metrics_listen,
        ),
        ("control", Scope::Process, *control != new.process.control),
        // `[consumer]` or `[[consumers]]`: the file's shape (whether one consumer's failure
        // ends the process). Which entry of `[[consumers]]` a consumer is changes nothing.
        (
            "consumer / consumers",
            Scope::Process,
            consumer_key.first() != new.consumer_key.first(),
        ),
    ];
    fields
        .into_iter()
        .filter(|(_, _, changed)| *changed)
        .map(|(key, scope, _)| (key, scope))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
state_dir = "var"
plugin_dirs = ["plugins"]

[consumer]
name = "demo"
plugin = "sqlite"
class = "SqliteConsumer"
[consumer.settings]
uri = "bus.sqlite"
poll_interval_ms = 50

[[handlers]]
name = "print"
type = "stdout"
"#;

    /// Both configs read from the same file path (what a reload sees), in a fresh directory.
    fn plan_of(old: &str, new: &str) -> Result<Vec<(String, ConsumerPlan)>, String> {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("c.toml");
        let load = |text: &str| {
            std::fs::write(&path, text).expect("the config written");
            Config::load_all(&path).unwrap_or_else(|e| panic!("{e}\n{text}"))
        };
        let (old, new) = (load(old), load(new));
        plan(&old, &new)
    }

    #[test]
    fn a_cosmetic_edit_or_a_default_written_out_changes_nothing() {
        let edited = BASE
            .replace("[consumer.settings]", "# a comment\n[consumer.settings]")
            .replace(
                "uri = \"bus.sqlite\"\npoll_interval_ms = 50",
                "poll_interval_ms = 50\nuri = \"bus.sqlite\"",
            )
            .replace(
                "type = \"stdout\"",
                "type = \"stdout\"\non_failure = \"stop\"",
            );
        assert_eq!(
            plan_of(BASE, &edited),
            Ok(vec![("demo".to_owned(), ConsumerPlan::Unchanged)])
        );
    }

    #[test]
    fn each_kind_of_change_has_its_plan() {
        let handlers = BASE.replace("name = \"print\"", "name = \"shown\"");
        assert_eq!(
            plan_of(BASE, &handlers),
            Ok(vec![("demo".to_owned(), ConsumerPlan::HandlersOnly)])
        );
        let settings = BASE.replace("poll_interval_ms = 50", "poll_interval_ms = 20");
        assert_eq!(
            plan_of(BASE, &settings),
            Ok(vec![("demo".to_owned(), ConsumerPlan::Restart)])
        );
        let commit = format!("{BASE}\n[commit]\nevery_events = 10\n");
        assert_eq!(
            plan_of(BASE, &commit),
            Ok(vec![("demo".to_owned(), ConsumerPlan::Restart)])
        );
        let state = BASE.replace("state_dir = \"var\"", "state_dir = \"elsewhere\"");
        let refused = plan_of(BASE, &state).expect_err("a process-wide key");
        assert!(refused.contains("`state_dir`"), "{refused}");
    }

    #[test]
    fn consumers_added_and_removed_are_planned_by_name() {
        let two = r#"
state_dir = "var"
plugin_dirs = ["plugins"]

[[consumers]]
name = "a"
plugin = "sqlite"
class = "SqliteConsumer"
settings = { uri = "a.sqlite" }
handlers = [{ name = "print", type = "stdout" }]

[[consumers]]
name = "b"
plugin = "sqlite"
class = "SqliteConsumer"
settings = { uri = "b.sqlite" }
handlers = [{ name = "print", type = "stdout" }]
"#;
        let swapped = two.replace("name = \"a\"", "name = \"c\"");
        assert_eq!(
            plan_of(two, &swapped),
            Ok(vec![
                ("a".to_owned(), ConsumerPlan::Remove),
                ("b".to_owned(), ConsumerPlan::Unchanged),
                ("c".to_owned(), ConsumerPlan::Add),
            ])
        );
        // One `[consumer]` to `[[consumers]]` is the file's shape: refused.
        let refused = plan_of(BASE, two).expect_err("the shape changed");
        assert!(refused.contains("consumer / consumers"), "{refused}");
    }
}
