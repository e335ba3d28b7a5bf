//! `Runbook` -> `Plan`: the dry-run preview as one serialisable struct.
//!
//! A plan renders every template with the given params and stands symbols in
//! for what only a run can know (`<steps.deploy.outputs.url>`, `<env.HOME>`),
//! so building one executes nothing and contacts nothing. Text, Markdown,
//! JSON and Mermaid are all renderings of this one struct (`render.rs`).//!
//! This file is the plan's types and [`Plan::build`]; `params.rs` resolves
//! the params a plan is built from, `preview.rs` renders what each step
//! shows, `render.rs` and `diff.rs` turn plans into text.

mod diff;
mod flag_timeline;
mod mermaid;
mod param_use;
mod params;
mod preflight;
mod preview;
mod render;
mod unwind;

use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value as Json;

pub use diff::{diff, render_diff, PlanDiff};
pub use params::{resolve_params, resolve_params_for_preview, ResolvedParams};
pub use preflight::{preflight, PLAN_ROOTS, RUN_ROOTS};
pub use preview::{substitute, worst_case};
pub use render::{render, Format};
pub use unwind::UnwindOrder;

use crate::duration;
use crate::runbook::{ActionKind, Rollback, Runbook, Step};

use params::secret_params;
use preview::{
    count, flag_store, preview_context, preview_json, show, static_when, step_preview, time_span,
};

impl Plan {
    /// The validated runbook the plan was built from.
    pub fn runbook(&self) -> &Runbook {
        &self.source
    }
}

#[derive(Debug, Serialize, JsonSchema)]
#[schemars(
    title = "runbook plan",
    description = "`runbook plan --format json`: what a run of this runbook with these params would do. Durations are `{seconds, text}` (seconds `null` when only a run can know them), counts `{value, text}`; `null` where a field does not apply."
)]
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
    /// Required params this plan was built without: shown as `<params.NAME>`.
    pub not_given: Vec<String>,
    /// `claimed` (names as given with `--as`) until approvals are signed.
    pub identity: &'static str,
    pub concurrency: usize,
    /// The lock key, rendered.
    pub lock: Option<String>,
    /// The lock's `wait`: how long a second run waits in line for the key;
    /// `null` when it is refused at once (or there is no lock).
    pub lock_wait: Option<TimeSpan>,
    /// Where gates read metrics and flags are written.
    pub providers: Vec<PlannedProvider>,
    /// Step ids by wave: each wave may run in parallel once the one before it is done.
    pub waves: Vec<Vec<String>>,
    /// Stages in the order their first step appears, with their steps.
    pub stages: Vec<PlannedStage>,
    pub steps: Vec<PlannedStep>,
    pub on_failure: Vec<PlannedStep>,
    pub finally: Vec<PlannedStep>,
    pub approvals: Vec<PlannedApproval>,
    pub flags: Vec<PlannedFlag>,
    /// Every step with a rollback, in the order unwinding would run them if all had finished.
    pub unwind_order: Vec<String>,
    pub critical_path: CriticalPath,
}

/// A duration: `seconds` is `null` when only a run can know it.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct TimeSpan {
    pub seconds: Option<f64>,
    /// As written in a runbook (`4h`, `1d 2h`), or `<params.NAME>`.
    pub text: String,
}

impl TimeSpan {
    pub fn of(d: Duration) -> TimeSpan {
        TimeSpan {
            seconds: Some(d.as_secs_f64()),
            text: duration::format(d),
        }
    }

    pub fn duration(&self) -> Option<Duration> {
        self.seconds.map(Duration::from_secs_f64)
    }
}

