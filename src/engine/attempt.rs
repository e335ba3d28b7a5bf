//! One action, with its retry policy and per-attempt timeout.
//!
//! The timeout and run cancellation do not drop the executor's future: they
//! tell it to stop and then wait for it, so a shell step's process group is
//! signalled and reaped before the attempt counts as over.
//!
//! Retries are spent only where another attempt can help: on transient
//! errors and timeouts ([`StepError::retryable`]). A permanent error (a
//! template that does not render, a rejected approval) ends the action at
//! once, and its message says it was not retried.

use std::time::{Duration, Instant};

use minijinja::Value;
use tokio::sync::watch;

use crate::duration;
use crate::events::{millis, Bus, Event};
use crate::runbook::{Action, Backoff, Dur, Num};
use crate::steps::{self, Attempt, ErrorKind, Outputs, RunEnv, StepError, Stop};
use crate::template;

/// How an action ended when it did not succeed.
#[derive(Debug, Clone)]
pub enum Failure {
    Failed(String),
    Cancelled,
    /// The journal could not record the attempt's start, so it never began.
    Unrecorded,
}

/// Whether the attempts are a step's or a rollback body's (for events).
#[derive(Clone, Copy)]
pub(super) enum Role {
    Step,
    Rollback { body: usize },
}

/// A duration setting, rendered when it is a template. A template that does
/// not render, or renders to something else, is a permanent error.
pub fn resolve_dur(d: &Dur, ctx: &Value) -> Result<Duration, StepError> {
    match d {
        Dur::Fixed(d) => Ok(*d),
        Dur::Template(t) => {
            let text = template::render_str(t, ctx).map_err(|e| steps::template_error(&e))?;
            duration::parse(&text).map_err(StepError::permanent)
        }
    }
}

/// A whole-number setting, rendered when it is a template; errors are
/// permanent, as for [`resolve_dur`].
pub fn resolve_num(n: &Num, ctx: &Value) -> Result<i64, StepError> {
    match n {
        Num::Fixed(i) => Ok(*i),
        Num::Template(t, _) => {
            let v = template::render_value(t, ctx).map_err(|e| steps::template_error(&e))?;
            i64::try_from(v.clone())
                .or_else(|_| v.as_str().unwrap_or_default().trim().parse::<i64>())
                .map_err(|_| {
                    StepError::permanent(format!("`{t}` rendered to {v}, not a whole number"))
                })
        }
    }
}

/// The delay before attempt `next` (2, 3, ...).
fn backoff(action: &Action, ctx: &Value, next: u32) -> Result<Duration, StepError> {
    let base = resolve_dur(&action.retry.delay, ctx)?;
    let mut d = match action.retry.backoff {
        Backoff::Fixed => base,
        Backoff::Exponential => {
            base.saturating_mul(2u32.saturating_pow(next.saturating_sub(2).min(30)))
        }
    };
    if let Some(max) = &action.retry.max_delay {
        d = d.min(resolve_dur(max, ctx)?);
    }
    if action.retry.jitter {
        d = d.mul_f64(0.75 + fastrand::f64() * 0.5);
    }
    Ok(d)
}

pub(super) struct Attempts<'a> {
    pub env: &'a RunEnv,
    pub bus: &'a Bus,
    pub step_id: &'a str,
    pub label: &'a str,
    pub role: Role,
    pub cancel: watch::Receiver<bool>,
    /// Outputs of the last failed attempt, if the executor kept any.
    pub partial: std::sync::Mutex<Option<Outputs>>,
    /// A background gate's line to the scheduler (main steps only).
    pub background: Option<steps::BackgroundLink>,
}

impl Attempts<'_> {
    /// What the last failed attempt produced before failing.
    pub(super) fn take_partial(&self) -> Option<Outputs> {
        self.partial.lock().ok().and_then(|mut p| p.take())
    }
}

