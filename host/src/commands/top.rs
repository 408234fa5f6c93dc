//! `buslink top --config FILE`: a live view of the running daemon in the terminal, through its
//! control socket (`status --json` each second; `pause NAME` / `resume NAME` on a key).
//!
//! One row per consumer: state, events/s, lag, committed offset and its age, error-queue size,
//! last error; below the table, the selected consumer in full. Made for 80x24 over ssh (plain
//! characters, no mouse). Keys: up/down (j/k), PgUp/PgDn, Home/End move the selection (the
//! table scrolls); `p` pauses and `r` resumes the selected consumer; `q`, Esc or Ctrl-C quit.
//! A consumer whose bus keeps the position (a Kafka group) is read-only here, and so is one the
//! socket refuses: the footer says so. When the daemon goes away, the terminal is restored and
//! `top` exits 1 naming the socket and the error.

use crate::error::AppError;
use buslink_daemon::control::Status;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table, TableState};
use ratatui::Frame;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `buslink top`: refreshes every `interval` until a quit key or the daemon goes away.
pub fn top(config_path: &Path, interval: Duration) -> Result<(), AppError> {
    let (configs, _) = crate::config::Config::load_lenient(config_path)?;
    let Some(config) = configs.first() else {
        return Err(AppError::Usage(format!(
            "{}: no consumer",
            config_path.display()
        )));
    };
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        return Err(AppError::Usage(
            "buslink top needs a terminal; scripts read `buslink ctl status --json`".into(),
        ));
    }
    let socket = config.process.control.path.clone();
    // The first look before the terminal is taken: no daemon, no screen to restore.
    let consumers = fetch(&socket).map_err(AppError::Runtime)?;
    let mut app = App {
        socket,
        consumers,
        table: TableState::default().with_selected(Some(0)),
        message: None,
        refreshed: chrono::Local::now(),
        interval,
    };
    let mut terminal = ratatui::init();
    let result = app.run(&mut terminal);
    ratatui::restore();
    result
}

/// The consumers as the daemon listening on `socket` reports them.
fn fetch(socket: &Path) -> Result<Vec<Status>, String> {
    let answer = crate::control::client::send(socket, "status --json")?;
    if let Some(error) = answer.strip_prefix("error: ") {
        return Err(error.trim_end().to_owned());
    }
    #[derive(serde::Deserialize)]
    struct All {
        consumers: Vec<Status>,
    }
    serde_json::from_str::<All>(&answer)
        .map(|all| all.consumers)
        .map_err(|e| {
            format!(
                "{}: an answer that is not the status: {e}",
                socket.display()
            )
        })
}

struct App {
    socket: PathBuf,
    consumers: Vec<Status>,
    table: TableState,
    /// What the last key did (a pause, a refusal), until the next key.
    message: Option<String>,
    refreshed: chrono::DateTime<chrono::Local>,
    interval: Duration,
}

/// What a key asks for.
enum Step {
    Go,
    Quit,
    RefreshNow,
}

impl App {
    fn run(&mut self, terminal: &mut ratatui::DefaultTerminal) -> Result<(), AppError> {
        let mut next = Instant::now() + self.interval;
        loop {
            terminal
                .draw(|frame| self.render(frame))
                .map_err(|e| AppError::Runtime(format!("cannot draw on the terminal: {e}")))?;
            let wait = next.saturating_duration_since(Instant::now());
            let step = if event::poll(wait)
                .map_err(|e| AppError::Runtime(format!("cannot read the terminal: {e}")))?
            {
                match event::read() {
                    Ok(Event::Key(key)) if key.kind == KeyEventKind::Press => self.key(key),
                    Ok(_) => Step::Go,
                    Err(e) => {
                        return Err(AppError::Runtime(format!("cannot read the terminal: {e}")))
                    }
                }
            } else {
                Step::RefreshNow
            };
            match step {
                Step::Quit => return Ok(()),
                Step::Go => {}
                Step::RefreshNow => {
                    self.refresh()?;
                    next = Instant::now() + self.interval;
                }
            }
        }
    }

