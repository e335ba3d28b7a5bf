//! What each flag goes through during an unwind, per failure point, by the
//! spec's restore rules: rollback bodies write their values (a step-down),
//! an automatic restore puts back the value the writer before it left (the
//! value from before the run for the first writer), and a restore to an
//! intermediate value is skipped once a body wrote that flag in the unwind.
//! A reviewer reads from it whether a failure at any point re-exposes users.
//! Writers with `rollback: false` are not undone, so they are not shown.

use minijinja::Value;
use schemars::JsonSchema;
use serde::Serialize;

use super::preview::{show, show_json};
use crate::runbook::{ActionKind, Rollback, Runbook};

/// The values one flag takes, in order, from its value when the unwind
/// starts; a skipped restore is listed as `skipped: ...`.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct FlagTimeline {
    pub flag: String,
    pub values: Vec<String>,
}

pub(super) const BEFORE_RUN: &str = "<as before the run>";

/// The timelines of an unwind that runs the rollbacks of `unwind` (step
/// indices, in unwind order), in the order flags are first touched.
pub(super) fn for_unwind(rb: &Runbook, unwind: &[usize], ctx: &Value) -> Vec<FlagTimeline> {
    let writes = |j: usize| match &rb.steps[j].action.kind {
        ActionKind::Flag(f) => Some((show(&f.name, ctx), show_json(&f.value, ctx))),
        _ => None,
    };
    let mut out: Vec<FlagTimeline> = Vec::new();
    let mut stepped_down: Vec<String> = Vec::new();
    let timeline = |out: &mut Vec<FlagTimeline>, flag: &str| -> usize {
        match out.iter().position(|t| t.flag == flag) {
            Some(i) => i,
            None => {
                // It starts at the last value written: the first writer in
                // unwind order.
                let start = unwind
                    .iter()
                    .filter_map(|&j| writes(j))
                    .find(|(name, _)| name == flag)
                    .map_or_else(|| "<its value>".to_string(), |(_, v)| v);
                out.push(FlagTimeline {
                    flag: flag.to_string(),
                    values: vec![start],
                });
                out.len() - 1
            }
        }
    };
    for (pos, &j) in unwind.iter().enumerate() {
        match &rb.steps[j].rollback {
            Rollback::None => {}
            Rollback::Bodies(bodies) => {
                for body in bodies {
                    if let ActionKind::Flag(f) = &body.kind {
                        let name = show(&f.name, ctx);
                        let t = timeline(&mut out, &name);
                        out[t].values.push(show_json(&f.value, ctx));
                        if !stepped_down.contains(&name) {
                            stepped_down.push(name);
                        }
                    }
                }
            }
            Rollback::Automatic(_) => {
                let Some((name, _)) = writes(j) else { continue };
                // The writer before this one ran later in unwind order.
                let target = unwind[pos + 1..]
                    .iter()
                    .filter_map(|&k| writes(k))
                    .find(|(n, _)| *n == name)
                    .map_or_else(|| BEFORE_RUN.to_string(), |(_, v)| v);
                let t = timeline(&mut out, &name);
                if stepped_down.contains(&name) && target != BEFORE_RUN {
                    out[t]
                        .values
                        .push(format!("skipped: {} back to {target}", rb.steps[j].id));
                } else {
                    out[t].values.push(target);
                }
            }
        }
    }
    out
}
