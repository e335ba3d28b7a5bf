//! `runbook plan --diff BASE`: what a change to a runbook changes in its plan.
//!
//! Reviewers care less about YAML lines than about consequences: a step that
//! no longer has a rollback, a gate that lets more through, an approval that
//! disappeared. The diff compares two [`Plan`]s built with the same params and
//! puts those risks first, then the plain additions, removals and edits.

use std::fmt::Write as _;

use serde::Serialize;

use super::{Format, Plan, PlannedGate, PlannedStep};
use crate::duration;

#[derive(Debug, Default, Serialize)]
pub struct PlanDiff {
    pub base: String,
    pub head: String,
    /// Changes that make the rollout riskier; each line says why.
    pub risks: Vec<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Step id -> what changed in it.
    pub changed: Vec<(String, Vec<String>)>,
    pub order_changed: bool,
    pub waves_before: Vec<Vec<String>>,
    pub waves_after: Vec<Vec<String>>,
    pub worst_case_before: String,
    pub worst_case_after: String,
}

impl PlanDiff {
    pub fn is_empty(&self) -> bool {
        self.risks.is_empty()
            && self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && !self.order_changed
    }
}

fn worst(d: Option<std::time::Duration>) -> String {
    d.map_or_else(|| "unbounded".to_string(), duration::format)
}

/// Parses `value OP number` (or `number OP value`) into (op as if value is on the left, number).
fn threshold(condition: &str) -> Option<(&'static str, f64)> {
    let c = condition.trim();
    for op in ["<=", ">=", "==", "<", ">"] {
        if let Some((l, r)) = c.split_once(op) {
            let (l, r) = (l.trim(), r.trim());
            let flip = |op: &str| -> &'static str {
                match op {
                    "<=" => ">=",
                    ">=" => "<=",
                    "<" => ">",
                    ">" => "<",
                    _ => "==",
                }
            };
            let norm = |op: &str| -> &'static str {
                match op {
                    "<=" => "<=",
                    ">=" => ">=",
                    "<" => "<",
                    ">" => ">",
                    _ => "==",
                }
            };
            if l == "value" {
                return r.parse().ok().map(|n| (norm(op), n));
            }
            if r == "value" {
                return l.parse().ok().map(|n| (flip(op), n));
            }
            return None;
        }
    }
    None
}

fn gate_risks(id: &str, before: &PlannedGate, after: &PlannedGate, out: &mut Vec<String>) {
    if before.condition != after.condition {
        match (threshold(&before.condition), threshold(&after.condition)) {
            (Some((op_a, a)), Some((op_b, b))) if op_a.chars().next() == op_b.chars().next() => {
                // Same direction: an upper bound that rose, or a lower bound
                // that fell, lets more through; so does `<` becoming `<=`.
                let looser = match op_b {
                    "<" | "<=" => b > a || (b == a && op_b == "<=" && op_a == "<"),
                    ">" | ">=" => b < a || (b == a && op_b == ">=" && op_a == ">"),
                    _ => false,
                };
                if looser {
                    out.push(format!(
                        "gate `{id}` loosened: `{}` -> `{}`",
                        before.condition, after.condition
                    ));
                }
            }
            _ => out.push(format!(
                "gate `{id}` condition changed: `{}` -> `{}` (check it is not looser)",
                before.condition, after.condition
            )),
        }
    }
    if let (Some(a), Some(b)) = (before.samples, after.samples) {
        if b < a {
            out.push(format!("gate `{id}` takes fewer samples: {a} -> {b}"));
        }
    }
    if let (Some(a), Some(b)) = (before.interval, after.interval) {
        if b < a {
            out.push(format!(
                "gate `{id}` samples more often, a shorter soak: every {} -> every {}",
                duration::format(a),
                duration::format(b)
            ));
        }
    }
    if let (Some(a), Some(b)) = (before.failure_limit, after.failure_limit) {
        if b > a {
            out.push(format!(
                "gate `{id}` tolerates more failed samples: {a} -> {b}"
            ));
        }
    }
    if before.on_no_data == "fail" && after.on_no_data == "pass" {
        out.push(format!("gate `{id}` now passes when there is no data"));
    }
}

