//! `buslink-bench`: buslink's end-to-end benchmarks, measured side by side in one run, printed
//! as a Markdown table of ratios first. See BENCHMARKS.md.
//!
//! ```sh
//! cargo build --release --workspace && target/release/buslink-bench
//! ```
//!
//! Every measured program runs as a child process; wall time, CPU time (user + sys) and peak
//! RSS come from `wait4`. Medians of `--runs` runs.

use anyhow::{bail, Context};
use buslink_plugin_api::{ConsumerClass, EventBatch, PollStatus};
use buslink_testkit::{hermes_events, HermesBusWriter};
use clap::{Parser, Subcommand};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "buslink's benchmarks, side by side")]
struct Cli {
    #[command(subcommand)]
    command: Option<Mode>,
    /// Events in the generated sqlite bus.
    #[arg(long, default_value_t = 100_000)]
    events: usize,
    /// Runs of each measurement (the median is reported; fewer than 5 is at the mercy of the
    /// shared machine's load).
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// Where to put generated buses and configs (default: a temporary directory).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Run only these parts (repeatable; default: all).
    #[arg(long, value_enum)]
    only: Vec<Part>,
    /// Another `buslink` binary (an older build) to measure side by side with this one in the
    /// sqlite part, with the same plugin libraries: a change of the host alone.
    #[arg(long)]
    baseline: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Mode {
    /// (measured child) the bare loop: SELECT every row, parse its JSON once.
    #[command(name = "bare-sqlite")]
    ScanAndParse { bus: PathBuf },
    /// (measured child) drain the bus with the sqlite consumer linked statically.
    #[command(name = "static-sqlite")]
    LinkedStatically { bus: PathBuf },
    /// (measured child) drain the bus with the sqlite consumer loaded through the ABI.
    #[command(name = "loaded-sqlite")]
    LoadedThroughAbi { bus: PathBuf, library: PathBuf },
    /// (measured child) drain the bus with the sqlite consumer run as an executable
    /// (`buslink-plugin-sqlite`), over the subprocess protocol.
    #[command(name = "subprocess-sqlite")]
    Subprocess { bus: PathBuf, program: PathBuf },
    /// (measured child) the bare HMB loop: /open, then /recv until EOF, reading only the bytes.
    #[command(name = "bare-hmb")]
    BareHmb {
        url: String,
        #[arg(long)]
        bson: bool,
        #[arg(long)]
        count: i64,
        /// The HTTP client reading /recv.
        #[arg(long, value_enum, default_value_t = BareClient::ReqwestBlocking)]
        client: BareClient,
    },
    /// (measured child) the bare Kafka loop: rdkafka's BaseConsumer, partition 0 of TOPIC
    /// assigned from the beginning, each record's value written as a line to OUT (as a jsonl
    /// handler would), until COUNT records.
    #[command(name = "bare-kafka")]
    BareKafka {
        servers: String,
        topic: String,
        count: u64,
        out: PathBuf,
    },
}

/// The HTTP clients the bare HMB loop can read /recv with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum BareClient {
    /// reqwest's blocking client (it drives a tokio runtime on a thread of its own).
    ReqwestBlocking,
    /// reqwest's async client driven by a current-thread runtime on the reading thread.
    ReqwestCurrentThread,
    /// ureq, a synchronous client.
    Ureq,
}

const BATCH: usize = 512;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Mode::ScanAndParse { bus }) => bare_sqlite(&bus),
        Some(Mode::LinkedStatically { bus }) => static_sqlite(&bus),
        Some(Mode::LoadedThroughAbi { bus, library }) => loaded_sqlite(&bus, &library),
        Some(Mode::Subprocess { bus, program }) => subprocess_sqlite(&bus, &program),
        Some(Mode::BareHmb {
            url,
            bson,
            count,
            client,
        }) => bare_hmb(&url, bson, count, client),
        Some(Mode::BareKafka {
            servers,
            topic,
            count,
            out,
        }) => bare_kafka(&servers, &topic, count, &out),
        None => run_all(
            cli.events,
            cli.runs.max(1),
            cli.work_dir,
            &cli.only,
            cli.baseline.as_deref(),
        ),
    }
}

// ---- measured children ----------------------------------------------------------------------

fn bare_sqlite(bus: &Path) -> anyhow::Result<()> {
    let connection =
        rusqlite::Connection::open_with_flags(bus, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut statement =
        connection.prepare("SELECT msgid, timestamp, data FROM hermesmessages ORDER BY msgid")?;
    let mut rows = statement.query([])?;
    let mut count = 0u64;
    while let Some(row) = rows.next()? {
        let _msgid: i64 = row.get(0)?;
        let _timestamp: f64 = row.get(1)?;
        let data = row.get_ref(2)?.as_str()?;
        let _: serde::de::IgnoredAny = serde_json::from_str(data)?;
        count += 1;
    }
    println!("{count}");
    Ok(())
}

fn drain(
    mut poll: impl FnMut(&mut EventBatch) -> anyhow::Result<PollStatus>,
) -> anyhow::Result<()> {
    let mut batch = EventBatch::new(BATCH, 4 << 20);
    let mut count = 0u64;
    loop {
        batch.clear();
        match poll(&mut batch)? {
            PollStatus::Ready => count += batch.iter().count() as u64,
            PollStatus::Idle | PollStatus::Drained | PollStatus::Ended => break,
        }
    }
    println!("{count}");
    Ok(())
}

fn static_sqlite(bus: &Path) -> anyhow::Result<()> {
    use buslink_plugin_api::Consumer;
    let settings = buslink_sqlite::SqliteSettings {
        uri: bus.to_string_lossy().into_owned(),
        poll_interval_ms: 5,
        wait_for_bus: false,
    };
    let context = buslink_plugin_api::Context::new(".");
    let mut consumer = buslink_sqlite::SqliteConsumer::new(settings, &context)?;
    consumer.open()?;
    consumer.set_timeout(Some(Duration::ZERO))?;
    consumer.seek_to_beginning()?;
    drain(|batch| Ok(consumer.poll(batch)?))
}

fn subprocess_sqlite(bus: &Path, program: &Path) -> anyhow::Result<()> {
    use buslink_plugin_api::subprocess::{Spec, SubprocessConsumer};
    use buslink_plugin_api::Consumer;
    let mut consumer = SubprocessConsumer::start(Spec {
        command: vec![program.display().to_string()],
        env: Vec::new(),
        class: "SqliteConsumer".into(),
        settings: serde_json::json!({ "uri": bus, "poll_interval_ms": 5 }),
        config_dir: PathBuf::from("."),
        limits: Default::default(),
        trace_frames: false,
    })?;
    consumer.set_timeout(Some(Duration::ZERO))?;
    consumer.open()?;
    consumer.seek_to_beginning()?;
    drain(|batch| Ok(consumer.poll(batch)?))
}

fn loaded_sqlite(bus: &Path, library: &Path) -> anyhow::Result<()> {
    let plugin = buslink::plugin::LoadedPlugin::load(library, false)?;
    let settings = serde_json::json!({ "uri": bus, "poll_interval_ms": 5 }).to_string();
    let mut consumer = plugin.new_consumer("SqliteConsumer", &settings, Path::new("."))?;
    consumer.open()?;
    consumer.set_timeout(Some(Duration::ZERO))?;
    consumer.seek_to_beginning()?;
    drain(|batch| Ok(consumer.poll(batch)?))
}

/// The last `seq` of a /recv answer, found by scanning its bytes from the end (JSON: the last
/// `"seq":N`; BSON: the last int32/int64 element named `seq`).
fn last_seq(body: &[u8], bson: bool) -> Option<i64> {
    if bson {
        let at = body
            .windows(5)
            .rposition(|w| w[1..] == *b"seq\0" && (w[0] == 0x10 || w[0] == 0x12))?;
        let value = &body[at + 5..];
        return match body[at] {
            0x10 => value
                .get(..4)
                .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64),
            _ => value
                .get(..8)
                .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])),
        };
    }
    let at = body.windows(6).rposition(|w| w == b"\"seq\":")?;
    let digits: Vec<u8> = body[at + 6..]
        .iter()
        .copied()
        .take_while(u8::is_ascii_digit)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

