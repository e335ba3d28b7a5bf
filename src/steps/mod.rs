//! One executor per step kind, behind one trait. The engine decides when an
//! action runs, how often and for how long; an executor only does one attempt
//! and must stop promptly (cleaning up after itself) when told to.
//!
//! [`run`] is the one place that looks at an action's kind: each executor
//! receives its own typed body (a shell script, an
//! [`Http`](crate::runbook::Http) request, a [`Metric`](crate::runbook::Metric)
//! gate, ...) and never asks what kind of step it is running.
//! Providers are resolved before the run ([`RunEnv::flags`],
//! [`RunEnv::metrics`]), so an executor is handed a ready store or source.
//! Failures are [`StepError`]s that say whether another attempt can help.

pub mod approval;
mod child_output;
mod error;
mod flag;
mod http;
mod metric;
mod shell;

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Map, Value as Json};
use tokio::sync::watch;

use crate::events::Bus;
use crate::providers::{BoxFuture, FlagStore, MetricProvider};
use crate::runbook::{Action, ActionKind, Runbook};

pub use error::{ErrorKind, StepError};
pub use flag::restore_flag;
pub use metric::{BackgroundLink, GateNews};

/// Why an attempt is being stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    Timeout,
    Cancel,
}

/// What an attempt yields: `outputs` (the step's `steps.<id>.outputs`) and
/// kind-specific values beside it (`stdout`, `exit_code` of shell steps).
pub type Outputs = Map<String, Json>;

/// Flag stores by provider name (`None`: the default file store).
pub type FlagStores = Vec<(Option<String>, Arc<dyn FlagStore>)>;

/// Metric providers by name, resolved before the run.
pub type MetricSources = Vec<(String, MetricProvider)>;

/// What a run shares with every executor.
pub struct RunEnv {
    /// The plan the run executes.
    pub plan: Arc<crate::plan::Plan>,
    pub run_id: String,
    /// Where the run lives (journal, approvals mailbox, locks).
    pub store: Arc<dyn crate::store::Store>,
    /// This engine's claim on the run.
    pub claim: Arc<dyn crate::store::Claim>,
    /// Files of the run that stay on this machine (`$RUNBOOK_OUTPUT`).
    pub run_dir: PathBuf,
    pub cwd: PathBuf,
    /// Environment of shell steps before the step's own `env`: the engine's
    /// environment, the runbook's rendered `env`, `RUNBOOK_RUN_ID`.
    pub base_env: Vec<(String, String)>,
    pub identity: String,
    pub flags: FlagStores,
    /// The metric providers `metric:` steps use.
    pub metrics: MetricSources,
    /// This run's flag writes (from the journal on resume, then kept
    /// current with exact values by the flag executor): a re-run or retry
    /// restores what was there before the run, not its own earlier write,
    /// and a restore checks nobody changed the flag since.
    pub flag_ledger: std::sync::Mutex<crate::state::FlagLedger>,
    /// Samples an earlier process took of gates it did not finish (by
    /// label: the attempt, the samples): a resumed gate continues from them.
    pub gate_progress:
        std::sync::Mutex<std::collections::HashMap<String, (u32, Vec<crate::state::GateSample>)>>,
    /// Approval steps the operator approved up front with `--approve STEP`.
    pub approve: Vec<String>,
    /// Who runs this process (`--as`, $RUNBOOK_USER, the login name).
    pub operator: String,
    /// Whether approvals may prompt on the terminal.
    pub interactive: bool,
    /// The run's state so far, kept current from the event stream.
    pub state: crate::state::Shared,
    /// Shell steps of this run whose process is alive now.
    pub live_processes: std::sync::atomic::AtomicUsize,
    /// What approvals are checked against.
    pub signers: crate::approvals::RunSigners,
    /// The operator's proven key (`--key`): it signs their own decisions.
    pub key: Option<PathBuf>,
}

impl RunEnv {
    pub fn runbook(&self) -> &Runbook {
        self.plan.runbook()
    }