fn step_changes(a: &PlannedStep, b: &PlannedStep) -> Vec<String> {
    let mut out = Vec::new();
    if a.kind != b.kind {
        out.push(format!("kind {} -> {}", a.kind, b.kind));
    }
    if a.needs != b.needs {
        out.push(format!(
            "needs [{}] -> [{}]",
            a.needs.join(", "),
            b.needs.join(", ")
        ));
    }
    if a.when != b.when {
        out.push(format!(
            "when {} -> {}",
            a.when.as_deref().unwrap_or("(always)"),
            b.when.as_deref().unwrap_or("(always)")
        ));
    }
    if a.action != b.action {
        out.push(format!(
            "does `{}` -> `{}`",
            a.action.join("; "),
            b.action.join("; ")
        ));
    }
    if a.timeout != b.timeout {
        out.push(format!(
            "timeout {} -> {}",
            a.timeout.as_deref().unwrap_or("none"),
            b.timeout.as_deref().unwrap_or("none")
        ));
    }
    if a.retry != b.retry {
        out.push(format!(
            "retry {} -> {}",
            a.retry.as_deref().unwrap_or("none"),
            b.retry.as_deref().unwrap_or("none")
        ));
    }
    if a.rollback != b.rollback {
        out.push(format!(
            "rollback `{}` -> `{}`",
            if a.rollback.is_empty() {
                "none".into()
            } else {
                a.rollback.join("; ")
            },
            if b.rollback.is_empty() {
                "none".into()
            } else {
                b.rollback.join("; ")
            }
        ));
    }
    if a.continue_on_failure != b.continue_on_failure {
        out.push(format!(
            "continue_on_failure {} -> {}",
            a.continue_on_failure, b.continue_on_failure
        ));
    }
    out
}

/// Compares the plan of the base runbook with the plan of the new one.
pub fn diff(base: &Plan, head: &Plan) -> PlanDiff {
    let mut d = PlanDiff {
        base: base.runbook.clone(),
        head: head.runbook.clone(),
        waves_before: base.waves.clone(),
        waves_after: head.waves.clone(),
        worst_case_before: worst(base.critical_path.worst_case),
        worst_case_after: worst(head.critical_path.worst_case),
        ..PlanDiff::default()
    };
    let find = |p: &'_ Plan, id: &str| p.steps.iter().position(|s| s.id == id);
    for s in &head.steps {
        match find(base, &s.id) {
            None => d.added.push(s.id.clone()),
            Some(i) => {
                let before = &base.steps[i];
                let changes = step_changes(before, s);
                if !changes.is_empty() {
                    d.changed.push((s.id.clone(), changes));
                }
                if !before.rollback.is_empty() && s.rollback.is_empty() {
                    d.risks
                        .push(format!("step `{}` no longer has a rollback", s.id));
                }
                if !before.continue_on_failure && s.continue_on_failure {
                    d.risks
                        .push(format!("a failure of `{}` no longer unwinds the run", s.id));
                }
                if let (Some(a), Some(b)) = (&before.gate, &s.gate) {
                    gate_risks(&s.id, a, b, &mut d.risks);
                }
                // A gate sampled again after a breach lets a bad canary pass.
                if s.kind == "metric" && s.retry.is_some() && before.retry != s.retry {
                    d.risks.push(format!(
                        "gate `{}` is retried after a breach: retry {} -> {}",
                        s.id,
                        before.retry.as_deref().unwrap_or("none"),
                        s.retry.as_deref().unwrap_or("none")
                    ));
                }
            }
        }
    }
    for s in &base.steps {
        if find(head, &s.id).is_none() {
            d.removed.push(s.id.clone());
            if s.kind == "metric" {
                d.risks.push(format!("gate `{}` was removed", s.id));
            }
        }
    }
    for a in &base.approvals {
        match head.approvals.iter().find(|b| b.step == a.step) {
            None => d.risks.push(format!("approval `{}` was dropped", a.step)),
            Some(b) => {
                if let (Ok(x), Ok(y)) = (a.required.parse::<i64>(), b.required.parse::<i64>()) {
                    if y < x {
                        d.risks.push(format!(
                            "approval `{}` needs fewer approvers: {x} -> {y}",
                            a.step
                        ));
                    }
                }
                if a.allow_self_approval != b.allow_self_approval && b.allow_self_approval {
                    d.risks
                        .push(format!("approval `{}` now allows self approval", a.step));
                }
            }
        }
    }
    for f in &head.flags {
        if !f.restored_on_failure {
            if let Some(before) = base.flags.iter().find(|x| x.step == f.step) {
                if before.restored_on_failure {
                    d.risks.push(format!(
                        "flag change `{}` is no longer restored on failure",
                        f.step
                    ));
                }
            }
        }
    }
    let common_before: Vec<&String> = base
        .steps
        .iter()
        .map(|s| &s.id)
        .filter(|id| find(head, id).is_some())
        .collect();
    let order_of = |p: &Plan| -> Vec<String> { p.waves.iter().flatten().cloned().collect() };
    let before_order: Vec<String> = order_of(base)
        .into_iter()
        .filter(|id| common_before.contains(&id))
        .collect();
    let after_order: Vec<String> = order_of(head)
        .into_iter()
        .filter(|id| common_before.contains(&id))
        .collect();
    d.order_changed = before_order != after_order || base.waves.len() != head.waves.len();
    d
}

