//! Background gates: `background: { until: STEP }` names a step that must
//! run after the gate, in `steps`. Resolved here, after the graph, because
//! "after" is the graph's ancestry; everywhere else a background gate is
//! refused (a rollback, `on_failure` and `finally` have no steps running
//! beside them to guard).

use crate::diagnostics::{Code, Diagnostics};
use crate::graph::StepGraph;
use crate::runbook::{ActionKind, Phase, Step};
use crate::spec::{BackgroundSpec, MetricSpec, RollbackSpec, StepSpec};

use super::StepIndex;

fn background(m: Option<&MetricSpec>) -> Option<&BackgroundSpec> {
    m?.background.as_ref()?.0.as_ref()
}

/// Sets each main background gate's `until` to its step's index, and
/// reports every `background` that cannot be.
pub(super) fn resolve(
    ds: &mut Diagnostics,
    specs: &[Option<&StepSpec>],
    steps: &mut [Option<Step>],
    index: &StepIndex,
    graph: Option<&StepGraph>,
) {
    for (i, spec) in specs.iter().enumerate() {
        let Some(spec) = spec else { continue };
        refuse_in_rollbacks(ds, spec);
        let Some(b) = background(spec.metric.as_ref().and_then(|m| m.0.as_ref())) else {
            continue;
        };
        if let Some(r) = spec.retry.as_ref() {
            let at =
                r.0.as_ref()
                    .and_then(|r| r.attempts.as_ref().map(|a| a.span))
                    .unwrap_or(b.until.span);
            ds.error(
                Code::InvalidRetry,
                at,
                "a background gate is never retried: a breach unwinds the run at once, and a retry would leave the steps it guards unguarded while it waits",
            );
        }
        let until = &b.until;
        let target = match index.ids.get(&until.value) {
            Some((Phase::Main, j)) => *j,
            Some(_) => {
                ds.error(
                    Code::GateSettings,
                    until.span,
                    format!("`until` names `{}`, which is not in `steps`", until.value),
                );
                continue;
            }
            None if index.broken.contains(&until.value) => continue,
            None => {
                ds.error(
                    Code::GateSettings,
                    until.span,
                    format!("`until` names unknown step `{}`", until.value),
                );
                continue;
            }
        };
        let Some(graph) = graph else { continue };
        if target == i || !reaches(graph, i, target) {
            ds.error(
                Code::GateSettings,
                until.span,
                format!(
                    "`until` names `{}`, which does not run after this gate: the gate would have nothing to guard",
                    until.value
                ),
            )
            .help = Some(format!(
                "name a step that needs `{}`, directly or through others",
                spec.id.value
            ));
            continue;
        }
        if let Some(Some(step)) = steps.get_mut(i) {
            if let ActionKind::Metric(m) = &mut step.action.kind {
                m.until = Some(target);
            }
        }
    }
}

/// `on_failure` and `finally` steps run one at a time, in order.
pub(super) fn refuse_outside_steps(ds: &mut Diagnostics, specs: &[&StepSpec]) {
    for spec in specs {
        refuse_in_rollbacks(ds, spec);
        if let Some(b) = background(spec.metric.as_ref().and_then(|m| m.0.as_ref())) {
            ds.error(
                Code::GateSettings,
                b.until.span,
                "a background gate guards the steps after it; `on_failure` and `finally` steps run one at a time",
            );
        }
    }
}

fn refuse_in_rollbacks(ds: &mut Diagnostics, spec: &StepSpec) {
    let Some(RollbackSpec::Bodies(bodies)) = spec.rollback.as_ref().and_then(|r| r.0.as_ref())
    else {
        return;
    };
    for body in bodies {
        if let Some(b) = background(body.metric.as_ref().and_then(|m| m.0.as_ref())) {
            ds.error(
                Code::GateSettings,
                b.until.span,
                "a rollback's gate cannot run in the background: a rollback runs alone",
            );
        }
    }
}

/// Whether `to` runs after `from`: a path of `needs` leads from one to the other.
fn reaches(graph: &StepGraph, from: usize, to: usize) -> bool {
    let mut seen = vec![false; graph.len()];
    let mut stack = vec![from];
    while let Some(i) = stack.pop() {
        for c in graph.children(i) {
            if c == to {
                return true;
            }
            if let Some(s) = seen.get_mut(c).filter(|s| !**s) {
                *s = true;
                stack.push(c);
            }
        }
    }
    false
}
