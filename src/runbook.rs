//! The validated runbook: every reference resolved to an index, every
//! duration parsed, every provider chosen. Code holding a [`Runbook`] never
//! re-checks what validation proved. Strings stay as template sources; they
//! are rendered at run time (or symbolically, by the plan).

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value as Json;

use crate::graph::StepGraph;
use crate::spec::Span;
pub use crate::spec::{
    Backoff, Direction, Nan, OnInconclusive, OnNoData, OnResume, ParamType, ProviderKind,
};

/// A template source with where it is written, so an error found once
/// params are known (pre-flight) or during the run points at the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Tpl {
    pub text: String,
    pub span: Span,
}

impl Tpl {
    pub fn new(text: impl Into<String>, span: Span) -> Tpl {
        Tpl {
            text: text.into(),
            span,
        }
    }
}

impl std::ops::Deref for Tpl {
    type Target = str;
    fn deref(&self) -> &str {
        &self.text
    }
}

impl std::fmt::Display for Tpl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

#[derive(Debug, Clone)]
pub struct Runbook {
    pub name: String,
    pub description: Option<String>,
    pub params: Vec<Param>,
    pub vars: Vec<(String, Json)>,
    pub secrets: Vec<Secret>,
    pub env: Vec<(String, String)>,
    pub concurrency: usize,
    pub lock: Option<LockSpec>,
    /// The allowed-signers file approvals are checked against
    /// ([`crate::signing`]); relative to the runbook.
    pub allowed_signers: Option<Tpl>,
    pub providers: Vec<Provider>,
    pub steps: Vec<Step>,
    pub on_failure: Vec<Step>,
    pub finally: Vec<Step>,
    pub graph: StepGraph,
    /// Whether any of its strings is a template or an expression (validation
    /// saw every one): rendering for a runbook without one needs no template
    /// worker ([`crate::template::budget::batch`]).
    pub renders: bool,
}

impl Runbook {
    pub fn step_index(&self, id: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.id == id)
    }

    pub fn provider(&self, name: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.name == name)
    }
}

/// `lock:`: runs holding the same rendered key never overlap.
#[derive(Debug, Clone, PartialEq)]
pub struct LockSpec {
    pub key: Tpl,
    /// How long a run waits in line (FIFO) for a held key; `None`: it is
    /// refused at once (`lock: K`).
    pub wait: Option<Dur>,
}

#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub ty: ParamType,
    pub allowed: Option<Vec<Json>>,
    pub default: Option<Json>,
    pub required: bool,
    pub description: Option<String>,
    pub secret: bool,
}

impl Param {
    /// Parses a `--param` value by the parameter's type and checks its enum.
    pub fn parse(&self, text: &str) -> Result<Json, String> {
        let v = match self.ty {
            ParamType::String => Json::String(text.to_string()),
            ParamType::Integer => text
                .trim()
                .parse::<i64>()
                .map(Json::from)
                .map_err(|_| format!("`{text}` is not an integer"))?,
            ParamType::Number => text
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Json::Number)
                .ok_or_else(|| format!("`{text}` is not a number"))?,
            ParamType::Boolean => match text.trim() {
                "true" | "yes" | "1" => Json::Bool(true),
                "false" | "no" | "0" => Json::Bool(false),
                _ => return Err(format!("`{text}` is not a boolean (true or false)")),
            },
        };
        self.check_allowed(&v)?;
        Ok(v)
    }

    pub fn check_allowed(&self, v: &Json) -> Result<(), String> {
        if let Some(allowed) = &self.allowed {
            if !allowed.iter().any(|a| json_eq(a, v)) {
                let list: Vec<String> = allowed.iter().map(ToString::to_string).collect();
                return Err(format!("{v} is not one of {}", list.join(", ")));
            }
        }
        Ok(())
    }
}

/// Equality that treats 1 and 1.0 alike.
pub fn json_eq(a: &Json, b: &Json) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

#[derive(Debug, Clone)]
pub enum SecretSource {
    Env(String),
    File(String),
}

#[derive(Debug, Clone)]
pub struct Secret {
    pub name: String,
    pub source: SecretSource,
}

#[derive(Debug, Clone)]
pub struct Provider {
    pub name: String,
    pub kind: ProviderKind,
    pub url: Option<Tpl>,
    pub prefix: String,
    pub path: Option<Tpl>,
    pub headers: Vec<(String, String)>,
    pub timeout: Option<Duration>,
}

/// A duration, or a template that renders to one.
#[derive(Debug, Clone, PartialEq)]
pub enum Dur {
    Fixed(Duration),
    Template(Tpl),
}

/// A whole number, or a template that renders to one (at least `min`).
#[derive(Debug, Clone, PartialEq)]
pub enum Num {
    Fixed(i64),
    Template(Tpl, i64),
}

#[derive(Debug, Clone)]
pub struct Retry {
    pub attempts: Num,
    pub delay: Dur,
    pub backoff: Backoff,
    pub max_delay: Option<Dur>,
    pub jitter: bool,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: Num::Fixed(1),
            delay: Dur::Fixed(Duration::from_secs(1)),
            backoff: Backoff::Fixed,
            max_delay: None,
            jitter: false,
        }
    }
}

