//! What Prometheus and Grafana get from buslink, checked with Prometheus's own tool
//! (`promtool`, Debian's `prometheus` package): a scrape after traffic that fills every family
//! passes `promtool check metrics`; the alert rules (`contrib/prometheus/alerts.yml`) pass
//! their unit tests; every query of the Grafana dashboard (`contrib/grafana/buslink.json`)
//! parses, and every series the dashboard and the rules select is in the live scrape.

use crate::common::*;
use buslink_testkit::process::run_tool;
use buslink_testkit::{workspace_root, Daemon, TestDir};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

fn promtool(args: &[&str], stdin: Option<&Path>) -> buslink_testkit::RunOutput {
    run_tool("promtool", args, stdin, "prometheus", LIMIT)
}

/// The dashboard's queries (panels and template variables), as Grafana stores them.
fn dashboard_queries() -> Vec<String> {
    let path = workspace_root().join("contrib/grafana/buslink.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("the dashboard"))
            .expect("the dashboard is JSON");
    let mut queries = Vec::new();
    fn walk(value: &Value, queries: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("expr" | "definition", Value::String(query)) => {
                            queries.push(query.clone())
                        }
                        _ => walk(value, queries),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, queries)),
            _ => {}
        }
    }
    walk(&dashboard, &mut queries);
    queries
}

/// A dashboard query as Prometheus gets it from Grafana: its variables given values (all
/// instances, all consumers), a `label_values(SELECTOR, LABEL)` variable query as its
/// selector.
fn as_promql(query: &str) -> String {
    let query = query
        .replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("\"$instance\"", "\".*\"")
        .replace("\"$consumer\"", "\".*\"");
    match query
        .strip_prefix("label_values(")
        .and_then(|rest| rest.rsplit_once(','))
    {
        Some((selector, _label)) => selector.to_owned(),
        None => query,
    }
}

/// The metric names a PromQL expression selects (buslink's and the process's series).
fn metric_names(expression: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expression;
    while let Some(at) = rest.find(|c: char| c.is_ascii_alphabetic()) {
        rest = &rest[at..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let word = &rest[..end];
        // A label value in quotes is no metric name: `"buslink_..."` never appears in them.
        if word.starts_with("buslink_") || word.starts_with("process_") {
            names.insert(word.to_owned());
        }
        rest = &rest[end..];
    }
    names
}

/// The sample names in a classic-format scrape, and the families declared by `# TYPE`.
fn samples_and_families(scrape: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let samples = scrape
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect();
    let families = scrape
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split(' ').next())
        .map(str::to_owned)
        .collect();
    (samples, families)
}

/// The alert rules' expressions.
fn alert_expressions() -> Vec<String> {
    let rules = std::fs::read_to_string(workspace_root().join("contrib/prometheus/alerts.yml"))
        .expect("the alert rules");
    // `expr: ONE LINE` or `expr: >-` and the indented lines under it.
    let mut expressions = Vec::new();
    let mut lines = rules.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(expr) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let expr = expr.trim();
        if expr != ">-" {
            expressions.push(expr.to_owned());
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let mut folded = Vec::new();
        while let Some(next) = lines.peek() {
            if next.len() - next.trim_start().len() <= indent {
                break;
            }
            folded.push(next.trim().to_owned());
            lines.next();
        }
        expressions.push(folded.join(" "));
    }
    expressions
}

#[test]
fn the_alert_rules_load_and_pass_their_promtool_tests() {
    let dir = workspace_root().join("contrib/prometheus");
    let check = promtool(
        &["check", "rules", &dir.join("alerts.yml").to_string_lossy()],
        None,
    );
    assert_eq!(check.code(), Some(0), "{check}");
    assert!(check.stdout.contains("SUCCESS: 11 rules found"), "{check}");
    let test = promtool(
        &[
            "test",
            "rules",
            &dir.join("alerts.test.yml").to_string_lossy(),
        ],
        None,
    );
    assert_eq!(test.code(), Some(0), "{test}");
    assert!(test.stdout.contains("SUCCESS"), "{test}");
    // Every rule has a `for:` and a unit test that sees it fire.
    let rules = std::fs::read_to_string(dir.join("alerts.yml")).expect("rules");
    let tests = std::fs::read_to_string(dir.join("alerts.test.yml")).expect("tests");
    let names: Vec<&str> = rules
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- alert: "))
        .collect();
    assert_eq!(names.len(), 11);
    assert_eq!(rules.matches("\n        for: ").count(), names.len());
    for name in names {
        let fires = tests
            .split("alertname: ")
            .skip(1)
            .any(|case| case.starts_with(name) && case.contains("exp_labels"));
        assert!(fires, "no test sees {name} fire");
    }
}

