//! `runbook run`, `resume` and `rollback`: everything between a validated
//! runbook and a started engine (params, secrets, pre-flight, state dir,
//! journal, locks, providers, listeners, signals).
//!
//! The three commands differ only in where the runbook and params come from
//! (the file and flags, or the journal) and in what the engine is asked to do
//! (run, continue, unwind). Everything that can reject a run is checked
//! before the state dir is touched ([`prepare()`]); only then is the run
//! claimed and started ([`start()`]), so a run refused for bad input leaves
//! nothing behind.
//!
//! One file per stage: `prepare` (what can refuse a run), `journaled`
//! (resume and rollback read the run back), `start` (claim and run),
//! `identity` and `signals`; this file holds the settings and the three
//! entry points.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use crate::commands;
use crate::error::{Done, Error, Result};
use crate::events::RunStatus;
use crate::journal;
use crate::runbook::ActionKind;
use crate::store::Store;

mod detach;
mod identity;
mod journaled;
mod prepare;
mod signals;
mod start;

pub(crate) use identity::{operator, os_user_and_host};
use journaled::{from_journal, recorded};
use prepare::{prepare, Prepare};
use start::{start, Mode};

/// How a run shows itself and what the operator answered up front: the
/// resolved form of the command line's view flags.
#[derive(Debug, Clone)]
pub struct Output {
    /// Approval steps approved up front (`--approve STEP`).
    pub approve: Vec<String>,
    /// `--as`: who runs this command.
    pub identity: Option<String>,
    /// `--key`: proves `--as` and signs this process's decisions.
    pub key: Option<PathBuf>,
    /// Where to write the JSON report.
    pub report: Option<PathBuf>,
    /// One JSON object per event line instead of the human view.
    pub json_log: bool,
    /// `--lease`: how long a database claim lasts unless renewed.
    pub lease: std::time::Duration,
}

/// `runbook run`, resolved.
#[derive(Clone)]
pub struct RunSettings {
    pub store: Arc<dyn Store>,
    pub file: PathBuf,
    pub params: Vec<(String, String)>,
    pub run_id: Option<String>,
    pub output: Output,
    pub detach: Detach,
}

/// `run --detach`: this process starts the run in the background
/// (`Parent`), or is that background process (`Child`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detach {
    No,
    Parent,
    Child,
}

pub fn run(mut s: RunSettings) -> Result {
    if s.detach == Detach::Child {
        s.params = detach::become_detached()?;
    }
    let loaded = commands::load(&s.file)?;
    let resolved = commands::params(&loaded.runbook, &s.params)?;
    let run_id = match &s.run_id {
        Some(id) if journal::valid_run_id(id) => id.clone(),
        Some(id) => {
            return Err(Error::invalid(format!(
                "run id `{id}` may only contain letters, digits, `-`, `_` and `.`"
            )))
        }
        None => new_run_id(),
    };
    let rb = &loaded.runbook;
    for step in &s.output.approve {
        let is_approval = rb
            .steps
            .iter()
            .chain(&rb.on_failure)
            .chain(&rb.finally)
            .any(|st| &st.id == step && matches!(st.action.kind, ActionKind::Approval(_)));
        if !is_approval {
            return Err(Error::invalid(format!(
                "--approve {step}: the runbook has no approval step `{step}`"
            )));
        }
    }
    let identity = operator(s.output.identity.as_deref());
    let plan =
        Arc::new(crate::plan::Plan::for_run(rb, &loaded.text, &resolved).map_err(Error::Invalid)?);
    let cwd = std::env::current_dir()
        .map_err(|e| Error::cannot_start(format!("cannot read the working directory: {e}")))?;
    match s.detach {
        Detach::Parent => return detach::spawn(&s, &run_id),
        Detach::Child | Detach::No => {}
    }
    let launch = prepare(
        &loaded,
        plan,
        Prepare {
            store: s.store.clone(),
            file: s.file,
            run_id,
            operator: identity.clone(),
            identity,
            output: s.output,
            flag_ledger: crate::state::FlagLedger::default(),
            cwd,
            signers: None,
        },
    )?;
    start(launch, Mode::Fresh)
}

