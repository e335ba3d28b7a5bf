//! `runbook plan --diff BASE`: what a change to a runbook changes in its plan.
//!
//! Reviewers care less about YAML lines than about consequences: a gate that
//! lets more through (because its condition changed, or a param default it
//! reads did), an approval more people can give, a lock that no longer holds,
//! a step that is no longer undone. The diff compares two resolved [`Plan`]s
//! built with the same params, so a threshold is compared after its params
//! are put in, and puts those risks first, each with why it matters; then
//! params, and the plain additions, removals and edits.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value as Json;

use super::render::{md_code, md_text, worst};
use super::{Format, Plan, PlannedGate, PlannedStep, Threshold};

#[derive(Debug, Default, Serialize)]
pub struct PlanDiff {
    pub base: String,
    pub head: String,
    /// Changes that make the rollout riskier, worst first by kind.
    pub risks: Vec<Risk>,
    /// Params whose value (given or default) changed, appeared or went.
    pub params: Vec<ParamChange>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<StepChange>,
    /// Runbook-wide settings that changed without a risk (a lock added, a
    /// lock's `wait`).
    pub settings: Vec<FieldChange>,
    pub order_changed: bool,
    pub waves_before: Vec<Vec<String>>,
    pub waves_after: Vec<Vec<String>>,
    pub worst_case_before: String,
    pub worst_case_after: String,
}

#[derive(Debug, Serialize)]
pub struct Risk {
    /// What changed, naming the step, gate, approval or param.
    pub what: String,
    /// Why a reviewer should care, in one line.
    pub why: String,
}

#[derive(Debug, Serialize)]
pub struct ParamChange {
    pub name: String,
    pub before: Option<Json>,
    pub after: Option<Json>,
    /// Steps (gates among them) whose templates read it.
    pub feeds: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct StepChange {
    pub step: String,
    pub changes: Vec<FieldChange>,
}

#[derive(Debug, Serialize)]
pub struct FieldChange {
    pub field: String,
    pub before: String,
    pub after: String,
}

impl PlanDiff {
    pub fn is_empty(&self) -> bool {
        self.risks.is_empty()
            && self.params.is_empty()
            && self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.settings.is_empty()
            && !self.order_changed
    }
}

struct Risks<'a> {
    out: Vec<Risk>,
    /// Params that changed: a changed threshold names the one it came through.
    params: &'a [ParamChange],
}

