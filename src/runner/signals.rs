//! SIGINT and SIGTERM as one stream the engine reads, in its own file so the
//! only code that knows Unix signals is easy to find.
//!
//! A run that queues for a lock waits before the engine's runtime exists:
//! [`heard_early`] makes a signal then a flag the wait looks at (without it
//! the default action killed the waiting process, which left its journal
//! behind), and [`signals`] hands one that came before the stream existed
//! on to the engine.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A flag raised by SIGINT or SIGTERM from now on (registration can fail
/// only for a signal that cannot be caught; then the default action stays).
pub(super) fn heard_early() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(sig, flag.clone());
    }
    flag
}

/// The signals of the run, starting with one [`heard_early`] caught. The
/// flag is looked at once the stream listens, so no signal falls between
/// the two; one that comes just then counts twice, which before the first
/// step starts ends the run the same way (interrupted, nothing ran).
pub(super) fn signals(early: Option<&AtomicBool>) -> crate::engine::Signals {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    use tokio::signal::unix::{signal, SignalKind};
    for kind in [SignalKind::interrupt(), SignalKind::terminate()] {
        if let Ok(mut s) = signal(kind) {
            let tx = tx.clone();
            tokio::spawn(async move {
                while s.recv().await.is_some() {
                    if tx.send(()).is_err() {
                        break;
                    }
                }
            });
        }
    }
    if early.is_some_and(|f| f.swap(false, Ordering::SeqCst)) {
        let _ = tx.send(());
    }
    rx
}