pub fn resume(
    store: &Arc<dyn Store>,
    run_id: &str,
    given: &[(String, String)],
    output: Output,
) -> Result {
    let (rec, loaded, state) = recorded(store.as_ref(), run_id)?;
    if let Some(status) = state.status {
        crate::broken_pipe::print_line(&format!(
            "run {run_id} already finished: {}",
            status.as_str()
        ));
        // Its last episode was a `runbook rollback`: that command's codes.
        return Ok(if state.rollback_after_success {
            Done::Rollback(status)
        } else {
            Done::Run(status)
        });
    }
    let launch = from_journal(store, &rec, &state, &loaded, given, output)?;
    let mode = if state.rollback_after_success {
        Mode::Rollback(state)
    } else {
        Mode::Resume(state)
    };
    start(launch, mode)
}

/// `runbook rollback RUN_ID`: brings an ended run to `rolled_back`.
pub fn rollback(
    store: &Arc<dyn Store>,
    run_id: &str,
    given: &[(String, String)],
    output: Output,
    yes: bool,
) -> Result {
    let (rec, loaded, state) = recorded(store.as_ref(), run_id)?;
    let unfinished = state.unfinished_rollbacks(&loaded.runbook);
    match state.status {
        Some(RunStatus::RolledBack | RunStatus::Interrupted) if unfinished.is_empty() => {
            crate::broken_pipe::print_line(&format!(
                "run {run_id} is rolled back: every rollback it owed has succeeded"
            ));
            return Ok(Done::Rollback(RunStatus::RolledBack));
        }
        Some(_) => {}
        None if state.rollback_after_success => {}
        None if store.is_live(run_id).map_err(|e| {
            Error::cannot_start(format!("cannot tell whether run {run_id} is running: {e}"))
        })? =>
        {
            return Err(Error::StillRunning(format!(
                "run {run_id} is still running; `runbook cancel {run_id}` (or Ctrl-C in its terminal) unwinds it, or wait for it to end, then roll it back"
            )))
        }
        None => {
            return Err(Error::invalid(format!(
                "run {run_id} has not finished (the engine stopped under it); `runbook resume {run_id}` continues it"
            )))
        }
    }
    if !yes && std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
        confirm(run_id, &state, &unfinished)?;
        // The journal again: someone else may have rolled it back while the
        // question waited.
        return rollback(store, run_id, given, output, true);
    }
    let launch = from_journal(store, &rec, &state, &loaded, given, output)?;
    start(launch, Mode::Rollback(state))
}

/// Shows what a rollback will undo and asks before doing it.
fn confirm(
    run_id: &str,
    state: &crate::state::RunState,
    undo: &[(String, Option<String>)],
) -> Result<()> {
    let ended = state.status.map_or("running", RunStatus::as_str);
    crate::broken_pipe::eprint_line(&format!(
        "run {run_id} ({}) ended {ended}. This runs the rollbacks of:",
        state.runbook
    ));
    for (id, error) in undo {
        match error {
            Some(e) => crate::broken_pipe::eprint_line(&format!(
                "  {id} (its rollback failed before: {e})"
            )),
            None => crate::broken_pipe::eprint_line(&format!("  {id}")),
        }
    }
    crate::broken_pipe::eprint_text("then `finally`. Roll back now? [y/N] ");
    let mut answer = String::new();
    let _ = std::io::stdin().read_line(&mut answer);
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(Error::invalid("not confirmed: nothing was rolled back"))
    }
}

fn new_run_id() -> String {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let stamp: String = now.chars().filter(char::is_ascii_digit).take(14).collect();
    let (date, time) = stamp.split_at(8.min(stamp.len()));
    format!("{date}-{time}-{:04x}", fastrand::u16(..))
}
