//! What a plan shows of each step: templates rendered in the preview
//! context (real params, masked secrets, symbols for what only a run
//! knows), actions described as lines, durations and counts as text, and
//! the worst case a step can take.
//!
//! Apart from [`super::Plan::build`] so the plan's shape (the types and how
//! they are put together) reads without the rendering of each field.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use indexmap::IndexMap;
use minijinja::value::{Enumerator, Object};
use minijinja::Value;
use serde_json::Value as Json;

use super::params::secret_params;
use super::{
    Count, PlannedCompare, PlannedGate, PlannedPause, PlannedRetry, PlannedRollback, PlannedStep,
    Threshold, TimeSpan,
};
use crate::duration;
use crate::runbook::{Action, ActionKind, Backoff, Dur, Num, Rollback, Runbook, Step};
use crate::template::{self, symbol};

/// The context a preview renders with: real params, masked secrets, symbols for the rest.
pub(super) fn preview_context(rb: &Runbook, params: &IndexMap<String, (Json, bool)>) -> Value {
    let secret_params = secret_params(rb);
    // Declared params in order; one not given (a preview without required
    // params) stands as `<params.NAME>`.
    let p: Value = rb
        .params
        .iter()
        .map(|decl| {
            let k = decl.name.as_str();
            let v = match params.get(k) {
                None => symbol(format!("params.{k}")),
                Some(_) if secret_params.contains(k) => Value::from("***"),
                Some((v, _)) => Value::from_serialize(v),
            };
            (k.to_string(), v)
        })
        .collect();
    let secrets: serde_json::Map<String, Json> = rb
        .secrets
        .iter()
        .map(|s| (s.name.clone(), Json::String("***".into())))
        .collect();
    let secrets = Value::from_serialize(&secrets);
    let vars = Arc::new(VarsSoFar::default());
    for (k, v) in &rb.vars {
        let ctx = minijinja::context! {
            params => p.clone(),
            vars => Value::from_dyn_object(vars.clone()),
            secrets => secrets.clone(),
            env => symbol("env"),
            run => symbol("run"),
        };
        let rendered =
            template::render_json(v, &ctx).unwrap_or_else(|_| Json::String(format!("<vars.{k}>")));
        vars.lock().insert(k.clone(), rendered);
    }
    let vars = std::mem::take(&mut *vars.lock());
    minijinja::context! {
        params => p,
        vars => Value::from_serialize(&vars),
        secrets => secrets,
        env => symbol("env"),
        steps => symbol("steps"),
        run => symbol("run"),
        step => symbol("step"),
        value => symbol("value"),
    }
}

/// The vars rendered so far, as the context of the next var: one map that
/// grows, where a fresh copy of all earlier vars for each var was quadratic
/// (30,000 vars did not render in a minute).
#[derive(Debug, Default)]
struct VarsSoFar(Mutex<serde_json::Map<String, Json>>);

impl VarsSoFar {
    fn lock(&self) -> std::sync::MutexGuard<'_, serde_json::Map<String, Json>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Object for VarsSoFar {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.lock().get(key.as_str()?).map(Value::from_serialize)
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(
            self.lock()
                .keys()
                .map(|k| Value::from(k.as_str()))
                .collect(),
        )
    }
}

pub(super) fn show(source: &str, ctx: &Value) -> String {
    template::render_str(source, ctx)
        .unwrap_or_else(|e| format!("<cannot render: {}>", e.detail().unwrap_or("error")))
}

pub(super) fn show_json(v: &Json, ctx: &Value) -> String {
    match preview_json(v, ctx) {
        Json::String(s) => s,
        j => j.to_string(),
    }
}

/// A JSON value with its templates rendered; run-time values (symbols)
/// become their `<steps.x.outputs.y>` strings, never `{}`.
pub(super) fn preview_json(v: &Json, ctx: &Value) -> Json {
    template::render_json(v, ctx).unwrap_or_else(|e| {
        Json::String(format!(
            "<cannot render: {}>",
            e.detail().unwrap_or("error")
        ))
    })
}

