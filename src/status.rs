//! `runbook status [RUN_ID]`: what the journals say, as a table or JSON.
//!
//! A run without a final record is `running` while its process holds the
//! run lock, and `stopped` (resumable) once nobody does.

use std::path::Path;

use serde_json::{json, Value as Json};

use crate::error::{Done, Error, Result};
use crate::events::Event;
use crate::journal::{FileStore, Recorded, RunStore};

fn run_status(store: &FileStore, rec: &Recorded) -> String {
    match rec.finished() {
        Some(s) => s.as_str().to_string(),
        None if crate::lock::is_held(&store.run_dir(&rec.header.run_id).join("run.lock")) => {
            "running".into()
        }
        None => "stopped".into(),
    }
}

fn summary(store: &FileStore, rec: &Recorded) -> Json {
    let ended = rec
        .events
        .iter()
        .rev()
        .find_map(|(at, e)| matches!(e, Event::RunFinished { .. }).then_some(at.clone()));
    let duration = rec.events.iter().rev().find_map(|(_, e)| match e {
        Event::RunFinished { duration_ms, .. } => Some(*duration_ms),
        _ => None,
    });
    json!({
        "run_id": rec.header.run_id,
        "runbook": rec.header.runbook,
        "file": rec.header.file,
        "status": run_status(store, rec),
        "started_at": rec.header.started_at,
        "finished_at": ended,
        "duration_ms": duration,
        "started_by": rec.header.identity,
    })
}

fn steps(rec: &Recorded) -> Vec<Json> {
    let mut order: Vec<String> = Vec::new();
    let mut steps: std::collections::HashMap<String, Json> = std::collections::HashMap::new();
    if let Some(rb) = crate::validate::validate(crate::spec::load(&rec.header.source)).runbook {
        for s in rb.steps.iter().chain(&rb.on_failure).chain(&rb.finally) {
            order.push(s.id.clone());
            steps.insert(
                s.id.clone(),
                json!({ "id": s.id, "status": "not_started", "attempts": 0 }),
            );
        }
    }
    for (at, e) in &rec.events {
        let id = match e {
            Event::StepStarted { step, .. }
            | Event::Waiting { step, .. }
            | Event::StepFinished { step, .. }
            | Event::RollbackStarted { step, .. }
            | Event::RollbackFinished { step, .. }
            | Event::Approval { step, .. } => step,
            _ => continue,
        };
        let Some(s) = steps.get_mut(id) else { continue };
        match e {
            Event::StepStarted {
                attempt, attempts, ..
            } => {
                s["status"] = json!("running");
                s["attempt"] = json!(format!("{attempt}/{attempts}"));
                if s.get("started_at").is_none() {
                    s["started_at"] = json!(at);
                }
                s["waiting_on"] = Json::Null;
            }
            Event::Waiting { on, .. } => s["waiting_on"] = json!(on),
            Event::StepFinished {
                status,
                attempts,
                error,
                duration_ms,
                ..
            } => {
                s["status"] = json!(status.as_str());
                s["attempts"] = json!(attempts);
                s["duration_ms"] = json!(duration_ms);
                s["finished_at"] = json!(at);
                s["waiting_on"] = Json::Null;
                if let Some(e) = error {
                    s["error"] = json!(e);
                }
            }
            Event::Approval {
                by,
                approved,
                comment,
                ..
            } => {
                let decision =
                    json!({ "by": by, "approved": approved, "comment": comment, "at": at });
                match s["approvals"].as_array_mut() {
                    Some(list) => list.push(decision),
                    None => s["approvals"] = json!([decision]),
                }
            }
            Event::RollbackStarted { .. } => s["rollback"] = json!({ "status": "running" }),
            Event::RollbackFinished {
                status,
                attempts,
                error,
                ..
            } => {
                s["rollback"] =
                    json!({ "status": status.as_str(), "attempts": attempts, "error": error });
            }
            _ => {}
        }
    }
    order
        .into_iter()
        .filter_map(|id| steps.remove(&id))
        .collect()
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
                    Ok(r) => summary(&store, &r),
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
            let rec = match store.read(id) {
                Ok(r) => r,
                Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                    return Err(Error::invalid(e.to_string()))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(Error::invalid(format!(
                        "no run `{id}` in {}",
                        state_dir.display()
                    )))
                }
                Err(e) => return Err(Error::cannot_start(format!("cannot read run `{id}`: {e}"))),
            };
            let mut out = summary(&store, &rec);
            out["steps"] = Json::Array(steps(&rec));
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
            Ok(Done::Ok)
        }
    }
}
