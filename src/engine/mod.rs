//! A run: the scheduler walks the step graph, executors do the work, and
//! every change of state is an [`Event`] on the bus.
//!
//! The scheduler hands out steps whose dependencies are all done (succeeded,
//! skipped, or failed with `continue_on_failure`), lowest file index first,
//! at most `concurrency` at once. The first failure (or a signal) stops new
//! starts, cancels running steps and hands over to the [`unwind`] walk:
//! rollbacks of the failed step, the cancelled steps, then the succeeded ones
//! in reverse completion order, each only after the rollbacks of the steps
//! that depend on it. Then `on_failure`, then `finally`.

mod attempt;
mod background;
mod context;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use minijinja::Value;
use serde_json::{json, Value as Json};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

pub use attempt::{resolve_dur, resolve_num, Failure};
pub use context::Context;

use crate::events::{millis, Bus, Event, RunStatus, StepStatus};
use crate::runbook::{Rollback, Step};
pub use crate::state::{RollbackRecord, RunState, StepRecord};
use crate::steps::{Attempt, RunEnv};
use attempt::{Attempts, Role};

/// What a run came to.
pub struct Outcome {
    pub status: RunStatus,
    pub steps: Vec<StepRecord>,
    pub on_failure: Vec<StepRecord>,
    pub finally: Vec<StepRecord>,
}

/// A step task's result: index, outcome, attempts, milliseconds, and what a
/// failed attempt kept.
type StepDone = (
    usize,
    Result<crate::steps::Outputs, Failure>,
    u32,
    u64,
    Option<crate::steps::Outputs>,
);

/// Signals from outside: each message is one SIGINT/SIGTERM.
pub type Signals = mpsc::UnboundedReceiver<()>;

pub struct Engine {
    env: Arc<RunEnv>,
    bus: Bus,
    ctx: Context,
}

/// What wakes the scheduler: a step task ending, a signal, or news from a
/// background gate.
enum Wake {
    Done(StepDone),
    Signal,
    Gate(usize, crate::steps::GateNews),
}

impl Engine {
    pub fn new(env: Arc<RunEnv>, bus: Bus, ctx: Context) -> Engine {
        Engine { env, bus, ctx }
    }