pub(super) fn dur_value(d: &Dur, ctx: &Value) -> Option<Duration> {
    match d {
        Dur::Fixed(d) => Some(*d),
        Dur::Template(t) => template::render_str(t, ctx)
            .ok()
            .and_then(|s| duration::parse(&s).ok()),
    }
}

pub(super) fn num_value(n: &Num, ctx: &Value) -> Option<i64> {
    match n {
        Num::Fixed(i) => Some(*i),
        Num::Template(t, _) => template::render_value(t, ctx)
            .ok()
            .and_then(|v| i64::try_from(v).ok()),
    }
}

pub(super) fn dur_text(d: &Dur, ctx: &Value) -> String {
    time_span(d, ctx).text
}

pub(super) fn num_text(n: &Num, ctx: &Value) -> String {
    count(n, ctx).text
}

/// A duration as the plan shows it: seconds when params decide it.
pub(super) fn time_span(d: &Dur, ctx: &Value) -> TimeSpan {
    match dur_value(d, ctx) {
        Some(d) => TimeSpan::of(d),
        None => TimeSpan {
            seconds: None,
            text: match d {
                Dur::Template(t) => show(t, ctx),
                Dur::Fixed(d) => duration::format(*d),
            },
        },
    }
}

pub(super) fn count(n: &Num, ctx: &Value) -> Count {
    let value = num_value(n, ctx);
    Count {
        value,
        text: value.map_or_else(
            || match n {
                Num::Template(t, _) => show(t, ctx),
                Num::Fixed(i) => i.to_string(),
            },
            |i| i.to_string(),
        ),
    }
}

/// Lines describing what an action does.
fn describe(a: &Action, rb: &Runbook, ctx: &Value) -> Vec<String> {
    match &a.kind {
        ActionKind::Shell { script, .. } => template::render_shell(script, ctx, true)
            .map(|s| s.display)
            .unwrap_or_else(|e| format!("<cannot render: {}>", e.detail().unwrap_or("error")))
            .trim_end()
            .lines()
            .map(|l| format!("$ {l}"))
            .collect(),
        ActionKind::Http(h) => {
            let mut lines = vec![format!("{} {}", h.method, show(&h.url, ctx))];
            for (k, v) in &h.headers {
                lines.push(format!("{k}: {}", show(v, ctx)));
            }
            if let Some(b) = &h.body {
                lines.push(format!("body: {}", show_json(b, ctx)));
            }
            let status: Vec<String> = h.expect.status.iter().map(ToString::to_string).collect();
            let mut expect = vec![format!("status {}", status.join(" or "))];
            if let Some(b) = &h.expect.body_contains {
                expect.push(format!("body contains {:?}", show(b, ctx)));
            }
            for (ptr, v) in &h.expect.json {
                expect.push(format!("{ptr} == {}", show_json(v, ctx)));
            }
            if let Some(l) = &h.expect.max_latency {
                expect.push(format!("latency <= {}", dur_text(l, ctx)));
            }
            lines.push(format!("expect {}", expect.join(", ")));
            lines
        }
        ActionKind::Metric(m) => gate_lines(rb, m, ctx),
        ActionKind::Approval(ap) => {
            let mut lines = Vec::new();
            if let Some(m) = &ap.message {
                lines.push(show(m, ctx));
            }
            let who = ap.approvers.as_ref().map_or("anyone".to_string(), |l| {
                l.iter()
                    .map(|a| show(a, ctx))
                    .collect::<Vec<_>>()
                    .join(", ")
            });
            lines.push(format!(
                "{} approval(s) from {who}",
                num_text(&ap.required, ctx)
            ));
            lines
        }
        ActionKind::Flag(f) => vec![format!(
            "set {} = {} ({})",
            show(&f.name, ctx),
            show_json(&f.value, ctx),
            flag_store(rb, f.provider.as_deref())
        )],
    }
}

