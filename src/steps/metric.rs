//! `metric:` steps: a gate on a number read from a metric provider.
//!
//! The query is evaluated `samples` times, `interval` apart. An evaluation
//! passes when `condition` (an expression over `value` and the usual
//! template context) is true. It fails when the condition is false, when the
//! query yields no data (unless `on_no_data: pass`), or when the query itself
//! fails (unreachable server, several series, a command printing garbage).
//! The step fails as soon as more than `failure_limit` evaluations failed,
//! without waiting for the remaining samples; otherwise it succeeds once all
//! samples are taken. Every evaluation is reported as a `Waiting` event
//! (`sample 3/10: value 0.004 (pass)`), which the live view and `status` show.
//!
//! `at` (RFC 3339 or unix seconds) replays the gate against past data:
//! sample `i` (from 0) is evaluated at `at + i × interval`. The pause before
//! a sample is the time until that instant, at most `interval`: a window that
//! lies wholly in the past is replayed at once (a day-long soak of history
//! takes seconds), one that reaches into the future waits for its instants
//! as a live gate would. The first sample is evaluated at once either way.
//! Without `at` every sample is evaluated "now", on a grid `interval` apart
//! from the first (a slow query does not stretch a long soak).
//!
//! Waiting is always a `tokio::time::sleep` raced against the stop signal,
//! as is every query: a soak of days sleeps, and a timeout or cancellation
//! ends it at once (a `command` query's process group is killed).
//!
//! The provider was resolved before the run ([`MetricProvider`]): a server
//! is one client shared by every attempt; a command provider becomes a
//! [`CommandMetric`] per attempt, since only the attempt can render the
//! step's `env` and `cwd`.
//!
//! Outputs: `value` (the last sample's; null when it had no data),
//! `samples` (how many were evaluated), `failures`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use minijinja::Value;
use serde_json::Value as Json;

use super::{
    render, template_error, template_message, Attempt, Executor, Outputs, StepError, Stop,
};
use crate::engine::{resolve_dur, resolve_num};
use crate::events::{Event, GateProgress, WaitingDetail};
use crate::providers::command_metric::CommandMetric;
use crate::providers::{BoxFuture, MetricProvider, MetricSource};
use crate::runbook::{Action, Metric, OnNoData};

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

/// One evaluation's verdict.
enum Verdict {
    Pass,
    /// Why it failed, for the step's error.
    Fail(String),
}