#[test]
fn every_query_of_the_dashboard_parses_as_promql() {
    let queries = dashboard_queries();
    assert!(queries.len() >= 20, "{queries:?}");
    let dir = TestDir::new("dashboard-promql");
    // promtool parses the expressions of a rules file: one recording rule per query.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (n, query) in queries.iter().enumerate() {
        let expr = serde_json::to_string(&as_promql(query)).expect("a JSON string is YAML");
        rules.push_str(&format!(
            "      - record: dashboard:query{n}\n        expr: {expr}\n"
        ));
    }
    let file = dir.write("dashboard-rules.yml", &rules);
    let check = promtool(&["check", "rules", &file.to_string_lossy()], None);
    assert_eq!(check.code(), Some(0), "{check}\n{rules}");
    assert!(
        check
            .stdout
            .contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{check}"
    );
    // A query promtool refuses fails the check (the check can fail).
    let broken = dir.write(
        "broken.yml",
        "groups:\n  - name: b\n    rules:\n      - record: b:x\n        expr: \"rate(buslink_events_total[5m]\"\n",
    );
    assert_ne!(
        promtool(&["check", "rules", &broken.to_string_lossy()], None).code(),
        Some(0)
    );
}

#[test]
fn a_scrape_after_traffic_passes_promtool_and_has_every_series_the_dashboard_and_rules_use() {
    let dir = TestDir::new("promtool-scrape");
    // `main` read 10 events, then 30 more came and 11..=15 were purged before it came back: a
    // gap of 5 at its start. Base events (37 on) fail two handlers: one dead-letters them,
    // one puts them in the error queue.
    let main_bus = bus(&dir, "main.sqlite", 10);
    let first = several(&dir, "", &[sqlite_consumer("main", &main_bus)]);
    let once = buslink_testkit::process::run_once(&first);
    assert_eq!(once.code(), Some(0), "{once}");
    append(&main_bus, 30);
    let connection = rusqlite::Connection::open(&main_bus).expect("bus");
    connection
        .execute(
            "DELETE FROM hermesmessages WHERE msgid BETWEEN 11 AND 15",
            [],
        )
        .expect("purge");
    drop(connection);
    let failing = "[[consumers.handlers]]\nname = \"refuse\"\ntype = \"exec\"\n\
                   command = [\"false\"]\nmatch = { category = \"base\" }\n\
                   on_failure = \"dead-letter\"\nretry = { attempts = 2, base_ms = 1 }\n\
                   [[consumers.handlers]]\nname = \"later\"\ntype = \"exec\"\n\
                   command = [\"false\"]\nmatch = { category = \"base\" }\n\
                   on_failure = \"error-queue\"\nretry_interval_ms = 3600000\n\
                   retry = { attempts = 1, base_ms = 1 }\n";
    let child_bus = bus(&dir, "child.sqlite", 5);
    let child = format!(
        "[[consumers]]\nname = \"child\"\nplugin = {{ command = [\"buslink-plugin-sqlite\"] }}\n\
         class = \"SqliteConsumer\"\ntimeout_ms = 200\n[consumers.settings]\nuri = \"{}\"\n\
         poll_interval_ms = 10\n[[consumers.handlers]]\nname = \"out\"\ntype = \"jsonl\"\n\
         path = \"out/child.jsonl\"\n",
        child_bus.display()
    );
    let config = several(
        &dir,
        METRICS_ON_ANY_PORT,
        &[
            format!("{}{failing}", sqlite_consumer("main", &main_bus)),
            faulty_consumer(
                "broken",
                "events = 20\npanic_in = \"poll\"\npanic_at_event = 3",
            ),
            child,
        ],
    );
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("the metrics address", LIMIT, |d| {
        d.stderr().contains("metrics on http://")
    });
    let address = metrics_address(&daemon.stderr());
    let series = |text: &str, name: &str| sample(text, name).unwrap_or(-1.0);
    // The truth the counts are compared with: the files and the status.
    let dead_letters = || count_lines(&dir.join("state/main.dead-letter.jsonl")) as f64;
    let queued = || consumer_status(&status(&config), "main")["error_queue"].as_f64();
    daemon.wait_for("every kind of traffic in the metrics", LIMIT, |_| {
        let (_, text) = scrape(&address, "/metrics");
        let handler = |handler: &str, outcome: &str| {
            series(
                &text,
                &format!(
                    "buslink_handler_events_total{{consumer=\"main\",handler=\"{handler}\",\
                     outcome=\"{outcome}\"}}"
                ),
            )
        };
        series(&text, "buslink_gaps_total{consumer=\"main\"}") == 1.0
            && series(&text, "buslink_events_lost_total{consumer=\"main\"}") == 5.0
            && handler("out", "success") == 25.0
            && count_lines(&dir.join("out/main.jsonl")) == 35
            && handler("refuse", "dead_lettered") == 4.0
            && dead_letters() == 4.0
            && handler("refuse", "retry") == 4.0
            && handler("refuse", "failure") == 4.0
            && handler("later", "queued") == 4.0
            && series(&text, "buslink_error_queue_events{consumer=\"main\"}") == 4.0
            && queued() == Some(4.0)
            && series(&text, "buslink_restarts_total{consumer=\"broken\"}") >= 1.0
            && series(&text, "buslink_plugin_process_pid{consumer=\"child\"}") > 1.0
            && series(&text, "buslink_lag_events{consumer=\"main\"}") == 0.0
    });
    daemon.wait_for("a failed consumer", LIMIT, |_| {
        let (_, text) = scrape(&address, "/metrics");
        series(
            &text,
            "buslink_consumer_state{consumer=\"broken\",state=\"failed\"}",
        ) == 1.0
    });

    // The classic format unless OpenMetrics is asked for.
    let response = reqwest::blocking::get(format!("http://{address}/metrics")).expect("scrape");
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let classic = response.text().expect("a body");
    let openmetrics = reqwest::blocking::Client::new()
        .get(format!("http://{address}/metrics"))
        .header(
            "Accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .expect("scrape");
    assert!(openmetrics.headers()["content-type"]
        .to_str()
        .is_ok_and(|t| t.starts_with("application/openmetrics-text; version=1.0.0")));
    let openmetrics = openmetrics.text().expect("a body");
    assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
    assert!(openmetrics.contains("# TYPE buslink_events counter"));

    let file = dir.write("scrape.prom", &classic);
    let lint = promtool(&["check", "metrics"], Some(&file));
    assert_eq!(lint.code(), Some(0), "{lint}\n{classic}");
    assert_eq!(lint.stdout.trim(), "", "{lint}");
    // The linter is no rubber stamp: the old exposition (OpenMetrics names) fails it.
    let old = dir.write("openmetrics.prom", &openmetrics);
    assert_ne!(
        promtool(&["check", "metrics"], Some(&old)).code(),
        Some(0),
        "promtool takes anything"
    );

    // Every family has samples, the build and the process among them.
    let (samples, families) = samples_and_families(&classic);
    for family in &families {
        assert!(
            samples
                .iter()
                .any(|s| s == family || s.starts_with(&format!("{family}_"))),
            "family {family} has no sample in\n{classic}"
        );
    }
    for wanted in [
        "buslink_build_info",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "buslink_plugin_counts_total",
    ] {
        assert!(samples.contains(wanted), "{wanted} in\n{classic}");
    }
    // `buslink --version` prints `buslink VERSION`.
    let version = buslink_testkit::process::run(&["--version"], LIMIT);
    let version = version.stdout.trim().trim_start_matches("buslink ");
    let build = format!(
        "buslink_build_info{{version=\"{version}\",plugin_api=\"{}\"}} 1",
        buslink_plugin_api::API_VERSION
    );
    assert!(classic.contains(&build), "{build} in\n{classic}");

    // Every series the dashboard and the alert rules select is scraped.
    let mut selected = BTreeSet::new();
    for query in dashboard_queries() {
        selected.extend(metric_names(&as_promql(&query)));
    }
    let from_dashboard = selected.len();
    for expression in alert_expressions() {
        selected.extend(metric_names(&expression));
    }
    assert!(from_dashboard >= 15, "{selected:?}");
    let missing: Vec<&String> = selected.iter().filter(|n| !samples.contains(*n)).collect();
    assert!(missing.is_empty(), "{missing:?} not in\n{classic}");
    daemon.terminate(LIMIT);
}
