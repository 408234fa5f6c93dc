//! The two text formats of `GET /metrics`, and the choice between them.
//!
//! `prometheus-client` writes OpenMetrics 1.0 text only. Prometheus's own linter (`promtool
//! check metrics`), older scrapers and most hand-written tooling read the classic Prometheus
//! text format 0.0.4, so the endpoint answers in it unless the scraper's `Accept` header
//! prefers OpenMetrics (Prometheus 2.x asks for OpenMetrics first). The classic text is made
//! from the OpenMetrics text by [`to_classic`]: the samples are the same lines; what differs is
//! the metadata (formats: the OpenMetrics 1.0 specification and Prometheus's "Exposition
//! formats" page).

/// A text format of the exposition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4 (`text/plain; version=0.0.4`).
    Classic,
    /// OpenMetrics 1.0 text (`application/openmetrics-text; version=1.0.0`).
    OpenMetrics,
}

impl Format {
    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Classic => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// The format to answer a request with `Accept` header `accept` (absent: classic). OpenMetrics
/// when the header accepts `application/openmetrics-text` with a quality (`q`, default 1) at
/// least that of `text/plain` (or `*/*`, `text/*` where `text/plain` is not named); classic
/// otherwise.
pub fn negotiate(accept: Option<&str>) -> Format {
    let Some(accept) = accept else {
        return Format::Classic;
    };
    let mut openmetrics: f32 = 0.0;
    let mut plain: Option<f32> = None;
    let mut wildcard: f32 = 0.0;
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let quality = parts
            .filter_map(|p| p.strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "application/openmetrics-text" => openmetrics = openmetrics.max(quality),
            "text/plain" => plain = Some(plain.unwrap_or(0.0).max(quality)),
            "*/*" | "text/*" => wildcard = wildcard.max(quality),
            _ => {}
        }
    }
    let classic = plain.unwrap_or(wildcard);
    if openmetrics > 0.0 && openmetrics >= classic {
        Format::OpenMetrics
    } else {
        Format::Classic
    }
}

/// The classic text format of an OpenMetrics exposition (as `prometheus-client` writes it).
///
/// Per family: `# HELP` and `# TYPE` name the samples' name (a counter `NAME` has samples
/// `NAME_total`, an info `NAME` has `NAME_info`); `info` and `stateset` become `gauge`,
/// `unknown` becomes `untyped`; `# UNIT`, `# EOF`, `_created` samples and exemplars are
/// dropped (the classic format has none). Help text is escaped as the classic format wants
/// (`\\`, `\n`; OpenMetrics's `\"` is unescaped).
pub fn to_classic(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // The family's HELP line waits for its TYPE line, which decides the sample name.
    let mut help: Option<(String, String)> = None;
    let mut counter: Option<String> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help = Some((name.to_owned(), text.to_owned()));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (sample_name, classic_kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "stateset" | "gauge" => (name.to_owned(), "gauge"),
                "histogram" | "gaugehistogram" => (name.to_owned(), "histogram"),
                "summary" => (name.to_owned(), "summary"),
                _ => (name.to_owned(), "untyped"),
            };
            counter = (kind == "counter").then(|| name.to_owned());
            if let Some((help_name, text)) = help.take() {
                if help_name == name {
                    out.push_str(&format!("# HELP {sample_name} {}\n", escape_help(&text)));
                }
            }
            out.push_str(&format!("# TYPE {sample_name} {classic_kind}\n"));
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            // `# UNIT`, `# EOF` and other comments.
            continue;
        }
        if let Some(name) = &counter {
            let sample = line.split(['{', ' ']).next().unwrap_or("");
            if sample == format!("{name}_created") {
                continue;
            }
        }
        // An exemplar follows ` # ` after the value.
        let sample = match line.find(" # ") {
            Some(at) => &line[..at],
            None => line,
        };
        out.push_str(sample);
        out.push('\n');
    }
    out
}

/// OpenMetrics help text (raw, or with `\\`, `\"`, `\n` escapes) as classic help text.
fn escape_help(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('n') => out.push_str("\\n"),
                Some('"') => out.push('"'),
                Some('\\') | None => out.push_str("\\\\"),
                Some(other) => {
                    out.push_str("\\\\");
                    out.push(other);
                }
            },
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_s_own_accept_header_gets_openmetrics_and_the_rest_classic() {
        // Prometheus 2.42's scrape header.
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                          version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(negotiate(None), Format::Classic);
        assert_eq!(negotiate(Some("*/*")), Format::Classic);
        assert_eq!(negotiate(Some("text/plain;version=0.0.4")), Format::Classic);
        assert_eq!(
            negotiate(Some("text/plain;q=0.9, application/openmetrics-text;q=0.5")),
            Format::Classic
        );
        assert_eq!(
            negotiate(Some("application/openmetrics-text; version=1.0.0")),
            Format::OpenMetrics
        );
        assert_eq!(
            negotiate(Some("application/openmetrics-text;q=0")),
            Format::Classic
        );
    }

    #[test]
    fn counters_and_infos_are_named_by_their_samples_in_the_classic_format() {
        let openmetrics = "# HELP buslink_events Events handled.\n\
                           # TYPE buslink_events counter\n\
                           buslink_events_total{consumer=\"a\"} 2\n\
                           buslink_events_created{consumer=\"a\"} 1.7e9\n\
                           # HELP buslink_build Build.\n\
                           # TYPE buslink_build info\n\
                           buslink_build_info{version=\"0.1.0\"} 1\n\
                           # HELP size_seconds Quoted \\\"x\\\" and a\\\\b.\n\
                           # TYPE size_seconds gauge\n\
                           # UNIT size_seconds seconds\n\
                           size_seconds 1.5 # {trace=\"x\"} 1.0\n\
                           # EOF\n";
        assert_eq!(
            to_classic(openmetrics),
            "# HELP buslink_events_total Events handled.\n\
             # TYPE buslink_events_total counter\n\
             buslink_events_total{consumer=\"a\"} 2\n\
             # HELP buslink_build_info Build.\n\
             # TYPE buslink_build_info gauge\n\
             buslink_build_info{version=\"0.1.0\"} 1\n\
             # HELP size_seconds Quoted \"x\" and a\\\\b.\n\
             # TYPE size_seconds gauge\n\
             size_seconds 1.5\n"
        );
    }
}