/// The gate. Settings that do not render or make no sense are permanent
/// errors; a failed gate is transient (the next attempt samples anew).
async fn run(m: &Metric, action: &Action, cx: &Attempt<'_>) -> Result<Outputs, StepError> {
    let bad = StepError::permanent;
    let samples = resolve_num(&m.samples, cx.template)?;
    if samples < 1 {
        return Err(bad(format!(
            "`samples` is {samples}; it must be at least 1"
        )));
    }
    let failure_limit = resolve_num(&m.failure_limit, cx.template)?;
    if failure_limit < 0 {
        return Err(bad(format!(
            "`failure_limit` is {failure_limit}; it must be 0 or more"
        )));
    }
    let interval = resolve_dur(&m.interval, cx.template)?;
    let mut command: CommandMetric;
    let (source, query): (&dyn MetricSource, String) = match cx.env.metric_source(&m.provider)? {
        MetricProvider::Server(server) => (server.as_ref(), render(cx, &m.query)?),
        MetricProvider::Command { timeout } => {
            command = command_source(*timeout, action, cx)?;
            let script = crate::template::render_shell(
                &m.query,
                cx.template,
                crate::template::is_shell(&action.interpreter),
            )
            .map_err(|e| template_error(&e))?;
            // The query's template values reach it as data, like a script's.
            command.env.extend(script.values);
            (&command, script.text)
        }
    };
    let start_at =
        m.at.as_ref()
            .map(|a| resolve_at(a, cx))
            .transpose()
            .map_err(bad)?;

    // A gate the engine died under continues from its journaled samples:
    // they are not taken again, `failure_limit` counts their failures, and
    // the next one comes at its time on the first sample's grid.
    let resumed: Vec<crate::state::GateSample> = cx
        .env
        .gate_progress
        .lock()
        .ok()
        .and_then(|mut g| g.remove(cx.label))
        .filter(|(attempt, _)| *attempt == cx.attempt)
        .map(|(_, samples)| samples)
        .unwrap_or_default();
    let mut failures: i64 = resumed.iter().filter(|s| !s.passed).count() as i64;
    let mut last: Option<f64> = resumed.last().and_then(|s| s.value);
    let first_at_ms = resumed.first().map_or_else(
        || {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        },
        |s| s.first_at_ms,
    );
    let done = resumed.len() as i64;
    // The engine died between the breach that failed the gate and the
    // step's record: the gate failed then.
    if failures > failure_limit {
        return Err(StepError::transient(format!(
            "gate failed at sample {done}/{samples} (before the engine stopped); {failures} failed samples exceed failure_limit {failure_limit}"
        )));
    }
    // Live samples keep to a grid, so slow queries do not stretch a long
    // soak: sample `i` is due at `anchor + (i - anchor_index) × interval`.
    // A resumed gate keeps the first sample's grid while its next sample is
    // still to come; when the engine was down past it, the grid restarts at
    // now: the missed samples are taken an interval apart, never in a burst.
    let (anchor, anchor_index) = {
        let now = tokio::time::Instant::now();
        if done == 0 {
            (now, 0)
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
    // How long to wait before sample `i` (from 0).
    let pause_before = |i: i64| -> Result<Duration, StepError> {
        if i == 0 {
            return Ok(Duration::ZERO);
        }
        Ok(match at_of(i)? {
            // Replaying: wait only for instants that have not come yet.
            Some(t) => t
                .duration_since(SystemTime::now())
                .unwrap_or_default()
                .min(interval),
            None => (anchor + interval_times(interval, i - anchor_index)?)
                .saturating_duration_since(tokio::time::Instant::now()),
        })
    };
    // Where the gate stands, as `status` and the views show it.
    let progress_at = |taken: i64, failures: i64, next: Option<Duration>| {
        Some(WaitingDetail::Gate(GateProgress {
            taken,
            samples,
            failures,
            failure_limit,
            interval_ms: crate::events::millis(interval),
            next_at: next
                .and_then(|d| SystemTime::now().checked_add(d))
                .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
        }))
    };
    if done > 0 {
        cx.bus.note(Event::Waiting {
            step: cx.label.to_string(),
            on: format!(
                "continuing from sample {done}/{samples} ({failures} failed) taken before the engine stopped"
            ),
            detail: progress_at(done, failures, (done < samples).then(|| pause_before(done)).transpose()?),
        });
    }
    for i in done..samples {
        let n = i + 1;
        let at = at_of(i)?;
        let pause = pause_before(i)?;
        if !pause.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                stop = cx.stopped() => return Err(stopped(stop, n - 1, samples)),
            }
        }
        let result = tokio::select! {
            r = source.query(&query, at) => r,
            stop = cx.stopped() => return Err(stopped(stop, n - 1, samples)),
        };
        let (shown, verdict) = match result {
            Ok(Some(v)) => {
                last = Some(v);
                let ctx = minijinja::value::merge_maps([
                    minijinja::context! { value => v },
                    cx.template.clone(),
                ]);
                let ok = crate::template::eval_bool(&m.condition, &ctx).map_err(|e| {
                    bad(format!(
                        "condition `{}`: {}",
                        m.condition,
                        template_message(&e)
                    ))
                })?;
                let shown = format!("value {}", fmt_value(v));
                if ok {
                    (shown, Verdict::Pass)
                } else {
                    let why = format!("{shown} does not satisfy `{}`", m.condition);
                    (shown, Verdict::Fail(why))
                }
            }
            Ok(None) => {
                last = None;
                match m.on_no_data {
                    OnNoData::Pass => ("no data".to_string(), Verdict::Pass),
                    OnNoData::Fail => (
                        "no data".to_string(),
                        Verdict::Fail("the query returned no data (on_no_data: fail)".into()),
                    ),
                }
            }
            Err(e) => {
                last = None;
                (format!("query failed: {e}"), Verdict::Fail(e))
            }
        };
        cx.bus.note(Event::GateSample {
            step: cx.label.to_string(),
            attempt: cx.attempt,
            sample: n,
            passed: matches!(verdict, Verdict::Pass),
            value: last,
            first_at_ms,
        });
        let when = at.map_or(String::new(), |t| {
            format!(" at {}", humantime::format_rfc3339_millis(t))
        });
        let mut progress = match &verdict {
            Verdict::Pass => format!("sample {n}/{samples}{when}: {shown} (pass)"),
            Verdict::Fail(_) => {
                failures += 1;
                format!(
                    "sample {n}/{samples}{when}: {shown} (fail; {failures} failed, failure_limit {failure_limit})"
                )
            }
        };
        if let Verdict::Fail(why) = verdict {
            if failures > failure_limit {
                // The step's error says it all; no "waiting on" a failed gate.
                let count = if failures == 1 {
                    "1 failed sample exceeds".to_string()
                } else {
                    format!("{failures} failed samples exceed")
                };
                return Err(StepError::transient(format!(
                    "gate failed at sample {n}/{samples}: {why}; {count} failure_limit {failure_limit}"
                )));
            }
        }
        let next_at = if n < samples {
            Some(pause_before(n)?)
        } else {
            None
        };
        if n < samples {
            // Live: the cadence (the exact remainder would read 49ms).
            let next = match start_at {
                Some(_) => pause_before(n)?,
                None => interval,
            };
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
            detail: progress_at(n, failures, next_at),
        });
    }

    let mut values = Outputs::new();
    values.insert("value".into(), last.map_or(Json::Null, Json::from));
    values.insert("samples".into(), Json::from(samples));
    values.insert("failures".into(), Json::from(failures));
    let mut out = Outputs::new();
    out.insert("outputs".into(), Json::Object(values));
    Ok(out)
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

fn stopped(stop: Stop, done: i64, samples: i64) -> StepError {
    let what = match stop {
        Stop::Timeout => "timed out",
        Stop::Cancel => "cancelled",
    };
    StepError::stopped(stop, format!("{what} after {done} of {samples} samples"))
}

/// A value for people: six significant digits, so a rate of 0.0999999999
/// reads 0.1 (outputs keep the exact number).
fn fmt_value(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return v.to_string();
    }
    // |v| is finite and non-zero, so its log10 is within ±400.
    #[allow(clippy::cast_possible_truncation)]
    let magnitude = v.abs().log10().floor() as i32;
    let Ok(decimals) = usize::try_from(5 - magnitude) else {
        return v.to_string();
    };
    if decimals > 15 {
        return v.to_string();
    }
    let s = format!("{v:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        &s
    };
    s.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_well() {
        assert_eq!(fmt_value(0.099_999_999_9), "0.1");
        assert_eq!(fmt_value(0.002), "0.002");
        assert_eq!(fmt_value(0.004_123_456_7), "0.00412346");
        assert_eq!(fmt_value(12.5), "12.5");
        assert_eq!(fmt_value(1.0), "1");
        assert_eq!(fmt_value(0.0), "0");
        assert_eq!(fmt_value(123_456_789.0), "123456789");
        assert_eq!(fmt_value(1e-9), "0.000000001");
        assert_eq!(fmt_value(f64::INFINITY), "inf");
    }

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
