//! `type = "stdout"`: one JSON line per event on standard output.

use super::{DispatchedEvent, Handler, HandlerError};
use std::io::{BufWriter, Stdout, Write};

pub(super) struct StdoutHandler {
    out: BufWriter<Stdout>,
}

impl StdoutHandler {
    pub(super) fn new() -> Self {
        StdoutHandler {
            out: BufWriter::with_capacity(64 * 1024, std::io::stdout()),
        }
    }
}

impl Handler for StdoutHandler {
    fn handle(&mut self, event: &DispatchedEvent<'_>) -> Result<(), HandlerError> {
        self.out
            .write_all(event.line())
            .map_err(|e| HandlerError::new(format!("writing to stdout: {e}")))
    }

    fn flush(&mut self) -> Result<(), HandlerError> {
        self.out
            .flush()
            .map_err(|e| HandlerError::new(format!("writing to stdout: {e}")))
    }
}