impl Risks<'_> {
    fn add(&mut self, what: String, why: &str) {
        self.out.push(Risk {
            what,
            why: why.to_string(),
        });
    }

    /// ` (through param `x`: 0.003 -> 0.03)` when the gate's condition text is
    /// unchanged and a param it reads changed.
    fn through(&self, step: &PlannedStep, before: &PlannedGate, after: &PlannedGate) -> String {
        if before.condition != after.condition {
            return String::new();
        }
        let via: Vec<String> = self
            .params
            .iter()
            .filter(|p| step.reads_params.contains(&p.name))
            .map(|p| {
                format!(
                    "param `{}` {} -> {}",
                    p.name,
                    code(&shown(p.before.as_ref())),
                    code(&shown(p.after.as_ref()))
                )
            })
            .collect();
        if via.is_empty() {
            String::new()
        } else {
            format!(" through {}", via.join(", "))
        }
    }

    fn gate(&mut self, label: &str, step: &PlannedStep, before: &PlannedGate, after: &PlannedGate) {
        if before.condition_rendered != after.condition_rendered {
            let via = self.through(step, before, after);
            let (a, b) = (&before.condition_rendered, &after.condition_rendered);
            match (before.threshold, after.threshold) {
                (Some(x), Some(y)) => {
                    if let Some(by) = looser(x, y) {
                        self.add(
                            format!("{label} loosened{via}: `{a}` -> `{b}` ({by})"),
                            "a worse value than before now passes the gate",
                        );
                    }
                }
                _ => self.add(
                    format!("{label} condition changed{via}: `{a}` -> `{b}`"),
                    "not a single bound the diff can compare: check it is not looser",
                ),
            }
        }
        if before.provider != after.provider || before.query != after.query {
            self.add(
                format!(
                    "{label} reads another metric: `{}` from `{}` -> `{}` from `{}`",
                    before.query, before.provider, after.query, after.provider
                ),
                "a gate that measures something else can pass while the rollout hurts users",
            );
        }
        if before.at != after.at && after.at.as_deref().is_some_and(|a| !a.is_empty()) {
            self.add(
                format!(
                    "{label} is evaluated at a fixed time: {}",
                    code(after.at.as_deref().unwrap_or_default())
                ),
                "it reads the metric as it was then, not as the rollout goes",
            );
        }
        for (what, a, b) in [
            (
                "samples",
                before.samples.value.is_some(),
                after.samples.value.is_some(),
            ),
            (
                "interval",
                before.interval.seconds.is_some(),
                after.interval.seconds.is_some(),
            ),
            (
                "failure_limit",
                before.failure_limit.value.is_some(),
                after.failure_limit.value.is_some(),
            ),
        ] {
            if a && !b {
                self.add(
                    format!("{label} {what} is no longer known before the run"),
                    "it now comes from a param not given: the diff cannot say it is not looser",
                );
            }
        }
        if let (Some(a), Some(b)) = (before.samples.value, after.samples.value) {
            if b < a {
                self.add(
                    format!("{label} takes fewer samples: {a} -> {b}"),
                    "a shorter look at the metric lets a slow regression through",
                );
            }
        }
        if let (Some(a), Some(b)) = (before.interval.seconds, after.interval.seconds) {
            if b < a {
                self.add(
                    format!(
                        "{label} samples more often: every {} -> every {}",
                        before.interval.text, after.interval.text
                    ),
                    "with the same samples, the soak is shorter",
                );
            }
        }
        if let (Some(a), Some(b)) = (before.failure_limit.value, after.failure_limit.value) {
            if b > a {
                self.add(
                    format!("{label} tolerates more failed samples: {a} -> {b}"),
                    "more breaches are needed before the rollout stops",
                );
            }
        }
        if before.on_no_data == "fail" && after.on_no_data == "pass" {
            self.add(
                format!("{label} now passes when there is no data"),
                "a broken query or a silent exporter no longer stops the rollout",
            );
        }
        self.gate_rev2(label, before, after);
    }

    /// The three-valued, background and comparative settings.
    fn gate_rev2(&mut self, label: &str, before: &PlannedGate, after: &PlannedGate) {
        if !before.dry_run && after.dry_run {
            self.add(
                format!("{label} is now a dry run"),
                "it is evaluated and recorded but can no longer fail or pause the run",
            );
        }
        if before.failure_condition_rendered != after.failure_condition_rendered {
            if let Some(b) = &before.failure_condition_rendered {
                let now = after
                    .failure_condition_rendered
                    .as_deref()
                    .map_or("none".to_string(), code);
                self.add(
                    format!("{label} failure_condition changed: {} -> {now}", code(b)),
                    "check that values failing the gate before still do",
                );
            }
        }
        let rank = |o: Option<&str>| match o {
            Some("fail") => 0,
            Some("pause") => 1,
            Some("pass") => 2,
            _ => 0,
        };
        if before.on_inconclusive.is_some()
            && rank(after.on_inconclusive) > rank(before.on_inconclusive)
        {
            self.add(
                format!(
                    "{label} on_inconclusive: {} -> {}",
                    before.on_inconclusive.unwrap_or_default(),
                    after.on_inconclusive.unwrap_or("none")
                ),
                "an evaluation that proves nothing now stops the rollout less",
            );
        }
        for (what, a, b, why) in [
            (
                "inconclusive evaluations",
                before.inconclusive_limit.as_ref().and_then(|c| c.value),
                after.inconclusive_limit.as_ref().and_then(|c| c.value),
                "more evaluations that prove nothing pass before anyone is asked",
            ),
            (
                "provider errors in a row",
                before.error_limit.value,
                after.error_limit.value,
                "a gate that cannot read its metric goes on longer",
            ),
        ] {
            if let (Some(a), Some(b)) = (a, b) {
                if b > a {
                    self.add(format!("{label} tolerates more {what}: {a} -> {b}"), why);
                }
            }
        }
        if before.background_until.is_some() && after.background_until.is_none() {
            self.add(
                format!("{label} no longer runs in the background"),
                "the steps after it are no longer guarded while they run",
            );
        }
        if let (Some(a), Some(b)) = (&before.compare, &after.compare) {
            if let (Some(x), Some(y)) = (a.allowed_change, b.allowed_change) {
                if y > x {
                    self.add(
                        format!("{label} allows a larger change: {x} -> {y}"),
                        "a bigger regression of the canary now passes",
                    );
                }
            }
            if let (Some(x), Some(y)) = (a.confidence, b.confidence) {
                if y > x {
                    self.add(
                        format!("{label} needs more confidence to fail: {x} -> {y}"),
                        "a real regression must be clearer before it stops the rollout",
                    );
                }
            }
            if a.direction != b.direction && a.direction != "either" {
                self.add(
                    format!("{label} direction: {} -> {}", a.direction, b.direction),
                    "a change the gate caught before may now pass",
                );
            }
        }
        if before.compare.is_some() && after.compare.is_none() {
            self.add(
                format!("{label} no longer compares canary with baseline"),
                "an absolute threshold misses a regression the comparison would catch",
            );
        }
    }
}

