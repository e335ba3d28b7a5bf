//! SIGINT and SIGTERM as one stream the engine reads, in its own file so the
//! only code that knows Unix signals is easy to find.
//!
//! [`Heard::install`] runs as a run starts, before it is claimed: from then
//! on each signal writes one byte to a socket pair (signal-hook's self-pipe),
//! so every signal is counted exactly once whenever it comes. A run waiting
//! in a lock queue, before the engine's runtime exists, looks at the socket
//! between two looks at the queue ([`Heard::pending`]); the engine reads it as
//! its stream ([`Heard::stream`]). Before, the default action killed a
//! queued run, which left it listed as `stopped`.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::SigId;

/// The signals this process has been sent since [`Heard::install`].
pub(super) struct Heard {
    read: Option<UnixStream>,
}

impl Heard {
    /// Starts counting SIGINT and SIGTERM. Should the socket or the handler
    /// be refused, the stream falls back to tokio's signal handling once the
    /// runtime exists (and a signal before then takes the default action).
    pub(super) fn install() -> Heard {
        let read = UnixStream::pair().ok().and_then(|(read, write)| {
            read.set_nonblocking(true).ok()?;
            let other = write.try_clone().ok()?;
            signal_hook::low_level::pipe::register(SIGINT, write).ok()?;
            signal_hook::low_level::pipe::register(SIGTERM, other).ok()?;
            Some(read)
        });
        Heard { read }
    }

    /// Whether a signal came (taking it): for a wait before the engine runs.
    pub(super) fn pending(&self) -> bool {
        let mut byte = [0u8; 1];
        match &self.read {
            Some(r) => {
                let mut r: &UnixStream = r;
                matches!(r.read(&mut byte), Ok(1))
            }
            None => false,
        }
    }

    /// While the guard lives, a signal after one already heard takes its
    /// default action (the process ends): a wait that may sit in a database
    /// call for seconds still gives way to a second Ctrl-C.
    pub(super) fn second_ends_the_wait(&self) -> SecondSignal {
        let armed = Arc::new(AtomicBool::new(false));
        let mut ids = Vec::new();
        for sig in [SIGINT, SIGTERM] {
            // First the check, then the arming: the first signal arms it.
            if let Ok(id) = signal_hook::flag::register_conditional_default(sig, armed.clone()) {
                ids.push(id);
            }
            if let Ok(id) = signal_hook::flag::register(sig, armed.clone()) {
                ids.push(id);
            }
        }
        SecondSignal { ids }
    }

    /// The engine's stream of signals, from the first one heard (call inside
    /// the runtime).
    pub(super) fn stream(self) -> crate::engine::Signals {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let socket = self
            .read
            .and_then(|r| tokio::net::UnixStream::from_std(r).ok());
        match socket {
            Some(socket) => {
                tokio::spawn(async move {
                    let mut buf = [0u8; 16];
                    loop {
                        if socket.readable().await.is_err() {
                            break;
                        }
                        match socket.try_read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => {
                                if (0..n).any(|_| tx.send(()).is_err()) {
                                    break;
                                }
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                            Err(_) => break,
                        }
                    }
                });
            }
            None => tokio_signals(&tx),
        }
        rx
    }
}

/// Undoes [`Heard::second_ends_the_wait`] when dropped.
pub(super) struct SecondSignal {
    ids: Vec<SigId>,
}

impl Drop for SecondSignal {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

fn tokio_signals(tx: &tokio::sync::mpsc::UnboundedSender<()>) {
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
}
