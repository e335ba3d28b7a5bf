//! `runbook status [RUN_ID]`: what the journals say, as a table or JSON.
//!
//! A run without a final record is `running` while its process holds the
//! run lock, and `stopped` (resumable) once nobody does.

use std::path::Path;

use serde_json::{json, Value as Json};

use crate::error::{Done, Error, Result};
use crate::events::RunStatus;
use crate::journal::{FileStore, Recorded, RunStore};
use crate::state::RunState;

fn run_status(store: &FileStore, rec: &Recorded, state: &RunState) -> String {
    match state.status {
        Some(s) => s.as_str().to_string(),
        None if crate::lock::is_held(&store.run_dir(&rec.header.run_id).join("run.lock")) => {
            "running".into()
        }
        None => "stopped".into(),
    }
}

/// The run's state in the shape the report has, with what only the journal
/// and the run lock know: the file, who started it, whether it is live.
fn summary(store: &FileStore, rec: &Recorded, with_steps: bool) -> Json {
    let rb = crate::commands::journaled_runbook(rec);
    let state = rec.state(rb.as_deref());
    let mut out = state.to_json();
    out["status"] = json!(run_status(store, rec, &state));
    if let (Some(rb), Some(RunStatus::RollbackFailed | RunStatus::UnwindIncomplete)) =
        (rb.as_deref(), state.status)
    {
        let unfinished = state.unfinished_rollbacks(rb);
        out["next"] = json!(crate::state::way_forward(&rec.header.run_id, &unfinished));
    }
    out["file"] = json!(rec.header.file);
    out["started_by"] = json!(rec.header.identity);
    if !with_steps {
        if let Json::Object(m) = &mut out {
            m.remove("steps");
        }
    }
    out
}

pub fn show(state_dir: &Path, run_id: Option<&str>, as_json: bool) -> Result {
    let store = FileStore::new(state_dir);
    match run_id {
        None => {
            let ids = match store.list() {
                Ok(ids) => ids,
                Err(e) => {
                    return Err(Error::cannot_start(format!(
                        "cannot read {}: {e}",
                        state_dir.display()
                    )))
                }
            };
            // A run whose journal cannot be read is listed, not hidden: it is
            // exactly the run someone needs to look at.
            let runs: Vec<Json> = ids
                .iter()
                .map(|id| match store.read(id) {
                    Ok(r) => summary(&store, &r, false),
                    Err(e) => json!({ "run_id": id, "runbook": "?", "status": "unreadable", "error": e.to_string() }),
                })
                .collect();
            if as_json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&runs).unwrap_or_default()
                );
            } else if runs.is_empty() {
                println!("no runs in {}", state_dir.display());
            } else {
                println!(
                    "{:28} {:24} {:16} {:21} duration",
                    "run", "runbook", "status", "started"
                );
                for r in &runs {
                    let d = r["duration_ms"].as_u64().map_or("-".to_string(), |ms| {
                        crate::view::short(std::time::Duration::from_millis(ms))
                    });
                    println!(
                        "{:28} {:24} {:16} {:21} {d}",
                        r["run_id"].as_str().unwrap_or(""),
                        r["runbook"].as_str().unwrap_or(""),
                        r["status"].as_str().unwrap_or(""),
                        r["started_at"].as_str().unwrap_or("")
                    );
                }
            }
            Ok(Done::Ok)
        }
        Some(id) => {
            let rec = crate::journal::read_run(&store, state_dir, id)?;
            let out = summary(&store, &rec, true);
            if as_json {
                println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
                return Ok(Done::Ok);
            }
            println!(
                "run {}  {}  {}",
                id,
                out["runbook"].as_str().unwrap_or(""),
                out["status"].as_str().unwrap_or("")
            );
            println!(
                "started {} by {}",
                out["started_at"].as_str().unwrap_or(""),
                out["started_by"].as_str().unwrap_or("")
            );
            if let Some(f) = out["fingerprint"].as_str().filter(|f| !f.is_empty()) {
                println!("plan {f}");
            }
            println!(
                "\n{:24} {:12} {:>8} {:>9}  {:10} detail",
                "step", "status", "attempts", "time", "rollback"
            );
            for s in out["steps"].as_array().into_iter().flatten() {
                let t = s["duration_ms"].as_u64().map_or("-".to_string(), |ms| {
                    crate::view::short(std::time::Duration::from_millis(ms))
                });
                let attempts = s["attempt"]
                    .as_str()
                    .map_or_else(|| s["attempts"].to_string(), str::to_string);
                let detail = s["waiting_on"]
                    .as_str()
                    .map(|w| format!("waiting on {w}"))
                    .or_else(|| s["error"].as_str().map(str::to_string))
                    .unwrap_or_default();
                println!(
                    "{:24} {:12} {:>8} {:>9}  {:10} {detail}",
                    s["id"].as_str().unwrap_or(""),
                    s["status"].as_str().unwrap_or(""),
                    attempts,
                    t,
                    s["rollback"]["status"].as_str().unwrap_or("")
                );
                for earlier in s["rollback_history"].as_array().into_iter().flatten() {
                    println!(
                        "{:24} earlier rollback {}: {}",
                        "",
                        earlier["status"].as_str().unwrap_or(""),
                        earlier["error"].as_str().unwrap_or("")
                    );
                }
                if let Some(e) = s["rollback"]["error"].as_str() {
                    println!("{:24} rollback failed: {e}", "");
                }
                for d in s["approvals"].as_array().into_iter().flatten() {
                    let verb = if d["approved"] == true {
                        "approved"
                    } else {
                        "rejected"
                    };
                    let comment = d["comment"]
                        .as_str()
                        .map_or(String::new(), |c| format!(": {c}"));
                    println!(
                        "{:24} {verb} by {} at {}{comment}",
                        "",
                        d["by"].as_str().unwrap_or(""),
                        d["at"].as_str().unwrap_or("")
                    );
                }
            }
            if let Some(next) = out["next"].as_str() {
                println!("\n{next}");
            }
            Ok(Done::Ok)
        }
    }
}
