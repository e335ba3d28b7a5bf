//! `Runbook` -> `Plan`: the dry-run preview as one serialisable struct.
//!
//! A plan renders every template with the given params and stands symbols in
//! for what only a run can know (`<steps.deploy.outputs.url>`, `<env.HOME>`),
//! so building one executes nothing and contacts nothing. Text, Markdown,
//! JSON and Mermaid are all renderings of this one struct (`render.rs`).

mod diff;
mod preflight;
mod render;
mod unwind;

use std::time::Duration;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use indexmap::IndexMap;
use minijinja::value::{Enumerator, Object};
use minijinja::Value;
use serde::Serialize;
use serde_json::Value as Json;

pub use diff::{diff, render_diff, PlanDiff};
pub use preflight::{preflight, PLAN_ROOTS, RUN_ROOTS};
pub use render::{render, Format};
pub use unwind::UnwindOrder;

use crate::diagnostics::Code;
use crate::duration;
use crate::runbook::{Action, ActionKind, Backoff, Dur, Num, Rollback, Runbook, Step};

impl Plan {
    /// The validated runbook the plan was built from.
    pub fn runbook(&self) -> &Runbook {
        &self.source
    }
}
use crate::template::{self, symbol};

#[derive(Debug, Serialize)]
pub struct Plan {
    /// What `run` executes: the validated runbook this plan was built from.
    #[serde(skip)]
    pub source: Arc<Runbook>,
    /// Params as resolved for this plan (secret values included: never serialised).
    #[serde(skip)]
    pub resolved: ResolvedParams,
    /// The one unwinding order, used by the preview and by the engine.
    #[serde(skip)]
    pub unwind: UnwindOrder,
    /// `sha256:` over the runbook's text, the non-secret params and the engine version.
    pub fingerprint: String,
    pub runbook: String,
    pub description: Option<String>,
    pub params: Vec<PlanParam>,
    pub concurrency: usize,
    pub lock: Option<String>,
    /// Step ids by wave: each wave may run in parallel once the one before it is done.
    pub waves: Vec<Vec<String>>,
    pub steps: Vec<PlannedStep>,
    pub on_failure: Vec<PlannedStep>,
    pub finally: Vec<PlannedStep>,
    pub approvals: Vec<PlannedApproval>,
    pub flags: Vec<PlannedFlag>,
    /// Every step with a rollback, in the order unwinding would run them if all had finished.
    pub unwind_order: Vec<String>,
    pub critical_path: CriticalPath,
}

#[derive(Debug, Serialize)]
pub struct PlanParam {
    pub name: String,
    pub value: Json,
    /// `given`, `default`.
    pub source: &'static str,
}

#[derive(Debug, Serialize)]
pub struct PlannedStep {
    pub id: String,
    pub name: Option<String>,
    pub stage: Option<String>,
    pub kind: &'static str,
    pub wave: usize,
    pub needs: Vec<String>,
    pub when: Option<String>,
    /// The `when` value if params alone decide it.
    pub when_value: Option<bool>,
    /// The rendered command, request, query, message or flag change.
    pub action: Vec<String>,
    pub timeout: Option<String>,
    pub retry: Option<String>,
    pub continue_on_failure: bool,
    /// How this step is undone: rendered rollback bodies, or the automatic flag restore.
    pub rollback: Vec<String>,
    /// If this step fails, the rollbacks that run, in order: the first
    /// [`MAX_LISTED_UNWINDS`] of them; `on_failure_unwinds_more` counts the rest.
    pub on_failure_unwinds: Vec<String>,
    /// How many rollbacks run after those listed in `on_failure_unwinds`.
    #[serde(skip_serializing_if = "is_zero")]
    pub on_failure_unwinds_more: usize,
    /// A metric gate's terms, for reviewers and `plan --diff`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate: Option<PlannedGate>,
    /// Worst case for this step alone; `None` when unbounded.
    #[serde(serialize_with = "ser_dur")]
    pub worst_case: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedGate {
    pub provider: String,
    pub query: String,
    pub condition: String,
    pub samples: Option<i64>,
    #[serde(serialize_with = "ser_dur")]
    pub interval: Option<Duration>,
    pub failure_limit: Option<i64>,
    pub on_no_data: &'static str,
}

#[derive(Debug, Serialize)]
pub struct PlannedApproval {
    pub step: String,
    pub message: Option<String>,
    pub required: String,
    pub approvers: Option<Vec<String>>,
    pub timeout: Option<String>,
    pub allow_self_approval: bool,
}

#[derive(Debug, Serialize)]
pub struct PlannedFlag {
    pub step: String,
    pub provider: String,
    pub name: String,
    pub value: String,
    pub restored_on_failure: bool,
}

#[derive(Debug, Serialize)]
pub struct CriticalPath {
    pub steps: Vec<String>,
    #[serde(serialize_with = "ser_dur")]
    pub worst_case: Option<Duration>,
}

/// The most rollbacks listed for one step in [`PlannedStep::on_failure_unwinds`].
///
/// Every list in full is quadratic: in a chain of 10,000 steps, a fifth of them
/// with a rollback, it is ~10^7 names (750 MiB to build, 160 MiB of text). The
/// rest of each list is counted, and `unwind_order` gives the whole order.
pub const MAX_LISTED_UNWINDS: usize = 25;

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn ser_dur<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&duration::format(*d)),
        None => s.serialize_str("unbounded"),
    }
}