pub(super) fn flag_store(rb: &Runbook, provider: Option<&str>) -> String {
    match provider.and_then(|p| rb.provider(p)) {
        Some(p) => format!("{} `{}`", p.kind.name(), p.name),
        None => "file <state dir>/flags.json".into(),
    }
}

fn retry(a: &Action, ctx: &Value) -> Option<PlannedRetry> {
    let attempts = count(&a.retry.attempts, ctx);
    if attempts.value.is_some_and(|n| n <= 1) {
        return None;
    }
    let delay = time_span(&a.retry.delay, ctx);
    let max_delay = a.retry.max_delay.as_ref().map(|m| time_span(m, ctx));
    let exponential = a.retry.backoff == Backoff::Exponential;
    let mut text = format!("{} attempts, {} apart", attempts.text, delay.text);
    if exponential {
        text.push_str(", doubling");
    }
    if let Some(m) = &max_delay {
        text.push_str(&format!(" (at most {})", m.text));
    }
    if a.retry.jitter {
        text.push_str(", jittered");
    }
    Some(PlannedRetry {
        attempts,
        delay,
        backoff: if exponential { "exponential" } else { "fixed" },
        max_delay,
        jitter: a.retry.jitter,
        text,
    })
}

/// Worst-case duration of one action, retries included; `None` if unbounded.
pub fn worst_case(rb: &Runbook, a: &Action, ctx: &Value) -> Option<Duration> {
    let attempts =
        u32::try_from(num_value(&a.retry.attempts, ctx).unwrap_or(1).max(1)).unwrap_or(u32::MAX);
    let per_attempt = match &a.kind {
        ActionKind::Metric(m) => {
            let step_timeout = a.timeout.as_ref().and_then(|t| dur_value(t, ctx));
            match gate_worst_case(m, ctx) {
                Some(w) => step_timeout.map_or(w, |t| w.min(t)),
                None => step_timeout?,
            }
        }
        ActionKind::Approval(ap) => {
            let t = ap.timeout.as_ref().or(a.timeout.as_ref())?;
            dur_value(t, ctx)?
        }
        ActionKind::Flag(f) => match a.timeout.as_ref() {
            Some(t) => dur_value(t, ctx)?,
            None => flag_write_bound(rb, f.provider.as_deref()),
        },
        _ => dur_value(a.timeout.as_ref()?, ctx)?,
    };
    let mut total = per_attempt.saturating_mul(attempts);
    let mut delay = dur_value(&a.retry.delay, ctx).unwrap_or_default();
    let cap = a.retry.max_delay.as_ref().and_then(|m| dur_value(m, ctx));
    for _ in 1..attempts.min(1000) {
        let d = cap.map_or(delay, |c| delay.min(c));
        total = total.saturating_add(
            d + if a.retry.jitter {
                d / 4
            } else {
                Duration::ZERO
            },
        );
        if a.retry.backoff == Backoff::Exponential {
            delay = delay.saturating_mul(2);
        }
    }
    Some(total)
}

/// A step's `when` if params and vars alone decide it.
pub(super) fn static_when(s: &Step, ctx: &Value) -> Option<bool> {
    s.when.as_ref().and_then(|w| {
        let reads = template::reads(w, true).ok()?;
        reads
            .iter()
            .all(|r| r.starts_with("params") || r.starts_with("vars"))
            .then(|| template::eval_bool(w, ctx).ok())
            .flatten()
    })
}

/// The longest a flag write can take without a step timeout: the Redis
/// store's round trips, each bounded by its provider's timeout; the file
/// store is local.
fn flag_write_bound(rb: &Runbook, provider: Option<&str>) -> Duration {
    match provider.and_then(|p| rb.provider(p)) {
        Some(p) if p.kind == crate::runbook::ProviderKind::Redis => {
            crate::providers::redis_flags::worst_case_set(p.timeout)
        }
        _ => Duration::ZERO,
    }
}

