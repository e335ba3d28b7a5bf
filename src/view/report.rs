//! `--report FILE`: the run as JSON, the [`RunState`] folded from the
//! (already masked) events, in the shape `status --format json` shows.

use std::path::PathBuf;
use std::time::SystemTime;

use serde_json::json;

use crate::events::{Event, Listener};
use crate::state::RunState;

pub struct Report {
    path: PathBuf,
    state: RunState,
}

impl Report {
    /// `state` is the run so far: empty for a fresh run, the journal's for a resumed one.
    pub fn new(path: PathBuf, state: RunState) -> Report {
        Report { path, state }
    }
}

impl Listener for Report {
    fn on(&mut self, at: SystemTime, event: &Event) {
        let at = humantime::format_rfc3339_millis(at).to_string();
        self.state.apply(&at, event);
    }

    fn finish(&mut self) {
        let mut report = self.state.to_json();
        if self.state.status.is_none() {
            // The run stopped without an end of its own (a second signal).
            report["status"] = json!("interrupted");
        }
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
