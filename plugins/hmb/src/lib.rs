//! The HMB (httpmsgbus) consumer plugin: reads queues of an HMB bus over HTTP.
//!
//! - `open` reads `/features` and refuses settings the server cannot serve (BSON, STREAM,
//!   WINDOW, FILTER); the positioning call opens the session (`/open`), per-queue errors name
//!   the queue.
//! - A background thread ([`fetcher`]) runs `/recv` (or `/stream`) with the continuity suffix,
//!   frames and parses each answer while the host handles the previous one (at most a couple of
//!   answers in flight), re-opens without loss or repetition on any failure, and reports gaps.
//! - Offsets: one queue, the seq (`Int`); several queues, `"A=42,B=17"` (every queue's next seq
//!   after the event, see [`offset`]).
//! - Bodies: the message `data` when it is a Hermes event, else the whole message as JSON
//!   (BSON mapped as documented in [`message`]); a BSON body that cannot be converted to JSON
//!   (a string that is not UTF-8, ...) is delivered as its BSON bytes, counted and logged.
#![deny(missing_docs)]

pub mod bson_json;
pub mod bson_scan;
pub mod client;
mod consumer;
pub mod fetcher;
pub mod framing;
pub mod json_scan;
pub mod message;
pub mod offset;
pub mod settings;
pub mod spares;

pub use consumer::HmbConsumer;
pub use settings::HmbSettings;

buslink_plugin_api::export_plugin! {
    name: "hmb",
    version: env!("CARGO_PKG_VERSION"),
    consumers: [HmbConsumer],
}
