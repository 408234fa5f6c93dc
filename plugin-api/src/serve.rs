//! A consumer class served as a plugin executable over the subprocess protocol
//! ([`wire`](crate::wire); docs/subprocess-protocol.md): the same `Consumer` /
//! `ConsumerClass` code that builds as a `cdylib` runs as its own process with one call in a
//! `main`:
//!
//! ```ignore
//! fn main() -> std::process::ExitCode {
//!     buslink_plugin_api::serve::serve_stdio::<MyConsumer>("my-bus", env!("CARGO_PKG_VERSION"))
//! }
//! ```
//!
//! The consumer is built through the same export shim as a library's (panics contained, the
//! consumer refused after one). Frames go out on the process's real standard output only:
//! anything else the plugin's code prints there is sent to standard error instead, so a stray
//! `println!` never corrupts the protocol. Log lines (`buslink_plugin_api::log`) go to standard
//! error as `[Level] message`, where the host takes them into its log.

use crate::ffi::{class_consumer, ConsumerBox, ROffset};
use crate::offset::Offset;
use crate::wire::{
    read_frame, write_frame_with, ClassInfo, FrameError, Hello, Op, Outcome, PluginName, Reply,
    Request, WireError, PROTOCOL,
};
use crate::{ConsumerClass, EventBatch, PluginError};
use abi_stable::std_types::{RResult, RSlice, RString};
use serde_json::value::RawValue;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::ExitCode;

/// Every optional operation: a served class implements them all (the trait's defaults are the
/// class's own).
const CAPABILITIES: [&str; 13] = [
    "seek_to_end",
    "seek_after",
    "next_offset",
    "set_stop_when_drained",
    "find_next_event_of_category",
    "check_position",
    "lag",
    "held_up",
    "counters",
    "query",
    "bus_owns_position",
    "acknowledge",
    "serve",
];

/// Serves class `C` on standard input and output until the host says `bye` or closes the pipe
/// (exit 0), or a frame cannot be read or written (exit 2, the reason on standard error).
pub fn serve_stdio<C: ConsumerClass>(plugin: &'static str, version: &'static str) -> ExitCode {
    // The frames' own descriptor; descriptor 1 now points at standard error.
    let frames = match private_stdout() {
        Ok(fd) => std::fs::File::from(fd),
        Err(error) => {
            eprintln!("{plugin}: cannot set up the protocol's output: {error}");
            return ExitCode::from(2);
        }
    };
    let mut input = BufReader::new(std::io::stdin().lock());
    let mut output = BufWriter::new(frames);
    match serve::<C>(plugin, version, &mut input, &mut output) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{plugin}: {error}");
            ExitCode::from(2)
        }
    }
}

/// A descriptor for the real standard output, with descriptor 1 sent to standard error.
fn private_stdout() -> std::io::Result<OwnedFd> {
    // SAFETY: dup and dup2 on the process's own standard descriptors; the duplicate is owned
    // by the returned value alone.
    unsafe {
        // Close-on-exec: a helper process the plugin starts never holds the host's pipe.
        let copy = libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3);
        if copy < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::dup2(2, 1) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(copy))
    }
}

/// Serves class `C` on `input` and `output` (frames), until `bye` or the end of `input`.
pub fn serve<C: ConsumerClass>(
    plugin: &'static str,
    version: &'static str,
    input: &mut impl Read,
    output: &mut impl Write,
) -> Result<(), FrameError> {
    let mut buffer = Vec::new();
    let mut consumer: Option<ConsumerBox> = None;
    let mut batch = EventBatch::new(1, 1);
    // The bodies of the batch in the reply: the frame's body section.
    let mut section = Vec::new();
    loop {
        let request: Request = match read_frame(input, &mut buffer) {
            Ok(request) => request,
            Err(FrameError::Closed) => return Ok(()),
            Err(error) => return Err(error),
        };
        let bye = request.op == Op::Bye;
        section.clear();
        let answered = answer::<C>(
            plugin,
            version,
            request.op,
            &mut consumer,
            &mut batch,
            &mut section,
        );
        // A batch whose bodies would not fit a frame: said for the event, not a dead plugin.
        let answered = answered.and_then(|value| {
            let size = value.get().len() + section.len() + 8;
            if size > crate::wire::MAX_FRAME {
                section.clear();
                let first = batch.iter().next().map(|e| e.offset.to_string());
                return Err(PluginError::data(format!(
                    "a batch of {size} bytes (from the event at offset {}) does not fit the \
                     protocol's frame of {} bytes: an event too large for a subprocess plugin",
                    first.unwrap_or_else(|| "?".into()),
                    crate::wire::MAX_FRAME
                )));
            }
            Ok(value)
        });
        let outcome = match answered {
            Ok(value) => Outcome::Ok(value),
            Err(error) => Outcome::Error(WireError {
                kind: crate::wire::kind_name(error.kind()).to_owned(),
                message: error.message().to_owned(),
                key: error.key().map(str::to_owned),
            }),
        };
        write_frame_with(output, &Reply::new(request.id, outcome), &section)?;
        if bye {
            return Ok(());
        }
    }
}

fn plain<T>(result: RResult<T, crate::ffi::RPluginError>) -> Result<T, PluginError> {
    result.into_result().map_err(Into::into)
}

