//! What a command ends with. Library code returns these; `cli` alone turns
//! them into the contract's exit codes and prints them, so no module below
//! it decides a process's exit code or knows about clap.

use std::fmt;

use crate::diagnostics::Diagnostic;
use crate::events::RunStatus;

/// A command that did its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// Nothing more to say (validate, plan, status, approve, schema).
    Ok,
    /// A run (or resume) ended this way.
    Run(RunStatus),
    /// `runbook rollback` left the run this way.
    Rollback(RunStatus),
    /// `plan --diff --fail-on-risk` found a risk.
    RiskFound,
    /// `verify` found a decision whose signature does not hold.
    Unverified,
}

/// A command that could not do its job.
#[derive(Debug)]
pub enum Error {
    /// Bad input (runbook, params, usage): nothing ran.
    Invalid(String),
    /// Errors with a stable code but no position (a `--param`, an unreadable file).
    Coded(Vec<(crate::diagnostics::Code, String)>),
    /// A file's diagnostics: rendered against its text.
    Diagnostics {
        file: String,
        text: String,
        items: Vec<Diagnostic>,
    },
    /// The run could not start: a lock is held, the state dir is unusable.
    CannotStart(String),
    /// The run was stopped with work a person must check (exit 3): the
    /// journal could not be written, so the engine stopped acting.
    NeedsPerson(String),
    /// `rollback` of a run that is still running.
    StillRunning(String),
    /// Files were invalid and `validate` already printed why (its output).
    InvalidFiles,
    /// A detached run's process refused to start and printed why: exit with its code.
    Exited(i32),
}

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Error {
        Error::Invalid(msg.into())
    }

    pub fn cannot_start(msg: impl Into<String>) -> Error {
        Error::CannotStart(msg.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Invalid(m)
            | Error::CannotStart(m)
            | Error::NeedsPerson(m)
            | Error::StillRunning(m) => f.write_str(m),
            Error::InvalidFiles => f.write_str("invalid runbooks"),
            Error::Exited(code) => write!(f, "the run's process exited with {code}"),
            Error::Coded(list) => {
                let lines: Vec<String> = list
                    .iter()
                    .map(|(c, m)| format!("[{}] {m}", c.as_str()))
                    .collect();
                f.write_str(&lines.join("; "))
            }
            Error::Diagnostics { file, items, .. } => {
                let n = items.len();
                write!(f, "{file}: {n} error{}", if n == 1 { "" } else { "s" })
            }
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T = Done> = std::result::Result<T, Error>;
