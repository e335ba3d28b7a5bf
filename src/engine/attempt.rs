//! One action, with its retry policy and per-attempt timeout.
//!
//! The timeout and run cancellation do not drop the executor's future: they
//! tell it to stop and then wait for it, so a shell step's process group is
//! signalled and reaped before the attempt counts as over.

use std::time::{Duration, Instant};

use minijinja::Value;
use tokio::sync::watch;

use crate::duration;
use crate::events::{millis, Bus, Event};
use crate::runbook::{Action, Backoff, Dur, Num};
use crate::steps::{self, Cx, Outputs, RunEnv, Stop};
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

pub fn resolve_dur(d: &Dur, ctx: &Value) -> Result<Duration, String> {
    match d {
        Dur::Fixed(d) => Ok(*d),
        Dur::Template(t) => {
            let text = template::render_str(t, ctx).map_err(|e| steps::template_error(&e))?;
            duration::parse(&text)
        }
    }
}

pub fn resolve_num(n: &Num, ctx: &Value) -> Result<i64, String> {
    match n {
        Num::Fixed(i) => Ok(*i),
        Num::Template(t, _) => {
            let v = template::render_value(t, ctx).map_err(|e| steps::template_error(&e))?;
            i64::try_from(v.clone())
                .or_else(|_| v.as_str().unwrap_or_default().trim().parse::<i64>())
                .map_err(|_| format!("`{t}` rendered to {v}, not a whole number"))
        }
    }
}

/// The delay before attempt `next` (2, 3, ...).
fn backoff(action: &Action, ctx: &Value, next: u32) -> Result<Duration, String> {
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
            Err(e) => return (Err(Failure::Failed(e)), 0),
        };
        let timeout = match action
            .timeout
            .as_ref()
            .map(|t| resolve_dur(t, ctx))
            .transpose()
        {
            Ok(t) => t,
            Err(e) => return (Err(Failure::Failed(e)), 0),
        };
        let exec = steps::executor(&action.kind);
        let mut last_error = String::new();
        for attempt in 1..=attempts {
            if *self.cancel.borrow() {
                return (Err(Failure::Cancelled), attempt - 1);
            }
            let recorded = self.bus.emit(match self.role {
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
            });
            if !recorded {
                return (Err(Failure::Unrecorded), attempt - 1);
            }
            let (stop_tx, stop_rx) = watch::channel(None);
            let cx = Cx {
                env: self.env,
                step_id: self.step_id,
                label: self.label,
                attempt,
                template: ctx,
                bus: self.bus,
                stop: stop_rx,
                partial: std::sync::Mutex::new(None),
            };
            let started = Instant::now();
            let mut fut = exec.run(action, &cx);
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
                    Err(format!("timed out after {}", duration::format(timeout.unwrap_or_default())))
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
                Err(e) => {
                    let retry_in = if attempt < attempts {
                        match backoff(action, ctx, attempt + 1) {
                            Ok(d) => Some(d),
                            Err(e) => return (Err(Failure::Failed(e)), attempt),
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
                    last_error = e;
                    if let Some(d) = retry_in {
                        tokio::select! {
                            () = tokio::time::sleep(d) => {}
                            () = cancelled(self.cancel.clone()) => return (Err(Failure::Cancelled), attempt),
                        }
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