    /// Runs the runbook, continuing from `prior` (empty for a fresh run).
    pub async fn run(self: Arc<Self>, mut signals: Signals, prior: RunState) -> Outcome {
        let started = Instant::now();
        let rb = self.env.plan.source.clone();
        let n = rb.steps.len();
        let mut records = self.restore(&prior);
        let mut interrupted = prior.interrupted;
        let mut seq = prior.seq;
        let mut failed: Option<usize> = match &prior.unwinding {
            Some(f) => f.as_ref().and_then(|id| rb.step_index(id)),
            // The engine can die after recording a failure (or a cancelled
            // step) and before recording `unwind_started`: the run was
            // already going down, so it still must unwind.
            None => (0..n)
                .filter(|&i| {
                    records[i].status == StepStatus::Failed && !rb.steps[i].continue_on_failure
                })
                .min_by_key(|&i| records[i].finished_seq),
        };
        if failed.is_none() {
            interrupted |= prior.unwinding.is_some()
                || records.iter().any(|r| r.status == StepStatus::Cancelled);
        }
        let died_running = prior.died_running();
        for (i, step) in rb.steps.iter().enumerate() {
            if prior.finished(&step.id).is_some() || !died_running.contains(&step.id) {
                continue;
            }
            if step.on_resume == crate::runbook::OnResume::Fail {
                let rec = &mut records[i];
                rec.status = StepStatus::Failed;
                rec.error = Some("the engine stopped while this step ran, and it has `on_resume: fail`: check its effects by hand".into());
                seq += 1;
                rec.finished_seq = Some(seq);
                self.finish_step(i, &records[i], 0);
                self.ctx.set_step(&step.id, &records[i]);
                if failed.is_none() && !interrupted && !step.continue_on_failure {
                    failed = Some(i);
                }
            } else if failed.is_some() || interrupted {
                // It was running when the engine died and the run is
                // unwinding: nothing new starts, so it counts as cancelled
                // and is rolled back like the other cancelled steps.
                records[i].status = StepStatus::Cancelled;
                self.finish_step(i, &records[i], 0);
                self.ctx.set_step(&step.id, &records[i]);
            }
        }
        let done = |r: &StepRecord, s: &Step| {
            matches!(r.status, StepStatus::Succeeded | StepStatus::Skipped)
                || (r.status == StepStatus::Failed && s.continue_on_failure)
        };
        let mut waiting_on: Vec<usize> = (0..n)
            .map(|i| {
                rb.graph
                    .parents(i)
                    .filter(|&p| !done(&records[p], &rb.steps[p]))
                    .count()
            })
            .collect();
        let mut ready: BTreeSet<usize> = (0..n)
            .filter(|&i| waiting_on[i] == 0 && records[i].status == StepStatus::NotStarted)
            .collect();
        let (cancel_tx, cancel_rx) = watch::channel(false);
        let mut running: JoinSet<StepDone> = JoinSet::new();
        // Which step each task runs, so a task that panicked is still that step's end.
        let mut tasks: HashMap<tokio::task::Id, usize> = HashMap::new();
        let mut signals_seen = 0u32;
        let mut background = background::Background::new(&rb);

        loop {
            while failed.is_none()
                && !interrupted
                && !background.holds()
                && running.len() - background.running() < rb.concurrency
            {
                let Some(i) = ready.pop_first() else { break };
                let step = &rb.steps[i];
                let ctx = self.ctx.for_step(None);
                match when(step, &ctx) {
                    Ok(true) => {}
                    Ok(false) => {
                        records[i].status = StepStatus::Skipped;
                        self.finish_step(i, &records[i], 0);
                        self.ctx.set_step(&step.id, &records[i]);
                        background.ended(i);
                        release(&rb, i, &records, &mut waiting_on, &mut ready);
                        continue;
                    }
                    Err(e) => {
                        records[i].status = StepStatus::Failed;
                        records[i].error = Some(e);
                        self.finish_step(i, &records[i], 0);
                        self.ctx.set_step(&step.id, &records[i]);
                        background.ended(i);
                        if step.continue_on_failure {
                            release(&rb, i, &records, &mut waiting_on, &mut ready);
                        } else {
                            failed = Some(i);
                        }
                        continue;
                    }
                }
                if self.bus.journal_error().is_some() {
                    break;
                }
                records[i].status = StepStatus::Cancelled; // until it reports back
                let me = self.clone();
                let cancel = cancel_rx.clone();
                let link = background.start(i, &records);
                let task = running.spawn(async move {
                    let step = &me.env.runbook().steps[i];
                    fault::maybe_panic(&step.id);
                    let attempts = Attempts {
                        env: &me.env,
                        bus: &me.bus,
                        step_id: &step.id,
                        label: &step.id,
                        role: Role::Step,
                        cancel,
                        partial: std::sync::Mutex::new(None),
                        background: link,
                    };
                    let t = Instant::now();
                    let (r, a) = attempts.run(&step.action, &ctx).await;
                    (i, r, a, millis(t.elapsed()), attempts.take_partial())
                });
                tasks.insert(task.id(), i);
            }
            if running.is_empty() {
                break;
            }
            let ev = tokio::select! {
                Some(joined) = running.join_next_with_id() => match joined {
                    Ok((id, done)) => {
                        tasks.remove(&id);
                        Wake::Done(done)
                    }
                    // A step task that panicked is a bug in the engine: that
                    // step failed, and the run unwinds like any failure.
                    Err(e) => {
                        let Some(i) = tasks.remove(&e.id()) else { continue };
                        let why = if e.is_panic() { "panicked" } else { "was aborted" };
                        Wake::Done((
                            i,
                            Err(Failure::Failed(format!(
                                "internal error: the engine's task for this step {why}; please report it (the step's effects are unknown: check them)"
                            ))),
                            1,
                            0,
                            None,
                        ))
                    }
                },
                Some(()) = signals.recv() => Wake::Signal,
                (i, news) = background.news() => Wake::Gate(i, news),
            };
            match ev {
                Wake::Gate(i, news) => {
                    if background.heard(i, news) {
                        release(&rb, i, &records, &mut waiting_on, &mut ready);
                    }
                }
                Wake::Signal => {
                    signals_seen += 1;
                    if signals_seen > 1 {
                        self.signal_note(
                            signals_seen,
                            "second signal: stopping at once; the steps still running are killed and nothing is rolled back",
                        );
                        // Their tasks end with this function: record them.
                        for &i in tasks.values() {
                            records[i].status = StepStatus::Cancelled;
                            self.finish_step(i, &records[i], 0);
                        }
                        return self.stop_now(records, failed, started);
                    }
                    interrupted = true;
                    self.signal_note(
                        signals_seen,
                        "interrupted: stopping the running steps, then rolling back what ran; a second signal stops at once and leaves the unwind incomplete",
                    );
                    let _ = cancel_tx.send(true);
                }
                Wake::Done((i, result, attempts, ms, kept)) => {
                    let step = &rb.steps[i];
                    let rec = &mut records[i];
                    rec.attempts = attempts;
                    rec.duration_ms = ms;
                    match result {
                        Ok(out) => {
                            rec.status = StepStatus::Succeeded;
                            rec.result = Arc::new(out);
                        }
                        // Cancelled before its first attempt began: it never
                        // started, so it has nothing to roll back.
                        Err(Failure::Cancelled) if attempts == 0 => {
                            rec.status = StepStatus::NotStarted;
                        }
                        Err(Failure::Cancelled) => rec.status = StepStatus::Cancelled,
                        // Its start could not be recorded, so it never began.
                        Err(Failure::Unrecorded) => rec.status = StepStatus::NotStarted,
                        Err(Failure::Failed(e)) => {
                            rec.status = StepStatus::Failed;
                            rec.error = Some(e);
                            rec.result = kept.map_or_else(crate::state::empty_result, Arc::new);
                        }
                    }
                    if matches!(rec.status, StepStatus::Succeeded | StepStatus::Failed) {
                        seq += 1;
                        rec.finished_seq = Some(seq);
                    }
                    self.finish_step(i, &records[i], attempts);
                    self.ctx.set_step(&step.id, &records[i]);
                    if matches!(step.rollback, Rollback::None) {
                        // Only its rollback reads a step's result back from
                        // here (as `step.*`); templates read the context's copy.
                        records[i].result = crate::state::empty_result();
                    }
                    let rec = &records[i];
                    let go_on = rec.status == StepStatus::Succeeded
                        || (rec.status == StepStatus::Failed && step.continue_on_failure);
                    let opened = background.was_opened(i);
                    background.ended(i);
                    if go_on && opened {
                        // A background gate released its dependents when it opened.
                    } else if go_on {
                        release(&rb, i, &records, &mut waiting_on, &mut ready);
                    } else if rec.status == StepStatus::Failed && failed.is_none() {
                        failed = Some(i);
                        let _ = cancel_tx.send(true);
                    }
                    if self.bus.journal_error().is_some() {
                        // Nothing the run does from here could be recorded:
                        // stop the steps still running, start nothing more.
                        let _ = cancel_tx.send(true);
                    }
                }
            }
        }
        if self.bus.journal_error().is_some() {
            return self.abort(records, started);
        }

        let mut status = RunStatus::Succeeded;
        if failed.is_some() || interrupted {
            let reason = match failed {
                Some(i) => format!(
                    "step `{}` failed: {}",
                    rb.steps[i].id,
                    records[i].error.clone().unwrap_or_default()
                ),
                None => "interrupted".into(),
            };
            self.ctx
                .set_run_failure(failed.map(|i| rb.steps[i].id.clone()), &reason);
            if prior.unwinding.is_none() {
                let _ = self.bus.emit(Event::UnwindStarted {
                    reason,
                    failed_step: failed.map(|i| rb.steps[i].id.clone()),
                });
            }
            let Some(ok) = self
                .unwind(
                    &mut records,
                    failed,
                    &body_resume_points(&rb, &prior),
                    &mut signals,
                    &mut signals_seen,
                )
                .await
            else {
                return self.stop_now(records, failed, started);
            };
            status = match (ok, interrupted) {
                (false, _) => RunStatus::RollbackFailed,
                (true, true) => RunStatus::Interrupted,
                (true, false) => RunStatus::RolledBack,
            };
        }
        self.ctx.set_run_status(status.as_str());
        let on_failure = if status == RunStatus::Succeeded {
            vec![StepRecord::new(); rb.on_failure.len()]
        } else {
            self.run_list(
                "on_failure",
                &rb.on_failure,
                &prior,
                &mut signals,
                &mut signals_seen,
            )
            .await
        };
        // A second signal stops at once: `finally` too.
        let finally = if signals_seen > 1 {
            Vec::new()
        } else {
            self.run_list(
                "finally",
                &rb.finally,
                &prior,
                &mut signals,
                &mut signals_seen,
            )
            .await
        };
        self.conclude(status, started, records, on_failure, finally)
    }

