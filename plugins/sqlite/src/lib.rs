//! The Hermes sqlite bus consumer: reads the `hermesmessages` table that the Hermes server's
//! sqlite bus producer writes.
//!
//! - Read-only, and never holds a read transaction between polls (the producer must be able to
//!   write, purge and `VACUUM` at any time).
//! - Streams: each poll reads at most one batch of rows, so memory stays bounded whatever the
//!   backlog.
//! - Offsets are `msgid` (integers); `seek(o)` accepts `min(msgid) <= o <= last allocated + 1`,
//!   like the Hermes plugin. A missing file or a table never written is an empty bus: the
//!   consumer waits for it.

mod bus;
mod consumer;

pub use consumer::{SqliteConsumer, SqliteSettings};

buslink_plugin_api::export_plugin! {
    name: "sqlite",
    version: env!("CARGO_PKG_VERSION"),
    consumers: [SqliteConsumer],
}
