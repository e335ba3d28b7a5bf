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
use super::{PlannedGate, PlannedStep};
use crate::duration;
use crate::runbook::{Action, ActionKind, Backoff, Dur, Num, Rollback, Runbook, Step};
use crate::template::{self, symbol};

/// The context a preview renders with: real params, masked secrets, symbols for the rest.
pub(super) fn preview_context(rb: &Runbook, params: &IndexMap<String, (Json, bool)>) -> Value {
    let secret_params = secret_params(rb);
    let mut p = serde_json::Map::new();
    for (k, (v, _)) in params {
        p.insert(
            k.clone(),
            if secret_params.contains(k.as_str()) {
                Json::String("***".into())
            } else {
                v.clone()
            },
        );
    }
    let secrets: serde_json::Map<String, Json> = rb
        .secrets
        .iter()
        .map(|s| (s.name.clone(), Json::String("***".into())))
        .collect();
    let (p, secrets) = (Value::from_serialize(&p), Value::from_serialize(&secrets));
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
    match template::render_json(v, ctx) {
        Ok(Json::String(s)) => s,
        Ok(j) => j.to_string(),
        Err(e) => format!("<cannot render: {}>", e.detail().unwrap_or("error")),
    }
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
    dur_value(d, ctx).map_or_else(
        || {
            show(
                match d {
                    Dur::Template(t) => t,
                    Dur::Fixed(_) => "",
                },
                ctx,
            )
        },
        duration::format,
    )
}

pub(super) fn num_text(n: &Num, ctx: &Value) -> String {
    num_value(n, ctx).map_or_else(
        || match n {
            Num::Template(t, _) => show(t, ctx),
            Num::Fixed(i) => i.to_string(),
        },
        |i| i.to_string(),
    )
}

/// Lines describing what an action does.
fn describe(a: &Action, rb: &Runbook, ctx: &Value) -> Vec<String> {
    match &a.kind {
        ActionKind::Shell { script } => template::render_shell(script, ctx, true)
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
        ActionKind::Metric(m) => {
            let kind = rb.provider(&m.provider).map_or("?", |p| p.kind.name());
            let mut lines = vec![
                format!("query ({} `{}`): {}", kind, m.provider, show(&m.query, ctx)),
                format!("pass when: {}", m.condition),
            ];
            let samples = num_text(&m.samples, ctx);
            let mut gate = format!(
                "{} sample(s) every {}, fails after more than {} failed",
                samples,
                dur_text(&m.interval, ctx),
                num_text(&m.failure_limit, ctx)
            );
            if m.on_no_data == crate::runbook::OnNoData::Pass {
                gate.push_str("; no data passes");
            }
            lines.push(gate);
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

fn retry_text(a: &Action, ctx: &Value) -> Option<String> {
    let attempts = num_value(&a.retry.attempts, ctx).unwrap_or(1);
    if attempts <= 1 && !matches!(a.retry.attempts, Num::Template(..)) {
        return None;
    }
    let mut s = format!(
        "{} attempts, {} apart",
        num_text(&a.retry.attempts, ctx),
        dur_text(&a.retry.delay, ctx)
    );
    if a.retry.backoff == Backoff::Exponential {
        s.push_str(", doubling");
    }
    if let Some(m) = &a.retry.max_delay {
        s.push_str(&format!(" (at most {})", dur_text(m, ctx)));
    }
    if a.retry.jitter {
        s.push_str(", jittered");
    }
    Some(s)
}

/// Worst-case duration of one action, retries included; `None` if unbounded.
pub fn worst_case(a: &Action, ctx: &Value) -> Option<Duration> {
    let attempts =
        u32::try_from(num_value(&a.retry.attempts, ctx).unwrap_or(1).max(1)).unwrap_or(u32::MAX);
    let per_attempt = match &a.kind {
        ActionKind::Metric(m) => {
            let samples =
                u32::try_from(num_value(&m.samples, ctx).unwrap_or(1).max(1)).unwrap_or(u32::MAX);
            let window = dur_value(&m.interval, ctx)?.saturating_mul(samples.saturating_sub(1));
            match a.timeout.as_ref().and_then(|t| dur_value(t, ctx)) {
                Some(t) => window.min(t),
                None => window,
            }
        }
        ActionKind::Approval(ap) => {
            let t = ap.timeout.as_ref().or(a.timeout.as_ref())?;
            dur_value(t, ctx)?
        }
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

pub(super) fn step_preview(
    rb: &Runbook,
    s: &Step,
    wave: usize,
    ctx: &Value,
    on_failure_unwinds: Vec<String>,
) -> PlannedStep {
    let when_value = static_when(s, ctx);
    let rollback = match &s.rollback {
        Rollback::None => Vec::new(),
        Rollback::Automatic(_) => {
            vec!["restore the flag's previous value (delete it if it did not exist)".into()]
        }
        Rollback::Bodies(bodies) => bodies.iter().flat_map(|b| describe(b, rb, ctx)).collect(),
    };
    PlannedStep {
        id: s.id.clone(),
        name: s.name.clone(),
        stage: s.stage.clone(),
        kind: s.action.kind.name(),
        wave,
        needs: Vec::new(),
        when: s.when.as_ref().map(|w| w.text.clone()),
        when_value,
        action: describe(&s.action, rb, ctx),
        gate: match &s.action.kind {
            ActionKind::Metric(m) => Some(PlannedGate {
                provider: m.provider.clone(),
                query: show(&m.query, ctx),
                condition: m.condition.text.clone(),
                samples: num_value(&m.samples, ctx),
                interval: dur_value(&m.interval, ctx),
                failure_limit: num_value(&m.failure_limit, ctx),
                on_no_data: match m.on_no_data {
                    crate::runbook::OnNoData::Fail => "fail",
                    crate::runbook::OnNoData::Pass => "pass",
                },
            }),
            _ => None,
        },
        timeout: s.action.timeout.as_ref().map(|t| dur_text(t, ctx)),
        retry: retry_text(&s.action, ctx),
        continue_on_failure: s.continue_on_failure,
        rollback,
        on_failure_unwinds,
        on_failure_unwinds_more: 0,
        flags_on_failure: Vec::new(),
        worst_case: if when_value == Some(false) {
            Some(Duration::ZERO)
        } else {
            worst_case(&s.action, ctx)
        },
    }
}