async fn cancelled(mut rx: watch::Receiver<bool>) {
    if rx.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

impl Attempts<'_> {
    /// Runs the action until it succeeds, attempts run out, or the run is cancelled.
    /// Returns the result and the number of attempts made.
    pub(super) async fn run(
        &self,
        action: &Action,
        ctx: &Value,
    ) -> (Result<Outputs, Failure>, u32) {
        let attempts = match resolve_num(&action.retry.attempts, ctx) {
            Ok(n) => u32::try_from(n.max(1)).unwrap_or(u32::MAX),
            Err(e) => return (Err(Failure::Failed(e.message)), 0),
        };
        let timeout = match action
            .timeout
            .as_ref()
            .map(|t| resolve_dur(t, ctx))
            .transpose()
        {
            Ok(t) => t,
            Err(e) => return (Err(Failure::Failed(e.message)), 0),
        };
        let mut last_error = String::new();
        for attempt in 1..=attempts {
            if *self.cancel.borrow() {
                return (Err(Failure::Cancelled), attempt - 1);
            }
            let recorded = self
                .bus
                .emit_grouped(match self.role {
                    Role::Step => Event::StepStarted {
                        step: self.step_id.to_string(),
                        attempt,
                        attempts,
                    },
                    Role::Rollback { body } => Event::RollbackStarted {
                        step: self.step_id.to_string(),
                        body,
                        attempt,
                        attempts,
                    },
                })
                .await;
            if !recorded {
                return (Err(Failure::Unrecorded), attempt - 1);
            }
            let (stop_tx, stop_rx) = watch::channel(None);
            let cx = Attempt {
                env: self.env,
                step_id: self.step_id,
                label: self.label,
                attempt,
                template: ctx,
                bus: self.bus,
                stop: stop_rx,
                partial: std::sync::Mutex::new(None),
                background: self.background.as_ref(),
            };
            let started = Instant::now();
            let mut fut = steps::run(action, &cx);
            let deadline = async {
                match timeout {
                    Some(t) => tokio::time::sleep(t).await,
                    None => std::future::pending().await,
                }
            };
            let result = tokio::select! {
                r = &mut fut => r,
                () = deadline => {
                    let _ = stop_tx.send(Some(Stop::Timeout));
                    let _ = (&mut fut).await;
                    Err(StepError::stopped(
                        Stop::Timeout,
                        format!("timed out after {}", duration::format(timeout.unwrap_or_default())),
                    ))
                }
                () = cancelled(self.cancel.clone()) => {
                    let _ = stop_tx.send(Some(Stop::Cancel));
                    let _ = (&mut fut).await;
                    return (Err(Failure::Cancelled), attempt);
                }
            };
            drop(fut);
            if result.is_err() {
                let kept = cx.partial.lock().ok().and_then(|mut p| p.take());
                if let Ok(mut last) = self.partial.lock() {
                    *last = kept;
                }
            }
            match result {
                Ok(out) => return (Ok(out), attempt),
                // An executor that noticed the cancellation before we did.
                Err(e) if e.kind == ErrorKind::Cancelled => {
                    return (Err(Failure::Cancelled), attempt)
                }
                Err(e) => {
                    let retry_in = if attempt < attempts && e.retryable() {
                        match backoff(action, ctx, attempt + 1) {
                            Ok(d) => Some(d),
                            Err(e) => return (Err(Failure::Failed(e.message)), attempt),
                        }
                    } else {
                        None
                    };
                    self.bus.note(Event::AttemptFailed {
                        step: self.label.to_string(),
                        attempt,
                        error: format!("{e} (after {})", duration::format(started.elapsed())),
                        retry_in_ms: retry_in.map(millis),
                    });
                    match retry_in {
                        Some(d) => {
                            last_error = e.message;
                            tokio::select! {
                                () = tokio::time::sleep(d) => {}
                                () = cancelled(self.cancel.clone()) => return (Err(Failure::Cancelled), attempt),
                            }
                        }
                        None if attempt < attempts => {
                            let msg = format!(
                                "{e} (not retried: another attempt would fail the same way; attempt {attempt} of {attempts})"
                            );
                            return (Err(Failure::Failed(msg)), attempt);
                        }
                        None => last_error = e.message,
                    }
                }
            }
        }
        let msg = if attempts > 1 {
            format!("{last_error} (attempt {attempts} of {attempts})")
        } else {
            last_error
        };
        (Err(Failure::Failed(msg)), attempts)
    }
}