/// The longest one attempt of a gate takes: its delay, then every sample
/// after up to `error_limit` errors each, then a pause's timeout. A
/// background gate holds up its dependents until its first evaluation
/// passes; that is the part on a path.
fn gate_worst_case(m: &crate::runbook::Metric, ctx: &Value) -> Option<Duration> {
    let delay = match &m.initial_delay {
        Some(d) => dur_value(d, ctx)?,
        None => Duration::ZERO,
    };
    let interval = dur_value(&m.interval, ctx)?;
    let tries =
        u32::try_from(num_value(&m.error_limit, ctx)?.max(0).saturating_add(1)).unwrap_or(u32::MAX);
    let samples = match m.until {
        Some(_) => 1,
        None => u32::try_from(num_value(&m.samples, ctx)?.max(1)).unwrap_or(u32::MAX),
    };
    let evaluations = samples.saturating_mul(tries);
    let window = interval.saturating_mul(evaluations.saturating_sub(1));
    let pause = if m.can_pause() && !m.dry_run {
        dur_value(m.pause.timeout.as_ref()?, ctx)?
    } else {
        Duration::ZERO
    };
    Some(delay.saturating_add(window).saturating_add(pause))
}

/// Time a step takes when everything passes at once: a gate's sampling
/// window (for a background gate, until its first evaluation).
fn typical(a: &Action, ctx: &Value) -> Option<Duration> {
    match &a.kind {
        ActionKind::Metric(m) => {
            let delay = match &m.initial_delay {
                Some(d) => dur_value(d, ctx)?,
                None => Duration::ZERO,
            };
            if m.until.is_some() {
                return Some(delay);
            }
            let samples = u32::try_from(num_value(&m.samples, ctx)?.max(1)).unwrap_or(u32::MAX);
            Some(delay + dur_value(&m.interval, ctx)?.saturating_mul(samples - 1))
        }
        _ => Some(Duration::ZERO),
    }
}

/// A step's worst and typical durations, apart from its JSON form
/// ([`PlannedStep::worst_case`]) for the critical path.
pub(super) struct StepSpans {
    pub worst: Option<Duration>,
    pub typical: Option<Duration>,
}

fn gate(rb: &Runbook, m: &crate::runbook::Metric, ctx: &Value) -> PlannedGate {
    use crate::runbook::{Direction, Judge, Nan, OnInconclusive};
    let (query, condition, failure_condition, compare) = match &m.judge {
        Judge::Threshold {
            query,
            condition,
            failure_condition,
        } => (
            show(query, ctx),
            condition.text.clone(),
            failure_condition.as_ref().map(|c| c.text.clone()),
            None,
        ),
        Judge::Compare(c) => {
            let confidence = json_number(&c.confidence, ctx);
            let allowed_change = json_number(&c.allowed_change, ctx);
            let direction = match c.direction {
                Direction::Increase => "increase",
                Direction::Decrease => "decrease",
                Direction::Either => "either",
            };
            (
                String::new(),
                String::new(),
                None,
                Some(PlannedCompare {
                    baseline: show(&c.baseline, ctx),
                    canary: show(&c.canary, ctx),
                    range: time_span(&c.range, ctx),
                    step: time_span(&c.step, ctx),
                    direction,
                    text: compare_text(c, ctx),
                    confidence,
                    allowed_change,
                    nan: match c.nan {
                        Nan::Remove => "remove",
                        Nan::Replace => "replace",
                    },
                }),
            )
        }
    };
    let rendered = substitute(&condition, ctx);
    let inconclusive = m.can_be_inconclusive();
    PlannedGate {
        provider: m.provider.clone(),
        query,
        threshold: threshold(&rendered),
        condition,
        condition_rendered: rendered,
        failure_condition_rendered: failure_condition.as_deref().map(|c| substitute(c, ctx)),
        failure_condition,
        compare,
        samples: match m.until.and_then(|i| rb.steps.get(i)) {
            None => count(&m.samples, ctx),
            Some(until) => Count {
                value: None,
                text: format!("until `{}` finishes", until.id),
            },
        },
        interval: time_span(&m.interval, ctx),
        initial_delay: m.initial_delay.as_ref().map(|d| time_span(d, ctx)),
        failure_limit: count(&m.failure_limit, ctx),
        inconclusive_limit: inconclusive.then(|| count(&m.inconclusive_limit, ctx)),
        on_inconclusive: inconclusive.then_some(match m.on_inconclusive {
            OnInconclusive::Pause => "pause",
            OnInconclusive::Fail => "fail",
            OnInconclusive::Pass => "pass",
        }),
        pause: m.can_pause().then(|| PlannedPause {
            approvers: m
                .pause
                .approvers
                .as_ref()
                .map(|l| l.iter().map(|a| show(a, ctx)).collect()),
            required: count(&m.pause.required, ctx),
            timeout: m.pause.timeout.as_ref().map(|t| time_span(t, ctx)),
            allow_self_approval: m.pause.allow_self_approval,
        }),
        error_limit: count(&m.error_limit, ctx),
        dry_run: m.dry_run,
        background_until: m.until.and_then(|i| rb.steps.get(i)).map(|s| s.id.clone()),
        on_no_data: match m.on_no_data {
            crate::runbook::OnNoData::Fail => "fail",
            crate::runbook::OnNoData::Pass => "pass",
        },
        at: m.at.as_ref().map(|at| show_json(at, ctx)),
    }
}

