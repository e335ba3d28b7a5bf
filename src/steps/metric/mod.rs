//! `metric:` steps: a gate on a metric, evaluated every `interval`.
//!
//! # Verdicts
//!
//! Each evaluation ([`evaluate`]) is `pass`, `fail`, `inconclusive` (with a
//! `failure_condition`, a value meeting neither condition; with `compare`,
//! too few points) or `error` (the provider gave no usable answer: an
//! unreachable server, several series, a command printing garbage). An
//! error is not an evaluation: it does not count toward `samples`, and the
//! gate tries again at the next interval until more than `error_limit`
//! errors in a row fail it. The gate fails as soon as more than
//! `failure_limit` evaluations failed; more than `inconclusive_limit`
//! inconclusive ones fail it, pass it, or pause it for a person
//! (`on_inconclusive`): a pause waits exactly as an approval step does
//! ([`super::approval::wait_for_answers`]), and an approval passes the gate.
//! A `dry_run` gate records every verdict and what it would have done, and
//! never fails or pauses.
//!
//! # Background gates
//!
//! With `background: { until }` the gate has no `samples`: it samples until
//! the scheduler says the `until` step finished ([`BackgroundLink`]), and
//! then passes. It tells the scheduler when its first evaluation passed
//! (the steps after it may start) and while it is paused (nothing new
//! starts); a failure ends the step, and the engine cancels what runs and
//! unwinds. An approved pause of a background gate tolerates inconclusive
//! evaluations from then on (the same journaled approval would otherwise
//! answer every later pause).
//!
//! # Time
//!
//! `at` (RFC 3339 or unix seconds) replays the gate against past data:
//! evaluation `i` (from 0) reads the metric at `at + i × interval`. The
//! pause before an evaluation is the time until that instant, at most
//! `interval`: a window wholly in the past is replayed at once, one that
//! reaches into the future waits for its instants as a live gate would.
//! A background gate's replay keeps the pace of the steps it guards: one
//! evaluation an interval, reading `at + i × interval`.
//! Without `at` evaluations keep to a grid `interval` apart from the first
//! (a slow query does not stretch a long soak). `initial_delay` comes
//! before the first. Waiting is a `tokio::time::sleep` raced against the
//! stop signal, as is every query.
//!
//! # Resume
//!
//! Every evaluation is journaled ([`Event::GateSample`]); a gate the engine
//! died under continues from its evaluations: they are not taken again, and
//! the limits count them.
//!
//! The provider was resolved before the run ([`MetricProvider`]): a server
//! is one client shared by every attempt; a command provider becomes a
//! [`CommandMetric`] per attempt, since only the attempt can render the
//! step's `env` and `cwd`.
//!
//! Outputs: `value` (the last evaluation's; a comparison's relative change;
//! null without data), `samples` (evaluations counted), `failures`,
//! `inconclusive`, `errors`, `p_value` (comparisons), `approved_by` (a
//! paused gate someone passed), `breaches` (what a dry run would have
//! failed or paused on).

mod evaluate;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use minijinja::Value;
use serde_json::Value as Json;

use super::{render, template_message, Attempt, Executor, Outputs, StepError, Stop};
use crate::engine::{resolve_dur, resolve_num};
use crate::events::{Event, GateProgress, Verdict, WaitingDetail};
use crate::providers::command_metric::CommandMetric;
use crate::providers::{BoxFuture, MetricProvider, MetricSource};
use crate::runbook::{Action, Judge, Metric, OnInconclusive};
use crate::state::GateSample;

pub(super) struct MetricExec;

impl Executor for MetricExec {
    type Body = Metric;

    fn run<'a>(
        &'a self,
        m: &'a Metric,
        action: &'a Action,
        cx: &'a Attempt<'a>,
    ) -> BoxFuture<'a, Result<Outputs, StepError>> {
        Box::pin(run(m, action, cx))
    }
}

/// What a background gate and the scheduler tell each other.
pub struct BackgroundLink {
    /// The gate's step index.
    pub index: usize,
    /// To the scheduler: [`GateNews`] of this gate.
    pub news: tokio::sync::mpsc::UnboundedSender<(usize, GateNews)>,
    /// From the scheduler: true once the `until` step finished.
    pub until_done: tokio::sync::watch::Receiver<bool>,
}