/// Params by name: the value, and whether it was given (else the default).
pub type ResolvedParams = IndexMap<String, (Json, bool)>;

/// Resolves `--param` values against the declared params: types, enums,
/// required ones, defaults. Errors are user errors (exit 2).
pub fn resolve_params(
    rb: &Runbook,
    given: &[(String, String)],
) -> Result<ResolvedParams, Vec<(Code, String)>> {
    let mut errors = Vec::new();
    let mut out = IndexMap::new();
    for (k, v) in given {
        match rb.params.iter().find(|p| &p.name == k) {
            None => {
                let names = rb.params.iter().map(|p| p.name.as_str());
                let hint = crate::diagnostics::did_you_mean(k, names)
                    .map(|m| format!(" (did you mean `{m}`?)"))
                    .unwrap_or_default();
                errors.push((Code::UnknownParam, format!("unknown parameter `{k}`{hint}")));
            }
            Some(p) => match p.parse(v) {
                Ok(j) => {
                    out.insert(k.clone(), (j, true));
                }
                Err(e) => errors.push((Code::ParamType, format!("parameter `{k}`: {e}"))),
            },
        }
    }
    for p in &rb.params {
        if out.contains_key(&p.name) {
            continue;
        }
        match &p.default {
            Some(d) => {
                out.insert(p.name.clone(), (d.clone(), false));
            }
            None if p.required => errors.push((
                Code::MissingParam,
                format!(
                    "parameter `{}` is required: pass --param {}=VALUE",
                    p.name, p.name
                ),
            )),
            None => {
                out.insert(p.name.clone(), (Json::Null, false));
            }
        }
    }
    // Keep declaration order. (`swap_remove`, since `out`'s own order is
    // dropped: `shift_remove` is linear, so quadratic over many params.)
    let mut ordered = IndexMap::new();
    for p in &rb.params {
        if let Some(v) = out.swap_remove(&p.name) {
            ordered.insert(p.name.clone(), v);
        }
    }
    if errors.is_empty() {
        Ok(ordered)
    } else {
        Err(errors)
    }
}

/// What `plan` reports before showing a plan: the pre-flight errors a run
/// with these params would stop at, as far as a preview can know them.
pub fn check(rb: &Runbook, params: &ResolvedParams) -> Vec<crate::diagnostics::Diagnostic> {
    preflight(rb, &preview_context(rb, params), PLAN_ROOTS)
}

