//! One typed state of a run, folded from its event stream.
//!
//! The journal stores events and knows nothing of what they mean; this is
//! the one place that does. `resume` and `rollback` start the engine from a
//! replayed [`RunState`], `status` and `runbook approve` read one, the
//! `--report` listener folds the live stream into one, and the approval
//! waiter reads the decisions of the live one. So the report and
//! `status --format json` have one shape ([`RunState::to_json`]), and a
//! rule such as "a run that started unwinding after success is a rollback"
//! is written once.
//!
//! It also holds what a person reading the record needs beyond what resume
//! does (params with the secret ones as `***`, each attempt's times, who
//! decided what, what each waiting step waits for, how many processes the
//! run took): the record is told from this one fold, never by a second
//! reader of the journal.
//!
//! A run holds one [`StepState`] per step for its whole length, so a step
//! is kept small: what few steps have is boxed apart, times are held as
//! milliseconds and equal results are shared.

use std::collections::{HashMap, HashSet};

use indexmap::IndexMap;
use serde_json::{json, Map, Value as Json};

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use crate::events::{Evaluation, Event, Listener, RunStatus, StepStatus, Verdict, WaitingDetail};
use crate::runbook::Runbook;

/// What is known of one step (or an `on_failure`/`finally` step).
#[derive(Debug, Clone)]
pub struct StepRecord {
    pub status: StepStatus,
    pub attempts: u32,
    /// `outputs` and kind-specific values (`stdout`, `exit_code`): shared,
    /// as most steps of a long run finish with the same few.
    pub result: Arc<Map<String, Json>>,
    pub error: Option<String>,
    /// Order of completion among main steps.
    pub finished_seq: Option<u64>,
    pub duration_ms: u64,
    pub rollback: Option<Box<RollbackRecord>>,
}

/// `==` on JSON, but numbers must also be written the same: `0.0` and
/// `-0.0` are equal to serde_json and show differently. What decides that
/// two steps may share one value.
pub(crate) fn identical(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => x.to_string() == y.to_string(),
        (Json::Array(x), Json::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| identical(a, b))
        }
        (Json::Object(x), Json::Object(y)) => identical_maps(x, y),
        _ => a == b,
    }
}

fn identical_maps(x: &Map<String, Json>, y: &Map<String, Json>) -> bool {
    x.len() == y.len()
        && x.iter()
            .all(|(k, v)| y.get(k).is_some_and(|w| identical(v, w)))
}

/// The result of a step with none, shared by every such step.
pub fn empty_result() -> Arc<Map<String, Json>> {
    static EMPTY: OnceLock<Arc<Map<String, Json>>> = OnceLock::new();
    EMPTY.get_or_init(Arc::default).clone()
}

#[derive(Debug, Clone)]
pub struct RollbackRecord {
    pub status: StepStatus,
    pub attempts: u32,
    pub error: Option<String>,
}

impl Default for StepRecord {
    fn default() -> Self {
        StepRecord::new()
    }
}

impl StepRecord {
    pub fn new() -> StepRecord {
        StepRecord {
            status: StepStatus::NotStarted,
            attempts: 0,
            result: empty_result(),
            error: None,
            finished_seq: None,
            duration_ms: 0,
            rollback: None,
        }
    }

    /// Whether the step began, so has something to roll back: it has a
    /// place in the completion order (it ran), or it was cancelled running.
    pub fn began(&self) -> bool {
        self.finished_seq.is_some() || self.status == StepStatus::Cancelled
    }

    /// The value templates see as `steps.<id>` (or `step` in a rollback body).
    pub fn template_value(&self) -> Json {
        let mut m = (*self.result).clone();
        m.entry("outputs").or_insert_with(|| json!({}));
        m.insert("status".into(), json!(self.status.as_str()));
        m.insert("attempts".into(), json!(self.attempts));
        if let Some(e) = &self.error {
            m.insert("error".into(), json!(e));
        }
        Json::Object(m)
    }
}

/// A gate's evaluation as `status` and the report show it.
#[derive(Debug, Clone, PartialEq)]
pub struct EvaluationRecord {
    pub attempt: u32,
    pub sample: i64,
    pub verdict: Verdict,
    pub value: Option<f64>,
    pub detail: Evaluation,
}

/// One journaled evaluation of a gate.
#[derive(Debug, Clone, PartialEq)]
pub struct GateSample {
    pub sample: i64,
    pub verdict: Verdict,
    pub value: Option<f64>,
    pub first_at_ms: u64,
}

/// A run's flag writes, folded from its `flag_previous` events (and kept
/// current by the flag executor with exact values): what a restore must put
/// back, and what it must find there before it may.
#[derive(Debug, Clone, Default)]
pub struct FlagLedger {
    /// The value before the first write, by writer label (a re-run or a
    /// retry never takes its own earlier write for the previous value).
    pub previous: HashMap<String, Option<Json>>,
    /// Each flag's value before this run first wrote it.
    pub before_run: HashMap<String, Option<Json>>,
    /// The last write this run made (or began: its outcome may be unknown)
    /// to each flag: (the value before it, the value written).
    pub last: HashMap<String, (Option<Json>, Option<Json>)>,
    /// Flags a rollback body wrote in the run's unwind (a step-down), kept
    /// across `runbook rollback` finishing that unwind.
    pub written_in_unwind: HashSet<String>,
}

