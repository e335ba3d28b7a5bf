//! Why an attempt failed, and whether another attempt can help.
//!
//! The engine spends a step's `retry` budget only on failures the world can
//! change: a network error, a non-zero exit code, a gate sample failing, a
//! timeout. A failure that would repeat itself exactly (a template that does
//! not render, a bad URL, a rejected approval) ends the step at once, so a
//! misconfigured step does not burn minutes of backoff before saying so.
//! Executors say which is which where they know; timeouts and cancellation
//! are decided by the engine, which races every attempt against them.

use std::fmt;

use super::Stop;

/// What kind of failure ended an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Another attempt may succeed: a network error, an exit code other than
    /// 0, an unexpected response, a failing gate sample.
    Transient,
    /// Another attempt would fail the same way: a template or configuration
    /// error, a rejected approval, an approval that timed out waiting.
    Permanent,
    /// The attempt ran out of its `timeout`; retried like a transient error.
    TimedOut,
    /// The run was cancelled; never retried.
    Cancelled,
}

/// An attempt's failure: what happened, and whether retrying can help.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepError {
    pub kind: ErrorKind,
    pub message: String,
}

impl StepError {
    /// A failure another attempt may not repeat.
    pub fn transient(message: impl Into<String>) -> StepError {
        StepError {
            kind: ErrorKind::Transient,
            message: message.into(),
        }
    }

    /// A failure every attempt would repeat.
    pub fn permanent(message: impl Into<String>) -> StepError {
        StepError {
            kind: ErrorKind::Permanent,
            message: message.into(),
        }
    }

    /// An attempt that stopped because it was told to.
    pub fn stopped(stop: Stop, message: impl Into<String>) -> StepError {
        StepError {
            kind: match stop {
                Stop::Timeout => ErrorKind::TimedOut,
                Stop::Cancel => ErrorKind::Cancelled,
            },
            message: message.into(),
        }
    }

    /// Whether another attempt can help.
    pub fn retryable(&self) -> bool {
        matches!(self.kind, ErrorKind::Transient | ErrorKind::TimedOut)
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StepError {}