/// A whole number: `value` is `null` when only a run can know it.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Count {
    pub value: Option<i64>,
    pub text: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct PlanParam {
    pub name: String,
    /// `"***"` for a secret; `null` when not given.
    pub value: Json,
    /// `given`, `default` or `not_given`.
    pub source: &'static str,
    pub secret: bool,
    /// Steps whose templates read it, directly or through vars.
    pub used_by: Vec<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct PlannedProvider {
    pub name: String,
    /// `redis`, `file`, `prometheus` or `command`.
    pub kind: &'static str,
    /// Its URL or path, rendered (secrets masked), with a Redis key prefix.
    pub source: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct PlannedStage {
    pub name: String,
    pub steps: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct PlannedRetry {
    /// Attempts in all, the first included.
    pub attempts: Count,
    pub delay: TimeSpan,
    /// `fixed` or `exponential`.
    pub backoff: &'static str,
    pub max_delay: Option<TimeSpan>,
    pub jitter: bool,
    pub text: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct PlannedStep {
    pub id: String,
    pub name: Option<String>,
    pub stage: Option<String>,
    pub kind: &'static str,
    /// 1-based; 0 for `on_failure` and `finally` steps.
    pub wave: usize,
    pub needs: Vec<String>,
    pub when: Option<String>,
    /// The `when` value if params alone decide it.
    pub when_value: Option<bool>,
    /// Params not given that the `when` depends on.
    pub when_not_given: Vec<String>,
    /// The rendered command, request, query, message or flag change.
    pub action: Vec<String>,
    /// The step's deadline (an approval's own `timeout` for approvals).
    pub timeout: Option<TimeSpan>,
    /// `null` when the step has one attempt.
    pub retry: Option<PlannedRetry>,
    pub continue_on_failure: bool,
    /// How this step is undone: rendered rollback bodies, or the automatic flag restore.
    pub rollback: Vec<PlannedRollback>,
    /// If this step fails, the rollbacks that run, in order: the first
    /// [`MAX_LISTED_UNWINDS`] of them; `on_failure_unwinds_more` counts the rest.
    pub on_failure_unwinds: Vec<String>,
    /// How many rollbacks run after those listed in `on_failure_unwinds`.
    pub on_failure_unwinds_more: usize,
    /// If this step fails, the values each flag takes during the unwind
    /// (empty when the list of rollbacks was shortened).
    pub flags_on_failure: Vec<flag_timeline::FlagTimeline>,
    /// A metric gate's terms, for reviewers and `plan --diff`.
    pub gate: Option<PlannedGate>,
    /// Params its templates read, directly or through vars.
    pub reads_params: Vec<String>,
    /// When everything passes at the first try: gate windows; commands,
    /// requests, flag writes and waits for people count as nothing.
    pub typical: Option<TimeSpan>,
    /// Every attempt, delay and timeout used; `null` when unbounded.
    pub worst_case: Option<TimeSpan>,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct PlannedRollback {
    pub kind: &'static str,
    pub does: Vec<String>,
    pub gate: Option<PlannedGate>,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct PlannedGate {
    pub provider: String,
    /// Empty for a `compare` gate.
    pub query: String,
    /// As written; empty for a `compare` gate.
    pub condition: String,
    /// With param and var values put in: `value <= 0.003`.
    pub condition_rendered: String,
    /// The bound the rendered condition sets, when it is one comparison.
    pub threshold: Option<Threshold>,
    /// As written, when set: an evaluation meeting it fails, one meeting
    /// neither condition is inconclusive.
    pub failure_condition: Option<String>,
    pub failure_condition_rendered: Option<String>,
    /// Baseline vs canary, instead of `query` and `condition`.
    pub compare: Option<PlannedCompare>,
    /// A background gate's has no value: it samples until `background_until` ends.
    pub samples: Count,
    pub interval: TimeSpan,
    pub initial_delay: Option<TimeSpan>,
    pub failure_limit: Count,
    /// `null` when no evaluation can be inconclusive.
    pub inconclusive_limit: Option<Count>,
    /// `pause`, `fail` or `pass`; `null` when no evaluation can be inconclusive.
    pub on_inconclusive: Option<&'static str>,
    /// Who answers when it pauses.
    pub pause: Option<PlannedPause>,
    pub error_limit: Count,
    pub dry_run: bool,
    /// A background gate: the step whose end passes it.
    pub background_until: Option<String>,
    /// `fail` or `pass`.
    pub on_no_data: &'static str,
    /// The instant it evaluates at (`at`), when set; `null` or empty: now.
    pub at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct PlannedCompare {
    pub baseline: String,
    pub canary: String,
    pub range: TimeSpan,
    pub step: TimeSpan,
    /// `increase`, `decrease` or `either`.
    pub direction: &'static str,
    /// `null` when a run-time value decides it; `text` shows it then.
    pub confidence: Option<f64>,
    pub allowed_change: Option<f64>,
    /// `fails when the canary's median is more than 10% above the
    /// baseline's with p < 0.02`.
    pub text: String,
    /// `remove` or `replace`.
    pub nan: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct PlannedPause {
    /// `null`: anyone may answer.
    pub approvers: Option<Vec<String>>,
    pub required: Count,
    /// `null`: waits until answered.
    pub timeout: Option<TimeSpan>,
    pub allow_self_approval: bool,
}

/// `value OP bound`, normalised so `value` is on the left.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, JsonSchema)]
pub struct Threshold {
    /// `<`, `<=`, `>`, `>=` or `==`.
    pub op: &'static str,
    pub bound: f64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct PlannedApproval {
    pub step: String,
    pub message: Option<String>,
    pub required: Count,
    /// `null`: anyone may approve.
    pub approvers: Option<Vec<String>>,
    /// `null`: waits until answered.
    pub timeout: Option<TimeSpan>,
    pub allow_self_approval: bool,
    /// `claimed`: approver names are taken as given (`--as`), not proven.
    pub identity: &'static str,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct PlannedFlag {
    pub step: String,
    pub provider: String,
    pub name: String,
    /// The value written, as JSON; run-time values as `"<steps.x.outputs.y>"`.
    pub value: Json,
    pub restored_on_failure: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct CriticalPath {
    pub steps: Vec<String>,
    /// `null` when unbounded.
    pub worst_case: Option<TimeSpan>,
    pub typical: Option<TimeSpan>,
}

/// The most rollbacks listed for one step in [`PlannedStep::on_failure_unwinds`].
///
/// Every list in full is quadratic: in a chain of 10,000 steps, a fifth of them
/// with a rollback, it is ~10^7 names (750 MiB to build, 160 MiB of text). The
/// rest of each list is counted, and `unwind_order` gives the whole order.
pub const MAX_LISTED_UNWINDS: usize = 25;

/// Pre-flight as `plan` runs it and the plan, rendered on one template
/// worker: one thread hop for all their templates instead of one each (a
/// 10,000-step plan renders some 60,000). An evaluation that blows its
/// budget is the error.
pub fn check_and_build(
    rb: &Arc<Runbook>,
    text: &str,
    params: &ResolvedParams,
) -> Result<(Vec<crate::diagnostics::Diagnostic>, Plan), String> {
    let (rb, text, params) = (rb.clone(), text.to_string(), params.clone());
    crate::template::budget::batch(rb.renders, move || {
        let problems = check(&rb, &params);
        let plan = Plan::build(&rb, &text, &params);
        Ok((problems, plan))
    })
    .map_err(|e| crate::steps::template_message(&e))
}

/// [`Plan::build`] on one template worker (see [`check_and_build`]).
pub fn build_batched(
    rb: &Arc<Runbook>,
    text: &str,
    params: &ResolvedParams,
) -> Result<Plan, String> {
    let (rb, text, params) = (rb.clone(), text.to_string(), params.clone());
    crate::template::budget::batch(rb.renders, move || Ok(Plan::build(&rb, &text, &params)))
        .map_err(|e| crate::steps::template_message(&e))
}

/// What `plan` reports before showing a plan: the pre-flight errors a run
/// with these params would stop at, as far as a preview can know them.
pub fn check(rb: &Runbook, params: &ResolvedParams) -> Vec<crate::diagnostics::Diagnostic> {
    preflight(
        rb,
        &preview_context(rb, params),
        PLAN_ROOTS,
        &not_given(rb, params),
    )
}

/// The plan fingerprint: `sha256:` + hex of the runbook's text, the
/// resolved params without the secret ones, and the engine version, each
/// length-prefixed so no two inputs run together.
pub fn fingerprint(text: &str, rb: &Runbook, params: &ResolvedParams) -> String {
    use sha2::{Digest, Sha256};
    let params = Json::Object(public_params(rb, params)).to_string();
    let mut h = Sha256::new();
    for part in [text, &params, env!("CARGO_PKG_VERSION")] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The resolved params without the `secret: true` ones: what the
/// fingerprint hashes and what a journal and `run_started` may hold.
pub fn public_params(rb: &Runbook, params: &ResolvedParams) -> serde_json::Map<String, Json> {
    let secret = secret_params(rb);
    params
        .iter()
        .filter(|(k, _)| !secret.contains(k.as_str()))
        .map(|(k, (v, _))| (k.clone(), v.clone()))
        .collect()
}

/// Secret params given on the command line (not defaulted): `resume` and
/// `rollback` must be given them again.
pub fn given_secret_params(rb: &Runbook, params: &ResolvedParams) -> Vec<String> {
    let secret = secret_params(rb);
    params
        .iter()
        .filter(|(k, (_, given))| *given && secret.contains(k.as_str()))
        .map(|(k, _)| k.clone())
        .collect()
}

impl Plan {
    /// Builds the plan `run` executes and `plan` previews; `text` is the
    /// runbook file as written (for the fingerprint). Required params absent
    /// from `params` (a preview's) render as `<params.NAME>`.
    pub fn build(rb: &Arc<Runbook>, text: &str, params: &ResolvedParams) -> Plan {
        let ctx = preview_context(rb, params);
        let uses = param_use::ParamUse::new(rb);
        let not_given = not_given(rb, params);
        let graph = &rb.graph;
        let order = UnwindOrder::new(&rb.steps, graph);
        let preview = |s: &Step, wave: usize| {
            let (mut p, span) = step_preview(rb, s, wave, &ctx);
            p.reads_params = uses.of_step(s).into_iter().collect();
            if let Some(w) = &s.when {
                p.when_not_given = uses
                    .of_text(&w.text)
                    .into_iter()
                    .filter(|n| not_given.contains(n))
                    .collect();
                if !p.when_not_given.is_empty() {
                    p.when_value = None;
                }
            }
            (p, span)
        };
        // Steps the params skip never start, so are never undone: the
        // preview leaves them out (the run's order is the same list).
        let unwind: Vec<usize> = order
            .all()
            .iter()
            .copied()
            .filter(|&i| static_when(&rb.steps[i], &ctx) != Some(false))
            .collect();
        let mut unwinds = unwinds_on_failure(graph, &unwind, rb.steps.len());
        let mut spans = Vec::with_capacity(rb.steps.len());
        let steps: Vec<PlannedStep> = rb
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let (listed, more) = std::mem::take(&mut unwinds[i]);
                let (mut p, span) = preview(s, graph.wave(i) + 1);
                p.on_failure_unwinds = listed.iter().map(|&j| rb.steps[j].id.clone()).collect();
                p.on_failure_unwinds_more = more;
                if more == 0 {
                    p.flags_on_failure = flag_timeline::for_unwind(rb, &listed, &ctx);
                }
                p.needs = s.needs.iter().map(|&j| rb.steps[j].id.clone()).collect();
                spans.push(span);
                p
            })
            .collect();
        let aux = |list: &[Step]| list.iter().map(|s| preview(s, 0).0).collect::<Vec<_>>();

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
                    required: count(&a.required, &ctx),
                    approvers: a
                        .approvers
                        .as_ref()
                        .map(|l| l.iter().map(|who| show(who, &ctx)).collect()),
                    timeout: a.timeout.as_ref().map(|t| time_span(t, &ctx)),
                    allow_self_approval: a.allow_self_approval,
                    identity: if a.allowed_signers.is_some() || rb.allowed_signers.is_some() {
                        SIGNED
                    } else {
                        IDENTITY
                    },
                }),
                ActionKind::Flag(f) => flags.push(PlannedFlag {
                    step: s.id.clone(),
                    provider: flag_store(rb, f.provider.as_deref()),
                    name: show(&f.name, &ctx),
                    value: preview_json(&f.value, &ctx),
                    // Only main steps are unwound; on_failure/finally run after it.
                    restored_on_failure: n < main && !matches!(s.rollback, Rollback::None),
                }),
                _ => {}
            }
        }

        let (worst, path) = graph.longest_path(|i| spans[i].worst);
        let (typical, _) = graph.longest_path(|i| spans[i].typical);
        let secret_params = secret_params(rb);
        let mut used_by: std::collections::HashMap<&str, Vec<String>> =
            std::collections::HashMap::new();
        let on_failure = aux(&rb.on_failure);
        let finally = aux(&rb.finally);
        for p in steps.iter().chain(&on_failure).chain(&finally) {
            for r in &p.reads_params {
                used_by.entry(r.as_str()).or_default().push(p.id.clone());
            }
        }
        let mut stages: Vec<PlannedStage> = Vec::new();
        for s in &steps {
            let Some(stage) = &s.stage else { continue };
            match stages.iter_mut().find(|x| &x.name == stage) {
                Some(x) => x.steps.push(s.id.clone()),
                None => stages.push(PlannedStage {
                    name: stage.clone(),
                    steps: vec![s.id.clone()],
                }),
            }
        }
        let params_out = rb
            .params
            .iter()
            .map(|decl| {
                let name = decl.name.clone();
                let secret = secret_params.contains(name.as_str());
                let (value, source) = match params.get(&name) {
                    Some(_) if secret => (Json::String("***".into()), source_of(params, &name)),
                    Some((v, _)) => (v.clone(), source_of(params, &name)),
                    None => (Json::Null, "not_given"),
                };
                PlanParam {
                    used_by: used_by.remove(name.as_str()).unwrap_or_default(),
                    name,
                    value,
                    source,
                    secret,
                }
            })
            .collect();
        Plan {
            source: rb.clone(),
            resolved: params.clone(),
            fingerprint: fingerprint(text, rb, params),
            unwind: order.clone(),
            runbook: rb.name.clone(),
            description: rb.description.clone(),
            params: params_out,
            not_given,
            identity: if rb.allowed_signers.is_some() {
                SIGNED
            } else {
                IDENTITY
            },
            concurrency: rb.concurrency,
            lock: rb.lock.as_ref().map(|l| show(&l.key, &ctx)),
            lock_wait: rb
                .lock
                .as_ref()
                .and_then(|l| l.wait.as_ref())
                .map(|w| time_span(w, &ctx)),
            providers: rb
                .providers
                .iter()
                .map(|p| PlannedProvider {
                    name: p.name.clone(),
                    kind: p.kind.name(),
                    source: {
                        let at = p.url.as_ref().or(p.path.as_ref());
                        let mut source = at.map(|t| show(t, &ctx)).unwrap_or_default();
                        if !p.prefix.is_empty() {
                            source.push_str(&format!(" (keys {}*)", p.prefix));
                        }
                        source
                    },
                })
                .collect(),
            waves: graph
                .waves()
                .into_iter()
                .map(|w| w.into_iter().map(|i| rb.steps[i].id.clone()).collect())
                .collect(),
            stages,
            on_failure,
            finally,
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
                worst_case: worst.map(TimeSpan::of),
                typical: typical.map(TimeSpan::of),
            },
        }
    }
}

impl Plan {
    /// The plan `run`, `resume` and `rollback` execute: the runbook, its
    /// params, the unwinding order and the fingerprint (the same as
    /// [`Plan::build`]'s), without the preview. The preview is every step
    /// rendered for a reviewer; a run reads none of it, and for a
    /// 10,000-step runbook it held 10 MiB for the whole run and was most
    /// of the start-up. Each step's preview is still rendered once and
    /// dropped: an error of the render worker (a memory budget blown with
    /// run-time values standing in) refuses the run before anything runs,
    /// as building the whole preview would.
    pub fn for_run(rb: &Arc<Runbook>, text: &str, params: &ResolvedParams) -> Result<Plan, String> {
        let (checked, with) = (rb.clone(), params.clone());
        crate::template::budget::batch(rb.renders, move || {
            let ctx = preview_context(&checked, &with);
            for s in checked
                .steps
                .iter()
                .chain(&checked.on_failure)
                .chain(&checked.finally)
            {
                drop(step_preview(&checked, s, 0, &ctx));
            }
            Ok(())
        })
        .map_err(|e| crate::steps::template_message(&e))?;
        Ok(Plan {
            source: rb.clone(),
            resolved: params.clone(),
            fingerprint: fingerprint(text, rb, params),
            unwind: UnwindOrder::new(&rb.steps, &rb.graph),
            runbook: rb.name.clone(),
            description: rb.description.clone(),
            params: Vec::new(),
            not_given: Vec::new(),
            identity: IDENTITY,
            concurrency: rb.concurrency,
            lock: None,
            lock_wait: None,
            providers: Vec::new(),
            waves: Vec::new(),
            stages: Vec::new(),
            steps: Vec::new(),
            on_failure: Vec::new(),
            finally: Vec::new(),
            approvals: Vec::new(),
            flags: Vec::new(),
            unwind_order: Vec::new(),
            critical_path: CriticalPath {
                steps: Vec::new(),
                worst_case: None,
                typical: None,
            },
        })
    }
}

/// How approver identities are established: names as claimed (`--as`),
/// or proven by SSH signatures against `allowed_signers`.
const IDENTITY: &str = "claimed";
const SIGNED: &str = "signed";

fn source_of(params: &ResolvedParams, name: &str) -> &'static str {
    match params.get(name) {
        Some((_, true)) => "given",
        Some((_, false)) => "default",
        None => "not_given",
    }
}

/// Required params a preview was built without, in declaration order.
pub fn not_given(rb: &Runbook, params: &ResolvedParams) -> Vec<String> {
    rb.params
        .iter()
        .filter(|p| !params.contains_key(&p.name))
        .map(|p| p.name.clone())
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::validate_text;

    /// The plan shows what a flag goes through during each unwind, with the
    /// restore rules the engine applies (a step-down is never undone).
    #[test]
    fn flag_timelines_follow_step_downs_and_skip_intermediate_restores() {
        let y = "version: 1\nname: t\nsteps:\n  - id: one\n    flag: { name: f, value: 1 }\n  - id: ten\n    flag: { name: f, value: 10 }\n  - id: all\n    flag: { name: f, value: 100 }\n    rollback:\n      - flag: { name: f, value: 50 }\n      - flag: { name: f, value: 0 }\n  - id: check\n    shell: exit 1\n";
        let rb = Arc::new(validate_text(y).runbook.expect("valid"));
        let plan = Plan::build(&rb, y, &resolve_params(&rb, &[]).unwrap());
        let values = |step: usize| {
            plan.steps[step]
                .flags_on_failure
                .iter()
                .map(|t| (t.flag.clone(), t.values.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            values(3),
            [(
                "f".to_string(),
                vec![
                    "100".to_string(),
                    "50".into(),
                    "0".into(),
                    "skipped: ten back to 1".into(),
                    flag_timeline::BEFORE_RUN.into()
                ]
            )]
        );
        // Before the step-down exists, every restore runs.
        assert_eq!(
            values(1),
            [(
                "f".to_string(),
                vec![
                    "10".to_string(),
                    "1".into(),
                    flag_timeline::BEFORE_RUN.into()
                ]
            )]
        );
    }

    /// `lock: { key, wait }` shows its key and how long a second run
    /// waits; `lock: K` shows the key alone.
    #[test]
    fn a_queued_lock_shows_its_wait() {
        let plan = |lock: &str| {
            let y = format!("version: 1\nname: t\nparams:\n  env: {{ default: prod }}\n{lock}steps:\n  - id: a\n    shell: x\n");
            let rb = Arc::new(validate_text(&y).runbook.expect("valid"));
            Plan::build(&rb, &y, &resolve_params(&rb, &[]).unwrap())
        };
        let queued = plan("lock: { key: \"deploy-{{ params.env }}\", wait: 30m }\n");
        assert_eq!(queued.lock.as_deref(), Some("deploy-prod"));
        assert_eq!(
            queued.lock_wait,
            Some(TimeSpan::of(Duration::from_secs(1800)))
        );
        let text = render(&queued, Format::Text);
        assert!(
            text.contains("Lock: deploy-prod (waits up to 30m)\n"),
            "{text}"
        );
        let md = render(&queued, Format::Markdown);
        assert!(
            md.contains("| Lock | `deploy-prod`; a second run waits up to 30m in line for it |"),
            "{md}"
        );
        let json: Json = serde_json::from_str(&render(&queued, Format::Json)).unwrap();
        assert_eq!(json["lock"], "deploy-prod");
        assert_eq!(json["lock_wait"]["seconds"], 1800.0);
        assert_eq!(json["lock_wait"]["text"], "30m");

        for refuses in ["lock: deploy\n", "lock: { key: deploy }\n"] {
            let p = plan(refuses);
            assert_eq!(p.lock.as_deref(), Some("deploy"), "{refuses}");
            assert_eq!(p.lock_wait, None, "{refuses}");
            let text = render(&p, Format::Text);
            assert!(text.contains("Lock: deploy\n"), "{text}");
        }
        let none = plan("");
        assert_eq!((none.lock, none.lock_wait), (None, None));
    }

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
