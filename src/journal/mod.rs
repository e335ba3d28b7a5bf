//! Durable runs: an append-only, fsync'd journal per run, and what a later
//! process rebuilds from it.
//!
//! The journal is a listener on the event bus. Delivery is synchronous, so
//! when `StepFinished` is emitted it is on disk before the scheduler releases
//! any dependent: a step's result is durable before anything that needs it
//! starts. The first line is a header with the runbook's full text, its hash
//! and the resolved params (secret ones masked); every other line is one
//! event. A torn last line (the engine died mid-write) is ignored.
//!
//! Storage sits behind [`RunStore`] so a shared backend (PostgreSQL, for
//! teams on several machines) can replace the files later.

mod file;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

pub use file::FileStore;

use crate::engine::{Prior, RollbackRecord, StepRecord};
use crate::events::{Event, Recorder, RunStatus, StepStatus};

/// The first record of a journal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    pub run_id: String,
    pub runbook: String,
    pub file: String,
    pub source: String,
    pub hash: String,
    pub params: Map<String, Json>,
    pub identity: String,
    pub pid: u32,
    pub started_at: String,
    pub cwd: String,
    /// The plan fingerprint the run was started with (empty in journals older than it).
    #[serde(default)]
    pub fingerprint: String,
}

/// A journal as read back.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub header: Header,
    /// (timestamp, event), in order.
    pub events: Vec<(String, Event)>,
    /// Whether a torn last record was dropped.
    pub torn: bool,
}

/// Where journals live.
pub trait RunStore: Send + Sync {
    /// Starts a new run's journal with its header.
    fn create(&self, header: &Header) -> std::io::Result<Box<dyn Recorder>>;
    /// Appends to an existing run's journal (resume, rollback).
    fn append(&self, run_id: &str) -> std::io::Result<Box<dyn Recorder>>;
    fn read(&self, run_id: &str) -> std::io::Result<Recorded>;
    /// Run ids, oldest first.
    fn list(&self) -> std::io::Result<Vec<String>>;
}

/// Run ids name directories: letters, digits, `-`, `_`, `.`, not leading `.`.
pub fn valid_run_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

pub fn hash(text: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(text.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

impl Recorded {
    /// The run's final status, if it finished (the last `RunFinished`).
    pub fn finished(&self) -> Option<RunStatus> {
        let mut status = None;
        for (_, e) in &self.events {
            match e {
                Event::RunFinished { status: s, .. } => status = Some(*s),
                // A rollback started after the run finished reopens it.
                Event::UnwindStarted { .. } if status.is_some() => status = None,
                _ => {}
            }
        }
        status
    }

    /// Whether a rollback of a finished run was started (and so must be continued, not rerun).
    pub fn rollback_started_after_success(&self) -> bool {
        let mut succeeded = false;
        for (_, e) in &self.events {
            match e {
                Event::RunFinished {
                    status: RunStatus::Succeeded,
                    ..
                } => succeeded = true,
                Event::UnwindStarted { .. } if succeeded => return true,
                _ => {}
            }
        }
        false
    }

    /// Rebuilds engine state from the events.
    pub fn prior(&self) -> (Prior, HashMap<String, Option<Json>>) {
        let mut prior = Prior::default();
        let mut flag_previous: HashMap<String, Option<Json>> = HashMap::new();
        let mut after_success = false;
        for (_, e) in &self.events {
            match e {
                Event::StepStarted { step, .. } => {
                    prior.running.insert(step.clone());
                }
                Event::StepFinished {
                    step,
                    status,
                    attempts,
                    outputs,
                    extra,
                    error,
                    duration_ms,
                } => {
                    prior.running.remove(step);
                    let mut result = match extra {
                        Json::Object(m) => m.clone(),
                        _ => Map::new(),
                    };
                    result.insert("outputs".into(), outputs.clone());
                    let mut rec = StepRecord {
                        status: *status,
                        attempts: *attempts,
                        result,
                        error: error.clone(),
                        finished_seq: None,
                        duration_ms: *duration_ms,
                        rollback: None,
                    };
                    if *status != StepStatus::Cancelled {
                        prior.seq += 1;
                        rec.finished_seq = Some(prior.seq);
                    }
                    prior.steps.insert(step.clone(), rec);
                }
                Event::FlagPrevious { step, previous, .. } => {
                    flag_previous
                        .entry(step.clone())
                        .or_insert_with(|| previous.clone());
                }
                Event::UnwindStarted { failed_step, .. } => {
                    if failed_step.is_none() && !after_success {
                        prior.interrupted = true;
                    }
                    prior.unwinding = Some(failed_step.clone());
                }
                Event::RollbackFinished {
                    step,
                    status,
                    attempts,
                    error,
                    ..
                } => {
                    if let Some(rec) = prior.steps.get_mut(step) {
                        rec.rollback = Some(RollbackRecord {
                            status: *status,
                            attempts: *attempts,
                            error: error.clone(),
                        });
                    }
                }
                Event::RunFinished { status, .. } => {
                    after_success = *status == RunStatus::Succeeded;
                    if after_success {
                        prior.unwinding = None;
                    }
                }
                _ => {}
            }
        }
        (prior, flag_previous)
    }
}
