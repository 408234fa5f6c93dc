//! The subcommands of `buslink`, one thin module each over the engine and the daemon crates;
//! no command imports another.

pub mod check;
pub mod ctl;
pub mod docs;
pub mod errors;
pub mod offsets;
pub mod plugins;
pub mod query;
pub mod replay;
pub mod top;
/// `buslink run`: the daemon (the daemon crate's `start::run`).
pub mod run {
    pub use buslink_daemon::start::run;
}
