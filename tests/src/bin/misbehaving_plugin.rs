//! `buslink-misbehaving-plugin`: a plugin executable that speaks the subprocess protocol by
//! hand (plugin-api's `wire` types, not its `serve` loop) and misbehaves on demand, for the
//! host's isolation tests. Its bus: three events (offsets 0, 1, 2, category `base`), then idle.
//!
//! ```text
//! buslink-misbehaving-plugin [--protocol MIN MAX] [--garbage-at OP] [--exit-at OP CODE]
//!                            [--noisy-stderr]
//! ```
//!
//! `--protocol`: the versions it announces (default: the host's). `--garbage-at OP`: answers
//! operation OP (`open`, `poll`, ...) with a line of text instead of a frame. `--exit-at OP
//! CODE`: exits with CODE when asked OP. `--noisy-stderr`: at `open`, writes bytes that are not
//! UTF-8, a 100 KiB line and 500 short lines on standard error before it answers.

use buslink_plugin_api::wire::{
    encode_batch, read_frame, write_frame_with, ClassInfo, FrameError, Hello, Op, Outcome,
    PluginName, Reply, Request, VersionRange, WireError, PROTOCOL,
};
use buslink_plugin_api::{Body, Event, EventBatch, OffsetRef};
use serde_json::value::{to_raw_value, RawValue};
use std::io::Write;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut protocol = PROTOCOL;
    let mut garbage_at = None;
    let mut exit_at = None;
    let mut noisy = false;
    let mut rest = args.as_slice();
    while let Some((flag, tail)) = rest.split_first() {
        match (flag.as_str(), tail) {
            ("--protocol", [min, max, tail @ ..]) => {
                protocol = VersionRange {
                    min: min.parse().unwrap_or(0),
                    max: max.parse().unwrap_or(0),
                };
                rest = tail;
            }
            ("--garbage-at", [op, tail @ ..]) => {
                garbage_at = Some(op.clone());
                rest = tail;
            }
            ("--noisy-stderr", tail) => {
                noisy = true;
                rest = tail;
            }
            ("--exit-at", [op, code, tail @ ..]) => {
                exit_at = Some((op.clone(), code.parse::<i32>().unwrap_or(1)));
                rest = tail;
            }
            _ => {
                eprintln!("[Error] unknown arguments {rest:?}");
                std::process::exit(2);
            }
        }
    }
    let mut input = std::io::stdin().lock();
    let mut output = std::io::stdout().lock();
    let mut buffer = Vec::new();
    let mut next = 0i64;
    loop {
        let request: Request = match read_frame(&mut input, &mut buffer) {
            Ok(request) => request,
            Err(FrameError::Closed) => return,
            Err(error) => {
                eprintln!("[Error] {error}");
                std::process::exit(2);
            }
        };
        let name = serde_json::to_value(&request.op)
            .ok()
            .and_then(|v| v["op"].as_str().map(str::to_owned))
            .unwrap_or_default();
        if let Some((_, code)) = exit_at.as_ref().filter(|(op, _)| *op == name) {
            eprintln!("[Warn] exiting at {name} as asked");
            std::process::exit(*code);
        }
        if noisy && name == "open" {
            let mut errors = std::io::stderr().lock();
            // A plugin whose log pipe is closed dies (SIGPIPE for most languages): so does
            // this one, with status 9, at the first write that fails.
            let mut say = |bytes: &[u8]| {
                if errors
                    .write_all(bytes)
                    .and_then(|()| errors.flush())
                    .is_err()
                {
                    std::process::exit(9);
                }
            };
            say(b"[Warn] \xff\xfe not UTF-8\n");
            say(&vec![b'x'; 100 << 10]);
            say(b"\n");
            for n in 0..500 {
                say(format!("[Info] line {n}\n").as_bytes());
            }
        }
        if garbage_at.as_deref() == Some(name.as_str()) {
            let _ = output.write_all(b"hello world\n");
            let _ = output.flush();
            continue;
        }
        let ok = |value: Box<RawValue>| Outcome::Ok(value);
        let null = || to_raw_value(&()).expect("null is JSON");
        // The bodies of a poll's events: the frame's body section.
        let mut section = Vec::new();
        let outcome = match request.op {
            Op::Hello { protocol: host, .. } => match protocol.highest_common(host) {
                Some(chosen) => ok(to_raw_value(&Hello {
                    protocol,
                    chosen,
                    plugin: PluginName {
                        name: "misbehaving".into(),
                        version: "0.0.1".into(),
                    },
                    classes: vec![ClassInfo {
                        name: "Misbehaving".into(),
                        description: "misbehaves on demand".into(),
                        settings_doc: String::new(),
                    }],
                    capabilities: Vec::new(),
                })
                .unwrap_or_else(|_| null())),
                None => Outcome::Error(WireError {
                    kind: "protocol".into(),
                    message: format!("this plugin speaks {protocol}, the host {host}"),
                    key: None,
                }),
            },
            Op::Seek { offset } => {
                next = offset.as_int().unwrap_or(0);
                ok(null())
            }
            Op::SeekToBeginning => {
                next = 0;
                ok(null())
            }
            Op::Poll { max_events, .. } => {
                let mut batch = EventBatch::new(max_events, usize::MAX);
                for at in (next..3).take(max_events) {
                    let body = format!("{{\"n\":{at}}}");
                    batch.push(Event {
                        offset: OffsetRef::Int(at),
                        timestamp: chrono::DateTime::from_timestamp_micros(
                            1_700_000_000_000_000 + at,
                        )
                        .unwrap_or_default(),
                        category: "base",
                        body: Body::Json(&body),
                    });
                }
                next += batch.len() as i64;
                let status = if batch.is_empty() { "idle" } else { "ready" };
                ok(to_raw_value(&encode_batch(status, &batch, &mut section))
                    .unwrap_or_else(|_| null()))
            }
            _ => ok(null()),
        };
        if write_frame_with(&mut output, &Reply::new(request.id, outcome), &section).is_err() {
            return;
        }
    }
}
