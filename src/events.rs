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
    /// A second signal stopped the unwinding: some rollbacks did not run.
    UnwindIncomplete,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Succeeded => "succeeded",
            RunStatus::RolledBack => "rolled_back",
            RunStatus::RollbackFailed => "rollback_failed",
            RunStatus::Interrupted => "interrupted",
            RunStatus::UnwindIncomplete => "unwind_incomplete",
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
        /// What the step waits for, as data (who may answer, until when;
        /// when a gate samples next): what `status` and the views show.
        /// Absent in journals older than it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<WaitingDetail>,
    },
    /// A decision on an approval step.
    Approval {
        step: String,
        by: String,
        approved: bool,
        comment: Option<String>,
        /// Who made it and where, as the deciding process saw it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        proof: Option<Box<Proof>>,
    },
    /// A decision that did not count: unsigned where signatures are
    /// required, or its signature did not verify.
    ApprovalRefused {
        step: String,
        by: String,
        approved: bool,
        why: String,
    },
    /// A flag's value before this run writes it (`None`: it did not
    /// exist), recorded before the write; `value` is what is about to be
    /// written (`None`: deleted). `step` is the writer's label: a step id,
    /// `id.rollback.N` for a body, `id.restore` for an automatic restore.
    FlagPrevious {
        step: String,
        flag: String,
        previous: Option<Json>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<Json>,
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
    /// One evaluation of a gate, so a resumed gate continues from it.
    GateSample {
        step: String,
        attempt: u32,
        /// Evaluations counted so far, this one included (1-based); a
        /// provider error does not count, and carries the count before it.
        sample: i64,
        /// The verdict was `pass` (kept for journals without `verdict`).
        passed: bool,
        value: Option<f64>,
        /// When the gate's first sample was taken (unix ms): the grid the
        /// remaining samples keep to.
        first_at_ms: u64,
        /// `None` in journals from before three-valued gates: `passed` says.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        verdict: Option<Verdict>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<Box<Evaluation>>,
    },
    /// A SIGINT or SIGTERM reached the engine: what it does now, and what
    /// another one would do.
    Signal {
        count: u32,
        message: String,
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
    /// A step's attempt started its process group: what a later `resume`
    /// kills if the engine died while it ran (an orphan would otherwise
    /// run on beside the attempt resume starts again).
    Spawned {
        /// The attempt's label: a step id, or `ID.rollback.N`.
        step: String,
        pgid: u32,
        /// The group leader's session and start time (`/proc/PID/stat`'s
        /// clock ticks since boot; at or after `started`, by
        /// `started_until`), which tell this group from a later one with
        /// the same id.
        sid: u32,
        started: u64,
        /// Absent in journals older than it: `started` exactly.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        started_until: Option<u64>,
        /// The machine's boot id, hex (absent in older journals).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        boot: Option<String>,
    },
    /// Another process took the run up again (`resume`): the record counts
    /// processes and spans them. (`runbook rollback` is counted by the
    /// `unwind_started` that reopens the ended run.)
    Resumed {
        /// `resume`.
        mode: String,
        by: String,
        pid: u32,
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
            Event::GateSample {
                detail: Some(d), ..
            } => {
                m.mask_in_place(&mut d.text);
                m.mask_in_place(&mut d.threshold);
            }
            Event::Waiting { on, detail, .. } => {
                m.mask_in_place(on);
                if let Some(d) = detail {
                    d.mask(m);
                }
            }
            Event::Approval {
                comment: Some(c), ..
            } => m.mask_in_place(c),
            Event::ApprovalRefused { why, .. } => m.mask_in_place(why),
            Event::RunStarted { params, .. } => m.mask_json(params),
            Event::FlagPrevious {
                previous, value, ..
            } => {
                for v in previous.iter_mut().chain(value.iter_mut()) {
                    m.mask_json(v);
                }
            }
            _ => {}
        }
    }
}

/// What a waiting step waits for. Tagged by `kind`, so a gate that pauses
/// for a person (a later `paused_gate`) is one more variant holding an
/// [`AnswerWanted`] beside its samples.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WaitingDetail {
    /// An approval waiting for people.
    Approval(AnswerWanted),
    /// A gate between two samples.
    Gate(GateProgress),
}

/// Who may answer a waiting step, how many must, and until when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnswerWanted {
    /// The approvers as listed; `None`: anyone.
    pub approvers: Option<Vec<String>>,
    /// The listed approvers who may approve (the starter left out unless
    /// self approval is allowed); `None`: anyone (but the starter).
    pub eligible: Option<Vec<String>>,
    pub required: usize,
    /// Approvals counted so far, in order.
    pub approved_by: Vec<String>,
    pub started_by: String,
    pub allow_self_approval: bool,
    #[serde(default)]
    pub message: Option<String>,
    /// When its timeout ends the wait (RFC 3339); `None`: no timeout.
    #[serde(default)]
    pub deadline: Option<String>,
    /// The engine's state dir (absolute), for the command that answers.
    #[serde(default)]
    pub state_dir: String,
    /// A paused gate: the evaluations that led to the pause. `None`: an
    /// approval step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_gate: Option<Vec<String>>,
    /// Only signed decisions count (`approve ... --key PATH`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub signed: bool,
}

