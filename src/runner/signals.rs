//! SIGINT and SIGTERM as one stream the engine reads, in its own file so the
//! only code that knows Unix signals is easy to find.

pub(super) fn signals() -> crate::engine::Signals {
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
    rx
}