/// What a background gate tells the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateNews {
    /// The first evaluation passed: the steps after the gate may start.
    Opened,
    /// Paused for a person: start nothing new until [`GateNews::Resumed`].
    Paused,
    Resumed,
}

impl BackgroundLink {
    fn tell(&self, news: GateNews) {
        let _ = self.news.send((self.index, news));
    }

    async fn until_done(&self) {
        let mut rx = self.until_done.clone();
        if rx.wait_for(|d| *d).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// The limits of one attempt, rendered.
struct Limits {
    samples: Option<i64>,
    failure_limit: i64,
    inconclusive_limit: i64,
    error_limit: i64,
    interval: Duration,
}

/// The counts so far, this attempt (resumed evaluations included).
#[derive(Default)]
struct Tally {
    counted: i64,
    passed: i64,
    failures: i64,
    inconclusive: i64,
    /// What the limits count from: a dry run starts over after each breach
    /// (the totals above are what it reports).
    failures_base: i64,
    inconclusive_base: i64,
    errors: i64,
    errors_in_row: i64,
    /// What a dry run would have failed or paused on.
    breaches: i64,
    last: Option<f64>,
    p_value: Option<f64>,
    /// A background gate whose pause was approved tolerates inconclusive
    /// evaluations from then on.
    accepts_inconclusive: bool,
    approved_by: Option<Vec<String>>,
    /// The evaluations people are shown when the gate pauses.
    recent: Vec<String>,
    /// Why the last evaluation did not pass.
    why: String,
}

impl Tally {
    fn add(&mut self, verdict: Verdict, value: Option<f64>, line: String) {
        match verdict {
            Verdict::Error => {
                self.errors += 1;
                self.errors_in_row += 1;
            }
            v => {
                self.errors_in_row = 0;
                self.counted += 1;
                self.last = value;
                match v {
                    Verdict::Pass => self.passed += 1,
                    Verdict::Fail => self.failures += 1,
                    _ => self.inconclusive += 1,
                }
            }
        }
        if self.recent.len() == 10 {
            self.recent.remove(0);
        }
        self.recent.push(line);
    }
}

/// What a verdict does to the gate, once counted.
enum Next {
    GoOn,
    Fail(String),
    Pause(String),
    /// More inconclusive evaluations than tolerated, `on_inconclusive: pass`.
    Pass,
    /// A dry run's gate would have failed or paused: said, and it goes on.
    Breach(String),
}

/// The gate. Settings that do not render or make no sense are permanent
/// errors; a failed gate is transient (the next attempt samples anew).
async fn run(m: &Metric, action: &Action, cx: &Attempt<'_>) -> Result<Outputs, StepError> {
    let limits = limits(m, cx)?;
    let background = cx.background.filter(|_| m.until.is_some());
    let provider = cx.env.metric_source(&m.provider)?;
    let mut command = match provider {
        MetricProvider::Command { timeout } => Some(command_source(*timeout, action, cx)?),
        MetricProvider::Server(_) => None,
    };
    let judge = match &m.judge {
        Judge::Threshold {
            query,
            condition,
            failure_condition,
        } => {
            let query = match &mut command {
                Some(c) => {
                    let script = crate::template::render_shell(
                        query,
                        cx.template,
                        crate::template::is_shell(&action.interpreter),
                    )
                    .map_err(|e| super::template_error(&e))?;
                    // The query's template values reach it as data, like a script's.
                    c.env.extend(script.values);
                    script.text
                }
                None => render(cx, query)?,
            };
            evaluate::Judge::Threshold {
                query,
                condition: &condition.text,
                failure_condition: failure_condition.as_ref().map(|f| f.text.as_str()),
                on_no_data: m.on_no_data,
            }
        }
        Judge::Compare(c) => evaluate::Judge::Compare {
            baseline: render(cx, &c.baseline)?,
            canary: render(cx, &c.canary)?,
            range: resolve_dur(&c.range, cx.template)?,
            step: resolve_dur(&c.step, cx.template)?,
            settings: evaluate::settings(
                c.direction,
                c.nan,
                resolve_number(&c.confidence, cx, "confidence", |v| v > 0.0 && v < 1.0)?,
                resolve_number(&c.allowed_change, cx, "allowed_change", |v| {
                    v >= 0.0 && v.is_finite()
                })?,
            ),
        },
    };
    let source: &dyn MetricSource = match (&command, provider) {
        (Some(c), _) => c,
        (None, MetricProvider::Server(s)) => s.as_ref(),
        (None, MetricProvider::Command { .. }) => {
            return Err(StepError::permanent("internal error: no command source"))
        }
    };
    let threshold = judge.threshold(cx.template);
    let start_at =
        m.at.as_ref()
            .map(|a| resolve_at(a, cx))
            .transpose()
            .map_err(StepError::permanent)?;

    let resumed = resumed_samples(cx);
    let mut tally = Tally::default();
    // The journaled verdicts are judged again one by one, as they were:
    // breaches of a dry run count each, a pause that sampling went on
    // after was answered, and the verdict that decided the gate before the
    // engine died (and before the step's record) decides it now.
    let mut decided = None;
    let mut opened = m.dry_run;
    tally.why = "(before the engine stopped)".into();
    for (k, s) in resumed.iter().enumerate() {
        tally.add(
            s.verdict,
            s.value,
            format!("sample {}: {}", s.sample, s.verdict.as_str()),
        );
        let next = judge_tally(m, &limits, &mut tally);
        opened |= lets_dependents_start(s.verdict, &tally, &next);
        let last = k + 1 == resumed.len();
        match next {
            Next::GoOn | Next::Breach(_) => {}
            Next::Pause(_) if !last => tally.accepts_inconclusive = true,
            other => decided = Some(other),
        }
    }
    let first_at_ms = resumed.first().map_or_else(now_ms, |s| s.first_at_ms);
    let done = tally.counted + tally.errors;
    if let (Some(b), true) = (background, opened) {
        b.tell(GateNews::Opened);
    }
    if !resumed.is_empty() {
        cx.bus.note(Event::Waiting {
            step: cx.label.to_string(),
            on: {
                let mut also = String::new();
                if tally.inconclusive > 0 {
                    also.push_str(&format!(", {} inconclusive", tally.inconclusive));
                }
                if tally.errors > 0 {
                    also.push_str(&format!(", {} errors", tally.errors));
                }
                format!(
                    "continuing from sample {}/{samples} ({} failed{also}) taken before the engine stopped",
                    tally.counted,
                    tally.failures,
                    samples = limits
                        .samples
                        .map_or_else(|| "?".to_string(), |s| s.to_string()),
                )
            },
            detail: None,
        });
    }

    // Live evaluations keep to a grid: evaluation `i` is due at
    // `anchor + (i - anchor_index) × interval`. A resumed gate keeps the
    // first one's grid while its next is still to come; when the engine was
    // down past it, the grid restarts at now.
    let interval = limits.interval;
    let (anchor, anchor_index) = {
        let now = tokio::time::Instant::now();
        if done == 0 {
            let delay = match &m.initial_delay {
                Some(d) => resolve_dur(d, cx.template)?,
                None => Duration::ZERO,
            };
            (now + delay, 0)
        } else {
            let due = interval_times(interval, done)?
                .checked_add(Duration::from_millis(first_at_ms))
                .map(|d| UNIX_EPOCH + d);
            match due.and_then(|d| d.duration_since(SystemTime::now()).ok()) {
                Some(wait) => (now + wait, done),
                None => (now, done),
            }
        }
    };
    let at_of = |i: i64| -> Result<Option<SystemTime>, StepError> {
        match start_at {
            Some(t0) => Ok(Some(t0 + interval_times(interval, i)?)),
            None => Ok(None),
        }
    };
    let pause_before = |i: i64| -> Result<Duration, StepError> {
        let live = (anchor + interval_times(interval, i - anchor_index)?)
            .saturating_duration_since(tokio::time::Instant::now());
        if i == 0 {
            return Ok(live);
        }
        Ok(match at_of(i)? {
            // A background gate guards steps that run now: its replay
            // keeps their pace, one evaluation an interval.
            Some(_) if background.is_some() => live,
            // Replaying: wait only for instants that have not come yet.
            Some(t) => t
                .duration_since(SystemTime::now())
                .unwrap_or_default()
                .min(interval),
            None => live,
        })
    };
    let samples_text = limits
        .samples
        .map_or_else(|| "?".to_string(), |s| s.to_string());
    let mut i = done;
    loop {
        match decided.take().unwrap_or(Next::GoOn) {
            Next::GoOn => {}
            Next::Breach(why) => cx.bus.note(Event::Output {
                step: cx.label.to_string(),
                stream: crate::events::Stream::Stderr,
                line: why,
            }),
            Next::Fail(why) => {
                // What the gate measured stays readable (its rollback, the report).
                cx.keep(outputs(&tally));
                return Err(StepError::transient(why));
            }
            Next::Pass => return Ok(outputs(&tally)),
            Next::Pause(why) => {
                if let Some(b) = background {
                    b.tell(GateNews::Paused);
                }
                let mut lines = vec![format!("the gate is paused: {why}")];
                lines.extend(tally.recent.iter().cloned());
                // A background gate's `until` ends it, paused or not.
                let answered = tokio::select! {
                    a = super::approval::wait_for_answers(&m.pause, cx, Some(lines)) => Some(a),
                    () = until_done(background) => None,
                };
                if let Some(b) = background {
                    b.tell(GateNews::Resumed);
                }
                let Some(answered) = answered else {
                    return Ok(outputs(&tally));
                };
                let approved = answered.inspect_err(|_| cx.keep(outputs(&tally)))?;
                tally.approved_by = Some(approved);
                if background.is_none() {
                    return Ok(outputs(&tally));
                }
                tally.accepts_inconclusive = true;
                if let (Some(b), false) = (background, opened) {
                    opened = true;
                    b.tell(GateNews::Opened);
                }
            }
        }
        if background.is_none() && limits.samples.is_some_and(|s| tally.counted >= s) {
            return Ok(outputs(&tally));
        }
        if background.is_some_and(|b| *b.until_done.borrow()) {
            return Ok(outputs(&tally));
        }
        let n = tally.counted + 1;
        let at = at_of(i)?;
        let pause = pause_before(i)?;
        if !pause.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                stop = cx.stopped() => return Err(stopped(stop, tally.counted, &samples_text)),
                () = until_done(background) => return Ok(outputs(&tally)),
            }
        }
        let found = tokio::select! {
            r = judge.evaluate(source, at, cx.template, &threshold) => r,
            stop = cx.stopped() => return Err(stopped(stop, tally.counted, &samples_text)),
            () = until_done(background) => return Ok(outputs(&tally)),
        }
        .map_err(|e| StepError::permanent(format!("condition {e}")))?;
        i += 1;
        let mut detail = found.detail.clone();
        detail.dry_run = m.dry_run;
        let verdict = found.verdict;
        let when = at.map_or(String::new(), |t| {
            format!(" at {}", humantime::format_rfc3339_millis(t))
        });
        let why = match (&m.judge, verdict) {
            (_, Verdict::Error) => found.detail.text.clone(),
            (Judge::Threshold { .. }, _) if found.value.is_none() => {
                "the query returned no data (on_no_data: fail)".to_string()
            }
            (
                Judge::Threshold {
                    condition,
                    failure_condition,
                    ..
                },
                v,
            ) => match (failure_condition, v) {
                (Some(f), Verdict::Fail) => {
                    format!("{} meets failure_condition `{}`", found.detail.text, f.text)
                }
                (Some(f), _) => format!(
                    "{} meets neither `{}` nor `{}`",
                    found.detail.text, condition.text, f.text
                ),
                (None, _) => format!(
                    "{} does not satisfy `{}`",
                    found.detail.text, condition.text
                ),
            },
            (Judge::Compare(_), _) => found.detail.text.clone(),
        };
        tally.why = why;
        cx.bus.note(Event::GateSample {
            step: cx.label.to_string(),
            attempt: cx.attempt,
            sample: if verdict == Verdict::Error { n - 1 } else { n },
            passed: verdict == Verdict::Pass,
            value: found.value,
            first_at_ms,
            verdict: Some(verdict),
            detail: Some(Box::new(detail)),
        });
        tally.add(verdict, found.value, String::new());
        let counts = match verdict {
            Verdict::Pass => String::new(),
            Verdict::Fail => format!(
                "; {} failed, failure_limit {}",
                tally.failures, limits.failure_limit
            ),
            Verdict::Inconclusive => format!(
                "; {} inconclusive, inconclusive_limit {}",
                tally.inconclusive, limits.inconclusive_limit
            ),
            Verdict::Error => format!(
                "; {} in a row, error_limit {}",
                tally.errors_in_row, limits.error_limit
            ),
        };
        let dry = if m.dry_run { "dry run, " } else { "" };
        let line = match verdict {
            Verdict::Error => format!(
                "error before sample {n}/{samples_text}{when}: {} ({dry}error{counts})",
                found.detail.text
            ),
            v => format!(
                "sample {n}/{samples_text}{when}: {} ({dry}{}{counts}) [{}]",
                found.detail.text,
                v.as_str(),
                found.detail.threshold
            ),
        };
        if let Some(last) = tally.recent.last_mut() {
            last.clone_from(&line);
        }
        if found.p_value.is_some() {
            tally.p_value = found.p_value;
        }
        let next = judge_tally(m, &limits, &mut tally);
        if let (Some(b), false) = (background, opened) {
            if lets_dependents_start(verdict, &tally, &next) {
                opened = true;
                b.tell(GateNews::Opened);
            }
        }
        let mut progress = line;
        let more = background.is_some() || limits.samples.is_some_and(|s| tally.counted < s);
        let next_at = if more { Some(pause_before(i)?) } else { None };
        if let (true, Some(next)) = (matches!(next, Next::GoOn), next_at) {
            // Live: the cadence (the exact remainder would read 49ms).
            let next = if start_at.is_some() { next } else { interval };
            if !next.is_zero() {
                progress.push_str(&format!(
                    "; next sample in {}",
                    crate::duration::format(next)
                ));
            }
        }
        cx.bus.note(Event::Waiting {
            step: cx.label.to_string(),
            on: progress,
            detail: Some(WaitingDetail::Gate(GateProgress {
                taken: tally.counted,
                samples: limits.samples.unwrap_or(0),
                failures: tally.failures,
                failure_limit: limits.failure_limit,
                interval_ms: crate::events::millis(interval),
                next_at: next_at
                    .and_then(|d| SystemTime::now().checked_add(d))
                    .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
            })),
        });
        decided = Some(next);
    }
}

