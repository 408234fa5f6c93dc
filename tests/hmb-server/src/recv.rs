//! The producer behind `/recv` and `/stream`: pulls messages for a session
//! and writes them, with the reference server's long-poll and heartbeat
//! rules:
//!
//! 1. take the next eligible message of any subscription; write it; for
//!    /recv stop once the bytes written reach recv_limit; otherwise go on;
//! 2. if nothing is ready: write a HEARTBEAT if the tick fell since the last
//!    check; then if anything was written, /recv finishes (/stream flushes);
//!    else wait for a push, the tick, or the client leaving;
//! 3. when every subscription has ended, write EOF and finish.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::bus::{Bus, SessionGuard};
use crate::faults::Faults;
use crate::framing::{Format, JsonList};
use crate::hub::Hub;
use crate::message::{Message, EOF, HEARTBEAT};
use crate::session::Next;

/// Default recv_limit (KB) when the session asked for none.
pub const DEFAULT_RECV_LIMIT_KB: u64 = 1024;

/// A fault that strikes in the middle of the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MidFault {
    /// Cut the connection while writing item `after` (0-based).
    Drop {
        /// Complete items before the cut.
        after: usize,
    },
    /// Stop writing before item `after` for a while.
    Stall {
        /// Complete items before the stall.
        after: usize,
        /// Milliseconds; forever (until released) when `None`.
        ms: Option<u64>,
    },
}

impl MidFault {
    fn after(self) -> usize {
        match self {
            MidFault::Drop { after } | MidFault::Stall { after, .. } => after,
        }
    }
}

/// Everything a producer needs.
pub struct Producer {
    /// The session's bus.
    pub bus: Arc<Bus>,
    /// Keeps the session active; released when the producer ends.
    pub guard: SessionGuard,
    /// Session format.
    pub format: Format,
    /// /stream (never finishes) rather than /recv.
    pub streaming: bool,
    /// Heartbeat interval in seconds (0 = none).
    pub heartbeat: u64,
    /// recv_limit in KB as requested (0 = default).
    pub recv_limit_kb: i64,
    /// A fault to strike mid-response.
    pub fault: Option<MidFault>,
    /// For stalls.
    pub faults: Arc<Faults>,
    /// For shutdown.
    pub hub: Arc<Hub>,
}

type Tx = mpsc::Sender<Result<Bytes, io::Error>>;

/// The connection went away (or must be cut).
struct Gone;

struct Output {
    format: Format,
    list: JsonList,
    buf: Vec<u8>,
    items: usize,
    written: u64,
    tx: Tx,
    bus: Arc<Bus>,
    sid: String,
}

impl Output {
    fn frame(&mut self, m: &Message) -> Option<Vec<u8>> {
        match self.format {
            Format::Json => m.to_json().ok().map(|j| self.list.item(&j).into_bytes()),
            Format::Bson => Some(m.to_bson_bytes()),
        }
    }

    fn push(&mut self, bytes: &[u8], item: bool) {
        self.buf.extend_from_slice(bytes);
        self.written += bytes.len() as u64;
        if item {
            self.items += 1;
        }
    }

    async fn flush(&mut self) -> Result<(), Gone> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        let n = chunk.len() as u64;
        if let Some(s) = self.bus.lock().sessions.get_mut(&self.sid) {
            s.received += n;
        }
        self.tx.send(Ok(chunk)).await.map_err(|_| Gone)
    }

    async fn close(&mut self) -> Result<(), Gone> {
        if self.format == Format::Json {
            let close = self.list.close();
            self.push(close.as_bytes(), false);
        }
        self.flush().await
    }

    /// Writes the first half of an item, then cuts the connection.
    async fn tear(&mut self, item: Option<Vec<u8>>) {
        if let Some(item) = item {
            let half = item.len() / 2;
            self.push(&item[..half], false);
        }
        if self.flush().await.is_ok() {
            let _ = self
                .tx
                .send(Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "fault injection: connection dropped mid-response",
                )))
                .await;
        }
    }
}