impl FlagLedger {
    pub fn record(
        &mut self,
        label: &str,
        flag: &str,
        previous: Option<&Json>,
        value: Option<&Json>,
    ) -> (bool, bool) {
        self.record_correcting(label, flag, previous, value, (false, false))
    }

    /// Records a write; `correct` says which of the label's and the flag's
    /// first entries this same write created and must now replace (the
    /// store found, atomically, another previous value than it read first:
    /// someone wrote between). Returns which entries this write created.
    pub fn record_correcting(
        &mut self,
        label: &str,
        flag: &str,
        previous: Option<&Json>,
        value: Option<&Json>,
        correct: (bool, bool),
    ) -> (bool, bool) {
        let first_label = !self.previous.contains_key(label);
        if first_label || correct.0 {
            self.previous.insert(label.to_string(), previous.cloned());
        }
        let first_flag = !self.before_run.contains_key(flag);
        if first_flag || correct.1 {
            self.before_run.insert(flag.to_string(), previous.cloned());
        }
        self.last
            .insert(flag.to_string(), (previous.cloned(), value.cloned()));
        if label.contains(".rollback.") {
            self.written_in_unwind.insert(flag.to_string());
        }
        (first_label, first_flag)
    }

    /// Every value, for resolving secret references after a replay.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Json> {
        let previous = self.previous.values_mut().flatten();
        let before = self.before_run.values_mut().flatten();
        let last = self
            .last
            .values_mut()
            .flat_map(|(p, v)| p.iter_mut().chain(v.iter_mut()));
        previous.chain(before).chain(last)
    }
}

/// One decision on an approval (`label` is `id` or `id.rollback.N`).
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub label: String,
    pub by: String,
    pub approved: bool,
    pub comment: Option<String>,
    pub at: String,
    pub proof: Option<crate::events::Proof>,
}

/// A decision the engine refused (it does not count).
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub label: String,
    pub by: String,
    pub approved: bool,
    pub why: String,
    pub at: String,
}

/// One attempt of a step, with its times.
#[derive(Debug, Clone, PartialEq)]
pub struct Try {
    pub attempt: u32,
    pub started_at: Stamp,
    pub finished_at: Option<Stamp>,
    /// `failed`, `succeeded`, `cancelled`, or `engine_stopped` when the
    /// process died under it; `None` while it runs.
    pub outcome: Option<&'static str>,
    pub error: Option<String>,
}

/// An event's time. Held as milliseconds when its text is what
/// `format_rfc3339_millis` makes of them (the journal's and the live
/// stream's form: 8 bytes instead of a 24-byte string on the heap, four
/// times a step); any other text is kept as it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stamp {
    Millis(u64),
    Text(Box<str>),
}

impl Stamp {
    pub fn new(at: &str) -> Stamp {
        let millis = humantime::parse_rfc3339(at)
            .ok()
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .and_then(|d| u64::try_from(d.as_millis()).ok());
        match millis {
            Some(ms) if Stamp::Millis(ms).to_string() == at => Stamp::Millis(ms),
            _ => Stamp::Text(at.into()),
        }
    }
}

impl std::fmt::Display for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stamp::Millis(ms) => {
                let t = SystemTime::UNIX_EPOCH + Duration::from_millis(*ms);
                write!(f, "{}", humantime::format_rfc3339_millis(t))
            }
            Stamp::Text(t) => f.write_str(t),
        }
    }
}

impl serde::Serialize for Stamp {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_str(self)
    }
}

/// A step (or a rollback body: `label` is `id.rollback.N`) waiting, and
/// since when.
#[derive(Debug, Clone)]
pub struct WaitingState {
    pub label: String,
    /// The step it belongs to.
    pub step: String,
    pub on: String,
    pub detail: Option<WaitingDetail>,
    pub since: String,
}

/// A step as `status` and the report show it (its id is its key in
/// [`RunState::steps`]). What few steps have is in [`StepMore`], so a step
/// without it costs a pointer.
#[derive(Debug, Clone)]
pub struct StepState {
    /// `steps`, `on_failure` or `finally`.
    pub phase: &'static str,
    /// The last finished attempt's record (status `not_started` until then).
    pub record: StepRecord,
    /// Started and not finished (so far as the events say).
    pub running: bool,
    /// (attempt, attempts) of the attempt running or last run.
    pub attempt: Option<(u32, u32)>,
    pub started_at: Option<Stamp>,
    pub finished_at: Option<Stamp>,
    /// Every attempt, across processes, oldest first.
    pub tries: Vec<Try>,
    pub more: Option<Box<StepMore>>,
}

/// What a step has only when it waits, rolls back, gates or is named.
#[derive(Debug, Clone, Default)]
pub struct StepMore {
    pub waiting_on: Option<String>,
    pub rollback_running: bool,
    /// The rollback body that last started, while the rollback has not
    /// succeeded: bodies run in order, so the ones before it are done and a
    /// resumed or retried list starts here (a step-down does not go back up).
    pub rollback_body: Option<usize>,
    /// Rollbacks of earlier episodes that failed or were stopped, oldest
    /// first (`runbook rollback` ran them again).
    pub rollback_history: Vec<RollbackRecord>,
    /// Display only: the runbook's `name` and `stage` of the step.
    pub name: Option<String>,
    pub stage: Option<String>,
    /// A gate's evaluations, every attempt's, oldest first.
    pub evaluations: Vec<EvaluationRecord>,
    pub rollback_started_at: Option<Stamp>,
    pub rollback_finished_at: Option<Stamp>,
}