    /// Tells the operator what a signal does now, and what another would do.
    fn signal_note(&self, count: u32, message: &str) {
        self.bus.note(Event::Signal {
            count,
            message: message.to_string(),
        });
    }

    /// A second signal (or a journal that stopped taking records): stop at
    /// once. The run ends `unwind_incomplete` when a rollback it owes did not
    /// finish, so `runbook rollback` can finish it.
    fn stop_now(
        &self,
        records: Vec<StepRecord>,
        failed: Option<usize>,
        started: Instant,
    ) -> Outcome {
        if self.bus.journal_error().is_some() {
            return self.abort(records, started);
        }
        let begun = |i: usize| records[i].began();
        let owed = self
            .env
            .plan
            .unwind
            .for_run(failed.filter(|&i| begun(i)), begun)
            .into_iter()
            .any(|i| {
                records[i]
                    .rollback
                    .as_ref()
                    .is_none_or(|r| r.status != StepStatus::Succeeded)
            });
        let status = if owed {
            RunStatus::UnwindIncomplete
        } else {
            RunStatus::Interrupted
        };
        self.ctx.set_run_status(status.as_str());
        self.conclude(status, started, records, Vec::new(), Vec::new())
    }

    /// Records the run's end and hands back its outcome.
    fn conclude(
        &self,
        status: RunStatus,
        started: Instant,
        steps: Vec<StepRecord>,
        on_failure: Vec<StepRecord>,
        finally: Vec<StepRecord>,
    ) -> Outcome {
        self.bus.note(Event::RunFinished {
            status,
            duration_ms: millis(started.elapsed()),
        });
        Outcome {
            status,
            steps,
            on_failure,
            finally,
        }
    }