/// What the counts so far do to the gate. A dry run counts what it would
/// have done as a breach and goes on.
fn judge_tally(m: &Metric, limits: &Limits, tally: &mut Tally) -> Next {
    let at = format!(
        "sample {}{}",
        tally.counted,
        limits.samples.map_or(String::new(), |s| format!("/{s}"))
    );
    let next = if tally.errors_in_row > limits.error_limit {
        let count = match tally.errors_in_row {
            1 => "1 provider error in a row exceeds".to_string(),
            n => format!("{n} provider errors in a row exceed"),
        };
        Next::Fail(format!(
            "gate failed: {}; {count} error_limit {}",
            tally.why, limits.error_limit
        ))
    } else if tally.failures - tally.failures_base > limits.failure_limit {
        let count = match tally.failures - tally.failures_base {
            1 => "1 failed sample exceeds".to_string(),
            n => format!("{n} failed samples exceed"),
        };
        Next::Fail(format!(
            "gate failed at {at}: {}; {count} failure_limit {}",
            tally.why, limits.failure_limit
        ))
    } else if tally.inconclusive - tally.inconclusive_base > limits.inconclusive_limit
        && !tally.accepts_inconclusive
    {
        let count = match tally.inconclusive - tally.inconclusive_base {
            1 => "1 inconclusive sample exceeds".to_string(),
            n => format!("{n} inconclusive samples exceed"),
        };
        let why = format!(
            "{}; {count} inconclusive_limit {}",
            tally.why, limits.inconclusive_limit
        );
        match m.on_inconclusive {
            OnInconclusive::Fail => Next::Fail(format!("gate failed at {at}: {why}")),
            OnInconclusive::Pass if m.until.is_some() => {
                tally.accepts_inconclusive = true;
                Next::GoOn
            }
            OnInconclusive::Pass => Next::Pass,
            OnInconclusive::Pause => Next::Pause(format!("at {at}: {why}")),
        }
    } else {
        Next::GoOn
    };
    if m.dry_run {
        let would = match next {
            Next::GoOn => return Next::GoOn,
            Next::Fail(why) => format!("fail: {why}"),
            Next::Pause(why) => format!("pause: {why}"),
            Next::Pass => return Next::Pass,
            Next::Breach(why) => why,
        };
        tally.breaches += 1;
        // Counted once: the same limits are not breached again by the
        // evaluations that come after.
        tally.errors_in_row = 0;
        tally.failures_base = tally.failures;
        tally.inconclusive_base = tally.inconclusive;
        return Next::Breach(format!("dry run: the gate would {would}"));
    }
    next
}