fn bare_hmb(url: &str, bson: bool, count: i64, bare_client: BareClient) -> anyhow::Result<()> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let request = serde_json::json!({
        "heartbeat": 10,
        // keep = false: the server says EOF once the queue is drained (else it waits).
        "queue": { "A": { "seq": 0, "endseq": count - 1, "keep": false } },
    });
    let open = if bson {
        let document = bson::to_vec(&bson::to_document(&request)?)?;
        client
            .post(format!("{url}/open"))
            .header("Content-Type", "application/bson")
            .body(document)
    } else {
        client
            .post(format!("{url}/open"))
            .header("Content-Type", "application/json")
            .body(request.to_string())
    };
    let ack = open.send()?.error_for_status()?.bytes()?;
    let sid = if bson {
        bson::from_slice::<bson::Document>(&ack)?
            .get_str("sid")?
            .to_owned()
    } else {
        serde_json::from_slice::<serde_json::Value>(&ack)?["sid"]
            .as_str()
            .context("sid")?
            .to_owned()
    };
    let eof: &[u8] = if bson { b"EOF\0" } else { b"\"EOF\"" };
    let agent = ureq::AgentBuilder::new().build();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let async_client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let mut suffix = String::new();
    let mut bytes = 0usize;
    loop {
        let address = format!("{url}/recv/{sid}{suffix}");
        let body: Vec<u8> = match bare_client {
            BareClient::Ureq => {
                let mut body = Vec::new();
                std::io::Read::read_to_end(
                    &mut agent.get(&address).call()?.into_reader(),
                    &mut body,
                )?;
                body
            }
            BareClient::ReqwestBlocking => client
                .get(&address)
                .send()?
                .error_for_status()?
                .bytes()?
                .to_vec(),
            BareClient::ReqwestCurrentThread => runtime
                .block_on(async {
                    async_client
                        .get(&address)
                        .send()
                        .await?
                        .error_for_status()?
                        .bytes()
                        .await
                })?
                .to_vec(),
        };
        bytes += body.len();
        if let Some(seq) = last_seq(&body, bson) {
            suffix = format!("/A/{seq}");
        }
        // EOF is the last message of its answer: only the tail needs a look.
        let tail = &body[body.len().saturating_sub(64)..];
        if tail.windows(eof.len()).any(|w| w == eof) {
            break;
        }
    }
    println!("{bytes}");
    Ok(())
}

fn bare_kafka(servers: &str, topic: &str, count: u64, out: &Path) -> anyhow::Result<()> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use std::io::Write;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", "bare-loop")
        .set("enable.auto.commit", "false")
        .create()?;
    // The oldest offset asked first (as the plugin does): assigning OFFSET_BEGINNING makes
    // librdkafka look it up itself, about half a second later on the mock cluster.
    let (low, _) = consumer.fetch_watermarks(topic, 0, Duration::from_secs(10))?;
    let mut list = rdkafka::TopicPartitionList::new();
    list.add_partition_offset(topic, 0, rdkafka::Offset::Offset(low))?;
    consumer.assign(&list)?;
    let mut file = std::io::BufWriter::with_capacity(256 * 1024, std::fs::File::create(out)?);
    let mut seen = 0u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen < count {
        if Instant::now() > deadline {
            bail!("{seen} of {count} records in 120 s");
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                file.write_all(message.payload().unwrap_or_default())?;
                file.write_all(b"\n")?;
                seen += 1;
                if seen.is_multiple_of(512) {
                    file.flush()?;
                }
            }
            Some(Err(error)) => bail!("{error}"),
            None => {}
        }
    }
    file.flush()?;
    println!("{seen}");
    Ok(())
}

// ---- measuring ------------------------------------------------------------------------------

/// One measured run of a child process, or the medians of several (with the range of each).
#[derive(Clone, Copy, Debug)]
struct Sample {
    wall: Duration,
    cpu: Duration,
    max_rss_kib: u64,
    /// The fastest and slowest wall time of the runs (one run: its own, twice).
    wall_range: (Duration, Duration),
    /// The least and most CPU time of the runs.
    cpu_range: (Duration, Duration),
    /// From the start to the watched file's last expected line (the last event written), when
    /// the run watched one; else the wall time. With its least and most over the runs.
    last_line: Duration,
    last_line_range: (Duration, Duration),
}

/// Runs `command` to completion; its resources from wait4.
fn measure(command: Command) -> anyhow::Result<Sample> {
    measure_watching(command, None)
}

/// A file a run writes a line per event to, and how many lines make the run's last event.
type Watch = Option<(PathBuf, usize)>;

/// Makes a run's command, and the file it watches if any, each time it is called.
type WatchedMaker<'a> = Box<dyn FnMut() -> anyhow::Result<(Command, Watch)> + 'a>;

/// Runs `command` to completion; its resources from wait4, and with `watch`, the time from
/// the start until the file holds that many lines (polled every 2 ms, as the peak RSS is).
fn measure_watching(mut command: Command, watch: Watch) -> anyhow::Result<Sample> {
    let mut counter = watch.as_ref().map(|(path, count)| {
        let _ = std::fs::remove_file(path);
        (LineCounter::new(path), *count)
    });
    let mut last_line = None;
    let start = Instant::now();
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {command:?}"))?;
    let pid = child.id() as libc::pid_t;
    // Peak RSS: the child's own VmHWM, read until it exits (wait4's ru_maxrss also counts the
    // memory of this process, in which the child ran between spawn and exec).
    let mut peak_kib = 0u64;
    loop {
        // SAFETY: an all-zero siginfo is valid; waitid only looks at our own child, without
        // reaping it (WNOWAIT), so wait4 below still gets its resource usage.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if rc != 0 || unsafe { info.si_pid() } == pid {
            break;
        }
        if let Some((lines, count)) = counter.as_mut() {
            if last_line.is_none() && lines.lines() >= *count {
                last_line = Some(start.elapsed());
            }
        }
        if let Some(hwm) = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
        {
            peak_kib = peak_kib.max(hwm);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    if waited != pid {
        bail!("wait4 failed for {command:?}");
    }
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr {
            let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
        }
        bail!("{command:?} failed ({status}):\n{stderr}");
    }
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    let cpu = time(usage.ru_utime) + time(usage.ru_stime);
    let last_line = match counter {
        None => wall,
        Some((mut lines, count)) => match last_line {
            Some(at) => at,
            // The last lines landed between the last look and the exit.
            None if lines.lines() >= count => wall,
            None => bail!("{command:?} wrote {} of {count} lines", lines.lines()),
        },
    };
    Ok(Sample {
        wall,
        cpu,
        max_rss_kib: peak_kib,
        wall_range: (wall, wall),
        cpu_range: (cpu, cpu),
        last_line,
        last_line_range: (last_line, last_line),
    })
}