fn to_json<T: serde::Serialize>(value: T) -> Result<Box<RawValue>, PluginError> {
    serde_json::value::to_raw_value(&value).map_err(|e| PluginError::internal(e.to_string()))
}

fn answer<C: ConsumerClass>(
    plugin: &'static str,
    version: &'static str,
    op: Op,
    consumer: &mut Option<ConsumerBox>,
    batch: &mut EventBatch,
    section: &mut Vec<u8>,
) -> Result<Box<RawValue>, PluginError> {
    match op {
        Op::Hello { protocol, .. } => {
            let chosen = PROTOCOL.highest_common(protocol).ok_or_else(|| {
                PluginError::protocol(format!(
                    "plugin '{plugin}' speaks subprocess protocol {PROTOCOL}, the host {protocol}: \
                     no version in common"
                ))
            })?;
            to_json(Hello {
                protocol: PROTOCOL,
                chosen,
                plugin: PluginName {
                    name: plugin.into(),
                    version: version.into(),
                },
                classes: vec![ClassInfo {
                    name: C::NAME.into(),
                    description: C::DESCRIPTION.into(),
                    settings_doc: C::SETTINGS_DOC.into(),
                }],
                capabilities: CAPABILITIES.iter().map(|c| (*c).to_owned()).collect(),
            })
        }
        Op::NewConsumer {
            class,
            settings,
            config_dir,
        } => {
            if class != C::NAME {
                return Err(PluginError::config(format!(
                    "plugin '{plugin}' has no class '{class}' (it has: {})",
                    C::NAME
                ))
                .with_key("class"));
            }
            let built = class_consumer::<C>(
                &settings.to_string(),
                std::path::Path::new(&config_dir),
                plugin,
            )?;
            *consumer = Some(built);
            to_json(())
        }
        Op::Bye => to_json(()),
        op => {
            let Some(consumer) = consumer.as_mut() else {
                return Err(PluginError::protocol(
                    "a consumer operation before new_consumer",
                ));
            };
            call(consumer, op, batch, section)
        }
    }
}

fn call(
    consumer: &mut ConsumerBox,
    op: Op,
    batch: &mut EventBatch,
    section: &mut Vec<u8>,
) -> Result<Box<RawValue>, PluginError> {
    let null = to_json(());
    match op {
        Op::Open => plain(consumer.open()).and(null),
        Op::Close => plain(consumer.close()).and(null),
        Op::SeekToBeginning => plain(consumer.seek_to_beginning()).and(null),
        Op::SeekToEnd => plain(consumer.seek_to_end()).and(null),
        Op::Seek { offset } => plain(consumer.seek(&ROffset::from(&offset))).and(null),
        Op::SeekAfter { offset } => plain(consumer.seek_after(&ROffset::from(&offset))).and(null),
        Op::NextOffset { offset } => {
            let next: Option<Offset> = consumer
                .next_offset(&ROffset::from(&offset))
                .into_option()
                .map(|next| Offset::from(&next));
            to_json(next)
        }
        Op::SetTimeout { timeout_ms, .. } => {
            plain(consumer.set_timeout(timeout_ms.into())).and(null)
        }
        Op::SetStopWhenDrained { stop } => plain(consumer.set_stop_when_drained(stop)).and(null),
        Op::Poll {
            max_events,
            max_bytes,
        } => {
            if batch.max_events() != max_events.max(1) || batch.max_bytes() != max_bytes.max(1) {
                *batch = EventBatch::new(max_events, max_bytes);
            }
            batch.clear();
            let status = plain(consumer.poll(batch))?;
            to_json(crate::wire::encode_batch(
                crate::wire::status_name(status),
                batch,
                section,
            ))
        }
        Op::FindNextEventOfCategory { category } => {
            let mut found = EventBatch::new(1, usize::MAX);
            let any =
                plain(consumer.find_next_event_of_category(category.as_str().into(), &mut found))?;
            let status = if any { "ready" } else { "idle" };
            to_json(crate::wire::encode_batch(status, &found, section))
        }
        Op::CheckPosition {
            offset,
            timestamp_us,
        } => plain(consumer.check_position(&ROffset::from(&offset), timestamp_us)).and(null),
        Op::Lag => to_json(consumer.lag().into_option()),
        Op::HeldUp => to_json(consumer.held_up().into_option().map(RString::into_string)),
        Op::Counters => {
            let counters: Vec<(String, u64)> = consumer
                .counters()
                .into_iter()
                .map(|pair| (pair.0.into_string(), pair.1))
                .collect();
            to_json(counters)
        }
        Op::Query { command, args } => {
            let args: Vec<RString> = args.into_iter().map(RString::from).collect();
            let text = plain(consumer.query(command.as_str().into(), RSlice::from_slice(&args)))?;
            to_json(text.into_string())
        }
        Op::BusOwnsPosition => to_json(consumer.bus_owns_position()),
        Op::Acknowledge { offset } => {
            plain(consumer.acknowledge(&ROffset::from(&offset))).and(null)
        }
        Op::Serve => plain(consumer.serve()).and(null),
        Op::Hello { .. } | Op::NewConsumer { .. } | Op::Bye => Err(PluginError::protocol(
            "hello, new_consumer and bye are not consumer operations",
        )),
    }
}