    /// The store of a flag step's provider. Every provider a flag step names
    /// is resolved before the run, so `Err` means a bug, not a bad runbook.
    pub fn flag_store(&self, provider: Option<&str>) -> Result<&Arc<dyn FlagStore>, StepError> {
        self.flags
            .iter()
            .find(|(p, _)| p.as_deref() == provider)
            .map(|(_, s)| s)
            .ok_or_else(|| StepError::permanent(format!("no flag store for provider {provider:?}")))
    }

    /// The source of a metric step's provider, resolved before the run like
    /// the flag stores.
    pub fn metric_source(&self, provider: &str) -> Result<&MetricProvider, StepError> {
        self.metrics
            .iter()
            .find(|(p, _)| p == provider)
            .map(|(_, s)| s)
            .ok_or_else(|| StepError::permanent(format!("no metric provider named `{provider}`")))
    }
}

/// One attempt's view of the run.
pub struct Attempt<'a> {
    pub env: &'a RunEnv,
    pub step_id: &'a str,
    /// `step` for a main step, `step.rollback.N` for a rollback body.
    pub label: &'a str,
    pub attempt: u32,
    pub template: &'a minijinja::Value,
    pub bus: &'a Bus,
    pub stop: watch::Receiver<Option<Stop>>,
    /// What a failing attempt produced before it failed (a shell step's
    /// outputs and exit code): kept so later steps and the step's own
    /// rollback can read them.
    pub partial: std::sync::Mutex<Option<Outputs>>,
    /// A background gate's line to the scheduler.
    pub background: Option<&'a BackgroundLink>,
}

impl Attempt<'_> {
    /// Keeps `outputs` for the step's record even though the attempt fails.
    pub fn keep(&self, outputs: Outputs) {
        if let Ok(mut p) = self.partial.lock() {
            *p = Some(outputs);
        }
    }

    /// Resolves when the attempt is told to stop.
    pub async fn stopped(&self) -> Stop {
        let mut rx = self.stop.clone();
        loop {
            if let Some(s) = *rx.borrow_and_update() {
                return s;
            }
            if rx.changed().await.is_err() {
                // The sender is gone: nobody can stop us any more.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// One step kind's executor: one attempt of an action whose body is
/// `Self::Body`. `action` carries what every kind shares (interpreter,
/// `env`, `cwd`, `timeout`).
pub trait Executor: Send + Sync {
    type Body: ?Sized + Sync;

    fn run<'a>(
        &'a self,
        body: &'a Self::Body,
        action: &'a Action,
        cx: &'a Attempt<'a>,
    ) -> BoxFuture<'a, Result<Outputs, StepError>>;
}

/// One attempt of `action`, by the executor of its kind.
pub fn run<'a>(
    action: &'a Action,
    cx: &'a Attempt<'a>,
) -> BoxFuture<'a, Result<Outputs, StepError>> {
    match &action.kind {
        ActionKind::Shell { script, .. } => shell::Shell.run(script.as_str(), action, cx),
        ActionKind::Http(h) => http::HttpExec.run(h, action, cx),
        ActionKind::Metric(m) => metric::MetricExec.run(m, action, cx),
        ActionKind::Approval(a) => approval::ApprovalExec.run(a, action, cx),
        ActionKind::Flag(f) => flag::FlagExec.run(f, action, cx),
    }
}

/// Renders a template string in the attempt's context; a template that does
/// not render is a permanent error (every attempt would fail the same way).
pub fn render(cx: &Attempt<'_>, source: &str) -> Result<String, StepError> {
    crate::template::render_str(source, cx.template).map_err(|e| template_error(&e))
}

/// A template error as a step's (permanent) error.
pub fn template_error(e: &minijinja::Error) -> StepError {
    StepError::permanent(template_message(e))
}

/// `template error: <kind>: <detail>`.
pub fn template_message(e: &minijinja::Error) -> String {
    let mut msg = e.kind().to_string();
    if let Some(d) = e.detail() {
        msg = format!("{msg}: {d}");
    }
    format!("template error: {msg}")
}