    /// Main steps' records as the journal left them (not started otherwise).
    fn restore(&self, prior: &RunState) -> Vec<StepRecord> {
        let steps = &self.env.runbook().steps;
        let mut records = vec![StepRecord::new(); steps.len()];
        for (rec, step) in records.iter_mut().zip(steps) {
            if let Some(done) = prior.finished(&step.id) {
                *rec = done.clone();
                self.ctx.set_step(&step.id, done);
            }
        }
        records
    }

    /// `runbook rollback`: brings an ended run to `rolled_back`. On a
    /// succeeded run every rollback runs; on a run whose unwind failed or was
    /// cut short, the rollbacks that failed or never ran (the state folds
    /// the new episode's `unwind_started` so). Then `finally` runs.
    pub async fn rollback(
        self: Arc<Self>,
        mut signals: Signals,
        mut prior: RunState,
        who: &str,
    ) -> Outcome {
        let started = Instant::now();
        let rb = self.env.plan.source.clone();
        let failed_id = prior.unwinding.clone().flatten();
        if prior.status.is_some() {
            let event = Event::UnwindStarted {
                reason: format!("rollback requested by {who}"),
                failed_step: failed_id.clone(),
            };
            let at = jiff::Timestamp::now().to_string();
            prior.apply(&at, &event);
            let _ = self.bus.emit(event);
        }
        let failed = failed_id.and_then(|id| rb.step_index(&id));
        let mut records = self.restore(&prior);
        let mut seen = 0;
        let status = match self
            .unwind(
                &mut records,
                failed,
                &body_resume_points(&rb, &prior),
                &mut signals,
                &mut seen,
            )
            .await
        {
            None => return self.stop_now(records, failed, started),
            Some(true) => RunStatus::RolledBack,
            Some(false) => RunStatus::RollbackFailed,
        };
        self.ctx.set_run_status(status.as_str());
        let finally = self
            .run_list("finally", &rb.finally, &prior, &mut signals, &mut seen)
            .await;
        self.conclude(status, started, records, Vec::new(), finally)
    }