/// Nothing of a step's [`StepMore`].
static NO_MORE: StepMore = StepMore {
    waiting_on: None,
    rollback_running: false,
    rollback_body: None,
    rollback_history: Vec::new(),
    name: None,
    stage: None,
    evaluations: Vec::new(),
    rollback_started_at: None,
    rollback_finished_at: None,
};

impl StepState {
    fn new(phase: &'static str) -> StepState {
        StepState {
            phase,
            record: StepRecord::new(),
            running: false,
            attempt: None,
            started_at: None,
            finished_at: None,
            tries: Vec::new(),
            more: None,
        }
    }

    /// What few steps have (all empty when the step has none of it).
    pub fn more(&self) -> &StepMore {
        self.more.as_deref().unwrap_or(&NO_MORE)
    }

    fn more_mut(&mut self) -> &mut StepMore {
        self.more.get_or_insert_with(Box::default)
    }

    /// `attempt/attempts` of the attempt running or last run.
    pub fn attempt_text(&self) -> Option<String> {
        self.attempt.map(|(a, n)| format!("{a}/{n}"))
    }

    fn clear_waiting_on(&mut self) {
        if let Some(m) = &mut self.more {
            m.waiting_on = None;
        }
    }

    /// Ends the attempt still open (if any).
    fn end_try(&mut self, at: &str, outcome: &'static str, error: Option<&String>) {
        if let Some(t) = self.tries.last_mut().filter(|t| t.finished_at.is_none()) {
            t.finished_at = Some(Stamp::new(at));
            t.outcome = Some(outcome);
            t.error = error.cloned();
        }
    }

    /// `running`, or the recorded status.
    pub fn display_status(&self) -> &'static str {
        if self.running {
            "running"
        } else {
            self.record.status.as_str()
        }
    }
}

/// A run as its events tell it.
#[derive(Debug, Clone, Default)]
pub struct RunState {
    pub run_id: String,
    pub runbook: String,
    pub fingerprint: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<u64>,
    /// The last `run_finished`, unless a rollback reopened the run since.
    pub status: Option<RunStatus>,
    /// Every step of the runbook in file order (then any the events name).
    pub steps: IndexMap<String, StepState>,
    pub decisions: Vec<Decision>,
    /// Decisions the engine refused, in order.
    pub refusals: Vec<Refusal>,
    /// The run started unwinding; the failed step, if a step failed.
    pub unwinding: Option<Option<String>>,
    /// It unwinds because of a signal, not a failure.
    pub interrupted: bool,
    /// An unwind began after the run had ended (`runbook rollback`): an
    /// emergency rollback, or the finishing of a failed or cut-short unwind.
    pub rollback_after_success: bool,
    /// What this run wrote to flags, and what they were before.
    pub flags: FlagLedger,
    /// The samples of each gate's latest attempt (its number, the samples
    /// in order): a resumed gate continues from them.
    pub gate_samples: HashMap<String, (u32, Vec<GateSample>)>,
    /// Main steps finished so far (the completion counter).
    pub seq: u64,
    /// The result last folded in: the next step's, when equal, shares it.
    last_result: Option<Arc<Map<String, Json>>>,
    succeeded_once: bool,
    /// The public params as `run_started` recorded them.
    pub params: Map<String, Json>,
    /// Names of the `secret: true` params (shown as `***`).
    pub secret_params: Vec<String>,
    /// Steps with `continue_on_failure`: their failures are tolerated.
    pub tolerant: HashSet<String>,
    /// What waits, by label, in the order it began waiting.
    pub waiting: IndexMap<String, WaitingState>,
    /// Processes that ran the run: its start, then each `resume`/`rollback`.
    pub processes: u32,
    /// The time of `run_started` (the header's time has whole seconds).
    pub first_at: Option<String>,
    /// Process groups of attempts still running, by attempt label (`pgid`
    /// and its leader): what an engine that died left behind, for `resume`
    /// to kill before it runs those attempts again.
    pub spawned: IndexMap<String, (u32, crate::process_group::Leader)>,
}

impl RunState {
    /// An empty state with every step of `rb` not started.
    pub fn new(run_id: &str, rb: Option<&Runbook>) -> RunState {
        let mut s = RunState {
            run_id: run_id.to_string(),
            ..RunState::default()
        };
        if let Some(rb) = rb {
            s.runbook = rb.name.clone();
            s.secret_params = rb
                .params
                .iter()
                .filter(|p| p.secret)
                .map(|p| p.name.clone())
                .collect();
            let lists = [
                ("steps", &rb.steps),
                ("on_failure", &rb.on_failure),
                ("finally", &rb.finally),
            ];
            // Exactly: grown by doubling, a long runbook's map holds up to
            // twice the room it needs for the whole run.
            s.steps
                .reserve_exact(lists.iter().map(|(_, l)| l.len()).sum::<usize>());
            for (phase, list) in lists {
                for step in list {
                    let mut st = StepState::new(phase);
                    if step.name.is_some() || step.stage.is_some() {
                        let more = st.more_mut();
                        more.name.clone_from(&step.name);
                        more.stage.clone_from(&step.stage);
                    }
                    s.steps.insert(step.id.clone(), st);
                    if step.continue_on_failure {
                        s.tolerant.insert(step.id.clone());
                    }
                }
            }
        }
        s
    }