/// What a gate evaluates and when it fails, pauses or passes, for the
/// plan's text.
fn gate_lines(rb: &Runbook, m: &crate::runbook::Metric, ctx: &Value) -> Vec<String> {
    use crate::runbook::{Judge, OnInconclusive};
    let kind = rb.provider(&m.provider).map_or("?", |p| p.kind.name());
    let mut lines = Vec::new();
    match &m.judge {
        Judge::Threshold {
            query,
            condition,
            failure_condition,
        } => {
            lines.push(format!(
                "query ({} `{}`): {}",
                kind,
                m.provider,
                show(query, ctx)
            ));
            lines.push(format!("pass when: {}", condition.text));
            if let Some(f) = failure_condition {
                lines.push(format!("fail when: {}", f.text));
            }
        }
        Judge::Compare(c) => {
            lines.push(format!(
                "baseline ({} `{}`): {}",
                kind,
                m.provider,
                show(&c.baseline, ctx)
            ));
            lines.push(format!("canary: {}", show(&c.canary, ctx)));
            lines.push(compare_text(c, ctx));
        }
    }
    if let Some(d) = &m.initial_delay {
        lines.push(format!("first evaluation after {}", dur_text(d, ctx)));
    }
    let every = dur_text(&m.interval, ctx);
    let failures = num_text(&m.failure_limit, ctx);
    let mut gate = match m.until.and_then(|i| rb.steps.get(i)) {
        Some(until) => format!(
            "in the background, every {every} until `{}` finishes (steps after it start once the first evaluation passed); fails and unwinds the run after more than {failures} failed",
            until.id
        ),
        None => format!(
            "{} sample(s) every {every}, fails after more than {failures} failed",
            num_text(&m.samples, ctx)
        ),
    };
    if m.on_no_data == crate::runbook::OnNoData::Pass {
        gate.push_str("; no data passes");
    }
    lines.push(gate);
    if m.can_be_inconclusive() {
        let limit = num_text(&m.inconclusive_limit, ctx);
        let then = match m.on_inconclusive {
            OnInconclusive::Pause => {
                let who = m
                    .pause
                    .approvers
                    .as_ref()
                    .map_or("anyone".to_string(), |l| {
                        l.iter()
                            .map(|a| show(a, ctx))
                            .collect::<Vec<_>>()
                            .join(", ")
                    });
                let timeout = m
                    .pause
                    .timeout
                    .as_ref()
                    .map_or("no timeout".to_string(), |t| {
                        format!("timeout {}", dur_text(t, ctx))
                    });
                format!(
                    "pauses for {} approval(s) from {who} ({timeout}); a rejection fails it",
                    num_text(&m.pause.required, ctx)
                )
            }
            OnInconclusive::Fail => "fails".to_string(),
            OnInconclusive::Pass => {
                if m.until.is_some() {
                    "tolerates them and keeps sampling".to_string()
                } else {
                    "passes".to_string()
                }
            }
        };
        lines.push(format!(
            "inconclusive evaluations: up to {limit} tolerated, then the gate {then}"
        ));
    }
    lines.push(format!(
        "provider errors (unreachable, not one number): up to {} in a row tolerated, retried each interval",
        num_text(&m.error_limit, ctx)
    ));
    if m.dry_run {
        lines.push("dry run: evaluated and recorded, never fails or pauses the run".into());
    }
    // An empty `at` (a param left at its default) means "now".
    if let Some(at) =
        m.at.as_ref()
            .map(|at| show_json(at, ctx))
            .filter(|at| !at.is_empty())
    {
        lines.push(format!("evaluated at {at}"));
    }
    lines
}

