//! The one unwinding order, used by the preview and by the engine.
//!
//! Rollbacks run one at a time: the failed step's first, then every other
//! step that started (finished, or cancelled while running), in reverse of
//! the plan's topological order. That order is fixed by the graph alone, so
//! `runbook plan` can show it before anything runs, and it keeps the rule
//! that a step's rollback starts only after the rollbacks of all the steps
//! that depend on it: a dependent comes later in topological order, so
//! earlier here. (Reverse *completion* order, which two parallel branches
//! decide by timing, could not be previewed; docs/decisions.md says why we
//! chose this one.) The failed step may go first because none of its
//! dependents started.

use crate::graph::StepGraph;
use crate::runbook::{Rollback, Step};

/// Main steps with a rollback, in the order an unwind of a run where every
/// one of them started would run them.
#[derive(Debug, Clone, Default)]
pub struct UnwindOrder {
    order: Vec<usize>,
}

impl UnwindOrder {
    pub fn new(steps: &[Step], graph: &StepGraph) -> UnwindOrder {
        UnwindOrder {
            order: graph
                .order()
                .iter()
                .rev()
                .copied()
                .filter(|&i| !matches!(steps[i].rollback, Rollback::None))
                .collect(),
        }
    }

    /// Every step with a rollback, in unwind order.
    pub fn all(&self) -> &[usize] {
        &self.order
    }

    /// The rollbacks an unwind runs, in order: the failed step's (if it has
    /// one), then each other step for which `started` holds.
    pub fn for_run(&self, failed: Option<usize>, started: impl Fn(usize) -> bool) -> Vec<usize> {
        let first = failed.filter(|f| self.order.contains(f));
        first
            .into_iter()
            .chain(
                self.order
                    .iter()
                    .copied()
                    .filter(|&i| Some(i) != failed && started(i)),
            )
            .collect()
    }
}