    /// Replays a journal's events.
    pub fn replay<'a>(
        run_id: &str,
        rb: Option<&Runbook>,
        events: impl IntoIterator<Item = (&'a str, &'a Event)>,
    ) -> RunState {
        let mut s = RunState::new(run_id, rb);
        for (at, e) in events {
            s.apply(at, e);
        }
        s
    }

    fn step(&mut self, id: &str) -> &mut StepState {
        // No key allocated per event: only a step first seen gets one.
        let i = match self.steps.get_index_of(id) {
            Some(i) => i,
            None => {
                self.steps
                    .insert_full(id.to_string(), StepState::new("steps"))
                    .0
            }
        };
        &mut self.steps[i]
    }

    /// Folds one event in; `at` is its RFC 3339 time.
    pub fn apply(&mut self, at: &str, e: &Event) {
        match e {
            Event::RunStarted {
                run_id,
                runbook,
                params,
                ..
            } => {
                self.run_id.clone_from(run_id);
                self.runbook.clone_from(runbook);
                self.started_at.get_or_insert_with(|| at.to_string());
                self.first_at.get_or_insert_with(|| at.to_string());
                if let Json::Object(p) = params {
                    self.params.clone_from(p);
                }
                self.processes += 1;
            }
            Event::Resumed { .. } => self.processes += 1,
            Event::StepStarted {
                step,
                attempt,
                attempts,
            } => {
                self.waiting.shift_remove(step);
                let s = self.step(step);
                // An attempt still open when another starts: the engine died under it.
                s.end_try(at, "engine_stopped", None);
                if s.tries.is_empty() {
                    // Most steps make one attempt: not the four a first push reserves.
                    s.tries.reserve_exact(1);
                }
                let started = Stamp::new(at);
                s.started_at.get_or_insert_with(|| started.clone());
                s.tries.push(Try {
                    attempt: *attempt,
                    started_at: started,
                    finished_at: None,
                    outcome: None,
                    error: None,
                });
                s.running = true;
                s.attempt = Some((*attempt, *attempts));
                s.clear_waiting_on();
            }
            Event::Waiting { step, on, detail } => {
                let owner = step.split(".rollback.").next().unwrap_or(step).to_string();
                // A rollback body's wait belongs to its step, not a step of its own.
                if owner == *step {
                    self.step(step).more_mut().waiting_on = Some(on.clone());
                }
                let since = self
                    .waiting
                    .get(step)
                    .map_or_else(|| at.to_string(), |w| w.since.clone());
                self.waiting.insert(
                    step.clone(),
                    WaitingState {
                        label: step.clone(),
                        step: owner,
                        on: on.clone(),
                        detail: detail.clone(),
                        since,
                    },
                );
            }
            Event::Spawned {
                step,
                pgid,
                sid,
                started,
                started_until,
                boot,
            } => {
                let leader = crate::process_group::Leader {
                    sid: *sid,
                    started: *started,
                    started_until: started_until.unwrap_or(*started),
                    boot: boot
                        .as_deref()
                        .and_then(|b| u128::from_str_radix(b, 16).ok())
                        .unwrap_or(0),
                };
                self.spawned.insert(step.clone(), (*pgid, leader));
            }
            Event::AttemptFailed {
                step,
                attempt,
                error,
                ..
            } => {
                self.spawned.shift_remove(step);
                if let Some(s) = self.steps.get_mut(step) {
                    if s.tries.last().is_some_and(|t| t.attempt == *attempt) {
                        s.end_try(at, "failed", Some(error));
                    }
                }
            }
            Event::Approval {
                step,
                by,
                approved,
                comment,
                proof,
            } => self.decisions.push(Decision {
                label: step.clone(),
                by: by.clone(),
                approved: *approved,
                comment: comment.clone(),
                at: at.to_string(),
                proof: proof.as_deref().cloned(),
            }),
            Event::ApprovalRefused {
                step,
                by,
                approved,
                why,
            } => self.refusals.push(Refusal {
                label: step.clone(),
                by: by.clone(),
                approved: *approved,
                why: why.clone(),
                at: at.to_string(),
            }),
            Event::FlagPrevious {
                step,
                flag,
                previous,
                value,
            } => {
                self.flags
                    .record(step, flag, previous.as_ref(), value.as_ref());
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
                self.spawned.shift_remove(step);
                let extra = match extra {
                    Json::Object(m) => Some(m),
                    _ => None,
                };
                let mut result = Map::with_capacity(extra.map_or(0, Map::len) + 1);
                if let Some(m) = extra {
                    result.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                result.insert("outputs".into(), outputs.clone());
                let result = match &self.last_result {
                    Some(last) if identical_maps(last, &result) => last.clone(),
                    _ => {
                        let result = Arc::new(result);
                        self.last_result = Some(result.clone());
                        result
                    }
                };
                // As the engine counts them: a step that ran (succeeded, or
                // failed after it started). Skipped, not started, cancelled
                // and a failed `when` have no place in the completion order,
                // and are never rolled back.
                let began = self.steps.get(step).is_some_and(|s| s.started_at.is_some());
                let counts = *status == StepStatus::Succeeded
                    || (*status == StepStatus::Failed && (*attempts > 0 || began));
                let finished_seq = counts.then(|| {
                    self.seq += 1;
                    self.seq
                });
                // A gate's samples belong to the attempt that just ended.
                self.gate_samples.remove(step);
                self.waiting.shift_remove(step);
                let s = self.step(step);
                s.end_try(at, status.as_str(), error.as_ref());
                let rollback = s.record.rollback.take();
                s.record = StepRecord {
                    status: *status,
                    attempts: *attempts,
                    result,
                    error: error.clone(),
                    finished_seq,
                    duration_ms: *duration_ms,
                    rollback,
                };
                s.running = false;
                s.clear_waiting_on();
                s.finished_at = Some(Stamp::new(at));
            }
            Event::UnwindStarted { failed_step, .. } => {
                if self.status.is_some() {
                    self.gate_samples.clear();
                    // `runbook rollback` reopens an ended run: a new episode.
                    // Rollbacks that failed are run again (their attempts
                    // stay in the history), `finally` runs again.
                    self.rollback_after_success = true;
                    // Only `runbook rollback`, a process of its own, reopens a run.
                    self.processes += 1;
                    for st in self.steps.values_mut() {
                        if st
                            .record
                            .rollback
                            .as_ref()
                            .is_some_and(|r| r.status != StepStatus::Succeeded)
                        {
                            if let Some(r) = st.record.rollback.take() {
                                let more = st.more_mut();
                                more.rollback_history.push(*r);
                                more.rollback_started_at = None;
                                more.rollback_finished_at = None;
                            }
                        }
                        if st.phase == "finally" {
                            st.record = StepRecord::new();
                            st.finished_at = None;
                            st.started_at = None;
                            st.attempt = None;
                        }
                    }
                } else if self.succeeded_once {
                    self.rollback_after_success = true;
                } else if failed_step.is_none() {
                    self.interrupted = true;
                }
                self.status = None;
                self.unwinding = Some(failed_step.clone());
            }
            Event::RollbackStarted { step, body, .. } => {
                let bodies = format!("{step}.rollback.");
                self.waiting.retain(|label, _| !label.starts_with(&bodies));
                // Bodies before this one have ended.
                self.spawned.retain(|label, _| !label.starts_with(&bodies));
                let s = self.step(step).more_mut();
                s.rollback_started_at.get_or_insert_with(|| Stamp::new(at));
                s.rollback_finished_at = None;
                s.rollback_running = true;
                s.rollback_body = Some(*body);
            }
            Event::RollbackFinished {
                step,
                status,
                attempts,
                error,
                ..
            } => {
                let bodies = format!("{step}.rollback.");
                self.spawned.retain(|label, _| !label.starts_with(&bodies));
                self.gate_samples
                    .retain(|label, _| !label.starts_with(&bodies));
                self.waiting.retain(|label, _| !label.starts_with(&bodies));
                let s = self.step(step);
                let more = s.more_mut();
                more.rollback_running = false;
                more.rollback_finished_at = Some(Stamp::new(at));
                // A failed list is retried from the body that failed.
                if *status == StepStatus::Succeeded {
                    more.rollback_body = None;
                }
                s.record.rollback = Some(Box::new(RollbackRecord {
                    status: *status,
                    attempts: *attempts,
                    error: error.clone(),
                }));
            }
            Event::RunFinished {
                status,
                duration_ms,
            } => {
                self.status = Some(*status);
                self.waiting.clear();
                self.duration_ms = Some(*duration_ms);
                self.finished_at = Some(at.to_string());
                if *status == RunStatus::Succeeded {
                    self.succeeded_once = true;
                    self.unwinding = None;
                }
            }
            Event::GateSample {
                step,
                attempt,
                sample,
                passed,
                value,
                first_at_ms,
                verdict,
                detail,
            } => {
                let verdict = verdict.unwrap_or(if *passed {
                    Verdict::Pass
                } else {
                    Verdict::Fail
                });
                if let Some(d) = detail {
                    let st = self.step(step).more_mut();
                    st.evaluations.push(EvaluationRecord {
                        attempt: *attempt,
                        sample: *sample,
                        verdict,
                        value: *value,
                        detail: (**d).clone(),
                    });
                }
                let entry = self
                    .gate_samples
                    .entry(step.clone())
                    .or_insert_with(|| (*attempt, Vec::new()));
                // Another attempt samples anew.
                if entry.0 != *attempt {
                    *entry = (*attempt, Vec::new());
                }
                entry.1.push(GateSample {
                    sample: *sample,
                    verdict,
                    value: *value,
                    first_at_ms: *first_at_ms,
                });
            }
            Event::Output { .. } | Event::PhaseStarted { .. } | Event::Signal { .. } => {}
        }
    }

    /// A step's record once it finished (or was cancelled), as resume needs it.
    pub fn finished(&self, id: &str) -> Option<&StepRecord> {
        self.steps
            .get(id)
            .filter(|s| s.finished_at.is_some())
            .map(|s| &s.record)
    }

    /// Steps that started and never finished: the engine died under them.
    pub fn died_running(&self) -> HashSet<String> {
        self.steps
            .iter()
            .filter(|(_, s)| s.running && s.finished_at.is_none())
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Main steps that started, have a rollback, and whose rollback has not
    /// succeeded, last first: each id with the error of its rollback (`None`
    /// when it never ran). What `runbook rollback` would still run.
    pub fn unfinished_rollbacks(&self, rb: &Runbook) -> Vec<(String, Option<String>)> {
        rb.steps
            .iter()
            .rev()
            .filter(|step| !matches!(step.rollback, crate::runbook::Rollback::None))
            .filter_map(|step| {
                let st = self.steps.get(&step.id)?;
                let r = &st.record;
                let started = r.began() || st.running;
                match &r.rollback {
                    Some(done) if done.status == StepStatus::Succeeded => None,
                    Some(done) => Some((
                        step.id.clone(),
                        done.error.clone().or(Some("failed".into())),
                    )),
                    None if started => Some((step.id.clone(), None)),
                    None => None,
                }
            })
            .collect()
    }

    /// Approvers of `label` so far, in order, without repeats.
    pub fn approvers(&self, label: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for d in self
            .decisions
            .iter()
            .filter(|d| d.label == label && d.approved)
        {
            if !out.contains(&d.by) {
                out.push(d.by.clone());
            }
        }
        out
    }

    /// The shape `status --format json` and the report share.
    pub fn to_json(&self) -> Json {
        self.to_json_in(None)
    }

    /// [`RunState::to_json`], with the commands that answer a waiting step
    /// naming `state_dir` (the one the reader used) instead of the engine's.
    pub fn to_json_in(&self, state_dir: Option<&str>) -> Json {
        serde_json::to_value(Report {
            state: self,
            summary: self.summary_json(state_dir),
        })
        .unwrap_or_default()
    }

    /// [`RunState::to_json`] as something to serialise, each step made
    /// JSON only as it is written: the whole run as one `Json` tree took ten
    /// times the text's size (50 MiB for a 10,000-step report). `status`
    /// stands in when the run has none of its own.
    pub fn report(&self, status: &'static str) -> Report<'_> {
        let mut summary = self.summary_json(None);
        if self.status.is_none() {
            summary.insert("status".into(), json!(status));
        }
        Report {
            state: self,
            summary,
        }
    }

    /// Everything [`RunState::to_json_in`] holds but `steps`, in its order.
    fn summary_json(&self, state_dir: Option<&str>) -> Map<String, Json> {
        let failed_step = self.unwinding.clone().flatten();
        let error = failed_step
            .as_ref()
            .and_then(|id| self.steps.get(id))
            .and_then(|s| s.record.error.clone());
        let summary = json!({
            "run_id": self.run_id,
            "runbook": self.runbook,
            "fingerprint": self.fingerprint,
            "status": self.status.map(RunStatus::as_str),
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_ms": self.duration_ms,
            "total_duration_ms": self.total_duration_ms(),
            "processes": self.processes.max(1),
            "params": self.params_json(),
            "failed_step": failed_step,
            "error": error,
            "tolerated_failures": self.tolerated(),
            "waiting": self.waiting_json(state_dir),
        });
        match summary {
            Json::Object(m) => m,
            _ => Map::new(),
        }
    }

    /// The params, secret ones as `***` (their values are never journaled).
    pub fn params_json(&self) -> Json {
        let mut m = self.params.clone();
        for name in &self.secret_params {
            m.insert(name.clone(), json!("***"));
        }
        Json::Object(m)
    }

    /// From the first process's start to the end (across `resume`s), while
    /// [`RunState::duration_ms`] is the last process's own time.
    pub fn total_duration_ms(&self) -> Option<u64> {
        let parse = |t: &str| humantime::parse_rfc3339_weak(t).ok();
        let start = parse(self.first_at.as_deref().or(self.started_at.as_deref())?)?;
        let end = parse(self.finished_at.as_deref()?)?;
        Some(crate::events::millis(
            end.duration_since(start).unwrap_or_default(),
        ))
    }

    /// Steps that failed under `continue_on_failure`, in file order.
    pub fn tolerated(&self) -> Vec<String> {
        self.steps
            .iter()
            .filter(|(id, s)| s.record.status == StepStatus::Failed && self.tolerant.contains(*id))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// What follows the status in a run's last line: ` (1 step failed,
    /// tolerated: x)`, or nothing.
    pub fn tolerated_note(&self) -> String {
        match self.tolerated().as_slice() {
            [] => String::new(),
            [one] => format!(" (1 step failed, tolerated: {one})"),
            many => format!(
                " ({} steps failed, tolerated: {})",
                many.len(),
                many.join(", ")
            ),
        }
    }

    /// Every step waiting for people (approvals; a paused gate later), as
    /// `status` shows them: who may answer, since and until when, and the
    /// commands that answer.
    pub fn waiting_json(&self, state_dir: Option<&str>) -> Vec<Json> {
        let now = SystemTime::now();
        self.waiting
            .values()
            .filter_map(|w| {
                let Some(WaitingDetail::Approval(a)) = &w.detail else {
                    return None;
                };
                let st = self.steps.get(&w.step);
                let dir = state_dir.unwrap_or(&a.state_dir);
                let pending = a.pending();
                let key = if a.signed { " --key PATH" } else { "" };
                let waited = humantime::parse_rfc3339_weak(&w.since)
                    .ok()
                    .and_then(|t| now.duration_since(t).ok())
                    .map(crate::events::millis);
                Some(json!({
                    "kind": if a.paused_gate.is_some() { "paused_gate" } else { "approval" },
                    "evaluations": a.paused_gate,
                    "step": w.step,
                    "label": w.label,
                    "name": st.and_then(|s| s.more().name.clone()),
                    "stage": st.and_then(|s| s.more().stage.clone()),
                    "message": a.message,
                    "waiting_on": w.on,
                    "approvers": a.approvers,
                    "may_approve": a.eligible,
                    "pending": pending,
                    "required": a.required,
                    "approved_by": a.approved_by,
                    "started_by": a.started_by,
                    "allow_self_approval": a.allow_self_approval,
                    "waiting_since": w.since,
                    "waited_ms": waited,
                    "deadline": a.deadline,
                    "signed": a.signed,
                    "approve_command": answer_command(dir, &self.run_id, &w.label, pending.as_deref(), false) + key,
                    "reject_command": answer_command(dir, &self.run_id, &w.label, pending.as_deref(), true) + key,
                }))
            })
            .collect()
    }

    fn step_json(&self, id: &str, s: &StepState) -> Json {
        let r = &s.record;
        let more = s.more();
        let mut m = Map::new();
        m.insert("id".into(), json!(id));
        m.insert("phase".into(), json!(s.phase));
        m.insert("status".into(), json!(s.display_status()));
        m.insert("attempts".into(), json!(r.attempts));
        m.insert(
            "outputs".into(),
            r.result
                .get("outputs")
                .cloned()
                .unwrap_or_else(|| json!({})),
        );
        if let Some(e) = &r.error {
            m.insert("error".into(), json!(e));
        }
        for (k, v) in [("name", &more.name), ("stage", &more.stage)] {
            if let Some(v) = v {
                m.insert(k.into(), json!(v));
            }
        }
        if !s.tries.is_empty() {
            let tries: Vec<Json> = s
                .tries
                .iter()
                .map(|t| {
                    json!({
                        "attempt": t.attempt,
                        "started_at": t.started_at,
                        "finished_at": t.finished_at,
                        "outcome": t.outcome,
                        "error": t.error,
                    })
                })
                .collect();
            m.insert("attempt_log".into(), Json::Array(tries));
        }
        if let Some(WaitingDetail::Gate(g)) = self.waiting.get(id).and_then(|w| w.detail.as_ref()) {
            m.insert(
                "gate".into(),
                json!({
                    "taken": g.taken,
                    "samples": g.samples,
                    "failures": g.failures,
                    "failure_limit": g.failure_limit,
                    "interval_ms": g.interval_ms,
                    "next_sample_at": g.next_at,
                }),
            );
        }
        if !more.evaluations.is_empty() {
            let list: Vec<Json> = more
                .evaluations
                .iter()
                .map(|e| {
                    let mut v = json!({
                        "attempt": e.attempt,
                        "sample": e.sample,
                        "verdict": e.verdict.as_str(),
                        "value": e.value,
                        "time": e.detail.time,
                        "threshold": e.detail.threshold,
                        "text": e.detail.text,
                    });
                    if let Json::Object(o) = &mut v {
                        if e.detail.dry_run {
                            o.insert("dry_run".into(), json!(true));
                        }
                        for (k, x) in [
                            ("p_value", e.detail.p_value),
                            ("baseline_median", e.detail.baseline_median),
                            ("canary_median", e.detail.canary_median),
                        ] {
                            if let Some(x) = x {
                                o.insert(k.into(), json!(x));
                            }
                        }
                    }
                    v
                })
                .collect();
            m.insert("evaluations".into(), Json::Array(list));
        }
        if s.finished_at.is_some() {
            m.insert("duration_ms".into(), json!(r.duration_ms));
        }
        for (k, v) in [
            ("attempt", s.attempt_text()),
            ("waiting_on", more.waiting_on.clone()),
            ("started_at", s.started_at.as_ref().map(Stamp::to_string)),
            ("finished_at", s.finished_at.as_ref().map(Stamp::to_string)),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), json!(v));
            }
        }
        let approvals: Vec<Json> = self
            .decisions
            .iter()
            .filter(|d| d.label == id || d.label.starts_with(&format!("{id}.rollback.")))
            .map(|d| {
                let mut v = json!({ "by": d.by, "approved": d.approved, "comment": d.comment, "at": d.at, "step": d.label });
                if let (Some(p), Json::Object(o)) = (&d.proof, &mut v) {
                    o.insert("os_user".into(), json!(p.os_user));
                    o.insert("host".into(), json!(p.host));
                    o.insert("verified".into(), json!(p.signature.is_some()));
                    if p.signature.is_some() {
                        o.insert("key".into(), json!(p.key));
                        o.insert("signature".into(), json!(p.signature));
                    }
                }
                v
            })
            .collect();
        if !approvals.is_empty() {
            m.insert("approvals".into(), Json::Array(approvals));
        }
        let refused: Vec<Json> = self
            .refusals
            .iter()
            .filter(|d| d.label == id || d.label.starts_with(&format!("{id}.rollback.")))
            .map(|d| json!({ "by": d.by, "approved": d.approved, "why": d.why, "at": d.at, "step": d.label }))
            .collect();
        if !refused.is_empty() {
            m.insert("refused_approvals".into(), Json::Array(refused));
        }
        if more.rollback_running {
            m.insert(
                "rollback".into(),
                json!({ "status": "running", "started_at": more.rollback_started_at }),
            );
        } else if let Some(rb) = &r.rollback {
            m.insert(
                "rollback".into(),
                json!({
                    "status": rb.status.as_str(),
                    "attempts": rb.attempts,
                    "error": rb.error,
                    "started_at": more.rollback_started_at,
                    "finished_at": more.rollback_finished_at,
                }),
            );
        }
        if !more.rollback_history.is_empty() {
            m.insert(
                "rollback_history".into(),
                more.rollback_history
                    .iter()
                    .map(|rb| json!({ "status": rb.status.as_str(), "attempts": rb.attempts, "error": rb.error }))
                    .collect(),
            );
        }
        Json::Object(m)
    }
}