impl AnswerWanted {
    /// The eligible approvers who have not approved yet (`None`: anyone).
    pub fn pending(&self) -> Option<Vec<String>> {
        self.eligible.as_ref().map(|l| {
            l.iter()
                .filter(|a| !self.approved_by.contains(a))
                .cloned()
                .collect()
        })
    }

    fn mask(&mut self, m: &Masker) {
        let lists = self.approvers.iter_mut().chain(self.eligible.iter_mut());
        for who in lists.flatten().chain(self.approved_by.iter_mut()) {
            m.mask_in_place(who);
        }
        if let Some(msg) = &mut self.message {
            m.mask_in_place(msg);
        }
        for line in self.paused_gate.iter_mut().flatten() {
            m.mask_in_place(line);
        }
    }
}

/// The audit of a decision: the OS user and host of the process that made
/// it, and when signatures are required, the key and the signature.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Proof {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `SHA256:...` of the key that signed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The SSH signature (armored) over the decision's statement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// What one evaluation of a gate found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    /// Met neither the success nor the failure condition (or a comparison
    /// with too few points).
    Inconclusive,
    /// The provider gave no usable answer: not an evaluation.
    Error,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Inconclusive => "inconclusive",
            Verdict::Error => "error",
        }
    }
}

/// An evaluation as people read it: when, against what, what it found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// The instant the metric was read at (RFC 3339): now, or `at` replayed.
    pub time: String,
    /// What it was judged against, rendered: `value < 0.01; fails: value > 0.05`.
    pub threshold: String,
    /// One line: `value 0.004`, `no data`, the error, or the comparison.
    pub text: String,
    /// A dry run's breach is recorded but does not count.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_median: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_median: Option<f64>,
}

/// Where a sampling gate stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateProgress {
    /// Samples taken so far (this attempt, resumed ones included).
    pub taken: i64,
    pub samples: i64,
    pub failures: i64,
    pub failure_limit: i64,
    pub interval_ms: u64,
    /// When the next sample is taken (RFC 3339); `None` after the last.
    #[serde(default)]
    pub next_at: Option<String>,
}

impl WaitingDetail {
    fn mask(&mut self, m: &Masker) {
        if let WaitingDetail::Approval(a) = self {
            a.mask(m);
        }
    }
}

/// A subscriber to the event stream (views, logs, the report).
pub trait Listener: Send {
    fn on(&mut self, at: SystemTime, event: &Event);
    /// Called once when the run is over (flush, draw a summary).
    fn finish(&mut self) {}
}

/// The run's durable memory (the journal): an error means it can no longer
/// keep what it is given, so the run may not act any more.
pub trait Recorder: Send {
    /// Appends an event; it is durable once a later [`Recorder::sync`] returns.
    fn record(&mut self, at: SystemTime, event: &Event) -> Result<(), String>;
    /// Makes everything recorded so far durable (nothing to do if it is).
    fn sync(&mut self) -> Result<(), String>;
}

impl Event {
    /// Whether the engine acts on the world right after this record, so it
    /// must be durable before `emit` returns: starting a step or a
    /// rollback, writing a flag, counting an approval, declaring the run
    /// over. Whatever the world may see next is preceded by a durable
    /// journal.
    ///
    /// One sync makes every record before it durable too (fdatasync flushes
    /// the file), so the others ride along: a step's `step_finished` (and
    /// `run_started` before the first step) becomes durable with the
    /// `step_started` of what comes next, which is the earliest anything
    /// can act on it. Output lines never need one: resume does not read
    /// them (a sync per line made a step printing 2,000 lines take ~7 s on
    /// an ext4 disk). A `kill -9` loses nothing either way (the page cache
    /// survives the process); only a power loss can drop the unsynced tail,
    /// and then a finished step runs again, as one that was running would.
    pub fn must_be_durable(&self) -> bool {
        matches!(
            self,
            Event::StepStarted { .. }
                | Event::FlagPrevious { .. }
                | Event::Approval { .. }
                | Event::UnwindStarted { .. }
                | Event::RollbackStarted { .. }
                | Event::RunFinished { .. }
        )
    }
}

/// The most unrecorded events kept for the closing message.
const MAX_UNRECORDED: usize = 200;

/// A durable listener that failed: its error, and what it could not record.
#[derive(Debug, Default)]
struct Broken {
    error: Option<String>,
    unrecorded: Vec<String>,
    dropped: usize,
}

/// Fans events out to listeners, masking secrets first.
///
/// The [`Recorder`] given to [`Bus::record_with`] (the journal) is the run's
/// memory, and hears each event before any listener. Once it fails it gets nothing more; every
/// later event is kept (in summary) for the message that ends the run, and
/// [`Bus::emit`] reports it so the engine stops acting.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Mutex<Listeners>>,
    masker: Arc<Masker>,
    broken: Arc<Mutex<Broken>>,
}

#[derive(Default)]
struct Listeners {
    durable: Option<Box<dyn Recorder>>,
    others: Vec<Box<dyn Listener>>,
}

