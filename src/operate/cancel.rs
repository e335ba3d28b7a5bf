//! `runbook cancel RUN_ID`: from any process and directory, asks the engine
//! running the run to unwind, exactly as Ctrl-C at its terminal would
//! (SIGINT to the process holding the run's lock; the run ends
//! `interrupted`, exit 130). The engine does the unwinding; this command
//! only delivers the request and says how to follow it.

use std::path::Path;

use crate::error::{Done, Error, Result};
use crate::journal::{read_run, FileStore, RunStore};

/// `force`: signal even when the run is already unwinding, which stops
/// the unwind (as a second Ctrl-C would) and leaves it `unwind_incomplete`.
pub fn cancel(state_dir: &Path, run_id: &str, force: bool) -> Result {
    let store = FileStore::new(state_dir);
    let rec = read_run(&store, state_dir, run_id)?;
    if !force {
        let state = rec.state(None);
        let phase = rec.events.iter().rev().find_map(|(_, e)| match e {
            crate::events::Event::PhaseStarted { phase } => Some(phase.clone()),
            _ => None,
        });
        let busy = if state.unwinding.is_some() || state.interrupted {
            Some("it is already unwinding")
        } else if phase.is_some() {
            Some("it is running its on_failure or finally steps, which a cancel does not stop")
        } else {
            None
        };
        if let (Some(why), true) = (busy, store.is_live(run_id)) {
            return Err(Error::cannot_start(format!(
                "run {run_id} is not cancelled: {why}. `runbook cancel {run_id} --force` stops it at once, leaving the unwind incomplete (then `runbook rollback {run_id}` finishes it); `runbook logs {run_id} --follow` follows it"
            )));
        }
    }
    let Some(pid) = store.engine_pid(run_id) else {
        let state = rec.state(None);
        let why = match state.status {
            Some(s) => format!("it ended {}", s.as_str()),
            None => format!(
                "no engine holds it (it died?); `runbook resume {run_id}` continues it, and `runbook cancel {run_id}` then unwinds it"
            ),
        };
        return Err(Error::cannot_start(format!(
            "run {run_id} is not running: {why}"
        )));
    };
    let target = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| Error::cannot_start(format!("run {run_id}: bad engine pid {pid}")))?;
    rustix::process::kill_process(target, rustix::process::Signal::INT).map_err(|e| {
        Error::cannot_start(format!(
            "cannot signal the engine of run {run_id} (process {pid}): {e}"
        ))
    })?;
    crate::broken_pipe::print_line(&format!(
        "asked run {run_id} (process {pid}) to stop: it unwinds as on Ctrl-C. Follow it with `runbook logs {run_id} --follow{}`",
        crate::state_dir::flag_for(state_dir)
    ));
    Ok(Done::Ok)
}
