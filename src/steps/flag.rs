//! `flag:` steps: set a flag, remembering what it was so it can be restored;
//! and the automatic restore that undoes one.
//!
//! Every write is recorded before it is made (`flag_previous`, with the
//! value about to be written) in the journal and in the run's
//! [`FlagLedger`](crate::state::FlagLedger), so a write whose outcome is
//! unknown (a timeout, a lost reply, a cancellation) still gets its restore,
//! and a retry never takes its own earlier write for the previous value.
//! A restore composes with the run's other writes (spec, rev 2):
//! - it is skipped when a rollback body already wrote the flag in this
//!   unwind (a step-down) and it would put back an intermediate value: a
//!   flag never goes back up; the restore of the run's first write (to the
//!   value from before the run) still runs;
//! - it reads the flag first, and refuses to write over a value this run
//!   did not write (someone flipped a kill switch): the rollback fails,
//!   naming the flag, what it found and what it would have written.

use serde_json::Value as Json;

use super::{render, template_error, Attempt, Executor, Outputs, StepError};
use crate::events::{Event, Stream};
use crate::providers::{exact, BoxFuture};
use crate::runbook::{Action, Flag};

pub(super) struct FlagExec;

impl Executor for FlagExec {
    type Body = Flag;

    fn run<'a>(
        &'a self,
        f: &'a Flag,
        _action: &'a Action,
        cx: &'a Attempt<'a>,
    ) -> BoxFuture<'a, Result<Outputs, StepError>> {
        Box::pin(async move {
            let name = render(cx, &f.name)?;
            let value = crate::template::render_json(&f.value, cx.template)
                .map_err(|e| template_error(&e))?;
            let store = cx.env.flag_store(f.provider.as_deref())?;
            let label = cx.label.to_string();
            // A store calls `record` again when its atomic write found
            // another previous value than it read (someone wrote between):
            // that one is what this write replaced.
            let created = std::sync::Mutex::new(None::<(bool, bool)>);
            let record = |prev: Option<&Json>| {
                let mut created = created
                    .lock()
                    .map_err(|_| "internal error: a lock was poisoned".to_string())?;
                let correct = created.unwrap_or((false, false));
                let made = note_write(cx, &label, &name, prev, Some(&value), correct)?;
                created.get_or_insert(made);
                Ok(())
            };
            // A store that cannot be reached may be reachable next time.
            tokio::select! {
                r = store.set(&name, &value, &record) => r.map_err(StepError::transient)?,
                stop = cx.stopped() => {
                    return Err(StepError::stopped(stop, "stopped while the flag was being written (it may or may not have been written; its restore still runs)"))
                }
            };
            // The value before this step's first write, whichever attempt
            // or process made it.
            let previous = ledger_previous(cx, cx.label).flatten();
            let existed = ledger_previous(cx, cx.label).is_some_and(|p| p.is_some());
            let mut values = Outputs::new();
            values.insert("name".into(), Json::String(name));
            values.insert("existed".into(), Json::Bool(existed));
            values.insert(
                "previous".into(),
                previous.as_ref().map_or(Json::Null, exact::readable),
            );
            values.insert("value".into(), value);
            let mut out = Outputs::new();
            out.insert("outputs".into(), Json::Object(values));
            Ok(out)
        })
    }
}

/// Records a write about to be made: journal first (an unrecorded write is
/// not made), then the ledger.
fn note_write(
    cx: &Attempt<'_>,
    label: &str,
    flag: &str,
    previous: Option<&Json>,
    value: Option<&Json>,
    correct: (bool, bool),
) -> Result<(bool, bool), String> {
    let recorded = cx.bus.emit(Event::FlagPrevious {
        step: label.to_string(),
        flag: flag.to_string(),
        previous: previous.cloned(),
        value: value.cloned(),
    });
    if !recorded {
        return Err("not written: the journal could not record the flag's previous value".into());
    }
    let made = match cx.env.flag_ledger.lock() {
        Ok(mut l) => l.record_correcting(label, flag, previous, value, correct),
        Err(_) => (false, false),
    };
    Ok(made)
}

/// The previous value recorded for a writer: `None` when it never began a
/// write, `Some(None)` when the flag did not exist.
fn ledger_previous(cx: &Attempt<'_>, label: &str) -> Option<Option<Json>> {
    cx.env
        .flag_ledger
        .lock()
        .ok()
        .and_then(|l| l.previous.get(label).cloned())
}

/// The automatic rollback of a flag step: put back what was there before
/// its first write, unless that would undo a step-down or overwrite a change
/// made outside the run.
pub async fn restore_flag(cx: &Attempt<'_>, f: &Flag, outputs: &Json) -> Result<(), StepError> {
    // The step never began a write: nothing to undo.
    let Some(previous) = ledger_previous(cx, cx.step_id) else {
        return Ok(());
    };
    let name = match outputs.get("name").and_then(Json::as_str) {
        Some(name) if !name.contains("***") => name.to_string(),
        _ => render(cx, &f.name)?,
    };
    let (before_run, last, stepped_down) = match cx.env.flag_ledger.lock() {
        Ok(l) => (
            l.before_run.get(&name).cloned(),
            l.last.get(&name).cloned(),
            l.written_in_unwind.contains(&name),
        ),
        Err(_) => (None, None, false),
    };
    if stepped_down && before_run.as_ref() != Some(&previous) {
        cx.bus.note(Event::Output {
            step: cx.label.to_string(),
            stream: Stream::Stdout,
            line: format!(
                "restore of flag {name} to {} skipped: a rollback already stepped it down in this unwind",
                exact::shown(previous.as_ref())
            ),
        });
        return Ok(());
    }
    let store = cx.env.flag_store(f.provider.as_deref())?;
    let found = store.get(&name).await.map_err(|e| {
        StepError::transient(format!("cannot read flag {name} before restoring it: {e}"))
    })?;
    // A value derived from a secret is journaled masked: after a resume the
    // run cannot tell what it wrote, so it cannot tell another writer's.
    let masked = |v: &Option<Json>| v.as_ref().is_some_and(|v| v.to_string().contains("***"));
    // Already what the restore would write (someone put it back by hand, as
    // the error below asks) is no outside change. It is still written: a
    // write of unknown outcome may yet land, and this one must come after it.
    let checked = last
        .as_ref()
        .filter(|(_, v)| !masked(v))
        .filter(|_| found != previous);
    if let Some((before_last, last_value)) = checked {
        // The last write may not have landed (its outcome was unknown):
        // either value is this run's.
        if found != *last_value && found != *before_last {
            return Err(StepError::permanent(format!(
                "flag {name} was changed outside this run: it is {}, this run last wrote {}; not overwriting it with {} (check who changed it, then set it by hand or run `runbook rollback` again)",
                exact::shown(found.as_ref()),
                exact::shown(last_value.as_ref()),
                exact::shown(previous.as_ref())
            )));
        }
    }
    note_write(
        cx,
        &format!("{}.restore", cx.step_id),
        &name,
        found.as_ref(),
        previous.as_ref(),
        (false, false),
    )
    .map_err(StepError::permanent)?;
    store
        .restore(&name, previous.as_ref())
        .await
        .map_err(|e| StepError::transient(format!("flag {name} was not restored: {e}")))
}