/// The state of the run in progress, kept current from the bus and read by
/// executors (the approval waiter counts the decisions it already has).
pub type Shared = Arc<Mutex<RunState>>;

/// Folds the live event stream into a [`Shared`] state.
pub struct Follow(pub Shared);

impl Listener for Follow {
    fn on(&mut self, at: SystemTime, event: &Event) {
        let at = humantime::format_rfc3339_millis(at).to_string();
        let mut s = match self.0.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        s.apply(&at, event);
    }
}

/// The command that answers a waiting approval `label` of `run_id`:
/// `runbook approve RUN LABEL --as NAME [--reject] --state-dir DIR`, with
/// the one approver still awaited as NAME when there is exactly one, else
/// `NAME` for the reader to fill in. The state dir is always named, so the
/// command works from any directory.
pub fn answer_command(
    state_dir: &str,
    run_id: &str,
    label: &str,
    pending: Option<&[String]>,
    reject: bool,
) -> String {
    use crate::template::shell_quote;
    let who = match pending {
        Some([one]) => shell_quote(one),
        _ => "NAME".to_string(),
    };
    let mut cmd = format!(
        "runbook approve {} {} --as {who}",
        shell_quote(run_id),
        shell_quote(label)
    );
    if reject {
        cmd.push_str(" --reject");
    }
    if !state_dir.is_empty() {
        cmd.push_str(&format!(" --state-dir {}", shell_quote(state_dir)));
    }
    cmd
}