/// Runs every command `runs` times, taking turns (A, B, C, A, B, C, ...) so that a burst of
/// load from elsewhere on the shared machine falls on all of them alike, and returns for each
/// the medians of its wall time, CPU time and peak RSS, each on its own.
fn side_by_side(
    runs: usize,
    makers: &mut [&mut dyn FnMut() -> anyhow::Result<Command>],
) -> anyhow::Result<Vec<Sample>> {
    let mut watched: Vec<WatchedMaker<'_>> = makers
        .iter_mut()
        .map(|make| Box::new(move || Ok((make()?, None))) as WatchedMaker<'_>)
        .collect();
    side_by_side_watching(runs, &mut watched)
}

/// `side_by_side` for runs that may each watch a file for their last event's line.
fn side_by_side_watching(
    runs: usize,
    makers: &mut [WatchedMaker<'_>],
) -> anyhow::Result<Vec<Sample>> {
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); makers.len()];
    for _ in 0..runs {
        for (make, taken) in makers.iter_mut().zip(samples.iter_mut()) {
            let (command, watch) = make()?;
            taken.push(measure_watching(command, watch)?);
        }
    }
    fn middle<T: Ord + Copy>(mut values: Vec<T>) -> T {
        values.sort();
        values[values.len() / 2]
    }
    Ok(samples
        .into_iter()
        .map(|taken| {
            let range = |values: Vec<Duration>| {
                let min = values.iter().min().copied().unwrap_or_default();
                let max = values.iter().max().copied().unwrap_or_default();
                (min, max)
            };
            Sample {
                wall: middle(taken.iter().map(|s| s.wall).collect()),
                cpu: middle(taken.iter().map(|s| s.cpu).collect()),
                max_rss_kib: middle(taken.iter().map(|s| s.max_rss_kib).collect()),
                wall_range: range(taken.iter().map(|s| s.wall).collect()),
                cpu_range: range(taken.iter().map(|s| s.cpu).collect()),
                last_line: middle(taken.iter().map(|s| s.last_line).collect()),
                last_line_range: range(taken.iter().map(|s| s.last_line).collect()),
            }
        })
        .collect())
}

/// A child run of this benchmark binary.
fn me_with(me: &Path, args: &[&std::ffi::OsStr]) -> Command {
    let mut command = Command::new(me);
    command.args(args);
    command
}

fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let path = buslink_testkit::build_dir().join(name);
    if !path.exists() {
        bail!(
            "{} not found: build the workspace in release mode first",
            path.display()
        );
    }
    Ok(path)
}

fn write_bus(path: &Path, events: usize) -> anyhow::Result<()> {
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    HermesBusWriter::open(path)?.append_all(hermes_events(events))?;
    Ok(())
}

fn sqlite_config(
    dir: &Path,
    name: &str,
    bus: &Path,
    extra: &str,
    handler: &str,
) -> anyhow::Result<PathBuf> {
    let state = dir.join(format!("state-{name}"));
    let plugins = buslink_testkit::build_dir();
    let text = format!(
        "state_dir = \"{}\"\nplugin_dirs = [\"{}\"]\nstats_interval_s = 0\n\n[consumer]\nname = \"{name}\"\nplugin = \"sqlite\"\nclass = \"SqliteConsumer\"\ntimeout_ms = 1\n\n[consumer.settings]\nuri = \"{}\"\npoll_interval_ms = 5\n\n{extra}\n[[handlers]]\nname = \"out\"\n{handler}\n",
        state.display(),
        plugins.display(),
        bus.display()
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text)?;
    Ok(path)
}

/// `buslink run --once` on a fresh state directory.
fn buslink_once(config: &Path) -> anyhow::Result<Command> {
    buslink_once_with(&sibling("buslink")?, config)
}

/// `PROGRAM run --once` (a `buslink` binary) on a fresh state directory.
fn buslink_once_with(program: &Path, config: &Path) -> anyhow::Result<Command> {
    let text = std::fs::read_to_string(config)?;
    if let Some(state) = text.lines().find_map(|l| l.strip_prefix("state_dir = \"")) {
        let _ = std::fs::remove_dir_all(state.trim_end_matches('"'));
    }
    let mut command = Command::new(program);
    command
        .args(["--log-level", "warn", "run", "--once", "--config"])
        .arg(config);
    Ok(command)
}

/// Checks that the last `buslink run --once` with `config` handled every event (a run that
/// stopped early would look fast).
fn expect_handled(config: &Path, events: usize) -> anyhow::Result<()> {
    let output = Command::new(sibling("buslink")?)
        .args(["offsets", "show", "--json", "--config"])
        .arg(config)
        .output()?;
    let record: serde_json::Value = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("offsets show {}", config.display()))?;
    let handled = record["events_handled"].as_u64().unwrap_or(0);
    if handled != events as u64 {
        bail!(
            "{}: the run handled {handled} of {events} events",
            config.display()
        );
    }
    Ok(())
}

/// The median CPU per event with the least and most of the runs: `1.24 us (1.20-1.31)`.
fn per_event_range(sample: &Sample, events: usize) -> String {
    let us = |d: Duration| d.as_secs_f64() * 1e6 / events as f64;
    format!(
        "{:.2} us ({:.2}-{:.2})",
        us(sample.cpu),
        us(sample.cpu_range.0),
        us(sample.cpu_range.1)
    )
}

fn rate(duration: Duration, events: usize) -> String {
    format!("{:.0}", events as f64 / duration.as_secs_f64())
}

// ---- the whole run --------------------------------------------------------------------------

/// The parts of the whole run `--only` can pick.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    /// sqlite throughput, static vs ABI-loaded, peak RSS, latency.
    Sqlite,
    /// Commit every event vs every 1000.
    Commit,
    /// HMB throughput (JSON, BSON) against the bare loops, latency.
    Hmb,
    /// The daemon's operations: metrics on vs off, `status` round trip while consuming,
    /// memory of several consumers in one process vs one process each.
    Ops,
    /// Kafka on librdkafka's mock cluster: a bare rdkafka loop, the daemon and `--once` in
    /// assign mode, one and two group members.
    Kafka,
    /// A Hermes Python plugin under buslink vs the same plugin in a plain Python loop.
    Hermes,
}

/// The printed table: ratios first, then every measured run.
#[derive(Default)]
struct Report {
    ratios: Vec<String>,
    details: Vec<String>,
}

impl Report {
    fn ratio(&mut self, measure: &str, value: String, target: &str) {
        self.ratios
            .push(format!("| {measure} | {value} | {target} |"));
    }

    /// A row of medians; wall and CPU per event with the least and most of the runs.
    fn detail(&mut self, name: &str, sample: Sample, count: usize) {
        self.details.push(format!(
            "| {name} | {:.3} s ({:.3}-{:.3}) | {} | {:.3} s | {} | {:.1} MiB |",
            sample.wall.as_secs_f64(),
            sample.wall_range.0.as_secs_f64(),
            sample.wall_range.1.as_secs_f64(),
            rate(sample.wall, count),
            sample.cpu.as_secs_f64(),
            per_event_range(&sample, count),
            sample.max_rss_kib as f64 / 1024.0
        ));
    }

    fn print(&self, events: usize, runs: usize) {
        println!("## Ratios (one run, side by side; {events} events, median of {runs})\n");
        println!("| measure | value | target |");
        println!("| --- | --- | --- |");
        for line in &self.ratios {
            println!("{line}");
        }
        println!("\n## Details\n");
        println!("| run | wall | events/s | CPU (user+sys) | CPU per event | peak RSS |");
        println!("| --- | --- | --- | --- | --- | --- |");
        for line in &self.details {
            println!("{line}");
        }
    }
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

fn run_all(
    events: usize,
    runs: usize,
    work_dir: Option<PathBuf>,
    only: &[Part],
    baseline: Option<&Path>,
) -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let dir = work_dir.unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let me = std::env::current_exe()?;
    let wanted = |part| only.is_empty() || only.contains(&part);
    let mut report = Report::default();
    if wanted(Part::Sqlite) {
        sqlite_part(&mut report, &dir, &me, events, runs)?;
        if let Some(baseline) = baseline {
            baseline_part(&mut report, &dir, baseline, events, runs)?;
        }
    }
    if wanted(Part::Commit) {
        commit_part(&mut report, &dir, events, runs)?;
    }
    if wanted(Part::Hmb) {
        eprintln!("HMB: {events} messages from the in-repo server, JSON and BSON...");
        hmb_part(&mut report, &dir, &me, events, runs)?;
    }
    if wanted(Part::Ops) {
        ops_part(&mut report, &dir, events, runs)?;
    }
    if wanted(Part::Kafka) {
        eprintln!("Kafka: {KAFKA_EVENTS} records on librdkafka's mock cluster...");
        kafka_part(&mut report, &dir, &me, runs)?;
    }
    if wanted(Part::Hermes) {
        hermes_part(&mut report, &dir, events, runs)?;
    }
    report.print(events, runs);
    Ok(())
}