impl Bus {
    pub fn new(masker: Arc<Masker>) -> Bus {
        Bus {
            inner: Arc::new(Mutex::new(Listeners::default())),
            masker,
            broken: Arc::default(),
        }
    }

    /// The recorder whose failure stops the run (the journal).
    pub fn record_with(&self, l: Box<dyn Recorder>) {
        if let Ok(mut ls) = self.inner.lock() {
            ls.durable = Some(l);
        }
    }

    /// Why the journal stopped taking events, if it did.
    pub fn journal_error(&self) -> Option<String> {
        self.broken.lock().ok().and_then(|b| b.error.clone())
    }

    /// What the journal could not record, in order, as JSON lines.
    pub fn unrecorded(&self) -> (Vec<String>, usize) {
        self.broken
            .lock()
            .map(|b| (b.unrecorded.clone(), b.dropped))
            .unwrap_or_default()
    }

    fn lose(&self, event: &Event, error: Option<String>) {
        if let Ok(mut b) = self.broken.lock() {
            if b.error.is_none() {
                b.error = error;
            }
            if matches!(event, Event::Output { .. }) {
                return;
            }
            if b.unrecorded.len() < MAX_UNRECORDED {
                b.unrecorded
                    .push(serde_json::to_string(event).unwrap_or_default());
            } else {
                b.dropped += 1;
            }
        }
    }

    pub fn subscribe(&self, l: Box<dyn Listener>) {
        if let Ok(mut ls) = self.inner.lock() {
            ls.others.push(l);
        }
    }

    pub fn masker(&self) -> &Masker {
        &self.masker
    }

    /// Delivers an event, durable on return if it
    /// [must be](Event::must_be_durable); `false` when the journal did not
    /// record it (the engine must not act on it).
    #[must_use = "an event the journal did not record must stop the run from acting"]
    pub fn emit(&self, event: Event) -> bool {
        let sync = event.must_be_durable();
        self.deliver(event, sync)
    }

    /// [`Bus::emit`] for a record that must be durable, sharing its sync
    /// with the records other tasks make in the same turn of the
    /// scheduler (group commit): steps started together under
    /// `concurrency` cost one sync, not one each. It yields once between
    /// writing and syncing so that those tasks get to write theirs.
    #[must_use = "an event the journal did not record must stop the run from acting"]
    pub async fn emit_grouped(&self, event: Event) -> bool {
        let kept = event.clone();
        if !self.deliver(event, false) {
            return false;
        }
        tokio::task::yield_now().await;
        self.commit(&kept)
    }

    /// The listeners, locked. A listener that panicked poisoned the lock;
    /// the others still get events.
    fn listeners(&self) -> std::sync::MutexGuard<'_, Listeners> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes what the journal holds durable; `false` if it cannot, and
    /// then `event` counts as not recorded.
    fn commit(&self, event: &Event) -> bool {
        let mut ls = self.listeners();
        let Some(journal) = ls.durable.as_mut() else {
            return self.journal_error().is_none();
        };
        match journal.sync() {
            Ok(()) => true,
            Err(e) => {
                ls.durable = None;
                self.lose(event, Some(e));
                false
            }
        }
    }

    fn deliver(&self, mut event: Event, sync: bool) -> bool {
        // A flag's previous value is restored from the journal after a
        // crash: the journal gets references to the secrets in it, which
        // resume resolves, where listeners get `***`.
        let for_journal = match &event {
            Event::FlagPrevious {
                step,
                flag,
                previous,
                value,
            } => {
                let refs = |v: &Option<Json>| {
                    v.clone().map(|mut v| {
                        self.masker.refs_json(&mut v);
                        self.masker.mask_derived_json(&mut v);
                        v
                    })
                };
                Some(Event::FlagPrevious {
                    step: step.clone(),
                    flag: self.masker.mask(flag),
                    previous: refs(previous),
                    value: refs(value),
                })
            }
            _ => None,
        };
        event.mask(&self.masker);
        let now = SystemTime::now();
        let mut ls = self.listeners();
        let mut recorded = true;
        if let Some(journal) = ls.durable.as_mut() {
            let written = journal
                .record(now, for_journal.as_ref().unwrap_or(&event))
                .and_then(|()| if sync { journal.sync() } else { Ok(()) });
            if let Err(e) = written {
                ls.durable = None;
                self.lose(&event, Some(e));
                recorded = false;
            }
        } else if self.journal_error().is_some() {
            self.lose(&event, None);
            recorded = false;
        }
        for l in &mut ls.others {
            l.on(now, &event);
        }
        recorded
    }

    /// Delivers an event the engine does not act on (output, progress).
    pub fn note(&self, event: Event) {
        let _ = self.emit(event);
    }

    /// Delivers an event to the listeners only, never to the journal (a
    /// step's output past its journal budget).
    pub fn show(&self, mut event: Event) {
        event.mask(&self.masker);
        let now = SystemTime::now();
        let mut ls = self.listeners();
        for l in &mut ls.others {
            l.on(now, &event);
        }
    }

    pub fn finish(&self) {
        let mut ls = self.listeners();
        for l in &mut ls.others {
            l.finish();
        }
    }
}

pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
