//! `runbook logs RUN_ID [--follow]`: the run's events and output so far, as
//! the plain view prints them, read from its journal; with `--follow`, then
//! everything until the run ends. The exit status is the run's.
//!
//! The journal is the log: it holds every step's output (masked, within
//! its budget) and every event, from whichever process ran them, so the
//! same command serves a foreground run, a detached one and a resumed one.

use std::time::{Duration, SystemTime};

use crate::error::{Done, Error, Result};
use crate::events::Listener;
use crate::journal::read_run;
use crate::store::Store;
use crate::view::Plain;

/// How often `--follow` looks for new records.
const POLL: Duration = Duration::from_millis(100);
/// Failed reads in a row `--follow` waits through (at POLL apart, each
/// bounded by the store) before it gives up.
const FOLLOW_RETRIES: u32 = 100;

pub fn logs(store: &dyn Store, run_id: &str, follow: bool) -> Result {
    let rec = read_run(store, run_id)?;
    // The view folds the events it is shown, from the run's start.
    let runbook = crate::commands::journaled_runbook(&rec);
    let seed = crate::state::RunState::new(run_id, runbook.as_deref());
    let mut tail = store
        .tail(run_id)
        .map_err(|e| Error::cannot_start(format!("cannot read run `{run_id}`: {e}")))?;
    // What was shown, folded: the run's end as the output above tells it
    // (a read of the whole journal again could see later records).
    let mut state = seed.clone();
    let mut view = Plain::new(
        crate::view::RunView::Own(Box::new(seed)),
        std::io::IsTerminal::is_terminal(&std::io::stdout()),
    );
    // A follower rides out a short outage (a database restarting) rather
    // than giving up on one failed read.
    let mut failures = 0u32;
    let mut show = |view: &mut Plain| -> Result<bool> {
        let events = match tail.next_events() {
            Ok(e) => {
                failures = 0;
                e
            }
            Err(_) if follow && failures < FOLLOW_RETRIES => {
                failures += 1;
                return Ok(false);
            }
            Err(e) => {
                return Err(Error::cannot_start(format!(
                    "cannot read run `{run_id}`: {e}"
                )))
            }
        };
        for (at, event) in &events {
            state.apply(at, event);
            let at = humantime::parse_rfc3339_weak(at).unwrap_or_else(|_| SystemTime::now());
            view.on(at, event);
        }
        Ok(true)
    };
    loop {
        // Whether the engine held the run before this read: if it did not,
        // everything it wrote is already in the file.
        // (A store that cannot say is asked again, as a failed read is.)
        let live = store.is_live(run_id).unwrap_or(follow);
        // (A read that failed says nothing about liveness either: again.)
        let read = show(&mut view)?;
        if !follow || (!live && read) {
            break;
        }
        std::thread::sleep(POLL);
    }
    match state.status {
        Some(status) => Ok(Done::Run(status)),
        None if store.is_live(run_id).map_err(|e| {
            Error::cannot_start(format!("cannot tell whether run {run_id} is running: {e}"))
        })? =>
        {
            Ok(Done::Ok)
        }
        None => Err(Error::NeedsPerson(format!(
            "run {run_id} has not ended and no engine holds it (the engine died?); `runbook resume {run_id}` continues it"
        ))),
    }
}
