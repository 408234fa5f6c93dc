//! An in-repo HMB (httpmsgbus) server for buslink's tests.
//!
//! It speaks the protocol of the reference server httpmsgbus v0.16 (RAM
//! mode) as described in `docs/hmb-protocol.md`: buses and queues
//! created on demand, `/features`, `/open`, `/send`, `/recv`, `/stream`,
//! `/info`, `/status`, JSON and BSON framing, topics, filters, windows, the
//! continuity rule, heartbeats, session expiry and the per-IP limit. On top
//! of that, tests can inject faults ([`Faults`]), restart the server and
//! publish messages directly, in process or through `/_admin` (see
//! [`admin`]).
//!
//! ```no_run
//! use buslink_hmb_server::{Incoming, Server, Settings};
//!
//! let server = Server::start(Settings::for_tests()).expect("server starts");
//! server
//!     .publish("test", Incoming::new("NOTICE", "ALERTS").data(serde_json::json!({"n": 1})))
//!     .expect("valid message");
//! println!("bus at {}", server.bus_url("test"));
//! server.shutdown();
//! ```
#![deny(missing_docs)]

pub mod admin;
pub mod body;
pub mod bus;
pub mod faults;
pub mod filter;
pub mod framing;
pub mod gojson;
pub mod http;
pub mod hub;
pub mod message;
pub mod params;
pub mod queue;
pub mod recv;
pub mod server;
pub mod session;
pub mod settings;
pub mod time;
pub mod topics;

pub use bus::SessionSummary;
pub use faults::{Endpoint, FaultAction, FaultEntry, FaultId, FaultRule, Faults};
pub use message::{Incoming, Message};
pub use server::{PublishError, RunningServer, Server, StartError};
pub use settings::{BasicAuth, Settings};