impl Producer {
    /// Runs the loop, writing into `tx`, until the response is complete, the
    /// client leaves, or the session disappears (restart).
    pub async fn run(mut self, tx: Tx) {
        let sid = self.guard.sid().to_owned();
        let mut out = Output {
            format: self.format,
            list: JsonList::default(),
            buf: Vec::new(),
            items: 0,
            written: 0,
            tx,
            bus: Arc::clone(&self.bus),
            sid: sid.clone(),
        };
        let limit = match u64::try_from(self.recv_limit_kb) {
            Ok(kb) if kb > 0 => kb,
            _ => DEFAULT_RECV_LIMIT_KB,
        } * 1024;
        let beat = (self.heartbeat > 0).then(|| Duration::from_secs(self.heartbeat));
        let mut next_beat = beat.map(|d| Instant::now() + d);
        let mut changes = self.bus.subscribe();
        let mut drained_since_flush = false;

        loop {
            changes.borrow_and_update();
            let next = {
                let mut st = self.bus.lock();
                let st = &mut *st;
                st.sessions
                    .get_mut(&sid)
                    .map(|s| s.next(&st.queues, Instant::now().into_std()))
            };
            let Some(next) = next else {
                // The session is gone (restart): cut the response.
                out.tear(None).await;
                return;
            };
            match next {
                Next::Message(m) => {
                    let Some(item) = out.frame(&m) else {
                        continue; // not encodable in JSON (NaN): skipped
                    };
                    if self.strike(&mut out, Some(item.clone())).await.is_err() {
                        return;
                    }
                    out.push(&item, true);
                    drained_since_flush = true;
                    if !self.streaming && out.written >= limit {
                        self.finish(&mut out).await;
                        return;
                    }
                    if out.buf.len() >= 64 * 1024 && out.flush().await.is_err() {
                        return;
                    }
                }
                Next::Eof => {
                    let item = out.frame(&Message::control(EOF));
                    if self.strike(&mut out, item.clone()).await.is_err() {
                        return;
                    }
                    if let Some(item) = item {
                        out.push(&item, true);
                    }
                    self.finish(&mut out).await;
                    return;
                }
                Next::Wait(wake) => {
                    let now = Instant::now();
                    if let (Some(at), Some(d)) = (next_beat, beat) {
                        if at <= now {
                            let item = out.frame(&Message::control(HEARTBEAT));
                            if self.strike(&mut out, item.clone()).await.is_err() {
                                return;
                            }
                            if let Some(item) = item {
                                out.push(&item, true);
                            }
                            drained_since_flush = true;
                            next_beat = Some(now + d);
                        }
                    }
                    if drained_since_flush {
                        if !self.streaming {
                            self.finish(&mut out).await;
                            return;
                        }
                        if out.flush().await.is_err() {
                            return;
                        }
                        drained_since_flush = false;
                    }
                    if self.hub.is_shutting_down() {
                        self.finish(&mut out).await;
                        return;
                    }
                    let beat_sleep = sleep_until(next_beat);
                    let wake_sleep = sleep_until(wake.map(Instant::from_std));
                    tokio::select! {
                        _ = changes.changed() => {}
                        _ = beat_sleep => {}
                        _ = wake_sleep => {}
                        _ = out.tx.closed() => return,
                    }
                }
            }
        }
    }

    /// Ends the response: closes it, or cuts it if a drop fault is still
    /// pending (the response ended before reaching its item count).
    async fn finish(&mut self, out: &mut Output) {
        if let Some(MidFault::Drop { .. }) = self.fault.take() {
            out.tear(None).await;
        } else {
            let _ = out.close().await;
        }
    }

    /// Applies the mid-response fault if it is due before the next item.
    async fn strike(&mut self, out: &mut Output, item: Option<Vec<u8>>) -> Result<(), Gone> {
        let Some(fault) = self.fault else {
            return Ok(());
        };
        if out.items < fault.after() {
            return Ok(());
        }
        self.fault = None;
        match fault {
            MidFault::Drop { .. } => {
                out.tear(item).await;
                Err(Gone)
            }
            MidFault::Stall { ms, .. } => {
                out.flush().await?;
                tokio::select! {
                    _ = self.faults.stall(ms) => Ok(()),
                    _ = out.tx.closed() => Err(Gone),
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
