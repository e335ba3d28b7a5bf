//! One executor per step kind, behind one trait. The engine decides when an
//! action runs, how often and for how long; an executor only does one attempt
//! and must stop promptly (cleaning up after itself) when told to.

pub mod approval;
mod flag;
mod http;
mod metric;
mod shell;

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Map, Value as Json};
use tokio::sync::watch;

use crate::events::Bus;
use crate::providers::{BoxFuture, FlagStore};
use crate::runbook::{Action, ActionKind, Runbook};

pub use flag::restore_flag;

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

/// What a run shares with every executor.
pub struct RunEnv {
    /// The plan the run executes.
    pub plan: Arc<crate::plan::Plan>,
    pub run_id: String,
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    pub cwd: PathBuf,
    /// Environment of shell steps before the step's own `env`: the engine's
    /// environment, the runbook's rendered `env`, `RUNBOOK_RUN_ID`.
    pub base_env: Vec<(String, String)>,
    pub identity: String,
    pub flags: FlagStores,
    /// Flags' previous values recorded by an earlier process for steps it
    /// did not finish: a re-run must restore what was there before the run,
    /// not what the first attempt wrote.
    pub flag_previous: std::collections::HashMap<String, Option<Json>>,
    /// Approval steps the operator approved up front with `--approve STEP`.
    pub approve: Vec<String>,
    /// Who runs this process (`--as`, $RUNBOOK_USER, the login name).
    pub operator: String,
    /// Whether approvals may prompt on the terminal.
    pub interactive: bool,
    /// The run's state so far, kept current from the event stream.
    pub state: crate::state::Shared,
}

impl RunEnv {
    pub fn runbook(&self) -> &Runbook {
        self.plan.runbook()
    }

    pub fn flag_store(&self, provider: Option<&str>) -> Option<&Arc<dyn FlagStore>> {
        self.flags
            .iter()
            .find(|(p, _)| p.as_deref() == provider)
            .map(|(_, s)| s)
    }
}

/// One attempt's view of the run.
pub struct Cx<'a> {
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
}

impl Cx<'_> {
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

pub trait Executor: Send + Sync {
    fn run<'a>(
        &'a self,
        action: &'a Action,
        cx: &'a Cx<'a>,
    ) -> BoxFuture<'a, Result<Outputs, String>>;
}

/// The executor for an action's kind.
pub fn executor(kind: &ActionKind) -> &'static dyn Executor {
    match kind {
        ActionKind::Shell { .. } => &shell::Shell,
        ActionKind::Flag(_) => &flag::FlagExec,
        ActionKind::Http(_) => &http::HttpExec,
        ActionKind::Metric(_) => &metric::MetricExec,
        ActionKind::Approval(_) => &approval::ApprovalExec,
    }
}

/// Renders a template string in the attempt's context.
pub fn render(cx: &Cx<'_>, source: &str) -> Result<String, String> {
    crate::template::render_str(source, cx.template).map_err(|e| template_error(&e))
}

pub fn template_error(e: &minijinja::Error) -> String {
    let mut msg = e.kind().to_string();
    if let Some(d) = e.detail() {
        msg = format!("{msg}: {d}");
    }
    format!("template error: {msg}")
}