    fn refresh(&mut self) -> Result<(), AppError> {
        self.consumers = fetch(&self.socket)
            .map_err(|e| AppError::Runtime(format!("the daemon went away: {e}")))?;
        self.refreshed = chrono::Local::now();
        let last = self.consumers.len().saturating_sub(1);
        if self.table.selected().is_none_or(|s| s > last) {
            self.table.select(Some(last));
        }
        Ok(())
    }

    fn selected(&self) -> Option<&Status> {
        self.table.selected().and_then(|i| self.consumers.get(i))
    }

    fn key(&mut self, key: KeyEvent) -> Step {
        let count = self.consumers.len();
        let page = 10;
        let at = self.table.selected().unwrap_or(0);
        let mut select = |to: usize| {
            self.table.select(Some(to.min(count.saturating_sub(1))));
            // What the last key did was about the consumer selected then.
            self.message = None;
            Step::Go
        };
        match key.code {
            KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => Step::Quit,
            KeyCode::Char('q') | KeyCode::Esc => Step::Quit,
            KeyCode::Down | KeyCode::Char('j') => select(at + 1),
            KeyCode::Up | KeyCode::Char('k') => select(at.saturating_sub(1)),
            KeyCode::PageDown => select(at + page),
            KeyCode::PageUp => select(at.saturating_sub(page)),
            KeyCode::Home | KeyCode::Char('g') => select(0),
            KeyCode::End | KeyCode::Char('G') => select(count.saturating_sub(1)),
            KeyCode::Char('p') => self.steer("pause"),
            KeyCode::Char('r') => self.steer("resume"),
            _ => Step::Go,
        }
    }

    /// `pause` or `resume` the selected consumer through the socket.
    fn steer(&mut self, verb: &str) -> Step {
        let Some(consumer) = self.selected() else {
            return Step::Go;
        };
        let name = consumer.consumer.clone();
        if !consumer.pausable {
            self.message = Some(format!(
                "{name} is read-only here: its bus keeps the position, the daemon refuses {verb}"
            ));
            return Step::Go;
        }
        self.message = Some(
            match crate::control::client::send(&self.socket, &format!("{verb} {name}")) {
                Ok(answer) => match answer.strip_prefix("error: ") {
                    Some(refusal) => {
                        format!("{verb} {name} refused (read-only): {}", refusal.trim())
                    }
                    None => format!("{name}: {}", answer.trim()),
                },
                Err(e) => format!("{verb} {name}: {e}"),
            },
        );
        Step::RefreshNow
    }