/// What an unwind that did not finish leaves, and the command that finishes
/// it: the lines `run`, `rollback` and `status` print. `state_dir` is the
/// store's [`flag`](crate::store::Store::flag): the command must reach the
/// run where it is, not in the default state dir.
pub fn way_forward(
    run_id: &str,
    state_dir: &str,
    unfinished: &[(String, Option<String>)],
) -> String {
    let mut out = String::new();
    for (id, error) in unfinished {
        match error {
            Some(e) => out.push_str(&format!("rollback of `{id}` failed: {e}\n")),
            None => out.push_str(&format!("rollback of `{id}` did not run\n")),
        }
    }
    out.push_str(&format!(
        "a person must act: check what these steps left, fix the cause, then `runbook rollback {run_id}{state_dir}` runs the rollbacks that failed or did not run (never one that succeeded)"
    ));
    out
}

/// A run's report, serialised a step at a time ([`RunState::report`]).
pub struct Report<'a> {
    state: &'a RunState,
    summary: Map<String, Json>,
}

impl serde::Serialize for Report<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = ser.serialize_map(Some(self.summary.len() + 1))?;
        for (k, v) in &self.summary {
            map.serialize_entry(k, v)?;
        }
        map.serialize_entry("steps", &Steps(self.state))?;
        map.end()
    }
}

struct Steps<'a>(&'a RunState);

impl serde::Serialize for Steps<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = ser.serialize_seq(Some(self.0.steps.len()))?;
        for (id, s) in &self.0.steps {
            seq.serialize_element(&self.0.step_json(id, s))?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod identical_tests {
    use super::identical;
    use serde_json::json;

    #[test]
    fn equal_json_written_differently_is_not_identical() {
        assert!(identical(
            &json!({"a": [1, "x", {"b": 2.5}]}),
            &json!({"a": [1, "x", {"b": 2.5}]})
        ));
        assert!(json!(0.0) == json!(-0.0));
        assert!(!identical(&json!({"x": 0.0}), &json!({"x": -0.0})));
        assert!(!identical(&json!([1]), &json!([1, 2])));
        assert!(!identical(&json!({"a": 1}), &json!({"b": 1})));
    }
}
