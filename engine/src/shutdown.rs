//! SIGINT/SIGTERM: the first one asks for a clean stop; a second one exits at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A stop request shared by the threads of the daemon. A [`child`](Shutdown::child) sees its
/// parent's request and has one of its own: one consumer's pipeline stops itself (after an
/// error) without stopping the others.
#[derive(Clone, Default)]
pub struct Shutdown {
    requested: Arc<AtomicBool>,
    /// The flags of its parents (the process's first).
    parents: Vec<Arc<AtomicBool>>,
}

impl Shutdown {
    /// Installs handlers for SIGINT and SIGTERM.
    pub fn install() -> std::io::Result<Shutdown> {
        let shutdown = Shutdown::default();
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            // A second signal while the first is being honoured ends the process (exit 1).
            signal_hook::flag::register_conditional_shutdown(
                signal,
                1,
                Arc::clone(&shutdown.requested),
            )?;
            signal_hook::flag::register(signal, Arc::clone(&shutdown.requested))?;
        }
        Ok(shutdown)
    }

    /// Whether a stop was asked for (of this one, or of its parent).
    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
            || self
                .parents
                .iter()
                .any(|parent| parent.load(Ordering::SeqCst))
    }

    /// A stop request of its own that also follows this one's (and its parents').
    pub fn child(&self) -> Shutdown {
        let mut parents = self.parents.clone();
        parents.push(self.requested.clone());
        Shutdown {
            requested: Arc::new(AtomicBool::new(false)),
            parents,
        }
    }

    /// Asks for a stop (as a signal would).
    pub fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
    }

    /// Sleeps up to `duration`, waking early when a stop is asked for; `false` if it was.
    pub fn sleep(&self, duration: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + duration;
        while !self.requested() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(std::time::Duration::from_millis(50)));
        }
        false
    }
}
