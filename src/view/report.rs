//! `--report FILE`: the run as JSON, built from the (already masked) events.

use std::path::PathBuf;
use std::time::SystemTime;

use indexmap::IndexMap;
use serde_json::{json, Value as Json};

use crate::events::{Event, Listener, RunStatus};

pub struct Report {
    path: PathBuf,
    run_id: String,
    runbook: String,
    fingerprint: String,
    status: Option<RunStatus>,
    started: SystemTime,
    duration_ms: u64,
    steps: IndexMap<String, Json>,
}

impl Report {
    /// `steps` lists (id, phase) of every step, in file order.
    pub fn new(
        path: PathBuf,
        run_id: &str,
        runbook: &str,
        fingerprint: &str,
        steps: &[(String, &'static str)],
    ) -> Report {
        let steps = steps
            .iter()
            .map(|(id, phase)| {
                (
                    id.clone(),
                    json!({ "id": id, "phase": phase, "status": "not_started", "attempts": 0, "outputs": {} }),
                )
            })
            .collect();
        Report {
            path,
            run_id: run_id.to_string(),
            runbook: runbook.to_string(),
            fingerprint: fingerprint.to_string(),
            status: None,
            started: SystemTime::now(),
            duration_ms: 0,
            steps,
        }
    }
}

impl Listener for Report {
    fn on(&mut self, at: SystemTime, event: &Event) {
        match event {
            Event::Approval {
                step,
                by,
                approved,
                comment,
            } => {
                if let Some(s) = self.steps.get_mut(step) {
                    let decision = json!({
                        "by": by,
                        "approved": approved,
                        "comment": comment,
                        "at": humantime::format_rfc3339_millis(at).to_string(),
                    });
                    match s["approvals"].as_array_mut() {
                        Some(list) => list.push(decision),
                        None => s["approvals"] = json!([decision]),
                    }
                }
            }
            Event::StepFinished {
                step,
                status,
                attempts,
                outputs,
                error,
                ..
            } => {
                if let Some(s) = self.steps.get_mut(step) {
                    s["status"] = json!(status.as_str());
                    s["attempts"] = json!(attempts);
                    s["outputs"] = outputs.clone();
                    if let Some(e) = error {
                        s["error"] = json!(e);
                    }
                }
            }
            Event::RollbackFinished {
                step,
                status,
                attempts,
                error,
                ..
            } => {
                if let Some(s) = self.steps.get_mut(step) {
                    s["rollback"] =
                        json!({ "status": status.as_str(), "attempts": attempts, "error": error });
                }
            }
            Event::RunFinished {
                status,
                duration_ms,
            } => {
                self.status = Some(*status);
                self.duration_ms = *duration_ms;
            }
            _ => {}
        }
    }

    fn finish(&mut self) {
        let report = json!({
            "run_id": self.run_id,
            "runbook": self.runbook,
            "fingerprint": self.fingerprint,
            "status": self.status.map_or("interrupted", RunStatus::as_str),
            "started_at": humantime::format_rfc3339_seconds(self.started).to_string(),
            "duration_ms": self.duration_ms,
            "steps": self.steps.values().collect::<Vec<_>>(),
        });
        let mut text = serde_json::to_string_pretty(&report).unwrap_or_default();
        text.push('\n');
        if let Err(e) = std::fs::write(&self.path, text) {
            eprintln!("runbook: cannot write report {}: {e}", self.path.display());
        }
    }
}