    /// A second signal: stop at once, with what is recorded so far.
    fn abort(&self, steps: Vec<StepRecord>, started: Instant) -> Outcome {
        self.conclude(
            RunStatus::Interrupted,
            started,
            steps,
            Vec::new(),
            Vec::new(),
        )
    }

    fn finish_step(&self, i: usize, rec: &StepRecord, attempts: u32) {
        let step = &self.env.runbook().steps[i];
        self.emit_finished(step, rec, attempts);
    }

    fn emit_finished(&self, step: &Step, rec: &StepRecord, attempts: u32) {
        self.bus.note(Event::StepFinished {
            step: step.id.clone(),
            status: rec.status,
            attempts,
            outputs: rec
                .result
                .get("outputs")
                .cloned()
                .unwrap_or_else(|| json!({})),
            extra: Json::Object(
                rec.result
                    .iter()
                    .filter(|(k, _)| *k != "outputs")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            error: rec.error.clone(),
            duration_ms: rec.duration_ms,
        });
    }

    /// Runs the rollbacks in the plan's unwind order; `Some(true)` when all
    /// succeeded, `None` when a second signal asked to stop at once or the
    /// journal stopped taking records.
    async fn unwind(
        &self,
        records: &mut [StepRecord],
        failed: Option<usize>,
        from_body: &HashMap<usize, usize>,
        signals: &mut Signals,
        signals_seen: &mut u32,
    ) -> Option<bool> {
        let started = |i: usize| records[i].began();
        // A step whose `when` failed never started: nothing of it to undo.
        let failed = failed.filter(|&i| started(i));
        let order = self.env.plan.unwind.for_run(failed, started);
        // Rollbacks a previous process finished are never run again; their
        // outcome still counts.
        let mut all_ok = true;
        for i in order {
            if let Some(r) = &records[i].rollback {
                all_ok &= r.status == StepStatus::Succeeded;
                continue;
            }
            if self.bus.journal_error().is_some() {
                return None;
            }
            let (no_cancel_tx, no_cancel) = watch::channel(false);
            let undone = records[i].clone();
            let fut = self.rollback_one(
                i,
                &undone,
                from_body.get(&i).copied().unwrap_or(0),
                no_cancel,
            );
            tokio::pin!(fut);
            let rec = loop {
                tokio::select! {
                    r = &mut fut => break r,
                    Some(()) = signals.recv() => {
                        *signals_seen += 1;
                        if *signals_seen > 1 {
                            self.signal_note(*signals_seen, "second signal: stopping the unwind at once; the running rollback is killed and the rest do not run");
                            let error = "stopped by a second signal before it finished (its effects may be partial)".to_string();
                            self.bus.note(Event::RollbackFinished {
                                step: self.env.runbook().steps[i].id.clone(),
                                status: StepStatus::Failed,
                                attempts: 1,
                                error: Some(error.clone()),
                                duration_ms: 0,
                            });
                            records[i].rollback = Some(Box::new(RollbackRecord {
                                status: StepStatus::Failed,
                                attempts: 1,
                                error: Some(error),
                            }));
                            return None;
                        }
                        self.signal_note(*signals_seen, "signal received: the unwind goes on; a second signal stops it at once and leaves it incomplete");
                    }
                }
            };
            drop(no_cancel_tx);
            all_ok &= rec.status == StepStatus::Succeeded;
            records[i].rollback = Some(Box::new(rec));
        }
        Some(all_ok)
    }

    async fn rollback_one(
        &self,
        i: usize,
        rec: &StepRecord,
        from_body: usize,
        cancel: watch::Receiver<bool>,
    ) -> RollbackRecord {
        let step = &self.env.runbook().steps[i];
        let started = Instant::now();
        let ctx = self.ctx.for_step(Some(rec));
        let mut total_attempts = 0;
        let mut error = None;
        match &step.rollback {
            Rollback::None => {}
            Rollback::Automatic(flag) => {
                let recorded = self.bus.emit(Event::RollbackStarted {
                    step: step.id.clone(),
                    body: 0,
                    attempt: 1,
                    attempts: 1,
                });
                total_attempts = 1;
                let (_stop_tx, stop) = watch::channel(None);
                let cx = Attempt {
                    env: &self.env,
                    step_id: &step.id,
                    label: &step.id,
                    attempt: 1,
                    template: &ctx,
                    bus: &self.bus,
                    stop,
                    partial: std::sync::Mutex::new(None),
                    background: None,
                };
                let outputs = rec.result.get("outputs").cloned().unwrap_or(Json::Null);
                if !recorded {
                    error = Some("not started: the journal could not record it".into());
                } else if let Err(e) = crate::steps::restore_flag(&cx, flag, &outputs).await {
                    error = Some(e.message);
                }
            }
            Rollback::Bodies(bodies) => {
                for (b, body) in bodies.iter().enumerate().skip(from_body) {
                    let label = format!("{}.rollback.{}", step.id, b + 1);
                    let attempts = Attempts {
                        env: &self.env,
                        bus: &self.bus,
                        step_id: &step.id,
                        label: &label,
                        role: Role::Rollback { body: b },
                        cancel: cancel.clone(),
                        partial: std::sync::Mutex::new(None),
                        background: None,
                    };
                    let (r, a) = attempts.run(body, &ctx).await;
                    total_attempts += a;
                    if let Err(f) = r {
                        error = Some(match f {
                            Failure::Failed(e) => e,
                            Failure::Cancelled => "cancelled".into(),
                            Failure::Unrecorded => {
                                "not started: the journal could not record it".into()
                            }
                        });
                        break;
                    }
                }
            }
        }
        let status = if error.is_some() {
            StepStatus::Failed
        } else {
            StepStatus::Succeeded
        };
        self.bus.note(Event::RollbackFinished {
            step: step.id.clone(),
            status,
            attempts: total_attempts,
            error: error.clone(),
            duration_ms: millis(started.elapsed()),
        });
        RollbackRecord {
            status,
            attempts: total_attempts,
            error,
        }
    }

    /// `on_failure` or `finally`: in list order, each failure recorded, never unwound.
    async fn run_list(
        &self,
        phase: &str,
        steps: &[Step],
        prior: &RunState,
        signals: &mut Signals,
        signals_seen: &mut u32,
    ) -> Vec<StepRecord> {
        let mut out = Vec::with_capacity(steps.len());
        if steps.is_empty() {
            return out;
        }
        self.bus.note(Event::PhaseStarted {
            phase: phase.into(),
        });
        let (_keep, cancel) = watch::channel(false);
        for step in steps {
            if let Some(rec) = prior.finished(&step.id) {
                out.push(rec.clone());
                continue;
            }
            if self.bus.journal_error().is_some() {
                break;
            }
            let mut rec = StepRecord::new();
            let ctx = self.ctx.for_step(None);
            match when(step, &ctx) {
                Ok(false) => rec.status = StepStatus::Skipped,
                Err(e) => {
                    rec.status = StepStatus::Failed;
                    rec.error = Some(e);
                }
                Ok(true) => {
                    let attempts = Attempts {
                        env: &self.env,
                        bus: &self.bus,
                        step_id: &step.id,
                        label: &step.id,
                        role: Role::Step,
                        cancel: cancel.clone(),
                        partial: std::sync::Mutex::new(None),
                        background: None,
                    };
                    let outcome = {
                        let fut = attempts.run(&step.action, &ctx);
                        tokio::pin!(fut);
                        loop {
                            tokio::select! {
                                r = &mut fut => break Some(r),
                                Some(()) = signals.recv() => {
                                    *signals_seen += 1;
                                    if *signals_seen > 1 {
                                        break None;
                                    }
                                    self.signal_note(*signals_seen, &format!("signal received while `{phase}` runs: it goes on (it is not unwound); a second signal stops it at once"));
                                }
                            }
                        }
                    };
                    let Some((r, a)) = outcome else {
                        self.signal_note(
                            *signals_seen,
                            &format!("second signal: `{}` is stopped and the rest of `{phase}` does not run", step.id),
                        );
                        rec.status = StepStatus::Cancelled;
                        rec.attempts = 1;
                        self.emit_finished(step, &rec, rec.attempts);
                        self.ctx.set_step(&step.id, &rec);
                        out.push(rec);
                        break;
                    };
                    rec.attempts = a;
                    match r {
                        Ok(o) => {
                            rec.status = StepStatus::Succeeded;
                            rec.result = Arc::new(o);
                        }
                        Err(Failure::Failed(e)) => {
                            rec.status = StepStatus::Failed;
                            rec.error = Some(e);
                            rec.result = attempts
                                .take_partial()
                                .map_or_else(crate::state::empty_result, Arc::new);
                        }
                        Err(Failure::Cancelled) => rec.status = StepStatus::Cancelled,
                        Err(Failure::Unrecorded) => rec.status = StepStatus::NotStarted,
                    }
                }
            }
            self.emit_finished(step, &rec, rec.attempts);
            self.ctx.set_step(&step.id, &rec);
            out.push(rec);
        }
        out
    }
}

/// Where each step's rollback list resumes: the body that was running (or
/// failed) when an earlier process or episode stopped.
fn body_resume_points(rb: &crate::runbook::Runbook, prior: &RunState) -> HashMap<usize, usize> {
    rb.steps
        .iter()
        .enumerate()
        .filter_map(|(i, step)| {
            let st = prior.steps.get(&step.id)?;
            let done = st
                .record
                .rollback
                .as_ref()
                .is_some_and(|r| r.status == StepStatus::Succeeded);
            st.more().rollback_body.filter(|_| !done).map(|b| (i, b))
        })
        .collect()
}

/// A step's `when`, decided once where the scheduler reaches it; a `when`
/// that cannot be evaluated fails the step (it never starts).
fn when(step: &Step, ctx: &Value) -> Result<bool, String> {
    match &step.when {
        None => Ok(true),
        Some(w) => crate::template::eval_bool(w, ctx)
            .map_err(|e| format!("`when` failed: {}", crate::steps::template_message(&e))),
    }
}

/// Test-only faults, compiled only with the `fault-injection` feature:
/// `RUNBOOK_PANIC_IN_STEP=ID` makes the engine's task for step ID panic.
mod fault {
    #[cfg(feature = "fault-injection")]
    #[allow(clippy::panic)] // the point: a test of what a panicking step does
    pub(super) fn maybe_panic(step: &str) {
        if std::env::var("RUNBOOK_PANIC_IN_STEP").is_ok_and(|s| s == step) {
            panic!("injected panic in step `{step}` (RUNBOOK_PANIC_IN_STEP)");
        }
    }

    #[cfg(not(feature = "fault-injection"))]
    pub(super) fn maybe_panic(_step: &str) {}
}

/// Step `i` no longer holds its children back; those waiting on nothing
/// more are ready, unless they ran already (a resumed run's background gate
/// opens again over steps that finished before the crash).
fn release(
    rb: &crate::runbook::Runbook,
    i: usize,
    records: &[StepRecord],
    waiting_on: &mut [usize],
    ready: &mut BTreeSet<usize>,
) {
    for c in rb.graph.children(i) {
        waiting_on[c] = waiting_on[c].saturating_sub(1);
        if waiting_on[c] == 0 && records[c].status == StepStatus::NotStarted {
            ready.insert(c);
        }
    }
}

/// The template value of a step record, for callers outside the engine.
pub fn step_value(rec: &StepRecord) -> Value {
    Value::from_serialize(rec.template_value())
}