/// A number setting (`confidence`, `allowed_change`) when params decide it.
fn json_number(v: &Json, ctx: &Value) -> Option<f64> {
    match v {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => {
            let rendered = show(
                &crate::runbook::Tpl::new(s.clone(), Default::default()),
                ctx,
            );
            rendered.trim().parse().ok()
        }
        _ => None,
    }
}

/// What fails a comparison, for people: `fails when the canary's median is
/// more than 10% above the baseline's with p < 0.02`.
pub(crate) fn compare_text(c: &crate::runbook::Compare, ctx: &Value) -> String {
    use crate::runbook::Direction;
    let change = json_number(&c.allowed_change, ctx).map_or_else(
        || show_json(&c.allowed_change, ctx),
        |v| format!("{}%", crate::numbers::human(v * 100.0)),
    );
    let p = json_number(&c.confidence, ctx).map_or_else(
        || format!("1 - {}", show_json(&c.confidence, ctx)),
        |v| crate::numbers::human(1.0 - v),
    );
    let side = match c.direction {
        Direction::Increase => "above",
        Direction::Decrease => "below",
        Direction::Either => "away from",
    };
    format!(
        "fails when the canary's median is more than {change} {side} the baseline's, at p < {p} (Mann-Whitney U over {} at {} resolution)",
        time_span(&c.range, ctx).text,
        time_span(&c.step, ctx).text
    )
}

/// A condition with each `params.X` / `vars.X` it reads replaced by its
/// value (`value <= params.max_5xx` -> `value <= 0.003`), so a reviewer
/// sees the threshold and `plan --diff` compares the bounds that will run.
pub fn substitute(condition: &str, ctx: &Value) -> String {
    let Ok(reads) = template::reads(condition, true) else {
        return condition.to_string();
    };
    let mut out = condition.to_string();
    // Longest first, so `params.a` does not cut into `params.ab`.
    let mut reads: Vec<&String> = reads
        .iter()
        .filter(|r| r.starts_with("params.") || r.starts_with("vars."))
        .collect();
    reads.sort_by_key(|r| std::cmp::Reverse(r.len()));
    for r in reads {
        let Ok(v) = template::render_value(&format!("{{{{ {r} }}}}"), ctx) else {
            continue;
        };
        let literal = match v.kind() {
            minijinja::value::ValueKind::Number | minijinja::value::ValueKind::Bool => {
                v.to_string()
            }
            minijinja::value::ValueKind::String => format!("{:?}", v.to_string()),
            _ => v.to_string(),
        };
        out = replace_name(&out, r, &literal);
    }
    out
}

/// `text` with each whole occurrence of the dotted `name` replaced.
fn replace_name(text: &str, name: &str, with: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (at, _) in text.match_indices(name) {
        let before = text[..at].chars().next_back();
        let after = text[at + name.len()..].chars().next();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.')
            || after.is_some_and(|c| c.is_alphanumeric() || c == '_')
        {
            continue;
        }
        out.push_str(&text[last..at]);
        out.push_str(with);
        last = at + name.len();
    }
    out.push_str(&text[last..]);
    out
}