/// Which list a step belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    Main,
    OnFailure,
    Finally,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub stage: Option<String>,
    pub line: u32,
    pub needs: Vec<usize>,
    pub when: Option<Tpl>,
    pub continue_on_failure: bool,
    pub on_resume: OnResume,
    pub action: Action,
    pub rollback: Rollback,
}

#[derive(Debug, Clone)]
pub enum Rollback {
    None,
    /// The engine's own undo of a flag step: the flag restored to its
    /// recorded previous value. Holds the step's flag, so the undo needs no
    /// look at the step's kind.
    Automatic(Box<Flag>),
    Bodies(Vec<Action>),
}

/// What a step (or a rollback body) does, with how it is retried and bounded.
#[derive(Debug, Clone)]
pub struct Action {
    pub name: Option<String>,
    pub kind: ActionKind,
    pub timeout: Option<Dur>,
    /// Shared by every action without a retry policy.
    pub retry: Arc<Retry>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    /// Shared by every action that falls back on the same default.
    pub interpreter: Arc<[String]>,
}

#[derive(Debug, Clone)]
pub enum ActionKind {
    Shell {
        script: String,
        /// The script as one simple command, run without a shell
        /// ([`crate::simple_command`]); `None`: the interpreter runs it.
        direct: Option<crate::simple_command::SimpleCommand>,
    },
    // Boxed: each is several times the size of a shell step, the common
    // kind, and every step would pay for the largest.
    Http(Box<Http>),
    Metric(Box<Metric>),
    Approval(Box<Approval>),
    Flag(Box<Flag>),
}

impl ActionKind {
    pub fn name(&self) -> &'static str {
        match self {
            ActionKind::Shell { .. } => "shell",
            ActionKind::Http(_) => "http",
            ActionKind::Metric(_) => "metric",
            ActionKind::Approval(_) => "approval",
            ActionKind::Flag(_) => "flag",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Http {
    pub url: Tpl,
    pub method: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Json>,
    pub expect: Expect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusMatch {
    Code(u16),
    /// `2xx` is `Class(2)`.
    Class(u16),
}

impl StatusMatch {
    pub fn matches(self, status: u16) -> bool {
        match self {
            StatusMatch::Code(c) => c == status,
            StatusMatch::Class(c) => status / 100 == c,
        }
    }
}

impl std::fmt::Display for StatusMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StatusMatch::Code(c) => write!(f, "{c}"),
            StatusMatch::Class(c) => write!(f, "{c}xx"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Expect {
    pub status: Vec<StatusMatch>,
    pub body_contains: Option<String>,
    pub json: Vec<(String, Json)>,
    pub max_latency: Option<Dur>,
}

#[derive(Debug, Clone)]
pub struct Metric {
    pub provider: String,
    pub judge: Judge,
    pub interval: Dur,
    /// Unused by a background gate, which samples until its `until` step ends.
    pub samples: Num,
    pub failure_limit: Num,
    pub inconclusive_limit: Num,
    pub on_inconclusive: OnInconclusive,
    /// Who answers a paused gate, as an approval step's rules.
    pub pause: Approval,
    pub error_limit: Num,
    pub initial_delay: Option<Dur>,
    pub dry_run: bool,
    /// `background: { until }`: the index of the step whose end passes it.
    pub until: Option<usize>,
    pub on_no_data: OnNoData,
    pub at: Option<Json>,
}

impl Metric {
    /// Whether an evaluation can be inconclusive (and so the gate pause).
    pub fn can_be_inconclusive(&self) -> bool {
        match &self.judge {
            Judge::Threshold {
                failure_condition, ..
            } => failure_condition.is_some(),
            Judge::Compare(_) => true,
        }
    }

    /// Whether the gate can wait for a person.
    pub fn can_pause(&self) -> bool {
        self.can_be_inconclusive() && self.on_inconclusive == OnInconclusive::Pause
    }
}

/// What one evaluation of a gate decides on.
#[derive(Debug, Clone)]
pub enum Judge {
    /// One number from `query`: passes `condition`; with `failure_condition`,
    /// fails that and is inconclusive meeting neither.
    Threshold {
        query: Tpl,
        condition: Tpl,
        failure_condition: Option<Tpl>,
    },
    /// Baseline vs canary series, by a Mann-Whitney U test.
    Compare(Compare),
}

#[derive(Debug, Clone)]
pub struct Compare {
    pub baseline: Tpl,
    pub canary: Tpl,
    pub range: Dur,
    pub step: Dur,
    pub direction: Direction,
    /// A number, or a template rendering to one.
    pub confidence: Json,
    pub allowed_change: Json,
    pub nan: Nan,
}

#[derive(Debug, Clone)]
pub struct Approval {
    pub message: Option<String>,
    pub approvers: Option<Vec<Tpl>>,
    pub required: Num,
    pub timeout: Option<Dur>,
    pub allow_self_approval: bool,
    /// This step's own allowed-signers file (else the runbook's).
    pub allowed_signers: Option<Tpl>,
}

#[derive(Debug, Clone)]
pub struct Flag {
    /// `None`: the default file store at `<state dir>/flags.json`.
    pub provider: Option<String>,
    pub name: Tpl,
    pub value: Json,
}
