//! `--report FILE`: the run as JSON, the [`RunState`] folded from the
//! (already masked) events, in the shape `status --format json` shows.

use std::path::PathBuf;
use std::time::SystemTime;

use serde_json::json;

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
        let mut report = state.to_json();
        if state.status.is_none() {
            // The run stopped without an end of its own (a second signal).
            report["status"] = json!("interrupted");
        }
        drop(state);
        let mut text = serde_json::to_string_pretty(&report).unwrap_or_default();
        text.push('\n');
        if let Err(e) =
            crate::fsutil::write_atomic(&self.path, text.as_bytes(), crate::fsutil::SHARED_READ)
        {
            crate::broken_pipe::eprint_line(&format!(
                "runbook: cannot write report {}: {e}",
                self.path.display()
            ));
        }
    }
}
