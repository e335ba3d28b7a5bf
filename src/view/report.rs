//! `--report FILE`: the run as JSON, the [`RunState`] folded from the
//! (already masked) events, in the shape `status --format json` shows.

use std::path::PathBuf;
use std::time::SystemTime;

use super::RunView;
use crate::events::{Event, Listener};

pub struct Report {
    path: PathBuf,
    state: RunView,
}

impl Report {
    /// `state` is the run so far: empty for a fresh run, the journal's for a resumed one.
    pub fn new(path: PathBuf, state: RunView) -> Report {
        Report { path, state }
    }
}

impl Listener for Report {
    fn on(&mut self, at: SystemTime, event: &Event) {
        self.state.apply(at, event);
    }

    fn finish(&mut self) {
        let state = self.state.read();
        // A run stopped without an end of its own (a second signal) is interrupted.
        let mut text = serde_json::to_vec_pretty(&state.report("interrupted")).unwrap_or_default();
        drop(state);
        text.push(b'\n');
        if let Err(e) = crate::fsutil::write_atomic(&self.path, &text, crate::fsutil::SHARED_READ) {
            crate::broken_pipe::eprint_line(&format!(
                "runbook: cannot write report {}: {e}",
                self.path.display()
            ));
        }
    }
}