/// Whether a background gate's evaluation lets the steps after it start:
/// a pass, or an evaluation the gate goes on after without one (tolerated
/// inconclusive ones; a dry run never holds anything back).
fn lets_dependents_start(verdict: Verdict, tally: &Tally, next: &Next) -> bool {
    match (verdict, next) {
        (_, Next::Fail(_) | Next::Pause(_)) | (Verdict::Error, _) => false,
        (Verdict::Pass, _) | (_, Next::Breach(_)) => true,
        (Verdict::Inconclusive, _) => tally.accepts_inconclusive,
        (Verdict::Fail, _) => false,
    }
}

fn outputs(t: &Tally) -> Outputs {
    let mut values = Outputs::new();
    values.insert("value".into(), t.last.map_or(Json::Null, Json::from));
    values.insert("samples".into(), Json::from(t.counted));
    values.insert("failures".into(), Json::from(t.failures));
    values.insert("inconclusive".into(), Json::from(t.inconclusive));
    values.insert("errors".into(), Json::from(t.errors));
    values.insert("breaches".into(), Json::from(t.breaches));
    if let Some(p) = t.p_value {
        values.insert("p_value".into(), Json::from(p));
    }
    if let Some(a) = &t.approved_by {
        values.insert("approved_by".into(), Json::from(a.clone()));
    }
    let mut out = Outputs::new();
    out.insert("outputs".into(), Json::Object(values));
    out
}

