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
    /// Installs handlers for SIGINT and SIGTERM, heard on a thread of their own: the first
    /// asks for a stop; a second one (a stop taking too long for whoever sent it) logs why the
    /// process ends now, kills the commands handlers run (their process groups:
    /// [`crate::children`]) and exits 1. The event in hand is not committed: it comes again at
    /// the next start.
    pub fn install() -> std::io::Result<Shutdown> {
        let shutdown = Shutdown::default();
        let mut signals = signal_hook::iterator::Signals::new([
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
        ])?;
        let requested = Arc::clone(&shutdown.requested);
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    let name = if signal == signal_hook::consts::SIGINT {
                        "SIGINT"
                    } else {
                        "SIGTERM"
                    };
                    if !requested.swap(true, Ordering::SeqCst) {
                        continue;
                    }
                    let killed = crate::children::kill_all();
                    tracing::error!(
                        "a second {name} during the stop: exiting at once (exit 1) without \
                         finishing the event in hand, which is not committed and comes again \
                         at the next start; {killed} handler command(s) killed with their \
                         process groups"
                    );
                    std::process::exit(1);
                }
            })?;
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