    fn render(&mut self, frame: &mut Frame<'_>) {
        let [head, table, detail, foot] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Min(4),
            Constraint::Length(5),
            Constraint::Length(1),
        ])
        .areas(frame.area());
        frame.render_widget(
            Paragraph::new(format!(
                "{}  buslink top  {} consumer(s)  {}",
                self.refreshed.format("%H:%M:%S"),
                self.consumers.len(),
                self.socket.display(),
            )),
            head,
        );
        let rows: Vec<[String; 8]> = self.consumers.iter().map(cells).collect();
        // Rows shown: the table's height less its header and borders. The first row shown
        // keeps the selection in view (set here, so the title and the table agree).
        let shown = usize::from(table.height.saturating_sub(3)).max(1);
        let selected = self.table.selected().unwrap_or(0);
        let mut first = self.table.offset();
        if selected < first {
            first = selected;
        } else if selected >= first + shown {
            first = selected + 1 - shown;
        }
        first = first.min(self.consumers.len().saturating_sub(shown));
        *self.table.offset_mut() = first;
        let title = if self.consumers.len() > shown {
            format!(
                " consumers {}-{} of {} ",
                first + 1,
                (first + shown).min(self.consumers.len()),
                self.consumers.len()
            )
        } else {
            " consumers ".to_owned()
        };
        // The columns that fit whole: a narrow terminal drops the least needed ones (the
        // detail below shows them for the selected consumer) rather than cut every heading.
        let shown = columns_for(table.width);
        let rows: Vec<Row<'_>> = rows
            .into_iter()
            .map(|cells| Row::new(shown.iter().map(|&c| cells[c].clone())))
            .collect();
        let widths = shown.iter().map(|&c| {
            let (_, width) = COLUMNS[c];
            if c == LAST_ERROR {
                Constraint::Min(width)
            } else {
                Constraint::Length(width)
            }
        });
        let header = Row::new(shown.iter().map(|&c| COLUMNS[c].0))
            .style(Style::new().add_modifier(Modifier::BOLD));
        frame.render_stateful_widget(
            Table::new(rows, widths)
                .header(header)
                .block(
                    Block::new()
                        .borders(Borders::TOP | Borders::BOTTOM)
                        .title(title),
                )
                .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED)),
            table,
            &mut self.table,
        );
        // Long states and errors wrap: the detail is where they are read in full.
        frame.render_widget(
            Paragraph::new(self.detail()).wrap(ratatui::widgets::Wrap { trim: false }),
            detail,
        );
        let keys = match self.selected() {
            Some(s) if !s.pausable => {
                "q quit  up/down select  (read-only: the bus keeps the position)"
            }
            _ => "q quit  up/down select  p pause  r resume",
        };
        let foot_text = match &self.message {
            Some(message) => message.clone(),
            None => keys.to_owned(),
        };
        frame.render_widget(Paragraph::new(foot_text), foot);
    }

    /// The selected consumer in full.
    fn detail(&self) -> Vec<Line<'static>> {
        let Some(s) = self.selected() else {
            return vec![Line::from("no consumer")];
        };
        let committed = match (&s.committed_offset, &s.committed_at) {
            (Some(offset), Some(at)) => {
                let at = chrono::DateTime::parse_from_rfc3339(at)
                    .map(|t| {
                        t.with_timezone(&chrono::Local)
                            .format("%Y-%m-%d %H:%M:%S")
                            .to_string()
                    })
                    .unwrap_or_else(|_| at.clone());
                format!("committed {offset} at {at}")
            }
            (Some(offset), None) => format!("committed {offset}"),
            _ => "nothing committed yet".to_owned(),
        };
        vec![
            Line::from(format!(
                "{}: {} ({} events handled in this run)",
                s.consumer, s.state, s.events_handled
            )),
            Line::from(format!(
                "plugin {} class {}; {committed}",
                s.plugin, s.class
            )),
            Line::from(match (&s.last_error, &s.last_error_at) {
                (Some(error), Some(at)) => format!("last error (at {at}): {error}"),
                (Some(error), None) => format!("last error: {error}"),
                (None, _) => "last error: none".to_owned(),
            }),
        ]
    }
}

/// The table's columns, in their order: heading and width (the last one takes what is left,
/// at least its width).
const COLUMNS: [(&str, u16); 8] = [
    ("CONSUMER", 12),
    ("STATE", 10),
    ("EV/S", 7),
    ("LAG", 7),
    ("COMMITTED", 11),
    ("AGE", 6),
    ("ERRQ", 5),
    ("LAST ERROR", 10),
];

/// The index of LAST ERROR in [`COLUMNS`].
const LAST_ERROR: usize = 7;

/// The order in which a narrow terminal drops columns: CONSUMER, STATE and LAG always stay.
const DROPPED_FIRST: [usize; 5] = [LAST_ERROR, 6, 5, 4, 2];

/// The columns shown in a table `width` cells wide (indexes into [`COLUMNS`], in order): all
/// when they fit with a space between each two, else without the least needed ones.
fn columns_for(width: u16) -> Vec<usize> {
    let needed = |shown: &[usize]| {
        shown.iter().map(|&c| COLUMNS[c].1).sum::<u16>() + shown.len().saturating_sub(1) as u16
    };
    let mut shown: Vec<usize> = (0..COLUMNS.len()).collect();
    for dropped in DROPPED_FIRST {
        if needed(&shown) <= width {
            break;
        }
        shown.retain(|&c| c != dropped);
    }
    shown
}