async fn until_done(background: Option<&BackgroundLink>) {
    match background {
        Some(b) => b.until_done().await,
        None => std::future::pending().await,
    }
}

fn limits(m: &Metric, cx: &Attempt<'_>) -> Result<Limits, StepError> {
    let bad = StepError::permanent;
    let at_least = |n: &crate::runbook::Num, min: i64, what: &str| -> Result<i64, StepError> {
        let v = resolve_num(n, cx.template)?;
        if v < min {
            return Err(bad(format!("`{what}` is {v}; it must be at least {min}")));
        }
        Ok(v)
    };
    Ok(Limits {
        samples: match m.until {
            Some(_) => None,
            None => Some(at_least(&m.samples, 1, "samples")?),
        },
        failure_limit: at_least(&m.failure_limit, 0, "failure_limit")?,
        inconclusive_limit: at_least(&m.inconclusive_limit, 0, "inconclusive_limit")?,
        error_limit: at_least(&m.error_limit, 0, "error_limit")?,
        interval: resolve_dur(&m.interval, cx.template)?,
    })
}

/// Evaluations an earlier process journaled for this attempt of the gate.
fn resumed_samples(cx: &Attempt<'_>) -> Vec<GateSample> {
    cx.env
        .gate_progress
        .lock()
        .ok()
        .and_then(|mut g| g.remove(cx.label))
        .filter(|(attempt, _)| *attempt == cx.attempt)
        .map(|(_, samples)| samples)
        .unwrap_or_default()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `confidence` or `allowed_change`: a number, or a template rendering to one.
fn resolve_number(
    v: &Json,
    cx: &Attempt<'_>,
    what: &str,
    ok: impl Fn(f64) -> bool,
) -> Result<f64, StepError> {
    let n = match v {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => {
            let text = render(cx, s)?;
            text.trim().parse::<f64>().ok()
        }
        _ => None,
    };
    match n {
        Some(n) if ok(n) => Ok(n),
        _ => Err(StepError::permanent(format!(
            "`{what}` is {v}, which is out of range for it"
        ))),
    }
}

/// A command provider's source for this attempt: the step's interpreter,
/// `env` and `cwd`, rendered now.
fn command_source(
    timeout: Option<Duration>,
    action: &Action,
    cx: &Attempt<'_>,
) -> Result<CommandMetric, StepError> {
    let mut env = cx.env.base_env.clone();
    for (k, v) in &action.env {
        env.push((k.clone(), render(cx, v)?));
    }
    env.push(("RUNBOOK_STEP_ID".into(), cx.step_id.to_string()));
    let cwd = match &action.cwd {
        Some(c) => cx.env.cwd.join(render(cx, c)?),
        None => cx.env.cwd.clone(),
    };
    Ok(CommandMetric {
        interpreter: action.interpreter.to_vec(),
        env,
        cwd,
        timeout,
    })
}

/// `at`: unix seconds (a number, or a string of one) or an RFC 3339 time,
/// possibly from a template.
fn resolve_at(at: &Json, cx: &Attempt<'_>) -> Result<SystemTime, String> {
    let value = match at {
        Json::String(s) => crate::template::render_value(s, cx.template)
            .map_err(|e| format!("`at`: {}", template_message(&e)))?,
        other => Value::from_serialize(other),
    };
    if let Some(s) = value.as_str() {
        return parse_time(s);
    }
    match f64::try_from(value.clone()) {
        Ok(secs) => unix_seconds(secs),
        Err(_) => Err(format!(
            "`at` is {value}, not a time (RFC 3339, e.g. 2024-05-01T12:00:00Z, or unix seconds)"
        )),
    }
}

fn unix_seconds(secs: f64) -> Result<SystemTime, String> {
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("`at` is {secs}, not a time after 1970"));
    }
    Duration::try_from_secs_f64(secs)
        .ok()
        .and_then(|d| UNIX_EPOCH.checked_add(d))
        .ok_or_else(|| format!("`at` is {secs}, out of range"))
}

