//! How long a consumer waits before it tries a bus that failed again: the pipeline's
//! reconnections and the Hermes bootstrap's look for an initsync sequence alike. The wait
//! starts at [`INITIAL`] and doubles at each failure in a row, up to [`MAX`].

use std::time::Duration;

/// The first wait after a transient error of the bus.
pub const INITIAL: Duration = Duration::from_millis(200);

/// The longest wait.
pub const MAX: Duration = Duration::from_secs(30);