/// A consumer's cells, one per column of [`COLUMNS`].
fn cells(s: &Status) -> [String; 8] {
    [
        s.consumer.clone(),
        state_label(&s.state).to_owned(),
        format!("{:.1}", s.events_per_second),
        s.lag.map_or("?".to_owned(), |lag| lag.to_string()),
        s.committed_offset.clone().unwrap_or_else(|| "-".to_owned()),
        s.committed_age_seconds.map_or("-".to_owned(), age),
        s.error_queue.to_string(),
        s.last_error.clone().unwrap_or_default(),
    ]
}

/// The state's first word (`stalled: 5 events wait ...` is `stalled`; the detail has the rest).
pub fn state_label(state: &str) -> &str {
    state
        .split([':', ' ', '('])
        .next()
        .filter(|word| !word.is_empty())
        .unwrap_or(state)
}

/// An age in seconds, short: `42s`, `7m`, `3h`, `2d`.
pub fn age(seconds: f64) -> String {
    let seconds = seconds.max(0.0) as u64;
    match seconds {
        0..=99 => format!("{seconds}s"),
        100..=5999 => format!("{}m", seconds / 60),
        6000..=172_799 => format!("{}h", seconds / 3600),
        _ => format!("{}d", seconds / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_ages_fit_their_columns() {
        assert_eq!(state_label("running"), "running");
        assert_eq!(state_label("stalled: 5 events wait"), "stalled");
        assert_eq!(state_label("waiting for the bus: refused"), "waiting");
        assert_eq!(state_label("failed: x (restart 2 in 4 s)"), "failed");
        assert_eq!(age(4.6), "4s");
        assert_eq!(age(99.0), "99s");
        assert_eq!(age(100.0), "1m");
        assert_eq!(age(7200.0), "2h");
        assert_eq!(age(3.0 * 86_400.0), "3d");
    }

    #[test]
    fn a_narrow_terminal_drops_whole_columns_instead_of_cutting_headings() {
        let headings = |width| -> Vec<&str> {
            columns_for(width)
                .into_iter()
                .map(|c| COLUMNS[c].0)
                .collect()
        };
        let all = [
            "CONSUMER",
            "STATE",
            "EV/S",
            "LAG",
            "COMMITTED",
            "AGE",
            "ERRQ",
            "LAST ERROR",
        ];
        assert_eq!(headings(80), all);
        assert_eq!(headings(75), all);
        assert_eq!(headings(74), all[..7]);
        assert_eq!(headings(64), all[..7]);
        assert_eq!(headings(63), all[..6]);
        assert_eq!(headings(51), all[..5]);
        assert_eq!(headings(50), ["CONSUMER", "STATE", "EV/S", "LAG"]);
        assert_eq!(headings(39), ["CONSUMER", "STATE", "EV/S", "LAG"]);
        assert_eq!(headings(38), ["CONSUMER", "STATE", "LAG"]);
        assert_eq!(headings(20), ["CONSUMER", "STATE", "LAG"]);
        // From the narrowest table that can hold the three kept columns (31 cells) up: the
        // columns shown and a space between each two fit, every heading fits its column, and
        // a wider table never shows fewer columns.
        let mut shown_before = 0;
        for width in 31..200 {
            let shown = columns_for(width);
            let needed: u16 =
                shown.iter().map(|&c| COLUMNS[c].1).sum::<u16>() + shown.len() as u16 - 1;
            assert!(needed <= width, "{width}: {shown:?}");
            for &c in &shown {
                assert!(COLUMNS[c].0.len() <= usize::from(COLUMNS[c].1), "{c}");
            }
            assert!(shown.len() >= shown_before, "{width}: {shown:?}");
            shown_before = shown.len();
        }
    }
}