/// How much looser `after` is than `before`, or `None` if not looser.
fn looser(before: Threshold, after: Threshold) -> Option<String> {
    let upper = |op: &str| op.starts_with('<');
    let lower = |op: &str| op.starts_with('>');
    let (a, b) = (before.bound, after.bound);
    let loosened = if upper(before.op) && upper(after.op) {
        b > a || (b == a && after.op == "<=" && before.op == "<")
    } else if lower(before.op) && lower(after.op) {
        b < a || (b == a && after.op == ">=" && before.op == ">")
    } else {
        // `==` to a range, or a bound that changed direction.
        before.op != after.op || a != b
    };
    if !loosened {
        return None;
    }
    let ratio = if a != 0.0 && b != 0.0 && a.signum() == b.signum() {
        let r = if b.abs() > a.abs() { b / a } else { a / b };
        (r >= 1.5).then(|| format!("{}x", trim_float(r)))
    } else {
        None
    };
    Some(ratio.map_or_else(
        || format!("bound {} -> {}", trim_float(a), trim_float(b)),
        |r| format!("{r} looser"),
    ))
}

fn trim_float(f: f64) -> String {
    let s = format!("{f:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A code span inside a risk sentence: risk lines mark names and values
/// with backticks, so a backtick of their own would end the span early.
fn code(s: &str) -> String {
    format!("`{}`", s.replace('`', "'"))
}

/// A risk line in Markdown: its backtick spans become code, the text
/// between them is escaped.
fn md_inline(s: &str) -> String {
    s.split('`')
        .enumerate()
        .map(|(i, part)| {
            if i % 2 == 1 {
                md_code(part)
            } else {
                md_text(&part.replace(" -> ", " → "))
            }
        })
        .collect()
}

fn shown(v: Option<&Json>) -> String {
    v.map_or_else(|| "(none)".to_string(), Json::to_string)
}

fn field(out: &mut Vec<FieldChange>, name: &str, before: String, after: String) {
    if before != after {
        out.push(FieldChange {
            field: name.to_string(),
            before,
            after,
        });
    }
}

fn opt<T>(v: Option<&T>, text: impl Fn(&T) -> String, none: &str) -> String {
    v.map_or_else(|| none.to_string(), text)
}

fn step_changes(a: &PlannedStep, b: &PlannedStep) -> Vec<FieldChange> {
    let mut out = Vec::new();
    field(&mut out, "kind", a.kind.into(), b.kind.into());
    field(&mut out, "needs", a.needs.join(", "), b.needs.join(", "));
    let when = |s: &PlannedStep| s.when.clone().unwrap_or_else(|| "(always)".into());
    field(&mut out, "when", when(a), when(b));
    field(&mut out, "does", a.action.join("; "), b.action.join("; "));
    let timeout = |s: &PlannedStep| opt(s.timeout.as_ref(), |t| t.text.clone(), "none");
    field(&mut out, "timeout", timeout(a), timeout(b));
    let retry = |s: &PlannedStep| opt(s.retry.as_ref(), |r| r.text.clone(), "none");
    field(&mut out, "retry", retry(a), retry(b));
    let rollback = |s: &PlannedStep| {
        if s.rollback.is_empty() {
            "none".to_string()
        } else {
            s.rollback
                .iter()
                .flat_map(|r| r.does.iter().cloned())
                .collect::<Vec<_>>()
                .join("; ")
        }
    };
    field(&mut out, "rollback", rollback(a), rollback(b));
    field(
        &mut out,
        "continue_on_failure",
        a.continue_on_failure.to_string(),
        b.continue_on_failure.to_string(),
    );
    out
}

/// Lock changes that are not risks: a lock added, and how long a second
/// run waits for it (waiting or refused, it never overlaps with the first).
/// A lock removed or its key changed is a risk ([`top_level_risks`]).
fn setting_changes(base: &Plan, head: &Plan) -> Vec<FieldChange> {
    let mut out = Vec::new();
    match (&base.lock, &head.lock) {
        (None, Some(key)) => field(&mut out, "lock", "none".into(), key.clone()),
        (Some(_), Some(_)) => {
            let wait = |p: &Plan| {
                p.lock_wait
                    .as_ref()
                    .map_or_else(|| "none (refused at once)".to_string(), |w| w.text.clone())
            };
            field(&mut out, "lock wait", wait(base), wait(head));
        }
        _ => {}
    }
    out
}

fn param_changes(base: &Plan, head: &Plan) -> Vec<ParamChange> {
    let value = |p: &Plan, name: &str| {
        p.params
            .iter()
            .find(|x| x.name == name)
            .map(|x| x.value.clone())
    };
    let mut names: Vec<&str> = head.params.iter().map(|p| p.name.as_str()).collect();
    for p in &base.params {
        if !names.contains(&p.name.as_str()) {
            names.push(&p.name);
        }
    }
    names
        .into_iter()
        .filter_map(|name| {
            let (before, after) = (value(base, name), value(head, name));
            (before != after).then(|| ParamChange {
                name: name.to_string(),
                feeds: head
                    .params
                    .iter()
                    .chain(&base.params)
                    .find(|p| p.name == name)
                    .map(|p| p.used_by.clone())
                    .unwrap_or_default(),
                before,
                after,
            })
        })
        .collect()
}

/// Compares the plan of the base runbook with the plan of the new one.
pub fn diff(base: &Plan, head: &Plan) -> PlanDiff {
    let params = param_changes(base, head);
    let mut d = PlanDiff {
        base: base.runbook.clone(),
        head: head.runbook.clone(),
        waves_before: base.waves.clone(),
        waves_after: head.waves.clone(),
        worst_case_before: worst(base.critical_path.worst_case.as_ref()),
        worst_case_after: worst(head.critical_path.worst_case.as_ref()),
        ..PlanDiff::default()
    };
    let mut r = Risks {
        out: Vec::new(),
        params: &params,
    };
    let find = |p: &'_ Plan, id: &str| p.steps.iter().position(|s| s.id == id);
    for (list, before_list, after_list) in [
        (None, &base.steps, &head.steps),
        (Some("on_failure"), &base.on_failure, &head.on_failure),
        (Some("finally"), &base.finally, &head.finally),
    ] {
        let label = |id: &str| list.map_or_else(|| id.to_string(), |l| format!("{l}: {id}"));
        for s in after_list {
            let Some(before) = before_list.iter().find(|b| b.id == s.id) else {
                d.added.push(label(&s.id));
                continue;
            };
            let changes = step_changes(before, s);
            if !changes.is_empty() {
                d.changed.push(StepChange {
                    step: label(&s.id),
                    changes,
                });
            }
            step_risks(&mut r, before, s, list);
        }
        for s in before_list {
            if after_list.iter().any(|x| x.id == s.id) {
                continue;
            }
            d.removed.push(label(&s.id));
            match list {
                None if s.kind == "metric" => r.add(
                    format!("gate `{}` was removed", s.id),
                    "nothing checks that metric any more",
                ),
                None => {}
                Some(l) => r.add(
                    format!("{l} step `{}` was removed", s.id),
                    if l == "on_failure" {
                        "a failure no longer runs it (a page, a notice)"
                    } else {
                        "the run no longer ends with it"
                    },
                ),
            }
        }
    }
    guard_risks(&mut r, base, head);
    secret_param_risks(&mut r, base, head);
    provider_risks(&mut r, base, head);
    approval_risks(&mut r, base, head);
    top_level_risks(&mut r, base, head);
    d.settings = setting_changes(base, head);
    d.risks = r.out;
    d.params = params;
    let common_before: HashSet<&String> = base
        .steps
        .iter()
        .map(|s| &s.id)
        .filter(|id| find(head, id).is_some())
        .collect();
    let order_of = |p: &Plan| -> Vec<String> {
        p.waves
            .iter()
            .flatten()
            .filter(|id| common_before.contains(id))
            .cloned()
            .collect()
    };
    d.order_changed = order_of(base) != order_of(head) || base.waves.len() != head.waves.len();
    d
}

/// Risks of one step that exists in both plans; `list` is `on_failure` or
/// `finally` for their steps.
fn step_risks(r: &mut Risks<'_>, before: &PlannedStep, s: &PlannedStep, list: Option<&str>) {
    let id = &s.id;
    if before.kind == "metric" && s.kind != "metric" {
        r.add(
            format!("gate `{id}` was replaced by a {} step", s.kind),
            "nothing checks that metric any more",
        );
    }
    if !before.rollback.is_empty() && s.rollback.is_empty() {
        r.add(
            format!("step `{id}` no longer has a rollback"),
            "a failure after it leaves its change in place",
        );
    }
    if !before.continue_on_failure && s.continue_on_failure {
        r.add(
            format!("a failure of `{id}` no longer unwinds the run"),
            "the run goes on past it (continue_on_failure)",
        );
    }
    if before.timeout.is_some() && s.timeout.is_none() {
        r.add(
            format!("step `{id}` no longer has a timeout"),
            "a hang now waits forever",
        );
    }
    // A gate, an approval, or a page/notice step of on_failure/finally.
    let guards = list.is_some() || matches!(s.kind, "metric" | "approval");
    let what = list.map_or_else(|| s.kind.to_string(), |l| format!("{l} step"));
    if guards && before.when.is_none() && s.when.is_some() {
        r.add(
            format!(
                "{what} `{id}` may now be skipped: when {}",
                s.when.as_deref().unwrap_or_default()
            ),
            "it no longer runs every time",
        );
    }
    if guards && before.when_value != Some(false) && s.when_value == Some(false) {
        r.add(
            format!("{what} `{id}` is skipped with these params"),
            "its `when` is now false: it does not run",
        );
    }
    if let (Some(a), Some(b)) = (&before.gate, &s.gate) {
        r.gate(&format!("gate `{id}`"), s, a, b);
    }
    // Step-down gates and other checks inside rollback bodies, by position.
    for (n, (a, b)) in before.rollback.iter().zip(&s.rollback).enumerate() {
        if let (Some(a), Some(b)) = (&a.gate, &b.gate) {
            r.gate(&format!("rollback gate {} of `{id}`", n + 1), s, a, b);
        }
    }
    let gates_before = before.rollback.iter().filter(|x| x.gate.is_some()).count();
    let gates_after = s.rollback.iter().filter(|x| x.gate.is_some()).count();
    if gates_after < gates_before && !s.rollback.is_empty() {
        r.add(
            format!("rollback of `{id}` has fewer gates: {gates_before} -> {gates_after}"),
            "a step-down goes on without checking the metric between steps",
        );
    }
    // A gate sampled again after a breach lets a bad canary pass.
    let attempts = |x: &PlannedStep| x.retry.as_ref().and_then(|r| r.attempts.value);
    if s.kind == "metric"
        && s.retry.is_some()
        && (before.retry.is_none() || attempts(s) > attempts(before))
    {
        r.add(
            format!(
                "gate `{id}` is retried after a breach: retry {} -> {}",
                before.retry.as_ref().map_or("none", |x| x.text.as_str()),
                s.retry.as_ref().map_or("none", |x| x.text.as_str())
            ),
            "a failed gate is sampled again until it passes",
        );
    }
}

fn approval_risks(r: &mut Risks<'_>, base: &Plan, head: &Plan) {
    for a in &base.approvals {
        let Some(b) = head.approvals.iter().find(|b| b.step == a.step) else {
            r.add(
                format!("approval `{}` was dropped", a.step),
                "the rollout no longer waits for a person",
            );
            continue;
        };
        if a.required.value.is_some() && b.required.value.is_none() {
            r.add(
                format!(
                    "approval `{}` needs {} approvers, known only at run time",
                    a.step, b.required.text
                ),
                "it now comes from a param not given: the diff cannot say it is not lower",
            );
        }
        if let (Some(x), Some(y)) = (a.required.value, b.required.value) {
            if y < x {
                r.add(
                    format!("approval `{}` needs fewer approvers: {x} -> {y}", a.step),
                    "fewer people must agree",
                );
            }
        }
        match (&a.approvers, &b.approvers) {
            (Some(_), None) => r.add(
                format!("approval `{}` may now be given by anyone", a.step),
                "its approvers list was removed",
            ),
            (Some(x), Some(y)) => {
                let new: Vec<&String> = y.iter().filter(|n| !x.contains(n)).collect();
                if !new.is_empty() {
                    let names: Vec<String> = new.iter().map(|n| code(n)).collect();
                    r.add(
                        format!(
                            "approval `{}` may now be given by {}",
                            a.step,
                            names.join(", ")
                        ),
                        "more people can approve the rollout",
                    );
                }
            }
            _ => {}
        }
        if !a.allow_self_approval && b.allow_self_approval {
            r.add(
                format!("approval `{}` now allows self approval", a.step),
                "whoever starts the run can approve it alone",
            );
        }
        if a.identity == "verified" && b.identity != "verified" {
            r.add(
                format!("approval `{}` no longer verifies identities", a.step),
                "approver names are now claimed, not proven",
            );
        }
    }
    for f in &head.flags {
        let was_restored = base
            .flags
            .iter()
            .find(|x| x.step == f.step)
            .is_some_and(|x| x.restored_on_failure);
        if was_restored && !f.restored_on_failure {
            r.add(
                format!("flag change `{}` is no longer restored on failure", f.step),
                "an unwind leaves users on the new value",
            );
        }
    }
}

fn top_level_risks(r: &mut Risks<'_>, base: &Plan, head: &Plan) {
    match (&base.lock, &head.lock) {
        (Some(l), None) => r.add(
            format!("lock {} was removed", code(l)),
            "two runs of this runbook can now act at once",
        ),
        (Some(a), Some(b)) if a != b => r.add(
            format!("lock changed: {} -> {}", code(a), code(b)),
            "runs holding the old lock no longer exclude this one",
        ),
        _ => {}
    }
    if head.concurrency > base.concurrency {
        r.add(
            format!(
                "concurrency raised: {} -> {}",
                base.concurrency, head.concurrency
            ),
            "more steps act at once, so a failure catches more of them mid-change",
        );
    }
}

/// Gates and approvals that no longer come before a step they came before
/// (`full`, 100%, moved so it no longer waits for `gate_errors`), and gates
/// that no longer come after a change they checked: read off each plan's
/// step graph (a plan's steps are its runbook's, in the same order).
fn guard_risks(r: &mut Risks<'_>, base: &Plan, head: &Plan) {
    let (was, is) = (base.source.graph.ancestors(), head.source.graph.ancestors());
    let (in_base, in_head) = (step_index(base), step_index(head));
    // Steps of both plans: (index in base, index in head, the step in head).
    let common: Vec<(usize, usize, &PlannedStep)> = head
        .steps
        .iter()
        .enumerate()
        .filter_map(|(h, s)| Some((*in_base.get(s.id.as_str())?, h, s)))
        .collect();
    let ids = |mut lost: Vec<&str>| {
        lost.sort_unstable();
        lost.iter()
            .map(|id| format!("`{id}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // Reported after every "no longer waits", as a list of its own.
    let mut measures_early = Vec::new();
    for (gb, g) in base.steps.iter().enumerate() {
        if !matches!(g.kind, "metric" | "approval") {
            continue;
        }
        let Some(&gh) = in_head
            .get(g.id.as_str())
            .filter(|&&h| head.steps[h].kind == g.kind)
        else {
            continue;
        };
        let after: Vec<&str> = common
            .iter()
            .filter(|&&(b, h, _)| was.is_ancestor(gb, b) && !is.is_ancestor(gh, h))
            .map(|(_, _, s)| s.id.as_str())
            .collect();
        // A gate that no longer follows a change it followed measures before it.
        let before: Vec<&str> = common
            .iter()
            .filter(|&&(b, h, s)| {
                g.kind == "metric"
                    && !matches!(s.kind, "metric" | "approval")
                    && was.is_ancestor(b, gb)
                    && !is.is_ancestor(h, gh)
            })
            .map(|(_, _, s)| s.id.as_str())
            .collect();
        if !after.is_empty() {
            let what = if g.kind == "metric" {
                "gate"
            } else {
                "approval"
            };
            r.add(
                format!("{} no longer wait(s) for {what} `{}`", ids(after), g.id),
                "they can now run before it has passed",
            );
        }
        if !before.is_empty() {
            measures_early.push((
                format!("gate `{}` no longer runs after {}", g.id, ids(before)),
                "it may measure before that change is live",
            ));
        }
    }
    for (what, why) in measures_early {
        r.add(what, why);
    }
}

/// Step ids to their index in a plan's steps (and its graph).
fn step_index(p: &Plan) -> HashMap<&str, usize> {
    p.steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect()
}

/// A secret param's value cannot be shown, so a change to it is a risk
/// wherever it feeds a gate or an approval.
fn secret_param_risks(r: &mut Risks<'_>, base: &Plan, head: &Plan) {
    for p in head.params.iter().filter(|p| p.secret) {
        let (Some(a), Some(b)) = (base.resolved.get(&p.name), head.resolved.get(&p.name)) else {
            continue;
        };
        if a.0 == b.0 {
            continue;
        }
        let guards: Vec<String> = head
            .steps
            .iter()
            .filter(|s| {
                matches!(s.kind, "metric" | "approval")
                    || s.rollback.iter().any(|x| x.gate.is_some())
            })
            .filter(|s| p.used_by.contains(&s.id))
            .map(|s| format!("`{}`", s.id))
            .collect();
        if !guards.is_empty() {
            r.add(
                format!(
                    "secret param `{}` changed; it feeds {}",
                    p.name,
                    guards.join(", ")
                ),
                "its value cannot be shown: check by hand that the gates are not looser",
            );
        }
    }
}

fn provider_risks(r: &mut Risks<'_>, base: &Plan, head: &Plan) {
    for a in &base.providers {
        let Some(b) = head.providers.iter().find(|b| b.name == a.name) else {
            continue;
        };
        if a.kind != b.kind || a.source != b.source {
            r.add(
                format!(
                    "provider `{}` changed: {} {} -> {} {}",
                    a.name,
                    a.kind,
                    code(&a.source),
                    b.kind,
                    code(&b.source)
                ),
                "gates and flags using it read or write somewhere else",
            );
        }
    }
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
    let code = |s: &str| if md { md_code(s) } else { s.to_string() };
    let arrow = if md { "→" } else { "->" };
    let line = |s: &str| if md { md_inline(s) } else { s.to_string() };
    if md {
        let _ = writeln!(o, "## Plan changes: {}", md_code(&d.head));
    } else {
        let _ = writeln!(o, "Plan changes: {}", d.head);
    }
    if d.is_empty() {
        let _ = writeln!(o, "\nNo change to the plan.");
        return o;
    }
    if !d.risks.is_empty() {
        h(
            &mut o,
            &format!("Needs a careful look ({} risk(s))", d.risks.len()),
        );
        for r in &d.risks {
            let mark = if md { "⚠️ " } else { "! " };
            let _ = writeln!(o, "- {mark}{}: {}", line(&r.what), line(&r.why));
        }
    }
    if !d.params.is_empty() {
        h(&mut o, "Params");
        for p in &d.params {
            let feeds = if p.feeds.is_empty() {
                "read by no step".to_string()
            } else {
                let ids: Vec<String> = p.feeds.iter().map(|f| code(f)).collect();
                format!("feeds {}", ids.join(", "))
            };
            let _ = writeln!(
                o,
                "- {}: {} {arrow} {} ({feeds})",
                code(&p.name),
                code(&shown(p.before.as_ref())),
                code(&shown(p.after.as_ref()))
            );
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
        for c in &d.changed {
            let _ = writeln!(o, "- {}", code(&c.step));
            for f in &c.changes {
                let _ = writeln!(
                    o,
                    "  - {}: {} {arrow} {}",
                    f.field,
                    code(&f.before),
                    code(&f.after)
                );
            }
        }
    }
    if !d.settings.is_empty() {
        h(&mut o, "Settings changed");
        for f in &d.settings {
            let _ = writeln!(
                o,
                "- {}: {} {arrow} {}",
                f.field,
                code(&f.before),
                code(&f.after)
            );
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
        let _ = writeln!(o, "- before: {}", code(&show(&d.waves_before)));
        let _ = writeln!(o, "- after: {}", code(&show(&d.waves_after)));
    }
    if d.worst_case_before != d.worst_case_after {
        h(&mut o, "Duration");
        let _ = writeln!(
            o,
            "- worst case {} {arrow} {}",
            d.worst_case_before, d.worst_case_after
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::preview::threshold;

    fn plan(lock: &str) -> Plan {
        use std::sync::Arc;
        let y = format!("version: 1\nname: t\n{lock}steps:\n  - id: a\n    shell: x\n");
        let rb = Arc::new(crate::validate::validate_text(&y).runbook.expect("valid"));
        Plan::build(&rb, &y, &crate::plan::resolve_params(&rb, &[]).unwrap())
    }

    /// Waiting or refused, a second run never overlaps the first: a wait
    /// added, changed or dropped is a change to see, not a risk.
    #[test]
    fn lock_waits_are_changes_and_a_removed_lock_a_risk() {
        let refuse = plan("lock: deploy\n");
        let wait = plan("lock: { key: deploy, wait: 30m }\n");
        let longer = plan("lock: { key: deploy, wait: 2h }\n");
        let none = plan("");
        let settings = |d: &PlanDiff| {
            d.settings
                .iter()
                .map(|f| format!("{}: {} -> {}", f.field, f.before, f.after))
                .collect::<Vec<_>>()
        };
        for (base, head, expected) in [
            (&wait, &refuse, "lock wait: 30m -> none (refused at once)"),
            (&refuse, &wait, "lock wait: none (refused at once) -> 30m"),
            (&wait, &longer, "lock wait: 30m -> 2h"),
            (&none, &wait, "lock: none -> deploy"),
        ] {
            let d = diff(base, head);
            assert!(d.risks.is_empty(), "{expected}: {:?}", d.risks);
            assert_eq!(settings(&d), [expected]);
            let text = render_diff(&d, Format::Text);
            assert!(text.contains("\nSettings changed:\n- lock"), "{text}");
            assert!(!text.contains("No change"), "{text}");
        }
        let d = diff(&wait, &none);
        assert_eq!(d.risks.len(), 1, "{:?}", d.risks);
        assert!(d.risks[0].what.contains("was removed"), "{:?}", d.risks);
        assert!(settings(&d).is_empty());
        let d = diff(&wait, &plan("lock: { key: other, wait: 30m }\n"));
        assert_eq!(d.risks.len(), 1, "{:?}", d.risks);
        assert!(d.risks[0].what.starts_with("lock changed"), "{:?}", d.risks);
        let same = diff(&wait, &plan("lock: { key: deploy, wait: 1800s }\n"));
        assert!(same.is_empty());
    }

    #[test]
    fn thresholds_normalise_direction() {
        let t = |s| threshold(s).map(|t| (t.op, t.bound));
        assert_eq!(t("value < 0.01"), Some(("<", 0.01)));
        assert_eq!(t("0.01 > value"), Some(("<", 0.01)));
        assert_eq!(t("value >= 99.5"), Some((">=", 99.5)));
        assert_eq!(t("value < vars.x"), None);
    }

    #[test]
    fn looser_says_by_how_much() {
        let th = |op, bound| Threshold { op, bound };
        assert_eq!(
            looser(th("<=", 0.003), th("<=", 0.03)).as_deref(),
            Some("10x looser")
        );
        assert_eq!(looser(th("<=", 0.03), th("<=", 0.003)), None);
        assert_eq!(
            looser(th(">=", 99.5), th(">=", 99.0)).as_deref(),
            Some("bound 99.5 -> 99")
        );
        assert_eq!(
            looser(th("<", 1.0), th("<=", 1.0)).as_deref(),
            Some("bound 1 -> 1")
        );
    }
}