/// The plain Python loop a Hermes client would run over a consumer plugin: the stand-ins
/// installed, the plugin's class built, `setTimeout`, `open`, `seekToBeginning`, then each
/// event iterated and turned into its body (`to_json`), a line per event written (its offset,
/// through a buffered file: the clock stops at the last one), until the bus's last event.
/// argv: the SDK's directory, the plugin module, the bus, the number of events, the output.
const HERMES_LOOP: &str = "import sys, importlib.util
sys.path.insert(0, sys.argv[1])
from buslink_plugin import hermes_standins
hermes_standins.install_standins()
spec = importlib.util.spec_from_file_location('plugin', sys.argv[2])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
plugin = getattr(module, module.HERMES_PLUGIN_CLASSNAME)({'uri': sys.argv[3]})
plugin.setTimeout(200)
plugin.open()
plugin.seekToBeginning()
want, count = int(sys.argv[4]), 0
with open(sys.argv[5], 'w') as out:
    for event in plugin:
        event.to_json()
        out.write(f'{event.offset}\\n')
        count += 1
        if count == want:
            break
print(count)
";

/// The test Hermes plugin (`tests/fixture-plugins/hermes/sqlitelike`) draining the sqlite bus:
/// under buslink (`plugin = { hermes_plugin = ... }`, `run --once`, a `jsonl` handler) and in
/// the plain Python loop above, side by side; and the Rust library's run beside them.
///
/// Throughput is clocked from the start to the last event's line (buslink's `jsonl` output,
/// the loop's offsets), as the Kafka rows are: the loop is told how many events there are and
/// stops at the last, while `run --once` can only end when the plugin's iteration goes idle
/// (a Hermes plugin cannot say "drained"): the sqlitelike plugin sleeps 0.5 s on an empty read
/// and gives up after its 200 ms timeout. That end is reported as the whole run's time.
fn hermes_part(report: &mut Report, dir: &Path, events: usize, runs: usize) -> anyhow::Result<()> {
    let bus = dir.join("bus.sqlite");
    if !bus.exists() {
        write_bus(&bus, events)?;
    }
    let root = buslink_testkit::workspace_root();
    let plugin_dir = root.join("tests/fixture-plugins/hermes/sqlitelike");
    let library = sqlite_config(dir, "null-rust", &bus, "", "type = \"null\"")?;
    let hermes_out = dir.join("hermes.jsonl");
    let hermes = sqlite_config(
        dir,
        "jsonl-hermes",
        &bus,
        "",
        &format!("type = \"jsonl\"\npath = \"{}\"", hermes_out.display()),
    )?;
    let text = std::fs::read_to_string(&hermes)?
        .replace(
            "plugin = \"sqlite\"",
            &format!(
                "plugin = {{ hermes_plugin = \"{}\" }}",
                plugin_dir.display()
            ),
        )
        .replace(
            "class = \"SqliteConsumer\"",
            "class = \"SqliteLikeConsumerPlugin\"",
        )
        .replace("timeout_ms = 1\n", "timeout_ms = 200\n")
        .replace("poll_interval_ms = 5\n", "");
    std::fs::write(&hermes, text)?;
    let sdk = root.join("sdk/python");
    let module = plugin_dir.join("sqlitelike.py");
    let loop_out = dir.join("hermes-loop.out");
    let count = events.to_string();
    eprintln!("Hermes: the test Hermes plugin under buslink and in a plain Python loop...");
    let samples = side_by_side_watching(
        runs,
        &mut [
            Box::new(|| Ok((buslink_once(&hermes)?, Some((hermes_out.clone(), events))))),
            Box::new(|| {
                let mut command = Command::new("python3");
                command
                    .args(["-I", "-B", "-c", HERMES_LOOP])
                    .arg(&sdk)
                    .arg(&module)
                    .arg(&bus)
                    .arg(&count)
                    .arg(&loop_out);
                Ok((command, Some((loop_out.clone(), events))))
            }),
            Box::new(|| Ok((buslink_once(&library)?, None))),
        ],
    )?;
    let [under_buslink, plain_loop, rust] = samples[..] else {
        bail!("three runs expected");
    };
    expect_handled(&hermes, events)?;
    let seconds = |d: Duration| d.as_secs_f64();
    report.ratio(
        "Hermes Python plugin under buslink / in a plain Python loop, throughput (start to last event's line)",
        format!(
            "{:.2} ({:.3} s vs {:.3} s; CPU per event {:.2} / {:.2} us)",
            ratio(plain_loop.last_line, under_buslink.last_line),
            seconds(under_buslink.last_line),
            seconds(plain_loop.last_line),
            under_buslink.cpu.as_secs_f64() * 1e6 / events as f64,
            plain_loop.cpu.as_secs_f64() * 1e6 / events as f64
        ),
        ">= 0.67",
    );
    report.ratio(
        "Hermes Python plugin under buslink / plain loop, whole run (buslink's with the plugin's idle end)",
        format!(
            "{:.2} ({:.3} s, last line at {:.3} s ({:.3}-{:.3}))",
            ratio(plain_loop.wall, under_buslink.wall),
            seconds(under_buslink.wall),
            seconds(under_buslink.last_line),
            seconds(under_buslink.last_line_range.0),
            seconds(under_buslink.last_line_range.1)
        ),
        "reported",
    );
    report.ratio(
        "Hermes Python plugin under buslink / the Rust sqlite library under buslink, throughput",
        format!("{:.3}", ratio(rust.wall, under_buslink.last_line)),
        "reported",
    );
    report.detail(
        "buslink run --once, Hermes Python plugin (sqlitelike), jsonl handler",
        under_buslink,
        events,
    );
    report.detail(
        "plain Python loop over the same plugin (iterate, to_json, a line per event)",
        plain_loop,
        events,
    );
    report.detail(
        "buslink run --once, Rust sqlite library, null handler",
        rust,
        events,
    );
    Ok(())
}

/// This `buslink` and `baseline` (another build) draining the same sqlite bus to a null
/// handler, side by side: the host's own cost, before and after a change.
fn baseline_part(
    report: &mut Report,
    dir: &Path,
    baseline: &Path,
    events: usize,
    runs: usize,
) -> anyhow::Result<()> {
    let bus = dir.join("bus.sqlite");
    if !bus.exists() {
        write_bus(&bus, events)?;
    }
    let null = sqlite_config(dir, "null-baseline", &bus, "", "type = \"null\"")?;
    let this = sibling("buslink")?;
    eprintln!(
        "sqlite: this buslink and {} side by side...",
        baseline.display()
    );
    let samples = side_by_side(
        runs,
        &mut [&mut || buslink_once_with(&this, &null), &mut || {
            buslink_once_with(baseline, &null)
        }],
    )?;
    let [new, old] = samples[..] else {
        bail!("two runs expected");
    };
    expect_handled(&null, events)?;
    report.ratio(
        "sqlite: this buslink / --baseline buslink, wall (CPU)",
        format!(
            "{:.3} ({:.3})",
            new.wall.as_secs_f64() / old.wall.as_secs_f64(),
            new.cpu.as_secs_f64() / old.cpu.as_secs_f64()
        ),
        "within 5%",
    );
    report.detail(
        "buslink run --once, sqlite, null handler (this build)",
        new,
        events,
    );
    report.detail(
        "buslink run --once, sqlite, null handler (--baseline)",
        old,
        events,
    );
    Ok(())
}