pub fn render_diff(d: &PlanDiff, format: Format) -> String {
    if format == Format::Json {
        let mut s = serde_json::to_string_pretty(d).unwrap_or_default();
        s.push('\n');
        return s;
    }
    let md = format == Format::Markdown;
    let mut o = String::new();
    let h = |o: &mut String, title: &str| {
        if md {
            let _ = writeln!(o, "\n### {title}\n");
        } else {
            let _ = writeln!(o, "\n{title}:");
        }
    };
    let code = |s: &str| if md { format!("`{s}`") } else { s.to_string() };
    if md {
        let _ = writeln!(o, "## Plan changes: `{}`", d.head);
    } else {
        let _ = writeln!(o, "Plan changes: {}", d.head);
    }
    if d.is_empty() {
        let _ = writeln!(o, "\nNo change to the plan.");
        return o;
    }
    if !d.risks.is_empty() {
        h(&mut o, "Needs a careful look");
        for r in &d.risks {
            let _ = writeln!(o, "- {}{r}", if md { "⚠️ " } else { "! " });
        }
    }
    if !d.added.is_empty() {
        h(&mut o, "Steps added");
        for s in &d.added {
            let _ = writeln!(o, "- {}", code(s));
        }
    }
    if !d.removed.is_empty() {
        h(&mut o, "Steps removed");
        for s in &d.removed {
            let _ = writeln!(o, "- {}", code(s));
        }
    }
    if !d.changed.is_empty() {
        h(&mut o, "Steps changed");
        for (id, changes) in &d.changed {
            let _ = writeln!(o, "- {}", code(id));
            for c in changes {
                let _ = writeln!(o, "  - {c}");
            }
        }
    }
    if d.order_changed {
        h(&mut o, "Order");
        let show = |w: &Vec<Vec<String>>| {
            w.iter()
                .map(|w| w.join(" + "))
                .collect::<Vec<_>>()
                .join(" -> ")
        };
        let _ = writeln!(o, "- before: {}", show(&d.waves_before));
        let _ = writeln!(o, "- after:  {}", show(&d.waves_after));
    }
    if d.worst_case_before != d.worst_case_after {
        h(&mut o, "Duration");
        let _ = writeln!(
            o,
            "- worst case {} -> {}",
            d.worst_case_before, d.worst_case_after
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_normalise_direction() {
        assert_eq!(threshold("value < 0.01"), Some(("<", 0.01)));
        assert_eq!(threshold("0.01 > value"), Some(("<", 0.01)));
        assert_eq!(threshold("value >= 99.5"), Some((">=", 99.5)));
        assert_eq!(threshold("value < vars.x"), None);
    }
}