/// The context a preview renders with: real params, masked secrets, symbols for the rest.
fn preview_context(rb: &Runbook, params: &IndexMap<String, (Json, bool)>) -> Value {
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

fn secret_params(rb: &Runbook) -> HashSet<&str> {
    rb.params
        .iter()
        .filter(|p| p.secret)
        .map(|p| p.name.as_str())
        .collect()
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

fn show(source: &str, ctx: &Value) -> String {
    template::render_str(source, ctx)
        .unwrap_or_else(|e| format!("<cannot render: {}>", e.detail().unwrap_or("error")))
}

fn show_json(v: &Json, ctx: &Value) -> String {
    match template::render_json(v, ctx) {
        Ok(Json::String(s)) => s,
        Ok(j) => j.to_string(),
        Err(e) => format!("<cannot render: {}>", e.detail().unwrap_or("error")),
    }
}

fn dur_value(d: &Dur, ctx: &Value) -> Option<Duration> {
    match d {
        Dur::Fixed(d) => Some(*d),
        Dur::Template(t) => template::render_str(t, ctx)
            .ok()
            .and_then(|s| duration::parse(&s).ok()),
    }
}

fn num_value(n: &Num, ctx: &Value) -> Option<i64> {
    match n {
        Num::Fixed(i) => Some(*i),
        Num::Template(t, _) => template::render_value(t, ctx)
            .ok()
            .and_then(|v| i64::try_from(v).ok()),
    }
}

fn dur_text(d: &Dur, ctx: &Value) -> String {
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

fn num_text(n: &Num, ctx: &Value) -> String {
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
            let who = ap
                .approvers
                .as_ref()
                .map_or("anyone".to_string(), |l| l.join(", "));
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

fn flag_store(rb: &Runbook, provider: Option<&str>) -> String {
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

/// The plan fingerprint: `sha256:` + hex of the runbook's text, the
/// resolved params without the secret ones, and the engine version, each
/// length-prefixed so no two inputs run together.
pub fn fingerprint(text: &str, rb: &Runbook, params: &ResolvedParams) -> String {
    use sha2::{Digest, Sha256};
    let secret = secret_params(rb);
    let public: serde_json::Map<String, Json> = params
        .iter()
        .filter(|(k, _)| !secret.contains(k.as_str()))
        .map(|(k, (v, _))| (k.clone(), v.clone()))
        .collect();
    let params = Json::Object(public).to_string();
    let mut h = Sha256::new();
    for part in [text, &params, env!("CARGO_PKG_VERSION")] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

impl Plan {
    /// Builds the plan `run` executes and `plan` previews; `text` is the
    /// runbook file as written (for the fingerprint).
    pub fn build(rb: &Arc<Runbook>, text: &str, params: &ResolvedParams) -> Plan {
        let ctx = preview_context(rb, params);
        let graph = &rb.graph;
        let order = UnwindOrder::new(&rb.steps, graph);
        // Steps the params skip never start, so are never undone: the
        // preview leaves them out (the run's order is the same list).
        let unwind: Vec<usize> = order
            .all()
            .iter()
            .copied()
            .filter(|&i| static_when(&rb.steps[i], &ctx) != Some(false))
            .collect();
        let mut unwinds = unwinds_on_failure(graph, &unwind, rb.steps.len());

        let mut planned = |i: usize, s: &Step, wave: usize| -> PlannedStep {
            let (listed, more) = std::mem::take(&mut unwinds[i]);
            let names = listed.iter().map(|&j| rb.steps[j].id.clone()).collect();
            let mut p = step_preview(rb, s, wave, &ctx, names);
            p.on_failure_unwinds_more = more;
            p
        };
        let steps: Vec<PlannedStep> = rb
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut p = planned(i, s, graph.wave(i) + 1);
                p.needs = s.needs.iter().map(|&j| rb.steps[j].id.clone()).collect();
                p
            })
            .collect();
        let aux = |list: &[Step]| {
            list.iter()
                .map(|s| step_preview(rb, s, 0, &ctx, Vec::new()))
                .collect::<Vec<_>>()
        };

        let mut approvals = Vec::new();
        let mut flags = Vec::new();
        let main = rb.steps.len();
        for (n, s) in rb
            .steps
            .iter()
            .chain(&rb.on_failure)
            .chain(&rb.finally)
            .enumerate()
        {
            match &s.action.kind {
                ActionKind::Approval(a) => approvals.push(PlannedApproval {
                    step: s.id.clone(),
                    message: a.message.as_ref().map(|m| show(m, &ctx)),
                    required: num_text(&a.required, &ctx),
                    approvers: a.approvers.clone(),
                    timeout: a.timeout.as_ref().map(|t| dur_text(t, &ctx)),
                    allow_self_approval: a.allow_self_approval,
                }),
                ActionKind::Flag(f) => flags.push(PlannedFlag {
                    step: s.id.clone(),
                    provider: flag_store(rb, f.provider.as_deref()),
                    name: show(&f.name, &ctx),
                    value: show_json(&f.value, &ctx),
                    // Only main steps are unwound; on_failure/finally run after it.
                    restored_on_failure: n < main && !matches!(s.rollback, Rollback::None),
                }),
                _ => {}
            }
        }

        let (worst, path) = graph.longest_path(|i| steps[i].worst_case);
        let secret_params = secret_params(rb);
        Plan {
            source: rb.clone(),
            resolved: params.clone(),
            fingerprint: fingerprint(text, rb, params),
            unwind: order.clone(),
            runbook: rb.name.clone(),
            description: rb.description.clone(),
            params: params
                .iter()
                .map(|(k, (v, given))| PlanParam {
                    name: k.clone(),
                    value: if secret_params.contains(k.as_str()) {
                        Json::String("***".into())
                    } else {
                        v.clone()
                    },
                    source: if *given { "given" } else { "default" },
                })
                .collect(),
            concurrency: rb.concurrency,
            lock: rb.lock.as_ref().map(|l| show(l, &ctx)),
            waves: graph
                .waves()
                .into_iter()
                .map(|w| w.into_iter().map(|i| rb.steps[i].id.clone()).collect())
                .collect(),
            on_failure: aux(&rb.on_failure),
            finally: aux(&rb.finally),
            steps,
            approvals,
            flags,
            unwind_order: order
                .all()
                .iter()
                .map(|&i| rb.steps[i].id.clone())
                .collect(),
            critical_path: CriticalPath {
                steps: path.iter().map(|&i| rb.steps[i].id.clone()).collect(),
                worst_case: worst,
            },
        }
    }
}

/// For each main step, the rollbacks that run if it fails, in unwind order
/// (itself, then its ancestors, latest first): the first
/// [`MAX_LISTED_UNWINDS`] of them and how many more.
///
/// One topological sweep builds, for every step, the set of its ancestors that
/// have a rollback as bits indexed by position in `unwind`; a step's list is
/// then the lowest set bits and its count a popcount. Testing every rollback
/// against every step instead is quadratic (10,000 steps: ~10^8 tests).
fn unwinds_on_failure(
    graph: &crate::graph::StepGraph,
    unwind: &[usize],
    n: usize,
) -> Vec<(Vec<usize>, usize)> {
    let mut pos = vec![usize::MAX; n];
    for (p, &j) in unwind.iter().enumerate() {
        pos[j] = p;
    }
    let words = unwind.len().div_ceil(64);
    let mut bits = vec![0u64; n * words];
    let mut out = vec![(Vec::new(), 0); n];
    if words == 0 {
        return out;
    }
    for &i in graph.order() {
        for p in graph.parents(i) {
            for w in 0..words {
                bits[i * words + w] |= bits[p * words + w];
            }
            if pos[p] != usize::MAX {
                bits[i * words + pos[p] / 64] |= 1 << (pos[p] % 64);
            }
        }
        let row = &bits[i * words..(i + 1) * words];
        // Its own rollback comes first: it sits before all its ancestors in `unwind`.
        let mut listed: Vec<usize> = (pos[i] != usize::MAX).then_some(i).into_iter().collect();
        let total = listed.len() + row.iter().map(|w| w.count_ones() as usize).sum::<usize>();
        'fill: for (w, &word) in row.iter().enumerate() {
            let mut word = word;
            while word != 0 {
                if listed.len() == MAX_LISTED_UNWINDS {
                    break 'fill;
                }
                listed.push(unwind[w * 64 + word.trailing_zeros() as usize]);
                word &= word - 1;
            }
        }
        let more = total - listed.len();
        out[i] = (listed, more);
    }
    out
}

/// A step's `when` if params and vars alone decide it.
fn static_when(s: &Step, ctx: &Value) -> Option<bool> {
    s.when.as_ref().and_then(|w| {
        let reads = template::reads(w, true).ok()?;
        reads
            .iter()
            .all(|r| r.starts_with("params") || r.starts_with("vars"))
            .then(|| template::eval_bool(w, ctx).ok())
            .flatten()
    })
}

fn step_preview(
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
        worst_case: if when_value == Some(false) {
            Some(Duration::ZERO)
        } else {
            worst_case(&s.action, ctx)
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::validate_text;

    /// Found by the validate_plan benchmark: every step listed every ancestor
    /// rollback, so a 10,000-step chain took 4.6 s and 750 MiB to plan.
    #[test]
    fn unwind_lists_of_long_chains_are_capped() {
        let mut y = String::from("version: 1\nname: chain\nsteps:\n");
        for i in 0..100 {
            y.push_str(&format!(
                "  - id: s{i}\n    shell: x\n    rollback: {{ shell: y }}\n"
            ));
        }
        let rb = validate_text(&y).runbook.expect("valid");
        let rb = Arc::new(rb);
        let plan = Plan::build(&rb, &y, &resolve_params(&rb, &[]).unwrap());
        let last = &plan.steps[99];
        assert_eq!(last.on_failure_unwinds.len(), MAX_LISTED_UNWINDS);
        assert_eq!(last.on_failure_unwinds[0], "s99");
        assert_eq!(last.on_failure_unwinds_more, 100 - MAX_LISTED_UNWINDS);
        let short = &plan.steps[2];
        assert_eq!(short.on_failure_unwinds, ["s2", "s1", "s0"]);
        assert_eq!(short.on_failure_unwinds_more, 0);
        assert_eq!(plan.unwind_order.len(), 100);
        let text = render(&plan, Format::Text);
        assert!(
            text.contains("then s75, then 75 more in unwind order\n"),
            "{text}"
        );
        let json = render(&plan, Format::Json);
        assert_eq!(json.matches("\"on_failure_unwinds_more\": 75").count(), 1);
    }

    /// Found while benchmarking: each var was rendered with a fresh copy of
    /// all vars above it, and each param looked up among all params, so
    /// 30,000 vars did not plan in a minute and 30,000 params took 6 s.
    #[test]
    fn many_vars_and_params_plan_in_linear_time() {
        let mut y = String::from("version: 1\nname: big\nparams:\n");
        for i in 0..5_000 {
            y.push_str(&format!(
                "  p{i}: {{ default: x{i}, secret: {} }}\n",
                i % 2 == 1
            ));
        }
        y.push_str("vars:\n  v0: start\n");
        for i in 1..5_000 {
            y.push_str(&format!("  v{i}: \"{{{{ vars.v{} }}}}\"\n", i - 1));
        }
        y.push_str(
            "  last: \"{{ vars.v4999 }} {{ params.p0 }} {{ params.p1 }} {{ vars | length }}\"\n",
        );
        y.push_str("steps:\n  - id: a\n    shell: echo {{ vars.last }}\n");
        let t = std::time::Instant::now();
        let rb = validate_text(&y).runbook.expect("valid");
        let rb = Arc::new(rb);
        let plan = Plan::build(&rb, &y, &resolve_params(&rb, &[]).unwrap());
        assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
        assert_eq!(plan.steps[0].action, ["$ echo 'start x0 *** 5000'"]);
        assert_eq!(plan.params[1].value, Json::String("***".into()));
        assert_eq!(plan.params[2].value, Json::String("x2".into()));
    }

    /// The bit-set sweep gives what testing every rollback against every step gives.
    #[test]
    fn unwind_lists_match_a_scan_of_every_rollback() {
        // 300 steps, each needing up to three earlier ones (or none), every
        // third with a rollback: a fixed pseudo-random DAG.
        let mut seed = 7u64;
        let mut rand = |m: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize % m
        };
        let n = 300;
        let needs: Vec<Vec<usize>> = (0..n)
            .map(|i| {
                // Mostly recent steps, so ancestries grow long; sometimes any earlier one.
                let mut d: Vec<usize> = (0..rand(4))
                    .filter(|_| i > 0)
                    .map(|_| {
                        if rand(4) == 0 {
                            rand(i)
                        } else {
                            i - 1 - rand(i.min(8))
                        }
                    })
                    .collect();
                d.sort_unstable();
                d.dedup();
                d
            })
            .collect();
        let graph = crate::graph::StepGraph::build(&needs).unwrap();
        let unwind: Vec<usize> = graph
            .order()
            .iter()
            .rev()
            .copied()
            .filter(|i| i % 3 == 0)
            .collect();
        let got = unwinds_on_failure(&graph, &unwind, n);
        let anc = graph.ancestors();
        for (i, (listed, more)) in got.iter().enumerate() {
            let all: Vec<usize> = unwind
                .iter()
                .copied()
                .filter(|&j| j == i || anc.is_ancestor(j, i))
                .collect();
            let shown = all.len().min(MAX_LISTED_UNWINDS);
            assert_eq!(listed[..], all[..shown], "step {i}");
            assert_eq!(*more, all.len() - shown, "step {i}");
        }
        assert!(got.iter().any(|(_, more)| *more > 0));
    }
}
