//! The event stream of a run. The scheduler and executors emit; the terminal
//! view, the JSON log, the report and the journal listen.
//!
//! Delivery is synchronous and in order: `emit` returns only after every
//! listener has seen the event, so a listener that persists (the journal) has
//! done so before the engine acts on what comes next. Every event passes the
//! secret [`Masker`] first, so no listener ever sees a secret.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::secrets::Masker;

/// How a step (or a rollback) ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Succeeded,
    Failed,
    Skipped,
    Cancelled,
    NotStarted,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
            StepStatus::Cancelled => "cancelled",
            StepStatus::NotStarted => "not_started",
        }
    }
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Succeeded,
    RolledBack,
    RollbackFailed,
    Interrupted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Succeeded => "succeeded",
            RunStatus::RolledBack => "rolled_back",
            RunStatus::RollbackFailed => "rollback_failed",
            RunStatus::Interrupted => "interrupted",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// What happened. `step` is a step id; rollbacks carry the id of the step they undo.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        run_id: String,
        runbook: String,
        steps: usize,
        params: Json,
    },
    StepStarted {
        step: String,
        attempt: u32,
        attempts: u32,
    },
    Output {
        step: String,
        stream: Stream,
        line: String,
    },
    Waiting {
        step: String,
        on: String,
    },
    /// A decision on an approval step.
    Approval {
        step: String,
        by: String,
        approved: bool,
        comment: Option<String>,
    },
    /// A flag's value before a step changed it (`None`: it did not exist).
    FlagPrevious {
        step: String,
        flag: String,
        previous: Option<Json>,
    },
    AttemptFailed {
        step: String,
        attempt: u32,
        error: String,
        retry_in_ms: Option<u64>,
    },
    StepFinished {
        step: String,
        status: StepStatus,
        attempts: u32,
        outputs: Json,
        /// Kind-specific values beside `outputs` (`stdout`, `exit_code`).
        #[serde(default)]
        extra: Json,
        error: Option<String>,
        duration_ms: u64,
    },
    UnwindStarted {
        reason: String,
        #[serde(default)]
        failed_step: Option<String>,
    },
    RollbackStarted {
        step: String,
        body: usize,
        attempt: u32,
        attempts: u32,
    },
    RollbackFinished {
        step: String,
        status: StepStatus,
        attempts: u32,
        error: Option<String>,
        duration_ms: u64,
    },
    PhaseStarted {
        phase: String,
    },
    RunFinished {
        status: RunStatus,
        duration_ms: u64,
    },
}

impl Event {
    fn mask(&mut self, m: &Masker) {
        match self {
            Event::Output { line, .. } => m.mask_in_place(line),
            Event::AttemptFailed { error, .. } => m.mask_in_place(error),
            Event::StepFinished {
                outputs,
                extra,
                error,
                ..
            } => {
                m.mask_json(outputs);
                m.mask_json(extra);
                if let Some(e) = error {
                    m.mask_in_place(e);
                }
            }
            Event::RollbackFinished { error: Some(e), .. } => m.mask_in_place(e),
            Event::UnwindStarted { reason, .. } => m.mask_in_place(reason),
            Event::Waiting { on, .. } => m.mask_in_place(on),
            Event::Approval {
                comment: Some(c), ..
            } => m.mask_in_place(c),
            Event::RunStarted { params, .. } => m.mask_json(params),
            _ => {}
        }
    }
}

/// A subscriber to the event stream.
pub trait Listener: Send {
    fn on(&mut self, at: SystemTime, event: &Event);
    /// Called once when the run is over (flush, draw a summary).
    fn finish(&mut self) {}
}

/// Fans events out to listeners, masking secrets first.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Mutex<Vec<Box<dyn Listener>>>>,
    masker: Arc<Masker>,
}

impl Bus {
    pub fn new(masker: Arc<Masker>) -> Bus {
        Bus {
            inner: Arc::new(Mutex::new(Vec::new())),
            masker,
        }
    }

    pub fn subscribe(&self, l: Box<dyn Listener>) {
        if let Ok(mut ls) = self.inner.lock() {
            ls.push(l);
        }
    }

    pub fn masker(&self) -> &Masker {
        &self.masker
    }

    pub fn emit(&self, mut event: Event) {
        event.mask(&self.masker);
        let now = SystemTime::now();
        // A listener that panicked poisoned the lock; the others still get events.
        let mut ls = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        for l in ls.iter_mut() {
            l.on(now, &event);
        }
    }

    pub fn finish(&self) {
        let mut ls = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        for l in ls.iter_mut() {
            l.finish();
        }
    }
}

pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