fn sqlite_part(
    report: &mut Report,
    dir: &Path,
    me: &Path,
    events: usize,
    runs: usize,
) -> anyhow::Result<()> {
    let library = sibling("libbuslink_sqlite.so")?;
    let program = sibling("buslink-plugin-sqlite")?;
    let bus = dir.join("bus.sqlite");
    eprintln!("writing a {events}-event Hermes bus...");
    write_bus(&bus, events)?;
    let null = sqlite_config(dir, "null", &bus, "", "type = \"null\"")?;
    // The same daemon run with the plugin's executable (`plugin = { command = [...] }`).
    let null_exe = sqlite_config(dir, "null-exe", &bus, "", "type = \"null\"")?;
    let text = std::fs::read_to_string(&null_exe)?.replace(
        "plugin = \"sqlite\"",
        &format!("plugin = {{ command = [\"{}\"] }}", program.display()),
    );
    std::fs::write(&null_exe, text)?;

    eprintln!(
        "sqlite: buslink run --once, the bare scan+parse loop, static, ABI-loaded and as a \
         subprocess..."
    );
    let samples = side_by_side(
        runs,
        &mut [
            &mut || buslink_once(&null),
            &mut || Ok(me_with(me, &["bare-sqlite".as_ref(), bus.as_os_str()])),
            &mut || Ok(me_with(me, &["static-sqlite".as_ref(), bus.as_os_str()])),
            &mut || {
                Ok(me_with(
                    me,
                    &[
                        "loaded-sqlite".as_ref(),
                        bus.as_os_str(),
                        library.as_os_str(),
                    ],
                ))
            },
            &mut || {
                Ok(me_with(
                    me,
                    &[
                        "subprocess-sqlite".as_ref(),
                        bus.as_os_str(),
                        program.as_os_str(),
                    ],
                ))
            },
            &mut || buslink_once(&null_exe),
        ],
    )?;
    let [host, bare, linked, loaded, subprocess, host_exe] = samples[..] else {
        bail!("six runs expected");
    };
    expect_handled(&null, events)?;
    expect_handled(&null_exe, events)?;

    eprintln!("peak RSS with a 3x backlog...");
    let big_bus = dir.join("big.sqlite");
    write_bus(&big_bus, events * 3)?;
    let big = sqlite_config(dir, "big", &big_bus, "", "type = \"null\"")?;
    let [host_big] = side_by_side(1, &mut [&mut || buslink_once(&big)])?[..] else {
        bail!("one run expected");
    };
    expect_handled(&big, events * 3)?;

    eprintln!("latency: sqlite bus, 100 events/s...");
    let latency = sqlite_latency(dir)?;

    report.ratio(
        "sqlite: buslink throughput / bare scan+parse throughput",
        format!("{:.2}", ratio(bare.wall, host.wall)),
        ">= 0.8",
    );
    report.ratio(
        "sqlite: ABI-loaded time / statically linked time",
        format!("{:.2}", ratio(loaded.wall, linked.wall)),
        "<= 1.1",
    );
    report.ratio(
        "sqlite plugin as a subprocess / as a cdylib, throughput (512-event batches)",
        format!(
            "{:.2} (CPU per event {:.2} / {:.2} us, the child's included)",
            ratio(loaded.wall, subprocess.wall),
            subprocess.cpu.as_secs_f64() * 1e6 / events as f64,
            loaded.cpu.as_secs_f64() * 1e6 / events as f64
        ),
        ">= 0.7",
    );
    report.ratio(
        "buslink run --once with the sqlite executable / with the library, throughput",
        format!(
            "{:.2} (CPU per event {:.2} / {:.2} us, the child's included)",
            ratio(host.wall, host_exe.wall),
            host_exe.cpu.as_secs_f64() * 1e6 / events as f64,
            host.cpu.as_secs_f64() * 1e6 / events as f64
        ),
        "reported",
    );
    report.ratio(
        "sqlite publish -> handler latency p50 / p99 (100 events/s)",
        format!("{:.2} ms / {:.2} ms", latency.0, latency.1),
        "p99 < 5 ms",
    );
    report.ratio(
        &format!(
            "sqlite: buslink peak RSS, {events} / {} events backlog",
            events * 3
        ),
        format!(
            "{:.1} / {:.1} MiB",
            host.max_rss_kib as f64 / 1024.0,
            host_big.max_rss_kib as f64 / 1024.0
        ),
        "< 30 MiB",
    );
    report.detail("buslink run --once, sqlite, null handler", host, events);
    report.detail("bare rusqlite scan + serde_json parse", bare, events);
    report.detail(
        "sqlite consumer, statically linked, poll loop",
        linked,
        events,
    );
    report.detail(
        "sqlite consumer, loaded through the ABI, poll loop",
        loaded,
        events,
    );
    report.detail(
        "sqlite consumer as a subprocess (buslink-plugin-sqlite), poll loop",
        subprocess,
        events,
    );
    report.detail(
        "buslink run --once, sqlite executable, null handler",
        host_exe,
        events,
    );
    report.detail("buslink run --once, 3x backlog", host_big, events * 3);
    Ok(())
}

fn commit_part(report: &mut Report, dir: &Path, events: usize, runs: usize) -> anyhow::Result<()> {
    // fsync = "each" waits for the disk at every event: a tenth of the events keeps it short.
    let strict_events = (events / 10).max(1000);
    eprintln!("commit cost: {events} events (fsync in the background), {strict_events} (fsync = \"each\")...");
    let mut rows = Vec::new();
    for (fsync, count) in [("background", events), ("each", strict_events)] {
        let bus = dir.join(format!("commit-{count}.sqlite"));
        if !bus.exists() {
            write_bus(&bus, count)?;
        }
        let config = |every: usize| {
            sqlite_config(
                dir,
                &format!("every{every}-{fsync}"),
                &bus,
                &format!("[commit]\nevery_events = {every}\nfsync = \"{fsync}\"\n"),
                "type = \"null\"",
            )
        };
        let every_1 = config(1)?;
        let every_1000 = config(1000)?;
        let samples = side_by_side(
            runs,
            &mut [&mut || buslink_once(&every_1), &mut || {
                buslink_once(&every_1000)
            }],
        )?;
        let [commit_1, commit_1000] = samples[..] else {
            bail!("two runs expected");
        };
        expect_handled(&every_1, count)?;
        expect_handled(&every_1000, count)?;
        let mode = if fsync == "each" {
            "fsync = \"each\""
        } else {
            "fsync in the background, the default"
        };
        report.ratio(
            &format!("commit every event time / every 1000 ({count} events; {mode})"),
            format!("{:.2}", ratio(commit_1.wall, commit_1000.wall)),
            "<= 2",
        );
        rows.push((
            format!("buslink, commit every event ({mode})"),
            commit_1,
            count,
        ));
        rows.push((
            format!("buslink, commit every 1000 events ({mode})"),
            commit_1000,
            count,
        ));
    }
    for (name, sample, count) in rows {
        report.detail(&name, sample, count);
    }
    Ok(())
}

/// A config of `names.len()` consumers (`[[consumers]]`), each on its own bus, null handlers.
fn several_config(dir: &Path, file: &str, buses: &[(String, PathBuf)]) -> anyhow::Result<PathBuf> {
    let mut text = format!(
        "state_dir = \"{}\"\nplugin_dirs = [\"{}\"]\nstats_interval_s = 0\n",
        dir.join(format!("state-{file}")).display(),
        buslink_testkit::build_dir().display()
    );
    for (name, bus) in buses {
        text.push_str(&format!(
            "\n[[consumers]]\nname = \"{name}\"\nplugin = \"sqlite\"\nclass = \"SqliteConsumer\"\n\
             timeout_ms = 1\n[consumers.settings]\nuri = \"{}\"\npoll_interval_ms = 5\n\
             [[consumers.handlers]]\nname = \"out\"\ntype = \"null\"\n",
            bus.display()
        ));
    }
    let path = dir.join(format!("{file}.toml"));
    std::fs::write(&path, text)?;
    Ok(path)
}

