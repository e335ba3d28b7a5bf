//! `flag:` steps: set a flag, remembering what it was so it can be restored.

use serde_json::Value as Json;

use super::{render, template_error, Attempt, Executor, Outputs, StepError};
use crate::events::Event;
use crate::providers::BoxFuture;
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
            let bus = cx.bus;
            let step = cx.step_id.to_string();
            let flag = name.clone();
            let record = move |prev: Option<&Json>| {
                let recorded = bus.emit(Event::FlagPrevious {
                    step: step.clone(),
                    flag: flag.clone(),
                    previous: prev.cloned(),
                });
                if recorded {
                    Ok(())
                } else {
                    Err(
                        "not written: the journal could not record the flag's previous value"
                            .into(),
                    )
                }
            };
            // A store that cannot be reached may be reachable next time.
            let previous = tokio::select! {
                r = store.set(&name, &value, &record) => r.map_err(StepError::transient)?,
                stop = cx.stopped() => {
                    return Err(StepError::stopped(stop, "stopped before the flag was written"))
                }
            };
            let previous = match cx.env.flag_previous.get(cx.step_id) {
                Some(recorded) => recorded.clone(),
                None => previous,
            };
            let mut values = Outputs::new();
            values.insert("name".into(), Json::String(name));
            values.insert("existed".into(), Json::Bool(previous.is_some()));
            values.insert("previous".into(), previous.unwrap_or(Json::Null));
            values.insert("value".into(), value);
            let mut out = Outputs::new();
            out.insert("outputs".into(), Json::Object(values));
            Ok(out)
        })
    }
}

/// The automatic rollback of a flag step: put back what its `outputs` recorded.
pub async fn restore_flag(cx: &Attempt<'_>, f: &Flag, outputs: &Json) -> Result<(), StepError> {
    // The value recorded before the first write, when the journal has it
    // (resume, `runbook rollback`): exact, secrets included, where the
    // journaled outputs have `***` for them.
    let recorded = cx.env.flag_previous.get(cx.step_id);
    let (name, previous) = match (outputs.get("name").and_then(Json::as_str), recorded) {
        (Some(name), Some(previous)) if !name.contains("***") => {
            (name.to_string(), previous.clone())
        }
        (_, Some(previous)) => (render(cx, &f.name)?, previous.clone()),
        (Some(name), None) => {
            let existed = outputs
                .get("existed")
                .and_then(Json::as_bool)
                .unwrap_or(false);
            let previous = existed.then(|| outputs.get("previous").cloned().unwrap_or(Json::Null));
            (name.to_string(), previous)
        }
        // The step never wrote the flag: nothing to undo.
        (None, None) => return Ok(()),
    };
    let store = cx.env.flag_store(f.provider.as_deref())?;
    store
        .restore(&name, previous.as_ref())
        .await
        .map_err(StepError::transient)
}
