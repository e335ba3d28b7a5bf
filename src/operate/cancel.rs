//! `runbook cancel RUN_ID`: from any process and directory, asks the engine
//! running the run to unwind, exactly as Ctrl-C at its terminal would
//! (SIGINT to the process holding the run's lock; the run ends
//! `interrupted`, exit 130). The engine does the unwinding; this command
//! only delivers the request and says how to follow it.

use crate::error::{Done, Error, Result};
use crate::journal::read_run;
use crate::store::Store;

/// `force`: signal even when the run is already unwinding, which stops
/// the unwind (as a second Ctrl-C would) and leaves it `unwind_incomplete`.
pub fn cancel(store: &dyn Store, run_id: &str, force: bool) -> Result {
    let rec = read_run(store, run_id)?;
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
        if let (Some(why), Ok(true)) = (busy, store.is_live(run_id)) {
            return Err(Error::cannot_start(format!(
                "run {run_id} is not cancelled: {why}. `runbook cancel {run_id} --force` stops it at once, leaving the unwind incomplete (then `runbook rollback {run_id}` finishes it); `runbook logs {run_id} --follow` follows it"
            )));
        }
    }
    let sent = store.request_cancel(run_id).map_err(|why| {
        let state = rec.state(None);
        match state.status {
            Some(s) => Error::cannot_start(format!("run {run_id} is not running: it ended {}", s.as_str())),
            None if why == "no engine holds it" => Error::cannot_start(format!(
                "run {run_id} is not running: no engine holds it (it died?); `runbook resume {run_id}` continues it, and `runbook cancel {run_id}` then unwinds it"
            )),
            None => Error::cannot_start(format!("cannot ask run {run_id} to stop: {why}")),
        }
    })?;
    crate::broken_pipe::print_line(&format!(
        "asked run {run_id} ({sent}) to stop: it unwinds as on Ctrl-C. Follow it with `runbook logs {run_id} --follow{}`",
        store.flag()
    ));
    Ok(Done::Ok)
}