fn ops_part(report: &mut Report, dir: &Path, events: usize, runs: usize) -> anyhow::Result<()> {
    // A 3x backlog: what is compared is throughput, not the start.
    let backlog = events * 3;
    let bus = dir.join("status.sqlite");
    if !bus.exists() {
        eprintln!("writing a {backlog}-event Hermes bus...");
        write_bus(&bus, backlog)?;
    }
    eprintln!("ops: metrics on vs off...");
    let off = sqlite_config(dir, "metrics-off", &bus, "", "type = \"null\"")?;
    let on = sqlite_config(
        dir,
        "metrics-on",
        &bus,
        "[metrics]\nlisten = \"127.0.0.1:0\"\n",
        "type = \"null\"",
    )?;
    let samples = side_by_side(
        runs,
        &mut [&mut || buslink_once(&off), &mut || buslink_once(&on)],
    )?;
    let [metrics_off, metrics_on] = samples[..] else {
        bail!("two runs expected");
    };
    expect_handled(&off, backlog)?;
    expect_handled(&on, backlog)?;
    report.ratio(
        &format!("throughput with metrics on / off ({backlog} events)"),
        format!("{:.2}", ratio(metrics_off.wall, metrics_on.wall)),
        ">= 0.97",
    );
    report.ratio(
        &format!("CPU time with metrics on / off ({backlog} events)"),
        format!("{:.2}", ratio(metrics_on.cpu, metrics_off.cpu)),
        "<= 1.03",
    );
    report.detail(
        "buslink run --once, 3x backlog, metrics off",
        metrics_off,
        backlog,
    );
    report.detail(
        "buslink run --once, 3x backlog, metrics on",
        metrics_on,
        backlog,
    );

    eprintln!("ops: 4 consumers in one process vs 4 processes...");
    let quarter = (events / 4).max(1);
    let buses: Vec<(String, PathBuf)> = (0..4)
        .map(|i| (format!("c{i}"), dir.join(format!("ops-{i}.sqlite"))))
        .collect();
    for (_, path) in &buses {
        if !path.exists() {
            write_bus(path, quarter)?;
        }
    }
    let together = several_config(dir, "four", &buses)?;
    let singles: Vec<PathBuf> = buses
        .iter()
        .map(|(name, path)| sqlite_config(dir, name, path, "", "type = \"null\""))
        .collect::<anyhow::Result<_>>()?;
    let mut makers: Vec<Box<dyn FnMut() -> anyhow::Result<Command>>> =
        vec![Box::new(|| buslink_once(&together))];
    for single in &singles {
        makers.push(Box::new(move || buslink_once(single)));
    }
    let mut makers_ref: Vec<&mut dyn FnMut() -> anyhow::Result<Command>> = makers
        .iter_mut()
        .map(|m| m.as_mut() as &mut dyn FnMut() -> anyhow::Result<Command>)
        .collect();
    let samples = side_by_side(runs, &mut makers_ref)?;
    let one_process = samples[0];
    let four_processes_kib: u64 = samples[1..].iter().map(|s| s.max_rss_kib).sum();
    for single in &singles {
        expect_handled(single, quarter)?;
    }
    report.ratio(
        "peak RSS, 4 consumers in one process / 4 processes (sum)",
        format!(
            "{:.2} ({:.1} / {:.1} MiB)",
            one_process.max_rss_kib as f64 / four_processes_kib as f64,
            one_process.max_rss_kib as f64 / 1024.0,
            four_processes_kib as f64 / 1024.0
        ),
        "well under 1",
    );
    report.detail(
        "buslink run --once, 4 consumers in one process",
        one_process,
        quarter * 4,
    );
    report.detail(
        "buslink run --once, one of the 4 single processes",
        samples[1],
        quarter,
    );

    eprintln!("ops: status round trips while consuming...");
    let (p50, p99, count) = status_round_trips(dir, events)?;
    report.ratio(
        &format!("`status` round trip p50 / p99 while consuming at full speed ({count} asked)"),
        format!("{p50:.2} ms / {p99:.2} ms"),
        "p99 < 10 ms",
    );
    Ok(())
}

