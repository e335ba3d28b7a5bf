//! One evaluation of a gate: read the metric, judge it. Apart from the
//! sampling loop because both judges (a threshold over one number, a
//! baseline-vs-canary comparison over two series) end in the same
//! [`Found`]: a verdict and what people are shown of it.

use std::time::{Duration, SystemTime};

use minijinja::Value;

use crate::analysis::{self, CompareSettings, Judgement};
use crate::events::{Evaluation, Verdict};
use crate::providers::MetricSource;
use crate::runbook::{Direction, Nan, OnNoData};

/// What an evaluation decides on, rendered for this attempt.
pub(super) enum Judge<'a> {
    Threshold {
        query: String,
        condition: &'a str,
        failure_condition: Option<&'a str>,
        on_no_data: OnNoData,
    },
    Compare {
        baseline: String,
        canary: String,
        range: Duration,
        step: Duration,
        settings: CompareSettings,
    },
}

/// One evaluation's outcome.
pub(super) struct Found {
    pub(super) verdict: Verdict,
    /// The gate's `value`: the number read, or a comparison's relative change.
    pub(super) value: Option<f64>,
    pub(super) p_value: Option<f64>,
    pub detail: Evaluation,
}

impl Judge<'_> {
    /// What the gate judges against, rendered: `value < 0.01; fails: value > 0.05`.
    pub(super) fn threshold(&self, ctx: &Value) -> String {
        match self {
            Judge::Threshold {
                condition,
                failure_condition,
                ..
            } => {
                let pass = crate::plan::substitute(condition, ctx);
                match failure_condition {
                    Some(f) => {
                        format!("passes: {pass}; fails: {}", crate::plan::substitute(f, ctx))
                    }
                    None => pass,
                }
            }
            Judge::Compare { settings, .. } => {
                let side = match settings.direction {
                    analysis::Direction::Increase => "+",
                    analysis::Direction::Decrease => "-",
                    analysis::Direction::Either => "±",
                };
                format!(
                    "fails: change {side}{}% or more with p < {}",
                    crate::numbers::human(settings.allowed_change * 100.0),
                    crate::numbers::human(1.0 - settings.confidence)
                )
            }
        }
    }

    /// Reads and judges once, at `at` (now when `None`). A condition that
    /// does not evaluate is the runbook's error, not the provider's: `Err`.
    pub(super) async fn evaluate(
        &self,
        source: &dyn MetricSource,
        at: Option<SystemTime>,
        ctx: &Value,
        threshold: &str,
    ) -> Result<Found, String> {
        let time = at.unwrap_or_else(SystemTime::now);
        let mut detail = Evaluation {
            time: humantime::format_rfc3339_millis(time).to_string(),
            threshold: threshold.to_string(),
            text: String::new(),
            dry_run: false,
            p_value: None,
            baseline_median: None,
            canary_median: None,
        };
        match self {
            Judge::Threshold {
                query,
                condition,
                failure_condition,
                on_no_data,
            } => {
                let (verdict, value) = match source.query(query, at).await {
                    Err(e) => {
                        detail.text = format!("query failed: {e}");
                        (Verdict::Error, None)
                    }
                    Ok(None) => {
                        detail.text = "no data".into();
                        let v = match on_no_data {
                            OnNoData::Pass => Verdict::Pass,
                            OnNoData::Fail => Verdict::Fail,
                        };
                        (v, None)
                    }
                    Ok(Some(v)) => {
                        detail.text = format!("value {}", crate::numbers::human(v));
                        let ctx = minijinja::value::merge_maps([
                            minijinja::context! { value => v },
                            ctx.clone(),
                        ]);
                        let meets = |expr: &str| {
                            crate::template::eval_bool(expr, &ctx).map_err(|e| {
                                format!("`{expr}`: {}", super::super::template_message(&e))
                            })
                        };
                        let verdict = match failure_condition {
                            Some(f) if meets(f)? => Verdict::Fail,
                            _ if meets(condition)? => Verdict::Pass,
                            Some(_) => Verdict::Inconclusive,
                            None => Verdict::Fail,
                        };
                        (verdict, Some(v))
                    }
                };
                Ok(Found {
                    verdict,
                    value,
                    p_value: None,
                    detail,
                })
            }
            Judge::Compare {
                baseline,
                canary,
                range,
                step,
                settings,
            } => {
                let start = time.checked_sub(*range).unwrap_or(SystemTime::UNIX_EPOCH);
                let series = async |q: &str, what: &str| {
                    source
                        .query_range(q, start, time, *step)
                        .await
                        .map_err(|e| format!("{what} query failed: {e}"))
                };
                let read = match series(baseline, "baseline").await {
                    Ok(b) => series(canary, "canary").await.map(|c| (b, c)),
                    Err(e) => Err(e),
                };
                let (b, c) = match read {
                    Ok(bc) => bc,
                    Err(e) => {
                        detail.text = e;
                        return Ok(Found {
                            verdict: Verdict::Error,
                            value: None,
                            p_value: None,
                            detail,
                        });
                    }
                };
                let cmp = analysis::compare(&b, &c, settings);
                detail.text = cmp.reason.clone();
                detail.p_value = cmp.p_value;
                detail.baseline_median = cmp.baseline_median;
                detail.canary_median = cmp.canary_median;
                Ok(Found {
                    verdict: match cmp.judgement {
                        Judgement::Pass => Verdict::Pass,
                        Judgement::Fail => Verdict::Fail,
                        Judgement::Inconclusive => Verdict::Inconclusive,
                    },
                    value: cmp.change,
                    p_value: cmp.p_value,
                    detail,
                })
            }
        }
    }
}

/// The analysis settings of a `compare` gate.
pub(super) fn settings(
    direction: Direction,
    nan: Nan,
    confidence: f64,
    allowed_change: f64,
) -> CompareSettings {
    CompareSettings {
        direction: match direction {
            Direction::Increase => analysis::Direction::Increase,
            Direction::Decrease => analysis::Direction::Decrease,
            Direction::Either => analysis::Direction::Either,
        },
        confidence,
        allowed_change,
        nan: match nan {
            Nan::Remove => analysis::NanStrategy::Remove,
            Nan::Replace => analysis::NanStrategy::Replace,
        },
    }
}