/// RFC 3339 (`2024-05-01T12:00:00Z`, `...+02:00`, fractions allowed) or
/// unix seconds.
pub(super) fn parse_time(text: &str) -> Result<SystemTime, String> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<f64>() {
        return unix_seconds(secs);
    }
    let bad = || {
        format!(
            "`at` is `{text}`, not a time (RFC 3339, e.g. 2024-05-01T12:00:00Z, or unix seconds)"
        )
    };
    // jiff reads RFC 3339 (and its Temporal superset: a space for `T`, a
    // `[zone]` annotation); an offset or `Z` is required, so a bare date or
    // a local time with no offset is refused rather than guessed at.
    let at: jiff::Timestamp = t.parse().map_err(|_| bad())?;
    if at < jiff::Timestamp::UNIX_EPOCH {
        return Err(format!("`at` is `{text}`, not a time after 1970"));
    }
    SystemTime::try_from(at).map_err(|_| bad())
}

fn interval_times(interval: Duration, i: i64) -> Result<Duration, StepError> {
    u32::try_from(i)
        .ok()
        .and_then(|i| interval.checked_mul(i))
        .ok_or_else(|| StepError::permanent("`at` + samples × interval is out of range"))
}

fn stopped(stop: Stop, done: i64, samples: &str) -> StepError {
    let what = match stop {
        Stop::Timeout => "timed out",
        Stop::Cancel => "cancelled",
    };
    StepError::stopped(stop, format!("{what} after {done} of {samples} samples"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_every_accepted_form() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_time("1700000000"), Ok(t));
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Ok(t));
        assert_eq!(parse_time("2023-11-14T23:13:20+01:00"), Ok(t));
        assert_eq!(parse_time("2023-11-14T21:13:20-01:00"), Ok(t));
        assert_eq!(parse_time("2023-11-14T22:13:20.000+00:00"), Ok(t));
        assert_eq!(
            parse_time("1700000000.5"),
            Ok(t + Duration::from_millis(500))
        );
        assert_eq!(parse_time("2023-11-14t22:13:20z"), Ok(t));
        assert_eq!(
            parse_time("2023-11-14T22:13:20.25Z"),
            Ok(t + Duration::from_millis(250))
        );
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("2023-11-14").is_err());
        assert!(parse_time("2023-11-14T22:13:20").is_err(), "no offset");
        assert!(parse_time("2023-11-14T22:13:20+99:00").is_err());
        assert!(parse_time("1969-12-31T23:59:59Z").is_err());
        // Found by reading the old byte-index parser: multi-byte text where
        // it looked for ASCII must be an error, never a panic.
        assert!(parse_time("2023-11-14T22:13:20é+01:00").is_err());
        assert!(parse_time("ééééééééééééééééééééééé").is_err());
    }
}