/// Asks `status` over the control socket, one after the other, while a daemon drains a
/// backlog of 3x `events` at full speed; the p50 and p99 of the round trips (ms) answered
/// before it was done, and how many.
fn status_round_trips(dir: &Path, events: usize) -> anyhow::Result<(f64, f64, usize)> {
    use std::io::{Read, Write};
    let bus = dir.join("status.sqlite");
    if !bus.exists() {
        write_bus(&bus, events * 3)?;
    }
    let config = sqlite_config(dir, "status", &bus, "", "type = \"null\"")?;
    let state = dir.join("state-status");
    let _ = std::fs::remove_dir_all(&state);
    let socket = state.join("buslink.sock");
    let mut child = Command::new(sibling("buslink")?)
        .args(["--log-level", "warn", "run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut delays = Vec::new();
    let result = (|| -> anyhow::Result<()> {
        while !socket.exists() {
            if Instant::now() > deadline {
                bail!("no control socket at {}", socket.display());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        loop {
            if Instant::now() > deadline {
                bail!("the backlog was not drained within 60 s");
            }
            let start = Instant::now();
            let Ok(mut stream) = std::os::unix::net::UnixStream::connect(&socket) else {
                continue;
            };
            stream.write_all(b"status --json status\n")?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer)?;
            let took = start.elapsed().as_secs_f64() * 1000.0;
            let status: serde_json::Value = serde_json::from_str(&answer)?;
            let handled = status["events_handled"].as_u64().unwrap_or(0);
            if status["state"] != "running" {
                continue;
            }
            if handled >= (events * 3) as u64 {
                return Ok(());
            }
            if handled > 0 {
                delays.push(took);
            }
        }
    })();
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let _ = child.wait();
    result?;
    let count = delays.len();
    if count == 0 {
        bail!("no status answered while the daemon consumed");
    }
    let (p50, p99) = percentiles(delays, count)?;
    Ok((p50, p99, count))
}

/// Appends events at 100/s with the current time as their timestamp while a daemon prints them;
/// returns the p50 and p99 of (line read - timestamp), in ms.
fn sqlite_latency(dir: &Path) -> anyhow::Result<(f64, f64)> {
    let bus = dir.join("live.sqlite");
    let writer = {
        if bus.exists() {
            std::fs::remove_file(&bus)?;
        }
        HermesBusWriter::open(&bus)?
    };
    let config = sqlite_config(dir, "live", &bus, "", "type = \"stdout\"")?;
    let _ = std::fs::remove_dir_all(dir.join("state-live"));
    let mut child = Command::new(sibling("buslink")?)
        .args(["--log-level", "warn", "run", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let reader = delays_reader(stdout, &["event", "objattrs", "sent"]);
    std::thread::sleep(Duration::from_millis(300));
    let count = 300;
    for i in 0..count {
        let sent = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs_f64();
        let data = serde_json::json!({"evcategory": "base", "eventtype": "added", "objtype": "Probe", "objpkey": i, "objattrs": {"sent": sent}, "step": 0, "isPartiallyProcessed": false});
        writer.append(&data.to_string(), sent)?;
        std::thread::sleep(Duration::from_millis(10));
    }
    finish_latency(child, reader, count)
}

fn hmb_config(
    dir: &Path,
    name: &str,
    url: &str,
    format: &str,
    queue: &str,
    handler: &str,
) -> anyhow::Result<PathBuf> {
    let state = dir.join(format!("state-{name}"));
    let _ = std::fs::remove_dir_all(&state);
    let text = format!(
        "state_dir = \"{}\"\nplugin_dirs = [\"{}\"]\nstats_interval_s = 0\n\n[consumer]\nname = \"{name}\"\nplugin = \"hmb\"\nclass = \"HmbConsumer\"\ntimeout_ms = 1000\nbatch_size = 1024\n\n[consumer.settings]\nurl = \"{url}\"\nformat = \"{format}\"\nheartbeat = 10\n\n[consumer.settings.queues.A]\n{queue}\n\n[[handlers]]\nname = \"out\"\n{handler}\n",
        state.display(),
        buslink_testkit::build_dir().display(),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text)?;
    Ok(path)
}

fn hmb_part(
    report: &mut Report,
    dir: &Path,
    me: &Path,
    events: usize,
    runs: usize,
) -> anyhow::Result<()> {
    use buslink_hmb_server::{Incoming, Server, Settings};
    let server = Server::start(Settings {
        buffer_size: events + 10,
        ..Settings::for_tests()
    })?;
    let url = server.bus_url("bench");
    // ~300-byte payloads.
    for i in 0..events {
        let data = serde_json::json!({
            "evcategory": "base", "eventtype": "modified", "objtype": "Station",
            "objpkey": i, "objattrs": {"added": {}, "modified": {"latitude": 48.58, "longitude": 7.75,
            "elevation": 142.0, "description": "Strasbourg seismological station, broadband"}, "removed": {}},
            "step": 0, "isPartiallyProcessed": false
        });
        server.publish(
            "bench",
            Incoming::new("EVENT", "A").topic("base").data(data),
        )?;
    }
    let mut details = Vec::new();
    for (format, bson) in [("JSON", false), ("BSON", true)] {
        let window = format!("seq = 0\nendseq = {}\nkeep = false", events - 1);
        let config = hmb_config(
            dir,
            &format!("hmb-{format}"),
            &url,
            &format.to_lowercase(),
            &window,
            "type = \"null\"",
        )?;
        let bare = |client: &str| {
            let mut c = Command::new(me);
            c.args(["bare-hmb", &url, "--client", client]);
            c.args(["--count", &events.to_string()]);
            if bson {
                c.arg("--bson");
            }
            Ok(c)
        };
        let samples = side_by_side(
            runs,
            &mut [
                &mut || buslink_once(&config),
                &mut || bare("reqwest-blocking"),
                &mut || bare("reqwest-current-thread"),
                &mut || bare("ureq"),
            ],
        )?;
        let [host, bare_blocking, bare_current, bare_ureq] = samples[..] else {
            bail!("four runs expected");
        };
        expect_handled(&config, events)?;
        let best_reqwest = bare_blocking.wall.min(bare_current.wall);
        report.ratio(
            &format!("HMB {format}: buslink throughput / bare reqwest /recv loop (the faster of its two)"),
            format!("{:.2}", ratio(best_reqwest, host.wall)),
            ">= 0.9",
        );
        report.ratio(
            &format!("HMB {format}: buslink CPU per message"),
            per_event_range(&host, events),
            if bson { "<= 1.1 us" } else { "<= 1 us" },
        );
        details.push((
            format!("HMB {format}: buslink run --once, null handler"),
            host,
        ));
        details.push((
            format!("HMB {format}: bare /recv loop, reqwest blocking client"),
            bare_blocking,
        ));
        details.push((
            format!("HMB {format}: bare /recv loop, reqwest async client on the current thread"),
            bare_current,
        ));
        details.push((
            format!("HMB {format}: bare /recv loop, ureq (for comparison)"),
            bare_ureq,
        ));
    }
    server.shutdown();
    let latency = hmb_latency(dir)?;
    report.ratio(
        "HMB publish -> handler latency p50 / p99 (100 messages/s)",
        format!("{:.2} ms / {:.2} ms", latency.0, latency.1),
        "p99 < 5 ms",
    );
    for (name, sample) in details {
        report.detail(&name, sample, events);
    }
    Ok(())
}

/// Publishes 300 messages at 100/s (their send time in the data) to an HMB server running as
/// its own process, while a daemon prints them; p50 and p99 of (line read - send time), in ms.
fn hmb_latency(dir: &Path) -> anyhow::Result<(f64, f64)> {
    let mut server = Command::new(sibling("buslink-hmb-server")?)
        .args(["--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut first = String::new();
    BufReader::new(server.stdout.take().context("server stdout")?).read_line(&mut first)?;
    let address = first
        .trim()
        .strip_prefix("listening on ")
        .context("server address")?
        .to_owned();
    let base = format!("http://{address}");
    let result = hmb_latency_with(dir, &base);
    let _ = server.kill();
    let _ = server.wait();
    result
}

fn hmb_latency_with(dir: &Path, base: &str) -> anyhow::Result<(f64, f64)> {
    let client = reqwest::blocking::Client::builder()
        .tcp_nodelay(true)
        .build()?;
    let publish = format!("{base}/_admin/publish/live");
    client
        .post(&publish)
        .body(r#"{"type":"TOUCH","queue":"L"}"#)
        .send()?
        .error_for_status()?;
    let config = hmb_config(
        dir,
        "hmb-live",
        &format!("{base}/live"),
        "bson",
        "seq = -1",
        "type = \"stdout\"",
    )?;
    let text = std::fs::read_to_string(&config)?.replace("queues.A]", "queues.L]");
    std::fs::write(&config, text)?;
    let mut child = Command::new(sibling("buslink")?)
        .args(["--log-level", "info", "run", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let stderr = child.stderr.take().context("stderr")?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("positioned; consuming") {
                let _ = ready_tx.send(());
            }
        }
    });
    let reader = delays_reader(stdout, &["event", "data", "sent"]);
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .context("the HMB daemon did not start")?;
    let count = 300;
    for i in 0..count {
        let message = serde_json::json!({"type": "PROBE", "queue": "L", "data": {"i": i, "sent": now_seconds()}});
        client
            .post(&publish)
            .body(message.to_string())
            .send()?
            .error_for_status()?;
        std::thread::sleep(Duration::from_millis(10));
    }
    finish_latency(child, reader, count)
}

/// Reads event lines from a daemon's stdout; for each, the delay (ms) between now and the send
/// time found at `path` in the line.
fn delays_reader(
    stdout: std::process::ChildStdout,
    path: &'static [&'static str],
) -> std::thread::JoinHandle<Vec<f64>> {
    std::thread::spawn(move || {
        let mut delays = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let now = now_seconds();
            let value: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            let sent = path.iter().fold(&value, |v, key| &v[*key]).as_f64();
            if let Some(sent) = sent {
                delays.push((now - sent) * 1000.0);
            }
        }
        delays
    })
}

/// Lets the last events arrive, stops the daemon, and returns the p50 and p99 of the delays.
fn finish_latency(
    mut daemon: std::process::Child,
    reader: std::thread::JoinHandle<Vec<f64>>,
    count: usize,
) -> anyhow::Result<(f64, f64)> {
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let _ = daemon.wait();
    let delays = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader thread"))?;
    percentiles(delays, count)
}

/// p50 and p99 of `delays`, which must hold one delay per event sent.
fn percentiles(mut delays: Vec<f64>, count: usize) -> anyhow::Result<(f64, f64)> {
    if delays.len() != count {
        bail!("latency: {} of {count} events seen", delays.len());
    }
    delays.sort_by(f64::total_cmp);
    let at = |q: f64| delays[((delays.len() - 1) as f64 * q).round() as usize];
    Ok((at(0.5), at(0.99)))
}

fn now_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

// ---- Kafka ------------------------------------------------------------------------------------

/// Records per Kafka run: the mock cluster keeps about the last 27 000 small records of a
/// partition.
const KAFKA_EVENTS: usize = 25_000;

/// Counts the lines of a growing file, reading only what was appended since the last look.
struct LineCounter {
    path: PathBuf,
    read: u64,
    lines: usize,
}

impl LineCounter {
    fn new(path: &Path) -> LineCounter {
        LineCounter {
            path: path.to_path_buf(),
            read: 0,
            lines: 0,
        }
    }

    fn lines(&mut self) -> usize {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return self.lines;
        };
        if file.seek(SeekFrom::Start(self.read)).is_err() {
            return self.lines;
        }
        let mut buffer = Vec::new();
        if let Ok(n) = file.read_to_end(&mut buffer) {
            self.read += n as u64;
            self.lines += buffer.iter().filter(|b| **b == b'\n').count();
        }
        self.lines
    }
}

/// Starts `buslink run` (`--once` when `once`) on each of `configs` together and returns the
/// wall time from their start to `count` lines in their `outs` together (the last event
/// written), then stops the daemons; a `--once` run must then exit 0 by itself.
fn buslink_until(
    configs: &[PathBuf],
    outs: &[PathBuf],
    count: usize,
    once: bool,
) -> anyhow::Result<Duration> {
    for out in outs {
        let _ = std::fs::remove_file(out);
    }
    let start = Instant::now();
    let mut children = Vec::new();
    for config in configs {
        let mut command = Command::new(sibling("buslink")?);
        command
            .args(["--log-level", "warn", "run", "--config"])
            .arg(config);
        if once {
            command.arg("--once");
        }
        children.push(
            command
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
    }
    let mut counters: Vec<LineCounter> = outs.iter().map(|o| LineCounter::new(o)).collect();
    let result = loop {
        let lines: usize = counters.iter_mut().map(LineCounter::lines).sum();
        if lines >= count {
            break Ok(start.elapsed());
        }
        if start.elapsed() > Duration::from_secs(120) {
            break Err(anyhow::anyhow!("{lines} of {count} lines in 120 s"));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    for child in &mut children {
        if !once {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        }
    }
    for mut child in children {
        let status = child.wait()?;
        if once && !status.success() {
            bail!("buslink run --once exited with {status}");
        }
    }
    result
}

/// A Kafka consumer config: `mode` settings, its jsonl output `out`, a fresh state dir.
fn kafka_config(dir: &Path, name: &str, settings: &str, out: &Path) -> anyhow::Result<PathBuf> {
    let state = dir.join(format!("state-{name}"));
    let _ = std::fs::remove_dir_all(&state);
    let text = format!(
        "state_dir = \"{}\"\nplugin_dirs = [\"{}\"]\nstats_interval_s = 0\n\n[consumer]\nname = \"{name}\"\nplugin = \"kafka\"\nclass = \"KafkaConsumer\"\ntimeout_ms = 200\n\n[consumer.settings]\n{settings}\n\n[[handlers]]\nname = \"out\"\ntype = \"jsonl\"\npath = \"{}\"\n",
        state.display(),
        buslink_testkit::build_dir().display(),
        out.display()
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text)?;
    Ok(path)
}

fn kafka_part(report: &mut Report, dir: &Path, me: &Path, runs: usize) -> anyhow::Result<()> {
    let mut mock = buslink_testkit::KafkaMock::start(1, &[("one", 1), ("two", 2)]);
    mock.command(&format!("produce one {KAFKA_EVENTS}"));
    mock.command(&format!("produce two {KAFKA_EVENTS}"));
    let servers = mock.bootstrap().to_owned();
    let assign = format!("servers = \"{servers}\"\ntopic = \"one\"");
    let bare_out = dir.join("kafka-bare.out");
    let (mut bare, mut once, mut daemon, mut group1, mut group2) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        // Taking turns, so that load from elsewhere falls on every row alike.
        let sample = measure(me_with(
            me,
            &[
                "bare-kafka".as_ref(),
                servers.as_ref(),
                "one".as_ref(),
                KAFKA_EVENTS.to_string().as_ref(),
                bare_out.as_os_str(),
            ],
        ))?;
        bare.push(sample.wall);
        let out = dir.join("kafka-once.jsonl");
        let config = kafka_config(dir, "kafka-once", &assign, &out)?;
        once.push(buslink_until(
            &[config],
            std::slice::from_ref(&out),
            KAFKA_EVENTS,
            true,
        )?);
        if LineCounter::new(&out).lines() != KAFKA_EVENTS {
            bail!("--once wrote {} lines", LineCounter::new(&out).lines());
        }
        let out = dir.join("kafka-daemon.jsonl");
        let config = kafka_config(dir, "kafka-daemon", &assign, &out)?;
        daemon.push(buslink_until(&[config], &[out], KAFKA_EVENTS, false)?);
        // A new group each run: it starts at the oldest records.
        let group = |member: &str| {
            format!(
                "servers = \"{servers}\"\nmode = \"group\"\ntopics = [\"two\"]\n\
                 group_id = \"bench-{run}-{member}\""
            )
        };
        let out = dir.join("kafka-group1.jsonl");
        let config = kafka_config(dir, "kafka-group1", &group("one"), &out)?;
        group1.push(buslink_until(&[config], &[out], KAFKA_EVENTS, false)?);
        let outs = [
            dir.join("kafka-group2a.jsonl"),
            dir.join("kafka-group2b.jsonl"),
        ];
        let configs = [
            kafka_config(dir, "kafka-group2a", &group("two"), &outs[0])?,
            kafka_config(dir, "kafka-group2b", &group("two"), &outs[1])?,
        ];
        group2.push(buslink_until(&configs, &outs, KAFKA_EVENTS, false)?);
    }
    fn median(mut values: Vec<Duration>) -> Duration {
        values.sort();
        values[values.len() / 2]
    }
    fn spread(values: &[Duration]) -> String {
        let min = values.iter().min().copied().unwrap_or_default();
        let max = values.iter().max().copied().unwrap_or_default();
        format!("{:.2}-{:.2} s", min.as_secs_f64(), max.as_secs_f64())
    }
    let (m_bare, m_once, m_daemon, m_group1, m_group2) = (
        median(bare.clone()),
        median(once.clone()),
        median(daemon.clone()),
        median(group1.clone()),
        median(group2.clone()),
    );
    report.ratio(
        "Kafka assign mode, daemon throughput / bare rdkafka loop (start to last line written)",
        format!("{:.2}", ratio(m_bare, m_daemon)),
        ">= 0.9",
    );
    // About half the runs of every program (the bare loop too) wait ~0.1 s more for their
    // first records on the mock cluster; the fastest runs compare the programs without it.
    let fastest = |values: &[Duration]| values.iter().min().copied().unwrap_or_default();
    report.ratio(
        "Kafka assign mode, daemon / bare loop, fastest run of each (no first-fetch wait)",
        format!("{:.2}", ratio(fastest(&bare), fastest(&daemon))),
        "reported",
    );
    report.ratio(
        "Kafka assign mode, `--once` time / daemon time",
        format!("{:.2}", ratio(m_once, m_daemon)),
        "<= 1.2",
    );
    report.ratio(
        "Kafka group mode, 2 members / 1 member time (2 cores shared with the mock cluster)",
        format!("{:.2}", ratio(m_group2, m_group1)),
        "reported",
    );
    for (name, median, all) in [
        (
            "Kafka bare rdkafka BaseConsumer loop (assign)",
            m_bare,
            &bare,
        ),
        ("Kafka buslink daemon (assign)", m_daemon, &daemon),
        ("Kafka buslink --once (assign)", m_once, &once),
        ("Kafka buslink group, 1 member", m_group1, &group1),
        ("Kafka buslink group, 2 members", m_group2, &group2),
    ] {
        report.details.push(format!(
            "| {name} | {:.3} s ({}) | {} | | | |",
            median.as_secs_f64(),
            spread(all),
            rate(median, KAFKA_EVENTS)
        ));
    }
    Ok(())
}