/// A number, or an expression of numbers alone (`0.003 * 100`, once
/// params are put in).
///
/// Only arithmetic: `0.003 or true` is a number to minijinja (`or` returns
/// its first truthy operand) but not a bound, and `value` then always passes.
fn constant(side: &str) -> Option<f64> {
    if let Ok(n) = side.parse() {
        return Some(n);
    }
    let arithmetic = |c: char| c.is_ascii_digit() || " \t.eE+-*/()".contains(c);
    if !side.chars().all(arithmetic) {
        return None;
    }
    let v = template::render_value(&format!("{{{{ ({side}) }}}}"), &Value::UNDEFINED).ok()?;
    f64::try_from(v).ok()
}

/// Parses `value OP number` (or `number OP value`) into the bound with
/// `value` on the left.
pub(super) fn threshold(condition: &str) -> Option<Threshold> {
    let c = condition.trim();
    for op in ["<=", ">=", "==", "<", ">"] {
        let Some((l, r)) = c.split_once(op) else {
            continue;
        };
        let (l, r) = (l.trim(), r.trim());
        let (op, flipped): (&'static str, &'static str) = match op {
            "<=" => ("<=", ">="),
            ">=" => (">=", "<="),
            "<" => ("<", ">"),
            ">" => (">", "<"),
            _ => ("==", "=="),
        };
        return if l == "value" {
            constant(r).map(|bound| Threshold { op, bound })
        } else if r == "value" {
            constant(l).map(|bound| Threshold { op: flipped, bound })
        } else {
            None
        };
    }
    None
}

fn rollback_of(b: &Action, rb: &Runbook, ctx: &Value) -> PlannedRollback {
    PlannedRollback {
        kind: b.kind.name(),
        does: describe(b, rb, ctx),
        gate: match &b.kind {
            ActionKind::Metric(m) => Some(gate(rb, m, ctx)),
            _ => None,
        },
    }
}

pub(super) fn step_preview(
    rb: &Runbook,
    s: &Step,
    wave: usize,
    ctx: &Value,
) -> (PlannedStep, StepSpans) {
    let when_value = static_when(s, ctx);
    let rollback = match &s.rollback {
        Rollback::None => Vec::new(),
        Rollback::Automatic(_) => vec![PlannedRollback {
            kind: "restore",
            does: vec!["restore the flag's previous value (delete it if it did not exist)".into()],
            gate: None,
        }],
        Rollback::Bodies(bodies) => bodies.iter().map(|b| rollback_of(b, rb, ctx)).collect(),
    };
    let skipped = when_value == Some(false);
    let spans = StepSpans {
        worst: if skipped {
            Some(Duration::ZERO)
        } else {
            worst_case(rb, &s.action, ctx)
        },
        typical: if skipped {
            Some(Duration::ZERO)
        } else {
            typical(&s.action, ctx)
        },
    };
    let timeout = match &s.action.kind {
        ActionKind::Approval(ap) => ap.timeout.as_ref().or(s.action.timeout.as_ref()),
        _ => s.action.timeout.as_ref(),
    };
    let step = PlannedStep {
        id: s.id.clone(),
        name: s.name.clone(),
        stage: s.stage.clone(),
        kind: s.action.kind.name(),
        wave,
        needs: Vec::new(),
        when: s.when.as_ref().map(|w| w.text.clone()),
        when_value,
        when_not_given: Vec::new(),
        action: describe(&s.action, rb, ctx),
        gate: match &s.action.kind {
            ActionKind::Metric(m) => Some(gate(rb, m, ctx)),
            _ => None,
        },
        timeout: timeout.map(|t| time_span(t, ctx)),
        retry: retry(&s.action, ctx),
        continue_on_failure: s.continue_on_failure,
        rollback,
        on_failure_unwinds: Vec::new(),
        on_failure_unwinds_more: 0,
        flags_on_failure: Vec::new(),
        reads_params: Vec::new(),
        typical: spans.typical.map(TimeSpan::of),
        worst_case: spans.worst.map(TimeSpan::of),
    };
    (step, spans)
}
